//! The review console's API (`static/review.html`): operators log in, see the `needs_review`
//! queue with each session's timeline, metrics and evidence, and approve or reject with a note.
//! Every login, view and decision goes to the audit log; a decision re-signs the verdict and
//! notifies the relying party's webhook.
//!
//! Operators are created with `vericall operators create <name>`. A login is an HttpOnly,
//! SameSite=Strict cookie holding a random token (only its hash is stored); requests that change
//! anything must also carry `x-vericall-csrf: 1`, which a cross-site form cannot send.

use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SecureRandom;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::ApiJson;
use super::{ApiError, AppState};
use crate::events::unix_ms_now;
use crate::notify::VerdictNotice;
use crate::reasons::ReasonCode;
use crate::session::tokens::{new_id, new_secret, SecretHash};
use crate::store::{AuditRow, SessionFilter, VerdictWrite};

const COOKIE: &str = "vericall_review";
/// Largest login body (a username and a password).
pub(crate) const MAX_LOGIN_BODY: usize = 8 * 1024;
/// Longest username or password considered (longer ones are refused before any work).
const MAX_CREDENTIAL_BYTES: usize = 256;
const CSRF_HEADER: &str = "x-vericall-csrf";
/// PBKDF2-HMAC-SHA256 iterations (OWASP 2023 guidance for this PRF).
const PBKDF2_ITERATIONS: u32 = 600_000;
/// A failed login costs the caller this long (slows password guessing).
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(400);

// ---- passwords ----

/// `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .expect("system randomness is available");
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero"),
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "pbkdf2-sha256${PBKDF2_ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

pub(crate) fn verify_password(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, iterations, salt, hash] = parts[..] else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(hash)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(hash),
    ) else {
        return false;
    };
    let Some(iterations) = std::num::NonZeroU32::new(iterations) else {
        return false;
    };
    scheme == "pbkdf2-sha256"
        && ring::pbkdf2::verify(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.as_bytes(),
            &hash,
        )
        .is_ok()
}

/// A hash to check unknown usernames against (computed once).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real operator"))
}

// ---- authentication ----

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A logged-in operator.
pub struct Operator(pub String);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = cookie_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let hash = SecretHash::of(&token).to_hex();
        let user = state
            .registry
            .store()
            .find_login(&hash, unix_ms_now())
            .await?;
        user.map(Operator).ok_or(ApiError::Unauthorized)
    }
}

fn require_csrf(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some("1") => Ok(()),
        _ => Err(ApiError::CsrfRequired),
    }
}

async fn audit(
    state: &AppState,
    operator: &str,
    action: &str,
    session_id: Option<&str>,
    note: Option<&str>,
) -> Result<(), ApiError> {
    state
        .registry
        .store()
        .insert_audit(&AuditRow {
            id: new_id("aud_"),
            at: unix_ms_now(),
            operator: operator.to_string(),
            action: action.to_string(),
            session_id: session_id.map(String::from),
            note: note.map(String::from),
        })
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// `POST /v1/review/login`.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<Login>,
) -> Result<Response, ApiError> {
    require_csrf(&headers)?;
    if req.username.len() > MAX_CREDENTIAL_BYTES || req.password.len() > MAX_CREDENTIAL_BYTES {
        return Err(ApiError::Unprocessable(format!(
            "username and password are limited to {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    let ip = super::client_ip(&state, peer, &headers);
    let limited = match state.login_limit.take(&format!("ip:{ip}")).await {
        Ok(()) => {
            state
                .login_limit
                .take(&format!("user:{}", req.username))
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(retry_after_secs) = limited {
        return Err(ApiError::TooManyRequests {
            code: "rate_limited",
            message: "too many login attempts; retry later".into(),
            retry_after_secs,
        });
    }
    let store = state.registry.store();
    let stored = store.operator_password(&req.username).await?;
    let password = req.password.clone();
    // Unknown users cost the same hash as known ones, so timing does not tell which exist.
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| dummy_hash().to_string());
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        && known;
    if !ok {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        if req.username.len() <= 64 {
            audit(&state, &req.username, "login_failed", None, None).await?;
        }
        return Err(ApiError::Unauthorized);
    }
    let (token, hash) = new_secret("vro_");
    let now = unix_ms_now();
    let expires = now + state.cfg.operator_login_hours as i64 * 3_600_000;
    store
        .insert_login(&hash.to_hex(), &req.username, now, expires)
        .await?;
    audit(&state, &req.username, "login", None, None).await?;
    let secure = if state.base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        state.cfg.operator_login_hours * 3600
    );
    let mut response = Json(json!({ "username": req.username })).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// `POST /v1/review/logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Operator(user): Operator,
) -> Result<Response, ApiError> {
    require_csrf(&headers)?;
    if let Some(token) = cookie_token(&headers) {
        state
            .registry
            .store()
            .delete_login(&SecretHash::of(&token).to_hex())
            .await?;
    }
    audit(&state, &user, "logout", None, None).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("vericall_review=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// `GET /v1/review/me`.
pub async fn me(Operator(user): Operator) -> Json<Value> {
    Json(json!({ "username": user }))
}

fn verdict_of(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// `GET /v1/review/queue`: sessions waiting for a decision, oldest first.
pub async fn queue(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> Result<Json<Value>, ApiError> {
    let rows = state
        .registry
        .store()
        .list_sessions(&SessionFilter {
            verdict_status: Some("needs_review".into()),
            limit: 200,
            oldest_first: true,
            ..SessionFilter::default()
        })
        .await?;
    let sessions: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let v = verdict_of(r.verdict.as_deref());
            json!({
                "id": r.id,
                "subject": r.subject,
                "created_at": r.created_at,
                "ended_at": r.ended_at,
                "verdict": { "status": v["status"], "reasons": v["reasons"] },
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// The support reference as the person read it out (any case, dash optional).
    #[serde(rename = "ref")]
    pub support_ref: String,
}

/// `GET /v1/review/lookup?ref=K7Q2-M9XD`: the sessions a person's support reference names,
/// newest first (one in practice). Customer service finds the session a caller quotes from
/// their result screen; the lookup is audited like a view.
pub async fn lookup(
    State(state): State<AppState>,
    Operator(user): Operator,
    axum::extract::Query(q): axum::extract::Query<Lookup>,
) -> Result<Json<Value>, ApiError> {
    let canonical = crate::reasons::parse_support_reference(&q.support_ref).ok_or_else(|| {
        ApiError::BadRequest("a support reference is 8 letters and digits, e.g. K7Q2-M9XD".into())
    })?;
    let ids = state
        .registry
        .store()
        .find_by_support_reference(&canonical)
        .await?;
    audit(
        &state,
        &user,
        "lookup",
        ids.first().map(String::as_str),
        Some(&canonical),
    )
    .await?;
    Ok(Json(json!({ "support_ref": canonical, "sessions": ids })))
}

/// `GET /v1/review/sessions/{id}`: everything an operator needs to decide (the view is audited).
pub async fn session(
    State(state): State<AppState>,
    Operator(user): Operator,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.registry.store();
    let row = store.get_session(&id).await?.ok_or(ApiError::NotFound)?;
    let verdict = verdict_of(store.get_verdict(&id).await?.as_deref());
    let network = row
        .network_summary
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .map(|mut n| {
            if let Some(m) = n.as_object_mut() {
                m.remove("verdict");
            }
            n
        })
        .unwrap_or(Value::Null);
    let timeline: Vec<Value> = store
        .list_events(&id, 0)
        .await?
        .into_iter()
        .filter_map(|e| serde_json::from_str(&e.body).ok())
        .collect();
    audit(&state, &user, "view", Some(&id), None).await?;
    let audit_log = store.list_audit(Some(&id)).await?;
    Ok(Json(json!({
        "id": row.id,
        "support_ref": crate::reasons::support_reference(&row.id),
        "subject": row.subject,
        "state": row.state,
        "created_at": row.created_at,
        "connected_at": row.connected_at,
        "ended_at": row.ended_at,
        "end_reason": row.end_reason,
        "verdict": verdict,
        "network": network,
        "timeline": timeline,
        "audit": audit_log,
    })))
}

/// `GET /v1/review/sessions/{id}/frames/{name}`: one evidence frame named in the verdict.
pub async fn frame(
    State(state): State<AppState>,
    Operator(_): Operator,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let valid = name.ends_with(".jpg")
        && name.len() <= 80
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !valid {
        return Err(ApiError::NotFound);
    }
    let verdict = verdict_of(state.registry.store().get_verdict(&id).await?.as_deref());
    let listed = verdict["frames"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == name.as_str()));
    if !listed {
        return Err(ApiError::NotFound);
    }
    let evidence = state
        .registry
        .store()
        .evidence()
        .ok_or(ApiError::NotFound)?;
    let bytes = evidence
        .get(&id, &name)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or(ApiError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub decision: String,
    pub note: String,
}

/// `POST /v1/review/sessions/{id}/decision`: approve (passed) or reject (failed with
/// `REVIEW_REJECTED`) a `needs_review` session, with a required note.
pub async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    Operator(user): Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Decision>,
) -> Result<Json<Value>, ApiError> {
    require_csrf(&headers)?;
    let note = req.note.trim();
    if note.is_empty() || note.len() > 2000 {
        return Err(ApiError::Unprocessable(
            "a note (1..2000 characters) is required".into(),
        ));
    }
    let (status, reasons) = match req.decision.as_str() {
        "approve" => ("passed", json!([])),
        "reject" => {
            let info = ReasonCode::ReviewRejected.info();
            (
                "failed",
                json!([{
                    "code": info.code,
                    "retryable": info.retryable,
                    "hint_key": ReasonCode::ReviewRejected.hint_key(),
                    "hint_en": info.hint_en,
                    "hint_zh": info.hint_zh,
                    "evidence": { "operator": user },
                }]),
            )
        }
        _ => {
            return Err(ApiError::Unprocessable(
                "decision must be approve or reject".into(),
            ))
        }
    };
    let store = state.registry.store();
    let row = store.get_session(&id).await?.ok_or(ApiError::NotFound)?;
    let previous = verdict_of(store.get_verdict(&id).await?.as_deref());
    if previous["status"] != "needs_review" {
        return Err(ApiError::Conflict(
            "the session is not waiting for review".into(),
        ));
    }
    let reference = store.get_session_reference(&id).await?;
    let mut verdict = previous.clone();
    let decided_by = format!("operator:{user}");
    if let Some(m) = verdict.as_object_mut() {
        m.insert("status".into(), json!(status));
        m.insert("reasons".into(), reasons);
        m.insert("decided_by".into(), json!(decided_by));
        m.insert(
            "review".into(),
            json!({
                "operator": user,
                "decision": req.decision,
                "note": note,
                "at": unix_ms_now(),
                "previous": { "status": previous["status"], "reasons": previous["reasons"] },
            }),
        );
    }
    // The new verdict, its signed form and its webhook delivery are stored together, only if
    // no other operator decided meanwhile.
    let written = state
        .registry
        .notifier()
        .record(
            &VerdictNotice {
                session_id: &id,
                api_key_id: &row.api_key_id,
                subject: row.subject.as_deref(),
                reference: reference.as_deref(),
                verdict: &verdict,
                decided_by: &decided_by,
            },
            &VerdictWrite::Replace {
                expected_status: "needs_review",
            },
        )
        .await?;
    if !written {
        return Err(ApiError::Conflict("another operator decided first".into()));
    }
    audit(&state, &user, &req.decision, Some(&id), Some(note)).await?;
    tracing::info!(session = %id, operator = %user, decision = %req.decision, "review decision");
    Ok(Json(json!({ "verdict": verdict })))
}
