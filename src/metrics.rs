//! Prometheus metrics through the `metrics` facade and its Prometheus exporter: HTTP statuses,
//! media datagrams, the network state of live calls, the node's load (what the autoscaler reads)
//! and the latency histograms of `crate::latency`.
//!
//! Counters on the request path go straight to the facade; values that live elsewhere (the media
//! mux's counters, the registry's gauges) are copied into it when `/metrics` is scraped.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::session::SessionRegistry;

/// The process's one recorder (the facade is global): installed by the first server started.
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(crate::latency::BUCKETS)
                .and_then(|b| b.install_recorder());
            match installed {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    // Another recorder is installed (an embedding program's): ours stays off.
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    for (name, help) in crate::latency::ALL {
        describe_histogram!(*name, Unit::Seconds, *help);
    }
    describe_gauge!(
        "vericall_active_calls",
        "Calls with media (connecting or connected)."
    );
    describe_gauge!(
        "vericall_analysis_lag_seconds",
        Unit::Seconds,
        "Worst time from a frame's arrival to the end of its analysis over the last 2-4 s; above 0.15 new calls are refused (media::admission)."
    );
    describe_counter!(
        "vericall_decode_queue_drops_total",
        "Frames dropped from full decode queues (new calls are refused for 10 s after one)."
    );
    describe_gauge!(
        "vericall_sessions_in_memory",
        "Sessions held in memory (created, live or recently ended)."
    );
    describe_counter!(
        "vericall_media_datagrams_total",
        "Datagrams on the media port by outcome."
    );
    describe_gauge!(
        "vericall_rtp_packets_total",
        "RTP packets of live calls (expected and received originals)."
    );
    describe_gauge!(
        "vericall_rtp_loss_ratio",
        "Loss before repair over live calls."
    );
    describe_gauge!(
        "vericall_rtp_jitter_max_ms",
        "Largest interarrival jitter among live calls' streams."
    );
    describe_counter!("vericall_http_responses_total", "HTTP responses by status.");
    describe_counter!(
        "vericall_forwarded_requests_total",
        "Requests forwarded to the node running their session, by outcome."
    );
}

/// The server's handle on the metrics (the recorder is installed on creation).
#[derive(Debug)]
pub struct Metrics {
    handle: Option<&'static PrometheusHandle>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { handle: recorder() }
    }
}

impl Metrics {
    pub(crate) fn count_http(&self, status: u16) {
        counter!("vericall_http_responses_total", "status" => status.to_string()).increment(1);
    }

    /// A request forwarded to the session's owner node; `answered` unless it did not answer.
    pub(crate) fn count_forwarded(&self, answered: bool) {
        let outcome = if answered {
            "answered"
        } else {
            "owner_unreachable"
        };
        counter!("vericall_forwarded_requests_total", "outcome" => outcome).increment(1);
    }

    /// The Prometheus text of every metric, the registry's current values copied in first.
    pub fn render(&self, registry: &SessionRegistry) -> String {
        gauge!("vericall_active_calls").set(registry.active_calls() as f64);
        let load = registry.load();
        gauge!("vericall_analysis_lag_seconds")
            .set(load.lag(std::time::Instant::now()).as_secs_f64());
        counter!("vericall_decode_queue_drops_total").absolute(load.queue_drops());
        gauge!("vericall_sessions_in_memory").set(registry.sessions_in_memory() as f64);
        let mux = &registry.mux().stats;
        for (outcome, v) in [
            ("received", &mux.received),
            ("routed", &mux.routed),
            ("dropped_unknown_source", &mux.dropped_unknown_source),
            ("dropped_queue_full", &mux.dropped_queue_full),
            ("sent", &mux.sent),
        ] {
            counter!("vericall_media_datagrams_total", "outcome" => outcome)
                .absolute(v.load(Ordering::Relaxed));
        }
        let live = registry.live_network();
        let (expected, received) = live
            .iter()
            .flat_map(|s| &s.tracks)
            .fold((0u64, 0u64), |(e, r), t| {
                (e + t.expected_packets, r + t.received_packets)
            });
        gauge!("vericall_rtp_packets_total", "kind" => "expected").set(expected as f64);
        gauge!("vericall_rtp_packets_total", "kind" => "received").set(received as f64);
        let loss = if expected > 0 {
            1.0 - received as f64 / expected as f64
        } else {
            0.0
        };
        gauge!("vericall_rtp_loss_ratio").set(loss.max(0.0));
        let jitter = live
            .iter()
            .flat_map(|s| &s.tracks)
            .map(|t| t.jitter_ms)
            .fold(0.0, f64::max);
        gauge!("vericall_rtp_jitter_max_ms").set(jitter);
        self.handle
            .map(|h| {
                h.run_upkeep();
                h.render()
            })
            .unwrap_or_default()
    }
}
