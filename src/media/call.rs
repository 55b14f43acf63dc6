//! The per-call core: everything one call measures and decides, sans-IO (str0m's `Rtc` is the
//! model).
//!
//! The media thread (`media::pipeline`) decodes and feeds this core with decoded frames, decoded
//! audio, the network's state and `Instant`s. The core runs capture quality, camera and
//! microphone health, face tracking and guidance, the liveness plan, the ID-document step and the
//! verdict, and says what to do as [`CallOutput`]s: typed events to publish, evidence frames to
//! write, the verdict. It reads no clock, does no I/O and knows no JSON. Its timers are one
//! deadline the caller waits for ([`CallCore::poll_timeout`], then [`CallCore::handle_timeout`])
//! and its outputs wait in a queue ([`CallCore::poll_output`]), so a test drives a whole call with
//! exact timestamps.
//!
//! Which frames are analysed, and with which models, follows the call's phase
//! (`analysis::effort`): the caller offers every decoded frame and says whether a newer one is
//! already waiting; the core analyses the newest at the rate the running step needs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::analysis::device::{CameraHealth, FrameFacts, HealthChange, MicHealth};
use crate::analysis::effort::{AnalysisNeeds, AnalysisSchedule};
use crate::analysis::face::embed::{embed_face, Embedding, MATCH_THRESHOLD};
use crate::analysis::face::guidance::FaceGuidance;
use crate::analysis::face::{FaceModels, FaceObservation, FaceTracker};
use crate::analysis::provenance::{face_region, ProvenanceMonitor};
use crate::analysis::quality::{
    judged_metrics, luma_signature, GuidanceChange, GuidanceTracker, QualityAnalyzer,
    QualityMetrics, Region, Thresholds, I420,
};
use crate::analysis::voice::VoiceDetector;
use crate::document::card::{CaptureThresholds, CardScratch};
use crate::document::fields::{DocumentKind, DocumentRead};
use crate::document::room::RoomMemory;
use crate::document::step::{Capture, DocumentStep, StepEvent};
use crate::document::{
    compare_portrait, examine, DocumentOutcome, DocumentPolicy, DocumentReader, Examine, Retain,
};
use crate::events::SessionEvent;
use crate::frame::Frame;
use crate::liveness::judge::{JudgeEvent, StepEvidence};
use crate::liveness::light::{LightEvent, LightSequence};
use crate::liveness::plan::ChallengePlan;
use crate::liveness::{LightMode, LivenessSession};
use crate::reasons::ReasonCode;
use crate::verdict::{decide, MatchResult, ReferenceKind, Verdict, VerdictInputs};

/// How often the health monitors and the challenge clock are stepped.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// No video for this long (after the first frame) pauses the running challenge step: the network
/// dropped, and the page is reconnecting. The peer's reconnect grace decides when to give up.
pub(crate) const MEDIA_GAP_PAUSE: Duration = Duration::from_millis(1000);
/// How often the microphone's level is reported to the page.
pub(crate) const AUDIO_LEVEL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the capture-quality summary is reported.
pub(crate) const QUALITY_INTERVAL: Duration = Duration::from_secs(1);
/// Capture checks (quality over the frame and the face box, the camera's health, capture hints)
/// run on an analysed frame at most this often: 5 a second, which the guidance rate (4 fps) never
/// exceeds, so only frames analysed at the full rate of a judged step skip them. Hints hold for a
/// second before they are raised (`quality::Thresholds::hold_on`), the camera's checks for longer
/// (`analysis::device`): 5 measurements a second decide them as well as 15 (issue 16: the two
/// quality passes were 12 % of a dense call's CPU).
pub(crate) const CAPTURE_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// A plan blocked this long without interruption (camera fault, darkness, no face, poor network)
/// ends with a verdict that names the blocking cause, rather than waiting for the call to time out.
pub(crate) const MAX_BLOCKED: Duration = Duration::from_secs(12);
/// After the verdict the core has nothing to time: the media thread sleeps until an input or
/// its call's end.
const AFTER_VERDICT_IDLE: Duration = Duration::from_secs(3600);
/// Live frames embedded for the reference match.
pub(crate) const MAX_LIVE_EMBEDDINGS: usize = 5;

/// What one call checks; fixed when the call starts.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Frames analysed per second while a motion is judged (default 15).
    pub analysis_fps: f64,
    /// The session's policy wants a microphone.
    pub wants_audio: bool,
    /// Face tracking runs when the models are loaded.
    pub face_models: Option<Arc<FaceModels>>,
    /// Spreads the calls over the model session pool (any stable per-call number).
    pub pool_hint: usize,
    /// The session's liveness plan (needs face tracking).
    pub liveness: Option<ChallengePlan>,
    /// Whether the challenges start with the screen-light step, and the seed of its colours.
    pub light: LightMode,
    pub light_seed: u64,
    /// The ID-document step after the challenges (policy, and the models that read the card),
    /// with the id its events carry.
    pub document: Option<(DocumentPolicy, Arc<DocumentReader>)>,
    pub document_step_id: u32,
    /// Today's date (UTC: year, month, day), which a birth date is checked against.
    pub today: (i32, u32, u32),
    /// Whether evidence frames are kept (asked for as [`CallOutput::Evidence`]).
    pub keep_evidence: bool,
}

/// Counters for the call's summary (`network.decode` in the session) and the quality events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallCounters {
    pub frames_decoded: u64,
    pub frames_analyzed: u64,
    pub frames_skipped: u64,
    pub decode_errors: u64,
    pub audio_decoded: u64,
    /// Analysed frames on which the face tracker produced an observation (with or without a face).
    pub face_observations: u64,
    pub faces_found: u64,
    pub face_errors: u64,
    pub width: u64,
    pub height: u64,
}

/// What the caller does next.
#[derive(Debug)]
pub enum CallOutput {
    /// Publish to the session's events (timeline, page, relying party).
    Event(CallEvent),
    /// The frame just analysed has a face observation for live subscribers only
    /// ([`CallCore::last_observation`]; not copied, since most calls have no live subscriber).
    FaceObserved,
    /// Keep an evidence frame under this name.
    Evidence { name: String, image: EvidenceImage },
    /// The call's verdict (once). Its `frames` are the caller's to fill with the evidence kept.
    /// Boxed: it carries the live face's template, far larger than any other output.
    Verdict(Box<Verdict>),
}

/// Which picture an evidence frame is.
#[derive(Debug)]
pub enum EvidenceImage {
    /// The newest frame the caller decoded.
    LatestFrame,
    /// A picture the core made (the rectified ID card).
    Picture(Frame),
}

/// A session event, typed; [`CallEvent::kind`] names it and its fields are its JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CallEvent {
    /// A step starts (challenge, screen light, ID document).
    Challenge(ChallengeAnnounced),
    ChallengePaused {
        id: u32,
        because: ReasonCode,
        hint_key: String,
    },
    ChallengeResumed {
        id: u32,
        deadline_ms: u64,
    },
    ChallengePassed {
        id: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        evidence: Option<StepEvidence>,
    },
    ChallengeFailed {
        id: u32,
        reason: ReasonCode,
        hint_key: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        evidence: Option<StepEvidence>,
    },
    /// A hint raised or cleared.
    Guidance(Guidance),
    /// The camera's and the microphone's state, after either changed.
    Device {
        camera: &'static str,
        microphone: &'static str,
    },
    /// The microphone's level over the last [`AUDIO_LEVEL_INTERVAL`].
    AudioLevel {
        dbfs: f64,
    },
    /// The capture-quality summary, every [`QUALITY_INTERVAL`].
    Quality(QualityReport),
}

impl SessionEvent for CallEvent {
    /// The event's kind, as the page, the timeline and the API name it.
    fn kind(&self) -> &'static str {
        match self {
            CallEvent::Challenge(_) => "challenge",
            CallEvent::ChallengePaused { .. } => "challenge_paused",
            CallEvent::ChallengeResumed { .. } => "challenge_resumed",
            CallEvent::ChallengePassed { .. } => "challenge_passed",
            CallEvent::ChallengeFailed { .. } => "challenge_failed",
            CallEvent::Guidance(_) => "guidance",
            CallEvent::Device { .. } => "device",
            CallEvent::AudioLevel { .. } => "audio_level",
            CallEvent::Quality(_) => "quality",
        }
    }

    /// The microphone's level, five times a second, is for a client's level meter; the timeline
    /// keeps the microphone's state (`device`) and the verdict's reasons instead (it was 70 % of
    /// a call's stored events).
    fn live_only(&self) -> bool {
        matches!(self, CallEvent::AudioLevel { .. })
    }
}

/// A step announced to the page; which optional fields are set depends on the step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChallengeAnnounced {
    pub id: u32,
    /// A challenge's action, `screen_light` or `show_document`.
    pub action: &'static str,
    pub deadline_ms: u64,
    pub index: usize,
    pub steps: usize,
    /// The spoken step's digits, revealed only as it starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
    /// The screen-light step's colour sequence, which the page paints on receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub light: Option<LightSequence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<usize>,
    /// The ID step's document kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentKind>,
}

/// A hint raised or cleared; `latency_ms` is filled in by whoever publishes it (capture to
/// publication, a wall-clock measure the core cannot take).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Guidance {
    pub code: &'static str,
    pub active: bool,
    pub hint_key: String,
    /// What raised it: `camera`, `microphone`, `face`, `capture` or `document`.
    pub source: &'static str,
    pub latency_ms: f64,
    /// When the frame or packet that raised it was captured.
    #[serde(skip)]
    pub captured: Instant,
}

/// The capture-quality summary of the last analysed frame, with the decoder's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    pub mean_luma: f64,
    pub dynamic_range: f64,
    pub underexposed: f64,
    pub overexposed: f64,
    pub glare: f64,
    pub sharpness: f64,
    pub color_cast: f64,
    pub width: u64,
    pub height: u64,
    /// Frames analysed in the last [`QUALITY_INTERVAL`].
    pub analyzed_fps: u64,
    pub frames_decoded: u64,
    pub frames_skipped: u64,
    pub decode_errors: u64,
    /// The capture hints active now.
    pub active: Vec<&'static str>,
}

/// The document step's state inside the call: the sans-IO step plus what it found.
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

/// One call's checks; see the module documentation.
pub struct CallCore {
    cfg: CallConfig,
    outputs: VecDeque<CallOutput>,
    counters: CallCounters,
    quality: QualityAnalyzer,
    guidance: GuidanceTracker,
    camera: CameraHealth,
    mic: MicHealth,
    /// Voice activity for the spoken step (made when the plan first wants it).
    voice: Option<VoiceDetector>,
    face: Option<FaceTracker>,
    face_guidance: FaceGuidance,
    last_observation: Option<FaceObservation>,
    /// Screen and injection cues, reported in the verdict's scores (never decisive).
    provenance: ProvenanceMonitor,
    liveness: Option<LivenessSession>,
    document: Option<DocumentPhase>,
    network_poor: bool,
    /// Poor-network time while liveness steps were running.
    network_poor_ms: u64,
    last_network_at: Option<Instant>,
    /// Since when the plan has been blocked without interruption.
    blocked_since: Option<Instant>,
    /// Capture and framing faults active while the current step ran.
    step_faults: Vec<ReasonCode>,
    /// Capture and framing faults active during steps that failed, for the verdict.
    failed_step_faults: Vec<ReasonCode>,
    /// When the last video packet reached the core (media gaps pause the challenge).
    last_video_at: Option<Instant>,
    /// Embeddings of good frontal frames, for the reference-photo match.
    live_embeddings: Vec<Embedding>,
    next_embedding: Option<Instant>,
    embed_scratch: Vec<f32>,
    reference: Option<(Embedding, ReferenceKind)>,
    /// Evidence frames asked for so far (each name once).
    evidence: Vec<String>,
    verdict_reached: bool,
    /// Which frames are analysed, at the rate the call's phase needs (`analysis::effort`).
    schedule: AnalysisSchedule,
    last_metrics: Option<QualityMetrics>,
    /// When the next analysed frame gets the capture checks ([`CAPTURE_CHECK_INTERVAL`]).
    next_capture_check: Option<Instant>,
    level_sum: f64,
    level_samples: usize,
    next_tick: Instant,
    next_level: Instant,
    next_quality: Instant,
    analyzed_in_window: u64,
}

impl CallCore {
    /// A call whose media starts at `now`.
    pub fn new(cfg: CallConfig, now: Instant) -> Self {
        CallCore {
            face: cfg
                .face_models
                .clone()
                .map(|m| FaceTracker::new(m, cfg.pool_hint)),
            face_guidance: FaceGuidance::default(),
            last_observation: None,
            provenance: ProvenanceMonitor::default(),
            liveness: cfg
                .liveness
                .clone()
                .filter(|_| cfg.face_models.is_some())
                .map(|plan| LivenessSession::new(plan).with_light(cfg.light, cfg.light_seed)),
            document: cfg.document.clone().map(|(policy, reader)| DocumentPhase {
                policy,
                reader,
                step: None,
                step_id: cfg.document_step_id,
                scratch: CardScratch::default(),
                thresholds: CaptureThresholds::default(),
                room: RoomMemory::default(),
                read: None,
                outcome: None,
            }),
            outputs: VecDeque::new(),
            counters: CallCounters::default(),
            quality: QualityAnalyzer::default(),
            guidance: GuidanceTracker::new(Thresholds::default()),
            camera: CameraHealth::default(),
            mic: MicHealth::new(cfg.wants_audio),
            voice: None,
            network_poor: false,
            network_poor_ms: 0,
            last_network_at: None,
            blocked_since: None,
            step_faults: Vec::new(),
            failed_step_faults: Vec::new(),
            last_video_at: None,
            live_embeddings: Vec::new(),
            next_embedding: None,
            embed_scratch: Vec::new(),
            reference: None,
            evidence: Vec::new(),
            verdict_reached: false,
            schedule: AnalysisSchedule::new(cfg.analysis_fps),
            last_metrics: None,
            next_capture_check: None,
            level_sum: 0.0,
            level_samples: 0,
            next_tick: now + TICK,
            next_level: now + AUDIO_LEVEL_INTERVAL,
            next_quality: now + QUALITY_INTERVAL,
            analyzed_in_window: 0,
            cfg,
        }
    }

    /// The next output, in the order they arose; `None` when there is nothing to do.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.outputs.pop_front()
    }

    /// When [`CallCore::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick.min(self.next_level).min(self.next_quality)
    }

    /// The face observation of the last analysed frame (see [`CallOutput::FaceObserved`]).
    /// Whether the ID-document step is running (its frames look for and read the card).
    pub(crate) fn in_document_step(&self) -> bool {
        self.document
            .as_ref()
            .and_then(|d| d.step.as_ref())
            .is_some_and(|s| !s.is_done())
    }

    pub(crate) fn last_observation(&self) -> Option<&FaceObservation> {
        self.last_observation.as_ref()
    }

    pub(crate) fn counters(&self) -> &CallCounters {
        &self.counters
    }

    /// Whether the call still reads its media. After the verdict nothing does: the page shows the
    /// result and the call only waits to be hung up (about 1.5 s, longer when the client is
    /// slow), so the shell stops decoding, and no hint or report is raised about a picture the
    /// person is no longer asked for (a sender that stops its camera on the result screen is not
    /// a camera fault).
    pub fn wants_media(&self) -> bool {
        !self.verdict_reached
    }

    /// The media connected at `at`, with or without an audio track.
    pub fn on_connected(&mut self, at: Instant, has_audio: bool) {
        self.camera.on_connected(at);
        let changes = self.mic.on_connected(at, has_audio);
        self.health(at, changes, "microphone");
    }

    /// The network's state over the last second (`now`): poor, and whether the sender stalled
    /// (no frames captured; not the network's doing).
    pub(crate) fn on_network(&mut self, now: Instant, poor: bool, sender_stalled: bool) {
        let changes = self.camera.on_sender_window(now, sender_stalled);
        self.health(now, changes, "camera");
        let running = self.liveness.as_ref().is_some_and(|l| !l.is_finished());
        if let (true, true, Some(last)) = (self.network_poor, running, self.last_network_at) {
            self.network_poor_ms += now.duration_since(last).as_millis() as u64;
        }
        self.network_poor = poor;
        self.last_network_at = Some(now);
    }

    /// A video frame's packets, which the sender stamped with capture time `capture_seconds` (its
    /// RTP clock), arrived at `arrival` and reached the decoder at `now`.
    pub fn on_video_packet(&mut self, arrival: Instant, capture_seconds: f64, now: Instant) {
        self.camera.on_packet(arrival);
        self.provenance.on_capture_time(capture_seconds);
        self.last_video_at = Some(now);
    }

    /// The decoder could not decode a frame.
    pub(crate) fn on_decode_error(&mut self) {
        self.counters.decode_errors += 1;
    }

    /// The reference the live face is matched with at the verdict (set or replaced): an ID
    /// photo's embedding, or the subject's enrolment in a re-verification.
    pub(crate) fn on_reference(&mut self, reference: Embedding, kind: ReferenceKind) {
        self.reference = Some((reference, kind));
    }

    /// The call is ending (`reason`, e.g. `hangup`): decide a verdict now if none was reached.
    pub(crate) fn on_ending(&mut self, reason: &'static str) {
        self.conclude(Some(reason));
    }

    /// Steps the health monitors, the challenge clock and the periodic reports, at
    /// [`CallCore::poll_timeout`] or later.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.verdict_reached {
            // Nothing is measured after the verdict (`wants_media`): no reports, no hints, and
            // no reason to wake the media thread again before its call ends.
            let idle = now + AFTER_VERDICT_IDLE;
            (self.next_tick, self.next_level, self.next_quality) = (idle, idle, idle);
            return;
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            let changes = self.camera.tick(now);
            self.health(now, changes, "camera");
            let changes = self.mic.tick(now);
            self.health(now, changes, "microphone");
            self.tick_steps(now);
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
                self.emit(CallEvent::AudioLevel { dbfs: round1(dbfs) });
                self.level_sum = 0.0;
                self.level_samples = 0;
            }
        }
        if now >= self.next_quality {
            self.next_quality = now + QUALITY_INTERVAL;
            self.report_quality();
        }
    }

    /// A decoded frame captured at `captured`. It is analysed when the call's phase wants a frame
    /// now and no newer one is waiting (`newer_waiting`); returns whether it was. The document
    /// step's work on it follows in [`CallCore::on_frame_document`].
    pub fn on_frame(&mut self, frame: &Frame, captured: Instant, newer_waiting: bool) -> bool {
        self.camera.on_decoded(captured);
        self.counters.frames_decoded += 1;
        self.counters.width = frame.width as u64;
        self.counters.height = frame.height as u64;
        let image = frame.view();
        self.provenance.on_decoded(&image);
        let needs = self.analysis_needs();
        if !self.schedule.due(captured, &needs, newer_waiting) {
            self.counters.frames_skipped += 1;
            return false;
        }
        self.counters.frames_analyzed += 1;
        self.analyzed_in_window += 1;
        let check_capture = self.next_capture_check.is_none_or(|t| captured >= t);
        if check_capture {
            self.next_capture_check = Some(captured + CAPTURE_CHECK_INTERVAL);
            self.check_capture(frame, &image, captured);
        }
        let black = self.last_metrics.is_some_and(|m| m.black);
        let face_quality = if needs.mesh {
            self.observe_face(&image, captured, needs.eyes, check_capture, black)
        } else {
            None
        };
        // A black camera is a device fault; lighting hints would only confuse.
        if let Some(metrics) = self.last_metrics.filter(|m| check_capture && !m.black) {
            let judged = match (&self.face, face_quality) {
                (Some(_), face) => judged_metrics(&metrics, face.as_ref()),
                // No face tracking (models not installed): judge blur on a face-sized patch where
                // the face would be, at native resolution.
                (None, _) => {
                    let side = crate::analysis::quality::BLUR_FACE_WIDTH;
                    let centre = Region::new(
                        frame.width.saturating_sub(side) / 2,
                        frame.height.saturating_sub(side) / 2,
                        side,
                        side,
                    );
                    QualityMetrics {
                        blur: self.quality.blur_index(&image, centre),
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
                    self.guide(code, active, "capture", captured);
                }
            }
        }
        true
    }

    /// The frame's capture quality and the camera's health (black, dark, frozen, resolution).
    fn check_capture(&mut self, frame: &Frame, image: &I420, captured: Instant) {
        let metrics = self.quality.analyze(image, None);
        let signature = luma_signature(image);
        let changes = self.camera.on_frame(
            captured,
            FrameFacts {
                width: frame.width,
                height: frame.height,
                black: metrics.black,
                dark: metrics.mean_luma < 50.0,
                signature: &signature,
            },
        );
        self.last_metrics = Some(metrics);
        self.health(captured, changes, "camera");
    }

    /// The document step's work on a frame [`CallCore::on_frame`] analysed: before the step,
    /// learn the room's own card-like objects; during it, look for the card and read it when the
    /// step is ready. Apart from `on_frame` because it is occasional heavy work (a read takes a
    /// few hundred milliseconds) that the node's per-frame analysis lag must not count.
    pub fn on_frame_document(&mut self, frame: &Frame, captured: Instant) {
        let Some(doc) = self.document.as_mut() else {
            return;
        };
        let image = frame.view();
        let Some(step) = doc.step.as_mut() else {
            if doc.room.observe(&image, captured, &mut doc.scratch) > 0 {
                tracing::debug!(objects = doc.room.objects().len(), "room object learnt");
            }
            return;
        };
        if step.is_done() {
            return;
        }
        let capture = examine(
            &image,
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
            tracing::debug!(corners = ?c.quad.corners, cut_off = c.quad.cut_off, room = doc.room.objects().len(), "document candidate");
        }
        let events = step.on_frame(captured, capture);
        self.on_document_events(events, captured);
    }

    /// Decoded audio (`pcm`, mono f32) of a packet that arrived at `arrival`.
    pub(crate) fn on_audio(&mut self, pcm: &[f32], level_dbfs: f64, arrival: Instant) {
        self.counters.audio_decoded += 1;
        self.level_sum += pcm.iter().map(|s| (*s as f64) * (*s as f64)).sum::<f64>();
        self.level_samples += pcm.len();
        let changes = self.mic.on_audio(arrival, level_dbfs);
        self.health(arrival, changes, "microphone");
        // The spoken step's voice activity.
        let Some(l) = self.liveness.as_mut().filter(|l| l.wants_voice()) else {
            return;
        };
        let frames = self.voice.get_or_insert_default().push(pcm, arrival);
        let events: Vec<JudgeEvent> = frames.into_iter().flat_map(|f| l.on_voice(f)).collect();
        self.on_judge_events(events, arrival);
    }

    /// The face tracker on an analysed frame, and what follows from its observation: live
    /// embeddings, the liveness plan, face guidance. Returns the face's quality, if one was found.
    fn observe_face(
        &mut self,
        image: &I420,
        captured: Instant,
        eyes: bool,
        measure_quality: bool,
        black: bool,
    ) -> Option<QualityMetrics> {
        let tracker = self.face.as_mut()?;
        let observation = match tracker.observe_frame(image, captured, eyes, measure_quality) {
            Ok(o) => o,
            Err(e) => {
                self.counters.face_errors += 1;
                tracing::warn!(error = %e, "face analysis failed");
                return None;
            }
        };
        let face_quality = observation.face.as_ref().map(|f| f.quality);
        let face_box = observation.face.as_ref().map(|f| face_region(f.bbox));
        self.provenance.on_analysed(image, face_box, captured);
        self.counters.face_observations += 1;
        if observation.face.is_some() {
            self.counters.faces_found += 1;
        }
        // Live embeddings stop when the ID step starts: the card's portrait must never be taken
        // for the live face it is compared with.
        let document_started = self.document.as_ref().is_some_and(|d| d.step.is_some());
        if let (Some(models), false) = (self.cfg.face_models.as_deref(), document_started) {
            let before = self.live_embeddings.len();
            collect_embedding(
                models,
                &mut self.live_embeddings,
                &mut self.next_embedding,
                &mut self.embed_scratch,
                image,
                &observation,
                captured,
            );
            // The first good frontal frame is kept as evidence.
            if before == 0 && self.live_embeddings.len() == 1 {
                self.keep_evidence("frontal", EvidenceImage::LatestFrame);
            }
        }
        if let Some(l) = self.liveness.as_mut().filter(|l| !l.is_finished()) {
            l.on_light_frame(image, &observation);
            let events = l.on_observation(&observation);
            self.on_judge_events(events, captured);
        }
        // Without a working camera picture the face hints would only repeat it.
        if !black {
            let changes = self.face_guidance.update(&observation);
            self.health(captured, changes, "face");
        }
        self.last_observation = Some(observation);
        self.outputs.push_back(CallOutput::FaceObserved);
        face_quality
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

    /// Video stopped arriving mid-call (a network drop): nothing the person can fix here.
    fn media_gap(&self, now: Instant) -> bool {
        self.last_video_at
            .is_some_and(|t| now.saturating_duration_since(t) >= MEDIA_GAP_PAUSE)
    }

    /// What keeps a challenge step from being judged at `now`, most fundamental first.
    fn blocking(&self, now: Instant) -> Option<ReasonCode> {
        if self.media_gap(now) {
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

    /// The step clocks: the document step's, and the liveness plan's with what blocks it.
    fn tick_steps(&mut self, now: Instant) {
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
        let blocking = self.blocking(now);
        let Some(l) = self.liveness.as_mut().filter(|l| !l.is_finished()) else {
            return;
        };
        let events = l.on_tick(now, blocking);
        let light = l.poll_light();
        self.on_light_events(light);
        self.on_judge_events(events, now);
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
            Some(_) if gap => self.blocked_since,
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

    fn on_judge_events(&mut self, events: Vec<JudgeEvent>, now: Instant) {
        let mut finished = false;
        for e in events {
            match e {
                JudgeEvent::Started { step, remaining } => {
                    self.step_faults.clear();
                    let liveness = self.liveness.as_ref();
                    let (index, steps) =
                        liveness.and_then(|l| l.position(step.id)).unwrap_or((0, 1));
                    self.emit(CallEvent::Challenge(ChallengeAnnounced {
                        id: step.id,
                        action: step.action.as_str(),
                        deadline_ms: remaining.as_millis() as u64,
                        index,
                        steps: steps + self.document.is_some() as usize,
                        // The spoken step's digits are revealed only now.
                        digits: liveness.and_then(|l| l.digits(step.id)).map(str::to_string),
                        light: None,
                        attempt: None,
                        document: None,
                    }));
                }
                JudgeEvent::Paused { step_id, because } => self.emit(CallEvent::ChallengePaused {
                    id: step_id,
                    because,
                    hint_key: because.hint_key(),
                }),
                JudgeEvent::Resumed { step_id, remaining } => {
                    self.emit(CallEvent::ChallengeResumed {
                        id: step_id,
                        deadline_ms: remaining.as_millis() as u64,
                    })
                }
                JudgeEvent::Passed { step_id, evidence } => {
                    self.keep_evidence(&format!("challenge-{step_id}"), EvidenceImage::LatestFrame);
                    self.emit(CallEvent::ChallengePassed {
                        id: step_id,
                        evidence: Some(evidence),
                    });
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
                    self.keep_evidence(&format!("challenge-{step_id}"), EvidenceImage::LatestFrame);
                    self.emit(CallEvent::ChallengeFailed {
                        id: step_id,
                        reason,
                        hint_key: reason.hint_key(),
                        evidence: Some(evidence),
                    });
                }
                JudgeEvent::Finished { .. } => finished = true,
            }
        }
        if finished && !self.start_document(now) {
            self.conclude(None);
        }
    }

    /// Announces the screen-light step's attempts and results like the challenges' (the page
    /// paints the sequence in the `challenge` event's `light` as soon as it arrives).
    fn on_light_events(&mut self, events: Vec<LightEvent>) {
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
                    self.emit(CallEvent::Challenge(ChallengeAnnounced {
                        id,
                        action: "screen_light",
                        deadline_ms: deadline.as_millis() as u64,
                        index: 0,
                        steps,
                        digits: None,
                        light: Some(sequence),
                        attempt: Some(attempt),
                        document: None,
                    }));
                }
                LightEvent::Interrupted { id, because } | LightEvent::Retry { id, because } => self
                    .emit(CallEvent::ChallengePaused {
                        id,
                        because,
                        hint_key: because.hint_key(),
                    }),
                // No light scores in the events: they reach the page, and an attacker tuning an
                // injected stream must not learn how close it came. The verdict's scores carry them.
                LightEvent::Passed { id, .. } => {
                    self.keep_evidence("screen-light", EvidenceImage::LatestFrame);
                    self.emit(CallEvent::ChallengePassed { id, evidence: None });
                }
                LightEvent::Ended { id, result, .. } => {
                    // The person is told what to fix; "spoof" is for the verdict, not the page.
                    let reason = result
                        .reason()
                        .filter(|r| *r != ReasonCode::SpoofSuspected)
                        .unwrap_or(ReasonCode::ScreenLightNotSeen);
                    self.keep_evidence("screen-light", EvidenceImage::LatestFrame);
                    self.emit(CallEvent::ChallengeFailed {
                        id,
                        reason,
                        hint_key: reason.hint_key(),
                        evidence: None,
                    });
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
        let announced = ChallengeAnnounced {
            id: doc.step_id,
            action: "show_document",
            deadline_ms: step.remaining(now).as_millis() as u64,
            index: steps,
            steps: steps + 1,
            digits: None,
            light: None,
            attempt: None,
            document: Some(doc.policy.kind),
        };
        doc.step = Some(step);
        self.emit(CallEvent::Challenge(announced));
        true
    }

    fn on_document_events(&mut self, events: Vec<StepEvent>, at: Instant) {
        let mut pending = VecDeque::from(events);
        while let Some(event) = pending.pop_front() {
            match event {
                StepEvent::Guidance { code, active } => self.guide(code, active, "document", at),
                StepEvent::GaveUp { code } => self.finish_document(Some(code)),
                StepEvent::ReadyToRead => {
                    let today = self.cfg.today;
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
                    let read = match doc.reader.read(&best, kind, today) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(error = %e, "document OCR failed");
                            pending.extend(step.on_read(at, false));
                            continue;
                        }
                    };
                    let previous = doc.read.as_ref().map(|(_, r, _)| r);
                    let complete = crate::document::fields::settles(previous, &read, kind);
                    let portrait = doc.reader.portrait(&best, kind);
                    // The text itself is never logged.
                    tracing::debug!(complete, "document read");
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
        let Some(doc) = self.document.as_mut().filter(|d| d.outcome.is_none()) else {
            return;
        };
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
        let card = capture
            .filter(|_| doc.policy.retain == Retain::TextAndImage)
            .map(|c| {
                Frame::from_rgb(
                    c.image.width() as usize,
                    c.image.height() as usize,
                    c.image.as_raw(),
                )
            });
        let id = doc.step_id;
        self.emit(match failure {
            Some(reason) => CallEvent::ChallengeFailed {
                id,
                reason,
                hint_key: reason.hint_key(),
                evidence: None,
            },
            None => CallEvent::ChallengePassed { id, evidence: None },
        });
        if let Some(card) = card {
            self.keep_evidence("document", EvidenceImage::Picture(card));
        }
        self.conclude(None);
    }

    /// The live face against the reference, if there is one (`frames` 0: nothing to compare).
    fn face_match(&self) -> Option<MatchResult> {
        let (reference, against) = self.reference.as_ref()?;
        let best = self
            .live_embeddings
            .iter()
            .map(|e| e.cosine(reference))
            .fold(None, |acc: Option<f32>, s| {
                Some(acc.map_or(s, |a| a.max(s)))
            });
        Some(MatchResult {
            similarity: best.unwrap_or(0.0),
            threshold: MATCH_THRESHOLD,
            frames: self.live_embeddings.len(),
            against: *against,
        })
    }

    /// The live face's template: the normalised mean of its embeddings (none embedded: none).
    fn live_face(&self) -> Option<Embedding> {
        let first = self.live_embeddings.first()?;
        let mut sum = [0f32; crate::analysis::face::embed::DIM];
        for e in &self.live_embeddings {
            for (s, v) in sum.iter_mut().zip(e.0.iter()) {
                *s += v;
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm <= f32::EPSILON {
            return Some(first.clone());
        }
        Some(Embedding(sum.map(|v| v / norm)))
    }

    /// Decides the verdict once (when the plan finishes, or when the call ends first).
    fn conclude(&mut self, ended_early: Option<&'static str>) {
        if self.verdict_reached || (self.liveness.is_none() && ended_early.is_none()) {
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
        // The checks are done when the challenges and the document step (if any) are.
        let done = self.liveness.as_ref().is_some_and(|l| l.is_finished())
            && self.document.as_ref().is_none_or(|d| d.outcome.is_some());
        let mut verdict = decide(&VerdictInputs {
            document,
            liveness: self.liveness.as_ref().map(|l| l.outcome()),
            face_match: self.face_match(),
            network_poor_ms: self.network_poor_ms,
            persistent_faults: faults,
            step_faults: self.failed_step_faults.clone(),
            ended_early: if done { None } else { ended_early },
            provenance: Some(self.provenance.scores()),
        });
        if let Some((_, read, _)) = self
            .document
            .as_ref()
            .filter(|d| d.policy.retain != Retain::None)
            .and_then(|d| d.read.as_ref())
        {
            verdict.set_document_fields(&read.fields);
        }
        verdict.live_face = self.live_face();
        tracing::info!(status = verdict.status.as_str(), "verdict");
        self.verdict_reached = true;
        self.outputs
            .push_back(CallOutput::Verdict(Box::new(verdict)));
    }

    fn emit(&mut self, event: CallEvent) {
        self.outputs.push_back(CallOutput::Event(event));
    }

    /// Asks for an evidence frame under `name`, once per name, when evidence is kept and a
    /// frame has been decoded.
    fn keep_evidence(&mut self, name: &str, image: EvidenceImage) {
        let decoded = self.counters.width > 0 || matches!(image, EvidenceImage::Picture(_));
        if !self.cfg.keep_evidence || !decoded || self.evidence.iter().any(|e| e == name) {
            return;
        }
        self.evidence.push(name.to_string());
        self.outputs.push_back(CallOutput::Evidence {
            name: name.to_string(),
            image,
        });
    }

    /// Hints raised or cleared by a health monitor; the device's state follows a camera or
    /// microphone change.
    fn health(&mut self, captured: Instant, changes: Vec<HealthChange>, source: &'static str) {
        if changes.is_empty() || self.verdict_reached {
            return;
        }
        for change in changes {
            let (code, active) = match change {
                HealthChange::Raised(c) => (c, true),
                HealthChange::Cleared(c) => (c, false),
            };
            self.guide(code, active, source, captured);
        }
        if source != "face" {
            self.emit(CallEvent::Device {
                camera: self.camera.state(),
                microphone: self.mic.state(),
            });
        }
    }

    fn guide(&mut self, code: ReasonCode, active: bool, source: &'static str, captured: Instant) {
        tracing::debug!(code = code.as_str(), active, "guidance");
        self.emit(CallEvent::Guidance(Guidance {
            code: code.as_str(),
            active,
            hint_key: code.hint_key(),
            source,
            latency_ms: 0.0,
            captured,
        }));
    }

    fn report_quality(&mut self) {
        let Some(m) = self.last_metrics else { return };
        let c = &self.counters;
        let report = QualityReport {
            mean_luma: round1(m.mean_luma),
            dynamic_range: round1(m.dynamic_range),
            underexposed: round3(m.underexposed),
            overexposed: round3(m.overexposed),
            glare: round3(m.glare),
            sharpness: round1(m.sharpness),
            color_cast: round1(m.color_cast),
            width: c.width,
            height: c.height,
            analyzed_fps: self.analyzed_in_window,
            frames_decoded: c.frames_decoded,
            frames_skipped: c.frames_skipped,
            decode_errors: c.decode_errors,
            active: self.guidance.active().iter().map(|i| i.code()).collect(),
        };
        self.analyzed_in_window = 0;
        self.emit(CallEvent::Quality(report));
    }
}

/// Embeds a good frontal frame at most once a second (up to `MAX_LIVE_EMBEDDINGS`), for the
/// reference-photo match: frontal, well exposed.
fn collect_embedding(
    models: &FaceModels,
    embeddings: &mut Vec<Embedding>,
    next: &mut Option<Instant>,
    scratch: &mut Vec<f32>,
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
    match embed_face(models, image, &face.landmarks, scratch) {
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

#[cfg(test)]
mod tests {
    //! The core driven with exact timestamps, without models: the phase scheduler, the device
    //! checks, the timers, evidence and the verdict. Calls with faces are driven through it by
    //! `tests/it/call_core.rs`.

    use super::*;
    use crate::events::SessionEvent;

    fn config() -> CallConfig {
        CallConfig {
            analysis_fps: 15.0,
            wants_audio: true,
            face_models: None,
            pool_hint: 0,
            liveness: None,
            light: LightMode::Off,
            light_seed: 1,
            document: None,
            document_step_id: 7,
            today: (2026, 12, 7),
            keep_evidence: true,
        }
    }

    /// A 640x480 picture that changes with `n` (a moving diagonal pattern), never black.
    fn scene(n: usize) -> Frame {
        let mut f = Frame::new(640, 480);
        for (i, p) in f.y.iter_mut().enumerate() {
            let (x, y) = (i % 640, i / 640);
            *p = (40 + (x + 2 * y + 3 * n) % 160) as u8;
        }
        f.u.fill(128);
        f.v.fill(128);
        f
    }

    fn black() -> Frame {
        let mut f = Frame::new(640, 480);
        f.y.fill(16);
        f.u.fill(128);
        f.v.fill(128);
        f
    }

    /// Steps the core's timers up to `until`, as the media thread does.
    fn run_timers(core: &mut CallCore, until: Instant) {
        while core.poll_timeout() <= until {
            let due = core.poll_timeout();
            core.handle_timeout(due);
        }
    }

    /// A frame's capture time on the sender's clock, which starts at `t0`.
    fn capture_seconds(at: Instant, t0: Instant) -> f64 {
        at.duration_since(t0).as_secs_f64()
    }

    fn events(core: &mut CallCore) -> Vec<CallEvent> {
        std::iter::from_fn(|| core.poll_output())
            .filter_map(|o| match o {
                CallOutput::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Feeds `frames` at `fps` from `t0`, with the timers, collecting the events.
    fn stream(
        core: &mut CallCore,
        t0: Instant,
        fps: f64,
        frames: usize,
        picture: impl Fn(usize) -> Frame,
    ) -> Vec<CallEvent> {
        let mut out = Vec::new();
        for n in 0..frames {
            let at = t0 + Duration::from_secs_f64(n as f64 / fps);
            run_timers(core, at);
            core.on_video_packet(at, capture_seconds(at, t0), at);
            let frame = picture(n);
            if core.on_frame(&frame, at, false) {
                core.on_frame_document(&frame, at);
            }
            out.extend(events(core));
        }
        out
    }

    #[test]
    fn every_frame_is_decoded_and_four_a_second_analysed_while_nothing_is_judged() {
        let t0 = Instant::now();
        let mut core = CallCore::new(config(), t0);
        core.on_connected(t0, true);
        stream(&mut core, t0, 30.0, 90, scene);
        let c = *core.counters();
        assert_eq!(c.frames_decoded, 90);
        assert_eq!(c.frames_analyzed + c.frames_skipped, 90);
        // `analysis::effort::GUIDANCE_FPS` over 3 s.
        assert!((11..=13).contains(&c.frames_analyzed), "{c:?}");
        assert_eq!((c.width, c.height), (640, 480));
    }

    #[test]
    fn a_frame_with_a_newer_one_waiting_is_decoded_but_never_analysed() {
        let t0 = Instant::now();
        let mut core = CallCore::new(config(), t0);
        for n in 0..30 {
            let at = t0 + Duration::from_millis(33 * n);
            assert!(!core.on_frame(&scene(n as usize), at, true));
        }
        assert_eq!(core.counters().frames_analyzed, 0);
        assert_eq!(core.counters().frames_decoded, 30);
    }

    #[test]
    fn a_black_camera_is_raised_within_its_hold_and_named_by_the_verdict() {
        let t0 = Instant::now();
        let mut core = CallCore::new(config(), t0);
        core.on_connected(t0, true);
        let seen = stream(&mut core, t0, 15.0, 45, |_| black());
        let raised = seen
            .iter()
            .find_map(|e| match e {
                CallEvent::Guidance(g) if g.code == "CAMERA_BLACK" && g.active => Some(g),
                _ => None,
            })
            .expect("CAMERA_BLACK raised");
        assert_eq!(raised.source, "camera");
        assert_eq!(raised.hint_key, ReasonCode::CameraBlack.hint_key());
        // The hold, plus at most one analysis interval at the guidance rate.
        let after = raised.captured - t0;
        assert!(after >= crate::analysis::device::BLACK_HOLD, "{after:?}");
        assert!(after <= crate::analysis::device::BLACK_HOLD + Duration::from_millis(350));
        assert!(seen
            .iter()
            .any(|e| matches!(e, CallEvent::Device { camera, .. } if *camera != "ok")));
        // No lighting hints on a black camera: the device fault is the one cause.
        assert!(!seen.iter().any(
            |e| matches!(e, CallEvent::Guidance(g) if g.code == "LIGHTING_TOO_DARK" && g.active)
        ));

        core.on_ending("hangup");
        let verdict = std::iter::from_fn(|| core.poll_output())
            .find_map(|o| match o {
                CallOutput::Verdict(v) => Some(v),
                _ => None,
            })
            .expect("a verdict when the call ends");
        assert!(
            verdict
                .reasons
                .iter()
                .any(|r| r.code == ReasonCode::CameraBlack),
            "{:?}",
            verdict.reasons
        );
        // Once only.
        core.on_ending("hangup");
        assert!(core.poll_output().is_none());
        // After the verdict nothing is measured: the shell stops decoding, and neither the
        // camera that stops (the sender on its result screen) nor the timers raise anything.
        assert!(!core.wants_media());
        core.on_network(t0 + Duration::from_secs(4), true, true);
        run_timers(&mut core, t0 + Duration::from_secs(10));
        assert!(core.poll_output().is_none());
    }

    #[test]
    fn the_microphone_level_and_the_quality_summary_come_on_their_timers() {
        let t0 = Instant::now();
        let mut core = CallCore::new(config(), t0);
        core.on_connected(t0, true);
        // 20 ms packets of a constant 0.1 signal: -20 dBFS.
        let pcm = vec![0.1f32; 960];
        let mut seen = Vec::new();
        for n in 0..50 {
            let at = t0 + Duration::from_millis(20 * n);
            run_timers(&mut core, at);
            core.on_audio(&pcm, -20.0, at);
            if n % 2 == 0 {
                core.on_video_packet(at, capture_seconds(at, t0), at);
                core.on_frame(&scene(n as usize), at, false);
            }
            seen.extend(events(&mut core));
        }
        let levels: Vec<f64> = seen
            .iter()
            .filter_map(|e| match e {
                CallEvent::AudioLevel { dbfs } => Some(*dbfs),
                _ => None,
            })
            .collect();
        // One every 200 ms over the first second (the first timer falls at 200 ms).
        assert_eq!(levels.len(), 4, "{levels:?}");
        assert!(
            levels.iter().all(|d| (*d + 20.0).abs() < 0.05),
            "{levels:?}"
        );
        let quality: Vec<&QualityReport> = seen
            .iter()
            .filter_map(|e| match e {
                CallEvent::Quality(q) => Some(q),
                _ => None,
            })
            .collect();
        assert!(quality.is_empty(), "the first summary is due at 1 s");
        run_timers(&mut core, t0 + Duration::from_secs(1));
        let q = events(&mut core)
            .into_iter()
            .find_map(|e| match e {
                CallEvent::Quality(q) => Some(q),
                _ => None,
            })
            .expect("a quality summary at 1 s");
        assert_eq!((q.width, q.height, q.frames_decoded), (640, 480, 25));
        assert_eq!(q.analyzed_fps, core.counters().frames_analyzed);
        assert_eq!(core.counters().audio_decoded, 50);
    }

    #[test]
    fn evidence_is_asked_for_once_per_name_and_only_after_a_frame_and_when_kept() {
        let t0 = Instant::now();
        let mut core = CallCore::new(config(), t0);
        core.keep_evidence("frontal", EvidenceImage::LatestFrame);
        assert!(core.poll_output().is_none(), "nothing decoded yet");
        core.on_frame(&scene(0), t0, false);
        while core.poll_output().is_some() {}
        core.keep_evidence("frontal", EvidenceImage::LatestFrame);
        core.keep_evidence("frontal", EvidenceImage::LatestFrame);
        let names: Vec<String> = std::iter::from_fn(|| core.poll_output())
            .filter_map(|o| match o {
                CallOutput::Evidence { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["frontal"]);

        let mut off = CallCore::new(
            CallConfig {
                keep_evidence: false,
                ..config()
            },
            t0,
        );
        off.on_frame(&scene(0), t0, false);
        while off.poll_output().is_some() {}
        off.keep_evidence("frontal", EvidenceImage::LatestFrame);
        assert!(off.poll_output().is_none());
    }

    #[test]
    fn video_that_stops_for_a_second_blocks_the_steps_as_a_network_freeze() {
        let t0 = Instant::now();
        let mut core = CallCore::new(config(), t0);
        core.on_video_packet(t0, 0.0, t0);
        assert_eq!(core.blocking(t0 + Duration::from_millis(999)), None);
        assert_eq!(
            core.blocking(t0 + MEDIA_GAP_PAUSE),
            Some(ReasonCode::NetworkFrozen)
        );
    }

    #[test]
    fn events_are_named_and_serialise_to_the_payloads_the_page_reads() {
        let e = CallEvent::ChallengePaused {
            id: 3,
            because: ReasonCode::FaceNotFound,
            hint_key: ReasonCode::FaceNotFound.hint_key(),
        };
        assert_eq!(e.kind(), "challenge_paused");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["because"], "FACE_NOT_FOUND");
        let g = CallEvent::Guidance(Guidance {
            code: "CAMERA_BLACK",
            active: true,
            hint_key: "x".into(),
            source: "camera",
            latency_ms: 12.5,
            captured: Instant::now(),
        });
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 5, "{v}");
        assert_eq!(v["latency_ms"], 12.5);
        let passed = CallEvent::ChallengePassed {
            id: 9,
            evidence: None,
        };
        assert_eq!(
            serde_json::to_value(&passed).unwrap(),
            serde_json::json!({ "id": 9 })
        );
    }
}
