-- Times are RFC 3339 text (sqlx's chrono encoding, always +00:00), so text order is time order.
-- `seq` is the keyset for pagination; `id` is the public identifier.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT
);

-- A channel belongs to at most one account.
CREATE TABLE account_channels (
    channel TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE
);
CREATE INDEX account_channels_account ON account_channels (account_id);

CREATE TABLE team_members (
    slack_user_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    triage_channel TEXT
);

CREATE TABLE conversations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('new', 'on_you', 'in_progress', 'on_hold', 'closed')),
    priority TEXT NOT NULL CHECK (priority IN ('urgent', 'high', 'medium', 'low', 'none')),
    owner TEXT,
    account_id TEXT REFERENCES accounts (id) ON DELETE SET NULL,
    channel TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL,
    first_response_at TEXT,
    closed_at TEXT,
    issue_url TEXT,
    issue_provider TEXT,
    issue_key TEXT,
    issue_state TEXT,
    message_count INTEGER NOT NULL DEFAULT 0,
    -- Set when a person changed the grouping: such conversations are gold for the grouper.
    human_corrected BOOLEAN NOT NULL DEFAULT FALSE,
    CHECK (status <> 'on_hold' OR issue_url IS NOT NULL)
);
CREATE INDEX conversations_status ON conversations (status, seq);
CREATE INDEX conversations_owner ON conversations (owner, seq);
CREATE INDEX conversations_account ON conversations (account_id, seq);
CREATE INDEX conversations_channel ON conversations (channel, seq);
CREATE INDEX conversations_issue_url ON conversations (issue_url) WHERE issue_url IS NOT NULL;
CREATE INDEX conversations_issue_key ON conversations (issue_key) WHERE issue_key IS NOT NULL;

CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    thread_ts TEXT,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('customer', 'agent')),
    text TEXT NOT NULL,
    edited BOOLEAN NOT NULL DEFAULT FALSE,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    label TEXT CHECK (label IN ('in_progress', 'closed')),
    score REAL,
    -- A person's status decision right after this reply, which overrides `label` for training.
    human_label TEXT CHECK (human_label IN ('in_progress', 'closed')),
    sent_at TEXT NOT NULL,
    -- Ingestion is idempotent on (channel, ts).
    UNIQUE (channel, ts)
);
CREATE INDEX messages_conversation ON messages (conversation_id, ts);
CREATE INDEX messages_thread ON messages (channel, thread_ts);

CREATE VIRTUAL TABLE messages_fts USING fts5 (text, content = 'messages', content_rowid = 'seq');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.seq, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
END;

CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('status', 'owner', 'priority', 'grouping')),
    actor TEXT NOT NULL,
    message_id TEXT REFERENCES messages (id) ON DELETE SET NULL,
    before_value TEXT,
    after_value TEXT,
    model_label TEXT,
    model_score REAL,
    at TEXT NOT NULL
);
CREATE INDEX events_conversation ON events (conversation_id, seq);
CREATE INDEX events_message ON events (message_id);
