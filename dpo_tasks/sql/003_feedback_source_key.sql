-- Rows loaded by `ingest-feedback` carry a key derived from the file's record
-- (its `id` field, else its content and how many identical records came
-- before it), so loading the same file twice inserts nothing the second time.
-- The app's own inserts leave it NULL; NULLs never collide.
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS source_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS feedback_source_key_idx ON feedback (source_key);
