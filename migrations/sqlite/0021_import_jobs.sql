-- Background Slack imports (`POST /v1/import`): progress and the final summary, readable from any
-- replica. Times are RFC 3339 text, as elsewhere.
CREATE TABLE import_jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    total BIGINT NOT NULL DEFAULT 0,
    done BIGINT NOT NULL DEFAULT 0,
    summary TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
