-- Issue 17, the integrator's kit.
-- A sandbox API key may force verdicts (POST /v1/sessions/{id}/sandbox-verdict); they are marked
-- `sandbox: true` everywhere. 0 = live, 1 = sandbox.
ALTER TABLE api_keys ADD COLUMN sandbox BIGINT NOT NULL DEFAULT 0;
-- Webhook secret rotation with overlap: the previous secret still signs deliveries (a second
-- `v1=` in Vericall-Signature) until `webhook_previous_secret_until` (Unix ms).
ALTER TABLE api_keys ADD COLUMN webhook_previous_secret TEXT;
ALTER TABLE api_keys ADD COLUMN webhook_previous_secret_until BIGINT;
-- A delivery the relying party asked to send again: retries give up counting from here.
ALTER TABLE webhook_outbox ADD COLUMN resent_at BIGINT;
