//! One session's WebRTC peer: a str0m `Rtc` (sans-IO) driven by its own task.
//!
//! The task owns the `Rtc` and everything derived from it (tracks, network monitors); it is fed
//! datagrams by the mux and commands by the WHIP handlers, and reports through the session's
//! event bus and two `watch` channels (status and running summary). Nothing else touches the `Rtc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{
    Candidate, Event as RtcEvent, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::decode::VideoCodec;
use super::mux::{Datagram, MediaMux};
use super::netstats::{
    score, NetworkWarningState, StreamKind, StreamMonitor, StreamReport, WarningChange,
};
use super::pipeline::{DecodeSummary, Pipeline, PipelineConfig, PipelineFeedback, PipelineInput};
use super::sdp::{self, SdpError};
use super::wire::{classify, parse_rtp_header, DatagramKind};
use crate::events::{Event, EventBus, SessionEvent};

/// Datagrams queued per session before the mux drops (a stalled task must not grow memory).
const INBOX_CAPACITY: usize = 2048;
const STATS_TICK: Duration = Duration::from_secs(1);
/// Video packets str0m holds back waiting for a missing one (a NACK repair) before it moves on.
const VIDEO_REORDER_PACKETS: usize = 120;
/// At most one keyframe request per this interval after losses.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error("the session's media task has ended")]
    Gone,
}

/// Why a call ended; recorded with the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client sent WHIP DELETE.
    Deleted,
    /// ICE/DTLS did not complete within the connect timeout.
    IceFailed,
    /// Connectivity (ICE consent) was lost and not restored within the grace period.
    ConnectionLost,
    /// The remote closed DTLS/SCTP.
    ClosedByPeer,
    /// Connected, but no media arrived for the idle timeout.
    IdleTimeout,
    /// The call reached its maximum duration.
    MaxDuration,
    /// The server is shutting down.
    ServerShutdown,
    /// An internal error in the media stack (logged).
    InternalError,
    /// The checks finished and a verdict was reached.
    Completed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::IceFailed => "ice_failed",
            EndReason::ConnectionLost => "connection_lost",
            EndReason::ClosedByPeer => "closed_by_peer",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxDuration => "max_duration",
            EndReason::ServerShutdown => "server_shutdown",
            EndReason::InternalError => "internal_error",
            EndReason::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PeerStatus {
    Connecting,
    Connected { connect_ms: u64 },
    Reconnecting,
    Ended(EndReason),
}

/// What the WHIP handlers can ask of a running peer.
#[derive(Debug)]
pub enum PeerCommand {
    /// A WHIP PATCH: trickled candidates, and the client's ICE credentials when the fragment
    /// carries them. New credentials mean an ICE restart; the reply then holds the server's new ones.
    Patch {
        remote: Option<IceCreds>,
        candidates: Vec<Candidate>,
        reply: oneshot::Sender<Result<Option<IceCreds>, PeerError>>,
    },
    Close(EndReason),
}

/// What the peer tells the session's events: the connection and the network.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum PeerEvent {
    /// ICE and DTLS are up, `connect_ms` after the offer was answered.
    Connected {
        connect_ms: u64,
    },
    /// A media track was negotiated.
    Track {
        mid: String,
        kind: &'static str,
    },
    /// The connection dropped (`disconnected`) or came back (`connected`).
    ConnectionState {
        state: &'static str,
    },
    /// The page restarted ICE (a new network path).
    IceRestart {},
    /// The network's state, once a second (`media::netstats`); `streams` per track.
    Network {
        quality: &'static str,
        r_factor: f64,
        mos: f64,
        issues: Vec<&'static str>,
        streams: Vec<Value>,
    },
    /// A network warning raised (with its code and the quality) or cleared.
    NetworkWarning {
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<&'static str>,
        active: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        quality: Option<&'static str>,
    },
    CallEnded {
        reason: &'static str,
    },
}

impl SessionEvent for PeerEvent {
    fn kind(&self) -> &'static str {
        match self {
            PeerEvent::Connected { .. } => "connected",
            PeerEvent::Track { .. } => "track",
            PeerEvent::ConnectionState { .. } => "connection_state",
            PeerEvent::IceRestart {} => "ice_restart",
            PeerEvent::Network { .. } => "network",
            PeerEvent::NetworkWarning { .. } => "network_warning",
            PeerEvent::CallEnded { .. } => "call_ended",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub session: Arc<str>,
    /// Address in our host candidate (what clients send to).
    pub advertised: SocketAddr,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_duration: Duration,
    pub reconnect_grace: Duration,
    /// Frames analysed per second at most.
    pub analysis_fps: f64,
    /// The session's policy wants a microphone (else no `MIC_MISSING`).
    pub wants_audio: bool,
    /// Face models when face analysis is on.
    pub face_models: Option<std::sync::Arc<crate::analysis::face::FaceModels>>,
    /// The liveness plan for this call (none: no challenges, no verdict from the call).
    pub liveness: Option<crate::liveness::plan::ChallengePlan>,
    /// Whether the challenges start with the screen-light step.
    pub light: crate::liveness::LightMode,
    /// The ID-document step after the challenges, and the models that read the card.
    pub document: Option<(
        crate::document::DocumentPolicy,
        std::sync::Arc<crate::document::DocumentReader>,
    )>,
    /// The reference photo's embedding, when the relying party uploaded one.
    pub reference: super::pipeline::ReferenceWatch,
    /// Where evidence frames are written (none: not kept).
    pub evidence: Option<super::pipeline::EvidenceWriter>,
    /// The node's analysis lag and queue drops (admission control).
    pub load: std::sync::Arc<super::admission::NodeLoad>,
}

/// Per-track totals for the session summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TrackSummary {
    pub mid: String,
    pub kind: &'static str,
    pub codec: Option<String>,
    /// Video frames (or audio packets) delivered whole by the jitter buffer.
    pub frames: u64,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    pub expected_packets: u64,
    pub received_packets: u64,
    pub loss_before_repair: f64,
    pub loss_after_repair: f64,
    pub repairs_received: u64,
    pub jitter_ms: f64,
    pub reordered: u64,
    pub duplicates: u64,
    pub freeze_count: u64,
    pub total_freeze_ms: f64,
    /// Freezes the sender caused (no frames captured), not the network.
    pub stall_count: u64,
    pub total_stall_ms: f64,
    pub nacks_sent: u64,
    pub rtt_ms: Option<f64>,
}

/// The running network summary of a call, served by `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MediaSummary {
    pub connect_ms: Option<u64>,
    pub quality: Option<&'static str>,
    pub mos: Option<f64>,
    pub poor_network_ms: u64,
    pub warnings: Vec<&'static str>,
    pub tracks: Vec<TrackSummary>,
    pub input_errors: u64,
    pub decode: DecodeSummary,
    /// The verdict, once reached (with scores and evidence: for the relying party only).
    pub verdict: Option<crate::verdict::Verdict>,
}

pub struct PeerHandle {
    pub commands: mpsc::Sender<PeerCommand>,
    pub status: watch::Receiver<PeerStatus>,
    pub summary: watch::Receiver<MediaSummary>,
    /// The SDP answer for the WHIP 201.
    pub answer: String,
    pub local_ice: IceCreds,
}

/// str0m's parse errors quote parser internals (positions as memory addresses): logged, not
/// returned to the client.
fn unparsable(e: impl std::fmt::Display) -> SdpError {
    tracing::debug!(error = %e, "SDP offer rejected by the parser");
    SdpError::Malformed("the offer could not be parsed as WebRTC SDP".into())
}

/// The server's side of a call before the offer is applied: the codecs it accepts, its ICE
/// credentials, stats and reordering settings.
pub fn server_rtc(local_ice: IceCreds, now: Instant) -> Rtc {
    RtcConfig::new()
        .clear_codecs()
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_h264(true)
        .enable_opus(true, false)
        .set_local_ice_credentials(local_ice)
        .set_stats_interval(Some(STATS_TICK))
        // Hold more packets for NACK repairs than str0m's default 30: at 1-2 Mbit/s that is only
        // a few frames, so a retransmission delayed by jitter missed its frame. Verification
        // prefers complete frames to low latency.
        .set_reordering_size_video(VIDEO_REORDER_PACKETS)
        .build(now)
}

/// Accepts a WHIP offer: validates it, builds the `Rtc`, registers with the mux and starts the task.
pub fn accept_offer(
    offer: &str,
    cfg: PeerConfig,
    bus: EventBus,
    mux: Arc<MediaMux>,
) -> Result<PeerHandle, PeerError> {
    let offer = &sdp::check_offer(offer)?;
    let parsed = SdpOffer::from_sdp_string(offer).map_err(unparsable)?;
    let now = Instant::now();
    let local_ice = IceCreds::new();
    let mut rtc = server_rtc(local_ice.clone(), now);
    let candidate = Candidate::host(cfg.advertised, "udp")
        .map_err(|e| SdpError::Rejected(format!("host candidate: {e}")))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc
        .sdp_api()
        .accept_offer(parsed)
        .map_err(|e| SdpError::Rejected(e.to_string()))?
        .to_sdp_string();

    let (feedback_tx, feedback) = mpsc::channel(8);
    let pipeline = Pipeline::spawn(
        PipelineConfig {
            analysis_fps: cfg.analysis_fps,
            wants_audio: cfg.wants_audio,
            face_models: cfg.face_models.clone(),
            liveness: cfg.liveness.clone(),
            light: cfg.light,
            document: cfg.document.clone(),
            reference: cfg.reference.clone(),
            evidence: cfg.evidence.clone(),
            load: cfg.load.clone(),
        },
        bus.clone(),
        feedback_tx,
    )
    .map_err(|e| SdpError::Rejected(format!("cannot start the media thread: {e}")))?;
    let (inbox_tx, inbox) = mpsc::channel(INBOX_CAPACITY);
    let (commands_tx, commands) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(PeerStatus::Connecting);
    let (summary_tx, summary) = watch::channel(MediaSummary::default());
    mux.register(
        &cfg.session,
        &local_ice.ufrag,
        &local_ice.pass,
        inbox_tx.clone(),
    );

    let task = PeerTask {
        events: bus.subscribe(),
        bus,
        rtc,
        mux,
        inbox,
        inbox_tx,
        commands,
        status: status_tx,
        summary: summary_tx,
        offer: offer.to_string(),
        verified_sources: Vec::new(),
        local_ufrag: local_ice.ufrag.clone(),
        started: now,
        last_input: now,
        connected_at: None,
        disconnected_at: None,
        last_media: None,
        channel: None,
        tracks: Vec::new(),
        warning: NetworkWarningState::new(),
        next_tick: now + STATS_TICK,
        input_errors: 0,
        ending: None,
        pipeline: Some(pipeline),
        feedback,
        video_gap: false,
        end_after_verdict: None,
        cfg,
    };
    tokio::spawn(task.run());
    Ok(PeerHandle {
        commands: commands_tx,
        status,
        summary,
        answer,
        local_ice,
    })
}

/// A received media track and its network monitor.
struct Track {
    mid: Mid,
    kind: MediaKind,
    codec: Option<Codec>,
    ssrc: Option<u32>,
    rtx: Option<u32>,
    monitor: StreamMonitor,
    frames: u64,
    keyframes: u64,
    keyframe_requests: u64,
    last_keyframe_request: Option<Instant>,
    nacks_seen: u64,
}

struct PeerTask {
    cfg: PeerConfig,
    rtc: Rtc,
    mux: Arc<MediaMux>,
    bus: EventBus,
    events: broadcast::Receiver<Arc<Event>>,
    inbox: mpsc::Receiver<Datagram>,
    /// Kept so an ICE restart can register the new ufrag with the same inbox.
    inbox_tx: mpsc::Sender<Datagram>,
    commands: mpsc::Receiver<PeerCommand>,
    status: watch::Sender<PeerStatus>,
    summary: watch::Sender<MediaSummary>,
    offer: String,
    /// Remote addresses str0m accepted for media (told to the mux once each).
    verified_sources: Vec<SocketAddr>,
    local_ufrag: String,
    started: Instant,
    /// str0m needs monotonic input times; arrivals stamped by the mux can trail a timeout we fed.
    last_input: Instant,
    connected_at: Option<Instant>,
    disconnected_at: Option<Instant>,
    last_media: Option<Instant>,
    channel: Option<str0m::channel::ChannelId>,
    tracks: Vec<Track>,
    warning: NetworkWarningState,
    next_tick: Instant,
    input_errors: u64,
    ending: Option<EndReason>,
    /// Decode and analysis thread; taken when the call ends.
    pipeline: Option<Pipeline>,
    feedback: mpsc::Receiver<PipelineFeedback>,
    /// A video frame could not be queued: the next one starts a gap (decode from a keyframe).
    video_gap: bool,
    /// After a verdict the call ends shortly (so the verdict event reaches the page first).
    end_after_verdict: Option<Instant>,
}

/// Time between the verdict and the end of the call.
const VERDICT_GRACE: Duration = Duration::from_millis(1500);

impl PeerTask {
    async fn run(mut self) {
        let reason = loop {
            let deadline = match self.drain_output().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(session = %self.cfg.session, error = %e, "media stack error");
                    break EndReason::InternalError;
                }
            };
            if let Some(reason) = self.ending.take() {
                break reason;
            }
            let wake = deadline.min(self.next_tick);
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => self.ending = Some(EndReason::InternalError),
                },
                Some(datagram) = self.inbox.recv() => {
                    self.on_datagram(datagram);
                    // Take whatever else is queued before polling output again.
                    while let Ok(d) = self.inbox.try_recv() {
                        self.on_datagram(d);
                    }
                }
                event = self.events.recv(), if self.channel.is_some() => self.forward_event(event),
                Some(feedback) = self.feedback.recv() => match feedback {
                    PipelineFeedback::NeedKeyframe => self.request_keyframe(),
                    PipelineFeedback::VerdictReady => {
                        self.end_after_verdict.get_or_insert(Instant::now() + VERDICT_GRACE);
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.feed(Input::Timeout(now.max(self.last_input)));
                    if now >= self.next_tick {
                        self.tick(now);
                    }
                }
            }
        };
        self.finish(reason).await;
    }

    fn feed(&mut self, input: Input) {
        let t = match &input {
            Input::Timeout(t) | Input::Receive(t, _) => *t,
        };
        self.last_input = self.last_input.max(t);
        if let Err(e) = self.rtc.handle_input(input) {
            self.input_errors += 1;
            tracing::debug!(session = %self.cfg.session, error = %e, "input rejected");
        }
    }

    async fn drain_output(&mut self) -> Result<Instant, str0m::RtcError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => self.mux.send_to(&t.contents, t.destination).await,
                Output::Event(e) => self.on_rtc_event(e),
            }
        }
    }

    fn on_datagram(&mut self, d: Datagram) {
        let kind = classify(&d.contents);
        let header = match kind {
            DatagramKind::Rtp => parse_rtp_header(&d.contents),
            _ => None,
        };
        let Ok(contents) = (&d.contents[..]).try_into() else {
            self.input_errors += 1;
            return;
        };
        let at = d.arrival.max(self.last_input);
        let input = Input::Receive(
            at,
            Receive {
                proto: Protocol::Udp,
                source: d.source,
                destination: self.cfg.advertised,
                contents,
            },
        );
        // Media counts only from an address str0m's ICE agent has checked (the nominated pair or
        // another succeeded one): a forged packet from an address learned by a replayed STUN
        // request is rejected by str0m and must not reach the network monitor either.
        let verified = kind != DatagramKind::Stun && self.rtc.accepts(&input);
        self.feed(input);
        if verified && !self.verified_sources.contains(&d.source) {
            self.verified_sources.push(d.source);
            self.mux.mark_verified(&self.cfg.session, d.source);
        }
        if let Some(h) = header.filter(|_| verified) {
            // Looked up after str0m saw the packet, so a new stream's SSRC is already known to it.
            match self.track_for_ssrc(h.ssrc) {
                Some((i, false)) => {
                    self.tracks[i].monitor.on_rtp(
                        d.arrival,
                        h.sequence,
                        h.timestamp,
                        h.payload_len,
                    );
                    self.last_media = Some(d.arrival);
                }
                Some((i, true)) => self.tracks[i].monitor.on_repair(d.arrival, h.payload_len),
                None => {}
            }
        }
    }

    /// (track index, is_repair) for an SSRC str0m has mapped; unknown SSRCs are not counted.
    fn track_for_ssrc(&mut self, ssrc: u32) -> Option<(usize, bool)> {
        let find = |tracks: &[Track]| {
            tracks.iter().enumerate().find_map(|(i, t)| {
                if t.ssrc == Some(ssrc) {
                    Some((i, false))
                } else if t.rtx == Some(ssrc) {
                    Some((i, true))
                } else {
                    None
                }
            })
        };
        if let Some(hit) = find(&self.tracks) {
            return Some(hit);
        }
        // Refresh the SSRC mapping from str0m (cheap: a handful of tracks).
        let mut api = self.rtc.direct_api();
        for t in &mut self.tracks {
            if let Some(rx) = api.stream_rx_by_mid(t.mid, None) {
                t.ssrc = Some(*rx.ssrc());
                t.rtx = rx.rtx().map(|s| *s);
            }
        }
        find(&self.tracks)
    }

    fn on_rtc_event(&mut self, e: RtcEvent) {
        match e {
            RtcEvent::Connected => {
                let now = Instant::now();
                self.disconnected_at = None;
                if self.connected_at.is_none() {
                    self.connected_at = Some(now);
                    let connect_ms = now.duration_since(self.started).as_millis() as u64;
                    self.status
                        .send_replace(PeerStatus::Connected { connect_ms });
                    self.summary
                        .send_modify(|s| s.connect_ms = Some(connect_ms));
                    self.bus.emit(&PeerEvent::Connected { connect_ms });
                    let has_audio = sdp::offers_audio(&self.offer);
                    if let Some(p) = &self.pipeline {
                        p.submit(PipelineInput::Connected { at: now, has_audio });
                    }
                }
            }
            RtcEvent::IceConnectionStateChange(state) => self.on_ice_state(state),
            RtcEvent::MediaAdded(m) => {
                let (kind, clock_rate) = match m.kind {
                    MediaKind::Audio => (StreamKind::Audio, 48_000),
                    MediaKind::Video => (StreamKind::Video, 90_000),
                };
                self.tracks.push(Track {
                    mid: m.mid,
                    kind: m.kind,
                    codec: None,
                    ssrc: None,
                    rtx: None,
                    monitor: StreamMonitor::new(kind, clock_rate, Instant::now()),
                    frames: 0,
                    keyframes: 0,
                    keyframe_requests: 0,
                    last_keyframe_request: None,
                    nacks_seen: 0,
                });
                self.bus.emit(&PeerEvent::Track {
                    mid: m.mid.to_string(),
                    kind: kind_str(m.kind),
                });
            }
            RtcEvent::MediaData(data) => self.on_media(data),
            RtcEvent::MediaIngressStats(s) => {
                if let Some(t) = self.tracks.iter_mut().find(|t| t.mid == s.mid) {
                    if s.nacks > t.nacks_seen {
                        t.monitor.on_nack_sent(s.nacks - t.nacks_seen);
                        t.nacks_seen = s.nacks;
                    }
                    if let Some(rtt) = s.rtt {
                        t.monitor.set_rtt(rtt);
                    }
                }
            }
            RtcEvent::ChannelOpen(id, label) if label == "vericall" => {
                self.channel = Some(id);
                tracing::debug!(session = %self.cfg.session, "events data channel open");
            }
            RtcEvent::ChannelClose(id) if self.channel == Some(id) => self.channel = None,
            RtcEvent::Closed => self.ending = Some(EndReason::ClosedByPeer),
            _ => {}
        }
    }

    fn on_ice_state(&mut self, state: IceConnectionState) {
        match state {
            IceConnectionState::Disconnected
                if self.connected_at.is_some() && self.disconnected_at.is_none() =>
            {
                self.disconnected_at = Some(Instant::now());
                self.status.send_replace(PeerStatus::Reconnecting);
                self.bus.emit(&PeerEvent::ConnectionState {
                    state: "disconnected",
                });
            }
            IceConnectionState::Connected | IceConnectionState::Completed
                if self.disconnected_at.is_some() =>
            {
                self.disconnected_at = None;
                {
                    let connect_ms = self
                        .connected_at
                        .map(|c| c.duration_since(self.started).as_millis() as u64)
                        .unwrap_or(0);
                    self.status
                        .send_replace(PeerStatus::Connected { connect_ms });
                    self.bus
                        .emit(&PeerEvent::ConnectionState { state: "connected" });
                }
            }
            _ => {}
        }
    }

    fn on_media(&mut self, data: MediaData) {
        let is_keyframe = data.is_keyframe();
        let Some(t) = self.tracks.iter_mut().find(|t| t.mid == data.mid) else {
            return;
        };
        let codec = data.params.spec().codec;
        t.codec = Some(codec);
        t.frames += 1;
        t.keyframes += u64::from(is_keyframe);
        t.monitor.on_delivered(
            data.network_time,
            data.time.as_seconds(),
            **data.seq_range.start(),
            **data.seq_range.end(),
        );
        let Some(pipeline) = &self.pipeline else {
            return;
        };
        let input = match (t.kind, codec) {
            (MediaKind::Audio, Codec::Opus) => PipelineInput::Audio {
                data: data.data.clone(),
                arrival: data.network_time,
            },
            (MediaKind::Video, Codec::Vp8 | Codec::Vp9 | Codec::H264) => PipelineInput::Video {
                data: data.data.clone(),
                codec: match codec {
                    Codec::Vp8 => VideoCodec::Vp8,
                    Codec::Vp9 => VideoCodec::Vp9,
                    _ => VideoCodec::H264,
                },
                keyframe: is_keyframe,
                discontinuity: !data.contiguous || self.video_gap,
                arrival: data.network_time,
                capture_seconds: data.time.as_seconds(),
            },
            _ => return,
        };
        let is_video = t.kind == MediaKind::Video;
        let queued = pipeline.submit(input);
        if is_video {
            self.video_gap = !queued;
            if !queued {
                self.request_keyframe();
            }
        }
    }

    /// Asks the sender for a keyframe (PLI), at most once per `KEYFRAME_REQUEST_INTERVAL`.
    fn request_keyframe(&mut self) {
        let now = Instant::now();
        let Some(t) = self.tracks.iter_mut().find(|t| t.kind == MediaKind::Video) else {
            return;
        };
        if t.last_keyframe_request
            .is_some_and(|at| now.duration_since(at) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let mid = t.mid;
        t.last_keyframe_request = Some(now);
        t.keyframe_requests += 1;
        t.monitor.on_pli_sent();
        if let Some(mut w) = self.rtc.writer(mid) {
            if let Err(e) = w.request_keyframe(None, KeyframeRequestKind::Pli) {
                tracing::debug!(error = %e, "keyframe request failed");
            }
        }
    }

    fn on_command(&mut self, cmd: PeerCommand) {
        match cmd {
            PeerCommand::Patch {
                remote,
                candidates,
                reply,
            } => {
                let current = sdp::ice_credentials(&self.offer);
                let result = match remote {
                    Some(r) if Some(&r) != current.as_ref() => self.ice_restart(&r).map(Some),
                    _ => Ok(None),
                };
                if result.is_ok() {
                    for c in candidates {
                        self.rtc.add_remote_candidate(c);
                    }
                }
                let _ = reply.send(result);
            }
            PeerCommand::Close(reason) => self.ending = Some(reason),
        }
    }

    /// Restarts ICE by re-accepting the original offer with the client's new credentials, which
    /// is how str0m learns of a remote-initiated restart; the answer carries our new credentials.
    fn ice_restart(&mut self, remote: &IceCreds) -> Result<IceCreds, PeerError> {
        let offer = sdp::with_ice_credentials(&self.offer, remote);
        let parsed = SdpOffer::from_sdp_string(&offer).map_err(unparsable)?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| SdpError::Rejected(e.to_string()))?
            .to_sdp_string();
        let local = sdp::ice_credentials(&answer)
            .ok_or_else(|| SdpError::Rejected("answer without ICE credentials".into()))?;
        self.mux.unregister_ufrag(&self.local_ufrag);
        self.mux.register(
            &self.cfg.session,
            &local.ufrag,
            &local.pass,
            self.inbox_tx.clone(),
        );
        self.local_ufrag = local.ufrag.clone();
        self.offer = offer;
        self.bus.emit(&PeerEvent::IceRestart {});
        Ok(local)
    }

    fn forward_event(&mut self, event: Result<Arc<Event>, broadcast::error::RecvError>) {
        let Ok(event) = event else {
            // Lagged: the page can re-read the timeline; closed cannot happen while we hold the bus.
            return;
        };
        let Some(id) = self.channel else { return };
        if let Some(mut ch) = self.rtc.channel(id) {
            let text = event.json_text();
            if !matches!(ch.write(false, text.as_bytes()), Ok(true)) {
                tracing::debug!(session = %self.cfg.session, "data channel full; event skipped");
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.next_tick = now + STATS_TICK;
        let mut reports = Vec::with_capacity(self.tracks.len());
        for t in &mut self.tracks {
            reports.push(t.monitor.tick(now));
        }
        if self.connected_at.is_some() && !reports.is_empty() {
            let s = score(&reports);
            if let Some(p) = &self.pipeline {
                let poor =
                    s.quality == super::netstats::Quality::Poor || self.warning.active().is_some();
                let sender_stalled = reports
                    .iter()
                    .any(|r| r.kind == StreamKind::Video && r.window_stalls > 0);
                p.submit(PipelineInput::Network {
                    poor,
                    sender_stalled,
                });
            }
            let streams: Vec<Value> = self
                .tracks
                .iter()
                .zip(&reports)
                .map(|(t, r)| stream_json(t, r))
                .collect();
            self.bus.emit(&PeerEvent::Network {
                quality: s.quality.as_str(),
                r_factor: round2(s.r_factor),
                mos: round2(s.mos),
                issues: s.issues.iter().map(|i| i.reason_code()).collect(),
                streams,
            });
            match self.warning.update(now, &s) {
                Some(WarningChange::Raised(issue)) => {
                    self.bus.emit(&PeerEvent::NetworkWarning {
                        code: Some(issue.reason_code()),
                        active: true,
                        quality: Some(s.quality.as_str()),
                    });
                    self.summary
                        .send_modify(|m| m.warnings.push(issue.reason_code()));
                }
                Some(WarningChange::Cleared) => {
                    self.bus.emit(&PeerEvent::NetworkWarning {
                        code: None,
                        active: false,
                        quality: None,
                    });
                }
                None => {}
            }
            let poor_ms = self.warning.poor_duration().as_millis() as u64;
            let tracks: Vec<TrackSummary> = self.tracks.iter().map(track_summary).collect();
            let input_errors = self.input_errors;
            let decode = self.decode_summary();
            self.summary.send_modify(|m| {
                m.decode = decode;
                m.quality = Some(s.quality.as_str());
                m.mos = Some(round2(s.mos));
                m.poor_network_ms = poor_ms;
                m.tracks = tracks;
                m.input_errors = input_errors;
            });
        }
        self.check_timeouts(now);
    }

    fn check_timeouts(&mut self, now: Instant) {
        if self.end_after_verdict.is_some_and(|t| now >= t) {
            self.ending.get_or_insert(EndReason::Completed);
        }
        let since_start = now.duration_since(self.started);
        self.ending = match (self.connected_at, self.disconnected_at) {
            (None, _) if since_start >= self.cfg.connect_timeout => Some(EndReason::IceFailed),
            (Some(_), Some(lost)) if now.duration_since(lost) >= self.cfg.reconnect_grace => {
                Some(EndReason::ConnectionLost)
            }
            (Some(c), _) if now.duration_since(c) >= self.cfg.max_duration => {
                Some(EndReason::MaxDuration)
            }
            (Some(c), None) => {
                let quiet_since = self.last_media.unwrap_or(c);
                (now.duration_since(quiet_since) >= self.cfg.idle_timeout)
                    .then_some(EndReason::IdleTimeout)
            }
            _ => None,
        }
        .or(self.ending);
    }

    fn decode_summary(&self) -> DecodeSummary {
        self.pipeline
            .as_ref()
            .map(|p| p.stats.snapshot())
            .unwrap_or_default()
    }

    async fn finish(mut self, reason: EndReason) {
        // The media thread drains its queue and stops; joining it is blocking work.
        if let Some(p) = self.pipeline.take() {
            p.submit(PipelineInput::Ending {
                reason: reason.as_str(),
            });
            let stats = p.stats.clone();
            let verdict = p.verdict.clone();
            let _ = tokio::task::spawn_blocking(move || drop(p)).await;
            let decode = stats.snapshot();
            let verdict = verdict.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.summary.send_modify(|m| {
                m.decode = decode;
                m.verdict = verdict;
            });
        }
        self.rtc.disconnect();
        // Flush what str0m still wants to send (DTLS close_notify, RTCP BYE).
        while let Ok(Output::Transmit(t)) = self.rtc.poll_output() {
            self.mux.send_to(&t.contents, t.destination).await;
        }
        self.mux.unregister_session(&self.cfg.session);
        let tracks: Vec<TrackSummary> = self.tracks.iter().map(track_summary).collect();
        self.summary.send_modify(|m| {
            m.tracks = tracks;
            m.input_errors = self.input_errors;
        });
        self.bus.emit(&PeerEvent::CallEnded {
            reason: reason.as_str(),
        });
        tracing::info!(session = %self.cfg.session, reason = reason.as_str(), "call ended");
        self.status.send_replace(PeerStatus::Ended(reason));
    }
}

fn kind_str(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn stream_json(t: &Track, r: &StreamReport) -> Value {
    json!({
        "mid": t.mid.to_string(),
        "kind": kind_str(t.kind),
        "codec": t.codec.map(|c| c.to_string()),
        "expected": r.expected,
        "received": r.received,
        "loss_before_repair": r.loss_before_repair,
        "loss_after_repair": r.loss_after_repair,
        "window_fraction_lost": r.window_fraction_lost,
        "jitter_ms": round2(r.jitter_ms),
        "reordered": r.reordered,
        "duplicates": r.duplicates,
        "bitrate_bps": r.bitrate_bps.round(),
        "frame_rate": round2(r.frame_rate),
        "freeze_count": r.freeze_count,
        "total_freeze_ms": r.total_freeze_ms.round(),
        "stall_count": r.stall_count,
        "total_stall_ms": r.total_stall_ms.round(),
        "rtt_ms": r.rtt_ms,
        "nacks_sent": r.nacks_sent,
        "plis_sent": r.plis_sent,
    })
}

fn track_summary(t: &Track) -> TrackSummary {
    let r = t.monitor.totals();
    TrackSummary {
        mid: t.mid.to_string(),
        kind: kind_str(t.kind),
        codec: t.codec.map(|c| c.to_string()),
        frames: t.frames,
        keyframes: t.keyframes,
        keyframe_requests: t.keyframe_requests,
        expected_packets: r.expected,
        received_packets: r.received,
        loss_before_repair: r.loss_before_repair,
        loss_after_repair: r.loss_after_repair,
        repairs_received: r.repairs_received,
        jitter_ms: round2(r.jitter_ms),
        reordered: r.reordered,
        duplicates: r.duplicates,
        freeze_count: r.freeze_count,
        total_freeze_ms: r.total_freeze_ms.round(),
        stall_count: r.stall_count,
        total_stall_ms: r.total_stall_ms.round(),
        nacks_sent: r.nacks_sent,
        rtt_ms: r.rtt_ms,
    }
}
