//! Fixture renderer: head-pose clips rendered from one still portrait, with ground truth.
//!
//! No package ships a face video, so the face-tracking tests render their clips: a still portrait
//! plus its 468 MediaPipe face-mesh landmarks become frames in which the head turns, nods, rolls,
//! blinks, opens the mouth, moves and scales, and every frame comes with the edit it was rendered
//! with and the landmark positions after that edit. The tracker is then checked against this
//! ground truth.
//!
//! How a frame is made ([`HeadRenderer::render`]): the landmarks are triangulated once (Delaunay on
//! their frontal `(x, y)`); the region under the face (the landmarks' convex hull, dilated a
//! little) is inpainted from its border, so a turned face leaves no ghost of the original behind;
//! per frame the mesh is edited (lids, jaw), rotated about a pivot behind the face, scaled and
//! shifted, projected orthographically, and every front-facing triangle is texture-mapped from
//! its frontal position in the portrait (affine per triangle, bilinear sampling) with a z-buffer.
//!
//! # Conventions
//!
//! * Image coordinates: x to the right, y down, in pixels. Pixel `(i, j)` covers
//!   `[i, i + 1) x [j, j + 1)`, so its centre is `(i + 0.5, j + 0.5)`; this is MediaPipe's
//!   normalised landmark times the image size. z is in the same pixel scale, smaller = closer to
//!   the camera. (x right, y down, z away from the camera) is right-handed.
//! * [`HeadPose`] angles are in degrees and relative to the portrait, which is the pose (0, 0, 0):
//!   * yaw > 0: the head turns towards image-right (the subject's own left for a non-mirrored
//!     camera); the nose tip moves right relative to the face centre.
//!   * pitch > 0: the head tilts up (chin up); the nose tip moves up relative to the eyes.
//!   * roll > 0: the head tilts clockwise in the image.
//! * Rotation: `R = Rz(roll) * Rx(pitch) * Ry(yaw)` applied to column vectors `p - pivot` (so yaw
//!   is applied first, roll last), with
//!   `Ry(a) = [[cos a, 0, -sin a], [0, 1, 0], [sin a, 0, cos a]]`,
//!   `Rx(b) = [[1, 0, 0], [0, cos b, sin b], [0, -sin b, cos b]]`,
//!   `Rz(c) = [[cos c, -sin c, 0], [sin c, cos c, 0], [0, 0, 1]]`. See [`HeadPose::matrix`].
//! * Pivot: the landmark centroid pushed back (away from the camera) by 0.6 x the face width (the
//!   x extent of the landmarks), so a turn looks like a head turning on its neck rather than a
//!   flat card spinning. See [`HeadRenderer::pivot`].
//! * Projection: orthographic (weak perspective). A landmark `p` (after the lid and jaw edits)
//!   ends at `pivot + scale * R * (p - pivot) + (offset.0, offset.1, 0)`; its x, y are its image
//!   position, z is kept (scaled) in the returned landmarks.
//! * Frames have the portrait's size.

use std::path::Path;

/// Number of face-mesh landmarks used (MediaPipe's 468; iris points beyond these are ignored).
pub const MESH_POINTS: usize = 468;
/// Nose tip.
pub const NOSE_TIP: usize = 1;
/// Upper inner lip, centre.
pub const UPPER_LIP_INNER_CENTRE: usize = 13;
/// Lower inner lip, centre.
pub const LOWER_LIP_INNER_CENTRE: usize = 14;
/// Outer mouth corner on image-left (the subject's right).
pub const MOUTH_CORNER_IMAGE_LEFT: usize = 61;
/// Outer mouth corner on image-right (the subject's left).
pub const MOUTH_CORNER_IMAGE_RIGHT: usize = 291;
/// Subject's right eye (image-left), upper lid, outer corner to inner; pairs with
/// [`RIGHT_EYE_LOWER`].
pub const RIGHT_EYE_UPPER: [usize; 7] = [246, 161, 160, 159, 158, 157, 173];
/// Subject's right eye, lower lid, outer corner to inner.
pub const RIGHT_EYE_LOWER: [usize; 7] = [7, 163, 144, 145, 153, 154, 155];
/// Subject's left eye (image-right), upper lid, outer corner to inner; pairs with
/// [`LEFT_EYE_LOWER`].
pub const LEFT_EYE_UPPER: [usize; 7] = [466, 388, 387, 386, 385, 384, 398];
/// Subject's left eye, lower lid, outer corner to inner.
pub const LEFT_EYE_LOWER: [usize; 7] = [249, 390, 373, 374, 380, 381, 382];
/// Inner lip contour, a closed ring: inner corner 78, upper inner lip to corner 308, lower inner
/// lip back.
pub const MOUTH_INNER_RING: [usize; 20] = [
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
];
/// Upper outer and upper inner lip (never moved by the jaw).
const UPPER_LIP: [usize; 18] = [
    185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415,
];
/// Lower inner and lower outer lip (always moved with the jaw).
const LOWER_LIP: [usize; 18] = [
    95, 88, 178, 87, 14, 317, 402, 318, 324, 146, 91, 181, 84, 17, 314, 405, 321, 375,
];
/// Colour of the open mouth's interior.
pub const MOUTH_INTERIOR: [u8; 3] = [60, 20, 20];

/// Pivot depth behind the landmark centroid, in face widths.
const PIVOT_DEPTH: f32 = 0.6;
/// Jaw drop at `mouth_open = 1`, in mouth widths (outer corner to outer corner).
const JAW_DROP: f32 = 0.25;
/// Twice the smallest projected triangle area (px^2) that is drawn.
const MIN_AREA2: f32 = 1e-4;
/// Tolerance on barycentric coordinates, so shared edges leave no cracks.
const EDGE_EPS: f32 = 1e-5;

// ------------------------------------------------------------------------------------------------
// Images

/// An 8-bit RGB image, row-major, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// RGB888, `width * height * 3` bytes.
    pub data: Vec<u8>,
}

#[inline]
fn to_u8(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

impl RgbImage {
    /// An image filled with one colour.
    pub fn new(width: usize, height: usize, fill: [u8; 3]) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&fill);
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// Wraps raw RGB888 bytes, checking the length.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Result<Self, String> {
        if data.len() != width * height * 3 {
            return Err(format!(
                "RGB image {width}x{height} needs {} bytes, got {}",
                width * height * 3,
                data.len()
            ));
        }
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Loads a PNG or JPEG (format guessed from the content), converted to RGB.
    pub fn load(path: &Path) -> Result<RgbImage, String> {
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let img = image::ImageReader::open(path)
            .map_err(|e| err(&e))?
            .with_guessed_format()
            .map_err(|e| err(&e))?
            .decode()
            .map_err(|e| err(&e))?
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        RgbImage::from_raw(w, h, img.into_raw())
    }

    /// Writes the image as PNG.
    pub fn save_png(&self, path: &Path) -> Result<(), String> {
        if self.data.len() != self.width * self.height * 3 {
            return Err(format!(
                "RGB image {}x{} has {} bytes",
                self.width,
                self.height,
                self.data.len()
            ));
        }
        image::save_buffer_with_format(
            path,
            &self.data,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The pixel at `(x, y)`; panics when outside.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside"
        );
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Sets the pixel at `(x, y)`; panics when outside.
    pub fn set_pixel(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside"
        );
        let i = (y * self.width + x) * 3;
        self.data[i..i + 3].copy_from_slice(&rgb);
    }

    /// BT.601 luma per pixel.
    pub fn luma(&self) -> Vec<u8> {
        self.data
            .chunks_exact(3)
            .map(|p| {
                ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8
            })
            .collect()
    }

    /// Bilinear sample at `(x, y)` in pixel-index space (pixel `(i, j)`'s centre is `(i, j)`);
    /// coordinates outside are clamped (edge replication). An empty image samples black.
    #[inline]
    pub fn sample_bilinear(&self, x: f32, y: f32) -> [f32; 3] {
        if self.width == 0 || self.height == 0 {
            return [0.0; 3];
        }
        let x = x.clamp(0.0, (self.width - 1) as f32);
        let y = y.clamp(0.0, (self.height - 1) as f32);
        // NaN survives clamp; `as usize` maps it to 0 and the weights below stay NaN-free.
        let x0 = (x as usize).min(self.width - 1);
        let y0 = (y as usize).min(self.height - 1);
        let x1 = (x0 + 1).min(self.width - 1);
        let y1 = (y0 + 1).min(self.height - 1);
        let fx = if x.is_nan() { 0.0 } else { x - x0 as f32 };
        let fy = if y.is_nan() { 0.0 } else { y - y0 as f32 };
        let w = self.width;
        let (i00, i10) = ((y0 * w + x0) * 3, (y0 * w + x1) * 3);
        let (i01, i11) = ((y1 * w + x0) * 3, (y1 * w + x1) * 3);
        let d = &self.data;
        let mut out = [0.0; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let top = d[i00 + c] as f32 + (d[i10 + c] as f32 - d[i00 + c] as f32) * fx;
            let bot = d[i01 + c] as f32 + (d[i11 + c] as f32 - d[i01 + c] as f32) * fx;
            *o = top + (bot - top) * fy;
        }
        out
    }

    /// Flipped left-right.
    pub fn mirrored(&self) -> RgbImage {
        let mut out = self.clone();
        let stride = self.width * 3;
        if stride == 0 {
            return out;
        }
        for (orow, row) in out
            .data
            .chunks_exact_mut(stride)
            .zip(self.data.chunks_exact(stride))
        {
            for (o, s) in orow.chunks_exact_mut(3).zip(row.chunks_exact(3).rev()) {
                o.copy_from_slice(s);
            }
        }
        out
    }

    /// Rotated clockwise (in the image, y down) by `degrees` about the image centre; same size,
    /// bilinear, the border filled by edge replication.
    pub fn rotated(&self, degrees: f32) -> RgbImage {
        let (w, h) = (self.width, self.height);
        let mut out = RgbImage::new(w, h, [0; 3]);
        if w == 0 || h == 0 {
            return out;
        }
        let (s, c) = degrees.to_radians().sin_cos();
        let (cx, cy) = ((w - 1) as f32 * 0.5, (h - 1) as f32 * 0.5);
        for (y, row) in out.data.chunks_exact_mut(w * 3).enumerate() {
            let ry = y as f32 - cy;
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let rx = x as f32 - cx;
                // Inverse of the clockwise rotation: destination -> source.
                let v = self.sample_bilinear(cx + rx * c + ry * s, cy - rx * s + ry * c);
                px.copy_from_slice(&[to_u8(v[0]), to_u8(v[1]), to_u8(v[2])]);
            }
        }
        out
    }

    /// Blurred with a separable Gaussian of `sigma` pixels (edges replicated): an out-of-focus
    /// or soft camera. `sigma <= 0` returns a copy.
    pub fn gaussian_blurred(&self, sigma: f32) -> RgbImage {
        if sigma <= 0.0 {
            return self.clone();
        }
        let radius = (3.0 * sigma).ceil() as i64;
        let kernel: Vec<f32> = (-radius..=radius)
            .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f32 = kernel.iter().sum();
        let (w, h) = (self.width as i64, self.height as i64);
        let pass = |src: &RgbImage, dx: i64, dy: i64| {
            let mut out = src.clone();
            for y in 0..h {
                for x in 0..w {
                    let mut acc = [0f32; 3];
                    for (k, weight) in kernel.iter().enumerate() {
                        let o = k as i64 - radius;
                        let p = src.pixel(
                            (x + o * dx).clamp(0, w - 1) as usize,
                            (y + o * dy).clamp(0, h - 1) as usize,
                        );
                        for c in 0..3 {
                            acc[c] += weight * p[c] as f32;
                        }
                    }
                    out.set_pixel(
                        x as usize,
                        y as usize,
                        acc.map(|v| (v / total).round().clamp(0.0, 255.0) as u8),
                    );
                }
            }
            out
        };
        pass(&pass(self, 1, 0), 0, 1)
    }

    /// Resized to `width` x `height`, bilinear (pixel centres aligned).
    pub fn resized(&self, width: usize, height: usize) -> RgbImage {
        let mut out = RgbImage::new(width, height, [0; 3]);
        if width == 0 || height == 0 || self.width == 0 || self.height == 0 {
            return out;
        }
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        for (y, row) in out.data.chunks_exact_mut(width * 3).enumerate() {
            let v = (y as f32 + 0.5) * sy - 0.5;
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let c = self.sample_bilinear((x as f32 + 0.5) * sx - 0.5, v);
                px.copy_from_slice(&[to_u8(c[0]), to_u8(c[1]), to_u8(c[2])]);
            }
        }
        out
    }

    /// Copies `src` with its top-left corner at `(x, y)`, clipped to this image.
    pub fn blit(&mut self, src: &RgbImage, x: i64, y: i64) {
        let (w, h) = (self.width as i64, self.height as i64);
        let x0 = x.max(0);
        let x1 = (x + src.width as i64).min(w);
        if x0 >= x1 {
            return;
        }
        let n = (x1 - x0) as usize * 3;
        let sx = (x0 - x) as usize;
        for sy in 0..src.height {
            let dy = y + sy as i64;
            if dy < 0 || dy >= h {
                continue;
            }
            let d = (dy as usize * self.width + x0 as usize) * 3;
            let s = (sy * src.width + sx) * 3;
            self.data[d..d + n].copy_from_slice(&src.data[s..s + n]);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Pose and edits

/// A head pose in degrees, relative to the portrait. See the module docs for the signs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeadPose {
    /// > 0: turns towards image-right.
    pub yaw: f32,
    /// > 0: chin up.
    pub pitch: f32,
    /// > 0: clockwise in the image.
    pub roll: f32,
}

type Mat3 = [[f32; 3]; 3];

fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
        }
    }
    m
}

#[inline]
fn mat_vec(m: &Mat3, v: [f32; 3]) -> [f32; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

impl HeadPose {
    pub fn new(yaw: f32, pitch: f32, roll: f32) -> Self {
        HeadPose { yaw, pitch, roll }
    }

    /// The rotation `Rz(roll) * Rx(pitch) * Ry(yaw)` (row-major, acting on column vectors in
    /// image axes: x right, y down, z away from the camera).
    pub fn matrix(&self) -> [[f32; 3]; 3] {
        let (sy, cy) = self.yaw.to_radians().sin_cos();
        let (sp, cp) = self.pitch.to_radians().sin_cos();
        let (sr, cr) = self.roll.to_radians().sin_cos();
        let ry = [[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]];
        let rx = [[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]];
        let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
        mat_mul(&rz, &mat_mul(&rx, &ry))
    }

    /// Componentwise linear interpolation (`t = 0` gives `self`).
    pub fn lerp(&self, other: &HeadPose, t: f32) -> HeadPose {
        HeadPose {
            yaw: lerp(self.yaw, other.yaw, t),
            pitch: lerp(self.pitch, other.pitch, t),
            roll: lerp(self.roll, other.roll, t),
        }
    }
}

#[inline]
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// One frame's edit of the portrait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceEdit {
    pub pose: HeadPose,
    /// 0 = as in the portrait .. 1 = closed (upper lids on the lower lids).
    pub eyes_closed: f32,
    /// 0 = as in the portrait .. 1 = jaw dropped by a quarter of the mouth width.
    pub mouth_open: f32,
    /// 1 = as in the portrait; scales about the pivot. Must be > 0.
    pub scale: f32,
    /// Shift in pixels after the rotation and scale.
    pub offset: (f32, f32),
}

impl Default for FaceEdit {
    fn default() -> Self {
        FaceEdit {
            pose: HeadPose::default(),
            eyes_closed: 0.0,
            mouth_open: 0.0,
            scale: 1.0,
            offset: (0.0, 0.0),
        }
    }
}

impl FaceEdit {
    /// Only a pose, everything else neutral.
    pub fn posed(yaw: f32, pitch: f32, roll: f32) -> Self {
        FaceEdit {
            pose: HeadPose::new(yaw, pitch, roll),
            ..FaceEdit::default()
        }
    }

    /// Componentwise linear interpolation (`t = 0` gives `self`).
    pub fn lerp(&self, other: &FaceEdit, t: f32) -> FaceEdit {
        FaceEdit {
            pose: self.pose.lerp(&other.pose, t),
            eyes_closed: lerp(self.eyes_closed, other.eyes_closed, t),
            mouth_open: lerp(self.mouth_open, other.mouth_open, t),
            scale: lerp(self.scale, other.scale, t),
            offset: (
                lerp(self.offset.0, other.offset.0, t),
                lerp(self.offset.1, other.offset.1, t),
            ),
        }
    }
}

/// A scripted clip: `keys` are `(time in seconds, edit)` keyframes on a clip clock starting at 0,
/// linearly interpolated. Returns `round(t_last * fps)` frames (at least one when `keys` is not
/// empty), frame `i` at time `i / fps`; before the first key its edit is held. The last frame is
/// one frame period before `t_last` (append a hold key to show the last edit for a while). Keys
/// need not be sorted; an empty list or `fps == 0` gives no frames.
pub fn script(keys: &[(f32, FaceEdit)], fps: u32) -> Vec<FaceEdit> {
    if keys.is_empty() || fps == 0 {
        return Vec::new();
    }
    let mut keys = keys.to_vec();
    keys.sort_by(|a, b| a.0.total_cmp(&b.0));
    let end = keys[keys.len() - 1].0;
    let n = if end.is_finite() && end > 0.0 {
        ((end * fps as f32).round() as usize).max(1)
    } else {
        1
    };
    (0..n)
        .map(|i| edit_at(&keys, i as f32 / fps as f32))
        .collect()
}

fn edit_at(keys: &[(f32, FaceEdit)], t: f32) -> FaceEdit {
    if t <= keys[0].0 {
        return keys[0].1;
    }
    for w in keys.windows(2) {
        let ((t0, a), (t1, b)) = (w[0], w[1]);
        if t <= t1 {
            let span = t1 - t0;
            return if span > 0.0 {
                a.lerp(&b, (t - t0) / span)
            } else {
                b
            };
        }
    }
    keys[keys.len() - 1].1
}

// ------------------------------------------------------------------------------------------------
// Renderer

/// What one [`HeadRenderer::render_with_stats`] call drew.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Face triangles facing the camera (drawn, even where off-screen).
    pub triangles_drawn: usize,
    /// Face triangles skipped as back-facing or degenerate.
    pub triangles_culled: usize,
}

/// Renders edited frames of one portrait. Construction does the heavy work (triangulation,
/// background inpainting); [`HeadRenderer::render`] is cheap (a few ms at 640x480).
#[derive(Debug, Clone)]
pub struct HeadRenderer {
    portrait: RgbImage,
    background: RgbImage,
    fill_mask: Vec<bool>,
    mesh: Vec<[f32; 3]>,
    triangles: Vec<[usize; 3]>,
    pivot: [f32; 3],
    face_width: f32,
    mouth_width: f32,
    jaw_weight: Vec<f32>,
}

impl HeadRenderer {
    /// `landmarks`: at least 468 points `[x, y, z]` in portrait pixels (MediaPipe face mesh
    /// mapped back to the image, z in the same scale, smaller = closer); points past 468 (iris)
    /// are ignored. The portrait is taken as the frontal pose.
    pub fn new(portrait: RgbImage, landmarks: &[[f32; 3]]) -> Result<HeadRenderer, String> {
        let (w, h) = (portrait.width, portrait.height);
        if w == 0 || h == 0 || portrait.data.len() != w * h * 3 {
            return Err(format!(
                "portrait {w}x{h} with {} bytes is not a usable RGB image",
                portrait.data.len()
            ));
        }
        if landmarks.len() < MESH_POINTS {
            return Err(format!(
                "need {MESH_POINTS} face-mesh landmarks, got {}",
                landmarks.len()
            ));
        }
        let mesh = landmarks[..MESH_POINTS].to_vec();
        if let Some(i) = mesh.iter().position(|p| p.iter().any(|v| !v.is_finite())) {
            return Err(format!("landmark {i} is not finite: {:?}", mesh[i]));
        }
        let (min_x, max_x) = mesh
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), p| {
                (a.min(p[0]), b.max(p[0]))
            });
        let face_width = max_x - min_x;
        if face_width < 8.0 {
            return Err(format!(
                "face is {face_width:.1} px wide; too small to render"
            ));
        }
        let n = mesh.len() as f32;
        let centroid = mesh.iter().fold([0.0f32; 3], |a, p| {
            [a[0] + p[0] / n, a[1] + p[1] / n, a[2] + p[2] / n]
        });
        let pivot = [
            centroid[0],
            centroid[1],
            centroid[2] + PIVOT_DEPTH * face_width,
        ];

        let xy: Vec<[f64; 2]> = mesh.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
        let triangles = delaunay(&xy);
        if triangles.len() < MESH_POINTS / 2 {
            return Err(format!(
                "landmarks triangulate into only {} triangles; are they a face mesh?",
                triangles.len()
            ));
        }

        let (mouth_width, jaw_weight) = jaw_weights(&mesh);

        let hull = convex_hull(&mesh.iter().map(|p| [p[0], p[1]]).collect::<Vec<_>>());
        let hull = dilate(&hull, (0.03 * face_width).max(2.0));
        let fill_mask = polygon_mask(&hull, w, h);
        let background = push_pull_fill(&portrait, &fill_mask);

        Ok(HeadRenderer {
            portrait,
            background,
            fill_mask,
            mesh,
            triangles,
            pivot,
            face_width,
            mouth_width,
            jaw_weight,
        })
    }

    /// The portrait with the face region inpainted; every frame is drawn over it.
    pub fn background(&self) -> &RgbImage {
        &self.background
    }

    /// Row-major, one per pixel: true where the background was inpainted (the landmarks' convex
    /// hull, dilated by 3% of the face width).
    pub fn fill_mask(&self) -> &[bool] {
        &self.fill_mask
    }

    /// The frontal landmarks (the 468 given).
    pub fn landmarks(&self) -> &[[f32; 3]] {
        &self.mesh
    }

    /// Triangles (landmark indices), counter-clockwise in (x, y) numerically, i.e. clockwise on
    /// screen with y down.
    pub fn triangles(&self) -> &[[usize; 3]] {
        &self.triangles
    }

    /// The rotation pivot: the landmark centroid, 0.6 face widths further from the camera.
    pub fn pivot(&self) -> [f32; 3] {
        self.pivot
    }

    /// The face width (x extent of the landmarks) in pixels.
    pub fn face_width(&self) -> f32 {
        self.face_width
    }

    /// The landmarks after `edit` (frame pixels, z kept), without rendering.
    pub fn landmarks_for(&self, edit: &FaceEdit) -> Vec<[f32; 3]> {
        self.edit_points(edit).1
    }

    /// Renders one frame at the portrait's size; returns it with the landmarks after the edit.
    pub fn render(&self, edit: &FaceEdit) -> (RgbImage, Vec<[f32; 3]>) {
        let (frame, points, _) = self.render_with_stats(edit);
        (frame, points)
    }

    /// [`HeadRenderer::render`], also saying how many triangles were drawn and culled.
    pub fn render_with_stats(&self, edit: &FaceEdit) -> (RgbImage, Vec<[f32; 3]>, RenderStats) {
        let (edited, posed) = self.edit_points(edit);
        let (w, h) = (self.background.width, self.background.height);
        let mut canvas = Canvas {
            frame: self.background.clone(),
            zbuf: vec![f32::INFINITY; w * h],
        };
        let mut stats = RenderStats::default();
        for t in &self.triangles {
            let dst = [posed[t[0]], posed[t[1]], posed[t[2]]];
            let src = [
                [self.mesh[t[0]][0], self.mesh[t[0]][1]],
                [self.mesh[t[1]][0], self.mesh[t[1]][1]],
                [self.mesh[t[2]][0], self.mesh[t[2]][1]],
            ];
            if canvas.triangle(dst, Paint::Texture(&self.portrait, src)) {
                stats.triangles_drawn += 1;
            } else {
                stats.triangles_culled += 1;
            }
        }
        if edit.mouth_open > 0.0 {
            self.paint_mouth(&mut canvas, &edited, &posed, edit.scale);
        }
        (canvas.frame, posed, stats)
    }

    /// (edited frontal points, posed points).
    fn edit_points(&self, edit: &FaceEdit) -> (Vec<[f32; 3]>, Vec<[f32; 3]>) {
        let mut p = self.mesh.clone();
        let eyes = sanitize(edit.eyes_closed).clamp(0.0, 1.0);
        if eyes > 0.0 {
            let pairs = RIGHT_EYE_UPPER
                .iter()
                .zip(RIGHT_EYE_LOWER.iter())
                .chain(LEFT_EYE_UPPER.iter().zip(LEFT_EYE_LOWER.iter()));
            for (&u, &l) in pairs {
                let (a, b) = (self.mesh[u], self.mesh[l]);
                p[u] = [
                    lerp(a[0], b[0], eyes),
                    lerp(a[1], b[1], eyes),
                    lerp(a[2], b[2], eyes),
                ];
            }
        }
        let mouth = sanitize(edit.mouth_open).clamp(0.0, 1.0);
        if mouth > 0.0 {
            let drop = mouth * JAW_DROP * self.mouth_width;
            for (q, &wgt) in p.iter_mut().zip(&self.jaw_weight) {
                q[1] += drop * wgt;
            }
        }
        let r = edit.pose.matrix();
        let s = edit.scale;
        let c = self.pivot;
        let posed = p
            .iter()
            .map(|q| {
                let v = mat_vec(&r, [q[0] - c[0], q[1] - c[1], q[2] - c[2]]);
                [
                    c[0] + s * v[0] + edit.offset.0,
                    c[1] + s * v[1] + edit.offset.1,
                    c[2] + s * v[2],
                ]
            })
            .collect();
        (p, posed)
    }

    /// Fills the lip gap (a fan over the inner lip ring) with [`MOUTH_INTERIOR`], over the face
    /// triangles (which stretch across the gap) but behind anything clearly in front of the lips.
    fn paint_mouth(
        &self,
        canvas: &mut Canvas,
        edited: &[[f32; 3]],
        posed: &[[f32; 3]],
        scale: f32,
    ) {
        let n = MOUTH_INNER_RING.len() as f32;
        let mean = |pts: &[[f32; 3]]| {
            MOUTH_INNER_RING.iter().fold([0.0f32; 3], |a, &i| {
                [
                    a[0] + pts[i][0] / n,
                    a[1] + pts[i][1] / n,
                    a[2] + pts[i][2] / n,
                ]
            })
        };
        let (ce, cp) = (mean(edited), mean(posed));
        let bias = 0.03 * self.face_width * scale.abs();
        for k in 0..MOUTH_INNER_RING.len() {
            let a = MOUTH_INNER_RING[k];
            let b = MOUTH_INNER_RING[(k + 1) % MOUTH_INNER_RING.len()];
            let frontal = orient(ce, edited[a], edited[b]);
            if frontal.abs() < MIN_AREA2 {
                continue;
            }
            let (a, b) = if frontal > 0.0 { (a, b) } else { (b, a) };
            canvas.triangle([cp, posed[a], posed[b]], Paint::Flat(MOUTH_INTERIOR, bias));
        }
    }
}

#[inline]
fn sanitize(v: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Twice the signed area of (a, b, c) in (x, y); > 0 is counter-clockwise numerically.
#[inline]
fn orient(a: [f32; 3], b: [f32; 3], c: [f32; 3]) -> f32 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Mouth width and, per landmark, how much of the jaw drop it takes. Points below the mouth
/// line (the midpoint of 13 and 14) move, fully in the middle and fading out sideways in a
/// lens that widens with the distance below the line, so the lips part in the middle and meet at
/// the corners, and the chin and lower jaw come down with them. The upper lip never moves; the
/// lower lip always belongs to the jaw.
fn jaw_weights(mesh: &[[f32; 3]]) -> (f32, Vec<f32>) {
    let (l, r) = (
        mesh[MOUTH_CORNER_IMAGE_LEFT],
        mesh[MOUTH_CORNER_IMAGE_RIGHT],
    );
    let mouth_width = ((r[0] - l[0]).powi(2) + (r[1] - l[1]).powi(2))
        .sqrt()
        .max(1.0);
    let half = 0.5 * mouth_width;
    let mx = 0.5 * (l[0] + r[0]);
    let my = 0.5 * (mesh[UPPER_LIP_INNER_CENTRE][1] + mesh[LOWER_LIP_INNER_CENTRE][1]);
    let weights = mesh
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if UPPER_LIP.contains(&i) || (p[1] <= my && !LOWER_LIP.contains(&i)) {
                return 0.0;
            }
            let below = (p[1] - my).max(0.0);
            let extent = half + 1.2 * below;
            1.0 - smoothstep(0.35 * extent, extent, (p[0] - mx).abs())
        })
        .collect();
    (mouth_width, weights)
}

enum Paint<'a> {
    /// Texture from this image; the vertices' source positions (image pixels).
    Texture(&'a RgbImage, [[f32; 2]; 3]),
    /// A flat colour, depth-tested with this bias (pixels) in its favour, not writing depth.
    Flat([u8; 3], f32),
}

struct Canvas {
    frame: RgbImage,
    zbuf: Vec<f32>,
}

impl Canvas {
    /// Rasterises one triangle (pixel centres, z-buffered, smaller z wins). Returns false, drawing
    /// nothing, when it is back-facing (clockwise numerically) or degenerate.
    fn triangle(&mut self, d: [[f32; 3]; 3], paint: Paint) -> bool {
        let area2 = orient(d[0], d[1], d[2]);
        // Also rejects NaN and infinities.
        if !area2.is_finite() || area2 <= MIN_AREA2 {
            return false;
        }
        let (w, h) = (self.frame.width, self.frame.height);
        let min_x = d[0][0].min(d[1][0]).min(d[2][0]);
        let max_x = d[0][0].max(d[1][0]).max(d[2][0]);
        let min_y = d[0][1].min(d[1][1]).min(d[2][1]);
        let max_y = d[0][1].max(d[1][1]).max(d[2][1]);
        let x0 = (min_x - 0.5).ceil().max(0.0);
        let x1 = (max_x - 0.5).floor().min(w as f32 - 1.0);
        let y0 = (min_y - 0.5).ceil().max(0.0);
        let y1 = (max_y - 0.5).floor().min(h as f32 - 1.0);
        if !(x0 <= x1 && y0 <= y1) {
            return true;
        }
        let (x0, x1, y0, y1) = (x0 as usize, x1 as usize, y0 as usize, y1 as usize);
        let inv = 1.0 / area2;
        // Barycentric b0, b1 are affine in the pixel position: b = base + dx * x + dy * y.
        let e0 = (
            -(d[2][1] - d[1][1]) * inv,
            (d[2][0] - d[1][0]) * inv,
            ((d[2][1] - d[1][1]) * d[1][0] - (d[2][0] - d[1][0]) * d[1][1]) * inv,
        );
        let e1 = (
            -(d[0][1] - d[2][1]) * inv,
            (d[0][0] - d[2][0]) * inv,
            ((d[0][1] - d[2][1]) * d[2][0] - (d[0][0] - d[2][0]) * d[2][1]) * inv,
        );
        for py in y0..=y1 {
            let cy = py as f32 + 0.5;
            let row = py * w;
            for px in x0..=x1 {
                let cx = px as f32 + 0.5;
                let b0 = e0.0 * cx + e0.1 * cy + e0.2;
                let b1 = e1.0 * cx + e1.1 * cy + e1.2;
                let b2 = 1.0 - b0 - b1;
                if b0 < -EDGE_EPS || b1 < -EDGE_EPS || b2 < -EDGE_EPS {
                    continue;
                }
                let z = b0 * d[0][2] + b1 * d[1][2] + b2 * d[2][2];
                let idx = row + px;
                let rgb = match paint {
                    Paint::Texture(img, s) => {
                        if z >= self.zbuf[idx] {
                            continue;
                        }
                        self.zbuf[idx] = z;
                        let u = b0 * s[0][0] + b1 * s[1][0] + b2 * s[2][0] - 0.5;
                        let v = b0 * s[0][1] + b1 * s[1][1] + b2 * s[2][1] - 0.5;
                        let c = img.sample_bilinear(u, v);
                        [to_u8(c[0]), to_u8(c[1]), to_u8(c[2])]
                    }
                    Paint::Flat(rgb, bias) => {
                        if z - bias >= self.zbuf[idx] {
                            continue;
                        }
                        rgb
                    }
                };
                self.frame.data[idx * 3..idx * 3 + 3].copy_from_slice(&rgb);
            }
        }
        true
    }
}

// ------------------------------------------------------------------------------------------------
// Geometry

/// Delaunay triangulation (Bowyer-Watson) of `pts`; triangles counter-clockwise numerically.
/// Points coinciding with an earlier one are left out of the triangulation.
fn delaunay(pts: &[[f64; 2]]) -> Vec<[usize; 3]> {
    let n = pts.len();
    if n < 3 {
        return Vec::new();
    }
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in pts {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1.0);
    let (mx, my) = ((lo[0] + hi[0]) * 0.5, (lo[1] + hi[1]) * 0.5);
    // Work relative to the centre for precision.
    let mut v: Vec<[f64; 2]> = pts.iter().map(|p| [p[0] - mx, p[1] - my]).collect();
    v.push([-20.0 * span, -span]);
    v.push([20.0 * span, -span]);
    v.push([0.0, 20.0 * span]);
    let orient64 = |a: [f64; 2], b: [f64; 2], c: [f64; 2]| {
        (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    };
    let in_circle = |a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]| {
        let (adx, ady) = (a[0] - d[0], a[1] - d[1]);
        let (bdx, bdy) = (b[0] - d[0], b[1] - d[1]);
        let (cdx, cdy) = (c[0] - d[0], c[1] - d[1]);
        let det = (adx * adx + ady * ady) * (bdx * cdy - cdx * bdy)
            + (bdx * bdx + bdy * bdy) * (cdx * ady - adx * cdy)
            + (cdx * cdx + cdy * cdy) * (adx * bdy - bdx * ady);
        det > 0.0
    };
    let mut tris: Vec<[usize; 3]> = vec![if orient64(v[n], v[n + 1], v[n + 2]) > 0.0 {
        [n, n + 1, n + 2]
    } else {
        [n, n + 2, n + 1]
    }];
    let mut inserted: Vec<usize> = Vec::with_capacity(n);
    let mut bad: Vec<usize> = Vec::new();
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for i in 0..n {
        let p = v[i];
        let tol = 1e-9 * span * span;
        if inserted.iter().any(|&j| {
            let q = v[j];
            (q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2) < tol
        }) {
            continue;
        }
        bad.clear();
        bad.extend(
            tris.iter()
                .enumerate()
                .filter(|(_, t)| in_circle(v[t[0]], v[t[1]], v[t[2]], p))
                .map(|(k, _)| k),
        );
        if bad.is_empty() {
            continue;
        }
        edges.clear();
        for &k in &bad {
            let t = tris[k];
            edges.extend([(t[0], t[1]), (t[1], t[2]), (t[2], t[0])]);
        }
        let boundary: Vec<(usize, usize)> = edges
            .iter()
            .filter(|&&(a, b)| !edges.contains(&(b, a)))
            .copied()
            .collect();
        // `bad` is ascending; remove from the back so indices stay valid.
        for &k in bad.iter().rev() {
            tris.swap_remove(k);
        }
        for (a, b) in boundary {
            tris.push([a, b, i]);
        }
        inserted.push(i);
    }
    tris.retain(|t| t.iter().all(|&k| k < n) && orient64(v[t[0]], v[t[1]], v[t[2]]) > 1e-9);
    tris
}

/// Convex hull (Andrew's monotone chain), counter-clockwise numerically.
fn convex_hull(pts: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let mut p = pts.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: [f32; 2], a: [f32; 2], b: [f32; 2]| {
        (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    };
    let mut hull: Vec<[f32; 2]> = Vec::with_capacity(p.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &[f32; 2]>> = if pass == 0 {
            Box::new(p.iter())
        } else {
            Box::new(p.iter().rev())
        };
        for &q in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0.0
            {
                hull.pop();
            }
            hull.push(q);
        }
        hull.pop();
    }
    hull
}

/// Pushes every vertex of a convex polygon `margin` pixels away from its centroid.
fn dilate(poly: &[[f32; 2]], margin: f32) -> Vec<[f32; 2]> {
    let n = poly.len().max(1) as f32;
    let c = poly
        .iter()
        .fold([0.0f32; 2], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
    poly.iter()
        .map(|p| {
            let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
            let len = (dx * dx + dy * dy).sqrt().max(1e-6);
            [p[0] + margin * dx / len, p[1] + margin * dy / len]
        })
        .collect()
}

/// Pixels whose centre lies inside a convex, numerically counter-clockwise polygon.
fn polygon_mask(poly: &[[f32; 2]], w: usize, h: usize) -> Vec<bool> {
    let mut mask = vec![false; w * h];
    if poly.len() < 3 {
        return mask;
    }
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    for p in poly {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let x0 = (lo[0] - 0.5).ceil().max(0.0) as usize;
    let y0 = (lo[1] - 0.5).ceil().max(0.0) as usize;
    let x1 = ((hi[0] - 0.5).floor().min(w as f32 - 1.0)).max(-1.0);
    let y1 = ((hi[1] - 0.5).floor().min(h as f32 - 1.0)).max(-1.0);
    if x1 < 0.0 || y1 < 0.0 {
        return mask;
    }
    let (x1, y1) = (x1 as usize, y1 as usize);
    for y in y0..=y1 {
        let cy = y as f32 + 0.5;
        for x in x0..=x1 {
            let cx = x as f32 + 0.5;
            let inside = (0..poly.len()).all(|i| {
                let a = poly[i];
                let b = poly[(i + 1) % poly.len()];
                (b[0] - a[0]) * (cy - a[1]) - (b[1] - a[1]) * (cx - a[0]) >= 0.0
            });
            mask[y * w + x] = inside;
        }
    }
    mask
}

/// Fills the masked pixels smoothly from the unmasked ones (push-pull: a weighted image pyramid
/// down to 1x1, then back up, each level's holes taking the coarser level's bilinear upsample).
fn push_pull_fill(img: &RgbImage, mask: &[bool]) -> RgbImage {
    struct Level {
        w: usize,
        h: usize,
        col: Vec<[f32; 3]>,
        wt: Vec<f32>,
    }
    let (w, h) = (img.width, img.height);
    let mut levels = vec![Level {
        w,
        h,
        col: img
            .data
            .chunks_exact(3)
            .zip(mask)
            .map(|(p, &m)| {
                if m {
                    [0.0; 3]
                } else {
                    [p[0] as f32, p[1] as f32, p[2] as f32]
                }
            })
            .collect(),
        wt: mask.iter().map(|&m| if m { 0.0 } else { 1.0 }).collect(),
    }];
    // Push: average colours weighted by coverage; coverage = mean coverage.
    while {
        let l = &levels[levels.len() - 1];
        l.w > 1 || l.h > 1
    } {
        let f = &levels[levels.len() - 1];
        let (cw, ch) = (f.w.div_ceil(2), f.h.div_ceil(2));
        let mut col = vec![[0.0f32; 3]; cw * ch];
        let mut wt = vec![0.0f32; cw * ch];
        for y in 0..ch {
            for x in 0..cw {
                let (mut sc, mut sw, mut cnt) = ([0.0f32; 3], 0.0f32, 0.0f32);
                for fy in 2 * y..(2 * y + 2).min(f.h) {
                    for fx in 2 * x..(2 * x + 2).min(f.w) {
                        let i = fy * f.w + fx;
                        let q = f.wt[i];
                        for (acc, c) in sc.iter_mut().zip(f.col[i]) {
                            *acc += c * q;
                        }
                        sw += q;
                        cnt += 1.0;
                    }
                }
                let i = y * cw + x;
                if sw > 0.0 {
                    col[i] = [sc[0] / sw, sc[1] / sw, sc[2] / sw];
                }
                wt[i] = sw / cnt;
            }
        }
        levels.push(Level {
            w: cw,
            h: ch,
            col,
            wt,
        });
    }
    // Pull: blend every level with the upsampled coarser one by its own coverage.
    for k in (0..levels.len() - 1).rev() {
        let (fine, coarse) = levels.split_at_mut(k + 1);
        let (f, c) = (&mut fine[k], &coarse[0]);
        for y in 0..f.h {
            let cy = ((y as f32 + 0.5) * 0.5 - 0.5).clamp(0.0, (c.h - 1) as f32);
            let (y0, ty) = (cy as usize, cy.fract());
            let y1 = (y0 + 1).min(c.h - 1);
            for x in 0..f.w {
                let i = y * f.w + x;
                let q = f.wt[i];
                if q >= 1.0 {
                    continue;
                }
                let cx = ((x as f32 + 0.5) * 0.5 - 0.5).clamp(0.0, (c.w - 1) as f32);
                let (x0, tx) = (cx as usize, cx.fract());
                let x1 = (x0 + 1).min(c.w - 1);
                for ch in 0..3 {
                    let a = lerp(c.col[y0 * c.w + x0][ch], c.col[y0 * c.w + x1][ch], tx);
                    let b = lerp(c.col[y1 * c.w + x0][ch], c.col[y1 * c.w + x1][ch], tx);
                    let up = lerp(a, b, ty);
                    f.col[i][ch] = q * f.col[i][ch] + (1.0 - q) * up;
                }
                f.wt[i] = 1.0;
            }
        }
    }
    let mut out = img.clone();
    for (i, &m) in mask.iter().enumerate() {
        if m {
            let c = levels[0].col[i];
            out.data[i * 3..i * 3 + 3].copy_from_slice(&[to_u8(c[0]), to_u8(c[1]), to_u8(c[2])]);
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Synthetic portrait

/// MediaPipe's face oval, from the forehead top clockwise on screen (towards image-right).
const FACE_OVAL: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];

/// A synthetic "portrait" and 468 landmarks for testing the renderer and clip plumbing: a
/// textured skin ellipse with dark eyes, a nose mark and lips over a patterned background, and
/// landmarks on an ellipsoid (with a nose bump) with MediaPipe's indices for the nose tip, eye
/// lids and corners, lips and face oval in plausible places; the rest fill the face evenly. It
/// is not a face a real detector will find.
pub fn synthetic_portrait(width: usize, height: usize) -> (RgbImage, Vec<[f32; 3]>) {
    use std::f32::consts::PI;
    let (cx, cy) = (width as f32 * 0.5, height as f32 * 0.5);
    let a = 0.23 * height as f32;
    let b = 0.29 * height as f32;
    let depth_c = 0.8 * a;
    let nose = [cx, cy + 0.12 * b];
    let (nose_amp, nose_sigma) = (0.25 * a, 0.15 * a);
    let depth = |x: f32, y: f32| {
        let (u, v) = ((x - cx) / a, (y - cy) / b);
        let base = -depth_c * (1.0 - u * u - v * v).max(0.0).sqrt();
        let r2 = (x - nose[0]).powi(2) + (y - nose[1]).powi(2);
        base - nose_amp * (-r2 / (2.0 * nose_sigma * nose_sigma)).exp()
    };
    let (eye_hw, eye_hh, eye_y) = (0.22 * a, 0.075 * b, cy - 0.2 * b);
    let eyes = [(cx - 0.4 * a, -1.0f32), (cx + 0.4 * a, 1.0f32)];
    let mouth_y = cy + 0.45 * b;
    let (inner_hw, outer_hw, gap, lip) = (0.3 * a, 0.38 * a, 1.0f32, 0.07 * b);

    let mut pos: Vec<Option<[f32; 2]>> = vec![None; MESH_POINTS];
    let mut set = |i: usize, x: f32, y: f32| {
        assert!(pos[i].is_none(), "synthetic landmark {i} placed twice");
        pos[i] = Some([x, y]);
    };
    set(NOSE_TIP, nose[0], nose[1]);
    let eye_sets = [
        (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, 33, 133),
        (LEFT_EYE_UPPER, LEFT_EYE_LOWER, 263, 362),
    ];
    for (&(ex, side), (upper, lower, outer, inner)) in eyes.iter().zip(eye_sets) {
        set(outer, ex + side * eye_hw, eye_y);
        set(inner, ex - side * eye_hw, eye_y);
        for k in 0..7 {
            let th = PI * (k + 1) as f32 / 8.0;
            let x = ex + side * eye_hw * th.cos();
            set(upper[k], x, eye_y - eye_hh * th.sin());
            set(lower[k], x, eye_y + eye_hh * th.sin());
        }
    }
    set(78, cx - inner_hw, mouth_y);
    set(308, cx + inner_hw, mouth_y);
    set(MOUTH_CORNER_IMAGE_LEFT, cx - outer_hw, mouth_y);
    set(MOUTH_CORNER_IMAGE_RIGHT, cx + outer_hw, mouth_y);
    for k in 0..9 {
        let t = (k + 1) as f32 / 10.0;
        let xi = cx - inner_hw + 2.0 * inner_hw * t;
        set(UPPER_LIP[9 + k], xi, mouth_y - gap);
        set(LOWER_LIP[k], xi, mouth_y + gap);
        let xo = cx - outer_hw + 2.0 * outer_hw * t;
        let bulge = lip * (PI * t).sin();
        set(UPPER_LIP[k], xo, mouth_y - gap - bulge);
        set(LOWER_LIP[9 + k], xo, mouth_y + gap + bulge);
    }
    for (k, &i) in FACE_OVAL.iter().enumerate() {
        let t = 2.0 * PI * k as f32 / FACE_OVAL.len() as f32;
        set(i, cx + a * t.sin(), cy - b * t.cos());
    }
    let specials: Vec<[f32; 2]> = pos.iter().flatten().copied().collect();
    let free: Vec<usize> = (0..MESH_POINTS).filter(|&i| pos[i].is_none()).collect();
    let usable = |x: f32, y: f32| {
        let (u, v) = ((x - cx) / a, (y - cy) / b);
        let in_face = u * u + v * v < 0.92 * 0.92;
        let in_eye = eyes.iter().any(|&(ex, _)| {
            ((x - ex) / (1.3 * eye_hw)).powi(2) + ((y - eye_y) / (1.6 * eye_hh)).powi(2) < 1.0
        });
        let in_mouth = (x - cx).abs() < 1.1 * outer_hw && (y - mouth_y).abs() < lip + gap + 3.0;
        let crowded = specials
            .iter()
            .any(|s| (s[0] - x).powi(2) + (s[1] - y).powi(2) < 0.0036 * a * a);
        in_face && !in_eye && !in_mouth && !crowded
    };
    let mut m = free.len();
    let fill = loop {
        let cand: Vec<[f32; 2]> = (0..m)
            .filter_map(|i| {
                let r = 0.9 * ((i as f32 + 0.5) / m as f32).sqrt();
                let th = i as f32 * 2.399_963;
                let (x, y) = (cx + a * r * th.cos(), cy + b * r * th.sin());
                usable(x, y).then_some([x, y])
            })
            .collect();
        if cand.len() >= free.len() {
            break cand;
        }
        m += 4;
    };
    for (&i, p) in free.iter().zip(fill) {
        pos[i] = Some(p);
    }
    let landmarks: Vec<[f32; 3]> = pos
        .iter()
        .map(|p| {
            let [x, y] = p.expect("every landmark placed");
            [x, y, depth(x, y)]
        })
        .collect();

    let mut img = RgbImage::new(width, height, [0; 3]);
    for y in 0..height {
        for x in 0..width {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let (u, v) = ((px - cx) / a, (py - cy) / b);
            let stripe = if ((px / 16.0).floor() as i64 + (py / 16.0).floor() as i64) % 2 == 0 {
                20.0
            } else {
                0.0
            };
            let mut c = [
                40.0 + 120.0 * px / width as f32 + stripe,
                90.0 + 60.0 * py / height as f32,
                150.0 + 30.0 * (px / 9.0).sin() + stripe,
            ];
            if u * u + v * v <= 1.0 {
                let tex = 12.0 * (px * 0.35).sin() * (py * 0.27).sin();
                c = [190.0 + 30.0 * u + tex, 140.0 + 20.0 * v + tex, 110.0 + tex];
                for &(ex, _) in &eyes {
                    let e = ((px - ex) / (0.9 * eye_hw)).powi(2)
                        + ((py - eye_y) / (0.9 * eye_hh)).powi(2);
                    if e <= 1.0 {
                        c = [25.0, 25.0, 35.0];
                    }
                }
                if (px - nose[0]).powi(2) + (py - nose[1]).powi(2) <= (0.05 * a).powi(2) {
                    c = [120.0, 70.0, 50.0];
                }
                let t = (px - (cx - outer_hw)) / (2.0 * outer_hw);
                if (0.0..=1.0).contains(&t) {
                    let bulge = gap + lip * (PI * t).sin();
                    if (py - mouth_y).abs() <= bulge {
                        c = [170.0, 60.0, 60.0];
                    }
                    if (py - mouth_y).abs() <= gap && (px - cx).abs() <= inner_hw {
                        c = [90.0, 25.0, 25.0];
                    }
                }
            }
            img.set_pixel(x, y, [to_u8(c[0]), to_u8(c[1]), to_u8(c[2])]);
        }
    }
    (img, landmarks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renderer(w: usize, h: usize) -> HeadRenderer {
        let (img, lm) = synthetic_portrait(w, h);
        HeadRenderer::new(img, &lm).expect("renderer")
    }

    fn mad(a: &RgbImage, b: &RgbImage, sel: impl Fn(usize, usize) -> bool) -> (f64, usize) {
        let (mut sum, mut n) = (0.0f64, 0usize);
        for y in 0..a.height {
            for x in 0..a.width {
                if sel(x, y) {
                    let (p, q) = (a.pixel(x, y), b.pixel(x, y));
                    for k in 0..3 {
                        sum += (p[k] as f64 - q[k] as f64).abs();
                    }
                    n += 1;
                }
            }
        }
        (sum / (3 * n.max(1)) as f64, n)
    }

    fn mean_luma(img: &RgbImage, x0: f32, x1: f32, y0: f32, y1: f32) -> f64 {
        let luma = img.luma();
        let (mut s, mut n) = (0.0f64, 0usize);
        for y in y0.floor() as usize..=y1.ceil() as usize {
            for x in x0.floor() as usize..=x1.ceil() as usize {
                s += luma[y * img.width + x] as f64;
                n += 1;
            }
        }
        s / n as f64
    }

    #[test]
    fn identity_reproduces_portrait_and_background_is_filled_only_in_hull() {
        let r = renderer(480, 480);
        let (frame, lm) = r.render(&FaceEdit::default());
        assert_eq!((frame.width, frame.height), (480, 480));
        for (p, q) in lm.iter().zip(r.landmarks()) {
            for k in 0..3 {
                assert!((p[k] - q[k]).abs() < 1e-3, "{p:?} vs {q:?}");
            }
        }
        let hull = convex_hull(
            &r.landmarks()
                .iter()
                .map(|p| [p[0], p[1]])
                .collect::<Vec<_>>(),
        );
        let inside = polygon_mask(&hull, 480, 480);
        let (d, n) = mad(&frame, &r.portrait, |x, y| inside[y * 480 + x]);
        println!("identity: mean abs diff inside the hull {d:.3} over {n} px");
        assert!(n > 30_000 && d < 3.0, "mad {d}");
        let mask = r.fill_mask();
        let (d_out, n_out) = mad(&frame, &r.portrait, |x, y| !mask[y * 480 + x]);
        assert!(n_out > 100_000 && d_out == 0.0, "outside changed: {d_out}");
        assert_eq!(
            mad(r.background(), &r.portrait, |x, y| !mask[y * 480 + x]).0,
            0.0
        );
        // No ghost: under the eyes and the nose the background is not the dark features.
        let lms = r.landmarks();
        let (e0, e1) = (lms[33], lms[133]);
        let eye = mean_luma(r.background(), e0[0], e1[0], e0[1] - 5.0, e0[1] + 5.0);
        let eye_portrait = mean_luma(&r.portrait, e0[0], e1[0], e0[1] - 5.0, e0[1] + 5.0);
        assert!(
            eye > eye_portrait + 40.0,
            "ghost eye: {eye} vs {eye_portrait}"
        );
        // The fill differs from the face there (it comes from the hull border).
        let (d_in, _) = mad(r.background(), &r.portrait, |x, y| inside[y * 480 + x]);
        assert!(
            d_in > 10.0,
            "background under the face barely changed: {d_in}"
        );
    }

    #[test]
    fn yaw_moves_nose_right_and_mirrors() {
        let r = renderer(480, 480);
        let (front, _) = r.render(&FaceEdit::default());
        let nose0 = r.landmarks()[NOSE_TIP];
        let depth = r.pivot()[2] - nose0[2];
        let expect = 20f32.to_radians().sin() * depth;
        let centre = |lm: &[[f32; 3]]| lm.iter().map(|p| p[0]).sum::<f32>() / lm.len() as f32;
        let (img_p, lm_p) = r.render(&FaceEdit::posed(20.0, 0.0, 0.0));
        let (_, lm_n) = r.render(&FaceEdit::posed(-20.0, 0.0, 0.0));
        let dx_p = lm_p[NOSE_TIP][0] - nose0[0];
        let dx_n = lm_n[NOSE_TIP][0] - nose0[0];
        println!("yaw 20: nose dx {dx_p:.2} expected {expect:.2}; yaw -20: {dx_n:.2}");
        assert!((dx_p / expect - 1.0).abs() < 0.2, "{dx_p} vs {expect}");
        assert!((dx_n / -expect - 1.0).abs() < 0.2, "{dx_n} vs {}", -expect);
        assert!(
            (dx_p + dx_n).abs() < 0.02 * expect,
            "not mirrored: {dx_p} {dx_n}"
        );
        // Relative to the face centre too.
        let rel0 = nose0[0] - centre(r.landmarks());
        assert!(lm_p[NOSE_TIP][0] - centre(&lm_p) > rel0 + 0.15 * expect);
        assert!(lm_n[NOSE_TIP][0] - centre(&lm_n) < rel0 - 0.15 * expect);
        let (d, _) = mad(&img_p, &front, |_, _| true);
        assert!(d > 1.0, "yaw 20 frame too close to frontal: {d}");
    }

    #[test]
    fn pitch_up_moves_nose_up() {
        let r = renderer(480, 480);
        let lm0 = r.landmarks().to_vec();
        let lm = r.landmarks_for(&FaceEdit::posed(0.0, 15.0, 0.0));
        let eyes_y = |l: &[[f32; 3]]| (l[159][1] + l[386][1]) * 0.5;
        assert!(lm[NOSE_TIP][1] < lm0[NOSE_TIP][1] - 3.0);
        let before = lm0[NOSE_TIP][1] - eyes_y(&lm0);
        let after = lm[NOSE_TIP][1] - eyes_y(&lm);
        println!("pitch 15: nose-eyes {before:.2} -> {after:.2}");
        assert!(after < before - 3.0);
        // The rendered frame agrees with the returned landmarks.
        let (a, lm_r) = r.render(&FaceEdit::posed(0.0, 15.0, 0.0));
        assert_eq!(lm, lm_r);
        assert_eq!(a.width, 480);
    }

    #[test]
    fn roll_is_clockwise() {
        let r = renderer(480, 480);
        let lm = r.landmarks_for(&FaceEdit::posed(0.0, 0.0, 20.0));
        // Clockwise on screen: the image-right eye goes down, the image-left eye up.
        assert!(lm[386][1] > r.landmarks()[386][1] + 5.0);
        assert!(lm[159][1] < r.landmarks()[159][1] - 5.0);
    }

    #[test]
    fn eyes_close() {
        let r = renderer(480, 480);
        let edit = FaceEdit {
            eyes_closed: 1.0,
            ..FaceEdit::default()
        };
        let (img, lm) = r.render(&edit);
        let pairs = RIGHT_EYE_UPPER
            .iter()
            .zip(RIGHT_EYE_LOWER.iter())
            .chain(LEFT_EYE_UPPER.iter().zip(LEFT_EYE_LOWER.iter()));
        for (&u, &l) in pairs {
            let d = ((lm[u][0] - lm[l][0]).powi(2) + (lm[u][1] - lm[l][1]).powi(2)).sqrt();
            assert!(d < 0.5, "lid {u} is {d} px from {l}");
        }
        let (front, _) = r.render(&FaceEdit::default());
        let l0 = r.landmarks();
        for (outer, inner, upper, lower) in [(33, 133, 159, 145), (263, 362, 386, 374)] {
            let (x0, x1) = (
                l0[outer][0].min(l0[inner][0]),
                l0[outer][0].max(l0[inner][0]),
            );
            let (y0, y1) = (l0[upper][1], l0[lower][1]);
            let open = mean_luma(&front, x0, x1, y0, y1);
            let shut = mean_luma(&img, x0, x1, y0, y1);
            println!("eye luma open {open:.1} closed {shut:.1}");
            assert!(shut > open + 40.0, "{shut} vs {open}");
        }
    }

    #[test]
    fn mouth_opens_dark() {
        let r = renderer(480, 480);
        let edit = FaceEdit {
            mouth_open: 1.0,
            ..FaceEdit::default()
        };
        let (img, lm) = r.render(&edit);
        let l0 = r.landmarks();
        let width = l0[MOUTH_CORNER_IMAGE_RIGHT][0] - l0[MOUTH_CORNER_IMAGE_LEFT][0];
        let gap0 = l0[14][1] - l0[13][1];
        let gap = lm[14][1] - lm[13][1];
        assert!((gap - gap0 - 0.25 * width).abs() < 0.5, "gap {gap}");
        assert_eq!(lm[13], l0[13], "upper lip moved");
        assert!(lm[152][1] > l0[152][1] + 0.2 * width, "chin stayed");
        assert!((lm[61][1] - l0[61][1]).abs() < 0.5, "corner moved");
        let (x, y) = (lm[13][0] as usize, ((lm[13][1] + lm[14][1]) * 0.5) as usize);
        assert_eq!(img.pixel(x, y), MOUTH_INTERIOR);
        // Still dark when the head is turned and nodded a little.
        let edit = FaceEdit {
            mouth_open: 1.0,
            ..FaceEdit::posed(15.0, -10.0, 5.0)
        };
        let (img, lm) = r.render(&edit);
        let (x, y) = (
            ((lm[13][0] + lm[14][0]) * 0.5) as usize,
            ((lm[13][1] + lm[14][1]) * 0.5) as usize,
        );
        assert_eq!(img.pixel(x, y), MOUTH_INTERIOR);
    }

    #[test]
    fn back_faces_are_culled() {
        let r = renderer(480, 480);
        let (_, _, s0) = r.render_with_stats(&FaceEdit::default());
        let (_, _, s80) = r.render_with_stats(&FaceEdit::posed(80.0, 0.0, 0.0));
        println!("triangles: frontal {s0:?}, yaw 80 {s80:?}");
        assert_eq!(s0.triangles_culled, 0);
        assert!(s80.triangles_drawn < s0.triangles_drawn);
        assert!(s80.triangles_culled > 0);
        // Nothing panics on extreme or silly edits.
        for edit in [
            FaceEdit::posed(180.0, 0.0, 0.0),
            FaceEdit::posed(0.0, 90.0, 0.0),
            FaceEdit::posed(f32::NAN, 0.0, 0.0),
            FaceEdit {
                scale: 5.0,
                offset: (-300.0, 900.0),
                eyes_closed: 3.0,
                mouth_open: f32::INFINITY,
                ..FaceEdit::default()
            },
            FaceEdit {
                scale: 0.0,
                ..FaceEdit::default()
            },
        ] {
            let _ = r.render(&edit);
        }
    }

    #[test]
    fn scale_and_offset_move_the_face() {
        let r = renderer(480, 480);
        let edit = FaceEdit {
            scale: 0.5,
            offset: (40.0, -20.0),
            ..FaceEdit::default()
        };
        let lm = r.landmarks_for(&edit);
        let c = r.pivot();
        let p = r.landmarks()[NOSE_TIP];
        assert!((lm[NOSE_TIP][0] - (c[0] + 0.5 * (p[0] - c[0]) + 40.0)).abs() < 1e-3);
        assert!((lm[NOSE_TIP][1] - (c[1] + 0.5 * (p[1] - c[1]) - 20.0)).abs() < 1e-3);
    }

    #[test]
    fn script_interpolates() {
        let a = FaceEdit::default();
        let b = FaceEdit {
            pose: HeadPose::new(20.0, -10.0, 4.0),
            eyes_closed: 1.0,
            ..FaceEdit::default()
        };
        let frames = script(&[(2.0, b), (0.0, a)], 30);
        assert_eq!(frames.len(), 60);
        assert_eq!(frames[0], a);
        let mid = frames[30];
        assert!((mid.pose.yaw - 10.0).abs() < 1e-5);
        assert!((mid.pose.pitch + 5.0).abs() < 1e-5);
        assert!((mid.pose.roll - 2.0).abs() < 1e-5);
        assert!((mid.eyes_closed - 0.5).abs() < 1e-5);
        // Held before the first key; a hold key extends the clip.
        let frames = script(&[(1.0, a), (2.0, b), (3.0, b)], 10);
        assert_eq!(frames.len(), 30);
        assert_eq!(frames[5], a);
        assert!((frames[15].pose.yaw - 10.0).abs() < 1e-4);
        assert_eq!(frames[25], b);
        assert!(script(&[], 30).is_empty());
        assert_eq!(script(&[(0.0, b)], 30), vec![b]);
    }

    #[test]
    fn image_ops() {
        let mut img = RgbImage::new(101, 101, [0, 0, 0]);
        for y in 9..=11 {
            for x in 49..=51 {
                img.set_pixel(x, y, [255, 255, 255]);
            }
        }
        let rot = img.rotated(90.0);
        assert_eq!(rot.pixel(90, 50), [255, 255, 255]);
        assert_eq!(rot.pixel(50, 10), [0, 0, 0]);
        let rot = img.rotated(-90.0);
        assert_eq!(rot.pixel(10, 50), [255, 255, 255]);
        assert_eq!(img.rotated(0.0), img);
        let mir = img.mirrored();
        let mut one = RgbImage::new(7, 3, [0; 3]);
        one.set_pixel(1, 2, [9, 8, 7]);
        assert_eq!(one.mirrored().pixel(5, 2), [9, 8, 7]);
        assert_eq!(mir.mirrored(), img);
        assert_eq!(mir.pixel(50, 10), [255, 255, 255]);
        // Edge replication fills the corners of a rotated image.
        let grad = RgbImage::from_raw(
            4,
            2,
            (0..8)
                .flat_map(|i| [i as u8 * 30, 0, 0])
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(grad.resized(4, 2), grad);
        let big = grad.resized(8, 4);
        assert_eq!(big.pixel(0, 0), grad.pixel(0, 0));
        assert_eq!(big.pixel(7, 3), grad.pixel(3, 1));
        let mut canvas = RgbImage::new(5, 5, [1, 1, 1]);
        canvas.blit(&RgbImage::new(3, 3, [7, 7, 7]), 3, -1);
        assert_eq!(canvas.pixel(3, 0), [7, 7, 7]);
        assert_eq!(canvas.pixel(4, 1), [7, 7, 7]);
        assert_eq!(canvas.pixel(2, 0), [1, 1, 1]);
        assert_eq!(canvas.pixel(3, 2), [1, 1, 1]);
        canvas.blit(&RgbImage::new(3, 3, [7, 7, 7]), -10, 10);
    }

    #[test]
    fn png_round_trip() {
        let (img, _) = synthetic_portrait(64, 48);
        let path = std::env::temp_dir().join(format!("render-rs-{}.png", std::process::id()));
        img.save_png(&path).unwrap();
        let back = RgbImage::load(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(back, img);
        assert!(RgbImage::load(Path::new("/nonexistent/x.png")).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        let (img, lm) = synthetic_portrait(120, 120);
        assert!(HeadRenderer::new(img.clone(), &lm[..400]).is_err());
        let mut nan = lm.clone();
        nan[5][2] = f32::NAN;
        assert!(HeadRenderer::new(img.clone(), &nan).is_err());
        assert!(HeadRenderer::new(img.clone(), &vec![[3.0, 3.0, 0.0]; 468]).is_err());
        assert!(HeadRenderer::new(RgbImage::new(0, 0, [0; 3]), &lm).is_err());
        // Iris points past 468 are ignored.
        let mut more = lm.clone();
        more.extend_from_slice(&[[60.0, 50.0, 0.0]; 10]);
        assert!(HeadRenderer::new(img, &more).is_ok());
    }

    #[test]
    fn render_speed_640x480() {
        let r = renderer(640, 480);
        let edit = FaceEdit {
            eyes_closed: 0.5,
            mouth_open: 0.3,
            ..FaceEdit::posed(20.0, 10.0, 5.0)
        };
        let mut times: Vec<f64> = (0..15)
            .map(|_| {
                let t = std::time::Instant::now();
                let out = r.render(&edit);
                std::hint::black_box(&out);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("render 640x480: median {:.2} ms", times[times.len() / 2]);
    }
}
