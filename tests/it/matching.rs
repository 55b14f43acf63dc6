//! Face matching (MobileFaceNet embeddings) on real models: same-person scores for the astronaut
//! portrait under capture changes and as an ID photo, different-person scores against other
//! stills, the calibrated threshold between them, and the reference-photo errors.

use std::io::Cursor;
use std::time::Instant;

use image::ImageFormat;

use vericall::analysis::face::embed::{
    alignment, embed_face, embed_faces, embed_reference, find_faces, Embedding, ReferenceError,
    MATCH_THRESHOLD,
};
use vericall::analysis::face::FaceTracker;
use vericall::analysis::image::sample_rgb;
use vericall::testkit::fixtures::{render, Scene};
use vericall::testkit::render::{FaceEdit, RgbImage};

use crate::face::{load_rgb, models, stage, Planes};

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .expect("sized buffer");
    let mut out = Cursor::new(Vec::new());
    buf.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(
            &img.data,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .expect("jpeg");
    out
}

fn decode(bytes: &[u8]) -> RgbImage {
    let img = image::load_from_memory(bytes).expect("decode").to_rgb8();
    RgbImage::from_raw(img.width() as usize, img.height() as usize, img.into_raw()).unwrap()
}

fn still(name: &str) -> RgbImage {
    let (w, h, rgb) = load_rgb(name);
    RgbImage::from_raw(w, h, rgb).unwrap()
}

/// The tracked face in a live frame, embedded as a call would.
fn live(img: &RgbImage) -> Embedding {
    let planes = Planes::from_rgb(img.width, img.height, &img.data);
    let mut tracker = FaceTracker::new(models(), 0);
    let face = tracker
        .observe(&planes.view(), Instant::now())
        .unwrap()
        .face
        .expect("a face in the live frame");
    embed_face(&models(), &planes.view(), &face.landmarks, &mut Vec::new()).unwrap()
}

/// The face in `img` aligned to the 112x112 template, as an ID-style aligned crop.
fn aligned_112(img: &RgbImage) -> RgbImage {
    let planes = Planes::from_rgb(img.width, img.height, &img.data);
    let mut tracker = FaceTracker::new(models(), 0);
    let face = tracker
        .observe(&planes.view(), Instant::now())
        .unwrap()
        .face
        .expect("a face");
    let to_image = alignment(&face.landmarks).expect("an alignment");
    let mut out = RgbImage::new(112, 112, [0, 0, 0]);
    for v in 0..112 {
        for u in 0..112 {
            let (x, y) = to_image.apply(u as f32 + 0.5, v as f32 + 0.5);
            let p = sample_rgb(&planes.view(), x, y);
            out.set_pixel(u, v, p.map(|c| c.round() as u8));
        }
    }
    out
}

/// A `w`x`h` crop of `img` at (x, y).
fn crop(img: &RgbImage, x: usize, y: usize, w: usize, h: usize) -> RgbImage {
    let data = (y..y + h)
        .flat_map(|row| img.data[(row * img.width + x) * 3..][..w * 3].to_vec())
        .collect();
    RgbImage::from_raw(w, h, data).unwrap()
}

/// The astronaut as an ID photo: a 160x200 crop around the face, scaled to 320x400, JPEG.
fn id_photo() -> Vec<u8> {
    let portrait = still("astronaut.png");
    jpeg(&crop(&portrait, 145, 15, 160, 200).resized(320, 400), 90)
}

/// Every face in the group photo (faces about 100 px wide in 1280x886). BlazeFace short-range
/// is made for selfie distance, so it runs on overlapping 256 px tiles (stride 128): every face
/// lies well inside some tile, and each keeps the embedding from the tile whose centre is
/// nearest to it.
fn group_faces() -> Vec<Embedding> {
    const TILE: usize = 256;
    const STRIDE: usize = 128;
    let img = still("group6_t1.jpg");
    let starts = |len: usize| {
        let mut s: Vec<usize> = (0..=len.saturating_sub(TILE)).step_by(STRIDE).collect();
        if s.last() != Some(&(len - TILE)) {
            s.push(len - TILE);
        }
        s
    };
    // (global centre x, y, box side, distance to the tile centre, embedding)
    let mut found: Vec<(f32, f32, f32, f32, Embedding)> = Vec::new();
    let mut scratch = Vec::new();
    for &ty in &starts(img.height) {
        for &tx in &starts(img.width) {
            let tile = crop(&img, tx, ty, TILE, TILE);
            let planes = Planes::from_rgb(TILE, TILE, &tile.data);
            for (d, e) in embed_faces(&models(), &planes.view(), &mut scratch).unwrap() {
                let off_centre = (d.cx - TILE as f32 / 2.0).hypot(d.cy - TILE as f32 / 2.0);
                let (gx, gy, side) = (d.cx + tx as f32, d.cy + ty as f32, d.w.max(d.h));
                match found
                    .iter_mut()
                    .find(|f| (f.0 - gx).hypot(f.1 - gy) < 0.5 * f.2.max(side))
                {
                    Some(f) if f.3 <= off_centre => {}
                    Some(f) => *f = (gx, gy, side, off_centre, e),
                    None => found.push((gx, gy, side, off_centre, e)),
                }
            }
        }
    }
    for f in &found {
        println!(
            "group face at ({:.0}, {:.0}), {:.0} px, {:.0} px off its tile's centre",
            f.0, f.1, f.2, f.3
        );
    }
    found.into_iter().map(|f| f.4).collect()
}

#[test]
fn embeddings_separate_the_same_person_from_different_people() {
    let st = stage();
    let m = models();
    let portrait = still("astronaut.png");

    // The live side: the portrait and what a camera might make of the same face.
    let mut live_faces: Vec<(String, Embedding)> = vec![
        ("portrait".into(), live(&portrait)),
        ("mirror".into(), live(&portrait.mirrored())),
        ("jpeg q40".into(), live(&decode(&jpeg(&portrait, 40)))),
        ("0.5x".into(), live(&portrait.resized(256, 256))),
    ];
    for (name, yaw, pitch) in [
        ("frontal", 0.0, 0.0),
        ("yaw +15", 15.0, 0.0),
        ("yaw -15", -15.0, 0.0),
        ("pitch +10", 0.0, 10.0),
        ("pitch -10", 0.0, -10.0),
    ] {
        let (img, _) = st.renderer.render(&FaceEdit::posed(yaw, pitch, 0.0));
        live_faces.push((format!("rendered {name}"), live(&img)));
    }

    // The reference side: ID-style photos of the same face through `embed_reference`. The
    // 70x70 crop cuts off forehead and chin; the detector misses it at its own size, so it
    // exercises the padded-canvas retry.
    let tight = crop(&portrait, 190, 87, 70, 70);
    {
        let planes = Planes::from_rgb(70, 70, &tight.data);
        let at_own_size = find_faces(&m, &planes.view(), &mut Vec::new()).unwrap();
        assert!(
            at_own_size.is_empty(),
            "the tight crop needs the canvas retry"
        );
    }
    let references: Vec<(String, Embedding)> = [
        ("ID photo 320x400", id_photo()),
        (
            "aligned 112x112",
            encode(&aligned_112(&portrait), ImageFormat::Png),
        ),
        ("tight 70x70 crop", encode(&tight, ImageFormat::Png)),
    ]
    .into_iter()
    .map(|(name, bytes)| {
        let e = embed_reference(&m, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        (name.to_string(), e)
    })
    .collect();

    let mut same: Vec<(String, f32)> = Vec::new();
    let (anchor_name, anchor) = &live_faces[0];
    for (name, e) in &live_faces[1..] {
        same.push((format!("{anchor_name} vs {name}"), anchor.cosine(e)));
    }
    for (r, er) in &references {
        for (name, e) in &live_faces {
            same.push((format!("{r} vs {name}"), er.cosine(e)));
        }
    }

    let tom = embed_reference(&m, &encode(&still("tom_hanks_112.png"), ImageFormat::Png))
        .expect("the aligned 112x112 still embeds");
    let group = group_faces();
    assert_eq!(group.len(), 6, "faces found in the group photo");
    let mut others: Vec<(String, Embedding)> = vec![("tom hanks".into(), tom)];
    others.extend(
        group
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("group face {i}"), e)),
    );
    let mut different: Vec<(String, f32)> = Vec::new();
    for (name, e) in &others {
        for (a, ea) in live_faces.iter().chain(&references) {
            different.push((format!("{a} vs {name}"), ea.cosine(e)));
        }
    }
    for (i, (a, ea)) in others.iter().enumerate() {
        for (b, eb) in &others[i + 1..] {
            different.push((format!("{a} vs {b}"), ea.cosine(eb)));
        }
    }

    for (name, s) in &same {
        println!("same      {s:>7.3}  {name}");
    }
    for (name, s) in &different {
        println!("different {s:>7.3}  {name}");
    }
    let (worst_same, worst_name) = same
        .iter()
        .map(|(n, s)| (*s, n))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    let (best_diff, best_name) = different
        .iter()
        .map(|(n, s)| (*s, n))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    println!(
        "worst same-person {worst_same:.3} ({worst_name}); best different-person {best_diff:.3} \
         ({best_name}); margin {:.3}; threshold {MATCH_THRESHOLD}",
        worst_same - best_diff
    );
    for (name, s) in &same {
        assert!(
            *s >= MATCH_THRESHOLD,
            "same person below threshold: {name} {s}"
        );
    }
    for (name, s) in &different {
        assert!(
            *s < MATCH_THRESHOLD,
            "different people at or above threshold: {name} {s}"
        );
    }
    assert!(
        worst_same - best_diff >= 0.1,
        "margin {} between {worst_name} and {best_name}",
        worst_same - best_diff
    );
}

#[test]
fn reference_photos_that_cannot_be_used_are_rejected_with_reasons() {
    let m = models();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = embed_reference(&m, &random).unwrap_err();
    println!("random bytes: {err}");
    assert!(matches!(err, ReferenceError::Decode(_)), "{err:?}");

    let tiny = encode(&RgbImage::new(10, 10, [120, 120, 120]), ImageFormat::Png);
    let err = embed_reference(&m, &tiny).unwrap_err();
    println!("10x10: {err}");
    assert!(
        matches!(err, ReferenceError::Size { w: 10, h: 10 }),
        "{err:?}"
    );

    let frame = render(Scene::Good, 640, 480, 0);
    let planes = Planes {
        width: 640,
        height: 480,
        y: frame.y,
        u: frame.u,
        v: frame.v,
        full_range: false,
    };
    let i420 = planes.view();
    let mut scene = RgbImage::new(640, 480, [0, 0, 0]);
    for y in 0..480 {
        for x in 0..640 {
            let p = sample_rgb(&i420, x as f32 + 0.5, y as f32 + 0.5);
            scene.set_pixel(x, y, p.map(|v| v.round() as u8));
        }
    }
    let err = embed_reference(&m, &encode(&scene, ImageFormat::Png)).unwrap_err();
    println!("face-less scene: {err}");
    assert!(matches!(err, ReferenceError::NoFace), "{err:?}");

    // Two heads side by side, as in tests/it/face.rs.
    let portrait = still("astronaut.png");
    let head = crop(&portrait, 124, 25, 200, 200).resized(300, 300);
    let mut canvas = RgbImage::new(640, 480, [90, 100, 110]);
    canvas.blit(&head, 10, 90);
    canvas.blit(&head.mirrored(), 330, 90);
    let err = embed_reference(&m, &encode(&canvas, ImageFormat::Png)).unwrap_err();
    println!("two heads: {err}");
    assert!(matches!(err, ReferenceError::MultipleFaces(2)), "{err:?}");
}
