//! Telling the relying party: signed verdicts (`signing`) and webhooks from a persistent outbox
//! (`webhook`). `Notifier` is what the rest of the server calls when a verdict is recorded or
//! changed by an operator.

pub mod signing;
pub mod webhook;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::events::unix_ms_now;
use crate::store::{OutboxRow, Store, StoreError};
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
pub struct VerdictNotice<'a> {
    pub session_id: &'a str,
    pub api_key_id: &'a str,
    pub subject: Option<&'a str>,
    /// The stored verdict JSON (`status`, `reasons[{code, retryable, ...}]`, ...).
    pub verdict: &'a Value,
    /// `vericall` for automatic verdicts, `operator:<name>` after a review decision.
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
}

impl Notifier {
    pub fn new(store: Store, signer: Arc<VerdictSigner>, worker: WebhookWorker) -> Notifier {
        Notifier {
            store,
            signer,
            worker,
        }
    }

    /// The claims a signed verdict carries: who, what, why (codes only; no scores or evidence).
    fn claims(n: &VerdictNotice<'_>) -> Value {
        let reasons: Vec<Value> = n.verdict["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| json!({ "code": r["code"], "retryable": r["retryable"] }))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "sid": n.session_id,
            // The API key the verdict was issued to: a verdict is not proof for another client.
            "aud": n.api_key_id,
            "sub": n.subject,
            "status": n.verdict["status"],
            "reasons": reasons,
            "decided_by": n.decided_by,
        })
    }

    /// A compact JWS of the verdict (verify with `/.well-known/jwks.json`).
    pub async fn sign_verdict(&self, n: &VerdictNotice<'_>) -> Result<String, NotifyError> {
        Ok(self.signer.sign(Self::claims(n)).await?)
    }

    /// Signs the verdict and, when the relying party has a webhook, puts a delivery in the outbox
    /// and wakes the worker. Returns the delivery id.
    pub async fn verdict_recorded(
        &self,
        n: &VerdictNotice<'_>,
    ) -> Result<Option<String>, NotifyError> {
        if self.store.get_webhook(n.api_key_id).await?.is_none() {
            return Ok(None);
        }
        let signed = self.sign_verdict(n).await?;
        let id = delivery_id();
        let now = unix_ms_now();
        let claims = Self::claims(n);
        let body = json!({
            "id": id,
            "event": "verdict",
            "created_at": now,
            "session_id": n.session_id,
            "subject": n.subject,
            "status": claims["status"],
            "reasons": claims["reasons"],
            "decided_by": n.decided_by,
            "signed_verdict": signed,
        });
        self.store
            .enqueue_webhook(&OutboxRow {
                id: id.clone(),
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
            })
            .await?;
        self.worker.wake();
        Ok(Some(id))
    }
}
