//! Liveness: a random challenge plan judged from face observations, spoof evidence from the
//! geometry of the face across those motions, and (with `verdict`) the decision.
//!
//! `LivenessSession` is sans-IO: the media pipeline feeds it each face observation and a tick
//! with the current blocking condition (no face, dark, frozen camera, poor network), and
//! publishes what it returns.

pub mod judge;
pub mod light;
pub mod plan;
pub mod speech;
pub mod spoof;

use std::time::Instant;

use rand::Rng;

use self::judge::{ChallengeJudge, FaceSample, JudgeEvent, StepEvidence, Thresholds};
use self::light::{LightEvent, LightOutcome, LightStep};
use self::plan::{Action, ChallengePlan, ChallengeStep};
use self::speech::{SpeechJudge, SpeechOutcome, SpeechThresholds, VoiceFrame};
use self::spoof::{flat_motion, planarity, FlatMotion, MeshFrame, PlanarityScore};
use crate::analysis::effort::AnalysisNeeds;
use crate::analysis::face::guidance::{framing_distorts, MIN_INTER_EYE_PX};
use crate::analysis::face::FaceObservation;
use crate::analysis::quality::I420;
use crate::reasons::ReasonCode;

/// Steps in a default plan.
pub(crate) const DEFAULT_STEPS: usize = 3;
/// Face frames kept for the spoof check (the most recent; about 20 s at 15 fps).
const MAX_SPOOF_FRAMES: usize = 300;

/// A random plan with at least one head turn or nod, which the spoof check needs.
pub(crate) fn random_plan<R: Rng>(rng: &mut R, steps: usize) -> ChallengePlan {
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
    /// The spoken step's result, when the plan has one and it was decided by voice and lips.
    pub speech: Option<SpeechOutcome>,
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

/// The plan's spoken step: its digits and the judge that listens while it runs.
struct SpokenStep {
    step_id: u32,
    digits: String,
    judge: SpeechJudge,
}

pub(crate) struct LivenessSession {
    judge: ChallengeJudge,
    spoof_frames: Vec<MeshFrame>,
    finished: bool,
    /// The screen-light step, run before the plan's first step.
    light: Option<LightStep>,
    light_events: Vec<LightEvent>,
    /// The plan has a blink step, so the open-eye baseline must come from the eye-contour model.
    blink_planned: bool,
    spoken: Option<SpokenStep>,
}

impl LivenessSession {
    /// A plan with a spoken step gets random digits of its own.
    pub fn new(plan: ChallengePlan) -> Self {
        let digits = speech::random_digits(&mut rand::thread_rng());
        Self::with_digits(plan, digits)
    }

    /// As `new`, with the spoken step's digits given (tests).
    pub(crate) fn with_digits(plan: ChallengePlan, digits: String) -> Self {
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
            blink_planned: plan.steps.iter().any(|s| s.action == Action::Blink),
            judge: ChallengeJudge::new(plan, Thresholds::default()),
            spoof_frames: Vec::new(),
            finished: false,
            light: None,
            light_events: Vec::new(),
            spoken,
        }
    }

    /// Adds the screen-light step (`seed` draws its colours) in `mode`.
    pub(crate) fn with_light(mut self, mode: LightMode, seed: u64) -> Self {
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
    pub(crate) fn light_running(&self) -> bool {
        self.light.as_ref().is_some_and(|l| l.is_running())
    }

    /// Measures the light on the face of a frame analysed while a sequence shows.
    pub(crate) fn on_light_frame(&mut self, frame: &I420, o: &FaceObservation) {
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
    pub(crate) fn poll_light(&mut self) -> Vec<LightEvent> {
        std::mem::take(&mut self.light_events)
    }

    /// Steps shown to the person before the plan's own (the light step when it is shown).
    fn steps_before_plan(&self) -> usize {
        self.light.as_ref().is_some_and(|l| !l.outcome().skipped()) as usize
    }

    /// The digits to say in step `id`, when it is the spoken step.
    pub fn digits(&self, id: u32) -> Option<&str> {
        self.spoken
            .as_ref()
            .filter(|s| s.step_id == id)
            .map(|s| s.digits.as_str())
    }

    /// Whether the plan has a spoken step (the caller then runs voice detection on the audio).
    pub(crate) fn wants_voice(&self) -> bool {
        self.spoken.is_some()
    }

    /// One audio frame's voice decision; heard only while the spoken step listens.
    pub(crate) fn on_voice(&mut self, f: VoiceFrame) -> Vec<JudgeEvent> {
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
    pub(crate) fn on_observation(&mut self, o: &FaceObservation) -> Vec<JudgeEvent> {
        if self.light_pending() {
            return Vec::new();
        }
        let face = o
            .face
            .as_ref()
            .filter(|f| f.inter_eye_px >= MIN_INTER_EYE_PX);
        let sample = match face {
            Some(f) => {
                // Only the challenges' frames: after the plan the person may hold their ID card
                // over the lower face (the document step), which bends the mesh like a tilted
                // photo and made the flat-motion cue fire on live people.
                if !framing_distorts(o) && !self.finished {
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
        if let Some(light) = self.light.as_mut().filter(|l| !l.is_done()) {
            let events = light.on_tick(at, blocking);
            self.light_events.extend(events);
            return Vec::new();
        }
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
    pub(crate) fn running_step(&self) -> bool {
        self.judge.running_step().is_some() || self.light_running()
    }

    /// What the analysis must measure now (see `analysis::effort`): every frame while a step's
    /// motion is judged, with the eye-contour model only for a blink; every frame while the
    /// baseline is learnt before the first step (about ten face frames), with the eye-contour
    /// model when the plan has a blink, so the blink and its baseline are read by the same model;
    /// nothing (guidance only) while waiting between steps and after the last.
    pub(crate) fn analysis_needs(&self) -> Option<AnalysisNeeds> {
        if self.finished {
            return None;
        }
        // The light step reads every frame's colour; no eye model.
        if self.light_running() {
            return Some(AnalysisNeeds::judging(false));
        }
        if let Some(step) = self.judge.running_step() {
            // Until the face moves, the step only watches for the motion to begin.
            if self.judge.awaiting_motion() {
                return Some(AnalysisNeeds::WATCHING);
            }
            return Some(AnalysisNeeds::judging(step.action == Action::Blink));
        }
        self.judge
            .baseline_ear()
            .is_none()
            .then_some(AnalysisNeeds::judging(self.blink_planned))
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
    use crate::analysis::effort::AnalysisSchedule;
    use crate::analysis::face::TrackedFace;
    use rand::SeedableRng;
    use std::time::Duration;

    /// Eye openness as each source reads it (docs/FACE.md, measured on rendered clips): the
    /// eye-contour model from 0.36 open to 0.08 closed, the mesh only from 0.23 to 0.22.
    fn ear(closed: bool, eye_model: bool) -> f32 {
        match (eye_model, closed) {
            (true, false) => 0.36,
            (true, true) => 0.08,
            (false, false) => 0.23,
            (false, true) => 0.22,
        }
    }

    fn observation(at: Instant, yaw: f32, ear: f32) -> FaceObservation {
        FaceObservation {
            captured: at,
            frame_width: 640,
            frame_height: 480,
            face_count: 1,
            detected: false,
            face: Some(TrackedFace {
                bbox: [220.0, 140.0, 200.0, 220.0],
                presence: 0.99,
                landmarks: Vec::new(),
                yaw,
                pitch: 0.0,
                roll: 0.0,
                pose_relative: true,
                ear_right: ear,
                ear_left: ear,
                irises: None,
                mouth_open: 0.05,
                inter_eye_px: 60.0,
                quality: Default::default(),
                backlight: 1.0,
            }),
        }
    }

    struct Run {
        events: Vec<(Instant, JudgeEvent)>,
        /// Capture times of the frames analysed, and whether the eye model ran on them.
        analysed: Vec<(Instant, bool)>,
    }

    /// A person who follows the plan (turns 30 degrees 0.4 s after a turn is asked, blinks for
    /// 150 ms 0.5 s after a blink is asked) before a 30 fps camera, analysed as
    /// `analysis::effort` schedules it; `eye_model` says whether the eye-contour model exists.
    fn follow(plan: ChallengePlan, eye_model: bool) -> Run {
        let t0 = Instant::now();
        let mut session = LivenessSession::new(plan);
        let mut schedule = AnalysisSchedule::new(15.0);
        let mut asked: Option<(Action, Instant)> = None;
        let mut run = Run {
            events: Vec::new(),
            analysed: Vec::new(),
        };
        let mut record = |events: Vec<JudgeEvent>, at: Instant, asked: &mut Option<_>| {
            for e in events {
                match &e {
                    JudgeEvent::Started { step, .. } => *asked = Some((step.action, at)),
                    JudgeEvent::Passed { .. } | JudgeEvent::Failed { .. } => *asked = None,
                    _ => {}
                }
                run.events.push((at, e));
            }
        };
        for i in 0..30 * 20 {
            let at = t0 + Duration::from_micros(33_333 * i);
            if i % 3 == 0 {
                let events = session.on_tick(at, None);
                record(events, at, &mut asked);
            }
            if session.is_finished() {
                break;
            }
            let needs = AnalysisNeeds::combine(session.analysis_needs());
            if !schedule.due(at, &needs, false) {
                continue;
            }
            let since = |action| match asked {
                Some((a, from)) if a == action => Some(at.duration_since(from)),
                _ => None,
            };
            let turning = since(Action::TurnLeft).is_some_and(|d| {
                (Duration::from_millis(400)..Duration::from_millis(1000)).contains(&d)
            });
            let closed = since(Action::Blink).is_some_and(|d| {
                (Duration::from_millis(500)..Duration::from_millis(650)).contains(&d)
            });
            let eyes = needs.eyes && eye_model;
            run.analysed.push((at, needs.eyes));
            let o = observation(at, if turning { 30.0 } else { 0.0 }, ear(closed, eyes));
            let events = session.on_observation(&o);
            record(events, at, &mut asked);
        }
        run
    }

    fn plan(actions: &[Action]) -> ChallengePlan {
        let mut plan = ChallengePlan::from_actions(actions, Duration::from_secs(6));
        for step in &mut plan.steps {
            step.lead_in = Duration::from_millis(800);
        }
        plan
    }

    #[test]
    fn a_blink_is_judged_when_the_eye_model_runs_only_for_the_baseline_and_the_blink_step() {
        let run = follow(plan(&[Action::TurnLeft, Action::Blink]), true);
        let outcomes: Vec<_> = run
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                JudgeEvent::Passed { step_id, .. } => Some((*step_id, true)),
                JudgeEvent::Failed { step_id, .. } => Some((*step_id, false)),
                _ => None,
            })
            .collect();
        assert_eq!(outcomes, vec![(1, true), (2, true)]);
        // When each step ran.
        let started = |id| {
            run.events
                .iter()
                .find(|(_, e)| matches!(e, JudgeEvent::Started { step, .. } if step.id == id))
                .map(|(at, _)| *at)
                .unwrap()
        };
        let ended = |id| {
            run.events
                .iter()
                .find(|(_, e)| matches!(e, JudgeEvent::Passed { step_id, .. } if *step_id == id))
                .map(|(at, _)| *at)
                .unwrap()
        };
        let (turn, blink) = (started(1)..=ended(1), started(2)..=ended(2));
        // The eye model ran on the baseline frames (before the first step) and in the blink step,
        // never in the turn or the lead-in between them.
        let with_eyes: Vec<Instant> = run
            .analysed
            .iter()
            .filter(|(_, eyes)| *eyes)
            .map(|(at, _)| *at)
            .collect();
        assert!(with_eyes
            .iter()
            .all(|at| *at < *turn.start() || blink.contains(at)));
        assert_eq!(
            with_eyes.iter().filter(|at| **at < *turn.start()).count(),
            10,
            "the baseline's ten face samples"
        );
        assert!(with_eyes.iter().any(|at| blink.contains(at)));
        // Both steps at the full rate (every other frame of the 30 fps camera), the lead-in
        // between them at the guidance rate.
        let analysed_in = |from: Instant, to: Instant| {
            run.analysed
                .iter()
                .filter(|(at, _)| (from..to).contains(at))
                .count()
        };
        let per_second = |from: Instant, to: Instant| {
            analysed_in(from, to) as f64 / to.duration_since(from).as_secs_f64()
        };
        // The turn step watched the still face at 8 fps until the head moved (0.4 s after the
        // step began), then analysed every frame; the blink step every frame from its start.
        let onset = *turn.start() + Duration::from_millis(400);
        let watching = analysed_in(*turn.start(), onset);
        assert!(
            (3..=4).contains(&watching),
            "{watching} frames before the motion"
        );
        // The motion is seen on the next frame at 8 fps, and every frame after it is analysed.
        let seen = run
            .analysed
            .iter()
            .map(|(at, _)| *at)
            .find(|at| *at >= onset)
            .unwrap();
        assert!(
            seen - onset <= Duration::from_millis(125),
            "{:?}",
            seen - onset
        );
        let after: Vec<Instant> = run
            .analysed
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| (seen..=*turn.end()).contains(at))
            .collect();
        assert!(
            after
                .windows(2)
                .all(|w| w[1] - w[0] <= Duration::from_millis(67)),
            "{after:?}"
        );
        assert!(per_second(*blink.start(), *blink.end()) >= 13.0);
        assert!(per_second(*turn.end(), *blink.start()) <= 5.5);
        let evidence = run
            .events
            .iter()
            .find_map(|(_, e)| match e {
                JudgeEvent::Passed {
                    step_id: 1,
                    evidence,
                } => Some(evidence.clone()),
                _ => None,
            })
            .unwrap();
        assert!(evidence.onset_at_ms.is_some());
        assert!(evidence.onset_at_ms <= evidence.crossed_at_ms);
    }

    #[test]
    fn without_the_eye_model_the_mesh_cannot_judge_the_blink() {
        // The control for the test above: the blink is only seen through the eye-contour model.
        let run = follow(plan(&[Action::Blink]), false);
        assert!(run.events.iter().any(|(_, e)| matches!(
            e,
            JudgeEvent::Failed {
                step_id: 1,
                reason: ReasonCode::ChallengeTimeout,
                ..
            }
        )));
    }

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
