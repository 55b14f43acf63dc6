//! Short-lived TURN credentials minted per WHIP answer with coturn's REST-API shared secret
//! (`use-auth-secret` + `static-auth-secret`; draft-uberti-behave-turn-rest): the username is
//! `<expiry unix seconds>:<session id>`, the password base64(HMAC-SHA1(secret, username)). The TURN
//! server checks the HMAC and the expiry itself, so nothing is stored here, and a credential
//! leaked from one call stops working when it expires. Hand-written: no kept crate mints these.

use base64::Engine;

/// A TURN username and password for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnCredential {
    pub username: String,
    pub credential: String,
}

/// Credentials for `session_id`, valid until `now_unix + ttl_secs`.
pub(crate) fn mint(secret: &str, session_id: &str, now_unix: u64, ttl_secs: u64) -> TurnCredential {
    let username = format!("{}:{session_id}", now_unix + ttl_secs);
    // HMAC-SHA1 is what coturn's REST API specifies (not a choice made here).
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    TurnCredential {
        username,
        credential: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
    }
}

/// Whether `urls` names a TURN server (STUN servers take no credentials).
pub(crate) fn is_turn(urls: &str) -> bool {
    urls.starts_with("turn:") || urls.starts_with("turns:")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector was computed independently (Python's hmac and base64 modules).
    #[test]
    fn credentials_follow_coturns_rest_api() {
        let c = mint("north-secret", "ses_0123", 1_796_639_100, 900);
        assert_eq!(c.username, "1796640000:ses_0123");
        assert_eq!(c.credential, "ZgdW3vb48QRO0vbqGifb0gr1MBQ=");
    }

    #[test]
    fn only_turn_urls_take_credentials() {
        assert!(is_turn("turn:turn.example.com:3478?transport=udp"));
        assert!(is_turn("turns:turn.example.com:5349"));
        assert!(!is_turn("stun:stun.example.com:3478"));
    }
}
