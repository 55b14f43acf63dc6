//! Secrets handed to callers: session ids, client tokens, API keys.
//!
//! Every secret is 256 random bits (session ids 128) from the OS generator, base64url-encoded with
//! a short prefix that says what it is. Only SHA-256 digests are kept, so a leaked database or
//! memory dump does not leak usable credentials; secrets are never logged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// SHA-256 of a secret, as stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    pub fn of(secret: &str) -> Self {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Even the digest stays out of logs; a prefix is enough to tell two apart.
        write!(f, "SecretHash({}..)", &hex::encode(&self.0[..4]))
    }
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new session id: `ses_` + 128 random bits in hex (URL- and log-safe; it is not a credential).
pub(crate) fn new_session_id() -> String {
    let mut buf = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    format!("ses_{}", hex::encode(buf))
}

/// A new secret with a prefix (`vct_` client token, `vce_` events token, `vck_` API key) and its hash.
pub fn new_secret(prefix: &str) -> (String, SecretHash) {
    let secret = format!("{prefix}{}", random_b64(32));
    let hash = SecretHash::of(&secret);
    (secret, hash)
}

/// A short random identifier for non-secret records (API key ids).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_b64(9))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub(crate) fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_prefixed_and_hash_stably() {
        let (a, ha) = new_secret("vct_");
        let (b, hb) = new_secret("vct_");
        assert!(a.starts_with("vct_") && a.len() >= 4 + 43);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(SecretHash::of(&a), ha);
        assert_eq!(ha.to_hex().len(), 64);
        assert!(!format!("{ha:?}").contains(&ha.to_hex()));
    }

    #[test]
    fn session_ids_carry_128_bits() {
        let id = new_session_id();
        assert_eq!(id.len(), 4 + 32);
        assert_ne!(id, new_session_id());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
