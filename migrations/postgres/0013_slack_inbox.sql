-- Slack Events API deliveries, stored before they are acknowledged and processed by a worker
-- afterwards (replayed at start: a crash between the ack and the processing loses nothing).
-- `event_id` dedupes Slack's retries; (channel, ts) is deduped by the message path itself.
CREATE TABLE slack_inbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    team_id TEXT,
    -- The whole signed request body, as received.
    payload TEXT NOT NULL,
    -- The highest X-Slack-Retry-Num seen for this event (0: the first delivery).
    retry_num INTEGER NOT NULL DEFAULT 0,
    received_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    processed_at TIMESTAMPTZ,
    -- What processing did: ingested, duplicate, edited, deleted, note, ignored:<reason>, failed:<why>.
    outcome TEXT
);
CREATE INDEX slack_inbox_pending ON slack_inbox (seq) WHERE processed_at IS NULL;
CREATE INDEX slack_inbox_processed ON slack_inbox (processed_at) WHERE processed_at IS NOT NULL;
