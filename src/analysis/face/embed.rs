//! Face embeddings for matching a live face against a reference (ID) photo: MobileFaceNet
//! (192-d) on faces aligned to the standard 112x112 five-point template.
//!
//! The five points come from the 468-point mesh (eye centres, nose tip, mouth corners); a
//! least-squares similarity maps them onto the template, and the model runs on the aligned face
//! and its mirror image (its fixed batch of two), whose embeddings are averaged (flip TTA).
//! Two embeddings are compared by cosine similarity against `MATCH_THRESHOLD`.

use image::{imageops, Rgb};

use super::detector::{self, Detection};
use super::mesh::{self, Roi};
use super::models::{run, FaceModels, ModelError};
use super::MIN_PRESENCE;
use crate::analysis::image::{warp_to_tensor, Affine, Layout};
use crate::frame::{Frame, I420};

/// The aligned face's side in pixels.
pub(crate) const SIZE: usize = 112;
/// Length of an embedding.
pub(crate) const DIM: usize = 192;
const INPUT: &str = "input";
const OUTPUT: &str = "embeddings";
/// The model's fixed batch.
const BATCH: usize = 2;

/// The standard 112x112 five-point template (ArcFace/InsightFace): right eye, left eye, nose tip,
/// right mouth corner, left mouth corner ("right" = the subject's right = image-left).
pub(crate) const TEMPLATE_112: [(f32, f32); 5] = [
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
];

/// Cosine similarity at or above which two embeddings are taken to show the same person.
///
/// Calibrated by `tests/it/matching.rs` (flip-TTA embeddings, as `embed_face` makes them), on
/// 35 same-person and 105 different-person pairs.
///
/// Same person: the astronaut portrait against itself mirrored, JPEG quality 40, downscaled
/// 0.5x and rendered frontal / yaw +-15 / pitch +-10 (live side), and three ID-style photos of
/// her through `embed_reference` (a 320x400 JPEG crop, a 112x112 template-aligned crop, a tight
/// 70x70 crop that cuts off forehead and chin) against all nine live faces. Scores 0.802 (tight
/// crop vs pitch +10) to 0.994 (mirror); without the tight crop the worst is 0.899.
///
/// Different people: those twelve astronaut embeddings against `tom_hanks_112.png` and the six
/// faces of `group6_t1.jpg`, and those seven faces against each other. Scores -0.175 to 0.518
/// (two men in the group photo, one turned, one laughing); the astronaut against anyone else
/// at most 0.236.
///
/// The threshold is the midpoint of the gap between 0.802 and 0.518 (margin 0.14 either side).
/// Every same-person pair comes from one photo, so a real ID photo against a live camera
/// (years, lighting and cameras apart) will score lower than these: recalibrate on real pairs
/// when they exist.
pub const MATCH_THRESHOLD: f32 = 0.66;

/// Pixel limits per side for a reference photo.
pub(crate) const REFERENCE_MIN_SIDE: u32 = 64;
pub(crate) const REFERENCE_MAX_SIDE: u32 = 4096;
/// Most memory the reference photo's decoder may allocate.
const REFERENCE_MAX_DECODE_BYTES: u64 = 96 * 1024 * 1024;
/// A reference photo in which no face is found at its own size is placed, scaled to half the
/// side, in the middle of a canvas this large and searched again (the short-range detector
/// misses faces that fill the whole picture, as in tight ID crops).
const CANVAS: u32 = 512;

/// Five points from the 468-point mesh in template order: eye centres (mean of 33/133 and
/// 362/263), nose tip 1, mouth corners 61 and 291.
pub(crate) fn five_points(mesh: &[[f32; 3]]) -> [(f32, f32); 5] {
    let mean = |a: usize, b: usize| {
        (
            (mesh[a][0] + mesh[b][0]) / 2.0,
            (mesh[a][1] + mesh[b][1]) / 2.0,
        )
    };
    let at = |i: usize| (mesh[i][0], mesh[i][1]);
    [mean(33, 133), mean(362, 263), at(1), at(61), at(291)]
}

/// Least-squares similarity transform (Umeyama, 2D: rotation, uniform scale, translation, no
/// reflection) mapping `from` onto `to`. Degenerate input (all `from` points equal) gives a
/// non-finite or zero-scale map.
pub fn similarity(from: &[(f32, f32); 5], to: &[(f32, f32); 5]) -> Affine {
    let n = from.len() as f64;
    let mean = |p: &[(f32, f32); 5]| {
        let (sx, sy) = p.iter().fold((0.0f64, 0.0f64), |(x, y), q| {
            (x + q.0 as f64, y + q.1 as f64)
        });
        (sx / n, sy / n)
    };
    let (ms, md) = (mean(from), mean(to));
    // In 2D the optimal rotation-and-scale is closed form: with centred points s and d,
    // s*cos = sum(s.d) / sum|s|^2 and s*sin = sum(s x d) / sum|s|^2.
    let (mut dot, mut cross, mut var) = (0.0f64, 0.0f64, 0.0f64);
    for (s, d) in from.iter().zip(to) {
        let (sx, sy) = (s.0 as f64 - ms.0, s.1 as f64 - ms.1);
        let (dx, dy) = (d.0 as f64 - md.0, d.1 as f64 - md.1);
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
        var += sx * sx + sy * sy;
    }
    let (a, b) = (dot / var, cross / var);
    Affine {
        a: a as f32,
        b: -b as f32,
        c: (md.0 - (a * ms.0 - b * ms.1)) as f32,
        d: b as f32,
        e: a as f32,
        f: (md.1 - (b * ms.0 + a * ms.1)) as f32,
    }
}

/// The inverse of an affine map (None when singular).
fn invert(m: &Affine) -> Option<Affine> {
    let det = m.a * m.e - m.b * m.d;
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let (a, b, d, e) = (m.e / det, -m.b / det, -m.d / det, m.a / det);
    Some(Affine {
        a,
        b,
        c: -(a * m.c + b * m.f),
        d,
        e,
        f: -(d * m.c + e * m.f),
    })
}

/// An L2-normalised face embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(pub [f32; DIM]);

impl Embedding {
    /// Hex of the little-endian f32s (how an enrolment is stored).
    pub fn to_hex(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().flat_map(|v| v.to_le_bytes()).collect();
        hex::encode(bytes)
    }

    /// The inverse of [`Embedding::to_hex`]; `None` for anything else.
    pub(crate) fn from_hex(text: &str) -> Option<Embedding> {
        let bytes = hex::decode(text).ok()?;
        if bytes.len() != DIM * 4 {
            return None;
        }
        let mut out = [0f32; DIM];
        for (v, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(Embedding(out))
    }

    /// Cosine similarity in -1..=1 (0 when either vector is zero).
    pub fn cosine(&self, other: &Embedding) -> f32 {
        let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
        for (a, b) in self.0.iter().zip(&other.0) {
            dot += a * b;
            na += a * a;
            nb += b * b;
        }
        let norm = (na * nb).sqrt();
        if norm > 0.0 {
            dot / norm
        } else {
            0.0
        }
    }

    /// Whether the two embeddings show the same person (`cosine >= MATCH_THRESHOLD`).
    pub fn matches(&self, other: &Embedding) -> bool {
        self.cosine(other) >= MATCH_THRESHOLD
    }
}

/// The map from the aligned 112x112 crop onto the image for a face with this mesh.
pub fn alignment(mesh: &[[f32; 3]]) -> Option<Affine> {
    if mesh.len() < 468 {
        return None;
    }
    let to_template = similarity(&five_points(mesh), &TEMPLATE_112);
    let to_image = invert(&to_template)?;
    let finite = [
        to_image.a, to_image.b, to_image.c, to_image.d, to_image.e, to_image.f,
    ]
    .iter()
    .all(|v| v.is_finite());
    (finite && to_image.scale() > 1e-3).then_some(to_image)
}

/// Aligns the face (from its mesh) to 112x112 and embeds it. The model runs on a batch of two:
/// the aligned face and its horizontal mirror; their embeddings are averaged and L2-normalised.
pub fn embed_face(
    models: &FaceModels,
    frame: &I420,
    mesh: &[[f32; 3]],
    scratch: &mut Vec<f32>,
) -> Result<Embedding, ModelError> {
    let Some(pool) = models.embedder.as_ref() else {
        return Err(ModelError::Missing("mobilefacenet.onnx".into()));
    };
    let to_image = alignment(mesh)
        .ok_or_else(|| ModelError::Run("face landmarks too few or degenerate".into()))?;
    warp_to_tensor(
        frame,
        &to_image,
        SIZE,
        Layout::Nchw,
        false,
        |v| (v - 127.5) / 128.0,
        scratch,
    );
    // The second item is the same crop mirrored: every row reversed.
    let one = scratch.len();
    scratch.extend_from_within(..);
    for row in scratch[one..].chunks_exact_mut(SIZE) {
        row.reverse();
    }
    let out = {
        let mut session = pool.acquire(0);
        run(
            &mut session,
            INPUT,
            [BATCH as i64, 3, SIZE as i64, SIZE as i64],
            scratch,
            &[OUTPUT],
        )?
    };
    let raw = &out[0];
    if raw.len() != BATCH * DIM {
        return Err(ModelError::Run(format!(
            "embedding output has {} values, want {}",
            raw.len(),
            BATCH * DIM
        )));
    }
    let mut sum = [0.0f32; DIM];
    for item in raw.chunks_exact(DIM) {
        let norm = item.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(ModelError::Run("embedding is zero or not finite".into()));
        }
        for (s, v) in sum.iter_mut().zip(item) {
            *s += v / norm;
        }
    }
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return Err(ModelError::Run("embedding is zero or not finite".into()));
    }
    for s in sum.iter_mut() {
        *s /= norm;
    }
    Ok(Embedding(sum))
}

/// A face found by the detector and confirmed by the mesh.
#[derive(Debug, Clone)]
pub struct FoundFace {
    pub detection: Detection,
    /// The 468-point mesh in image pixels.
    pub mesh: Vec<[f32; 3]>,
}

/// Every face the detector finds in the frame whose mesh confirms it (presence at least
/// `MIN_PRESENCE`), best detection first.
pub fn find_faces(
    models: &FaceModels,
    frame: &I420,
    scratch: &mut Vec<f32>,
) -> Result<Vec<FoundFace>, ModelError> {
    let mut detections = {
        let mut session = models.detector.acquire(0);
        detector::detect(&mut session, frame, scratch)?
    };
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut faces = Vec::with_capacity(detections.len());
    for d in detections {
        let m = {
            let mut session = models.mesh.acquire(0);
            mesh::run_mesh(&mut session, frame, &Roi::from_detection(&d), scratch)?
        };
        if m.presence >= MIN_PRESENCE {
            faces.push(FoundFace {
                detection: d,
                mesh: m.points,
            });
        }
    }
    Ok(faces)
}

/// Embeds every face `find_faces` finds (for tests and tools: a call embeds its tracked face).
pub fn embed_faces(
    models: &FaceModels,
    frame: &I420,
    scratch: &mut Vec<f32>,
) -> Result<Vec<(Detection, Embedding)>, ModelError> {
    find_faces(models, frame, scratch)?
        .into_iter()
        .map(|f| Ok((f.detection, embed_face(models, frame, &f.mesh, scratch)?)))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("the image could not be decoded: {0}")]
    Decode(String),
    #[error("the image is {w}x{h}; the limits are 64..=4096 px per side")]
    Size { w: u32, h: u32 },
    #[error("no face was found in the image")]
    NoFace,
    #[error("{0} faces were found; the reference photo must show exactly one")]
    MultipleFaces(usize),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The I420 frame of an RGB image.
fn frame_of(img: &image::RgbImage) -> Frame {
    Frame::from_rgb(img.width() as usize, img.height() as usize, img.as_raw())
}

/// A reference (ID) photo: decodes JPEG/PNG bytes, checks the pixel limits, finds exactly one
/// face (detector on the whole image, then the mesh) and embeds it. When no face is found at
/// the image's own size (small or tightly cropped photos, such as 112x112 aligned faces), the
/// image is scaled to half of a 512x512 canvas, centred, and searched again; the face found
/// there is mapped back and embedded from the original pixels.
pub fn embed_reference(models: &FaceModels, bytes: &[u8]) -> Result<Embedding, ReferenceError> {
    // Bounded before decoding: a small file may declare a huge image.
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ReferenceError::Decode(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(REFERENCE_MAX_SIDE);
    limits.max_image_height = Some(REFERENCE_MAX_SIDE);
    limits.max_alloc = Some(REFERENCE_MAX_DECODE_BYTES);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| ReferenceError::Decode(e.to_string()))?;
    let (w, h) = (decoded.width(), decoded.height());
    let allowed = REFERENCE_MIN_SIDE..=REFERENCE_MAX_SIDE;
    if !allowed.contains(&w) || !allowed.contains(&h) {
        return Err(ReferenceError::Size { w, h });
    }
    let rgb = decoded.to_rgb8();
    drop(decoded);
    embed_single_face(models, &rgb)
}

/// Embeds the one face in `rgb` (a reference photo, or the portrait cut from an ID card): the
/// detector on the whole image, then, if nothing is found, on the image centred at half the
/// size of a 512x512 canvas (for small or tightly cropped faces).
pub fn embed_single_face(
    models: &FaceModels,
    rgb: &image::RgbImage,
) -> Result<Embedding, ReferenceError> {
    let (w, h) = (rgb.width(), rgb.height());
    let planes = frame_of(rgb);
    let frame = planes.view();
    let mut scratch = Vec::with_capacity(3 * 192 * 192);
    let mut faces = find_faces(models, &frame, &mut scratch)?;
    if faces.is_empty() {
        // Scale the longer side to half the canvas and centre it.
        let scale = (CANVAS / 2) as f32 / w.max(h) as f32;
        let (nw, nh) = (
            ((w as f32 * scale).round() as u32).max(1),
            ((h as f32 * scale).round() as u32).max(1),
        );
        let small = imageops::resize(rgb, nw, nh, imageops::FilterType::Triangle);
        let mut canvas = image::RgbImage::from_pixel(CANVAS, CANVAS, Rgb([128, 128, 128]));
        let (ox, oy) = ((CANVAS - nw) / 2, (CANVAS - nh) / 2);
        imageops::replace(&mut canvas, &small, ox as i64, oy as i64);
        let padded = frame_of(&canvas);
        faces = find_faces(models, &padded.view(), &mut scratch)?;
        // Canvas pixels back to the original image's (pixel centres at +0.5 on both).
        let (sx, sy) = (w as f32 / nw as f32, h as f32 / nh as f32);
        for face in faces.iter_mut() {
            for p in face.mesh.iter_mut() {
                p[0] = (p[0] - ox as f32) * sx;
                p[1] = (p[1] - oy as f32) * sy;
                p[2] *= sx;
            }
        }
    }
    match faces.len() {
        0 => Err(ReferenceError::NoFace),
        1 => Ok(embed_face(models, &frame, &faces[0].mesh, &mut scratch)?),
        n => Err(ReferenceError::MultipleFaces(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f32, f32), b: (f32, f32)) -> bool {
        (a.0 - b.0).abs() < 1e-3 && (a.1 - b.1).abs() < 1e-3
    }

    #[test]
    fn similarity_recovers_a_known_transform_and_inverts() {
        // Scale 2.5, rotation 30 degrees, shift (40, -7).
        let (s, c) = 30f32.to_radians().sin_cos();
        let m = Affine {
            a: 2.5 * c,
            b: -2.5 * s,
            c: 40.0,
            d: 2.5 * s,
            e: 2.5 * c,
            f: -7.0,
        };
        let to = TEMPLATE_112.map(|(x, y)| m.apply(x, y));
        let fit = similarity(&TEMPLATE_112, &to);
        for (p, q) in TEMPLATE_112.iter().zip(&to) {
            assert!(close(fit.apply(p.0, p.1), *q), "{fit:?}");
        }
        let back = invert(&fit).unwrap();
        for (p, q) in TEMPLATE_112.iter().zip(&to) {
            assert!(close(back.apply(q.0, q.1), *p));
        }
        // The fit never reflects: a mirrored point set gets a rotation, not a flip.
        let mirrored = TEMPLATE_112.map(|(x, y)| (112.0 - x, y));
        let f = similarity(&TEMPLATE_112, &mirrored);
        assert!(f.a * f.e - f.b * f.d > 0.0);
    }

    #[test]
    fn five_points_take_the_mesh_indices() {
        let mut mesh = vec![[0.0f32; 3]; 468];
        for (i, p) in mesh.iter_mut().enumerate() {
            *p = [i as f32, 2.0 * i as f32, 0.0];
        }
        let f = five_points(&mesh);
        assert!(close(f[0], (83.0, 166.0)));
        assert!(close(f[1], (312.5, 625.0)));
        assert!(close(f[2], (1.0, 2.0)));
        assert!(close(f[3], (61.0, 122.0)));
        assert!(close(f[4], (291.0, 582.0)));
        assert!(alignment(&mesh[..100]).is_none());
        assert!(alignment(&vec![[5.0, 5.0, 0.0]; 468]).is_none());
    }

    #[test]
    fn cosine_of_embeddings() {
        let mut a = [0.0f32; DIM];
        let mut b = [0.0f32; DIM];
        a[0] = 1.0;
        b[0] = 1.0;
        b[1] = 1.0;
        let (a, b) = (Embedding(a), Embedding(b));
        assert!((a.cosine(&a) - 1.0).abs() < 1e-6);
        assert!((a.cosine(&b) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(a.cosine(&Embedding([0.0; DIM])), 0.0);
    }
}
