//! Sessions: creation, client tokens, the media slot of each session and its lifecycle.
//!
//! A session is created by the relying party's backend, then joined once by a client over WHIP.
//! The registry owns the in-memory state; the store keeps the durable record (state, end reason,
//! network summary, timeline). A small supervisor task per call mirrors the peer's status into
//! the store, so the media task never waits on the database.

pub mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use str0m::IceCreds;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::events::{unix_ms_now, Event, EventBus, SessionEvent};
use crate::media::mux::MediaMux;
use crate::media::peer::{
    self, EndReason, MediaSummary, PeerCommand, PeerConfig, PeerError, PeerStatus,
};
use crate::media::sdp::SdpError;
use crate::notify::{Notifier, VerdictNotice};
use crate::reasons::ReasonCode;
use crate::store::{SessionRow, Store, StoreError, VerdictWrite};
use tokens::{new_secret, new_session_id, SecretHash};

/// Ended sessions stay in memory this long (for SSE replays and quick GETs), then only in the store.
const KEEP_ENDED: Duration = Duration::from_secs(600);
/// End reasons a stored session may have (`decide` takes them as `&'static str`).
const KNOWN_END_REASONS: [&str; 12] = [
    "completed",
    "deleted",
    "expired",
    "ice_failed",
    "connection_lost",
    "closed_by_peer",
    "idle_timeout",
    "max_duration",
    "server_shutdown",
    "server_restart",
    "node_lost",
    "internal_error",
];
/// Tries to record a session's end (with its verdict and webhook) before giving up.
const RECORD_END_TRIES: u32 = 3;
/// Slack past a session's longest possible life before another instance ends it as orphaned.
const STALE_MARGIN_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("unknown session")]
    NotFound,
    #[error("missing or invalid token")]
    Unauthorized,
    #[error("token belongs to another session")]
    Forbidden,
    #[error("the session is already connected")]
    AlreadyConnected,
    #[error("the session has ended")]
    Ended,
    #[error("server at capacity")]
    AtCapacity,
    #[error("too many failed attempts for this subject ({failed})")]
    TooManyAttempts { failed: i64 },
    #[error("this subject has no enrolment to re-verify against (or it expired)")]
    NotEnrolled,
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error("the call is no longer running")]
    MediaGone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PeerError> for SessionError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Sdp(s) => SessionError::Sdp(s),
            PeerError::Gone => SessionError::MediaGone,
        }
    }
}

/// Where a session's media stands.
enum MediaSlot {
    Waiting,
    Active {
        commands: mpsc::Sender<PeerCommand>,
        status: watch::Receiver<PeerStatus>,
        summary: watch::Receiver<MediaSummary>,
        /// Bumped on every ICE restart; the WHIP ETag.
        ice_generation: u64,
    },
    Ended {
        reason: String,
        summary: Option<Box<MediaSummary>>,
        at: std::time::Instant,
    },
}

/// What the relying party asked of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionPolicy {
    /// A microphone is required (`MIC_MISSING` when the call has no audio).
    pub audio: bool,
    /// The ID-document step (off by default).
    #[serde(default)]
    pub document: crate::document::DocumentPolicy,
    /// Keep the live face as the subject's enrolment when the session passes.
    #[serde(default)]
    pub enrol: bool,
    /// Match the live face against the subject's enrolment (`ENROLMENT_MISMATCH`).
    #[serde(default)]
    pub reverify: bool,
    /// A practice run: the same call, but nothing counts (no verdict for the relying party, no
    /// attempt, no evidence, no webhook); only a per-subject summary of its outcome.
    #[serde(default)]
    pub practice: bool,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            audio: true,
            document: Default::default(),
            enrol: false,
            reverify: false,
            practice: false,
        }
    }
}

/// What the session's live face is compared with: its ID photo's embedding or, in a
/// re-verification, the subject's enrolment. The session sends it, each call's media thread
/// watches it (`media::pipeline::ReferenceWatch`), so `media` need not know `session`.
pub(crate) type ReferenceSender = tokio::sync::watch::Sender<
    Option<(
        crate::analysis::face::embed::Embedding,
        crate::verdict::ReferenceKind,
    )>,
>;

/// What the session's lifecycle tells its events (the call's own come from `media`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum LifecycleEvent<'a> {
    SessionCreated {
        expires_at_ms: i64,
    },
    /// A WHIP offer was accepted; the call is connecting.
    Connecting {},
    /// The page reported a camera or microphone it could not use (before or instead of a call).
    DeviceFailure {
        code: &'static str,
        device: &'a str,
        detail: &'a str,
        hint_key: String,
    },
    /// The relying party set (or replaced) the reference photo.
    ReferenceSet {},
    SessionEnded {
        reason: &'a str,
    },
}

impl SessionEvent for LifecycleEvent<'_> {
    fn kind(&self) -> &'static str {
        match self {
            LifecycleEvent::SessionCreated { .. } => "session_created",
            LifecycleEvent::Connecting {} => "connecting",
            LifecycleEvent::DeviceFailure { .. } => "device_failure",
            LifecycleEvent::ReferenceSet {} => "reference_set",
            LifecycleEvent::SessionEnded { .. } => "session_ended",
        }
    }
}

/// A session's evidence frames (`store::evidence`): the call's media thread encodes each JPEG,
/// and the upload (a local file or an S3 request) runs on the runtime, off the media thread.
#[derive(Debug)]
pub(crate) struct EvidenceFolder {
    store: crate::store::evidence::EvidenceStore,
    session: Arc<str>,
    runtime: tokio::runtime::Handle,
}

impl crate::media::pipeline::EvidenceSink for EvidenceFolder {
    fn write(&self, name: &str, frame: &crate::frame::I420) -> std::io::Result<String> {
        let jpeg = crate::store::evidence::encode_jpeg(frame)?;
        let file = format!("{name}.jpg");
        self.store
            .put_in_background(&self.runtime, &self.session, file.clone(), jpeg);
        Ok(file)
    }
}

pub struct Session {
    pub id: Arc<str>,
    pub policy: SessionPolicy,
    /// Set by `POST /v1/sessions/{id}/reference`; only the embedding is kept, never the photo.
    pub reference: ReferenceSender,
    pub api_key_id: String,
    /// The relying party's id for the person (for attempt limits, webhooks and deletion).
    pub subject: Option<String>,
    /// The relying party's opaque reference for this session (an order or case id), echoed back.
    pub external_reference: Option<String>,
    pub created_at_ms: i64,
    /// The client token is accepted for a first WHIP offer until then.
    pub expires_at_ms: i64,
    pub bus: EventBus,
    client_token: SecretHash,
    /// Read-only token for the events stream. Kept in memory (never stored or logged) so the WHIP
    /// answer can hand the events URL to a client that only knows its client token.
    events_token: String,
    media: Mutex<MediaSlot>,
    /// Device problems the client reported before or instead of a call (`PERMISSION_DENIED`, ...);
    /// they explain a session that ends without a finished call.
    device_failures: Mutex<Vec<ReasonCode>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A live view of a session for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionView {
    pub state: &'static str,
    pub end_reason: Option<String>,
    pub network: Option<MediaSummary>,
}

impl Session {
    fn slot(&self) -> std::sync::MutexGuard<'_, MediaSlot> {
        self.media.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn view(&self) -> SessionView {
        match &*self.slot() {
            MediaSlot::Waiting => SessionView {
                state: "created",
                end_reason: None,
                network: None,
            },
            MediaSlot::Active {
                status, summary, ..
            } => SessionView {
                state: match &*status.borrow() {
                    PeerStatus::Connecting => "connecting",
                    PeerStatus::Connected { .. } => "connected",
                    PeerStatus::Reconnecting => "reconnecting",
                    PeerStatus::Ended(_) => "ending",
                },
                end_reason: None,
                network: Some(summary.borrow().clone()),
            },
            MediaSlot::Ended {
                reason, summary, ..
            } => SessionView {
                state: "ended",
                end_reason: Some(reason.clone()),
                network: summary.as_deref().cloned(),
            },
        }
    }

    pub fn etag(&self) -> Option<String> {
        match &*self.slot() {
            MediaSlot::Active { ice_generation, .. } => {
                Some(format!("\"{}-{}\"", &self.id[4..12], ice_generation))
            }
            _ => None,
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        matches!(&*self.slot(), MediaSlot::Ended { .. })
    }

    pub(crate) fn check_events_token(&self, token: &str) -> bool {
        SecretHash::of(token) == SecretHash::of(&self.events_token)
    }

    pub(crate) fn events_token(&self) -> &str {
        &self.events_token
    }

    /// The device problems the client reported, oldest first, without repeats.
    pub fn device_failures(&self) -> Vec<ReasonCode> {
        lock(&self.device_failures).clone()
    }
}

/// Codes a client may report about its own devices (`POST /v1/sessions/{id}/client-report`).
pub(crate) const CLIENT_REPORTABLE: [ReasonCode; 5] = [
    ReasonCode::PermissionDenied,
    ReasonCode::DeviceNotFound,
    ReasonCode::DeviceInUse,
    ReasonCode::DeviceUnsupported,
    ReasonCode::BrowserUnsupported,
];

/// A new session as returned to the relying party (the secrets appear only here, once).
pub struct NewSession {
    pub session: Arc<Session>,
    pub client_token: String,
    pub events_token: String,
}

pub struct SessionRegistry {
    cfg: Arc<Config>,
    notifier: Arc<Notifier>,
    store: Store,
    mux: Arc<MediaMux>,
    persist: mpsc::Sender<Arc<Event>>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// Client-token hash -> session id, to tell "wrong session" (403) from "no such token" (401).
    tokens: Mutex<HashMap<SecretHash, Arc<str>>>,
    active: AtomicUsize,
    /// Analysis lag and queue drops of this node's calls (admission control, metrics).
    load: Arc<crate::media::admission::NodeLoad>,
    accepting: std::sync::atomic::AtomicBool,
    face_models: Option<Arc<crate::analysis::face::FaceModels>>,
    document_reader: Option<Arc<crate::document::DocumentReader>>,
    /// Since when every heartbeat of this node reached the database (`None` after a failure).
    heartbeats_ok_since: Mutex<Option<std::time::Instant>>,
}

impl SessionRegistry {
    pub fn new(
        cfg: Arc<Config>,
        store: Store,
        mux: Arc<MediaMux>,
        persist: mpsc::Sender<Arc<Event>>,
        face_models: Option<Arc<crate::analysis::face::FaceModels>>,
        document_reader: Option<Arc<crate::document::DocumentReader>>,
        notifier: Arc<Notifier>,
    ) -> Arc<Self> {
        Arc::new(SessionRegistry {
            cfg,
            notifier,
            store,
            mux,
            persist,
            sessions: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            load: Arc::default(),
            accepting: std::sync::atomic::AtomicBool::new(true),
            face_models,
            document_reader,
            heartbeats_ok_since: Mutex::new(None),
        })
    }

    /// Whether this node's heartbeat just reached the database.
    pub(crate) fn record_heartbeat(&self, written: bool, now: std::time::Instant) {
        let mut since = lock(&self.heartbeats_ok_since);
        *since = match (written, *since) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(now),
            (false, _) => None,
        };
    }

    /// Whether sessions may ask for the ID-document step: face and OCR models loaded, and
    /// challenges on (the step follows them).
    pub(crate) fn documents_available(&self) -> bool {
        self.document_reader.is_some() && self.cfg.challenge_steps > 0
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// This node's analysis lag and queue drops (admission control).
    pub fn load(&self) -> &crate::media::admission::NodeLoad {
        &self.load
    }

    pub(crate) fn active_calls(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn sessions_in_memory(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Running network summaries of live calls (for metrics).
    pub(crate) fn live_network(&self) -> Vec<MediaSummary> {
        let all: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        all.iter()
            .filter_map(|s| match &*s.slot() {
                MediaSlot::Active { summary, .. } => Some(summary.borrow().clone()),
                _ => None,
            })
            .collect()
    }

    pub fn face_models(&self) -> Option<&Arc<crate::analysis::face::FaceModels>> {
        self.face_models.as_ref()
    }

    pub fn mux(&self) -> &Arc<MediaMux> {
        &self.mux
    }

    pub async fn create(
        &self,
        api_key_id: &str,
        subject: Option<String>,
        external_reference: Option<String>,
        policy: SessionPolicy,
    ) -> Result<NewSession, SessionError> {
        if !self.is_accepting() {
            return Err(SessionError::AtCapacity);
        }
        if let Some(subject) = &subject {
            let since = unix_ms_now() - self.cfg.attempt_window_secs as i64 * 1000;
            let failed = self
                .store
                .count_failed_attempts(api_key_id, subject, since)
                .await?;
            if failed >= self.cfg.max_failed_attempts as i64 {
                return Err(SessionError::TooManyAttempts { failed });
            }
        }
        // A re-verification compares the live face with the subject's enrolled face.
        let mut reference = None;
        if policy.reverify {
            let subject = subject.as_deref().ok_or(SessionError::NotEnrolled)?;
            let row = self
                .store
                .get_enrolment(api_key_id, subject, unix_ms_now())
                .await?
                .ok_or(SessionError::NotEnrolled)?;
            let embedding = crate::analysis::face::embed::Embedding::from_hex(&row.embedding)
                .ok_or(SessionError::NotEnrolled)?;
            reference = Some((embedding, crate::verdict::ReferenceKind::Enrolment));
        }
        let id: Arc<str> = new_session_id().into();
        let (client_token, client_hash) = new_secret("vct_");
        let (events_token, _) = new_secret("vce_");
        let now = unix_ms_now();
        let expires = now + self.cfg.session_ttl().as_millis() as i64;
        self.store
            .insert_session_with_reference(
                &SessionRow {
                    id: id.to_string(),
                    api_key_id: api_key_id.to_string(),
                    subject: subject.clone(),
                    state: "created".into(),
                    created_at: now,
                    expires_at: expires,
                    connected_at: None,
                    ended_at: None,
                    end_reason: None,
                    network_summary: None,
                    practice: policy.practice,
                },
                external_reference.as_deref(),
            )
            .await?;
        let session = Arc::new(Session {
            id: id.clone(),
            policy,
            reference: ReferenceSender::new(reference),
            api_key_id: api_key_id.to_string(),
            subject,
            external_reference,
            created_at_ms: now,
            expires_at_ms: expires,
            bus: EventBus::new(id.clone(), Some(self.persist.clone())),
            client_token: client_hash,
            events_token: events_token.clone(),
            media: Mutex::new(MediaSlot::Waiting),
            device_failures: Mutex::new(Vec::new()),
        });
        session.bus.emit(&LifecycleEvent::SessionCreated {
            expires_at_ms: expires,
        });
        lock(&self.sessions).insert(id.clone(), session.clone());
        lock(&self.tokens).insert(client_hash, id);
        Ok(NewSession {
            session,
            client_token,
            events_token,
        })
    }

    /// A session owned by the first active API key, for `serve --dev`.
    pub async fn create_dev_session(&self) -> Result<NewSession, SessionError> {
        let keys = self.store.list_api_keys().await?;
        let key = keys
            .iter()
            .find(|k| k.revoked_at.is_none())
            .ok_or(SessionError::Unauthorized)?;
        self.create(&key.id, Some("dev".into()), None, SessionPolicy::default())
            .await
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// Checks a client token against a session: 404 unknown session, 401 unknown token, 403 other session's.
    pub(crate) fn authorize_client(
        &self,
        id: &str,
        token: Option<&str>,
    ) -> Result<Arc<Session>, SessionError> {
        let session = self.get(id).ok_or(SessionError::NotFound)?;
        let hash = SecretHash::of(token.ok_or(SessionError::Unauthorized)?);
        if hash == session.client_token {
            return Ok(session);
        }
        match lock(&self.tokens).get(&hash) {
            Some(_) => Err(SessionError::Forbidden),
            None => Err(SessionError::Unauthorized),
        }
    }

    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// Stop accepting new calls (graceful shutdown).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// Starts the call for a WHIP offer; returns the SDP answer and the ETag.
    pub(crate) fn start_call(
        self: &Arc<Self>,
        session: &Arc<Session>,
        offer: &str,
        skip_light: bool,
    ) -> Result<(String, String), SessionError> {
        {
            let slot = session.slot();
            match &*slot {
                MediaSlot::Waiting => {}
                MediaSlot::Active { .. } => return Err(SessionError::AlreadyConnected),
                MediaSlot::Ended { .. } => return Err(SessionError::Ended),
            }
        }
        if unix_ms_now() > session.expires_at_ms {
            return Err(SessionError::Unauthorized);
        }
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(SessionError::AtCapacity);
        }
        // A node that cannot keep up with its calls refuses new ones rather than degrade them all.
        if let Err(why) = self.load.admits(std::time::Instant::now()) {
            tracing::warn!(session = %session.id, ?why, "node saturated; call refused");
            return Err(SessionError::AtCapacity);
        }
        // Reserve a slot first so concurrent offers cannot overshoot the limit.
        if self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cfg.max_sessions).then_some(n + 1)
            })
            .is_err()
        {
            return Err(SessionError::AtCapacity);
        }
        // Devices work now: earlier pre-check failures no longer explain this session's end.
        lock(&session.device_failures).clear();
        let peer_cfg = PeerConfig {
            session: session.id.clone(),
            advertised: SocketAddr::new(self.cfg.advertised_ip(), self.mux.local_addr().port()),
            connect_timeout: Duration::from_secs(self.cfg.connect_timeout_secs),
            idle_timeout: Duration::from_secs(self.cfg.idle_timeout_secs),
            max_duration: Duration::from_secs(self.cfg.max_call_secs),
            reconnect_grace: Duration::from_secs(self.cfg.reconnect_grace_secs),
            analysis_fps: self.cfg.analysis_fps,
            wants_audio: session.policy.audio,
            face_models: self.face_models.clone(),
            reference: session.reference.subscribe(),
            load: self.load.clone(),
            // A practice run keeps no evidence.
            evidence: self
                .store
                .evidence()
                .filter(|_| !session.policy.practice)
                .map(|store| {
                    Arc::new(EvidenceFolder {
                        store: store.clone(),
                        session: session.id.clone(),
                        runtime: tokio::runtime::Handle::current(),
                    }) as crate::media::pipeline::EvidenceWriter
                }),
            document: self
                .document_reader
                .clone()
                .filter(|_| session.policy.document.is_on())
                .map(|reader| (session.policy.document.clone(), reader)),
            liveness: (self.face_models.is_some() && self.cfg.challenge_steps > 0).then(|| {
                let rng = &mut rand::thread_rng();
                let plan = crate::liveness::random_plan(rng, self.cfg.challenge_steps);
                // A session that wants a microphone hears it in a spoken step.
                if session.policy.audio {
                    plan.with_spoken_step(rng)
                } else {
                    plan
                }
            }),
            light: match (self.cfg.screen_light, skip_light) {
                (false, _) => crate::liveness::LightMode::Off,
                (true, false) => crate::liveness::LightMode::On,
                (true, true) => crate::liveness::LightMode::Skipped,
            },
        };
        let mut slot = session.slot();
        if !matches!(&*slot, MediaSlot::Waiting) {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(SessionError::AlreadyConnected);
        }
        let handle =
            match peer::accept_offer(offer, peer_cfg, session.bus.clone(), self.mux.clone()) {
                Ok(h) => h,
                Err(e) => {
                    self.active.fetch_sub(1, Ordering::AcqRel);
                    return Err(e.into());
                }
            };
        *slot = MediaSlot::Active {
            commands: handle.commands,
            status: handle.status.clone(),
            summary: handle.summary.clone(),
            ice_generation: 1,
        };
        drop(slot);
        session.bus.emit(&LifecycleEvent::Connecting {});
        tokio::spawn(supervise(
            self.clone(),
            session.clone(),
            handle.status,
            handle.summary,
        ));
        let etag = session.etag().unwrap_or_default();
        Ok((handle.answer, etag))
    }

    fn commands(&self, session: &Session) -> Result<mpsc::Sender<PeerCommand>, SessionError> {
        match &*session.slot() {
            MediaSlot::Active { commands, .. } => Ok(commands.clone()),
            MediaSlot::Waiting => Err(SessionError::NotFound),
            MediaSlot::Ended { .. } => Err(SessionError::Ended),
        }
    }

    /// Applies a WHIP PATCH. Returns the server's new ICE credentials and ETag after an ICE
    /// restart, or `None` for plain trickle ICE.
    pub async fn patch(
        &self,
        session: &Session,
        remote: Option<IceCreds>,
        candidates: Vec<str0m::Candidate>,
    ) -> Result<Option<(IceCreds, String)>, SessionError> {
        let commands = self.commands(session)?;
        let (reply, rx) = oneshot::channel();
        commands
            .send(PeerCommand::Patch {
                remote,
                candidates,
                reply,
            })
            .await
            .map_err(|_| SessionError::MediaGone)?;
        let Some(creds) = rx.await.map_err(|_| SessionError::MediaGone)?? else {
            return Ok(None);
        };
        if let MediaSlot::Active { ice_generation, .. } = &mut *session.slot() {
            *ice_generation += 1;
        }
        Ok(Some((creds, session.etag().unwrap_or_default())))
    }

    /// Records a device problem the client hit before (or instead of) its call: a timeline event
    /// for the operator, and the reason the verdict gives if the session ends without a call.
    /// `detail` is the browser's error name, already reduced to a short identifier by the caller.
    pub(crate) fn report_device_failure(
        &self,
        session: &Session,
        code: ReasonCode,
        device: &str,
        detail: &str,
    ) -> Result<(), SessionError> {
        if session.is_ended() {
            return Err(SessionError::Ended);
        }
        {
            let mut failures = lock(&session.device_failures);
            if failures.contains(&code) {
                // Already recorded: a retrying page must not flood the timeline.
                return Ok(());
            }
            failures.push(code);
        }
        session.bus.emit(&LifecycleEvent::DeviceFailure {
            code: code.as_str(),
            device,
            detail,
            hint_key: code.hint_key(),
        });
        tracing::info!(session = %session.id, code = code.as_str(), device, detail, "client reported a device failure");
        Ok(())
    }

    /// Ends a session for `reason` (DELETE, shutdown). A session without a call ends at once.
    pub async fn end(&self, session: &Arc<Session>, reason: EndReason) -> Result<(), SessionError> {
        let commands = {
            let mut slot = session.slot();
            match &*slot {
                MediaSlot::Active { commands, .. } => Some(commands.clone()),
                MediaSlot::Waiting => {
                    *slot = MediaSlot::Ended {
                        reason: reason.as_str().to_string(),
                        summary: None,
                        at: std::time::Instant::now(),
                    };
                    None
                }
                MediaSlot::Ended { .. } => return Ok(()),
            }
        };
        match commands {
            Some(c) => {
                // The supervisor records the end once the peer has stopped.
                let _ = c.send(PeerCommand::Close(reason)).await;
            }
            None => self.record_end(session, reason.as_str(), None).await,
        }
        Ok(())
    }

    async fn record_end(&self, session: &Session, reason: &str, summary: Option<&MediaSummary>) {
        let now = unix_ms_now();
        // Every ended session has a verdict: the call's, or one that says why there was none.
        let verdict = summary.and_then(|s| s.verdict.clone()).unwrap_or_else(|| {
            crate::verdict::decide(&crate::verdict::VerdictInputs {
                liveness: None,
                face_match: None,
                network_poor_ms: 0,
                persistent_faults: session.device_failures(),
                step_faults: Vec::new(),
                document: None,
                provenance: None,
                ended_early: Some(match reason {
                    "expired" => "expired",
                    "deleted" => "deleted",
                    _ => "other",
                }),
            })
        });
        let value = match serde_json::to_value(&verdict) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(session = %session.id, error = %e, "cannot serialize the verdict");
                return;
            }
        };
        let summary_text = summary.and_then(|s| serde_json::to_string(s).ok());
        let fields_text = verdict.document_fields.as_ref().map(|f| f.to_string());
        let notice = VerdictNotice {
            session_id: &session.id,
            api_key_id: &session.api_key_id,
            subject: session.subject.as_deref(),
            reference: session.external_reference.as_deref(),
            verdict: &value,
            decided_by: "vericall",
        };
        if session.policy.practice {
            self.record_practice_end(session, reason, now, &value, summary_text.as_deref())
                .await;
            return;
        }
        // End, verdict, signed verdict and webhook delivery are one transaction.
        let write = VerdictWrite::End {
            at: now,
            reason,
            network_summary: summary_text.as_deref(),
            document_fields: fields_text.as_deref(),
            timeline_event: false,
        };
        // A busy or briefly unreachable database gets a few tries; if it stays down, the session
        // stays open in the store and the next start ends it as `server_restart`.
        for attempt in 1..=RECORD_END_TRIES {
            match self.notifier.record(&notice, &write).await {
                Ok(true) => {
                    session.bus.emit(&LifecycleEvent::SessionEnded { reason });
                    self.enrol(session, &verdict).await;
                    return;
                }
                Ok(false) => return,
                Err(e) if attempt < RECORD_END_TRIES => {
                    tracing::warn!(session = %session.id, error = %e, attempt, "cannot record the session end; retrying");
                    tokio::time::sleep(Duration::from_millis(250 * attempt as u64)).await;
                }
                Err(e) => {
                    tracing::error!(session = %session.id, error = %e, "cannot record the session end")
                }
            }
        }
    }

    /// Ends a practice run: its outcome is stored for the per-subject summary, but it is not
    /// signed, not delivered by webhook, and counts as no attempt.
    async fn record_practice_end(
        &self,
        session: &Session,
        reason: &str,
        now: i64,
        outcome: &serde_json::Value,
        network_summary: Option<&str>,
    ) {
        let status = outcome["status"].as_str().unwrap_or("failed");
        let record = crate::store::VerdictRecord {
            session_id: &session.id,
            status,
            verdict_json: &outcome.to_string(),
            signed_verdict: None,
            decided_at: now,
            outbox: None,
        };
        let write = VerdictWrite::End {
            at: now,
            reason,
            network_summary,
            document_fields: None,
            timeline_event: false,
        };
        match self.store.record_verdict(&record, &write).await {
            Ok(_) => {
                session.bus.emit(&LifecycleEvent::SessionEnded { reason });
            }
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "cannot record a practice run's end")
            }
        }
    }

    /// Keeps the live face as the subject's enrolment when the session asked for it and passed.
    async fn enrol(&self, session: &Session, verdict: &crate::verdict::Verdict) {
        let (true, Some(subject), Some(face)) = (
            session.policy.enrol && verdict.status == crate::verdict::VerdictStatus::Passed,
            session.subject.as_deref(),
            verdict.live_face.as_ref(),
        ) else {
            return;
        };
        let now = unix_ms_now();
        let row = crate::store::EnrolmentRow {
            api_key_id: session.api_key_id.clone(),
            subject: subject.to_string(),
            embedding: face.to_hex(),
            session_id: session.id.to_string(),
            created_at: now,
            expires_at: now + self.cfg.enrolment_retention_days as i64 * 86_400_000,
        };
        match self.store.upsert_enrolment(&row).await {
            // The subject id is personal data: the session id names it.
            Ok(()) => tracing::info!(session = %session.id, "face enrolled"),
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "cannot keep the enrolment")
            }
        }
    }

    /// Ends, with a verdict, open sessions whose call cannot go on: `reason` is
    /// `server_restart` (this node's sessions after a crash) or `node_lost` (any node's, when
    /// far older than any call can be). Each gets `SESSION_INCOMPLETE` with the reason as
    /// evidence, a signed verdict, a webhook delivery and a stored `session_ended` event.
    async fn end_abandoned(
        &self,
        open: Vec<crate::store::OpenSession>,
        reason: &'static str,
    ) -> Result<u64, StoreError> {
        let mut ended = 0;
        for s in open {
            let write = VerdictWrite::End {
                at: unix_ms_now(),
                reason,
                network_summary: None,
                document_fields: None,
                timeline_event: true,
            };
            if self.record_without_call(&s, reason, &write).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Records the verdict of a session whose call is gone (`decide` for an early end with
    /// `reason`): signed, with its webhook, written as `write` says. A store error stops the
    /// caller; anything else is logged.
    async fn record_without_call(
        &self,
        s: &crate::store::OpenSession,
        reason: &'static str,
        write: &VerdictWrite<'_>,
    ) -> Result<bool, StoreError> {
        let verdict = crate::verdict::decide(&crate::verdict::VerdictInputs {
            liveness: None,
            face_match: None,
            network_poor_ms: 0,
            persistent_faults: Vec::new(),
            step_faults: Vec::new(),
            document: None,
            provenance: None,
            ended_early: Some(reason),
        });
        let Ok(value) = serde_json::to_value(&verdict) else {
            return Ok(false);
        };
        let notice = VerdictNotice {
            session_id: &s.id,
            api_key_id: &s.api_key_id,
            subject: s.subject.as_deref(),
            reference: s.reference.as_deref(),
            verdict: &value,
            decided_by: "vericall",
        };
        match self.notifier.record(&notice, write).await {
            Ok(written) => Ok(written),
            Err(crate::notify::NotifyError::Store(e)) => Err(e),
            Err(e) => {
                tracing::error!(session = %s.id, error = %e, "cannot record the verdict of a session without its call");
                Ok(false)
            }
        }
    }

    /// Sessions that an earlier version ended without a verdict get one now: `SESSION_INCOMPLETE`
    /// with their end reason, signed; those ended within the webhook retry window are also sent
    /// by webhook. Called once at start-up (any instance may; each session is decided once).
    pub(crate) async fn backfill_verdicts(&self) -> Result<u64, StoreError> {
        let notify_since = unix_ms_now() - self.cfg.webhook_give_up_secs as i64 * 1000;
        let mut decided = 0;
        for u in self.store.ended_without_verdict().await? {
            let reason = KNOWN_END_REASONS
                .iter()
                .copied()
                .find(|k| u.end_reason.as_deref() == Some(*k))
                .unwrap_or("other");
            let write = VerdictWrite::Backfill {
                notify: u.ended_at >= notify_since,
            };
            if self.record_without_call(&u.session, reason, &write).await? {
                decided += 1;
            }
        }
        if decided > 0 {
            tracing::warn!(count = decided, "gave ended sessions without a verdict one");
        }
        Ok(decided)
    }

    /// Sessions this node left open in a previous process (crash, kill -9) cannot resume: their
    /// media state was in memory. Called once at start-up.
    pub(crate) async fn end_orphaned_sessions(&self) -> Result<u64, StoreError> {
        let open = self.store.orphaned_sessions().await?;
        self.store
            .close_open_practice_runs(unix_ms_now(), "server_restart", None)
            .await?;
        let n = self.end_abandoned(open, "server_restart").await?;
        if n > 0 {
            tracing::warn!(count = n, "ended sessions left open by a previous run");
        }
        Ok(n)
    }

    /// Ends sessions whose node vanished (several instances on one database; a pod that died and
    /// was replaced under another name never restarts to end its own). Nothing running can be
    /// older than its token lifetime plus the longest call, so anything older is an orphan.
    pub async fn end_stale_sessions(&self) {
        let horizon = self.cfg.session_ttl_secs + self.cfg.max_call_secs + STALE_MARGIN_SECS;
        let cutoff = unix_ms_now() - horizon as i64 * 1000;
        if let Err(e) = self
            .store
            .close_open_practice_runs(unix_ms_now(), "node_lost", Some(cutoff))
            .await
        {
            tracing::warn!(error = %e, "cannot end stale practice runs");
        }
        let result = match self.store.stale_sessions(cutoff).await {
            Ok(open) => self.end_abandoned(open, "node_lost").await,
            Err(e) => Err(e),
        };
        match result {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "ended sessions whose server instance is gone"),
            Err(e) => tracing::warn!(error = %e, "cannot end stale sessions"),
        }
    }

    /// Ends the open sessions of nodes whose heartbeat stopped `node_lost_secs` ago (killed,
    /// partitioned from the database): each gets `SESSION_INCOMPLETE` with `node_lost`, a signed
    /// verdict and its webhook, from whichever node gets there first (each is decided once).
    pub(crate) async fn end_lost_nodes(&self) {
        // Only a node whose own heartbeats have reached the database for a whole
        // `node_lost_secs` judges others: after the database stalled, every node's heartbeat looks
        // old until each has written again.
        let judge_for = Duration::from_secs(self.cfg.node_lost_secs);
        let healthy =
            lock(&self.heartbeats_ok_since).is_some_and(|since| since.elapsed() >= judge_for);
        if !healthy {
            return;
        }
        let now = unix_ms_now();
        let cutoff = now - self.cfg.node_lost_secs as i64 * 1000;
        let result = match self.store.lost_nodes_sessions(cutoff).await {
            Ok(open) if open.is_empty() => Ok(0),
            Ok(open) => self.end_abandoned(open, "node_lost").await,
            Err(e) => Err(e),
        };
        match result {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "ended the sessions of a node that stopped"),
            Err(e) => tracing::warn!(error = %e, "cannot end a lost node's sessions"),
        }
        if let Err(e) = self.store.forget_lost_nodes(cutoff, now).await {
            tracing::warn!(error = %e, "cannot forget lost nodes");
        }
    }

    /// Drops a session from memory at once (its data is being deleted).
    pub(crate) fn forget(&self, id: &str) {
        if let Some(s) = lock(&self.sessions).remove(id) {
            lock(&self.tokens).remove(&s.client_token);
        }
    }

    /// Ends sessions whose token expired unused, and forgets ended ones after a while.
    pub async fn sweep(&self) {
        let now_ms = unix_ms_now();
        let all: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        let mut forget = Vec::new();
        for s in all {
            let expired = matches!(&*s.slot(), MediaSlot::Waiting) && now_ms > s.expires_at_ms;
            if expired {
                *s.slot() = MediaSlot::Ended {
                    reason: "expired".into(),
                    summary: None,
                    at: std::time::Instant::now(),
                };
                self.record_end(&s, "expired", None).await;
            }
            if let MediaSlot::Ended { at, .. } = &*s.slot() {
                if at.elapsed() >= KEEP_ENDED {
                    forget.push(s.clone());
                }
            }
        }
        if !forget.is_empty() {
            let mut sessions = lock(&self.sessions);
            let mut tokens = lock(&self.tokens);
            for s in forget {
                sessions.remove(&s.id);
                tokens.remove(&s.client_token);
            }
        }
    }

    /// Ends every running call (shutdown) and waits up to `grace` for them to finish.
    pub(crate) async fn end_all(&self, reason: EndReason, grace: Duration) {
        let all: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in &all {
            let _ = self.end(s, reason).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.active_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Mirrors one call's status into the store and the session slot, until it ends.
async fn supervise(
    registry: Arc<SessionRegistry>,
    session: Arc<Session>,
    mut status: watch::Receiver<PeerStatus>,
    summary: watch::Receiver<MediaSummary>,
) {
    let mut recorded_connect = false;
    let reason = loop {
        let current = status.borrow_and_update().clone();
        match current {
            PeerStatus::Connected { .. } if !recorded_connect => {
                recorded_connect = true;
                if let Err(e) = registry
                    .store
                    .set_session_connected(&session.id, unix_ms_now())
                    .await
                {
                    tracing::error!(session = %session.id, error = %e, "cannot record connect");
                }
            }
            PeerStatus::Reconnecting => {
                let _ = registry
                    .store
                    .set_session_state(&session.id, "reconnecting")
                    .await;
            }
            PeerStatus::Ended(reason) => break reason,
            _ => {}
        }
        if status.changed().await.is_err() {
            break EndReason::InternalError;
        }
    };
    let final_summary = summary.borrow().clone();
    registry.active.fetch_sub(1, Ordering::AcqRel);
    // The store first: a reader that sees the call ended must find everything it wrote (the
    // verdict and the ID document's text), not an in-memory end whose row is still being written.
    registry
        .record_end(&session, reason.as_str(), Some(&final_summary))
        .await;
    *session.slot() = MediaSlot::Ended {
        reason: reason.as_str().to_string(),
        summary: Some(Box::new(final_summary)),
        at: std::time::Instant::now(),
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
