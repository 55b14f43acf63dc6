//! The relying party's integration surface beyond one session: the session list, the signing
//! keys (JWKS), its webhook and delivery log, and deletion of everything about a subject.

use axum::extract::{ConnectInfo, Path, Query, State};
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
pub(crate) struct ListQuery {
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
pub(crate) struct SetWebhook {
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
pub(crate) async fn delete_webhook(
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
        out.push(delivery_json(store, &d).await?);
    }
    Ok(Json(json!({ "deliveries": out })))
}

/// A delivery in the log: its state and every attempt with its time, status and duration.
async fn delivery_json(
    store: &crate::store::Store,
    d: &crate::store::OutboxRow,
) -> Result<Value, ApiError> {
    let attempts: Vec<Value> = store
        .webhook_attempt_log(&d.id)
        .await?
        .into_iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "at": a.at,
                "status": a.status,
                "duration_ms": a.duration_ms,
            })
        })
        .collect();
    let event_type = serde_json::from_str::<Value>(&d.body)
        .ok()
        .and_then(|b| b["type"].as_str().map(str::to_string));
    Ok(json!({
            "id": d.id,
            "event": d.event,
            "type": event_type,
            "created_at": d.created_at,
            "resent_at": d.resent_at,
            "delivered_at": d.delivered_at,
            "failed_at": d.failed_at,
            "next_attempt_at": (d.delivered_at.is_none() && d.failed_at.is_none()).then_some(d.next_attempt_at),
            "attempts": attempts,
    }))
}

/// `POST /v1/webhook/deliveries/{id}/resend`: sends a delivered or given-up delivery again (same
/// id and body, so receivers deduplicate it; new attempts are added to its log).
pub(crate) async fn resend_delivery(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    Path(id): Path<String>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let store = state.registry.store();
    if store.webhook_delivery(&key.id, &id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    if store.get_webhook(&key.id).await?.is_none() {
        return Err(ApiError::Conflict(
            "no webhook is set; PUT /v1/webhook first".into(),
        ));
    }
    if !store
        .resend_webhook(&key.id, &id, crate::events::unix_ms_now())
        .await?
    {
        return Err(ApiError::Conflict(
            "the delivery is still pending; it is retried on its own".into(),
        ));
    }
    state.registry.notifier().worker.wake();
    let d = store
        .webhook_delivery(&key.id, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(delivery_json(store, &d).await?),
    ))
}

/// `POST /v1/webhook/ping`: sends a `webhook.ping` event to the webhook now and answers with
/// what the receiver said (not stored, not retried).
pub(crate) async fn ping_webhook(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
) -> Result<Json<Value>, ApiError> {
    let store = state.registry.store();
    let target = store
        .get_webhook(&key.id)
        .await?
        .ok_or_else(|| ApiError::Conflict("no webhook is set; PUT /v1/webhook first".into()))?;
    let (id, body) = crate::notify::Notifier::ping_body();
    let outcome = state
        .registry
        .notifier()
        .worker
        .send(&key.id, &target, &id, "ping", &body)
        .await?;
    Ok(Json(json!({
        "id": id,
        "type": crate::notify::EVENT_PING,
        "delivered": outcome.delivered,
        "status": outcome.status,
        "duration_ms": outcome.duration_ms,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateSecret {
    /// How long the previous secret keeps signing deliveries too (default a day, at most 7 days;
    /// 0 ends it now).
    pub overlap_secs: Option<i64>,
}

/// Longest overlap of two webhook secrets.
const MAX_SECRET_OVERLAP_SECS: i64 = 7 * 24 * 3600;

/// `POST /v1/webhook/secret`: a new webhook secret (shown once). Until the overlap ends, every
/// delivery carries two signatures (new secret first, then the previous one), so receivers can
/// switch without losing a delivery.
pub(crate) async fn rotate_webhook_secret(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    body: Option<Json<RotateSecret>>,
) -> Result<Json<Value>, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let overlap_secs = req.overlap_secs.unwrap_or(24 * 3600);
    if !(0..=MAX_SECRET_OVERLAP_SECS).contains(&overlap_secs) {
        return Err(ApiError::BadRequest(format!(
            "overlap_secs must be 0..={MAX_SECRET_OVERLAP_SECS}"
        )));
    }
    let (secret, _) = crate::session::tokens::new_secret("whsec_");
    let previous_valid_until = crate::events::unix_ms_now() + overlap_secs * 1000;
    if !state
        .registry
        .store()
        .rotate_webhook_secret(&key.id, &secret, previous_valid_until)
        .await?
    {
        return Err(ApiError::Conflict(
            "no webhook is set; PUT /v1/webhook first".into(),
        ));
    }
    tracing::info!(api_key = %key.id, overlap_secs, "webhook secret rotated");
    Ok(Json(json!({
        "secret": secret,
        "previous_secret_valid_until": (overlap_secs > 0).then_some(previous_valid_until),
    })))
}

/// `GET /v1/subjects/{subject}/practice`: whether the person practised before verifying (how many
/// practice runs, and how the last one went), never their frames or a verdict to rely on.
pub(crate) async fn subject_practice(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    Path(subject): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (runs, last) = state
        .registry
        .store()
        .practice_runs(&key.id, &subject)
        .await?;
    let last = last.map(|(id, verdict, ended_at)| {
        let outcome = verdict
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| super::sessions::practice_outcome(&v));
        json!({ "id": id, "ended_at": ended_at, "outcome": outcome })
    });
    Ok(Json(
        json!({ "subject": subject, "runs": runs, "last": last }),
    ))
}

/// `DELETE /v1/subjects/{subject}`: every session of this subject under this key, with its
/// timeline, deliveries, audit entries and evidence files. Running calls are ended first.
pub async fn delete_subject(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ApiKey(key): ApiKey,
    headers: axum::http::HeaderMap,
    Path(subject): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.registry.store();
    let ids = store.subject_sessions(&key.id, &subject).await?;
    let client = super::client_ip(&state, peer, &headers);
    for id in &ids {
        let running_here = state.registry.get(id);
        if let Some(s) = &running_here {
            let _ = state
                .registry
                .end(s, crate::media::peer::EndReason::Deleted)
                .await;
        } else if !super::forward::cancel_on_owner(&state, id, &headers, &client).await {
            continue;
        }
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
        if running_here.is_some() {
            state.registry.forget(id);
        }
    }
    let mut files = 0usize;
    if let Some(evidence) = store.evidence() {
        for id in &ids {
            files += evidence
                .delete_session(id)
                .await
                .map_err(|e| ApiError::Internal(format!("cannot delete evidence: {e}")))?;
        }
    }
    let deleted = store.delete_sessions(&ids).await?;
    let enrolments = store.delete_enrolment(&key.id, &subject).await?;
    // The subject id itself is personal data: log only counts.
    tracing::info!(api_key = %key.id, sessions = deleted, files, enrolments, "deleted a subject's data");
    Ok(Json(
        json!({ "sessions_deleted": deleted, "files_deleted": files, "enrolments_deleted": enrolments }),
    ))
}
