-- What each conversation's triage card should show, versioned (issue 11, card ordering). Card
-- rows in slack_outbox (chat.postMessage, chat.update) no longer carry the content they send: a
-- claimed card row sends the newest content here, and the row's version with it. `shown_version`
-- is the newest version Slack acknowledged on the card; a card row whose version is not newer is
-- dropped, so a retried or late row never puts an older state back. Rows written before this
-- table (no content row) keep sending their own body.
CREATE TABLE slack_card_content (
    conversation_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version BIGINT NOT NULL,
    shown_version BIGINT NOT NULL DEFAULT 0
);
