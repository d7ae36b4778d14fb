-- Cards a conversation left when its owner changed and its card moved to the new owner's triage
-- channel (issue 11). The old card says where the conversation went; replies in its thread
-- still become the conversation's internal notes.
CREATE TABLE slack_moved_cards (
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    PRIMARY KEY (channel, ts)
);
