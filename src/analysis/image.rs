//! Pixel plumbing shared by the face models: affine transforms, bilinear RGB sampling straight
//! from I420 (no full-frame RGB conversion), and RGB -> I420 for stills and fixtures.

use super::quality::I420;

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

/// Bilinear RGB (0..255) at image position (x, y), pixel centres at integer + 0.5. Outside the
/// frame: black.
pub fn sample_rgb(frame: &I420, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (frame.width as f32, frame.height as f32);
    if x < 0.0 || y < 0.0 || x >= w || y >= h {
        return [0.0, 0.0, 0.0];
    }
    let fx = (x - 0.5).clamp(0.0, w - 1.0);
    let fy = (y - 0.5).clamp(0.0, h - 1.0);
    let (x0, y0) = (fx as usize, fy as usize);
    let (x1, y1) = (
        (x0 + 1).min(frame.width - 1),
        (y0 + 1).min(frame.height - 1),
    );
    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
    let luma = |xx: usize, yy: usize| frame.y[yy * frame.y_stride + xx] as f32;
    let top = luma(x0, y0) * (1.0 - tx) + luma(x1, y0) * tx;
    let bottom = luma(x0, y1) * (1.0 - tx) + luma(x1, y1) * tx;
    let yv = top * (1.0 - ty) + bottom * ty;
    let (cx, cy) = (x as usize / 2, y as usize / 2);
    let ci = cy * frame.uv_stride + cx;
    let u = frame.u.get(ci).copied().unwrap_or(128) as f32 - 128.0;
    let v = frame.v.get(ci).copied().unwrap_or(128) as f32 - 128.0;
    let c = 1.164 * (yv - 16.0);
    [
        (c + 1.596 * v).clamp(0.0, 255.0),
        (c - 0.813 * v - 0.391 * u).clamp(0.0, 255.0),
        (c + 2.018 * u).clamp(0.0, 255.0),
    ]
}

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

/// BT.601 limited-range I420 from packed RGB888 (even or odd sizes; chroma rounds up).
pub fn rgb_to_i420(width: usize, height: usize, rgb: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let mut y = vec![0u8; width * height];
    let mut u = vec![128u8; cw * ch];
    let mut v = vec![128u8; cw * ch];
    for row in 0..height {
        for col in 0..width {
            let p = &rgb[(row * width + col) * 3..][..3];
            let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
            y[row * width + col] = (16.0 + 0.257 * r + 0.504 * g + 0.098 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    for crow in 0..ch {
        for ccol in 0..cw {
            let (mut r, mut g, mut b, mut n) = (0.0, 0.0, 0.0, 0.0);
            for dy in 0..2 {
                for dx in 0..2 {
                    let (xx, yy) = (ccol * 2 + dx, crow * 2 + dy);
                    if xx < width && yy < height {
                        let p = &rgb[(yy * width + xx) * 3..][..3];
                        r += p[0] as f32;
                        g += p[1] as f32;
                        b += p[2] as f32;
                        n += 1.0;
                    }
                }
            }
            let (r, g, b) = (r / n, g / n, b / n);
            u[crow * cw + ccol] = (128.0 - 0.148 * r - 0.291 * g + 0.439 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
            v[crow * cw + ccol] = (128.0 + 0.439 * r - 0.368 * g - 0.071 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    (y, u, v)
}

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
