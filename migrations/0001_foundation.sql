-- Relying-party API keys; only the SHA-256 of a key is stored.
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- One row per verification session; network_summary is JSON written when the call ends
-- and refreshed while it runs.
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    subject TEXT,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    connected_at BIGINT,
    ended_at BIGINT,
    end_reason TEXT,
    network_summary TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_state ON sessions (state);

-- The session timeline: every event sent to the client, in order.
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
