//! `POST /v1/sessions` and `GET /v1/sessions/{id}` for the relying party's backend.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::body::OptionalApiJson;
use super::idempotency::{self, Begin};
use super::{ApiError, AppState};
use crate::notify::VerdictNotice;
use crate::session::tokens::{bearer, SecretHash};
use crate::store::{ApiKeyRow, SessionRow};

/// A request authenticated with a relying-party API key (`Authorization: Bearer vck_...`).
pub(crate) struct ApiKey(pub ApiKeyRow);

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        ApiKey::of(state, &parts.headers)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

impl ApiKey {
    /// The active API key the request's `Authorization: Bearer` names, if any.
    pub async fn of(state: &AppState, headers: &HeaderMap) -> Result<Option<ApiKey>, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(key) = bearer(value) else {
            return Ok(None);
        };
        let hash = SecretHash::of(key).to_hex();
        Ok(state
            .registry
            .store()
            .find_api_key(&hash)
            .await?
            .map(ApiKey))
    }
}

impl ApiKey {
    /// The stored session `id` if it belongs to this key; `404` otherwise (another key's sessions
    /// are indistinguishable from missing ones).
    pub(crate) async fn owned_session(
        &self,
        state: &AppState,
        id: &str,
    ) -> Result<SessionRow, ApiError> {
        state
            .registry
            .store()
            .get_session(id)
            .await?
            .filter(|r| r.api_key_id == self.0.id)
            .ok_or(ApiError::NotFound)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSession {
    /// The relying party's opaque id of the person (for attempt limits and deletion).
    #[serde(default)]
    pub subject: Option<String>,
    /// The relying party's opaque reference for this session (an order or case id): returned in
    /// GET, listings, webhooks and the signed verdict. At most 256 bytes.
    #[serde(default)]
    pub reference: Option<String>,
    /// Require a microphone (default true).
    #[serde(default)]
    pub audio: Option<bool>,
    /// The ID-document step: `{"mode": "off|optional|required", "kind": "cn_resident_id|passport|id1_card",
    /// "retain": "none|text|text_and_image", "expected": {...}}`.
    #[serde(default)]
    pub document: Option<crate::document::DocumentPolicy>,
    /// Keep the live face as `subject`'s enrolment if this session passes (default false).
    #[serde(default)]
    pub enrol: Option<bool>,
    /// A re-verification: match the live face against `subject`'s enrolment (default false).
    #[serde(default)]
    pub reverify: Option<bool>,
    /// `live` (default) or `practice`: a rehearsal whose outcome counts for nothing.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CreatedSession {
    pub id: String,
    /// `live` or `practice`.
    pub mode: &'static str,
    pub reference: Option<String>,
    /// The id of the API key that created the session: the `aud` of its signed verdict.
    pub api_key_id: String,
    pub client_token: String,
    pub expires_at: i64,
    pub whip_url: String,
    pub events_url: String,
    pub page_url: String,
}

pub async fn create(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    headers: HeaderMap,
    OptionalApiJson(body): OptionalApiJson<CreateSession>,
) -> Result<Response, ApiError> {
    state
        .session_limit
        .take(&key.id)
        .await
        .map_err(|retry_after_secs| ApiError::TooManyRequests {
            code: "rate_limited",
            message: "too many sessions created with this key; retry later".into(),
            retry_after_secs,
        })?;
    let req = body.unwrap_or_default();
    let Some(idempotency_key) = headers.get("idempotency-key") else {
        let created = create_new(&state, &key, req).await?;
        return Ok((StatusCode::CREATED, Json(created)).into_response());
    };
    let idempotency_key = idempotency_key
        .to_str()
        .ok()
        .filter(|k| idempotency::valid_key(k))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?
        .to_string();
    let cache = &state.idempotency;
    match cache.begin(
        &key.id,
        &idempotency_key,
        &req,
        crate::events::unix_ms_now(),
    ) {
        Begin::Fresh => {}
        Begin::Replay(body) => {
            return Ok((
                StatusCode::CREATED,
                [("idempotent-replayed", "true")],
                Json(body),
            )
                .into_response())
        }
        Begin::Mismatch => {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was used with a different request".into(),
            ))
        }
        Begin::InFlight => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being answered; retry".into(),
            ))
        }
        Begin::Full => {
            return Err(ApiError::Unavailable {
                retry_after_secs: 1,
            })
        }
    }
    match create_new(&state, &key, req).await {
        Ok(created) => {
            let body = serde_json::to_value(&created).unwrap_or(Value::Null);
            cache.finish(&key.id, &idempotency_key, body, created.expires_at);
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
        Err(e) => {
            cache.abandon(&key.id, &idempotency_key);
            if state.cluster.is_some() {
                let digest = idempotency::key_digest(&idempotency_key);
                if let Err(e) = state
                    .registry
                    .store()
                    .release_idempotency_key(&key.id, &digest)
                    .await
                {
                    tracing::warn!(error = %e, "cannot release an idempotency key");
                }
            }
            Err(e)
        }
    }
}

/// Validates the request and creates the session.
async fn create_new(
    state: &AppState,
    key: &ApiKeyRow,
    req: CreateSession,
) -> Result<CreatedSession, ApiError> {
    if req.subject.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(ApiError::BadRequest(
            "subject is limited to 256 bytes".into(),
        ));
    }
    if req.reference.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(ApiError::BadRequest(
            "reference is limited to 256 bytes".into(),
        ));
    }
    let document = req.document.unwrap_or_default();
    if let Some(expected) = &document.expected {
        expected
            .validate()
            .map_err(|m| ApiError::Unprocessable(m.into()))?;
    }
    if let (Some(e), false) = (&document.expected, document.is_on()) {
        if !e.is_empty() {
            return Err(ApiError::Unprocessable(
                "document.expected needs document.mode optional or required".into(),
            ));
        }
    }
    if document.expected.is_some()
        && document.kind == crate::document::fields::DocumentKind::Id1Card
    {
        return Err(ApiError::Unprocessable(
            "document.expected is not supported for kind id1_card (no text is read)".into(),
        ));
    }
    if document.is_on() && !state.registry.documents_available() {
        return Err(ApiError::Unprocessable(
            "document checks are unavailable on this server (face or OCR models not loaded; run scripts/setup)".into(),
        ));
    }
    let (enrol, reverify) = (req.enrol.unwrap_or(false), req.reverify.unwrap_or(false));
    let practice = match req.mode.as_deref() {
        None | Some("live") => false,
        Some("practice") => true,
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "mode is live (the default) or practice".into(),
            ))
        }
    };
    if practice && (enrol || reverify) {
        return Err(ApiError::Unprocessable(
            "a practice run neither enrols nor re-verifies".into(),
        ));
    }
    // A practice run keeps nothing read from a card.
    let mut document = document;
    if practice {
        document.retain = crate::document::Retain::None;
    }
    if (enrol || reverify) && req.subject.is_none() {
        return Err(ApiError::Unprocessable(
            "enrol and reverify need a subject (whose face is enrolled or matched)".into(),
        ));
    }
    if (enrol || reverify) && state.registry.face_models().is_none() {
        return Err(ApiError::Unprocessable(
            "enrol and reverify are unavailable on this server (face models not loaded; run scripts/setup)".into(),
        ));
    }
    let policy = crate::session::SessionPolicy {
        audio: req.audio.unwrap_or(true),
        document,
        enrol,
        reverify,
        practice,
    };
    let created = state
        .registry
        .create(&key.id, req.subject, req.reference, policy)
        .await?;
    let id = created.session.id.to_string();
    let base = &state.base_url;
    tracing::info!(session = %id, api_key = %key.id, "session created");
    let body = CreatedSession {
        whip_url: format!("{base}/whip/{id}"),
        events_url: events_url(base, &id, &created.events_token),
        // The token travels in the fragment, which browsers never send to a server.
        // The page labels a practice run as one (the server, not the page, decides what counts).
        page_url: format!(
            "{base}/#session={id}&token={}{}",
            created.client_token,
            if practice { "&mode=practice" } else { "" }
        ),
        mode: if practice { "practice" } else { "live" },
        expires_at: created.session.expires_at_ms,
        client_token: created.client_token,
        api_key_id: key.id.clone(),
        reference: created.session.external_reference.clone(),
        id,
    };
    Ok(body)
}

pub fn events_url(base: &str, id: &str, events_token: &str) -> String {
    format!("{base}/v1/sessions/{id}/events?token={events_token}")
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = key.owned_session(&state, &id).await?;
    if row.practice {
        return practice_view(&state, row).await;
    }
    let reference = state.registry.store().get_session_reference(&id).await?;
    let live = state.registry.get(&id).map(|s| s.view());
    let mut network = match &live {
        Some(v) if v.network.is_some() => serde_json::to_value(&v.network).unwrap_or(Value::Null),
        _ => row
            .network_summary
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null),
    };
    // The verdict travels in the call summary while the call runs and is stored when it ends;
    // the relying party sees it at the top level.
    let live_verdict = network
        .as_object_mut()
        .and_then(|m| m.remove("verdict"))
        .filter(|v| !v.is_null());
    // Once the end is recorded, the stored verdict wins: an operator may have changed it.
    let stored = if row.ended_at.is_some() {
        None
    } else {
        live_verdict
    };
    let verdict = match stored {
        Some(v) => v,
        None => state
            .registry
            .store()
            .get_verdict(&id)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null),
    };
    // The live view leads the store by a moment (the end is recorded asynchronously).
    let (state_name, end_reason) = match &live {
        Some(v) if row.ended_at.is_none() => (v.state.to_string(), v.end_reason.clone()),
        _ => (row.state.clone(), row.end_reason.clone()),
    };
    // Device problems the client reported (denied permission, ...): live while the session is in
    // memory, otherwise from its stored timeline.
    let device_failures: Vec<String> = match state.registry.get(&id) {
        Some(s) => s
            .device_failures()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        None => {
            let mut codes: Vec<String> = Vec::new();
            for e in state.registry.store().list_events(&id, 0).await? {
                let Ok(v) = serde_json::from_str::<Value>(&e.body) else {
                    continue;
                };
                if v["type"] == "device_failure" {
                    if let Some(c) = v["code"].as_str().filter(|c| !codes.iter().any(|x| x == c)) {
                        codes.push(c.to_string());
                    }
                }
            }
            codes
        }
    };
    // The final verdict, signed once when it was decided (JWS, keys at /.well-known/jwks.json):
    // every GET returns the same token, and it is the one the webhook carried.
    let signed_verdict = match (row.ended_at, verdict.is_null()) {
        (Some(ended_at), false) => Some(
            state
                .registry
                .notifier()
                .stored_signed_verdict(
                    &VerdictNotice {
                        session_id: &row.id,
                        api_key_id: &row.api_key_id,
                        subject: row.subject.as_deref(),
                        reference: reference.as_deref(),
                        verdict: &verdict,
                        decided_by: verdict["decided_by"].as_str().unwrap_or("vericall"),
                    },
                    ended_at,
                )
                .await?,
        ),
        _ => None,
    };
    // The text read from the ID document (only here, for the relying party; purged by retention).
    let document_fields = state
        .registry
        .store()
        .get_document_fields(&row.id)
        .await?
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    Ok(Json(json!({
        "id": row.id,
        // The `aud` of the signed verdict.
        "api_key_id": row.api_key_id,
        "subject": row.subject,
        "reference": reference,
        // What the person's result screen shows, for your customer service (docs/INTEGRATION.md).
        "support_ref": crate::reasons::support_reference(&row.id),
        "document_fields": document_fields,
        "state": state_name,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "connected_at": row.connected_at,
        "ended_at": row.ended_at,
        "end_reason": end_reason,
        "verdict": verdict,
        "signed_verdict": signed_verdict,
        "device_failures": device_failures,
        "network": network,
    })))
}

/// A practice run as the relying party sees it: that it happened and how it went (status and
/// reason codes), never a verdict to rely on, a signed verdict or its frames.
async fn practice_view(
    state: &AppState,
    row: crate::store::SessionRow,
) -> Result<Json<Value>, ApiError> {
    let outcome = state
        .registry
        .store()
        .get_verdict(&row.id)
        .await?
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| practice_outcome(&v));
    Ok(Json(json!({
        "id": row.id,
        "mode": "practice",
        "api_key_id": row.api_key_id,
        "subject": row.subject,
        "state": row.state,
        "created_at": row.created_at,
        "ended_at": row.ended_at,
        "end_reason": row.end_reason,
        "practice_outcome": outcome,
        "verdict": null,
        "signed_verdict": null,
    })))
}

/// What a practice run's outcome tells the relying party: its status and reason codes.
pub fn practice_outcome(verdict: &Value) -> Value {
    let reasons: Vec<Value> = verdict["reasons"]
        .as_array()
        .map(|a| a.iter().map(|r| r["code"].clone()).collect())
        .unwrap_or_default();
    json!({ "status": verdict["status"], "reasons": reasons })
}

pub async fn timeline(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    key.owned_session(&state, &id).await?;
    let store = state.registry.store();
    let events: Vec<Value> = store
        .list_events(&id, 0)
        .await?
        .into_iter()
        .filter_map(|e| serde_json::from_str(&e.body).ok())
        .collect();
    Ok(Json(json!({ "id": id, "events": events })))
}

/// `DELETE /v1/sessions/{id}`: the relying party cancels a session (its call ends if one is
/// running; the verdict is `cancelled`, recorded, signed and sent as usual). Answers with the
/// session once its end is recorded; an ended session is answered as it is.
pub async fn cancel(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = key.owned_session(&state, &id).await?;
    if row.ended_at.is_none() {
        let Some(session) = state.registry.get(&id) else {
            return Err(ApiError::Conflict(
                "the session is not running on this server; it is ended when its server restarts or after it expires".into(),
            ));
        };
        state
            .registry
            .end(&session, crate::media::peer::EndReason::Deleted)
            .await?;
        // The end is recorded asynchronously when a call was running.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while state
            .registry
            .store()
            .get_session(&id)
            .await?
            .is_some_and(|r| r.ended_at.is_none())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Its evidence is all stored when the answer says it ended (a subject deletion on
        // another node deletes it next).
        if let Some(evidence) = state.registry.store().evidence() {
            evidence.settle(&id).await;
        }
    }
    get_one(State(state), key, Path(id)).await
}
