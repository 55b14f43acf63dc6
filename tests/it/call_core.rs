//! Whole calls driven through the sans-IO call core (`media::call::CallCore`) with exact
//! timestamps: no network, no encoder, no clock. The rendered person (or attack) reacts to the
//! core's own events, as it does to the page's in the WebRTC tests, so the same behaviour is
//! checked here frame by frame, independent of the machine's speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use vericall::events::SessionEvent;
use vericall::liveness::plan::ChallengePlan;
use vericall::liveness::LightMode;
use vericall::media::call::{CallConfig, CallCore, CallEvent, CallOutput};
use vericall::testkit::actor::{attack, live_person, AttackSpecies, Lighting, FPS};
use vericall::testkit::peer::VideoSource;
use vericall::verdict::{Verdict, VerdictStatus};

use crate::face::{models, stage};

/// A call of `video` through the core: each frame captured at exact 1/FPS steps from `t0`, the
/// core's timers run up to each frame's time, until the verdict (or `limit`). Returns the
/// verdict and the events as the page would read them (`type` plus the payload).
fn call(video: VideoSource, seed: u64, limit: Duration) -> (Option<Verdict>, Vec<Value>) {
    let VideoSource::Reactive(video) = video else {
        panic!("a reactive source");
    };
    let t0 = Instant::now();
    let mut core = CallCore::new(
        CallConfig {
            analysis_fps: 15.0,
            wants_audio: false,
            face_models: Some(models()),
            pool_hint: seed as usize,
            liveness: Some(ChallengePlan::random(&mut StdRng::seed_from_u64(seed), 3)),
            light: LightMode::On,
            light_seed: seed,
            document: None,
            document_step_id: 0,
            today: (2026, 12, 7),
            keep_evidence: true,
        },
        t0,
    );
    core.on_connected(t0, false);
    let mut events: Vec<Value> = Vec::new();
    let mut verdict = None;
    let frames = (limit.as_secs_f64() * FPS as f64) as u64;
    for index in 0..frames {
        let at = t0 + Duration::from_secs_f64(index as f64 / FPS as f64);
        while core.poll_timeout() <= at {
            let due = core.poll_timeout();
            core.handle_timeout(due);
        }
        // The person sees what the core said before this frame.
        collect(&mut core, &mut events, &mut verdict);
        if verdict.is_some() {
            break;
        }
        let frame = (video.frame)(index, &events);
        core.on_video_packet(at, index as f64 / FPS as f64, at);
        if core.on_frame(&frame, at, false) {
            core.on_frame_document(&frame, at);
        }
        collect(&mut core, &mut events, &mut verdict);
    }
    (verdict, events)
}

fn collect(core: &mut CallCore, events: &mut Vec<Value>, verdict: &mut Option<Verdict>) {
    while let Some(output) = core.poll_output() {
        match output {
            CallOutput::Event(e) => events.push(page_event(&e)),
            CallOutput::Verdict(v) => *verdict = Some(*v),
            CallOutput::FaceObserved | CallOutput::Evidence { .. } => {}
        }
    }
}

fn page_event(e: &CallEvent) -> Value {
    let mut v = serde_json::to_value(e).expect("events serialise");
    v["type"] = e.kind().into();
    v
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "challenge")
        .filter_map(|e| e["action"].as_str())
        .collect()
}

#[test]
fn a_live_person_passes_the_light_step_and_three_challenges() {
    for seed in [1, 2] {
        let video = live_person(stage().clone(), Arc::new(std::sync::Mutex::new(Vec::new())));
        let (verdict, events) = call(video, seed, Duration::from_secs(60));
        let verdict = verdict.expect("a verdict within the call");
        println!("seed {seed}: {:?} {:?}", verdict.status, actions(&events));
        assert_eq!(
            verdict.status,
            VerdictStatus::Passed,
            "{:#?}",
            verdict.reasons
        );
        assert!(verdict.reasons.is_empty(), "{:?}", verdict.reasons);
        let asked = actions(&events);
        assert_eq!(asked.len(), 4, "{asked:?}");
        assert_eq!(asked[0], "screen_light");
        // Every step announced was passed, in order, and the page was told its position.
        let passed = events
            .iter()
            .filter(|e| e["type"] == "challenge_passed")
            .count();
        assert_eq!(passed, 4);
        let indices: Vec<u64> = events
            .iter()
            .filter(|e| e["type"] == "challenge")
            .filter_map(|e| e["index"].as_u64())
            .collect();
        assert_eq!(indices, [0, 1, 2, 3]);
        // The provenance cues are reported, not judged: these frames are stamped by the test's
        // own clock (every interval 1/15 s to the tick, as a program playing a file stamps
        // them), which the scores show, and the person still passes.
        let provenance = &verdict.scores["provenance"];
        assert_eq!(provenance["capture_interval_ms"], 66.67, "{provenance}");
        assert_eq!(provenance["capture_jitter_ms"], 0.0, "{provenance}");
        assert_eq!(provenance["capture_regular_share"], 1.0, "{provenance}");
        assert!(
            provenance["image_samples"].as_u64() >= Some(1),
            "{provenance}"
        );
        assert!(provenance["moire_peak_db"].is_number(), "{provenance}");
    }
}

#[test]
fn a_responsive_replay_injected_into_the_core_is_refused_as_a_spoof() {
    let video = attack(
        stage().clone(),
        AttackSpecies::InjectedReplay,
        Lighting::default(),
    );
    let (verdict, events) = call(video, 3, Duration::from_secs(60));
    let verdict = verdict.expect("a verdict within the call");
    let codes: Vec<&str> = verdict.reasons.iter().map(|r| r.code.as_str()).collect();
    println!("{:?} {codes:?}", verdict.status);
    assert_eq!(verdict.status, VerdictStatus::Failed);
    assert_eq!(codes.first(), Some(&"SPOOF_SUSPECTED"), "{codes:?}");
    // The page is never told "spoof".
    assert!(events
        .iter()
        .all(|e| e["type"] != "challenge_failed" || e["reason"] != "SPOOF_SUSPECTED"));
}
