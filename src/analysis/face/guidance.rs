//! Guidance from the face: where it is, how big, how many, whether it is covered or backlit.
//! Each condition holds for `HOLD_ON` before its hint goes out and clears after `HOLD_OFF`.

use std::time::{Duration, Instant};

use super::FaceObservation;
use crate::analysis::hold::{HealthChange, Held};
use crate::reasons::ReasonCode;

pub(crate) const HOLD_ON: Duration = Duration::from_millis(1000);
pub(crate) const HOLD_OFF: Duration = Duration::from_millis(1000);
/// Face box width as a share of the frame width: below is too far, above too close. The OFF
/// values sit inside the ON values (hysteresis).
pub(crate) const TOO_FAR_ON: f32 = 0.22;
pub(crate) const TOO_FAR_OFF: f32 = 0.25;
pub(crate) const TOO_CLOSE_ON: f32 = 0.75;
pub(crate) const TOO_CLOSE_OFF: f32 = 0.70;
/// Below this distance between the eyes (pixels, in the decoded frame) the mesh is too coarse to
/// judge a step: eye openness, lip gap and the eye distance itself jump by a third between frames
/// (measured 24-43 px on a face 30 px between the eyes). Such a face is too far whatever its share
/// of the frame, no step is judged on it, and the running step pauses until the person comes
/// closer. At the smallest accepted camera (480x360) a face at the too-far share is ~47 px.
pub(crate) const MIN_INTER_EYE_PX: f32 = 40.0;
/// ... and it counts as big enough again above this (hysteresis).
pub(crate) const MIN_INTER_EYE_OFF_PX: f32 = 44.0;
/// A face box within this many pixels of the frame's edge is cut off: its outline, and so the
/// geometry the spoof cues read, is incomplete.
pub(crate) const EDGE_MARGIN_PX: f32 = 2.0;
/// Face centre offset from the frame centre, as a share of the frame size.
pub(crate) const OFF_CENTRE_ON: f32 = 0.25;
pub(crate) const OFF_CENTRE_OFF: f32 = 0.20;
/// Surround / face luma ratio.
pub(crate) const BACKLIT_ON: f64 = 1.8;
pub(crate) const BACKLIT_OFF: f64 = 1.5;

#[derive(Debug)]
pub struct FaceGuidance {
    not_found: Held,
    occluded: Held,
    multiple: Held,
    too_far: Held,
    too_close: Held,
    off_centre: Held,
    backlit: Held,
    /// Too small to judge (a part of too far that also pauses the steps).
    too_small: Held,
}

impl Default for FaceGuidance {
    fn default() -> Self {
        let h = |c| Held::new(HOLD_OFF, c);
        FaceGuidance {
            not_found: h(ReasonCode::FaceNotFound),
            occluded: h(ReasonCode::FaceOccluded),
            multiple: h(ReasonCode::MultipleFaces),
            too_far: h(ReasonCode::FaceTooFar),
            too_close: h(ReasonCode::FaceTooClose),
            off_centre: h(ReasonCode::FaceNotCentered),
            backlit: h(ReasonCode::LightingBacklit),
            too_small: h(ReasonCode::FaceTooFar),
        }
    }
}

impl FaceGuidance {
    pub fn update(&mut self, o: &FaceObservation) -> Vec<HealthChange> {
        let at: Instant = o.captured;
        let mut out = Vec::new();
        let found = o.face.is_some();
        // A face the detector sees but the mesh rejects is covered, not absent.
        self.not_found
            .update(at, !found && o.face_count == 0, HOLD_ON, &mut out);
        self.occluded
            .update(at, !found && o.face_count > 0, HOLD_ON, &mut out);
        self.multiple
            .update(at, o.face_count >= 2, HOLD_ON, &mut out);
        let (w, h) = (o.frame_width.max(1) as f32, o.frame_height.max(1) as f32);
        let face = o.face.as_ref();
        let share = face.map(|f| f.bbox[2] / w);
        let offset = face.map(|f| {
            let (cx, cy) = (f.bbox[0] + f.bbox[2] / 2.0, f.bbox[1] + f.bbox[3] / 2.0);
            ((cx - w / 2.0).abs() / w).max((cy - h / 2.0).abs() / h)
        });
        let band = |held: &Held,
                    v: Option<f32>,
                    on: &dyn Fn(f32) -> bool,
                    off: &dyn Fn(f32) -> bool| match v {
            Some(v) if held.active() => !off(v),
            Some(v) => on(v),
            None => false,
        };
        let eyes = face.map(|f| f.inter_eye_px);
        let small = band(&self.too_small, eyes, &|e| e < MIN_INTER_EYE_PX, &|e| {
            e >= MIN_INTER_EYE_OFF_PX
        });
        let far = small
            || band(&self.too_far, share, &|s| s < TOO_FAR_ON, &|s| {
                s >= TOO_FAR_OFF
            });
        let close = band(&self.too_close, share, &|s| s > TOO_CLOSE_ON, &|s| {
            s <= TOO_CLOSE_OFF
        });
        let off = band(&self.off_centre, offset, &|d| d > OFF_CENTRE_ON, &|d| {
            d <= OFF_CENTRE_OFF
        });
        let backlight = face.map(|f| f.backlight as f32);
        let backlit = band(&self.backlit, backlight, &|b| b as f64 > BACKLIT_ON, &|b| {
            (b as f64) <= BACKLIT_OFF
        });
        // Not reported on its own: too far says it.
        self.too_small.update(at, small, HOLD_ON, &mut Vec::new());
        self.too_far.update(at, far, HOLD_ON, &mut out);
        self.too_close.update(at, close, HOLD_ON, &mut out);
        self.off_centre.update(at, off, HOLD_ON, &mut out);
        self.backlit.update(at, backlit, HOLD_ON, &mut out);
        out
    }

    /// The face is too small to judge steps on (held like the hints): the steps pause.
    pub fn too_small(&self) -> bool {
        self.too_small.active()
    }

    /// A framing fault that keeps steps from being judged: too close (the face leaves the frame
    /// and perspective distorts it) or too small to measure.
    pub(crate) fn blocking(&self) -> Option<ReasonCode> {
        if self.too_close.active() {
            Some(ReasonCode::FaceTooClose)
        } else if self.too_small.active() {
            Some(ReasonCode::FaceTooFar)
        } else {
            None
        }
    }

    pub fn active(&self) -> Vec<ReasonCode> {
        [
            &self.not_found,
            &self.occluded,
            &self.multiple,
            &self.too_far,
            &self.too_close,
            &self.off_centre,
            &self.backlit,
        ]
        .iter()
        .filter(|h| h.active())
        .map(|h| h.code())
        .collect()
    }
}

/// Whether this frame's face geometry is distorted by its framing, so the spoof cues (which read
/// the face's proportions and parallax) must not use it: too close (past the too-close OFF share,
/// where perspective and the frame's edge warp the outline), too small to measure, or touching
/// the frame's edge. Instantaneous: judged per frame, not held.
pub(crate) fn framing_distorts(o: &FaceObservation) -> bool {
    let Some(f) = &o.face else { return true };
    let (w, h) = (o.frame_width.max(1) as f32, o.frame_height.max(1) as f32);
    let [x, y, bw, bh] = f.bbox;
    let cut_off = x < EDGE_MARGIN_PX
        || y < EDGE_MARGIN_PX
        || x + bw > w - EDGE_MARGIN_PX
        || y + bh > h - EDGE_MARGIN_PX;
    bw / w > TOO_CLOSE_OFF || f.inter_eye_px < MIN_INTER_EYE_PX || cut_off
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::face::TrackedFace;

    fn obs(at: Instant, face: Option<[f32; 4]>, count: usize) -> FaceObservation {
        FaceObservation {
            captured: at,
            frame_width: 640,
            frame_height: 480,
            face_count: count,
            detected: true,
            face: face.map(|bbox| TrackedFace {
                bbox,
                presence: 0.99,
                landmarks: Vec::new(),
                yaw: 0.0,
                pitch: 0.0,
                roll: 0.0,
                pose_relative: false,
                ear_right: 0.3,
                ear_left: 0.3,
                irises: None,
                mouth_open: 0.0,
                inter_eye_px: 60.0,
                quality: Default::default(),
                backlight: 1.0,
            }),
        }
    }

    fn run(frames: impl Fn(u32) -> FaceObservation) -> Vec<(u32, HealthChange)> {
        let mut g = FaceGuidance::default();
        (0..45)
            .flat_map(|i| g.update(&frames(i)).into_iter().map(move |c| (i, c)))
            .collect()
    }

    #[test]
    fn a_face_too_small_to_measure_is_too_far_and_pauses_steps() {
        let t0 = Instant::now();
        let mut g = FaceGuidance::default();
        let mut raised = Vec::new();
        for i in 0..30u32 {
            // A box of a good share, but only 30 px between the eyes (a coarse, jumpy mesh).
            let mut o = obs(
                t0 + Duration::from_millis(66 * i as u64),
                Some([220.0, 140.0, 200.0, 220.0]),
                1,
            );
            o.face.as_mut().unwrap().inter_eye_px = 30.0;
            assert!(framing_distorts(&o));
            raised.extend(g.update(&o));
        }
        assert_eq!(raised, vec![HealthChange::Raised(ReasonCode::FaceTooFar)]);
        assert_eq!(g.blocking(), Some(ReasonCode::FaceTooFar));
        assert!(g.too_small());
    }

    #[test]
    fn too_close_blocks_and_distorts_framing() {
        let t0 = Instant::now();
        let mut g = FaceGuidance::default();
        for i in 0..30u32 {
            let o = obs(
                t0 + Duration::from_millis(66 * i as u64),
                Some([60.0, 0.0, 520.0, 480.0]),
                1,
            );
            assert!(framing_distorts(&o));
            g.update(&o);
        }
        assert_eq!(g.blocking(), Some(ReasonCode::FaceTooClose));
        let fine = obs(t0, Some([220.0, 140.0, 200.0, 220.0]), 1);
        assert!(!framing_distorts(&fine));
    }

    #[test]
    fn a_centred_face_of_good_size_raises_nothing() {
        let t0 = Instant::now();
        let got = run(|i| {
            obs(
                t0 + Duration::from_millis(66 * i as u64),
                Some([220.0, 140.0, 200.0, 220.0]),
                1,
            )
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn each_condition_raises_its_own_code_after_the_hold() {
        let t0 = Instant::now();
        let at = move |i: u32| t0 + Duration::from_millis(66 * i as u64);
        type Frames = Box<dyn Fn(u32) -> FaceObservation>;
        let cases: Vec<(Frames, ReasonCode)> = vec![
            (
                Box::new(move |i| obs(at(i), None, 0)),
                ReasonCode::FaceNotFound,
            ),
            (
                Box::new(move |i| obs(at(i), None, 1)),
                ReasonCode::FaceOccluded,
            ),
            (
                Box::new(move |i| obs(at(i), Some([220.0, 140.0, 200.0, 220.0]), 2)),
                ReasonCode::MultipleFaces,
            ),
            (
                Box::new(move |i| obs(at(i), Some([280.0, 200.0, 80.0, 90.0]), 1)),
                ReasonCode::FaceTooFar,
            ),
            (
                Box::new(move |i| obs(at(i), Some([60.0, 0.0, 520.0, 480.0]), 1)),
                ReasonCode::FaceTooClose,
            ),
            (
                Box::new(move |i| obs(at(i), Some([10.0, 140.0, 200.0, 220.0]), 1)),
                ReasonCode::FaceNotCentered,
            ),
        ];
        for (frames, code) in cases {
            let got = run(frames);
            assert_eq!(got.len(), 1, "{code:?}: {got:?}");
            assert_eq!(got[0].1, HealthChange::Raised(code));
            assert!(
                (15..=16).contains(&got[0].0),
                "{code:?} raised at frame {}",
                got[0].0
            );
        }
    }
}
