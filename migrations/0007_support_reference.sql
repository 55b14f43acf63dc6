-- Issue 20, a reference customer service can find: the short code a person reads from their
-- result screen (reasons::support_reference of the session id, `XXXX-XXXX`); the review console
-- looks sessions up by it.
ALTER TABLE sessions ADD COLUMN support_ref TEXT;
CREATE INDEX sessions_support_ref ON sessions (support_ref);
