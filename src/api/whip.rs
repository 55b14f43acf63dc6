//! WHIP (RFC 9725): `POST` an SDP offer to join a session's call, `PATCH` for trickle ICE and ICE
//! restarts, `DELETE` to end it. Authorised by the session's client token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::body::RawBody;
use str0m::Candidate;

use super::{ApiError, AppState};
use crate::media::peer::EndReason;
use crate::media::sdp::{parse_fragment, restart_fragment};
use crate::session::tokens::bearer;
use crate::session::Session;

const EVENTS_REL: &str = "urn:ietf:params:whip:ext:vericall:events";

fn client_session(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<Session>, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(state.registry.authorize_client(id, bearer(auth))?)
}

fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if ct.as_deref() == Some(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(expected))
    }
}

fn utf8(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("the body is not UTF-8 text".into()))
}

/// `Link` headers: configured STUN/TURN servers (RFC 9725 section 4.6) and the events stream.
/// With `turn_secret` set, a TURN server without static credentials gets ones minted for
/// `session_id` ([`super::turn`]).
fn link_headers(state: &AppState, session_id: &str, events_url: Option<&str>) -> Vec<HeaderValue> {
    let mut links = Vec::new();
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for s in &state.cfg.ice_servers {
        let mut v = format!("<{}>; rel=\"ice-server\"", s.urls);
        let minted = match (&state.cfg.turn_secret, &s.username) {
            (Some(secret), None) if super::turn::is_turn(&s.urls) => Some(super::turn::mint(
                secret,
                session_id,
                now_unix,
                state.cfg.turn_credential_secs,
            )),
            _ => None,
        };
        let credentials = match &minted {
            Some(m) => Some((&m.username, &m.credential)),
            None => s.username.as_ref().zip(s.credential.as_ref()),
        };
        if let Some((u, c)) = credentials {
            v.push_str(&format!(
                "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
            ));
        }
        links.extend(HeaderValue::from_str(&v).ok());
    }
    if let Some(url) = events_url {
        links.extend(HeaderValue::from_str(&format!("<{url}>; rel=\"{EVENTS_REL}\"")).ok());
    }
    links
}

/// Counts a WHIP offer against its client address's limit (`whip_offers_per_minute`).
pub(crate) async fn take_offer(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    state
        .whip_limit
        .take(&super::client_ip(state, peer, headers))
        .await
        .map_err(|retry_after_secs| ApiError::TooManyRequests {
            code: "rate_limited",
            message: "too many offers from this address; retry later".into(),
            retry_after_secs,
        })
}

pub async fn offer(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    forwarded: Option<axum::Extension<super::forward::Forwarded>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // An offer a peer forwarded was counted there, before the owner was looked up
    // (`api::forward`).
    if forwarded.is_none() {
        take_offer(&state, peer, &headers).await?;
    }
    let session = client_session(&state, &id, &headers)?;
    require_content_type(&headers, "application/sdp")?;
    let offer = utf8(&body)?;
    let registry = state.registry.clone();
    // `?screen_light=off`: the person asked to skip the flashing-colour step (photosensitivity).
    let skip_light = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "screen_light=off"));
    let (answer, etag) = registry.start_call(&session, offer, skip_light)?;
    tracing::info!(session = %id, "call starting");
    let location = format!("{}/whip/{id}", state.base_url);
    // The events URL carries a read-only token (EventSource cannot send headers), so a client
    // that only knows the WHIP URL can still find its events.
    let events = super::sessions::events_url(&state.base_url, &id, session.events_token());
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    for link in link_headers(&state, &id, Some(&events)) {
        h.append(header::LINK, link);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let session = client_session(&state, &id, &headers)?;
    require_content_type(&headers, "application/trickle-ice-sdpfrag")?;
    if session.is_ended() {
        return Err(ApiError::Conflict("the session has ended".into()));
    }
    // No call yet: there is no WHIP session resource to patch.
    let current = session.etag().ok_or(ApiError::NotFound)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::PreconditionRequired)?
        .trim();
    if if_match != "*" && if_match != current {
        return Err(ApiError::PreconditionFailed);
    }
    let frag = parse_fragment(utf8(&body)?).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let registry = &state.registry;
    let Some((local, etag)) = registry
        .patch(&session, frag.credentials, frag.candidates)
        .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let advertised = SocketAddr::new(
        state.cfg.advertised_ip(),
        registry.mux().local_addr().port(),
    );
    let candidate =
        Candidate::host(advertised, "udp").map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = (StatusCode::OK, restart_fragment(&local, &candidate)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(response)
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let session = client_session(&state, &id, &headers)?;
    state.registry.end(&session, EndReason::Deleted).await?;
    tracing::info!(session = %id, "call deleted by client");
    Ok(StatusCode::OK)
}

/// Pre-flight (RFC 9725 section 4.6). With the session's client token it also carries the
/// configured STUN/TURN servers in `Link` headers, so the client can configure its peer
/// connection before the offer; without one it never does (TURN credentials are not public).
pub async fn options(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut response = (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, "OPTIONS, POST, PATCH, DELETE"),
            (
                header::HeaderName::from_static("accept-patch"),
                "application/trickle-ice-sdpfrag",
            ),
        ],
    )
        .into_response();
    if client_session(&state, &id, &headers).is_ok() {
        for link in link_headers(&state, &id, None) {
            response.headers_mut().append(header::LINK, link);
        }
    }
    response
}
