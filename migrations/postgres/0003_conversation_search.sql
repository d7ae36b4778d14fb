-- Search keyed by conversation: `conversations.search` holds the words of all its messages, kept
-- by triggers. A filtered search ordered like the list (seq DESC) can then walk the list's index
-- and stop after one page when a word is common, or read the GIN index when it is rare, instead
-- of collecting every matching message first.
ALTER TABLE conversations ADD COLUMN search TSVECTOR NOT NULL DEFAULT ''::tsvector;

UPDATE conversations c SET search = s.words
FROM (
    SELECT conversation_id, to_tsvector('english', string_agg(text, E'\n' ORDER BY seq)) AS words
    FROM messages GROUP BY conversation_id
) s
WHERE s.conversation_id = c.id;

CREATE INDEX conversations_search ON conversations USING GIN (search);
DROP INDEX messages_text_search;

CREATE FUNCTION conversation_search_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations SET search = search || NEW.text_search WHERE id = NEW.conversation_id;
    RETURN NULL;
END $$;

-- A message moved, merged, edited or deleted: rebuild the words of the conversations involved.
CREATE FUNCTION conversation_search_rebuild(conv TEXT) RETURNS void LANGUAGE sql AS $$
    UPDATE conversations SET search = COALESCE(
        (SELECT to_tsvector('english', string_agg(text, E'\n' ORDER BY seq)) FROM messages WHERE conversation_id = conv),
        ''::tsvector)
    WHERE id = conv;
$$;

CREATE FUNCTION conversation_search_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM conversation_search_rebuild(OLD.conversation_id);
    ELSE
        PERFORM conversation_search_rebuild(NEW.conversation_id);
        IF OLD.conversation_id <> NEW.conversation_id THEN
            PERFORM conversation_search_rebuild(OLD.conversation_id);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER conversation_search_insert AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION conversation_search_add();
CREATE TRIGGER conversation_search_update AFTER UPDATE OF text, conversation_id ON messages
    FOR EACH ROW EXECUTE FUNCTION conversation_search_change();
CREATE TRIGGER conversation_search_delete AFTER DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION conversation_search_change();
