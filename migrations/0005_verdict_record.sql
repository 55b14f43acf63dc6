-- Issue 17: the signed verdict (JWS) is made once, when the verdict is decided, and stored, so
-- GET and webhooks carry the same token and `iat` is the decision time.
ALTER TABLE sessions ADD COLUMN signed_verdict TEXT;
ALTER TABLE sessions ADD COLUMN decided_at BIGINT;
-- The relying party's own opaque reference for a session (an order or case id), echoed back in
-- GET, listings, webhooks and the signed verdict.
ALTER TABLE sessions ADD COLUMN reference TEXT;
-- Listing pages by (created_at, id) within one API key; failed attempts counted per (API key, subject).
CREATE INDEX IF NOT EXISTS sessions_by_key_created ON sessions (api_key_id, created_at, id);
CREATE INDEX IF NOT EXISTS sessions_by_key_subject ON sessions (api_key_id, subject, verdict_status, ended_at);
