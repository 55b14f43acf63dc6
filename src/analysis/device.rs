//! Camera and microphone health: sans-IO state machines fed with decoded-frame facts, audio
//! levels and timestamps. They decide when a device fault is real (held long enough) and when
//! it is over, and report changes as reason codes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use super::hold::HealthChange;
use super::hold::Held;
use crate::reasons::ReasonCode;

/// A decoded frame this long without a first frame after connecting means no usable camera.
pub(crate) const NO_VIDEO_AFTER: Duration = Duration::from_secs(3);
/// Near-black frames must persist this long.
pub(crate) const BLACK_HOLD: Duration = Duration::from_secs(1);
/// Unchanged frames (while packets arrive) must persist longer than this, so a stuck camera is
/// named within 2 s of its last changed frame (at 15 analysed frames a second).
pub(crate) const FROZEN_HOLD: Duration = Duration::from_millis(1500);
/// Two frames whose 16x16 luma signatures differ by less than this in every block (max absolute
/// difference of block means, 0..255) count as the same picture. Encoder noise on a repeated
/// picture moves block means by well under one level; any real motion moves some block more.
pub(crate) const FROZEN_BLOCK_DIFFERENCE: u8 = 2;
/// Below this size the face is too small to verify.
pub const MIN_WIDTH: usize = 480;
pub const MIN_HEIGHT: usize = 360;
pub(crate) const LOW_RESOLUTION_HOLD: Duration = Duration::from_secs(2);
/// Sender stalls (see `media::netstats`) in consecutive one-second windows for this long name the
/// device, not the network.
pub(crate) const STALL_HOLD: Duration = Duration::from_secs(1);
/// Decoded frames per second below this, measured over `FRAMERATE_WINDOW`.
pub(crate) const MIN_FPS: f64 = 8.0;
pub(crate) const FRAMERATE_WINDOW: Duration = Duration::from_secs(2);
/// Audio below this level (dBFS, RMS) is digital silence: a muted or dead microphone. A quiet
/// room after the browser's noise suppression still reads about -75..-55 dBFS, and a person who
/// says nothing is not a fault; only the spoken step asks for sound.
pub(crate) const SILENCE_DBFS: f64 = -90.0;
pub(crate) const SILENCE_HOLD: Duration = Duration::from_secs(3);
/// A fault clears after the device has been fine for this long (no flicker).
pub(crate) const CLEAR_HOLD: Duration = Duration::from_millis(1000);

/// Facts about one decoded video frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameFacts<'a> {
    pub width: usize,
    pub height: usize,
    pub black: bool,
    /// Too dark to tell a frozen camera from a still person (small changes vanish).
    pub dark: bool,
    pub signature: &'a [u8; 256],
}

#[derive(Debug)]
pub struct CameraHealth {
    connected_at: Option<Instant>,
    first_frame: Option<Instant>,
    last_packet: Option<Instant>,
    last_signature: Option<[u8; 256]>,
    no_video: Held,
    black: Held,
    frozen: Held,
    low_resolution: Held,
    low_framerate: Held,
    stalled: Held,
    /// Decode times within the frame-rate window (bounded by the window and the frame rate).
    recent_frames: VecDeque<Instant>,
}

impl Default for CameraHealth {
    fn default() -> Self {
        CameraHealth {
            connected_at: None,
            first_frame: None,
            last_packet: None,
            last_signature: None,
            no_video: Held::new(CLEAR_HOLD, ReasonCode::CameraNoVideo),
            black: Held::new(CLEAR_HOLD, ReasonCode::CameraBlack),
            frozen: Held::new(CLEAR_HOLD, ReasonCode::CameraFrozen),
            low_resolution: Held::new(CLEAR_HOLD, ReasonCode::CameraLowResolution),
            low_framerate: Held::new(CLEAR_HOLD, ReasonCode::CameraLowFramerate),
            // Cleared after two stall-free windows.
            stalled: Held::new(Duration::from_secs(2), ReasonCode::CameraStalled),
            recent_frames: VecDeque::with_capacity(128),
        }
    }
}

impl CameraHealth {
    pub fn on_connected(&mut self, at: Instant) {
        self.connected_at.get_or_insert(at);
    }

    /// Encoded video arrived (whether or not it decodes).
    pub fn on_packet(&mut self, at: Instant) {
        self.last_packet = Some(at);
    }

    /// A frame was decoded (every frame, analysed or not): the camera's frame rate.
    pub fn on_decoded(&mut self, at: Instant) {
        self.recent_frames.push_back(at);
        while self.recent_frames.len() > 512 {
            self.recent_frames.pop_front();
        }
    }

    /// One network-monitor window (about a second): whether the sender stalled in it (gaps in
    /// its own capture clock with nothing lost and no network delay).
    pub(crate) fn on_sender_window(&mut self, at: Instant, stalled: bool) -> Vec<HealthChange> {
        let mut out = Vec::new();
        self.stalled.update(at, stalled, STALL_HOLD, &mut out);
        out
    }

    /// Whether the sender has been stalling (the device, not the network, holds the video).
    pub fn stalled(&self) -> bool {
        self.stalled.active()
    }

    /// Facts from an analysed frame.
    pub fn on_frame(&mut self, at: Instant, f: FrameFacts<'_>) -> Vec<HealthChange> {
        let mut out = Vec::new();
        self.first_frame.get_or_insert(at);
        self.no_video.update(at, false, NO_VIDEO_AFTER, &mut out);
        self.black.update(at, f.black, BLACK_HOLD, &mut out);
        // A black camera is one fault, not also a frozen one.
        let same = !f.black
            && !f.dark
            && self.last_signature.is_some_and(|prev| {
                max_block_difference(&prev, f.signature) < FROZEN_BLOCK_DIFFERENCE
            });
        let packets_flowing = self
            .last_packet
            .is_some_and(|p| at.duration_since(p) < Duration::from_millis(500) || p >= at);
        // The hold must be exceeded, not just reached ("unchanged for more than 2 s").
        self.frozen.update(
            at,
            same && packets_flowing,
            FROZEN_HOLD + Duration::from_millis(1),
            &mut out,
        );
        if !same {
            self.last_signature = Some(*f.signature);
        }
        let small = f.width < MIN_WIDTH || f.height < MIN_HEIGHT;
        self.low_resolution
            .update(at, small, LOW_RESOLUTION_HOLD, &mut out);
        out
    }

    /// Time-driven checks (no first frame, frame rate); call about every 100-200 ms.
    pub fn tick(&mut self, at: Instant) -> Vec<HealthChange> {
        let mut out = Vec::new();
        if let Some(connected) = self.connected_at {
            let waiting = self.first_frame.is_none();
            if waiting && at.duration_since(connected) >= NO_VIDEO_AFTER {
                self.no_video.update(at, true, Duration::ZERO, &mut out);
            }
        }
        while self
            .recent_frames
            .front()
            .is_some_and(|t| at.saturating_duration_since(*t) > FRAMERATE_WINDOW)
        {
            self.recent_frames.pop_front();
        }
        // Judge the frame rate only once a full window of decoding has passed.
        if let Some(first) = self.first_frame {
            if at.duration_since(first) >= FRAMERATE_WINDOW && !self.black.active() {
                let fps = self.recent_frames.len() as f64 / FRAMERATE_WINDOW.as_secs_f64();
                self.low_framerate
                    .update(at, fps < MIN_FPS, Duration::ZERO, &mut out);
            }
        }
        out
    }

    pub fn active(&self) -> Vec<ReasonCode> {
        [
            &self.no_video,
            &self.black,
            &self.frozen,
            &self.low_resolution,
            &self.low_framerate,
            &self.stalled,
        ]
        .iter()
        .filter(|h| h.active())
        .map(|h| h.code())
        .collect()
    }

    /// The camera state for `device` events: the first active fault, or `ok`.
    pub fn state(&self) -> &'static str {
        self.active().first().map(|c| c.as_str()).unwrap_or("ok")
    }
}

fn max_block_difference(a: &[u8; 256], b: &[u8; 256]) -> u8 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[derive(Debug)]
pub(crate) struct MicHealth {
    wants_audio: bool,
    has_track: bool,
    connected_at: Option<Instant>,
    last_audio: Option<Instant>,
    missing: Held,
    silent: Held,
}

impl MicHealth {
    pub fn new(wants_audio: bool) -> Self {
        MicHealth {
            wants_audio,
            has_track: false,
            connected_at: None,
            last_audio: None,
            missing: Held::new(CLEAR_HOLD, ReasonCode::MicMissing),
            silent: Held::new(CLEAR_HOLD, ReasonCode::MicSilent),
        }
    }

    pub fn on_connected(&mut self, at: Instant, has_audio_track: bool) -> Vec<HealthChange> {
        let mut out = Vec::new();
        self.connected_at.get_or_insert(at);
        self.has_track = has_audio_track;
        self.missing.update(
            at,
            self.wants_audio && !has_audio_track,
            Duration::ZERO,
            &mut out,
        );
        out
    }

    /// One decoded audio packet and its level. A DTX packet is judged by its decoded level like
    /// any other: comfort noise reproduces the room, which is not a fault.
    pub(crate) fn on_audio(&mut self, at: Instant, level_dbfs: f64) -> Vec<HealthChange> {
        let mut out = Vec::new();
        self.last_audio = Some(at);
        let silent = level_dbfs < SILENCE_DBFS;
        self.silent.update(at, silent, SILENCE_HOLD, &mut out);
        out
    }

    /// A sender that stops sending (full DTX) is silent too.
    pub fn tick(&mut self, at: Instant) -> Vec<HealthChange> {
        let mut out = Vec::new();
        if let (true, Some(connected)) = (self.has_track, self.connected_at) {
            let quiet_since = self.last_audio.unwrap_or(connected);
            if at.duration_since(quiet_since) >= Duration::from_millis(500) {
                // Treat the gap as silence that started when audio stopped.
                if self.silent.since().is_none() {
                    self.silent.start_at(quiet_since);
                }
                self.silent.update(at, true, SILENCE_HOLD, &mut out);
            }
        }
        out
    }

    pub fn active(&self) -> Vec<ReasonCode> {
        [&self.missing, &self.silent]
            .iter()
            .filter(|h| h.active())
            .map(|h| h.code())
            .collect()
    }

    pub fn state(&self) -> &'static str {
        self.active().first().map(|c| c.as_str()).unwrap_or("ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS15: Duration = Duration::from_micros(66_667);

    fn sig(v: u8) -> [u8; 256] {
        let mut s = [v; 256];
        s[0] = v.wrapping_add(40);
        s
    }

    #[test]
    fn no_video_after_three_seconds_and_cleared_by_a_frame() {
        let t0 = Instant::now();
        let mut cam = CameraHealth::default();
        cam.on_connected(t0);
        assert!(cam.tick(t0 + Duration::from_millis(2900)).is_empty());
        assert_eq!(
            cam.tick(t0 + Duration::from_secs(3)),
            vec![HealthChange::Raised(ReasonCode::CameraNoVideo)]
        );
        let s = sig(100);
        let f = FrameFacts {
            width: 640,
            height: 480,
            black: false,
            dark: false,
            signature: &s,
        };
        assert!(cam.on_frame(t0 + Duration::from_secs(4), f).is_empty());
        let changes = cam.on_frame(t0 + Duration::from_millis(5100), f);
        assert!(
            changes.contains(&HealthChange::Cleared(ReasonCode::CameraNoVideo)),
            "{changes:?}"
        );
    }

    #[test]
    fn black_is_raised_after_one_second_and_is_not_also_frozen() {
        let t0 = Instant::now();
        let mut cam = CameraHealth::default();
        cam.on_connected(t0);
        let s = [16u8; 256];
        let mut raised = Vec::new();
        for i in 0..60 {
            let at = t0 + FPS15 * i;
            cam.on_packet(at);
            for c in cam.on_frame(
                at,
                FrameFacts {
                    width: 640,
                    height: 480,
                    black: true,
                    dark: false,
                    signature: &s,
                },
            ) {
                raised.push((i, c));
            }
            raised.extend(cam.tick(at).into_iter().map(|c| (i, c)));
        }
        assert_eq!(
            raised,
            vec![(15, HealthChange::Raised(ReasonCode::CameraBlack))]
        );
    }

    #[test]
    fn frozen_needs_more_than_one_and_a_half_seconds_of_identical_frames_with_packets() {
        let t0 = Instant::now();
        let mut cam = CameraHealth::default();
        cam.on_connected(t0);
        let s = sig(120);
        let mut first_raise = None;
        for i in 0..60u32 {
            let at = t0 + FPS15 * i;
            cam.on_packet(at);
            for c in cam.on_frame(
                at,
                FrameFacts {
                    width: 640,
                    height: 480,
                    black: false,
                    dark: false,
                    signature: &s,
                },
            ) {
                assert_eq!(c, HealthChange::Raised(ReasonCode::CameraFrozen));
                first_raise.get_or_insert(i);
            }
        }
        // Frame 1 is the first repeat; > 1.5 s later is frame 24: the stuck camera is named 1.6 s
        // after its last new picture.
        assert_eq!(first_raise, Some(24));
        // Changing frames clear it after the clear hold.
        let mut cleared = None;
        for i in 60..100u32 {
            let at = t0 + FPS15 * i;
            cam.on_packet(at);
            let s = sig((i * 7 % 200) as u8);
            for c in cam.on_frame(
                at,
                FrameFacts {
                    width: 640,
                    height: 480,
                    black: false,
                    dark: false,
                    signature: &s,
                },
            ) {
                assert_eq!(c, HealthChange::Cleared(ReasonCode::CameraFrozen));
                cleared.get_or_insert(i);
            }
        }
        assert_eq!(cleared, Some(75));
    }

    #[test]
    fn a_still_picture_without_packets_is_not_frozen() {
        let t0 = Instant::now();
        let mut cam = CameraHealth::default();
        let s = sig(50);
        for i in 0..60u32 {
            let changes = cam.on_frame(
                t0 + FPS15 * i,
                FrameFacts {
                    width: 640,
                    height: 480,
                    black: false,
                    dark: false,
                    signature: &s,
                },
            );
            assert!(changes.is_empty());
        }
    }

    #[test]
    fn low_resolution_and_low_framerate() {
        let t0 = Instant::now();
        let mut cam = CameraHealth::default();
        cam.on_connected(t0);
        let mut got = Vec::new();
        // 320x240 at 5 fps for 3 s.
        for i in 0..15u32 {
            let at = t0 + Duration::from_millis(200) * i;
            let s = sig(i as u8 * 10);
            cam.on_decoded(at);
            got.extend(cam.on_frame(
                at,
                FrameFacts {
                    width: 320,
                    height: 240,
                    black: false,
                    dark: false,
                    signature: &s,
                },
            ));
            got.extend(cam.tick(at));
        }
        assert!(
            got.contains(&HealthChange::Raised(ReasonCode::CameraLowResolution)),
            "{got:?}"
        );
        assert!(
            got.contains(&HealthChange::Raised(ReasonCode::CameraLowFramerate)),
            "{got:?}"
        );
    }

    #[test]
    fn silence_for_three_seconds_and_tone_clears() {
        let t0 = Instant::now();
        let mut mic = MicHealth::new(true);
        assert!(mic.on_connected(t0, true).is_empty());
        let mut raised = None;
        for i in 0..200u32 {
            let at = t0 + Duration::from_millis(20) * i;
            for c in mic.on_audio(at, -120.0) {
                assert_eq!(c, HealthChange::Raised(ReasonCode::MicSilent));
                raised.get_or_insert(i);
            }
        }
        assert_eq!(raised, Some(150));
        let mut cleared = None;
        for i in 200..300u32 {
            let at = t0 + Duration::from_millis(20) * i;
            for c in mic.on_audio(at, -20.0) {
                assert_eq!(c, HealthChange::Cleared(ReasonCode::MicSilent));
                cleared.get_or_insert(i);
            }
        }
        assert_eq!(cleared, Some(250));
    }

    /// A quiet room after noise suppression (-70 dBFS) is not a muted microphone.
    #[test]
    fn a_quiet_room_is_not_silence() {
        let t0 = Instant::now();
        let mut mic = MicHealth::new(true);
        mic.on_connected(t0, true);
        for i in 0..1000u32 {
            let at = t0 + Duration::from_millis(20) * i;
            assert!(mic.on_audio(at, -70.0).is_empty());
            assert!(mic.tick(at).is_empty());
        }
    }

    #[test]
    fn speech_level_never_raises_and_missing_track_is_immediate() {
        let t0 = Instant::now();
        let mut mic = MicHealth::new(true);
        mic.on_connected(t0, true);
        for i in 0..400u32 {
            assert!(mic
                .on_audio(t0 + Duration::from_millis(20) * i, -25.0)
                .is_empty());
        }
        let mut no_mic = MicHealth::new(true);
        assert_eq!(
            no_mic.on_connected(t0, false),
            vec![HealthChange::Raised(ReasonCode::MicMissing)]
        );
        let mut not_wanted = MicHealth::new(false);
        assert!(not_wanted.on_connected(t0, false).is_empty());
    }

    #[test]
    fn a_sender_that_stops_sending_audio_is_silent() {
        let t0 = Instant::now();
        let mut mic = MicHealth::new(true);
        mic.on_connected(t0, true);
        mic.on_audio(t0, -20.0);
        assert!(mic.tick(t0 + Duration::from_millis(2900)).is_empty());
        assert_eq!(
            mic.tick(t0 + Duration::from_millis(3100)),
            vec![HealthChange::Raised(ReasonCode::MicSilent)]
        );
    }
}
