//! Per-call decode and analysis, off the async reactor: the thread shell around the sans-IO
//! [`CallCore`].
//!
//! The peer task hands encoded frames to a dedicated thread through a bounded queue (a full queue
//! drops the frame and asks for a keyframe: memory stays bounded whatever the sender does). The
//! thread decodes every frame (decoding must not skip, or the picture breaks) and offers each to
//! the core, saying whether a newer one is already queued: the core analyses only the newest, at
//! the rate the call's phase needs, so frames still queued are decoded and skipped, never
//! analysed late. The thread does the I/O the core asks for: it publishes the core's events,
//! writes its evidence frames and hands its verdict to the peer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::admission::NodeLoad;
use super::call::{CallConfig, CallCore, CallCounters, CallEvent, CallOutput, EvidenceImage};
use super::decode::{level_dbfs, AudioDecoder, DecodedFrame, VideoCodec, VideoDecoder};
use crate::analysis::face::embed::Embedding;
use crate::analysis::face::FaceModels;
use crate::document::{DocumentPolicy, DocumentReader};
use crate::events::{EventBus, SessionEvent};
use crate::liveness::plan::ChallengePlan;
use crate::liveness::LightMode;
use crate::verdict::{ReferenceKind, Verdict};

/// Encoded frames waiting for the decoder (about 2 s of video at 30 fps plus audio).
pub(crate) const QUEUE_CAPACITY: usize = 160;
/// What the session's live face is compared with (an ID photo's embedding set or replaced
/// through the API at any time before the call ends, or the subject's enrolment in a
/// re-verification); the media thread gives each new value to the core.
pub(crate) type ReferenceWatch = tokio::sync::watch::Receiver<Option<(Embedding, ReferenceKind)>>;

/// Where a call's evidence frames go. The session hands in the store's (`session::EvidenceFolder`),
/// so the media thread does not know the store.
pub trait EvidenceSink: std::fmt::Debug + Send + Sync {
    /// Keeps `frame` under `name`; returns the file it went to.
    fn write(&self, name: &str, frame: &crate::frame::I420) -> std::io::Result<String>;
}

pub(crate) type EvidenceWriter = Arc<dyn EvidenceSink>;

#[derive(Debug, Clone)]
pub(crate) struct PipelineConfig {
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
    pub reference: ReferenceWatch,
    /// Where this session's evidence frames go (none: not kept).
    pub evidence: Option<EvidenceWriter>,
    /// The ID-document step after the challenges (policy, and the models that read the card).
    pub document: Option<(DocumentPolicy, Arc<DocumentReader>)>,
    /// The node's analysis lag and queue drops, for admission control (`media::admission`).
    pub load: Arc<NodeLoad>,
}

#[derive(Debug)]
pub(crate) enum PipelineInput {
    Video {
        data: Arc<[u8]>,
        codec: VideoCodec,
        keyframe: bool,
        /// Something was lost before this frame: decode only from the next keyframe.
        discontinuity: bool,
        arrival: Instant,
        /// The sender's capture time of the frame (its RTP clock, in seconds).
        capture_seconds: f64,
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
pub(crate) enum PipelineFeedback {
    NeedKeyframe,
    /// A verdict was reached (see `Pipeline::verdict`).
    VerdictReady,
}

/// Counters shared with the peer for the call summary: the core's, copied after each input
/// (an uncontended lock on the media thread; the peer reads them about once a second), and the
/// queue drops that [`Pipeline::submit`] counts on the peer's side.
#[derive(Debug, Default)]
pub(crate) struct PipelineStats {
    counters: std::sync::Mutex<CallCounters>,
    queue_drops: AtomicU64,
}

/// A snapshot of [`PipelineStats`] for the call summary.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct DecodeSummary {
    #[serde(flatten)]
    pub counters: CallCounters,
    pub queue_drops: u64,
}

impl PipelineStats {
    fn store(&self, c: &CallCounters) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = *c;
    }

    pub(crate) fn snapshot(&self) -> DecodeSummary {
        DecodeSummary {
            counters: *self.counters.lock().unwrap_or_else(|e| e.into_inner()),
            queue_drops: self.queue_drops.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Pipeline {
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
        let worker = Worker::new(
            cfg,
            bus,
            feedback,
            pending_video.clone(),
            stats.clone(),
            verdict.clone(),
        );
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
    pub(crate) fn submit(&self, input: PipelineInput) -> bool {
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

/// The `verdict` event: what the person's page may see of the verdict (`Verdict::for_client`).
#[derive(serde::Serialize)]
#[serde(transparent)]
struct VerdictReached(serde_json::Value);

impl SessionEvent for VerdictReached {
    fn kind(&self) -> &'static str {
        "verdict"
    }
}

struct Worker {
    core: CallCore,
    bus: EventBus,
    feedback: tokio::sync::mpsc::Sender<PipelineFeedback>,
    pending_video: Arc<AtomicUsize>,
    stats: Arc<PipelineStats>,
    load: Arc<NodeLoad>,
    reference: ReferenceWatch,
    decoder: Option<VideoDecoder>,
    audio: Option<AudioDecoder>,
    /// The newest decoded frame (what `EvidenceImage::LatestFrame` means).
    frame: DecodedFrame,
    pcm: Vec<f32>,
    wait_keyframe: bool,
    evidence: Option<EvidenceWriter>,
    /// Evidence files written so far, listed in the verdict.
    written: Vec<String>,
    verdict: Arc<std::sync::Mutex<Option<Verdict>>>,
}

impl Worker {
    fn new(
        cfg: PipelineConfig,
        bus: EventBus,
        feedback: tokio::sync::mpsc::Sender<PipelineFeedback>,
        pending_video: Arc<AtomicUsize>,
        stats: Arc<PipelineStats>,
        verdict: Arc<std::sync::Mutex<Option<Verdict>>>,
    ) -> Self {
        let id = bus.session_id();
        let mut core = CallCore::new(
            CallConfig {
                analysis_fps: cfg.analysis_fps,
                wants_audio: cfg.wants_audio,
                face_models: cfg.face_models,
                pool_hint: id.len() + id.bytes().map(usize::from).sum::<usize>(),
                liveness: cfg.liveness,
                light: cfg.light,
                light_seed: rand::random(),
                document: cfg.document,
                document_step_id: rand::random(),
                today: crate::document::today_utc(),
                keep_evidence: cfg.evidence.is_some(),
            },
            Instant::now(),
        );
        let mut reference = cfg.reference;
        if let Some((r, kind)) = reference.borrow_and_update().clone() {
            core.on_reference(r, kind);
        }
        Worker {
            core,
            bus,
            feedback,
            pending_video,
            stats,
            load: cfg.load,
            reference,
            decoder: None,
            audio: None,
            frame: DecodedFrame::default(),
            pcm: Vec::with_capacity(960 * 6),
            wait_keyframe: true,
            evidence: cfg.evidence,
            written: Vec::new(),
            verdict,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<PipelineInput>) {
        let _span = tracing::info_span!("call", session = %self.bus.session_id()).entered();
        loop {
            let wait = self
                .core
                .poll_timeout()
                .saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= self.core.poll_timeout() {
                self.core.handle_timeout(now);
            }
            self.drain();
        }
    }

    fn handle(&mut self, input: PipelineInput) {
        if self.reference.has_changed().unwrap_or(false) {
            if let Some((r, kind)) = self.reference.borrow_and_update().clone() {
                self.core.on_reference(r, kind);
            }
        }
        match input {
            PipelineInput::Video {
                data,
                codec,
                keyframe,
                discontinuity,
                arrival,
                capture_seconds,
            } => {
                self.pending_video.fetch_sub(1, Ordering::AcqRel);
                self.core
                    .on_video_packet(arrival, capture_seconds, Instant::now());
                self.on_video(&data, codec, keyframe, discontinuity, arrival);
            }
            PipelineInput::Audio { data, arrival } => self.on_audio(&data, arrival),
            PipelineInput::Connected { at, has_audio } => self.core.on_connected(at, has_audio),
            PipelineInput::Network {
                poor,
                sender_stalled,
            } => self.core.on_network(Instant::now(), poor, sender_stalled),
            PipelineInput::Ending { reason } => self.core.on_ending(reason),
        }
        self.drain();
    }

    /// Does what the core asked for, in order.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                CallOutput::Event(mut event) => {
                    if let CallEvent::Guidance(g) = &mut event {
                        let latency = g.captured.elapsed().as_secs_f64();
                        ::metrics::histogram!(crate::latency::GUIDANCE_SECONDS).record(latency);
                        g.latency_ms = (latency * 10_000.0).round() / 10.0;
                    }
                    self.bus.emit(&event);
                }
                CallOutput::FaceObserved => {
                    if let Some(o) = self.core.last_observation() {
                        self.bus.publish_live("face", o);
                    }
                }
                CallOutput::Evidence { name, image } => self.write_evidence(&name, image),
                CallOutput::Verdict(mut verdict) => {
                    verdict.frames = self.written.clone();
                    let mut page = verdict.for_client();
                    // The reference the result screen shows, for customer service.
                    page["support_ref"] =
                        crate::reasons::support_reference(self.bus.session_id()).into();
                    self.bus.emit(&VerdictReached(page));
                    *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(*verdict);
                    let _ = self.feedback.try_send(PipelineFeedback::VerdictReady);
                }
            }
        }
        self.stats.store(self.core.counters());
    }

    fn write_evidence(&mut self, name: &str, image: EvidenceImage) {
        let Some(write) = &self.evidence else {
            return;
        };
        let written = match &image {
            EvidenceImage::LatestFrame => write.write(name, &self.frame.view()),
            EvidenceImage::Picture(p) => write.write(name, &p.view()),
        };
        match written {
            Ok(file) => self.written.push(file),
            Err(e) => tracing::warn!(error = %e, name, "cannot write an evidence frame"),
        }
    }

    fn on_video(
        &mut self,
        data: &[u8],
        codec: VideoCodec,
        keyframe: bool,
        discontinuity: bool,
        arrival: Instant,
    ) {
        if !self.core.wants_media() {
            return;
        }
        if self.decoder.as_ref().is_none_or(|d| d.codec() != codec) {
            match VideoDecoder::new(codec) {
                Ok(d) => self.decoder = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create a video decoder");
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
        let decode_started = Instant::now();
        let decoded = decoder.decode(data, keyframe, &mut self.frame);
        ::metrics::histogram!(crate::latency::DECODE_SECONDS)
            .record(decode_started.elapsed().as_secs_f64());
        match decoded {
            Ok(Some(())) => {
                self.wait_keyframe = false;
                let newer_waiting = self.pending_video.load(Ordering::Acquire) > 0;
                let analysis_started = Instant::now();
                if self.core.on_frame(&self.frame, arrival, newer_waiting) {
                    // The lag that admission control watches: arrival to the end of the frame's
                    // analysis (the document step's occasional read is not per-frame work).
                    let analysed = Instant::now();
                    ::metrics::histogram!(crate::latency::ANALYSIS_SECONDS)
                        .record((analysed - analysis_started).as_secs_f64());
                    self.load.on_analysed(analysed, arrival);
                    self.core.on_frame_document(&self.frame, arrival);
                    if self.core.in_document_step() {
                        ::metrics::histogram!(crate::latency::DOCUMENT_FRAME_SECONDS)
                            .record(analysed.elapsed().as_secs_f64());
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.core.on_decode_error();
                self.wait_keyframe = true;
                tracing::debug!(error = %e, "decode error; asking for a keyframe");
                let _ = self.feedback.try_send(PipelineFeedback::NeedKeyframe);
            }
        }
    }

    fn on_audio(&mut self, packet: &[u8], arrival: Instant) {
        if !self.core.wants_media() {
            return;
        }
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
        if dec.decode(packet, &mut self.pcm).is_ok() {
            self.core
                .on_audio(&self.pcm, level_dbfs(&self.pcm), arrival);
        }
    }
}
