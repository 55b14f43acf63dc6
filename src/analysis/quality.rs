//! Capture-quality metrics and flicker-free guidance hints.
//!
//! About half of failed video verifications are capture problems rather than fraud: a dark room,
//! overexposure, glare on the face or a document, a blurry or out-of-focus camera, a strong
//! colour cast. This module measures those on each analysed, decoded I420 frame (the whole frame,
//! or a region such as a face box) and turns the measurements into short user-facing hints.
//!
//! * [`QualityAnalyzer::analyze`] computes [`QualityMetrics`] in two passes over the luma plane
//!   (one fused histogram + downscale pass, plus a run-based connected-component pass that only
//!   runs when enough clipped highlights exist) and one pass over each chroma plane. It reuses its scratch
//!   buffers, so after the first frame of a given size it does not allocate.
//! * [`backlight_ratio`] compares a face box with the ring around it (backlit subject).
//! * [`luma_difference`], [`luma_signature`] and [`signature_distance`] are cheap building blocks
//!   for a frozen-camera detector.
//! * [`GuidanceTracker`] is a hysteresis state machine: every [`CaptureIssue`] has an ON and a
//!   looser OFF threshold (see [`Thresholds`]), the ON condition must hold continuously for
//!   `hold_on` before the hint is raised, and the OFF condition for `hold_off` before it clears,
//!   so hints never flicker when a metric hovers around a threshold.
//!
//! Luma values are BT.601 studio-range values exactly as stored in the frame (nominally 16..235);
//! nothing is rescaled, so all luma thresholds below are in those stored units.

use std::time::{Duration, Instant};

/// A pixel with `Y <= UNDEREXPOSED_MAX` counts towards [`QualityMetrics::underexposed`].
pub(crate) const UNDEREXPOSED_MAX: u8 = 20;
/// A pixel within this many levels of the frame's white ([`I420::white`]: 235 in the studio range
/// WebRTC video arrives in, 255 in full range) counts towards [`QualityMetrics::overexposed`]:
/// `Y >= 230` in studio range. Cameras clip at white, so blown-out skin sits at 231-235.
pub(crate) const OVEREXPOSED_MARGIN: u8 = 5;
/// A pixel within this many levels of white is a clipped highlight and may belong to a glare
/// blob: `Y >= 233` in studio range, `Y >= 253` in full range.
pub(crate) const GLARE_MARGIN: u8 = 2;
/// A connected component of clipped highlights is a glare blob when its area is at least this
/// fraction of the analysed region (0.2 %); smaller specks are ignored.
pub(crate) const GLARE_MIN_BLOB_FRACTION: f64 = 0.002;
/// Sharpness is computed on luma box-downscaled to this width (aspect kept), so that the same
/// scene gives similar values at 640x480, 1280x720 or 1920x1080. Narrower regions are used at
/// their native resolution (never upscaled).
pub(crate) const SHARPNESS_WORKING_WIDTH: usize = 320;
/// [`QualityAnalyzer::blur_index`] resamples a face to this width first, so the index measures
/// blur relative to the face (what the face models see), not to the camera's resolution.
pub(crate) const BLUR_FACE_WIDTH: usize = 96;
/// Length of the box filter that re-blurs the face in [`QualityAnalyzer::blur_index`] (Crete-Roffet
/// et al. 2007 use 9).
pub(crate) const BLUR_REBLUR_TAPS: usize = 9;
/// `black` requires `mean_luma < BLACK_MAX_MEAN` ...
pub(crate) const BLACK_MAX_MEAN: f64 = 24.0;
/// ... and `dynamic_range < BLACK_MAX_RANGE`.
pub(crate) const BLACK_MAX_RANGE: f64 = 12.0;
/// [`backlight_ratio`] above this value means the subject is backlit.
pub const BACKLIGHT_RATIO: f64 = 1.8;
/// [`luma_difference`] samples every `DIFF_STEP`-th pixel in both directions.
pub const DIFF_STEP: usize = 4;
/// [`luma_signature`] is a `SIGNATURE_GRID` x `SIGNATURE_GRID` grid of block means.
pub(crate) const SIGNATURE_GRID: usize = 16;

pub use crate::frame::{Region, I420};

/// Capture-quality metrics of one frame (or region), see [`QualityAnalyzer::analyze`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QualityMetrics {
    /// Mean luma, 0..255 (BT.601 studio-range values as stored; not rescaled).
    pub mean_luma: f64,
    /// `p95 - p5` of luma (percentiles by rank over the histogram).
    pub dynamic_range: f64,
    /// Fraction of pixels with `Y <= 20` ([`UNDEREXPOSED_MAX`]).
    pub underexposed: f64,
    /// Fraction of pixels within [`OVEREXPOSED_MARGIN`] of white (`Y >= 230` in studio range).
    pub overexposed: f64,
    /// Fraction of the region covered by clipped-highlight blobs: 4-connected components of
    /// `Y >= 233` (studio range; within [`GLARE_MARGIN`] of white) whose area is at least 0.2 % of the region
    /// ([`GLARE_MIN_BLOB_FRACTION`]). This targets specular glare; a bright background gradient
    /// that stays below 250, or scattered clipped specks, does not count.
    pub glare: f64,
    /// Number of glare blobs counted in `glare`.
    pub glare_blobs: u32,
    /// Perceptual blur index of a face region, 0 (sharp) .. 1 (no detail left), from
    /// [`QualityAnalyzer::blur_index`]; 0 when not measured (whole frames). Contrast-invariant and
    /// measured at a fixed face width, so a soft 640x480 webcam and a dim room do not read as blur.
    pub blur: f64,
    /// Variance of the 3x3 Laplacian (`[0 1 0; 1 -4 1; 0 1 0]`) over luma box-downscaled to a
    /// working width of 320 px ([`SHARPNESS_WORKING_WIDTH`], aspect kept; narrower regions are
    /// not upscaled). Higher is sharper; a flat frame gives 0.
    pub sharpness: f64,
    /// Magnitude of the mean chroma offset from neutral:
    /// `sqrt((meanU - 128)^2 + (meanV - 128)^2)`.
    pub color_cast: f64,
    /// Near-black frame (covered lens, dead camera): `mean_luma < 24` ([`BLACK_MAX_MEAN`]) and
    /// `dynamic_range < 12` ([`BLACK_MAX_RANGE`]). A camera fault, reported separately from the
    /// lighting hints; [`GuidanceTracker`] raises nothing on black frames.
    pub black: bool,
}

/// Computes [`QualityMetrics`]; holds scratch buffers so repeated calls do not allocate.
///
/// One analyzer per stream (it is `Send`, not shared): after the first frame of a given size,
/// `analyze` does no heap allocation.
#[derive(Debug, Default)]
pub struct QualityAnalyzer {
    /// Source column (within the region) -> working column.
    col_bin: Vec<u16>,
    /// Source columns per working column.
    col_count: Vec<u32>,
    /// Per-working-column luma sums of the working row being accumulated.
    acc: Vec<u32>,
    /// The downscaled working image.
    small: Vec<f32>,
    /// A face resampled to [`BLUR_FACE_WIDTH`] for [`QualityAnalyzer::blur_index`].
    face: Vec<f32>,
    /// Glare labelling: runs `(x0, x1)` of clipped pixels, row by row.
    runs: Vec<(u32, u32)>,
    /// Glare labelling: union-find parent of each run.
    parent: Vec<u32>,
    /// Glare labelling: pixel count per root run.
    blob_area: Vec<u64>,
}

impl QualityAnalyzer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Metrics over the whole frame, or over `region` (clipped to the frame) when given.
    ///
    /// Every luma pixel of the region is sampled; chroma is averaged over the chroma samples
    /// covering the region. A malformed frame or an empty (clipped) region yields
    /// `QualityMetrics::default()`; callers should not feed that to a [`GuidanceTracker`].
    pub fn analyze(&mut self, frame: &I420, region: Option<Region>) -> QualityMetrics {
        if !frame.is_valid() {
            return QualityMetrics::default();
        }
        let r = region
            .unwrap_or(Region::full(frame.width, frame.height))
            .clip(frame.width, frame.height);
        if r.is_empty() {
            return QualityMetrics::default();
        }
        let n = r.area() as u64;

        // Working (downscaled) geometry for sharpness.
        let out_w = r.w.min(SHARPNESS_WORKING_WIDTH);
        let out_h = ((r.h * out_w + r.w / 2) / r.w).clamp(1, r.h);
        self.col_bin.clear();
        self.col_bin
            .extend((0..r.w).map(|x| (x * out_w / r.w) as u16));
        self.col_count.clear();
        self.col_count.resize(out_w, 0);
        for &b in &self.col_bin {
            self.col_count[b as usize] += 1;
        }
        self.acc.clear();
        self.acc.resize(out_w, 0);
        self.small.clear();
        self.small.resize(out_w * out_h, 0.0);

        // Pass 1: histogram + box downscale, fused.
        let mut hist = [0u32; 256];
        let mut cur_bin = 0usize;
        let mut rows_in_bin = 0u32;
        for row in 0..r.h {
            let bin = row * out_h / r.h;
            if bin != cur_bin {
                flush_row(
                    &mut self.acc,
                    &self.col_count,
                    rows_in_bin,
                    &mut self.small[cur_bin * out_w..(cur_bin + 1) * out_w],
                );
                cur_bin = bin;
                rows_in_bin = 0;
            }
            let line = frame.y_row(r.y + row, r.x, r.w);
            for (&v, &b) in line.iter().zip(&self.col_bin) {
                hist[v as usize] += 1;
                self.acc[b as usize] += v as u32;
            }
            rows_in_bin += 1;
        }
        flush_row(
            &mut self.acc,
            &self.col_count,
            rows_in_bin,
            &mut self.small[cur_bin * out_w..(cur_bin + 1) * out_w],
        );

        // Histogram statistics.
        let sum: u64 = hist
            .iter()
            .enumerate()
            .map(|(v, &c)| v as u64 * c as u64)
            .sum();
        let count_range =
            |lo: usize, hi: usize| -> u64 { hist[lo..hi].iter().map(|&c| c as u64).sum() };
        let nf = n as f64;
        let mean_luma = sum as f64 / nf;
        let p5 = percentile(&hist, n, 0.05);
        let p95 = percentile(&hist, n, 0.95);
        let dynamic_range = (p95 - p5) as f64;
        let underexposed = count_range(0, UNDEREXPOSED_MAX as usize + 1) as f64 / nf;
        let white = frame.white();
        let overexposed = count_range((white - OVEREXPOSED_MARGIN) as usize, 256) as f64 / nf;

        // Pass 2 (only when enough clipped highlights exist): glare blobs.
        let glare_min = white - GLARE_MARGIN;
        let min_blob = ((GLARE_MIN_BLOB_FRACTION * nf).ceil() as u64).max(1);
        let (glare_area, glare_blobs) = if count_range(glare_min as usize, 256) >= min_blob {
            self.glare_blobs(frame, r, min_blob, glare_min)
        } else {
            (0, 0)
        };

        // Chroma means over the chroma samples covering the region.
        let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
        let cx0 = r.x / 2;
        let cx1 = (r.x + r.w).div_ceil(2).min(cw);
        let cy0 = r.y / 2;
        let cy1 = (r.y + r.h).div_ceil(2).min(ch);
        let (mut su, mut sv) = (0u64, 0u64);
        for row in cy0..cy1 {
            let start = row * frame.uv_stride;
            su += sum_u8(&frame.u[start + cx0..start + cx1]);
            sv += sum_u8(&frame.v[start + cx0..start + cx1]);
        }
        let cn = ((cx1 - cx0) * (cy1 - cy0)) as f64;
        let du = su as f64 / cn - 128.0;
        let dv = sv as f64 / cn - 128.0;

        QualityMetrics {
            mean_luma,
            dynamic_range,
            underexposed,
            overexposed,
            glare: glare_area as f64 / nf,
            glare_blobs,
            sharpness: laplacian_variance(&self.small, out_w, out_h),
            blur: 0.0,
            color_cast: (du * du + dv * dv).sqrt(),
            black: mean_luma < BLACK_MAX_MEAN && dynamic_range < BLACK_MAX_RANGE,
        }
    }

    /// The perceptual blur index of `region` (a face): the no-reference metric of Crete-Roffet et
    /// al. 2007 ("The blur effect: perception and estimation with a new no-reference perceptual
    /// blur metric"). The region's luma is area-resampled to [`BLUR_FACE_WIDTH`] (never upscaled),
    /// re-blurred with a [`BLUR_REBLUR_TAPS`]-tap box filter along each axis, and the index is the
    /// share of neighbour-difference energy that the re-blur does NOT remove, inverted: a sharp
    /// face loses much of its detail to the re-blur (index near 0.2-0.4), a blurred one has none
    /// left to lose (index towards 1). Ratios of sums, so it does not depend on contrast or light.
    /// Returns 0.0 for an empty region or a malformed frame (no evidence of blur).
    pub(crate) fn blur_index(&mut self, frame: &I420, region: Region) -> f64 {
        if !frame.is_valid() {
            return 0.0;
        }
        let r = region.clip(frame.width, frame.height);
        if r.w < BLUR_REBLUR_TAPS || r.h < BLUR_REBLUR_TAPS {
            return 0.0;
        }
        let w = r.w.min(BLUR_FACE_WIDTH);
        let h = ((r.h * w + r.w / 2) / r.w).clamp(1, r.h);
        self.face.clear();
        self.face.resize(w * h, 0.0);
        for oy in 0..h {
            let (y0, y1) = (oy * r.h / h, ((oy + 1) * r.h / h).max(oy * r.h / h + 1));
            for ox in 0..w {
                let (x0, x1) = (ox * r.w / w, ((ox + 1) * r.w / w).max(ox * r.w / w + 1));
                let mut sum = 0u32;
                for row in y0..y1 {
                    sum += frame
                        .y_row(r.y + row, r.x + x0, x1 - x0)
                        .iter()
                        .map(|&v| v as u32)
                        .sum::<u32>();
                }
                self.face[oy * w + ox] = sum as f32 / ((y1 - y0) * (x1 - x0)) as f32;
            }
        }
        crete_blur(&self.face, w, h)
    }

    /// 4-connected components of `Y >= glare_min` inside `r`; returns (covered area, blob count)
    /// over the components of at least `min_blob` pixels.
    ///
    /// Run-based labelling: each row's runs of clipped pixels are unioned with the overlapping
    /// runs of the previous row (union-find over runs), so the cost is one scan of the region
    /// plus work proportional to the number of runs.
    fn glare_blobs(&mut self, frame: &I420, r: Region, min_blob: u64, glare_min: u8) -> (u64, u32) {
        self.runs.clear();
        self.parent.clear();
        let mut prev = 0..0;
        for ry in 0..r.h {
            let line = frame.y_row(r.y + ry, r.x, r.w);
            let start = self.runs.len();
            let mut x = 0;
            while let Some(off) = line[x..].iter().position(|&v| v >= glare_min) {
                let x0 = x + off;
                let len = line[x0..].iter().take_while(|&&v| v >= glare_min).count();
                x = x0 + len;
                self.parent.push(self.runs.len() as u32);
                self.runs.push((x0 as u32, x as u32));
            }
            // Link with the previous row's runs (both lists sorted by x).
            let (mut i, mut j) = (prev.start, start);
            while i < prev.end && j < self.runs.len() {
                let ((a0, a1), (b0, b1)) = (self.runs[i], self.runs[j]);
                if a0 < b1 && b0 < a1 {
                    let (ra, rb) = (find(&mut self.parent, i), find(&mut self.parent, j));
                    self.parent[ra.max(rb)] = ra.min(rb) as u32;
                }
                if a1 < b1 {
                    i += 1;
                } else {
                    j += 1;
                }
            }
            prev = start..self.runs.len();
        }
        self.blob_area.clear();
        self.blob_area.resize(self.runs.len(), 0);
        for i in 0..self.runs.len() {
            let root = find(&mut self.parent, i);
            let (x0, x1) = self.runs[i];
            self.blob_area[root] += u64::from(x1 - x0);
        }
        let (mut covered, mut blobs) = (0u64, 0u32);
        for (i, &area) in self.blob_area.iter().enumerate() {
            if self.parent[i] as usize == i && area >= min_blob {
                covered += area;
                blobs += 1;
            }
        }
        (covered, blobs)
    }
}

/// Union-find root of run `i`, with path halving.
fn find(parent: &mut [u32], mut i: usize) -> usize {
    while parent[i] as usize != i {
        let grand = parent[parent[i] as usize];
        parent[i] = grand;
        i = grand as usize;
    }
    i
}

/// Writes the averaged working row and resets the accumulators.
fn flush_row(acc: &mut [u32], col_count: &[u32], rows: u32, out: &mut [f32]) {
    for ((a, &c), o) in acc.iter_mut().zip(col_count).zip(out.iter_mut()) {
        *o = *a as f32 / (c * rows) as f32;
        *a = 0;
    }
}

/// Smallest luma value whose cumulative count reaches `ceil(p * n)` (at least 1).
fn percentile(hist: &[u32; 256], n: u64, p: f64) -> i32 {
    let rank = ((p * n as f64).ceil() as u64).max(1);
    let mut cum = 0u64;
    for (v, &c) in hist.iter().enumerate() {
        cum += c as u64;
        if cum >= rank {
            return v as i32;
        }
    }
    255
}

fn sum_u8(s: &[u8]) -> u64 {
    // Chunked so the inner sum stays in u32 (vectorises well) without overflow.
    s.chunks(1 << 16)
        .map(|c| c.iter().map(|&v| v as u32).sum::<u32>() as u64)
        .sum()
}

/// Variance of the 3x3 Laplacian over the interior of a `w` x `h` image; 0 when smaller than 3x3.
fn laplacian_variance(img: &[f32], w: usize, h: usize) -> f64 {
    if w < 3 || h < 3 {
        return 0.0;
    }
    let (mut s, mut s2) = (0f64, 0f64);
    for y in 1..h - 1 {
        let up = &img[(y - 1) * w..y * w];
        let mid = &img[y * w..(y + 1) * w];
        let dn = &img[(y + 1) * w..(y + 2) * w];
        let (mut rs, mut rs2) = (0f32, 0f32);
        for x in 1..w - 1 {
            let l = up[x] + dn[x] + mid[x - 1] + mid[x + 1] - 4.0 * mid[x];
            rs += l;
            rs2 += l * l;
        }
        s += rs as f64;
        s2 += rs2 as f64;
    }
    let cnt = ((w - 2) * (h - 2)) as f64;
    let mean = s / cnt;
    (s2 / cnt - mean * mean).max(0.0)
}

/// Crete-Roffet blur index of a `w` x `h` image (see [`QualityAnalyzer::blur_index`]): the larger
/// of the vertical and horizontal indices. A flat image has no detail to judge and reads 1.0.
fn crete_blur(img: &[f32], w: usize, h: usize) -> f64 {
    let half = BLUR_REBLUR_TAPS / 2;
    // One axis: `at(i, j)` reads sample j of line i along the axis; `n` samples per line.
    let axis = |lines: usize, n: usize, at: &dyn Fn(usize, usize) -> f32| -> f64 {
        let (mut s_f, mut s_v) = (0f64, 0f64);
        let mut blurred = vec![0f32; n];
        for i in 0..lines {
            // Box re-blur with clamped borders.
            for (j, b) in blurred.iter_mut().enumerate() {
                let (lo, hi) = (j.saturating_sub(half), (j + half).min(n - 1));
                *b = (lo..=hi).map(|k| at(i, k)).sum::<f32>() / (hi - lo + 1) as f32;
            }
            // Skip the border samples the re-blur clamps.
            for j in (half + 1)..n.saturating_sub(half) {
                let d_f = (at(i, j) - at(i, j - 1)).abs();
                let d_b = (blurred[j] - blurred[j - 1]).abs();
                s_f += d_f as f64;
                s_v += (d_f - d_b).max(0.0) as f64;
            }
        }
        if s_f < 1e-6 {
            1.0
        } else {
            (s_f - s_v) / s_f
        }
    };
    let vertical = axis(w, h, &|x, y| img[y * w + x]);
    let horizontal = axis(h, w, &|y, x| img[y * w + x]);
    vertical.max(horizontal)
}

/// Sum of luma over `r` (already clipped) and its pixel count.
fn luma_sum(frame: &I420, r: Region) -> (u64, u64) {
    let mut s = 0u64;
    for row in r.y..r.y + r.h {
        s += sum_u8(frame.y_row(row, r.x, r.w));
    }
    (s, r.area() as u64)
}

/// Backlight measure: mean luma of a ring around the face / mean luma of the face box.
///
/// The ring is the face box grown to twice its width and height around the same centre, clipped
/// to the frame, minus the face box. A value above 1.8 ([`BACKLIGHT_RATIO`]) means backlit. The
/// face mean is floored at 1 to avoid division by zero. Returns 1.0 (neutral) for a malformed
/// frame, an empty (clipped) face box, or when the ring is empty (face fills the frame).
pub(crate) fn backlight_ratio(frame: &I420, face: Region) -> f64 {
    if !frame.is_valid() {
        return 1.0;
    }
    let f = face.clip(frame.width, frame.height);
    if f.is_empty() {
        return 1.0;
    }
    let (gx, gy) = (f.w / 2, f.h / 2);
    let ox = f.x.saturating_sub(gx);
    let oy = f.y.saturating_sub(gy);
    let outer = Region::new(ox, oy, f.x + f.w + gx - ox, f.y + f.h + gy - oy)
        .clip(frame.width, frame.height);
    let (fs, fnum) = luma_sum(frame, f);
    let (os, onum) = luma_sum(frame, outer);
    if onum <= fnum {
        return 1.0;
    }
    let ring_mean = (os - fs) as f64 / (onum - fnum) as f64;
    let face_mean = (fs as f64 / fnum as f64).max(1.0);
    ring_mean / face_mean
}

/// Cheap frame difference for a frozen-camera detector: mean absolute difference of luma between
/// two frames, sampled on a grid of every 4th pixel both ways ([`DIFF_STEP`]), 0..255.
///
/// Returns 255.0 (maximally different) when the frames differ in size or either is malformed.
pub fn luma_difference(a: &I420, b: &I420) -> f64 {
    if !a.is_valid() || !b.is_valid() || a.width != b.width || a.height != b.height {
        return 255.0;
    }
    let (mut sum, mut cnt) = (0u64, 0u64);
    for row in (0..a.height).step_by(DIFF_STEP) {
        let ra = a.y_row(row, 0, a.width);
        let rb = b.y_row(row, 0, b.width);
        for (&p, &q) in ra
            .iter()
            .step_by(DIFF_STEP)
            .zip(rb.iter().step_by(DIFF_STEP))
        {
            sum += p.abs_diff(q) as u64;
            cnt += 1;
        }
    }
    sum as f64 / cnt as f64
}

/// A 256-byte luma signature: the frame split into a 16x16 grid of blocks ([`SIGNATURE_GRID`]),
/// each entry the rounded mean luma of its block (row-major). Every pixel is read.
///
/// Compare two signatures with [`signature_distance`]; unlike [`luma_difference`] it survives
/// resolution changes and needs only 256 bytes of state per stream. Frames narrower or shorter
/// than 16 px give blocks without pixels; those take the nearest pixel's value. A malformed frame
/// gives all zeros.
pub fn luma_signature(frame: &I420) -> [u8; 256] {
    const G: usize = SIGNATURE_GRID;
    let mut out = [0u8; G * G];
    if !frame.is_valid() {
        return out;
    }
    let (w, h) = (frame.width, frame.height);
    let xb: [usize; G + 1] = std::array::from_fn(|i| i * w / G);
    for by in 0..G {
        let (y0, y1) = (by * h / G, (by + 1) * h / G);
        let mut sums = [0u64; G];
        for row in y0..y1 {
            let line = frame.y_row(row, 0, w);
            for (bx, s) in sums.iter_mut().enumerate() {
                *s += sum_u8(&line[xb[bx]..xb[bx + 1]]);
            }
        }
        for (bx, &s) in sums.iter().enumerate() {
            let count = ((xb[bx + 1] - xb[bx]) * (y1 - y0)) as u64;
            out[by * G + bx] = match (s + count / 2).checked_div(count) {
                Some(mean) => mean as u8,
                None => frame.y[y0.min(h - 1) * frame.y_stride + xb[bx].min(w - 1)],
            };
        }
    }
    out
}

/// Mean absolute difference of two [`luma_signature`]s, 0..255 (0 for identical frames).
pub fn signature_distance(a: &[u8; 256], b: &[u8; 256]) -> f64 {
    let s: u32 = a.iter().zip(b).map(|(&p, &q)| p.abs_diff(q) as u32).sum();
    s as f64 / 256.0
}

/// A capture problem the user can fix, reported as a guidance hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaptureIssue {
    TooDark,
    TooBright,
    Glare,
    Blur,
    ColorCast,
}

impl CaptureIssue {
    /// Every issue, in sort order.
    pub const ALL: [CaptureIssue; 5] = [
        CaptureIssue::TooDark,
        CaptureIssue::TooBright,
        CaptureIssue::Glare,
        CaptureIssue::Blur,
        CaptureIssue::ColorCast,
    ];

    /// Stable wire code of the hint.
    pub fn code(&self) -> &'static str {
        match self {
            CaptureIssue::TooDark => "LIGHTING_TOO_DARK",
            CaptureIssue::TooBright => "LIGHTING_TOO_BRIGHT",
            CaptureIssue::Glare => "GLARE",
            CaptureIssue::Blur => "BLUR",
            CaptureIssue::ColorCast => "COLOR_CAST",
        }
    }
}

/// ON / OFF thresholds of each [`CaptureIssue`] and the hold times of [`GuidanceTracker`].
///
/// Each OFF threshold is looser than its ON threshold (hysteresis). Between the two, an issue
/// keeps its current state. A `black` frame ([`QualityMetrics::black`], a camera fault reported
/// elsewhere) satisfies no ON condition, and counts as OFF for `TooDark`; for the other issues
/// the OFF condition is evaluated normally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// TooDark ON: `mean_luma < 50` (and not `black`).
    pub dark_on_mean: f64,
    /// TooDark OFF: `mean_luma > 60` (or `black`).
    pub dark_off_mean: f64,
    /// TooBright ON: `overexposed > 0.15` (more than 15 % of pixels within 5 levels of white) ...
    pub bright_on_overexposed: f64,
    /// ... or `mean_luma > 215`.
    pub bright_on_mean: f64,
    /// TooBright OFF: `overexposed < 0.08` ...
    pub bright_off_overexposed: f64,
    /// ... and `mean_luma < 200`.
    pub bright_off_mean: f64,
    /// Glare ON: `glare > 0.01` (glare blobs cover more than 1 % of the region).
    pub glare_on: f64,
    /// Glare OFF: `glare < 0.004`.
    pub glare_off: f64,
    /// Blur ON: the face's blur index ([`QualityMetrics::blur`]) above 0.58. Calibrated in
    /// `tests/it/face.rs` (`blur_index_separates_soft_webcams_from_blurred_faces`) on the rendered
    /// test actor (itself as soft as a 640x480 webcam) at face widths of 125-225 px, through VP8
    /// at 500 kbit/s: up to 1 px of extra Gaussian blur reads 0.46-0.56, 3 px and more reads
    /// 0.66-0.77; `cargo bench --bench capture` checks it across light and skin tone
    /// (docs/FACE.md). Frames without a measured face (index 0) never raise it.
    pub blur_on: f64,
    /// Blur OFF: the blur index below 0.54.
    pub blur_off: f64,
    /// ColorCast ON: `color_cast > 25` (mean chroma offset from 128, in U/V code values).
    pub cast_on: f64,
    /// ColorCast OFF: `color_cast < 18`.
    pub cast_off: f64,
    /// An ON condition must hold continuously this long before the issue is raised (1.0 s).
    pub hold_on: Duration,
    /// An OFF condition must hold continuously this long before the issue clears (1.5 s).
    pub hold_off: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            dark_on_mean: 50.0,
            dark_off_mean: 60.0,
            bright_on_overexposed: 0.15,
            bright_on_mean: 215.0,
            bright_off_overexposed: 0.08,
            bright_off_mean: 200.0,
            glare_on: 0.01,
            glare_off: 0.004,
            blur_on: 0.58,
            blur_off: 0.54,
            cast_on: 25.0,
            cast_off: 18.0,
            hold_on: Duration::from_millis(1000),
            hold_off: Duration::from_millis(1500),
        }
    }
}

impl Thresholds {
    /// Whether `issue`'s ON condition holds for `m` (ignoring hold times).
    pub(crate) fn is_on(&self, issue: CaptureIssue, m: &QualityMetrics) -> bool {
        if m.black {
            return false;
        }
        match issue {
            CaptureIssue::TooDark => m.mean_luma < self.dark_on_mean,
            CaptureIssue::TooBright => {
                m.overexposed > self.bright_on_overexposed || m.mean_luma > self.bright_on_mean
            }
            CaptureIssue::Glare => m.glare > self.glare_on,
            CaptureIssue::Blur => m.blur > self.blur_on,
            CaptureIssue::ColorCast => m.color_cast > self.cast_on,
        }
    }

    /// Whether `issue`'s OFF condition holds for `m` (ignoring hold times).
    pub(crate) fn is_off(&self, issue: CaptureIssue, m: &QualityMetrics) -> bool {
        match issue {
            CaptureIssue::TooDark => m.black || m.mean_luma > self.dark_off_mean,
            CaptureIssue::TooBright => {
                m.overexposed < self.bright_off_overexposed && m.mean_luma < self.bright_off_mean
            }
            CaptureIssue::Glare => m.glare < self.glare_off,
            CaptureIssue::Blur => m.blur < self.blur_off,
            CaptureIssue::ColorCast => m.color_cast < self.cast_off,
        }
    }
}

/// What the capture hints judge: light over the whole frame (a dark room is dark everywhere), but
/// over-exposure, glare and blur where they matter, on the face: a bright window behind a person is
/// not a blown-out face, and a soft background is not a blurred face. Without a face, blur and
/// glare are not judged (the face hints say what to do first).
pub fn judged_metrics(frame: &QualityMetrics, face: Option<&QualityMetrics>) -> QualityMetrics {
    let mut m = *frame;
    match face {
        Some(f) => {
            m.overexposed = f.overexposed;
            m.glare = f.glare;
            m.glare_blobs = f.glare_blobs;
            m.blur = f.blur;
        }
        None => {
            m.glare = 0.0;
            m.glare_blobs = 0;
            m.blur = 0.0;
        }
    }
    m
}

/// A change of the active hint set, returned by [`GuidanceTracker::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidanceChange {
    Raised(CaptureIssue),
    Cleared(CaptureIssue),
}

#[derive(Debug, Clone, Copy, Default)]
struct IssueState {
    active: bool,
    /// Since when the condition that would flip `active` has held continuously.
    since: Option<Instant>,
}

/// Hysteresis state machine turning per-frame [`QualityMetrics`] into stable hints.
///
/// An issue is raised once its ON condition has held on every frame for `hold_on` (measured
/// from the first frame it held on), and cleared once its OFF condition has held on every frame
/// for `hold_off`. A frame that breaks the streak restarts the wait. `Raised` and `Cleared`
/// strictly alternate per issue. Frame times going backwards are treated as no time passing.
#[derive(Debug, Clone)]
pub struct GuidanceTracker {
    thresholds: Thresholds,
    states: [IssueState; 5],
}

impl GuidanceTracker {
    pub fn new(thresholds: Thresholds) -> Self {
        GuidanceTracker {
            thresholds,
            states: [IssueState::default(); 5],
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Feed the metrics of one analysed frame at time `at` (the frame's capture time). A condition
    /// must hold continuously for `hold_on` (default 1.0 s) before it is raised, and its OFF
    /// condition must hold for `hold_off` (default 1.5 s) before it clears. Returns the changes
    /// made by this frame (no allocation when there are none).
    pub fn update(&mut self, at: Instant, m: &QualityMetrics) -> Vec<GuidanceChange> {
        let mut changes = Vec::new();
        // Exposure comes first: a dark or blown-out picture loses the detail the sharpness
        // measure needs, and overall over-exposure is not glare. While the exposure is out of
        // range, Blur (and, when too bright, Glare) are not raised, so the person gets the one
        // hint that fixes the cause.
        let exposure = |issue: CaptureIssue| {
            self.thresholds.is_on(issue, m) || self.states[issue as usize].active
        };
        let too_bright = exposure(CaptureIssue::TooBright);
        let exposure_off = too_bright || exposure(CaptureIssue::TooDark);
        for issue in CaptureIssue::ALL {
            let masked = match issue {
                CaptureIssue::Blur => exposure_off,
                CaptureIssue::Glare => too_bright,
                _ => false,
            };
            let st = &mut self.states[issue as usize];
            let (holds, hold) = if st.active {
                (self.thresholds.is_off(issue, m), self.thresholds.hold_off)
            } else {
                (
                    !masked && self.thresholds.is_on(issue, m),
                    self.thresholds.hold_on,
                )
            };
            if !holds {
                st.since = None;
                continue;
            }
            let since = *st.since.get_or_insert(at);
            if at.saturating_duration_since(since) >= hold {
                st.active = !st.active;
                st.since = None;
                changes.push(if st.active {
                    GuidanceChange::Raised(issue)
                } else {
                    GuidanceChange::Cleared(issue)
                });
            }
        }
        changes
    }

    /// The currently raised issues, sorted.
    pub fn active(&self) -> Vec<CaptureIssue> {
        CaptureIssue::ALL
            .into_iter()
            .filter(|&i| self.states[i as usize].active)
            .collect()
    }

    pub fn is_active(&self, issue: CaptureIssue) -> bool {
        self.states[issue as usize].active
    }

    /// Forget all state (e.g. when the camera or stream restarts); nothing is reported.
    pub fn reset(&mut self) {
        self.states = [IssueState::default(); 5];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned I420 frame; rows are padded to exercise strides.
    struct Frame {
        w: usize,
        h: usize,
        ys: usize,
        cs: usize,
        y: Vec<u8>,
        u: Vec<u8>,
        v: Vec<u8>,
    }

    impl Frame {
        fn view(&self) -> I420<'_> {
            I420 {
                width: self.w,
                height: self.h,
                y: &self.y,
                u: &self.u,
                v: &self.v,
                y_stride: self.ys,
                uv_stride: self.cs,
                full_range: false,
            }
        }

        fn luma(&self, x: usize, y: usize) -> u8 {
            self.y[y * self.ys + x]
        }

        fn with_chroma(mut self, u: u8, v: u8) -> Self {
            self.u.fill(u);
            self.v.fill(v);
            self
        }
    }

    /// WxH frame with luma from `f(x, y)` and neutral chroma.
    fn make(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Frame {
        let (ys, cs) = (w + 16, w.div_ceil(2) + 8);
        let mut y = vec![0xAB; ys * h];
        for r in 0..h {
            for c in 0..w {
                y[r * ys + c] = f(c, r);
            }
        }
        let ch = h.div_ceil(2);
        Frame {
            w,
            h,
            ys,
            cs,
            y,
            u: vec![128; cs * ch],
            v: vec![128; cs * ch],
        }
    }

    fn hash(a: u64, b: u64) -> u64 {
        let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^ (x >> 32)
    }

    /// A mixed test scene in working coordinates (320 units across the frame width, same scale
    /// vertically), luma in 60..=200, periodic vertically so crops of it look alike:
    /// 8 px checkerboard (at 640 wide), text-like glyph strokes, blocks with gradients, and a
    /// gradient split by a diagonal edge.
    fn scene(xw: f64, yw: f64) -> u8 {
        let yp = yw.rem_euclid(60.0);
        if xw < 80.0 {
            if ((xw / 4.0).floor() as i64 + (yw / 4.0).floor() as i64) % 2 == 0 {
                70
            } else {
                190
            }
        } else if xw < 180.0 {
            let line = (yw / 15.0).floor();
            let ly = yw - line * 15.0;
            if ly >= 10.0 {
                return 190;
            }
            let cell = ((xw - 80.0) / 6.0).floor();
            let col = (xw - 80.0 - cell * 6.0).floor() as u32;
            let row = ly.floor() as u32;
            let hsh = hash(cell as u64, line as u64);
            let ink = (col == 0 && hsh & 1 != 0)
                || (col == 4 && hsh & 2 != 0)
                || (col < 5 && row == 0 && hsh & 4 != 0)
                || (col < 5 && row == 4 && hsh & 8 != 0)
                || (col < 5 && row == 9 && hsh & 16 != 0);
            if ink {
                70
            } else {
                190
            }
        } else if xw < 240.0 {
            let odd = ((xw / 20.0).floor() as i64 + (yw / 20.0).floor() as i64) % 2 == 1;
            let g = 80.0 + yp; // 80..140
            if odd {
                (g + 60.0) as u8
            } else {
                g as u8
            }
        } else {
            let g = 60.0 + (xw - 240.0) / 80.0 * 140.0;
            if xw - 240.0 > yp {
                g as u8
            } else {
                (260.0 - g) as u8
            }
        }
    }

    /// The scene rendered at WxH by continuous coordinates (pixel centres).
    fn render(w: usize, h: usize) -> Frame {
        let s = SHARPNESS_WORKING_WIDTH as f64 / w as f64;
        make(w, h, |x, y| {
            scene((x as f64 + 0.5) * s, (y as f64 + 0.5) * s)
        })
    }

    /// Separable box blur of the luma plane with the given radius (edges clamped).
    fn box_blur(src: &Frame, radius: usize) -> Frame {
        let (w, h) = (src.w, src.h);
        let mut tmp = vec![0f64; w * h];
        for y in 0..h {
            for x in 0..w {
                let lo = x.saturating_sub(radius);
                let hi = (x + radius).min(w - 1);
                let s: f64 = (lo..=hi).map(|i| src.luma(i, y) as f64).sum();
                tmp[y * w + x] = s / (hi - lo + 1) as f64;
            }
        }
        make(w, h, |x, y| {
            let lo = y.saturating_sub(radius);
            let hi = (y + radius).min(h - 1);
            let s: f64 = (lo..=hi).map(|i| tmp[i * w + x]).sum();
            (s / (hi - lo + 1) as f64).round() as u8
        })
    }

    fn metrics(f: &Frame) -> QualityMetrics {
        QualityAnalyzer::new().analyze(&f.view(), None)
    }

    /// Feeds `m` at 15 fps for frames `from..to` (frame i at i/15 s after `t0`).
    fn feed(
        tr: &mut GuidanceTracker,
        t0: Instant,
        frames: std::ops::Range<u32>,
        m: &QualityMetrics,
    ) -> Vec<(u32, GuidanceChange)> {
        let mut out = Vec::new();
        for i in frames {
            let at = t0 + Duration::from_secs_f64(i as f64 / 15.0);
            for c in tr.update(at, m) {
                out.push((i, c));
            }
        }
        out
    }

    #[test]
    fn flat_mid_grey() {
        let m = metrics(&make(640, 480, |_, _| 128));
        assert_eq!(m.mean_luma, 128.0);
        assert_eq!(m.dynamic_range, 0.0);
        assert!(!m.black);
        assert_eq!(m.glare, 0.0);
        assert_eq!(m.color_cast, 0.0);
        let t = Thresholds::default();
        // A flat region has no detail left: the blur index reads 1.
        let mut m = m;
        m.blur = QualityAnalyzer::new()
            .blur_index(&make(640, 480, |_, _| 128).view(), Region::full(640, 480));
        assert_eq!(m.blur, 1.0);
        assert!(t.is_on(CaptureIssue::Blur, &m));
        let mut tr = GuidanceTracker::new(t);
        let ch = feed(&mut tr, Instant::now(), 0..20, &m);
        assert_eq!(ch, vec![(15, GuidanceChange::Raised(CaptureIssue::Blur))]);
    }

    #[test]
    fn near_black() {
        let m = metrics(&make(640, 480, |x, y| {
            16 + (hash(x as u64, y as u64) % 3) as u8
        }));
        assert!(m.black, "{m:?}");
        assert!(m.underexposed > 0.999);
        assert!(m.mean_luma < 18.0);
        // A black frame is a camera fault: no lighting hint.
        let mut tr = GuidanceTracker::new(Thresholds::default());
        assert!(feed(&mut tr, Instant::now(), 0..45, &m).is_empty());
    }

    #[test]
    fn dark_textured_scene_raises_too_dark_after_one_second() {
        let f = make(640, 480, |x, y| {
            let checker = ((x / 16 + y / 16) % 2) as u8 * 20;
            20 + checker + (x * 20 / 640) as u8
        });
        let m = metrics(&f);
        assert!(!m.black, "{m:?}");
        assert!(m.mean_luma < 50.0, "{m:?}");
        let mut tr = GuidanceTracker::new(Thresholds::default());
        let t0 = Instant::now();
        let before = feed(&mut tr, t0, 0..15, &m);
        assert!(!before
            .iter()
            .any(|&(_, c)| c == GuidanceChange::Raised(CaptureIssue::TooDark)));
        assert!(!tr.is_active(CaptureIssue::TooDark));
        let at_one_second = feed(&mut tr, t0, 15..16, &m);
        assert!(at_one_second.contains(&(15, GuidanceChange::Raised(CaptureIssue::TooDark))));
        assert!(tr.active().contains(&CaptureIssue::TooDark));
        assert!(!tr.is_active(CaptureIssue::ColorCast));
        // Holding the condition raises nothing more.
        assert!(feed(&mut tr, t0, 16..60, &m).is_empty());
    }

    #[test]
    fn overexposed_raises_too_bright() {
        let m = metrics(&make(640, 480, |x, y| 240 + ((x + 3 * y) % 16) as u8));
        assert!(m.overexposed > 0.25, "{m:?}");
        // Studio range (what WebRTC video carries): white is 235. A frame with 16 % of its
        // pixels clipped at 235 and the rest mid-grey is over-exposed.
        let clipped = metrics(&make(640, 480, |x, _| if x < 102 { 235 } else { 150 }));
        assert!((clipped.overexposed - 0.159).abs() < 0.01, "{clipped:?}");
        let mut tr = GuidanceTracker::new(Thresholds::default());
        let ch = feed(&mut tr, Instant::now(), 0..16, &clipped);
        assert!(ch.contains(&(15, GuidanceChange::Raised(CaptureIssue::TooBright))));
        let mut tr = GuidanceTracker::new(Thresholds::default());
        let ch = feed(&mut tr, Instant::now(), 0..16, &m);
        assert!(ch.contains(&(15, GuidanceChange::Raised(CaptureIssue::TooBright))));
        assert!(!tr.is_active(CaptureIssue::TooDark));
    }

    #[test]
    fn glare_patch() {
        // 40x40 clipped patch on a 320x240 frame covers 2.1 % of it.
        let plain = render(320, 240);
        let mut patched = render(320, 240);
        for y in 100..140 {
            for x in 150..190 {
                patched.y[y * patched.ys + x] = 255;
            }
        }
        let m = metrics(&plain);
        assert_eq!((m.glare, m.glare_blobs), (0.0, 0));
        let m = metrics(&patched);
        assert!(m.glare > 0.01, "{m:?}");
        assert_eq!(m.glare_blobs, 1);
        assert!((m.glare - 1600.0 / 76800.0).abs() < 1e-12);

        // The same patch on 640x480 is 0.52 % of the frame, but 2.1 % of a 320x240 region.
        let mut big = render(640, 480);
        for y in 200..240 {
            for x in 300..340 {
                big.y[y * big.ys + x] = 255;
            }
        }
        let mut qa = QualityAnalyzer::new();
        let whole = qa.analyze(&big.view(), None);
        assert_eq!(whole.glare_blobs, 1);
        assert!((whole.glare - 1600.0 / 307200.0).abs() < 1e-12);
        let roi = qa.analyze(&big.view(), Some(Region::new(160, 100, 320, 240)));
        assert_eq!(roi.glare_blobs, 1);
        assert!(roi.glare > 0.01);

        // Scattered clipped specks (each below 0.2 % of the region) are not glare.
        let specks = make(
            320,
            240,
            |x, y| if x % 10 == 0 && y % 10 == 0 { 255 } else { 120 },
        );
        let m = metrics(&specks);
        assert_eq!((m.glare, m.glare_blobs), (0.0, 0));
    }

    /// Reference 4-connected labelling by flood fill: (covered area, blobs >= min).
    fn reference_blobs(f: &Frame, min: u64) -> (u64, u32) {
        let (w, h) = (f.w, f.h);
        let mut seen = vec![false; w * h];
        let (mut covered, mut blobs) = (0, 0);
        for s in 0..w * h {
            if seen[s] || f.luma(s % w, s / w) < 235 - GLARE_MARGIN {
                continue;
            }
            seen[s] = true;
            let (mut stack, mut area) = (vec![s], 0u64);
            while let Some(p) = stack.pop() {
                area += 1;
                let (x, y) = (p % w, p / w);
                let mut nb = Vec::new();
                if x > 0 {
                    nb.push(p - 1);
                }
                if x + 1 < w {
                    nb.push(p + 1);
                }
                if y > 0 {
                    nb.push(p - w);
                }
                if y + 1 < h {
                    nb.push(p + w);
                }
                for q in nb {
                    if !seen[q] && f.luma(q % w, q / w) >= 235 - GLARE_MARGIN {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
            if area >= min {
                covered += area;
                blobs += 1;
            }
        }
        (covered, blobs)
    }

    #[test]
    fn glare_labelling_shapes_and_reference() {
        let mut qa = QualityAnalyzer::new();
        // A "U": two bars joined only at the bottom -> one blob; diagonal contact -> two blobs.
        let f = make(320, 240, |x, y| {
            let u = ((10..20).contains(&x) || (40..50).contains(&x)) && (10..60).contains(&y)
                || (10..50).contains(&x) && (60..70).contains(&y);
            let diag = (100..120).contains(&x) && (100..120).contains(&y)
                || (120..140).contains(&x) && (120..140).contains(&y);
            if u || diag {
                255
            } else {
                100
            }
        });
        let m = qa.analyze(&f.view(), None);
        assert_eq!(m.glare_blobs, 3);
        assert_eq!(reference_blobs(&f, 154), (1400 + 800, 3));
        // Random blobby masks: run-based labelling matches the flood fill.
        for seed in 0..40u64 {
            let f = make(97, 61, |x, y| {
                let cell = hash((x / 3) as u64 + seed * 1000, (y / 2) as u64);
                if cell % 5 < 2 || hash(x as u64, y as u64 + seed) % 7 < 1 {
                    252
                } else {
                    30
                }
            });
            for min in [1, 5, 30] {
                let got = qa.glare_blobs(&f.view(), Region::full(97, 61), min, 235 - GLARE_MARGIN);
                assert_eq!(got, reference_blobs(&f, min), "seed {seed} min {min}");
            }
        }
    }

    #[test]
    fn sharp_vs_blurred_and_resolution_independence() {
        let sharp = render(640, 480);
        let blurred = box_blur(&sharp, 4);
        let hd = render(1280, 720);
        let s = metrics(&sharp).sharpness;
        let b = metrics(&blurred).sharpness;
        let s_hd = metrics(&hd).sharpness;
        let b_hd = metrics(&box_blur(&hd, 8)).sharpness;
        println!("sharpness: sharp 640x480 {s:.1}, blurred r4 {b:.1}, sharp 1280x720 {s_hd:.1}, blurred r8 1280x720 {b_hd:.1}");
        assert!(s / b > 4.0, "{s} vs {b}");
        assert!((s_hd / s - 1.0).abs() < 0.3, "{s} vs {s_hd}");
        let t = Thresholds::default();
        // The blur index (what the Blur hint judges) is resolution-independent by construction:
        // the same scene and the same relative blur read alike at 640x480 and 1280x720.
        let mut qa = QualityAnalyzer::new();
        let mut index = |f: &Frame| qa.blur_index(&f.view(), Region::full(f.w, f.h));
        let (i_s, i_b, i_s_hd, i_b_hd) = (
            index(&sharp),
            index(&blurred),
            index(&hd),
            index(&box_blur(&hd, 8)),
        );
        println!("blur index: sharp {i_s:.3}, blurred r4 {i_b:.3}, sharp HD {i_s_hd:.3}, blurred r8 HD {i_b_hd:.3}");
        // (The thresholds are calibrated on rendered faces in tests/it/face.rs; a whole frame
        // resampled to a face's working width hides a 4 px blur, which is why only faces are judged.)
        assert!(i_b > i_s + 0.08, "{i_s} vs {i_b}");
        assert!((i_s - i_s_hd).abs() < 0.02, "{i_s} vs {i_s_hd}");
        assert!((i_b - i_b_hd).abs() < 0.02, "{i_b} vs {i_b_hd}");
        assert!(i_s < t.blur_off, "{i_s}");
        // The sharp scene at a quarter of the contrast is still clearly not blurred.
        let low = make(640, 480, |x, y| {
            (130 + (sharp.luma(x, y) as i32 - 130) / 4) as u8
        });
        let s_low = metrics(&low).sharpness;
        // Camera-like noise on a flat wall stays far below the ON threshold.
        let noisy = make(640, 480, |x, y| {
            let h = hash(x as u64, y as u64 + 7);
            (128 + (h % 7) as i32 - 3) as u8
        });
        let s_noise = metrics(&noisy).sharpness;
        println!("sharpness: quarter contrast {s_low:.1}, flat + uniform noise +-3 {s_noise:.1}");
        assert!(s_low > s_noise);
        // Contrast does not change the blur index: a quarter of the contrast is as sharp.
        let i_low = index(&low);
        println!("blur index: quarter contrast {i_low:.3}");
        assert!((i_low - i_s).abs() < 0.05, "{i_low} vs {i_s}");
        // Lighter blur (radius 1) still counts as sharp enough not to raise Blur.
        let b1 = metrics(&box_blur(&sharp, 1)).sharpness;
        let b2 = metrics(&box_blur(&sharp, 2)).sharpness;
        println!("sharpness: blurred r1 {b1:.1}, r2 {b2:.1}");
    }

    #[test]
    fn color_cast() {
        let f = render(640, 480).with_chroma(128, 170);
        let m = metrics(&f);
        assert!((m.color_cast - 42.0).abs() < 1e-9, "{m:?}");
        let mut tr = GuidanceTracker::new(Thresholds::default());
        let ch = feed(&mut tr, Instant::now(), 0..16, &m);
        assert_eq!(
            ch,
            vec![(15, GuidanceChange::Raised(CaptureIssue::ColorCast))]
        );
        assert_eq!(CaptureIssue::ColorCast.code(), "COLOR_CAST");
    }

    #[test]
    fn hysteresis() {
        let dark = QualityMetrics {
            mean_luma: 40.0,
            dynamic_range: 40.0,
            sharpness: 1000.0,
            ..Default::default()
        };
        let ok = QualityMetrics {
            mean_luma: 120.0,
            ..dark
        };
        let t0 = Instant::now();
        let mut tr = GuidanceTracker::new(Thresholds::default());
        // Alternating dark/ok every 0.5 s for 10 s never raises.
        for block in 0..20u32 {
            let m = if block % 2 == 0 { &dark } else { &ok };
            assert!(feed(&mut tr, t0, block * 15 / 2..(block + 1) * 15 / 2, m).is_empty());
        }
        // Dark continuously for 1.2 s raises once.
        let base = 150; // 10 s
        let ch = feed(&mut tr, t0, base..base + 18, &dark);
        assert_eq!(
            ch,
            vec![(base + 15, GuidanceChange::Raised(CaptureIssue::TooDark))]
        );
        // Between the thresholds (55) nothing changes, however long.
        let mid = QualityMetrics {
            mean_luma: 55.0,
            ..dark
        };
        assert!(feed(&mut tr, t0, base + 18..base + 60, &mid).is_empty());
        // OK for 1 s does not clear; a dark frame restarts the wait.
        assert!(feed(&mut tr, t0, base + 60..base + 75, &ok).is_empty());
        assert!(feed(&mut tr, t0, base + 75..base + 76, &dark).is_empty());
        // OK for 1.6 s clears (at 1.5 s).
        let ch = feed(&mut tr, t0, base + 76..base + 100, &ok);
        assert_eq!(
            ch,
            vec![(
                base + 76 + 23,
                GuidanceChange::Cleared(CaptureIssue::TooDark)
            )]
        );
        assert!(tr.active().is_empty());

        // Random-ish sequence: Raised and Cleared strictly alternate per issue.
        let mut tr = GuidanceTracker::new(Thresholds::default());
        let mut active = [false; 5];
        for i in 0..3000u32 {
            let m = QualityMetrics {
                mean_luma: (hash(i as u64 / 7, 1) % 256) as f64,
                overexposed: (hash(i as u64 / 11, 2) % 100) as f64 / 100.0,
                glare: (hash(i as u64 / 13, 3) % 30) as f64 / 1000.0,
                sharpness: (hash(i as u64 / 17, 4) % 300) as f64,
                color_cast: (hash(i as u64 / 19, 5) % 40) as f64,
                ..Default::default()
            };
            let at = t0 + Duration::from_millis(i as u64 * 66);
            for c in tr.update(at, &m) {
                match c {
                    GuidanceChange::Raised(x) => {
                        assert!(!active[x as usize]);
                        active[x as usize] = true;
                    }
                    GuidanceChange::Cleared(x) => {
                        assert!(active[x as usize]);
                        active[x as usize] = false;
                    }
                }
            }
            let mut expect: Vec<_> = CaptureIssue::ALL
                .into_iter()
                .filter(|&x| active[x as usize])
                .collect();
            expect.sort();
            assert_eq!(tr.active(), expect);
        }
    }

    #[test]
    fn backlight() {
        let face = Region::new(270, 190, 100, 100);
        let f = make(640, 480, |x, y| {
            if (270..370).contains(&x) && (190..290).contains(&y) {
                50
            } else {
                200
            }
        });
        let r = backlight_ratio(&f.view(), face);
        assert!(r > 3.0, "{r}");
        assert!((r - 4.0).abs() < 1e-9);
        let uniform = make(640, 480, |_, _| 128);
        assert!((backlight_ratio(&uniform.view(), face) - 1.0).abs() < 1e-9);
        // Face at the corner: the ring is clipped, still fine.
        let r = backlight_ratio(&uniform.view(), Region::new(0, 0, 100, 100));
        assert!((r - 1.0).abs() < 1e-9);
        // Face covering the frame: neutral.
        assert_eq!(
            backlight_ratio(&f.view(), Region::new(0, 0, 9999, 9999)),
            1.0
        );
    }

    #[test]
    fn signatures_and_difference() {
        let pat = |dx: usize| {
            move |x: usize, y: usize| -> u8 {
                let xs = x + dx;
                if ((xs / 64) ^ (y / 64)) & 1 == 0 {
                    40 + (y / 4) as u8
                } else {
                    200
                }
            }
        };
        let a = make(640, 480, pat(0));
        let a2 = make(640, 480, pat(0));
        let b = make(640, 480, pat(16));
        let (sa, sa2, sb) = (
            luma_signature(&a.view()),
            luma_signature(&a2.view()),
            luma_signature(&b.view()),
        );
        assert_eq!(signature_distance(&sa, &sa2), 0.0);
        let d = signature_distance(&sa, &sb);
        assert!(d > 2.0, "{d}");
        assert_eq!(luma_difference(&a.view(), &a2.view()), 0.0);
        assert!(luma_difference(&a.view(), &b.view()) > 2.0);
        // Resolution change: signature still comparable, frame difference says "different".
        let a_hd = make(1280, 960, |x, y| pat(0)(x / 2, y / 2));
        assert!(signature_distance(&sa, &luma_signature(&a_hd.view())) < 1.0);
        assert_eq!(luma_difference(&a.view(), &a_hd.view()), 255.0);
        // Tiny frames do not panic.
        let tiny = make(3, 2, |x, y| (x * 10 + y) as u8);
        let st = luma_signature(&tiny.view());
        assert_eq!(st[0], 0);
        assert_eq!(st[255], 21);
    }

    #[test]
    fn regions_and_malformed_frames() {
        let f = make(640, 480, |x, _| if x < 320 { 50 } else { 150 });
        let mut qa = QualityAnalyzer::new();
        let left = qa.analyze(&f.view(), Some(Region::new(0, 0, 320, 480)));
        assert_eq!(left.mean_luma, 50.0);
        let right = qa.analyze(&f.view(), Some(Region::new(320, 0, 10_000, 10_000)));
        assert_eq!(right.mean_luma, 150.0);
        let outside = qa.analyze(&f.view(), Some(Region::new(700, 0, 10, 10)));
        assert_eq!(outside, QualityMetrics::default());
        // Odd sizes and a 1x1 region.
        let odd = make(33, 17, |x, y| (x * 7 + y * 3) as u8);
        let m = qa.analyze(&odd.view(), None);
        assert!(m.mean_luma > 0.0);
        let one = qa.analyze(&odd.view(), Some(Region::new(32, 16, 5, 5)));
        assert_eq!(one.mean_luma, odd.luma(32, 16) as f64);
        assert_eq!(one.sharpness, 0.0);
        // Truncated plane: no panic, neutral values.
        let mut short = f.view();
        short.y = &f.y[..1000];
        assert!(!short.is_valid());
        assert_eq!(qa.analyze(&short, None), QualityMetrics::default());
        assert_eq!(backlight_ratio(&short, Region::new(0, 0, 10, 10)), 1.0);
        assert_eq!(luma_signature(&short), [0u8; 256]);
    }

    #[test]
    fn timing_640x480() {
        let f = render(640, 480);
        let mut qa = QualityAnalyzer::new();
        let v = f.view();
        let mut times = Vec::with_capacity(100);
        let mut sink = 0.0;
        for _ in 0..100 {
            let t = Instant::now();
            sink += qa.analyze(&v, None).sharpness;
            times.push(t.elapsed());
        }
        times.sort();
        // Worst case for the glare pass: every pixel clipped (one blob covering the frame).
        let white = make(640, 480, |_, _| 255);
        let mut worst = Vec::with_capacity(20);
        for _ in 0..20 {
            let t = Instant::now();
            sink += qa.analyze(&white.view(), None).glare;
            worst.push(t.elapsed());
        }
        worst.sort();
        println!(
            "analyze 640x480 all-clipped (glare labelling): median {:?}",
            worst[10]
        );
        let sig_t = Instant::now();
        let sig = luma_signature(&v);
        let sig_t = sig_t.elapsed();
        println!(
            "analyze 640x480: median {:?} (min {:?}, max {:?}); luma_signature {:?} [{}]",
            times[50],
            times[0],
            times[99],
            sig_t,
            sink > 0.0 && sig[0] > 0
        );
    }
}
