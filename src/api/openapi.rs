//! `GET /openapi.json`: the OpenAPI 3.1 description of the relying party's API, written by hand
//! in docs/openapi.json and kept true by tests (tests/it/openapi.rs: every documented route
//! exists, every relying-party route is documented, and a third-party validator accepts it).

use axum::http::header;

/// The document, as served.
pub(crate) const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

pub async fn document() -> ([(header::HeaderName, &'static str); 2], &'static str) {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        OPENAPI_JSON,
    )
}
