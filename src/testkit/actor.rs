//! People (and photos) in front of the camera for end-to-end tests and benches: a rendered
//! person who follows the server's challenges as they arrive on the data channel, a replay of a
//! recorded person, and a printed photo tilted and slid about. All are `VideoSource::Reactive`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::card::{paint_card_plane, render_card};
use super::clip::{encode_frames, EncodedFrame, EncodedVideo, VideoCodec as ClipCodec};
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
    current_challenge_at(events, seen, index, FPS)
}

/// [`current_challenge`] for a source producing `rate` items (frames, audio packets) a second.
pub fn current_challenge_at(
    events: &[Value],
    seen: &Mutex<HashMap<u64, u64>>,
    index: u64,
    rate: u32,
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
        (index - first) as f32 / rate.max(1) as f32,
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
        // Reading the digits aloud: the lips open with each syllable of the voice
        // (`voice::speaking`, the same timing the microphone follows).
        "speak_digits" => FaceEdit {
            mouth_open: 0.8 * super::voice::speaking(t),
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
        let screen = screen_light_now(events, &seen, index);
        frame_of(&render_lit(
            &stage,
            &edit,
            face_scale,
            screen,
            index,
            |_| {},
        ))
    }))
}

/// The stage rendered with `edit` and `decorate`d (a furnished room), its face reflecting the
/// page's `screen` light while the light step shows (default [`Lighting`], no sensor noise:
/// outside the step the picture is the stage's own).
fn render_lit(
    stage: &Stage,
    edit: &FaceEdit,
    face_scale: f32,
    screen: Option<[f32; 3]>,
    index: u64,
    decorate: impl FnOnce(&mut RgbImage),
) -> RgbImage {
    let (mut img, landmarks) = stage.renderer.render(edit);
    decorate(&mut img);
    if screen.is_some() {
        let lighting = Lighting {
            noise: 0.0,
            ..Lighting::default()
        };
        light_scene(&mut img, &landmarks, &lighting, face_scale, screen, index);
    }
    img
}

/// A rendered person who follows the motions but keeps the lips still in the spoken step: with
/// [`super::voice::speaking_person`] as the microphone, a voice played over a face that does
/// not speak.
pub fn live_person_with_still_lips(stage: Arc<Stage>) -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    reactive(Box::new(move |index, events| {
        let edit = match current_challenge(events, &seen, index) {
            Some((action, _)) if action == "speak_digits" => idle(index),
            Some((action, t)) => perform(&action, t, index),
            None => idle(index),
        };
        let screen = screen_light_now(events, &seen, index);
        frame_of(&render_lit(&stage, &edit, 1.0, screen, index, |_| {}))
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
            Some((action, t)) => {
                let screen = screen_light_now(events, &seen, index);
                let edit = perform(&action, t, index);
                frame_of(&render_lit(&stage, &edit, 1.0, screen, index, |_| {}))
            }
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
        let screen = screen_light_now(events, &seen, index);
        frame_of(&render_lit(&stage, &edit, 1.0, screen, index, furnish))
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
        let screen = screen_light_now(events, &seen, index);
        frame_of(&render_lit(&stage, &edit, 1.0, screen, index, furnish))
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
        let mut img = render_card(
            &photo,
            &background,
            (320.0 + slide, 240.0),
            0.95,
            yaw,
            pitch,
            slide * 0.1,
            800.0,
        );
        // Paper held where a face would be reflects the page's light as evenly as skin does;
        // the wall behind gets the wall's share.
        if let Some(screen) = screen_light_now(events, &seen, index) {
            let k = Lighting::default().screen;
            let wall = background.pixel(0, 0);
            reflect_evenly(
                &mut img,
                screen,
                |_, _, p| {
                    if p == wall {
                        k * WALL_SHARE
                    } else {
                        k
                    }
                },
            );
        }
        frame_of(&img)
    }))
}

/// Adds the page's `screen` light (sRGB) to `img` with the strength `k(x, y, pixel)` gives each
/// pixel (screen illuminance relative to the room's, for full white).
fn reflect_evenly(img: &mut RgbImage, screen: [f32; 3], k: impl Fn(usize, usize, [u8; 3]) -> f32) {
    let g = gamma();
    let neutral = crate::liveness::light::NEUTRAL.map(|c| g.to_linear[c as usize]);
    let shown = screen.map(crate::liveness::light::linear);
    for y in 0..img.height {
        for x in 0..img.width {
            let p = img.pixel(x, y);
            let k = k(x, y, p);
            let px: [u8; 3] = std::array::from_fn(|i| {
                let l = g.to_linear[p[i] as usize] * (1.0 + k * shown[i]) / (1.0 + k * neutral[i]);
                g.to_srgb[(l.clamp(0.0, 1.0) * 4095.0) as usize]
            });
            img.set_pixel(x, y, px);
        }
    }
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

/// How a rendered scene is lit: the room, the person's skin, and the page's screen light on the
/// face. The screen's light adds to the room's in proportion to the skin's albedo (radiance =
/// albedo x (room + k x screen colour), in linear light) and falls off with distance (k grows with
/// the square of the face's scale); the wall behind is far, so it gets a small fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lighting {
    /// Room brightness: 1.0 is the stage as rendered, 0.35 a dim room, 1.4 a bright one.
    pub room: f32,
    /// Screen illuminance on the face at the stage's framing, relative to a 1.0 room's, for full
    /// white (a laptop at arm's length in an office gives about 0.12).
    pub screen: f32,
    /// Skin albedo relative to the stage's portrait (0.45: much darker skin).
    pub skin: f32,
    /// Sensor noise, standard deviation in 8-bit levels.
    pub noise: f32,
}

impl Default for Lighting {
    fn default() -> Self {
        Lighting {
            room: 1.0,
            screen: 0.12,
            skin: 1.0,
            noise: 1.5,
        }
    }
}

/// Share of the face's screen light that reaches the wall behind the person.
const WALL_SHARE: f32 = 0.06;

struct Gamma {
    to_linear: [f32; 256],
    to_srgb: Vec<u8>,
}

/// sRGB <-> linear tables (the lighting runs on every pixel of every frame).
fn gamma() -> &'static Gamma {
    static TABLES: std::sync::OnceLock<Gamma> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| Gamma {
        to_linear: std::array::from_fn(|i| crate::liveness::light::linear(i as f32)),
        to_srgb: (0..4096)
            .map(|i| {
                let l = i as f32 / 4095.0;
                let c = if l <= 0.0031308 {
                    l * 12.92
                } else {
                    1.055 * l.powf(1.0 / 2.4) - 0.055
                };
                (c * 255.0).round().clamp(0.0, 255.0) as u8
            })
            .collect(),
    })
}

/// The page's light the peer is showing now: the colour of the `screen_light` challenge's
/// sequence at the time since this peer first saw it (the page paints on receipt); `None`
/// outside the step (the page's own background, the neutral colour).
pub fn screen_light_now(
    events: &[Value],
    seen: &Mutex<HashMap<u64, u64>>,
    index: u64,
) -> Option<[f32; 3]> {
    let (action, t) = current_challenge(events, seen, index)?;
    if action != "screen_light" {
        return None;
    }
    let open = events.iter().rev().find(|e| e["type"] == "challenge")?;
    let sequence: crate::liveness::light::LightSequence =
        serde_json::from_value(open["light"].clone()).ok()?;
    Some(sequence.colour_at(std::time::Duration::from_secs_f32(t)))
}

/// Lights `img` in place: the room's level, the skin's albedo inside the face (an ellipse around
/// `landmarks`, soft-edged), the screen colour `screen` (sRGB; `None`: neutral) reflected by the
/// face with `lighting.screen * face_scale^2` and by the wall with a small share, and sensor
/// noise seeded by `index`.
pub fn light_scene(
    img: &mut RgbImage,
    landmarks: &[[f32; 3]],
    lighting: &Lighting,
    face_scale: f32,
    screen: Option<[f32; 3]>,
    index: u64,
) {
    let g = gamma();
    let neutral = crate::liveness::light::NEUTRAL.map(|c| g.to_linear[c as usize]);
    let shown = screen.map_or(neutral, |c| c.map(crate::liveness::light::linear));
    let k_face = lighting.screen * face_scale * face_scale / lighting.room.max(0.05);
    // Relative to the stage as rendered (lit by the room and a neutral screen).
    let gain = |k: f32| -> [f32; 3] {
        std::array::from_fn(|i| lighting.room * (1.0 + k * shown[i]) / (1.0 + k * neutral[i]))
    };
    let (face_gain, wall_gain) = (gain(k_face), gain(k_face * WALL_SHARE));
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in landmarks {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let (rx, ry) = (
        ((x1 - x0) / 2.0).max(1.0) * 1.1,
        ((y1 - y0) / 2.0).max(1.0) * 1.15,
    );
    let mut seed = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = || {
        // Sum of two uniforms: cheap, roughly bell-shaped, unit variance after scaling.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let a = (seed & 0xffff) as f32 / 65535.0;
        let b = ((seed >> 16) & 0xffff) as f32 / 65535.0;
        (a + b - 1.0) * 2.45
    };
    for y in 0..img.height {
        for x in 0..img.width {
            let d = ((x as f32 - cx) / rx).powi(2) + ((y as f32 - cy) / ry).powi(2);
            // 1 inside the face, 0 outside, a soft rim between.
            let m = ((1.15 - d) / 0.3).clamp(0.0, 1.0);
            let p = img.pixel(x, y);
            let out: [u8; 3] = std::array::from_fn(|i| {
                let albedo = 1.0 + (lighting.skin - 1.0) * m;
                let gain = wall_gain[i] + (face_gain[i] - wall_gain[i]) * m;
                let l = g.to_linear[p[i] as usize] * albedo * gain;
                let c = g.to_srgb[((l.clamp(0.0, 1.0)) * 4095.0) as usize] as f32;
                (c + noise() * lighting.noise).round().clamp(0.0, 255.0) as u8
            });
            img.set_pixel(x, y, out);
        }
    }
}

/// A rendered person who follows the challenges, lit as `lighting` says, their face `face_scale`
/// times the stage's framing; their face reflects the page's screen light.
pub fn lit_person(stage: Arc<Stage>, lighting: Lighting, face_scale: f32) -> VideoSource {
    let seen = Mutex::new(HashMap::new());
    reactive(Box::new(move |index, events| {
        let mut edit = match current_challenge(events, &seen, index) {
            Some((action, t)) => perform(&action, t, index),
            None => idle(index),
        };
        edit.scale *= face_scale;
        let (mut img, landmarks) = stage.renderer.render(&edit);
        let screen = screen_light_now(events, &seen, index);
        light_scene(&mut img, &landmarks, &lighting, face_scale, screen, index);
        frame_of(&img)
    }))
}

/// The kinds of presentation attack the suite plays (ISO/IEC 30107-3 "species").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackSpecies {
    /// The person's own recordings, one per action, shown on a screen held to the camera and
    /// switched to the asked action (a responsive replay).
    ScreenReplay,
    /// The same responsive replay injected straight into the stream (a virtual camera).
    InjectedReplay,
    /// A printed photo, tilted and slid about on request.
    PrintedPhoto,
    /// A still photo of the person on a screen.
    PhotoOnScreen,
    /// A rigid 3-D head that turns and nods on request but cannot blink or open its mouth, and
    /// reflects no screen light (a mask or mannequin under its own light).
    RigidHead,
}

impl AttackSpecies {
    pub const ALL: [AttackSpecies; 5] = [
        AttackSpecies::ScreenReplay,
        AttackSpecies::InjectedReplay,
        AttackSpecies::PrintedPhoto,
        AttackSpecies::PhotoOnScreen,
        AttackSpecies::RigidHead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttackSpecies::ScreenReplay => "screen_replay",
            AttackSpecies::InjectedReplay => "injected_replay",
            AttackSpecies::PrintedPhoto => "printed_photo",
            AttackSpecies::PhotoOnScreen => "photo_on_screen",
            AttackSpecies::RigidHead => "rigid_head",
        }
    }
}

/// A display held in front of the camera: the picture scaled into a screen with a dark bezel,
/// lifted blacks and softer colours (display gamma and gamut), a moire of the pixel grid, a
/// refresh ripple, and the page's light reflected by its glass evenly over the screen; the room
/// around it gets the wall's share.
fn on_screen(
    picture: &RgbImage,
    screen: Option<[f32; 3]>,
    lighting: &Lighting,
    index: u64,
) -> RgbImage {
    let (w, h) = (picture.width, picture.height);
    let mut out = RgbImage::new(w, h, [118, 116, 108]);
    let (sw, sh) = (w * 82 / 100, h * 82 / 100);
    let (sx, sy) = (
        (w - sw) / 2,
        (h - sh) / 2 + (index as f32 * 0.2).sin() as usize,
    );
    let bezel = 16;
    for y in sy.saturating_sub(bezel)..(sy + sh + bezel).min(h) {
        for x in sx.saturating_sub(bezel)..(sx + sw + bezel).min(w) {
            out.set_pixel(x, y, [14, 14, 17]);
        }
    }
    let ripple = 1.0 + 0.03 * (index as f32 * 2.1).sin();
    let inner = picture.resized(sw, sh);
    for y in 0..sh {
        for x in 0..sw {
            let p = inner.pixel(x, y);
            let moire = 1.0 + 0.07 * ((x as f32 * 0.93 + y as f32 * 0.41) * 1.7).sin();
            let mean = (p[0] as f32 + p[1] as f32 + p[2] as f32) / 3.0;
            let px: [u8; 3] = std::array::from_fn(|i| {
                let c = mean + (p[i] as f32 - mean) * 0.85;
                (12.0 + c * 0.93 * moire * ripple).clamp(0.0, 255.0) as u8
            });
            out.set_pixel(sx + x, sy + y, px);
        }
    }
    // The glass reflects the page's light evenly over the screen (about 4 % of what skin would);
    // the room beyond is the wall.
    if let Some(screen) = screen {
        let k = lighting.screen / lighting.room.max(0.05);
        reflect_evenly(&mut out, screen, |x, y, _| {
            let within = (sx..sx + sw).contains(&x) && (sy..sy + sh).contains(&y);
            if within {
                k * 0.04
            } else {
                k * WALL_SHARE
            }
        });
    }
    out
}

/// An attack of `species` that follows the challenges as well as it can (see [`AttackSpecies`]).
pub fn attack(stage: Arc<Stage>, species: AttackSpecies, lighting: Lighting) -> VideoSource {
    if species == AttackSpecies::PrintedPhoto {
        return photo_attack(stage);
    }
    let seen = Mutex::new(HashMap::new());
    let still = stage.renderer.render(&FaceEdit::default()).0;
    reactive(Box::new(move |index, events| {
        let challenge = current_challenge(events, &seen, index);
        let screen = screen_light_now(events, &seen, index);
        // Recorded under the room's light: the page's light of this call is not in it.
        let recorded = |edit: &FaceEdit| {
            let (mut img, landmarks) = stage.renderer.render(edit);
            light_scene(&mut img, &landmarks, &lighting, 1.0, None, index);
            img
        };
        let img = match species {
            AttackSpecies::ScreenReplay => {
                let edit = challenge.map_or_else(|| idle(index), |(a, t)| perform(&a, t, index));
                on_screen(&recorded(&edit), screen, &lighting, index)
            }
            AttackSpecies::InjectedReplay => {
                let edit = challenge.map_or_else(|| idle(index), |(a, t)| perform(&a, t, index));
                recorded(&edit)
            }
            AttackSpecies::PhotoOnScreen => on_screen(&still, screen, &lighting, index),
            AttackSpecies::RigidHead => {
                let edit = match challenge {
                    Some((a, t)) if !matches!(a.as_str(), "blink" | "open_mouth") => {
                        perform(&a, t, index)
                    }
                    _ => idle(index),
                };
                recorded(&edit)
            }
            AttackSpecies::PrintedPhoto => still.clone(),
        };
        frame_of(&img)
    }))
}

/// The actions a challenge may ask, each pre-encoded by [`ActionClips`].
pub const ACTIONS: [&str; 8] = [
    "turn_left",
    "turn_right",
    "look_up",
    "look_down",
    "blink",
    "open_mouth",
    "move_closer",
    "speak_digits",
];
/// Frames of each action clip: [`progress`]'s motion and its return, or the lips reading the
/// digits (2.7 s).
const ACTION_FRAMES: u64 = 41;
/// Frames of the idle loop (4 s).
const IDLE_FRAMES: u64 = 60;

/// A rendered person pre-encoded once: an idle loop and one clip per action ([`perform`] from
/// the moment it is asked), each starting with a keyframe. Shared by every call of the load
/// generator, so one process can feed many calls of people who follow their challenges.
#[derive(Debug)]
pub struct ActionClips {
    pub idle: EncodedVideo,
    pub actions: HashMap<String, EncodedVideo>,
    /// The idle person's face lit by the page's screen light, one clip per colour the light
    /// step may show (the palette and the neutral colour).
    pub lit: HashMap<[u8; 3], EncodedVideo>,
}

/// Frames of each lit clip (longer than any one colour of the light step).
const LIT_FRAMES: u64 = 12;

impl ActionClips {
    pub fn render(stage: &Stage, bitrate_kbps: u32) -> Result<ActionClips, super::TestkitError> {
        let clip =
            |frames: Vec<DecodedFrame>| encode_frames(ClipCodec::Vp8, FPS, bitrate_kbps, &frames);
        let idle = clip((0..IDLE_FRAMES).map(|k| stage.frame(&idle(k))).collect())?;
        let mut actions = HashMap::new();
        for action in ACTIONS {
            let frames = (0..ACTION_FRAMES)
                .map(|k| stage.frame(&perform(action, k as f32 / FPS as f32, k)))
                .collect();
            actions.insert(action.to_string(), clip(frames)?);
        }
        let mut lit = HashMap::new();
        let colours = crate::liveness::light::PALETTE
            .into_iter()
            .chain([crate::liveness::light::NEUTRAL]);
        for rgb in colours {
            let screen = Some(rgb.map(f32::from));
            let frames = (0..LIT_FRAMES)
                .map(|k| frame_of(&render_lit(stage, &self::idle(k), 1.0, screen, k, |_| {})))
                .collect();
            lit.insert(rgb, clip(frames)?);
        }
        Ok(ActionClips { idle, actions, lit })
    }
}

/// One call's person made of [`ActionClips`]: idle until a challenge is asked, then that
/// action's clip once, then idle again; in the screen-light step, the clip of the colour the page
/// shows (the nearest of the lit clips), switched as the sequence goes on. Clips change only at
/// their first frame (a keyframe), so the server's decoder never sees a frame that refers to
/// another clip's picture.
#[derive(Debug)]
pub struct ScriptedPerson {
    clips: Arc<ActionClips>,
    /// Frames between a motion being asked and the person starting it, on top of the clip's own
    /// 0.3 s (a person reading the instruction); 0 acts on the first frame after the prompt. The
    /// spoken step is not delayed: its voice is encoded live and starts on the prompt.
    reaction_frames: u64,
    cursor: Mutex<Cursor>,
}

#[derive(Debug, Default)]
struct Cursor {
    /// Events already read.
    read: usize,
    /// The open challenge (id, action), from the events, and the frame index it was read at.
    open: Option<(u64, String)>,
    opened_at: u64,
    /// The last challenge acted on.
    acted: Option<u64>,
    /// The action clip playing (none: the idle loop) and the frame index it started at.
    playing: Option<String>,
    start: u64,
    /// The open light step's sequence and the frame index it was first seen at; the lit clip
    /// playing and the frame index it started at.
    light: Option<(crate::liveness::light::LightSequence, u64)>,
    lit: Option<([u8; 3], u64)>,
}

impl ScriptedPerson {
    pub fn new(clips: Arc<ActionClips>) -> Self {
        ScriptedPerson {
            clips,
            reaction_frames: 0,
            cursor: Mutex::new(Cursor::default()),
        }
    }

    /// The same person, starting each motion `reaction` after it is asked (rounded to frames).
    pub fn with_reaction(mut self, reaction: std::time::Duration) -> Self {
        self.reaction_frames = (reaction.as_secs_f64() * FPS as f64).round() as u64;
        self
    }

    /// The encoded frame to send as frame `index`, given the events received so far.
    pub fn frame(&self, index: u64, events: &[Value]) -> EncodedFrame {
        let mut c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        for e in events.iter().skip(c.read) {
            let id = e["id"].as_u64();
            match e["type"].as_str() {
                Some("challenge") => {
                    c.open = id.zip(e["action"].as_str().map(str::to_string));
                    c.opened_at = index;
                    c.light = serde_json::from_value(e["light"].clone())
                        .ok()
                        .map(|sequence| (sequence, index));
                }
                Some("challenge_passed") | Some("challenge_failed") | Some("challenge_paused")
                    if c.open.as_ref().map(|o| o.0) == id =>
                {
                    c.open = None;
                    c.light = None;
                }
                _ => {}
            }
        }
        c.read = events.len();
        if let Some((sequence, since)) = &c.light {
            let t = index.saturating_sub(*since) as f32 / FPS as f32;
            let shown = sequence.colour_at(std::time::Duration::from_secs_f32(t));
            let distance = |rgb: &[u8; 3]| {
                (0..3)
                    .map(|i| (rgb[i] as f32 - shown[i]).powi(2))
                    .sum::<f32>()
            };
            let nearest = self
                .clips
                .lit
                .keys()
                .min_by(|a, b| distance(a).total_cmp(&distance(b)))
                .copied();
            if let Some(rgb) = nearest {
                if c.lit.is_none_or(|(playing, _)| playing != rgb) {
                    c.lit = Some((rgb, index));
                }
                let (_, start) = c.lit.expect("just set");
                let frames = &self.clips.lit[&rgb].frames;
                return frames[index.saturating_sub(start) as usize % frames.len().max(1)].clone();
            }
        }
        if c.lit.take().is_some() {
            // Back to the idle loop, from its keyframe.
            c.start = index;
        }
        if let Some((id, action)) = c.open.clone() {
            let delay = if action == "speak_digits" {
                0
            } else {
                self.reaction_frames
            };
            let reacted = index >= c.opened_at + delay;
            if reacted && c.acted != Some(id) && self.clips.actions.contains_key(&action) {
                c.acted = Some(id);
                c.playing = Some(action);
                c.start = index;
            }
        }
        let k = index.saturating_sub(c.start) as usize;
        if let Some(clip) = c.playing.as_ref().and_then(|a| self.clips.actions.get(a)) {
            if let Some(f) = clip.frames.get(k) {
                return f.clone();
            }
            c.playing = None;
            c.start = index;
        }
        let idle = &self.clips.idle.frames;
        idle[index.saturating_sub(c.start) as usize % idle.len().max(1)].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A clip whose frames carry `tag` and their index, the first one a keyframe.
    fn clip(tag: u8, frames: usize) -> EncodedVideo {
        EncodedVideo {
            codec: ClipCodec::Vp8,
            width: 640,
            height: 480,
            fps: FPS,
            frames: (0..frames)
                .map(|i| EncodedFrame {
                    data: vec![tag, i as u8].into(),
                    keyframe: i == 0,
                })
                .collect(),
        }
    }

    /// A 4-frame idle loop (tag 0) and a 3-frame blink (tag 1).
    fn idle_and_blink() -> Arc<ActionClips> {
        Arc::new(ActionClips {
            idle: clip(0, 4),
            actions: HashMap::from([("blink".to_string(), clip(1, 3))]),
            lit: HashMap::new(),
        })
    }

    #[test]
    fn a_scripted_person_with_a_reaction_time_starts_the_motion_that_much_later() {
        // 200 ms at 15 fps: 3 frames.
        let person = ScriptedPerson::new(idle_and_blink())
            .with_reaction(std::time::Duration::from_millis(200));
        let mut events = Vec::new();
        let mut tags = Vec::new();
        for index in 0..12u64 {
            if index == 2 {
                events.push(json!({"type": "challenge", "id": 7, "action": "blink"}));
            }
            tags.push(person.frame(index, &events).data[0]);
        }
        assert_eq!(tags, vec![0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn a_scripted_person_plays_each_asked_action_once_from_its_keyframe_then_idles_again() {
        let person = ScriptedPerson::new(idle_and_blink());
        let mut events = Vec::new();
        let mut sent = Vec::new();
        for index in 0..14u64 {
            if index == 6 {
                events.push(json!({"type": "challenge", "id": 7, "action": "blink"}));
            }
            if index == 8 {
                events.push(json!({"type": "challenge_passed", "id": 7}));
            }
            let f = person.frame(index, &events);
            sent.push((f.data[0], f.data[1], f.keyframe));
        }
        let expected: Vec<(u8, u8, bool)> = [
            // Idle, looping from its keyframe.
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 0),
            (0, 1),
            // The blink, once, whole (it outlasts the step's end).
            (1, 0),
            (1, 1),
            (1, 2),
            // Idle again from its keyframe.
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 0),
        ]
        .into_iter()
        .map(|(tag, i)| (tag, i, i == 0))
        .collect();
        assert_eq!(sent, expected);
    }

    /// In the light step the person shows, frame by frame, the lit clip of the colour the page
    /// paints (from its keyframe whenever the colour changes), and the idle loop once it ends.
    #[test]
    fn a_scripted_person_reflects_each_colour_of_the_light_step() {
        use crate::liveness::light::{LightColour, LightSequence, NEUTRAL, PALETTE};
        let (red, blue) = (PALETTE[0], PALETTE[2]);
        let clips = Arc::new(ActionClips {
            idle: clip(0, 4),
            actions: HashMap::new(),
            lit: HashMap::from([
                (NEUTRAL, clip(10, 8)),
                (red, clip(11, 8)),
                (blue, clip(12, 8)),
            ]),
        });
        // At 15 fps: neutral for frames 0-5 (400 ms), red for 6-11, blue for 12-17; the fades
        // are short enough that the nearest colour switches within a frame of each start.
        let sequence = LightSequence {
            neutral: NEUTRAL,
            neutral_ms: 400,
            transition_ms: 0,
            colours: vec![
                LightColour { rgb: red, ms: 400 },
                LightColour { rgb: blue, ms: 400 },
            ],
        };
        let person = ScriptedPerson::new(clips);
        let mut events = vec![
            json!({"type": "challenge", "id": 3, "action": "screen_light", "light": sequence}),
        ];
        let mut sent = Vec::new();
        for index in 0..22u64 {
            if index == 20 {
                events.push(json!({"type": "challenge_passed", "id": 3}));
            }
            let f = person.frame(index, &events);
            sent.push((f.data[0], f.data[1], f.keyframe));
        }
        let tags: Vec<u8> = sent.iter().map(|s| s.0).collect();
        assert_eq!(
            tags,
            [
                vec![10; 6],
                vec![11; 6],
                vec![12; 6],
                // After the blue window the page is back to neutral until the step ends.
                vec![10; 2],
                vec![0; 2],
            ]
            .concat()
        );
        // Each switch starts its clip at the keyframe.
        for at in [0usize, 6, 12, 18, 20] {
            assert_eq!(sent[at].1, 0, "frame {at}: {sent:?}");
            assert!(sent[at].2, "frame {at} is a keyframe");
        }
    }
}
