//! The per-session event stream: one ordered sequence of JSON events that the page reads over SSE
//! or the `vericall` data channel, and that the store keeps as the session's timeline.
//!
//! Producers (media, analysis, API) publish typed payloads serialised to JSON; this module owns only
//! the envelope (sequence number, time, type) and the fan-out, so it depends on nothing else in the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

/// How many events a slow live subscriber may fall behind before it skips ahead.
const LIVE_BUFFER: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub session_id: Arc<str>,
    /// 1-based position in the session's timeline.
    pub seq: u64,
    /// Wall-clock time of publication, Unix milliseconds.
    pub at_ms: i64,
    /// Event type, e.g. `network`, `network_warning`, `session_ended`.
    pub kind: String,
    /// Type-specific fields (a JSON object).
    pub data: Value,
    /// Sent to live subscribers only, never stored; its `seq` is that of the last stored event
    /// and is left out of its JSON, so that a client dropping repeated `seq`s keeps it.
    pub live_only: bool,
    /// [`Event::to_json`] as text, serialised once and shared by SSE, the data channel and the
    /// timeline writer.
    text: std::sync::OnceLock<Arc<str>>,
}

impl Event {
    /// The JSON object sent to clients: `{"type", "seq", "at_ms", ...data}` (no `seq` when live
    /// only).
    pub(crate) fn to_json(&self) -> Value {
        let mut obj = match &self.data {
            Value::Object(m) => m.clone(),
            Value::Null => serde_json::Map::new(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other.clone());
                m
            }
        };
        obj.insert("type".into(), Value::from(self.kind.clone()));
        if !self.live_only {
            obj.insert("seq".into(), Value::from(self.seq));
        }
        obj.insert("at_ms".into(), Value::from(self.at_ms));
        Value::Object(obj)
    }

    /// [`Event::to_json`] as JSON text, serialised on first use and shared afterwards.
    pub(crate) fn json_text(&self) -> Arc<str> {
        self.text
            .get_or_init(|| self.to_json().to_string().into())
            .clone()
    }
}

pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A typed session event: [`SessionEvent::kind`] names it and its fields are the payload. Each
/// producer owns its enum (`media::call::CallEvent`, `media::peer::PeerEvent`,
/// `session::LifecycleEvent`), so every kind and its payload are spelled out in one place.
pub trait SessionEvent: Serialize {
    fn kind(&self) -> &'static str;
    /// High-rate events that only a live page needs (a level meter) go to live subscribers and
    /// are not stored in the timeline.
    fn live_only(&self) -> bool {
        false
    }
}

/// Publishes a session's events to live subscribers and to the persistence queue.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

#[derive(Debug)]
struct BusInner {
    session_id: Arc<str>,
    next_seq: AtomicU64,
    /// Held while numbering and sending one event, so subscribers and the store see events in
    /// sequence order even when several threads publish at once.
    order: std::sync::Mutex<()>,
    live: broadcast::Sender<Arc<Event>>,
    persist: Option<mpsc::Sender<Arc<Event>>>,
    dropped_persist: AtomicU64,
}

impl EventBus {
    /// `persist` receives every event for the timeline; it is bounded so a stalled database
    /// never blocks the media path (overflow is counted and logged instead).
    pub fn new(session_id: Arc<str>, persist: Option<mpsc::Sender<Arc<Event>>>) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        EventBus {
            inner: Arc::new(BusInner {
                session_id,
                next_seq: AtomicU64::new(1),
                order: std::sync::Mutex::new(()),
                live,
                persist,
                dropped_persist: AtomicU64::new(0),
            }),
        }
    }

    pub fn session_id(&self) -> &Arc<str> {
        &self.inner.session_id
    }

    /// Publishes a typed event (serialised once: the text clients and the timeline get is made
    /// from this value once, [`Event::json_text`]).
    /// Live-only events ([`SessionEvent::live_only`]) go to live subscribers only.
    pub(crate) fn emit<E: SessionEvent>(&self, event: &E) {
        if event.live_only() {
            self.publish_live(event.kind(), event);
        } else {
            let data = serde_json::to_value(event).unwrap_or(Value::Null);
            self.publish_value(event.kind(), data);
        }
    }

    /// Publishes to live subscribers only (high-rate events such as per-frame face observations,
    /// which the timeline summarises instead of storing one by one).
    pub(crate) fn publish_live<T: Serialize>(&self, kind: &str, data: &T) {
        if self.inner.live.receiver_count() == 0 {
            return;
        }
        let data = serde_json::to_value(data).unwrap_or(Value::Null);
        let _order = self.inner.order.lock().unwrap_or_else(|e| e.into_inner());
        let event = Arc::new(Event {
            session_id: self.inner.session_id.clone(),
            // Not part of the timeline: it carries the last stored event's number.
            seq: self.inner.next_seq.load(Ordering::Relaxed) - 1,
            at_ms: unix_ms_now(),
            kind: kind.to_string(),
            data,
            live_only: true,
            text: Default::default(),
        });
        let _ = self.inner.live.send(event);
    }

    /// Publishes an untyped event (tests, and payloads that are JSON already).
    pub fn publish_value(&self, kind: &str, data: Value) -> Arc<Event> {
        let _order = self.inner.order.lock().unwrap_or_else(|e| e.into_inner());
        let event = Arc::new(Event {
            session_id: self.inner.session_id.clone(),
            seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
            at_ms: unix_ms_now(),
            kind: kind.to_string(),
            data,
            live_only: false,
            text: Default::default(),
        });
        if let Some(persist) = &self.inner.persist {
            if persist.try_send(event.clone()).is_err() {
                let n = self.inner.dropped_persist.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(session = %self.inner.session_id, dropped = n, "event persistence queue full; event not stored");
            }
        }
        // No live subscriber is fine: the timeline is in the store.
        let _ = self.inner.live.send(event.clone());
        event
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.live.subscribe()
    }

    /// Sequence number of the last published event (0 when none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.inner.next_seq.load(Ordering::Relaxed) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_numbered_persisted_and_fanned_out() {
        let (tx, mut stored) = mpsc::channel(8);
        let bus = EventBus::new("s1".into(), Some(tx));
        let mut live = bus.subscribe();
        bus.publish_value("network", serde_json::json!({"loss": 0.5}));
        bus.publish_value("session_ended", Value::Null);
        let a = live.recv().await.unwrap();
        let b = live.recv().await.unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.to_json()["type"], "network");
        assert_eq!(a.to_json()["loss"], 0.5);
        assert_eq!(stored.recv().await.unwrap().seq, 1);
        assert_eq!(stored.recv().await.unwrap().kind, "session_ended");
        assert_eq!(bus.last_seq(), 2);
    }

    #[tokio::test]
    async fn a_full_persistence_queue_does_not_block() {
        let (tx, _stored) = mpsc::channel(1);
        let bus = EventBus::new("s1".into(), Some(tx));
        for _ in 0..10 {
            bus.publish_value("x", Value::Null);
        }
        assert_eq!(bus.inner.dropped_persist.load(Ordering::Relaxed), 9);
    }
}
