-- The open conversations of a channel, newest first: the grouper's candidates beyond the recent
-- messages (issue 14). Partial, so closed conversations (most of a long-lived channel) cost nothing.
CREATE INDEX conversations_channel_open ON conversations (channel, seq) WHERE status <> 'closed';
