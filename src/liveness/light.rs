//! The screen-light challenge: the page lights the person's face with a short colour sequence the
//! server draws when the step starts, and the server checks that the face reflected that
//! sequence, in order, within a latency it finds per call. A recording (replayed on a screen or
//! injected into the stream) cannot know the colours in advance, so it shows the light it was
//! recorded under, not this call's.
//!
//! What is measured: the log-chromaticity (ln R/G, ln B/G) of the skin minus that of the surround
//! just beside the face, frame by frame. The face is close to the screen and the wall behind is
//! not, so the screen's colour moves the difference; the camera's white balance and exposure
//! act on both alike and cancel; the skin's own colour is a constant offset and cancels in the
//! comparison over time (darker skin reflects less, which lowers the signal, not its direction).
//! Expected response to a screen colour `S` (linear light): `gain * (S_R - S_G, S_B - S_G)`.
//!
//! The judgement correlates the measured windows (one per colour, after a neutral one) with the
//! expected ones, at every latency between [`MIN_LATENCY`] and [`MAX_LATENCY`], and keeps the best.
//! When nothing is reflected the cause is named only if the picture explains it (a face lit far
//! brighter than a screen can light it, a face too far from the screen); otherwise no reflection
//! twice in good conditions is a spoof cue. See docs/FACE.md ("Screen light").
//!
//! Photosensitivity (WCAG 2.3.1): colours change at most 2.6 times a second with smooth
//! transitions and moderate luminance; a person can skip the step, which sends the session to
//! review instead of failing it.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::analysis::quality::I420;
use crate::reasons::ReasonCode;

/// The colours the page may show (sRGB). Their expected responses point 60 degrees apart in the
/// (R-G, B-G) plane of linear light (0, 60, 120, 180, 240 and 313 degrees), so a window lit by one
/// colour is never within [`MIN_WINDOW_COS`] of another; relative luminance 0.19 to 0.66, none
/// saturated red.
pub(crate) const PALETTE: [[u8; 3]; 6] = [
    [235, 60, 60],  // red
    [186, 56, 234], // violet
    [56, 168, 255], // sky blue
    [56, 225, 225], // cyan
    [170, 231, 89], // lime
    [237, 179, 39], // amber
];
/// The page's light before the colours (and the reference they are compared with).
pub(crate) const NEUTRAL: [u8; 3] = [150, 150, 150];
/// Colours per sequence.
pub(crate) const COLOURS: usize = 4;
const NEUTRAL_MS: u64 = 460;
/// Each colour lasts this long (drawn per colour): at most 2.6 changes a second.
const COLOUR_MS: std::ops::RangeInclusive<u64> = 380..=460;
/// The page fades from one colour to the next over this long.
pub(crate) const TRANSITION_MS: u64 = 120;
/// A frame shows a colour this long after it starts at the earliest: the fade plus one frame's
/// exposure at 15 fps.
const SETTLE: Duration = Duration::from_millis(TRANSITION_MS + 60);
/// Capture-to-server delays searched: from the page receiving the event to the frame that shows
/// it arriving here. Below the minimum the face would change before the page could light it.
pub(crate) const MIN_LATENCY: Duration = Duration::from_millis(20);
pub(crate) const MAX_LATENCY: Duration = Duration::from_millis(1000);
const LATENCY_STEP: Duration = Duration::from_millis(20);
/// Frames a window needs to count.
/// Colour windows that may lack frames at a latency (a camera that stalls now and then): the
/// neutral window and the other colours must each have at least one.
const MAX_MISSING_WINDOWS: usize = 1;
/// A sequence matches when its measured windows correlate this well with the expected ones...
pub(crate) const MIN_CORRELATION: f64 = 0.9;
/// ...every colour's response (against the neutral window) points within 45 degrees of its
/// colour's direction (the palette's directions are 60 degrees apart)...
pub(crate) const MIN_WINDOW_COS: f64 = 0.7;
/// ...with at least this gain (log-chromaticity per unit of linear screen colour difference).
/// A laptop screen at arm's length in a bright room gives about 0.02, a dim room 0.1 and more.
pub(crate) const MIN_GAIN: f64 = 0.006;
/// Below this the face reflected nothing at all (a recording's own light changes are random and
/// its sign flips as often as not).
pub(crate) const ABSENT_GAIN: f64 = 0.0025;
/// A face brighter than this (fraction of white) is lit far beyond what a screen adds: sunlight.
pub(crate) const TOO_BRIGHT_LUMA: f64 = 0.8;
/// Eyes closer than this (pixels) are too far from the screen for its light to reach the face.
pub(crate) const TOO_FAR_INTER_EYE_PX: f32 = 50.0;
/// Attempts judged before the step ends (interrupted attempts do not count).
pub(crate) const MAX_ATTEMPTS: usize = 2;
/// Attempts in all, counting those too short of frames to be judged (which do not use up one
/// of the `MAX_ATTEMPTS`).
pub(crate) const MAX_TRIES: usize = 4;
/// The face is steadily in view this long before the colours start.
const LEAD_IN: Duration = Duration::from_millis(300);

/// One colour of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LightColour {
    pub rgb: [u8; 3],
    pub ms: u64,
}

/// What the page paints: the neutral light, then the colours in order, each fading in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LightSequence {
    pub neutral: [u8; 3],
    pub neutral_ms: u64,
    pub transition_ms: u64,
    pub colours: Vec<LightColour>,
}

impl LightSequence {
    /// `COLOURS` distinct palette colours in random order with random durations.
    pub fn random<R: Rng>(rng: &mut R) -> LightSequence {
        let colours = PALETTE
            .choose_multiple(rng, COLOURS)
            .map(|&rgb| LightColour {
                rgb,
                ms: rng.gen_range(COLOUR_MS),
            })
            .collect();
        LightSequence {
            neutral: NEUTRAL,
            neutral_ms: NEUTRAL_MS,
            transition_ms: TRANSITION_MS,
            colours,
        }
    }

    /// How long the page shows the sequence.
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.neutral_ms + self.colours.iter().map(|c| c.ms).sum::<u64>())
    }

    /// Each window (the neutral one first) as (start, end, colour) from the sequence's start.
    fn windows(&self) -> Vec<(Duration, Duration, [u8; 3])> {
        let mut out = vec![(
            Duration::ZERO,
            Duration::from_millis(self.neutral_ms),
            self.neutral,
        )];
        let mut at = self.neutral_ms;
        for c in &self.colours {
            out.push((
                Duration::from_millis(at),
                Duration::from_millis(at + c.ms),
                c.rgb,
            ));
            at += c.ms;
        }
        out
    }

    /// The colour the page shows `t` after the sequence starts (sRGB, fading linearly over the
    /// transition); neutral after the end. What the test actors light their faces with.
    pub fn colour_at(&self, t: Duration) -> [f32; 3] {
        let windows = self.windows();
        let fade = Duration::from_millis(self.transition_ms);
        let mut previous = self.neutral;
        for (start, end, rgb) in &windows {
            if t < *end {
                let into = t.saturating_sub(*start);
                let k = if fade.is_zero() {
                    1.0
                } else {
                    (into.as_secs_f32() / fade.as_secs_f32()).min(1.0)
                };
                return std::array::from_fn(|i| {
                    previous[i] as f32 + (rgb[i] as f32 - previous[i] as f32) * k
                });
            }
            previous = *rgb;
        }
        self.neutral.map(f32::from)
    }
}

/// sRGB (0..=255) to linear light (0..=1).
pub(crate) fn linear(c: f32) -> f32 {
    let c = (c / 255.0).clamp(0.0, 1.0);
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// The response a screen colour should cause, up to the gain: (R - G, B - G) in linear light.
fn expected(rgb: [u8; 3]) -> [f64; 2] {
    let [r, g, b] = rgb.map(|c| linear(c as f32) as f64);
    [r - g, b - g]
}

/// One frame's light on the face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LightReading {
    /// Skin log-chromaticity minus the surround's (or the skin's alone when the face fills the
    /// frame and there is no surround to compare with).
    pub chroma: [f64; 2],
    /// Mean skin luma, 0 (black) to 1 (white), in the frame's range.
    pub face_luma: f64,
    pub inter_eye_px: f32,
}

/// Mean (Y, U, V) over a region of the frame (luma every other pixel; chroma at half
/// resolution). `None` for an empty region.
fn mean_yuv(frame: &I420, x0: f32, y0: f32, x1: f32, y1: f32) -> Option<[f64; 3]> {
    let clamp = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi);
    let (x0, x1) = (clamp(x0, frame.width), clamp(x1, frame.width));
    let (y0, y1) = (clamp(y0, frame.height), clamp(y1, frame.height));
    if x1 <= x0 + 4 || y1 <= y0 + 4 {
        return None;
    }
    let (mut sy, mut ny) = (0u64, 0u64);
    for y in (y0..y1).step_by(2) {
        let row = &frame.y[y * frame.y_stride..];
        for x in (x0..x1).step_by(2) {
            sy += row[x] as u64;
            ny += 1;
        }
    }
    let (cx0, cx1) = (x0 / 2, (x1 / 2).min(frame.chroma_width()));
    let (cy0, cy1) = (y0 / 2, (y1 / 2).min(frame.chroma_height()));
    let (mut su, mut sv, mut nc) = (0u64, 0u64, 0u64);
    for y in cy0..cy1 {
        let base = y * frame.uv_stride;
        for x in cx0..cx1 {
            su += frame.u[base + x] as u64;
            sv += frame.v[base + x] as u64;
            nc += 1;
        }
    }
    (ny > 0 && nc > 0).then(|| {
        [
            sy as f64 / ny as f64,
            su as f64 / nc as f64,
            sv as f64 / nc as f64,
        ]
    })
}

/// BT.601 YUV (studio or full range) to RGB (0..=255, unclamped).
fn rgb_of(yuv: [f64; 3], full_range: bool) -> [f64; 3] {
    let [y, u, v] = yuv;
    let (u, v) = (u - 128.0, v - 128.0);
    if full_range {
        [y + 1.402 * v, y - 0.344 * u - 0.714 * v, y + 1.772 * u]
    } else {
        let y = 1.164 * (y - 16.0);
        [y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u]
    }
}

fn log_chroma(rgb: [f64; 3]) -> [f64; 2] {
    let [r, g, b] = rgb.map(|c| c.max(1.0));
    [(r / g).ln(), (b / g).ln()]
}

/// Measures the light on the face whose box (x, y, w, h; from the mesh) is `bbox`: the skin of
/// the cheeks and nose against bands of the surround beside the face, at temple height.
pub fn measure(frame: &I420, bbox: [f32; 4], inter_eye_px: f32) -> Option<LightReading> {
    let [bx, by, bw, bh] = bbox;
    let skin = mean_yuv(
        frame,
        bx + 0.22 * bw,
        by + 0.35 * bh,
        bx + 0.78 * bw,
        by + 0.85 * bh,
    )?;
    let band = |x0: f32, x1: f32| mean_yuv(frame, x0, by + 0.1 * bh, x1, by + 0.6 * bh);
    let left = band(bx - 0.5 * bw, bx - 0.15 * bw);
    let right = band(bx + 1.15 * bw, bx + 1.5 * bw);
    let surround = match (left, right) {
        (Some(l), Some(r)) => Some(std::array::from_fn(|i| (l[i] + r[i]) / 2.0)),
        (l, r) => l.or(r),
    };
    let face = log_chroma(rgb_of(skin, frame.full_range));
    let chroma = match surround {
        Some(s) => {
            let s = log_chroma(rgb_of(s, frame.full_range));
            [face[0] - s[0], face[1] - s[1]]
        }
        None => face,
    };
    let (black, white) = if frame.full_range {
        (0.0, 255.0)
    } else {
        (16.0, 235.0)
    };
    Some(LightReading {
        chroma,
        face_luma: ((skin[0] - black) / (white - black)).clamp(0.0, 1.0),
        inter_eye_px,
    })
}

/// How well one attempt's reflections matched its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LightScore {
    /// Correlation of measured with expected windows at the best latency (-1..=1).
    pub correlation: f64,
    /// The colour window whose response points furthest from its colour: its cosine (-1..=1).
    pub worst_window: f64,
    /// Reflection strength: log-chromaticity per unit of screen colour difference.
    pub gain: f64,
    /// The capture-to-server delay that fits best.
    pub latency_ms: u64,
    /// Windows (neutral and colours) with frames at that latency; 0 when no latency had enough.
    pub windows: usize,
    /// Frames measured during the attempt.
    pub frames: usize,
    /// Median face luma (0..=1) and inter-eye distance over the attempt.
    pub face_luma: f64,
    pub inter_eye_px: f32,
}

/// Scores `samples` (time, reading) against `sequence` started at `start`.
pub fn score(
    sequence: &LightSequence,
    start: Instant,
    samples: &[(Instant, LightReading)],
) -> LightScore {
    score_up_to(sequence, start, samples, MAX_LATENCY)
}

/// As [`score`], trying latencies only up to `max_latency`.
fn score_up_to(
    sequence: &LightSequence,
    start: Instant,
    samples: &[(Instant, LightReading)],
    max_latency: Duration,
) -> LightScore {
    let windows = sequence.windows();
    let expect: Vec<[f64; 2]> = windows.iter().map(|w| expected(w.2)).collect();
    let mut best: Option<(Fit, Duration)> = None;
    let mut latency = MIN_LATENCY;
    while latency <= max_latency.min(MAX_LATENCY) {
        if let Some(f) = correlate(&windows, &expect, start, latency, samples) {
            // The latency where the fit is best, each window counting.
            let score = |f: &Fit| f.r + f.worst.min(MIN_WINDOW_COS);
            if best
                .as_ref()
                .is_none_or(|(b, _)| score(&f) > score(b) + 1e-9)
            {
                best = Some((f, latency));
            }
        }
        latency += LATENCY_STEP;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (fit, latency) = best.unwrap_or((
        Fit {
            r: 0.0,
            gain: 0.0,
            worst: -1.0,
            windows: 0,
        },
        Duration::ZERO,
    ));
    LightScore {
        correlation: fit.r,
        worst_window: fit.worst,
        gain: fit.gain,
        latency_ms: latency.as_millis() as u64,
        windows: fit.windows,
        frames: samples.len(),
        face_luma: median(samples.iter().map(|(_, r)| r.face_luma).collect()),
        inter_eye_px: median(samples.iter().map(|(_, r)| r.inter_eye_px as f64).collect()) as f32,
    }
}

/// How the windows fit at one latency.
struct Fit {
    /// Correlation of the measured windows with the expected ones.
    r: f64,
    /// Least-squares gain.
    gain: f64,
    /// The worst colour window's cosine against the neutral one.
    worst: f64,
    /// Windows with frames.
    windows: usize,
}

/// The fit at one latency; `None` when the neutral window, or more than `MAX_MISSING_WINDOWS`
/// colour windows, lack frames.
fn correlate(
    windows: &[(Duration, Duration, [u8; 3])],
    expect: &[[f64; 2]],
    start: Instant,
    latency: Duration,
    samples: &[(Instant, LightReading)],
) -> Option<Fit> {
    // (window index, mean reading) of the windows with frames.
    let mut measured: Vec<(usize, [f64; 2])> = Vec::with_capacity(windows.len());
    for (w, (from, to, _)) in windows.iter().enumerate() {
        // The neutral window follows whatever the page showed before: it settles too.
        let lo = start + latency + *from + SETTLE;
        let hi = start + latency + *to;
        let (mut sum, mut n) = ([0.0f64; 2], 0usize);
        for (at, r) in samples {
            if *at >= lo && *at < hi {
                sum[0] += r.chroma[0];
                sum[1] += r.chroma[1];
                n += 1;
            }
        }
        if n > 0 {
            measured.push((w, [sum[0] / n as f64, sum[1] / n as f64]));
        }
    }
    if measured.first().is_none_or(|(w, _)| *w != 0)
        || measured.len() + MAX_MISSING_WINDOWS < windows.len()
    {
        return None;
    }
    let expect: Vec<[f64; 2]> = measured.iter().map(|(w, _)| expect[*w]).collect();
    let measured: Vec<[f64; 2]> = measured.into_iter().map(|(_, m)| m).collect();
    let centre = |v: &[[f64; 2]]| {
        let n = v.len() as f64;
        let m = [
            v.iter().map(|p| p[0]).sum::<f64>() / n,
            v.iter().map(|p| p[1]).sum::<f64>() / n,
        ];
        v.iter()
            .map(|p| [p[0] - m[0], p[1] - m[1]])
            .collect::<Vec<_>>()
    };
    let (m, e) = (centre(&measured), centre(&expect));
    let dot = |a: &[[f64; 2]], b: &[[f64; 2]]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| p[0] * q[0] + p[1] * q[1])
            .sum::<f64>()
    };
    let (me, mm, ee) = (dot(&m, &e), dot(&m, &m), dot(&e, &e));
    if ee <= 0.0 {
        return None;
    }
    let r = if mm > 0.0 { me / (mm * ee).sqrt() } else { 0.0 };
    // Each colour against the neutral window: its own direction, whatever the others do.
    let worst = (1..measured.len())
        .map(|w| {
            let d = [
                measured[w][0] - measured[0][0],
                measured[w][1] - measured[0][1],
            ];
            let x = [expect[w][0] - expect[0][0], expect[w][1] - expect[0][1]];
            let norm = (d[0] * d[0] + d[1] * d[1]).sqrt() * (x[0] * x[0] + x[1] * x[1]).sqrt();
            if norm > 0.0 {
                (d[0] * x[0] + d[1] * x[1]) / norm
            } else {
                -1.0
            }
        })
        .fold(1.0f64, f64::min);
    Some(Fit {
        r,
        gain: me / ee,
        worst,
        windows: measured.len(),
    })
}

/// What one judged attempt showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LightResult {
    /// The face reflected the sequence.
    Matched,
    /// Too little reflection, and the face is lit far brighter than a screen can add to.
    TooBright,
    /// Too little reflection, and the face is too far from the screen.
    TooFar,
    /// A reflection too weak or too unlike the sequence to judge (inconclusive).
    Weak,
    /// Nothing reflected although the conditions were good (a recording's cue).
    Absent,
    /// Too few frames reached the server during the sequence to judge it (a stalling camera or
    /// network): tried again, never a spoof cue.
    Unmeasured,
}

impl LightResult {
    /// Classifies one attempt's score.
    pub fn of(s: &LightScore) -> LightResult {
        if s.windows == 0 {
            LightResult::Unmeasured
        } else if s.correlation >= MIN_CORRELATION
            && s.worst_window >= MIN_WINDOW_COS
            && s.gain >= MIN_GAIN
        {
            LightResult::Matched
        } else if s.gain >= MIN_GAIN {
            LightResult::Weak
        } else if s.face_luma > TOO_BRIGHT_LUMA {
            LightResult::TooBright
        } else if s.inter_eye_px < TOO_FAR_INTER_EYE_PX {
            LightResult::TooFar
        } else if s.gain < ABSENT_GAIN {
            LightResult::Absent
        } else {
            LightResult::Weak
        }
    }

    /// The reason a person is given when this is the step's final result (None: passed).
    pub fn reason(self) -> Option<ReasonCode> {
        match self {
            LightResult::Matched => None,
            LightResult::TooBright => Some(ReasonCode::ScreenLightTooBright),
            LightResult::TooFar => Some(ReasonCode::ScreenLightTooFar),
            LightResult::Weak | LightResult::Unmeasured => Some(ReasonCode::ScreenLightNotSeen),
            LightResult::Absent => Some(ReasonCode::SpoofSuspected),
        }
    }

    /// How conclusive: a final result is the most conclusive of the attempts.
    fn rank(self) -> u8 {
        match self {
            LightResult::Matched => 4,
            LightResult::Weak => 3,
            LightResult::TooBright | LightResult::TooFar | LightResult::Unmeasured => 2,
            LightResult::Absent => 1,
        }
    }
}

/// A match already complete in `samples`: scored at every latency whose windows the newest
/// reading has passed, so a reflecting face passes as soon as its last colour has been seen
/// rather than after the longest latency allowed. A failure still waits for every latency.
fn early_match(
    sequence: &LightSequence,
    start: Instant,
    samples: &[(Instant, LightReading)],
) -> Option<LightScore> {
    let newest = samples.last()?.0;
    let seen = newest.checked_duration_since(start + sequence.total())?;
    if seen < MIN_LATENCY {
        return None;
    }
    let s = score_up_to(sequence, start, samples, seen);
    (LightResult::of(&s) == LightResult::Matched).then_some(s)
}

/// The step's outcome, for the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LightOutcome {
    /// The most conclusive attempt's result; `None` when no attempt was judged (skipped, or the
    /// call ended first).
    pub result: Option<LightResult>,
    /// The person chose to skip the step (photosensitivity).
    pub skipped: bool,
    pub attempts: Vec<(LightResult, LightScore)>,
}

impl LightOutcome {
    pub fn skipped(&self) -> bool {
        self.skipped
    }

    /// Every judged attempt the step allows saw no reflection (a spoof cue; one attempt is not
    /// enough, and attempts too short of frames to judge do not count).
    pub fn absent(&self) -> bool {
        let judged = || {
            self.attempts
                .iter()
                .filter(|(r, _)| *r != LightResult::Unmeasured)
        };
        judged().count() >= MAX_ATTEMPTS && judged().all(|(r, _)| *r == LightResult::Absent)
    }
}

/// What the step asks the shell to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum LightEvent {
    /// An attempt starts now: the page paints `sequence` on receipt.
    Started {
        id: u32,
        sequence: LightSequence,
        attempt: usize,
    },
    /// The attempt was abandoned (the face left, the camera stopped): it starts afresh, with new
    /// colours, once the cause clears.
    Interrupted {
        id: u32,
        because: ReasonCode,
    },
    /// The attempt could not be judged: the person is told why and it starts again.
    Retry {
        id: u32,
        because: ReasonCode,
    },
    Passed {
        id: u32,
        score: LightScore,
    },
    /// The step ended without a match; the verdict decides what `result` means.
    Ended {
        id: u32,
        result: LightResult,
        score: LightScore,
    },
}

enum Phase {
    /// Waiting for the face to be steadily in view (since when).
    Waiting(Option<Instant>),
    Running {
        id: u32,
        sequence: LightSequence,
        started: Instant,
        samples: Vec<(Instant, LightReading)>,
        /// How many samples the last early-match try saw (a try needs a new sample).
        tried: usize,
    },
    Done,
}

/// The screen-light step of one call (sans-IO: fed readings and ticks with their `Instant`s).
pub struct LightStep {
    rng: StdRng,
    phase: Phase,
    attempts: Vec<(LightResult, LightScore)>,
    skipped: bool,
}

impl LightStep {
    /// A step whose colours and ids come from `seed` (the shell draws it at random).
    pub fn new(seed: u64) -> LightStep {
        LightStep {
            rng: StdRng::seed_from_u64(seed),
            phase: Phase::Waiting(None),
            attempts: Vec::new(),
            skipped: false,
        }
    }

    /// The person chose to skip the step: it is done, and the verdict sends the session to review.
    pub fn skipped() -> LightStep {
        LightStep {
            rng: StdRng::seed_from_u64(0),
            phase: Phase::Done,
            attempts: Vec::new(),
            skipped: true,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Whether a sequence is showing (frames should be measured at full rate).
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }

    /// One frame's reading while a sequence shows (ignored otherwise).
    pub fn on_reading(&mut self, at: Instant, reading: LightReading) {
        if let Phase::Running { samples, .. } = &mut self.phase {
            samples.push((at, reading));
        }
    }

    /// Time passes; `blocking` is what keeps the face from being judged now (as the judge gets).
    pub fn on_tick(&mut self, at: Instant, blocking: Option<ReasonCode>) -> Vec<LightEvent> {
        let mut out = Vec::new();
        match &mut self.phase {
            Phase::Done => {}
            Phase::Waiting(since) => match (blocking, *since) {
                (Some(_), _) => *since = None,
                (None, None) => *since = Some(at),
                (None, Some(t)) if at.saturating_duration_since(t) >= LEAD_IN => {
                    let sequence = LightSequence::random(&mut self.rng);
                    let id = self.rng.gen::<u32>();
                    out.push(LightEvent::Started {
                        id,
                        sequence: sequence.clone(),
                        attempt: self.attempts.len() + 1,
                    });
                    self.phase = Phase::Running {
                        id,
                        sequence,
                        started: at,
                        samples: Vec::new(),
                        tried: 0,
                    };
                }
                (None, Some(_)) => {}
            },
            Phase::Running {
                id,
                sequence,
                started,
                samples,
                tried,
            } => {
                let early = if *tried < samples.len() {
                    *tried = samples.len();
                    early_match(sequence, *started, samples)
                } else {
                    None
                };
                if let Some(because) = blocking {
                    out.push(LightEvent::Interrupted { id: *id, because });
                    self.phase = Phase::Waiting(None);
                } else if early.is_some() || at >= *started + sequence.total() + MAX_LATENCY {
                    let s = early.unwrap_or_else(|| score(sequence, *started, samples));
                    let result = LightResult::of(&s);
                    let id = *id;
                    self.attempts.push((result, s));
                    if result == LightResult::Matched {
                        out.push(LightEvent::Passed { id, score: s });
                        self.phase = Phase::Done;
                    } else if self.judged_attempts() < MAX_ATTEMPTS
                        && self.attempts.len() < MAX_TRIES
                    {
                        let because = result.reason().unwrap_or(ReasonCode::ScreenLightNotSeen);
                        // A person is never told "spoof" mid-call: they are asked to face the
                        // screen and try again.
                        let because = if because == ReasonCode::SpoofSuspected {
                            ReasonCode::ScreenLightNotSeen
                        } else {
                            because
                        };
                        out.push(LightEvent::Retry { id, because });
                        self.phase = Phase::Waiting(None);
                    } else {
                        let (result, score) = self.final_result();
                        out.push(LightEvent::Ended { id, result, score });
                        self.phase = Phase::Done;
                    }
                }
            }
        }
        out
    }

    /// Attempts that were judged (had frames enough).
    fn judged_attempts(&self) -> usize {
        self.attempts
            .iter()
            .filter(|(r, _)| *r != LightResult::Unmeasured)
            .count()
    }

    /// The most conclusive attempt (Matched > Weak > can't-judge > Absent): a person gets the
    /// benefit of their best attempt; two absent reflections are needed for the spoof cue.
    fn final_result(&self) -> (LightResult, LightScore) {
        self.attempts
            .iter()
            .copied()
            .max_by_key(|(r, _)| r.rank())
            .unwrap_or((
                LightResult::Weak,
                LightScore {
                    correlation: 0.0,
                    worst_window: -1.0,
                    gain: 0.0,
                    latency_ms: 0,
                    windows: 0,
                    frames: 0,
                    face_luma: 0.0,
                    inter_eye_px: 0.0,
                },
            ))
    }

    pub fn outcome(&self) -> LightOutcome {
        LightOutcome {
            result: self.attempts.iter().map(|a| a.0).max_by_key(|r| r.rank()),
            skipped: self.skipped,
            attempts: self.attempts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: u64 = 15;

    /// Readings of a face lit by `seq` from `start`, seen `latency` later, with `gain`, a skin
    /// offset and a deterministic wobble of `noise`.
    fn lit(
        seq: &LightSequence,
        start: Instant,
        latency: Duration,
        gain: f64,
        noise: f64,
    ) -> Vec<(Instant, LightReading)> {
        let total = seq.total() + MAX_LATENCY;
        let frames = total.as_millis() as u64 * FPS / 1000;
        (0..frames)
            .map(|i| {
                let at = start + Duration::from_millis(i * 1000 / FPS);
                let shown = (at - start).saturating_sub(latency);
                let c = seq.colour_at(shown);
                let [r, g, b] = c.map(|v| linear(v) as f64);
                let wobble = ((i as f64) * 2.39).sin() * noise;
                (
                    at,
                    LightReading {
                        chroma: [
                            0.35 + gain * (r - g) + wobble,
                            -0.2 + gain * (b - g) - wobble,
                        ],
                        face_luma: 0.5,
                        inter_eye_px: 80.0,
                    },
                )
            })
            .collect()
    }

    fn seq(seed: u64) -> LightSequence {
        LightSequence::random(&mut StdRng::seed_from_u64(seed))
    }

    #[test]
    fn sequences_are_random_distinct_and_photosensitivity_safe() {
        let all: Vec<_> = (0..50).map(seq).collect();
        for s in &all {
            assert_eq!(s.colours.len(), COLOURS);
            for (i, c) in s.colours.iter().enumerate() {
                assert!(s.colours[..i].iter().all(|o| o.rgb != c.rgb));
                // No more than three changes in any second (WCAG 2.3.1 allows three flashes).
                assert!(c.ms >= 334, "{}", c.ms);
            }
            assert!(s.total() <= Duration::from_millis(2300), "{:?}", s.total());
        }
        assert!(all.iter().skip(1).any(|s| s.colours != all[0].colours));
        // Transitions are smooth: half-way through a fade the colour is half-way.
        let s = &all[0];
        let mid = s.colour_at(Duration::from_millis(s.neutral_ms + TRANSITION_MS / 2));
        for i in 0..3 {
            let want = (NEUTRAL[i] as f32 + s.colours[0].rgb[i] as f32) / 2.0;
            assert!((mid[i] - want).abs() < 2.0, "{mid:?}");
        }
    }

    #[test]
    fn a_face_lit_by_the_sequence_matches_at_its_latency() {
        let start = Instant::now();
        for (seed, latency_ms, gain) in [(1, 80, 0.05), (2, 350, 0.02), (3, 700, 0.012)] {
            let s = seq(seed);
            let samples = lit(&s, start, Duration::from_millis(latency_ms), gain, 0.002);
            let sc = score(&s, start, &samples);
            assert_eq!(LightResult::of(&sc), LightResult::Matched, "{sc:?}");
            // Within a fade (120 ms): a window that starts a little early still holds mostly
            // its own colour, so the fit is flat over about that range.
            assert!(sc.latency_ms.abs_diff(latency_ms) <= 120, "{sc:?}");
            assert!((sc.gain - gain).abs() < gain * 0.35, "{sc:?}");
        }
    }

    #[test]
    fn a_face_lit_by_another_sequence_does_not_match() {
        let start = Instant::now();
        let mut matched = 0;
        for seed in 0..200u64 {
            let asked = seq(seed);
            let other = seq(seed + 1000);
            if other.colours.iter().map(|c| c.rgb).collect::<Vec<_>>()
                == asked.colours.iter().map(|c| c.rgb).collect::<Vec<_>>()
            {
                continue;
            }
            let samples = lit(&other, start, Duration::from_millis(200), 0.05, 0.002);
            let sc = score(&asked, start, &samples);
            // The step also tries a match as each reading arrives: no prefix may match either.
            let early = (1..=samples.len()).find_map(|k| early_match(&asked, start, &samples[..k]));
            if LightResult::of(&sc) == LightResult::Matched || early.is_some() {
                println!("{asked:?}\n{other:?}\n{sc:?}\n{early:?}");
                matched += 1;
            }
        }
        assert_eq!(matched, 0, "{matched} of 200 wrong sequences matched");
    }

    #[test]
    fn no_reflection_is_absent_in_good_light_and_named_in_sunlight_or_far() {
        let start = Instant::now();
        let s = seq(5);
        let mut samples = lit(&s, start, Duration::from_millis(200), 0.0, 0.003);
        let sc = score(&s, start, &samples);
        assert_eq!(LightResult::of(&sc), LightResult::Absent, "{sc:?}");
        for (_, r) in &mut samples {
            r.face_luma = 0.9;
        }
        assert_eq!(
            LightResult::of(&score(&s, start, &samples)),
            LightResult::TooBright
        );
        for (_, r) in &mut samples {
            r.face_luma = 0.5;
            r.inter_eye_px = 35.0;
        }
        assert_eq!(
            LightResult::of(&score(&s, start, &samples)),
            LightResult::TooFar
        );
    }

    /// Drives a step with exact times: ticks every 100 ms, readings of a face reflecting with
    /// `gain` at 15 fps.
    fn drive(step: &mut LightStep, start: Instant, gain: f64, secs: u64) -> Vec<LightEvent> {
        let mut events = Vec::new();
        let mut running: Option<(LightSequence, Instant)> = None;
        for ms in (0..secs * 1000).step_by(20) {
            let at = start + Duration::from_millis(ms);
            if ms % 100 == 0 {
                for e in step.on_tick(at, None) {
                    if let LightEvent::Started { sequence, .. } = &e {
                        running = Some((sequence.clone(), at));
                    }
                    events.push(e);
                }
            }
            if ms % 60 == 0 {
                if let Some((seq, t0)) = &running {
                    let shown = (at - *t0).saturating_sub(Duration::from_millis(150));
                    let [r, g, b] = seq.colour_at(shown).map(|v| linear(v) as f64);
                    step.on_reading(
                        at,
                        LightReading {
                            chroma: [gain * (r - g), gain * (b - g)],
                            face_luma: 0.5,
                            inter_eye_px: 80.0,
                        },
                    );
                }
            }
        }
        events
    }

    #[test]
    fn the_step_passes_a_reflecting_face_within_three_seconds_of_starting() {
        let start = Instant::now();
        let mut step = LightStep::new(7);
        let events = drive(&mut step, start, 0.04, 6);
        assert!(matches!(events[0], LightEvent::Started { attempt: 1, .. }));
        assert!(matches!(events[1], LightEvent::Passed { .. }), "{events:?}");
        assert!(step.is_done());
        assert_eq!(step.outcome().result, Some(LightResult::Matched));
        // Decided once the last colour has been seen (150 ms latency here), not after the
        // longest latency allowed: the lead-in, the sequence (at most 2.24 s) and the latency.
        let mut step = LightStep::new(7);
        let (mut at, mut passed_at) = (start, None);
        let seq = loop {
            at += Duration::from_millis(100);
            if let Some(LightEvent::Started { sequence, .. }) = step.on_tick(at, None).pop() {
                break sequence;
            }
        };
        let started = at;
        let mut frame = started;
        while passed_at.is_none() && frame < started + Duration::from_secs(4) {
            frame += Duration::from_millis(1000 / FPS);
            let shown = (frame - started).saturating_sub(Duration::from_millis(150));
            let [r, g, b] = seq.colour_at(shown).map(|v| linear(v) as f64);
            step.on_reading(
                frame,
                LightReading {
                    chroma: [0.04 * (r - g), 0.04 * (b - g)],
                    face_luma: 0.5,
                    inter_eye_px: 80.0,
                },
            );
            if let Some(LightEvent::Passed { .. }) = step.on_tick(frame, None).pop() {
                passed_at = Some(frame);
            }
        }
        let took = passed_at.expect("passed") - started;
        assert!(
            took <= seq.total() + Duration::from_millis(150 + 2 * 1000 / FPS),
            "{took:?}"
        );
        assert!(
            LEAD_IN + took <= Duration::from_secs(3),
            "{:?}",
            LEAD_IN + took
        );
    }

    #[test]
    fn a_camera_that_stalls_is_judged_on_the_frames_it_sends_and_never_called_absent() {
        let start = Instant::now();
        // 350 ms without frames every second, at every phase against the sequence.
        let (mut matched, mut unmeasured) = (0, 0);
        for (seed, phase_ms) in (0..20u64).zip((0..1000).step_by(50)) {
            let s = seq(seed);
            let samples: Vec<_> = lit(&s, start, Duration::from_millis(200), 0.03, 0.002)
                .into_iter()
                .filter(|(at, _)| ((*at - start).as_millis() as u64 + phase_ms) % 1000 >= 350)
                .collect();
            match LightResult::of(&score(&s, start, &samples)) {
                LightResult::Matched => matched += 1,
                LightResult::Unmeasured => unmeasured += 1,
                other => panic!("a stalling live face read {other:?}"),
            }
        }
        assert!(
            matched >= 17,
            "{matched} of 20 matched, {unmeasured} unmeasured"
        );
        // Nothing at all during the sequence: tried again, and in the end never absent.
        let mut step = LightStep::new(9);
        let mut at = start;
        let mut events = Vec::new();
        while !step.is_done() && at < start + Duration::from_secs(30) {
            at += Duration::from_millis(100);
            events.extend(step.on_tick(at, None));
        }
        let outcome = step.outcome();
        assert_eq!(outcome.attempts.len(), MAX_TRIES, "{events:?}");
        assert_eq!(outcome.result, Some(LightResult::Unmeasured));
        assert!(!outcome.absent());
    }

    #[test]
    fn no_reflection_is_retried_once_then_ends_absent() {
        let start = Instant::now();
        let mut step = LightStep::new(8);
        let events = drive(&mut step, start, 0.0, 10);
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                LightEvent::Started { .. } => "started",
                LightEvent::Retry { .. } => "retry",
                LightEvent::Ended { .. } => "ended",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["started", "retry", "started", "ended"]);
        assert!(matches!(
            events[1],
            LightEvent::Retry {
                because: ReasonCode::ScreenLightNotSeen,
                ..
            }
        ));
        assert_eq!(step.outcome().result, Some(LightResult::Absent));
    }

    #[test]
    fn a_lost_face_interrupts_without_using_an_attempt() {
        let start = Instant::now();
        let mut step = LightStep::new(9);
        assert!(step.on_tick(start, None).is_empty());
        let t = start + Duration::from_millis(600);
        assert!(matches!(
            step.on_tick(t, None)[0],
            LightEvent::Started { .. }
        ));
        let t = t + Duration::from_millis(500);
        assert!(matches!(
            step.on_tick(t, Some(ReasonCode::FaceNotFound))[0],
            LightEvent::Interrupted { .. }
        ));
        assert!(step.outcome().attempts.is_empty());
        assert!(!step.is_running());
    }

    #[test]
    fn a_skipped_step_is_done_with_no_result() {
        let step = LightStep::skipped();
        assert!(step.is_done());
        assert!(step.outcome().skipped());
    }

    #[test]
    fn measure_reads_skin_against_the_surround() {
        // A grey frame with a reddish face patch: the difference is positive in R/G.
        let (w, h) = (64usize, 48usize);
        let mut frame = crate::frame::Frame::new(w, h);
        frame.y.fill(120);
        frame.u.fill(128);
        frame.v.fill(128);
        for yy in 10..40 {
            for xx in 22..42 {
                frame.y[yy * w + xx] = 130;
                frame.u[(yy / 2) * (w / 2) + xx / 2] = 118;
                frame.v[(yy / 2) * (w / 2) + xx / 2] = 145;
            }
        }
        let r = measure(&frame.view(), [22.0, 10.0, 20.0, 30.0], 10.0).unwrap();
        assert!(r.chroma[0] > 0.1, "{r:?}");
        assert!(r.chroma[1] < 0.0, "{r:?}");
        assert!((r.face_luma - (130.0 - 16.0) / 219.0).abs() < 0.01);
    }
}
