//! The 468-point face mesh (MediaPipe face_landmark) and the eye-contour model (iris_landmark),
//! run on rotated square crops; plus the geometry derived from the mesh: head pose, eye aspect
//! ratio, mouth opening.

use ort::session::Session;

use super::detector::Detection;
use super::models::{run, ModelError};
use crate::analysis::image::{warp_to_tensor, Affine, Layout};
use crate::analysis::quality::I420;

const MESH_SIZE: usize = 192;
const MESH_INPUT: &str = "input_1";
const MESH_OUTPUTS: [&str; 2] = ["conv2d_20", "conv2d_30"];
const IRIS_SIZE: usize = 64;
const IRIS_INPUT: &str = "input_1";
const IRIS_OUTPUTS: [&str; 2] = ["output_eyes_contours_and_brows", "output_iris"];
/// The face crop covers this multiple of the face's extent (MediaPipe's ROI scale).
pub(crate) const ROI_SCALE: f32 = 1.5;
/// The eye crop covers this multiple of the eye's width.
pub(crate) const EYE_ROI_SCALE: f32 = 2.3;

/// Landmark indices used for geometry (MediaPipe face mesh topology).
pub mod idx {
    /// Right eye (image-left) outer and inner corner; left eye inner and outer corner.
    pub const RIGHT_EYE_OUTER: usize = 33;
    pub const RIGHT_EYE_INNER: usize = 133;
    pub const LEFT_EYE_INNER: usize = 362;
    pub const LEFT_EYE_OUTER: usize = 263;
    pub(crate) const FOREHEAD: usize = 10;
    pub(crate) const CHIN: usize = 152;
    pub const NOSE_TIP: usize = 1;
    pub(crate) const UPPER_LIP: usize = 13;
    pub(crate) const LOWER_LIP: usize = 14;
    pub(crate) const MOUTH_RIGHT: usize = 78;
    pub(crate) const MOUTH_LEFT: usize = 308;
    /// EAR points (p1..p6) per eye: corners and two vertical pairs.
    pub(crate) const RIGHT_EAR: [usize; 6] = [33, 160, 158, 133, 153, 144];
    pub(crate) const LEFT_EAR: [usize; 6] = [362, 385, 387, 263, 373, 380];
}

/// A rotated square region of the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub cx: f32,
    pub cy: f32,
    pub side: f32,
    pub angle: f32,
}

impl Roi {
    /// From a detection: 1.5x the box's longer side, rotated so the eyes are level.
    pub fn from_detection(d: &Detection) -> Roi {
        let (r, l) = (d.keypoints[0], d.keypoints[1]);
        Roi {
            cx: d.cx,
            cy: d.cy,
            side: d.w.max(d.h) * ROI_SCALE,
            angle: (l.1 - r.1).atan2(l.0 - r.0),
        }
    }

    /// From the previous frame's mesh (tracking without the detector).
    pub(crate) fn from_landmarks(points: &[[f32; 3]]) -> Roi {
        let (r, l) = (points[idx::RIGHT_EYE_OUTER], points[idx::LEFT_EYE_OUTER]);
        let angle = (l[1] - r[1]).atan2(l[0] - r[0]);
        let (sin, cos) = angle.sin_cos();
        // Extent in the eye-aligned frame.
        let (mut min_u, mut max_u, mut min_v, mut max_v) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in points {
            let u = p[0] * cos + p[1] * sin;
            let v = -p[0] * sin + p[1] * cos;
            min_u = min_u.min(u);
            max_u = max_u.max(u);
            min_v = min_v.min(v);
            max_v = max_v.max(v);
        }
        let (cu, cv) = ((min_u + max_u) / 2.0, (min_v + max_v) / 2.0);
        Roi {
            cx: cu * cos - cv * sin,
            cy: cu * sin + cv * cos,
            side: (max_u - min_u).max(max_v - min_v) * ROI_SCALE,
            angle,
        }
    }
}

/// Mesh output mapped back to image pixels; z in the same pixel scale (smaller = closer).
#[derive(Debug, Clone)]
pub struct MeshResult {
    pub points: Vec<[f32; 3]>,
    /// Face presence probability from the model's own head.
    pub presence: f32,
}

pub fn run_mesh(
    session: &mut Session,
    frame: &I420,
    roi: &Roi,
    scratch: &mut Vec<f32>,
) -> Result<MeshResult, ModelError> {
    let to_image = Affine::crop(roi.cx, roi.cy, roi.side, roi.angle, MESH_SIZE);
    warp_to_tensor(
        frame,
        &to_image,
        MESH_SIZE,
        Layout::Nchw,
        false,
        |v| v / 255.0,
        scratch,
    );
    let out = run(
        session,
        MESH_INPUT,
        [1, 3, MESH_SIZE as i64, MESH_SIZE as i64],
        scratch,
        &MESH_OUTPUTS,
    )?;
    let raw = &out[0];
    if raw.len() < 468 * 3 {
        return Err(ModelError::Run(format!(
            "mesh output has {} values",
            raw.len()
        )));
    }
    let scale = to_image.scale();
    let points = raw
        .chunks_exact(3)
        .take(468)
        .map(|p| {
            let (x, y) = to_image.apply(p[0], p[1]);
            [x, y, p[2] * scale]
        })
        .collect();
    let logit = out[1].first().copied().unwrap_or(-10.0);
    Ok(MeshResult {
        points,
        presence: 1.0 / (1.0 + (-logit.clamp(-80.0, 80.0)).exp()),
    })
}

/// One eye from the eye-contour model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EyeReading {
    /// Height / width of the lid contour (an eye aspect ratio).
    pub openness: f32,
    /// Iris centre in image pixels.
    pub iris: (f32, f32),
}

/// Runs the eye-contour model on one eye. The left eye is mirrored before the model, as
/// MediaPipe does, since the model expects one side.
pub fn read_eye(
    session: &mut Session,
    frame: &I420,
    outer: [f32; 3],
    inner: [f32; 3],
    mirror: bool,
    scratch: &mut Vec<f32>,
) -> Result<EyeReading, ModelError> {
    let (cx, cy) = ((outer[0] + inner[0]) / 2.0, (outer[1] + inner[1]) / 2.0);
    let width = ((inner[0] - outer[0]).powi(2) + (inner[1] - outer[1]).powi(2)).sqrt();
    let (dx, dy) = if mirror {
        (outer[0] - inner[0], outer[1] - inner[1])
    } else {
        (inner[0] - outer[0], inner[1] - outer[1])
    };
    let angle = dy.atan2(dx);
    let to_image = Affine::crop(cx, cy, width * EYE_ROI_SCALE, angle, IRIS_SIZE);
    warp_to_tensor(
        frame,
        &to_image,
        IRIS_SIZE,
        Layout::Nchw,
        mirror,
        |v| v / 255.0,
        scratch,
    );
    let out = run(
        session,
        IRIS_INPUT,
        [1, 3, IRIS_SIZE as i64, IRIS_SIZE as i64],
        scratch,
        &IRIS_OUTPUTS,
    )?;
    // The first 16 of the 71 points are the lid contour; measure it in the crop's (eye-aligned) frame.
    let lid: Vec<(f32, f32)> = out[0]
        .chunks_exact(3)
        .take(16)
        .map(|p| (p[0], p[1]))
        .collect();
    if lid.len() < 16 {
        return Err(ModelError::Run("eye contour output too short".into()));
    }
    let (min_x, max_x) = lid
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (min_y, max_y) = lid
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let openness = if max_x > min_x {
        (max_y - min_y) / (max_x - min_x)
    } else {
        0.0
    };
    let (ix, iy) = (
        out[1].first().copied().unwrap_or(0.0),
        out[1].get(1).copied().unwrap_or(0.0),
    );
    // A mirrored crop's column u came from crop position size - u.
    let ix = if mirror { IRIS_SIZE as f32 - ix } else { ix };
    Ok(EyeReading {
        openness,
        iris: to_image.apply(ix, iy),
    })
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Eye aspect ratio from six mesh points (Soukupova & Cech).
pub(crate) fn mesh_ear(points: &[[f32; 3]], eye: [usize; 6]) -> f32 {
    let p = |i: usize| points[eye[i]];
    let width = dist(p(0), p(3));
    if width <= 0.0 {
        return 0.0;
    }
    (dist(p(1), p(5)) + dist(p(2), p(4))) / (2.0 * width)
}

/// Lip gap over mouth width.
pub(crate) fn mouth_open_ratio(points: &[[f32; 3]]) -> f32 {
    let width = dist(points[idx::MOUTH_RIGHT], points[idx::MOUTH_LEFT]);
    if width <= 0.0 {
        return 0.0;
    }
    dist(points[idx::UPPER_LIP], points[idx::LOWER_LIP]) / width
}

/// Head pose in degrees from the mesh's own 3D axes.
///
/// Conventions (image x right, y down, z away from the camera): yaw > 0 when the face turns
/// towards image-right (the subject's own left on a non-mirrored camera), pitch > 0 when the chin
/// goes up, roll > 0 when the head tilts clockwise in the image. A frontal face reads about
/// (0, +10, 0) with this mesh; callers subtract the session's frontal baseline.
pub(crate) fn head_pose(points: &[[f32; 3]]) -> (f32, f32, f32) {
    let sub = |a: [f32; 3], b: [f32; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let norm = |v: [f32; 3]| {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-6);
        [v[0] / n, v[1] / n, v[2] / n]
    };
    let cross = |a: [f32; 3], b: [f32; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let x = norm(sub(
        points[idx::LEFT_EYE_OUTER],
        points[idx::RIGHT_EYE_OUTER],
    ));
    let down = sub(points[idx::CHIN], points[idx::FOREHEAD]);
    let z = norm(cross(x, down));
    let yaw = (-z[0]).atan2(z[2]).to_degrees();
    let pitch = z[1].atan2((z[0] * z[0] + z[2] * z[2]).sqrt()).to_degrees();
    let roll = x[1].atan2(x[0]).to_degrees();
    (yaw, pitch, roll)
}

/// Head pose of `current` relative to `baseline` (the session's frontal mesh), in degrees, with
/// the same conventions as [`head_pose`].
///
/// The baseline's 3D points are fitted to the current 2D landmarks under weak perspective: a
/// least-squares 2x3 map, orthonormalised into a rotation. This leans on the mesh's 2D output,
/// which is accurate, rather than on its inferred depth, which is compressed when the head turns
/// (the axis-based estimate reads about 0.7x of a 25 degree turn on rendered clips).
/// The rotation is decomposed as `Rz(roll) * Rx(pitch) * Ry(yaw)`.
pub(crate) fn relative_pose(
    baseline: &[[f32; 3]],
    current: &[[f32; 3]],
) -> Option<(f32, f32, f32)> {
    let n = baseline.len().min(current.len());
    if n < 6 {
        return None;
    }
    let mean = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>() / n as f64;
    let bm = [0, 1, 2].map(|k| mean(&|i| baseline[i][k] as f64));
    let cm = [0, 1].map(|k| mean(&|i| current[i][k] as f64));
    // Normal equations: M (2x3) = (x^T X) (X^T X)^-1 over centred points.
    let mut xtx = [[0f64; 3]; 3];
    let mut ytx = [[0f64; 3]; 2];
    for i in 0..n {
        let b = [0, 1, 2].map(|k| baseline[i][k] as f64 - bm[k]);
        let c = [0, 1].map(|k| current[i][k] as f64 - cm[k]);
        for r in 0..3 {
            for col in 0..3 {
                xtx[r][col] += b[r] * b[col];
            }
        }
        for r in 0..2 {
            for col in 0..3 {
                ytx[r][col] += c[r] * b[col];
            }
        }
    }
    let inv = invert3(xtx)?;
    let m =
        [0, 1].map(|r| [0, 1, 2].map(|col| (0..3).map(|k| ytx[r][k] * inv[k][col]).sum::<f64>()));
    let norm = |v: [f64; 3]| {
        let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        (l > 1e-9).then(|| v.map(|x| x / l))
    };
    let r1 = norm(m[0])?;
    let d = r1[0] * m[1][0] + r1[1] * m[1][1] + r1[2] * m[1][2];
    let r2 = norm([
        m[1][0] - d * r1[0],
        m[1][1] - d * r1[1],
        m[1][2] - d * r1[2],
    ])?;
    let r3 = [
        r1[1] * r2[2] - r1[2] * r2[1],
        r1[2] * r2[0] - r1[0] * r2[2],
        r1[0] * r2[1] - r1[1] * r2[0],
    ];
    let yaw = r3[0].atan2(r3[2]).to_degrees();
    let pitch = (-r3[1]).clamp(-1.0, 1.0).asin().to_degrees();
    let roll = (-r1[1]).atan2(r2[1]).to_degrees();
    Some((yaw as f32, pitch as f32, roll as f32))
}

fn invert3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-12 {
        return None;
    }
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    Some([
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy mesh: only the indices the geometry uses, on a face facing the camera.
    fn toy_mesh() -> Vec<[f32; 3]> {
        let mut p = vec![[0.0f32; 3]; 468];
        p[idx::RIGHT_EYE_OUTER] = [-30.0, 0.0, 0.0];
        p[idx::LEFT_EYE_OUTER] = [30.0, 0.0, 0.0];
        p[idx::FOREHEAD] = [0.0, -40.0, 0.0];
        p[idx::CHIN] = [0.0, 60.0, 0.0];
        p
    }

    fn rotate(points: &[[f32; 3]], yaw: f32, pitch: f32, roll: f32) -> Vec<[f32; 3]> {
        // Same conventions as head_pose: yaw about y (towards +x), pitch about x (chin up), roll about z.
        let (sy, cy) = yaw.to_radians().sin_cos();
        let (sp, cp) = pitch.to_radians().sin_cos();
        let (sr, cr) = roll.to_radians().sin_cos();
        points
            .iter()
            .map(|&[x, y, z]| {
                // yaw: the face normal (0,0,-1) turns towards +x.
                let (x, z) = (x * cy - z * sy, x * sy + z * cy);
                // pitch: the normal turns towards -y (up).
                let (y, z) = (y * cp + z * sp, -y * sp + z * cp);
                // roll: clockwise in the image (x towards +y).
                let (x, y) = (x * cr - y * sr, x * sr + y * cr);
                [x, y, z]
            })
            .collect()
    }

    #[test]
    fn pose_of_a_frontal_face_is_zero_and_follows_rotations() {
        let m = toy_mesh();
        let (y, p, r) = head_pose(&m);
        assert!(
            y.abs() < 1e-3 && p.abs() < 1e-3 && r.abs() < 1e-3,
            "{y} {p} {r}"
        );
        for (yaw, pitch, roll) in [
            (20.0, 0.0, 0.0),
            (-25.0, 0.0, 0.0),
            (0.0, 15.0, 0.0),
            (0.0, -15.0, 0.0),
            (0.0, 0.0, 20.0),
        ] {
            let (y, p, r) = head_pose(&rotate(&m, yaw, pitch, roll));
            assert!(
                (y - yaw).abs() < 0.5 && (p - pitch).abs() < 0.5 && (r - roll).abs() < 0.5,
                "{yaw},{pitch},{roll} -> {y},{p},{r}"
            );
        }
    }

    /// Applies R = Rz(roll) Rx(pitch) Ry(yaw) (the renderer's convention) to points.
    fn pose_points(points: &[[f32; 3]], yaw: f32, pitch: f32, roll: f32) -> Vec<[f32; 3]> {
        let (sy, cy) = yaw.to_radians().sin_cos();
        let (sp, cp) = pitch.to_radians().sin_cos();
        let (sr, cr) = roll.to_radians().sin_cos();
        points
            .iter()
            .map(|&[x, y, z]| {
                let (x, z) = (cy * x - sy * z, sy * x + cy * z);
                let (y, z) = (cp * y + sp * z, -sp * y + cp * z);
                let (x, y) = (cr * x - sr * y, sr * x + cr * y);
                [x * 1.3 + 40.0, y * 1.3 - 7.0, z]
            })
            .collect()
    }

    #[test]
    fn relative_pose_recovers_a_rotation_of_the_baseline() {
        // A bumpy 3D point cloud standing in for a face mesh.
        let base: Vec<[f32; 3]> = (0..200)
            .map(|i| {
                let (a, b) = (i as f32 * 0.37, i as f32 * 0.11);
                [
                    60.0 * a.sin(),
                    80.0 * b.cos(),
                    25.0 * (a * 1.7).cos() - 10.0,
                ]
            })
            .collect();
        for (yaw, pitch, roll) in [
            (0.0, 0.0, 0.0),
            (25.0, 0.0, 0.0),
            (-20.0, 10.0, 0.0),
            (0.0, -15.0, 8.0),
            (12.0, 12.0, -12.0),
        ] {
            let (y, p, r) = relative_pose(&base, &pose_points(&base, yaw, pitch, roll)).unwrap();
            assert!(
                (y - yaw).abs() < 0.1 && (p - pitch).abs() < 0.1 && (r - roll).abs() < 0.1,
                "{yaw},{pitch},{roll} -> {y},{p},{r}"
            );
        }
    }

    #[test]
    fn roi_from_landmarks_is_level_for_a_level_face() {
        let m = toy_mesh();
        let roi = Roi::from_landmarks(&m);
        assert!(roi.angle.abs() < 1e-6);
        assert!((roi.side - 100.0 * ROI_SCALE).abs() < 1e-3);
        assert!((roi.cy - 10.0).abs() < 1e-3);
    }

    #[test]
    fn ear_and_mouth_ratios() {
        let mut p = vec![[0.0f32; 3]; 468];
        for (i, v) in idx::RIGHT_EAR.iter().zip([
            [0.0, 0.0],
            [10.0, -3.0],
            [20.0, -3.0],
            [30.0, 0.0],
            [20.0, 3.0],
            [10.0, 3.0],
        ]) {
            p[*i] = [v[0], v[1], 0.0];
        }
        assert!((mesh_ear(&p, idx::RIGHT_EAR) - 0.2).abs() < 1e-6);
        p[idx::MOUTH_RIGHT] = [0.0, 0.0, 0.0];
        p[idx::MOUTH_LEFT] = [50.0, 0.0, 0.0];
        p[idx::UPPER_LIP] = [25.0, -5.0, 0.0];
        p[idx::LOWER_LIP] = [25.0, 5.0, 0.0];
        assert!((mouth_open_ratio(&p) - 0.2).abs() < 1e-6);
    }
}
