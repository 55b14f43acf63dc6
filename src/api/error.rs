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
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            // Internal details go to the log, not to the client.
            ApiError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
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
                retry_after_secs: 5,
            },
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
