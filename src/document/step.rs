//! The "show your ID" step as a sans-IO state machine: fed with judged captures (or their
//! absence) and timestamps, it raises and clears guidance, keeps the best capture over a short
//! window (not the first acceptable one), says when to read it, and gives up with the reason a
//! person can act on.

use std::time::{Duration, Instant};

use super::card::{CaptureIssue, CaptureJudgement, CardQuad};
use crate::reasons::ReasonCode;

/// Time allowed for the step.
pub(crate) const STEP_TIME_LIMIT: Duration = Duration::from_secs(30);
/// After the first good capture, keep looking this long for a better one.
pub(crate) const BEST_OF_WINDOW: Duration = Duration::from_millis(1200);
/// No card for this long raises DOCUMENT_NOT_SHOWN.
pub(crate) const NOT_SHOWN_AFTER: Duration = Duration::from_millis(2500);
/// Consecutive captures with an issue before it is raised, and without it before it clears.
const RAISE_AFTER: u32 = 2;
const CLEAR_AFTER: u32 = 3;
/// How long an issue must last before it is raised: a card being raised passes through "too
/// far" and "cut off" on its way up, and hints about that are noise.
pub(crate) const RAISE_HOLD: Duration = Duration::from_millis(400);
/// Reads of captures whose text was incomplete before the step gives up.
pub(crate) const MAX_READS: usize = 3;

/// A judged capture: the card's corners, the judgement and the rectified image.
#[derive(Debug, Clone)]
pub struct Capture {
    pub at: Instant,
    pub quad: CardQuad,
    pub judgement: CaptureJudgement,
    pub image: image::RgbImage,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StepEvent {
    Guidance {
        code: ReasonCode,
        active: bool,
    },
    /// The best capture is chosen: take it with `take_best` and read it.
    ReadyToRead,
    /// The step gave up: no readable capture in time. The code says why.
    GaveUp {
        code: ReasonCode,
    },
}

fn issue_code(issue: CaptureIssue) -> ReasonCode {
    match issue {
        CaptureIssue::CutOff => ReasonCode::DocumentCutOff,
        CaptureIssue::TooFar => ReasonCode::DocumentTooFar,
        CaptureIssue::Tilted => ReasonCode::DocumentTilted,
        CaptureIssue::Glare => ReasonCode::DocumentGlare,
        CaptureIssue::Blur => ReasonCode::DocumentBlur,
    }
}

const ISSUES: [CaptureIssue; 5] = [
    CaptureIssue::CutOff,
    CaptureIssue::TooFar,
    CaptureIssue::Tilted,
    CaptureIssue::Glare,
    CaptureIssue::Blur,
];

/// One capture issue's run of captures.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    /// Consecutive captures with the issue, and since when.
    with: u32,
    since: Option<Instant>,
    /// Consecutive captures without it.
    without: u32,
    raised: bool,
}

#[derive(Debug)]
pub(crate) struct DocumentStep {
    deadline: Instant,
    /// Per issue, in `ISSUES` order.
    streaks: [Streak; 5],
    not_shown: bool,
    last_card_at: Instant,
    window_started: Option<Instant>,
    best: Option<Capture>,
    reading: bool,
    reads: usize,
    done: bool,
    /// Captures judged so far (for the evidence).
    pub captures: usize,
}

impl DocumentStep {
    pub fn new(at: Instant) -> Self {
        DocumentStep {
            deadline: at + STEP_TIME_LIMIT,
            streaks: [Streak::default(); 5],
            not_shown: false,
            last_card_at: at,
            window_started: None,
            best: None,
            reading: false,
            reads: 0,
            done: false,
            captures: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Stops the clock for `d` (no video arrived: the network dropped).
    pub fn pause(&mut self, d: Duration) {
        self.deadline += d;
    }

    /// Time left, for the page's countdown.
    pub(crate) fn remaining(&self, at: Instant) -> Duration {
        self.deadline.saturating_duration_since(at)
    }

    /// Guidance codes raised now.
    pub fn active(&self) -> Vec<ReasonCode> {
        let mut codes: Vec<ReasonCode> = ISSUES
            .iter()
            .zip(&self.streaks)
            .filter(|(_, s)| s.raised)
            .map(|(i, _)| issue_code(*i))
            .collect();
        if self.not_shown {
            codes.insert(0, ReasonCode::DocumentNotShown);
        }
        codes
    }

    /// One analysed frame: the capture found in it, or none.
    pub fn on_frame(&mut self, at: Instant, capture: Option<Capture>) -> Vec<StepEvent> {
        let mut events = Vec::new();
        if self.done {
            return events;
        }
        match capture {
            None => {
                // A card missed for a frame or two (motion, a hand) keeps its hints, so they do
                // not flicker; once it is gone long enough, "show your card" replaces them.
                if !self.not_shown && at.duration_since(self.last_card_at) >= NOT_SHOWN_AFTER {
                    for (issue, s) in ISSUES.iter().zip(self.streaks.iter_mut()) {
                        s.with = 0;
                        s.since = None;
                        if s.raised {
                            s.raised = false;
                            events.push(StepEvent::Guidance {
                                code: issue_code(*issue),
                                active: false,
                            });
                        }
                    }
                    self.not_shown = true;
                    events.push(StepEvent::Guidance {
                        code: ReasonCode::DocumentNotShown,
                        active: true,
                    });
                }
            }
            Some(c) => {
                self.captures += 1;
                self.last_card_at = at;
                if self.not_shown {
                    self.not_shown = false;
                    events.push(StepEvent::Guidance {
                        code: ReasonCode::DocumentNotShown,
                        active: false,
                    });
                }
                for (issue, s) in ISSUES.iter().zip(self.streaks.iter_mut()) {
                    if c.judgement.issues.contains(issue) {
                        s.with += 1;
                        s.since.get_or_insert(at);
                        s.without = 0;
                    } else {
                        s.without += 1;
                        s.with = 0;
                        s.since = None;
                    }
                    let lasted = s
                        .since
                        .is_some_and(|since| at.duration_since(since) >= RAISE_HOLD);
                    let raise = !s.raised && s.with >= RAISE_AFTER && lasted;
                    let clear = s.raised && s.without >= CLEAR_AFTER;
                    if raise || clear {
                        s.raised = raise;
                        events.push(StepEvent::Guidance {
                            code: issue_code(*issue),
                            active: raise,
                        });
                    }
                }
                if c.judgement.issues.is_empty() && !self.reading {
                    self.window_started.get_or_insert(at);
                    if self
                        .best
                        .as_ref()
                        .is_none_or(|b| c.judgement.score > b.judgement.score)
                    {
                        self.best = Some(c);
                    }
                }
            }
        }
        events.extend(self.on_tick(at));
        events
    }

    /// Time passing: the best-of window closing, or the step's deadline.
    pub fn on_tick(&mut self, at: Instant) -> Vec<StepEvent> {
        if self.done || self.reading {
            return Vec::new();
        }
        if self
            .window_started
            .is_some_and(|t| at.duration_since(t) >= BEST_OF_WINDOW)
            && self.best.is_some()
        {
            self.reading = true;
            return vec![StepEvent::ReadyToRead];
        }
        if at >= self.deadline {
            self.done = true;
            return vec![StepEvent::GaveUp {
                code: self.failure_code(),
            }];
        }
        Vec::new()
    }

    /// The chosen capture, to read (after `ReadyToRead`).
    pub(crate) fn take_best(&mut self) -> Option<Capture> {
        self.best.take()
    }

    /// The read of the chosen capture: complete ends the step; otherwise it looks again for a
    /// better capture, until `MAX_READS` or the deadline.
    pub(crate) fn on_read(&mut self, at: Instant, complete: bool) -> Vec<StepEvent> {
        self.reading = false;
        self.reads += 1;
        if complete {
            self.done = true;
            return Vec::new();
        }
        self.window_started = None;
        self.best = None;
        if self.reads >= MAX_READS || at >= self.deadline {
            self.done = true;
            return vec![StepEvent::GaveUp {
                code: ReasonCode::DocumentBlur,
            }];
        }
        Vec::new()
    }

    /// Why the step failed: the state the person was in when it gave up. No card in view says
    /// "not shown" (whatever was seen earlier); otherwise the first raised issue; otherwise blur
    /// when captures were read but never became readable; otherwise "not shown".
    fn failure_code(&self) -> ReasonCode {
        if self.not_shown {
            return ReasonCode::DocumentNotShown;
        }
        let raised = ISSUES
            .iter()
            .zip(&self.streaks)
            .find(|(_, s)| s.raised)
            .map(|(i, _)| issue_code(*i));
        raised.unwrap_or(if self.reads > 0 {
            ReasonCode::DocumentBlur
        } else {
            ReasonCode::DocumentNotShown
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(at: Instant, score: f32, issues: &[CaptureIssue]) -> Capture {
        Capture {
            at,
            quad: CardQuad {
                corners: [(0.0, 0.0), (100.0, 0.0), (100.0, 63.0), (0.0, 63.0)],
                cut_off: false,
                support: 1.0,
            },
            judgement: CaptureJudgement {
                width_share: 0.6,
                width_px: 400.0,
                side_ratio: 1.0,
                glare: 0.0,
                sharpness: 10.0,
                issues: issues.to_vec(),
                score,
            },
            image: image::RgbImage::new(1, 1),
        }
    }

    const FRAME: Duration = Duration::from_millis(125);

    /// A card seen for a while early on (a hint raised about it), then gone: the give-up names
    /// what the person faces at the end, no card, not a leftover hint about what was seen.
    #[test]
    fn the_give_up_names_the_state_at_the_end() {
        let t0 = Instant::now();
        let mut step = DocumentStep::new(t0);
        for i in 0..5u32 {
            let at = t0 + FRAME * i;
            step.on_frame(at, Some(capture(at, 1.0, &[CaptureIssue::CutOff])));
        }
        assert_eq!(step.active(), vec![ReasonCode::DocumentCutOff]);
        let mut gave_up = None;
        let mut i = 5u32;
        while gave_up.is_none() {
            let at = t0 + FRAME * i;
            for e in step.on_frame(at, None) {
                if let StepEvent::GaveUp { code } = e {
                    gave_up = Some(code);
                }
            }
            i += 1;
        }
        assert_eq!(gave_up, Some(ReasonCode::DocumentNotShown));
    }

    #[test]
    fn keeps_the_best_capture_over_the_window_then_reads_once() {
        let t0 = Instant::now();
        let mut step = DocumentStep::new(t0);
        let scores = [1.0, 3.0, 2.0, 2.5, 1.5, 0.5, 0.7, 0.9, 1.1, 1.2, 1.3];
        let mut ready_at = None;
        for (i, s) in scores.iter().enumerate() {
            let at = t0 + FRAME * i as u32;
            let events = step.on_frame(at, Some(capture(at, *s, &[])));
            assert!(events
                .iter()
                .all(|e| !matches!(e, StepEvent::Guidance { .. })));
            if events.contains(&StepEvent::ReadyToRead) {
                ready_at = Some(i);
                break;
            }
        }
        // Window of 1.2 s from the first good frame: ready on frame 10 (1.25 s).
        assert_eq!(ready_at, Some(10));
        let best = step.take_best().expect("best");
        assert_eq!(best.judgement.score, 3.0);
        assert!(step.on_read(t0 + Duration::from_secs(2), true).is_empty());
        assert!(step.is_done());
    }

    #[test]
    fn glare_is_raised_once_it_lasts_and_gives_the_failure_reason() {
        let t0 = Instant::now();
        let mut step = DocumentStep::new(t0);
        let glare = [CaptureIssue::Glare];
        // Two captures are not enough: it must also last RAISE_HOLD (400 ms, four frames).
        for i in 0..4u32 {
            let at = t0 + FRAME * i;
            assert!(step.on_frame(at, Some(capture(at, 1.0, &glare))).is_empty());
        }
        let at = t0 + FRAME * 4;
        assert_eq!(
            step.on_frame(at, Some(capture(at, 1.0, &glare))),
            vec![StepEvent::Guidance {
                code: ReasonCode::DocumentGlare,
                active: true
            }]
        );
        assert_eq!(step.active(), vec![ReasonCode::DocumentGlare]);
        let end = t0 + STEP_TIME_LIMIT;
        let events = step.on_frame(end, Some(capture(end, 1.0, &glare)));
        assert_eq!(
            events,
            vec![StepEvent::GaveUp {
                code: ReasonCode::DocumentGlare
            }]
        );
    }

    #[test]
    fn no_card_raises_not_shown_and_a_card_clears_it() {
        let t0 = Instant::now();
        let mut step = DocumentStep::new(t0);
        assert!(step.on_frame(t0 + Duration::from_secs(2), None).is_empty());
        let e = step.on_frame(t0 + Duration::from_millis(2600), None);
        assert_eq!(
            e,
            vec![StepEvent::Guidance {
                code: ReasonCode::DocumentNotShown,
                active: true
            }]
        );
        let at = t0 + Duration::from_secs(3);
        let e = step.on_frame(at, Some(capture(at, 1.0, &[])));
        assert_eq!(
            e,
            vec![StepEvent::Guidance {
                code: ReasonCode::DocumentNotShown,
                active: false
            }]
        );
        // Nothing at all until the deadline: not shown.
        let mut empty = DocumentStep::new(t0);
        let e = empty.on_tick(t0 + STEP_TIME_LIMIT);
        assert_eq!(
            e,
            vec![StepEvent::GaveUp {
                code: ReasonCode::DocumentNotShown
            }]
        );
    }

    #[test]
    fn unreadable_captures_are_retried_then_blur() {
        let t0 = Instant::now();
        let mut step = DocumentStep::new(t0);
        let mut at = t0;
        let mut gave_up = None;
        for _ in 0..MAX_READS {
            loop {
                at += FRAME;
                if step
                    .on_frame(at, Some(capture(at, 1.0, &[])))
                    .contains(&StepEvent::ReadyToRead)
                {
                    break;
                }
            }
            assert!(step.take_best().is_some());
            let e = step.on_read(at, false);
            if !e.is_empty() {
                gave_up = Some(e);
            }
        }
        assert_eq!(
            gave_up,
            Some(vec![StepEvent::GaveUp {
                code: ReasonCode::DocumentBlur
            }])
        );
        assert!(step.is_done());
    }
}
