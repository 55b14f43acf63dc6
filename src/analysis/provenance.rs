//! Where the pictures come from: signs that the face is a screen held to the camera (a
//! recapture) or that the stream was made by no camera at all (an injection). Each cue is a
//! number the verdict reports in its scores (`provenance`) for the relying party and the
//! operator; **none of them decides a verdict**. What stops replays and injections is the
//! screen-light step (`liveness::light`): a recording cannot know the colours the server picks.
//! These cues are what a reviewer looks at next to it, and what a threshold could be drawn from
//! once it is measured on real captures: on our rendered people they separate the attacks, but
//! the renderer draws its screens, its moire and its (absent) sensor noise itself, so a threshold
//! set there would be a threshold on our renderer (docs/FACE.md, "Provenance cues", has the
//! values measured on the attack suite).
//!
//! Sans-IO: fed the sender's capture time of every frame, every decoded frame, and now and then
//! an analysed frame with the face's box.
//!
//! - **Capture timing** (injection): a camera's capture times jitter by a millisecond or more; a
//!   file played out by a program is stamped from its own clock, every interval the same to the
//!   90 kHz tick.
//! - **Repeated frames** (injection): a camera's sensor noise makes every decoded picture differ;
//!   a looped still or a file with duplicated frames repeats pictures bit for bit.
//! - **Sensor noise** (injection): the noise level of the frame's flattest blocks (Immerkaer's
//!   Laplacian-difference estimator); rendered or screen-captured pictures have almost none.
//! - **Moire** (screen): the strongest periodic peak in the spectrum of a patch of the face at
//!   native resolution, against the median of its frequency ring: a display's pixel grid beating
//!   with the camera's gives narrow peaks that skin and hair do not.
//! - **Face detail** (screen): the face's fine detail against the rest of the frame's: a face
//!   recaptured from a screen is softer than the room the screen is held in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use serde::Serialize;

use crate::frame::{Region, I420};

/// The image cues are measured at most this often (only on analysed frames with a face): the
/// call's whole length gives enough samples, and the cost stays far below a frame's analysis.
pub const IMAGE_CUE_INTERVAL: Duration = Duration::from_secs(1);
/// Image samples kept (the first ones; a call is a few minutes at most).
const MAX_IMAGE_SAMPLES: usize = 180;
/// Frame intervals kept (two minutes at 15 fps).
const MAX_INTERVALS: usize = 1_800;
/// Capture intervals farther than this share from the median are dropped or held frames, not
/// jitter.
const INTERVAL_OUTLIER: f64 = 0.5;
/// An interval within this of the median counts as "regular": 9 ticks of the 90 kHz RTP clock.
const REGULAR_WITHIN_MS: f64 = 0.1;
/// Side of the face patch whose spectrum is measured, in pixels at native resolution.
const PATCH: usize = 64;
/// Spectral rings below this radius (in bins of the 64-point transform: 6 cycles per patch) hold
/// the face's own shading and features, not a grid.
const MOIRE_MIN_RADIUS: usize = 6;
/// Side of the blocks the noise level is estimated on.
const NOISE_BLOCK: usize = 8;
/// The noise level is this percentile of the blocks' estimates: the flattest blocks, where
/// texture does not count as noise.
const NOISE_PERCENTILE: f64 = 0.1;

/// The cues over the call so far; each `None` until it could be measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvenanceScores {
    /// Frames whose capture time the sender stamped.
    pub frames: u64,
    /// Median interval between the sender's capture times.
    pub capture_interval_ms: Option<f64>,
    /// Mean absolute deviation of the capture intervals from their median (0 for a program that
    /// stamps its frames from its own 90 kHz clock; browsers stamp whole milliseconds, so a
    /// steady 30 fps source reads about 0.4 there).
    pub capture_jitter_ms: Option<f64>,
    /// Share of capture intervals within 0.1 ms of the median (1 for a program's own clock).
    pub capture_regular_share: Option<f64>,
    /// Share of decoded frames identical to the one before.
    pub repeated_frame_share: Option<f64>,
    /// Analysed frames the image cues below were measured on (face in view, once a second).
    pub image_samples: usize,
    /// Median noise level of the frame's flattest blocks, in 8-bit levels.
    pub sensor_noise: Option<f64>,
    /// Median over samples of the face patch's strongest spectral peak against its ring's
    /// median, in dB.
    pub moire_peak_db: Option<f64>,
    /// Median over samples of the face's fine detail divided by the rest of the frame's.
    pub face_detail_ratio: Option<f64>,
}

/// Collects the cues of one call; see the module documentation.
pub struct ProvenanceMonitor {
    last_capture: Option<f64>,
    intervals_ms: Vec<f64>,
    capture_frames: u64,
    last_hash: Option<u64>,
    decoded: u64,
    repeated: u64,
    next_sample: Option<Instant>,
    image_samples: usize,
    noise: Vec<f64>,
    moire_db: Vec<f64>,
    detail: Vec<f64>,
    spectrum: Spectrum,
    /// Per-block noise estimates of the frame being sampled (reused).
    blocks: Vec<f64>,
}

impl Default for ProvenanceMonitor {
    fn default() -> Self {
        ProvenanceMonitor {
            last_capture: None,
            // Sized once: the intervals are pushed on every frame.
            intervals_ms: Vec::with_capacity(MAX_INTERVALS),
            capture_frames: 0,
            last_hash: None,
            decoded: 0,
            repeated: 0,
            next_sample: None,
            image_samples: 0,
            noise: Vec::new(),
            moire_db: Vec::new(),
            detail: Vec::new(),
            spectrum: Spectrum::new(),
            blocks: Vec::new(),
        }
    }
}

impl ProvenanceMonitor {
    /// A frame the sender stamped with capture time `seconds` (its RTP clock, in seconds).
    pub(crate) fn on_capture_time(&mut self, seconds: f64) {
        self.capture_frames += 1;
        if let Some(last) = self.last_capture {
            let ms = (seconds - last) * 1000.0;
            // Reordered, repeated or long-stalled stamps are not intervals of a running camera.
            if ms > 0.0 && ms < 1000.0 && self.intervals_ms.len() < MAX_INTERVALS {
                self.intervals_ms.push(ms);
            }
        }
        self.last_capture = Some(seconds);
    }

    /// Every decoded frame: is it the same picture as the one before?
    pub fn on_decoded(&mut self, image: &I420) {
        if !image.is_valid() {
            return;
        }
        let hash = sparse_hash(image);
        self.decoded += 1;
        if self.last_hash == Some(hash) {
            self.repeated += 1;
        }
        self.last_hash = Some(hash);
    }

    /// An analysed frame captured at `at`, with the face's box when one is tracked: measures the
    /// image cues at most every [`IMAGE_CUE_INTERVAL`].
    pub fn on_analysed(&mut self, image: &I420, face: Option<Region>, at: Instant) {
        let Some(face) = face else { return };
        if !image.is_valid()
            || self.next_sample.is_some_and(|t| at < t)
            || self.image_samples >= MAX_IMAGE_SAMPLES
        {
            return;
        }
        let Some(face) = clip(face, image) else {
            return;
        };
        self.next_sample = Some(at + IMAGE_CUE_INTERVAL);
        self.image_samples += 1;
        if let Some(n) = noise_level(image, &mut self.blocks) {
            self.noise.push(n);
        }
        if let Some(db) = self.spectrum.moire_peak_db(image, face) {
            self.moire_db.push(db);
        }
        if let Some(r) = detail_ratio(image, face) {
            self.detail.push(r);
        }
    }

    pub fn scores(&self) -> ProvenanceScores {
        let (interval, jitter, regular) = capture_timing(&self.intervals_ms);
        ProvenanceScores {
            frames: self.capture_frames,
            capture_interval_ms: interval.map(round2),
            capture_jitter_ms: jitter.map(round2),
            capture_regular_share: regular.map(round2),
            repeated_frame_share: (self.decoded >= 2)
                .then(|| round2(self.repeated as f64 / (self.decoded - 1) as f64)),
            image_samples: self.image_samples,
            sensor_noise: median(&self.noise).map(round2),
            moire_peak_db: median(&self.moire_db).map(round2),
            face_detail_ratio: median(&self.detail).map(round2),
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

/// Median interval, mean absolute deviation from it and share of regular intervals, over the
/// intervals within [`INTERVAL_OUTLIER`] of the median. Needs 10 intervals. The mean, not the
/// median, of the deviations: browsers stamp whole milliseconds, and a median of deviations that
/// are mostly 0 and 1 ms would read 0 for every camera.
fn capture_timing(intervals: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let Some(mid) = median(intervals).filter(|_| intervals.len() >= 10) else {
        return (None, None, None);
    };
    let kept: Vec<f64> = intervals
        .iter()
        .copied()
        .filter(|i| (i - mid).abs() <= INTERVAL_OUTLIER * mid)
        .collect();
    let deviations: Vec<f64> = kept.iter().map(|i| (i - mid).abs()).collect();
    let regular = deviations
        .iter()
        .filter(|d| **d <= REGULAR_WITHIN_MS)
        .count();
    let n = kept.len().max(1) as f64;
    (
        Some(mid),
        Some(deviations.iter().sum::<f64>() / n),
        Some(regular as f64 / n),
    )
}

/// A hash of every 4th luma sample of every 4th row: two decoded pictures that differ anywhere
/// a camera's noise reaches differ here too, at 1/16 of a full hash's cost.
fn sparse_hash(image: &I420) -> u64 {
    // FNV-1a over the samples: not for security, only to tell pictures apart.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for row in (0..image.height).step_by(4) {
        for &b in image.y_row(row, 0, image.width).iter().step_by(4) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The face box (x, y, w, h in pixels, as the face tracker gives it) as a region: trimmed where it
/// leaves the frame's top or left (the tracker's box may start at negative coordinates), and with
/// NaN read as 0. The caller clips it to the frame.
pub fn face_region(bbox: [f32; 4]) -> Region {
    let [x, y, w, h] = bbox;
    let (x0, y0) = (x.max(0.0), y.max(0.0));
    let (x1, y1) = ((x + w).max(x0), (y + h).max(y0));
    Region::new(
        x0 as usize,
        y0 as usize,
        (x1 - x0) as usize,
        (y1 - y0) as usize,
    )
}

/// The face box clipped to the frame; `None` when too little of it is left.
fn clip(r: Region, image: &I420) -> Option<Region> {
    let r = r.clip(image.width, image.height);
    (r.w >= 8 && r.h >= 8).then_some(r)
}

/// The second difference across rows and columns at (x, y) (the kernel [1 -2 1]^T [1 -2 1]),
/// which cancels any plane and most smooth shading, leaving noise and fine edges.
#[inline]
fn laplacian_difference(image: &I420, x: usize, y: usize) -> i32 {
    let at = |dx: usize, dy: usize| i32::from(image.y[(y + dy - 1) * image.y_stride + x + dx - 1]);
    let row = |dy| at(0, dy) - 2 * at(1, dy) + at(2, dy);
    row(0) - 2 * row(1) + row(2)
}

/// The frame's noise level (standard deviation in 8-bit levels): Immerkaer's estimator
/// (sigma = sqrt(pi / 2) / 6 * mean |L|) per 8x8 block on every other block of every other block
/// row, and the [`NOISE_PERCENTILE`] of the blocks: the flattest, where only noise is left.
fn noise_level(image: &I420, blocks: &mut Vec<f64>) -> Option<f64> {
    blocks.clear();
    if image.width < 3 || image.height < 3 {
        return None;
    }
    let scale = (std::f64::consts::PI / 2.0).sqrt() / 6.0;
    let (cols, rows) = (
        (image.width - 2) / NOISE_BLOCK,
        (image.height - 2) / NOISE_BLOCK,
    );
    for by in (0..rows).step_by(2) {
        for bx in (by / 2 % 2..cols).step_by(2) {
            let mut sum = 0i64;
            for y in 1 + by * NOISE_BLOCK..1 + (by + 1) * NOISE_BLOCK {
                for x in 1 + bx * NOISE_BLOCK..1 + (bx + 1) * NOISE_BLOCK {
                    sum += i64::from(laplacian_difference(image, x, y).abs());
                }
            }
            blocks.push(scale * sum as f64 / (NOISE_BLOCK * NOISE_BLOCK) as f64);
        }
    }
    if blocks.len() < 16 {
        return None;
    }
    blocks.sort_by(f64::total_cmp);
    Some(blocks[(blocks.len() as f64 * NOISE_PERCENTILE) as usize])
}

/// Mean |second difference| of the luma over a region, on every other row and column.
fn detail(image: &I420, r: Region, skip: Option<Region>) -> Option<f64> {
    if image.width < 3 || image.height < 3 {
        return None;
    }
    let (mut sum, mut n) = (0u64, 0u64);
    for y in (r.y.max(1)..(r.y + r.h).min(image.height - 1)).step_by(2) {
        for x in (r.x.max(1)..(r.x + r.w).min(image.width - 1)).step_by(2) {
            if skip.is_some_and(|s| s.contains(x, y)) {
                continue;
            }
            sum += u64::from(laplacian_difference(image, x, y).unsigned_abs());
            n += 1;
        }
    }
    (n >= 64).then(|| sum as f64 / n as f64)
}

/// The face's fine detail over the rest of the frame's (outside the face box grown by half).
fn detail_ratio(image: &I420, face: Region) -> Option<f64> {
    let inner = detail(image, face, None)?;
    let grown = Region {
        x: face.x.saturating_sub(face.w / 4),
        y: face.y.saturating_sub(face.h / 4),
        w: face.w + face.w / 2,
        h: face.h + face.h / 2,
    };
    let outer = detail(image, Region::full(image.width, image.height), Some(grown))?;
    (outer > 0.0).then(|| inner / outer)
}

/// The 2-D spectrum of a [`PATCH`]-square patch, with its transform planned once.
struct Spectrum {
    fft: Arc<dyn Fft<f32>>,
    window: Vec<f32>,
    buffer: Vec<Complex32>,
    column: Vec<Complex32>,
    scratch: Vec<Complex32>,
    rings: Vec<Vec<f32>>,
}

impl Spectrum {
    fn new() -> Self {
        let fft = FftPlanner::new().plan_fft_forward(PATCH);
        let scratch = vec![Complex32::default(); fft.get_inplace_scratch_len()];
        // A Hann window, so the patch's edges do not ring across the spectrum.
        let window = (0..PATCH)
            .map(|i| {
                let t = i as f32 / (PATCH - 1) as f32;
                0.5 - 0.5 * (2.0 * std::f32::consts::PI * t).cos()
            })
            .collect();
        Spectrum {
            fft,
            window,
            buffer: vec![Complex32::default(); PATCH * PATCH],
            column: vec![Complex32::default(); PATCH],
            scratch,
            rings: vec![Vec::new(); PATCH / 2],
        }
    }

    /// The strongest bin of the face patch's power spectrum against the median of its ring
    /// (radius [`MOIRE_MIN_RADIUS`] to Nyquist), in dB. The patch is the face box's centre at
    /// native resolution; `None` when the face is smaller than the patch.
    fn moire_peak_db(&mut self, image: &I420, face: Region) -> Option<f64> {
        if face.w < PATCH || face.h < PATCH {
            return None;
        }
        let x0 = face.x + (face.w - PATCH) / 2;
        let y0 = face.y + (face.h - PATCH) / 2;
        let mut mean = 0.0f32;
        for row in 0..PATCH {
            for (col, &b) in image.y_row(y0 + row, x0, PATCH).iter().enumerate() {
                self.buffer[row * PATCH + col] = Complex32::new(f32::from(b), 0.0);
                mean += f32::from(b);
            }
        }
        mean /= (PATCH * PATCH) as f32;
        for row in 0..PATCH {
            for col in 0..PATCH {
                let c = &mut self.buffer[row * PATCH + col];
                c.re = (c.re - mean) * self.window[row] * self.window[col];
            }
        }
        for row in self.buffer.chunks_exact_mut(PATCH) {
            self.fft.process_with_scratch(row, &mut self.scratch);
        }
        for col in 0..PATCH {
            for row in 0..PATCH {
                self.column[row] = self.buffer[row * PATCH + col];
            }
            self.fft
                .process_with_scratch(&mut self.column, &mut self.scratch);
            for row in 0..PATCH {
                self.buffer[row * PATCH + col] = self.column[row];
            }
        }
        for ring in &mut self.rings {
            ring.clear();
        }
        // The spectrum of a real patch is symmetric (bin (kx, ky) is the conjugate of (-kx, -ky)):
        // the rows ky = 1 to Nyquist and the right half of row 0 hold every bin once.
        let half = PATCH as isize / 2;
        for ky in 0..=half {
            let first = if ky == 0 { 0 } else { -half + 1 };
            for kx in first..=half {
                let radius = ((kx * kx + ky * ky) as f32).sqrt().round() as usize;
                if !(MOIRE_MIN_RADIUS..PATCH / 2).contains(&radius) {
                    continue;
                }
                let col = kx.rem_euclid(PATCH as isize) as usize;
                let power = self.buffer[ky as usize * PATCH + col].norm_sqr();
                self.rings[radius].push(power);
            }
        }
        let mut best: Option<f64> = None;
        for ring in self.rings.iter_mut().filter(|r| r.len() >= 8) {
            let peak = ring.iter().copied().fold(0.0f32, f32::max);
            let mid = ring.len() / 2;
            let median = *ring.select_nth_unstable_by(mid, f32::total_cmp).1;
            if median > 0.0 {
                let db = 10.0 * f64::from(peak / median).log10();
                best = Some(best.map_or(db, |b| b.max(db)));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn frame_from(width: usize, height: usize, luma: impl Fn(usize, usize) -> f32) -> Frame {
        let mut f = Frame::new(width, height);
        for y in 0..height {
            for x in 0..width {
                f.y[y * width + x] = luma(x, y).round().clamp(0.0, 255.0) as u8;
            }
        }
        f
    }

    /// Deterministic noise in [-1, 1] from a pixel's position and a seed.
    fn noise(x: usize, y: usize, seed: u64) -> f32 {
        let mut h = (x as u64) << 32 ^ y as u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h % 2001) as f32 / 1000.0 - 1.0
    }

    const FACE: Region = Region {
        x: 240,
        y: 160,
        w: 160,
        h: 160,
    };

    fn scores_of(frames: &[Frame]) -> ProvenanceScores {
        let mut m = ProvenanceMonitor::default();
        let t0 = Instant::now();
        for (i, f) in frames.iter().enumerate() {
            m.on_decoded(&f.view());
            m.on_analysed(&f.view(), Some(FACE), t0 + IMAGE_CUE_INTERVAL * i as u32);
        }
        m.scores()
    }

    #[test]
    fn a_program_clock_is_regular_and_a_camera_jitters() {
        let mut program = ProvenanceMonitor::default();
        let mut camera = ProvenanceMonitor::default();
        for i in 0..150 {
            // 15 fps on the 90 kHz clock: 6000 ticks, exactly.
            program.on_capture_time(f64::from(i * 6000) / 90_000.0);
            // A camera: 66.7 ms give or take 2 ms.
            let jitter = noise(i as usize, 0, 7) as f64 * 0.002;
            camera.on_capture_time(f64::from(i) / 15.0 + jitter);
        }
        let p = program.scores();
        assert_eq!(p.capture_interval_ms, Some(66.67));
        assert_eq!(p.capture_jitter_ms, Some(0.0));
        assert_eq!(p.capture_regular_share, Some(1.0));
        let c = camera.scores();
        assert!(
            (c.capture_interval_ms.unwrap() - 66.67).abs() < 1.0,
            "{c:?}"
        );
        assert!(c.capture_jitter_ms.unwrap() > 0.5, "{c:?}");
        assert!(c.capture_regular_share.unwrap() < 0.2, "{c:?}");
    }

    #[test]
    fn a_browsers_whole_millisecond_stamps_of_a_steady_source_read_a_small_jitter() {
        // 30 fps stamped in whole milliseconds: 33, 33, 34, 33, 33, 34, ...
        let mut m = ProvenanceMonitor::default();
        for i in 0..90 {
            m.on_capture_time((f64::from(i) * 1000.0 / 30.0).floor() / 1000.0);
        }
        let s = m.scores();
        assert_eq!(s.capture_interval_ms, Some(33.0));
        assert!((0.3..0.6).contains(&s.capture_jitter_ms.unwrap()), "{s:?}");
        assert!(
            (0.6..0.7).contains(&s.capture_regular_share.unwrap()),
            "{s:?}"
        );
    }

    #[test]
    fn a_face_box_leaving_the_frame_is_trimmed_not_moved() {
        assert_eq!(
            face_region([-20.0, 10.0, 100.0, 50.0]),
            Region::new(0, 10, 80, 50)
        );
        assert_eq!(face_region([f32::NAN, 0.0, 10.0, 10.0]).x, 0);
        assert_eq!(face_region([5.0, 5.0, -3.0, 10.0]).w, 0);
    }

    #[test]
    fn too_few_frames_give_no_timing() {
        let mut m = ProvenanceMonitor::default();
        for i in 0..5 {
            m.on_capture_time(f64::from(i) / 15.0);
        }
        assert_eq!(m.scores().capture_jitter_ms, None);
        assert_eq!(m.scores().frames, 5);
    }

    #[test]
    fn repeated_pictures_are_counted() {
        let still = frame_from(320, 240, |x, y| 100.0 + 20.0 * noise(x, y, 1));
        let other = frame_from(320, 240, |x, y| 100.0 + 20.0 * noise(x, y, 2));
        let mut m = ProvenanceMonitor::default();
        for f in [&still, &still, &still, &other, &still] {
            m.on_decoded(&f.view());
        }
        // Four intervals, two of them repeats.
        assert_eq!(m.scores().repeated_frame_share, Some(0.5));
    }

    #[test]
    fn sensor_noise_is_read_from_the_flat_blocks() {
        // A smooth gradient (no texture) with uniform noise of amplitude 6: standard deviation
        // 6 / sqrt(3) = 3.46 levels.
        let noisy: Vec<Frame> = (0..3)
            .map(|s| {
                frame_from(640, 480, |x, y| {
                    60.0 + x as f32 * 0.2 + y as f32 * 0.1 + 6.0 * noise(x, y, s)
                })
            })
            .collect();
        let clean: Vec<Frame> = (0..3)
            .map(|_| frame_from(640, 480, |x, y| 60.0 + x as f32 * 0.2 + y as f32 * 0.1))
            .collect();
        let n = scores_of(&noisy).sensor_noise.unwrap();
        assert!((2.6..4.4).contains(&n), "noisy: {n}");
        let c = scores_of(&clean).sensor_noise.unwrap();
        assert!(c < 0.6, "clean: {c}");
    }

    #[test]
    fn a_pixel_grid_on_the_face_makes_a_spectral_peak() {
        // Skin-like texture: smooth shading plus fine random detail.
        let skin = |x: usize, y: usize| {
            120.0
                + 30.0 * ((x as f32 / 40.0).sin() * (y as f32 / 55.0).cos())
                + 4.0 * noise(x, y, 3)
        };
        let live = vec![frame_from(640, 480, skin)];
        // The same under a display's grid beating with the camera's (a 4.2-pixel period).
        let screen = vec![frame_from(640, 480, |x, y| {
            skin(x, y) * (1.0 + 0.06 * ((x as f32 * 0.93 + y as f32 * 0.41) * 1.5).sin())
        })];
        let live_db = scores_of(&live).moire_peak_db.unwrap();
        let screen_db = scores_of(&screen).moire_peak_db.unwrap();
        assert!(live_db < 15.0, "live {live_db}");
        assert!(
            screen_db > live_db + 10.0,
            "screen {screen_db} live {live_db}"
        );
    }

    #[test]
    fn a_soft_face_in_a_sharp_room_has_a_low_detail_ratio() {
        let sharp = |x: usize, y: usize| 110.0 + 25.0 * noise(x, y, 4);
        let even = vec![frame_from(640, 480, sharp)];
        // The face region smoothed: the mean of a 3x3 neighbourhood.
        let soft = vec![frame_from(640, 480, |x, y| {
            if FACE.contains(x, y) {
                let mut s = 0.0;
                for dy in 0..3 {
                    for dx in 0..3 {
                        s += sharp(x + dx - 1, y + dy - 1);
                    }
                }
                s / 9.0
            } else {
                sharp(x, y)
            }
        })];
        let even_ratio = scores_of(&even).face_detail_ratio.unwrap();
        let soft_ratio = scores_of(&soft).face_detail_ratio.unwrap();
        assert!((0.9..1.1).contains(&even_ratio), "{even_ratio}");
        assert!(soft_ratio < 0.5, "{soft_ratio}");
    }

    #[test]
    fn image_cues_are_sampled_once_per_interval_and_need_a_face() {
        let f = frame_from(640, 480, |x, y| 100.0 + 10.0 * noise(x, y, 5));
        let mut m = ProvenanceMonitor::default();
        let t0 = Instant::now();
        m.on_analysed(&f.view(), None, t0);
        assert_eq!(m.scores().image_samples, 0);
        for ms in [0, 300, 900, 1000, 1500, 2100] {
            m.on_analysed(&f.view(), Some(FACE), t0 + Duration::from_millis(ms));
        }
        // Samples at 0, 1000 and 2100 ms.
        assert_eq!(m.scores().image_samples, 3);
    }

    #[test]
    fn malformed_or_tiny_input_gives_no_values() {
        let mut m = ProvenanceMonitor::default();
        let bad = I420 {
            width: 64,
            height: 64,
            y: &[0; 10],
            u: &[],
            v: &[],
            y_stride: 64,
            uv_stride: 32,
            full_range: false,
        };
        m.on_decoded(&bad);
        m.on_analysed(&bad, Some(FACE), Instant::now());
        let tiny = frame_from(16, 16, |_, _| 50.0);
        m.on_analysed(&tiny.view(), Some(FACE), Instant::now());
        let s = m.scores();
        assert_eq!(s.repeated_frame_share, None);
        assert_eq!(s.sensor_noise, None);
        assert_eq!(s.moire_peak_db, None);
    }
}
