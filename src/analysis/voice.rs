//! Voice activity on decoded audio: the WebRTC VAD (libfvad, a GMM over sub-band energies; no
//! model file) run on 20 ms frames of the 48 kHz mono PCM the Opus decoder gives. A thin shell
//! over the C library: the spoken step's policy is `liveness::speech`.

use std::time::{Duration, Instant};

use webrtc_vad::{SampleRate, Vad, VadMode};

/// One audio frame's voice-activity decision, for the spoken step (`liveness::speech`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceFrame {
    /// Arrival of the packet the frame came from.
    pub at: Instant,
    /// Frame length (10-30 ms).
    pub duration: Duration,
    /// The VAD heard speech in this frame.
    pub voiced: bool,
    /// RMS level of the frame in dBFS.
    pub level_dbfs: f32,
}

/// Frames quieter than this are never voice, whatever the VAD says: the WebRTC VAD has no noise
/// estimate yet in a call's first seconds and calls even -70 dBFS room noise speech, while a
/// voice aimed at a phone or laptop microphone reads about -40..-15 dBFS after the browser's gain
/// control, and room noise after noise suppression -75..-55 dBFS.
pub(crate) const VOICE_MIN_DBFS: f32 = -50.0;
/// Samples per VAD frame: 20 ms at 48 kHz.
const FRAME_SAMPLES: usize = 960;
const FRAME: Duration = Duration::from_millis(20);

/// The detector's own state (noise estimate) lives across frames.
struct SendVad(Vad);

// SAFETY: `Vad` owns its libfvad instance (plain heap memory without thread affinity) through a
// raw pointer, which is why it is not `Send`; it is used from one thread at a time.
unsafe impl Send for SendVad {}

pub(crate) struct VoiceDetector {
    vad: SendVad,
    pending: Vec<i16>,
    frame: Vec<i16>,
}

impl Default for VoiceDetector {
    fn default() -> Self {
        VoiceDetector {
            // "Low bitrate" is the middle setting: room noise stays quiet, soft speech is heard.
            vad: SendVad(Vad::new_with_rate_and_mode(
                SampleRate::Rate48kHz,
                VadMode::LowBitrate,
            )),
            pending: Vec::with_capacity(FRAME_SAMPLES * 4),
            frame: Vec::with_capacity(FRAME_SAMPLES),
        }
    }
}

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VoiceDetector({} pending)", self.pending.len())
    }
}

impl VoiceDetector {
    /// Feeds one decoded packet (48 kHz mono, any length) that arrived at `at`; returns a
    /// decision for each whole 20 ms frame completed (leftover samples wait for the next packet).
    pub fn push(&mut self, pcm: &[f32], at: Instant) -> Vec<VoiceFrame> {
        self.pending.extend(pcm.iter().map(|s| {
            let s = if s.is_finite() { *s } else { 0.0 };
            (s.clamp(-1.0, 1.0) * i16::MAX as f32) as i16
        }));
        let mut out = Vec::new();
        while self.pending.len() >= FRAME_SAMPLES {
            self.frame.clear();
            self.frame.extend(self.pending.drain(..FRAME_SAMPLES));
            let voiced = self.vad.0.is_voice_segment(&self.frame).unwrap_or(false);
            let energy: f64 = self
                .frame
                .iter()
                .map(|s| {
                    let x = *s as f64 / i16::MAX as f64;
                    x * x
                })
                .sum();
            let rms = (energy / FRAME_SAMPLES as f64).sqrt();
            let level = if rms > 1e-6 {
                (20.0 * rms.log10()).max(-120.0)
            } else {
                -120.0
            };
            let level = level as f32;
            out.push(VoiceFrame {
                at,
                duration: FRAME,
                voiced: voiced && level >= VOICE_MIN_DBFS,
                level_dbfs: level,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vowel-like voice: a 125 Hz pulse train through three formant-like harmonic weights.
    fn vowel(n: usize, amplitude: f32) -> f32 {
        let t = n as f32 / 48_000.0;
        (1..=30)
            .map(|k| {
                let f = 125.0 * k as f32;
                let w = [(700.0, 120.0), (1200.0, 150.0), (2500.0, 250.0)]
                    .iter()
                    .map(|(c, bw)| (-((f - c) / bw).powi(2)).exp())
                    .sum::<f32>()
                    + 0.05;
                w * (std::f32::consts::TAU * f * t).sin()
            })
            .sum::<f32>()
            * amplitude
    }

    #[test]
    fn a_voice_is_heard_and_room_noise_and_silence_are_not() {
        let t0 = Instant::now();
        let mut vad = VoiceDetector::default();
        // 1 s of room noise at about -70 dBFS (uniform, seeded).
        let mut state = 0x2545_f491_u32;
        let noise: Vec<f32> = (0..48_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 * 2.0 - 1.0) * 0.000_55
            })
            .collect();
        let quiet = vad.push(&noise, t0);
        assert_eq!(quiet.len(), 50);
        assert!(quiet.iter().all(|f| !f.voiced), "noise read as voice");
        assert!(quiet.iter().all(|f| (-73.0..-67.0).contains(&f.level_dbfs)));
        let silence = vad.push(&[0.0; 48_000], t0);
        assert!(silence.iter().all(|f| !f.voiced && f.level_dbfs == -120.0));
        // 0.5 s of voice, in 20 ms packets: most frames are voiced.
        let mut voiced = 0;
        for p in 0..25 {
            let pcm: Vec<f32> = (0..960).map(|i| vowel(p * 960 + i, 0.05)).collect();
            voiced += vad.push(&pcm, t0).iter().filter(|f| f.voiced).count();
        }
        assert!(voiced >= 20, "{voiced} of 25 voiced");
        // Odd packet lengths are re-framed.
        assert!(vad.push(&[0.0; 500], t0).is_empty());
        assert_eq!(vad.push(&[0.0; 500], t0).len(), 1);
    }
}
