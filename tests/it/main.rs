//! vericall's integration tests: one crate (one link) with a module per area.

mod api;
mod architecture;
mod browser;
mod call;
mod call_core;
mod cluster;
mod common;
mod deploy;
mod document;
mod face;
mod fuzz;
mod hostile;
mod liveness;
mod matching;
mod media;
mod network;
mod openapi;
mod relay;
mod relying;
mod speech;
mod store;
mod webrtc_peer;
