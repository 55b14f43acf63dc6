//! Request bodies and the API's one error shape for everything the framework rejects.
//!
//! JSON endpoints take [`ApiJson`]: `Content-Type: application/json` is required (`415`), the body
//! must be a JSON object (`422` for arrays and scalars: serde would otherwise read an array as
//! the struct's fields in order), syntax errors are `400`, unknown fields and wrong types `422`,
//! an oversized body `413`. [`json_errors`] turns any other plain-text error (axum's query and
//! path rejections, `405`, the static files' `404`) into `{"error", "message"}`.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{code_for_status, public_message};
use super::limits::BodyDeadlineExceeded;
use super::ApiError;

/// A JSON object body, deserialised into `T`.
pub struct ApiJson<T>(pub T);

/// A raw body (SDP, images) with the API's errors: `413` over the route's limit, `408` when it
/// did not arrive within the read timeout.
pub(crate) struct RawBody(pub Bytes);

/// An optional JSON object body: an empty body with no `Content-Type` is `None`.
pub(crate) struct OptionalApiJson<T>(pub Option<T>);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(ty, suffix)| ty.starts_with("application/") && suffix == "json")
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
        while let Some(e) = source {
            if e.is::<BodyDeadlineExceeded>() {
                return ApiError::Http {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: BodyDeadlineExceeded.to_string(),
                };
            }
            source = e.source();
        }
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            status => ApiError::Http {
                status,
                message: "the request body could not be read".into(),
            },
        }
    })
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read_body(req, state).await.map(RawBody)
    }
}

/// Parses a JSON object body into `T`.
pub(crate) fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::Unprocessable(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::Unprocessable(e.to_string()))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let body = read_body(req, state).await?;
        parse_object(&body).map(ApiJson)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(req.headers());
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let body = read_body(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) && !has_type {
            return Ok(OptionalApiJson(None));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        parse_object(&body).map(|v| OptionalApiJson(Some(v)))
    }
}

/// Largest error body read back when converting it (framework messages are short).
const MAX_ERROR_BODY: usize = 4096;

/// Middleware: any error response that is not already JSON gets the API's error shape; the
/// original text is kept as the message for client errors when it is safe to show.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let already_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if already_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if status.is_server_error() || text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        public_message(&text)
    };
    let body = serde_json::json!({ "error": code_for_status(status), "message": message });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string())).into_response()
}
