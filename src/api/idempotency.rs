//! `Idempotency-Key` on `POST /v1/sessions`: a backend that retries a creation whose answer it
//! lost (timeout, dropped connection) gets the same session back instead of a second one.
//!
//! Keys are scoped to the API key. The answer is kept in memory, on the instance that created the
//! session, until the session's `expires_at` (after which its client token is useless anyway);
//! the client token in it is never written to the store. On a cluster (`node_secret`) the database
//! records which node holds a key (`Store::claim_idempotency_key`, by digest), and a retry that
//! reaches another node is forwarded there (`api::forward`). A key reused with a different request is
//! refused (422), and a retry while the first request is still running gets 409.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use super::sessions::CreateSession;

/// Entries kept at most; expired ones are dropped first when this is reached.
const MAX_ENTRIES: usize = 100_000;

enum Slot {
    InFlight(CreateSession),
    Done {
        request: CreateSession,
        response: Value,
        until_ms: i64,
    },
}

/// What to do with a request that carries an idempotency key.
#[derive(Debug, PartialEq)]
pub(crate) enum Begin {
    /// First use: create the session, then `finish` (or `abandon` on failure).
    Fresh,
    /// Answer again with the stored response.
    Replay(Value),
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still being answered.
    InFlight,
    /// Too many keys remembered right now.
    Full,
}

#[derive(Default)]
pub struct IdempotencyCache {
    entries: Mutex<HashMap<(String, String), Slot>>,
}

/// The digest under which the cluster's database knows a key (never the key itself).
pub(crate) fn key_digest(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// A valid key: 1 to 255 visible ASCII characters.
pub(crate) fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

impl IdempotencyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Slot>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin(
        &self,
        api_key_id: &str,
        key: &str,
        request: &CreateSession,
        now_ms: i64,
    ) -> Begin {
        let mut entries = self.lock();
        let id = (api_key_id.to_string(), key.to_string());
        match entries.get(&id) {
            Some(Slot::InFlight(first)) => {
                return if first == request {
                    Begin::InFlight
                } else {
                    Begin::Mismatch
                };
            }
            Some(Slot::Done {
                request: first,
                response,
                until_ms,
            }) if *until_ms > now_ms => {
                return if first == request {
                    Begin::Replay(response.clone())
                } else {
                    Begin::Mismatch
                };
            }
            _ => {}
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, slot| match slot {
                Slot::InFlight(_) => true,
                Slot::Done { until_ms, .. } => *until_ms > now_ms,
            });
            if entries.len() >= MAX_ENTRIES {
                return Begin::Full;
            }
        }
        entries.insert(id, Slot::InFlight(request.clone()));
        Begin::Fresh
    }

    /// Remembers the answer to a `Fresh` request until `until_ms`.
    pub fn finish(&self, api_key_id: &str, key: &str, response: Value, until_ms: i64) {
        let mut entries = self.lock();
        let id = (api_key_id.to_string(), key.to_string());
        if let Some(Slot::InFlight(request)) = entries.remove(&id) {
            entries.insert(
                id,
                Slot::Done {
                    request,
                    response,
                    until_ms,
                },
            );
        }
    }

    /// Forgets a `Fresh` request that failed, so a retry may try again.
    pub(crate) fn abandon(&self, api_key_id: &str, key: &str) {
        let mut entries = self.lock();
        let id = (api_key_id.to_string(), key.to_string());
        if matches!(entries.get(&id), Some(Slot::InFlight(_))) {
            entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(subject: &str) -> CreateSession {
        CreateSession {
            subject: Some(subject.into()),
            ..Default::default()
        }
    }

    #[test]
    fn replays_within_the_lifetime_refuses_other_requests_and_scopes_by_api_key() {
        let c = IdempotencyCache::default();
        assert_eq!(c.begin("k1", "abc", &req("a"), 0), Begin::Fresh);
        assert_eq!(c.begin("k1", "abc", &req("a"), 1), Begin::InFlight);
        assert_eq!(c.begin("k1", "abc", &req("b"), 1), Begin::Mismatch);
        c.finish("k1", "abc", json!({"id": "ses_1"}), 100);
        assert_eq!(
            c.begin("k1", "abc", &req("a"), 50),
            Begin::Replay(json!({"id": "ses_1"}))
        );
        assert_eq!(c.begin("k1", "abc", &req("b"), 50), Begin::Mismatch);
        assert_eq!(
            c.begin("k2", "abc", &req("b"), 50),
            Begin::Fresh,
            "per API key"
        );
        // After the session's expiry the key starts over.
        assert_eq!(c.begin("k1", "abc", &req("b"), 100), Begin::Fresh);
        // A failed request frees its key.
        c.abandon("k1", "abc");
        assert_eq!(c.begin("k1", "abc", &req("a"), 100), Begin::Fresh);
        assert!(valid_key("order-42/attempt-1"));
        assert!(!valid_key(""));
        assert!(!valid_key("with space"));
        assert!(!valid_key(&"x".repeat(256)));
    }
}
