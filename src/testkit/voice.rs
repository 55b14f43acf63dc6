//! Microphones for end-to-end tests and benches: a person who reads the spoken step's digits
//! aloud when the prompt arrives on the data channel (a synthetic voice: a 125 Hz glottal pulse
//! train shaped by vowel formants, one syllable per digit), room noise at a chosen level the rest
//! of the time, and a muted microphone. The voice's syllable timing is [`speaking`], which the
//! rendered people (`actor::perform`) follow with their lips.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::actor::current_challenge_at;
use super::peer::ReactiveAudio;

/// Audio packets per second (20 ms each).
pub const PACKETS_PER_S: u32 = 50;
const RATE: usize = 48_000;
/// Samples in one pitch period at 125 Hz.
const PERIOD: usize = RATE / 125;

/// Seconds after the prompt a person starts reading.
pub const SPEECH_DELAY: f32 = 0.6;
/// One digit: this long voiced ...
pub const SYLLABLE_S: f32 = 0.32;
/// ... every this long.
pub const SYLLABLE_PERIOD_S: f32 = 0.5;
/// Digits read.
pub const SYLLABLES: usize = 4;

/// How open the voice (and the mouth) is `t` seconds after the spoken step was asked: 0 before
/// [`SPEECH_DELAY`] and between syllables, a smooth rise and fall (sin²) within each.
pub fn speaking(t: f32) -> f32 {
    let d = t - SPEECH_DELAY;
    if d < 0.0 || d >= SYLLABLE_PERIOD_S * SYLLABLES as f32 {
        return 0.0;
    }
    let p = d % SYLLABLE_PERIOD_S;
    if p < SYLLABLE_S {
        (std::f32::consts::PI * p / SYLLABLE_S).sin().powi(2)
    } else {
        0.0
    }
}

/// One pitch period of each of three vowels (a, o, i), normalised to an RMS of 1: harmonics of
/// 125 Hz weighted by three formant peaks, falling 6 dB an octave like a glottal source.
fn vowels() -> &'static [Vec<f32>; 3] {
    static TABLES: OnceLock<[Vec<f32>; 3]> = OnceLock::new();
    TABLES.get_or_init(|| {
        let formants = [
            [(730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0)],
            [(570.0, 80.0), (840.0, 100.0), (2410.0, 170.0)],
            [(270.0, 60.0), (2290.0, 150.0), (3010.0, 200.0)],
        ];
        formants.map(|f| {
            let mut table: Vec<f32> = (0..PERIOD)
                .map(|n| {
                    (1..=30)
                        .map(|k| {
                            let hz = 125.0 * k as f32;
                            let weight = f
                                .iter()
                                .map(|(c, bw): &(f32, f32)| (-((hz - c) / bw).powi(2)).exp())
                                .sum::<f32>()
                                + 0.1;
                            weight / k as f32
                                * (std::f32::consts::TAU * k as f32 * n as f32 / PERIOD as f32)
                                    .sin()
                        })
                        .sum()
                })
                .collect();
            let rms = (table.iter().map(|s| s * s).sum::<f32>() / PERIOD as f32).sqrt();
            table.iter_mut().for_each(|s| *s /= rms);
            table
        })
    })
}

/// Uniform noise in [-1, 1] from a sample index (the same at every run).
fn noise(n: u64) -> f32 {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

/// A voice (-20 dBFS at the peak of each syllable) for sample `n`, `t` seconds into the step.
fn voice(n: u64, t: f32) -> f32 {
    let envelope = speaking(t);
    if envelope <= 0.0 {
        return 0.0;
    }
    let syllable = ((t - SPEECH_DELAY) / SYLLABLE_PERIOD_S) as usize;
    let table = &vowels()[syllable % 3];
    0.1 * envelope * table[n as usize % PERIOD]
}

/// Peak of uniform noise whose RMS is `dbfs`.
fn noise_peak(dbfs: f32) -> f32 {
    10f32.powf(dbfs / 20.0) * 3f32.sqrt()
}

/// A person who reads the digits aloud when the spoken step is asked, with room noise at
/// `room_dbfs` (RMS) all the time.
pub fn speaking_person(room_dbfs: f32) -> Arc<ReactiveAudio> {
    let seen = Mutex::new(HashMap::new());
    let peak = noise_peak(room_dbfs);
    Arc::new(ReactiveAudio {
        sound: Box::new(move |index, events, out| {
            let step = current_challenge_at(events, &seen, index, PACKETS_PER_S)
                .filter(|(action, _)| action == "speak_digits");
            let len = out.len() as u64;
            for (i, s) in out.iter_mut().enumerate() {
                let n = index * len + i as u64;
                let room = peak * noise(n);
                *s = match &step {
                    Some((_, t0)) => room + voice(n, t0 + i as f32 / RATE as f32),
                    None => room,
                };
            }
        }),
    })
}

/// A microphone that is muted: digital silence, whatever is asked.
pub fn muted_microphone() -> Arc<ReactiveAudio> {
    Arc::new(ReactiveAudio {
        sound: Box::new(|_, _, out| out.fill(0.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_voice_reads_four_syllables_at_speaking_level_over_room_noise() {
        let level = |v: &[f32]| {
            20.0 * (v.iter().map(|s| s * s).sum::<f32>() / v.len() as f32)
                .sqrt()
                .log10()
        };
        let events =
            vec![serde_json::json!({"type": "challenge", "id": 7, "action": "speak_digits"})];
        let person = speaking_person(-70.0);
        let mut pcm = vec![0.0; 960];
        let mut levels = Vec::new();
        for index in 0..200u64 {
            (person.sound)(index, &events, &mut pcm);
            levels.push(level(&pcm));
        }
        // Room noise before the voice starts and after it ends.
        assert!((-71.0..-69.0).contains(&levels[10]), "{}", levels[10]);
        assert!((-71.0..-69.0).contains(&levels[190]), "{}", levels[190]);
        // Syllable peaks near -20 dBFS: one every 25 packets from 0.6 s (packet 30).
        for k in 0..4 {
            let peak = levels[30 + 25 * k..30 + 25 * k + 16]
                .iter()
                .cloned()
                .fold(f32::MIN, f32::max);
            assert!((-24.0..-19.0).contains(&peak), "syllable {k}: {peak}");
        }
        (muted_microphone().sound)(0, &events, &mut pcm);
        assert!(pcm.iter().all(|s| *s == 0.0));
    }
}
