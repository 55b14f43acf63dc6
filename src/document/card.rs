//! Finding an ID-1 card in a video frame, rectifying it, and judging the capture.
//!
//! The card is the best quadrilateral made of four straight edges: a Hough transform over
//! gradient edges (each edge pixel votes only near its own gradient direction) gives candidate
//! lines; two near-parallel pairs meeting at a plausible angle make a quad; a quad is kept when
//! its sides are really backed by edges along their length and its aspect is a card's. A frame
//! border may stand in for one side: that card is cut off. The winner is rectified through a
//! homography to 85.60 x 53.98 mm at 10 px/mm and judged for size, cut-off, tilt, glare and
//! sharpness.

use image::RgbImage;

use crate::analysis::image::sample_rgb;
use crate::analysis::quality::I420;

/// ID-1 (ISO/IEC 7810) card size.
pub(crate) const CARD_WIDTH_MM: f32 = 85.60;
pub(crate) const CARD_HEIGHT_MM: f32 = 53.98;
/// The rectified card, 10 px/mm.
pub(crate) const RECTIFIED_WIDTH: u32 = 856;
pub(crate) const RECTIFIED_HEIGHT: u32 = 540;

/// Edge detection runs on the luma plane scaled down to at most this width.
const WORK_WIDTH: usize = 320;
/// Sobel magnitude an edge pixel needs: after the 3x3 blur, a luma step of about 18 (a light
/// card against a light wall).
const EDGE_MAGNITUDE: i32 = 48;
/// Hough resolution: 1 degree, 1 work pixel; each edge votes +-8 degrees around its gradient
/// (stair-stepped edges of a rotated card scatter the local gradient direction that much).
const THETA_BINS: usize = 180;
const VOTE_SPREAD_DEG: i32 = 8;
/// Lines kept from the Hough peaks, and at most this many within `SAME_DIRECTION_DEG` of each
/// other.
const MAX_LINES: usize = 28;
const MAX_LINES_ONE_DIRECTION: usize = 10;
const SAME_DIRECTION_DEG: f32 = 12.0;
/// Sides of a pair differ by at most this angle (perspective makes them converge).
const PARALLEL_DEG: f32 = 25.0;
/// The two pairs meet at 90 degrees +- this.
const CORNER_DEG: f32 = 30.0;
/// Aspect (long / short side) a quad may show before rectification: wide enough for a card
/// whose short edges are hidden behind fingers (the quad is then trimmed, see [`fit_id1`]).
const ASPECT_RANGE: std::ops::RangeInclusive<f32> = 1.2..=2.8;
/// ID-1 aspect (85.60 / 53.98).
pub(crate) const ID1_ASPECT: f32 = CARD_WIDTH_MM / CARD_HEIGHT_MM;
/// The rectified aspect of a whole card may exceed [`ID1_ASPECT`] by this share (corner noise
/// of a few pixels, the focal length guessed); a quad wider than this is trimmed along its long
/// edges.
pub(crate) const ASPECT_TOLERANCE: f32 = 0.08;
/// ...and fall short of it by this share (an ID-3 passport page, 125 x 88 mm, is 10.5 % short).
/// A picture frame, a window or a phone of another shape is not a card.
pub(crate) const ASPECT_TOLERANCE_NARROW: f32 = 0.12;
/// Share of a side's length that must lie on matching edges.
const MIN_SIDE_SUPPORT: f32 = 0.65;
/// The short sides of a whole quad need less: the fingers holding a card cover them. Its long
/// sides must then carry it.
const MIN_SHORT_SIDE_SUPPORT: f32 = 0.35;
/// Trimmed short edges: one must be backed by this share of edges (a card edge between
/// fingers); the other is placed one card length along the long edges even when nothing backs
/// it (a light card against a light wall). The content check judges what lies between.
const MIN_TRIMMED_SIDE_SUPPORT: f32 = 0.4;
/// A quad leaning on the frame's border shows at most this much more of the card, away from
/// the border, than the side opposite the border implies (that side a long edge when it is the
/// longer, else a short edge).
const MAX_CUT_OFF_DEPTH: f32 = 1.1;
/// How far past a corner a side's line is checked (share of the side), and the edge support
/// above which it "runs on": the line is a longer structure, not the card's edge.
const OVERRUN_REACH: f32 = 0.2;
const MAX_OVERRUN_SUPPORT: f32 = 0.6;
/// Area of the quad, as a share of the frame.
const AREA_RANGE: std::ops::RangeInclusive<f32> = 0.03..=0.95;
/// A quad leaning on the frame's border may cover at most this share of it: larger ones are
/// mostly door frames, picture edges and the like meeting the border, not a card held up.
const MAX_CUT_OFF_AREA: f32 = 0.45;

/// Capture judgement thresholds (see `judge`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureThresholds {
    /// The card's long side must span at least this share of the frame width...
    pub min_width_share: f32,
    /// ...and at least this many frame pixels (about 3.5 px/mm: digits about 12 px high).
    pub min_width_px: f32,
    /// Ratio of opposite sides above which the card is tilted away from the camera.
    pub max_side_ratio: f32,
    /// Share of the card's pixels at or above `GLARE_LUMA` that is glare.
    pub max_glare: f32,
    /// Mean absolute Laplacian on the half-size rectified card below which it is blurred.
    pub min_sharpness: f32,
}

impl Default for CaptureThresholds {
    fn default() -> Self {
        CaptureThresholds {
            min_width_share: 0.40,
            min_width_px: 300.0,
            max_side_ratio: 1.25,
            max_glare: 0.02,
            min_sharpness: 4.0,
        }
    }
}

/// Luma at or above which a card pixel is blown out (printed cards stay below ~235).
pub(crate) const GLARE_LUMA: u8 = 245;

/// A card found in a frame: corners in frame pixels, top-left, top-right, bottom-right,
/// bottom-left (the long sides are top and bottom).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CardQuad {
    pub corners: [(f32, f32); 4],
    /// One side is the frame's border: part of the card is outside the picture.
    pub cut_off: bool,
    /// Mean edge support of the measured sides (0..1).
    pub support: f32,
}

impl CardQuad {
    fn side(&self, i: usize) -> f32 {
        let (a, b) = (self.corners[i], self.corners[(i + 1) % 4]);
        ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
    }

    /// Mean length of the long (top, bottom) sides in frame pixels.
    pub fn width_px(&self) -> f32 {
        (self.side(0) + self.side(2)) / 2.0
    }

    /// The larger ratio of opposite sides: 1 when square-on, more when tilted.
    pub(crate) fn side_ratio(&self) -> f32 {
        let r = |a: f32, b: f32| a.max(b) / a.min(b).max(1.0);
        r(self.side(0), self.side(2)).max(r(self.side(1), self.side(3)))
    }
}

/// What is wrong with a capture, each fixable by the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureIssue {
    CutOff,
    TooFar,
    Tilted,
    Glare,
    Blur,
}

/// The judged capture: measurements, issues (most fundamental first) and a score to pick the
/// best capture by.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaptureJudgement {
    pub width_share: f32,
    pub width_px: f32,
    pub side_ratio: f32,
    pub glare: f32,
    pub sharpness: f32,
    pub issues: Vec<CaptureIssue>,
    pub score: f32,
}

/// Reusable buffers for `find_card`.
#[derive(Default)]
pub struct CardScratch {
    luma: Vec<u8>,
    edges: Vec<(u16, u16, u8)>,
    edge_map: Vec<u8>,
    votes: Vec<u16>,
    walks: Vec<Walk>,
    /// Running counts of backed points along a pair of long edges.
    backing: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Line {
    /// Normal angle in degrees [0, 180) and distance: x cos(t) + y sin(t) = rho.
    theta: f32,
    rho: f32,
    border: bool,
}

impl Line {
    fn intersect(&self, other: &Line) -> Option<(f32, f32)> {
        let (s1, c1) = self.theta.to_radians().sin_cos();
        let (s2, c2) = other.theta.to_radians().sin_cos();
        let det = c1 * s2 - s1 * c2;
        if det.abs() < 1e-3 {
            return None;
        }
        Some((
            (self.rho * s2 - other.rho * s1) / det,
            (c1 * other.rho - c2 * self.rho) / det,
        ))
    }
}

/// Angle between two line normals, 0..=90 degrees.
fn angle_between(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(180.0);
    d.min(180.0 - d)
}

/// Finds the card in `frame`, if one is there.
pub fn find_card(frame: &I420, scratch: &mut CardScratch) -> Option<CardQuad> {
    find_card_excluding(frame, scratch, &[])
}

/// Two quads whose corners are all within this share of the frame's width of each other are the
/// same object (a card-like thing of the room that has not moved).
pub(crate) const SAME_OBJECT_TOLERANCE: f32 = 0.04;
/// A candidate leaning on the frame's border whose bounding box lies this much inside a room
/// object's is part of it (a window's pane, a frame's edge meeting the picture's border).
pub(crate) const PART_OF_OBJECT_SHARE: f32 = 0.6;

/// Whether `a` and `b` (frame pixels, oriented) are the same object in a frame `width` wide.
pub(crate) fn same_object(a: &CardQuad, b: &CardQuad, width: usize) -> bool {
    let tolerance = SAME_OBJECT_TOLERANCE * width as f32;
    a.corners
        .iter()
        .zip(&b.corners)
        .all(|(p, q)| (p.0 - q.0).hypot(p.1 - q.1) <= tolerance)
}

/// Whether `candidate` is `object` or a part of it: the same corners, or a bounding box mostly
/// inside the object's ([`PART_OF_OBJECT_SHARE`]).
pub(crate) fn part_of(candidate: &CardQuad, object: &CardQuad, width: usize) -> bool {
    if same_object(candidate, object, width) {
        return true;
    }
    let bounds = |q: &CardQuad| {
        q.corners.iter().fold(
            (f32::MAX, f32::MAX, f32::MIN, f32::MIN),
            |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        )
    };
    let (a, b) = (bounds(candidate), bounds(object));
    let overlap = (a.2.min(b.2) - a.0.max(b.0)).max(0.0) * (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    let area = (a.2 - a.0) * (a.3 - a.1);
    area > 0.0 && overlap / area >= PART_OF_OBJECT_SHARE
}

/// Finds the card in `frame`, skipping candidates that are one of the `room`'s objects or part
/// of one (found before the card was asked for and not moved since: picture frames, windows,
/// books).
pub(crate) fn find_card_excluding(
    frame: &I420,
    scratch: &mut CardScratch,
    room: &[CardQuad],
) -> Option<CardQuad> {
    let mut best: Option<(f32, CardQuad)> = None;
    search(frame, scratch, room, |score, quad| {
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, quad));
        }
    });
    best.map(|(_, quad)| quad)
}

/// Every candidate quad in `frame` that is not one of the `room`'s objects, best first (whole
/// quads before those leaning on the border), each object once.
pub(crate) fn card_candidates(
    frame: &I420,
    scratch: &mut CardScratch,
    room: &[CardQuad],
) -> Vec<CardQuad> {
    let mut found: Vec<(f32, CardQuad)> = Vec::new();
    search(frame, scratch, room, |score, quad| {
        found.push((score, quad))
    });
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<CardQuad> = Vec::with_capacity(found.len());
    for (_, quad) in found {
        if !out.iter().any(|o| same_object(o, &quad, frame.width)) {
            out.push(quad);
        }
    }
    out
}

/// The rectified card's content is judged at this size (2.5 px/mm): enough to tell print from
/// a picture, a window or a screen, and cheap enough for every candidate.
pub(crate) const CONTENT_WIDTH: u32 = 214;
pub(crate) const CONTENT_HEIGHT: u32 = 135;
/// Content cells: 6 x 6 px (about 2.4 mm, a character's stroke spacing).
const CELL: usize = 6;
/// A luma step between neighbours this large is a stroke's edge.
const STROKE_STEP: i32 = 28;
/// A printed cell has at least this many stroke edges across and this many along the rows
/// (a single straight edge, a window's mullion or a frame's border, has only one kind).
const STROKE_EDGES: usize = 3;

/// Share of the cells in `region` (x0, y0, x1, y1 as shares of the image) of the rectified
/// card `img` that look printed: strokes that turn both ways, as characters and faces have and
/// the plain planes and straight edges of a room do not.
pub(crate) fn printed_share(img: &RgbImage, region: [f32; 4]) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let luma = |x: usize, y: usize| {
        let p = &raw[(y * w + x) * 3..][..3];
        (p[0] as i32 * 77 + p[1] as i32 * 150 + p[2] as i32 * 29) >> 8
    };
    let [x0, y0, x1, y1] = region;
    let (cx0, cy0) = ((x0 * w as f32) as usize, (y0 * h as f32) as usize);
    let (cx1, cy1) = (
        ((x1 * w as f32) as usize).min(w - 1),
        ((y1 * h as f32) as usize).min(h - 1),
    );
    let (mut cells, mut printed) = (0usize, 0usize);
    let mut y = cy0;
    while y + CELL <= cy1 {
        let mut x = cx0;
        while x + CELL <= cx1 {
            let (mut across, mut along) = (0usize, 0usize);
            for yy in y..y + CELL {
                for xx in x..x + CELL {
                    let l = luma(xx, yy);
                    across += ((luma(xx + 1, yy) - l).abs() >= STROKE_STEP) as usize;
                    along += ((luma(xx, yy + 1) - l).abs() >= STROKE_STEP) as usize;
                }
            }
            cells += 1;
            printed += (across >= STROKE_EDGES && along >= STROKE_EDGES) as usize;
            x += CELL;
        }
        y += CELL;
    }
    printed as f32 / cells.max(1) as f32
}

/// Every card-like quad in `frame` that is not one of the `room`'s objects: what a room shows
/// before the card is asked for.
pub(crate) fn card_like_quads(
    frame: &I420,
    scratch: &mut CardScratch,
    room: &[CardQuad],
) -> Vec<CardQuad> {
    let mut found = Vec::new();
    search(frame, scratch, room, |_, quad| found.push(quad));
    found
}

/// The card search: hands `sink` each candidate quad (frame pixels, oriented) with its score,
/// leaving out the room's objects and their parts. A whole card always outscores a quad that
/// leans on the frame's border.
fn search(
    frame: &I420,
    scratch: &mut CardScratch,
    room: &[CardQuad],
    mut sink: impl FnMut(f32, CardQuad),
) {
    if !frame.is_valid() {
        return;
    }
    let k = frame.width.div_ceil(WORK_WIDTH).max(1);
    let (w, h) = (frame.width / k, frame.height / k);
    if w < 32 || h < 32 {
        return;
    }
    // Box-downscaled luma.
    let luma = &mut scratch.luma;
    luma.clear();
    luma.resize(w * h, 0);
    for y in 0..h {
        for x in 0..w {
            let mut sum = 0u32;
            for dy in 0..k {
                let row = &frame.y[(y * k + dy) * frame.y_stride + x * k..][..k];
                sum += row.iter().map(|&v| v as u32).sum::<u32>();
            }
            luma[y * w + x] = (sum / (k * k) as u32) as u8;
        }
    }
    // A 3x3 box blur steadies the gradient direction along stair-stepped edges.
    let mut blurred = vec![0u8; w * h];
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let mut sum = 0u32;
            for yy in y - 1..=y + 1 {
                sum += luma[yy * w + x - 1..=yy * w + x + 1]
                    .iter()
                    .map(|&v| v as u32)
                    .sum::<u32>();
            }
            blurred[y * w + x] = (sum / 9) as u8;
        }
    }
    // Sobel, thinned to local maxima along the gradient.
    let at = |x: usize, y: usize| blurred[y * w + x] as i32;
    let mut mags = vec![0i32; w * h];
    let mut dirs = vec![0u8; w * h];
    for y in 2..h - 2 {
        for x in 2..w - 2 {
            let gx = at(x + 1, y - 1) + 2 * at(x + 1, y) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2 * at(x - 1, y)
                - at(x - 1, y + 1);
            let gy = at(x - 1, y + 1) + 2 * at(x, y + 1) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2 * at(x, y - 1)
                - at(x + 1, y - 1);
            let m = ((gx * gx + gy * gy) as f32).sqrt() as i32;
            mags[y * w + x] = m;
            // Gradient direction in whole degrees, folded to [0, 180).
            let deg = (gy as f32).atan2(gx as f32).to_degrees().rem_euclid(180.0);
            dirs[y * w + x] = (deg as u8).min(179);
        }
    }
    let edges = &mut scratch.edges;
    edges.clear();
    let edge_map = &mut scratch.edge_map;
    edge_map.clear();
    edge_map.resize(w * h, 255);
    for y in 2..h - 2 {
        for x in 2..w - 2 {
            let m = mags[y * w + x];
            if m < EDGE_MAGNITUDE {
                continue;
            }
            let d = dirs[y * w + x] as f32;
            let (dx, dy) = match d {
                d if !(22.5..157.5).contains(&d) => (1isize, 0isize),
                d if d < 67.5 => (1, 1),
                d if d < 112.5 => (0, 1),
                _ => (-1, 1),
            };
            let n1 = mags[(y as isize + dy) as usize * w + (x as isize + dx) as usize];
            let n2 = mags[(y as isize - dy) as usize * w + (x as isize - dx) as usize];
            if m >= n1 && m >= n2 {
                edges.push((x as u16, y as u16, dirs[y * w + x]));
                edge_map[y * w + x] = dirs[y * w + x];
            }
        }
    }
    // Hough votes near each edge's own direction.
    let diag = ((w * w + h * h) as f32).sqrt().ceil() as usize;
    let rho_bins = 2 * diag + 1;
    let votes = &mut scratch.votes;
    votes.clear();
    votes.resize(THETA_BINS * rho_bins, 0);
    let trig: Vec<(f32, f32)> = (0..THETA_BINS)
        .map(|t| (t as f32).to_radians().sin_cos())
        .collect();
    for &(x, y, d) in edges.iter() {
        for off in -VOTE_SPREAD_DEG..=VOTE_SPREAD_DEG {
            let t = (d as i32 + off).rem_euclid(THETA_BINS as i32) as usize;
            let (s, c) = trig[t];
            let rho = x as f32 * c + y as f32 * s;
            let r = (rho.round() as isize + diag as isize) as usize;
            votes[t * rho_bins + r] = votes[t * rho_bins + r].saturating_add(1);
        }
    }
    let min_votes = (w.min(h) as f32 * 0.12) as u16;
    let mut peaks: Vec<(u16, usize, usize)> = Vec::new();
    for t in 0..THETA_BINS {
        for r in 0..rho_bins {
            let v = votes[t * rho_bins + r];
            if v < min_votes {
                continue;
            }
            let mut is_max = true;
            'n: for dt in -3i32..=3 {
                let tt = (t as i32 + dt).rem_euclid(THETA_BINS as i32) as usize;
                for dr in -3i32..=3 {
                    let rr = r as i32 + dr;
                    if rr < 0 || rr >= rho_bins as i32 || (dt == 0 && dr == 0) {
                        continue;
                    }
                    let o = votes[tt * rho_bins + rr as usize];
                    // Ties go to the earlier bin.
                    if o > v || (o == v && (dt, dr) < (0, 0)) {
                        is_max = false;
                        break 'n;
                    }
                }
            }
            if is_max {
                peaks.push((v, t, r));
            }
        }
    }
    peaks.sort_by_key(|p| std::cmp::Reverse(p.0));
    // The strongest lines, but only so many of one direction: a card's text lines run along its
    // long edges and would otherwise crowd out its short edges, which the fingers holding it
    // half cover.
    let mut lines: Vec<Line> = Vec::with_capacity(MAX_LINES + 4);
    for &(_, t, r) in &peaks {
        if lines.len() >= MAX_LINES {
            break;
        }
        let alike = lines
            .iter()
            .filter(|l| angle_between(l.theta, t as f32) <= SAME_DIRECTION_DEG)
            .count();
        if alike >= MAX_LINES_ONE_DIRECTION {
            continue;
        }
        lines.push(Line {
            theta: t as f32,
            rho: r as f32 - diag as f32,
            border: false,
        });
    }
    if std::env::var_os("CARD_DEBUG").is_some() {
        eprintln!(
            "k={k} w={w} h={h} edges={} peaks={:?}",
            edges.len(),
            &peaks[..peaks.len().min(24)]
        );
    }
    let (wf, hf) = (w as f32, h as f32);
    for (theta, rho) in [(0.0, 0.0), (0.0, wf - 1.0), (90.0, 0.0), (90.0, hf - 1.0)] {
        lines.push(Line {
            theta,
            rho,
            border: true,
        });
    }
    // Pairs of near-parallel lines far enough apart.
    let min_gap = w.min(h) as f32 * 0.12;
    let mut pairs: Vec<(usize, usize, f32)> = Vec::new();
    for i in 0..lines.len() {
        for j in i + 1..lines.len() {
            let (a, b) = (lines[i], lines[j]);
            if a.border && b.border {
                continue;
            }
            if angle_between(a.theta, b.theta) > PARALLEL_DEG {
                continue;
            }
            // Normals on opposite ends of [0, 180) describe the same direction with rho negated.
            let rho_b = if (a.theta - b.theta).abs() > 90.0 {
                -b.rho
            } else {
                b.rho
            };
            if (a.rho - rho_b).abs() < min_gap {
                continue;
            }
            pairs.push((i, j, a.theta));
        }
    }
    for (pi, p) in pairs.iter().enumerate() {
        for q in &pairs[pi + 1..] {
            let crossing = angle_between(p.2, q.2);
            if (90.0 - crossing).abs() > CORNER_DEG {
                continue;
            }
            let sides = [lines[p.0], lines[q.0], lines[p.1], lines[q.1]];
            if sides.iter().filter(|l| l.border).count() > 1 {
                continue;
            }
            let Some(quad) = quad_from(&sides, wf, hf, sides.iter().any(|l| l.border)) else {
                continue;
            };
            let Some((score, support)) = score_quad(&quad, &sides, edge_map, w, h) else {
                continue;
            };
            // A whole card always beats a quad that leans on the frame's border.
            let cut_off = sides.iter().any(|l| l.border);
            if cut_off && !plausible_cut_off(&quad, &sides) {
                continue;
            }
            // A whole quad must rectify to a card's shape; fingers over its short edges are
            // trimmed off.
            let quad = if cut_off {
                quad
            } else {
                match fit_id1(&orient(quad), (wf, hf), edge_map, w, h) {
                    Some(fitted) => fitted,
                    None => continue,
                }
            };
            let score = if cut_off { score } else { score + 1e6 };
            let candidate = to_frame(
                CardQuad {
                    corners: quad,
                    cut_off,
                    support,
                },
                k,
            );
            // A quad leaning on the frame's border may be any part of a room object (its edges
            // meet the border wherever); a whole quad must be the object itself, so a card held
            // up in front of the room, over anything learnt there, is never taken for it.
            let known = |r: &CardQuad| {
                if candidate.cut_off {
                    part_of(&candidate, r, frame.width)
                } else {
                    same_object(&candidate, r, frame.width)
                }
            };
            if room.iter().any(known) {
                continue;
            }
            sink(score, candidate);
        }
    }
    // A card whose short edges show no line (a light card over light clothing or a bright
    // window, fingers over half of each): its long edges alone, backed along one card length
    // and not beyond it. Looked for among more lines than above: the card's text and the
    // room's furniture crowd its long edges out of the strongest few.
    let CardScratch { walks, backing, .. } = scratch;
    let mut used = 0;
    for &(_, t, r) in peaks.iter().take(MAX_EDGE_LINES) {
        let line = Line {
            theta: t as f32,
            rho: r as f32 - diag as f32,
            border: false,
        };
        if used == walks.len() {
            walks.push(Walk::default());
        }
        used += walks[used].walk(line, edge_map, w, h) as usize;
    }
    let walks = &walks[..used];
    for (i, a) in walks.iter().enumerate() {
        for b in &walks[i + 1..] {
            for (a, b) in [(a, b), (b, a)] {
                let Some((card, score)) = from_long_edges(a, b, min_gap, (wf, hf), backing) else {
                    continue;
                };
                let candidate = to_frame(card, k);
                if room.iter().any(|r| same_object(&candidate, r, frame.width)) {
                    continue;
                }
                // Ranked after every quad whose four sides were seen.
                sink(score + 5e5, candidate);
            }
        }
    }
}

/// Lines (strongest first) searched for a card's long edges.
const MAX_EDGE_LINES: usize = 48;
/// Largest angle between a card's two long edges (degrees): it is pitched or yawed a little.
const LONG_EDGES_DEG: f32 = 10.0;
/// Share of the points of the two long edges, over one card length, that edge pixels must back
/// (the ends of an edge over a background of the card's own shade lose some).
const MIN_LONG_EDGES_SUPPORT: f32 = 0.7;
/// Share each long edge on its own must have backed.
const MIN_LONG_EDGE_SUPPORT: f32 = 0.45;
/// How far past each end (a share of the card's length) the long edges are checked for running
/// on, and the share of backed points there that says they do (the card does not end there).
const RUN_ON_REACH: f32 = 0.15;
const MAX_RUN_ON_SUPPORT: f32 = 0.4;

/// A line walked through the work image one pixel at a time, with whether an edge pixel of its
/// direction backs each point.
#[derive(Default)]
struct Walk {
    line: Line,
    /// The first point inside the image and the unit direction of the walk (x growing, or y when
    /// the line is vertical).
    origin: (f32, f32),
    dir: (f32, f32),
    hits: Vec<bool>,
}

impl Walk {
    /// Walks `line` (reusing this walk's buffer); false when it is hardly inside the image.
    fn walk(&mut self, line: Line, edge_map: &[u8], w: usize, h: usize) -> bool {
        let Some((p, q)) = visible_part(&line, w as f32, h as f32) else {
            return false;
        };
        let (p, q) = if (q.0, q.1) < (p.0, p.1) {
            (q, p)
        } else {
            (p, q)
        };
        let len = (q.0 - p.0).hypot(q.1 - p.1);
        self.line = line;
        self.origin = p;
        self.dir = ((q.0 - p.0) / len, (q.1 - p.1) / len);
        self.hits.clear();
        for s in 0..len as usize {
            let (x, y) = self.at(s as f32);
            self.hits.push(edge_near(x, y, line.theta, edge_map, w, h));
        }
        true
    }

    fn at(&self, s: f32) -> (f32, f32) {
        (
            self.origin.0 + self.dir.0 * s,
            self.origin.1 + self.dir.1 * s,
        )
    }

    /// The point of this line nearest to `p`, as a step of the walk.
    fn step_of(&self, p: (f32, f32)) -> f32 {
        (p.0 - self.origin.0) * self.dir.0 + (p.1 - self.origin.1) * self.dir.1
    }

    fn hit(&self, s: f32) -> bool {
        s >= 0.0 && self.hits.get(s as usize).copied().unwrap_or(false)
    }
}

/// The card whose long edges lie on `a` and `b` (work pixels, frame `w` x `h`), at least
/// `min_gap` apart: the stretch of `a` one card length long (measured from the gap) where the two
/// together are best backed, both ending there (not backed past either end), and the quad it spans
/// rectifying to ID-1's aspect. Returns the card (work pixels, oriented) and its supported
/// length.
fn from_long_edges(
    a: &Walk,
    b: &Walk,
    min_gap: f32,
    (w, h): (f32, f32),
    prefix: &mut Vec<(u32, u32)>,
) -> Option<(CardQuad, f32)> {
    if angle_between(a.line.theta, b.line.theta) > LONG_EDGES_DEG {
        return None;
    }
    let (sb, cb) = b.line.theta.to_radians().sin_cos();
    let foot = |p: (f32, f32)| {
        let d = p.0 * cb + p.1 * sb - b.line.rho;
        (p.0 - d * cb, p.1 - d * sb)
    };
    let mid = a.at(a.hits.len() as f32 / 2.0);
    let gap = (mid.0 * cb + mid.1 * sb - b.line.rho).abs();
    let length = (gap * ID1_ASPECT).round() as usize;
    let n = a.hits.len();
    if gap < min_gap {
        return None;
    }
    // Backing of the two edges at each step of `a`.
    let backed = |s: usize| -> (u32, u32) {
        let on_b = b.step_of(foot(a.at(s as f32)));
        (a.hit(s as f32) as u32, b.hit(on_b) as u32)
    };
    prefix.clear();
    prefix.push((0u32, 0u32));
    for s in 0..n {
        let (x, y) = backed(s);
        let (pa, pb) = prefix[s];
        prefix.push((pa + x, pb + y));
    }
    let sum = |from: usize, to: usize| {
        let (from, to) = (from.min(n), to.min(n));
        let (a0, b0) = prefix[from];
        let (a1, b1) = prefix[to.max(from)];
        (a1 - a0, b1 - b0, (to.max(from) - from) as u32)
    };
    // Where the card would end, the edges must be seen going no further: a card reaching the
    // frame's border may be cut off there.
    let reach = (length as f32 * RUN_ON_REACH) as usize;
    if length + 2 * reach > n {
        return None;
    }
    let mut best: Option<(f32, usize)> = None;
    for start in reach..=n - length - reach {
        let (ha, hb, span) = sum(start, start + length);
        let (sa, sb) = (ha as f32 / span as f32, hb as f32 / span as f32);
        let both = (sa + sb) / 2.0;
        if both < MIN_LONG_EDGES_SUPPORT || sa.min(sb) < MIN_LONG_EDGE_SUPPORT {
            continue;
        }
        let runs_on = |from: usize, to: usize| {
            let (ha, hb, span) = sum(from, to);
            span > 0 && (ha + hb) as f32 / (2 * span) as f32 > MAX_RUN_ON_SUPPORT
        };
        if runs_on(start.saturating_sub(reach), start.saturating_sub(2))
            || runs_on(start + length + 2, start + length + reach)
        {
            continue;
        }
        if best.is_none_or(|(b, _)| both > b) {
            best = Some((both, start));
        }
    }
    let (support, start) = best?;
    let (a0, a1) = (a.at(start as f32), a.at((start + length) as f32));
    let quad = orient(quad_from_corners([a0, a1, foot(a1), foot(a0)], w, h)?);
    let aspect = rectified_aspect(&quad, (w / 2.0, h / 2.0), w);
    if !(-ASPECT_TOLERANCE_NARROW..=ASPECT_TOLERANCE).contains(&(aspect / ID1_ASPECT - 1.0)) {
        return None;
    }
    let card = CardQuad {
        corners: quad,
        cut_off: false,
        support,
    };
    Some((card, support * 2.0 * length as f32))
}

/// The part of `line` inside a `w` x `h` image (Liang-Barsky clipping), if a few pixels long.
fn visible_part(line: &Line, w: f32, h: f32) -> Option<((f32, f32), (f32, f32))> {
    let (s, c) = line.theta.to_radians().sin_cos();
    let p0 = (line.rho * c, line.rho * s);
    let d = (-s, c);
    let (mut t0, mut t1) = (f32::NEG_INFINITY, f32::INFINITY);
    for (p, dd, hi) in [(p0.0, d.0, w - 1.0), (p0.1, d.1, h - 1.0)] {
        if dd.abs() < 1e-6 {
            if p < 0.0 || p > hi {
                return None;
            }
            continue;
        }
        let (u, v) = ((0.0 - p) / dd, (hi - p) / dd);
        t0 = t0.max(u.min(v));
        t1 = t1.min(u.max(v));
    }
    (t1 - t0 > 4.0).then_some((
        (p0.0 + t0 * d.0, p0.1 + t0 * d.1),
        (p0.0 + t1 * d.0, p0.1 + t1 * d.1),
    ))
}

/// Whether an edge pixel of direction `theta` (+-20 degrees) lies within a pixel of (x, y).
fn edge_near(x: f32, y: f32, theta: f32, edge_map: &[u8], w: usize, h: usize) -> bool {
    let (xi, yi) = (x.round() as isize, y.round() as isize);
    for dy in -1..=1 {
        for dx in -1..=1 {
            let (xx, yy) = (xi + dx, yi + dy);
            if xx < 0 || yy < 0 || xx >= w as isize || yy >= h as isize {
                continue;
            }
            let d = edge_map[yy as usize * w + xx as usize];
            if d != 255 && angle_between(d as f32, theta) <= 20.0 {
                return true;
            }
        }
    }
    false
}

/// Whether a quad leaning on the frame's border (`sides[i]` runs from corner i-1 to corner i)
/// could be part of a card: the side opposite the border is a whole card edge, so the card
/// reaches no further from it than the card's other dimension ([`MAX_CUT_OFF_DEPTH`]). A
/// card's edge joined with a door frame or a picture's edge reaching the border is too deep.
fn plausible_cut_off(corners: &[(f32, f32); 4], sides: &[Line; 4]) -> bool {
    let Some(b) = sides.iter().position(|l| l.border) else {
        return true;
    };
    let side = |i: usize| {
        let (p, q) = (corners[(i + 3) % 4], corners[i % 4]);
        (p.0 - q.0).hypot(p.1 - q.1)
    };
    let far = side(b + 2);
    let depth = side(b + 1).max(side(b + 3));
    let other = if far >= depth {
        far / ID1_ASPECT
    } else {
        far * ID1_ASPECT
    };
    depth <= other * MAX_CUT_OFF_DEPTH
}

/// Aspect (width / height) of the rectangle whose image is `corners` (top-left, top-right,
/// bottom-right, bottom-left) under a pinhole camera with its principal point at `centre`
/// (Zhang and He, "Whiteboard scanning and image enhancement", 2007). The focal length is
/// estimated from the quad's perspective when that is plausible (0.5 to 4 frame widths, given as
/// `fallback_focal`), else `fallback_focal`; seen square-on it does not matter.
pub(crate) fn rectified_aspect(
    corners: &[(f32, f32); 4],
    centre: (f32, f32),
    fallback_focal: f32,
) -> f32 {
    let m = |i: usize| {
        let (x, y) = corners[i];
        [(x - centre.0) as f64, (y - centre.1) as f64, 1.0f64]
    };
    // Zhang's numbering: m1 (0, 0), m2 (w, 0), m3 (0, h), m4 (w, h).
    let (m1, m2, m3, m4) = (m(0), m(1), m(3), m(2));
    let cross = |a: [f64; 3], b: [f64; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let (d2, d3) = (dot(cross(m2, m4), m3), dot(cross(m3, m4), m2));
    let plain = || {
        let len = |a: (f32, f32), b: (f32, f32)| (a.0 - b.0).hypot(a.1 - b.1);
        (len(corners[0], corners[1]) + len(corners[3], corners[2]))
            / (len(corners[0], corners[3]) + len(corners[1], corners[2])).max(1e-3)
    };
    if d2.abs() < 1e-9 || d3.abs() < 1e-9 {
        return plain();
    }
    let k2 = dot(cross(m1, m4), m3) / d2;
    let k3 = dot(cross(m1, m4), m2) / d3;
    let n2 = [k2 * m2[0] - m1[0], k2 * m2[1] - m1[1], k2 * m2[2] - m1[2]];
    let n3 = [k3 * m3[0] - m1[0], k3 * m3[1] - m1[1], k3 * m3[2] - m1[2]];
    let fallback = fallback_focal as f64;
    let f2 = if (n2[2] * n3[2]).abs() > 1e-12 {
        -(n2[0] * n3[0] + n2[1] * n3[1]) / (n2[2] * n3[2])
    } else {
        -1.0
    };
    let f2 = if f2 > (0.5 * fallback).powi(2) && f2 < (4.0 * fallback).powi(2) {
        f2
    } else {
        fallback * fallback
    };
    let num = n2[0] * n2[0] + n2[1] * n2[1] + f2 * n2[2] * n2[2];
    let den = n3[0] * n3[0] + n3[1] * n3[1] + f2 * n3[2] * n3[2];
    if !(num > 0.0 && den > 0.0) {
        return plain();
    }
    (num / den).sqrt() as f32
}

/// A whole quad (oriented, work pixels) fitted to ID-1: kept when it rectifies to the card's
/// aspect, dropped when narrower; when wider (fingers over the short edges, or the background
/// beside them, stood in for the card's ends) the long edges are kept and the short edges placed
/// where, one card length apart along them, edges back them best.
fn fit_id1(
    quad: &[(f32, f32); 4],
    frame: (f32, f32),
    edge_map: &[u8],
    w: usize,
    h: usize,
) -> Option<[(f32, f32); 4]> {
    let aspect = rectified_aspect(quad, (frame.0 / 2.0, frame.1 / 2.0), frame.0);
    let off = aspect / ID1_ASPECT - 1.0;
    if (-ASPECT_TOLERANCE_NARROW..=ASPECT_TOLERANCE).contains(&off) {
        return Some(*quad);
    }
    if off < 0.0 {
        return None;
    }
    // Rectified coordinates: [0, aspect] x [0, 1]; the card is ID1_ASPECT long in them.
    let hom = homography(quad, aspect, 1.0)?;
    let at = |u: f32, v: f32| apply(&hom, u as f64, v as f64);
    // A short edge ends at the long ones: a line that runs on past them (a door frame, the
    // edge of a picture behind the card) backs nothing.
    let support_at = |u: f32| {
        let (a, b) = (at(u, 0.0), at(u, 1.0));
        let theta = (b.0 - a.0)
            .atan2(-(b.1 - a.1))
            .to_degrees()
            .rem_euclid(180.0);
        let runs_on = [(-OVERRUN_REACH, -0.02), (1.02, 1.0 + OVERRUN_REACH)]
            .iter()
            .any(|&(v0, v1)| {
                segment_support(at(u, v0), at(u, v1), theta, edge_map, w, h)
                    .is_some_and(|s| s > MAX_OVERRUN_SUPPORT)
            });
        if runs_on {
            return 0.0;
        }
        segment_support(a, b, theta, edge_map, w, h).unwrap_or(0.0)
    };
    // The long edges end where the card does: past it (fingers, the background) they are
    // not backed, so a window sliding off the card loses support there.
    let long_support = |u0: f32, u1: f32| {
        [0.0f32, 1.0]
            .iter()
            .map(|&v| {
                let (a, b) = (at(u0, v), at(u1, v));
                let theta = (b.0 - a.0)
                    .atan2(-(b.1 - a.1))
                    .to_degrees()
                    .rem_euclid(180.0);
                segment_support(a, b, theta, edge_map, w, h).unwrap_or(0.0)
            })
            .sum::<f32>()
    };
    let long_px = (quad[1].0 - quad[0].0).hypot(quad[1].1 - quad[0].1);
    let steps = (((aspect - ID1_ASPECT) / aspect) * long_px).ceil().max(1.0) as usize;
    let mut best: Option<(f32, f32)> = None;
    for s in 0..=steps {
        let u0 = (aspect - ID1_ASPECT) * s as f32 / steps as f32;
        let (left, right) = (support_at(u0), support_at(u0 + ID1_ASPECT));
        if left.max(right) < MIN_TRIMMED_SIDE_SUPPORT {
            continue;
        }
        let score = left + right + long_support(u0, u0 + ID1_ASPECT);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, u0));
        }
    }
    let (_, u0) = best?;
    let u1 = u0 + ID1_ASPECT;
    Some([at(u0, 0.0), at(u1, 0.0), at(u1, 1.0), at(u0, 1.0)])
}

/// A quad found on the `k`-times downscaled work image, in frame pixels (work pixel centres sit
/// at k * (x + 0.5)) and oriented.
fn to_frame(mut card: CardQuad, k: usize) -> CardQuad {
    for c in card.corners.iter_mut() {
        *c = ((c.0 + 0.5) * k as f32, (c.1 + 0.5) * k as f32);
    }
    card.corners = orient(card.corners);
    card
}

/// Corners of the quad bounded by lines [a1, b1, a2, b2] (a's parallel, b's parallel), in
/// order, if it is convex, inside the frame (a little slack) and of a card's size and aspect
/// (any aspect when `partial`: one side is the frame's border).
fn quad_from(sides: &[Line; 4], w: f32, h: f32, partial: bool) -> Option<[(f32, f32); 4]> {
    let mut corners = [(0.0, 0.0); 4];
    for i in 0..4 {
        corners[i] = sides[i].intersect(&sides[(i + 1) % 4])?;
    }
    plausible_quad(corners, w, h, partial)
}

/// `corners` (in order around the quad) of a whole card if they are convex, inside the frame and
/// of a card's size and aspect.
fn quad_from_corners(corners: [(f32, f32); 4], w: f32, h: f32) -> Option<[(f32, f32); 4]> {
    plausible_quad(corners, w, h, false)
}

/// [`quad_from`]'s checks on the corners.
fn plausible_quad(
    corners: [(f32, f32); 4],
    w: f32,
    h: f32,
    partial: bool,
) -> Option<[(f32, f32); 4]> {
    let slack = 3.0;
    if corners
        .iter()
        .any(|&(x, y)| x < -slack || y < -slack || x > w + slack || y > h + slack)
    {
        return None;
    }
    // Convex: every turn has the same sign.
    let cross = |i: usize| {
        let (a, b, c) = (corners[i], corners[(i + 1) % 4], corners[(i + 2) % 4]);
        (b.0 - a.0) * (c.1 - b.1) - (b.1 - a.1) * (c.0 - b.0)
    };
    let turns: Vec<f32> = (0..4).map(cross).collect();
    if !(turns.iter().all(|&t| t > 0.0) || turns.iter().all(|&t| t < 0.0)) {
        return None;
    }
    let area = 0.5
        * (0..4)
            .map(|i| {
                let (a, b) = (corners[i], corners[(i + 1) % 4]);
                a.0 * b.1 - b.0 * a.1
            })
            .sum::<f32>()
            .abs();
    let share = area / (w * h);
    if !AREA_RANGE.contains(&share) || (partial && share > MAX_CUT_OFF_AREA) {
        return None;
    }
    let len = |i: usize| {
        let (a, b) = (corners[i], corners[(i + 1) % 4]);
        ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
    };
    let (s0, s1) = ((len(0) + len(2)) / 2.0, (len(1) + len(3)) / 2.0);
    let aspect = s0.max(s1) / s0.min(s1).max(1.0);
    // Only part of a cut-off card shows: its aspect says nothing.
    (partial || ASPECT_RANGE.contains(&aspect)).then_some(corners)
}

/// Share of the points on the segment a-b (one per pixel) with an edge pixel of direction
/// `theta` (+-20 degrees) within a pixel; points outside the frame are skipped. `None` when the
/// whole segment is outside.
fn segment_support(
    a: (f32, f32),
    b: (f32, f32),
    theta: f32,
    edge_map: &[u8],
    w: usize,
    h: usize,
) -> Option<f32> {
    let len = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    let n = (len as usize).max(2);
    let (mut hits, mut inside) = (0usize, 0usize);
    for s in 0..n {
        let t = (s as f32 + 0.5) / n as f32;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        let (xi, yi) = (x.round() as isize, y.round() as isize);
        if xi < 0 || yi < 0 || xi >= w as isize || yi >= h as isize {
            continue;
        }
        inside += 1;
        hits += edge_near(x, y, theta, edge_map, w, h) as usize;
    }
    (inside > 0).then(|| hits as f32 / inside as f32)
}

/// Edge support of a quad: for each measured side, the share of its points with an edge pixel of
/// matching direction within a pixel. A card's edges end at its corners: a quad that leans on the
/// frame's border is dropped when one of its sides runs on strongly past a corner (a door frame,
/// a picture's edge meeting the border), a whole quad when one of its long sides does (its short
/// side is a line inside the card). A whole quad's short sides need less support than its long
/// ones: fingers cover them.
/// Returns (score, mean support) when every measured side is supported; the score is the
/// supported length (border sides add nothing).
fn score_quad(
    corners: &[(f32, f32); 4],
    sides: &[Line; 4],
    edge_map: &[u8],
    w: usize,
    h: usize,
) -> Option<(f32, f32)> {
    let mut score = 0.0;
    let mut supports = 0.0;
    let mut measured = 0;
    let partial = sides.iter().any(|l| l.border);
    let side_len = |i: usize| {
        let (a, b) = (corners[(i + 3) % 4], corners[i]);
        ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
    };
    // Sides 0 and 2 are one parallel pair, 1 and 3 the other.
    let short_pair = if side_len(0) + side_len(2) < side_len(1) + side_len(3) {
        0
    } else {
        1
    };
    for i in 0..4 {
        // corners[i] = side i x side i+1, so side i runs from corners[i-1] to corners[i].
        let line = sides[i];
        if line.border {
            continue;
        }
        let (a, b) = (corners[(i + 3) % 4], corners[i]);
        let len = side_len(i);
        let support = segment_support(a, b, line.theta, edge_map, w, h)?;
        let needed = if !partial && i % 2 == short_pair {
            MIN_SHORT_SIDE_SUPPORT
        } else {
            MIN_SIDE_SUPPORT
        };
        if support < needed {
            return None;
        }
        // A quad leaning on the border: past each end of its sides, by a fifth of the side (a
        // margin of 3 px keeps the corner itself out).
        let (ux, uy) = ((b.0 - a.0) / len.max(1.0), (b.1 - a.1) / len.max(1.0));
        let reach = len * OVERRUN_REACH;
        // A whole quad's long sides too: one that runs on past a corner has its short side
        // inside the card (a column of left-aligned text beside a finger-covered edge).
        let long = i % 2 != short_pair;
        for (from, dir) in [(b, 1.0), (a, -1.0)]
            .into_iter()
            .filter(|_| partial || long)
        {
            let start = (from.0 + dir * ux * 3.0, from.1 + dir * uy * 3.0);
            let end = (from.0 + dir * ux * reach, from.1 + dir * uy * reach);
            if segment_support(start, end, line.theta, edge_map, w, h)
                .is_some_and(|s| s > MAX_OVERRUN_SUPPORT)
            {
                return None;
            }
        }
        score += support * len;
        supports += support;
        measured += 1;
    }
    (measured >= 3).then(|| (score, supports / measured as f32))
}

/// Orders corners top-left, top-right, bottom-right, bottom-left (clockwise on screen), with
/// the long sides at the top and bottom.
fn orient(corners: [(f32, f32); 4]) -> [(f32, f32); 4] {
    let cx = corners.iter().map(|c| c.0).sum::<f32>() / 4.0;
    let cy = corners.iter().map(|c| c.1).sum::<f32>() / 4.0;
    let mut sorted = corners;
    // Clockwise on screen (y down) is increasing atan2.
    sorted.sort_by(|a, b| {
        (a.1 - cy)
            .atan2(a.0 - cx)
            .total_cmp(&(b.1 - cy).atan2(b.0 - cx))
    });
    // Start at the corner nearest the top-left.
    let start = (0..4)
        .min_by(|&i, &j| (sorted[i].0 + sorted[i].1).total_cmp(&(sorted[j].0 + sorted[j].1)))
        .unwrap_or(0);
    let mut out = [(0.0, 0.0); 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = sorted[(start + i) % 4];
    }
    let len = |a: (f32, f32), b: (f32, f32)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    let top = len(out[0], out[1]) + len(out[2], out[3]);
    let left = len(out[1], out[2]) + len(out[3], out[0]);
    if left > top {
        // Held on its side: make the long side the top, reading from the upper-left corner.
        out = [out[3], out[0], out[1], out[2]];
    }
    out
}

/// The homography taking rectified-card pixels (u, v) to frame pixels: the four corners of
/// `[0, W] x [0, H]` onto the quad's corners. Row-major 3x3 with `h[8] = 1`.
pub fn homography(corners: &[(f32, f32); 4], width: f32, height: f32) -> Option<[f64; 9]> {
    let src = [
        (0.0, 0.0),
        (width as f64, 0.0),
        (width as f64, height as f64),
        (0.0, height as f64),
    ];
    let mut a = [[0.0f64; 9]; 8];
    for i in 0..4 {
        let (u, v) = src[i];
        let (x, y) = (corners[i].0 as f64, corners[i].1 as f64);
        a[2 * i] = [u, v, 1.0, 0.0, 0.0, 0.0, -u * x, -v * x, x];
        a[2 * i + 1] = [0.0, 0.0, 0.0, u, v, 1.0, -u * y, -v * y, y];
    }
    // Gaussian elimination with partial pivoting on the 8x8 system.
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (v, p) in r.iter_mut().zip(pivot_row.iter()).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut h = [0.0; 9];
    for i in 0..8 {
        h[i] = a[i][8] / a[i][i];
    }
    h[8] = 1.0;
    Some(h)
}

fn apply(h: &[f64; 9], u: f64, v: f64) -> (f32, f32) {
    let w = h[6] * u + h[7] * v + h[8];
    (
        ((h[0] * u + h[1] * v + h[2]) / w) as f32,
        ((h[3] * u + h[4] * v + h[5]) / w) as f32,
    )
}

/// The card cut out of `frame` and flattened to `width` x `height` (bilinear).
pub fn rectify(frame: &I420, card: &CardQuad, width: u32, height: u32) -> Option<RgbImage> {
    let h = homography(&card.corners, width as f32, height as f32)?;
    let mut out = RgbImage::new(width, height);
    for (v, row) in out
        .as_mut()
        .chunks_exact_mut(width as usize * 3)
        .enumerate()
    {
        for (u, px) in row.chunks_exact_mut(3).enumerate() {
            let (x, y) = apply(&h, u as f64 + 0.5, v as f64 + 0.5);
            let rgb = sample_rgb(frame, x, y);
            for (o, c) in px.iter_mut().zip(rgb) {
                *o = (c + 0.5) as u8;
            }
        }
    }
    Some(out)
}

/// Judges a capture: `card` found in a `frame_width`-wide frame, `rectified` its flattened image
/// (any size; measured at its own resolution).
pub fn judge(
    card: &CardQuad,
    rectified: &RgbImage,
    frame_width: usize,
    t: &CaptureThresholds,
) -> CaptureJudgement {
    let (w, h) = (rectified.width() as usize, rectified.height() as usize);
    let luma: Vec<u8> = rectified
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((p[0] as u32 * 77 + p[1] as u32 * 150 + p[2] as u32 * 29) >> 8) as u8)
        .collect();
    // Inset 3% so the card's own edge and the background never count.
    let (mx, my) = (w * 3 / 100, h * 3 / 100);
    let mut bright = 0usize;
    let mut total = 0usize;
    for y in my..h - my {
        for x in mx..w - mx {
            total += 1;
            bright += (luma[y * w + x] >= GLARE_LUMA) as usize;
        }
    }
    let glare = bright as f32 / total.max(1) as f32;
    // Sharpness at half resolution (so it does not depend on the rectified size much): mean
    // absolute 4-neighbour Laplacian.
    let (hw, hh) = (w / 2, h / 2);
    let half = |x: usize, y: usize| {
        let i = 2 * y * w + 2 * x;
        (luma[i] as i32 + luma[i + 1] as i32 + luma[i + w] as i32 + luma[i + w + 1] as i32) / 4
    };
    let mut lap = 0i64;
    let mut n = 0i64;
    for y in (my / 2).max(1)..hh - (my / 2).max(1) {
        for x in (mx / 2).max(1)..hw - (mx / 2).max(1) {
            let l =
                4 * half(x, y) - half(x - 1, y) - half(x + 1, y) - half(x, y - 1) - half(x, y + 1);
            lap += l.abs() as i64;
            n += 1;
        }
    }
    let sharpness = lap as f32 / n.max(1) as f32;
    let width_px = card.width_px();
    let width_share = width_px / frame_width.max(1) as f32;
    let side_ratio = card.side_ratio();
    let mut issues = Vec::new();
    if card.cut_off {
        issues.push(CaptureIssue::CutOff);
    }
    if width_share < t.min_width_share || width_px < t.min_width_px {
        issues.push(CaptureIssue::TooFar);
    }
    if side_ratio > t.max_side_ratio {
        issues.push(CaptureIssue::Tilted);
    }
    if glare > t.max_glare {
        issues.push(CaptureIssue::Glare);
    }
    if sharpness < t.min_sharpness {
        issues.push(CaptureIssue::Blur);
    }
    let score = width_share.min(0.8)
        * (sharpness / t.min_sharpness).min(3.0)
        * (1.0 - glare * 10.0).max(0.05)
        / side_ratio;
    CaptureJudgement {
        width_share,
        width_px,
        side_ratio,
        glare,
        sharpness,
        issues,
        score,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::actor::frame_of;
    use crate::testkit::card::render_card;
    use crate::testkit::render::RgbImage as TestImage;

    /// A light card with dark stripes (text-like) on a mid-grey background.
    fn card_art() -> TestImage {
        let mut card = TestImage::new(428, 270, [215, 225, 232]);
        for row in 0..6 {
            for y in 40 + row * 35..52 + row * 35 {
                for x in 30..(300 - row * 20) {
                    if (x / 6) % 3 != 0 {
                        card.set_pixel(x, y, [40, 40, 50]);
                    }
                }
            }
        }
        card
    }

    /// Finds the card in `img`, rectifies it at half size and judges it (640-wide frames).
    fn judged(img: &TestImage) -> CaptureJudgement {
        let planes = frame_of(img);
        let frame = planes.view();
        let found = find_card(&frame, &mut CardScratch::default()).expect("card found");
        let flat = rectify(&frame, &found, 428, 270).expect("rectified");
        judge(&found, &flat, 640, &CaptureThresholds::default())
    }

    #[test]
    fn finds_a_tilted_card_within_a_few_pixels() {
        let background = TestImage::new(640, 480, [90, 100, 110]);
        let card = card_art();
        // 428 px art at scale 0.9: 385 x 243 px, centred at (330, 250), rolled 8 degrees.
        let img = render_card(
            &card,
            &background,
            (330.0, 250.0),
            0.9,
            0.0,
            0.0,
            8.0,
            800.0,
        );
        let planes = frame_of(&img);
        let found = find_card(&planes.view(), &mut CardScratch::default()).expect("card found");
        assert!(!found.cut_off, "{found:?}");
        let (s, c) = 8f32.to_radians().sin_cos();
        let (hw, hh) = (428.0 * 0.9 / 2.0, 270.0 * 0.9 / 2.0);
        let truth = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
            .map(|(x, y)| (330.0 + x * c - y * s, 250.0 + x * s + y * c));
        for (f, t) in found.corners.iter().zip(truth) {
            let err = ((f.0 - t.0).powi(2) + (f.1 - t.1).powi(2)).sqrt();
            assert!(err < 5.0, "corner {f:?} vs truth {t:?}: {err:.1} px");
        }
        assert!(
            (found.width_px() - 385.2).abs() < 6.0,
            "{}",
            found.width_px()
        );
        // Rectified, the stripes come back level: row 0's dark band is at y 40..52 of 270.
        let flat = rectify(&planes.view(), &found, 428, 270).unwrap();
        let dark = |y: u32| {
            (60..200)
                .filter(|&x| flat.get_pixel(x, y).0[0] < 120)
                .count()
        };
        assert!(dark(46) > 60, "stripe row dark: {}", dark(46));
        assert!(dark(60) < 10, "gap row light: {}", dark(60));
        let j = judge(&found, &flat, 640, &CaptureThresholds::default());
        assert!(j.issues.is_empty(), "{j:?}");
    }

    #[test]
    fn a_card_past_the_frame_edge_is_cut_off_and_no_card_is_none() {
        let background = TestImage::new(640, 480, [90, 100, 110]);
        let img = render_card(
            &card_art(),
            &background,
            (560.0, 240.0),
            0.9,
            0.0,
            0.0,
            0.0,
            800.0,
        );
        let planes = frame_of(&img);
        let found =
            find_card(&planes.view(), &mut CardScratch::default()).expect("partial card found");
        assert!(found.cut_off, "{found:?}");
        let empty = frame_of(&background);
        assert!(find_card(&empty.view(), &mut CardScratch::default()).is_none());
    }

    #[test]
    fn glare_small_and_tilted_cards_are_judged() {
        let background = TestImage::new(640, 480, [90, 100, 110]);
        let mut art = card_art();
        for y in 60..200 {
            for x in 120..300 {
                art.set_pixel(x, y, [255, 255, 255]);
            }
        }
        let img = render_card(&art, &background, (320.0, 240.0), 0.9, 0.0, 0.0, 0.0, 800.0);
        let j = judged(&img);
        assert_eq!(j.issues, vec![CaptureIssue::Glare], "{j:?}");

        let img = render_card(
            &card_art(),
            &background,
            (320.0, 240.0),
            0.5,
            0.0,
            0.0,
            0.0,
            800.0,
        );
        let j = judged(&img);
        assert!(j.issues.contains(&CaptureIssue::TooFar), "{j:?}");

        let img = render_card(
            &card_art(),
            &background,
            (320.0, 240.0),
            0.9,
            35.0,
            0.0,
            0.0,
            500.0,
        );
        let j = judged(&img);
        assert!(j.issues.contains(&CaptureIssue::Tilted), "{j:?}");
    }

    /// Three fingers over each short edge, reaching past it with their ends in a straight line:
    /// the quad found is the card, not the card and the fingers.
    #[test]
    fn fingers_over_the_short_edges_do_not_widen_the_card() {
        use crate::testkit::actor::{holding_card_over, CardHold};
        let background = TestImage::new(640, 480, [90, 100, 110]);
        let hold = CardHold {
            centre: (320.0, 240.0),
            width_px: 400.0,
            fingers: true,
            ..CardHold::default()
        };
        // Settled (past the approach).
        let img = holding_card_over(&background, &card_art(), &hold, 45);
        let planes = frame_of(&img);
        let found = find_card(&planes.view(), &mut CardScratch::default()).expect("card found");
        assert!(!found.cut_off, "{found:?}");
        let aspect = rectified_aspect(&found.corners, (320.0, 240.0), 640.0);
        assert!(
            (aspect / ID1_ASPECT - 1.0).abs() < 0.05,
            "aspect {aspect} {found:?}"
        );
        // The card is about 400 px wide (the sway changes it a little); with the fingers it
        // would be 22 % wider.
        assert!(
            (found.width_px() - 400.0).abs() < 25.0,
            "{} {found:?}",
            found.width_px()
        );
    }

    #[test]
    fn rectified_aspect_undoes_perspective() {
        // A 4:3 picture frame square-on, and an ID-1 card tipped back 20 degrees (its far edge
        // shorter), both as the renderer draws them.
        let frame = [
            (100.0, 100.0),
            (400.0, 100.0),
            (400.0, 325.0),
            (100.0, 325.0),
        ];
        let a = rectified_aspect(&frame, (320.0, 240.0), 640.0);
        assert!((a - 4.0 / 3.0).abs() < 0.01, "{a}");
        let background = TestImage::new(640, 480, [90, 100, 110]);
        let art = TestImage::new(856, 540, [215, 225, 232]);
        let img = render_card(
            &art,
            &background,
            (320.0, 240.0),
            0.45,
            0.0,
            20.0,
            0.0,
            700.0,
        );
        let found = find_card(&frame_of(&img).view(), &mut CardScratch::default()).expect("card");
        let a = rectified_aspect(&found.corners, (320.0, 240.0), 640.0);
        assert!((a / ID1_ASPECT - 1.0).abs() < 0.06, "{a} {found:?}");
    }

    #[test]
    fn homography_maps_corners_exactly() {
        let corners = [(10.0, 20.0), (300.0, 35.0), (280.0, 210.0), (25.0, 190.0)];
        let h = homography(&corners, 856.0, 540.0).unwrap();
        for (c, (u, v)) in
            corners
                .iter()
                .zip([(0.0, 0.0), (856.0, 0.0), (856.0, 540.0), (0.0, 540.0)])
        {
            let p = apply(&h, u, v);
            assert!(
                (p.0 - c.0).abs() < 1e-3 && (p.1 - c.1).abs() < 1e-3,
                "{p:?} vs {c:?}"
            );
        }
    }
}
