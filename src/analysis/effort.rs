//! Analysis effort that follows the call's phase: how often a decoded frame is analysed, and which
//! models run on it. Sans-IO: the caller says what each running part of the call needs
//! ([`AnalysisNeeds`]) and gives each decoded frame's capture `Instant`; [`AnalysisSchedule`]
//! answers whether that frame is analysed.
//!
//! Why: the models dominate a call's cost (the eye-contour model alone is about half of a tracked
//! frame), and most of a call judges nothing. Only a step whose motion is being judged needs every
//! frame; the eye-contour model is needed only to judge a blink (and to learn the open-eye
//! baseline it is judged against); the mouth comes from the mesh. Waiting (before the first step,
//! lead-ins, after the last) needs only guidance, whose hints hold for a second before they are
//! raised (`face::guidance::HOLD_ON`, `quality::Thresholds::hold_on`), so a few frames a second
//! delay a hint by at most one low-rate interval. Decoding is not scheduled here: it sees every
//! frame until the verdict, and none after it (`media::call::CallCore::wants_media`).
//! docs/FACE.md lists what each phase runs.
//!
//! Each part of the call that judges something says what it needs while it runs (the challenge
//! judge per step, the document step, a screen-light or spoken step); [`AnalysisNeeds::combine`]
//! takes the most demanding rate and every model any of them asks for.

use std::time::{Duration, Instant};

/// Analysed frames per second while nothing is judged (guidance only).
pub const GUIDANCE_FPS: f64 = 4.0;
/// Analysed frames per second during the document step: its best-of window
/// (`document::step::BEST_OF_WINDOW`, 1.2 s) then holds about ten candidates, and its hints need
/// two or three frames in a row.
pub(crate) const DOCUMENT_FPS: f64 = 8.0;

/// How often frames are analysed, from least to most demanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rate {
    /// [`GUIDANCE_FPS`]: hints only.
    Guidance,
    /// [`DOCUMENT_FPS`]: the ID-document step.
    Document,
    /// The configured `analysis_fps` (15 by default): a motion is being judged.
    Full,
}

impl Rate {
    /// Frames per second at this rate, never above the configured full rate.
    pub fn fps(self, full_fps: f64) -> f64 {
        let full = full_fps.max(0.1);
        match self {
            Rate::Guidance => GUIDANCE_FPS.min(full),
            Rate::Document => DOCUMENT_FPS.min(full),
            Rate::Full => full,
        }
    }
}

/// What one part of the call needs from the analysis while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnalysisNeeds {
    pub rate: Rate,
    /// Face detector and 468-point mesh (pose, mouth, framing hints).
    pub mesh: bool,
    /// Eye-contour model on both eyes (eye openness for blinks); needs `mesh`.
    pub eyes: bool,
}

impl AnalysisNeeds {
    /// Nothing is judged: guidance from the frame and the mesh, a few times a second.
    pub(crate) const GUIDANCE: AnalysisNeeds = AnalysisNeeds {
        rate: Rate::Guidance,
        mesh: true,
        eyes: false,
    };
    /// The ID-document step: the card is looked for at [`DOCUMENT_FPS`]; the mesh keeps the face
    /// hints and keeps the card's portrait from being taken for a second face.
    pub(crate) const DOCUMENT: AnalysisNeeds = AnalysisNeeds {
        rate: Rate::Document,
        mesh: true,
        eyes: false,
    };

    /// A step that waits for the person to start moving (the time they take to read the
    /// instruction): the face is watched at [`DOCUMENT_FPS`], and the first frame on which it has
    /// moved (`liveness::judge::MotionOnset`) raises the rate to the full one from the next
    /// frame on. What is judged (the threshold, the peak, the return) and the spoof cues'
    /// motion frames all come after that. A blink is never watched this way: it is its own onset.
    pub(crate) const WATCHING: AnalysisNeeds = AnalysisNeeds {
        rate: Rate::Document,
        mesh: true,
        eyes: false,
    };

    /// A motion judged from the mesh at the full rate, with the eye-contour model when `eyes`.
    pub const fn judging(eyes: bool) -> AnalysisNeeds {
        AnalysisNeeds {
            rate: Rate::Full,
            mesh: true,
            eyes,
        }
    }

    /// The most demanding rate and every model that any of `needs` asks for; guidance when none
    /// asks for anything (guidance always runs).
    pub(crate) fn combine(needs: impl IntoIterator<Item = AnalysisNeeds>) -> AnalysisNeeds {
        needs
            .into_iter()
            .fold(AnalysisNeeds::GUIDANCE, |a, b| AnalysisNeeds {
                rate: a.rate.max(b.rate),
                mesh: a.mesh || b.mesh || b.eyes,
                eyes: a.eyes || b.eyes,
            })
    }
}

/// Which decoded frames are analysed: a grid at the rate the call needs now, tolerating a third
/// of an interval of arrival jitter, so a 15 fps camera is analysed frame by frame at the full
/// rate and a faster one is sampled evenly. The interval is taken from the rate asked for on each
/// frame, so a step that starts raises the rate from its next frame on.
#[derive(Debug, Clone)]
pub(crate) struct AnalysisSchedule {
    full_fps: f64,
    /// The last analysed frame: its grid point, its capture time and the interval it was due at.
    last: Option<(Instant, Instant, Duration)>,
}

impl AnalysisSchedule {
    /// `full_fps`: the configured `analysis_fps`.
    pub fn new(full_fps: f64) -> Self {
        AnalysisSchedule {
            full_fps,
            last: None,
        }
    }

    /// The interval between analysed frames at `rate`.
    pub fn interval(&self, rate: Rate) -> Duration {
        Duration::from_secs_f64(1.0 / rate.fps(self.full_fps))
    }

    /// Whether the frame captured at `captured` is analysed under `needs`. A frame is never
    /// analysed while a newer one is already waiting (`newer_waiting`): only the newest frame
    /// is analysed, never one that is already late. A due frame takes its slot on the grid.
    pub fn due(&mut self, captured: Instant, needs: &AnalysisNeeds, newer_waiting: bool) -> bool {
        let interval = self.interval(needs.rate);
        let tolerance = interval / 3;
        // A rate that rises counts from the last analysed frame itself, not from its grid
        // point, which the tolerance may have put up to a third of the old interval later.
        let next = self.last.map(|(slot, at, was)| {
            if interval < was {
                at + interval
            } else {
                slot + interval
            }
        });
        let due = next.is_none_or(|d| captured + tolerance >= d);
        if !due || newer_waiting {
            return false;
        }
        let slot = match next {
            Some(d) => d.max(captured.checked_sub(tolerance).unwrap_or(captured)),
            None => captured,
        };
        self.last = Some((slot, captured, interval));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: f64 = 15.0;

    /// Capture times of a camera at `fps` from `t0`, over `secs`.
    fn camera(t0: Instant, fps: f64, secs: f64) -> Vec<Instant> {
        let n = (fps * secs).round() as u64;
        (0..n)
            .map(|i| t0 + Duration::from_secs_f64(i as f64 / fps))
            .collect()
    }

    fn analysed(
        schedule: &mut AnalysisSchedule,
        frames: &[Instant],
        needs: impl Fn(Instant) -> AnalysisNeeds,
    ) -> Vec<Instant> {
        frames
            .iter()
            .copied()
            .filter(|&at| schedule.due(at, &needs(at), false))
            .collect()
    }

    #[test]
    fn full_rate_analyses_every_frame_of_a_15_fps_camera_and_half_of_a_30_fps_one() {
        let t0 = Instant::now();
        let mut s = AnalysisSchedule::new(FULL);
        let frames = camera(t0, 15.0, 2.0);
        let got = analysed(&mut s, &frames, |_| AnalysisNeeds::judging(false));
        assert_eq!(got, frames);
        let mut s = AnalysisSchedule::new(FULL);
        let frames = camera(t0, 30.0, 2.0);
        let got = analysed(&mut s, &frames, |_| AnalysisNeeds::judging(true));
        let every_other: Vec<Instant> = frames.iter().copied().step_by(2).collect();
        assert_eq!(got, every_other);
    }

    #[test]
    fn guidance_rate_analyses_four_frames_a_second_never_more_than_a_third_of_a_second_apart() {
        let t0 = Instant::now();
        for fps in [15.0, 30.0, 24.0] {
            let mut s = AnalysisSchedule::new(FULL);
            let frames = camera(t0, fps, 10.0);
            let got = analysed(&mut s, &frames, |_| AnalysisNeeds::GUIDANCE);
            assert_eq!(got[0], t0);
            assert!(
                (39..=41).contains(&got.len()),
                "{fps} fps camera: {} frames in 10 s",
                got.len()
            );
            let widest = got.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(
                widest <= Duration::from_millis(334),
                "{fps} fps: {widest:?}"
            );
        }
    }

    #[test]
    fn document_rate_is_eight_frames_a_second_and_no_rate_exceeds_the_configured_one() {
        let t0 = Instant::now();
        let mut s = AnalysisSchedule::new(FULL);
        let frames = camera(t0, 30.0, 10.0);
        let got = analysed(&mut s, &frames, |_| AnalysisNeeds::DOCUMENT);
        assert!((79..=81).contains(&got.len()), "{}", got.len());
        assert_eq!(Rate::Document.fps(5.0), 5.0);
        assert_eq!(Rate::Guidance.fps(2.0), 2.0);
        assert_eq!(Rate::Full.fps(15.0), 15.0);
    }

    #[test]
    fn a_step_that_starts_raises_the_rate_on_the_next_frame_and_its_end_lowers_it() {
        let t0 = Instant::now();
        let step = t0 + Duration::from_millis(1000)..t0 + Duration::from_millis(2000);
        let needs = |at: Instant| {
            if step.contains(&at) {
                AnalysisNeeds::judging(true)
            } else {
                AnalysisNeeds::GUIDANCE
            }
        };
        let mut s = AnalysisSchedule::new(FULL);
        let frames = camera(t0, 15.0, 3.0);
        let got = analysed(&mut s, &frames, needs);
        let in_step: Vec<Instant> = frames
            .iter()
            .copied()
            .filter(|at| step.contains(at))
            .collect();
        // Every frame of the step is analysed, from its first frame on.
        assert!(in_step.iter().all(|at| got.contains(at)));
        assert_eq!(in_step.len(), 15);
        // Outside it, the guidance rate: 4 or 5 frames in each of the other two seconds.
        let before = got.iter().filter(|at| **at < step.start).count();
        let after = got.iter().filter(|at| **at >= step.end).count();
        assert!((4..=5).contains(&before), "{before}");
        assert!((4..=5).contains(&after), "{after}");
    }

    #[test]
    fn a_newer_frame_waiting_skips_the_older_one_without_taking_its_slot() {
        let t0 = Instant::now();
        let mut s = AnalysisSchedule::new(FULL);
        let needs = AnalysisNeeds::judging(false);
        assert!(!s.due(t0, &needs, true));
        assert!(s.due(t0 + Duration::from_millis(33), &needs, false));
        assert!(!s.due(t0 + Duration::from_millis(40), &needs, false));
    }

    /// When each code is raised, by a tracker fed the frames that `needs` lets through.
    fn raised_at<C>(
        frames: &[Instant],
        needs: AnalysisNeeds,
        mut update: impl FnMut(Instant) -> Vec<C>,
    ) -> Vec<(C, Instant)> {
        let mut schedule = AnalysisSchedule::new(FULL);
        let mut raised = Vec::new();
        for &at in frames {
            if schedule.due(at, &needs, false) {
                raised.extend(update(at).into_iter().map(|c| (c, at)));
            }
        }
        raised
    }

    /// Guidance at the low rate reaches the page at most one low-rate interval (a third of a
    /// second, well within 1 s) after it would at the full rate: the hints' hold times, not the
    /// frame rate, set when they are raised. Face hints (the face leaves) and capture hints (the
    /// light goes out) alike.
    #[test]
    fn guidance_at_the_low_rate_is_raised_within_a_third_of_a_second_of_the_full_rate() {
        use crate::analysis::device::HealthChange;
        use crate::analysis::face::guidance::FaceGuidance;
        use crate::analysis::face::{FaceObservation, TrackedFace};
        use crate::analysis::quality::{
            GuidanceChange, GuidanceTracker, QualityMetrics, Thresholds,
        };
        use crate::reasons::ReasonCode;

        let t0 = Instant::now();
        let frames = camera(t0, 15.0, 8.0);
        let change = t0 + Duration::from_millis(3000);
        let face = |at: Instant| FaceObservation {
            captured: at,
            frame_width: 640,
            frame_height: 480,
            face_count: usize::from(at < change),
            detected: true,
            face: (at < change).then(|| TrackedFace {
                bbox: [220.0, 140.0, 200.0, 220.0],
                presence: 0.99,
                landmarks: Vec::new(),
                yaw: 0.0,
                pitch: 0.0,
                roll: 0.0,
                pose_relative: true,
                ear_right: 0.3,
                ear_left: 0.3,
                irises: None,
                mouth_open: 0.05,
                inter_eye_px: 60.0,
                quality: Default::default(),
                backlight: 1.0,
            }),
        };
        let faces = |needs| {
            let mut g = FaceGuidance::default();
            raised_at(&frames, needs, |at| g.update(&face(at)))
        };
        let lights = |needs| {
            let mut g = GuidanceTracker::new(Thresholds::default());
            raised_at(&frames, needs, |at| {
                let m = QualityMetrics {
                    mean_luma: if at < change { 120.0 } else { 30.0 },
                    ..Default::default()
                };
                g.update(at, &m)
                    .into_iter()
                    .filter_map(|c| match c {
                        GuidanceChange::Raised(i) => Some(i.code()),
                        GuidanceChange::Cleared(_) => None,
                    })
                    .collect()
            })
        };
        let (full, low) = (AnalysisNeeds::judging(false), AnalysisNeeds::GUIDANCE);
        let within =
            |full: Instant, low: Instant| low >= full && low - full <= Duration::from_millis(334);
        let (face_full, face_low) = (faces(full), faces(low));
        let gone = HealthChange::Raised(ReasonCode::FaceNotFound);
        let when = |raised: &[(HealthChange, Instant)]| {
            raised.iter().find(|(c, _)| *c == gone).map(|(_, at)| *at)
        };
        let (f, l) = (when(&face_full).unwrap(), when(&face_low).unwrap());
        assert!(f > change && within(f, l), "full {f:?}, low {l:?}");
        let (light_full, light_low) = (lights(full), lights(low));
        let dark = |raised: &[(&'static str, Instant)]| {
            raised
                .iter()
                .find(|(c, _)| *c == "LIGHTING_TOO_DARK")
                .map(|(_, at)| *at)
        };
        let (f, l) = (dark(&light_full).unwrap(), dark(&light_low).unwrap());
        assert!(f > change && within(f, l), "full {f:?}, low {l:?}");
        assert!(l - change <= Duration::from_secs(1) + Duration::from_millis(334));
    }

    #[test]
    fn needs_combine_to_the_highest_rate_and_every_model_asked_for() {
        assert_eq!(AnalysisNeeds::combine([]), AnalysisNeeds::GUIDANCE);
        let blink = AnalysisNeeds::judging(true);
        let light = AnalysisNeeds {
            rate: Rate::Full,
            mesh: false,
            eyes: false,
        };
        assert_eq!(
            AnalysisNeeds::combine([AnalysisNeeds::DOCUMENT, light]),
            AnalysisNeeds {
                rate: Rate::Full,
                mesh: true,
                eyes: false
            }
        );
        assert_eq!(
            AnalysisNeeds::combine([AnalysisNeeds::DOCUMENT, blink]),
            blink
        );
        assert_eq!(
            AnalysisNeeds::combine([AnalysisNeeds::DOCUMENT]),
            AnalysisNeeds::DOCUMENT
        );
    }
}
