//! The HTTP shell: sessions API for the relying party, WHIP for clients, SSE events, operations
//! endpoints and the static page. Handlers are thin: they authenticate, translate HTTP to calls on
//! the session registry, and map errors to statuses.

mod body;
mod client;
mod error;
mod events;
pub mod forward;
pub mod idempotency;
pub mod limits;
mod openapi;
mod ops;
mod reference;
mod relying;
mod requirements;
pub mod review;
mod sandbox;
mod sessions;
mod turn;
mod whip;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
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
    pub session_limit: Arc<limits::RateLimiter>,
    pub whip_limit: Arc<limits::RateLimiter>,
    /// Review-console logins, per client address and per username.
    pub login_limit: Arc<limits::RateLimiter>,
    /// Answers to `POST /v1/sessions` with an `Idempotency-Key`.
    pub idempotency: Arc<idempotency::IdempotencyCache>,
    /// Set with `node_secret`: requests for sessions other nodes run are forwarded to them.
    pub cluster: Option<Arc<forward::Cluster>>,
}

pub fn router(state: AppState, static_dir: &str) -> Router {
    let sdp_limit = DefaultBodyLimit::max(state.cfg.max_sdp_bytes);
    let app = Router::new()
        .route("/v1/sessions", post(sessions::create).get(relying::list))
        .route("/v1/sessions/{id}/deliveries", get(relying::deliveries))
        .route(
            "/v1/webhook",
            axum::routing::put(relying::set_webhook).delete(relying::delete_webhook),
        )
        .route("/v1/webhook/secret", post(relying::rotate_webhook_secret))
        .route("/v1/webhook/ping", post(relying::ping_webhook))
        .route(
            "/v1/webhook/deliveries/{id}/resend",
            post(relying::resend_delivery),
        )
        .route(
            "/v1/subjects/{subject}",
            axum::routing::delete(relying::delete_subject),
        )
        .route(
            "/v1/subjects/{subject}/practice",
            get(relying::subject_practice),
        )
        .route("/.well-known/jwks.json", get(relying::jwks))
        .route(
            "/v1/review/login",
            post(review::login).layer(DefaultBodyLimit::max(review::MAX_LOGIN_BODY)),
        )
        .route("/v1/review/logout", post(review::logout))
        .route("/v1/review/me", get(review::me))
        .route("/v1/review/queue", get(review::queue))
        .route("/v1/review/lookup", get(review::lookup))
        .route("/v1/review/sessions/{id}", get(review::session))
        .route("/v1/review/sessions/{id}/frames/{name}", get(review::frame))
        .route("/v1/review/sessions/{id}/decision", post(review::decide))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get_one).delete(sessions::cancel),
        )
        .route(
            "/v1/sessions/{id}/sandbox-verdict",
            post(sandbox::force_verdict),
        )
        .route("/v1/sessions/{id}/timeline", get(sessions::timeline))
        .route(
            "/v1/sessions/{id}/reference",
            post(reference::upload).layer(DefaultBodyLimit::max(reference::MAX_REFERENCE_BYTES)),
        )
        .route("/v1/sessions/{id}/events", get(events::stream))
        .route(
            "/v1/sessions/{id}/client-report",
            post(client::report).layer(DefaultBodyLimit::max(client::MAX_REPORT_BYTES)),
        )
        .route("/v1/reasons", get(client::reasons))
        .route("/v1/requirements", get(requirements::get))
        .route(
            "/whip/{id}",
            post(whip::offer)
                .patch(whip::patch)
                .delete(whip::delete)
                .options(whip::options)
                .layer(sdp_limit),
        )
        .route("/openapi.json", get(openapi::document))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback_service(ServeDir::new(static_dir))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::to_owner,
        ))
        .layer(middleware::from_fn(body::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state.clone());
    // The CORS layer answers every OPTIONS itself; only real pre-flights (with
    // Access-Control-Request-Method) go to it, so a WHIP client's OPTIONS reaches the handler
    // (RFC 9725 section 4.6: Allow, Accept-Patch and the ICE servers' Link headers).
    let with_cors = app.clone().layer(cors(&state.cfg.allowed_origins));
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let preflight_or_other = req.method() != Method::OPTIONS
            || req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let target = if preflight_or_other {
            with_cors.clone()
        } else {
            app.clone()
        };
        tower::ServiceExt::oneshot(target, req)
    }))
}

/// The client address for rate limits: the TCP peer, or behind a trusted proxy the last
/// `X-Forwarded-For` entry (the address that proxy saw).
pub(crate) fn client_ip(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
) -> String {
    if state.cfg.trust_forwarded_for {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty());
        if let Some(ip) = forwarded.and_then(|v| v.parse::<std::net::IpAddr>().ok()) {
            return ip.to_string();
        }
    }
    peer.ip().to_string()
}

/// Browser calls from the relying party's configured origins (none by default: same origin).
fn cors(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    if list.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK])
        .max_age(std::time::Duration::from_secs(600))
}

/// Content-Security-Policy of every response: only this origin's scripts, styles and
/// connections; framed only by this origin and the configured ones.
fn content_security_policy(origins: &[String]) -> String {
    let ancestors = std::iter::once("'self'")
        .chain(origins.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors {ancestors}"
    )
}

/// Counts responses by status and logs each request by method and path only: query strings can
/// carry an events token and headers carry credentials, so neither is logged.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // A subject id is the relying party's identifier of a person: not for logs.
    let logged_path = match path.strip_prefix("/v1/subjects/") {
        Some(_) => "/v1/subjects/…".to_string(),
        None => path.clone(),
    };
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    let status = response.status();
    state.metrics.count_http(status.as_u16());
    tracing::debug!(%method, path = %logged_path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "http");
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        "nosniff".parse().expect("static header"),
    );
    headers.insert(
        "referrer-policy",
        "no-referrer".parse().expect("static header"),
    );
    // The review console is never framed; the verification page may be, by configured origins.
    let framers: &[String] = if path.starts_with("/review") || path.starts_with("/v1/review") {
        &[]
    } else {
        &state.cfg.allowed_origins
    };
    let csp = content_security_policy(framers);
    let csp = if framers.is_empty() && path.contains("review") {
        csp.replace("frame-ancestors 'self'", "frame-ancestors 'none'")
    } else {
        csp
    };
    if let Ok(v) = csp.parse() {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), geolocation=(), payment=()"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if state.base_url.starts_with("https://") {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}
