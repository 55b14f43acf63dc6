//! BlazeFace short-range (128x128) face detection: letterbox, 896 anchors, weighted NMS.
//! Layout as shipped in the ONNX file (see models/README.md and shared notes).

use ort::session::Session;

use super::models::{run, ModelError};
use crate::analysis::image::{warp_to_tensor, Affine, Layout};
use crate::analysis::quality::I420;

const SIZE: usize = 128;
const INPUT: &str = "input:0";
const OUTPUTS: [&str; 4] = ["Identity:0", "Identity_1:0", "Identity_2:0", "Identity_3:0"];
/// Detections below this score are dropped.
pub(crate) const MIN_SCORE: f32 = 0.5;
/// Overlapping detections above this IoU are merged (weighted by score).
pub(crate) const NMS_IOU: f32 = 0.3;

/// A detected face in image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub score: f32,
    /// Centre x, centre y, width, height.
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
    /// Right eye (image-left), left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
    pub keypoints: [(f32, f32); 6],
}

impl Detection {
    fn iou(&self, o: &Detection) -> f32 {
        let (ax0, ay0, ax1, ay1) = (
            self.cx - self.w / 2.0,
            self.cy - self.h / 2.0,
            self.cx + self.w / 2.0,
            self.cy + self.h / 2.0,
        );
        let (bx0, by0, bx1, by1) = (
            o.cx - o.w / 2.0,
            o.cy - o.h / 2.0,
            o.cx + o.w / 2.0,
            o.cy + o.h / 2.0,
        );
        let iw = (ax1.min(bx1) - ax0.max(bx0)).max(0.0);
        let ih = (ay1.min(by1) - ay0.max(by0)).max(0.0);
        let inter = iw * ih;
        let union = self.w * self.h + o.w * o.h - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// Anchor centres in MediaPipe's order: stride 8 (16x16, 2 per cell), then stride 16 (8x8, 6 per cell).
fn anchors() -> &'static [(f32, f32)] {
    static ANCHORS: std::sync::OnceLock<Vec<(f32, f32)>> = std::sync::OnceLock::new();
    ANCHORS.get_or_init(|| {
        let mut a = Vec::with_capacity(896);
        for (grid, per_cell) in [(16usize, 2usize), (8, 6)] {
            for y in 0..grid {
                for x in 0..grid {
                    for _ in 0..per_cell {
                        a.push((
                            (x as f32 + 0.5) / grid as f32,
                            (y as f32 + 0.5) / grid as f32,
                        ));
                    }
                }
            }
        }
        a
    })
}

/// Detects faces; `scratch` is reused between calls.
pub fn detect(
    session: &mut Session,
    frame: &I420,
    scratch: &mut Vec<f32>,
) -> Result<Vec<Detection>, ModelError> {
    // Letterbox: the frame centred in a square of its longer side.
    let side = frame.width.max(frame.height) as f32;
    let (ox, oy) = (
        (side - frame.width as f32) / 2.0,
        (side - frame.height as f32) / 2.0,
    );
    let to_image = Affine::crop(side / 2.0 - ox, side / 2.0 - oy, side, 0.0, SIZE);
    warp_to_tensor(
        frame,
        &to_image,
        SIZE,
        Layout::Nhwc,
        false,
        |v| v / 127.5 - 1.0,
        scratch,
    );
    let out = run(
        session,
        INPUT,
        [1, SIZE as i64, SIZE as i64, 3],
        scratch,
        &OUTPUTS,
    )?;
    let (scores8, scores16, regs8, regs16) = (&out[0], &out[1], &out[2], &out[3]);
    let anchors = anchors();
    let mut candidates = Vec::new();
    for (i, anchor) in anchors.iter().enumerate() {
        let (logit, reg) = if i < 512 {
            (scores8.get(i), regs8.get(i * 16..i * 16 + 16))
        } else {
            (
                scores16.get(i - 512),
                regs16.get((i - 512) * 16..(i - 512) * 16 + 16),
            )
        };
        let (Some(&logit), Some(r)) = (logit, reg) else {
            continue;
        };
        let score = 1.0 / (1.0 + (-logit.clamp(-80.0, 80.0)).exp());
        if score < MIN_SCORE {
            continue;
        }
        let to_px = |nx: f32, ny: f32| (nx * side - ox, ny * side - oy);
        let (cx, cy) = to_px(r[0] / SIZE as f32 + anchor.0, r[1] / SIZE as f32 + anchor.1);
        let mut keypoints = [(0.0, 0.0); 6];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = to_px(
                r[4 + 2 * k] / SIZE as f32 + anchor.0,
                r[5 + 2 * k] / SIZE as f32 + anchor.1,
            );
        }
        candidates.push(Detection {
            score,
            cx,
            cy,
            w: r[2] / SIZE as f32 * side,
            h: r[3] / SIZE as f32 * side,
            keypoints,
        });
    }
    Ok(weighted_nms(candidates))
}

/// MediaPipe's weighted non-maximum suppression: overlapping boxes are averaged by score.
pub(crate) fn weighted_nms(mut candidates: Vec<Detection>) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while let Some(top) = candidates.first().cloned() {
        let (cluster, rest): (Vec<Detection>, Vec<Detection>) =
            candidates.into_iter().partition(|c| c.iou(&top) > NMS_IOU);
        candidates = rest;
        let total: f32 = cluster.iter().map(|c| c.score).sum();
        let mut merged = top.clone();
        if total > 0.0 && cluster.len() > 1 {
            let avg = |f: &dyn Fn(&Detection) -> f32| {
                cluster.iter().map(|c| f(c) * c.score).sum::<f32>() / total
            };
            merged.cx = avg(&|c| c.cx);
            merged.cy = avg(&|c| c.cy);
            merged.w = avg(&|c| c.w);
            merged.h = avg(&|c| c.h);
            for k in 0..6 {
                merged.keypoints[k] = (avg(&|c| c.keypoints[k].0), avg(&|c| c.keypoints[k].1));
            }
        }
        if cluster.is_empty() {
            // `top` overlaps itself, so this cannot happen; guard against NaN boxes anyway.
            candidates.retain(|c| c != &top);
        }
        out.push(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, cx: f32) -> Detection {
        Detection {
            score,
            cx,
            cy: 50.0,
            w: 40.0,
            h: 40.0,
            keypoints: [(cx, 50.0); 6],
        }
    }

    #[test]
    fn anchors_follow_mediapipe_layout() {
        let a = anchors();
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], (1.0 / 32.0, 1.0 / 32.0));
        assert_eq!(a[1], a[0]);
        assert_eq!(a[512], (1.0 / 16.0, 1.0 / 16.0));
        assert_eq!(a[895], (15.0 / 16.0, 15.0 / 16.0));
    }

    #[test]
    fn nms_merges_overlaps_by_score_and_keeps_separate_faces() {
        let out = weighted_nms(vec![det(0.9, 100.0), det(0.6, 104.0), det(0.8, 300.0)]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert!((out[0].cx - (100.0 * 0.9 + 104.0 * 0.6) / 1.5).abs() < 1e-3);
        assert_eq!(out[1].cx, 300.0);
    }
}
