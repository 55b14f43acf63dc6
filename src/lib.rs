//! vericall: a self-hosted, real-time video verification server.
//!
//! A browser or wallet app joins a live WebRTC call over WHIP; the server measures the network
//! path (and, as the project grows, decodes frames, tracks the face and runs liveness challenges)
//! and reports to the relying party. Start reading at `server::start`, then follow a call:
//! `api::whip` -> `session` -> `media::peer` -> `media::netstats` -> `events` -> `store`.
//! ARCHITECTURE.md has the one-page map.

pub mod analysis;
pub mod api;
pub mod config;
pub mod document;
pub mod events;
pub mod frame;
pub mod latency;
pub mod liveness;
pub mod media;
pub mod metrics;
pub mod notify;
pub mod reasons;
pub mod server;
pub mod session;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod verdict;
