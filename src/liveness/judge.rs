//! Judges a `ChallengePlan` against the face tracker's per-frame measurements. Sans-IO: the caller
//! feeds face samples (`on_sample`) and the passing of time (`on_tick`), each with its capture or
//! wall `Instant`, and gets back the events to announce and record. The judge never reads the
//! clock, so tests drive it with exact timestamps.
//!
//! Life of a plan: the first call starts it and the lead-in of step 1 begins. Before step 1 the
//! judge learns the person's open-eye baseline (the median eye aspect ratio of the first
//! `baseline_samples` face samples), because blinks are judged relative to it. A step starts
//! (`Started`) once its lead-in has passed, the baseline is known and nothing blocks judging; it
//! then has `time_limit` of unblocked time. While the caller reports a blocking condition (no
//! face, too dark, frozen camera, poor network) the step's clock stops (`Paused`, then `Resumed`)
//! and samples are not judged, since that time is not counted. A step ends `Passed` when the
//! action is seen, or `Failed` with `ChallengeTimeout` when its time runs out; the lead-in of the
//! next step counts from there. After the last step comes `Finished`, and then nothing more.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::plan::{Action, ChallengePlan, ChallengeStep};
use crate::reasons::ReasonCode;

/// What the face tracker measured on one analysed frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FaceSample {
    /// Capture time of the frame.
    pub at: Instant,
    /// Whether a face was found; samples without one are not judged.
    pub face: bool,
    /// Degrees relative to the session's frontal baseline; > 0 = head turned towards image-right,
    /// which is the person's own left on a non-mirrored camera.
    pub yaw: f32,
    /// Degrees relative to the frontal baseline; > 0 = chin up, looking up.
    pub pitch: f32,
    /// Eye aspect ratio, the mean of both eyes (about 0.35-0.4 open).
    pub ear: f32,
    /// Lip gap / mouth width (about 0.0-0.1 closed, > 0.3 open).
    pub mouth_open: f32,
    /// Distance between the eyes in pixels; grows when the person moves closer.
    pub inter_eye_px: f32,
}

/// How far the face must move from where it rested at the step's start for the motion to have
/// begun. Every measure the steps and the spoof cues read counts, so whatever the person (or a
/// photo held up to the camera) does first raises the analysis to the full rate: a turn or a nod
/// (about a quarter to two fifths of the step's threshold; the mesh reads a still face within
/// about 1.5 degrees), the lips (a third of the way from closed to open), the distance (6 %: a
/// tilted photo's eye span shrinks 14 % at 38 degrees). Crossing the step's threshold, or going
/// beyond it the wrong way, counts as well (a face that rested near it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MotionOnset {
    pub pose_deg: f32,
    pub mouth: f32,
    pub inter_eye_ratio: f32,
}

impl MotionOnset {
    pub(crate) const DEFAULT: MotionOnset = MotionOnset {
        pose_deg: 4.0,
        mouth: 0.06,
        inter_eye_ratio: 1.06,
    };

    /// Whether `now` moved from `rest` by any of the measures.
    pub(crate) fn moved(&self, rest: &FaceSample, now: &FaceSample) -> bool {
        let ratio = if rest.inter_eye_px > 0.0 && now.inter_eye_px > 0.0 {
            now.inter_eye_px / rest.inter_eye_px
        } else {
            1.0
        };
        (now.yaw - rest.yaw).abs() >= self.pose_deg
            || (now.pitch - rest.pitch).abs() >= self.pose_deg
            || (now.mouth_open - rest.mouth_open).abs() >= self.mouth
            || ratio >= self.inter_eye_ratio
            || ratio <= 1.0 / self.inter_eye_ratio
    }
}

/// When an action counts as done.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Yaw in degrees a turn must reach (default 15).
    pub turn_deg: f32,
    /// Pitch in degrees a look up or down must reach (default 10).
    pub nod_deg: f32,
    /// A turn or nod completes when the head is back within this many degrees of frontal
    /// (default 8).
    pub return_deg: f32,
    /// A blink closes the eyes to at most this fraction of the open-eye baseline (default 0.8).
    pub blink_ratio: f32,
    /// ... and completes when they reopen to at least this fraction of it (default 0.9).
    pub blink_reopen_ratio: f32,
    /// Mouth-open ratio the mouth must reach (default 0.25: a wide-open mouth reads 0.3 and more, a closed one 0.0-0.1).
    pub mouth_open: f32,
    /// ... and completes when it closes to at most this (default 0.15).
    pub mouth_closed: f32,
    /// Move closer: growth of the inter-eye distance over its value at the start of the step
    /// (default 1.25); completes as soon as it is reached.
    pub closer_ratio: f32,
    /// Face samples whose median eye aspect ratio is the open-eye baseline, taken before the first
    /// step (default 10; 0 counts as 1).
    pub baseline_samples: usize,
    /// The asked motion must begin (cross its threshold) within this long of the step's start or
    /// its last resume after a pause (default 5 s), even when the step's time limit is longer. A person reacts to
    /// the instruction; a looped recording only hits the asked action when its loop happens to.
    pub reaction: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            turn_deg: 15.0,
            nod_deg: 10.0,
            return_deg: 8.0,
            blink_ratio: 0.8,
            blink_reopen_ratio: 0.9,
            mouth_open: 0.25,
            mouth_closed: 0.15,
            closer_ratio: 1.25,
            baseline_samples: 10,
            reaction: Duration::from_secs(5),
        }
    }
}

/// What the judge saw during one step; recorded with the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepEvidence {
    pub action: Action,
    /// The extreme value reached in the asked direction over the judged samples: yaw (max for
    /// turn_left, min for turn_right), pitch (max for look_up, min for look_down), EAR / baseline
    /// (min), mouth-open ratio (max), inter-eye distance / its value at the start (max).
    pub peak: f32,
    /// The value `peak` had to reach, in the same units (negative for turn_right and look_down).
    pub threshold: f32,
    /// Face samples judged (not counting those while paused or with no face).
    pub samples: usize,
    /// Of those, the samples from the motion's onset on (all of them for a blink, which is
    /// analysed at the full rate from the step's start).
    pub moving_samples: usize,
    /// When the step started, in ms since the judge started.
    pub started_at_ms: u64,
    /// Wall time from the start of the step to its end, paused time included.
    pub elapsed_ms: u64,
    /// Time the step's clock was stopped by blocking conditions.
    pub paused_ms: u64,
    /// Frame time (ms since the judge started) when the face first moved from where it was at
    /// the step's start ([`MotionOnset`]): from then on every frame is analysed.
    pub onset_at_ms: Option<u64>,
    /// Frame time (ms since the judge started) when the threshold was first crossed.
    pub crossed_at_ms: Option<u64>,
    /// Frame time (ms since the judge started) when the action was completed.
    pub completed_at_ms: Option<u64>,
    /// The person went beyond the threshold the opposite way (turned right when asked to turn
    /// left, looked down when asked to look up, moved away by the inverse of `closer_ratio` when
    /// asked to move closer). It does not fail the step (people mirror themselves) and does not
    /// count.
    pub wrong_direction: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JudgeEvent {
    /// A step starts (announce it): `remaining` is its whole time limit.
    Started {
        step: ChallengeStep,
        remaining: Duration,
    },
    /// The running step's clock stopped because judging is blocked.
    Paused { step_id: u32, because: ReasonCode },
    /// The block cleared; the step's clock runs again with `remaining` left.
    Resumed { step_id: u32, remaining: Duration },
    Passed {
        step_id: u32,
        evidence: StepEvidence,
    },
    Failed {
        step_id: u32,
        reason: ReasonCode,
        evidence: StepEvidence,
    },
    /// All steps judged.
    Finished { passed: usize, failed: usize },
}

struct Running {
    started_at: Instant,
    paused_total: Duration,
    paused_since: Option<Instant>,
    /// Move closer: inter-eye distance at the start of the step.
    reference_px: Option<f32>,
    crossed: bool,
    /// The step's first judged sample: where the face rested when the step began.
    rest: Option<FaceSample>,
    /// The face has moved from `rest` (the motion began; see [`MotionOnset`]).
    moving: bool,
    /// Start of the current reaction window: the step's start, or its last resume.
    reacting_since: Instant,
    evidence: StepEvidence,
}

impl Running {
    /// Unpaused time left at `at` (only meaningful while not paused).
    fn remaining(&self, limit: Duration, at: Instant) -> Duration {
        let active = at
            .saturating_duration_since(self.started_at)
            .saturating_sub(self.paused_total);
        limit.saturating_sub(active)
    }
}

enum Phase {
    /// No call yet.
    Idle,
    /// Waiting to start step `index`; its lead-in counts from `since`.
    Waiting {
        since: Instant,
    },
    Running(Box<Running>),
    Finished,
}

/// Runs one plan; see the module documentation.
pub struct ChallengeJudge {
    plan: ChallengePlan,
    th: Thresholds,
    origin: Option<Instant>,
    /// The blocking condition from the latest `on_tick`.
    blocking: Option<ReasonCode>,
    baseline_ears: Vec<f32>,
    baseline_ear: Option<f32>,
    baseline_mouths: Vec<f32>,
    /// The person's resting mouth-open ratio (median before the first step): some people's lips
    /// rest slightly apart, so "closed again" is judged against it, not only the fixed default.
    baseline_mouth: Option<f32>,
    last_inter_eye_px: Option<f32>,
    index: usize,
    phase: Phase,
    outcomes: Vec<Option<bool>>,
    evidence: Vec<Option<StepEvidence>>,
}

impl ChallengeJudge {
    pub fn new(plan: ChallengePlan, thresholds: Thresholds) -> Self {
        let n = plan.steps.len();
        ChallengeJudge {
            plan,
            th: thresholds,
            origin: None,
            blocking: None,
            baseline_ears: Vec::new(),
            baseline_ear: None,
            baseline_mouths: Vec::new(),
            baseline_mouth: None,
            last_inter_eye_px: None,
            index: 0,
            phase: Phase::Idle,
            outcomes: vec![None; n],
            evidence: vec![None; n],
        }
    }

    /// Feeds one analysed frame. The first call (of either kind) starts the plan: the lead-in of
    /// step 1 begins, but steps only start once the open-eye baseline has `baseline_samples` face
    /// samples. Samples with `face == false`, samples while the step is paused, and the sample on
    /// which a step starts are not judged. Judging uses the blocking condition of the latest
    /// `on_tick`.
    pub(crate) fn on_sample(&mut self, s: &FaceSample) -> Vec<JudgeEvent> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Finished) {
            return out;
        }
        self.begin(s.at);
        if s.face {
            self.learn(s);
        }
        self.advance(s.at, s.face, &mut out);
        if s.face && self.judge(s) {
            self.end_step(s.at, None, &mut out);
            self.advance(s.at, true, &mut out);
        }
        out
    }

    /// Time passes; `blocking` is a condition that prevents judging now (no face, too dark, frozen
    /// camera, poor network). While it is `Some`, the running step's clock is stopped (`Paused`
    /// once, `Resumed` once it clears; paused time is recorded in the evidence) and no step can
    /// start. A step whose time ran out before `at` fails at its deadline.
    pub fn on_tick(&mut self, at: Instant, blocking: Option<ReasonCode>) -> Vec<JudgeEvent> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Finished) {
            return out;
        }
        self.begin(at);
        // Time up to `at` passed under the previous blocking condition.
        self.advance(at, false, &mut out);
        self.blocking = blocking;
        if let Phase::Running(r) = &mut self.phase {
            let step = &self.plan.steps[self.index];
            match (blocking, r.paused_since) {
                (Some(because), None) => {
                    r.paused_since = Some(at);
                    out.push(JudgeEvent::Paused {
                        step_id: step.id,
                        because,
                    });
                }
                (None, Some(since)) => {
                    r.paused_total += at.saturating_duration_since(since);
                    r.paused_since = None;
                    // The instruction is shown again: the person gets a full reaction window.
                    r.reacting_since = at;
                    out.push(JudgeEvent::Resumed {
                        step_id: step.id,
                        remaining: r.remaining(step.time_limit, at),
                    });
                }
                _ => {}
            }
        }
        self.advance(at, true, &mut out);
        out
    }

    /// Whether every step has been judged (`Finished` was emitted).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// Every step of the plan with its outcome: `Some(true)` passed, `Some(false)` failed, `None`
    /// not judged yet.
    pub fn results(&self) -> Vec<(ChallengeStep, Option<bool>)> {
        self.plan
            .steps
            .iter()
            .cloned()
            .zip(self.outcomes.iter().copied())
            .collect()
    }

    /// The evidence of each step of the plan, `None` for steps not judged yet.
    pub fn evidence(&self) -> &[Option<StepEvidence>] {
        &self.evidence
    }

    /// The open-eye baseline (median EAR), once learnt.
    pub(crate) fn baseline_ear(&self) -> Option<f32> {
        self.baseline_ear
    }

    /// Whether the running step waits for the person to start moving: a turn, nod, open mouth or
    /// move closer whose face has not yet moved from where it was when the step began. Its
    /// frames can be analysed at a lower rate until it does (`LivenessSession::analysis_needs`).
    /// A blink is its own onset (100-300 ms), so it is never waiting; nor is the spoken step.
    pub(crate) fn awaiting_motion(&self) -> bool {
        match &self.phase {
            Phase::Running(r) => !r.moving,
            _ => false,
        }
    }

    /// The step that is running now, if any.
    pub(crate) fn running_step(&self) -> Option<&ChallengeStep> {
        match self.phase {
            Phase::Running(_) => self.plan.steps.get(self.index),
            _ => None,
        }
    }

    /// Ends the running step with a result judged outside the face samples (the spoken step,
    /// by `speech`): passed when `failure` is `None`. `peak` goes into the evidence (the
    /// correlation for the spoken step). Nothing happens when no step is running or it is paused.
    pub(crate) fn end_running(
        &mut self,
        at: Instant,
        failure: Option<ReasonCode>,
        peak: f32,
    ) -> Vec<JudgeEvent> {
        let mut out = Vec::new();
        let origin = self.origin.unwrap_or(at);
        let Phase::Running(r) = &mut self.phase else {
            return out;
        };
        if r.paused_since.is_some() {
            return out;
        }
        r.evidence.peak = peak;
        if failure.is_none() {
            let at_ms = at.saturating_duration_since(origin).as_millis() as u64;
            r.evidence.crossed_at_ms = Some(at_ms);
            r.evidence.completed_at_ms = Some(at_ms);
        }
        self.end_step(at, failure, &mut out);
        self.advance(at, true, &mut out);
        out
    }

    fn begin(&mut self, at: Instant) {
        if matches!(self.phase, Phase::Idle) {
            self.origin = Some(at);
            self.phase = Phase::Waiting { since: at };
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        let origin = self.origin.unwrap_or(at);
        at.saturating_duration_since(origin).as_millis() as u64
    }

    /// Updates the open-eye baseline (before the first step) and the latest inter-eye distance.
    fn learn(&mut self, s: &FaceSample) {
        if s.inter_eye_px.is_finite() && s.inter_eye_px > 0.0 {
            self.last_inter_eye_px = Some(s.inter_eye_px);
        }
        let before_first = self.index == 0 && matches!(self.phase, Phase::Waiting { .. });
        if self.baseline_ear.is_some() || !before_first {
            return;
        }
        if !(s.ear.is_finite() && s.ear > 0.0) {
            return;
        }
        self.baseline_ears.push(s.ear);
        if s.mouth_open.is_finite() {
            self.baseline_mouths.push(s.mouth_open);
        }
        if self.baseline_ears.len() >= self.th.baseline_samples.max(1) {
            self.baseline_ear = median(std::mem::take(&mut self.baseline_ears));
            self.baseline_mouth = median(std::mem::take(&mut self.baseline_mouths));
        }
    }

    /// Mouth-open ratio at or below which an open mouth counts as closed again: the fixed
    /// default, or a little above this person's resting ratio, whichever is higher, and always
    /// well below the open threshold.
    fn mouth_closed_level(&self) -> f32 {
        let rest = self.baseline_mouth.unwrap_or(0.0) + MOUTH_REST_MARGIN;
        self.th
            .mouth_closed
            .max(rest)
            .min(self.th.mouth_open - MOUTH_OPEN_GAP)
    }

    /// Ends timed-out steps, starts due steps (when `can_start` and nothing blocks) and emits
    /// `Finished` after the last one.
    fn advance(&mut self, at: Instant, can_start: bool, out: &mut Vec<JudgeEvent>) {
        loop {
            match &self.phase {
                Phase::Idle | Phase::Finished => return,
                Phase::Running(r) => {
                    if r.paused_since.is_some() {
                        return;
                    }
                    let mut deadline =
                        r.started_at + r.paused_total + self.plan.steps[self.index].time_limit;
                    // The spoken step's reaction (voice onset) is the speech judge's to time.
                    let spoken = r.evidence.action == Action::SpeakDigits;
                    if !r.crossed && !spoken {
                        deadline = deadline.min(r.reacting_since + self.th.reaction);
                    }
                    if at < deadline {
                        return;
                    }
                    self.end_step(deadline, Some(ReasonCode::ChallengeTimeout), out);
                }
                Phase::Waiting { since } => {
                    let Some(step) = self.plan.steps.get(self.index) else {
                        let passed = self.outcomes.iter().filter(|o| **o == Some(true)).count();
                        let failed = self.outcomes.iter().filter(|o| **o == Some(false)).count();
                        out.push(JudgeEvent::Finished { passed, failed });
                        self.phase = Phase::Finished;
                        return;
                    };
                    let due = at >= *since + step.lead_in;
                    if !(due && can_start && self.blocking.is_none() && self.baseline_ear.is_some())
                    {
                        return;
                    }
                    let (threshold, peak) = match step.action {
                        Action::TurnLeft => (self.th.turn_deg, 0.0),
                        Action::TurnRight => (-self.th.turn_deg, 0.0),
                        Action::LookUp => (self.th.nod_deg, 0.0),
                        Action::LookDown => (-self.th.nod_deg, 0.0),
                        Action::Blink => (self.th.blink_ratio, 1.0),
                        Action::OpenMouth => (self.th.mouth_open, 0.0),
                        Action::MoveCloser => (self.th.closer_ratio, 1.0),
                        Action::SpeakDigits => (
                            super::speech::SpeechThresholds::default().min_correlation,
                            0.0,
                        ),
                    };
                    let evidence = StepEvidence {
                        action: step.action,
                        peak,
                        threshold,
                        samples: 0,
                        moving_samples: 0,
                        started_at_ms: self.ms(at),
                        elapsed_ms: 0,
                        paused_ms: 0,
                        onset_at_ms: None,
                        crossed_at_ms: None,
                        completed_at_ms: None,
                        wrong_direction: false,
                    };
                    out.push(JudgeEvent::Started {
                        step: step.clone(),
                        remaining: step.time_limit,
                    });
                    self.phase = Phase::Running(Box::new(Running {
                        started_at: at,
                        paused_total: Duration::ZERO,
                        paused_since: None,
                        reference_px: self.last_inter_eye_px,
                        crossed: false,
                        rest: None,
                        // A blink and the spoken step are analysed at the full rate throughout.
                        moving: matches!(step.action, Action::Blink | Action::SpeakDigits),
                        reacting_since: at,
                        evidence,
                    }));
                }
            }
        }
    }

    /// Judges one face sample against the running step; true when it completes the action.
    fn judge(&mut self, s: &FaceSample) -> bool {
        let th = self.th;
        let origin = self.origin.unwrap_or(s.at);
        let Some(baseline) = self.baseline_ear else {
            return false;
        };
        let closed_mouth = self.mouth_closed_level();
        let Phase::Running(r) = &mut self.phase else {
            return false;
        };
        if r.paused_since.is_some() || s.at <= r.started_at {
            return false;
        }
        let action = r.evidence.action;
        // (value, larger is the asked direction, threshold crossed, back / completed, wrong way)
        let (value, up, crossed, back, wrong) = match action {
            Action::TurnLeft => (
                s.yaw,
                true,
                s.yaw >= th.turn_deg,
                s.yaw.abs() <= th.return_deg,
                s.yaw <= -th.turn_deg,
            ),
            Action::TurnRight => (
                s.yaw,
                false,
                s.yaw <= -th.turn_deg,
                s.yaw.abs() <= th.return_deg,
                s.yaw >= th.turn_deg,
            ),
            Action::LookUp => (
                s.pitch,
                true,
                s.pitch >= th.nod_deg,
                s.pitch.abs() <= th.return_deg,
                s.pitch <= -th.nod_deg,
            ),
            Action::LookDown => (
                s.pitch,
                false,
                s.pitch <= -th.nod_deg,
                s.pitch.abs() <= th.return_deg,
                s.pitch >= th.nod_deg,
            ),
            Action::Blink => {
                let v = s.ear / baseline;
                (
                    v,
                    false,
                    v <= th.blink_ratio,
                    v >= th.blink_reopen_ratio,
                    false,
                )
            }
            Action::OpenMouth => (
                s.mouth_open,
                true,
                s.mouth_open >= th.mouth_open,
                s.mouth_open <= closed_mouth,
                false,
            ),
            // Judged by `speech` from the voice and the mouth; see `end_running`.
            Action::SpeakDigits => return false,
            Action::MoveCloser => {
                if !(s.inter_eye_px.is_finite() && s.inter_eye_px > 0.0) {
                    return false;
                }
                let reference = *r.reference_px.get_or_insert(s.inter_eye_px);
                let v = s.inter_eye_px / reference;
                (
                    v,
                    true,
                    v >= th.closer_ratio,
                    true,
                    v <= 1.0 / th.closer_ratio,
                )
            }
        };
        if !value.is_finite() {
            return false;
        }
        let ev = &mut r.evidence;
        let more_extreme = if up { value > ev.peak } else { value < ev.peak };
        if ev.samples == 0 || more_extreme {
            ev.peak = value;
        }
        ev.samples += 1;
        ev.wrong_direction |= wrong;
        let at_ms = s.at.saturating_duration_since(origin).as_millis() as u64;
        if !r.moving {
            let rest = *r.rest.get_or_insert(*s);
            // A face that rested near the threshold may cross it (or go the wrong way) without
            // moving far from where it rested: that is motion too.
            if crossed || wrong || MotionOnset::DEFAULT.moved(&rest, s) {
                r.moving = true;
                ev.onset_at_ms = Some(at_ms);
            }
        }
        if r.moving {
            ev.moving_samples += 1;
        }
        if !r.crossed {
            if !crossed {
                return false;
            }
            r.crossed = true;
            ev.crossed_at_ms = Some(at_ms);
            if action != Action::MoveCloser {
                return false;
            }
        } else if !back {
            return false;
        }
        ev.completed_at_ms = Some(at_ms);
        true
    }

    /// Ends the running step at `end`: passed when `reason` is None, else failed with it.
    fn end_step(&mut self, end: Instant, reason: Option<ReasonCode>, out: &mut Vec<JudgeEvent>) {
        let Phase::Running(r) = std::mem::replace(&mut self.phase, Phase::Waiting { since: end })
        else {
            return;
        };
        let mut evidence = r.evidence;
        let paused = r.paused_total
            + r.paused_since
                .map_or(Duration::ZERO, |p| end.saturating_duration_since(p));
        evidence.elapsed_ms = end.saturating_duration_since(r.started_at).as_millis() as u64;
        evidence.paused_ms = paused.as_millis() as u64;
        let step_id = self.plan.steps[self.index].id;
        self.outcomes[self.index] = Some(reason.is_none());
        self.evidence[self.index] = Some(evidence.clone());
        self.index += 1;
        out.push(match reason {
            None => JudgeEvent::Passed { step_id, evidence },
            Some(reason) => JudgeEvent::Failed {
                step_id,
                reason,
                evidence,
            },
        });
    }
}

/// Resting mouth ratio plus this still counts as closed.
const MOUTH_REST_MARGIN: f32 = 0.06;
/// "Closed" stays at least this far below the open threshold, so one reading cannot be both.
const MOUTH_OPEN_GAP: f32 = 0.08;

fn median(mut v: Vec<f32>) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: u64 = 15;

    /// A face looking straight at the camera with open eyes and closed mouth.
    fn neutral(at: Instant) -> FaceSample {
        FaceSample {
            at,
            face: true,
            yaw: 0.0,
            pitch: 0.0,
            ear: 0.39,
            mouth_open: 0.05,
            inter_eye_px: 60.0,
        }
    }

    /// 0 -> `peak` over 0.5 s from `start`, held for 1 s, back to 0 over 0.5 s (2 s in all).
    fn motion(t: f64, start: f64, rest: f32, peak: f32) -> f32 {
        let d = t - start;
        let f = if d <= 0.0 || d >= 2.0 {
            0.0
        } else if d < 0.5 {
            d / 0.5
        } else if d <= 1.5 {
            1.0
        } else {
            (2.0 - d) / 0.5
        };
        rest + (peak - rest) * f as f32
    }

    struct Run {
        t0: Instant,
        judge: ChallengeJudge,
        /// (ms since t0, event)
        events: Vec<(u64, JudgeEvent)>,
    }

    impl Run {
        fn new(plan: ChallengePlan) -> Run {
            Run {
                t0: Instant::now(),
                judge: ChallengeJudge::new(plan, Thresholds::default()),
                events: Vec::new(),
            }
        }

        /// Feeds frames `from..to` at 15 fps (exact nanosecond times): for each frame `shape`
        /// edits a neutral sample given the time in seconds and returns the blocking condition;
        /// then `on_sample` and `on_tick` are called.
        fn frames(
            &mut self,
            frames: std::ops::Range<u64>,
            mut shape: impl FnMut(f64, &mut FaceSample) -> Option<ReasonCode>,
        ) {
            for k in frames {
                let offset = Duration::from_nanos(k * 1_000_000_000 / FPS);
                let at = self.t0 + offset;
                let mut s = neutral(at);
                let blocking = shape(k as f64 / FPS as f64, &mut s);
                let ms = offset.as_millis() as u64;
                for e in self.judge.on_sample(&s) {
                    self.events.push((ms, e));
                }
                for e in self.judge.on_tick(at, blocking) {
                    self.events.push((ms, e));
                }
            }
        }

        fn started_ms(&self) -> Vec<u64> {
            self.events
                .iter()
                .filter(|(_, e)| matches!(e, JudgeEvent::Started { .. }))
                .map(|(ms, _)| *ms)
                .collect()
        }

        fn outcome(&self) -> &JudgeEvent {
            self.events
                .iter()
                .map(|(_, e)| e)
                .find(|e| matches!(e, JudgeEvent::Passed { .. } | JudgeEvent::Failed { .. }))
                .expect("no outcome")
        }

        fn passed(&self) -> StepEvidence {
            match self.outcome() {
                JudgeEvent::Passed { evidence, .. } => evidence.clone(),
                e => panic!("not passed: {e:?}\n{:#?}", self.events),
            }
        }
    }

    /// A run whose steps wait the whole time limit for the motion to begin (tests of the time
    /// limit itself; the default reaction window ends motionless steps earlier).
    fn patient(mut run: Run) -> Run {
        run.judge.th.reaction = Duration::from_secs(3600);
        run
    }

    fn one_step(action: Action) -> Run {
        Run::new(ChallengePlan::from_actions(
            &[action],
            Duration::from_secs(6),
        ))
    }

    /// No motion within the reaction window ends the step then, not at the longer time limit; a
    /// motion begun in time may finish later; paused time does not count.
    #[test]
    fn the_motion_must_begin_within_the_reaction_window() {
        let mut run = one_step(Action::TurnLeft);
        run.frames(0..150, |_, _| None);
        // Started at 600 ms; 5 s to begin moving.
        assert!(
            matches!(
                run.outcome(),
                JudgeEvent::Failed { reason: ReasonCode::ChallengeTimeout, evidence, .. }
                    if evidence.elapsed_ms == 5000 && evidence.crossed_at_ms.is_none()
            ),
            "{:?}",
            run.outcome()
        );
        let mut run = one_step(Action::TurnLeft);
        run.frames(0..150, |t, s| {
            // Begins 4 s after the step started: crosses 15 degrees 4.3 s in (inside the
            // reaction window) and is back within 8 degrees 5.8 s in (inside the 6 s limit).
            s.yaw = motion(t, 4.6, 0.0, 25.0);
            None
        });
        assert!(
            matches!(run.outcome(), JudgeEvent::Passed { .. }),
            "{:?}",
            run.outcome()
        );
    }

    /// Lips that rest slightly apart (0.16) close "again" at their own rest, not at the fixed
    /// 0.15; a mouth that never closes does not pass.
    #[test]
    fn open_mouth_closes_against_the_resting_mouth() {
        for (rest, passes) in [(0.16_f32, true), (0.05, true)] {
            let mut run = one_step(Action::OpenMouth);
            run.frames(0..150, |t, s| {
                s.mouth_open = motion(t, 1.0, rest, 0.45);
                None
            });
            assert_eq!(
                matches!(run.outcome(), JudgeEvent::Passed { .. }),
                passes,
                "rest {rest}"
            );
        }
        let mut run = one_step(Action::OpenMouth);
        run.frames(0..150, |t, s| {
            s.mouth_open = if t < 0.7 { 0.05 } else { 0.4 };
            None
        });
        assert!(matches!(run.outcome(), JudgeEvent::Failed { .. }));
    }

    #[test]
    fn turn_left_passes_with_exact_evidence() {
        let mut run = one_step(Action::TurnLeft);
        run.frames(0..150, |t, s| {
            s.yaw = motion(t, 1.0, 0.0, 25.0);
            None
        });
        // Baseline from frames 0..=9; the step starts on frame 9 (600 ms), lead-in 0.
        assert_eq!(run.started_ms(), vec![600]);
        let ev = run.passed();
        assert_eq!(ev.action, Action::TurnLeft);
        assert_eq!(ev.peak, 25.0);
        assert_eq!(ev.threshold, 15.0);
        assert_eq!(ev.started_at_ms, 600);
        // yaw 13.3 on frame 19, 16.7 on frame 20 (1333 ms); back to 6.7 (<= 8) on frame 43.
        // yaw 3.3 on frame 16, 6.7 on frame 17 (1133 ms): the motion began (`MotionOnset`).
        assert_eq!(ev.onset_at_ms, Some(1133));
        assert_eq!(ev.crossed_at_ms, Some(1333));
        assert_eq!(ev.completed_at_ms, Some(2866));
        assert_eq!(ev.elapsed_ms, 2266);
        assert_eq!(ev.paused_ms, 0);
        assert_eq!(ev.samples, 43 - 9);
        // Frames 17 to 43.
        assert_eq!(ev.moving_samples, 43 - 16);
        assert!(!ev.wrong_direction);
        assert_eq!(
            run.events.last().unwrap(),
            &(
                2866,
                JudgeEvent::Finished {
                    passed: 1,
                    failed: 0
                }
            )
        );
        assert!(run.judge.is_finished());
        assert_eq!(run.judge.results()[0].1, Some(true));
        assert_eq!(run.judge.evidence()[0].as_ref(), Some(&ev));
    }

    #[test]
    fn a_step_waits_for_the_motion_until_the_face_moves_and_a_blink_never_waits() {
        let mut run = one_step(Action::LookUp);
        let shape = |t: f64, s: &mut FaceSample| {
            s.pitch = motion(t, 1.0, 0.0, 20.0);
            // The rest of the face sways a little, which is not a motion.
            s.yaw = 1.5 * (t * 5.0).sin() as f32;
            None
        };
        run.frames(0..9, shape);
        assert!(!run.judge.awaiting_motion(), "no step before the baseline");
        run.frames(9..17, shape);
        // Pitch 0 to 20 over 0.5 s from 1 s: 2.7 on frame 16.
        assert!(run.judge.awaiting_motion());
        run.frames(17..18, shape);
        // 5.3 on frame 17: moved.
        assert!(!run.judge.awaiting_motion());
        run.frames(18..150, shape);
        assert_eq!(run.passed().onset_at_ms, Some(1133));

        let mut run = one_step(Action::Blink);
        run.frames(0..12, |_, _| None);
        assert!(run.judge.running_step().is_some());
        assert!(!run.judge.awaiting_motion());

        // A face that rests near the threshold crosses it without moving 4 degrees from where it
        // rested: the crossing is the onset.
        let mut run = one_step(Action::LookUp);
        run.frames(0..150, |t, s| {
            s.pitch = if (1.0..1.5).contains(&t) { 10.5 } else { 7.0 };
            None
        });
        let ev = run.passed();
        assert_eq!(ev.onset_at_ms, ev.crossed_at_ms);
        assert_eq!(ev.onset_at_ms, Some(1000));
    }

    #[test]
    fn every_action_passes_with_its_motion() {
        type Shape = fn(f64, &mut FaceSample);
        let cases: [(Action, Shape, f32, f32); 7] = [
            (
                Action::TurnLeft,
                |t, s| s.yaw = motion(t, 1.0, 0.0, 25.0),
                25.0,
                15.0,
            ),
            (
                Action::TurnRight,
                |t, s| s.yaw = motion(t, 1.0, 0.0, -25.0),
                -25.0,
                -15.0,
            ),
            (
                Action::LookUp,
                |t, s| s.pitch = motion(t, 1.0, 0.0, 20.0),
                20.0,
                10.0,
            ),
            (
                Action::LookDown,
                |t, s| s.pitch = motion(t, 1.0, 0.0, -20.0),
                -20.0,
                -10.0,
            ),
            (
                Action::Blink,
                |t, s| s.ear = motion(t, 1.0, 0.39, 0.27),
                0.27 / 0.39,
                0.8,
            ),
            (
                Action::OpenMouth,
                |t, s| s.mouth_open = motion(t, 1.0, 0.05, 0.5),
                0.5,
                0.25,
            ),
            // Completes as soon as it crosses: 60 px -> 80 px at 1.0 s.
            (
                Action::MoveCloser,
                |t, s| s.inter_eye_px = if t >= 1.0 { 80.0 } else { 60.0 },
                80.0 / 60.0,
                1.25,
            ),
        ];
        for (action, shape, peak, threshold) in cases {
            let mut run = one_step(action);
            run.frames(0..150, |t, s| {
                shape(t, s);
                None
            });
            let ev = run.passed();
            assert_eq!(ev.action, action);
            assert!((ev.peak - peak).abs() < 1e-4, "{action:?}: {ev:?}");
            assert_eq!(ev.threshold, threshold, "{action:?}");
            let crossed = ev.crossed_at_ms.unwrap();
            let completed = ev.completed_at_ms.unwrap();
            assert!((1000..1600).contains(&crossed), "{action:?}: {ev:?}");
            if action == Action::MoveCloser {
                assert_eq!(completed, crossed);
            } else {
                assert!((2500..3000).contains(&completed), "{action:?}: {ev:?}");
            }
            assert!(!ev.wrong_direction, "{action:?}");
        }
    }

    #[test]
    fn wrong_direction_times_out_and_is_recorded() {
        let mut run = patient(one_step(Action::TurnLeft));
        // Turns to the person's own right (image-left) instead.
        run.frames(0..150, |t, s| {
            s.yaw = motion(t, 1.0, 0.0, -25.0);
            None
        });
        match run.outcome() {
            JudgeEvent::Failed {
                step_id,
                reason,
                evidence,
            } => {
                assert_eq!(*step_id, 1);
                assert_eq!(*reason, ReasonCode::ChallengeTimeout);
                assert!(evidence.wrong_direction);
                assert_eq!(evidence.crossed_at_ms, None);
                assert_eq!(evidence.completed_at_ms, None);
                assert_eq!(evidence.peak, 0.0);
                assert_eq!(evidence.elapsed_ms, 6000);
            }
            e => panic!("{e:?}"),
        }
        // Started at 600 ms, deadline 6600 ms: noticed on frame 99 (6600 ms exactly).
        let failed_at = run
            .events
            .iter()
            .find(|(_, e)| matches!(e, JudgeEvent::Failed { .. }))
            .unwrap()
            .0;
        assert_eq!(failed_at, 6600);
        assert_eq!(
            run.events.last().unwrap().1,
            JudgeEvent::Finished {
                passed: 0,
                failed: 1
            }
        );
    }

    #[test]
    fn mirrored_attempt_then_correct_turn_passes() {
        let mut run = one_step(Action::TurnRight);
        run.frames(0..150, |t, s| {
            s.yaw = motion(t, 1.0, 0.0, 25.0) + motion(t, 3.5, 0.0, -25.0);
            None
        });
        let ev = run.passed();
        assert!(ev.wrong_direction);
        assert_eq!(ev.peak, -25.0);
        assert!(ev.crossed_at_ms.unwrap() > 3500);
    }

    #[test]
    fn blink_is_judged_against_the_sessions_baseline() {
        let first = [0.39, 0.38, 0.40, 0.39, 0.20, 0.39, 0.40, 0.38, 0.39, 0.39];
        for (dip, passes) in [(0.28, true), (0.34, false)] {
            let mut run = one_step(Action::Blink);
            run.frames(0..150, |t, s| {
                let k = (t * FPS as f64).round() as usize;
                if k < first.len() {
                    s.ear = first[k];
                } else if (1.5..1.7).contains(&t) {
                    s.ear = dip;
                }
                None
            });
            // The median ignores the one blink among the first ten samples.
            assert!((run.judge.baseline_ear().unwrap() - 0.39).abs() < 1e-6);
            match (passes, run.outcome()) {
                (true, JudgeEvent::Passed { evidence, .. }) => {
                    assert!((evidence.peak - 0.28 / 0.39).abs() < 1e-4);
                    // First frame at >= 1.5 s is frame 23 (1533 ms); reopened on frame 26.
                    assert_eq!(evidence.crossed_at_ms, Some(1533));
                    assert_eq!(evidence.completed_at_ms, Some(1733));
                }
                (
                    false,
                    JudgeEvent::Failed {
                        reason, evidence, ..
                    },
                ) => {
                    assert_eq!(*reason, ReasonCode::ChallengeTimeout);
                    assert!((evidence.peak - 0.34 / 0.39).abs() < 1e-4);
                    assert_eq!(evidence.crossed_at_ms, None);
                }
                (_, e) => panic!("dip {dip}: {e:?}"),
            }
        }
    }

    #[test]
    fn blink_threshold_follows_a_low_baseline() {
        // Narrow eyes: open at 0.30. 0.27 is "closed" in absolute terms but only 0.9x here.
        for (dip, passes) in [(0.27, false), (0.22, true)] {
            let mut run = one_step(Action::Blink);
            run.frames(0..150, |t, s| {
                s.ear = if (1.5..1.7).contains(&t) { dip } else { 0.30 };
                None
            });
            assert_eq!(
                matches!(run.outcome(), JudgeEvent::Passed { .. }),
                passes,
                "{dip}"
            );
        }
    }

    fn pause_scenario(block: bool) -> Run {
        let mut run = patient(one_step(Action::TurnLeft));
        run.frames(0..200, |t, s| {
            s.yaw = motion(t, 6.5, 0.0, 25.0);
            if !block {
                return None;
            }
            if (2.0..4.0).contains(&t) {
                s.face = false;
                Some(ReasonCode::FaceNotFound)
            } else if (4.0..6.0).contains(&t) {
                // The face is back but it is too dark: still blocked, no second Paused.
                Some(ReasonCode::LightingTooDark)
            } else {
                None
            }
        });
        run
    }

    #[test]
    fn blocking_pauses_the_deadline() {
        let run = pause_scenario(true);
        let pauses: Vec<_> = run
            .events
            .iter()
            .filter(|(_, e)| matches!(e, JudgeEvent::Paused { .. } | JudgeEvent::Resumed { .. }))
            .collect();
        assert_eq!(
            pauses,
            vec![
                &(
                    2000,
                    JudgeEvent::Paused {
                        step_id: 1,
                        because: ReasonCode::FaceNotFound
                    }
                ),
                &(
                    6000,
                    JudgeEvent::Resumed {
                        step_id: 1,
                        remaining: Duration::from_millis(4600)
                    }
                ),
            ]
        );
        let ev = run.passed();
        assert_eq!(ev.paused_ms, 4000);
        // The action comes around 8 s of wall time, past the 6.6 s an unpaused deadline allows.
        assert_eq!(ev.completed_at_ms, Some(8400));
        assert_eq!(ev.elapsed_ms, 8400 - 600);
        assert_eq!(
            run.events.last().unwrap().1,
            JudgeEvent::Finished {
                passed: 1,
                failed: 0
            }
        );

        // The same stream without the block times out at 6.6 s.
        let run = pause_scenario(false);
        assert!(matches!(
            run.outcome(),
            JudgeEvent::Failed { reason: ReasonCode::ChallengeTimeout, evidence, .. }
                if evidence.elapsed_ms == 6000
        ));
    }

    #[test]
    fn samples_while_paused_are_not_judged() {
        let mut run = patient(one_step(Action::TurnLeft));
        run.frames(0..200, |t, s| {
            s.yaw = motion(t, 2.0, 0.0, 25.0);
            (1.0..5.0)
                .contains(&t)
                .then_some(ReasonCode::LightingTooDark)
        });
        // The whole turn happened in the dark: the step times out at 600 + 6000 + 4000 ms.
        match run.outcome() {
            JudgeEvent::Failed { evidence, .. } => {
                assert_eq!(evidence.paused_ms, 4000);
                assert_eq!(evidence.elapsed_ms, 10_000);
                assert_eq!(evidence.peak, 0.0);
                assert_eq!(evidence.crossed_at_ms, None);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn steps_wait_for_lead_in_baseline_and_no_block() {
        let mut plan = ChallengePlan::from_actions(
            &[Action::OpenMouth, Action::TurnLeft],
            Duration::from_secs(6),
        );
        plan.steps[0].lead_in = Duration::from_millis(1000);
        plan.steps[1].lead_in = Duration::from_millis(500);
        let mut run = Run::new(plan);
        run.frames(0..250, |t, s| {
            s.mouth_open = motion(t, 1.0, 0.05, 0.5);
            s.yaw = motion(t, 8.0, 0.0, 25.0);
            // Blocked from 3.2 s to 6.0 s, over the end of step 2's lead-in.
            (3.2..6.0).contains(&t).then_some(ReasonCode::NetworkFrozen)
        });
        // Step 1: lead-in of 1 s from the first call (the baseline is ready at 600 ms), so it
        // starts on frame 15; it completes before the block. Step 2's lead-in (500 ms) ends
        // before 3.5 s, but the block holds it back until 6.0 s.
        let ev1 = match &run.events[1].1 {
            JudgeEvent::Passed { evidence, .. } => evidence.clone(),
            e => panic!("{e:?}"),
        };
        let end1 = ev1.completed_at_ms.unwrap();
        assert!(end1 < 3200, "{ev1:?}");
        assert_eq!(run.started_ms(), vec![1000, 6000]);
        assert!(!run
            .events
            .iter()
            .any(|(_, e)| matches!(e, JudgeEvent::Paused { .. })));
        assert_eq!(
            run.events.last().unwrap().1,
            JudgeEvent::Finished {
                passed: 2,
                failed: 0
            }
        );
    }

    #[test]
    fn lead_in_counts_from_the_end_of_the_previous_step() {
        let mut plan = ChallengePlan::from_actions(
            &[Action::MoveCloser, Action::Blink],
            Duration::from_secs(6),
        );
        plan.steps[1].lead_in = Duration::from_millis(700);
        let mut run = Run::new(plan);
        run.frames(0..100, |t, s| {
            if t >= 1.0 {
                s.inter_eye_px = 80.0;
            }
            None
        });
        // MoveCloser passes on frame 15 (1000 ms): the next step starts on the first frame at or
        // after 1700 ms, frame 26 (1733 ms).
        assert_eq!(run.started_ms(), vec![600, 1733]);
    }

    #[test]
    fn baseline_needs_face_samples_before_the_first_step() {
        let mut run = one_step(Action::Blink);
        run.frames(0..40, |t, s| {
            if t < 1.0 {
                s.face = false;
                return Some(ReasonCode::FaceNotFound);
            }
            None
        });
        // Faces from frame 15 on: the tenth is frame 24 (1600 ms).
        assert_eq!(run.started_ms(), vec![1600]);
        assert_eq!(run.judge.baseline_ear(), Some(0.39));
    }

    #[test]
    fn finished_counts_and_then_silence() {
        let mut run = Run::new(ChallengePlan::from_actions(
            &[Action::LookUp, Action::LookDown],
            Duration::from_secs(6),
        ));
        run.frames(0..300, |t, s| {
            s.pitch = motion(t, 1.0, 0.0, 20.0);
            None
        });
        let finished: Vec<_> = run
            .events
            .iter()
            .filter(|(_, e)| matches!(e, JudgeEvent::Finished { .. }))
            .collect();
        assert_eq!(finished.len(), 1);
        assert_eq!(
            finished[0].1,
            JudgeEvent::Finished {
                passed: 1,
                failed: 1
            }
        );
        assert_eq!(run.events.last(), Some(finished[0]));
        assert!(run.judge.is_finished());
        let results: Vec<_> = run
            .judge
            .results()
            .into_iter()
            .map(|(s, r)| (s.action, r))
            .collect();
        assert_eq!(
            results,
            vec![
                (Action::LookUp, Some(true)),
                (Action::LookDown, Some(false))
            ]
        );
        let n = run.events.len();
        run.frames(300..400, |t, s| {
            s.pitch = motion(t, 21.0, 0.0, -20.0);
            (t > 23.0).then_some(ReasonCode::FaceNotFound)
        });
        assert_eq!(run.events.len(), n);
    }

    #[test]
    fn empty_plan_finishes_at_once() {
        let mut judge = ChallengeJudge::new(ChallengePlan { steps: vec![] }, Thresholds::default());
        let now = Instant::now();
        assert_eq!(
            judge.on_tick(now, None),
            vec![JudgeEvent::Finished {
                passed: 0,
                failed: 0
            }]
        );
        assert!(judge.on_sample(&neutral(now)).is_empty());
    }

    #[test]
    fn a_late_tick_fails_at_the_deadline_and_starts_the_next_step() {
        let mut plan = ChallengePlan::from_actions(
            &[Action::Blink, Action::OpenMouth],
            Duration::from_secs(6),
        );
        plan.steps[1].lead_in = Duration::from_millis(500);
        let mut run = patient(Run::new(plan));
        run.frames(0..10, |_, _| None);
        assert_eq!(run.started_ms(), vec![600]);
        // No calls for 20 s.
        let at = run.t0 + Duration::from_secs(20);
        let events = run.judge.on_tick(at, None);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            &events[0],
            JudgeEvent::Failed { evidence, .. } if evidence.elapsed_ms == 6000
        ));
        assert!(matches!(&events[1], JudgeEvent::Started { step, .. } if step.id == 2));
    }

    #[test]
    fn evidence_serializes() {
        let run = {
            let mut run = one_step(Action::TurnLeft);
            run.frames(0..150, |t, s| {
                s.yaw = motion(t, 1.0, 0.0, 25.0);
                None
            });
            run
        };
        let v = serde_json::to_value(run.passed()).unwrap();
        assert_eq!(v["action"], "turn_left");
        assert_eq!(v["crossed_at_ms"], 1333);
        assert_eq!(v["wrong_direction"], false);
    }
}
