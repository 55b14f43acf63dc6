//! Decoding and live guidance with real encoders over real WebRTC: each codec decodes, the decoder
//! recovers from loss through PLI -> keyframe, and each camera/microphone/lighting fault produces
//! exactly its own code (and a good stream none).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vericall::media::decode::VideoCodec;
use vericall::testkit::clip::{encode_pattern, encode_tone, VideoCodec as ClipCodec};
use vericall::testkit::fixtures::{render_loop, Scene};
use vericall::testkit::peer::{run_peer, LiveVideo, PeerOptions, PeerReport, VideoSource};

use crate::common::{tone, TestServer};
use crate::relay::{ImpairmentConfig, Relay};

fn live(scene: Scene, codec: VideoCodec) -> VideoSource {
    VideoSource::Live(Arc::new(LiveVideo {
        codec,
        fps: 15,
        bitrate_kbps: 600,
        frames: render_loop(scene, 640, 480, if scene == Scene::Frozen { 1 } else { 30 }),
    }))
}

fn silence() -> Arc<Vec<Arc<[u8]>>> {
    Arc::new(encode_tone(50, 0.0).unwrap())
}

/// Runs one call and returns the peer's report, the final session and its timeline.
async fn call(ts: &TestServer, opts: PeerOptions) -> (PeerReport, Value, Vec<Value>) {
    let s = ts.create_session().await;
    let report = run_peer(&s.whip_url, &s.token, opts)
        .await
        .expect("peer streams");
    let v = ts
        .wait_session(&s.id, Duration::from_secs(10), |v| v["state"] == "ended")
        .await;
    let timeline = ts.timeline_until(&s.id, "session_ended").await;
    (report, v, timeline)
}

/// Codes raised by guidance events, with the time of each first raise after `connected`.
fn raised(timeline: &[Value]) -> Vec<(String, i64)> {
    let connected = timeline
        .iter()
        .find(|e| e["type"] == "connected")
        .and_then(|e| e["at_ms"].as_i64())
        .unwrap_or(0);
    let mut out: Vec<(String, i64)> = Vec::new();
    for e in timeline
        .iter()
        .filter(|e| e["type"] == "guidance" && e["active"] == true)
    {
        let code = e["code"].as_str().unwrap().to_string();
        if !out.iter().any(|(c, _)| *c == code) {
            out.push((code, e["at_ms"].as_i64().unwrap() - connected));
        }
    }
    out
}

async fn decodes_codec(codec: VideoCodec) {
    let ts = TestServer::start().await;
    let (report, v, _) = call(
        &ts,
        PeerOptions {
            video: Some(live(Scene::Good, codec)),
            audio: Some(tone()),
            duration: Duration::from_secs(4),
            ..PeerOptions::default()
        },
    )
    .await;
    let d = &v["network"]["decode"];
    let decoded = d["frames_decoded"].as_u64().unwrap();
    let audio = d["audio_decoded"].as_u64().unwrap();
    println!(
        "{codec:?}: sent {} video / {} audio, decoded {decoded} / {audio}, {d}",
        report.video_frames_sent, report.audio_packets_sent
    );
    assert!(
        decoded as f64 >= 0.99 * report.video_frames_sent as f64,
        "{codec:?}: {decoded} of {}",
        report.video_frames_sent
    );
    assert!(
        audio as f64 >= 0.99 * report.audio_packets_sent as f64,
        "opus: {audio} of {}",
        report.audio_packets_sent
    );
    assert_eq!(d["decode_errors"], 0);
    assert_eq!(
        (d["width"].as_u64(), d["height"].as_u64()),
        (Some(640), Some(480))
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_and_opus_decode_every_frame() {
    decodes_codec(VideoCodec::Vp8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_decodes_every_frame() {
    decodes_codec(VideoCodec::Vp9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_decodes_every_frame() {
    decodes_codec(VideoCodec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoder_recovers_from_loss_through_pli_and_keyframes() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let relay = Relay::start(
        ts.server.media_addr,
        ImpairmentConfig {
            loss: 0.03,
            seed: 11,
            impair_after: Duration::from_millis(1500),
            // A 2.5 s outage mid-call: more than NACKs can repair.
            outage: Some((Duration::from_millis(4000), Duration::from_millis(2500))),
            ..ImpairmentConfig::default()
        },
    )
    .await
    .unwrap();
    let report = run_peer(
        &s.whip_url,
        &s.token,
        PeerOptions {
            video: Some(live(Scene::Good, VideoCodec::Vp8)),
            audio: Some(tone()),
            duration: Duration::from_secs(10),
            via: Some(relay.local_addr()),
            ..PeerOptions::default()
        },
    )
    .await
    .unwrap();
    relay.stop().await;
    let v = ts
        .wait_session(&s.id, Duration::from_secs(10), |v| v["state"] == "ended")
        .await;
    let timeline = ts.timeline_until(&s.id, "session_ended").await;
    let d = &v["network"]["decode"];
    let decoded = d["frames_decoded"].as_u64().unwrap();
    println!(
        "3% loss: sent {}, decoded {decoded}, PLIs seen by the sender {}, {d}",
        report.video_frames_sent, report.keyframe_requests
    );
    // Decoding kept going until the end: the last quality summaries still count new frames.
    let decoded_series: Vec<u64> = timeline
        .iter()
        .filter(|e| e["type"] == "quality")
        .filter_map(|e| e["frames_decoded"].as_u64())
        .collect();
    let n = decoded_series.len();
    assert!(n >= 6, "quality summaries: {decoded_series:?}");
    assert!(
        decoded_series[n - 1] > decoded_series[n - 3],
        "decoding stalled: {decoded_series:?}"
    );
    assert!(
        decoded as f64 >= 0.6 * report.video_frames_sent as f64,
        "{decoded} of {}",
        report.video_frames_sent
    );
    // The outage broke the picture beyond what NACKs repair: the server asked for a keyframe
    // (PLI), the sender sent one, and decoding went on (checked above).
    let video = v["network"]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "video")
        .unwrap();
    let plis = video["keyframe_requests"].as_u64().unwrap();
    assert!(plis >= 1, "server keyframe requests: {plis}");
    assert!(report.keyframe_requests >= 1, "no PLI reached the sender");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

async fn expect_codes(
    scene: Scene,
    audio: Option<Arc<Vec<Arc<[u8]>>>>,
    max_frames: Option<u64>,
    expected: &[&str],
) {
    let ts = TestServer::start().await;
    let (_, v, timeline) = call(
        &ts,
        PeerOptions {
            video: Some(live(scene, VideoCodec::Vp8)),
            audio,
            duration: Duration::from_secs(5),
            max_video_frames: max_frames,
            ..PeerOptions::default()
        },
    )
    .await;
    let got = raised(&timeline);
    println!(
        "{scene:?}: raised {got:?}; decode {}",
        v["network"]["decode"]
    );
    let codes: BTreeSet<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    let want: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(codes, want, "{scene:?}: exactly the expected codes");
    for (code, after_ms) in &got {
        // Within 3 s of the condition's own hold (silence must last 3 s by definition).
        let limit = if code == "MIC_SILENT" { 3_700 } else { 3_200 };
        assert!(
            *after_ms <= limit,
            "{code} took {after_ms} ms after connecting"
        );
    }
    // Every guidance event names a documented code with a hint key.
    for e in timeline.iter().filter(|e| e["type"] == "guidance") {
        let code = e["code"].as_str().unwrap();
        assert!(
            vericall::reasons::ReasonCode::from_code(code).is_some(),
            "{code}"
        );
        assert_eq!(e["hint_key"], format!("hint.{code}"));
    }
    // The call's latencies are in /metrics as Prometheus histograms.
    let metrics = ts
        .http
        .get(ts.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let timed: &[&str] = if max_frames == Some(0) {
        &[vericall::latency::VERDICT_RECORD_SECONDS]
    } else {
        &[
            vericall::latency::DECODE_SECONDS,
            vericall::latency::ANALYSIS_SECONDS,
            vericall::latency::VERDICT_RECORD_SECONDS,
        ]
    };
    for &name in timed {
        assert!(count(name) > 0.0, "{name} recorded: {metrics}");
        assert!(
            metrics.contains(&format!("{name}_bucket{{le=\"0.1\"}}")),
            "{name} has buckets"
        );
    }
    if !expected.is_empty() && max_frames != Some(0) {
        assert!(
            count(vericall::latency::GUIDANCE_SECONDS) > 0.0,
            "guidance latency recorded"
        );
    }
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_stream_gives_no_guidance_at_all() {
    expect_codes(Scene::Good, Some(tone()), None, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_camera() {
    expect_codes(Scene::Black, Some(tone()), None, &["CAMERA_BLACK"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_camera() {
    expect_codes(Scene::Frozen, Some(tone()), None, &["CAMERA_FROZEN"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_track_without_frames() {
    expect_codes(Scene::Good, Some(tone()), Some(0), &["CAMERA_NO_VIDEO"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_room() {
    expect_codes(Scene::Dark, Some(tone()), None, &["LIGHTING_TOO_DARK"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overexposed() {
    expect_codes(Scene::Bright, Some(tone()), None, &["LIGHTING_TOO_BRIGHT"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_focus() {
    expect_codes(Scene::Blurred, Some(tone()), None, &["BLUR"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digital_silence_on_the_microphone() {
    expect_codes(Scene::Good, Some(silence()), None, &["MIC_SILENT"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_microphone_when_the_policy_wants_one() {
    expect_codes(Scene::Good, None, None, &["MIC_MISSING"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_sender_keeps_memory_flat_and_analysis_on_the_newest_frame() {
    let ts = TestServer::start().await;
    // 120 frames per second of pre-encoded VP8: eight times the analysis rate.
    let flood = VideoSource::Encoded(Arc::new(
        encode_pattern(ClipCodec::Vp8, 640, 480, 120, 2000, 240).unwrap(),
    ));
    let rss_before = rss_kib();
    let (report, v, timeline) = call(
        &ts,
        PeerOptions {
            video: Some(flood),
            audio: Some(tone()),
            duration: Duration::from_secs(6),
            ..PeerOptions::default()
        },
    )
    .await;
    let rss_after = rss_kib();
    let d = &v["network"]["decode"];
    let analyzed = d["frames_analyzed"].as_u64().unwrap();
    let skipped = d["frames_skipped"].as_u64().unwrap();
    println!(
        "flood: sent {} frames; {d}; RSS {rss_before} -> {rss_after} KiB",
        report.video_frames_sent
    );
    assert!(
        report.video_frames_sent > 500,
        "the sender did flood: {}",
        report.video_frames_sent
    );
    // Nothing is judged in this call (no face analysis), so frames are analysed at the guidance
    // rate (analysis::effort::GUIDANCE_FPS, 4/s), however fast the sender floods.
    assert!(
        (16..=40).contains(&analyzed),
        "analysis stays at ~4 fps: {analyzed} in 6 s"
    );
    assert!(
        skipped > 300,
        "excess frames are skipped, not queued: {skipped}"
    );
    for e in timeline.iter().filter(|e| e["type"] == "quality") {
        assert!(e["analyzed_fps"].as_u64().unwrap() <= 6, "{e}");
    }
    assert!(
        rss_after < rss_before + 60 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
