//! Operations endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers and new calls are accepted (not draining for shutdown).
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.registry.store().ping().await {
        Ok(()) if state.registry.is_accepting() => (StatusCode::OK, "ready\n"),
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// Prometheus text; behind `metrics_token` when one is configured.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.cfg.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Digests compared, so the time taken says nothing about how much of the token matched.
        if Sha256::digest(given.as_bytes()) != Sha256::digest(token.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state.registry),
    ))
}
