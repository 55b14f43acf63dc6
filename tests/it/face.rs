//! Face tracking on real ONNX models (fetched by scripts/setup) against the packaged portrait.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::Value;

use vericall::analysis::face::{FaceModels, FaceObservation, FaceTracker};
use vericall::testkit::actor::Stage;
use vericall::testkit::render::{FaceEdit, RgbImage};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn models() -> Arc<FaceModels> {
    static MODELS: OnceLock<Arc<FaceModels>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            if std::env::var_os("ORT_DYLIB_PATH").is_none() {
                std::env::set_var(
                    "ORT_DYLIB_PATH",
                    repo().join(vericall::analysis::face::models::DEFAULT_ORT_LIBRARY),
                );
            }
            FaceModels::load(&repo().join("models")).expect("models installed by scripts/setup")
        })
        .clone()
}

/// Packed I420 planes of an image: the server's own decoded-frame type.
pub use vericall::media::decode::DecodedFrame as Planes;

pub fn load_rgb(name: &str) -> (usize, usize, Vec<u8>) {
    let img = image::open(repo().join("models/stills").join(name))
        .expect("still installed by scripts/setup")
        .to_rgb8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

fn observe(planes: &Planes) -> FaceObservation {
    let mut tracker = FaceTracker::new(models(), 0);
    tracker.observe(&planes.view(), Instant::now()).unwrap()
}

fn rotate_rgb(w: usize, h: usize, rgb: &[u8], degrees: f32) -> Vec<u8> {
    // Rotate about the centre (positive = clockwise on screen), edge pixels replicated.
    let (s, c) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let mut out = vec![0u8; rgb.len()];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            // Inverse map: rotate the output position back by -degrees.
            let sx = (c * dx + s * dy + cx).clamp(0.0, w as f32 - 1.0) as usize;
            let sy = (-s * dx + c * dy + cy).clamp(0.0, h as f32 - 1.0) as usize;
            out[(y * w + x) * 3..][..3].copy_from_slice(&rgb[(sy * w + sx) * 3..][..3]);
        }
    }
    out
}

/// Hand-labelled on models/stills/astronaut.png (512x512) at 16x zoom (see docs/FACE.md):
/// pupils of the subject's right (image-left) and left eye, and the mouth centre (midpoint of
/// the inner lips, landmarks 13 and 14).
const RIGHT_PUPIL: (f32, f32) = (203.3, 100.5);
const LEFT_PUPIL: (f32, f32) = (246.8, 103.6);
const MOUTH_CENTRE: (f32, f32) = (224.0, 145.5);

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

#[test]
fn portrait_eyes_and_mouth_land_on_the_reference_positions() {
    let (w, h, rgb) = load_rgb("astronaut.png");
    let o = observe(&Planes::from_rgb(w, h, &rgb));
    assert_eq!(o.face_count, 1);
    let face = o.face.expect("face found");
    let ied = dist(RIGHT_PUPIL, LEFT_PUPIL);
    let [r, l] = face.irises.expect("eye-contour model installed");
    let p = &face.landmarks;
    let mouth = ((p[13][0] + p[14][0]) / 2.0, (p[13][1] + p[14][1]) / 2.0);
    let errors = [
        dist(r, RIGHT_PUPIL) / ied,
        dist(l, LEFT_PUPIL) / ied,
        dist(mouth, MOUTH_CENTRE) / ied,
    ];
    println!("iris R {r:?} L {l:?} mouth {mouth:?}; errors (share of IED) {errors:?}; presence {}; pose {} {} {}", face.presence, face.yaw, face.pitch, face.roll);
    for e in errors {
        assert!(
            e <= 0.05,
            "a point is {:.1}% of the inter-eye distance off: {errors:?}",
            e * 100.0
        );
    }
    assert!(
        face.ear_right > 0.2 && face.ear_left > 0.2,
        "open eyes: {} {}",
        face.ear_right,
        face.ear_left
    );
}

#[test]
fn roll_follows_an_image_rotation() {
    let (w, h, rgb) = load_rgb("astronaut.png");
    let mut tracker = FaceTracker::new(models(), 0);
    let base = tracker
        .observe(&Planes::from_rgb(w, h, &rgb).view(), Instant::now())
        .unwrap()
        .face
        .unwrap();
    assert!(
        base.pose_relative && base.roll.abs() < 0.5,
        "the first frontal face is the baseline"
    );
    for degrees in [20.0f32, -20.0] {
        let rotated = rotate_rgb(w, h, &rgb, degrees);
        tracker.reset();
        let f = tracker
            .observe(&Planes::from_rgb(w, h, &rotated).view(), Instant::now())
            .unwrap()
            .face
            .expect("face in the rotated image");
        println!(
            "rotated {degrees}: roll {} (absolute axes would differ by their own bias)",
            f.roll
        );
        assert!(
            (f.roll - degrees).abs() <= 3.0,
            "rotation {degrees}: roll {}",
            f.roll
        );
    }
}

#[test]
fn a_frame_without_a_face_yields_no_face() {
    let frame =
        vericall::testkit::fixtures::render(vericall::testkit::fixtures::Scene::Good, 640, 480, 3);
    let planes = Planes {
        width: 640,
        height: 480,
        y: frame.y,
        u: frame.u,
        v: frame.v,
        full_range: false,
    };
    let o = observe(&planes);
    assert_eq!(o.face_count, 0);
    assert!(o.face.is_none());
}

/// The portrait as a well-framed selfie and a renderer for posed versions of it.
pub fn stage() -> &'static Arc<Stage> {
    static STAGE: OnceLock<Arc<Stage>> = OnceLock::new();
    STAGE.get_or_init(|| {
        Arc::new(Stage::astronaut(models(), &repo().join("models/stills")).expect("stage"))
    })
}

fn planes(img: &RgbImage) -> Planes {
    Planes::from_rgb(img.width, img.height, &img.data)
}

/// Pose errors over a sweep: each rendered pose against the truth, relative to the frontal render.
#[test]
fn rendered_head_turns_and_nods_read_within_five_degrees() {
    let st = stage();
    let mut tracker = FaceTracker::new(models(), 0);
    let measure = |tracker: &mut FaceTracker, edit: &FaceEdit| {
        let (img, _) = st.renderer.render(edit);
        tracker
            .observe(&planes(&img).view(), Instant::now())
            .unwrap()
            .face
            .expect("face in the rendered frame")
    };
    let base = measure(&mut tracker, &FaceEdit::default());
    let mut yaw_err = Vec::new();
    let mut pitch_err = Vec::new();
    let sweep: Vec<FaceEdit> = (-5..=5)
        .map(|i| FaceEdit::posed(i as f32 * 5.0, 0.0, 0.0))
        .chain((-3..=3).map(|i| FaceEdit::posed(0.0, i as f32 * 5.0, 0.0)))
        .chain([
            FaceEdit::posed(15.0, 10.0, 0.0),
            FaceEdit::posed(-15.0, -10.0, 5.0),
        ])
        .collect();
    for edit in &sweep {
        let f = measure(&mut tracker, edit);
        let (dy, dp) = (
            f.yaw - base.yaw - edit.pose.yaw,
            f.pitch - base.pitch - edit.pose.pitch,
        );
        println!(
            "truth yaw {:>5.1} pitch {:>5.1} -> measured {:>6.2} {:>6.2}",
            edit.pose.yaw,
            edit.pose.pitch,
            f.yaw - base.yaw,
            f.pitch - base.pitch
        );
        yaw_err.push(dy.abs());
        pitch_err.push(dp.abs());
    }
    let stats = |e: &[f32]| {
        (
            e.iter().sum::<f32>() / e.len() as f32,
            e.iter().cloned().fold(0.0, f32::max),
        )
    };
    let (ym, yx) = stats(&yaw_err);
    let (pm, px) = stats(&pitch_err);
    println!("yaw error mean {ym:.2} max {yx:.2}; pitch error mean {pm:.2} max {px:.2} (degrees)");
    assert!(yx <= 5.0, "yaw max error {yx}");
    assert!(px <= 5.0, "pitch max error {px}");
}

#[test]
fn a_mirrored_image_flips_the_sign_of_yaw() {
    let st = stage();
    let mut tracker = FaceTracker::new(models(), 0);
    tracker
        .observe(
            &planes(&st.renderer.render(&FaceEdit::default()).0).view(),
            Instant::now(),
        )
        .unwrap();
    for yaw in [15.0f32, -15.0] {
        let (img, _) = st.renderer.render(&FaceEdit::posed(yaw, 0.0, 0.0));
        let mut read = |img: &RgbImage| {
            tracker.reset();
            tracker
                .observe(&planes(img).view(), Instant::now())
                .unwrap()
                .face
                .unwrap()
                .yaw
        };
        let a = read(&img);
        let b = read(&img.mirrored());
        println!("rendered yaw {yaw}: measured {a}, mirrored {b}");
        assert_eq!(a.signum(), yaw.signum(), "{a}");
        assert_eq!(b.signum(), -yaw.signum(), "{b}");
    }
}

#[test]
fn rendered_blinks_drop_the_eye_openness_below_the_baseline() {
    let st = stage();
    let mut tracker = FaceTracker::new(models(), 0);
    let mut read = |edit: FaceEdit| {
        let (img, _) = st.renderer.render(&edit);
        let f = tracker
            .observe(&planes(&img).view(), Instant::now())
            .unwrap()
            .face
            .unwrap();
        (f.ear_right + f.ear_left) / 2.0
    };
    // The open-eye baseline over a few frames with small head movements, as a session sees it.
    let open: Vec<f32> = [(0.0, 0.0), (2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, 0.0)]
        .iter()
        .map(|&(y, p)| read(FaceEdit::posed(y, p, 0.0)))
        .collect();
    let baseline = open.iter().sum::<f32>() / open.len() as f32;
    let spread = open.iter().cloned().fold(f32::MIN, f32::max)
        - open.iter().cloned().fold(f32::MAX, f32::min);
    let half = read(FaceEdit {
        eyes_closed: 0.5,
        ..FaceEdit::default()
    });
    let closed = read(FaceEdit {
        eyes_closed: 1.0,
        ..FaceEdit::default()
    });
    println!("eye openness: open {open:?} (baseline {baseline:.3}, spread {spread:.3}), half {half:.3}, closed {closed:.3}");
    // A blink is judged relative to the session's open-eye baseline (see liveness): below 80% of
    // it, and well outside the open eye's own frame-to-frame spread.
    assert!(
        closed < 0.8 * baseline,
        "blink: {closed} vs baseline {baseline}"
    );
    assert!(
        baseline - closed > 2.0 * spread,
        "drop {} vs open-eye spread {spread}",
        baseline - closed
    );
    assert!(
        closed < half && half < baseline,
        "openness falls as the lids close: {baseline} {half} {closed}"
    );
}

#[test]
fn two_faces_in_one_frame_are_counted() {
    let (w, _, rgb) = load_rgb("astronaut.png");
    // A 200x200 crop around the face, scaled to 300x300: two heads side by side.
    let crop: Vec<u8> = (0..200)
        .flat_map(|y| rgb[((25 + y) * w + 124) * 3..][..600].to_vec())
        .collect();
    let head = RgbImage::from_raw(200, 200, crop)
        .unwrap()
        .resized(300, 300);
    let mut canvas = RgbImage::new(640, 480, [90, 100, 110]);
    canvas.blit(&head, 10, 90);
    canvas.blit(&head.mirrored(), 330, 90);
    let o = observe(&planes(&canvas));
    println!("two faces: count {}", o.face_count);
    assert_eq!(o.face_count, 2);
}

/// A rendered clip (a slow head turn) as raw frames for a live-encoding peer.
pub fn rendered_clip(
    keys: &[(f32, FaceEdit)],
    fps: u32,
) -> Vec<vericall::media::decode::DecodedFrame> {
    let st = stage();
    vericall::testkit::render::script(keys, fps)
        .iter()
        .map(|edit| {
            let (img, _) = st.renderer.render(edit);
            let p = planes(&img);
            vericall::media::decode::DecodedFrame {
                width: p.width,
                height: p.height,
                y: p.y,
                u: p.u,
                v: p.v,
                full_range: false,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_observations_flow_end_to_end_over_webrtc() {
    use std::time::Duration;
    use vericall::testkit::peer::{run_peer, LiveVideo, PeerOptions, VideoSource};

    let frames = rendered_clip(
        &[
            (0.0, FaceEdit::default()),
            (1.0, FaceEdit::posed(20.0, 0.0, 0.0)),
            (2.0, FaceEdit::posed(-20.0, 0.0, 0.0)),
            (3.0, FaceEdit::default()),
        ],
        15,
    );
    let ts = crate::common::TestServer::start_with(vericall::config::Config {
        face_analysis: true,
        ..crate::common::test_config()
    })
    .await;
    let s = ts.create_session().await;
    let report = run_peer(
        &s.whip_url,
        &s.token,
        PeerOptions {
            video: Some(VideoSource::Live(std::sync::Arc::new(LiveVideo {
                codec: vericall::media::decode::VideoCodec::Vp8,
                fps: 15,
                bitrate_kbps: 800,
                frames,
            }))),
            audio: Some(crate::common::tone()),
            duration: Duration::from_secs(5),
            ..PeerOptions::default()
        },
    )
    .await
    .unwrap();
    let v = ts
        .wait_session(&s.id, Duration::from_secs(10), |v| v["state"] == "ended")
        .await;
    let d = &v["network"]["decode"];
    let analyzed = d["frames_analyzed"].as_u64().unwrap();
    let observed = d["face_observations"].as_u64().unwrap();
    let found = d["faces_found"].as_u64().unwrap();
    println!(
        "sent {} frames; analysed {analyzed}, observed {observed}, faces found {found}; {d}",
        report.video_frames_sent
    );
    // How many frames a loaded machine analyses varies; what each analysed frame gives does not.
    assert!(analyzed > 0, "analysed {analyzed}");
    assert_eq!(
        observed, analyzed,
        "every analysed frame gets a face observation"
    );
    assert!(
        found as f64 >= 0.95 * analyzed as f64,
        "faces found in {found} of {analyzed} analysed frames"
    );
    let timeline = ts.timeline_until(&s.id, "session_ended").await;
    let face_hints: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["type"] == "guidance" && e["source"] == "face")
        .collect();
    assert!(
        face_hints.is_empty(),
        "a well-framed face gets no face hints: {face_hints:?}"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Calibrates the Blur hint (`quality::Thresholds::blur_on`, docs/FACE.md): the rendered actor
/// (already as soft as a 640x480 webcam: its portrait is a 256 px crop upscaled to 480) at face
/// widths from ~125 to ~225 px, through VP8 at 500 kbit/s, with extra Gaussian blur. Up to
/// sigma 1 px more is what soft laptop and phone cameras deliver and must never read as blur;
/// sigma 3 px and more is a visibly out-of-focus face and must. (1.5 px is in between: it reads as
/// blur on a small face only, where it is more blur relative to the face.)
#[test]
fn blur_index_separates_soft_webcams_from_blurred_faces() {
    use vericall::analysis::quality::Thresholds;
    use vericall::media::decode::{VideoCodec, VideoDecoder, VpxEncoder};
    let st = stage();
    let th = Thresholds::default();
    let mut sharp_max: f64 = 0.0;
    let mut blurred_min: f64 = 1.0;
    for scale in [0.7f32, 1.0, 1.3] {
        let (img, _) = st.renderer.render(&FaceEdit {
            scale,
            ..FaceEdit::default()
        });
        for sigma in [0.0f32, 1.0, 1.5, 3.0, 4.0] {
            let blurred = img.gaussian_blurred(sigma);
            let raw = Planes::from_rgb(blurred.width, blurred.height, &blurred.data);
            // Through the codec, as a call delivers it (a keyframe at a webcam's bitrate).
            let mut enc = VpxEncoder::new(VideoCodec::Vp8, 640, 480, 15, 500).unwrap();
            let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
            let mut decoded = Planes::default();
            for (pts, (bytes, key)) in enc.encode(&raw, 0, true).unwrap().into_iter().enumerate() {
                let _ = pts;
                dec.decode(&bytes, key, &mut decoded).unwrap();
            }
            let o = observe(&decoded);
            let face = o.face.expect("the actor's face is found");
            let index = face.quality.blur;
            println!(
                "blur index: face {:.0} px wide, sigma {sigma}: {index:.3}",
                face.bbox[2]
            );
            if sigma <= 1.0 {
                sharp_max = sharp_max.max(index);
            } else if sigma >= 3.0 {
                blurred_min = blurred_min.min(index);
            }
        }
    }
    println!(
        "blur index: sharp max {sharp_max:.3}, blurred min {blurred_min:.3}; off {}, on {}",
        th.blur_off, th.blur_on
    );
    // Sharp (up to 1 px more) never raises the hint; 3 px and more always does.
    assert!(
        sharp_max < th.blur_on,
        "a soft webcam reads as blur: {sharp_max}"
    );
    assert!(
        blurred_min > th.blur_on,
        "a blurred face reads as sharp: {blurred_min}"
    );
}
