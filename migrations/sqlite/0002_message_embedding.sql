-- The sentence embedding of each message (384 little-endian f32), so every replica rebuilds the
-- grouper's view of a channel from the database alone. NULL when none was computed.
ALTER TABLE messages ADD COLUMN embedding BLOB;
