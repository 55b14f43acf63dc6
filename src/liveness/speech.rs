//! The spoken step: the person reads a few random digits aloud. Sans-IO: the caller feeds one
//! voice-activity decision and level per audio frame (`on_audio`), the mouth-opening ratio of
//! each analysed face frame (`on_mouth`) and the passing of time (`poll`), each with its arrival
//! or capture `Instant`, and gets back the step's result once it is decided.
//!
//! Listening starts when the prompt is shown (`listen`) and again after a pause. Voice must begin
//! within `onset_within` (a person reacts to the prompt; a microphone that hears nothing fails
//! `MIC_SILENT` here and only here). Once it has, the judge listens for `listen_for` and then
//! compares the mouth-opening envelope with the speech envelope over that window: a voice played
//! over a still face, or a recording whose syllables do not follow the lips, does not correlate.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use crate::reasons::ReasonCode;

/// Digits the person is asked to say.
pub(crate) const DIGITS: usize = 4;

/// Random digits for one call's spoken step, separated by spaces ("4 7 2 9"). No digit repeats
/// next to itself, so each one is a syllable of its own.
pub(crate) fn random_digits<R: Rng>(rng: &mut R) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(DIGITS);
    while out.len() < DIGITS {
        let d = rng.gen_range(0..10u8);
        if out.last() != Some(&d) {
            out.push(d);
        }
    }
    out.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One audio frame's voice-activity decision (made by `analysis::voice`).
pub use crate::analysis::voice::VoiceFrame;

/// When the spoken step passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpeechThresholds {
    /// Voice must begin this long after the prompt (or a resume) at the latest (default 4 s).
    pub onset_within: Duration,
    /// Voice begins when at least `onset_voiced` of the last `onset_frames` frames are voiced
    /// (default 4 of 6: 80 ms of voice within 120 ms, so a click or a cough is not an onset).
    pub onset_voiced: usize,
    pub onset_frames: usize,
    /// After the onset the judge listens this long before deciding (default 2.2 s: four digits).
    pub listen_for: Duration,
    /// Voiced time in that window below this counts as not heard (default 400 ms).
    pub min_voiced: Duration,
    /// Pearson correlation between mouth opening and speech level the lips must reach (default
    /// 0.3; a person reading aloud on rendered calls reads 0.6-0.9, a still face about 0).
    pub min_correlation: f32,
    /// The mouth's opening must vary at least this much (90th minus 10th percentile of the
    /// mouth-open ratio) while the voice is heard (default 0.04; a still face varies < 0.02).
    pub min_mouth_range: f32,
    /// Video and audio may arrive offset by up to this much; the best lag within it counts
    /// (default 100 ms, about a video frame and a half: well under a syllable).
    pub max_lag: Duration,
    /// Levels are floored here before the correlation, so room noise reads as silence
    /// (default -60 dBFS).
    pub level_floor_dbfs: f32,
    /// Face samples with a matching audio level the correlation needs (default 10).
    pub min_pairs: usize,
}

impl Default for SpeechThresholds {
    fn default() -> Self {
        SpeechThresholds {
            onset_within: Duration::from_secs(4),
            onset_voiced: 4,
            onset_frames: 6,
            listen_for: Duration::from_millis(2200),
            min_voiced: Duration::from_millis(400),
            min_correlation: 0.3,
            min_mouth_range: 0.04,
            max_lag: Duration::from_millis(100),
            level_floor_dbfs: -60.0,
            min_pairs: 10,
        }
    }
}

/// What the judge heard and saw; recorded with the step's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeechEvidence {
    /// Time from the prompt (or the last resume) to the onset of voice.
    pub onset_ms: Option<u64>,
    /// Voiced time in the judged window.
    pub voiced_ms: u64,
    /// Best correlation of mouth opening and speech level over the allowed lags.
    pub correlation: Option<f32>,
    /// Spread of the mouth-open ratio in the window (90th minus 10th percentile).
    pub mouth_range: f32,
    /// Face samples paired with an audio level.
    pub pairs: usize,
}

/// The spoken step's result: `failure` is `None` when it passed, `MIC_SILENT` when no voice was
/// heard, `SPEECH_NOT_MATCHED` when the lips did not follow the voice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeechOutcome {
    pub failure: Option<ReasonCode>,
    pub evidence: SpeechEvidence,
}

/// Judges one spoken step; see the module documentation.
#[derive(Debug)]
pub(crate) struct SpeechJudge {
    th: SpeechThresholds,
    /// Listening since (the prompt or the last resume); `None` while not listening.
    since: Option<Instant>,
    audio: Vec<VoiceFrame>,
    mouth: Vec<(Instant, f32)>,
    onset: Option<Instant>,
    outcome: Option<SpeechOutcome>,
}

impl SpeechJudge {
    pub fn new(th: SpeechThresholds) -> Self {
        SpeechJudge {
            th,
            since: None,
            audio: Vec::new(),
            mouth: Vec::new(),
            onset: None,
            outcome: None,
        }
    }

    /// The prompt is shown (or shown again after a pause): listening starts afresh at `at`.
    pub(crate) fn listen(&mut self, at: Instant) {
        if self.outcome.is_some() {
            return;
        }
        self.since = Some(at);
        self.audio.clear();
        self.mouth.clear();
        self.onset = None;
    }

    /// The step is paused: what was heard so far no longer counts.
    pub fn stop(&mut self) {
        self.since = None;
        self.audio.clear();
        self.mouth.clear();
        self.onset = None;
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.since.is_some() && self.outcome.is_none()
    }

    /// One audio frame. Frames from before listening started are ignored.
    pub(crate) fn on_audio(&mut self, f: VoiceFrame) {
        let Some(since) = self.since.filter(|s| f.at >= *s && self.outcome.is_none()) else {
            return;
        };
        self.audio.push(f);
        if self.onset.is_none() {
            let recent = &self.audio[self.audio.len().saturating_sub(self.th.onset_frames)..];
            let voiced = recent.iter().filter(|f| f.voiced).count();
            if recent.len() >= self.th.onset_frames.min(self.th.onset_voiced)
                && voiced >= self.th.onset_voiced
            {
                // The voice began at the first voiced frame of the run that made the onset.
                let first = recent.iter().find(|f| f.voiced).map_or(f.at, |f| f.at);
                self.onset = Some(first.max(since));
            }
        }
    }

    /// The mouth-open ratio of one analysed face frame.
    pub(crate) fn on_mouth(&mut self, at: Instant, mouth_open: f32) {
        if self.since.is_some_and(|s| at >= s) && self.outcome.is_none() && mouth_open.is_finite() {
            self.mouth.push((at, mouth_open));
        }
    }

    /// Decides once enough time has passed at `at`; returns the outcome once, when decided.
    pub(crate) fn poll(&mut self, at: Instant) -> Option<SpeechOutcome> {
        let since = self.since?;
        if self.outcome.is_some() {
            return None;
        }
        let outcome = match self.onset {
            None if at >= since + self.th.onset_within => SpeechOutcome {
                failure: Some(ReasonCode::MicSilent),
                evidence: SpeechEvidence {
                    onset_ms: None,
                    voiced_ms: self.voiced_ms(since, at),
                    correlation: None,
                    mouth_range: 0.0,
                    pairs: 0,
                },
            },
            Some(onset) if at >= onset + self.th.listen_for => self.judge(since, onset),
            _ => return None,
        };
        self.outcome = Some(outcome.clone());
        Some(outcome)
    }

    pub fn outcome(&self) -> Option<&SpeechOutcome> {
        self.outcome.as_ref()
    }

    fn voiced_ms(&self, from: Instant, to: Instant) -> u64 {
        self.audio
            .iter()
            .filter(|f| f.voiced && f.at >= from && f.at <= to)
            .map(|f| f.duration.as_millis() as u64)
            .sum()
    }

    fn judge(&self, since: Instant, onset: Instant) -> SpeechOutcome {
        let from = onset
            .checked_sub(self.th.max_lag)
            .unwrap_or(onset)
            .max(since);
        let to = onset + self.th.listen_for;
        let voiced_ms = self.voiced_ms(from, to);
        let mouth: Vec<(Instant, f32)> = self
            .mouth
            .iter()
            .copied()
            .filter(|(t, _)| *t >= from && *t <= to)
            .collect();
        let mouth_range = spread(mouth.iter().map(|(_, m)| *m).collect());
        let mut best: Option<(f32, usize)> = None;
        let step = Duration::from_millis(LAG_STEP_MS);
        let lags = (self.th.max_lag.as_millis() as u64 / LAG_STEP_MS) as i64;
        for k in -lags..=lags {
            let lag = step * k.unsigned_abs() as u32;
            let pairs: Vec<(f32, f32)> = mouth
                .iter()
                .filter_map(|(t, m)| {
                    let centre = if k >= 0 {
                        t.checked_add(lag)?
                    } else {
                        t.checked_sub(lag)?
                    };
                    Some((*m, self.level_near(centre)?))
                })
                .collect();
            if pairs.len() < self.th.min_pairs {
                continue;
            }
            let r = pearson(&pairs);
            if best.is_none_or(|(b, _)| r > b) {
                best = Some((r, pairs.len()));
            }
        }
        let evidence = SpeechEvidence {
            onset_ms: Some(onset.saturating_duration_since(since).as_millis() as u64),
            voiced_ms,
            correlation: best.map(|(r, _)| r),
            mouth_range,
            pairs: best.map_or(0, |(_, n)| n),
        };
        let failure = if voiced_ms < self.th.min_voiced.as_millis() as u64 {
            Some(ReasonCode::MicSilent)
        } else if best.is_some_and(|(r, _)| r >= self.th.min_correlation)
            && mouth_range >= self.th.min_mouth_range
        {
            None
        } else {
            Some(ReasonCode::SpeechNotMatched)
        };
        SpeechOutcome { failure, evidence }
    }

    /// Mean floored level of the audio frames around `centre` (a video frame's span: from
    /// `LEVEL_BEFORE` before it to `LEVEL_AFTER` after it), or `None` when no frame falls there.
    fn level_near(&self, centre: Instant) -> Option<f32> {
        let from = centre.checked_sub(LEVEL_BEFORE).unwrap_or(centre);
        let to = centre + LEVEL_AFTER;
        let (sum, n) = self
            .audio
            .iter()
            .filter(|f| f.at >= from && f.at < to)
            .fold((0.0f32, 0usize), |(s, n), f| {
                (s + f.level_dbfs.max(self.th.level_floor_dbfs), n + 1)
            });
        (n > 0).then(|| sum / n as f32)
    }
}

/// Lags tried between mouth and voice, in steps of this.
const LAG_STEP_MS: u64 = 70;
/// A face sample's speech level is the mean over audio frames from this long before it ...
const LEVEL_BEFORE: Duration = Duration::from_millis(60);
/// ... to this long after it (about one analysed video frame in all).
const LEVEL_AFTER: Duration = Duration::from_millis(40);

/// Pearson correlation of the pairs; 0 when either side does not vary.
fn pearson(pairs: &[(f32, f32)]) -> f32 {
    let n = pairs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = pairs.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + *x as f64 / n, b + *y as f64 / n)
    });
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        let (dx, dy) = (*x as f64 - mx, *y as f64 - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 1e-12 || syy <= 1e-12 {
        return 0.0;
    }
    (sxy / (sxx * syy).sqrt()) as f32
}

/// 90th minus 10th percentile (0 for fewer than two values).
fn spread(mut v: Vec<f32>) -> f32 {
    if v.len() < 2 {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    let at = |q: f32| v[((v.len() - 1) as f32 * q).round() as usize];
    at(0.9) - at(0.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const FRAME: Duration = Duration::from_millis(20);
    const VIDEO: Duration = Duration::from_micros(66_667);

    /// Syllable envelope of four digits read aloud from `start` s: 0.32 s of voice every 0.5 s.
    fn syllables(t: f64, start: f64) -> f64 {
        let d = t - start;
        if !(0.0..2.0).contains(&d) {
            return 0.0;
        }
        let p = d % 0.5;
        if p < 0.32 {
            (std::f64::consts::PI * p / 0.32).sin().powi(2)
        } else {
            0.0
        }
    }

    struct Call {
        t0: Instant,
        judge: SpeechJudge,
        outcome: Option<(u64, SpeechOutcome)>,
    }

    impl Call {
        fn new() -> Call {
            let t0 = Instant::now();
            let mut judge = SpeechJudge::new(SpeechThresholds::default());
            judge.listen(t0);
            Call {
                t0,
                judge,
                outcome: None,
            }
        }

        /// Runs `secs` of audio and video: `voice(t)` in 0..1 (level -20 dBFS at 1, room noise
        /// at -70 dBFS at 0, voiced above 0.2; `None`: digital silence) and `mouth(t)`.
        fn run(
            &mut self,
            secs: f64,
            voice: impl Fn(f64) -> Option<f64>,
            mouth: impl Fn(f64) -> f64,
        ) {
            let end = self.t0 + Duration::from_secs_f64(secs);
            let (mut next_audio, mut next_video) = (self.t0, self.t0);
            while next_audio < end || next_video < end {
                if next_audio <= next_video {
                    let t = (next_audio - self.t0).as_secs_f64();
                    let (voiced, level) = match voice(t) {
                        None => (false, -120.0),
                        Some(v) if v > 0.2 => (true, -20.0 + 20.0 * v.log10()),
                        Some(_) => (false, -70.0),
                    };
                    self.judge.on_audio(VoiceFrame {
                        at: next_audio,
                        duration: FRAME,
                        voiced,
                        level_dbfs: level as f32,
                    });
                    next_audio += FRAME;
                } else {
                    let t = (next_video - self.t0).as_secs_f64();
                    self.judge.on_mouth(next_video, mouth(t) as f32);
                    next_video += VIDEO;
                }
                let now = next_audio.min(next_video);
                if let Some(o) = self.judge.poll(now) {
                    assert!(self.outcome.is_none(), "decided once");
                    self.outcome = Some(((now - self.t0).as_millis() as u64, o));
                }
            }
        }
    }

    #[test]
    fn a_person_reading_aloud_passes_and_is_decided_after_the_listening_window() {
        let mut c = Call::new();
        c.run(
            6.0,
            |t| Some(syllables(t, 0.8)),
            |t| 0.05 + 0.3 * syllables(t, 0.8),
        );
        let (at, o) = c.outcome.expect("decided");
        assert_eq!(o.failure, None, "{o:?}");
        // Onset at the first voiced frame of the first syllable (envelope above 0.2 from ~0.87 s).
        let onset = o.evidence.onset_ms.unwrap();
        assert!((860..=900).contains(&onset), "{onset}");
        // Decided at onset + 2.2 s, on the next frame.
        assert!((onset + 2200..=onset + 2240).contains(&at), "{at}");
        assert!(o.evidence.correlation.unwrap() > 0.8, "{o:?}");
        assert!(o.evidence.voiced_ms >= 800, "{o:?}");
    }

    #[test]
    fn a_late_reader_and_lips_a_frame_behind_still_pass() {
        let mut c = Call::new();
        c.run(
            8.0,
            |t| Some(syllables(t, 3.5)),
            |t| 0.08 + 0.25 * syllables(t, 3.5 + 0.07),
        );
        let (_, o) = c.outcome.expect("decided");
        assert_eq!(o.failure, None, "{o:?}");
    }

    #[test]
    fn no_voice_within_the_onset_window_is_mic_silent_at_its_end() {
        // Room noise only: quiet is not a voice.
        let mut c = Call::new();
        c.run(6.0, |_| Some(0.0), |t| 0.05 + 0.3 * syllables(t, 0.8));
        let (at, o) = c.outcome.expect("decided");
        assert_eq!(o.failure, Some(ReasonCode::MicSilent));
        assert_eq!(at, 4000);
        assert_eq!(o.evidence.onset_ms, None);
        // A muted microphone (digital silence) too.
        let mut c = Call::new();
        c.run(6.0, |_| None, |_| 0.05);
        assert_eq!(c.outcome.unwrap().1.failure, Some(ReasonCode::MicSilent));
    }

    #[test]
    fn voice_after_the_onset_window_is_too_late() {
        let mut c = Call::new();
        c.run(
            8.0,
            |t| Some(syllables(t, 4.5)),
            |t| 0.05 + 0.3 * syllables(t, 4.5),
        );
        let (at, o) = c.outcome.unwrap();
        assert_eq!((at, o.failure), (4000, Some(ReasonCode::MicSilent)));
    }

    #[test]
    fn a_click_is_not_an_onset() {
        let mut c = Call::new();
        // 40 ms of loud sound (two frames) at 1 s, then quiet.
        c.run(
            6.0,
            |t| Some(if (1.0..1.04).contains(&t) { 1.0 } else { 0.0 }),
            |_| 0.05,
        );
        let (at, o) = c.outcome.unwrap();
        assert_eq!((at, o.failure), (4000, Some(ReasonCode::MicSilent)));
    }

    #[test]
    fn a_played_voice_over_a_still_face_is_not_matched() {
        let mut c = Call::new();
        c.run(
            6.0,
            |t| Some(syllables(t, 0.8)),
            // A still face: the mesh's own jitter only.
            |t| 0.05 + 0.005 * (t * 37.0).sin(),
        );
        let (_, o) = c.outcome.unwrap();
        assert_eq!(o.failure, Some(ReasonCode::SpeechNotMatched), "{o:?}");
        assert!(o.evidence.mouth_range < 0.02, "{o:?}");
    }

    #[test]
    fn lips_that_move_to_another_rhythm_are_not_matched() {
        let mut c = Call::new();
        c.run(
            6.0,
            |t| Some(syllables(t, 0.8)),
            // The mouth opens in the gaps between the voice's syllables (another recording).
            |t| 0.05 + 0.3 * syllables(t, 0.8 + 0.3),
        );
        let (_, o) = c.outcome.unwrap();
        assert_eq!(o.failure, Some(ReasonCode::SpeechNotMatched), "{o:?}");
        assert!(o.evidence.correlation.unwrap() < 0.3, "{o:?}");
    }

    #[test]
    fn a_pause_restarts_listening_and_frames_before_it_do_not_count() {
        let t0 = Instant::now();
        let mut j = SpeechJudge::new(SpeechThresholds::default());
        j.listen(t0);
        assert!(j.is_listening());
        j.stop();
        assert!(!j.is_listening());
        // Voice while stopped is ignored, and nothing is decided.
        for i in 0..300u32 {
            j.on_audio(VoiceFrame {
                at: t0 + FRAME * i,
                duration: FRAME,
                voiced: true,
                level_dbfs: -20.0,
            });
        }
        assert_eq!(j.poll(t0 + Duration::from_secs(6)), None);
        // Resumed at 6 s: a fresh onset window from there.
        let resume = t0 + Duration::from_secs(6);
        j.listen(resume);
        assert_eq!(j.poll(resume + Duration::from_millis(3990)), None);
        let o = j.poll(resume + Duration::from_secs(4)).unwrap();
        assert_eq!(o.failure, Some(ReasonCode::MicSilent));
        assert_eq!(j.poll(resume + Duration::from_secs(5)), None, "once");
        assert_eq!(j.outcome(), Some(&o));
    }

    #[test]
    fn digits_are_random_four_and_never_doubled() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..100 {
            let d = random_digits(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let parts: Vec<&str> = d.split(' ').collect();
            assert_eq!(parts.len(), DIGITS, "{d}");
            assert!(parts
                .iter()
                .all(|p| p.len() == 1 && p.as_bytes()[0].is_ascii_digit()));
            assert!(parts.windows(2).all(|w| w[0] != w[1]), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 90, "{}", seen.len());
    }
}
