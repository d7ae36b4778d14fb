-- Internal notes on a conversation: never messages (never grouped, classified or sent to a customer).
-- A note from Slack (a reply in a triage card's thread) keeps its channel and ts: added once.
CREATE TABLE notes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL,
    slack_channel TEXT,
    slack_ts TEXT,
    UNIQUE (slack_channel, slack_ts)
);
CREATE INDEX notes_conversation ON notes (conversation_id, seq);
