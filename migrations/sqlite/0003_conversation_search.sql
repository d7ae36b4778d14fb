-- Search keyed by conversation. Each message's text is indexed under
--   rowid = (conversation seq << 32) | (message seq & 0xFFFFFFFF),
-- so a MATCH read in descending rowid order yields the matching conversations newest first, in the
-- order of the conversation list, and a filtered, paginated search stops after one page instead of
-- collecting every match (a common word matched tens of thousands of conversations).
-- Contentless (the text stays in `messages`) with plain deletes (SQLite 3.43+).
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
DROP TABLE messages_fts;

CREATE VIRTUAL TABLE conversation_search USING fts5 (text, content = '', contentless_delete = 1);

INSERT INTO conversation_search (rowid, text)
SELECT (c.seq << 32) | (m.seq & 4294967295), m.text
FROM messages m JOIN conversations c ON c.id = m.conversation_id;

CREATE TRIGGER conversation_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO conversation_search (rowid, text)
    SELECT (c.seq << 32) | (new.seq & 4294967295), new.text FROM conversations c WHERE c.id = new.conversation_id;
END;
CREATE TRIGGER conversation_search_delete AFTER DELETE ON messages BEGIN
    DELETE FROM conversation_search
    WHERE rowid = ((SELECT c.seq FROM conversations c WHERE c.id = old.conversation_id) << 32) | (old.seq & 4294967295);
END;
-- A moved or merged message (new conversation) or an edited text: re-index it.
CREATE TRIGGER conversation_search_update AFTER UPDATE OF text, conversation_id ON messages BEGIN
    DELETE FROM conversation_search
    WHERE rowid = ((SELECT c.seq FROM conversations c WHERE c.id = old.conversation_id) << 32) | (old.seq & 4294967295);
    INSERT INTO conversation_search (rowid, text)
    SELECT (c.seq << 32) | (new.seq & 4294967295), new.text FROM conversations c WHERE c.id = new.conversation_id;
END;
