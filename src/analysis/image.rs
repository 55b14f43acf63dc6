//! Pixel plumbing shared by the face models: affine transforms, bilinear RGB sampling straight
//! from I420 (no full-frame RGB conversion), and RGB -> I420 for stills and fixtures.

use crate::frame::{bilinear_rgb, I420};

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
/// Every analysed frame pays for the face mesh's 192x192 crop, so a crop that lies inside the
/// frame (the usual case) takes a faster path that gives the same numbers bit for bit.
pub fn warp_to_tensor(
    frame: &I420,
    to_image: &Affine,
    size: usize,
    layout: Layout,
    flip_x: bool,
    norm: impl Fn(f32) -> f32,
    out: &mut Vec<f32>,
) {
    // Both paths write every element, so a buffer of the right length is not zeroed first
    // (the mesh's crop is 442 KB, every analysed frame).
    out.resize(3 * size * size, 0.0);
    if size <= ROW_MAX && crop_inside(frame, to_image, size) {
        warp_inside(frame, to_image, size, layout, flip_x, norm, out);
        return;
    }
    let plane = size * size;
    for v in 0..size {
        for u in 0..size {
            let su = if flip_x { size - 1 - u } else { u };
            let (x, y) = to_image.apply(su as f32 + 0.5, v as f32 + 0.5);
            let rgb = sample_rgb(frame, x, y);
            for (ch, value) in rgb.iter().enumerate() {
                out[layout.index(size, plane, u, v, ch)] = norm(*value);
            }
        }
    }
}

impl Layout {
    fn index(self, size: usize, plane: usize, u: usize, v: usize, ch: usize) -> usize {
        match self {
            Layout::Nhwc => (v * size + u) * 3 + ch,
            Layout::Nchw => ch * plane + v * size + u,
        }
    }
}

/// Widest crop row the fast path buffers on the stack (the models' crops are 64 to 192).
const ROW_MAX: usize = 256;

/// True when the frame's planes hold what its sizes say (`I420::is_valid`, indices fit in u32) and
/// every sample of the crop has its four luma neighbours inside the frame, so that `sample_rgb`'s
/// clamps and edge cases cannot apply. The map is affine: the corners bound it, and the margin
/// covers rounding.
fn crop_inside(frame: &I420, to_image: &Affine, size: usize) -> bool {
    const MARGIN: f32 = 0.01;
    let (w, h) = (frame.width as f32, frame.height as f32);
    let last = size as f32 - 0.5;
    frame.is_valid()
        && [frame.y.len(), frame.u.len(), frame.v.len()]
            .iter()
            .all(|len| *len <= u32::MAX as usize)
        && [(0.5, 0.5), (last, 0.5), (0.5, last), (last, last)]
            .into_iter()
            .all(|(u, v)| {
                let (x, y) = to_image.apply(u, v);
                x >= 0.5 + MARGIN
                    && y >= 0.5 + MARGIN
                    && x < w - 0.5 - MARGIN
                    && y < h - 0.5 - MARGIN
            })
}

/// `warp_to_tensor` for a crop inside the frame, a row at a time: first the addresses and
/// weights of every sample, then the loads, then `sample_rgb`'s own arithmetic (`bilinear_rgb`)
/// on whole rows, which the compiler vectorises.
fn warp_inside(
    frame: &I420,
    to_image: &Affine,
    size: usize,
    layout: Layout,
    flip_x: bool,
    norm: impl Fn(f32) -> f32,
    out: &mut [f32],
) {
    assert!(
        size <= ROW_MAX,
        "crop of {size} px wider than a buffered row"
    );
    let ys = frame.y_stride;
    // One row's samples: the four luma neighbours, the weights and the chroma.
    let mut luma = [[0f32; ROW_MAX]; 4];
    let mut weights = [[0f32; ROW_MAX]; 2];
    let mut chroma = [[0f32; ROW_MAX]; 2];
    let [l00, l01, l10, l11] = &mut luma;
    let [tx, ty] = &mut weights;
    let [cu, cv] = &mut chroma;
    let (mut luma_at, mut chroma_at) = ([0u32; ROW_MAX], [0u32; ROW_MAX]);
    let mut rgb = [[0f32; ROW_MAX]; 3];
    let plane = size * size;
    // Inside a valid frame every coordinate is positive and below the frame's size, and every
    // index below its plane's length (at most u32::MAX, `crop_inside`), so u32 holds them and the
    // float-to-int casts are the same as `sample_rgb`'s.
    let (ys32, uvs32) = (ys as u32, frame.uv_stride as u32);
    for v in 0..size {
        for u in 0..size {
            let su = if flip_x { size - 1 - u } else { u };
            let (x, y) = to_image.apply(su as f32 + 0.5, v as f32 + 0.5);
            let (fx, fy) = (x - 0.5, y - 0.5);
            let (x0, y0) = (fx as u32, fy as u32);
            tx[u] = fx - x0 as f32;
            ty[u] = fy - y0 as f32;
            luma_at[u] = y0 * ys32 + x0;
            chroma_at[u] = (y as u32 / 2) * uvs32 + x as u32 / 2;
        }
        for u in 0..size {
            let i = luma_at[u] as usize;
            l00[u] = frame.y[i] as f32;
            l01[u] = frame.y[i + 1] as f32;
            l10[u] = frame.y[i + ys] as f32;
            l11[u] = frame.y[i + ys + 1] as f32;
            let ci = chroma_at[u] as usize;
            cu[u] = frame.u.get(ci).copied().unwrap_or(128) as f32 - 128.0;
            cv[u] = frame.v.get(ci).copied().unwrap_or(128) as f32 - 128.0;
        }
        let [r, g, b] = &mut rgb;
        for u in 0..size {
            let luma = [l00[u], l01[u], l10[u], l11[u]];
            let [rv, gv, bv] = bilinear_rgb(luma, tx[u], ty[u], cu[u], cv[u]);
            (r[u], g[u], b[u]) = (norm(rv), norm(gv), norm(bv));
        }
        match layout {
            Layout::Nchw => {
                for (ch, values) in rgb.iter().enumerate() {
                    let start = ch * plane + v * size;
                    out[start..start + size].copy_from_slice(&values[..size]);
                }
            }
            Layout::Nhwc => {
                let row = &mut out[v * size * 3..(v + 1) * size * 3];
                for (u, px) in row.chunks_exact_mut(3).enumerate() {
                    px.copy_from_slice(&[rgb[0][u], rgb[1][u], rgb[2][u]]);
                }
            }
        }
    }
}

pub use crate::frame::rgb_to_i420;

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path for crops inside the frame gives `sample_rgb`'s numbers bit for bit, in
    /// both layouts, mirrored or not; crops over the edge take the general path.
    #[test]
    fn crops_inside_the_frame_match_the_general_sampler_exactly() {
        let (w, h) = (97, 75);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 7 + y * 3) as u8, (x * y) as u8, (255 - x * 2) as u8]
            })
            .collect();
        let (y, u, v) = rgb_to_i420(w, h, &rgb);
        // Padded rows, as decoders hand them out.
        let (ys, uvs, cw) = (w + 13, w.div_ceil(2) + 5, w.div_ceil(2));
        let pad = |plane: &[u8], width: usize, stride: usize| -> Vec<u8> {
            plane
                .chunks(width)
                .flat_map(|row| {
                    row.iter()
                        .copied()
                        .chain(std::iter::repeat_n(7, stride - width))
                })
                .collect()
        };
        let (y, u, v) = (pad(&y, w, ys), pad(&u, cw, uvs), pad(&v, cw, uvs));
        let frame = I420 {
            width: w,
            height: h,
            y: &y,
            u: &u,
            v: &v,
            y_stride: ys,
            uv_stride: uvs,
            full_range: false,
        };
        let norm = |x: f32| x / 255.0;
        // A crop whose first samples land 0.52 px from the frame's top-left corner.
        let grazing = Affine {
            a: 0.45,
            b: 0.0,
            c: 0.52 - 0.45 * 0.5,
            d: 0.0,
            e: 0.35,
            f: 0.52 - 0.35 * 0.5,
        };
        let crops = [
            (Affine::crop(48.0, 37.0, 40.0, 0.3, 16), 16),
            (Affine::crop(50.3, 30.7, 33.3, -1.1, 24), 24),
            (Affine::crop(45.0, 40.0, 60.0, 0.0, 192), 192),
            (grazing, 64),
            // Over the edge: the general path.
            (Affine::crop(10.0, 8.0, 40.0, 0.5, 16), 16),
        ];
        for (n, (crop, size)) in crops.iter().enumerate() {
            let size = *size;
            assert_eq!(crop_inside(&frame, crop, size), n < 4, "crop {n}");
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for flip in [false, true] {
                    // A reused buffer holds the last crop's values: every element is rewritten.
                    let mut fast = vec![f32::NAN; 3 * size * size];
                    warp_to_tensor(&frame, crop, size, layout, flip, norm, &mut fast);
                    let plane = size * size;
                    for vv in 0..size {
                        for uu in 0..size {
                            let su = if flip { size - 1 - uu } else { uu };
                            let (x, y) = crop.apply(su as f32 + 0.5, vv as f32 + 0.5);
                            let want = sample_rgb(&frame, x, y).map(norm);
                            for (ch, value) in want.iter().enumerate() {
                                let got = fast[layout.index(size, plane, uu, vv, ch)];
                                assert_eq!(got.to_bits(), value.to_bits(), "crop {n} at {uu},{vv}");
                            }
                        }
                    }
                }
            }
        }
    }

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
