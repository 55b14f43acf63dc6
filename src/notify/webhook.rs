//! Webhook delivery from a persistent outbox.
//!
//! Each notification is a row in `webhook_outbox` before any delivery is tried, so nothing is lost
//! when the server stops; the worker picks up whatever is due, on start and whenever woken.
//!
//! A delivery is `POST <url>` with the JSON body and:
//! - `Vericall-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; after a
//!   secret rotation, during its overlap window, a second `v1=` made with the previous secret
//! - `Vericall-Delivery` and `Idempotency-Key`: the delivery id (the same on every retry)
//! - `Vericall-Event`: the event name (`verdict`, `ping`); the body's `type` names it fully
//!   (`session.verdict`, `session.verdict_changed`, `webhook.ping`)
//!
//! Deliveries never reach internal addresses (unless `allow_internal`): the client resolves names
//! through `address::GuardedResolver`, which drops loopback, private, link-local, metadata and
//! other internal answers, literal addresses are checked before sending, redirects are not
//! followed, and no proxy from the environment is used (it would resolve the name instead).
//! A refused destination is recorded as the attempt status `blocked_address`.
//!
//! Any 2xx is accepted. Otherwise it is retried with exponential back-off (`retry_base`, tripled
//! each time, at most `MAX_BACKOFF`) until `give_up_after` from its creation (24 h by default).
//! Receivers reject signatures older than a few minutes and remember delivery ids they have
//! processed (replay protection, docs/INTEGRATION.md).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::hmac;
use tokio::sync::Notify;

use super::address::{is_internal_host, AddressError, GuardedResolver};
use crate::events::unix_ms_now;
use crate::store::{OutboxRow, Store, WebhookTarget};

/// Longest wait between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// One attempt may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows fetched per pass.
const BATCH: i64 = 32;

#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    pub retry_base: Duration,
    pub give_up_after: Duration,
    /// Re-check the outbox at least this often (deliveries due after a back-off).
    pub poll: Duration,
    /// Deliver to loopback, private and other internal addresses (tests, lab setups).
    pub allow_internal: bool,
    /// Fixed answers for host names (like curl's `--resolve`); still filtered.
    pub resolve_overrides: BTreeMap<String, Vec<IpAddr>>,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            retry_base: Duration::from_secs(10),
            give_up_after: Duration::from_secs(24 * 3600),
            poll: Duration::from_secs(1),
            allow_internal: false,
            resolve_overrides: BTreeMap::new(),
        }
    }
}

impl WebhookPolicy {
    /// Wait after the `attempt`-th failure (1-based).
    pub(crate) fn backoff(&self, attempt: i64) -> Duration {
        let factor = 3u32.saturating_pow(attempt.clamp(1, 20) as u32 - 1);
        self.retry_base.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// `t=<secs>,v1=<hex>` for `body` at `t`.
pub fn signature_header(secret: &str, t: i64, body: &str) -> String {
    signature_header_with(&[secret], t, body)
}

/// `t=<secs>,v1=<hex>,v1=<hex>...`: one `v1` per secret (the current one first, then the
/// previous one during a rotation's overlap), so a receiver holding either secret verifies it.
pub(crate) fn signature_header_with(secrets: &[&str], t: i64, body: &str) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac::sign(&key, format!("{t}.{body}").as_bytes());
        header.push_str(",v1=");
        header.push_str(&hex::encode(tag.as_ref()));
    }
    header
}

/// Checks a `Vericall-Signature` header as a receiver would: one of its `v1` HMACs matches and
/// `t` is within `tolerance_secs` of `now_secs`.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> bool {
    let mut t = None;
    let mut v1s = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1s.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else {
        return false;
    };
    if (now_secs - t).abs() > tolerance_secs {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let signed = format!("{t}.{body}");
    v1s.iter()
        .any(|v1| hmac::verify(&key, signed.as_bytes(), v1).is_ok())
}

/// The outcome of one request to the webhook URL.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOutcome {
    /// The HTTP status, or `timeout`, `connect_error`, `blocked_address`, `error`.
    pub status: String,
    pub delivered: bool,
    /// 0 when nothing was sent (a refused literal address), else at least 1.
    pub duration_ms: i64,
}

/// Delivers due outbox rows; cheap to clone.
#[derive(Clone)]
pub struct WebhookWorker {
    store: Store,
    policy: WebhookPolicy,
    client: reqwest::Client,
    resolver: Arc<GuardedResolver>,
    wake: Arc<Notify>,
}

/// Whether a failed request was refused by the address guard.
fn blocked_by_guard(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<AddressError>().is_some() {
            return true;
        }
        source = err.source();
    }
    false
}

impl WebhookWorker {
    pub fn new(store: Store, policy: WebhookPolicy) -> WebhookWorker {
        let resolver = Arc::new(GuardedResolver::new(
            policy.allow_internal,
            policy.resolve_overrides.clone(),
        ));
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A redirect could lead anywhere (including inside): the receiver must answer itself.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(resolver.clone())
            .user_agent(concat!("vericall/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client builds");
        WebhookWorker {
            store,
            policy,
            client,
            resolver,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Checks a webhook URL as a delivery would: its literal host, then what its name resolves
    /// to now. (Deliveries check again, since DNS answers change.)
    pub(crate) async fn check_destination(&self, url: &reqwest::Url) -> Result<(), AddressError> {
        let Some(host) = url.host() else {
            return Err(AddressError::Unresolved(String::new()));
        };
        if self.policy.allow_internal {
            return Ok(());
        }
        if is_internal_host(&host) {
            return Err(match host {
                url::Host::Domain(d) => AddressError::InternalName(d.to_string()),
                ip => AddressError::InternalAddress(ip.to_string()),
            });
        }
        if let url::Host::Domain(name) = host {
            self.resolver.resolve_allowed(name).await?;
        }
        Ok(())
    }

    /// Whether the URL's literal host is refused (names are checked by the resolver).
    fn literal_blocked(&self, url: &str) -> bool {
        if self.policy.allow_internal {
            return false;
        }
        match reqwest::Url::parse(url) {
            Ok(u) => match u.host() {
                Some(url::Host::Domain(_)) => false,
                Some(h) => is_internal_host(&h),
                None => true,
            },
            Err(_) => true,
        }
    }

    /// Something was enqueued: deliver now rather than at the next poll.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `stop` resolves.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "webhook outbox pass failed");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.policy.poll) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass over what is due now; returns how many rows were tried.
    pub(crate) async fn deliver_due(&self) -> Result<usize, crate::store::StoreError> {
        let due = self.store.due_webhooks(unix_ms_now(), BATCH).await?;
        let n = due.len();
        for row in due {
            self.attempt(&row).await?;
        }
        Ok(n)
    }

    /// Keeps delivering what is due until nothing is, or `deadline` passes (shutdown flush).
    pub(crate) async fn flush(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            match self.deliver_due().await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook flush failed");
                    return;
                }
            }
        }
    }

    /// One request to the relying party's webhook: signed with its secret (and, during a
    /// rotation's overlap, also with the previous one). Nothing is recorded here.
    pub async fn send(
        &self,
        api_key_id: &str,
        target: &WebhookTarget,
        delivery_id: &str,
        event: &str,
        body: &str,
    ) -> Result<SendOutcome, crate::store::StoreError> {
        if self.literal_blocked(&target.url) {
            // Set before the address guard existed, or on a lab server: never sent.
            tracing::warn!(delivery = %delivery_id, "webhook URL points at an internal address; not sent");
            return Ok(SendOutcome {
                status: "blocked_address".into(),
                delivered: false,
                duration_ms: 0,
            });
        }
        let started = Instant::now();
        let now = unix_ms_now();
        let t = now / 1000;
        let previous = self.store.webhook_previous_secret(api_key_id, now).await?;
        let mut secrets = vec![target.secret.as_str()];
        if let Some((secret, _)) = &previous {
            secrets.push(secret);
        }
        let result = self
            .client
            .post(&target.url)
            .header("content-type", "application/json")
            .header(
                "vericall-signature",
                signature_header_with(&secrets, t, body),
            )
            .header("vericall-delivery", delivery_id)
            .header("idempotency-key", delivery_id)
            .header("vericall-event", event)
            .body(body.to_string())
            .send()
            .await;
        let (status, delivered) = match &result {
            Ok(r) => (r.status().as_u16().to_string(), r.status().is_success()),
            Err(e) if blocked_by_guard(e) => ("blocked_address".to_string(), false),
            Err(e) if e.is_timeout() => ("timeout".to_string(), false),
            Err(e) if e.is_connect() => ("connect_error".to_string(), false),
            Err(_) => ("error".to_string(), false),
        };
        ::metrics::histogram!(crate::latency::WEBHOOK_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(SendOutcome {
            status,
            delivered,
            // At least 1 ms, so a request made is told apart from one never sent.
            duration_ms: (started.elapsed().as_millis() as i64).max(1),
        })
    }

    async fn attempt(&self, row: &OutboxRow) -> Result<(), crate::store::StoreError> {
        // Lease the row for longer than one request can take, so no other instance tries it now.
        let lease = unix_ms_now() + 2 * REQUEST_TIMEOUT.as_millis() as i64;
        if !self
            .store
            .claim_webhook(&row.id, row.next_attempt_at, lease)
            .await?
        {
            return Ok(());
        }
        let attempt = row.attempts + 1;
        let Some(target) = self.store.get_webhook(&row.api_key_id).await? else {
            // The relying party removed its webhook (or its key): nothing to deliver to.
            let now = unix_ms_now();
            return self
                .store
                .record_webhook_attempt(&row.id, attempt, now, "no_webhook", 0, false, now, true)
                .await;
        };
        let outcome = self
            .send(&row.api_key_id, &target, &row.id, &row.event, &row.body)
            .await?;
        let SendOutcome {
            status,
            delivered,
            duration_ms,
        } = outcome;
        let now = unix_ms_now();
        let next = now + self.policy.backoff(attempt).as_millis() as i64;
        // A delivery sent again on request gets the full retry window from then.
        let since = row.resent_at.unwrap_or(row.created_at);
        let give_up = !delivered && next - since > self.policy.give_up_after.as_millis() as i64;
        self.store
            .record_webhook_attempt(
                &row.id,
                attempt,
                now,
                &status,
                duration_ms,
                delivered,
                next,
                give_up,
            )
            .await?;
        // The URL may carry a token of the relying party's; log only the delivery.
        if delivered {
            tracing::info!(delivery = %row.id, session = %row.session_id, attempt, "webhook delivered");
        } else if give_up {
            tracing::warn!(delivery = %row.id, session = %row.session_id, attempt, %status, "webhook given up");
        } else {
            tracing::info!(delivery = %row.id, attempt, %status, retry_in_ms = next - now, "webhook failed; will retry");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_secret_body_and_a_fresh_time() {
        let h = signature_header("s3cret", 1_700_000_000, r#"{"a":1}"#);
        assert!(verify_signature(
            "s3cret",
            &h,
            r#"{"a":1}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "other",
            &h,
            r#"{"a":1}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "s3cret",
            &h,
            r#"{"a":2}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "s3cret",
            &h,
            r#"{"a":1}"#,
            1_700_001_000,
            300
        ));
        assert!(!verify_signature("s3cret", "t=1,v1=zz", "", 1, 300));
    }

    #[test]
    fn backoff_triples_up_to_the_cap_and_spans_a_day() {
        let p = WebhookPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(10));
        assert_eq!(p.backoff(2), Duration::from_secs(30));
        assert_eq!(p.backoff(3), Duration::from_secs(90));
        assert_eq!(p.backoff(30), MAX_BACKOFF);
        // Attempts before giving up after 24 h: 10 s, 30 s, ... then every 6 h.
        let mut t = Duration::ZERO;
        let mut attempts = 0;
        while t < p.give_up_after {
            attempts += 1;
            t += p.backoff(attempts);
        }
        assert!((10..=14).contains(&attempts), "{attempts}");
    }
}
