//! Signed verdicts: a compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037), which a wallet
//! can verify offline against the keys published at `/.well-known/jwks.json`.
//!
//! Keys live in the store. The newest active key signs; `rotate` makes a new one and retires the
//! others, which stay in the JWKS for `RETIRED_KEY_PUBLISHED` so verdicts signed before the
//! rotation still verify.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde_json::{json, Value};
use tokio::sync::RwLock;

use crate::events::unix_ms_now;
use crate::store::{SigningKeyRow, Store, StoreError};

/// Retired keys stay in the JWKS this long (a verdict is normally checked right after it is
/// issued; a month covers late audits).
pub(crate) const RETIRED_KEY_PUBLISHED_MS: i64 = 30 * 24 * 3600 * 1000;

/// The JWS `typ` of a vericall verdict.
pub(crate) const VERDICT_TYP: &str = "vericall-verdict+jws";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key is unusable: {0}")]
    BadKey(String),
    #[error("malformed JWS")]
    Malformed,
    #[error("unknown key id")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
}

struct ActiveKey {
    kid: String,
    pair: Ed25519KeyPair,
    loaded: std::time::Instant,
}

/// A running server re-reads the active key this often, so `vericall signing-keys rotate` takes
/// effect everywhere within a minute.
const KEY_RELOAD: std::time::Duration = std::time::Duration::from_secs(60);

/// Signs verdicts with the active key; reloads from the store after a rotation.
pub struct VerdictSigner {
    store: Store,
    issuer: String,
    active: RwLock<Option<Arc<ActiveKey>>>,
    /// Retired keys stay in the JWKS this long: at least `RETIRED_KEY_PUBLISHED_MS`, and at least
    /// the verdict lifetime, so every unexpired verdict verifies against the published keys.
    retired_published_ms: i64,
}

fn new_kid() -> String {
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness is available");
    format!("vk_{}", hex::encode(b))
}

impl VerdictSigner {
    /// Uses the newest active key in the store, creating one on first start.
    pub async fn load(store: Store, issuer: String) -> Result<VerdictSigner, SigningError> {
        let signer = VerdictSigner {
            store,
            issuer,
            active: RwLock::new(None),
            retired_published_ms: RETIRED_KEY_PUBLISHED_MS,
        };
        signer.active_key().await?;
        Ok(signer)
    }

    /// Keeps retired keys published for at least `lifetime` (the signed verdicts' `exp - iat`).
    pub(crate) fn publish_retired_for(mut self, lifetime: std::time::Duration) -> VerdictSigner {
        self.retired_published_ms = self
            .retired_published_ms
            .max(lifetime.as_millis().min(i64::MAX as u128) as i64);
        self
    }

    async fn active_key(&self) -> Result<Arc<ActiveKey>, SigningError> {
        if let Some(k) = self.active.read().await.clone() {
            if k.loaded.elapsed() < KEY_RELOAD {
                return Ok(k);
            }
        }
        let mut slot = self.active.write().await;
        let keys = self.store.list_signing_keys().await?;
        let row = match keys.into_iter().find(|k| k.retired_at.is_none()) {
            Some(row) => row,
            None => create_key(&self.store).await?,
        };
        let der = STANDARD
            .decode(&row.pkcs8)
            .map_err(|e| SigningError::BadKey(e.to_string()))?;
        let pair =
            Ed25519KeyPair::from_pkcs8(&der).map_err(|e| SigningError::BadKey(e.to_string()))?;
        let key = Arc::new(ActiveKey {
            kid: row.kid,
            pair,
            loaded: std::time::Instant::now(),
        });
        *slot = Some(key.clone());
        Ok(key)
    }

    /// Makes a new signing key and retires the others (they stay published for a while).
    pub async fn rotate(&self) -> Result<String, SigningError> {
        let row = rotate_key(&self.store).await?;
        *self.active.write().await = None;
        self.active_key().await?;
        Ok(row.kid)
    }

    /// A compact JWS over `claims` (a JSON object; `iss` and `iat` are added).
    pub async fn sign(&self, mut claims: Value) -> Result<String, SigningError> {
        let key = self.active_key().await?;
        if let Some(obj) = claims.as_object_mut() {
            obj.insert("iss".into(), json!(self.issuer));
            obj.entry("iat").or_insert(json!(unix_ms_now() / 1000));
        }
        let header = json!({ "alg": "EdDSA", "kid": key.kid, "typ": VERDICT_TYP });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key.pair.sign(input.as_bytes());
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The JWK Set: the active key and keys retired less than `retired_published_ms` ago.
    pub async fn jwks(&self) -> Result<Value, SigningError> {
        let now = unix_ms_now();
        let keys: Vec<Value> = self
            .store
            .list_signing_keys()
            .await?
            .into_iter()
            .filter(|k| k.retired_at.is_none_or(|r| now - r < self.retired_published_ms))
            .map(|k| {
                json!({ "kty": "OKP", "crv": "Ed25519", "x": k.public_key, "kid": k.kid, "use": "sig", "alg": "EdDSA" })
            })
            .collect();
        Ok(json!({ "keys": keys }))
    }
}

async fn create_key(store: &Store) -> Result<SigningKeyRow, SigningError> {
    let rng = SystemRandom::new();
    let doc =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| SigningError::BadKey(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|e| SigningError::BadKey(e.to_string()))?;
    let row = SigningKeyRow {
        kid: new_kid(),
        pkcs8: STANDARD.encode(doc.as_ref()),
        public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        created_at: unix_ms_now(),
        retired_at: None,
    };
    store.insert_signing_key(&row).await?;
    tracing::info!(kid = %row.kid, "created a verdict signing key");
    Ok(row)
}

/// A new active key; every other key retired (used by `VerdictSigner::rotate` and the CLI).
pub async fn rotate_key(store: &Store) -> Result<SigningKeyRow, SigningError> {
    let row = create_key(store).await?;
    store
        .retire_signing_keys_except(&row.kid, unix_ms_now())
        .await?;
    Ok(row)
}

/// Verifies a compact JWS against a JWK Set (as a relying party would) and returns its claims.
pub fn verify(jws: &str, jwks: &Value) -> Result<Value, SigningError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SigningError::Malformed);
    };
    let decode = |x: &str| {
        URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| SigningError::Malformed)
    };
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| SigningError::Malformed)?;
    if header["alg"] != "EdDSA" {
        return Err(SigningError::Malformed);
    }
    let kid = header["kid"].as_str().ok_or(SigningError::Malformed)?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or(SigningError::UnknownKey)?;
    if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(SigningError::UnknownKey);
    }
    let public = decode(jwk["x"].as_str().ok_or(SigningError::UnknownKey)?)?;
    UnparsedPublicKey::new(&ED25519, public)
        .verify(format!("{h}.{p}").as_bytes(), &decode(s)?)
        .map_err(|_| SigningError::BadSignature)?;
    serde_json::from_slice(&decode(p)?).map_err(|_| SigningError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/v.db?mode=rwc", dir.path().display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn signs_verifies_rejects_tampering_and_survives_rotation() {
        let (store, _dir) = store().await;
        let signer = VerdictSigner::load(store.clone(), "https://v.example".into())
            .await
            .unwrap();
        let jws = signer
            .sign(json!({ "sid": "ses_1", "status": "passed" }))
            .await
            .unwrap();
        let jwks = signer.jwks().await.unwrap();
        let claims = verify(&jws, &jwks).unwrap();
        assert_eq!(claims["sid"], "ses_1");
        assert_eq!(claims["iss"], "https://v.example");

        // Flip the status in the payload: the signature no longer matches.
        let parts: Vec<&str> = jws.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("passed", "failed"),
        );
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert!(matches!(
            verify(&tampered, &jwks),
            Err(SigningError::BadSignature)
        ));

        // Rotation: new verdicts use the new key; the old verdict still verifies.
        let old_kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
        let new_kid = signer.rotate().await.unwrap();
        assert_ne!(old_kid, new_kid);
        let jwks = signer.jwks().await.unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        verify(&jws, &jwks).unwrap();
        let fresh = signer.sign(json!({ "sid": "ses_2" })).await.unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(fresh.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], new_kid.as_str());
        // A key not in the set is unknown.
        // (Picked by kid: both keys may carry the same creation millisecond.)
        let new_jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == new_kid.as_str())
            .unwrap()
            .clone();
        let only_new = json!({ "keys": [new_jwk] });
        assert!(matches!(
            verify(&jws, &only_new),
            Err(SigningError::UnknownKey)
        ));
    }
}
