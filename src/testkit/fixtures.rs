//! Scenario frames for camera-health and capture-quality tests: a good, moving, well-lit scene,
//! and the faults a person's camera really has (black, frozen, dark, over-exposed, blurred).
//! Rendered as raw I420 and encoded live by the test peer with real encoders.

use crate::media::decode::DecodedFrame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    /// Moving, sharp, mid-grey on average, neutral colour.
    Good,
    /// A covered lens: near-black with sensor noise.
    Black,
    /// The good scene, one picture repeated forever.
    Frozen,
    /// The good scene in a dark room (luma ~20..55).
    Dark,
    /// The good scene blown out (mostly clipped highlights).
    Bright,
    /// The good scene out of focus (box blur, radius 6).
    Blurred,
}

pub fn render(scene: Scene, width: usize, height: usize, index: usize) -> DecodedFrame {
    let index = if scene == Scene::Frozen { 0 } else { index };
    let mut f = base(width, height, index);
    match scene {
        Scene::Good | Scene::Frozen => {}
        Scene::Black => {
            let mut seed = 0x9e37_79b9u32 ^ index as u32;
            for y in f.y.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *y = 16 + (seed % 3) as u8;
            }
            f.u.fill(128);
            f.v.fill(128);
        }
        Scene::Dark => {
            f.y.iter_mut()
                .for_each(|y| *y = 20 + (*y as u32 * 35 / 255) as u8)
        }
        Scene::Bright => {
            f.y.iter_mut()
                .for_each(|y| *y = (235 + *y as u32 * 30 / 255).min(255) as u8)
        }
        Scene::Blurred => box_blur(&mut f.y, width, height, 6),
    }
    f
}

/// Textured, moving scene: diagonal stripes, a checkerboard and a bright bar that moves.
fn base(width: usize, height: usize, index: usize) -> DecodedFrame {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let mut y = vec![0u8; width * height];
    let shift = index * 6;
    for row in 0..height {
        for col in 0..width {
            let x = col + shift;
            let stripes = ((x + row) / 12) % 2 == 0;
            let checker = ((x / 24) + (row / 24)) % 2 == 0;
            let mut v: u32 = 60 + if stripes { 70 } else { 0 } + if checker { 40 } else { 0 };
            let bar = (index * 9) % width;
            if col >= bar && col < bar + 20 {
                v = 220;
            }
            y[row * width + col] = v as u8;
        }
    }
    DecodedFrame {
        width,
        height,
        y,
        u: vec![126; cw * ch],
        v: vec![130; cw * ch],
        full_range: false,
    }
}

fn box_blur(plane: &mut [u8], width: usize, height: usize, radius: usize) {
    let mut tmp = vec![0u8; plane.len()];
    for row in 0..height {
        let line = &plane[row * width..(row + 1) * width];
        for col in 0..width {
            let lo = col.saturating_sub(radius);
            let hi = (col + radius).min(width - 1);
            let sum: u32 = line[lo..=hi].iter().map(|v| *v as u32).sum();
            tmp[row * width + col] = (sum / (hi - lo + 1) as u32) as u8;
        }
    }
    for col in 0..width {
        for row in 0..height {
            let lo = row.saturating_sub(radius);
            let hi = (row + radius).min(height - 1);
            let sum: u32 = (lo..=hi).map(|r| tmp[r * width + col] as u32).sum();
            plane[row * width + col] = (sum / (hi - lo + 1) as u32) as u8;
        }
    }
}

/// `count` frames of a scene, to be looped by a live-encoding peer.
pub fn render_loop(scene: Scene, width: usize, height: usize, count: usize) -> Vec<DecodedFrame> {
    (0..count)
        .map(|i| render(scene, width, height, i))
        .collect()
}
