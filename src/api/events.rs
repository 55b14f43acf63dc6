//! `GET /v1/sessions/{id}/events`: the session's event stream as Server-Sent Events.
//!
//! The stream first replays the stored timeline (after `Last-Event-ID` when the browser
//! reconnects), then follows live events, and closes after `session_ended`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::Stream;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::session::tokens::bearer;

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    /// The events token from the session's `events_url`.
    token: Option<String>,
}

pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let session = state.registry.get(&id).ok_or(ApiError::NotFound)?;
    // Either the read-only events token (query) or the client token (header) grants access.
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let allowed = match (q.token.as_deref(), bearer(auth)) {
        (Some(t), _) => session.check_events_token(t),
        (None, Some(t)) => state.registry.authorize_client(&id, Some(t)).is_ok(),
        (None, None) => false,
    };
    if !allowed {
        return Err(ApiError::Unauthorized);
    }
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Subscribe before reading the store so nothing published in between is missed.
    let mut live = session.bus.subscribe();
    let published = session.bus.last_seq() as i64;
    let store = state.registry.store().clone();

    let stream = async_stream(move |tx| async move {
        let mut last = after;
        // The writer stores events in batches; wait briefly for what was already published.
        for _ in 0..20 {
            let stored = match store.list_events(&id, last).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "timeline replay failed");
                    break;
                }
            };
            for e in stored {
                last = e.seq;
                let ended = e.kind == "session_ended";
                if tx
                    .send(SseEvent::default().id(e.seq.to_string()).data(e.body))
                    .await
                    .is_err()
                    || ended
                {
                    return;
                }
            }
            if last >= published {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            match live.recv().await {
                Ok(e) if e.live_only => {
                    // High-rate live events (face observations) carry no id of their own.
                    if tx
                        .send(SseEvent::default().data(e.json_text()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(e) if (e.seq as i64) <= last => continue,
                Ok(e) => {
                    last = e.seq as i64;
                    let ended = e.kind == "session_ended";
                    let msg = SseEvent::default()
                        .id(e.seq.to_string())
                        .data(e.json_text());
                    if tx.send(msg).await.is_err() || ended {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "SSE subscriber lagged");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream fed by a producer task through a small bounded channel (back-pressure from the client).
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    tokio::spawn(producer(tx));
    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}
