//! Pixel plumbing shared by the face models: affine transforms, bilinear RGB sampling straight
//! from I420 (no full-frame RGB conversion), and RGB -> I420 for stills and fixtures.

use crate::frame::I420;

/// A 2x3 affine map: `x' = a*x + b*y + c`, `y' = d*x + e*y + f`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub e: f32,
    pub f: f32,
}

impl Affine {
    /// Maps a `size`-pixel square crop (output pixels) onto the image: the crop is centred on
    /// (cx, cy), covers `side` image pixels and is rotated by `angle` radians.
    pub fn crop(cx: f32, cy: f32, side: f32, angle: f32, size: usize) -> Affine {
        let s = side / size as f32;
        let (sin, cos) = angle.sin_cos();
        let half = size as f32 / 2.0;
        // u, v -> centred, scaled, rotated -> image.
        Affine {
            a: cos * s,
            b: -sin * s,
            c: cx - (cos * s * half) + (sin * s * half),
            d: sin * s,
            e: cos * s,
            f: cy - (sin * s * half) - (cos * s * half),
        }
    }

    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (
            self.a * x + self.b * y + self.c,
            self.d * x + self.e * y + self.f,
        )
    }

    /// Scale factor of the map (image pixels per crop pixel).
    pub fn scale(&self) -> f32 {
        (self.a * self.a + self.d * self.d).sqrt()
    }
}

pub use crate::frame::sample_rgb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// [1, H, W, 3]
    Nhwc,
    /// [1, 3, H, W]
    Nchw,
}

/// Fills `out` with a `size`x`size` RGB crop through `to_image`, each channel mapped by `norm`.
pub fn warp_to_tensor(
    frame: &I420,
    to_image: &Affine,
    size: usize,
    layout: Layout,
    flip_x: bool,
    norm: impl Fn(f32) -> f32,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(3 * size * size, 0.0);
    let plane = size * size;
    for v in 0..size {
        for u in 0..size {
            let su = if flip_x { size - 1 - u } else { u };
            let (x, y) = to_image.apply(su as f32 + 0.5, v as f32 + 0.5);
            let rgb = sample_rgb(frame, x, y);
            for (ch, value) in rgb.iter().enumerate() {
                let i = match layout {
                    Layout::Nhwc => (v * size + u) * 3 + ch,
                    Layout::Nchw => ch * plane + v * size + u,
                };
                out[i] = norm(*value);
            }
        }
    }
}

pub use crate::frame::rgb_to_i420;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_round_trips_through_i420() {
        let (w, h) = (8, 6);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 120, 40]).collect();
        let (y, u, v) = rgb_to_i420(w, h, &rgb);
        let frame = I420 {
            width: w,
            height: h,
            y: &y,
            u: &u,
            v: &v,
            y_stride: w,
            uv_stride: w / 2,
            full_range: false,
        };
        let p = sample_rgb(&frame, 3.5, 2.5);
        for (got, want) in p.iter().zip([200.0, 120.0, 40.0]) {
            assert!((got - want).abs() < 4.0, "{p:?}");
        }
        assert_eq!(sample_rgb(&frame, -1.0, 0.0), [0.0; 3]);
    }

    #[test]
    fn crop_maps_centre_and_rotates() {
        let a = Affine::crop(100.0, 50.0, 64.0, 0.0, 32);
        let (x, y) = a.apply(16.0, 16.0);
        assert!((x - 100.0).abs() < 1e-4 && (y - 50.0).abs() < 1e-4);
        assert!((a.scale() - 2.0).abs() < 1e-6);
        let r = Affine::crop(0.0, 0.0, 32.0, std::f32::consts::FRAC_PI_2, 32);
        // The crop's +u direction points along the image's +y after a 90 degree rotation.
        let (x0, y0) = r.apply(16.0, 16.0);
        let (x1, y1) = r.apply(17.0, 16.0);
        assert!((x1 - x0).abs() < 1e-4 && (y1 - y0 - 1.0).abs() < 1e-4);
    }
}
