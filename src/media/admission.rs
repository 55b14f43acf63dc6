//! Whether this node can take another call: admission control from the analysis's own lag.
//!
//! When the cores cannot keep up, every call's analysis falls behind together (fewer frames
//! judged, later hints, steps that time out), so a node that keeps accepting degrades every
//! running call. Instead, a saturated node refuses new calls (WHIP 503 + Retry-After) and the
//! client or the load balancer tries another node. Saturated means either
//! - the analysis lag (a frame's arrival to the end of its analysis) exceeded [`LAG_LIMIT`] on
//!   some call within the last [`WINDOW`] or two (a healthy node analyses a frame in tens of
//!   milliseconds), or
//! - a call's decode queue overflowed within the last [`DROP_MEMORY`] (the decoder itself is
//!   starved of CPU).
//!
//! [`LoadMonitor`] is the sans-IO policy fed with `Instant`s; [`NodeLoad`] shares one per node
//! between the calls' pipelines (which report) and the registry and metrics (which read).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An analysed frame finished later than this after its arrival means the node is saturated: the
/// guidance latency a call should stay under (p95). One call alone measures 20-50 ms; with 250 ms
/// the capacity benchmark admitted calls until their steps were analysed at 6-11 fps
/// (docs/BENCHMARKS.md).
pub(crate) const LAG_LIMIT: Duration = Duration::from_millis(150);
/// The lag is the worst over windows of this length (the current and the previous one).
pub(crate) const WINDOW: Duration = Duration::from_secs(2);
/// A decode-queue overflow refuses new calls for this long.
pub(crate) const DROP_MEMORY: Duration = Duration::from_secs(10);
/// What a refused client is told to wait before it tries again (`Retry-After`).
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// Why the node refuses new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saturation {
    /// The worst analysis lag of the recent windows.
    Lagging(Duration),
    /// A decode queue overflowed this long ago.
    QueueDrops(Duration),
}

/// The node's recent analysis lag and queue drops; see the module documentation.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadMonitor {
    /// Start of the current window, and the worst lag in it and in the one before.
    window: Option<(Instant, Duration, Duration)>,
    last_drop: Option<Instant>,
}

impl LoadMonitor {
    /// A frame captured (arrived) at `captured` finished its analysis at `now`.
    pub fn on_analysed(&mut self, now: Instant, captured: Instant) {
        let lag = now.saturating_duration_since(captured);
        let (start, current, previous) = match self.window {
            Some((start, current, previous)) if now < start + WINDOW => (start, current, previous),
            // The window is over: it becomes the previous one if it just ended.
            Some((start, current, _)) if now < start + 2 * WINDOW => {
                (start + WINDOW, Duration::ZERO, current)
            }
            _ => (now, Duration::ZERO, Duration::ZERO),
        };
        self.window = Some((start, current.max(lag), previous));
    }

    /// A call's decode queue was full and a frame was dropped at `now`.
    pub fn on_queue_drop(&mut self, now: Instant) {
        self.last_drop = Some(now);
    }

    /// The worst analysis lag over the current window and the one before (zero when no frame
    /// was analysed lately).
    pub(crate) fn lag(&self, now: Instant) -> Duration {
        match self.window {
            Some((start, current, previous)) if now < start + WINDOW => current.max(previous),
            Some((start, current, _)) if now < start + 2 * WINDOW => current,
            _ => Duration::ZERO,
        }
    }

    /// Whether a new call may start at `now`.
    pub(crate) fn admits(&self, now: Instant) -> Result<(), Saturation> {
        if let Some(ago) = self
            .last_drop
            .map(|t| now.saturating_duration_since(t))
            .filter(|ago| *ago < DROP_MEMORY)
        {
            return Err(Saturation::QueueDrops(ago));
        }
        let lag = self.lag(now);
        if lag > LAG_LIMIT {
            return Err(Saturation::Lagging(lag));
        }
        Ok(())
    }
}

/// One node's [`LoadMonitor`], shared by its calls, plus the queue-drop count for the metrics.
#[derive(Debug, Default)]
pub struct NodeLoad {
    monitor: Mutex<LoadMonitor>,
    queue_drops: AtomicU64,
}

impl NodeLoad {
    pub fn on_analysed(&self, now: Instant, captured: Instant) {
        self.lock().on_analysed(now, captured);
    }

    pub fn on_queue_drop(&self, now: Instant) {
        self.queue_drops.fetch_add(1, Ordering::Relaxed);
        self.lock().on_queue_drop(now);
    }

    pub(crate) fn lag(&self, now: Instant) -> Duration {
        self.lock().lag(now)
    }

    pub(crate) fn admits(&self, now: Instant) -> Result<(), Saturation> {
        self.lock().admits(now)
    }

    /// Frames dropped from full decode queues since the node started.
    pub(crate) fn queue_drops(&self) -> u64 {
        self.queue_drops.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoadMonitor> {
        self.monitor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_idle_or_keeping_up_node_admits() {
        let t0 = Instant::now();
        let mut m = LoadMonitor::default();
        assert_eq!(m.admits(t0), Ok(()));
        for i in 0..100 {
            let at = t0 + ms(66 * i);
            m.on_analysed(at + ms(30), at);
        }
        assert_eq!(m.lag(t0 + ms(6600)), ms(30));
        assert_eq!(m.admits(t0 + ms(6600)), Ok(()));
    }

    #[test]
    fn a_lagging_node_refuses_until_two_windows_without_lag_have_passed() {
        let t0 = Instant::now();
        let mut m = LoadMonitor::default();
        m.on_analysed(t0 + ms(100), t0 + ms(60));
        m.on_analysed(t0 + ms(900), t0 + ms(500));
        assert_eq!(m.lag(t0 + ms(900)), ms(400));
        assert_eq!(m.admits(t0 + ms(900)), Err(Saturation::Lagging(ms(400))));
        // The next window keeps up; the lagging one is still the previous window.
        m.on_analysed(t0 + ms(2100), t0 + ms(2080));
        assert_eq!(m.admits(t0 + ms(3000)), Err(Saturation::Lagging(ms(400))));
        // Once it is no longer the previous window, the node admits again.
        m.on_analysed(t0 + ms(4100), t0 + ms(4080));
        assert_eq!(m.lag(t0 + ms(4100)), ms(20));
        assert_eq!(m.admits(t0 + ms(4100)), Ok(()));
        // No analysis at all for two windows: no lag.
        assert_eq!(m.lag(t0 + ms(9000)), Duration::ZERO);
    }

    #[test]
    fn a_lag_at_the_limit_still_admits() {
        let t0 = Instant::now();
        let mut m = LoadMonitor::default();
        m.on_analysed(t0 + LAG_LIMIT, t0);
        assert_eq!(m.admits(t0 + LAG_LIMIT), Ok(()));
        m.on_analysed(t0 + LAG_LIMIT + ms(1), t0);
        assert!(m.admits(t0 + LAG_LIMIT).is_err());
    }

    #[test]
    fn a_queue_drop_refuses_new_calls_for_the_drop_memory() {
        let t0 = Instant::now();
        let mut m = LoadMonitor::default();
        m.on_queue_drop(t0);
        assert_eq!(m.admits(t0 + ms(10)), Err(Saturation::QueueDrops(ms(10))));
        assert!(m.admits(t0 + DROP_MEMORY - ms(1)).is_err());
        assert_eq!(m.admits(t0 + DROP_MEMORY), Ok(()));
    }

    #[test]
    fn the_shared_node_load_counts_drops() {
        let t0 = Instant::now();
        let load = NodeLoad::default();
        load.on_queue_drop(t0);
        load.on_queue_drop(t0);
        assert_eq!(load.queue_drops(), 2);
        assert!(load.admits(t0).is_err());
    }
}
