//! Per-frame face-analysis cost at 640x480: the bare model runs (BlazeFace detector, 468-point
//! mesh, eye-contour model per eye) and `FaceTracker::observe` while tracking (mesh only, with a
//! re-detection every few frames) and with the detector forced on every frame.
//!
//!     cargo bench --bench face
//!
//! Needs the models and ONNX Runtime from `scripts/setup` (`models/`, `.deps/onnxruntime/`);
//! `ORT_DYLIB_PATH` defaults to the setup script's library under the crate root.
//!
//! The frame is the packaged astronaut portrait framed as a centred selfie, as `stage()` in
//! `tests/it/face.rs` builds it: the portrait's upper 256x256 from x=96, scaled to 480x480 and
//! centred on a 640x480 canvas. The same frame is analysed every time (a still subject). Plain
//! `std::time::Instant` timing of every call; the measurements are interleaved in rounds so
//! machine noise hits them alike. Prints medians and p95 as markdown tables.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vericall::analysis::face::detector::{self, Detection};
use vericall::analysis::face::mesh::{self, idx, Roi};
use vericall::analysis::face::{FaceModels, FaceTracker, REDETECT_EVERY, REDETECT_MIN_INTERVAL};
use vericall::analysis::image::rgb_to_i420;
use vericall::testkit::render::RgbImage;

mod support;
use support::{ms, stats};

/// Interleaved rounds; every measurement gets `ROUNDS x` its per-round count of samples.
const ROUNDS: usize = 5;
/// Bare model runs and forced-detection frames per round (300 samples each in all).
const PER_ROUND: usize = 60;
/// Tracked frames per round (1200 in all, so about 200 of them re-detect).
const TRACKED_PER_ROUND: usize = 240;
/// Untimed calls of each kind before timing.
const WARMUP: usize = 20;

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
/// Packed I420 planes of an image: the server's own decoded-frame type.
pub use vericall::media::decode::DecodedFrame as Planes;

/// The centred 640x480 selfie frame built from `models/stills/astronaut.png`.
fn selfie() -> Planes {
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
    Planes {
        width: 640,
        height: 480,
        y,
        u,
        v,
        full_range: false,
    }
}

fn median(samples: &[f64]) -> f64 {
    stats(samples).0
}

fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len() as f64
}

fn best(detections: &[Detection]) -> Option<&Detection> {
    detections.iter().max_by(|a, b| a.score.total_cmp(&b.score))
}

#[derive(Default)]
struct Samples {
    detect: Vec<f64>,
    mesh: Vec<f64>,
    eye_right: Vec<f64>,
    eye_left: Vec<f64>,
    eyes: Vec<f64>,
    tracked_all: Vec<f64>,
    tracked_detect: Vec<f64>,
    tracked_mesh_only: Vec<f64>,
    /// All frames, tracked without the eye-contour model (`observe_with(.., false)`): what the
    /// phases that judge no blink run (`analysis::effort`).
    tracked_no_eyes: Vec<f64>,
    forced: Vec<f64>,
}

fn main() {
    // `cargo bench` passes `--bench`; the arguments are ignored.
    eprintln!("loading models and the selfie frame ...");
    let models = load_models();
    let iris = models
        .iris
        .as_ref()
        .expect("eye-contour model (iris_landmark.onnx) installed by scripts/setup");
    let planes = selfie();
    let frame = planes.view();
    let mut scratch = Vec::with_capacity(3 * 192 * 192);

    // The detection, ROI and eye corners the bare runs use (as the tracker would on this frame).
    let detection = {
        let mut session = models.detector.acquire(0);
        let found = detector::detect(&mut session, &frame, &mut scratch).unwrap();
        best(&found).expect("a face in the selfie frame").clone()
    };
    let roi = Roi::from_detection(&detection);
    let points = {
        let mut session = models.mesh.acquire(0);
        let m = mesh::run_mesh(&mut session, &frame, &roi, &mut scratch).unwrap();
        assert!(m.presence > 0.5, "mesh presence {}", m.presence);
        m.points
    };
    let right = (points[idx::RIGHT_EYE_OUTER], points[idx::RIGHT_EYE_INNER]);
    let left = (points[idx::LEFT_EYE_OUTER], points[idx::LEFT_EYE_INNER]);

    // Sessions for the bare runs are held across the timed calls (acquiring is a try_lock).
    let run_detect = |scratch: &mut Vec<f32>| {
        let mut session = models.detector.acquire(0);
        let t = Instant::now();
        let d = detector::detect(&mut session, black_box(&frame), scratch).unwrap();
        let dt = ms(t.elapsed());
        assert!(!d.is_empty());
        black_box(d);
        dt
    };
    let run_mesh = |scratch: &mut Vec<f32>| {
        let mut session = models.mesh.acquire(0);
        let t = Instant::now();
        let m = mesh::run_mesh(&mut session, black_box(&frame), &roi, scratch).unwrap();
        let dt = ms(t.elapsed());
        black_box(m);
        dt
    };
    let run_eye = |scratch: &mut Vec<f32>, (outer, inner): ([f32; 3], [f32; 3]), mirror: bool| {
        let mut session = iris.acquire(0);
        let t = Instant::now();
        let e = mesh::read_eye(
            &mut session,
            black_box(&frame),
            outer,
            inner,
            mirror,
            scratch,
        )
        .unwrap();
        let dt = ms(t.elapsed());
        black_box(e);
        dt
    };

    let mut tracker = FaceTracker::new(models.clone(), 0);
    let mut forced_tracker = FaceTracker::new(models.clone(), 0);
    let mut no_eyes_tracker = FaceTracker::new(models.clone(), 0);
    // Each tracker sees a 15 fps camera: capture times 1/15 s apart, whatever the wall clock
    // (the detector's cadence counts frames and capture time, `face::REDETECT_MIN_INTERVAL`).
    let start = Instant::now();
    let clocks = [
        std::cell::Cell::new(0u32),
        std::cell::Cell::new(0u32),
        std::cell::Cell::new(0u32),
    ];
    let captured = |clock: &std::cell::Cell<u32>| {
        let n = clock.get();
        clock.set(n + 1);
        start + Duration::from_secs_f64(n as f64 / 15.0)
    };
    let observe_no_eyes = |tracker: &mut FaceTracker| {
        let at = captured(&clocks[2]);
        let t = Instant::now();
        let o = tracker.observe_with(black_box(&frame), at, false).unwrap();
        let dt = ms(t.elapsed());
        assert!(o.face.is_some(), "face lost on the still selfie frame");
        dt
    };
    let observe = |tracker: &mut FaceTracker, reset: bool| {
        if reset {
            tracker.reset();
        }
        let at = captured(&clocks[usize::from(reset)]);
        let t = Instant::now();
        let o = tracker.observe(black_box(&frame), at).unwrap();
        let dt = ms(t.elapsed());
        assert!(o.face.is_some(), "face lost on the still selfie frame");
        (dt, o.detected)
    };

    eprintln!("warming up ...");
    for _ in 0..WARMUP {
        run_detect(&mut scratch);
        run_mesh(&mut scratch);
        run_eye(&mut scratch, right, false);
        run_eye(&mut scratch, left, true);
        observe(&mut tracker, false);
        observe(&mut forced_tracker, true);
        observe_no_eyes(&mut no_eyes_tracker);
    }

    let mut s = Samples::default();
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS} ...", round + 1);
        for _ in 0..PER_ROUND {
            s.detect.push(run_detect(&mut scratch));
        }
        for _ in 0..PER_ROUND {
            s.mesh.push(run_mesh(&mut scratch));
        }
        for _ in 0..PER_ROUND {
            let r = run_eye(&mut scratch, right, false);
            let l = run_eye(&mut scratch, left, true);
            s.eye_right.push(r);
            s.eye_left.push(l);
            s.eyes.push(r + l);
        }
        for _ in 0..TRACKED_PER_ROUND {
            let (dt, detected) = observe(&mut tracker, false);
            s.tracked_all.push(dt);
            if detected {
                s.tracked_detect.push(dt);
            } else {
                s.tracked_mesh_only.push(dt);
            }
        }
        for _ in 0..TRACKED_PER_ROUND {
            s.tracked_no_eyes
                .push(observe_no_eyes(&mut no_eyes_tracker));
        }
        for _ in 0..PER_ROUND {
            let (dt, detected) = observe(&mut forced_tracker, true);
            assert!(detected, "reset() must force the detector");
            s.forced.push(dt);
        }
    }

    // 1. Bare model runs.
    println!("\n### Bare model runs, 640x480, ms per call\n");
    println!("| model run | median ms | p95 ms | calls |");
    println!("|---|---:|---:|---:|");
    let bare = [
        (
            "BlazeFace detector (`detector::detect`, 128x128)",
            &s.detect,
        ),
        (
            "face mesh (`mesh::run_mesh`, 192x192, ROI from a detection)",
            &s.mesh,
        ),
        ("eye contour, right eye (`mesh::read_eye`)", &s.eye_right),
        (
            "eye contour, left eye (`mesh::read_eye`, mirrored)",
            &s.eye_left,
        ),
        ("eye contour, both eyes (sum per pair)", &s.eyes),
    ];
    for (label, v) in bare {
        let (m, p, n) = stats(v);
        println!("| {label} | {m:.3} | {p:.3} | {n} |");
    }

    // 2. FaceTracker::observe per frame.
    let redetect_share = s.tracked_detect.len() as f64 / s.tracked_all.len() as f64;
    println!("\n### `FaceTracker::observe`, 640x480, ms per frame\n");
    println!("| frames | median ms | p95 ms | mean ms | frames timed |");
    println!("|---|---:|---:|---:|---:|");
    let per_frame = [
        (
            format!(
                "tracking at 15 fps, all frames (detector after {} frames and {} ms: {:.1}% of frames)",
                REDETECT_EVERY,
                REDETECT_MIN_INTERVAL.as_millis(),
                redetect_share * 100.0
            ),
            &s.tracked_all,
        ),
        (
            "tracking, frames without detection (mesh + eyes)".to_string(),
            &s.tracked_mesh_only,
        ),
        (
            "tracking, frames with re-detection".to_string(),
            &s.tracked_detect,
        ),
        (
            "detection forced every frame (`reset()` before each)".to_string(),
            &s.forced,
        ),
        (
            "tracking, all frames, without the eye-contour model (`observe_with(.., false)`)"
                .to_string(),
            &s.tracked_no_eyes,
        ),
    ];
    for (label, v) in per_frame {
        let (m, p, n) = stats(v);
        println!("| {label} | {m:.3} | {p:.3} | {:.3} | {n} |", mean(v));
    }

    // 3. Overhead over the bare model runs, and throughput per core.
    let (md, mm, me) = (median(&s.detect), median(&s.mesh), median(&s.eyes));
    println!("\n### Overhead and throughput, 640x480\n");
    println!(
        "| frames | observe median ms | bare model runs it performs | sum of bare medians ms | overhead ratio | frames/s per core (1000 / median) | frames/s per core (1000 / mean) |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|");
    let overhead = [
        (
            "tracking, without detection",
            &s.tracked_mesh_only,
            "mesh + 2 eyes",
            mm + me,
        ),
        (
            "tracking, with re-detection",
            &s.tracked_detect,
            "detector + mesh + 2 eyes",
            md + mm + me,
        ),
        (
            "tracking, all frames",
            &s.tracked_all,
            "mesh + 2 eyes (+ detector on re-detection frames)",
            mm + me + redetect_share * md,
        ),
        (
            "detection forced every frame",
            &s.forced,
            "detector + mesh + 2 eyes",
            md + mm + me,
        ),
    ];
    for (label, v, runs, sum) in overhead {
        let m = median(v);
        println!(
            "| {label} | {m:.3} | {runs} | {sum:.3} | {:.2} | {:.0} | {:.0} |",
            m / sum,
            1000.0 / m,
            1000.0 / mean(v)
        );
    }
}
