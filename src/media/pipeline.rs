//! Per-call decode and analysis, off the async reactor.
//!
//! The peer task hands encoded frames to a dedicated thread through a bounded queue (a full queue
//! drops the frame and asks for a keyframe: memory stays bounded whatever the sender does). The
//! thread decodes every frame (decoding must not skip, or the picture breaks), but analyses only
//! the newest one, at most `analysis_fps` times a second: when it falls behind, frames still queued
//! are decoded and skipped, never analysed late. Findings go out as session events.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::admission::NodeLoad;
use super::decode::{level_dbfs, AudioDecoder, DecodedFrame, VideoCodec, VideoDecoder};
use crate::analysis::device::{CameraHealth, FrameFacts, HealthChange, MicHealth};
use crate::analysis::effort::{AnalysisNeeds, AnalysisSchedule};
use crate::analysis::face::embed::{embed_face, Embedding, MATCH_THRESHOLD};
use crate::analysis::face::guidance::FaceGuidance;
use crate::analysis::face::{FaceModels, FaceObservation, FaceTracker};
use crate::analysis::quality::{
    judged_metrics, luma_signature, GuidanceChange, GuidanceTracker, QualityAnalyzer,
    QualityMetrics, Region, Thresholds, I420,
};
use crate::document::card::{CaptureThresholds, CardScratch};
use crate::document::fields::DocumentRead;
use crate::document::room::RoomMemory;
use crate::document::step::{Capture, DocumentStep, StepEvent};
use crate::document::{
    compare_portrait, examine, today_utc, DocumentOutcome, DocumentPolicy, DocumentReader, Examine,
    Retain,
};
use crate::events::{unix_ms_now, EventBus};
use crate::liveness::judge::JudgeEvent;
use crate::liveness::light::LightEvent;
use crate::liveness::plan::ChallengePlan;
use crate::liveness::{LightMode, LivenessSession};
use crate::reasons::ReasonCode;
use crate::verdict::{decide, Verdict, VerdictInputs};

/// Encoded frames waiting for the decoder (about 2 s of video at 30 fps plus audio).
pub const QUEUE_CAPACITY: usize = 160;
const TICK: Duration = Duration::from_millis(100);
/// No video for this long (after the first frame) pauses the running challenge step: the network
/// dropped, and the page is reconnecting. The peer's reconnect grace decides when to give up.
const MEDIA_GAP_PAUSE: Duration = Duration::from_millis(1000);
const AUDIO_LEVEL_INTERVAL: Duration = Duration::from_millis(200);
const QUALITY_INTERVAL: Duration = Duration::from_secs(1);
/// A plan blocked this long without interruption (camera fault, darkness, no face, poor network)
/// ends with a verdict that names the blocking cause, rather than waiting for the call to time out.
pub const MAX_BLOCKED: Duration = Duration::from_secs(12);
/// Live frames embedded for the reference match.
const MAX_LIVE_EMBEDDINGS: usize = 5;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Frames analysed per second at most (default 15).
    pub analysis_fps: f64,
    /// The session's policy wants a microphone.
    pub wants_audio: bool,
    /// Face tracking runs when the models are loaded.
    pub face_models: Option<Arc<FaceModels>>,
    /// The session's liveness plan (needs face tracking).
    pub liveness: Option<ChallengePlan>,
    /// Whether the challenges start with the screen-light step.
    pub light: LightMode,
    /// The reference photo's embedding, compared with the best live frames at the verdict.
    pub reference: crate::analysis::face::embed::SharedReference,
    /// Where this session's evidence frames go (none: not kept).
    pub evidence_dir: Option<std::path::PathBuf>,
    /// The ID-document step after the challenges (policy, and the models that read the card).
    pub document: Option<(DocumentPolicy, Arc<DocumentReader>)>,
    /// The node's analysis lag and queue drops, for admission control (`media::admission`).
    pub load: Arc<NodeLoad>,
}

/// The document step's state inside the pipeline: the sans-IO step plus what it found.
struct DocumentPhase {
    policy: DocumentPolicy,
    reader: Arc<DocumentReader>,
    step: Option<DocumentStep>,
    step_id: u32,
    scratch: CardScratch,
    thresholds: CaptureThresholds,
    /// The room's card-like objects, learnt before the step.
    room: RoomMemory,
    /// The last capture read, its read and the card portrait's embedding.
    read: Option<(Capture, DocumentRead, Option<Embedding>)>,
    outcome: Option<DocumentOutcome>,
}

#[derive(Debug)]
pub enum PipelineInput {
    Video {
        data: Arc<[u8]>,
        codec: VideoCodec,
        keyframe: bool,
        /// Something was lost before this frame: decode only from the next keyframe.
        discontinuity: bool,
        arrival: Instant,
    },
    Audio {
        data: Arc<[u8]>,
        arrival: Instant,
    },
    Connected {
        at: Instant,
        has_audio: bool,
    },
    /// The network's state, once a second from the peer's monitor.
    Network {
        poor: bool,
        /// The sender stalled in that second (no frames captured; not the network's doing).
        sender_stalled: bool,
    },
    /// The call is ending: decide a verdict now if none was reached.
    Ending {
        reason: &'static str,
    },
}

/// What the pipeline asks of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineFeedback {
    NeedKeyframe,
    /// A verdict was reached (see `Pipeline::verdict`).
    VerdictReady,
}

/// Counters shared with the peer for the call summary.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub frames_decoded: AtomicU64,
    pub frames_analyzed: AtomicU64,
    pub frames_skipped: AtomicU64,
    pub decode_errors: AtomicU64,
    pub queue_drops: AtomicU64,
    pub audio_decoded: AtomicU64,
    /// Analysed frames on which the face tracker produced an observation (with or without a face).
    pub face_observations: AtomicU64,
    pub faces_found: AtomicU64,
    pub face_errors: AtomicU64,
    pub width: AtomicU64,
    pub height: AtomicU64,
}

/// A snapshot of [`PipelineStats`] for the call summary.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct DecodeSummary {
    pub frames_decoded: u64,
    pub frames_analyzed: u64,
    pub frames_skipped: u64,
    pub decode_errors: u64,
    pub queue_drops: u64,
    pub audio_decoded: u64,
    pub face_observations: u64,
    pub faces_found: u64,
    pub face_errors: u64,
    pub width: u64,
    pub height: u64,
}

impl PipelineStats {
    pub fn snapshot(&self) -> DecodeSummary {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DecodeSummary {
            frames_decoded: get(&self.frames_decoded),
            frames_analyzed: get(&self.frames_analyzed),
            frames_skipped: get(&self.frames_skipped),
            decode_errors: get(&self.decode_errors),
            queue_drops: get(&self.queue_drops),
            audio_decoded: get(&self.audio_decoded),
            face_observations: get(&self.face_observations),
            faces_found: get(&self.faces_found),
            face_errors: get(&self.face_errors),
            width: get(&self.width),
            height: get(&self.height),
        }
    }
}

pub struct Pipeline {
    tx: Option<SyncSender<PipelineInput>>,
    pending_video: Arc<AtomicUsize>,
    pub stats: Arc<PipelineStats>,
    load: Arc<NodeLoad>,
    /// The session's verdict once reached.
    pub verdict: Arc<std::sync::Mutex<Option<Verdict>>>,
    thread: Option<JoinHandle<()>>,
}

impl Pipeline {
    pub fn spawn(
        cfg: PipelineConfig,
        bus: EventBus,
        feedback: tokio::sync::mpsc::Sender<PipelineFeedback>,
    ) -> std::io::Result<Pipeline> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let pending_video = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(PipelineStats::default());
        let verdict = Arc::new(std::sync::Mutex::new(None));
        let load = cfg.load.clone();
        let mut worker = Worker::new(cfg, bus, feedback, pending_video.clone(), stats.clone());
        worker.verdict = verdict.clone();
        let thread = std::thread::Builder::new()
            .name("vericall-media".into())
            .spawn(move || worker.run(rx))?;
        Ok(Pipeline {
            tx: Some(tx),
            pending_video,
            stats,
            load,
            verdict,
            thread: Some(thread),
        })
    }

    /// Queues input without waiting; returns false (and counts a drop) when the queue is full.
    pub fn submit(&self, input: PipelineInput) -> bool {
        let Some(tx) = &self.tx else { return false };
        let is_video = matches!(input, PipelineInput::Video { .. });
        if is_video {
            self.pending_video.fetch_add(1, Ordering::AcqRel);
        }
        match tx.try_send(input) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if is_video {
                    self.pending_video.fetch_sub(1, Ordering::AcqRel);
                }
                self.stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                self.load.on_queue_drop(Instant::now());
                false
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the queue ends the thread after it drains what is queued.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    cfg: PipelineConfig,
    bus: EventBus,
    feedback: tokio::sync::mpsc::Sender<PipelineFeedback>,
    pending_video: Arc<AtomicUsize>,
    stats: Arc<PipelineStats>,
    decoder: Option<VideoDecoder>,
    audio: Option<AudioDecoder>,
    frame: DecodedFrame,
    pcm: Vec<f32>,
    wait_keyframe: bool,
    quality: QualityAnalyzer,
    guidance: GuidanceTracker,
    camera: CameraHealth,
    mic: MicHealth,
    /// Voice activity for the spoken step (only when the plan has one).
    voice: Option<crate::analysis::voice::VoiceDetector>,
    face: Option<FaceTracker>,
    face_guidance: FaceGuidance,
    liveness: Option<LivenessSession>,
    document: Option<DocumentPhase>,
    network_poor: bool,
    /// Poor-network time while liveness steps were running.
    network_poor_ms: u64,
    last_network_tick: Option<Instant>,
    /// Since when the plan has been blocked without interruption.
    blocked_since: Option<Instant>,
    /// Capture and framing faults active while the current step ran.
    step_faults: Vec<ReasonCode>,
    /// Capture and framing faults active during steps that failed, for the verdict.
    failed_step_faults: Vec<ReasonCode>,
    /// When the last video input arrived (media gaps pause the challenge).
    last_video_at: Option<Instant>,
    /// Embeddings of good frontal frames, for the reference-photo match.
    live_embeddings: Vec<Embedding>,
    next_embedding: Option<Instant>,
    reference: crate::analysis::face::embed::SharedReference,
    /// Evidence frames written so far.
    evidence: Vec<String>,
    verdict: Arc<std::sync::Mutex<Option<Verdict>>>,
    /// Which frames are analysed, at the rate the call's phase needs (`analysis::effort`).
    schedule: AnalysisSchedule,
    last_metrics: Option<QualityMetrics>,
    level_sum: f64,
    level_samples: usize,
    next_level: Instant,
    next_quality: Instant,
    next_tick: Instant,
    analyzed_in_window: u64,
}

impl Worker {
    fn new(
        cfg: PipelineConfig,
        bus: EventBus,
        feedback: tokio::sync::mpsc::Sender<PipelineFeedback>,
        pending_video: Arc<AtomicUsize>,
        stats: Arc<PipelineStats>,
    ) -> Self {
        let now = Instant::now();
        let hint =
            bus.session_id().len() + bus.session_id().bytes().map(usize::from).sum::<usize>();
        let schedule = AnalysisSchedule::new(cfg.analysis_fps);
        Worker {
            face: cfg.face_models.clone().map(|m| FaceTracker::new(m, hint)),
            face_guidance: FaceGuidance::default(),
            liveness: cfg
                .liveness
                .clone()
                .filter(|_| cfg.face_models.is_some())
                .map(|plan| LivenessSession::new(plan).with_light(cfg.light, rand::random())),
            document: cfg.document.clone().map(|(policy, reader)| DocumentPhase {
                policy,
                reader,
                step: None,
                step_id: rand::random::<u32>(),
                scratch: CardScratch::default(),
                thresholds: CaptureThresholds::default(),
                room: RoomMemory::default(),
                read: None,
                outcome: None,
            }),
            network_poor: false,
            network_poor_ms: 0,
            last_network_tick: None,
            blocked_since: None,
            step_faults: Vec::new(),
            failed_step_faults: Vec::new(),
            last_video_at: None,
            live_embeddings: Vec::new(),
            next_embedding: None,
            reference: cfg.reference.clone(),
            evidence: Vec::new(),
            verdict: Arc::new(std::sync::Mutex::new(None)),
            mic: MicHealth::new(cfg.wants_audio),
            voice: None,
            cfg,
            bus,
            feedback,
            pending_video,
            stats,
            decoder: None,
            audio: None,
            frame: DecodedFrame::default(),
            pcm: Vec::with_capacity(960 * 6),
            wait_keyframe: true,
            quality: QualityAnalyzer::default(),
            guidance: GuidanceTracker::new(Thresholds::default()),
            camera: CameraHealth::default(),
            schedule,
            last_metrics: None,
            level_sum: 0.0,
            level_samples: 0,
            next_level: now + AUDIO_LEVEL_INTERVAL,
            next_quality: now + QUALITY_INTERVAL,
            next_tick: now + TICK,
            analyzed_in_window: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<PipelineInput>) {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.next_tick = now + TICK;
                let changes = self.camera.tick(now);
                self.publish_health(now, changes, "camera");
                let changes = self.mic.tick(now);
                self.publish_health(now, changes, "microphone");
                self.tick_liveness(now);
            }
            if now >= self.next_level {
                self.next_level = now + AUDIO_LEVEL_INTERVAL;
                if self.level_samples > 0 {
                    let rms = (self.level_sum / self.level_samples as f64).sqrt();
                    let dbfs = if rms > 0.0 {
                        (20.0 * rms.log10()).max(-120.0)
                    } else {
                        -120.0
                    };
                    self.bus.publish(
                        "audio_level",
                        &json!({ "dbfs": (dbfs * 10.0).round() / 10.0 }),
                    );
                    self.level_sum = 0.0;
                    self.level_samples = 0;
                }
            }
            if now >= self.next_quality {
                self.next_quality = now + QUALITY_INTERVAL;
                self.publish_quality();
            }
        }
    }

    fn handle(&mut self, input: PipelineInput) {
        match input {
            PipelineInput::Video {
                data,
                codec,
                keyframe,
                discontinuity,
                arrival,
            } => {
                self.last_video_at = Some(Instant::now());
                self.pending_video.fetch_sub(1, Ordering::AcqRel);
                self.on_video(&data, codec, keyframe, discontinuity, arrival);
            }
            PipelineInput::Audio { data, arrival } => self.on_audio(&data, arrival),
            PipelineInput::Connected { at, has_audio } => {
                self.camera.on_connected(at);
                let changes = self.mic.on_connected(at, has_audio);
                self.publish_health(at, changes, "microphone");
            }
            PipelineInput::Network {
                poor,
                sender_stalled,
            } => {
                let now = Instant::now();
                let changes = self.camera.on_sender_window(now, sender_stalled);
                self.publish_health(now, changes, "camera");
                let running = self.liveness.as_ref().is_some_and(|l| !l.is_finished());
                if let (true, true, Some(last)) =
                    (self.network_poor, running, self.last_network_tick)
                {
                    self.network_poor_ms += now.duration_since(last).as_millis() as u64;
                }
                self.network_poor = poor;
                self.last_network_tick = Some(now);
            }
            PipelineInput::Ending { reason } => self.conclude(Some(reason)),
        }
    }

    fn face_match(&self) -> Option<crate::verdict::MatchResult> {
        let reference = self
            .reference
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let best = self
            .live_embeddings
            .iter()
            .map(|e| e.cosine(&reference))
            .fold(None, |acc: Option<f32>, s| {
                Some(acc.map_or(s, |a| a.max(s)))
            })?;
        Some(crate::verdict::MatchResult {
            similarity: best,
            threshold: MATCH_THRESHOLD,
            frames: self.live_embeddings.len(),
        })
    }

    /// Saves the latest decoded frame as a JPEG evidence frame.
    fn save_evidence(&mut self, name: &str) {
        let Some(dir) = &self.cfg.evidence_dir else {
            return;
        };
        let f = &self.frame;
        if f.width == 0 || self.evidence.iter().any(|e| e.starts_with(name)) {
            return;
        }
        let image = f.view();
        match crate::store::evidence::write_jpeg(dir, name, &image) {
            Ok(file) => self.evidence.push(file),
            Err(e) => {
                tracing::warn!(session = %self.bus.session_id(), error = %e, "cannot write an evidence frame")
            }
        }
    }

    /// What keeps a challenge step from being judged right now, most fundamental first.
    /// Video stopped arriving mid-call (a network drop): nothing the person can fix here.
    fn media_gap(&self, now: Instant) -> bool {
        self.last_video_at
            .is_some_and(|t| now.duration_since(t) >= MEDIA_GAP_PAUSE)
    }

    fn blocking(&self) -> Option<ReasonCode> {
        if self.media_gap(Instant::now()) {
            // A sender that has been stalling with a clean network holds the video itself.
            let sender = self.camera.stalled() && !self.network_poor;
            return Some(if sender {
                ReasonCode::CameraStalled
            } else {
                ReasonCode::NetworkFrozen
            });
        }
        let camera = self.camera.active();
        let faces = self.face_guidance.active();
        let capture = self.guidance.active();
        camera
            .into_iter()
            .find(|c| {
                matches!(
                    c,
                    ReasonCode::CameraBlack | ReasonCode::CameraFrozen | ReasonCode::CameraNoVideo
                )
            })
            .or(self.network_poor.then_some(ReasonCode::NetworkUnstable))
            .or(faces.into_iter().find(|c| {
                matches!(
                    c,
                    ReasonCode::FaceNotFound | ReasonCode::FaceOccluded | ReasonCode::MultipleFaces
                )
            }))
            .or(self.face_guidance.blocking())
            .or(capture
                .iter()
                .find(|i| i.code() == "LIGHTING_TOO_DARK")
                .and(Some(ReasonCode::LightingTooDark)))
    }

    /// Capture and framing faults the person can fix, active now: what to name when a step
    /// fails while they last (the verdict puts them before `CHALLENGE_*`).
    fn capture_faults(&self) -> Vec<ReasonCode> {
        let mut faults: Vec<ReasonCode> = self
            .face_guidance
            .active()
            .into_iter()
            .filter(|c| *c != ReasonCode::FaceNotFound)
            .collect();
        faults.extend(
            self.guidance
                .active()
                .iter()
                .filter_map(|i| ReasonCode::from_code(i.code())),
        );
        faults.extend(
            self.camera
                .active()
                .into_iter()
                .filter(|c| *c == ReasonCode::CameraStalled),
        );
        faults
    }

    fn tick_liveness(&mut self, now: Instant) {
        let gap = self.media_gap(now);
        if let Some(step) = self
            .document
            .as_mut()
            .and_then(|d| d.step.as_mut())
            .filter(|s| !s.is_done())
        {
            // No video (the network dropped): the step's clock stops, as a challenge's does.
            if gap {
                step.pause(TICK);
            }
            let events = step.on_tick(now);
            self.on_document_events(events, now);
        }
        let blocking = self.blocking();
        let Some(l) = self.liveness.as_mut() else {
            return;
        };
        if l.is_finished() {
            return;
        }
        let events = l.on_tick(now, blocking);
        let light = l.poll_light();
        self.publish_light(light);
        self.publish_judge(events);
        if self.liveness.as_ref().is_some_and(|l| l.running_step()) {
            for code in self.capture_faults() {
                if !self.step_faults.contains(&code) {
                    self.step_faults.push(code);
                }
            }
        }
        // A media gap pauses the step but is not the person's to fix: the call's reconnect
        // grace, not MAX_BLOCKED, bounds it.
        self.blocked_since = match blocking {
            Some(_) if self.media_gap(now) => self.blocked_since,
            Some(_) => Some(self.blocked_since.unwrap_or(now)),
            None => None,
        };
        if self
            .blocked_since
            .is_some_and(|t| now.duration_since(t) >= MAX_BLOCKED)
        {
            self.conclude(Some("blocked"));
        }
    }

    fn publish_judge(&mut self, events: Vec<JudgeEvent>) {
        let mut finished = false;
        for e in events {
            match e {
                JudgeEvent::Started { step, remaining } => {
                    self.step_faults.clear();
                    let (index, steps) = self
                        .liveness
                        .as_ref()
                        .and_then(|l| l.position(step.id))
                        .unwrap_or((0, 1));
                    let steps = steps + self.document.is_some() as usize;
                    let mut event = json!({ "id": step.id, "action": step.action, "deadline_ms": remaining.as_millis() as u64, "index": index, "steps": steps });
                    // The spoken step's digits are revealed only now.
                    if let Some(d) = self.liveness.as_ref().and_then(|l| l.digits(step.id)) {
                        event["digits"] = json!(d);
                    }
                    self.bus.publish("challenge", &event);
                }
                JudgeEvent::Paused { step_id, because } => {
                    self.bus.publish(
                        "challenge_paused",
                        &json!({ "id": step_id, "because": because, "hint_key": because.hint_key() }),
                    );
                }
                JudgeEvent::Resumed { step_id, remaining } => {
                    self.bus.publish(
                        "challenge_resumed",
                        &json!({ "id": step_id, "deadline_ms": remaining.as_millis() as u64 }),
                    );
                }
                JudgeEvent::Passed { step_id, evidence } => {
                    self.save_evidence(&format!("challenge-{step_id}"));
                    self.bus.publish(
                        "challenge_passed",
                        &json!({ "id": step_id, "evidence": evidence }),
                    );
                }
                JudgeEvent::Failed {
                    step_id,
                    reason,
                    evidence,
                } => {
                    for code in std::mem::take(&mut self.step_faults) {
                        if !self.failed_step_faults.contains(&code) {
                            self.failed_step_faults.push(code);
                        }
                    }
                    self.save_evidence(&format!("challenge-{step_id}"));
                    self.bus.publish(
                        "challenge_failed",
                        &json!({ "id": step_id, "reason": reason, "hint_key": reason.hint_key(), "evidence": evidence }),
                    );
                }
                JudgeEvent::Finished { .. } => finished = true,
            }
        }
        if finished && !self.start_document(Instant::now()) {
            self.conclude(None);
        }
    }

    /// Announces the screen-light step's attempts and results like the challenges' (the page
    /// paints the sequence in the `challenge` event's `light` as soon as it arrives).
    fn publish_light(&mut self, events: Vec<LightEvent>) {
        for e in events {
            match e {
                LightEvent::Started {
                    id,
                    sequence,
                    attempt,
                } => {
                    self.step_faults.clear();
                    let steps = self.liveness.as_ref().map_or(1, |l| l.steps())
                        + self.document.is_some() as usize;
                    let deadline = sequence.total() + crate::liveness::light::MAX_LATENCY;
                    self.bus.publish(
                        "challenge",
                        &json!({ "id": id, "action": "screen_light", "light": sequence, "attempt": attempt, "deadline_ms": deadline.as_millis() as u64, "index": 0, "steps": steps }),
                    );
                }
                LightEvent::Interrupted { id, because } | LightEvent::Retry { id, because } => {
                    self.bus.publish(
                        "challenge_paused",
                        &json!({ "id": id, "because": because, "hint_key": because.hint_key() }),
                    );
                }
                // No light scores in the events: they reach the page, and an attacker tuning an
                // injected stream must not learn how close it came. The verdict's scores carry them.
                LightEvent::Passed { id, .. } => {
                    self.save_evidence("screen-light");
                    self.bus.publish("challenge_passed", &json!({ "id": id }));
                }
                LightEvent::Ended { id, result, .. } => {
                    // The person is told what to fix; "spoof" is for the verdict, not the page.
                    let reason = result
                        .reason()
                        .filter(|r| *r != ReasonCode::SpoofSuspected)
                        .unwrap_or(ReasonCode::ScreenLightNotSeen);
                    self.save_evidence("screen-light");
                    self.bus.publish(
                        "challenge_failed",
                        &json!({ "id": id, "reason": reason, "hint_key": reason.hint_key() }),
                    );
                }
            }
        }
    }

    /// Starts the ID-document step after the challenges, announced like them. False when the
    /// session has none (or it already ran).
    fn start_document(&mut self, now: Instant) -> bool {
        let steps = self.liveness.as_ref().map_or(0, |l| l.steps());
        let Some(doc) = self.document.as_mut().filter(|d| d.step.is_none()) else {
            return false;
        };
        let step = DocumentStep::new(now);
        self.bus.publish(
            "challenge",
            &json!({
                "id": doc.step_id,
                "action": "show_document",
                "document": doc.policy.kind,
                "deadline_ms": step.remaining(now).as_millis() as u64,
                "index": steps,
                "steps": steps + 1,
            }),
        );
        doc.step = Some(step);
        true
    }

    /// Looks for the card in the frame just decoded, while the document step runs; before it,
    /// learns the room's own card-like objects so that the step ignores them.
    fn analyze_document(&mut self, captured: Instant) {
        let Some(doc) = self.document.as_mut() else {
            return;
        };
        let Some(step) = doc.step.as_mut() else {
            if doc
                .room
                .observe(&self.frame.view(), captured, &mut doc.scratch)
                > 0
            {
                tracing::debug!(session = %self.bus.session_id(), objects = doc.room.objects().len(), "room object learnt");
            }
            return;
        };
        if step.is_done() {
            return;
        }
        let capture = examine(
            &self.frame.view(),
            captured,
            &mut doc.scratch,
            &Examine {
                thresholds: &doc.thresholds,
                room: doc.room.objects(),
                kind: doc.policy.kind,
                faces: Some(&doc.reader.faces),
            },
        );
        if let Some(c) = &capture {
            tracing::debug!(session = %self.bus.session_id(), corners = ?c.quad.corners, cut_off = c.quad.cut_off, room = doc.room.objects().len(), "document candidate");
        }
        let events = step.on_frame(captured, capture);
        self.on_document_events(events, captured);
    }

    fn on_document_events(&mut self, events: Vec<StepEvent>, at: Instant) {
        let mut pending = std::collections::VecDeque::from(events);
        while let Some(event) = pending.pop_front() {
            match event {
                StepEvent::Guidance { code, active } => {
                    self.publish_guidance(code, active, "document", at)
                }
                StepEvent::GaveUp { code } => self.finish_document(Some(code)),
                StepEvent::ReadyToRead => {
                    let Some(doc) = self.document.as_mut() else {
                        return;
                    };
                    let Some(step) = doc.step.as_mut() else {
                        return;
                    };
                    let Some(best) = step.take_best() else {
                        pending.extend(step.on_read(at, false));
                        continue;
                    };
                    let kind = doc.policy.kind;
                    let started = Instant::now();
                    let read = match doc.reader.read(&best, kind, today_utc()) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(session = %self.bus.session_id(), error = %e, "document OCR failed");
                            pending.extend(step.on_read(at, false));
                            continue;
                        }
                    };
                    let previous = doc.read.as_ref().map(|(_, r, _)| r);
                    let complete = crate::document::fields::settles(previous, &read, kind);
                    let portrait = doc.reader.portrait(&best, kind);
                    // Timing only: the text itself is never logged.
                    tracing::debug!(session = %self.bus.session_id(), complete, ms = started.elapsed().as_millis() as u64, "document read");
                    doc.read = Some((best, read, portrait));
                    pending.extend(step.on_read(at, complete));
                    if complete {
                        self.finish_document(None);
                    }
                }
            }
        }
    }

    /// Ends the document step (a failure code when no readable capture came), builds its
    /// outcome, and moves on to the verdict.
    fn finish_document(&mut self, failure: Option<ReasonCode>) {
        let Some(doc) = self.document.as_mut() else {
            return;
        };
        if doc.outcome.is_some() {
            return;
        }
        // A step that gave up judges no text: its last read was not good enough to trust.
        if failure.is_some() {
            doc.read = None;
        }
        let captures = doc.step.as_ref().map_or(0, |s| s.captures);
        let (read, capture, portrait) = match &doc.read {
            Some((c, r, p)) => (
                Some(r.clone()),
                Some(c),
                Some(compare_portrait(p.as_ref(), &self.live_embeddings)),
            ),
            None => (None, None, None),
        };
        let expected = match (&doc.policy.expected, &read) {
            (Some(e), Some(r)) => e.compare(&r.fields),
            _ => Vec::new(),
        };
        doc.outcome = Some(DocumentOutcome {
            mode: doc.policy.mode,
            kind: doc.policy.kind,
            // Set whenever the step gave up, even after an incomplete read.
            failure,
            read,
            expected,
            portrait,
            capture: capture.map(|c| c.judgement.clone()),
            captures,
        });
        let card_image = capture
            .filter(|_| doc.policy.retain == Retain::TextAndImage)
            .map(|c| c.image.clone());
        let id = doc.step_id;
        match failure {
            Some(code) => {
                self.bus.publish(
                    "challenge_failed",
                    &json!({ "id": id, "reason": code, "hint_key": code.hint_key() }),
                );
            }
            None => {
                self.bus.publish("challenge_passed", &json!({ "id": id }));
            }
        }
        if let (Some(img), Some(dir)) = (card_image, &self.cfg.evidence_dir) {
            let planes =
                DecodedFrame::from_rgb(img.width() as usize, img.height() as usize, img.as_raw());
            match crate::store::evidence::write_jpeg(dir, "document", &planes.view()) {
                Ok(file) => self.evidence.push(file),
                Err(e) => tracing::warn!(error = %e, "cannot write the document frame"),
            }
        }
        self.conclude(None);
    }

    /// Decides the verdict once (when the plan finishes, or when the call ends first).
    fn conclude(&mut self, ended_early: Option<&'static str>) {
        let mut slot = self.verdict.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() || (self.liveness.is_none() && ended_early.is_none()) {
            return;
        }
        let mut faults = self.camera.active();
        faults.extend(self.mic.active());
        faults.extend(self.face_guidance.active());
        faults.extend(
            self.guidance
                .active()
                .iter()
                .filter_map(|i| ReasonCode::from_code(i.code())),
        );
        let document = self.document.as_ref().and_then(|d| {
            d.outcome.clone().or_else(|| {
                // The call ended during the step: what kept the card from being read.
                d.step.as_ref().map(|s| DocumentOutcome {
                    mode: d.policy.mode,
                    kind: d.policy.kind,
                    failure: Some(
                        s.active()
                            .into_iter()
                            .next()
                            .unwrap_or(ReasonCode::DocumentNotShown),
                    ),
                    read: None,
                    expected: Vec::new(),
                    portrait: None,
                    capture: None,
                    captures: s.captures,
                })
            })
        });
        let document_fields = self
            .document
            .as_ref()
            .filter(|d| d.policy.retain != Retain::None)
            .and_then(|d| d.read.as_ref())
            .and_then(|(_, r, _)| serde_json::to_value(&r.fields).ok());
        let verdict = decide(&VerdictInputs {
            document,
            liveness: self.liveness.as_ref().map(|l| l.outcome()),
            face_match: self.face_match(),
            network_poor_ms: self.network_poor_ms,
            persistent_faults: faults,
            step_faults: self.failed_step_faults.clone(),
            // The checks are done when the challenges and the document step (if any) are.
            ended_early: if self.liveness.as_ref().is_some_and(|l| l.is_finished())
                && self.document.as_ref().is_none_or(|d| d.outcome.is_some())
            {
                None
            } else {
                ended_early
            },
        });
        let mut verdict = verdict;
        verdict.frames = self.evidence.clone();
        verdict.document_fields = document_fields;
        self.bus.publish("verdict", &verdict.for_client());
        tracing::info!(session = %self.bus.session_id(), status = verdict.status.as_str(), "verdict");
        *slot = Some(verdict);
        drop(slot);
        let _ = self.feedback.try_send(PipelineFeedback::VerdictReady);
    }

    fn on_video(
        &mut self,
        data: &[u8],
        codec: VideoCodec,
        keyframe: bool,
        discontinuity: bool,
        arrival: Instant,
    ) {
        self.camera.on_packet(arrival);
        if self.decoder.as_ref().is_none_or(|d| d.codec() != codec) {
            match VideoDecoder::new(codec) {
                Ok(d) => self.decoder = Some(d),
                Err(e) => {
                    tracing::warn!(session = %self.bus.session_id(), error = %e, "cannot create a video decoder");
                    return;
                }
            }
            self.wait_keyframe = true;
        }
        if discontinuity {
            self.wait_keyframe = true;
        }
        if self.wait_keyframe && !keyframe {
            let _ = self.feedback.try_send(PipelineFeedback::NeedKeyframe);
            return;
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        match decoder.decode(data, keyframe, &mut self.frame) {
            Ok(Some(())) => {
                self.wait_keyframe = false;
                self.camera.on_decoded(arrival);
                self.stats.frames_decoded.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .width
                    .store(self.frame.width as u64, Ordering::Relaxed);
                self.stats
                    .height
                    .store(self.frame.height as u64, Ordering::Relaxed);
                self.maybe_analyze(arrival);
            }
            Ok(None) => {}
            Err(e) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                self.wait_keyframe = true;
                tracing::debug!(session = %self.bus.session_id(), error = %e, "decode error; asking for a keyframe");
                let _ = self.feedback.try_send(PipelineFeedback::NeedKeyframe);
            }
        }
    }

    /// What the call's running parts need from the analysis now (`analysis::effort`): the
    /// challenge judge's step or baseline, the document step; guidance when nothing is judged.
    fn analysis_needs(&self) -> AnalysisNeeds {
        let document = self
            .document
            .as_ref()
            .and_then(|d| d.step.as_ref())
            .filter(|s| !s.is_done())
            .map(|_| AnalysisNeeds::DOCUMENT);
        let liveness = self.liveness.as_ref().and_then(|l| l.analysis_needs());
        AnalysisNeeds::combine(liveness.into_iter().chain(document))
    }

    /// Analyses the frame just decoded if it is the newest one and the schedule of the call's
    /// phase allows (`analysis::effort::AnalysisSchedule`), with the models the phase needs.
    fn maybe_analyze(&mut self, captured: Instant) {
        let needs = self.analysis_needs();
        let newer_waiting = self.pending_video.load(Ordering::Acquire) > 0;
        if !self.schedule.due(captured, &needs, newer_waiting) {
            self.stats.frames_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.frames_analyzed.fetch_add(1, Ordering::Relaxed);
        self.analyzed_in_window += 1;
        let f = &self.frame;
        let image = f.view();
        let metrics = self.quality.analyze(&image, None);
        let signature = luma_signature(&image);
        let changes = self.camera.on_frame(
            captured,
            FrameFacts {
                width: f.width,
                height: f.height,
                black: metrics.black,
                dark: metrics.mean_luma < 50.0,
                signature: &signature,
            },
        );
        self.last_metrics = Some(metrics);
        self.publish_health(captured, changes, "camera");
        let mut face_quality = None;
        if let Some(tracker) = self.face.as_mut().filter(|_| needs.mesh) {
            match tracker.observe_with(&image, captured, needs.eyes) {
                Ok(observation) => {
                    face_quality = observation.face.as_ref().map(|f| f.quality);
                    self.stats.face_observations.fetch_add(1, Ordering::Relaxed);
                    if observation.face.is_some() {
                        self.stats.faces_found.fetch_add(1, Ordering::Relaxed);
                    }
                    self.bus.publish_live("face", &observation);
                    // Live embeddings stop when the ID step starts: the card's portrait must
                    // never be taken for the live face it is compared with.
                    let document_started = self.document.as_ref().is_some_and(|d| d.step.is_some());
                    if let (Some(models), false) =
                        (self.cfg.face_models.as_deref(), document_started)
                    {
                        let before = self.live_embeddings.len();
                        collect_embedding(
                            models,
                            &mut self.live_embeddings,
                            &mut self.next_embedding,
                            &image,
                            &observation,
                            captured,
                        );
                        // The first good frontal frame is kept as evidence.
                        let first_frontal = before == 0 && self.live_embeddings.len() == 1;
                        if let (true, Some(dir)) = (first_frontal, &self.cfg.evidence_dir) {
                            match crate::store::evidence::write_jpeg(dir, "frontal", &image) {
                                Ok(file) => self.evidence.push(file),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot write the frontal frame")
                                }
                            }
                        }
                    }
                    if let Some(l) = self.liveness.as_mut() {
                        if !l.is_finished() {
                            l.on_light_frame(&image, &observation);
                            let events = l.on_observation(&observation);
                            self.publish_judge(events);
                        }
                    }
                    // Without a working camera picture the face hints would only repeat it.
                    if !metrics.black {
                        let changes = self.face_guidance.update(&observation);
                        self.publish_health(captured, changes, "face");
                    }
                }
                Err(e) => {
                    self.stats.face_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = %self.bus.session_id(), error = %e, "face analysis failed");
                }
            }
        }
        // The lag that admission control watches: arrival to the face's analysis (the document
        // step's occasional OCR read is not the per-frame work that saturates a node).
        self.cfg.load.on_analysed(Instant::now(), captured);
        self.analyze_document(captured);
        // A black camera is a device fault; lighting hints would only confuse.
        if !metrics.black {
            let judged = match (&self.face, face_quality) {
                (Some(_), face) => judged_metrics(&metrics, face.as_ref()),
                // No face tracking (models not installed): judge blur on a face-sized patch where
                // the face would be, at native resolution.
                (None, _) => {
                    let f = &self.frame;
                    let side = crate::analysis::quality::BLUR_FACE_WIDTH;
                    let centre = Region::new(
                        f.width.saturating_sub(side) / 2,
                        f.height.saturating_sub(side) / 2,
                        side,
                        side,
                    );
                    QualityMetrics {
                        blur: self.quality.blur_index(&f.view(), centre),
                        ..metrics
                    }
                }
            };
            for change in self.guidance.update(captured, &judged) {
                let (code, active) = match change {
                    GuidanceChange::Raised(i) => (i.code(), true),
                    GuidanceChange::Cleared(i) => (i.code(), false),
                };
                if let Some(code) = ReasonCode::from_code(code) {
                    self.publish_guidance(code, active, "capture", captured);
                }
            }
        }
    }

    fn on_audio(&mut self, packet: &[u8], arrival: Instant) {
        if self.audio.is_none() {
            match AudioDecoder::new() {
                Ok(d) => self.audio = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create an audio decoder");
                    return;
                }
            }
        }
        let Some(dec) = self.audio.as_mut() else {
            return;
        };
        let level = match dec.decode(packet, &mut self.pcm) {
            Ok(_) => level_dbfs(&self.pcm),
            Err(_) => return,
        };
        self.stats.audio_decoded.fetch_add(1, Ordering::Relaxed);
        self.level_sum += self
            .pcm
            .iter()
            .map(|s| (*s as f64) * (*s as f64))
            .sum::<f64>();
        self.level_samples += self.pcm.len();
        let changes = self.mic.on_audio(arrival, level);
        self.publish_health(arrival, changes, "microphone");
        self.hear_voice(arrival);
    }

    /// The spoken step's hook: voice activity of the packet just decoded, for the plan.
    fn hear_voice(&mut self, arrival: Instant) {
        let Some(l) = self.liveness.as_mut().filter(|l| l.wants_voice()) else {
            return;
        };
        let frames = self.voice.get_or_insert_default().push(&self.pcm, arrival);
        let events: Vec<JudgeEvent> = frames.into_iter().flat_map(|f| l.on_voice(f)).collect();
        self.publish_judge(events);
    }

    fn publish_health(&self, captured: Instant, changes: Vec<HealthChange>, source: &str) {
        if changes.is_empty() {
            return;
        }
        for change in &changes {
            let (code, active) = match change {
                HealthChange::Raised(c) => (*c, true),
                HealthChange::Cleared(c) => (*c, false),
            };
            self.publish_guidance(code, active, source, captured);
        }
        if source != "face" {
            self.bus.publish(
                "device",
                &json!({ "camera": self.camera.state(), "microphone": self.mic.state() }),
            );
        }
    }

    fn publish_guidance(&self, code: ReasonCode, active: bool, source: &str, captured: Instant) {
        let latency_ms = captured.elapsed().as_secs_f64() * 1000.0;
        self.bus.publish(
            "guidance",
            &json!({
                "code": code.as_str(),
                "active": active,
                "hint_key": code.hint_key(),
                "source": source,
                "latency_ms": (latency_ms * 10.0).round() / 10.0,
            }),
        );
        tracing::debug!(session = %self.bus.session_id(), code = code.as_str(), active, at_ms = unix_ms_now(), "guidance");
    }

    fn publish_quality(&mut self) {
        let Some(m) = self.last_metrics else { return };
        let s = &self.stats;
        self.bus.publish(
            "quality",
            &json!({
                "mean_luma": round1(m.mean_luma),
                "dynamic_range": round1(m.dynamic_range),
                "underexposed": round3(m.underexposed),
                "overexposed": round3(m.overexposed),
                "glare": round3(m.glare),
                "sharpness": round1(m.sharpness),
                "color_cast": round1(m.color_cast),
                "width": s.width.load(Ordering::Relaxed),
                "height": s.height.load(Ordering::Relaxed),
                "analyzed_fps": self.analyzed_in_window,
                "frames_decoded": s.frames_decoded.load(Ordering::Relaxed),
                "frames_skipped": s.frames_skipped.load(Ordering::Relaxed),
                "decode_errors": s.decode_errors.load(Ordering::Relaxed),
                "active": self.guidance.active().iter().map(|i| i.code()).collect::<Vec<_>>(),
            }),
        );
        self.analyzed_in_window = 0;
    }
}

/// Embeds a good frontal frame at most once a second (up to `MAX_LIVE_EMBEDDINGS`), for the
/// reference-photo match: frontal, well exposed.
fn collect_embedding(
    models: &FaceModels,
    embeddings: &mut Vec<Embedding>,
    next: &mut Option<Instant>,
    image: &I420,
    o: &FaceObservation,
    captured: Instant,
) {
    let Some(face) = &o.face else { return };
    let due = next.is_none_or(|t| captured >= t);
    let frontal = face.yaw.abs() < 10.0 && face.pitch.abs() < 10.0;
    let exposed = (60.0..=200.0).contains(&face.quality.mean_luma);
    if !due || !frontal || !exposed || embeddings.len() >= MAX_LIVE_EMBEDDINGS {
        return;
    }
    *next = Some(captured + Duration::from_secs(1));
    let mut scratch = Vec::new();
    match embed_face(models, image, &face.landmarks, &mut scratch) {
        Ok(e) => embeddings.push(e),
        Err(e) => tracing::debug!(error = %e, "embedding failed"),
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
