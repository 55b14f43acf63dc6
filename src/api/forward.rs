//! One hostname for many nodes (docs/SCALING.md): a session's call lives on the node that created
//! it (its media state is in that node's memory), but any node may receive the requests that need
//! the call. A node that does not hold the session forwards them to the owner, whose internal URL
//! it finds in the database (`Store::session_owner`), streaming the answer back (the events
//! stream too).
//!
//! Forwarded requests are signed with the cluster's shared secret (`node_secret`): HMAC-SHA256
//! over the time, method, path and the client's address. The owner checks the signature before it
//! believes the client address it is told, and counts the request against that address's limits
//! (the receiving node does not, so each request is counted once). A request that claims to be
//! forwarded and is not signed correctly, or names a route that is never forwarded, is refused; a
//! forwarded request is never forwarded again.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::hmac;

use super::{ApiError, AppState};

/// `<unix seconds>.<hex HMAC>` on a forwarded request.
const NODE_HEADER: &str = "x-vericall-node";
/// The client address the receiving node saw (signed with the rest).
const CLIENT_HEADER: &str = "x-vericall-client";
/// How far a forwarded request's time may be from the owner's clock.
const MAX_SKEW_SECS: u64 = 30;
/// Largest body forwarded for routes without a larger limit of their own (JSON requests).
const MAX_FORWARDED_JSON: usize = 64 * 1024;
/// A forwarded request other than the events stream must be answered within this.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// The owner must accept the connection within this, or the client is told to retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// This node's part in a cluster: its name, the shared secret, and a client for its peers.
pub struct Cluster {
    node: String,
    key: hmac::Key,
    http: reqwest::Client,
}

/// Marks a request a peer node forwarded, its signature checked (its WHIP offer was counted there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarded;

impl Cluster {
    pub fn new(node: String, secret: &str) -> Cluster {
        Cluster {
            node,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            // No redirects (the owner answers itself) and no proxy from the environment: the
            // request goes to the peer's internal address as it is.
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .expect("a default HTTP client builds"),
        }
    }

    fn message(unix: u64, method: &Method, path: &str, client: &str) -> String {
        format!("{unix}\n{method}\n{path}\n{client}")
    }

    fn sign(&self, unix: u64, method: &Method, path: &str, client: &str) -> String {
        let tag = hmac::sign(
            &self.key,
            Self::message(unix, method, path, client).as_bytes(),
        );
        format!("{unix}.{}", hex::encode(tag.as_ref()))
    }

    /// The client address of a correctly signed, fresh forwarded request.
    fn verify(&self, headers: &HeaderMap, method: &Method, path: &str, now: u64) -> Option<IpAddr> {
        let signed = headers.get(NODE_HEADER)?.to_str().ok()?;
        let client = headers.get(CLIENT_HEADER)?.to_str().ok()?;
        let (unix, tag) = signed.split_once('.')?;
        let unix: u64 = unix.parse().ok()?;
        if unix.abs_diff(now) > MAX_SKEW_SECS {
            return None;
        }
        let tag = hex::decode(tag).ok()?;
        hmac::verify(
            &self.key,
            Self::message(unix, method, path, client).as_bytes(),
            &tag,
        )
        .ok()?;
        client.parse().ok()
    }
}

/// The session id of a request only the session's owner can answer, if this is one.
fn owner_only<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if let Some(id) = path.strip_prefix("/whip/") {
        return (!id.contains('/') && *method != Method::OPTIONS).then_some(id);
    }
    let rest = path.strip_prefix("/v1/sessions/")?;
    match rest.split_once('/') {
        None => (*method == Method::DELETE).then_some(rest),
        Some((id, "events")) if *method == Method::GET => Some(id),
        Some((id, "reference" | "client-report" | "sandbox-verdict"))
            if *method == Method::POST =>
        {
            Some(id)
        }
        _ => None,
    }
}

/// Whether a peer may forward this request at all: an owner-only route or a session creation.
fn forwardable(method: &Method, path: &str) -> bool {
    owner_only(method, path).is_some() || (*method == Method::POST && path == "/v1/sessions")
}

/// The largest body the route accepts, read before forwarding (the owner checks it again).
fn body_limit(state: &AppState, path: &str) -> usize {
    if path.starts_with("/whip/") {
        state.cfg.max_sdp_bytes
    } else if path.ends_with("/reference") {
        super::reference::MAX_REFERENCE_BYTES
    } else if path.ends_with("/client-report") {
        super::client::MAX_REPORT_BYTES
    } else {
        MAX_FORWARDED_JSON
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Headers that belong to one connection, not to the request, and are not passed on: the fixed
/// hop-by-hop set (RFC 9110 section 7.6.1), those the `Connection` header names, and this
/// module's own (set afresh on every forwarded request).
fn hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    let fixed = matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "host"
            | "content-length"
            | NODE_HEADER
            | CLIENT_HEADER
    );
    fixed
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Middleware: verifies requests forwarded by a peer, and forwards owner-only requests for
/// sessions this node does not hold to the node that does. Everything else passes through.
pub(crate) async fn to_owner(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    if req.headers().contains_key(NODE_HEADER) {
        let method = req.method().clone();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.to_string());
        let verified = forwardable(&method, &path)
            .then(|| cluster.verify(req.headers(), &method, &path_and_query, unix_now()))
            .flatten();
        let Some(client) = verified else {
            // Not the path: on a route that is never forwarded it may name a subject.
            tracing::warn!(%method, "a request claiming to come from a node was refused");
            return ApiError::Forbidden.into_response();
        };
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(client, 0)));
        req.extensions_mut().insert(Forwarded);
        return next.run(req).await;
    }
    if *req.method() == Method::POST && path == "/v1/sessions" {
        return match idempotency_owner(&state, &cluster, req.headers()).await {
            Ok(Some(base)) => forward_counted(&state, &cluster, &base, req).await,
            Ok(None) => next.run(req).await,
            Err(e) => e.into_response(),
        };
    }
    let Some(id) = owner_only(req.method(), &path) else {
        return next.run(req).await;
    };
    if state.registry.get(id).is_some() {
        return next.run(req).await;
    }
    // A WHIP offer counts against its address here, before the database is asked who owns the
    // session; the owner does not count a forwarded one again.
    if *req.method() == Method::POST && path.starts_with("/whip/") {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied()
        {
            if let Err(e) = super::whip::take_offer(&state, peer, req.headers()).await {
                return e.into_response();
            }
        }
    }
    let owner = match state.registry.store().session_owner(id).await {
        Ok(Some(owner)) => owner,
        // Unknown here and in the database: the handler answers 404 as usual.
        Ok(None) => return next.run(req).await,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(base) = owner
        .internal_url
        .filter(|_| !owner.ended && owner.node != cluster.node)
    else {
        return next.run(req).await;
    };
    forward_counted(&state, &cluster, &base, req).await
}

/// For a session creation with an `Idempotency-Key`: claims the key for this node, or, when
/// another node holds it (a retry of a creation that node answered or is answering), that node's
/// internal URL. Requests this cannot judge (no or unknown API key, an invalid key) go to the
/// handler, which answers them.
async fn idempotency_owner(
    state: &AppState,
    cluster: &Cluster,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| super::idempotency::valid_key(k))
    else {
        return Ok(None);
    };
    let Some(super::sessions::ApiKey(api_key)) =
        super::sessions::ApiKey::of(state, headers).await?
    else {
        return Ok(None);
    };
    let store = state.registry.store();
    let now = crate::events::unix_ms_now();
    let until = now + state.cfg.session_ttl_secs as i64 * 1000;
    let digest = super::idempotency::key_digest(key);
    let owner = store
        .claim_idempotency_key(&api_key.id, &digest, now, until)
        .await?;
    if owner == cluster.node {
        return Ok(None);
    }
    match store.node_url(&owner).await? {
        Some(url) => Ok(Some(url)),
        // The node that holds the key left the cluster: its answer is gone with it.
        None => Err(ApiError::Unavailable {
            retry_after_secs: 5,
        }),
    }
}

/// Asks the node running session `id`, when another node runs it, to cancel it with the caller's
/// own credentials (`DELETE /v1/sessions/{id}`), e.g. because its subject is being deleted here.
/// Returns whether a cancel was sent and answered with success.
pub(crate) async fn cancel_on_owner(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    client: &str,
) -> bool {
    let Some(cluster) = state.cluster.as_ref() else {
        return false;
    };
    let owner = match state.registry.store().session_owner(id).await {
        Ok(Some(owner)) if !owner.ended && owner.node != cluster.node => owner,
        _ => return false,
    };
    let Some(base) = owner.internal_url else {
        return false;
    };
    let mut req = Request::builder()
        .method(Method::DELETE)
        .uri(format!("/v1/sessions/{id}"));
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let Ok(req) = req.body(Body::empty()) else {
        return false;
    };
    let answered = forward(cluster, &base, req, client, MAX_FORWARDED_JSON).await;
    state.metrics.count_forwarded(answered.is_ok());
    answered.is_ok_and(|r| r.status().is_success())
}

/// Forwards `req` to the node at `base`, counting the outcome.
async fn forward_counted(
    state: &AppState,
    cluster: &Cluster,
    base: &str,
    req: Request,
) -> Response {
    let client = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => super::client_ip(state, *peer, req.headers()),
        None => return ApiError::Internal("no peer address".into()).into_response(),
    };
    let limit = body_limit(state, req.uri().path());
    let result = forward(cluster, base, req, &client, limit).await;
    state
        .metrics
        .count_forwarded(!matches!(result, Err(ApiError::Unavailable { .. })));
    match result {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// The status for a request body that could not be read: too large, too slow, or broken off.
fn body_error(e: axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(cause) = source {
        if cause.is::<super::limits::BodyDeadlineExceeded>() {
            return ApiError::Http {
                status: axum::http::StatusCode::REQUEST_TIMEOUT,
                message: super::limits::BodyDeadlineExceeded.to_string(),
            };
        }
        if cause.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge;
        }
        source = cause.source();
    }
    ApiError::BadRequest("the request body could not be read".into())
}

async fn forward(
    cluster: &Cluster,
    base: &str,
    req: Request,
    client: &str,
    limit: usize,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(body_error)?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    let is_events = owner_only(&parts.method, parts.uri.path()).is_some()
        && parts.uri.path().ends_with("/events");
    // Signed as it will be sent: URL parsing may percent-encode what the client sent raw.
    let url = reqwest::Url::parse(&format!("{}{path_and_query}", base.trim_end_matches('/')))
        .map_err(|_| ApiError::Internal("a peer's internal URL does not parse".into()))?;
    let signed_path = url[url::Position::BeforePath..].to_string();
    let mut out = cluster
        .http
        .request(parts.method.clone(), url)
        .header(
            NODE_HEADER,
            cluster.sign(unix_now(), &parts.method, &signed_path, client),
        )
        .header(CLIENT_HEADER, client)
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name, &parts.headers) {
            out = out.header(name, value);
        }
    }
    // The events stream runs as long as the call; everything else is answered promptly.
    if !is_events {
        out = out.timeout(FORWARD_TIMEOUT);
    }
    let answer = out.send().await.map_err(|e| {
        // Without the URL: an events URL carries its token.
        tracing::warn!(error = %e.without_url(), "the node running this session does not answer");
        ApiError::Unavailable {
            retry_after_secs: 5,
        }
    })?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name, answer.headers()) {
            response = response.header(name, value);
        }
    }
    response
        .header(header::VIA, "1.1 vericall")
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routes_that_need_the_call_are_forwarded() {
        let cases = [
            (Method::POST, "/whip/ses_a", Some("ses_a")),
            (Method::PATCH, "/whip/ses_a", Some("ses_a")),
            (Method::DELETE, "/whip/ses_a", Some("ses_a")),
            (Method::OPTIONS, "/whip/ses_a", None),
            (Method::GET, "/v1/sessions/ses_a/events", Some("ses_a")),
            (Method::POST, "/v1/sessions/ses_a/reference", Some("ses_a")),
            (
                Method::POST,
                "/v1/sessions/ses_a/client-report",
                Some("ses_a"),
            ),
            (Method::DELETE, "/v1/sessions/ses_a", Some("ses_a")),
            (Method::GET, "/v1/sessions/ses_a", None),
            (Method::GET, "/v1/sessions/ses_a/timeline", None),
            (Method::POST, "/v1/sessions", None),
            (Method::GET, "/v1/review/sessions/ses_a", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(owner_only(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn a_signature_holds_for_its_request_only_and_for_a_short_time() {
        let cluster = Cluster::new("a".into(), "s3cret");
        let now = 1_800_000_000;
        let signed = cluster.sign(now, &Method::POST, "/whip/ses_a?x=1", "203.0.113.9");
        let headers = |signed: &str, client: &str| {
            let mut h = HeaderMap::new();
            h.insert(NODE_HEADER, signed.parse().unwrap());
            h.insert(CLIENT_HEADER, client.parse().unwrap());
            h
        };
        let ok = headers(&signed, "203.0.113.9");
        assert_eq!(
            cluster.verify(&ok, &Method::POST, "/whip/ses_a?x=1", now + 5),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            cluster.verify(&ok, &Method::POST, "/whip/ses_a?x=1", now + 31),
            None,
            "stale"
        );
        assert_eq!(
            cluster.verify(&ok, &Method::DELETE, "/whip/ses_a?x=1", now),
            None,
            "another method"
        );
        assert_eq!(
            cluster.verify(&ok, &Method::POST, "/whip/ses_b?x=1", now),
            None,
            "another path"
        );
        let other_client = headers(&signed, "198.51.100.1");
        assert_eq!(
            cluster.verify(&other_client, &Method::POST, "/whip/ses_a?x=1", now),
            None,
            "another client address"
        );
        let other_secret = Cluster::new("b".into(), "other");
        assert_eq!(
            other_secret.verify(&ok, &Method::POST, "/whip/ses_a?x=1", now),
            None,
            "another cluster's secret"
        );
    }
}
