//! Prometheus text metrics: HTTP statuses, media datagrams, and the network state of live calls.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::session::SessionRegistry;

/// Counters updated on the request path (lock-free; one slot per status code 100..=599).
#[derive(Debug)]
pub struct Metrics {
    http_status: Vec<AtomicU64>,
    /// Requests forwarded to a session's owner node (`api::forward`): answered, owner unreachable.
    forwarded: [AtomicU64; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_status: (0..500).map(|_| AtomicU64::new(0)).collect(),
            forwarded: Default::default(),
        }
    }
}

impl Metrics {
    pub fn count_http(&self, status: u16) {
        if let Some(slot) = status
            .checked_sub(100)
            .and_then(|i| self.http_status.get(i as usize))
        {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request forwarded to the session's owner node; `answered` unless it did not answer.
    pub fn count_forwarded(&self, answered: bool) {
        self.forwarded[usize::from(!answered)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, registry: &SessionRegistry) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP vericall_forwarded_requests_total Requests forwarded to the node running their session, by outcome.\n# TYPE vericall_forwarded_requests_total counter"
        );
        for (outcome, v) in ["answered", "owner_unreachable"]
            .iter()
            .zip(&self.forwarded)
        {
            let _ = writeln!(
                out,
                "vericall_forwarded_requests_total{{outcome=\"{outcome}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let mux = &registry.mux().stats;
        gauge(
            &mut out,
            "vericall_active_calls",
            "Calls with media (connecting or connected).",
            registry.active_calls() as f64,
        );
        let load = registry.load();
        gauge(
            &mut out,
            "vericall_analysis_lag_seconds",
            "Worst time from a frame's arrival to the end of its analysis over the last 2-4 s; above 0.15 new calls are refused (media::admission).",
            load.lag(std::time::Instant::now()).as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "# HELP vericall_decode_queue_drops_total Frames dropped from full decode queues (new calls are refused for 10 s after one).\n# TYPE vericall_decode_queue_drops_total counter\nvericall_decode_queue_drops_total {}",
            load.queue_drops()
        );
        gauge(
            &mut out,
            "vericall_sessions_in_memory",
            "Sessions held in memory (created, live or recently ended).",
            registry.sessions_in_memory() as f64,
        );
        let _ = writeln!(
            out,
            "# HELP vericall_media_datagrams_total Datagrams on the media port by outcome."
        );
        let _ = writeln!(out, "# TYPE vericall_media_datagrams_total counter");
        for (outcome, v) in [
            ("received", &mux.received),
            ("routed", &mux.routed),
            ("dropped_unknown_source", &mux.dropped_unknown_source),
            ("dropped_queue_full", &mux.dropped_queue_full),
            ("sent", &mux.sent),
        ] {
            let _ = writeln!(
                out,
                "vericall_media_datagrams_total{{outcome=\"{outcome}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let live = registry.live_network();
        let _ = writeln!(out, "# HELP vericall_rtp_packets_total RTP packets of live calls (expected and received originals).");
        let _ = writeln!(out, "# TYPE vericall_rtp_packets_total gauge");
        let (expected, received) = live
            .iter()
            .flat_map(|s| &s.tracks)
            .fold((0u64, 0u64), |(e, r), t| {
                (e + t.expected_packets, r + t.received_packets)
            });
        let _ = writeln!(
            out,
            "vericall_rtp_packets_total{{kind=\"expected\"}} {expected}"
        );
        let _ = writeln!(
            out,
            "vericall_rtp_packets_total{{kind=\"received\"}} {received}"
        );
        let loss = if expected > 0 {
            1.0 - received as f64 / expected as f64
        } else {
            0.0
        };
        gauge(
            &mut out,
            "vericall_rtp_loss_ratio",
            "Loss before repair over live calls.",
            loss.max(0.0),
        );
        let jitter = live
            .iter()
            .flat_map(|s| &s.tracks)
            .map(|t| t.jitter_ms)
            .fold(0.0, f64::max);
        gauge(
            &mut out,
            "vericall_rtp_jitter_max_ms",
            "Largest interarrival jitter among live calls' streams.",
            jitter,
        );
        let _ = writeln!(
            out,
            "# HELP vericall_http_responses_total HTTP responses by status."
        );
        let _ = writeln!(out, "# TYPE vericall_http_responses_total counter");
        for (i, c) in self.http_status.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "vericall_http_responses_total{{status=\"{}\"}} {n}",
                    i + 100
                );
            }
        }
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}
