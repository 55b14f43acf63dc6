//! Request rate limits: a token bucket per key (an API key for session creation, a client IP for
//! WHIP offers). Over the limit, the API answers 429 with `Retry-After`.
//!
//! On a shared database (PostgreSQL, several nodes) the bucket lives in the database
//! (`Store::take_rate_token`), so a limit of N per minute is N for the whole cluster, whichever
//! node each request reaches; should the database fail, the node falls back to its own bucket.
//! On SQLite (one node) the bucket is in memory.
//!
//! Memory is bounded whatever callers send: keys are kept as a 128-bit digest (a username of any
//! length costs 16 bytes), and at `MAX_BUCKETS` idle buckets go first, then the least recently
//! used one. The database holds keyed digests (HMAC under `node_secret`), never an address or a
//! name.
//!
//! Hand-written rather than a kept crate (governor): the cluster's bucket must be one SQL
//! statement on either database, which no rate-limiting crate offers, and the in-memory bucket
//! beside it is its fallback with the same semantics (burst = the per-minute limit).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::store::Store;

/// Buckets kept at most; idle (full) ones are dropped first when this is reached.
const MAX_BUCKETS: usize = 10_000;

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<[u8; 16], (f64, Instant)>>,
    /// The cluster's buckets, under keys prefixed with the limit's name.
    shared: Option<(&'static str, Store)>,
    /// Keys the cluster's cells with HMAC-SHA256 under `node_secret` when there is one, so that
    /// a cell's key does not give away the address it counts (IPv4 digests are easy to reverse).
    cell_key: Option<ring::hmac::Key>,
}

impl RateLimiter {
    /// `per_minute` requests per minute with bursts of the same size; 0 disables the limit.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
            shared: None,
            cell_key: None,
        }
    }

    /// The same limit kept in `store` when it is shared by several nodes (PostgreSQL), under
    /// `name` (one name per limit); in memory otherwise.
    /// Cells are keyed with `secret` (the cluster's `node_secret`) when given.
    pub(crate) fn for_cluster(
        per_minute: u32,
        name: &'static str,
        store: &Store,
        secret: Option<&str>,
    ) -> RateLimiter {
        RateLimiter {
            shared: store.is_shared().then(|| (name, store.clone())),
            cell_key: secret.map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.as_bytes())),
            ..RateLimiter::new(per_minute)
        }
    }

    /// Takes a token for `key` now, from the cluster's bucket when there is one, or says how many
    /// seconds until one is available.
    pub async fn take(&self, key: &str) -> Result<(), u32> {
        let Some((name, store)) = self.shared.as_ref().filter(|_| self.per_minute > 0) else {
            return self.check(key, Instant::now());
        };
        let cell = match &self.cell_key {
            Some(k) => format!(
                "{name}:{}",
                hex::encode(&ring::hmac::sign(k, key.as_bytes()).as_ref()[..16])
            ),
            None => format!("{name}:{}", hex::encode(digest(key))),
        };
        // At least 1 ms apart: a limit above 60,000 a minute is as good as none anyway.
        let interval_ms = (60_000 / i64::from(self.per_minute)).max(1);
        let now = crate::events::unix_ms_now();
        match store
            .take_rate_token(&cell, now, interval_ms, i64::from(self.per_minute))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait_ms)) => Err(((wait_ms + 999) / 1000).max(1) as u32),
            Err(e) => {
                tracing::warn!(error = %e, "the shared rate limit is unavailable; using this node's");
                self.check(key, Instant::now())
            }
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a token for `key` at `now`, or says how many seconds until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u32> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let id = digest(key);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&id) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < capacity
            });
            if buckets.len() >= MAX_BUCKETS {
                let oldest = buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    buckets.remove(&k);
                }
            }
        }
        let (tokens, at) = buckets.entry(id).or_insert((capacity, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_sec).ceil().max(1.0) as u32)
        }
    }
}

/// A key's first 128 bits of SHA-256: fixed size, and no address or name kept in clear.
fn digest(key: &str) -> [u8; 16] {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The request body did not arrive within the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyDeadlineExceeded;

/// Middleware: the whole request body must arrive within the read timeout (from the moment its
/// headers did), or reading it fails with [`BodyDeadlineExceeded`] (`408`, and the connection is
/// closed): a client trickling bytes cannot hold a connection open. Nothing is buffered here; each
/// route's own body limit still applies as the handler reads.
pub(crate) async fn body_deadline(
    axum::extract::State(timeout): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let (parts, body) = req.into_parts();
    let frames = futures_util::stream::unfold(
        (body.into_data_stream(), false),
        move |(mut frames, failed)| async move {
            if failed {
                return None;
            }
            match tokio::time::timeout_at(deadline, frames.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), (frames, false))),
                Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), (frames, true))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(axum::BoxError::from(BodyDeadlineExceeded)),
                    (frames, true),
                )),
            }
        },
    );
    let body = axum::body::Body::from_stream(frames);
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_key() {
        let l = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
        }
        assert_eq!(l.check("a", t0), Err(20));
        assert!(l.check("b", t0).is_ok(), "keys are independent");
        assert!(l.check("a", t0 + Duration::from_secs(20)).is_ok());
        assert!(l.check("a", t0 + Duration::from_secs(20)).is_err());
        assert!(RateLimiter::new(0).check("a", t0).is_ok());
    }

    #[test]
    fn holds_at_most_max_buckets_of_fixed_size() {
        let l = RateLimiter::new(1);
        let t0 = Instant::now();
        let long = "x".repeat(4096);
        for i in 0..MAX_BUCKETS + 50 {
            let _ = l.check(&format!("{long}{i}"), t0);
        }
        assert_eq!(l.len(), MAX_BUCKETS);
        // The newest key is kept and still limited.
        let last = format!("{long}{}", MAX_BUCKETS + 49);
        assert!(l.check(&last, t0).is_err());
    }
}
