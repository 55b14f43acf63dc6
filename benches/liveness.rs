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

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vericall::analysis::face::FaceModels;
use vericall::config::Config;
use vericall::liveness::spoof::{FLAT_MOTION_MIN_FRAMES, FLAT_RATIO_CHANGE, PLANAR_RESIDUAL_MAX};
use vericall::server::RunningServer;
use vericall::testkit::actor::{live_person, photo_attack, Stage};
use vericall::testkit::http::request;
use vericall::testkit::peer::{run_peer, PeerOptions, VideoSource};
use vericall::testkit::voice::speaking_person;

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

/// The rendered portrait shared by every session (as `stage()` in `tests/it/face.rs`).
fn stage() -> &'static Arc<Stage> {
    static STAGE: OnceLock<Arc<Stage>> = OnceLock::new();
    STAGE.get_or_init(|| {
        Arc::new(Stage::astronaut(models(), &repo().join("models/stills")).expect("stage"))
    })
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

async fn verify(api: &Api, group: &'static str, video: VideoSource, subject: &str) -> Outcome {
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
            // Reads the spoken step's digits aloud; a quiet room (-70 dBFS) otherwise.
            voice: Some(speaking_person(-70.0)),
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
    stage(); // build the stage before the first session, not inside its first frame

    let mut outcomes = Vec::new();
    for (group, count) in [("live", n), ("photo", n)] {
        for i in 0..count {
            let video = if group == "live" {
                live_person(stage().clone(), Arc::new(Mutex::new(Vec::new())))
            } else {
                photo_attack(stage().clone())
            };
            // One subject per session: failed attempts count per subject (and a photo always fails).
            let subject = format!("liveness-bench-{group}-{i}");
            let o = verify(&api, group, video, &subject).await;
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
