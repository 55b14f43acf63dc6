//! Streaming face analysis: detection, tracking, the 468-point mesh, head pose, eyes and mouth.
//!
//! `FaceTracker` is sans-IO over frames: feed it a decoded frame and its capture time, get a
//! `FaceObservation`. It detects on the first frame, after losing the face, and again after
//! `REDETECT_EVERY` frames and `REDETECT_MIN_INTERVAL` of capture time (to count faces and catch a
//! second person); in between it tracks by taking the crop from the previous frame's mesh, which
//! is cheaper and steadier.

pub mod detector;
pub mod embed;
pub mod guidance;
pub mod mesh;
pub mod models;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use self::detector::Detection;
use self::mesh::{idx, Roi};
pub use self::models::{FaceModels, ModelError};
use super::quality::{backlight_ratio, QualityAnalyzer, QualityMetrics, Region, I420};

/// While tracking, the detector reruns once this many frames have been tracked since it last
/// ran...
pub const REDETECT_EVERY: u32 = 5;
/// ...and at least this long after it last ran: a frame count alone would detect 2.5 times a
/// second in a step judged at 15 fps, where tracking needs it no more than at the 8 fps of the
/// document step (every 6th frame, 750 ms), and a second face's hint holds for a second anyway
/// (`guidance::HOLD_ON`). At 15 fps this is every 9th or 10th frame (arrival jitter) instead of
/// every 6th.
pub const REDETECT_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(600);
/// Below this mesh presence the face counts as lost.
pub(crate) const MIN_PRESENCE: f32 = 0.5;

/// One tracked face in one frame.
#[derive(Debug, Clone, Serialize)]
pub struct TrackedFace {
    /// Face box in pixels (x, y, w, h), from the mesh.
    pub bbox: [f32; 4],
    pub presence: f32,
    #[serde(skip)]
    pub landmarks: Vec<[f32; 3]>,
    /// Head pose in degrees relative to the session's frontal baseline (see `mesh::relative_pose`);
    /// before a baseline exists, the mesh's absolute axes (`mesh::head_pose`).
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
    /// Whether the pose is relative to a frontal baseline.
    pub pose_relative: bool,
    /// Eye openness per eye (the subject's right eye is image-left). From the eye-contour
    /// model when it is installed, else from the mesh.
    pub ear_right: f32,
    pub ear_left: f32,
    /// Iris centres (right eye, left eye) in pixels, from the eye-contour model.
    #[serde(skip)]
    pub irises: Option<[(f32, f32); 2]>,
    pub mouth_open: f32,
    pub inter_eye_px: f32,
    /// Capture quality over the face box.
    #[serde(skip)]
    pub quality: QualityMetrics,
    /// Surround / face luma ratio.
    pub backlight: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaceObservation {
    #[serde(skip)]
    pub captured: Instant,
    pub frame_width: usize,
    pub frame_height: usize,
    /// Faces found by the most recent detector run.
    pub face_count: usize,
    /// Whether the detector ran on this frame (else the face was tracked).
    pub detected: bool,
    pub face: Option<TrackedFace>,
}

pub struct FaceTracker {
    models: Arc<FaceModels>,
    previous: Option<Vec<[f32; 3]>>,
    frames_since_detection: u32,
    /// Capture time of the last frame the detector ran on.
    detected_at: Option<Instant>,
    face_count: usize,
    scratch: Vec<f32>,
    quality: QualityAnalyzer,
    /// Spreads sessions over the model pools.
    hint: usize,
    /// The session's frontal mesh, taken from the first near-frontal face, and its absolute pose.
    baseline: Option<PoseBaseline>,
    /// The face box's capture quality and backlight as last measured, for frames on which
    /// the caller skips that measurement.
    last_quality: Option<(QualityMetrics, f64)>,
}

/// The frontal reference for relative pose: its mesh and its absolute (axis) pose.
type PoseBaseline = (Vec<[f32; 3]>, (f32, f32, f32));

/// A face this close to frontal (absolute axes, degrees) can become the pose baseline.
pub(crate) const BASELINE_MAX_ANGLE: f32 = 12.0;

impl FaceTracker {
    pub fn new(models: Arc<FaceModels>, hint: usize) -> Self {
        FaceTracker {
            models,
            previous: None,
            frames_since_detection: 0,
            detected_at: None,
            face_count: 0,
            scratch: Vec::with_capacity(3 * 192 * 192),
            quality: QualityAnalyzer::default(),
            hint,
            baseline: None,
            last_quality: None,
        }
    }

    /// Forget the tracked face (e.g. after a resolution change).
    pub fn reset(&mut self) {
        self.previous = None;
        self.last_quality = None;
    }

    /// Observes the frame with every model installed (the eye-contour model included).
    pub fn observe(
        &mut self,
        frame: &I420,
        captured: Instant,
    ) -> Result<FaceObservation, ModelError> {
        self.observe_with(frame, captured, true)
    }

    /// Observes the frame; the eye-contour model runs only when `eyes` (and it is installed),
    /// else eye openness comes from the mesh, which is too coarse to judge a blink (its open and
    /// closed values barely differ) but costs nothing more. `analysis::effort` decides.
    pub fn observe_with(
        &mut self,
        frame: &I420,
        captured: Instant,
        eyes: bool,
    ) -> Result<FaceObservation, ModelError> {
        self.observe_frame(frame, captured, eyes, true)
    }

    /// [`FaceTracker::observe_with`], measuring the face box's capture quality and backlight only
    /// when `quality`; otherwise the last measured values are reported again (a face seen for the
    /// first time is always measured). The call core measures them at the guidance rate while a
    /// step is judged at the full rate: hints hold for a second, so 5 measurements a second are
    /// enough, and the mesh runs on every frame regardless.
    pub(crate) fn observe_frame(
        &mut self,
        frame: &I420,
        captured: Instant,
        eyes: bool,
        quality: bool,
    ) -> Result<FaceObservation, ModelError> {
        let mut observation = FaceObservation {
            captured,
            frame_width: frame.width,
            frame_height: frame.height,
            face_count: self.face_count,
            detected: false,
            face: None,
        };
        let must_detect = self.previous.is_none()
            || (self.frames_since_detection >= REDETECT_EVERY
                && self.detected_at.is_none_or(|t| {
                    captured.saturating_duration_since(t) >= REDETECT_MIN_INTERVAL
                }));
        let roi = if must_detect {
            let detections = {
                let mut session = self.models.detector.acquire(self.hint);
                detector::detect(&mut session, frame, &mut self.scratch)?
            };
            self.frames_since_detection = 0;
            self.detected_at = Some(captured);
            self.face_count = detections.len();
            observation.face_count = detections.len();
            observation.detected = true;
            match (self.previous.as_ref(), best_detection(&detections)) {
                // Keep tracking the same face when it is still there.
                (Some(prev), Some(_)) if detections.iter().any(|d| contains(d, centroid(prev))) => {
                    Roi::from_landmarks(prev)
                }
                // Another face (or the first): measured afresh.
                (_, Some(d)) => {
                    self.last_quality = None;
                    Roi::from_detection(d)
                }
                (_, None) => {
                    self.previous = None;
                    self.last_quality = None;
                    return Ok(observation);
                }
            }
        } else {
            self.frames_since_detection += 1;
            Roi::from_landmarks(
                self.previous
                    .as_ref()
                    .expect("tracking needs a previous mesh"),
            )
        };
        let mesh = {
            let mut session = self.models.mesh.acquire(self.hint);
            mesh::run_mesh(&mut session, frame, &roi, &mut self.scratch)?
        };
        if mesh.presence < MIN_PRESENCE {
            self.previous = None;
            self.last_quality = None;
            if !observation.detected {
                // Lost while tracking: look again on the next frame.
                self.face_count = 0;
                observation.face_count = 0;
            }
            return Ok(observation);
        }
        let points = mesh.points;
        let absolute = mesh::head_pose(&points);
        if self.baseline.is_none()
            && absolute.0.abs() < BASELINE_MAX_ANGLE
            && absolute.2.abs() < BASELINE_MAX_ANGLE
        {
            self.baseline = Some((points.clone(), absolute));
        }
        // Yaw and roll from fitting the frontal mesh to this frame's 2D landmarks; pitch from the
        // mesh's own forehead-chin axis against the baseline's. Measured on rendered clips, the
        // fit reads nods at about 0.6x of the truth while the axis tracks them within 5 degrees,
        // and the axis reads turns at about 0.7x while the fit is within 2.5 degrees.
        let relative = self.baseline.as_ref().and_then(|(b, base_abs)| {
            mesh::relative_pose(b, &points)
                .map(|(yaw, _, roll)| (yaw, absolute.1 - base_abs.1, roll))
        });
        let (yaw, pitch, roll) = relative.unwrap_or(absolute);
        let (ear_right, ear_left, irises) = match self.models.iris.as_ref().filter(|_| eyes) {
            Some(pool) => {
                let mut session = pool.acquire(self.hint);
                let right = mesh::read_eye(
                    &mut session,
                    frame,
                    points[idx::RIGHT_EYE_OUTER],
                    points[idx::RIGHT_EYE_INNER],
                    false,
                    &mut self.scratch,
                )?;
                let left = mesh::read_eye(
                    &mut session,
                    frame,
                    points[idx::LEFT_EYE_OUTER],
                    points[idx::LEFT_EYE_INNER],
                    true,
                    &mut self.scratch,
                )?;
                (right.openness, left.openness, Some([right.iris, left.iris]))
            }
            None => (
                mesh::mesh_ear(&points, idx::RIGHT_EAR),
                mesh::mesh_ear(&points, idx::LEFT_EAR),
                None,
            ),
        };
        let bbox = bounding_box(&points);
        let region = Region::new(
            bbox[0].max(0.0) as usize,
            bbox[1].max(0.0) as usize,
            bbox[2].max(1.0) as usize,
            bbox[3].max(1.0) as usize,
        )
        .clip(frame.width, frame.height);
        let (quality, backlight) = match self.last_quality.filter(|_| !quality) {
            Some(last) => last,
            None => {
                let mut measured = self.quality.analyze(frame, Some(region));
                measured.blur = self.quality.blur_index(frame, region);
                let backlight = if region.is_empty() {
                    1.0
                } else {
                    backlight_ratio(frame, region)
                };
                self.last_quality = Some((measured, backlight));
                (measured, backlight)
            }
        };
        let eye_centre = |a: usize, b: usize| {
            (
                (points[a][0] + points[b][0]) / 2.0,
                (points[a][1] + points[b][1]) / 2.0,
            )
        };
        let (r, l) = (
            eye_centre(idx::RIGHT_EYE_OUTER, idx::RIGHT_EYE_INNER),
            eye_centre(idx::LEFT_EYE_INNER, idx::LEFT_EYE_OUTER),
        );
        observation.face = Some(TrackedFace {
            bbox,
            presence: mesh.presence,
            yaw,
            pitch,
            roll,
            pose_relative: relative.is_some(),
            ear_right,
            ear_left,
            mouth_open: mesh::mouth_open_ratio(&points),
            irises,
            inter_eye_px: ((l.0 - r.0).powi(2) + (l.1 - r.1).powi(2)).sqrt(),
            quality,
            backlight,
            landmarks: points.clone(),
        });
        if observation.face_count == 0 {
            observation.face_count = 1;
        }
        self.previous = Some(points);
        Ok(observation)
    }
}

fn best_detection(d: &[Detection]) -> Option<&Detection> {
    d.iter().max_by(|a, b| a.score.total_cmp(&b.score))
}

fn centroid(points: &[[f32; 3]]) -> (f32, f32) {
    let n = points.len().max(1) as f32;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
    (sx / n, sy / n)
}

fn contains(d: &Detection, (x, y): (f32, f32)) -> bool {
    (x - d.cx).abs() <= d.w / 2.0 && (y - d.cy).abs() <= d.h / 2.0
}

fn bounding_box(points: &[[f32; 3]]) -> [f32; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in points {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    [x0, y0, x1 - x0, y1 - y0]
}
