//! Capture checks on rendered clips: how often each capture hint is raised on clips that are fine
//! (its false-hint rate) and on clips with the fault it names (its hit rate).
//!
//!     cargo bench --bench capture
//!
//! Needs the models and ONNX Runtime from `scripts/setup`. Every clip is the rendered test actor
//! (`testkit::actor::Stage`) with its idle sway, 1.6 s at 15 fps, each frame through VP8 at
//! 500 kbit/s and the server's own analysis: `FaceTracker`, `QualityAnalyzer`,
//! `quality::judged_metrics` and the `GuidanceTracker` with the default thresholds, exactly as
//! `media::pipeline` chains them. Clips vary lighting (dim 0.6x, normal, bright 1.15x), face size
//! (0.8x, 1x, 1.3x of the stage's framing) and skin tone (as rendered, and darker and warmer);
//! the degraded versions add one fault each: Gaussian blur (sigma 3 px), a specular glare spot on
//! the forehead, over-exposure (3x gain, clipped, in place of the room's light) or darkness
//! (0.22x, likewise). Prints a markdown table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vericall::analysis::face::{FaceModels, FaceTracker};
use vericall::analysis::quality::{
    judged_metrics, GuidanceChange, GuidanceTracker, QualityAnalyzer, Thresholds,
};
use vericall::media::decode::{DecodedFrame, VideoCodec, VideoDecoder, VpxEncoder};
use vericall::testkit::actor::{idle, Stage, FPS};
use vericall::testkit::render::FaceEdit;

/// Frames per clip: 1.6 s, longer than every hint's 1 s hold.
const FRAMES: u64 = 24;

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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    Blur,
    Glare,
    Overexposed,
    Dark,
}

impl Fault {
    /// The hint this fault should raise.
    fn code(self) -> &'static str {
        match self {
            Fault::None => "-",
            Fault::Blur => "BLUR",
            Fault::Glare => "GLARE",
            Fault::Overexposed => "LIGHTING_TOO_BRIGHT",
            Fault::Dark => "LIGHTING_TOO_DARK",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Clip {
    gain: f32,
    scale: f32,
    dark_skin: bool,
    fault: Fault,
}

/// One frame of `clip`: the rendered actor, its tone and light, then the fault.
fn frame(stage: &Stage, clip: &Clip, index: u64) -> DecodedFrame {
    let edit = FaceEdit {
        scale: clip.scale,
        ..idle(index)
    };
    let (mut img, landmarks) = stage.renderer.render(&edit);
    // Exposure faults replace the room's light; the other faults keep it.
    let gain = match clip.fault {
        Fault::Overexposed => 3.0,
        Fault::Dark => 0.22,
        _ => clip.gain,
    };
    let tone = if clip.dark_skin {
        [0.62, 0.5, 0.42]
    } else {
        [1.0, 1.0, 1.0]
    };
    for px in img.data.chunks_exact_mut(3) {
        for c in 0..3 {
            px[c] = (px[c] as f32 * gain * tone[c]).round().clamp(0.0, 255.0) as u8;
        }
    }
    if clip.fault == Fault::Glare {
        // A specular spot on the forehead: about 4 % of the face, clipped white.
        let (mut x0, mut x1, mut y0) = (f32::MAX, f32::MIN, f32::MAX);
        for p in &landmarks {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
        }
        let (cx, cy) = ((x0 + x1) / 2.0, y0 + (x1 - x0) * 0.22);
        let (rx, ry) = ((x1 - x0) * 0.16, (x1 - x0) * 0.09);
        for y in (cy - ry) as usize..=(cy + ry) as usize {
            for x in (cx - rx) as usize..=(cx + rx) as usize {
                let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                if dx * dx + dy * dy <= 1.0 && x < img.width && y < img.height {
                    img.set_pixel(x, y, [255, 255, 255]);
                }
            }
        }
    }
    if clip.fault == Fault::Blur {
        img = img.gaussian_blurred(3.0);
    }
    DecodedFrame::from_rgb(img.width, img.height, &img.data)
}

/// The capture hints raised over one clip, through VP8 and the server's analysis, and the median
/// of the judged metrics (over-exposed share, glare, blur index) for the report.
fn raised(stage: &Stage, models: &Arc<FaceModels>, clip: &Clip) -> (Vec<&'static str>, [f64; 3]) {
    let mut enc = VpxEncoder::new(VideoCodec::Vp8, 640, 480, FPS, 500).unwrap();
    let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
    let mut decoded = DecodedFrame::default();
    let mut tracker = FaceTracker::new(models.clone(), 0);
    let mut quality = QualityAnalyzer::new();
    let mut guidance = GuidanceTracker::new(Thresholds::default());
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut seen: [Vec<f64>; 3] = Default::default();
    for i in 0..FRAMES {
        let raw = frame(stage, clip, i);
        for (bytes, key) in enc.encode(&raw, i as i64, i == 0).unwrap() {
            dec.decode(&bytes, key, &mut decoded).unwrap();
        }
        let at = t0 + Duration::from_millis(i * 1000 / FPS as u64);
        let view = decoded.view();
        let metrics = quality.analyze(&view, None);
        let face = tracker.observe(&view, at).unwrap().face.map(|f| f.quality);
        let judged = judged_metrics(&metrics, face.as_ref());
        for (v, m) in seen
            .iter_mut()
            .zip([judged.overexposed, judged.glare, judged.blur])
        {
            v.push(m);
        }
        for change in guidance.update(at, &judged) {
            if let GuidanceChange::Raised(issue) = change {
                out.push(issue.code());
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [a, b, c] = &mut seen;
    (out, [median(a), median(b), median(c)])
}

fn main() {
    let models = load_models();
    let stage = Stage::astronaut(models.clone(), &repo().join("models/stills")).expect("stage");
    let mut clips = Vec::new();
    for fault in [
        Fault::None,
        Fault::Blur,
        Fault::Glare,
        Fault::Overexposed,
        Fault::Dark,
    ] {
        for gain in [0.6f32, 1.0, 1.15] {
            for scale in [0.8f32, 1.0, 1.3] {
                for dark_skin in [false, true] {
                    clips.push(Clip {
                        gain,
                        scale,
                        dark_skin,
                        fault,
                    });
                }
            }
        }
    }
    let codes = ["BLUR", "GLARE", "LIGHTING_TOO_BRIGHT", "LIGHTING_TOO_DARK"];
    // (fault, code) -> clips that raised it; fault -> clips.
    let mut hits = std::collections::HashMap::new();
    let mut totals = std::collections::HashMap::new();
    let started = Instant::now();
    for clip in &clips {
        let (got, medians) = raised(&stage, &models, clip);
        if std::env::var_os("CAPTURE_VERBOSE").is_some() {
            println!("{clip:?}: raised {got:?}; median over-exposed, glare, blur {medians:.3?}");
        }
        *totals.entry(clip.fault.code()).or_insert(0usize) += 1;
        for code in codes {
            if got.contains(&code) {
                *hits.entry((clip.fault.code(), code)).or_insert(0usize) += 1;
            }
        }
        if clip.fault == Fault::None && !got.is_empty() {
            println!("false hints on a fine clip {clip:?}: {got:?}");
        }
    }
    println!(
        "{} clips of {FRAMES} frames in {:.0} s\n",
        clips.len(),
        started.elapsed().as_secs_f64()
    );
    println!("| hint | raised on fine clips (false-hint rate) | raised on clips with its fault (hit rate) |");
    println!("|---|---|---|");
    let fine = totals["-"];
    for code in codes {
        let false_hints = hits.get(&("-", code)).copied().unwrap_or(0);
        let faulty = totals[code];
        let hit = hits.get(&(code, code)).copied().unwrap_or(0);
        println!(
            "| {code} | {false_hints}/{fine} ({:.0} %) | {hit}/{faulty} ({:.0} %) |",
            100.0 * false_hints as f64 / fine as f64,
            100.0 * hit as f64 / faulty as f64
        );
    }
}
