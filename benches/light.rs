//! The screen-light step against live people and presentation attacks, ISO/IEC 30107-3 style:
//! per attack species the APCER (share of attacks whose light step matched), and over live
//! people the BPCER (share whose step did not end `matched`), with the reflection values.
//!
//!     cargo bench --bench light                # 50 live calls, 20 attacks per species
//!     LIGHT_LIVE=10 LIGHT_ATTACKS=4 cargo bench --bench light
//!
//! Needs the models and ONNX Runtime from `scripts/setup`. Each call drives the server's own
//! `LightStep` (the sans-IO state machine the pipeline runs: lead-in, random sequence, two
//! attempts) with exact times: the `challenge` event reaches the simulated page after a random
//! downlink delay (60-250 ms), the actor (`testkit::actor`) renders its frame at 15 fps lit by
//! what the page shows at that moment, each frame goes through VP8 at 900 kbit/s (`LIGHT_KBPS`), the decoder
//! and the `FaceTracker`, and reaches the server after a random uplink delay (40-200 ms), where
//! `liveness::light::measure` reads it. Live people vary skin albedo (1.0 to 0.45), room light
//! (dim 0.35x to bright 1.4x), screen brightness (0.07 to 0.14 of an office room's light) and
//! distance (face 0.75x to 1.25x of the stage's framing); attacks are `AttackSpecies::ALL`.
//! Prints a markdown table, then the provenance cues (`analysis::provenance`: moire, face detail,
//! sensor noise, repeated frames) per presentation, which the verdict reports but does not judge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use vericall::analysis::face::{FaceModels, FaceTracker};
use vericall::analysis::provenance::{face_region, ProvenanceMonitor, ProvenanceScores};
use vericall::liveness::light::{LightEvent, LightResult, LightStep};
use vericall::media::decode::{DecodedFrame, VideoCodec, VideoDecoder, VpxEncoder};
use vericall::testkit::actor::{attack, lit_person, AttackSpecies, Lighting, Stage, FPS};
use vericall::testkit::peer::VideoSource;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_models() -> Arc<FaceModels> {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        std::env::set_var(
            "ORT_DYLIB_PATH",
            repo().join(vericall::analysis::face::models::DEFAULT_ORT_LIBRARY),
        );
    }
    FaceModels::load(&repo().join("models")).expect("models installed by scripts/setup")
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One call's light step: its final result, its best attempt's correlation and gain, and how
/// long the step took from the face being steady in view to its end.
struct CallResult {
    result: Option<LightResult>,
    correlation: f64,
    gain: f64,
    took: Duration,
    provenance: ProvenanceScores,
}

fn call(video: &VideoSource, models: &Arc<FaceModels>, rng: &mut StdRng) -> CallResult {
    let VideoSource::Reactive(actor) = video else {
        panic!("actors are reactive");
    };
    let down = Duration::from_millis(rng.gen_range(60..250));
    let up = Duration::from_millis(rng.gen_range(40..200));
    let mut step = LightStep::new(rng.gen());
    let kbps = count("LIGHT_KBPS", 900) as u32;
    let mut enc = VpxEncoder::new(VideoCodec::Vp8, 640, 480, FPS, kbps).unwrap();
    let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
    let mut decoded = DecodedFrame::default();
    let mut tracker = FaceTracker::new(models.clone(), 0);
    let mut provenance = ProvenanceMonitor::default();
    let start = Instant::now();
    // Events as the server sent them (time sent) and frames in flight (arrival, observation).
    let mut sent: Vec<(Duration, Value)> = Vec::new();
    let frame_ms = 1000 / FPS as u64;
    let mut took = Duration::ZERO;
    for index in 0..(14 * FPS as u64) {
        let t = Duration::from_millis(index * frame_ms);
        // The server ticks every 100 ms up to this frame's capture time.
        let mut tick_at = Duration::from_millis((t.as_millis() as u64 / 100) * 100);
        if index > 0 && tick_at + Duration::from_millis(100) > t {
            tick_at = t;
        }
        for e in step.on_tick(start + tick_at, None) {
            match e {
                LightEvent::Started { id, sequence, .. } => sent.push((
                    tick_at,
                    json!({ "type": "challenge", "id": id, "action": "screen_light", "light": sequence }),
                )),
                LightEvent::Retry { id, .. } => sent.push((
                    tick_at,
                    json!({ "type": "challenge_paused", "id": id }),
                )),
                _ => {}
            }
        }
        if step.is_done() {
            took = tick_at;
            break;
        }
        // What the page has received by this frame's capture.
        let events: Vec<Value> = sent
            .iter()
            .filter(|(at, _)| *at + down <= t)
            .map(|(_, e)| e.clone())
            .collect();
        let raw = (actor.frame)(index, &events);
        for (bytes, key) in enc.encode(&raw, index as i64, index == 0).unwrap() {
            dec.decode(&bytes, key, &mut decoded).unwrap();
        }
        let arrival = start + t + up;
        let observation = tracker.observe(&decoded.view(), arrival).unwrap();
        provenance.on_decoded(&decoded.view());
        let face_box = observation.face.as_ref().map(|f| face_region(f.bbox));
        provenance.on_analysed(&decoded.view(), face_box, arrival);
        if let Some(face) = &observation.face {
            if let Some(r) =
                vericall::liveness::light::measure(&decoded.view(), face.bbox, face.inter_eye_px)
            {
                step.on_reading(arrival, r);
            }
        }
    }
    let outcome = step.outcome();
    let best = outcome
        .attempts
        .iter()
        .max_by(|a, b| a.1.correlation.total_cmp(&b.1.correlation))
        .map(|a| a.1);
    CallResult {
        result: outcome.result,
        correlation: best.map_or(0.0, |s| s.correlation),
        gain: best.map_or(0.0, |s| s.gain),
        took,
        provenance: provenance.scores(),
    }
}

/// One row of the provenance table: min / median / max of each image cue over the calls.
fn provenance_row(name: &str, calls: &[ProvenanceScores]) {
    let spread = |f: &dyn Fn(&ProvenanceScores) -> Option<f64>| {
        let mut v: Vec<f64> = calls.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => "-".to_string(),
            n => format!("{:.2} / {:.2} / {:.2}", v[0], v[n / 2], v[n - 1]),
        }
    };
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        calls.len(),
        spread(&|p| p.moire_peak_db),
        spread(&|p| p.face_detail_ratio),
        spread(&|p| p.sensor_noise),
        spread(&|p| p.repeated_frame_share),
    );
}

fn main() {
    let models = load_models();
    let stage = Arc::new(Stage::astronaut(models.clone(), &repo().join("models/stills")).unwrap());
    let live_n = count("LIGHT_LIVE", 50);
    let attack_n = count("LIGHT_ATTACKS", 20);
    let mut rng = StdRng::seed_from_u64(2026);
    println!("| presentation | calls | accepted (light step matched) | rate | correlation (median) | gain (median) |");
    println!("|---|---|---|---|---|---|");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    // Live people: BPCER is the share not matched.
    let (mut rejected, mut corr, mut gains, mut worst) = (0, Vec::new(), Vec::new(), Vec::new());
    let mut took = Vec::new();
    let mut provenance: Vec<(String, Vec<ProvenanceScores>)> = vec![("live".into(), Vec::new())];
    for i in 0..live_n {
        let lighting = Lighting {
            room: [0.35, 0.6, 1.0, 1.4][i % 4],
            skin: [1.0, 0.8, 0.6, 0.45][(i / 4) % 4],
            screen: rng.gen_range(0.07..0.14),
            noise: rng.gen_range(1.0..2.5),
        };
        let scale = [0.75, 1.0, 1.25][i % 3];
        let video = lit_person(stage.clone(), lighting, scale);
        let c = call(&video, &models, &mut rng);
        if c.result != Some(LightResult::Matched) {
            rejected += 1;
            worst.push(format!(
                "{lighting:?} scale {scale}: {:?} r {:.2} gain {:.4}",
                c.result, c.correlation, c.gain
            ));
        } else {
            took.push(c.took.as_secs_f64());
        }
        corr.push(c.correlation);
        gains.push(c.gain);
        provenance[0].1.push(c.provenance);
    }
    let step_p50 = median(took.clone());
    took.sort_by(f64::total_cmp);
    let step_p95 = took
        .get((took.len() * 95).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    println!(
        "| live (BPCER) | {live_n} | {} passed, {rejected} not | {:.1} % | {:.3} | {:.4} |",
        live_n - rejected,
        100.0 * rejected as f64 / live_n.max(1) as f64,
        median(corr),
        median(gains)
    );
    for species in AttackSpecies::ALL {
        let (mut accepted, mut corr, mut gains) = (0, Vec::new(), Vec::new());
        provenance.push((species.name().into(), Vec::new()));
        for _ in 0..attack_n {
            let lighting = Lighting {
                room: rng.gen_range(0.5..1.3),
                screen: rng.gen_range(0.07..0.14),
                noise: rng.gen_range(1.0..2.5),
                ..Lighting::default()
            };
            let video = attack(stage.clone(), species, lighting);
            let c = call(&video, &models, &mut rng);
            if c.result == Some(LightResult::Matched) {
                accepted += 1;
            }
            corr.push(c.correlation);
            gains.push(c.gain);
            if let Some((_, calls)) = provenance.last_mut() {
                calls.push(c.provenance);
            }
        }
        println!(
            "| {} (APCER) | {attack_n} | {accepted} | {:.1} % | {:.3} | {:.4} |",
            species.name(),
            100.0 * accepted as f64 / attack_n.max(1) as f64,
            median(corr),
            median(gains)
        );
    }
    println!(
        "\nLive steps that passed took {step_p50:.2} s (median), {step_p95:.2} s (p95) from a steady face to the pass."
    );
    for w in worst {
        println!("live not matched: {w}");
    }
    println!(
        "\nProvenance cues per call (min / median / max over the calls; reported, not judged):\n"
    );
    println!("| presentation | calls | moire peak dB | face detail ratio | sensor noise (levels) | repeated frames |");
    println!("|---|---|---|---|---|---|");
    for (name, calls) in &provenance {
        provenance_row(name, calls);
    }
}
