-- The verdict of each session: status for filtering and attempt limits, JSON for the relying party.
ALTER TABLE sessions ADD COLUMN verdict_status TEXT;
ALTER TABLE sessions ADD COLUMN verdict TEXT;
CREATE INDEX IF NOT EXISTS sessions_by_subject ON sessions (subject, verdict_status, ended_at);
