//! Test peers and synthetic media, shared by the integration tests and the load generator.
//!
//! These are real parts used the way a client would: libvpx and Opus encoders, a str0m WebRTC
//! peer speaking WHIP over HTTP, real UDP. Nothing here is used by the server itself.

pub mod actor;
pub mod card;
pub mod clip;
pub mod document_step;
pub mod fixtures;
pub mod http;
pub mod load;
pub mod peer;
pub mod render;
pub mod specimen;
pub mod voice;

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("WHIP answered {status}: {body}")]
    Whip { status: u16, body: String },
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("encoder: {0}")]
    Encode(String),
}
