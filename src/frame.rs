//! The crate's frame type: I420 pictures as the decoder produces them and every analysis reads
//! them. A leaf: it imports nothing from the crate, so media, analysis, liveness, document, store
//! and testkit all share one definition (`I420` is the borrowed view, `Frame` the owned,
//! tightly packed picture, `Region` a rectangle in it).

/// A borrowed I420 frame (Y plane full res, U and V half res), with strides.
///
/// The chroma planes are `ceil(width / 2)` x `ceil(height / 2)`. A frame whose planes are too
/// short for its size and strides is malformed (see [`I420::is_valid`]); the functions of this
/// module do not panic on it but return neutral values (documented per function).
#[derive(Debug, Clone, Copy)]
pub struct I420<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub uv_stride: usize,
    /// Full-range YUV (black 0, white 255), where the stream signals it; otherwise studio range
    /// (black 16, white 235), which is what WebRTC senders code.
    pub full_range: bool,
}

impl I420<'_> {
    /// The luma value of white in this frame's range.
    pub fn white(&self) -> u8 {
        if self.full_range {
            255
        } else {
            235
        }
    }

    /// Width of the U and V planes: `ceil(width / 2)`.
    pub(crate) fn chroma_width(&self) -> usize {
        self.width.div_ceil(2)
    }

    /// Height of the U and V planes: `ceil(height / 2)`.
    pub(crate) fn chroma_height(&self) -> usize {
        self.height.div_ceil(2)
    }

    /// True when the frame is non-empty and every plane is long enough for its size and stride.
    pub(crate) fn is_valid(&self) -> bool {
        if self.width == 0 || self.height == 0 {
            return false;
        }
        let (cw, ch) = (self.chroma_width(), self.chroma_height());
        self.y_stride >= self.width
            && self.uv_stride >= cw
            && plane_fits(self.y.len(), self.y_stride, self.width, self.height)
            && plane_fits(self.u.len(), self.uv_stride, cw, ch)
            && plane_fits(self.v.len(), self.uv_stride, cw, ch)
    }

    /// `w` luma samples of row `row` starting at column `x` (caller guarantees validity).
    #[inline]
    pub(crate) fn y_row(&self, row: usize, x: usize, w: usize) -> &[u8] {
        let start = row * self.y_stride + x;
        &self.y[start..start + w]
    }
}

fn plane_fits(len: usize, stride: usize, w: usize, h: usize) -> bool {
    (h - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(w))
        .is_some_and(|need| len >= need)
}

/// A rectangle in pixels (x, y, w, h), clipped to the frame by the functions that take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Region {
    pub fn new(x: usize, y: usize, w: usize, h: usize) -> Self {
        Region { x, y, w, h }
    }

    /// The whole `width` x `height` frame.
    pub fn full(width: usize, height: usize) -> Self {
        Region::new(0, 0, width, height)
    }

    /// This rectangle intersected with a `width` x `height` frame (may become empty).
    pub fn clip(&self, width: usize, height: usize) -> Region {
        let x = self.x.min(width);
        let y = self.y.min(height);
        Region {
            x,
            y,
            w: self.w.min(width - x),
            h: self.h.min(height - y),
        }
    }

    pub fn area(&self) -> usize {
        self.w * self.h
    }

    /// Whether the pixel at (`x`, `y`) lies inside.
    pub fn contains(&self, x: usize, y: usize) -> bool {
        (self.x..self.x + self.w).contains(&x) && (self.y..self.y + self.h).contains(&y)
    }

    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }
}

/// A decoded frame in I420, owned, with tightly packed planes: Y is `width * height`, U and V
/// are `((width + 1) / 2) * ((height + 1) / 2)` each (chroma rounds up for odd sizes).
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// Full-range YUV where the stream signals it (VP9's colour range bit); studio range otherwise.
    pub full_range: bool,
}

impl Frame {
    /// A borrowed view for the analysis code (planes are tightly packed).
    pub fn view(&self) -> I420<'_> {
        I420 {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.width,
            uv_stride: self.width.div_ceil(2),
            full_range: self.full_range,
        }
    }

    /// BT.601 I420 from packed RGB888 (stills, rendered fixtures).
    pub fn from_rgb(width: usize, height: usize, rgb: &[u8]) -> Self {
        let (y, u, v) = rgb_to_i420(width, height, rgb);
        Frame {
            width,
            height,
            y,
            u,
            v,
            full_range: false,
        }
    }

    /// A frame of the given size with all planes zero-filled (callers overwrite them).
    pub fn new(width: usize, height: usize) -> Self {
        let mut f = Self::default();
        f.reuse(width, height);
        f
    }

    /// Chroma plane dimensions `(width, height)`, rounded up.
    pub(crate) fn chroma_dims(&self) -> (usize, usize) {
        (self.width.div_ceil(2), self.height.div_ceil(2))
    }

    /// Resizes the planes for a `width` x `height` picture. Capacity is never shrunk, so a
    /// frame reused across decodes stops allocating once it has seen the largest size. Plane
    /// contents are unspecified afterwards (the decoder overwrites all of them).
    pub(crate) fn reuse(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        let (cw, ch) = self.chroma_dims();
        self.y.resize(width * height, 0);
        self.u.resize(cw * ch, 0);
        self.v.resize(cw * ch, 0);
    }
}

/// Bilinear RGB (0..255) at image position (x, y), pixel centres at integer + 0.5. Outside the
/// frame: black. Inlined: the face crops call it for every pixel of every analysed frame.
#[inline]
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
    let (cx, cy) = (x as usize / 2, y as usize / 2);
    let ci = cy * frame.uv_stride + cx;
    let u = frame.u.get(ci).copied().unwrap_or(128) as f32 - 128.0;
    let v = frame.v.get(ci).copied().unwrap_or(128) as f32 - 128.0;
    bilinear_rgb(
        [luma(x0, y0), luma(x1, y0), luma(x0, y1), luma(x1, y1)],
        tx,
        ty,
        u,
        v,
    )
}

/// The whole frame as packed RGB888 into `out` (resized to width x height x 3): `sample_rgb` at
/// every pixel centre, truncated to u8, bit for bit, but a row at a time (an evidence JPEG of a
/// 640x480 frame no longer calls the general sampler 307,200 times). A malformed frame
/// ([`I420::is_valid`]) comes out black.
pub fn to_rgb8(frame: &I420, out: &mut Vec<u8>) {
    let (w, h) = (frame.width, frame.height);
    out.clear();
    out.resize(w * h * 3, 0);
    if !frame.is_valid() {
        return;
    }
    for (row, rgb) in out.chunks_exact_mut(w * 3).enumerate() {
        let luma = &frame.y[row * frame.y_stride..][..w];
        let chroma = (row / 2) * frame.uv_stride;
        let (u, v) = (&frame.u[chroma..], &frame.v[chroma..]);
        for (x, (px, &l)) in rgb.chunks_exact_mut(3).zip(luma).enumerate() {
            // At a pixel centre the bilinear weights are 0: the four neighbours are this pixel's.
            let l = l as f32;
            let p = bilinear_rgb(
                [l; 4],
                0.0,
                0.0,
                u[x / 2] as f32 - 128.0,
                v[x / 2] as f32 - 128.0,
            );
            px.copy_from_slice(&p.map(|c| c as u8));
        }
    }
}

/// RGB (0..255) from the four luma neighbours (top left, top right, bottom left, bottom right),
/// their weights and the centred chroma (BT.601, studio range): the arithmetic `sample_rgb` and
/// the face crops' row-at-a-time path share, so that both give the same numbers bit for bit.
#[inline(always)]
pub(crate) fn bilinear_rgb(luma: [f32; 4], tx: f32, ty: f32, u: f32, v: f32) -> [f32; 3] {
    let top = luma[0] * (1.0 - tx) + luma[1] * tx;
    let bottom = luma[2] * (1.0 - tx) + luma[3] * tx;
    let yv = top * (1.0 - ty) + bottom * ty;
    let c = 1.164 * (yv - 16.0);
    [
        (c + 1.596 * v).clamp(0.0, 255.0),
        (c - 0.813 * v - 0.391 * u).clamp(0.0, 255.0),
        (c + 2.018 * u).clamp(0.0, 255.0),
    ]
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
    fn to_rgb8_is_the_general_sampler_at_every_pixel_centre() {
        // Odd sizes and padded strides, pseudo-random planes.
        for (w, h, pad) in [(37usize, 23usize, 4usize), (64, 48, 0), (1, 1, 3)] {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let (ys, uvs) = (w + pad, cw + pad);
            let mut seed = 0x9e37_79b9u32;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed >> 24) as u8
            };
            let y: Vec<u8> = (0..ys * h).map(|_| next()).collect();
            let u: Vec<u8> = (0..uvs * ch).map(|_| next()).collect();
            let v: Vec<u8> = (0..uvs * ch).map(|_| next()).collect();
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
            let mut rgb = Vec::new();
            to_rgb8(&frame, &mut rgb);
            assert_eq!(rgb.len(), w * h * 3);
            for row in 0..h {
                for col in 0..w {
                    let want =
                        sample_rgb(&frame, col as f32 + 0.5, row as f32 + 0.5).map(|c| c as u8);
                    let at = (row * w + col) * 3;
                    assert_eq!(rgb[at..at + 3], want, "{w}x{h} at ({col}, {row})");
                }
            }
        }
        // A malformed frame (planes too short) is black, not a panic.
        let short = I420 {
            width: 8,
            height: 8,
            y: &[1, 2, 3],
            u: &[],
            v: &[],
            y_stride: 8,
            uv_stride: 4,
            full_range: false,
        };
        let mut rgb = vec![7u8; 3];
        to_rgb8(&short, &mut rgb);
        assert_eq!(rgb, vec![0u8; 8 * 8 * 3]);
    }
}
