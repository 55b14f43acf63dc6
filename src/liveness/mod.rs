//! Liveness: a random challenge plan judged from face observations, spoof evidence from the
//! geometry of the face across those motions, and (with `verdict`) the decision.
//!
//! `LivenessSession` is sans-IO: the media pipeline feeds it each face observation and a tick
//! with the current blocking condition (no face, dark, frozen camera, poor network), and
//! publishes what it returns.

pub mod judge;
pub mod light;
pub mod plan;
pub mod spoof;

use std::time::Instant;

use rand::Rng;

use self::judge::{ChallengeJudge, FaceSample, JudgeEvent, StepEvidence, Thresholds};
use self::light::{LightEvent, LightOutcome, LightStep};
use self::plan::{Action, ChallengePlan, ChallengeStep};
use self::spoof::{flat_motion, planarity, FlatMotion, MeshFrame, PlanarityScore};
use crate::analysis::face::guidance::{framing_distorts, MIN_INTER_EYE_PX};
use crate::analysis::face::FaceObservation;
use crate::analysis::quality::I420;
use crate::reasons::ReasonCode;

/// Steps in a default plan.
pub const DEFAULT_STEPS: usize = 3;
/// Face frames kept for the spoof check (the most recent; about 20 s at 15 fps).
const MAX_SPOOF_FRAMES: usize = 300;

/// A random plan with at least one head turn or nod, which the spoof check needs.
pub fn random_plan<R: Rng>(rng: &mut R, steps: usize) -> ChallengePlan {
    let mut plan = ChallengePlan::random(rng, steps);
    let moves = [
        Action::TurnLeft,
        Action::TurnRight,
        Action::LookUp,
        Action::LookDown,
    ];
    if !plan.steps.iter().any(|s| moves.contains(&s.action)) {
        let unused: Vec<Action> = moves
            .into_iter()
            .filter(|a| !plan.steps.iter().any(|s| s.action == *a))
            .collect();
        let i = rng.gen_range(0..plan.steps.len().max(1));
        if let Some(step) = plan.steps.get_mut(i) {
            step.action = unused[rng.gen_range(0..unused.len())];
        }
    }
    plan
}

/// The outcome of the liveness part of a session, for the verdict.
#[derive(Debug, Clone)]
pub struct LivenessOutcome {
    pub steps: Vec<(ChallengeStep, Option<bool>, Option<StepEvidence>)>,
    pub finished: bool,
    pub spoof: Option<PlanarityScore>,
    pub flat: FlatMotion,
    /// The screen-light step, when the session has one.
    pub light: Option<LightOutcome>,
}

/// Whether a call gets the screen-light step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LightMode {
    /// No light step (turned off by configuration).
    Off,
    /// The step runs first, before the challenge plan.
    On,
    /// The person asked to skip it (photosensitivity): the session goes to review.
    Skipped,
}

pub struct LivenessSession {
    judge: ChallengeJudge,
    spoof_frames: Vec<MeshFrame>,
    finished: bool,
    /// The screen-light step, run before the plan's first step.
    light: Option<LightStep>,
    light_events: Vec<LightEvent>,
}

impl LivenessSession {
    pub fn new(plan: ChallengePlan) -> Self {
        LivenessSession {
            judge: ChallengeJudge::new(plan, Thresholds::default()),
            spoof_frames: Vec::new(),
            finished: false,
            light: None,
            light_events: Vec::new(),
        }
    }

    /// Adds the screen-light step (`seed` draws its colours) in `mode`.
    pub fn with_light(mut self, mode: LightMode, seed: u64) -> Self {
        self.light = match mode {
            LightMode::Off => None,
            LightMode::On => Some(LightStep::new(seed)),
            LightMode::Skipped => Some(LightStep::skipped()),
        };
        self
    }

    /// Whether the light step is still to run or running: the plan waits for it.
    fn light_pending(&self) -> bool {
        self.light.as_ref().is_some_and(|l| !l.is_done())
    }

    /// Whether a light sequence is showing: every frame should be measured.
    pub fn light_running(&self) -> bool {
        self.light.as_ref().is_some_and(|l| l.is_running())
    }

    /// Measures the light on the face of a frame analysed while a sequence shows.
    pub fn on_light_frame(&mut self, frame: &I420, o: &FaceObservation) {
        let Some(light) = self.light.as_mut().filter(|l| l.is_running()) else {
            return;
        };
        let Some(face) = o.face.as_ref() else {
            return;
        };
        if let Some(reading) = light::measure(frame, face.bbox, face.inter_eye_px) {
            light.on_reading(o.captured, reading);
        }
    }

    /// What the light step asks to publish since the last call.
    pub fn poll_light(&mut self) -> Vec<LightEvent> {
        std::mem::take(&mut self.light_events)
    }

    /// Steps shown to the person before the plan's own (the light step when it is shown).
    fn steps_before_plan(&self) -> usize {
        self.light.as_ref().is_some_and(|l| !l.outcome().skipped()) as usize
    }

    /// Judges one face observation. Two framing rules keep a person's own framing from being
    /// read as a failure or a spoof: a face too small to measure is not judged at all (the
    /// caller pauses the step and asks the person to come closer), and frames whose framing
    /// distorts the face's geometry (too close, cut off by the frame's edge, too small) never feed
    /// the spoof cues, which read that geometry.
    pub fn on_observation(&mut self, o: &FaceObservation) -> Vec<JudgeEvent> {
        if self.light_pending() {
            return Vec::new();
        }
        let face = o
            .face
            .as_ref()
            .filter(|f| f.inter_eye_px >= MIN_INTER_EYE_PX);
        let sample = match face {
            Some(f) => {
                if !framing_distorts(o) {
                    if self.spoof_frames.len() >= MAX_SPOOF_FRAMES {
                        self.spoof_frames.remove(0);
                    }
                    self.spoof_frames.push(MeshFrame {
                        points: f.landmarks.iter().map(|p| [p[0], p[1]]).collect(),
                        yaw: f.yaw,
                        pitch: f.pitch,
                    });
                }
                FaceSample {
                    at: o.captured,
                    face: true,
                    yaw: f.yaw,
                    pitch: f.pitch,
                    ear: (f.ear_left + f.ear_right) / 2.0,
                    mouth_open: f.mouth_open,
                    inter_eye_px: f.inter_eye_px,
                }
            }
            None => FaceSample {
                at: o.captured,
                face: false,
                yaw: 0.0,
                pitch: 0.0,
                ear: 0.0,
                mouth_open: 0.0,
                inter_eye_px: 0.0,
            },
        };
        let events = self.judge.on_sample(&sample);
        self.track(events)
    }

    pub fn on_tick(&mut self, at: Instant, blocking: Option<ReasonCode>) -> Vec<JudgeEvent> {
        if let Some(light) = self.light.as_mut().filter(|l| !l.is_done()) {
            let events = light.on_tick(at, blocking);
            self.light_events.extend(events);
            return Vec::new();
        }
        let events = self.judge.on_tick(at, blocking);
        self.track(events)
    }

    fn track(&mut self, events: Vec<JudgeEvent>) -> Vec<JudgeEvent> {
        if events
            .iter()
            .any(|e| matches!(e, JudgeEvent::Finished { .. }))
        {
            self.finished = true;
        }
        events
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether a step is being judged now (started, not yet passed or failed).
    pub fn running_step(&self) -> bool {
        self.judge.running_step().is_some() || self.light_running()
    }

    /// How many steps the person is shown (the light step and the plan's).
    pub fn steps(&self) -> usize {
        self.steps_before_plan() + self.judge.results().len()
    }

    /// Where step `id` sits in the plan (0-based) and how many steps there are, for the page's
    /// progress indicator. The actions of later steps stay secret until they are asked.
    pub fn position(&self, id: u32) -> Option<(usize, usize)> {
        let results = self.judge.results();
        let index = results.iter().position(|(s, _)| s.id == id)?;
        let before = self.steps_before_plan();
        Some((before + index, before + results.len()))
    }

    pub fn outcome(&self) -> LivenessOutcome {
        let evidence = self.judge.evidence();
        LivenessOutcome {
            steps: self
                .judge
                .results()
                .into_iter()
                .enumerate()
                .map(|(i, (step, result))| (step, result, evidence.get(i).cloned().flatten()))
                .collect(),
            finished: self.finished,
            spoof: planarity(&self.spoof_frames),
            flat: flat_motion(&self.spoof_frames),
            light: self.light.as_ref().map(|l| l.outcome()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_plans_always_include_a_head_motion() {
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let plan = random_plan(&mut rng, 3);
            assert_eq!(plan.steps.len(), 3);
            assert!(plan.steps.iter().any(|s| matches!(
                s.action,
                Action::TurnLeft | Action::TurnRight | Action::LookUp | Action::LookDown
            )));
            let mut actions: Vec<_> = plan.steps.iter().map(|s| s.action).collect();
            actions.sort_by_key(|a| a.as_str());
            actions.dedup();
            assert_eq!(actions.len(), 3, "distinct actions");
        }
    }
}
