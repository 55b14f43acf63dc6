//! ID documents in the call (issue 8): a rendered specimen card is found, rectified and read.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use vericall::analysis::face::embed::embed_faces;
use vericall::document::card::{CaptureThresholds, CardScratch};
use vericall::document::fields::{DocumentKind, DocumentRead};
use vericall::document::ocr::OcrModels;
use vericall::document::step::{Capture, DocumentStep, StepEvent};
use vericall::document::{compare_portrait, examine, DocumentReader};
use vericall::media::decode::{DecodedFrame, VideoCodec, VideoDecoder, VpxEncoder};
use vericall::reasons::ReasonCode;
use vericall::testkit::actor::{holding_card, CardHold, FPS};
use vericall::testkit::render::RgbImage;
use vericall::testkit::specimen::{load_cjk_font, render_cn_id, SpecimenData};

use crate::face::{models, repo, stage};

pub fn ocr() -> Arc<OcrModels> {
    static OCR: OnceLock<Arc<OcrModels>> = OnceLock::new();
    OCR.get_or_init(|| {
        let _ = models(); // sets ORT_DYLIB_PATH
        OcrModels::load(&repo().join("models")).expect("OCR models installed by scripts/setup")
    })
    .clone()
}

/// The astronaut's face, cropped as an ID portrait (4:5).
pub fn astronaut_portrait() -> RgbImage {
    let img = image::open(repo().join("models/stills/astronaut.png"))
        .expect("still")
        .to_rgb8();
    let crop = image::imageops::crop_imm(&img, 150, 20, 200, 250).to_image();
    RgbImage::from_raw(200, 250, crop.into_raw()).expect("portrait")
}

#[test]
fn flat_specimen_is_read() {
    let font = load_cjk_font().expect("font");
    let mut rng = StdRng::seed_from_u64(1);
    let data = SpecimenData::random(&mut rng);
    let card = render_cn_id(&data, &astronaut_portrait(), &font);
    let out = repo().join("tests/artifacts");
    std::fs::create_dir_all(&out).unwrap();
    card.save_png(&out.join("specimen.png")).unwrap();
    let img = image::RgbImage::from_raw(card.width as u32, card.height as u32, card.data.clone())
        .unwrap();
    let t = std::time::Instant::now();
    let lines = ocr().read(&img).unwrap();
    eprintln!("{:?} {} ms", data, t.elapsed().as_millis());
    for l in &lines {
        eprintln!("{:?} {:.2} {:?}", l.text, l.confidence, l.bbox);
    }
}

/// Encodes `frames` with VP8 at a call's bitrate and decodes them again, as the server would
/// receive them.
pub fn through_vp8(frames: &[RgbImage], bitrate_kbps: u32) -> Vec<DecodedFrame> {
    let (w, h) = (frames[0].width, frames[0].height);
    let mut enc = VpxEncoder::new(VideoCodec::Vp8, w as u32, h as u32, FPS, bitrate_kbps).unwrap();
    let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let planes = DecodedFrame::from_rgb(f.width, f.height, &f.data);
        for (bytes, key) in enc.encode(&planes, i as i64, i == 0).unwrap() {
            let mut decoded = DecodedFrame::default();
            if dec.decode(&bytes, key, &mut decoded).unwrap().is_some() {
                out.push(decoded);
            }
        }
    }
    out
}

/// Runs the document step over decoded frames at 15 fps; returns the read (if any), the
/// guidance raised, the give-up code, and per-frame examine times (ms).
pub fn run_step(
    reader: &DocumentReader,
    frames: &[DecodedFrame],
) -> (Option<(DocumentRead, Capture)>, Vec<ReasonCode>, Option<ReasonCode>, Vec<f64>) {
    let t0 = Instant::now();
    let mut step = DocumentStep::new(t0);
    let mut scratch = CardScratch::default();
    let thresholds = CaptureThresholds::default();
    let mut guidance = Vec::new();
    let mut times = Vec::new();
    let mut read = None;
    let mut gave_up = None;
    for (i, f) in frames.iter().enumerate() {
        let at = t0 + Duration::from_millis(i as u64 * 1000 / FPS as u64);
        let start = Instant::now();
        let capture = examine(&f.view(), at, &mut scratch, &thresholds);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        for e in step.on_frame(at, capture) {
            match e {
                StepEvent::Guidance { code, active: true } => guidance.push(code),
                StepEvent::Guidance { .. } => {}
                StepEvent::GaveUp { code } => gave_up = Some(code),
                StepEvent::ReadyToRead => {
                    let best = step.take_best().unwrap();
                    let r = reader.read(&best, DocumentKind::CnResidentId, (2026, 11, 30)).unwrap();
                    let complete = r.is_complete(DocumentKind::CnResidentId);
                    read = Some((r, best));
                    if let Some(StepEvent::GaveUp { code }) = step.on_read(at, complete).pop() {
                        gave_up = Some(code);
                    }
                }
            }
        }
        if step.is_done() {
            break;
        }
    }
    (read, guidance, gave_up, times)
}

pub fn reader() -> DocumentReader {
    DocumentReader {
        ocr: ocr(),
        faces: models(),
    }
}

#[test]
fn specimen_clips_are_read_exactly() {
    let font = load_cjk_font().expect("font");
    let stage = stage();
    let portrait = astronaut_portrait();
    let reader = reader();
    let live = embed_faces(&models(), &stage.frame(&Default::default()).view(), &mut Vec::new()).unwrap();
    let live: Vec<_> = live.into_iter().map(|(_, e)| e).collect();
    let mut exact = 0;
    for clip in 0..10u64 {
        let mut rng = StdRng::seed_from_u64(100 + clip);
        let data = SpecimenData::random(&mut rng);
        let card = render_cn_id(&data, &portrait, &font);
        let hold = CardHold {
            centre: (rng.gen_range(300.0..340.0), rng.gen_range(290.0..320.0)),
            width_px: rng.gen_range(390.0..430.0),
            roll: rng.gen_range(-6.0..6.0),
            yaw: rng.gen_range(-10.0..10.0),
            pitch: rng.gen_range(-8.0..8.0),
            approach_s: 0.8,
        };
        let frames: Vec<RgbImage> = (0..60).map(|i| holding_card(&stage, &card, &hold, i)).collect();
        if clip == 0 {
            frames[30].save_png(&repo().join("tests/artifacts/document-clip.png")).unwrap();
        }
        let decoded = through_vp8(&frames, 900);
        let (read, guidance, gave_up, times) = run_step(&reader, &decoded);
        let median = {
            let mut t = times.clone();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let (fields, sim) = match &read {
            Some((r, best)) => {
                let p = reader.portrait(best, DocumentKind::CnResidentId);
                (r.fields.clone(), compare_portrait(p.as_ref(), &live).similarity)
            }
            None => (Default::default(), None),
        };
        let ok = fields.name.as_deref() == Some(data.name.as_str())
            && fields.number.as_deref() == Some(data.number.as_str());
        exact += ok as usize;
        if let (false, Some((_, best))) = (ok, &read) {
            let lines = reader.ocr.read(&best.image).unwrap();
            eprintln!("clip {clip} lines: {:?}", lines.iter().map(|l| &l.text).collect::<Vec<_>>());
            best.image.save(repo().join(format!("tests/artifacts/document-miss-{clip}.png"))).unwrap();
        }
        eprintln!(
            "clip {clip}: exact={ok} read={:?}/{:?} truth={}/{} guidance={guidance:?} gave_up={gave_up:?} portrait={sim:?} examine median {median:.1} ms",
            fields.name, fields.number, data.name, data.number
        );
    }
    eprintln!("{exact}/10 clips read exactly");
    assert!(exact >= 9, "{exact}/10 clips read exactly");
}
