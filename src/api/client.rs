//! Endpoints for the page (or a wallet app) itself, outside WHIP: the reason catalog it shows
//! hints from, and reports of device problems that stop a call from starting (denied permission,
//! missing or busy camera), so the relying party learns why a session never connected.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::ApiJson;
use super::{ApiError, AppState};
use crate::reasons::ReasonCode;
use crate::session::tokens::bearer;
use crate::session::CLIENT_REPORTABLE;

/// Largest client-report body.
pub(crate) const MAX_REPORT_BYTES: usize = 4096;

/// `GET /v1/reasons`: every reason code with its retry flag and hints (public: no secrets, and
/// the page needs it before anything else).
pub async fn reasons() -> ([(header::HeaderName, &'static str); 1], Json<Value>) {
    let list: Vec<Value> = ReasonCode::ALL
        .iter()
        .map(|c| {
            let i = c.info();
            json!({
                "code": i.code,
                "retryable": i.retryable,
                "hint": { "en": i.hint_en, "zh-CN": i.hint_zh },
            })
        })
        .collect();
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({ "reasons": list })),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceReport {
    pub code: String,
    /// "camera", "microphone" or "browser".
    #[serde(default)]
    pub device: Option<String>,
    /// The browser's error name (`NotAllowedError`, ...).
    #[serde(default)]
    pub detail: Option<String>,
}

/// Keeps a client-supplied label short and boring: letters, digits, `_-.` only, at most 48.
fn label(raw: Option<&str>) -> String {
    raw.unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(48)
        .collect()
}

/// `POST /v1/sessions/{id}/client-report` with the client token: a device problem on the client.
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(report): ApiJson<DeviceReport>,
) -> Result<StatusCode, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let session = state.registry.authorize_client(&id, bearer(auth))?;
    let code = ReasonCode::from_code(&report.code)
        .filter(|c| CLIENT_REPORTABLE.contains(c))
        .ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "code must be one of {}",
                CLIENT_REPORTABLE.map(|c| c.as_str()).join(", ")
            ))
        })?;
    let device = match report.device.as_deref() {
        None => "unknown",
        Some(d @ ("camera" | "microphone" | "browser")) => d,
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "device must be camera, microphone or browser".into(),
            ))
        }
    };
    state.registry.report_device_failure(
        &session,
        code,
        device,
        &label(report.detail.as_deref()),
    )?;
    Ok(StatusCode::ACCEPTED)
}
