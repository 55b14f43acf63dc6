//! The load generator behind `vericall loadgen`: many str0m peers streaming pre-encoded video
//! (640x480 VP8, 15 fps, ~500 kbit/s by default) into a running server, then asking the server how
//! many frames it received. Encoding once keeps the generator's own CPU cost low.
//!
//! Two kinds of video: a moving test pattern (no face: the media path alone), or rendered people
//! (`people`) who follow each call's challenges from clips pre-encoded once per action
//! (`actor::ActionClips`), so every call is a full verification that ends with a verdict. Each
//! call's verdict, the analysed frame rate of its steps, its guidance latencies and the time from
//! its last step to its verdict are reported (what `scripts/bench-capacity` tabulates).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::actor::{ActionClips, ScriptedPerson, Stage};
use super::clip::{encode_pattern, encode_tone, VideoCodec};
use super::http::request;
use super::peer::{run_peer, PeerOptions, VideoSource};
use super::TestkitError;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub base_url: String,
    pub api_key: String,
    pub peers: usize,
    pub duration: Duration,
    /// Delay between peer starts, so handshakes do not all coincide.
    pub stagger: Duration,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub audio: bool,
    /// Stream rendered people who follow their challenges (full verifications, until each
    /// call's verdict or `duration`) instead of the test pattern: the face models' folder (with
    /// `stills/`), from scripts/setup.
    pub people: Option<PathBuf>,
    /// With `people`: how long each person takes to start a motion after it is asked, on top of
    /// the clips' own 0.3 s (zero: at once, the densest call).
    pub reaction: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub peers: usize,
    pub connected: usize,
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Received / sent over all peers.
    pub received_ratio: f64,
    /// The worst single peer's received / sent.
    pub worst_peer_ratio: f64,
    pub connect_ms_median: f64,
    pub errors: Vec<String>,
    /// With `people`: calls per verdict status ("none" when no verdict came).
    pub verdicts: BTreeMap<String, usize>,
    /// With `people`: over every judged step of every call, analysed frames per second while its
    /// motion was judged (`CallOutcome::step_fps`).
    pub step_fps_min: Option<f64>,
    pub step_fps_median: Option<f64>,
    /// With `people`: the server's capture-to-send `latency_ms` of every guidance event.
    pub guidance_latency_ms_p50: Option<f64>,
    pub guidance_latency_ms_p95: Option<f64>,
    /// With `people`: from the last step's end event to the verdict event (server times).
    pub verdict_after_last_step_ms_p50: Option<f64>,
    pub verdict_after_last_step_ms_p95: Option<f64>,
    pub calls: Vec<CallOutcome>,
}

/// What one full verification showed the peer (its data-channel events).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallOutcome {
    pub session_id: String,
    /// From the WHIP offer to the end of streaming (the verdict, or the duration).
    pub duration_ms: f64,
    /// The verdict's status, and its reason codes.
    pub verdict: Option<String>,
    pub reasons: Vec<String>,
    /// Per judged step: judged samples per second while its motion was judged (from the face's
    /// first movement to the step's end; a blink's whole unpaused step).
    pub step_fps: Vec<f64>,
    pub guidance_latency_ms: Vec<f64>,
    pub verdict_after_last_step_ms: Option<f64>,
}

impl CallOutcome {
    fn from_events(session_id: &str, events: &[serde_json::Value]) -> CallOutcome {
        let mut out = CallOutcome {
            session_id: session_id.to_string(),
            ..CallOutcome::default()
        };
        let mut last_step_at = None;
        for e in events {
            match e["type"].as_str() {
                Some("challenge_passed") | Some("challenge_failed") => {
                    last_step_at = e["at_ms"].as_f64();
                    let ev = &e["evidence"];
                    // The spoken step's mouth is judged by the speech judge, which does not
                    // count its frames in `samples`.
                    if ev["action"] == "speak_digits" {
                        continue;
                    }
                    // A turn, nod, open mouth or move closer is watched at a lower rate until
                    // the face moves (`onset_at_ms`; docs/FACE.md); from then on its motion is
                    // judged at the full rate: the intervals between its samples from the onset
                    // to the last. A step whose face never moved (a timeout) judged nothing and is
                    // left out; a blink is judged at the full rate over its whole unpaused step.
                    let at = |k: &str| ev[k].as_f64();
                    match (at("onset_at_ms"), at("moving_samples")) {
                        (Some(onset), Some(samples)) if samples >= 2.0 => {
                            let end = at("completed_at_ms")
                                .or_else(|| Some(at("started_at_ms")? + at("elapsed_ms")?));
                            if let Some(span) = end.map(|end| end - onset).filter(|s| *s > 0.0) {
                                out.step_fps.push((samples - 1.0) * 1000.0 / span);
                            }
                        }
                        _ if ev["action"] == "blink" => {
                            if let (Some(samples), Some(elapsed)) =
                                (at("samples"), at("elapsed_ms"))
                            {
                                let judged = elapsed - at("paused_ms").unwrap_or(0.0);
                                if judged > 0.0 {
                                    out.step_fps.push(samples * 1000.0 / judged);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Some("guidance") => {
                    out.guidance_latency_ms.extend(e["latency_ms"].as_f64());
                }
                Some("verdict") if out.verdict.is_none() => {
                    out.verdict = e["status"].as_str().map(str::to_string);
                    out.reasons = e["reasons"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["code"].as_str().map(str::to_string))
                        .collect();
                    out.verdict_after_last_step_ms =
                        e["at_ms"].as_f64().zip(last_step_at).map(|(v, s)| v - s);
                }
                _ => {}
            }
        }
        out
    }
}

/// The `q` quantile (nearest rank) of `v`; none when empty.
fn quantile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).copied()
}

/// Room noise of the people's microphones (RMS dBFS): a quiet room.
const ROOM_DBFS: f32 = -60.0;

async fn create_session(opts: &LoadOptions) -> Result<(String, String, String), TestkitError> {
    let auth = format!("Bearer {}", opts.api_key);
    let resp = request(
        "POST",
        &format!("{}/v1/sessions", opts.base_url),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"subject":"loadgen"}"#,
    )
    .await?;
    if resp.status != 201 {
        return Err(TestkitError::Http(format!(
            "create session: {} {}",
            resp.status,
            resp.text()
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|e| TestkitError::Http(e.to_string()))?;
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok((field("id"), field("whip_url"), field("client_token")))
}

/// Video frames the server counted for a session, once its call has ended.
async fn frames_received(opts: &LoadOptions, id: &str) -> Result<u64, TestkitError> {
    let auth = format!("Bearer {}", opts.api_key);
    let url = format!("{}/v1/sessions/{id}", opts.base_url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = request("GET", &url, &[("Authorization", &auth)], b"").await?;
        let v: serde_json::Value =
            serde_json::from_slice(&resp.body).map_err(|e| TestkitError::Http(e.to_string()))?;
        if v["state"] == "ended" || Instant::now() > deadline {
            let frames = v["network"]["tracks"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["kind"] == "video"))
                .and_then(|t| t["frames"].as_u64())
                .unwrap_or(0);
            return Ok(frames);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Renders the packaged portrait's person and pre-encodes their clips (once per process).
async fn render_people(models: PathBuf, kbps: u32) -> Result<Arc<ActionClips>, TestkitError> {
    tokio::task::spawn_blocking(move || {
        let face = crate::analysis::face::FaceModels::load(&models)
            .map_err(|e| TestkitError::Encode(format!("face models: {e}")))?;
        let stage = Stage::astronaut(face, &models.join("stills")).map_err(TestkitError::Encode)?;
        ActionClips::render(&stage, kbps).map(Arc::new)
    })
    .await
    .map_err(|e| TestkitError::Encode(e.to_string()))?
}

pub async fn run_load(opts: LoadOptions) -> Result<LoadReport, TestkitError> {
    let frame_count = (opts.fps * 4) as usize;
    let video = Arc::new(encode_pattern(
        VideoCodec::Vp8,
        opts.width,
        opts.height,
        opts.fps,
        opts.bitrate_kbps,
        frame_count,
    )?);
    let people = match &opts.people {
        Some(dir) => Some(render_people(dir.clone(), opts.bitrate_kbps).await?),
        None => None,
    };
    let audio = if opts.audio {
        Some(Arc::new(encode_tone(50, 0.3)?))
    } else {
        None
    };
    let mut tasks = Vec::with_capacity(opts.peers);
    for _ in 0..opts.peers {
        let (id, whip, token) = create_session(&opts).await?;
        let peer_opts = PeerOptions {
            video: Some(match &people {
                Some(clips) => VideoSource::Scripted(Arc::new(
                    ScriptedPerson::new(clips.clone()).with_reaction(opts.reaction),
                )),
                None => VideoSource::Encoded(video.clone()),
            }),
            audio: audio.clone(),
            // People read the spoken step's digits aloud (encoded live: it follows the prompt).
            voice: match (&people, opts.audio) {
                (Some(_), true) => Some(super::voice::speaking_person(ROOM_DBFS)),
                _ => None,
            },
            duration: opts.duration,
            connect_timeout: Duration::from_secs(20),
            ..PeerOptions::default()
        };
        tasks.push((
            id,
            tokio::spawn(async move {
                let started = Instant::now();
                let r = run_peer(&whip, &token, peer_opts).await;
                r.map(|r| (r, started.elapsed()))
            }),
        ));
        tokio::time::sleep(opts.stagger).await;
    }
    let mut report = LoadReport {
        peers: opts.peers,
        connected: 0,
        frames_sent: 0,
        frames_received: 0,
        received_ratio: 0.0,
        worst_peer_ratio: 1.0,
        connect_ms_median: 0.0,
        errors: Vec::new(),
        verdicts: BTreeMap::new(),
        step_fps_min: None,
        step_fps_median: None,
        guidance_latency_ms_p50: None,
        guidance_latency_ms_p95: None,
        verdict_after_last_step_ms_p50: None,
        verdict_after_last_step_ms_p95: None,
        calls: Vec::new(),
    };
    let mut connect_ms = Vec::new();
    for (id, task) in tasks {
        match task.await {
            Ok(Ok((r, took))) => {
                report.connected += 1;
                if let Some(c) = r.connect_time {
                    connect_ms.push(c.as_secs_f64() * 1000.0);
                }
                if people.is_some() {
                    report.calls.push(CallOutcome {
                        duration_ms: took.as_secs_f64() * 1000.0,
                        ..CallOutcome::from_events(&id, &r.events)
                    });
                }
                let got = frames_received(&opts, &id).await?;
                report.frames_sent += r.video_frames_sent;
                report.frames_received += got;
                if r.video_frames_sent > 0 {
                    report.worst_peer_ratio = report
                        .worst_peer_ratio
                        .min(got as f64 / r.video_frames_sent as f64);
                }
            }
            Ok(Err(e)) => report.errors.push(e.to_string()),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    if report.connected < report.peers {
        report.worst_peer_ratio = 0.0;
    }
    report.received_ratio = if report.frames_sent > 0 {
        report.frames_received as f64 / report.frames_sent as f64
    } else {
        0.0
    };
    if people.is_some() {
        for c in &report.calls {
            let status = c.verdict.clone().unwrap_or_else(|| "none".into());
            *report.verdicts.entry(status).or_default() += 1;
        }
        let all = |f: fn(&CallOutcome) -> Vec<f64>| -> Vec<f64> {
            report.calls.iter().flat_map(f).collect()
        };
        let fps = all(|c| c.step_fps.clone());
        let guidance = all(|c| c.guidance_latency_ms.clone());
        let verdict = all(|c| c.verdict_after_last_step_ms.into_iter().collect());
        report.step_fps_min = quantile(fps.clone(), 0.0);
        report.step_fps_median = quantile(fps, 0.5);
        report.guidance_latency_ms_p50 = quantile(guidance.clone(), 0.5);
        report.guidance_latency_ms_p95 = quantile(guidance, 0.95);
        report.verdict_after_last_step_ms_p50 = quantile(verdict.clone(), 0.5);
        report.verdict_after_last_step_ms_p95 = quantile(verdict, 0.95);
    }
    connect_ms.sort_by(f64::total_cmp);
    report.connect_ms_median = connect_ms.get(connect_ms.len() / 2).copied().unwrap_or(0.0);
    Ok(report)
}
