//! The channel's open conversations for the grouper (issue 14): the first and the latest message
//! of each of its newest open conversations, so a customer's follow-up hours later still finds
//! their ticket when a busy channel has pushed it out of the recent messages. A condition on
//! `messages m`, the same SQL on both backends; each backend's `load_context` reads these rows in
//! the same round trip as the recent messages and the thread.

/// Which messages `m` stand for the channel's open conversations: `$1` channel, `$2` the incoming
/// ts (only earlier messages), `$4` the recent window's size, `$5` how many conversations. The
/// conversations come from the partial index `conversations_channel_open`, each one's first and
/// latest message from `messages_conversation` (conversation_id, ts). Only messages older than the
/// recent window qualify: the window already holds every later one (ts is unique per channel), so
/// these rows are exactly the ones the grouper would not otherwise see, and a channel with fewer
/// messages than the window (the subquery is NULL) needs none.
macro_rules! open_messages_where {
    () => {
        "m.seq IN (\
         SELECT (SELECT f.seq FROM messages f WHERE f.conversation_id = o.id AND f.ts < $2 \
                 ORDER BY f.ts LIMIT 1) \
         FROM (SELECT id FROM conversations WHERE channel = $1 AND status <> 'closed' \
               ORDER BY seq DESC LIMIT $5) o \
         UNION SELECT (SELECT l.seq FROM messages l WHERE l.conversation_id = o.id AND l.ts < $2 \
                 ORDER BY l.ts DESC LIMIT 1) \
         FROM (SELECT id FROM conversations WHERE channel = $1 AND status <> 'closed' \
               ORDER BY seq DESC LIMIT $5) o) \
         AND m.ts < (SELECT w.ts FROM messages w WHERE w.channel = $1 AND w.ts < $2 \
                     ORDER BY w.ts DESC LIMIT 1 OFFSET $4 - 1)"
    };
}
