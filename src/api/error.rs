//! API errors and their HTTP statuses (RFC 9725 section 4 for the WHIP ones).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::media::sdp::SdpError;
use crate::session::SessionError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("these credentials do not grant access to this session")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("the precondition in If-Match does not hold")]
    PreconditionFailed,
    #[error("If-Match is required")]
    PreconditionRequired,
    #[error("unsupported content type; expected {0}")]
    UnsupportedMediaType(&'static str),
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u32,
    },
    #[error("the server is at capacity; retry later")]
    Unavailable { retry_after_secs: u32 },
    #[error("this request needs the header x-vericall-csrf: 1")]
    CsrfRequired,
    #[error("the body is larger than this endpoint accepts")]
    PayloadTooLarge,
    /// A framework rejection or a plain-text error turned into the API's shape.
    #[error("{message}")]
    Http { status: StatusCode, message: String },
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::CsrfRequired => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Http { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::NotAcceptable(_) => "unsupported_media",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::PreconditionFailed => "precondition_failed",
            ApiError::PreconditionRequired => "precondition_required",
            ApiError::UnsupportedMediaType(_) => "unsupported_content_type",
            ApiError::TooManyRequests { code, .. } => code,
            ApiError::Unavailable { .. } => "at_capacity",
            ApiError::CsrfRequired => "csrf_required",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Http { status, .. } => code_for_status(*status),
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The `error` code of a status with no more specific one.
pub(crate) fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_content_type",
        422 => "unprocessable",
        429 => "rate_limited",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// A message safe to show a client: printable, short, and without anything that looks like a
/// memory address or other internal detail (parsers put those in their error text).
pub(crate) fn public_message(text: &str) -> String {
    // A hex literal starting a word (0x7f8d...), a Debug-printed parser position, a Rust path.
    let looks_internal = |w: &str| {
        let w = w.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        let hex_literal = w.match_indices("0x").any(|(i, _)| {
            let boundary = w[..i]
                .chars()
                .last()
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            boundary
                && w[i + 2..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .count()
                    >= 4
        });
        hex_literal || w.contains("PointerOffset") || w.contains("::")
    };
    let all = text.split_whitespace().count();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| !looks_internal(w))
        .collect();
    let kept: String = words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let mut out: String = kept.chars().take(200).collect();
    if words.len() < all || out.len() < kept.len() {
        out = out.trim_end_matches([':', ',', ' ', '(']).to_string();
        out.push('…');
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            // Internal details go to the log, not to the client.
            ApiError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error".to_string()
            }
            ApiError::Http { status, .. } if status.is_server_error() => "internal error".into(),
            other => public_message(&other.to_string()),
        };
        let mut response = (
            self.status(),
            Json(json!({ "error": self.code(), "message": message })),
        )
            .into_response();
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        // A client too slow to send its request does not keep the connection.
        if self.status() == StatusCode::REQUEST_TIMEOUT {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::Unavailable { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => ApiError::NotFound,
            SessionError::Unauthorized => ApiError::Unauthorized,
            SessionError::Forbidden => ApiError::Forbidden,
            SessionError::AlreadyConnected => {
                ApiError::Conflict("the session is already connected".into())
            }
            SessionError::Ended => ApiError::Conflict("the session has ended".into()),
            SessionError::AtCapacity => ApiError::Unavailable {
                retry_after_secs: crate::media::admission::RETRY_AFTER_SECS,
            },
            SessionError::NotEnrolled => ApiError::Conflict(
                "this subject has no enrolment under this API key (or it expired): verify it once with \"enrol\": true".into(),
            ),
            SessionError::TooManyAttempts { failed } => ApiError::TooManyRequests {
                code: "TOO_MANY_ATTEMPTS",
                message: format!(
                    "{failed} failed attempts for this subject recently; {}",
                    crate::reasons::ReasonCode::TooManyAttempts.info().hint_en
                ),
                retry_after_secs: 3600,
            },
            SessionError::Sdp(SdpError::Unsupported(m)) => ApiError::NotAcceptable(m),
            SessionError::Sdp(e) => ApiError::BadRequest(e.to_string()),
            SessionError::MediaGone => ApiError::NotFound,
            SessionError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::notify::NotifyError> for ApiError {
    fn from(e: crate::notify::NotifyError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::notify::signing::SigningError> for ApiError {
    fn from(e: crate::notify::signing::SigningError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_messages_drop_internal_detail() {
        assert_eq!(
            public_message("subject is limited to 256 bytes"),
            "subject is limited to 256 bytes"
        );
        assert_eq!(
            public_message("the image is 30000x30000"),
            "the image is 30000x30000"
        );
        assert_eq!(
            public_message("malformed SDP: Parse error at PointerOffset(0x7f8d12345678) expected"),
            "malformed SDP: Parse error at…"
        );
        assert_eq!(public_message("at 0x7f8d1234 in"), "at…");
        assert_eq!(public_message("bad\u{0}name"), "badname");
        assert!(public_message(&"x ".repeat(500)).chars().count() <= 201);
    }
}
