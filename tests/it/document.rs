//! ID documents in the call (issue 8): a rendered specimen card is found, rectified and read.

use std::sync::{Arc, OnceLock};

use rand::rngs::StdRng;
use rand::SeedableRng;

use vericall::document::ocr::OcrModels;
use vericall::testkit::render::RgbImage;
use vericall::testkit::specimen::{load_cjk_font, render_cn_id, SpecimenData};

use crate::face::{models, repo};

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
