//! A WHIP client built on str0m that streams like a browser would: it POSTs an offer, connects
//! over UDP, sends pre-encoded video and Opus audio in real time, reads the `vericall` data channel
//! and DELETEs the session at the end. Tests use it as the "Rust peer"; the load generator runs
//! many of them. An optional relay address routes media through an impairment relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

use super::clip::{EncodedVideo, VideoCodec};
use super::http::request;
use super::TestkitError;
use crate::media::decode::{DecodedFrame, H264Encoder, VideoCodec as LiveCodec, VpxEncoder};

/// Raw frames encoded live by the peer, so it can answer keyframe requests (PLI) like a browser.
#[derive(Debug, Clone)]
pub struct LiveVideo {
    pub codec: LiveCodec,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Looped.
    pub frames: Vec<DecodedFrame>,
}

/// Produces a frame from its index and the events the peer has received so far.
pub type FrameFn = dyn Fn(u64, &[serde_json::Value]) -> DecodedFrame + Send + Sync;

/// Frames made on demand from what the peer has seen (e.g. a person reacting to a challenge),
/// encoded live.
pub struct ReactiveVideo {
    pub codec: LiveCodec,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub frame: Box<FrameFn>,
}

impl std::fmt::Debug for ReactiveVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReactiveVideo({:?}, {} fps)", self.codec, self.fps)
    }
}

/// Writes 20 ms of 48 kHz mono PCM (the slice's 960 samples) for audio packet `index`, from the
/// events the peer has received so far.
pub type SoundFn = dyn Fn(u64, &[serde_json::Value], &mut [f32]) + Send + Sync;

/// A microphone that reacts to what the peer has seen (a person who speaks when asked), encoded
/// live with Opus.
pub struct ReactiveAudio {
    pub sound: Box<SoundFn>,
}

impl std::fmt::Debug for ReactiveAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReactiveAudio")
    }
}

#[derive(Debug, Clone)]
pub enum VideoSource {
    /// Pre-encoded frames replayed in a loop (cheap; keyframe requests are ignored).
    Encoded(Arc<EncodedVideo>),
    Live(Arc<LiveVideo>),
    Reactive(Arc<ReactiveVideo>),
    /// A person made of pre-encoded clips who follows the challenges (the load generator's).
    Scripted(Arc<super::actor::ScriptedPerson>),
}

impl VideoSource {
    fn fps(&self) -> u32 {
        match self {
            VideoSource::Encoded(v) => v.fps,
            VideoSource::Live(v) => v.fps,
            VideoSource::Reactive(v) => v.fps,
            VideoSource::Scripted(_) => super::actor::FPS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub video: Option<VideoSource>,
    /// Opus packets (20 ms each), looped.
    pub audio: Option<Arc<Vec<Arc<[u8]>>>>,
    /// A reacting microphone, encoded live; used instead of `audio` when set.
    pub voice: Option<Arc<ReactiveAudio>>,
    /// How long to stream after connecting.
    pub duration: Duration,
    pub data_channel: bool,
    /// Send to this address (an impairment relay) instead of the server's candidate.
    pub via: Option<SocketAddr>,
    pub delete_at_end: bool,
    pub connect_timeout: Duration,
    /// Stop sending video after this many frames (0: a video track that never sends, like a
    /// camera that failed after negotiation).
    pub max_video_frames: Option<u64>,
    /// Stop streaming (and skip DELETE) once a `verdict` event arrives on the data channel.
    pub stop_on_verdict: bool,
    /// A sender that stalls: `(every, for)` captures no frame during the last `for` of each
    /// `every` since connecting (a camera hiccup, a busy phone). Frames then carry their capture
    /// time as RTP time, as a real camera's do.
    pub sender_stall: Option<(Duration, Duration)>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            video: None,
            audio: None,
            voice: None,
            duration: Duration::from_secs(3),
            data_channel: true,
            via: None,
            delete_at_end: true,
            connect_timeout: Duration::from_secs(10),
            max_video_frames: None,
            stop_on_verdict: true,
            sender_stall: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PeerReport {
    pub connect_time: Option<Duration>,
    pub video_frames_sent: u64,
    pub audio_packets_sent: u64,
    pub keyframe_requests: u64,
    /// Events received on the `vericall` data channel, in order.
    pub events: Vec<serde_json::Value>,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub links: Vec<String>,
    pub delete_status: Option<u16>,
    /// The server sent a verdict (and so ended the call itself).
    pub verdict_seen: bool,
}

/// Joins the call at `whip_url` with `token` and streams until `opts.duration` has passed.
pub async fn run_peer(
    whip_url: &str,
    token: &str,
    opts: PeerOptions,
) -> Result<PeerReport, TestkitError> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let started = Instant::now();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_h264(true)
        .enable_opus(true, false)
        .build(started);
    rtc.add_local_candidate(
        Candidate::host(local, "udp").map_err(|e| TestkitError::Rtc(e.to_string()))?,
    );
    let mut api = rtc.sdp_api();
    let video_mid = opts
        .video
        .as_ref()
        .map(|_| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    let audio_mid = (opts.audio.is_some() || opts.voice.is_some())
        .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    if opts.data_channel {
        api.add_channel("vericall".into());
    }
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| TestkitError::Rtc("nothing to offer".into()))?;

    let auth = format!("Bearer {token}");
    let resp = request(
        "POST",
        whip_url,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        offer.to_sdp_string().as_bytes(),
    )
    .await?;
    if resp.status != 201 {
        return Err(TestkitError::Whip {
            status: resp.status,
            body: resp.text(),
        });
    }
    let answer =
        SdpAnswer::from_sdp_string(&resp.text()).map_err(|e| TestkitError::Rtc(e.to_string()))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| TestkitError::Rtc(e.to_string()))?;
    let server = server_candidate(&resp.text())
        .ok_or_else(|| TestkitError::Rtc("answer has no candidate".into()))?;
    let mut report = PeerReport {
        location: resp.header("location").map(str::to_string),
        etag: resp.header("etag").map(str::to_string),
        links: resp.headers_named("link").map(str::to_string).collect(),
        ..PeerReport::default()
    };

    let mut driver = Driver {
        rtc,
        socket,
        local,
        server,
        via: opts.via,
        report,
        connected_at: None,
        channel: None,
        encoder: None,
        force_keyframe: false,
    };
    driver.stream(&opts, video_mid, audio_mid, started).await?;
    report = driver.report;

    if opts.delete_at_end && !report.verdict_seen {
        let location = report
            .location
            .clone()
            .unwrap_or_else(|| whip_url.to_string());
        let resp = request("DELETE", &location, &[("Authorization", &auth)], b"").await?;
        report.delete_status = Some(resp.status);
    }
    Ok(report)
}

/// The server's host candidate address from an SDP answer.
fn server_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let c = Candidate::from_sdp_string(l.trim().strip_prefix("a=")?).ok()?;
        Some(c.addr())
    })
}

struct Driver {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    server: SocketAddr,
    via: Option<SocketAddr>,
    report: PeerReport,
    connected_at: Option<Instant>,
    channel: Option<str0m::channel::ChannelId>,
    encoder: Option<LiveEncoder>,
    force_keyframe: bool,
}

enum LiveEncoder {
    Vpx(VpxEncoder),
    H264(Box<H264Encoder>),
}

impl Driver {
    async fn stream(
        &mut self,
        opts: &PeerOptions,
        video_mid: Option<Mid>,
        audio_mid: Option<Mid>,
        started: Instant,
    ) -> Result<(), TestkitError> {
        let mut buf = vec![0u8; 2000];
        let fps = opts.video.as_ref().map(|v| v.fps()).unwrap_or(15).max(1);
        let frame_interval = Duration::from_secs_f64(1.0 / fps as f64);
        let mut next_frame = Instant::now();
        let mut next_audio = Instant::now();
        let mut frame_index: u64 = 0;
        let mut audio_index: u64 = 0;
        let mut voice_encoder = match &opts.voice {
            Some(_) => Some(
                opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
                    .map_err(|e| TestkitError::Rtc(format!("opus encoder: {e}")))?,
            ),
            None => None,
        };
        let mut pcm = vec![0.0f32; 960];
        let mut packet = vec![0u8; 1500];
        loop {
            let timeout = self.drain().await?;
            let now = Instant::now();
            let end = match self.connected_at {
                Some(c) => c + opts.duration,
                None => started + opts.connect_timeout,
            };
            let verdict_seen =
                opts.stop_on_verdict && self.report.events.iter().any(|e| e["type"] == "verdict");
            if verdict_seen {
                self.report.verdict_seen = true;
                return Ok(());
            }
            if now >= end {
                if self.connected_at.is_none() {
                    return Err(TestkitError::Rtc("did not connect in time".into()));
                }
                return Ok(());
            }
            if self.connected_at.is_some() {
                if let (Some(mid), Some(video)) = (video_mid, &opts.video) {
                    let limit_reached = opts.max_video_frames.is_some_and(|m| frame_index >= m);
                    if now >= next_frame && !limit_reached {
                        let since = self
                            .connected_at
                            .map_or(Duration::ZERO, |c| now.duration_since(c));
                        let stalled = opts.sender_stall.is_some_and(|(every, pause)| {
                            let phase = since.as_millis() % every.as_millis().max(1);
                            phase >= every.saturating_sub(pause).as_millis()
                        });
                        if !stalled {
                            let ts = match opts.sender_stall {
                                Some(_) => since.as_micros() as u64 * 9 / 100,
                                None => frame_index * 90_000 / fps as u64,
                            };
                            self.send_video_frame(mid, video, frame_index, ts)?;
                            self.report.video_frames_sent += 1;
                            frame_index += 1;
                        } else if !matches!(video, VideoSource::Encoded(_)) {
                            // A stalled camera captures nothing, but the person in front of it
                            // keeps moving (and speaking): frames made live keep wall time, and a
                            // reacting person still sees the prompts on time. (Pre-encoded frames
                            // cannot be skipped: they depend on each other.)
                            if let VideoSource::Reactive(r) = video {
                                let _ = (r.frame)(frame_index, &self.report.events);
                            }
                            frame_index += 1;
                        }
                        next_frame += frame_interval;
                    }
                }
                if let (Some(mid), Some(voice), Some(enc)) =
                    (audio_mid, &opts.voice, voice_encoder.as_mut())
                {
                    if now >= next_audio {
                        (voice.sound)(audio_index, &self.report.events, &mut pcm);
                        let n = enc
                            .encode_float(&pcm, &mut packet)
                            .map_err(|e| TestkitError::Rtc(format!("opus: {e}")))?;
                        let p: Arc<[u8]> = packet[..n].into();
                        self.write(mid, Codec::Opus, audio_index * 960, p)?;
                        audio_index += 1;
                        self.report.audio_packets_sent += 1;
                        next_audio += Duration::from_millis(20);
                    }
                } else if let (Some(mid), Some(audio)) = (audio_mid, &opts.audio) {
                    if now >= next_audio {
                        let p = &audio[audio_index as usize % audio.len()];
                        self.write(mid, Codec::Opus, audio_index * 960, p.clone())?;
                        audio_index += 1;
                        self.report.audio_packets_sent += 1;
                        next_audio += Duration::from_millis(20);
                    }
                }
                // Media written; poll again before sleeping.
                let _ = self.drain().await?;
            }
            let mut wake = timeout.min(end);
            if self.connected_at.is_some() {
                let more_video = opts.max_video_frames.is_none_or(|m| frame_index < m);
                if video_mid.is_some() && more_video {
                    wake = wake.min(next_frame);
                }
                if audio_mid.is_some() {
                    wake = wake.min(next_audio);
                }
            }
            let wait = wake.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => {
                    // Through a relay, datagrams come from the relay: present them as the server's.
                    let source = if Some(from) == self.via {
                        self.server
                    } else {
                        from
                    };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents: (&buf[..n])
                                .try_into()
                                .map_err(|_| TestkitError::Rtc("bad datagram".into()))?,
                        },
                    );
                    self.rtc
                        .handle_input(input)
                        .map_err(|e| TestkitError::Rtc(e.to_string()))?;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    self.rtc
                        .handle_input(Input::Timeout(Instant::now()))
                        .map_err(|e| TestkitError::Rtc(e.to_string()))?;
                }
            }
            if self.connected_at.is_none() && self.rtc.is_connected() {
                self.connected_at = Some(Instant::now());
                self.report.connect_time = Some(started.elapsed());
                next_frame = Instant::now();
                next_audio = Instant::now();
            }
        }
    }

    fn send_video_frame(
        &mut self,
        mid: Mid,
        video: &VideoSource,
        index: u64,
        ts: u64,
    ) -> Result<(), TestkitError> {
        match video {
            VideoSource::Encoded(v) => {
                let f = &v.frames[index as usize % v.frames.len()];
                let codec = match v.codec {
                    VideoCodec::Vp8 => Codec::Vp8,
                    VideoCodec::Vp9 => Codec::Vp9,
                };
                self.write(mid, codec, ts, f.data.clone())
            }
            VideoSource::Live(v) => {
                let raw = &v.frames[index as usize % v.frames.len()];
                self.encode_and_send(mid, v.codec, v.fps, v.bitrate_kbps, raw, index, ts)
            }
            VideoSource::Scripted(person) => {
                let f = person.frame(index, &self.report.events);
                self.write(mid, Codec::Vp8, ts, f.data)
            }
            VideoSource::Reactive(v) => {
                let raw = (v.frame)(index, &self.report.events);
                self.encode_and_send(mid, v.codec, v.fps, v.bitrate_kbps, &raw, index, ts)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_and_send(
        &mut self,
        mid: Mid,
        codec: LiveCodec,
        fps: u32,
        bitrate_kbps: u32,
        raw: &DecodedFrame,
        index: u64,
        ts: u64,
    ) -> Result<(), TestkitError> {
        let encode_error =
            |e: crate::media::decode::DecodeError| TestkitError::Encode(e.to_string());
        if self.encoder.is_none() {
            let (w, h) = (raw.width as u32, raw.height as u32);
            self.encoder = Some(match codec {
                LiveCodec::H264 => LiveEncoder::H264(Box::new(
                    H264Encoder::new(w, h, fps, bitrate_kbps).map_err(encode_error)?,
                )),
                c => LiveEncoder::Vpx(
                    VpxEncoder::new(c, w, h, fps, bitrate_kbps).map_err(encode_error)?,
                ),
            });
        }
        let force = std::mem::take(&mut self.force_keyframe);
        let (rtp_codec, frames) = match self.encoder.as_mut().expect("created above") {
            LiveEncoder::Vpx(e) => (
                if codec == LiveCodec::Vp9 {
                    Codec::Vp9
                } else {
                    Codec::Vp8
                },
                e.encode(raw, index as i64, force).map_err(encode_error)?,
            ),
            LiveEncoder::H264(e) => (
                Codec::H264,
                vec![e.encode(raw, force).map_err(encode_error)?],
            ),
        };
        for (data, _key) in frames {
            self.write(mid, rtp_codec, ts, data.into())?;
        }
        Ok(())
    }

    fn write(
        &mut self,
        mid: Mid,
        codec: Codec,
        ts: u64,
        data: Arc<[u8]>,
    ) -> Result<(), TestkitError> {
        let writer = self
            .rtc
            .writer(mid)
            .ok_or_else(|| TestkitError::Rtc("no writer".into()))?;
        let params = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .ok_or_else(|| TestkitError::Rtc(format!("{codec} not negotiated")))?;
        let (pt, clock) = (params.pt(), params.spec().clock_rate);
        writer
            .write(pt, Instant::now(), MediaTime::new(ts, clock), data)
            .map_err(|e| TestkitError::Rtc(e.to_string()))
    }

    async fn drain(&mut self) -> Result<Instant, TestkitError> {
        loop {
            match self
                .rtc
                .poll_output()
                .map_err(|e| TestkitError::Rtc(e.to_string()))?
            {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    let dest = match self.via {
                        Some(via) if t.destination == self.server => via,
                        _ => t.destination,
                    };
                    let _ = self.socket.send_to(&t.contents, dest).await;
                }
                Output::Event(e) => match e {
                    Event::KeyframeRequest(_) => {
                        self.report.keyframe_requests += 1;
                        self.force_keyframe = true;
                    }
                    Event::ChannelOpen(id, _) => self.channel = Some(id),
                    Event::ChannelData(d) => {
                        if let Ok(v) = serde_json::from_slice(&d.data) {
                            self.report.events.push(v);
                        }
                    }
                    _ => {}
                },
            }
        }
    }
}
