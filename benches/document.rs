//! ID-document cost per analysed frame and per read capture, at 640x480: finding the card
//! (edges + Hough quads), rectifying it to 856x540, judging it, then (once per capture) reading
//! it with PP-OCRv4 and embedding its portrait.
//!
//!     cargo bench --bench document
//!
//! Needs the models, ONNX Runtime (`scripts/setup`) and `fonts-noto-cjk`. The frames are the
//! rendered person holding a specimen card (made-up data) at 12 hand positions along the clip's
//! sway, through VP8 at 900 kbps; measurements are interleaved in rounds so machine noise hits
//! them alike. Prints medians and p95 as a markdown table.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use vericall::analysis::face::FaceModels;
use vericall::document::card::{find_card, judge, rectify, CaptureThresholds, CardScratch};
use vericall::document::fields::DocumentKind;
use vericall::document::ocr::OcrModels;
use vericall::document::{examine, DocumentReader, Examine};
use vericall::media::decode::{DecodedFrame, VideoCodec, VideoDecoder, VpxEncoder};
use vericall::testkit::actor::{holding_card, CardHold, Stage};
use vericall::testkit::render::RgbImage;
use vericall::testkit::specimen::{load_cjk_font, render_cn_id, SpecimenData};

mod support;
use support::{ms, stats};

const ROUNDS: usize = 5;
/// Frames examined per round (12 positions, 5 passes).
const FRAME_PASSES: usize = 5;
/// Captures read per round.
const READS_PER_ROUND: usize = 4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        std::env::set_var(
            "ORT_DYLIB_PATH",
            repo().join(vericall::analysis::face::models::DEFAULT_ORT_LIBRARY),
        );
    }
    let models: Arc<FaceModels> =
        FaceModels::load(&repo().join("models")).expect("models installed by scripts/setup");
    let ocr =
        OcrModels::load(&repo().join("models")).expect("OCR models installed by scripts/setup");
    let reader = DocumentReader {
        ocr,
        faces: models.clone(),
    };
    let stage = Stage::astronaut(models, &repo().join("models/stills")).expect("stage");
    let font = load_cjk_font().expect("fonts-noto-cjk");
    let data = SpecimenData::random(&mut StdRng::seed_from_u64(100));
    let portrait = {
        let img = image::open(repo().join("models/stills/astronaut.png"))
            .expect("still")
            .to_rgb8();
        let crop = image::imageops::crop_imm(&img, 150, 20, 200, 250).to_image();
        RgbImage::from_raw(200, 250, crop.into_raw()).expect("portrait")
    };
    let card = render_cn_id(&data, &portrait, &font);
    let hold = CardHold {
        centre: (320.0, 300.0),
        width_px: 410.0,
        ..CardHold::default()
    };
    // Settled positions (after the 0.8 s approach), along the sway, through VP8 at 900 kbps as
    // a call delivers them (the first 15 frames only warm the encoder up).
    let mut enc = VpxEncoder::new(VideoCodec::Vp8, 640, 480, 15, 900).expect("encoder");
    let mut dec = VideoDecoder::new(VideoCodec::Vp8).expect("decoder");
    let mut frames: Vec<DecodedFrame> = Vec::new();
    for i in 0..51u64 {
        let img = holding_card(&stage, &card, &hold, i);
        let planes = DecodedFrame::from_rgb(img.width, img.height, &img.data);
        for (bytes, key) in enc.encode(&planes, i as i64, i == 0).expect("encode") {
            let mut out = DecodedFrame::default();
            if dec.decode(&bytes, key, &mut out).expect("decode").is_some() && i >= 15 && i % 3 == 0
            {
                frames.push(out);
            }
        }
    }
    let thresholds = CaptureThresholds::default();
    let with = Examine {
        thresholds: &thresholds,
        room: &[],
        kind: DocumentKind::CnResidentId,
        faces: Some(&reader.faces),
    };
    let mut scratch = CardScratch::default();
    let capture = frames
        .iter()
        .find_map(|f| examine(&f.view(), Instant::now(), &mut scratch, &with))
        .expect("the card is found in some frame");
    // Warm-up.
    for f in &frames {
        black_box(examine(&f.view(), Instant::now(), &mut scratch, &with));
    }
    black_box(
        reader
            .read(&capture, DocumentKind::CnResidentId, (2026, 11, 30))
            .unwrap(),
    );

    let (mut find, mut rect, mut judged, mut whole) = (vec![], vec![], vec![], vec![]);
    let mut found = 0usize;
    let (mut read, mut face) = (vec![], vec![]);
    let mut exact = 0;
    for _ in 0..ROUNDS {
        for _ in 0..FRAME_PASSES {
            for f in &frames {
                let view = f.view();
                let t = Instant::now();
                let quad = find_card(&view, &mut scratch);
                find.push(ms(t.elapsed()));
                let Some(quad) = quad else { continue };
                found += 1;
                let t = Instant::now();
                let image = rectify(&view, &quad, 856, 540).expect("rectified");
                rect.push(ms(t.elapsed()));
                let t = Instant::now();
                black_box(judge(&quad, &image, view.width, &thresholds));
                judged.push(ms(t.elapsed()));
                let t = Instant::now();
                black_box(examine(&view, Instant::now(), &mut scratch, &with));
                whole.push(ms(t.elapsed()));
            }
        }
        for _ in 0..READS_PER_ROUND {
            let t = Instant::now();
            let r = reader
                .read(&capture, DocumentKind::CnResidentId, (2026, 11, 30))
                .unwrap();
            read.push(ms(t.elapsed()));
            exact += (r.fields.number.as_deref() == Some(data.number.as_str())) as usize;
            let t = Instant::now();
            black_box(reader.portrait(&capture, DocumentKind::CnResidentId));
            face.push(ms(t.elapsed()));
        }
    }
    println!("| step | median ms | p95 ms | n |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("find_card (edges + Hough quads)", &find),
        ("rectify to 856x540", &rect),
        ("judge (glare, sharpness, size, tilt)", &judged),
        ("examine = all three, per analysed frame", &whole),
        ("read: OCR det + rec + field checks, per capture", &read),
        ("portrait: detect + mesh + embed, per capture", &face),
    ] {
        let (m, p, n) = stats(v);
        println!("| {name} | {m:.2} | {p:.2} | {n} |");
    }
    println!(
        "card found in {found}/{} frames; number read exactly in {exact}/{} reads",
        find.len(),
        read.len()
    );
}
