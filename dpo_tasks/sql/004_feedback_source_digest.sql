-- The content digest of a row loaded by `ingest-feedback`, beside its
-- source_key: a later file that gives an existing id a different rating or
-- text is reported as a conflict instead of being taken as "already loaded".
-- Rows loaded before this migration (and the app's own inserts) leave it NULL.
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS source_digest TEXT;
