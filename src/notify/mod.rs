//! Telling the relying party: signed verdicts (`signing`) and webhooks from a persistent outbox
//! (`webhook`). `Notifier` is what the rest of the server calls when a verdict is recorded or
//! changed by an operator.

pub mod address;
pub mod signing;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::events::unix_ms_now;
use crate::store::{OutboxRow, Store, StoreError, VerdictRecord, VerdictWrite};
use signing::{SigningError, VerdictSigner};
use webhook::WebhookWorker;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// What a verdict notification is about.
#[derive(Clone, Copy)]
pub struct VerdictNotice<'a> {
    pub session_id: &'a str,
    pub api_key_id: &'a str,
    pub subject: Option<&'a str>,
    /// The relying party's opaque reference of the session.
    pub reference: Option<&'a str>,
    /// The stored verdict JSON (`status`, `reasons[{code, retryable, ...}]`, ...).
    pub verdict: &'a Value,
    /// `vericall` for automatic verdicts, `operator:<name>` after a review decision, `sandbox`
    /// for a verdict forced with a sandbox key.
    pub decided_by: &'a str,
}

fn delivery_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness is available");
    format!("dlv_{}", hex::encode(b))
}

pub struct Notifier {
    store: Store,
    pub signer: Arc<VerdictSigner>,
    pub worker: WebhookWorker,
    /// `exp` - `iat` of signed verdicts.
    verdict_lifetime: Duration,
}

impl Notifier {
    pub fn new(
        store: Store,
        signer: Arc<VerdictSigner>,
        worker: WebhookWorker,
        verdict_lifetime: Duration,
    ) -> Notifier {
        Notifier {
            store,
            signer,
            worker,
            verdict_lifetime,
        }
    }

    /// The claims a signed verdict carries: who, what, why (codes only; no scores or evidence),
    /// when it was decided (`iat`) and until when it may be relied on (`exp`). `iss` is added by
    /// the signer. Documented in docs/INTEGRATION.md ("Signed verdicts").
    fn claims(&self, n: &VerdictNotice<'_>, decided_at_ms: i64) -> Value {
        let reasons: Vec<Value> = n.verdict["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| json!({ "code": r["code"], "retryable": r["retryable"] }))
                    .collect()
            })
            .unwrap_or_default();
        let iat = decided_at_ms.div_euclid(1000);
        let mut claims = json!({
            "sid": n.session_id,
            // The API key the verdict was issued to (its id, as shown by `vericall keys list`
            // and in the session's `api_key_id`): a verdict is not proof for another client.
            "aud": n.api_key_id,
            "sub": n.subject,
            "reference": n.reference,
            "support_ref": crate::reasons::support_reference(n.session_id),
            "status": n.verdict["status"],
            "reasons": reasons,
            "decided_by": n.decided_by,
            "decided_at": decided_at_ms,
            "iat": iat,
            "exp": iat + self.verdict_lifetime.as_secs() as i64,
        });
        // Forced by a sandbox key: only then present, so a live integration can refuse it.
        if is_sandbox(n.verdict) {
            claims["sandbox"] = json!(true);
        }
        claims
    }

    /// A compact JWS of the verdict decided at `decided_at_ms` (verify with
    /// `/.well-known/jwks.json`).
    pub(crate) async fn sign_verdict(
        &self,
        n: &VerdictNotice<'_>,
        decided_at_ms: i64,
    ) -> Result<String, NotifyError> {
        Ok(self.signer.sign(self.claims(n, decided_at_ms)).await?)
    }

    /// Records a decided verdict: stamps it with `decided_at`, signs it once, and stores it with
    /// its webhook delivery (when the relying party has a webhook) in one transaction, together
    /// with the end of the session for `VerdictWrite::End`. Returns whether it was written
    /// (false: the session had already ended, or the verdict changed meanwhile).
    pub async fn record(
        &self,
        n: &VerdictNotice<'_>,
        write: &VerdictWrite<'_>,
    ) -> Result<bool, NotifyError> {
        let started = std::time::Instant::now();
        let result = self.record_timed(n, write).await;
        ::metrics::histogram!(crate::latency::VERDICT_RECORD_SECONDS)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn record_timed(
        &self,
        n: &VerdictNotice<'_>,
        write: &VerdictWrite<'_>,
    ) -> Result<bool, NotifyError> {
        let decided_at = unix_ms_now();
        let mut verdict = n.verdict.clone();
        if let Some(obj) = verdict.as_object_mut() {
            obj.insert("decided_at".into(), json!(decided_at));
            // What the person's result screen shows, for customer service.
            obj.insert(
                "support_ref".into(),
                json!(crate::reasons::support_reference(n.session_id)),
            );
        }
        let n = VerdictNotice {
            verdict: &verdict,
            ..*n
        };
        // An unusable signing key must not keep the end and verdict from being recorded: they are
        // stored unsigned (GET signs them on first read once the key works) and the webhook,
        // authenticated by its HMAC, goes out with `signed_verdict: null`.
        let signed = match self.sign_verdict(&n, decided_at).await {
            Ok(jws) => Some(jws),
            Err(NotifyError::Signing(SigningError::Store(e))) | Err(NotifyError::Store(e)) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::error!(session = %n.session_id, error = %e, "cannot sign a verdict; recording it unsigned");
                None
            }
        };
        let notify = !matches!(write, VerdictWrite::Backfill { notify: false });
        let outbox = match notify {
            true => self.store.get_webhook(n.api_key_id).await?,
            false => None,
        }
        .map(|_| {
            let event_type = match write {
                VerdictWrite::Replace { .. } => EVENT_VERDICT_CHANGED,
                _ => EVENT_VERDICT,
            };
            self.delivery(&n, event_type, signed.as_deref(), decided_at)
        });
        let status = verdict["status"].as_str().unwrap_or("failed");
        let written = self
            .store
            .record_verdict(
                &VerdictRecord {
                    session_id: n.session_id,
                    status,
                    verdict_json: &verdict.to_string(),
                    signed_verdict: signed.as_deref(),
                    decided_at,
                    outbox: outbox.as_ref(),
                },
                write,
            )
            .await?;
        if written && outbox.is_some() {
            self.worker.wake();
        }
        Ok(written)
    }

    /// The signed verdict of an ended session: the stored one, or (for a session decided before
    /// signed verdicts were stored) one made now from its end time and stored, once.
    pub(crate) async fn stored_signed_verdict(
        &self,
        n: &VerdictNotice<'_>,
        ended_at: i64,
    ) -> Result<String, NotifyError> {
        if let Some((jws, _)) = self.store.get_signed_verdict(n.session_id).await? {
            return Ok(jws);
        }
        let decided_at = n.verdict["decided_at"].as_i64().unwrap_or(ended_at);
        let jws = self.sign_verdict(n, decided_at).await?;
        if self
            .store
            .set_signed_verdict_if_missing(n.session_id, &jws, decided_at)
            .await?
        {
            return Ok(jws);
        }
        Ok(self
            .store
            .get_signed_verdict(n.session_id)
            .await?
            .map(|(j, _)| j)
            .unwrap_or(jws))
    }

    /// The webhook delivery of a verdict (an outbox row; the body carries the signed verdict).
    fn delivery(
        &self,
        n: &VerdictNotice<'_>,
        event_type: &str,
        signed: Option<&str>,
        decided_at: i64,
    ) -> OutboxRow {
        let id = delivery_id();
        let now = unix_ms_now();
        let claims = self.claims(n, decided_at);
        let mut body = json!({
            "id": id,
            "type": event_type,
            "event": "verdict",
            "created_at": now,
            "session_id": n.session_id,
            "subject": n.subject,
            "reference": n.reference,
            "support_ref": claims["support_ref"],
            "status": claims["status"],
            "reasons": claims["reasons"],
            "decided_by": n.decided_by,
            "decided_at": decided_at,
            "signed_verdict": signed,
        });
        if is_sandbox(n.verdict) {
            body["sandbox"] = json!(true);
        }
        OutboxRow {
            id,
            api_key_id: n.api_key_id.to_string(),
            session_id: n.session_id.to_string(),
            event: "verdict".into(),
            body: body.to_string(),
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            delivered_at: None,
            failed_at: None,
            last_status: None,
            resent_at: None,
        }
    }

    /// The body of a `webhook.ping` delivery (`POST /v1/webhook/ping`): not stored, sent once.
    pub(crate) fn ping_body() -> (String, String) {
        let id = delivery_id();
        let body = json!({
            "id": id,
            "type": EVENT_PING,
            "event": "ping",
            "created_at": unix_ms_now(),
        });
        (id, body.to_string())
    }
}

/// Webhook event types (the body's `type`).
pub(crate) const EVENT_VERDICT: &str = "session.verdict";
/// An operator's review decision replaced the verdict.
pub(crate) const EVENT_VERDICT_CHANGED: &str = "session.verdict_changed";
pub(crate) const EVENT_PING: &str = "webhook.ping";

/// Whether a stored verdict was forced with a sandbox key.
pub(crate) fn is_sandbox(verdict: &Value) -> bool {
    verdict["sandbox"] == json!(true)
}
