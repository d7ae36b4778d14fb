-- Files shared with a message (a Slack file_share): a JSON array of {"name", "permalink"}; NULL when none.
ALTER TABLE messages ADD COLUMN files TEXT;
