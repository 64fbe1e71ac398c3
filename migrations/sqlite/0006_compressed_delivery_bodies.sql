-- Raw delivery bodies are kept zstd-compressed: push payloads shrink about fivefold, and
-- every byte kept is written twice (WAL, then checkpoint) on the ingest path.
-- Rows stored before this migration stay as they were ('identity').
ALTER TABLE deliveries ADD COLUMN body_encoding TEXT NOT NULL DEFAULT 'identity'
    CHECK (body_encoding IN ('identity', 'zstd'));
