//! An independent WHIP client built on the `webrtc` crate (0.21, the sans-I/O `rtc` rewrite).
//!
//! It publishes synthetic media so the server is exercised by a WebRTC stack other than its own:
//! VP8 video (libvpx via `vpx-encode`, 640x480 moving gradient + bar, 15 fps) and Opus audio
//! (libopus, 440 Hz sine, 48 kHz mono, 20 ms frames).
//!
//! Signalling is plain non-trickle WHIP: ICE gathering completes before the offer is POSTed.
//! The peer binds one UDP socket on 127.0.0.1, so its only candidate is a loopback host
//! candidate (a concrete bind address is used verbatim by `webrtc`; only wildcard binds skip
//! loopback interfaces).
//!
//! Needs dev-dependencies `webrtc = "0.21"` and `rtc = "0.21"` (the `rtc` core types --
//! codecs, `Sample`, `MediaStreamTrack` parameters -- are not re-exported by `webrtc`), plus
//! `reqwest`, `vpx-encode`, `opus`, `tokio`, `anyhow`, `rand`.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpSender};

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;
pub const FPS: u32 = 15;
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;
const AUDIO_FRAME: Duration = Duration::from_millis(20);
const AUDIO_RATE: u32 = 48_000;
/// Keyframe period: `vpx-encode` cannot force keyframes, so the encoder is recreated this often
/// (its first frame is always a keyframe), letting the receiver recover from loss promptly.
const KEYFRAME_EVERY: u64 = 2 * FPS as u64;
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, Default)]
pub struct WebrtcPeerReport {
    pub connected: bool,
    /// From the start of the WHIP POST until the peer connection reached `Connected`.
    pub connect_time: Duration,
    pub video_frames_sent: u64,
    pub audio_packets_sent: u64,
    /// HTTP status of the final DELETE (`None` if it was not sent or failed at transport level).
    pub delete_status: Option<u16>,
}

/// Event handler feeding two watch channels. Implemented by hand (the trait is declared with
/// `#[async_trait]`) to avoid an `async-trait` dependency: the callbacks only publish state.
struct Handler {
    gathering: watch::Sender<RTCIceGatheringState>,
    connection: watch::Sender<RTCPeerConnectionState>,
}

type Unit<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

impl PeerConnectionEventHandler for Handler {
    fn on_ice_gathering_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCIceGatheringState,
    ) -> Unit<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.gathering.send_replace(state);
        Box::pin(std::future::ready(()))
    }

    fn on_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCPeerConnectionState,
    ) -> Unit<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.connection.send_replace(state);
        Box::pin(std::future::ready(()))
    }
}

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: AUDIO_RATE,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A send-only track with a random SSRC.
fn new_track(
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> anyhow::Result<(Arc<TrackLocalStaticSample>, u32)> {
    let ssrc = rand::random::<u32>();
    let track = TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "vericall-it-peer".to_owned(),
            format!("vericall-it-{kind}"),
            format!("vericall-it-{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        ),
    )?;
    Ok((Arc::new(track), ssrc))
}

/// Adds a send-only transceiver for a new track of `kind`.
async fn add_send_track(
    pc: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> anyhow::Result<(Arc<TrackLocalStaticSample>, u32, Arc<dyn RtpSender>)> {
    let (track, ssrc) = new_track(kind, codec)?;
    let transceiver = pc
        .add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            }),
        )
        .await?;
    let sender = transceiver
        .sender()
        .await?
        .context("send-only transceiver without sender")?;
    Ok((track, ssrc, sender))
}

/// The peer connection with both send-only tracks added, ready to create an offer.
pub struct PublishingPeer {
    pub pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    connection: watch::Receiver<RTCPeerConnectionState>,
    video: (Arc<TrackLocalStaticSample>, u32, Arc<dyn RtpSender>),
    audio: (Arc<TrackLocalStaticSample>, u32, Arc<dyn RtpSender>),
}

impl PublishingPeer {
    pub async fn new() -> anyhow::Result<PublishingPeer> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8_codec(),
                payload_type: VIDEO_PT,
            },
            RtpCodecKind::Video,
        )?;
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: AUDIO_PT,
            },
            RtpCodecKind::Audio,
        )?;
        // NACK responder/generator (+ "nack", "nack pli" feedback), TWCC, RTCP reports.
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;

        let (gathering_tx, gathering) = watch::channel(RTCIceGatheringState::New);
        let (connection_tx, connection) = watch::channel(RTCPeerConnectionState::New);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                gathering: gathering_tx,
                connection: connection_tx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let video = add_send_track(&pc, RtpCodecKind::Video, vp8_codec()).await?;
        let audio = add_send_track(&pc, RtpCodecKind::Audio, opus_codec()).await?;

        Ok(PublishingPeer {
            pc,
            gathering,
            connection,
            video,
            audio,
        })
    }

    /// Creates the offer, applies it and waits for ICE gathering to complete (non-trickle).
    /// Returns the complete offer SDP.
    pub async fn offer(&mut self) -> anyhow::Result<String> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        tokio::time::timeout(
            GATHER_TIMEOUT,
            self.gathering
                .wait_for(|s| *s == RTCIceGatheringState::Complete),
        )
        .await
        .context("ICE gathering timed out")??;
        let local = self
            .pc
            .local_description()
            .await
            .context("no local description after gathering")?;
        Ok(local.sdp)
    }
}

/// POST an SDP offer to `whip_url` with `Authorization: Bearer <token>` and
/// `Content-Type: application/sdp` (expect 201 + SDP answer), then send VP8 video at 15 fps and
/// Opus audio (20 ms frames) for `duration`; then DELETE the resource (the `Location` header of
/// the 201, resolved against the WHIP URL).
///
/// A peer connection that does not reach `Connected` within 15 s is reported with
/// `connected: false` (not an error); HTTP failures of the POST are errors.
pub async fn run_webrtc_peer(
    whip_url: &str,
    token: &str,
    duration: Duration,
) -> anyhow::Result<WebrtcPeerReport> {
    run_webrtc_peer_with(
        whip_url,
        token,
        duration,
        |answer| async move { Ok(answer) },
    )
    .await
}

/// [`run_webrtc_peer`] with a hook that may rewrite the SDP answer before it is applied, e.g. to
/// route media through a [`crate::relay::Relay`]: find the server's candidate with
/// [`sdp_udp_candidates`], start a relay towards it, and swap the address in with
/// [`sdp_replace_candidate_addr`].
pub async fn run_webrtc_peer_with<F, Fut>(
    whip_url: &str,
    token: &str,
    duration: Duration,
    rewrite_answer: F,
) -> anyhow::Result<WebrtcPeerReport>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let whip = reqwest::Url::parse(whip_url).context("bad WHIP URL")?;
    let mut peer = PublishingPeer::new().await?;
    let offer = peer.offer().await?;

    let http = reqwest::Client::new();
    let post_started = Instant::now();
    let resp = http
        .post(whip.clone())
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer)
        .send()
        .await
        .context("WHIP POST")?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        let _ = peer.pc.close().await;
        bail!("WHIP POST returned {status}: {body}");
    }
    let resource = match location {
        Some(loc) => Some(whip.join(&loc).context("bad Location header")?),
        None => None,
    };

    let mut report = WebrtcPeerReport::default();
    let result = async {
        let body = rewrite_answer(body).await?;
        peer.pc
            .set_remote_description(RTCSessionDescription::answer(body)?)
            .await?;
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            peer.connection.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .ok()
        .and_then(|r| r.ok())
        .is_some_and(|s| *s == RTCPeerConnectionState::Connected);
        report.connected = connected;
        report.connect_time = post_started.elapsed();
        if connected {
            stream_media(&mut peer, duration, &mut report).await?;
        }
        anyhow::Ok(())
    }
    .await;

    if let Some(resource) = resource {
        report.delete_status = http
            .delete(resource)
            .bearer_auth(token)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
    }
    let _ = peer.pc.close().await;
    result?;
    Ok(report)
}

/// The UDP candidate addresses (`a=candidate:` lines) of an SDP, in order, deduplicated.
pub fn sdp_udp_candidates(sdp: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in sdp.lines() {
        let Some(rest) = line.trim().strip_prefix("a=candidate:") else {
            continue;
        };
        // foundation component transport priority address port "typ" type ...
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 6 || !f[2].eq_ignore_ascii_case("udp") {
            continue;
        }
        if let (Ok(ip), Ok(port)) = (f[4].parse::<IpAddr>(), f[5].parse::<u16>()) {
            let addr = SocketAddr::new(ip, port);
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out
}

/// Replaces the address/port of every `a=candidate:` line that names `from` with `to`.
pub fn sdp_replace_candidate_addr(sdp: &str, from: SocketAddr, to: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let trimmed = line.trim_end_matches(['\r', '\n']);
        let ending = &line[trimmed.len()..];
        if let Some(rest) = trimmed.strip_prefix("a=candidate:") {
            let mut f: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            if f.len() >= 6
                && f[4].parse::<IpAddr>().ok() == Some(from.ip())
                && f[5].parse::<u16>().ok() == Some(from.port())
            {
                f[4] = to.ip().to_string();
                f[5] = to.port().to_string();
                out.push_str("a=candidate:");
                out.push_str(&f.join(" "));
                out.push_str(ending);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, fallback: u8) -> u8 {
    match sender.get_parameters().await {
        Ok(p) => p
            .rtp_parameters
            .codecs
            .first()
            .map_or(fallback, |c| c.payload_type),
        Err(_) => fallback,
    }
}

async fn stream_media(
    peer: &mut PublishingPeer,
    duration: Duration,
    report: &mut WebrtcPeerReport,
) -> anyhow::Result<()> {
    let (video_track, video_ssrc, video_sender) = peer.video.clone();
    let (audio_track, audio_ssrc, audio_sender) = peer.audio.clone();
    let video_pt = negotiated_payload_type(&video_sender, VIDEO_PT).await;
    let audio_pt = negotiated_payload_type(&audio_sender, AUDIO_PT).await;

    // libvpx / libopus encoders are not `Send`; they live on their own paced threads and hand
    // encoded frames over channels. Dropping the receivers stops the threads.
    let (video_tx, mut video_rx) = mpsc::channel::<Vec<u8>>(8);
    let (audio_tx, mut audio_rx) = mpsc::channel::<Vec<u8>>(32);
    let video_thread = std::thread::spawn(move || video_encoder_thread(video_tx));
    let audio_thread = std::thread::spawn(move || audio_encoder_thread(audio_tx));

    let frame_duration = Duration::from_secs(1) / FPS;
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            frame = video_rx.recv() => {
                let Some(frame) = frame else { break };
                let sample = Sample { data: frame.into(), duration: frame_duration, ..Sample::new(Instant::now()) };
                if let Err(e) = video_track.sample_writer(video_ssrc, video_pt).write_sample(&sample).await {
                    result = Err(anyhow::anyhow!("video write_sample: {e}"));
                    break;
                }
                report.video_frames_sent += 1;
            }
            packet = audio_rx.recv() => {
                let Some(packet) = packet else { break };
                let sample = Sample { data: packet.into(), duration: AUDIO_FRAME, ..Sample::new(Instant::now()) };
                if let Err(e) = audio_track.sample_writer(audio_ssrc, audio_pt).write_sample(&sample).await {
                    result = Err(anyhow::anyhow!("audio write_sample: {e}"));
                    break;
                }
                report.audio_packets_sent += 1;
            }
            changed = peer.connection.changed() => {
                let state = *peer.connection.borrow();
                if changed.is_err() || matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                    break;
                }
            }
        }
    }
    drop(video_rx);
    drop(audio_rx);
    let joined = tokio::task::spawn_blocking(move || {
        let v = video_thread.join();
        let a = audio_thread.join();
        (v, a)
    })
    .await?;
    match joined {
        (Ok(Ok(())), Ok(Ok(()))) => result,
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => Err(e),
        _ => bail!("encoder thread panicked"),
    }
}

/// Synthetic I420 frame: diagonal gradient scrolling with `n`, a bright vertical bar sweeping
/// across, and slowly cycling chroma, so consecutive frames differ.
pub fn synth_i420(n: u64, buf: &mut Vec<u8>) {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    buf.resize(w * h * 3 / 2, 0);
    let (y_plane, chroma) = buf.split_at_mut(w * h);
    // Gradient rows are windows of one precomputed ramp (cheap even in unoptimized test builds).
    let ramp: Vec<u8> = (0..w + 200).map(|i| (16 + i % 200) as u8).collect();
    let shift = (n * 4) as usize;
    let bar_x = (n as usize * 12) % w;
    let bar_end = (bar_x + 32).min(w);
    for (row, line) in y_plane.chunks_exact_mut(w).enumerate() {
        let start = (row + shift) % 200;
        line.copy_from_slice(&ramp[start..start + w]);
        line[bar_x..bar_end].fill(235);
    }
    let (u_plane, v_plane) = chroma.split_at_mut(w * h / 4);
    let u = (128.0 + 60.0 * (n as f64 * 0.05).sin()) as u8;
    let v = (128.0 + 60.0 * (n as f64 * 0.03).cos()) as u8;
    u_plane.fill(u);
    v_plane.fill(v);
}

pub fn new_vp8_encoder() -> anyhow::Result<vpx_encode::Encoder> {
    vpx_encode::Encoder::new(vpx_encode::Config {
        width: WIDTH,
        height: HEIGHT,
        timebase: [1, FPS as i32],
        bitrate: 600,
        codec: vpx_encode::VideoCodecId::VP8,
    })
    .map_err(|e| anyhow::anyhow!("vpx encoder: {e}"))
}

fn video_encoder_thread(tx: mpsc::Sender<Vec<u8>>) -> anyhow::Result<()> {
    let start = Instant::now();
    let period = Duration::from_secs(1) / FPS;
    let mut encoder = new_vp8_encoder()?;
    let mut raw = Vec::new();
    for n in 0u64.. {
        if n > 0 && n % KEYFRAME_EVERY == 0 {
            drop(encoder);
            encoder = new_vp8_encoder()?;
        }
        synth_i420(n, &mut raw);
        let frames: Vec<Vec<u8>> = encoder
            .encode(n as i64, &raw)
            .map_err(|e| anyhow::anyhow!("vpx encode: {e}"))?
            .map(|f| f.data.to_vec())
            .collect();
        for frame in frames {
            if tx.blocking_send(frame).is_err() {
                return Ok(());
            }
        }
        sleep_until(start + period * (n as u32 + 1));
        if tx.is_closed() {
            return Ok(());
        }
    }
    Ok(())
}

fn audio_encoder_thread(tx: mpsc::Sender<Vec<u8>>) -> anyhow::Result<()> {
    let start = Instant::now();
    let samples_per_frame = (AUDIO_RATE as usize * AUDIO_FRAME.as_millis() as usize) / 1000;
    let mut encoder =
        opus::Encoder::new(AUDIO_RATE, opus::Channels::Mono, opus::Application::Audio)?;
    let mut pcm = vec![0i16; samples_per_frame];
    let mut out = vec![0u8; 4000];
    let mut t = 0u64;
    for n in 0u32.. {
        for s in pcm.iter_mut() {
            let phase = 2.0 * std::f64::consts::PI * 440.0 * t as f64 / f64::from(AUDIO_RATE);
            *s = (phase.sin() * 8000.0) as i16;
            t += 1;
        }
        let len = encoder.encode(&pcm, &mut out)?;
        if tx.blocking_send(out[..len].to_vec()).is_err() {
            return Ok(());
        }
        sleep_until(start + AUDIO_FRAME * (n + 1));
    }
    Ok(())
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
