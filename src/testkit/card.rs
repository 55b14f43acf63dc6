//! Fixture: a flat photo held up to the camera (a print or a phone screen), for spoof tests.
//!
//! Conventions follow [`super::render`]: image coordinates x right, y down, pixel `(i, j)`
//! covering `[i, i + 1) x [j, j + 1)`; rotation `R = Rz(roll) * Rx(pitch) * Ry(yaw)` in degrees,
//! the matrix of `render::HeadPose::matrix`: yaw > 0 turns the card's right edge away from the
//! camera, pitch > 0 tips its top edge away (like a head's chin-up), roll > 0 turns it clockwise
//! in the image.

use super::render::RgbImage;

/// `Rz(roll) * Rx(pitch) * Ry(yaw)`, degrees, acting on column vectors (x right, y down, z away
/// from the camera); the same matrix as `render::HeadPose::matrix`, in f64.
fn rotation(yaw: f32, pitch: f32, roll: f32) -> [[f64; 3]; 3] {
    let (sy, cy) = (yaw as f64).to_radians().sin_cos();
    let (sp, cp) = (pitch as f64).to_radians().sin_cos();
    let (sr, cr) = (roll as f64).to_radians().sin_cos();
    let ry = [[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]];
    let rx = [[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]];
    let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
    let mul = |a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]| {
        let mut m = [[0.0; 3]; 3];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
            }
        }
        m
    };
    mul(&rz, &mul(&rx, &ry))
}

/// Renders `photo` as a flat card in 3D: rotated by (yaw, pitch, roll) degrees about its centre,
/// scaled, placed at `centre` in a `width`x`height` frame over `background`, with perspective
/// (focal length `focal` px; the card at distance focal from the camera), bilinear sampling;
/// outside the card the background shows.
///
/// The frame has the background's size (`width` x `height` = `background.width` x
/// `background.height`). The card is `photo.width * scale` x `photo.height * scale` pixels in
/// its own plane; its centre is on the optical axis through `centre` (image coordinates, e.g.
/// `(width / 2, height / 2)` is the middle of the frame) at depth `focal`, so unrotated it
/// appears at exactly `scale` times the photo's size. A photo pixel `(i, j)` sits at card
/// coordinates `((i + 0.5 - photo.width / 2) * scale, (j + 0.5 - photo.height / 2) * scale, 0)`
/// before the rotation `R = Rz(roll) * Rx(pitch) * Ry(yaw)` (the renderer's head-pose
/// convention: yaw > 0 moves the card's right edge away from the camera, so it looks
/// narrower than the left). Each frame pixel centre casts a ray through the pinhole; where the
/// ray meets the card (front or back), the photo is sampled bilinearly, elsewhere the background
/// pixel is kept. No anti-aliasing at the card's edge. A card seen edge-on, or with
/// `scale`/`focal` not positive, leaves the background unchanged.
#[allow(clippy::too_many_arguments)]
pub fn render_card(
    photo: &RgbImage,
    background: &RgbImage,
    centre: (f32, f32),
    scale: f32,
    yaw: f32,
    pitch: f32,
    roll: f32,
    focal: f32,
) -> RgbImage {
    let mut out = background.clone();
    if photo.width == 0 || photo.height == 0 {
        return out;
    }
    let (pw, ph) = (photo.width as f64, photo.height as f64);
    let to_u8 = |v: f32| (v + 0.5).clamp(0.0, 255.0) as u8;
    paint_card_plane(
        &mut out,
        (photo.width, photo.height),
        centre,
        scale,
        yaw,
        pitch,
        roll,
        focal,
        |u, v| {
            if !(0.0..pw).contains(&u) || !(0.0..ph).contains(&v) {
                return None;
            }
            // `sample_bilinear` works in pixel-index space (centres at integers).
            let s = photo.sample_bilinear((u - 0.5) as f32, (v - 0.5) as f32);
            Some([to_u8(s[0]), to_u8(s[1]), to_u8(s[2])])
        },
    );
    out
}

/// Paints over `img` what lies in the plane of a card rendered by [`render_card`] with the same
/// placement (`photo_size` = the photo's width and height): for each frame pixel whose ray meets
/// the plane, `paint` gets the point in photo pixels (which may be outside the photo: fingers
/// reach past the card's edge) and returns a colour, or `None` to leave the pixel.
#[allow(clippy::too_many_arguments)]
pub fn paint_card_plane(
    img: &mut RgbImage,
    photo_size: (usize, usize),
    centre: (f32, f32),
    scale: f32,
    yaw: f32,
    pitch: f32,
    roll: f32,
    focal: f32,
    paint: impl Fn(f64, f64) -> Option<[u8; 3]>,
) {
    let (focal, scale) = (focal as f64, scale as f64);
    if !(focal > 0.0 && scale > 0.0) {
        return;
    }
    let r = rotation(yaw, pitch, roll);
    // Card axes in camera space: columns of R. The card's centre is on the optical axis (camera
    // at the origin looking down +z, principal point at `centre`), at depth focal.
    let ex = [r[0][0], r[1][0], r[2][0]];
    let ey = [r[0][1], r[1][1], r[2][1]];
    let n = [r[0][2], r[1][2], r[2][2]];
    let n_dot_c = n[2] * focal;
    let (cx, cy) = (centre.0 as f64, centre.1 as f64);
    let (pw, ph) = (photo_size.0 as f64, photo_size.1 as f64);
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let width = img.width;
    if width == 0 {
        return;
    }
    for (y, row) in img.data.chunks_exact_mut(width * 3).enumerate() {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            // Ray through the pixel centre, z = 1.
            let d = [
                (x as f64 + 0.5 - cx) / focal,
                (y as f64 + 0.5 - cy) / focal,
                1.0,
            ];
            let nd = dot(n, d);
            if nd.abs() < 1e-12 {
                continue;
            }
            let t = n_dot_c / nd;
            if t <= 0.0 {
                continue;
            }
            let hit = [t * d[0], t * d[1], t * d[2] - focal];
            // Card-plane coordinates, then photo coordinates (continuous, pixel edges at
            // integers).
            let u = dot(ex, hit) / scale + pw * 0.5;
            let v = dot(ey, hit) / scale + ph * 0.5;
            if let Some(rgb) = paint(u, v) {
                px.copy_from_slice(&rgb);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: usize, h: usize) -> RgbImage {
        let mut img = RgbImage::new(w, h, [0; 3]);
        for y in 0..h {
            for x in 0..w {
                img.set_pixel(
                    x,
                    y,
                    [
                        (x * 3 % 256) as u8,
                        (y * 5 % 256) as u8,
                        ((x * 7 + y * 11) % 256) as u8,
                    ],
                );
            }
        }
        img
    }

    /// Columns of `row` that differ from the background colour.
    fn card_columns(img: &RgbImage, row: usize, bg: [u8; 3]) -> Vec<usize> {
        (0..img.width)
            .filter(|&x| img.pixel(x, row) != bg)
            .collect()
    }

    #[test]
    fn frontal_card_reproduces_the_photo() {
        let photo = pattern(160, 120);
        let bg = RgbImage::new(160, 120, [0, 0, 255]);
        let out = render_card(&photo, &bg, (80.0, 60.0), 1.0, 0.0, 0.0, 0.0, 192.0);
        assert_eq!(out, photo);
        // Odd sizes too.
        let photo = pattern(75, 51);
        let bg = RgbImage::new(75, 51, [0, 0, 255]);
        let out = render_card(&photo, &bg, (37.5, 25.5), 1.0, 0.0, 0.0, 0.0, 90.0);
        assert_eq!(out, photo);
    }

    #[test]
    fn scaled_and_shifted_card_shows_the_background_around_it() {
        let photo = RgbImage::new(100, 60, [255, 255, 255]);
        let bg = RgbImage::new(400, 300, [0, 0, 0]);
        let out = render_card(&photo, &bg, (150.0, 120.0), 0.5, 0.0, 0.0, 0.0, 480.0);
        let cols = card_columns(&out, 120, [0, 0, 0]);
        assert_eq!((cols[0], *cols.last().unwrap()), (125, 174));
        let rows: Vec<usize> = (0..300)
            .filter(|&y| out.pixel(150, y) != [0, 0, 0])
            .collect();
        assert_eq!((rows[0], *rows.last().unwrap()), (105, 134));
    }

    #[test]
    fn yaw_30_narrows_the_card_by_cos_30() {
        let photo = RgbImage::new(200, 100, [255, 255, 255]);
        let bg = RgbImage::new(480, 320, [0, 0, 0]);
        let (cx, cy) = (240.0, 160.0);
        let focal = 1.2 * 480.0;
        let flat = render_card(&photo, &bg, (cx, cy), 1.0, 0.0, 0.0, 0.0, focal);
        let turned = render_card(&photo, &bg, (cx, cy), 1.0, 30.0, 0.0, 0.0, focal);
        let w0 = card_columns(&flat, 160, [0, 0, 0]).len() as f32;
        let cols = card_columns(&turned, 160, [0, 0, 0]);
        let w30 = cols.len() as f32;
        let expected = 200.0 * 30f32.to_radians().cos();
        println!("width frontal {w0}, yaw 30 {w30}, 200 cos 30 = {expected:.1}");
        assert_eq!(w0, 200.0);
        assert!((w30 - expected).abs() < 3.0, "{w30} vs {expected}");
        // Contiguous, and the right edge (turned away) is nearer the centre than the left.
        assert_eq!(cols.last().unwrap() - cols[0] + 1, cols.len());
        let left = cx - cols[0] as f32;
        let right = *cols.last().unwrap() as f32 + 1.0 - cx;
        assert!(right < left, "left {left} right {right}");
        // Perspective: near edge 86.6 * f / (f - 50), far edge 86.6 * f / (f + 50).
        let half = 100.0 * 30f32.to_radians().cos();
        assert!((left - half * focal / (focal - 50.0)).abs() < 1.5);
        assert!((right - half * focal / (focal + 50.0)).abs() < 1.5);
        // Height at the centre column is unchanged by yaw.
        let rows = (0..320)
            .filter(|&y| turned.pixel(240, y) != [0, 0, 0])
            .count();
        assert_eq!(rows, 100);
    }

    #[test]
    fn rotation_matches_the_renderers_head_pose() {
        let m = super::super::render::HeadPose::new(20.0, -12.0, 7.0).matrix();
        let r = rotation(20.0, -12.0, 7.0);
        for i in 0..3 {
            for j in 0..3 {
                assert!((m[i][j] as f64 - r[i][j]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn roll_turns_the_card_clockwise() {
        // A card with a red right half: rolled by 90 degrees clockwise (y down), red is at the
        // bottom.
        let mut photo = RgbImage::new(60, 60, [255, 255, 255]);
        for y in 0..60 {
            for x in 30..60 {
                photo.set_pixel(x, y, [255, 0, 0]);
            }
        }
        let bg = RgbImage::new(100, 100, [0, 0, 0]);
        let out = render_card(&photo, &bg, (50.0, 50.0), 1.0, 0.0, 0.0, 90.0, 120.0);
        assert_eq!(out.pixel(50, 70), [255, 0, 0]);
        assert_eq!(out.pixel(50, 30), [255, 255, 255]);
    }
}
