//! Media ingest: the shared UDP port, one str0m peer per session, and the network monitor.
//!
//! `mux` demultiplexes the socket, `peer` drives each session's `Rtc`, `netstats` turns packet
//! arrivals into loss/jitter/freeze numbers, `wire` and `sdp` hold the small parsers they share.

pub mod admission;
pub mod decode;
pub mod mux;
pub mod netstats;
pub mod peer;
pub mod pipeline;
pub mod sdp;
pub mod wire;
