//! Liveness end to end over real WebRTC: guidance latency, challenge-to-verdict delay, and how far
//! the spoof scores of live people and of photo attacks sit from their thresholds.
//!
//!     cargo bench --bench liveness
//!
//! Needs the models and ONNX Runtime from `scripts/setup` (`models/`, `.deps/onnxruntime/`);
//! `ORT_DYLIB_PATH` defaults to the setup script's library under the crate root.
//!
//! One in-process server (face analysis on, SQLite in a temp dir, ephemeral ports), as
//! `tests/it/common.rs` starts it. `LIVENESS_BENCH_N` (default 4) live-person sessions, then as
//! many photo-attack sessions, one at a time, each streamed by the str0m test peer with a
//! reactive source: the rendered person of `tests/it/liveness.rs` who follows the challenges, or
//! the printed photo tilted and slid about. Each session's timeline and session JSON are read
//! back over HTTP once it ends; the results are printed as markdown tables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vericall::analysis::face::{FaceModels, FaceTracker};
use vericall::analysis::image::rgb_to_i420;
use vericall::analysis::quality::I420;
use vericall::config::Config;
use vericall::liveness::spoof::{FLAT_MOTION_MIN_FRAMES, FLAT_RATIO_CHANGE, PLANAR_RESIDUAL_MAX};
use vericall::media::decode::{DecodedFrame, VideoCodec};
use vericall::server::RunningServer;
use vericall::testkit::card::render_card;
use vericall::testkit::clip::encode_tone;
use vericall::testkit::http::request;
use vericall::testkit::peer::{run_peer, PeerOptions, ReactiveVideo, VideoSource};
use vericall::testkit::render::{FaceEdit, HeadPose, HeadRenderer, RgbImage};

const FPS: u32 = 15;
/// Sessions per group unless `LIVENESS_BENCH_N` says otherwise.
const DEFAULT_N: usize = 4;
/// The peer stops at the verdict; this only bounds a session that never gets one.
const PEER_LIMIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn models() -> Arc<FaceModels> {
    static MODELS: OnceLock<Arc<FaceModels>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            FaceModels::load(&repo().join("models")).expect("models installed by scripts/setup")
        })
        .clone()
}

fn frame_of(img: &RgbImage) -> DecodedFrame {
    let (y, u, v) = rgb_to_i420(img.width, img.height, &img.data);
    DecodedFrame {
        width: img.width,
        height: img.height,
        y,
        u,
        v,
    }
}

/// The portrait on a 640x480 canvas and a renderer for posed versions of it (as `stage()` in
/// `tests/it/face.rs`).
fn renderer() -> &'static HeadRenderer {
    static RENDERER: OnceLock<HeadRenderer> = OnceLock::new();
    RENDERER.get_or_init(|| {
        let img = image::open(repo().join("models/stills/astronaut.png"))
            .expect("still installed by scripts/setup")
            .to_rgb8();
        let w = img.width() as usize;
        let rgb = img.into_raw();
        let crop: Vec<u8> = (0..256)
            .flat_map(|y| rgb[(y * w + 96) * 3..][..768].to_vec())
            .collect();
        let portrait = RgbImage::from_raw(256, 256, crop)
            .unwrap()
            .resized(480, 480);
        let mut canvas = RgbImage::new(640, 480, [90, 100, 110]);
        canvas.blit(&portrait, 80, 0);
        let (y, u, v) = rgb_to_i420(640, 480, &canvas.data);
        let planes = I420 {
            width: 640,
            height: 480,
            y: &y,
            u: &u,
            v: &v,
            y_stride: 640,
            uv_stride: 320,
        };
        let face = FaceTracker::new(models(), 0)
            .observe(&planes, Instant::now())
            .expect("tracker runs")
            .face
            .expect("face on the canvas");
        HeadRenderer::new(canvas, &face.landmarks).expect("renderer from the mesh")
    })
}

/// The challenge the peer is currently asked to do, and how many seconds ago it first saw it.
fn current_challenge(
    events: &[Value],
    seen: &Mutex<HashMap<u64, u64>>,
    index: u64,
) -> Option<(String, f32)> {
    let mut open: Option<&Value> = None;
    for e in events {
        match e["type"].as_str() {
            Some("challenge") => open = Some(e),
            Some("challenge_passed") | Some("challenge_failed")
                if open.is_some_and(|o| o["id"] == e["id"]) =>
            {
                open = None
            }
            _ => {}
        }
    }
    let c = open?;
    let id = c["id"].as_u64()?;
    let first = *seen.lock().unwrap().entry(id).or_insert(index);
    Some((
        c["action"].as_str()?.to_string(),
        (index - first) as f32 / FPS as f32,
    ))
}

/// How far into an action the person is at `t` seconds: ramp up, hold, ramp back.
fn progress(t: f32) -> f32 {
    match t {
        t if t < 0.3 => 0.0,
        t if t < 0.8 => (t - 0.3) / 0.5,
        t if t < 1.4 => 1.0,
        t if t < 1.9 => 1.0 - (t - 1.4) / 0.5,
        _ => 0.0,
    }
}

/// A person never holds perfectly still: a slight sway and bob.
fn idle(index: u64) -> FaceEdit {
    let t = index as f32 / FPS as f32;
    FaceEdit {
        offset: ((t * 1.3).sin() * 3.0, (t * 0.9).cos() * 2.0),
        ..FaceEdit::posed((t * 0.8).sin() * 1.5, (t * 0.6).cos() * 1.0, 0.0)
    }
}

/// A person doing what is asked (on top of their idle motion).
fn perform(action: &str, t: f32, index: u64) -> FaceEdit {
    let p = progress(t);
    let base = idle(index);
    let posed = |yaw: f32, pitch: f32| FaceEdit {
        pose: HeadPose {
            yaw: base.pose.yaw + yaw,
            pitch: base.pose.pitch + pitch,
            roll: 0.0,
        },
        ..base
    };
    match action {
        "turn_left" => posed(25.0 * p, 0.0),
        "turn_right" => posed(-25.0 * p, 0.0),
        "look_up" => posed(0.0, 22.0 * p),
        "look_down" => posed(0.0, -22.0 * p),
        "blink" => FaceEdit {
            eyes_closed: if (0.5..0.9).contains(&t) { 1.0 } else { 0.0 },
            ..base
        },
        "open_mouth" => FaceEdit {
            mouth_open: p,
            ..base
        },
        // Moving closer stays closer.
        "move_closer" => FaceEdit {
            scale: 1.0 + 0.45 * ((t - 0.3) / 0.5).clamp(0.0, 1.0),
            ..base
        },
        _ => base,
    }
}

/// A rendered person who follows the challenges.
fn live_person() -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    VideoSource::Reactive(Arc::new(ReactiveVideo {
        codec: VideoCodec::Vp8,
        fps: FPS,
        bitrate_kbps: 900,
        frame: Box::new(move |index, events| {
            let edit = match current_challenge(events, &seen, index) {
                Some((action, t)) => perform(&action, t, index),
                None => idle(index),
            };
            frame_of(&renderer().render(&edit).0)
        }),
    }))
}

/// A printed photo of the person held up to the camera, tilted for turns and nods and slid about.
fn photo_attack() -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    let photo = renderer().render(&FaceEdit::default()).0;
    let background = RgbImage::new(640, 480, [120, 118, 110]);
    VideoSource::Reactive(Arc::new(ReactiveVideo {
        codec: VideoCodec::Vp8,
        fps: FPS,
        bitrate_kbps: 900,
        frame: Box::new(move |index, events| {
            let (mut yaw, mut pitch) = (0.0, 0.0);
            if let Some((action, t)) = current_challenge(events, &seen, index) {
                let p = progress(t);
                match action.as_str() {
                    "turn_left" => yaw = 40.0 * p,
                    "turn_right" => yaw = -40.0 * p,
                    "look_up" => pitch = 35.0 * p,
                    "look_down" => pitch = -35.0 * p,
                    _ => {}
                }
            }
            let slide = (index as f32 * 0.15).sin() * 25.0;
            frame_of(&render_card(
                &photo,
                &background,
                (320.0 + slide, 240.0),
                0.95,
                yaw,
                pitch,
                slide * 0.1,
                800.0,
            ))
        }),
    }))
}

struct Api {
    base: String,
    auth: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![("Authorization", self.auth.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        let r = request(method, &url, &headers, body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    async fn session(&self, id: &str) -> Value {
        let (status, v) = self.call("GET", &format!("/v1/sessions/{id}"), None).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn timeline(&self, id: &str) -> Vec<Value> {
        let (status, v) = self
            .call("GET", &format!("/v1/sessions/{id}/timeline"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    }
}

/// What one session left behind.
struct Outcome {
    group: &'static str,
    session: Value,
    timeline: Vec<Value>,
    wall: Duration,
}

async fn verify(
    api: &Api,
    group: &'static str,
    video: VideoSource,
    tone: &Arc<Vec<Arc<[u8]>>>,
    subject: &str,
) -> Outcome {
    let started = Instant::now();
    let (status, created) = api
        .call("POST", "/v1/sessions", Some(json!({ "subject": subject })))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    run_peer(
        created["whip_url"].as_str().unwrap(),
        created["client_token"].as_str().unwrap(),
        PeerOptions {
            video: Some(video),
            audio: Some(tone.clone()),
            duration: PEER_LIMIT,
            ..PeerOptions::default()
        },
    )
    .await
    .expect("peer streams");
    let deadline = Instant::now() + Duration::from_secs(15);
    let session = loop {
        let v = api.session(&id).await;
        if v["state"] == "ended" {
            break v;
        }
        assert!(Instant::now() < deadline, "session never ended: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The timeline is written asynchronously; wait (briefly) for the end marker.
    let deadline = Instant::now() + Duration::from_secs(3);
    let timeline = loop {
        let events = api.timeline(&id).await;
        if events.iter().any(|e| e["type"] == "session_ended") || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Outcome {
        group,
        session,
        timeline,
        wall: started.elapsed(),
    }
}

/// Nearest-rank percentile of a sorted sample.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn median(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn status(o: &Outcome) -> &str {
    o.session["verdict"]["status"].as_str().unwrap_or("none")
}

fn reasons(o: &Outcome) -> String {
    let codes: Vec<&str> = o.session["verdict"]["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["code"].as_str()).collect())
        .unwrap_or_default();
    if codes.is_empty() {
        "-".into()
    } else {
        codes.join(", ")
    }
}

/// The actions of the failed steps (the `challenge` event carries the action).
fn failed_actions(o: &Outcome) -> String {
    let failed: Vec<String> = o
        .timeline
        .iter()
        .filter(|e| e["type"] == "challenge_failed")
        .map(|f| {
            let action = o
                .timeline
                .iter()
                .find(|c| c["type"] == "challenge" && c["id"] == f["id"])
                .and_then(|c| c["action"].as_str())
                .unwrap_or("?");
            match f["code"].as_str().or(f["reason"].as_str()) {
                Some(code) => format!("{action} ({code})"),
                None => action.to_string(),
            }
        })
        .collect();
    if failed.is_empty() {
        "-".into()
    } else {
        failed.join(", ")
    }
}

fn event_at(e: &Value) -> Option<f64> {
    e["at_ms"].as_f64()
}

/// Last challenge_passed/failed -> verdict, in ms of the server's event clock.
fn verdict_delay(o: &Outcome) -> Option<f64> {
    let last_step = o
        .timeline
        .iter()
        .filter(|e| e["type"] == "challenge_passed" || e["type"] == "challenge_failed")
        .filter_map(event_at)
        .reduce(f64::max)?;
    let verdict = o
        .timeline
        .iter()
        .find(|e| e["type"] == "verdict")
        .and_then(event_at)?;
    Some(verdict - last_step)
}

fn score(o: &Outcome, key: &str, field: &str) -> Option<f64> {
    o.session["verdict"]["scores"][key][field].as_f64()
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

fn min_med_max(values: Vec<f64>, digits: usize) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    let s = sorted(values);
    format!(
        "{:.d$} / {:.d$} / {:.d$} (n={})",
        s[0],
        median(&s),
        s[s.len() - 1],
        s.len(),
        d = digits
    )
}

fn report(outcomes: &[Outcome]) {
    println!("\n### Sessions\n");
    println!("| # | group | verdict | reasons | steps passed/failed | failed actions | guidance events | homography residual | flat frames | max ratio change | wall s |");
    println!("|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|");
    for (i, o) in outcomes.iter().enumerate() {
        let count = |t: &str| o.timeline.iter().filter(|e| e["type"] == t).count();
        println!(
            "| {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {:.1} |",
            i + 1,
            o.group,
            status(o),
            reasons(o),
            count("challenge_passed"),
            count("challenge_failed"),
            failed_actions(o),
            count("guidance"),
            fmt(score(o, "planarity", "homography_residual"), 4),
            fmt(score(o, "flat_motion", "frames"), 0),
            fmt(score(o, "flat_motion", "max_ratio_change"), 4),
            o.wall.as_secs_f64(),
        );
    }

    println!("\n### Latency (all sessions)\n");
    println!("| measure | p50 ms | p95 ms | max ms | n |");
    println!("|---|---:|---:|---:|---:|");
    let guidance: Vec<f64> = outcomes
        .iter()
        .flat_map(|o| o.timeline.iter())
        .filter(|e| e["type"] == "guidance")
        .filter_map(|e| e["latency_ms"].as_f64())
        .collect();
    let delays: Vec<f64> = outcomes.iter().filter_map(verdict_delay).collect();
    for (name, values) in [
        ("guidance `latency_ms` (capture -> send)", guidance),
        ("last challenge_passed/failed -> verdict (`at_ms`)", delays),
    ] {
        if values.is_empty() {
            println!("| {name} | n/a | n/a | n/a | 0 |");
            continue;
        }
        let s = sorted(values);
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {} |",
            median(&s),
            pct(&s, 0.95),
            s[s.len() - 1],
            s.len()
        );
    }

    println!("\n### Spoof scores, min / median / max\n");
    println!("| score | threshold | live person | photo attack |");
    println!("|---|---|---|---|");
    let values = |group: &str, key: &str, field: &str| -> Vec<f64> {
        outcomes
            .iter()
            .filter(|o| o.group == group)
            .filter_map(|o| score(o, key, field))
            .collect()
    };
    for (name, threshold, key, field, digits) in [
        (
            "planarity.homography_residual",
            format!("planar if < {PLANAR_RESIDUAL_MAX}"),
            "planarity",
            "homography_residual",
            4,
        ),
        (
            "planarity.affine_residual",
            "-".to_string(),
            "planarity",
            "affine_residual",
            4,
        ),
        (
            "flat_motion.frames",
            format!("flat if >= {FLAT_MOTION_MIN_FRAMES}"),
            "flat_motion",
            "frames",
            0,
        ),
        (
            "flat_motion.max_ratio_change",
            format!("a frame counts if >= {FLAT_RATIO_CHANGE}"),
            "flat_motion",
            "max_ratio_change",
            4,
        ),
    ] {
        println!(
            "| {name} | {threshold} | {} | {} |",
            min_med_max(values("live", key, field), digits),
            min_med_max(values("photo", key, field), digits),
        );
    }

    println!("\n### Verdicts\n");
    println!("| group | passed | failed | needs_review | other | reasons (failed) |");
    println!("|---|---:|---:|---:|---:|---|");
    for group in ["live", "photo"] {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.group == group).collect();
        let n = |s: &str| of.iter().filter(|o| status(o) == s).count();
        let other = of.len() - n("passed") - n("failed") - n("needs_review");
        let mut codes: Vec<String> = of
            .iter()
            .filter(|o| status(o) != "passed")
            .map(|o| reasons(o))
            .collect();
        codes.sort();
        codes.dedup();
        println!(
            "| {group} | {} | {} | {} | {other} | {} |",
            n("passed"),
            n("failed"),
            n("needs_review"),
            if codes.is_empty() {
                "-".into()
            } else {
                codes.join("; ")
            }
        );
    }
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        media_addr: "127.0.0.1:0".parse().unwrap(),
        face_analysis: true,
        models_dir: repo().join("models").display().to_string(),
        database_url: format!("sqlite://{}/vericall.db?mode=rwc", dir.path().display()),
        ..Config::default()
    };
    let static_dir = repo().join("static");
    let server: RunningServer = vericall::server::start(cfg, static_dir.to_str().unwrap())
        .await
        .expect("server starts");
    let api = Api {
        base: server.base_url.clone(),
        auth: format!(
            "Bearer {}",
            server
                .created_api_key
                .clone()
                .expect("a fresh database gets a key")
        ),
    };
    let tone = Arc::new(encode_tone(50, 0.3).unwrap());
    renderer(); // build the stage before the first session, not inside its first frame

    let mut outcomes = Vec::new();
    for (group, count) in [("live", n), ("photo", n)] {
        for i in 0..count {
            let video = if group == "live" {
                live_person()
            } else {
                photo_attack()
            };
            // One subject per session: failed attempts count per subject (and a photo always fails).
            let subject = format!("liveness-bench-{group}-{i}");
            let o = verify(&api, group, video, &tone, &subject).await;
            eprintln!(
                "{group} {}/{count}: {} [{}] in {:.1} s",
                i + 1,
                status(&o),
                reasons(&o),
                o.wall.as_secs_f64()
            );
            outcomes.push(o);
        }
    }
    report(&outcomes);
    server.shutdown(Duration::from_secs(1)).await;
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        std::env::set_var(
            "ORT_DYLIB_PATH",
            repo().join(vericall::analysis::face::models::DEFAULT_ORT_LIBRARY),
        );
    }
    let n = std::env::var("LIVENESS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_N);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}
