-- Issue 21: a `POST /v1/sessions` retried with the same Idempotency-Key may reach another node.
-- The answer (with its client token) stays in the memory of the node that created the session;
-- this table only says which node that is, so that another node forwards the retry there
-- (api::forward) instead of creating a second session. The key is stored as a digest.
CREATE TABLE idempotency_keys (
    api_key_id TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    node TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, key_digest)
);
