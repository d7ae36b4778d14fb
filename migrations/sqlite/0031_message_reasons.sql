-- Why each message joined its conversation: the grouper's confidence and reasons (a JSON array of
-- {"signal", "detail", "weight"}), written in the same transaction as the message. Shown on the
-- board's conversation view; kept when a person later moves the message (the events say that).
CREATE TABLE message_reasons (
    message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    confidence REAL NOT NULL,
    reasons TEXT NOT NULL
);
