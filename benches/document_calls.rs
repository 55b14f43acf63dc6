//! Capture rate, read accuracy and portrait match over rendered card "calls" in furnished rooms:
//! the document step as the pipeline runs it (room learnt from 2 s before the step, then every
//! frame examined, the best capture read), without the WebRTC transport, on clips rendered and
//! passed through VP8 at 900 kbps.
//!
//!     cargo bench --profile dev --bench document_calls            # 24 card calls + 4 no-card
//!     DOC_CALLS=8 cargo bench --profile dev --bench document_calls
//!
//! (`--profile dev` reuses the test build; the release profile gives the same numbers, slower
//! to build.) Each card call varies the distance (card 330-470 px wide in a 640x480 frame), the
//! tilt (yaw, pitch, roll up to 20 degrees in all), fingers over the short edges (every other
//! call) and the person's card (a specimen with made-up data and the astronaut's portrait; every
//! fourth call a wrong GB 11643 check character; every sixth call someone else's portrait). A
//! call "captures" when the step picks a capture and reads it completely, "reads exactly" when
//! the name and number equal the specimen's. Portrait pairs: each read capture's portrait against
//! the live face (same person, or another person's portrait), plus each same-person portrait
//! against another person's live-style embedding. Needs the models and ONNX Runtime
//! (`scripts/setup`) and `fonts-noto-cjk`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use vericall::analysis::face::embed::{embed_faces, embed_single_face, Embedding, MATCH_THRESHOLD};
use vericall::analysis::face::FaceModels;
use vericall::document::fields::DocumentKind;
use vericall::document::ocr::OcrModels;
use vericall::document::{compare_portrait, DocumentReader};
use vericall::media::decode::DecodedFrame;
use vericall::reasons::ReasonCode;
use vericall::testkit::actor::{furnish, holding_card_over, idle, CardHold, Stage};
use vericall::testkit::document_step::{run_step, through_vp8};
use vericall::testkit::render::RgbImage;
use vericall::testkit::specimen::{load_cjk_font, render_cn_id, SpecimenData};

/// Frames of the person alone before the step (2 s: five room samples).
const BEFORE: u64 = 30;
/// Frames of each card call (6 s) and of each no-card call (12 s).
const CARD_FRAMES: u64 = 90;
const NO_CARD_FRAMES: u64 = 180;
/// The review band below the threshold (verdict::PORTRAIT_REVIEW_MARGIN).
const REVIEW_MARGIN: f32 = 0.08;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn still(name: &str) -> image::RgbImage {
    image::open(repo().join("models/stills").join(name))
        .expect("still")
        .to_rgb8()
}

fn to_test_image(img: image::RgbImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    RgbImage::from_raw(w, h, img.into_raw()).expect("image")
}

/// Frames before the step and during it, in a furnished room, as the server decodes them.
fn scene(
    stage: &Stage,
    card: Option<(&RgbImage, &CardHold)>,
    frames: u64,
) -> (Vec<DecodedFrame>, Vec<DecodedFrame>) {
    let rendered: Vec<RgbImage> = (0..BEFORE + frames)
        .map(|i| {
            let mut person = stage.renderer.render(&idle(i)).0;
            furnish(&mut person);
            match card {
                Some((card, hold)) if i >= BEFORE => {
                    holding_card_over(&person, card, hold, i - BEFORE)
                }
                _ => person,
            }
        })
        .collect();
    let mut decoded = through_vp8(&rendered, 900);
    let step = decoded.split_off(BEFORE as usize);
    (decoded, step)
}

fn main() {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        std::env::set_var(
            "ORT_DYLIB_PATH",
            repo().join(vericall::analysis::face::models::DEFAULT_ORT_LIBRARY),
        );
    }
    let calls: usize = std::env::var("DOC_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let no_card_calls: usize = std::env::var("DOC_NO_CARD_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let models: Arc<FaceModels> =
        FaceModels::load(&repo().join("models")).expect("models installed by scripts/setup");
    let ocr =
        OcrModels::load(&repo().join("models")).expect("OCR models installed by scripts/setup");
    let reader = DocumentReader {
        ocr,
        faces: models.clone(),
    };
    let stage = Stage::astronaut(models.clone(), &repo().join("models/stills")).expect("stage");
    let font = load_cjk_font().expect("fonts-noto-cjk");
    let own = to_test_image(
        image::imageops::crop_imm(&still("astronaut.png"), 150, 20, 200, 250).to_image(),
    );
    let other = to_test_image(still("tom_hanks_112.png"));
    let live: Vec<Embedding> = embed_faces(
        &models,
        &stage.frame(&Default::default()).view(),
        &mut Vec::new(),
    )
    .expect("live face")
    .into_iter()
    .map(|(_, e)| e)
    .collect();
    let other_live = embed_single_face(&models, &still("tom_hanks_112.png")).expect("other face");

    let started = Instant::now();
    let (mut captured, mut exact, mut invalid_caught, mut invalid_calls) = (0, 0, 0, 0);
    let mut genuine: Vec<f32> = Vec::new();
    let mut impostor: Vec<f32> = Vec::new();
    let mut no_portrait = 0;
    let mut rng = StdRng::seed_from_u64(2026);
    println!(
        "| call | width px | yaw | pitch | roll | fingers | card | outcome | guidance | portrait |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in 0..calls {
        let wrong_check = n % 4 == 3;
        let someone_else = n % 6 == 5;
        let mut data = SpecimenData::random(&mut rng);
        if wrong_check {
            data = data.with_wrong_check_char();
        }
        let card = render_cn_id(&data, if someone_else { &other } else { &own }, &font);
        // Tilt: up to 20 degrees off square-on in all (yaw and pitch drawn inside that circle).
        let (tilt, dir) = (rng.gen_range(0.0..20.0f32), rng.gen_range(0.0..360.0f32));
        let hold = CardHold {
            centre: (rng.gen_range(300.0..340.0), rng.gen_range(280.0..320.0)),
            width_px: rng.gen_range(330.0..470.0),
            yaw: tilt * dir.to_radians().cos() * 0.85,
            pitch: tilt * dir.to_radians().sin() * 0.85,
            roll: rng.gen_range(-8.0..8.0),
            approach_s: 0.8,
            fingers: n % 2 == 1,
        };
        let only: Option<usize> = std::env::var("DOC_ONLY").ok().and_then(|v| v.parse().ok());
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let (before, frames) = scene(&stage, Some((&card, &hold)), CARD_FRAMES);
        if let Some(dir) = std::env::var_os("DOC_DUMP") {
            let f = &frames[45];
            let (y, u, v) = (&f.y, &f.u, &f.v);
            let mut rgb = image::RgbImage::new(f.width as u32, f.height as u32);
            for (i, p) in rgb.pixels_mut().enumerate() {
                let (x, yy) = (i % f.width, i / f.width);
                let c = (x / 2) + (yy / 2) * f.width.div_ceil(2);
                let (l, cb, cr) = (y[i] as f32 - 16.0, u[c] as f32 - 128.0, v[c] as f32 - 128.0);
                let to = |v: f32| v.clamp(0.0, 255.0) as u8;
                p.0 = [
                    to(1.164 * l + 1.596 * cr),
                    to(1.164 * l - 0.392 * cb - 0.813 * cr),
                    to(1.164 * l + 2.017 * cb),
                ];
            }
            rgb.save(PathBuf::from(dir).join(format!("call{n}.png")))
                .expect("dump");
        }
        let run = run_step(&reader, DocumentKind::CnResidentId, &before, &frames);
        let read = run.read.as_ref();
        let is_exact = read.is_some_and(|(r, _)| {
            r.fields.name.as_deref() == Some(data.name.as_str())
                && r.fields.number.as_deref() == Some(data.number.as_str())
        });
        let similarity = read.and_then(|(_, best)| {
            let p = reader.portrait(best, DocumentKind::CnResidentId);
            if p.is_none() {
                no_portrait += 1;
            }
            if let (Some(p), false) = (&p, someone_else) {
                impostor.push(p.cosine(&other_live));
            }
            compare_portrait(p.as_ref(), &live).similarity
        });
        if let Some(s) = similarity {
            if someone_else {
                impostor.push(s)
            } else {
                genuine.push(s)
            }
        }
        captured += read.is_some() as usize;
        exact += is_exact as usize;
        if wrong_check {
            invalid_calls += 1;
            invalid_caught += read.is_some_and(|(r, _)| {
                matches!(
                    r.number_check,
                    vericall::document::fields::NumberCheck::Invalid { .. }
                )
            }) as usize;
        }
        println!(
            "| {n} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:?} | {} |",
            hold.width_px,
            hold.yaw,
            hold.pitch,
            hold.roll,
            hold.fingers,
            if someone_else {
                "other portrait"
            } else if wrong_check {
                "wrong check char"
            } else {
                "own"
            },
            match (&run.gave_up, is_exact) {
                (Some(code), _) => format!("gave up {}", code.as_str()),
                (None, true) => format!(
                    "read exactly at {:.1} s",
                    run.finished_at.unwrap_or(0) as f32 / 15.0
                ),
                (None, false) if read.is_some() => "read, not exactly".into(),
                (None, false) => "no capture in the clip".into(),
            },
            run.codes().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            similarity.map_or("-".into(), |s| format!("{s:.3}")),
        );
    }
    let mut no_card_ok = 0;
    for n in 0..no_card_calls {
        let (before, frames) = scene(&stage, None, NO_CARD_FRAMES + 5 * n as u64);
        let run = run_step(&reader, DocumentKind::CnResidentId, &before, &frames);
        let hints = run.codes();
        let ok = hints.iter().all(|c| *c == ReasonCode::DocumentNotShown)
            && hints.contains(&ReasonCode::DocumentNotShown)
            && run.read.is_none();
        no_card_ok += ok as usize;
        println!("no card {n}: hints {hints:?}, ok {ok}");
    }
    let rate = |k: usize, n: usize| 100.0 * k as f64 / n.max(1) as f64;
    let below = |v: &[f32], t: f32| v.iter().filter(|s| **s < t).count();
    let at_or_above = |v: &[f32], t: f32| v.iter().filter(|s| **s >= t).count();
    let fmt = |v: &[f32]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            let min = v.iter().copied().fold(f32::MAX, f32::min);
            let max = v.iter().copied().fold(f32::MIN, f32::max);
            format!("{min:.3}..{max:.3}")
        }
    };
    println!();
    println!("card calls: {calls}; captured and read completely: {captured} ({:.0} %); read exactly (name and number): {exact} ({:.0} %)", rate(captured, calls), rate(exact, calls));
    println!("wrong check character caught: {invalid_caught}/{invalid_calls}");
    println!(
        "no-card calls with only DOCUMENT_NOT_SHOWN and no capture: {no_card_ok}/{no_card_calls}"
    );
    println!("portrait: no face found on {no_portrait} read captures");
    println!(
        "portrait, threshold {MATCH_THRESHOLD}: same person {} pairs ({}), FNMR {}/{} ({:.1} %), within the review margin {}; different people {} pairs ({}), FMR {}/{} ({:.1} %)",
        genuine.len(),
        fmt(&genuine),
        below(&genuine, MATCH_THRESHOLD),
        genuine.len(),
        rate(below(&genuine, MATCH_THRESHOLD), genuine.len()),
        genuine.iter().filter(|s| **s < MATCH_THRESHOLD && **s >= MATCH_THRESHOLD - REVIEW_MARGIN).count(),
        impostor.len(),
        fmt(&impostor),
        at_or_above(&impostor, MATCH_THRESHOLD),
        impostor.len(),
        rate(at_or_above(&impostor, MATCH_THRESHOLD), impostor.len()),
    );
    println!("took {:.0} s", started.elapsed().as_secs_f64());
}
