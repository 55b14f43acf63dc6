//! The HTTP shell: sessions API for the relying party, WHIP for clients, SSE events, operations
//! endpoints and the static page. Handlers are thin: they authenticate, translate HTTP to calls on
//! the session registry, and map errors to statuses.

mod client;
mod error;
mod events;
mod ops;
mod reference;
mod sessions;
mod whip;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::services::ServeDir;

pub use error::ApiError;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::SessionRegistry;

#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub registry: Arc<SessionRegistry>,
    pub metrics: Arc<Metrics>,
    /// Base URL for links handed to clients.
    pub base_url: Arc<str>,
}

pub fn router(state: AppState, static_dir: &str) -> Router {
    let sdp_limit = DefaultBodyLimit::max(state.cfg.max_sdp_bytes);
    Router::new()
        .route("/v1/sessions", post(sessions::create))
        .route("/v1/sessions/{id}", get(sessions::get_one))
        .route("/v1/sessions/{id}/timeline", get(sessions::timeline))
        .route(
            "/v1/sessions/{id}/reference",
            post(reference::upload).layer(DefaultBodyLimit::max(reference::MAX_REFERENCE_BYTES)),
        )
        .route("/v1/sessions/{id}/events", get(events::stream))
        .route(
            "/v1/sessions/{id}/client-report",
            post(client::report).layer(DefaultBodyLimit::max(4096)),
        )
        .route("/v1/reasons", get(client::reasons))
        .route(
            "/whip/{id}",
            post(whip::offer)
                .patch(whip::patch)
                .delete(whip::delete)
                .options(whip::options)
                .layer(sdp_limit),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback_service(ServeDir::new(static_dir))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts responses by status and logs each request by method and path only: query strings can
/// carry an events token and headers carry credentials, so neither is logged.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    let status = response.status();
    state.metrics.count_http(status.as_u16());
    tracing::debug!(%method, %path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "http");
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        "nosniff".parse().expect("static header"),
    );
    headers.insert(
        "referrer-policy",
        "no-referrer".parse().expect("static header"),
    );
    response
}
