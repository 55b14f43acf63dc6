//! `POST /v1/sessions/{id}/reference`: the relying party's reference (ID) photo for a session.
//! The photo must show exactly one face; only its embedding is kept (in memory, for the call),
//! never the image.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::body::RawBody;
use super::sessions::ApiKey;
use super::{ApiError, AppState};
use crate::analysis::face::embed::{
    embed_reference, ReferenceError, REFERENCE_MAX_SIDE, REFERENCE_MIN_SIDE,
};

/// Largest accepted reference photo.
pub(crate) const MAX_REFERENCE_BYTES: usize = 8 * 1024 * 1024;

/// Reads only the image header: a small file can declare a huge image (a decompression bomb),
/// so the declared size is checked before anything is decoded (the decoder has limits too).
fn check_dimensions(bytes: &[u8]) -> Result<(), ApiError> {
    let unreadable = || ApiError::Unprocessable("the image could not be read".into());
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| unreadable())?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)
    ) {
        return Err(ApiError::Unprocessable(
            "the image is not a JPEG or PNG".into(),
        ));
    }
    let (w, h) = reader.into_dimensions().map_err(|_| unreadable())?;
    let allowed = REFERENCE_MIN_SIDE..=REFERENCE_MAX_SIDE;
    if !allowed.contains(&w) || !allowed.contains(&h) {
        return Err(ApiError::Unprocessable(format!(
            "the image is {w} by {h} pixels; each side must be {REFERENCE_MIN_SIDE} to {REFERENCE_MAX_SIDE} pixels"
        )));
    }
    Ok(())
}

pub async fn upload(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let session = state
        .registry
        .get(&id)
        .filter(|s| s.api_key_id == key.id)
        .ok_or(ApiError::NotFound)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !matches!(ct.as_deref(), Some("image/jpeg") | Some("image/png")) {
        return Err(ApiError::UnsupportedMediaType("image/jpeg or image/png"));
    }
    if session.is_ended() {
        return Err(ApiError::Conflict("the session has ended".into()));
    }
    check_dimensions(&body)?;
    let models = state
        .registry
        .face_models()
        .cloned()
        .ok_or_else(|| ApiError::Conflict("face analysis is off on this server".into()))?;
    let embedding = tokio::task::spawn_blocking(move || embed_reference(&models, &body))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            ReferenceError::Model(m) => ApiError::Internal(m.to_string()),
            other => ApiError::Unprocessable(other.to_string()),
        })?;
    session
        .reference
        .send_replace(Some((embedding, crate::verdict::ReferenceKind::IdPhoto)));
    session
        .bus
        .emit(&crate::session::LifecycleEvent::ReferenceSet {});
    tracing::info!(session = %id, "reference photo accepted");
    Ok((
        StatusCode::OK,
        Json(json!({ "id": id, "reference": "accepted" })),
    ))
}
