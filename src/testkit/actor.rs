//! People (and photos) in front of the camera for end-to-end tests and benches: a rendered
//! person who follows the server's challenges as they arrive on the data channel, a replay of a
//! recorded person, and a printed photo tilted and slid about. All are `VideoSource::Reactive`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::card::{paint_card_plane, render_card};
use super::peer::{ReactiveVideo, VideoSource};
use super::render::{FaceEdit, HeadPose, HeadRenderer, RgbImage};
use crate::analysis::face::{FaceModels, FaceTracker};
use crate::analysis::image::rgb_to_i420;
use crate::analysis::quality::I420;
use crate::media::decode::{DecodedFrame, VideoCodec};

/// Frame rate of every actor.
pub const FPS: u32 = 15;

/// The packaged portrait as a well-framed selfie on a 640x480 canvas (face about 28% of the
/// width, centred) and a renderer for posed versions of it.
pub struct Stage {
    pub renderer: HeadRenderer,
}

impl Stage {
    /// From `stills/astronaut.png` (installed by scripts/setup); the face tracker supplies the mesh.
    pub fn astronaut(models: Arc<FaceModels>, stills: &Path) -> Result<Stage, String> {
        let img = image::open(stills.join("astronaut.png"))
            .map_err(|e| e.to_string())?
            .to_rgb8();
        let w = img.width() as usize;
        let rgb = img.into_raw();
        // The upper 256x256 around the face, scaled to fill the frame height.
        let crop: Vec<u8> = (0..256)
            .flat_map(|y| rgb[(y * w + 96) * 3..][..768].to_vec())
            .collect();
        let portrait = RgbImage::from_raw(256, 256, crop)?.resized(480, 480);
        let mut canvas = RgbImage::new(640, 480, [90, 100, 110]);
        canvas.blit(&portrait, 80, 0);
        let (y, u, v) = rgb_to_i420(640, 480, &canvas.data);
        let planes = I420 {
            width: 640,
            height: 480,
            y: &y,
            u: &u,
            v: &v,
            y_stride: 640,
            uv_stride: 320,
            full_range: false,
        };
        let face = FaceTracker::new(models, 0)
            .observe(&planes, Instant::now())
            .map_err(|e| e.to_string())?
            .face
            .ok_or("no face on the canvas")?;
        Ok(Stage {
            renderer: HeadRenderer::new(canvas, &face.landmarks)?,
        })
    }

    pub fn frame(&self, edit: &FaceEdit) -> DecodedFrame {
        frame_of(&self.renderer.render(edit).0)
    }
}

pub fn frame_of(img: &RgbImage) -> DecodedFrame {
    DecodedFrame::from_rgb(img.width, img.height, &img.data)
}

/// The challenge currently asked (the last `challenge` event not yet passed or failed) and how
/// long ago, in seconds of frames, this peer first saw it.
pub fn current_challenge(
    events: &[Value],
    seen: &Mutex<HashMap<u64, u64>>,
    index: u64,
) -> Option<(String, f32)> {
    let mut open: Option<&Value> = None;
    for e in events {
        match e["type"].as_str() {
            Some("challenge") => open = Some(e),
            Some("challenge_passed") | Some("challenge_failed")
                if open.is_some_and(|o| o["id"] == e["id"]) =>
            {
                open = None
            }
            _ => {}
        }
    }
    let c = open?;
    let id = c["id"].as_u64()?;
    let first = *seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id)
        .or_insert(index);
    Some((
        c["action"].as_str()?.to_string(),
        (index - first) as f32 / FPS as f32,
    ))
}

/// How far into an action the person is at `t` seconds: ramp up, hold, ramp back. Held long
/// enough that a loaded machine analysing fewer frames still sees the peak.
pub fn progress(t: f32) -> f32 {
    match t {
        t if t < 0.3 => 0.0,
        t if t < 0.8 => (t - 0.3) / 0.5,
        t if t < 2.0 => 1.0,
        t if t < 2.5 => 1.0 - (t - 2.0) / 0.5,
        _ => 0.0,
    }
}

/// A person never holds perfectly still: a slight sway and bob.
pub fn idle(index: u64) -> FaceEdit {
    let t = index as f32 / FPS as f32;
    FaceEdit {
        offset: ((t * 1.3).sin() * 3.0, (t * 0.9).cos() * 2.0),
        ..FaceEdit::posed((t * 0.8).sin() * 1.5, (t * 0.6).cos() * 1.0, 0.0)
    }
}

/// A person doing `action` (`t` seconds after it was asked), on top of their idle motion.
pub fn perform(action: &str, t: f32, index: u64) -> FaceEdit {
    let p = progress(t);
    let base = idle(index);
    let posed = |yaw: f32, pitch: f32| FaceEdit {
        pose: HeadPose {
            yaw: base.pose.yaw + yaw,
            pitch: base.pose.pitch + pitch,
            roll: 0.0,
        },
        ..base
    };
    match action {
        "turn_left" => posed(25.0 * p, 0.0),
        "turn_right" => posed(-25.0 * p, 0.0),
        "look_up" => posed(0.0, 22.0 * p),
        "look_down" => posed(0.0, -22.0 * p),
        "blink" => FaceEdit {
            eyes_closed: if (0.5..1.3).contains(&t) { 1.0 } else { 0.0 },
            ..base
        },
        "open_mouth" => FaceEdit {
            mouth_open: p,
            ..base
        },
        // Moving closer stays closer.
        "move_closer" => FaceEdit {
            scale: 1.0 + 0.45 * ((t - 0.3) / 0.5).clamp(0.0, 1.0),
            ..base
        },
        _ => base,
    }
}

fn reactive(frame: Box<super::peer::FrameFn>) -> VideoSource {
    VideoSource::Reactive(Arc::new(ReactiveVideo {
        codec: VideoCodec::Vp8,
        fps: FPS,
        bitrate_kbps: 900,
        frame,
    }))
}

/// A rendered person who follows the challenges; every edit is appended to `recording`.
pub fn live_person(stage: Arc<Stage>, recording: Arc<Mutex<Vec<FaceEdit>>>) -> VideoSource {
    live_person_at(stage, recording, 1.0)
}

/// A rendered person who follows the challenges with their face `face_scale` times the size of
/// the stage's own framing: small values sit far from the camera, 2.8 fills the frame (too close).
pub fn live_person_at(
    stage: Arc<Stage>,
    recording: Arc<Mutex<Vec<FaceEdit>>>,
    face_scale: f32,
) -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    reactive(Box::new(move |index, events| {
        let mut edit = match current_challenge(events, &seen, index) {
            Some((action, t)) => perform(&action, t, index),
            None => idle(index),
        };
        edit.scale *= face_scale;
        recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(edit);
        stage.frame(&edit)
    }))
}

/// A rendered person who follows the challenges and, when asked for their ID, holds `card` up
/// as `hold` says (the approach starts when the step is announced).
pub fn live_person_with_card(
    stage: Arc<Stage>,
    card: Arc<RgbImage>,
    hold: CardHold,
) -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    reactive(Box::new(move |index, events| {
        match current_challenge(events, &seen, index) {
            Some((action, t)) if action == "show_document" => {
                frame_of(&holding_card(&stage, &card, &hold, (t * FPS as f32) as u64))
            }
            Some((action, t)) => stage.frame(&perform(&action, t, index)),
            None => stage.frame(&idle(index)),
        }
    }))
}

/// Card-like things behind the person, away from the face: a picture frame (a dark border around
/// a lighter print, about ID-1 proportions), a bright window with a mullion, a dark book and a
/// phone-sized slab with a bright screen. Drawn on `img` in place.
pub fn furnish(img: &mut RgbImage) {
    let mut fill = |x0: usize, y0: usize, w: usize, h: usize, rgb: [u8; 3]| {
        for y in y0..(y0 + h).min(img.height) {
            for x in x0..(x0 + w).min(img.width) {
                img.set_pixel(x, y, rgb);
            }
        }
    };
    // Picture frame: 8 px dark wood around a pale print, 158 x 100.
    fill(18, 28, 158, 100, [70, 45, 30]);
    fill(26, 36, 142, 84, [200, 190, 170]);
    fill(60, 60, 50, 30, [120, 140, 90]);
    // Window: bright panes, a dark frame and a mullion.
    fill(490, 16, 136, 170, [60, 60, 60]);
    fill(498, 24, 120, 154, [235, 240, 250]);
    fill(556, 24, 6, 154, [60, 60, 60]);
    fill(498, 98, 120, 6, [60, 60, 60]);
    // A book lying on a shelf and a phone with its screen on.
    fill(24, 350, 120, 76, [40, 60, 110]);
    fill(560, 330, 64, 120, [20, 20, 20]);
    fill(566, 338, 52, 104, [180, 200, 230]);
}

/// A rendered person in a furnished room ([`furnish`]) who follows the challenges and, when asked
/// for their ID, holds `card` up as `hold` says, or never shows one (`card` is `None`).
pub fn live_person_in_room(
    stage: Arc<Stage>,
    card: Option<Arc<RgbImage>>,
    hold: CardHold,
) -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    reactive(Box::new(move |index, events| {
        let edit = match current_challenge(events, &seen, index) {
            Some((action, t)) if action == "show_document" => {
                if let Some(card) = &card {
                    let mut person = stage.renderer.render(&idle(index)).0;
                    furnish(&mut person);
                    let k = (t * FPS as f32) as u64;
                    return frame_of(&holding_card_over(&person, card, &hold, k));
                }
                idle(index)
            }
            Some((action, t)) => perform(&action, t, index),
            None => idle(index),
        };
        let mut img = stage.renderer.render(&edit).0;
        furnish(&mut img);
        frame_of(&img)
    }))
}

/// Document hints (`guidance` events with `source: document`) active at the end of `events`.
pub fn active_document_hints(events: &[Value]) -> Vec<String> {
    let mut active: Vec<String> = Vec::new();
    for e in events
        .iter()
        .filter(|e| e["type"] == "guidance" && e["source"] == "document")
    {
        let Some(code) = e["code"].as_str() else {
            continue;
        };
        active.retain(|c| c != code);
        if e["active"] == true {
            active.push(code.to_string());
        }
    }
    active
}

/// A rendered person in a furnished room who follows the challenges and then the document
/// step's hints: no card until asked to show it (`DOCUMENT_NOT_SHOWN`), then held up far away
/// (about half of `hold`'s width: too far), brought closer as `hold` says once told
/// `DOCUMENT_TOO_FAR`.
pub fn live_person_in_room_following_hints(
    stage: Arc<Stage>,
    card: Arc<RgbImage>,
    hold: CardHold,
) -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    // (phase: 0 card down, 1 held far, 2 brought closer; frame index the phase began)
    let state = Mutex::new((0u8, 0u64));
    reactive(Box::new(move |index, events| {
        let edit = match current_challenge(events, &seen, index) {
            Some((action, _)) if action == "show_document" => {
                let hints = active_document_hints(events);
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                if st.0 == 0 && hints.iter().any(|c| c == "DOCUMENT_NOT_SHOWN") {
                    *st = (1, index);
                } else if st.0 == 1 && hints.iter().any(|c| c == "DOCUMENT_TOO_FAR") {
                    *st = (2, index);
                }
                let (phase, since) = *st;
                drop(st);
                let mut person = stage.renderer.render(&idle(index)).0;
                furnish(&mut person);
                if phase == 0 {
                    return frame_of(&person);
                }
                let far = hold.width_px * 0.55;
                let k = index - since;
                let shown = match phase {
                    1 => CardHold {
                        width_px: far,
                        ..hold
                    },
                    _ => {
                        let t = (k as f32 / FPS as f32 / 0.8).clamp(0.0, 1.0);
                        CardHold {
                            width_px: far + (hold.width_px - far) * t,
                            ..hold
                        }
                    }
                };
                // Past the approach: the card is up; only its size changes.
                let k = if phase == 1 {
                    k
                } else {
                    k + (hold.approach_s * FPS as f32) as u64 + 1
                };
                return frame_of(&holding_card_over(&person, &card, &shown, k));
            }
            Some((action, t)) => perform(&action, t, index),
            None => idle(index),
        };
        let mut img = stage.renderer.render(&edit).0;
        furnish(&mut img);
        frame_of(&img)
    }))
}

/// A recording of a person, looped frame by frame whatever the server asks (a replay attack).
pub fn replay(stage: Arc<Stage>, recording: Vec<FaceEdit>) -> VideoSource {
    reactive(Box::new(move |index, _| {
        let edit = recording
            .get(index as usize % recording.len().max(1))
            .copied()
            .unwrap_or_default();
        stage.frame(&edit)
    }))
}

/// A printed photo of the person held up to the camera, tilted for turns and nods and slid about.
pub fn photo_attack(stage: Arc<Stage>) -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    let photo = stage.renderer.render(&FaceEdit::default()).0;
    let background = RgbImage::new(640, 480, [120, 118, 110]);
    reactive(Box::new(move |index, events| {
        let (mut yaw, mut pitch) = (0.0, 0.0);
        if let Some((action, t)) = current_challenge(events, &seen, index) {
            let p = progress(t);
            match action.as_str() {
                "turn_left" => yaw = 40.0 * p,
                "turn_right" => yaw = -40.0 * p,
                "look_up" => pitch = 35.0 * p,
                "look_down" => pitch = -35.0 * p,
                _ => {}
            }
        }
        let slide = (index as f32 * 0.15).sin() * 25.0;
        frame_of(&render_card(
            &photo,
            &background,
            (320.0 + slide, 240.0),
            0.95,
            yaw,
            pitch,
            slide * 0.1,
            800.0,
        ))
    }))
}

/// How a person holds their ID card up in a clip: where the card settles, its size and tilt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CardHold {
    /// Card centre in the frame once settled (pixels).
    pub centre: (f32, f32),
    /// Card width in the frame once settled (pixels).
    pub width_px: f32,
    pub roll: f32,
    pub yaw: f32,
    pub pitch: f32,
    /// Seconds spent bringing the card up from far away (too small to read) before settling.
    pub approach_s: f32,
    /// Held by its short edges: three fingers over each, reaching past the card (their ends
    /// line up, a straight edge beside the card's own).
    pub fingers: bool,
}

impl Default for CardHold {
    fn default() -> Self {
        CardHold {
            centre: (320.0, 330.0),
            width_px: 400.0,
            roll: 0.0,
            yaw: 0.0,
            pitch: 0.0,
            approach_s: 0.8,
            fingers: false,
        }
    }
}

/// Frame `index` of a person (idle) holding `card` (a rectified card image) in front of the
/// camera: it comes up from a small, far position, then settles with a slight hand sway.
pub fn holding_card(stage: &Stage, card: &RgbImage, hold: &CardHold, index: u64) -> RgbImage {
    let person = stage.renderer.render(&idle(index)).0;
    holding_card_over(&person, card, hold, index)
}

/// `card` held up as `hold` says over the picture `person` (`index` frames into the step).
pub fn holding_card_over(
    person: &RgbImage,
    card: &RgbImage,
    hold: &CardHold,
    index: u64,
) -> RgbImage {
    let t = index as f32 / FPS as f32;
    let settle = (t / hold.approach_s.max(0.01)).clamp(0.0, 1.0);
    let width = hold.width_px * (0.5 + 0.5 * settle);
    let (sx, sy) = ((t * 2.1).sin() * 4.0, (t * 1.7).cos() * 3.0);
    let centre = (
        hold.centre.0 + sx,
        hold.centre.1 + sy + 30.0 * (1.0 - settle),
    );
    let scale = width / card.width as f32;
    let (yaw, pitch, roll) = (
        hold.yaw + (t * 1.3).sin() * 3.0,
        hold.pitch + (t * 1.1).cos() * 2.0,
        hold.roll + (t * 1.9).sin() * 1.5,
    );
    let mut out = render_card(card, person, centre, scale, yaw, pitch, roll, 900.0);
    if hold.fingers {
        let (w, h) = (card.width as f64, card.height as f64);
        paint_card_plane(
            &mut out,
            (card.width, card.height),
            centre,
            scale,
            yaw,
            pitch,
            roll,
            900.0,
            |u, v| finger_at(u / w, v / h),
        );
    }
    out
}

/// Skin of the fingers holding a card by its short edges, at (x, y) in shares of the card:
/// three fingers each side over 22-74 % of the edge, from 11 % of the card's length outside
/// it to 4.5 % over it, rounded at the tips, shaded across (a crease between them).
fn finger_at(x: f64, y: f64) -> Option<[u8; 3]> {
    const FINGERS: [(f64, f64); 3] = [(0.22, 0.38), (0.40, 0.56), (0.58, 0.74)];
    const OUTSIDE: f64 = 0.11;
    const OVER: f64 = 0.045;
    // Distance into the card from the nearer short edge (negative outside it).
    let depth = if x < 0.5 { x } else { 1.0 - x };
    if !(-OUTSIDE..=OVER).contains(&depth) {
        return None;
    }
    let (y0, y1) = FINGERS
        .iter()
        .copied()
        .find(|(a, b)| (*a..*b).contains(&y))?;
    let (mid, half) = ((y0 + y1) / 2.0, (y1 - y0) / 2.0);
    // The tip is a half-disc (in card shares, the card's height is 1/1.586 of its length).
    let across = (y - mid) / half;
    let tip_start = OVER - half / 1.586;
    if depth > tip_start {
        let along = (depth - tip_start) / (half / 1.586);
        if along * along + across * across > 1.0 {
            return None;
        }
    }
    let shade = 1.0 - 0.35 * across * across;
    Some([205.0 * shade, 158.0 * shade, 128.0 * shade].map(|c| c as u8))
}
