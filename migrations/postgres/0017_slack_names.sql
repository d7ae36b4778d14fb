-- Slack user and channel names (users.info, conversations.info), cached in the database so they
-- survive restarts (issue 11). `kind` is 'user' or 'channel'; `fetched_ms` (Unix milliseconds)
-- dates the name: past the cache's TTL it is still shown and fetched again in the background.
-- The board reads it directly (a customer's name beside the user id).
CREATE TABLE slack_names (
    kind TEXT NOT NULL CHECK (kind IN ('user', 'channel')),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    fetched_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
