//! Liveness: a random challenge plan judged from face observations, spoof evidence from the
//! geometry of the face across those motions, and (with `verdict`) the decision.
//!
//! `LivenessSession` is sans-IO: the media pipeline feeds it each face observation and a tick
//! with the current blocking condition (no face, dark, frozen camera, poor network), and
//! publishes what it returns.

pub mod judge;
pub mod plan;
pub mod speech;
pub mod spoof;

use std::time::Instant;

use rand::Rng;

use self::judge::{ChallengeJudge, FaceSample, JudgeEvent, StepEvidence, Thresholds};
use self::plan::{Action, ChallengePlan, ChallengeStep};
use self::speech::{SpeechJudge, SpeechOutcome, SpeechThresholds, VoiceFrame};
use self::spoof::{flat_motion, planarity, FlatMotion, MeshFrame, PlanarityScore};
use crate::analysis::face::guidance::{framing_distorts, MIN_INTER_EYE_PX};
use crate::analysis::face::FaceObservation;
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
    /// The spoken step's result, when the plan has one and it was decided by voice and lips.
    pub speech: Option<SpeechOutcome>,
}

/// The plan's spoken step: its digits and the judge that listens while it runs.
struct SpokenStep {
    step_id: u32,
    digits: String,
    judge: SpeechJudge,
}

pub struct LivenessSession {
    judge: ChallengeJudge,
    spoof_frames: Vec<MeshFrame>,
    finished: bool,
    spoken: Option<SpokenStep>,
}

impl LivenessSession {
    /// A plan with a spoken step gets random digits of its own.
    pub fn new(plan: ChallengePlan) -> Self {
        let digits = speech::random_digits(&mut rand::thread_rng());
        Self::with_digits(plan, digits)
    }

    /// As `new`, with the spoken step's digits given (tests).
    pub fn with_digits(plan: ChallengePlan, digits: String) -> Self {
        let spoken = plan
            .steps
            .iter()
            .find(|s| s.action == Action::SpeakDigits)
            .map(|s| SpokenStep {
                step_id: s.id,
                digits,
                judge: SpeechJudge::new(SpeechThresholds::default()),
            });
        LivenessSession {
            judge: ChallengeJudge::new(plan, Thresholds::default()),
            spoof_frames: Vec::new(),
            finished: false,
            spoken,
        }
    }

    /// The digits to say in step `id`, when it is the spoken step.
    pub fn digits(&self, id: u32) -> Option<&str> {
        self.spoken
            .as_ref()
            .filter(|s| s.step_id == id)
            .map(|s| s.digits.as_str())
    }

    /// Whether the plan has a spoken step (the caller then runs voice detection on the audio).
    pub fn wants_voice(&self) -> bool {
        self.spoken.is_some()
    }

    /// One audio frame's voice decision; heard only while the spoken step listens.
    pub fn on_voice(&mut self, f: VoiceFrame) -> Vec<JudgeEvent> {
        match self.spoken.as_mut() {
            Some(s) if s.judge.is_listening() => s.judge.on_audio(f),
            _ => return Vec::new(),
        }
        self.decide_spoken(f.at)
    }

    /// Ends the spoken step when its judge has decided at `at`.
    fn decide_spoken(&mut self, at: Instant) -> Vec<JudgeEvent> {
        let Some(outcome) = self.spoken.as_mut().and_then(|s| s.judge.poll(at)) else {
            return Vec::new();
        };
        let peak = outcome.evidence.correlation.unwrap_or(0.0);
        let events = self.judge.end_running(at, outcome.failure, peak);
        self.track(at, events)
    }

    /// Judges one face observation. Two framing rules keep a person's own framing from being
    /// read as a failure or a spoof: a face too small to measure is not judged at all (the
    /// caller pauses the step and asks the person to come closer), and frames whose framing
    /// distorts the face's geometry (too close, cut off by the frame's edge, too small) never feed
    /// the spoof cues, which read that geometry.
    pub fn on_observation(&mut self, o: &FaceObservation) -> Vec<JudgeEvent> {
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
        let mut events = self.track(o.captured, events);
        if let (Some(s), true) = (self.spoken.as_mut(), sample.face) {
            s.judge.on_mouth(o.captured, sample.mouth_open);
        }
        events.extend(self.decide_spoken(o.captured));
        events
    }

    pub fn on_tick(&mut self, at: Instant, blocking: Option<ReasonCode>) -> Vec<JudgeEvent> {
        let events = self.judge.on_tick(at, blocking);
        let mut events = self.track(at, events);
        events.extend(self.decide_spoken(at));
        events
    }

    /// Notes the end of the plan, and starts, stops and restarts the spoken step's listening
    /// with the step's own start, pause and resume.
    fn track(&mut self, at: Instant, events: Vec<JudgeEvent>) -> Vec<JudgeEvent> {
        for e in &events {
            match e {
                JudgeEvent::Finished { .. } => self.finished = true,
                JudgeEvent::Started { step, .. } => {
                    if let Some(s) = self.spoken.as_mut().filter(|s| s.step_id == step.id) {
                        s.judge.listen(at);
                    }
                }
                JudgeEvent::Resumed { step_id, .. } => {
                    if let Some(s) = self.spoken.as_mut().filter(|s| s.step_id == *step_id) {
                        s.judge.listen(at);
                    }
                }
                JudgeEvent::Paused { step_id, .. } => {
                    if let Some(s) = self.spoken.as_mut().filter(|s| s.step_id == *step_id) {
                        s.judge.stop();
                    }
                }
                _ => {}
            }
        }
        events
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether a step is being judged now (started, not yet passed or failed).
    pub fn running_step(&self) -> bool {
        self.judge.running_step().is_some()
    }

    /// How many steps the plan has.
    pub fn steps(&self) -> usize {
        self.judge.results().len()
    }

    /// Where step `id` sits in the plan (0-based) and how many steps there are, for the page's
    /// progress indicator. The actions of later steps stay secret until they are asked.
    pub fn position(&self, id: u32) -> Option<(usize, usize)> {
        let results = self.judge.results();
        let index = results.iter().position(|(s, _)| s.id == id)?;
        Some((index, results.len()))
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
            speech: self
                .spoken
                .as_ref()
                .and_then(|s| s.judge.outcome().cloned()),
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
