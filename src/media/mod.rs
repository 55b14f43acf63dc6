//! Media ingest: the shared UDP port, one str0m peer per session, and the network monitor.
//!
//! `mux` demultiplexes the socket, `peer` drives each session's `Rtc`, `netstats` turns packet
//! arrivals into loss/jitter/freeze numbers, `wire` and `sdp` hold the small parsers they share.
//! `pipeline` is each call's media thread: it decodes and feeds `call::CallCore`, the sans-IO core
//! that analyses the call and decides its verdict.

pub mod admission;
pub mod call;
pub mod decode;
pub mod mux;
pub mod netstats;
pub mod peer;
pub mod pipeline;
pub mod sdp;
pub mod wire;
