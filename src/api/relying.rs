//! The relying party's integration surface beyond one session: the session list, the signing
//! keys (JWKS), its webhook and delivery log, and deletion of everything about a subject.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::ApiJson;
use super::sessions::ApiKey;
use super::{ApiError, AppState};
use crate::store::{ListCursor, SessionFilter, WebhookTarget};

/// `GET /.well-known/jwks.json`: the keys that verify signed verdicts (public).
pub async fn jwks(
    State(state): State<AppState>,
) -> Result<([(header::HeaderName, &'static str); 1], Json<Value>), ApiError> {
    let keys = state.registry.notifier().signer.jwks().await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(keys)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Verdict status: passed, failed, needs_review, cancelled, expired.
    pub status: Option<String>,
    pub subject: Option<String>,
    /// Only sessions created before this (Unix ms). Deprecated for paging: sessions created in
    /// the same millisecond as the last one seen are skipped; use `cursor`.
    pub before: Option<i64>,
    /// The `next_cursor` of the previous page (opaque).
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// `GET /v1/sessions`: this key's sessions, newest first (ties by id), filtered, in pages:
/// `next_cursor` is set when the page is full and fetches the next one.
pub async fn list(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    const STATUSES: [&str; 5] = ["passed", "failed", "needs_review", "cancelled", "expired"];
    if q.status.as_deref().is_some_and(|s| !STATUSES.contains(&s)) {
        return Err(ApiError::BadRequest(format!(
            "status must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1..=500".into()));
    }
    let after = match q.cursor.as_deref() {
        Some(c) => Some(
            ListCursor::decode(c)
                .ok_or_else(|| ApiError::BadRequest("cursor is not a next_cursor value".into()))?,
        ),
        None => None,
    };
    let rows = state
        .registry
        .store()
        .list_sessions(&SessionFilter {
            api_key_id: Some(key.id),
            verdict_status: q.status,
            subject: q.subject,
            created_before: q.before,
            after,
            limit,
            oldest_first: false,
        })
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last())
        .flatten()
        .map(|r| {
            ListCursor {
                created_at: r.created_at,
                id: r.id.clone(),
            }
            .encode()
        });
    let sessions: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let verdict: Value = r
                .verdict
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            json!({
                "id": r.id,
                "subject": r.subject,
                "reference": r.reference,
                "state": r.state,
                "created_at": r.created_at,
                "ended_at": r.ended_at,
                "end_reason": r.end_reason,
                "status": r.verdict_status,
                "reasons": verdict["reasons"].as_array().map(|a| a.iter().map(|x| x["code"].clone()).collect::<Vec<_>>()),
            })
        })
        .collect();
    Ok(Json(
        json!({ "sessions": sessions, "next_cursor": next_cursor }),
    ))
}

/// Longest accepted webhook URL (what browsers and proxies handle reliably).
const MAX_WEBHOOK_URL: usize = 2048;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    pub url: String,
}

/// `PUT /v1/webhook`: sets this key's callback URL; returns a new signing secret (shown once).
pub async fn set_webhook(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    ApiJson(req): ApiJson<SetWebhook>,
) -> Result<Json<Value>, ApiError> {
    if req.url.len() > MAX_WEBHOOK_URL {
        return Err(ApiError::Unprocessable(format!(
            "url is limited to {MAX_WEBHOOK_URL} characters"
        )));
    }
    let url =
        reqwest::Url::parse(&req.url).map_err(|e| ApiError::Unprocessable(format!("url: {e}")))?;
    // Internal addresses only where explicitly allowed (development, tests): a webhook must not
    // become a way to probe the operator's network. Deliveries check the resolved address again.
    let internal_ok = state.cfg.dev || state.cfg.webhook_allow_internal;
    if !(url.scheme() == "https" || (url.scheme() == "http" && internal_ok)) {
        return Err(ApiError::Unprocessable("url must be https://".into()));
    }
    if let Err(e) = state
        .registry
        .notifier()
        .worker
        .check_destination(&url)
        .await
    {
        return Err(ApiError::Unprocessable(match e {
            crate::notify::address::AddressError::Unresolved(_) => format!("url: {e}"),
            _ => format!(
                "url must not point at a loopback, private, link-local or other internal address ({e})"
            ),
        }));
    }
    let (secret, _) = crate::session::tokens::new_secret("whsec_");
    state
        .registry
        .store()
        .set_webhook(
            &key.id,
            Some(&WebhookTarget {
                url: url.to_string(),
                secret: secret.clone(),
            }),
        )
        .await?;
    tracing::info!(api_key = %key.id, "webhook set");
    Ok(Json(json!({ "url": url.to_string(), "secret": secret })))
}

/// `DELETE /v1/webhook`: no more deliveries (queued ones are given up).
pub async fn delete_webhook(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
) -> Result<axum::http::StatusCode, ApiError> {
    state.registry.store().set_webhook(&key.id, None).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `GET /v1/sessions/{id}/deliveries`: the webhook deliveries of a session and their attempts.
pub async fn deliveries(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    key.owned_session(&state, &id).await?;
    let store = state.registry.store();
    let mut out = Vec::new();
    for d in store.webhook_deliveries(&id).await? {
        let attempts: Vec<Value> = store
            .webhook_attempts(&d.id)
            .await?
            .into_iter()
            .map(|(n, status)| json!({ "attempt": n, "status": status }))
            .collect();
        out.push(json!({
            "id": d.id,
            "event": d.event,
            "created_at": d.created_at,
            "delivered_at": d.delivered_at,
            "failed_at": d.failed_at,
            "next_attempt_at": (d.delivered_at.is_none() && d.failed_at.is_none()).then_some(d.next_attempt_at),
            "attempts": attempts,
        }));
    }
    Ok(Json(json!({ "deliveries": out })))
}

/// `DELETE /v1/subjects/{subject}`: every session of this subject under this key, with its
/// timeline, deliveries, audit entries and evidence files. Running calls are ended first.
pub async fn delete_subject(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    Path(subject): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.registry.store();
    let ids = store.subject_sessions(&key.id, &subject).await?;
    for id in &ids {
        if let Some(s) = state.registry.get(id) {
            let _ = state
                .registry
                .end(&s, crate::media::peer::EndReason::Deleted)
                .await;
            // Wait until the end is recorded (verdict, webhook, evidence all written), so nothing
            // is written back after the deletion below.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while store
                .get_session(id)
                .await?
                .is_some_and(|r| r.ended_at.is_none())
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            state.registry.forget(id);
        }
    }
    let data_dir = std::path::PathBuf::from(&state.cfg.data_dir);
    let dirs: Vec<_> = ids
        .iter()
        .map(|id| crate::store::evidence::session_dir(&data_dir, id))
        .collect();
    let files = tokio::task::spawn_blocking(move || {
        let mut files = 0usize;
        for d in dirs {
            if let Ok(entries) = std::fs::read_dir(&d) {
                files += entries.count();
            }
            match std::fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("cannot delete evidence: {e}")))?;
    let deleted = store.delete_sessions(&ids).await?;
    // The subject id itself is personal data: log only counts.
    tracing::info!(api_key = %key.id, sessions = deleted, files, "deleted a subject's data");
    Ok(Json(
        json!({ "sessions_deleted": deleted, "files_deleted": files }),
    ))
}
