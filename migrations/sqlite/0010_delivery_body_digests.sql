-- A delivery's identity is its signed body, not the unsigned X-GitHub-Delivery header: a
-- body recorded before under another delivery id is a replay (or the same event through a
-- second hook) and is answered as a duplicate. The SHA-256 of the raw body, hex; rows
-- recorded before this migration have none. The digest outlives the body's retention.
ALTER TABLE deliveries ADD COLUMN body_digest TEXT;
CREATE UNIQUE INDEX deliveries_body_digest ON deliveries (project, body_digest);
