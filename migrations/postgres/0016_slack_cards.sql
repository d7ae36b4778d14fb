-- Where each conversation's triage card is in Slack (issue 11), written in the same transaction
-- that marks its chat.postMessage done. No foreign key: a card outlives a merged conversation
-- until it is updated to say so.
CREATE TABLE slack_cards (
    conversation_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL
);
CREATE UNIQUE INDEX slack_cards_message ON slack_cards (channel, ts);
