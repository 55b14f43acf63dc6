//! Guidance from the face: where it is, how big, how many, whether it is covered or backlit.
//! Each condition holds for `HOLD_ON` before its hint goes out and clears after `HOLD_OFF`.

use std::time::{Duration, Instant};

use super::FaceObservation;
use crate::analysis::hold::{HealthChange, Held};
use crate::reasons::ReasonCode;

pub const HOLD_ON: Duration = Duration::from_millis(1000);
pub const HOLD_OFF: Duration = Duration::from_millis(1000);
/// Face box width as a share of the frame width: below is too far, above too close. The OFF
/// values sit inside the ON values (hysteresis).
pub const TOO_FAR_ON: f32 = 0.22;
pub const TOO_FAR_OFF: f32 = 0.25;
pub const TOO_CLOSE_ON: f32 = 0.75;
pub const TOO_CLOSE_OFF: f32 = 0.70;
/// Face centre offset from the frame centre, as a share of the frame size.
pub const OFF_CENTRE_ON: f32 = 0.25;
pub const OFF_CENTRE_OFF: f32 = 0.20;
/// Surround / face luma ratio.
pub const BACKLIT_ON: f64 = 1.8;
pub const BACKLIT_OFF: f64 = 1.5;

#[derive(Debug)]
pub struct FaceGuidance {
    not_found: Held,
    occluded: Held,
    multiple: Held,
    too_far: Held,
    too_close: Held,
    off_centre: Held,
    backlit: Held,
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
        let far = band(&self.too_far, share, &|s| s < TOO_FAR_ON, &|s| {
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
        self.too_far.update(at, far, HOLD_ON, &mut out);
        self.too_close.update(at, close, HOLD_ON, &mut out);
        self.off_centre.update(at, off, HOLD_ON, &mut out);
        self.backlit.update(at, backlit, HOLD_ON, &mut out);
        out
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
