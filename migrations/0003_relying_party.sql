-- Relying-party integration (issue 7): signed verdicts, webhooks, the review console.

-- Ed25519 keys that sign verdicts (JWS, EdDSA). The newest active key signs; retired keys stay
-- published in the JWKS until `retired_at` + the verify window, so earlier verdicts still verify.
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    pkcs8 TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

-- The server instance that owns a session's media (several pods share one PostgreSQL): a
-- restarting instance ends only its own orphans.
ALTER TABLE sessions ADD COLUMN node TEXT;

-- A relying party's webhook: where verdicts are POSTed and the secret that signs them.
ALTER TABLE api_keys ADD COLUMN webhook_url TEXT;
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;

-- The outbox: one row per notification, written in the same place the verdict is stored, and
-- delivered (with retries) by the webhook worker. `id` doubles as the idempotency key.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    failed_at BIGINT,
    last_status TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (delivered_at, failed_at, next_attempt_at);

-- Every delivery attempt, for the operator.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Review console operators (passwords as PBKDF2-HMAC-SHA256) and their login sessions (only the
-- SHA-256 of a login token is stored).
CREATE TABLE IF NOT EXISTS operators (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    disabled_at BIGINT
);
CREATE TABLE IF NOT EXISTS operator_logins (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Everything an operator did, append-only.
CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    operator TEXT NOT NULL,
    action TEXT NOT NULL,
    session_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_by_session ON audit_log (session_id, at);
