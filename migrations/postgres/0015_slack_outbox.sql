-- Every Slack Web API write, stored before it is sent (issue 11: the outbox). A worker sends due
-- rows: `pending` -> `sending` (claimed; `claimed_ms` is the lease) -> `done` | `failed`, or back
-- to `pending` with `next_attempt_ms` after a transient error. `maybe_sent` marks a row whose
-- earlier attempt may have reached Slack (internal_error, a dropped connection): a card post is
-- then looked up in the channel's history before it is sent again. Times are Unix milliseconds.
CREATE TABLE slack_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    method TEXT NOT NULL,
    channel TEXT,
    conversation_id TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    maybe_sent BOOLEAN NOT NULL DEFAULT FALSE,
    next_attempt_ms BIGINT NOT NULL,
    claimed_ms BIGINT,
    last_error TEXT,
    result TEXT,
    created_ms BIGINT NOT NULL,
    done_ms BIGINT
);
CREATE INDEX slack_outbox_due ON slack_outbox (state, next_attempt_ms);
CREATE INDEX slack_outbox_conversation ON slack_outbox (conversation_id, method, state);
