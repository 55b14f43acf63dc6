//! Spoof evidence: does the face move like a flat picture?
//!
//! A printed photo or a phone screen held up to the camera is a plane. However it is tilted, slid
//! or brought closer, every point on it moves by one plane homography (a 3x3 projective map of
//! the image), exactly under full perspective and as an affine special case under weak
//! perspective. A real head turning does not: the nose tip, the cheeks and the jaw line are at
//! different depths, so a turn moves them by different amounts (parallax), which no homography
//! of the frontal frame reproduces.
//!
//! [`planarity`] takes the tracked face mesh of a clip, picks the most frontal frame as the
//! reference, and for every frame whose head pose differs from it by more than
//! [`MOTION_MIN_DEG`] fits the best homography (and, for comparison, the best affine map) from
//! the reference landmarks to that frame's landmarks. The RMS residual, relative to the
//! reference's inter-eye distance, is near the tracker's noise for a picture and large for a real
//! head. [`looks_planar`] turns the median residual into a decision.
//!
//! Only landmarks that move with the head, not with expressions, are used: the lips and eyelids
//! ([`EXPRESSION_LANDMARKS`]) are left out, so a blink or a word does not count as depth.
//!
//! # Fit
//!
//! Homography: the normalised direct linear transform (both point sets translated to their
//! centroid and scaled to a mean distance of sqrt 2 from it, the 2N x 9 system's `AᵀA`
//! accumulated, its eigenvector of the smallest eigenvalue found by cyclic Jacobi iteration),
//! then refined on the geometric (reprojection) error by Levenberg–Marquardt, starting from the
//! better of the DLT and the least-squares affine map, and denormalised. The affine map is a
//! homography too, so the reported homography residual is never above the affine one.
//!
//! Everything here is plain `std`; the caller serialises [`PlanarityScore`] as it likes.

/// Number of face-mesh landmarks used (MediaPipe's 468; extra points such as the iris ones are
/// ignored).
pub(crate) const MESH_POINTS: usize = 468;

/// A frame is judged when its yaw or pitch differs from the reference frame's by more than this
/// (degrees).
pub(crate) const MOTION_MIN_DEG: f32 = 8.0;

/// Fewest judged frames for a score.
pub(crate) const MIN_JUDGED_FRAMES: usize = 3;
/// A frame whose landmarks deviate from a 2D similarity of the reference by more than this share
/// of the inter-eye distance (RMS) has moved in depth (turned, nodded or been tilted). Landmark
/// jitter of a still face stays near 0.01-0.02.
pub(crate) const MOTION_MIN_DEFORMATION: f64 = 0.05;

/// Eye corners whose midpoints give the inter-eye distance: `(33, 133)` is the subject's right
/// eye (image-left), `(362, 263)` the left eye.
pub(crate) const EYE_CORNERS: [[usize; 2]; 2] = [[33, 133], [362, 263]];

/// Landmarks that move with expressions rather than with the head, left out of the fits: the
/// lips ring, then the eyelids.
pub(crate) const EXPRESSION_LANDMARKS: [usize; 72] = [
    // Lips.
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267,
    269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
    // Eyelids.
    7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246, 249, 263, 362, 373,
    374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466,
];

/// Upper bound on [`PlanarityScore::homography_residual`] for a face that moves as a plane.
///
/// Calibrated on synthetic meshes (the tests in this file: 0.5 px Gaussian noise per coordinate
/// on every landmark of every frame, the reference included; inter-eye distance 90 px; 30-frame
/// clips, three noise seeds each):
///
/// | clip | projection | homography | affine |
/// |---|---|---|---|
/// | flat photo (frontal mesh at z = 0), yaw ±30°, pitch ±20°, roll ±10°, slide, scale ±15 % | weak perspective | 0.0106–0.0111 | 0.0106–0.0111 |
/// | same | full perspective (focal 1.2 x image width) | 0.0106–0.0111 | 0.0234–0.0237 |
/// | live head (ellipsoid cap + nose, depth 40 % of face width, pivot behind the face), yaw ±25°, pitch ±15° | orthographic | 0.0573–0.0577 | 0.0623–0.0628 |
/// | same | full perspective | 0.0679–0.0681 | 0.0831–0.0841 |
///
/// A photo's residual is the noise floor (0.5 px on both frames ≈ 1 px RMS ≈ 0.011 eye
/// distances). The threshold sits at the geometric mean of the worst photo (0.0111) and the
/// least deep live clip (0.0573), 0.0252, rounded to 0.025: a factor ~2.3 from each. The
/// residual scales with the tracker's landmark jitter: a tracker noisier than ~1 px per
/// coordinate at a 90 px eye distance would put photos near this threshold, so recalibrate on
/// field data before trusting it on its own.
pub const PLANAR_RESIDUAL_MAX: f64 = 0.025;

/// Landmarks of one analysed frame.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshFrame {
    /// 2D image positions of the mesh points (at least [`MESH_POINTS`]; more are ignored), pixels.
    pub points: Vec<[f32; 2]>,
    /// Head yaw, degrees, relative (only differences between frames are used).
    pub yaw: f32,
    /// Head pitch, degrees, relative.
    pub pitch: f32,
}

/// How well the face's motion is explained by a plane.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanarityScore {
    /// Median over the judged frames of the RMS residual of the best homography from the
    /// reference (most frontal) frame to the frame, divided by the inter-eye distance of the
    /// reference (distance between the midpoints of landmarks 33/133 and 362/263).
    pub homography_residual: f64,
    /// Same for the best affine fit (always >= `homography_residual`).
    pub affine_residual: f64,
    /// How many frames were judged (those with |yaw| or |pitch| more than [`MOTION_MIN_DEG`]
    /// from the reference's).
    pub frames: usize,
    /// Largest |yaw| difference from the reference seen, degrees.
    pub max_yaw: f32,
    /// Largest |pitch| difference from the reference seen, degrees.
    pub max_pitch: f32,
}

/// Scores how planar the face's motion is across `frames`.
///
/// The reference is the most frontal frame (smallest `hypot(yaw, pitch)`). Frames with fewer
/// than [`MESH_POINTS`] points or with non-finite values are ignored. `None` when there is not
/// enough motion (no frame beyond [`MOTION_MIN_DEG`]), fewer than [`MIN_JUDGED_FRAMES`] judged
/// frames, or a degenerate reference (eyes on top of each other).
pub fn planarity(frames: &[MeshFrame]) -> Option<PlanarityScore> {
    let usable: Vec<&MeshFrame> = frames.iter().filter(|f| usable_frame(f)).collect();
    let reference = *usable.iter().min_by(|a, b| {
        let fa = a.yaw.hypot(a.pitch);
        let fb = b.yaw.hypot(b.pitch);
        fa.total_cmp(&fb)
    })?;
    let eye = eye_distance(reference);
    if eye.is_nan() || eye <= 1e-6 {
        return None;
    }
    let stable = stable_indices();
    let src: Vec<[f64; 2]> = stable
        .iter()
        .map(|&i| to_f64(reference.points[i]))
        .collect();

    let (mut max_yaw, mut max_pitch) = (0.0f32, 0.0f32);
    let mut hom = Vec::new();
    let mut aff = Vec::new();
    for frame in &usable {
        let dyaw = (frame.yaw - reference.yaw).abs();
        let dpitch = (frame.pitch - reference.pitch).abs();
        max_yaw = max_yaw.max(dyaw);
        max_pitch = max_pitch.max(dpitch);
        let dst: Vec<[f64; 2]> = stable.iter().map(|&i| to_f64(frame.points[i])).collect();
        // A frame counts as motion when the tracker saw the head turn or nod, or when the face's
        // outline changed beyond a 2D similarity (foreshortening). The second catches a tilted
        // photo, which a pose fit rightly does not read as a head turn.
        let deformed = similarity_residual(&src, &dst) / eye > MOTION_MIN_DEFORMATION;
        if dyaw <= MOTION_MIN_DEG && dpitch <= MOTION_MIN_DEG && !deformed {
            continue;
        }
        let Some(a) = fit_affine(&src, &dst) else {
            continue;
        };
        let a_rms = rms_residual(&src, &dst, &a);
        let h_rms = fit_homography(&src, &dst)
            .map(|h| rms_residual(&src, &dst, &h))
            .filter(|r| r.is_finite())
            .map_or(a_rms, |r| r.min(a_rms));
        hom.push(h_rms / eye);
        aff.push(a_rms / eye);
    }
    if hom.len() < MIN_JUDGED_FRAMES {
        return None;
    }
    Some(PlanarityScore {
        homography_residual: median(&mut hom),
        affine_residual: median(&mut aff),
        frames: hom.len(),
        max_yaw,
        max_pitch,
    })
}

/// RMS residual of the best 2D similarity (rotation, uniform scale, translation) from `src` to `dst`.
fn similarity_residual(src: &[[f64; 2]], dst: &[[f64; 2]]) -> f64 {
    let n = src.len().min(dst.len());
    if n == 0 {
        return 0.0;
    }
    let mean = |p: &[[f64; 2]], k: usize| p[..n].iter().map(|q| q[k]).sum::<f64>() / n as f64;
    let (sx, sy, dx, dy) = (mean(src, 0), mean(src, 1), mean(dst, 0), mean(dst, 1));
    let (mut num_a, mut num_b, mut den) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (src[i][0] - sx, src[i][1] - sy);
        let (u, v) = (dst[i][0] - dx, dst[i][1] - dy);
        num_a += x * u + y * v;
        num_b += x * v - y * u;
        den += x * x + y * y;
    }
    if den <= 0.0 {
        return 0.0;
    }
    let (a, b) = (num_a / den, num_b / den);
    let sum: f64 = (0..n)
        .map(|i| {
            let (x, y) = (src[i][0] - sx, src[i][1] - sy);
            let (u, v) = (dst[i][0] - dx, dst[i][1] - dy);
            (a * x - b * y - u).powi(2) + (b * x + a * y - v).powi(2)
        })
        .sum();
    (sum / n as f64).sqrt()
}

/// A face outline that foreshortens while the pose stays frontal: a flat picture being tilted.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatMotion {
    /// Frames whose eye-span / forehead-nose ratio moved by more than `FLAT_RATIO_CHANGE` from
    /// the reference while the tracked yaw and pitch stayed within `FLAT_POSE_MAX_DEG` of it
    /// (by more than `FLAT_RATIO_CHANGE_NODDING` when the pitch moved `FLAT_PITCH_MAX_DEG` or more).
    pub frames: usize,
    pub max_ratio_change: f64,
}

/// Ratio change that counts as foreshortening (a real head only foreshortens this much when it
/// turns or nods well beyond `FLAT_POSE_MAX_DEG`). Photos held tilted measured 0.17-0.19 (a photo
/// swept to 40 degrees and back: 7 frames over this line); live rendered people reached
/// 0.069-0.073 (three live calls failed `SPOOF_SUSPECTED` at the former 0.06).
pub const FLAT_RATIO_CHANGE: f64 = 0.09;
/// Pose change (degrees) below which foreshortening is not explained by the head's rotation.
pub(crate) const FLAT_POSE_MAX_DEG: f32 = 6.0;
/// Stricter for pitch: the nose tip's parallax makes the ratio follow a real nod, and the tracker
/// reads nods low (about 0.6-0.9x), so a live nod read under 6 degrees could still change the
/// ratio by more than `FLAT_RATIO_CHANGE`. A tilted photo reads within about 3 degrees.
pub(crate) const FLAT_PITCH_MAX_DEG: f32 = 2.5;
/// Ratio change that counts as foreshortening while the tracker reads a small nod
/// (`FLAT_PITCH_MAX_DEG`..`FLAT_POSE_MAX_DEG`): live nods measured up to about 0.06 here,
/// tilted photos 0.18-0.20.
pub(crate) const FLAT_RATIO_CHANGE_NODDING: f64 = 0.12;
/// Frames of unexplained foreshortening that make a face look flat.
pub const FLAT_MOTION_MIN_FRAMES: usize = 5;

/// Counts frames where the face foreshortens like a tilted picture: the pose fit (which uses the
/// whole 3D mesh) sees no turn, yet the face's proportions change. The face tracker reads a tilted
/// photo as a frontal face (measured on rendered cards: 38 degrees of tilt read as 1 degree of
/// yaw, the eye span shrinking 14%), so this catches what the homography test cannot see.
pub fn flat_motion(frames: &[MeshFrame]) -> FlatMotion {
    let ratio = |f: &MeshFrame| {
        let d = |a: usize, b: usize| {
            let (p, q) = (f.points[a], f.points[b]);
            ((p[0] - q[0]) as f64).hypot((p[1] - q[1]) as f64)
        };
        let v = d(10, 1);
        (v > 1e-6).then(|| d(33, 263) / v)
    };
    let usable: Vec<&MeshFrame> = frames.iter().filter(|f| usable_frame(f)).collect();
    let Some(reference) = usable
        .iter()
        .min_by(|a, b| a.yaw.hypot(a.pitch).total_cmp(&b.yaw.hypot(b.pitch)))
    else {
        return FlatMotion {
            frames: 0,
            max_ratio_change: 0.0,
        };
    };
    let Some(base) = ratio(reference) else {
        return FlatMotion {
            frames: 0,
            max_ratio_change: 0.0,
        };
    };
    let mut out = FlatMotion {
        frames: 0,
        max_ratio_change: 0.0,
    };
    for f in &usable {
        let yaw_still = (f.yaw - reference.yaw).abs() < FLAT_POSE_MAX_DEG;
        let pitch = (f.pitch - reference.pitch).abs();
        if let (true, true, Some(r)) = (yaw_still, pitch < FLAT_POSE_MAX_DEG, ratio(f)) {
            let change = (r / base - 1.0).abs();
            out.max_ratio_change = out.max_ratio_change.max(change);
            // A small nod explains a small change; only a strong one is flat then.
            let limit = if pitch < FLAT_PITCH_MAX_DEG {
                FLAT_RATIO_CHANGE
            } else {
                FLAT_RATIO_CHANGE_NODDING
            };
            if change > limit {
                out.frames += 1;
            }
        }
    }
    out
}

/// True when the landmarks moved as a plane across a real turn:
/// `homography_residual < PLANAR_RESIDUAL_MAX`.
pub(crate) fn looks_planar(score: &PlanarityScore) -> bool {
    score.homography_residual < PLANAR_RESIDUAL_MAX
}

// ------------------------------------------------------------------------------------------------
// Helpers

type Mat3 = [[f64; 3]; 3];

fn usable_frame(f: &MeshFrame) -> bool {
    f.points.len() >= MESH_POINTS
        && f.yaw.is_finite()
        && f.pitch.is_finite()
        && f.points[..MESH_POINTS]
            .iter()
            .all(|p| p[0].is_finite() && p[1].is_finite())
}

fn to_f64(p: [f32; 2]) -> [f64; 2] {
    [p[0] as f64, p[1] as f64]
}

fn eye_distance(frame: &MeshFrame) -> f64 {
    let centre = |[a, b]: [usize; 2]| {
        let (pa, pb) = (to_f64(frame.points[a]), to_f64(frame.points[b]));
        [(pa[0] + pb[0]) * 0.5, (pa[1] + pb[1]) * 0.5]
    };
    let (l, r) = (centre(EYE_CORNERS[0]), centre(EYE_CORNERS[1]));
    (l[0] - r[0]).hypot(l[1] - r[1])
}

fn stable_indices() -> Vec<usize> {
    (0..MESH_POINTS)
        .filter(|i| !EXPRESSION_LANDMARKS.contains(i))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Applies `h` to `p`; `None` when the point maps to infinity.
fn apply(h: &Mat3, p: [f64; 2]) -> Option<[f64; 2]> {
    let w = h[2][0] * p[0] + h[2][1] * p[1] + h[2][2];
    if w.abs() < 1e-12 {
        return None;
    }
    Some([
        (h[0][0] * p[0] + h[0][1] * p[1] + h[0][2]) / w,
        (h[1][0] * p[0] + h[1][1] * p[1] + h[1][2]) / w,
    ])
}

/// Root mean squared distance between `h(src[i])` and `dst[i]` (infinite when a point maps to
/// infinity).
fn rms_residual(src: &[[f64; 2]], dst: &[[f64; 2]], h: &Mat3) -> f64 {
    let mut sum = 0.0;
    for (p, q) in src.iter().zip(dst) {
        match apply(h, *p) {
            Some(m) => sum += (m[0] - q[0]).powi(2) + (m[1] - q[1]).powi(2),
            None => return f64::INFINITY,
        }
    }
    (sum / src.len().max(1) as f64).sqrt()
}

fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
        }
    }
    m
}

/// Hartley normalisation: the similarity taking the centroid to the origin and the mean distance
/// from it to sqrt 2, with its inverse.
fn normaliser(pts: &[[f64; 2]]) -> Option<(Mat3, Mat3)> {
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p[0]).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p[1]).sum::<f64>() / n;
    let mean = pts
        .iter()
        .map(|p| (p[0] - cx).hypot(p[1] - cy))
        .sum::<f64>()
        / n;
    if mean.is_nan() || mean <= 1e-12 {
        return None;
    }
    let s = std::f64::consts::SQRT_2 / mean;
    let t = [[s, 0.0, -s * cx], [0.0, s, -s * cy], [0.0, 0.0, 1.0]];
    let inv = [[1.0 / s, 0.0, cx], [0.0, 1.0 / s, cy], [0.0, 0.0, 1.0]];
    Some((t, inv))
}

fn transform_all(t: &Mat3, pts: &[[f64; 2]]) -> Vec<[f64; 2]> {
    // A similarity: w stays 1.
    pts.iter()
        .map(|p| {
            [
                t[0][0] * p[0] + t[0][1] * p[1] + t[0][2],
                t[1][0] * p[0] + t[1][1] * p[1] + t[1][2],
            ]
        })
        .collect()
}

/// Best homography from `src` to `dst` (pixel coordinates): normalised DLT, then
/// Levenberg–Marquardt on the reprojection error, started from the better of the DLT and the
/// affine least-squares map. `None` for fewer than 4 points or degenerate sets.
fn fit_homography(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Mat3> {
    if src.len() != dst.len() || src.len() < 4 {
        return None;
    }
    let (ts, _) = normaliser(src)?;
    let (td, td_inv) = normaliser(dst)?;
    let (ns, nd) = (transform_all(&ts, src), transform_all(&td, dst));

    let mut start: Option<(Mat3, f64)> = None;
    let mut consider = |h: Mat3| {
        let r = rms_residual(&ns, &nd, &h);
        if r.is_finite() && start.is_none_or(|(_, best)| r < best) {
            start = Some((h, r));
        }
    };
    if let Some(h) = dlt(&ns, &nd) {
        consider(h);
    }
    if let Some(a) = fit_affine_raw(&ns, &nd) {
        consider(a);
    }
    let (h0, _) = start?;
    let hn = refine(&ns, &nd, h0);
    Some(mat_mul(&td_inv, &mat_mul(&hn, &ts)))
}

/// Direct linear transform on (already normalised) points: the smallest eigenvector of `AᵀA`.
fn dlt(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Mat3> {
    let mut ata = [[0.0f64; 9]; 9];
    for (p, q) in src.iter().zip(dst) {
        let (x, y, u, v) = (p[0], p[1], q[0], q[1]);
        let r1 = [0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v];
        let r2 = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, -u];
        for r in [r1, r2] {
            for (row, ri) in ata.iter_mut().zip(r) {
                for (e, rj) in row.iter_mut().zip(r) {
                    *e += ri * rj;
                }
            }
        }
    }
    let h = smallest_eigenvector(ata);
    if !h.iter().all(|v| v.is_finite()) {
        return None;
    }
    Some([[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], h[8]]])
}

/// Eigenvector of the smallest eigenvalue of a symmetric matrix, by cyclic Jacobi rotations.
fn smallest_eigenvector<const N: usize>(mut a: [[f64; N]; N]) -> [f64; N] {
    let mut v = [[0.0f64; N]; N];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let total: f64 = a.iter().flatten().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for (i, row) in a.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                if i != j {
                    off += x * x;
                }
            }
        }
        if off <= 1e-30 * total || off == 0.0 {
            break;
        }
        for p in 0..N {
            for q in p + 1..N {
                let apq = a[p][q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * apq);
                let t = if theta == 0.0 {
                    1.0
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- Jᵀ A J, V <- V J, with J the rotation in the (p, q) plane.
                for row in a.iter_mut() {
                    let (kp, kq) = (row[p], row[q]);
                    row[p] = c * kp - s * kq;
                    row[q] = s * kp + c * kq;
                }
                let (head, tail) = a.split_at_mut(q);
                for (x, y) in head[p].iter_mut().zip(tail[0].iter_mut()) {
                    let (pk, qk) = (*x, *y);
                    *x = c * pk - s * qk;
                    *y = s * pk + c * qk;
                }
                for row in v.iter_mut() {
                    let (kp, kq) = (row[p], row[q]);
                    row[p] = c * kp - s * kq;
                    row[q] = s * kp + c * kq;
                }
            }
        }
    }
    let mut best = 0;
    for i in 1..N {
        if a[i][i] < a[best][best] {
            best = i;
        }
    }
    let mut out = [0.0; N];
    for (o, row) in out.iter_mut().zip(&v) {
        *o = row[best];
    }
    out
}

/// Least-squares affine map from `src` to `dst` (pixel coordinates), as a homography with last
/// row `(0, 0, 1)`.
fn fit_affine(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Mat3> {
    if src.len() != dst.len() || src.len() < 3 {
        return None;
    }
    let (ts, _) = normaliser(src)?;
    let (td, td_inv) = normaliser(dst)?;
    let an = fit_affine_raw(&transform_all(&ts, src), &transform_all(&td, dst))?;
    Some(mat_mul(&td_inv, &mat_mul(&an, &ts)))
}

/// Least-squares affine map without normalisation (the caller normalises).
fn fit_affine_raw(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Mat3> {
    let mut m = [[0.0f64; 3]; 3];
    let mut bu = [0.0f64; 3];
    let mut bv = [0.0f64; 3];
    for (p, q) in src.iter().zip(dst) {
        let r = [p[0], p[1], 1.0];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += r[i] * r[j];
            }
            bu[i] += r[i] * q[0];
            bv[i] += r[i] * q[1];
        }
    }
    let u = solve(m, bu)?;
    let v = solve(m, bv)?;
    Some([u, v, [0.0, 0.0, 1.0]])
}

/// Solves `m x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve<const N: usize>(mut m: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    let scale = m
        .iter()
        .flatten()
        .fold(0.0f64, |acc, x| acc.max(x.abs()))
        .max(f64::MIN_POSITIVE);
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].is_nan() || m[pivot][col].abs() <= 1e-13 * scale {
            return None;
        }
        m.swap(col, pivot);
        b.swap(col, pivot);
        let (top, rest) = m.split_at_mut(col + 1);
        let prow = &top[col];
        let (btop, brest) = b.split_at_mut(col + 1);
        for (mrow, bv) in rest.iter_mut().zip(brest.iter_mut()) {
            let f = mrow[col] / prow[col];
            if f != 0.0 {
                for (x, pv) in mrow.iter_mut().zip(prow).skip(col) {
                    *x -= f * pv;
                }
                *bv -= f * btop[col];
            }
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let mut s = b[row];
        for k in row + 1..N {
            s -= m[row][k] * x[k];
        }
        x[row] = s / m[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Levenberg–Marquardt on the reprojection error of a homography between normalised point sets,
/// with `h[2][2]` fixed at 1. Returns the start unchanged when it cannot improve it.
fn refine(src: &[[f64; 2]], dst: &[[f64; 2]], h0: Mat3) -> Mat3 {
    if h0[2][2].is_nan() || h0[2][2].abs() <= 1e-9 {
        return h0;
    }
    let from =
        |p: &[f64; 8]| -> Mat3 { [[p[0], p[1], p[2]], [p[3], p[4], p[5]], [p[6], p[7], 1.0]] };
    let mut p = [0.0f64; 8];
    for (k, v) in p.iter_mut().enumerate() {
        *v = h0[k / 3][k % 3] / h0[2][2];
    }
    let cost = |p: &[f64; 8]| {
        let r = rms_residual(src, dst, &from(p));
        r * r
    };
    let mut current = cost(&p);
    if !current.is_finite() {
        return h0;
    }
    let mut lambda = 1e-3;
    for _ in 0..30 {
        let mut jtj = [[0.0f64; 8]; 8];
        let mut jtr = [0.0f64; 8];
        for (s, d) in src.iter().zip(dst) {
            let (x, y) = (s[0], s[1]);
            let w = p[6] * x + p[7] * y + 1.0;
            let u = (p[0] * x + p[1] * y + p[2]) / w;
            let v = (p[3] * x + p[4] * y + p[5]) / w;
            let ju = [x / w, y / w, 1.0 / w, 0.0, 0.0, 0.0, -u * x / w, -u * y / w];
            let jv = [0.0, 0.0, 0.0, x / w, y / w, 1.0 / w, -v * x / w, -v * y / w];
            for (j, r) in [(ju, u - d[0]), (jv, v - d[1])] {
                for a in 0..8 {
                    jtr[a] += j[a] * r;
                    for b in 0..8 {
                        jtj[a][b] += j[a] * j[b];
                    }
                }
            }
        }
        let mut improved = false;
        while lambda < 1e10 {
            let mut m = jtj;
            for (a, row) in m.iter_mut().enumerate() {
                row[a] += lambda * jtj[a][a].max(1e-12);
            }
            let neg: [f64; 8] = jtr.map(|g| -g);
            let Some(step) = solve(m, neg) else {
                lambda *= 10.0;
                continue;
            };
            let mut trial = p;
            for (t, s) in trial.iter_mut().zip(step) {
                *t += s;
            }
            let c = cost(&trial);
            if c.is_finite() && c < current {
                let gain = current - c;
                p = trial;
                current = c;
                lambda = (lambda * 0.1).max(1e-12);
                improved = gain > 1e-12 * current.max(1e-30);
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    from(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64* with Box–Muller, so the tests need no crates and are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next_f64(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn gauss(&mut self) -> f64 {
            let (u1, u2) = (self.next_f64(), self.next_f64());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    const FACE_WIDTH: f64 = 200.0;
    const NOISE_PX: f64 = 0.5;
    const IMAGE_WIDTH: f64 = 640.0;
    const IMAGE_HEIGHT: f64 = 480.0;

    /// A synthetic head, centred on the origin, in pixels (x right, y down, z away from the
    /// camera): 468 points on an ellipsoid cap 200 px wide and 260 px tall, 50 px deep, with a
    /// 30 px nose bump, so z spans 40 % of the face width. The eye corners sit where a face's
    /// would (inter-eye distance 90 px).
    fn head() -> Vec<[f64; 3]> {
        let (a, b) = (FACE_WIDTH * 0.5, FACE_WIDTH * 0.65);
        let depth = |x: f64, y: f64| {
            let r2 = (x / a).powi(2) + (y / b).powi(2);
            let cap = -50.0 * (1.0 - r2).max(0.0).sqrt();
            let nose = -30.0 * (-((x / 18.0).powi(2) + ((y - 10.0) / 35.0).powi(2))).exp();
            cap + nose
        };
        let mut rng = Rng(0x5eed_f00d);
        let mut pts = Vec::with_capacity(MESH_POINTS);
        while pts.len() < MESH_POINTS {
            let x = (rng.next_f64() * 2.0 - 1.0) * a;
            let y = (rng.next_f64() * 2.0 - 1.0) * b;
            if (x / a).powi(2) + (y / b).powi(2) <= 0.92 {
                pts.push([x, y, 0.0]);
            }
        }
        // Eye corners, outer to inner: eye centres at x = -45 and 45.
        for (i, x) in [(33, -70.0), (133, -20.0), (362, 20.0), (263, 70.0)] {
            pts[i] = [x, -25.0, 0.0];
        }
        for p in &mut pts {
            p[2] = depth(p[0], p[1]);
        }
        pts
    }

    /// `Rz(roll) * Rx(pitch) * Ry(yaw)`, the renderer's convention (degrees).
    fn rotation(yaw: f64, pitch: f64, roll: f64) -> [[f64; 3]; 3] {
        let (sy, cy) = yaw.to_radians().sin_cos();
        let (sp, cp) = pitch.to_radians().sin_cos();
        let (sr, cr) = roll.to_radians().sin_cos();
        let ry = [[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]];
        let rx = [[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]];
        let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
        mat_mul(&rz, &mat_mul(&rx, &ry))
    }

    #[derive(Clone, Copy)]
    enum Projection {
        /// Orthographic: the image is x, y after the rotation.
        Ortho,
        /// Full perspective, focal 1.2 x the image width, the object at distance `focal / scale`.
        Perspective,
    }

    struct Pose {
        yaw: f64,
        pitch: f64,
        roll: f64,
        shift: (f64, f64),
        scale: f64,
    }

    /// Rotates `pts` about `pivot` (relative to the object's origin), scales, shifts and projects
    /// into a 640x480 image, adding Gaussian noise.
    fn project(
        pts: &[[f64; 3]],
        pivot: [f64; 3],
        pose: &Pose,
        proj: Projection,
        rng: &mut Rng,
    ) -> Vec<[f32; 2]> {
        let r = rotation(pose.yaw, pose.pitch, pose.roll);
        let focal = 1.2 * IMAGE_WIDTH;
        let (cx, cy) = (
            IMAGE_WIDTH * 0.5 + pose.shift.0,
            IMAGE_HEIGHT * 0.5 + pose.shift.1,
        );
        pts.iter()
            .map(|p| {
                let d = [p[0] - pivot[0], p[1] - pivot[1], p[2] - pivot[2]];
                let q: Vec<f64> = (0..3)
                    .map(|i| pivot[i] + r[i][0] * d[0] + r[i][1] * d[1] + r[i][2] * d[2])
                    .collect();
                let (x, y) = match proj {
                    Projection::Ortho => (q[0] * pose.scale, q[1] * pose.scale),
                    Projection::Perspective => {
                        let z = focal / pose.scale + q[2];
                        (focal * q[0] / z, focal * q[1] / z)
                    }
                };
                [
                    (cx + x + NOISE_PX * rng.gauss()) as f32,
                    (cy + y + NOISE_PX * rng.gauss()) as f32,
                ]
            })
            .collect()
    }

    /// A 30-frame clip: yaw sweeps ±`yaw_amp`, pitch ±`pitch_amp` at twice the rate, frame 0
    /// frontal; photos also roll, slide and change scale.
    fn clip(
        pts: &[[f64; 3]],
        pivot: [f64; 3],
        yaw_amp: f64,
        pitch_amp: f64,
        moving_card: bool,
        proj: Projection,
        seed: u64,
    ) -> Vec<MeshFrame> {
        let mut rng = Rng(seed);
        let n = 30;
        (0..n)
            .map(|k| {
                let t = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
                let pose = Pose {
                    yaw: yaw_amp * t.sin(),
                    pitch: pitch_amp * (2.0 * t).sin(),
                    roll: if moving_card {
                        10.0 * (3.0 * t).sin()
                    } else {
                        0.0
                    },
                    shift: if moving_card {
                        (40.0 * t.sin(), -25.0 * (2.0 * t).cos() + 25.0)
                    } else {
                        (0.0, 0.0)
                    },
                    scale: if moving_card {
                        1.0 + 0.15 * t.sin()
                    } else {
                        1.0
                    },
                };
                MeshFrame {
                    points: project(pts, pivot, &pose, proj, &mut rng),
                    yaw: pose.yaw as f32,
                    pitch: pose.pitch as f32,
                }
            })
            .collect()
    }

    fn live(proj: Projection, seed: u64) -> PlanarityScore {
        let pts = head();
        // A head turns on its neck: pivot behind the face.
        let pivot = [0.0, 0.0, 0.6 * FACE_WIDTH];
        planarity(&clip(&pts, pivot, 25.0, 15.0, false, proj, seed)).expect("live score")
    }

    fn photo(proj: Projection, seed: u64) -> PlanarityScore {
        let flat: Vec<[f64; 3]> = head().iter().map(|p| [p[0], p[1], 0.0]).collect();
        planarity(&clip(&flat, [0.0; 3], 30.0, 20.0, true, proj, seed)).expect("photo score")
    }

    #[test]
    fn synthetic_head_eyes_are_90px_apart() {
        let pts = head();
        let frame = MeshFrame {
            points: pts.iter().map(|p| [p[0] as f32, p[1] as f32]).collect(),
            yaw: 0.0,
            pitch: 0.0,
        };
        assert!((eye_distance(&frame) - 90.0).abs() < 1e-3);
        let z: Vec<f64> = pts.iter().map(|p| p[2]).collect();
        let span =
            z.iter().cloned().fold(f64::MIN, f64::max) - z.iter().cloned().fold(f64::MAX, f64::min);
        assert!((0.3..0.45).contains(&(span / FACE_WIDTH)), "z span {span}");
    }

    #[test]
    fn jacobi_finds_the_smallest_eigenvector() {
        // Q diag(5, 1, 0.01, 3) Qᵀ with a known Q (a product of plane rotations).
        let mut q = [[0.0f64; 4]; 4];
        for (i, row) in q.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        for (p, r, ang) in [
            (0usize, 1usize, 0.3f64),
            (1, 2, 1.1),
            (2, 3, -0.7),
            (0, 3, 0.4),
        ] {
            let (s, c) = ang.sin_cos();
            for row in q.iter_mut() {
                let (a, b) = (row[p], row[r]);
                row[p] = c * a - s * b;
                row[r] = s * a + c * b;
            }
        }
        let d = [5.0, 1.0, 0.01, 3.0];
        let mut m = [[0.0f64; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                m[i][j] = (0..4).map(|k| q[i][k] * d[k] * q[j][k]).sum();
            }
        }
        let v = smallest_eigenvector(m);
        let dot: f64 = (0..4).map(|i| v[i] * q[i][2]).sum();
        assert!((dot.abs() - 1.0).abs() < 1e-10, "dot {dot}");
    }

    #[test]
    fn homography_fit_is_exact_on_a_projective_map() {
        let h: Mat3 = [[1.1, 0.2, 30.0], [-0.1, 0.9, -12.0], [4e-4, -2e-4, 1.0]];
        let src: Vec<[f64; 2]> = head()
            .iter()
            .map(|p| [p[0] + 320.0, p[1] + 240.0])
            .collect();
        let dst: Vec<[f64; 2]> = src.iter().map(|p| apply(&h, *p).unwrap()).collect();
        let fit = fit_homography(&src, &dst).unwrap();
        assert!(rms_residual(&src, &dst, &fit) < 1e-6);
        let aff = fit_affine(&src, &dst).unwrap();
        assert!(rms_residual(&src, &dst, &aff) > 1.0);
    }

    #[test]
    fn live_head_is_not_planar_and_photo_is() {
        let mut lives = Vec::new();
        let mut photos = Vec::new();
        for (name, proj) in [
            ("ortho", Projection::Ortho),
            ("perspective", Projection::Perspective),
        ] {
            for seed in [1u64, 2, 3] {
                let l = live(proj, seed);
                let p = photo(proj, seed + 100);
                println!(
                    "{name:<11} seed {seed}: live  homography {:.4} affine {:.4} frames {} max yaw {:.1} pitch {:.1}",
                    l.homography_residual, l.affine_residual, l.frames, l.max_yaw, l.max_pitch
                );
                println!(
                    "{name:<11} seed {seed}: photo homography {:.4} affine {:.4} frames {} max yaw {:.1} pitch {:.1}",
                    p.homography_residual, p.affine_residual, p.frames, p.max_yaw, p.max_pitch
                );
                for s in [&l, &p] {
                    assert!(s.affine_residual >= s.homography_residual);
                    assert!(s.frames >= MIN_JUDGED_FRAMES);
                }
                assert!(!looks_planar(&l), "live {l:?}");
                assert!(looks_planar(&p), "photo {p:?}");
                lives.push(l.homography_residual);
                photos.push(p.homography_residual);
            }
        }
        let live_min = lives.iter().cloned().fold(f64::MAX, f64::min);
        let photo_max = photos.iter().cloned().fold(f64::MIN, f64::max);
        println!(
            "live min {live_min:.4}, photo max {photo_max:.4}, threshold {PLANAR_RESIDUAL_MAX}, geometric mean {:.4}",
            (live_min * photo_max).sqrt()
        );
        // Margin of at least 2x on both sides.
        assert!(live_min > 2.0 * PLANAR_RESIDUAL_MAX);
        assert!(photo_max < 0.5 * PLANAR_RESIDUAL_MAX);
    }

    #[test]
    fn photo_under_perspective_needs_the_homography() {
        // A strongly tilted card close to the camera: the affine fit is visibly worse.
        let p = photo(Projection::Perspective, 7);
        assert!(p.affine_residual > 1.5 * p.homography_residual, "{p:?}");
    }

    #[test]
    fn expressions_do_not_break_a_photo() {
        // A phone replaying a video: the picture is flat but the lips and lids move.
        let flat: Vec<[f64; 3]> = head().iter().map(|p| [p[0], p[1], 0.0]).collect();
        let mut frames = clip(
            &flat,
            [0.0; 3],
            30.0,
            20.0,
            true,
            Projection::Perspective,
            9,
        );
        for (k, f) in frames.iter_mut().enumerate() {
            for &i in &EXPRESSION_LANDMARKS {
                f.points[i][1] += 8.0 * (k as f32).sin();
            }
        }
        assert!(looks_planar(&planarity(&frames).unwrap()));
    }

    #[test]
    fn still_head_gives_none() {
        let pts = head();
        let pivot = [0.0, 0.0, 0.6 * FACE_WIDTH];
        let frames = clip(&pts, pivot, 0.0, 0.0, false, Projection::Ortho, 4);
        assert_eq!(planarity(&frames), None);
        // Small motion, all within 8 degrees.
        let frames = clip(&pts, pivot, 7.5, 7.5, false, Projection::Ortho, 5);
        assert_eq!(planarity(&frames), None);
        assert_eq!(planarity(&[]), None);
    }

    #[test]
    fn too_few_judged_frames_gives_none() {
        let pts = head();
        let pivot = [0.0, 0.0, 0.6 * FACE_WIDTH];
        let mut frames = clip(&pts, pivot, 0.0, 0.0, false, Projection::Ortho, 6);
        let turned = clip(&pts, pivot, 25.0, 0.0, false, Projection::Ortho, 7);
        // Frames 7 and 8 of the sweep are at yaw ~ 25 * sin(84..96 deg).
        frames[1] = turned[7].clone();
        frames[2] = turned[8].clone();
        assert_eq!(planarity(&frames), None);
        frames[3] = turned[6].clone();
        let s = planarity(&frames).expect("three judged frames");
        assert_eq!(s.frames, 3);
        assert!(!looks_planar(&s));
    }

    #[test]
    fn short_or_broken_frames_are_ignored() {
        let pts = head();
        let pivot = [0.0, 0.0, 0.6 * FACE_WIDTH];
        let mut frames = clip(&pts, pivot, 25.0, 15.0, false, Projection::Ortho, 8);
        let reference = planarity(&frames).unwrap();
        frames.push(MeshFrame {
            points: vec![[0.0, 0.0]; 10],
            yaw: 0.0,
            pitch: 0.0,
        });
        let mut nan = frames[3].clone();
        nan.points[100][0] = f32::NAN;
        frames.push(nan);
        // 478 points (with iris): the extra ones are ignored.
        for f in &mut frames {
            f.points.extend([[1e6, -1e6]; 10]);
        }
        assert_eq!(planarity(&frames), Some(reference));
    }
}
