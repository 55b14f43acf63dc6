//! Wiring: opens the store, binds the media port and the HTTP listener, starts background tasks.
//! Used by `vericall serve` and by the integration tests (which bind port 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::events::unix_ms_now;
use crate::media::mux::MediaMux;
use crate::media::peer::EndReason;
use crate::metrics::Metrics;
use crate::notify::webhook::{WebhookPolicy, WebhookWorker};
use crate::notify::Notifier;
use crate::session::tokens::{new_id, new_secret};
use crate::session::SessionRegistry;
use crate::store::{EventWriter, Store, StoreError};

/// Sessions deleted per transaction by the retention job.
const SESSION_PURGE_BATCH: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Evidence(#[from] crate::store::evidence::EvidenceError),
    #[error(transparent)]
    Models(#[from] crate::analysis::face::ModelError),
    #[error("verdict signing key: {0}")]
    Signing(#[from] crate::notify::signing::SigningError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How often this node writes its heartbeat (`nodes.heartbeat_at`).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Timeline events waiting to be written; beyond this, events are dropped (and logged) rather
/// than stalling calls.
const PERSIST_QUEUE: usize = 16 * 1024;

/// Review-console login attempts per minute, per client address and per username.
const LOGINS_PER_MINUTE: u32 = 10;

pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
    pub base_url: String,
    pub registry: Arc<SessionRegistry>,
    /// The API key created because none existed (shown once, never stored in clear).
    pub created_api_key: Option<String>,
    /// Its id (the `aud` of the verdicts signed for it).
    pub created_api_key_id: Option<String>,
    shutdown: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    event_writer: EventWriter,
    webhooks: WebhookWorker,
    webhook_stop: watch::Sender<bool>,
    webhook_task: JoinHandle<()>,
}

impl RunningServer {
    /// Graceful shutdown: stop taking calls, let running ones finish for up to `drain`, end the
    /// rest, stop HTTP, flush the timeline, deliver due webhooks.
    pub async fn shutdown(self, drain: Duration) {
        self.registry.stop_accepting();
        let until = tokio::time::Instant::now() + drain;
        while self.registry.active_calls() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let grace = Duration::from_secs(2);
        self.registry
            .end_all(EndReason::ServerShutdown, grace)
            .await;
        // Give supervisors a moment to record the ends they just observed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.shutdown.send(true);
        let _ = self.http_task.await;
        for t in self.background {
            t.abort();
        }
        // Sessions (and their event buses) can outlive the registry handle held here, so wait
        // for the queue to drain rather than for the channel to close.
        self.event_writer.flush().await;
        // Deliver what is due now (the verdicts of the calls just ended); anything left stays in
        // the outbox for the next start.
        let _ = self.webhook_stop.send(true);
        // A pass in flight may be waiting on a slow receiver (10 s per request): bounded.
        if tokio::time::timeout(Duration::from_secs(15), self.webhook_task)
            .await
            .is_err()
        {
            tracing::warn!("webhook worker did not stop in time; undelivered rows stay queued");
        }
        self.webhooks.flush(Duration::from_secs(5)).await;
        // Gone cleanly: peers stop forwarding here and have nothing to end.
        if let Err(e) = self.registry.store().leave().await {
            tracing::warn!(error = %e, "cannot remove this node from the cluster's list");
        }
    }
}

/// Creates an API key when none is active, for a usable out-of-the-box install: (id, key).
async fn ensure_api_key(store: &Store) -> Result<Option<(String, String)>, StoreError> {
    if store.count_active_api_keys().await? > 0 {
        return Ok(None);
    }
    let (key, hash) = new_secret("vck_");
    let id = new_id("key_");
    store
        .insert_api_key(&id, "default", &hash.to_hex(), unix_ms_now())
        .await?;
    Ok(Some((id, key)))
}

/// Serves HTTP/1.1 (as `axum::serve` did) until `stop`, then lets open requests finish
/// (bounded). Unlike `axum::serve`, a connection that does not send a request's headers within
/// `read_timeout` is closed (the body deadline is `limits::body_deadline`).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
        };
        // Small API responses and SSE events go out at once.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        tokio::spawn(async move {
            // A client that connects and sends nothing is dropped here, whatever hyper's header
            // timer does before the first byte.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(read_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                return;
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "HTTP connection closed with an error");
            }
        });
    }
    // Open event streams never finish by themselves: bounded.
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open at shutdown were dropped");
    }
}

pub async fn start(cfg: Config, static_dir: &str) -> Result<RunningServer, ServerError> {
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let evidence = crate::store::evidence::EvidenceStore::open(
        cfg.evidence_url.as_deref(),
        std::path::Path::new(&cfg.data_dir),
    )?;
    tracing::info!(location = %evidence.location(), "evidence frames");
    let store = Store::connect(&cfg.database_url)
        .await?
        .for_node(&cfg.node())
        .with_evidence(evidence);
    let (created_api_key_id, created_api_key) = ensure_api_key(&store).await?.unzip();
    let face_models = if cfg.face_analysis {
        let dir = std::path::PathBuf::from(&cfg.models_dir);
        let models =
            tokio::task::spawn_blocking(move || crate::analysis::face::FaceModels::load(&dir))
                .await
                .map_err(|e| crate::analysis::face::ModelError::Run(e.to_string()))??;
        Some(models)
    } else {
        tracing::warn!("face analysis is off (face_analysis = false)");
        None
    };

    let mux = MediaMux::bind(cfg.media_addr)
        .await
        .map_err(|source| ServerError::Bind {
            what: "media UDP port",
            addr: cfg.media_addr,
            source,
        })?;
    let media_addr = mux.local_addr();
    let mux_task = tokio::spawn(mux.clone().run());

    let (persist_tx, persist_rx) = mpsc::channel(PERSIST_QUEUE);
    let event_writer = EventWriter::spawn(store.clone(), persist_tx.clone(), persist_rx);
    let verdict_lifetime = Duration::from_secs(cfg.signed_verdict_lifetime_secs);
    let signer = Arc::new(
        crate::notify::signing::VerdictSigner::load(store.clone(), cfg.issuer())
            .await?
            .publish_retired_for(verdict_lifetime),
    );
    let webhooks = WebhookWorker::new(
        store.clone(),
        WebhookPolicy {
            retry_base: Duration::from_millis(cfg.webhook_retry_base_ms),
            give_up_after: Duration::from_secs(cfg.webhook_give_up_secs),
            allow_internal: cfg.dev || cfg.webhook_allow_internal,
            resolve_overrides: cfg.webhook_resolve.clone(),
            ..WebhookPolicy::default()
        },
    );
    let (webhook_stop, webhook_stop_rx) = watch::channel(false);
    let webhook_task = tokio::spawn(webhooks.clone().run(webhook_stop_rx));
    let notifier = Arc::new(Notifier::new(
        store.clone(),
        signer,
        webhooks.clone(),
        verdict_lifetime,
    ));
    // The ID-document step needs the face models (portrait) and the OCR models.
    let document_reader = match &face_models {
        Some(faces) => {
            let dir = std::path::PathBuf::from(&cfg.models_dir);
            match tokio::task::spawn_blocking(move || crate::document::ocr::OcrModels::load(&dir))
                .await
            {
                Ok(Ok(ocr)) => Some(Arc::new(crate::document::DocumentReader {
                    ocr,
                    faces: faces.clone(),
                })),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "ID-document checks are unavailable");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ID-document checks are unavailable");
                    None
                }
            }
        }
        None => None,
    };
    let registry = SessionRegistry::new(
        cfg.clone(),
        store,
        mux,
        persist_tx,
        face_models,
        document_reader,
        notifier,
    );
    // Sessions a previous run of this node left open (a crash, kill -9) end now, each with a
    // verdict, its signed form and its webhook, before the webhook worker's first pass matters.
    registry.end_orphaned_sessions().await?;
    // Sessions an earlier version ended without a verdict get one (once, by whichever instance).
    registry.backfill_verdicts().await?;

    // Retention, hourly: evidence frames and document text older than `retention_days`, and
    // whole sessions that ended more than `session_retention_days` ago, are deleted.
    let purger = {
        let retention = Duration::from_secs(cfg.retention_days * 86_400);
        let session_retention =
            Duration::from_secs(cfg.session_retention_days.unwrap_or(cfg.retention_days) * 86_400);
        let store = registry.store().clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                let now = crate::events::unix_ms_now();
                let session_cutoff = now - session_retention.as_millis() as i64;
                match store
                    .purge_expired_sessions(session_cutoff, SESSION_PURGE_BATCH)
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(sessions = n, "deleted expired sessions"),
                    Err(e) => tracing::warn!(error = %e, "session purge failed"),
                    _ => {}
                }
                match store.purge_expired_enrolments(now).await {
                    Ok(n) if n > 0 => tracing::info!(enrolments = n, "deleted expired enrolments"),
                    Err(e) => tracing::warn!(error = %e, "enrolment purge failed"),
                    _ => {}
                }
                let cutoff = now - retention.as_millis() as i64;
                match store.purge_document_fields(cutoff).await {
                    Ok(n) if n > 0 => tracing::info!(sessions = n, "purged document text"),
                    Err(e) => tracing::warn!(error = %e, "document text purge failed"),
                    _ => {}
                }
                let purged = match store.evidence() {
                    Some(evidence) => {
                        evidence
                            .purge(retention, std::time::SystemTime::now())
                            .await
                    }
                    None => Ok(0),
                };
                match purged {
                    Ok(n) if n > 0 => tracing::info!(sessions = n, "purged expired evidence"),
                    Err(e) => tracing::warn!(error = %e, "evidence purge failed"),
                    _ => {}
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|source| ServerError::Bind {
            what: "HTTP",
            addr: cfg.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        what: "HTTP",
        addr: cfg.http_addr,
        source,
    })?;
    let base_url = cfg.base_url(http_addr);
    let internal_url = cfg.internal_url(http_addr);
    // Two live nodes under one name would take each other's sessions for their own.
    let node = cfg.node();
    if let Ok(Some(url)) = registry.store().node_url(&node).await {
        if url != internal_url {
            tracing::warn!(node = %node, registered = %url, this = %internal_url,
                "another node may be running under this node_id (or this one restarted at a new address); give each node its own node_id");
        }
    }
    // This node is in the cluster's list before it serves: peers can forward to it at once.
    registry
        .store()
        .heartbeat(&internal_url, crate::events::unix_ms_now())
        .await?;
    // The heartbeat has its own task: a slow sweep (ending many sessions) must not delay it.
    let heartbeat = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let now = crate::events::unix_ms_now();
                let written = registry.store().heartbeat(&internal_url, now).await;
                if let Err(e) = &written {
                    tracing::warn!(error = %e, "cannot write this node's heartbeat");
                }
                registry.record_heartbeat(written.is_ok(), std::time::Instant::now());
            }
        })
    };
    let sweeper = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                registry.sweep().await;
                // Other nodes' sessions, if they stopped beating.
                registry.end_lost_nodes().await;
                let now = crate::events::unix_ms_now();
                if ticks % 30 == 0 {
                    registry.end_stale_sessions().await;
                    if let Err(e) = registry.store().purge_rate_limits(now).await {
                        tracing::warn!(error = %e, "cannot purge rate-limit cells");
                    }
                    if let Err(e) = registry.store().purge_idempotency_keys(now).await {
                        tracing::warn!(error = %e, "cannot purge idempotency claims");
                    }
                }
                ticks += 1;
            }
        })
    };
    let store = registry.store();
    let state = AppState {
        cfg: cfg.clone(),
        registry: registry.clone(),
        metrics: Arc::new(Metrics::default()),
        base_url: base_url.clone().into(),
        session_limit: Arc::new(api::limits::RateLimiter::for_cluster(
            cfg.sessions_per_minute,
            "sessions",
            store,
            cfg.node_secret.as_deref(),
        )),
        whip_limit: Arc::new(api::limits::RateLimiter::for_cluster(
            cfg.whip_offers_per_minute,
            "whip",
            store,
            cfg.node_secret.as_deref(),
        )),
        login_limit: Arc::new(api::limits::RateLimiter::for_cluster(
            LOGINS_PER_MINUTE,
            "logins",
            store,
            cfg.node_secret.as_deref(),
        )),
        idempotency: Arc::default(),
        cluster: cfg
            .node_secret
            .as_deref()
            .map(|secret| Arc::new(api::forward::Cluster::new(cfg.node(), secret))),
    };
    let read_timeout = Duration::from_secs(cfg.http_read_timeout_secs);
    let app = api::router(state, static_dir).layer(axum::middleware::from_fn_with_state(
        read_timeout,
        api::limits::body_deadline,
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let http_task = tokio::spawn(serve_http(listener, app, read_timeout, shutdown_rx));
    tracing::info!(%http_addr, %media_addr, advertised = %cfg.advertised_ip(), "vericall listening");
    Ok(RunningServer {
        http_addr,
        media_addr,
        base_url,
        registry,
        created_api_key,
        created_api_key_id,
        shutdown,
        http_task,
        background: vec![mux_task, heartbeat, sweeper, purger],
        event_writer,
        webhooks,
        webhook_stop,
        webhook_task,
    })
}
