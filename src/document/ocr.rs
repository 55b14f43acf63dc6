//! PP-OCRv4 text detection and recognition (ONNX, from the pinned `rapidocr-onnxruntime` wheel),
//! run on a rectified card image.
//!
//! Detection (DBNet) gives a text-probability map; its connected regions, grown by the same
//! "unclip" margin PaddleOCR uses, are the text boxes. Recognition (SVTR-CTC) reads each box at a
//! height of 48 px; the charset is the model's own metadata key `character` with the CTC blank
//! first and a space last (PaddleOCR's convention). The card is rectified, so boxes are upright
//! rectangles: no rotated-box fitting is needed.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use ort::session::Session;

use crate::analysis::face::models::{pool_size, runtime, ModelError, ModelPool};

/// Probability above which a detection-map pixel is text (PaddleOCR's `thresh`).
const DET_PIXEL_THRESHOLD: f32 = 0.3;
/// Mean probability a region needs to count as a text box (`box_thresh`).
const DET_BOX_THRESHOLD: f32 = 0.5;
/// How far a region is grown: area * ratio / perimeter (`unclip_ratio`).
const UNCLIP_RATIO: f32 = 1.6;
/// Regions thinner than this (map pixels) are noise.
const MIN_BOX_SIDE: usize = 3;
/// Recognition input height and the narrowest input width.
const REC_HEIGHT: usize = 48;
const REC_MIN_WIDTH: usize = 320;
/// Longest line the recogniser is given (width/height); longer boxes are squeezed.
const REC_MAX_RATIO: f32 = 25.0;

/// A line of text read from the card: its box in card pixels and the recogniser's mean
/// per-character confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct TextLine {
    pub text: String,
    pub confidence: f32,
    /// x0, y0, x1, y1 in the input image's pixels.
    pub bbox: [f32; 4],
}

impl TextLine {
    pub(crate) fn centre_y(&self) -> f32 {
        (self.bbox[1] + self.bbox[3]) / 2.0
    }

    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
}

/// The two OCR models and the recogniser's charset, loaded once and shared by every call.
pub struct OcrModels {
    det: ModelPool,
    rec: ModelPool,
    /// Index 0 is the CTC blank.
    charset: Vec<String>,
}

impl std::fmt::Debug for OcrModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OcrModels({} characters)", self.charset.len())
    }
}

impl OcrModels {
    /// Loads `ocr_det.onnx` and `ocr_rec.onnx` from `dir` (as written by `scripts/setup`).
    pub fn load(dir: &Path) -> Result<Arc<OcrModels>, ModelError> {
        let env = runtime()?;
        let instances = pool_size();
        let rec_path = dir.join("ocr_rec.onnx");
        let rec = ModelPool::load(env, &rec_path, instances)?;
        let charset = {
            let session = rec.acquire(0);
            let meta = session.metadata().map_err(|e| ModelError::Corrupt {
                path: rec_path.display().to_string(),
                reason: e.to_string(),
            })?;
            let chars = meta
                .custom("character")
                .ok_or_else(|| ModelError::Corrupt {
                    path: rec_path.display().to_string(),
                    reason: "no `character` metadata (charset)".into(),
                })?;
            let mut set = vec![String::new()];
            set.extend(chars.lines().map(str::to_string));
            set.push(" ".into());
            set
        };
        Ok(Arc::new(OcrModels {
            det: ModelPool::load(env, &dir.join("ocr_det.onnx"), instances)?,
            rec,
            charset,
        }))
    }

    /// Detects and reads every text line in `image`, top to bottom, left to right.
    pub fn read(&self, image: &RgbImage) -> Result<Vec<TextLine>, ModelError> {
        let boxes = {
            let mut session = self.det.acquire(0);
            detect(&mut session, image)?
        };
        let mut lines = Vec::with_capacity(boxes.len());
        let mut input = Vec::new();
        for b in boxes {
            let mut session = self.rec.acquire(0);
            let (text, confidence) = recognize(&mut session, &self.charset, image, &b, &mut input)?;
            if !text.trim().is_empty() {
                lines.push(TextLine {
                    text,
                    confidence,
                    bbox: b,
                });
            }
        }
        lines.sort_by(|a, b| {
            let same_row = (a.centre_y() - b.centre_y()).abs() < a.height().min(b.height()) / 2.0;
            if same_row {
                a.bbox[0].total_cmp(&b.bbox[0])
            } else {
                a.centre_y().total_cmp(&b.centre_y())
            }
        });
        Ok(lines)
    }
}

/// Runs `session` on one f32 NCHW input; returns the first output's shape and values.
fn run_one(
    session: &mut Session,
    shape: [i64; 4],
    data: &[f32],
) -> Result<(Vec<i64>, Vec<f32>), ModelError> {
    let name = session
        .inputs()
        .first()
        .map(|o| o.name().to_string())
        .ok_or_else(|| ModelError::Run("model has no input".into()))?;
    let tensor = ort::value::TensorRef::from_array_view((shape, data))
        .map_err(|e| ModelError::Run(e.to_string()))?;
    let result = session
        .run(ort::inputs![name.as_str() => tensor])
        .map_err(|e| ModelError::Run(e.to_string()))?;
    let (shape, values) = result[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| ModelError::Run(e.to_string()))?;
    Ok((shape.to_vec(), values.to_vec()))
}

/// Bilinear sample of `image` at (x, y) (pixel centres at +0.5), clamped to the edge.
fn sample(image: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let fx = (x - 0.5).clamp(0.0, (w - 1) as f32);
    let fy = (y - 0.5).clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (fx as usize, fy as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
    let raw = image.as_raw();
    let px = |xx: usize, yy: usize, c: usize| raw[(yy * w + xx) * 3 + c] as f32;
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = px(x0, y0, c) * (1.0 - tx) + px(x1, y0, c) * tx;
        let bottom = px(x0, y1, c) * (1.0 - tx) + px(x1, y1, c) * tx;
        *o = top * (1.0 - ty) + bottom * ty;
    }
    out
}

/// Text boxes (x0, y0, x1, y1 in image pixels) from the detection model.
fn detect(session: &mut Session, image: &RgbImage) -> Result<Vec<[f32; 4]>, ModelError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w < 8 || h < 8 {
        return Ok(Vec::new());
    }
    // Multiples of 32 near the image's own size (the card is already at reading resolution).
    let (dw, dh) = (w.div_ceil(32) * 32, h.div_ceil(32) * 32);
    let (sx, sy) = (w as f32 / dw as f32, h as f32 / dh as f32);
    let plane = dw * dh;
    let mut input = vec![0.0f32; 3 * plane];
    for v in 0..dh {
        for u in 0..dw {
            let rgb = sample(image, (u as f32 + 0.5) * sx, (v as f32 + 0.5) * sy);
            // The model was trained on BGR, normalised to [-1, 1].
            for (ch, value) in [rgb[2], rgb[1], rgb[0]].into_iter().enumerate() {
                input[ch * plane + v * dw + u] = value / 127.5 - 1.0;
            }
        }
    }
    let (shape, prob) = run_one(session, [1, 3, dh as i64, dw as i64], &input)?;
    let (mh, mw) = match shape.as_slice() {
        [1, 1, mh, mw] => (*mh as usize, *mw as usize),
        other => return Err(ModelError::Run(format!("unexpected det output {other:?}"))),
    };
    let boxes = text_regions(&prob, mw, mh);
    let (kx, ky) = (w as f32 / mw as f32, h as f32 / mh as f32);
    Ok(boxes
        .into_iter()
        .map(|[x0, y0, x1, y1]| {
            [
                (x0 * kx).max(0.0),
                (y0 * ky).max(0.0),
                (x1 * kx).min(w as f32),
                (y1 * ky).min(h as f32),
            ]
        })
        .collect())
}

/// Connected regions of the probability map above the pixel threshold (dilated by one pixel,
/// like PaddleOCR's `use_dilation`), as unclipped boxes in map pixels.
fn text_regions(prob: &[f32], w: usize, h: usize) -> Vec<[f32; 4]> {
    let mut mask = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            // 2x2 dilation.
            let hit = [(0, 0), (1, 0), (0, 1), (1, 1)].iter().any(|&(dx, dy)| {
                let (xx, yy) = (x.wrapping_sub(dx), y.wrapping_sub(dy));
                xx < w && yy < h && prob[yy * w + xx] > DET_PIXEL_THRESHOLD
            });
            mask[y * w + x] = hit;
        }
    }
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    let mut boxes = Vec::new();
    for start in 0..w * h {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for n in neighbours.into_iter().flatten() {
                if mask[n] && !seen[n] {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        let (bw, bh) = (x1 + 1 - x0, y1 + 1 - y0);
        if bw.min(bh) < MIN_BOX_SIDE {
            continue;
        }
        // Box score: mean probability inside the box ("fast" mode).
        let mut sum = 0.0;
        for y in y0..=y1 {
            sum += prob[y * w + x0..=y * w + x1].iter().sum::<f32>();
        }
        let mean = sum / (bw * bh) as f32;
        if mean < DET_BOX_THRESHOLD {
            continue;
        }
        let (fw, fh) = (bw as f32, bh as f32);
        let d = fw * fh * UNCLIP_RATIO / (2.0 * (fw + fh));
        boxes.push([
            x0 as f32 - d,
            y0 as f32 - d,
            (x1 + 1) as f32 + d,
            (y1 + 1) as f32 + d,
        ]);
    }
    boxes
}

/// Reads one box: scaled to 48 px high (BGR, [-1, 1]), right-padded to at least 320 px, greedy
/// CTC decoding. Returns the text and the mean probability of its characters.
fn recognize(
    session: &mut Session,
    charset: &[String],
    image: &RgbImage,
    b: &[f32; 4],
    input: &mut Vec<f32>,
) -> Result<(String, f32), ModelError> {
    let (bw, bh) = ((b[2] - b[0]).max(1.0), (b[3] - b[1]).max(1.0));
    let ratio = (bw / bh).min(REC_MAX_RATIO);
    let content = ((REC_HEIGHT as f32 * ratio).ceil() as usize).max(1);
    let width = content.max(REC_MIN_WIDTH).div_ceil(8) * 8;
    let plane = REC_HEIGHT * width;
    input.clear();
    input.resize(3 * plane, 0.0);
    let (sx, sy) = (bw / content as f32, bh / REC_HEIGHT as f32);
    for v in 0..REC_HEIGHT {
        for u in 0..content {
            let rgb = sample(
                image,
                b[0] + (u as f32 + 0.5) * sx,
                b[1] + (v as f32 + 0.5) * sy,
            );
            for (ch, value) in [rgb[2], rgb[1], rgb[0]].into_iter().enumerate() {
                input[ch * plane + v * width + u] = value / 127.5 - 1.0;
            }
        }
    }
    let (shape, probs) = run_one(session, [1, 3, REC_HEIGHT as i64, width as i64], input)?;
    let (steps, classes) = match shape.as_slice() {
        [1, t, c] => (*t as usize, *c as usize),
        other => return Err(ModelError::Run(format!("unexpected rec output {other:?}"))),
    };
    Ok(ctc_greedy(&probs, steps, classes, charset))
}

/// Greedy CTC: the best class per step, repeats merged, blanks dropped.
fn ctc_greedy(probs: &[f32], steps: usize, classes: usize, charset: &[String]) -> (String, f32) {
    let mut text = String::new();
    let mut confidence = 0.0;
    let mut count = 0usize;
    let mut previous = 0usize;
    for t in 0..steps {
        let row = &probs[t * classes..(t + 1) * classes];
        let (best, p) = row
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0usize, f32::MIN),
                |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
            );
        if best != 0 && best != previous {
            if let Some(c) = charset.get(best) {
                text.push_str(c);
                confidence += p;
                count += 1;
            }
        }
        previous = best;
    }
    let mean = if count > 0 {
        confidence / count as f32
    } else {
        0.0
    };
    (text, mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let charset: Vec<String> = ["", "a", "b"].iter().map(|s| s.to_string()).collect();
        // Steps: a a blank a b b  -> "aab"
        let best = [1, 1, 0, 1, 2, 2];
        let mut probs = vec![0.0f32; best.len() * 3];
        for (t, &c) in best.iter().enumerate() {
            probs[t * 3 + c] = 0.9;
        }
        let (text, confidence) = ctc_greedy(&probs, best.len(), 3, &charset);
        assert_eq!(text, "aab");
        assert!((confidence - 0.9).abs() < 1e-6);
    }

    #[test]
    fn regions_are_found_thresholded_and_unclipped() {
        let (w, h) = (40, 20);
        let mut prob = vec![0.0f32; w * h];
        // A 20x4 strong region and a 1-pixel speck.
        for y in 8..12 {
            for x in 10..30 {
                prob[y * w + x] = 0.9;
            }
        }
        prob[2 * w + 2] = 0.9;
        let boxes = text_regions(&prob, w, h);
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let b = boxes[0];
        // Dilation adds one pixel right/down: 21x5, d = 105 * 1.6 / 52 = 3.23.
        assert!((b[0] - (10.0 - 3.23)).abs() < 0.05, "{b:?}");
        assert!((b[3] - (13.0 + 3.23)).abs() < 0.05, "{b:?}");
    }
}
