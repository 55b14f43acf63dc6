//! The load generator behind `vericall loadgen`: many str0m peers replaying one pre-encoded clip
//! (640x480 VP8, 15 fps, ~500 kbit/s by default) into a running server, then asking the server how
//! many frames it received. Encoding once keeps the generator's own CPU cost low.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

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
}

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
    let audio = if opts.audio {
        Some(Arc::new(encode_tone(50, 0.3)?))
    } else {
        None
    };
    let mut tasks = Vec::with_capacity(opts.peers);
    for _ in 0..opts.peers {
        let (id, whip, token) = create_session(&opts).await?;
        let peer_opts = PeerOptions {
            video: Some(VideoSource::Encoded(video.clone())),
            audio: audio.clone(),
            duration: opts.duration,
            connect_timeout: Duration::from_secs(20),
            ..PeerOptions::default()
        };
        tasks.push((
            id,
            tokio::spawn(async move { run_peer(&whip, &token, peer_opts).await }),
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
    };
    let mut connect_ms = Vec::new();
    for (id, task) in tasks {
        match task.await {
            Ok(Ok(r)) => {
                report.connected += 1;
                if let Some(c) = r.connect_time {
                    connect_ms.push(c.as_secs_f64() * 1000.0);
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
    connect_ms.sort_by(f64::total_cmp);
    report.connect_ms_median = connect_ms.get(connect_ms.len() / 2).copied().unwrap_or(0.0);
    Ok(report)
}
