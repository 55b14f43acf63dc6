//! Per-frame media cost: video decode (VP8, VP9, H.264), capture-quality metrics, the whole
//! per-analysed-frame path the server runs (`media::pipeline`: decode + quality + signature +
//! camera health), the provenance cues (`analysis::provenance`) and Opus decode.
//!
//!     cargo bench --bench media
//!
//! Plain `std::time::Instant` timing of every frame; prints medians and p95 as markdown tables.
//! Inputs are encoded once up front from `testkit::fixtures::render(Scene::Good, ..)` (a moving,
//! textured scene) at 30 fps; each timed pass decodes the stream from its keyframe in order.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vericall::analysis::device::{CameraHealth, FrameFacts};
use vericall::analysis::image::{warp_to_tensor, Affine, Layout};
use vericall::analysis::provenance::{ProvenanceMonitor, IMAGE_CUE_INTERVAL};
use vericall::analysis::quality::{luma_signature, QualityAnalyzer};
use vericall::frame::Region;
use vericall::media::decode::{
    AudioDecoder, DecodedFrame, H264Encoder, VideoCodec, VideoDecoder, VpxEncoder,
};
use vericall::testkit::clip::encode_tone;
use vericall::testkit::fixtures::{render, Scene};

mod support;
use support::{ms, stats};

/// Frames in the encoded clip (one keyframe, then inter frames).
const FRAMES: usize = 150;
/// Timed passes over the clip (after one untimed warm-up pass).
const PASSES: usize = 2;
const FPS: u32 = 30;
const OPUS_PACKETS: usize = 1000;

struct Clip {
    codec: VideoCodec,
    width: usize,
    height: usize,
    frames: Vec<(Vec<u8>, bool)>,
}

fn bitrate_kbps(width: usize, height: usize) -> u32 {
    if width * height > 640 * 480 {
        2500
    } else {
        1000
    }
}

fn encode_clip(codec: VideoCodec, width: usize, height: usize, source: &[DecodedFrame]) -> Clip {
    let kbps = bitrate_kbps(width, height);
    let mut frames = Vec::with_capacity(source.len());
    match codec {
        VideoCodec::H264 => {
            let mut enc = H264Encoder::new(width as u32, height as u32, FPS, kbps).unwrap();
            for (i, f) in source.iter().enumerate() {
                let (bytes, key) = enc.encode(f, i == 0).unwrap();
                if !bytes.is_empty() {
                    frames.push((bytes, key));
                }
            }
        }
        _ => {
            let mut enc = VpxEncoder::new(codec, width as u32, height as u32, FPS, kbps).unwrap();
            for (i, f) in source.iter().enumerate() {
                for (bytes, key) in enc.encode(f, i as i64, i == 0).unwrap() {
                    if !bytes.is_empty() {
                        frames.push((bytes, key));
                    }
                }
            }
        }
    }
    assert!(frames[0].1, "{codec:?} clip must start with a keyframe");
    Clip {
        codec,
        width,
        height,
        frames,
    }
}

fn codec_name(c: VideoCodec) -> &'static str {
    match c {
        VideoCodec::Vp8 => "VP8 (libvpx)",
        VideoCodec::Vp9 => "VP9 (libvpx)",
        VideoCodec::H264 => "H.264 (openh264)",
    }
}

/// Decodes the clip once from its keyframe, calling `each` after every decoded picture.
fn decode_pass(
    clip: &Clip,
    out: &mut DecodedFrame,
    mut each: impl FnMut(usize, Duration, &DecodedFrame),
) {
    let mut dec = VideoDecoder::new(clip.codec).unwrap();
    for (i, (data, key)) in clip.frames.iter().enumerate() {
        let t = Instant::now();
        let got = dec.decode(black_box(data), *key, out).unwrap();
        let dt = t.elapsed();
        if got.is_some() {
            each(i, dt, out);
        }
    }
}

struct Row {
    label: String,
    median: f64,
    p95: f64,
    n: usize,
    extra: String,
}

fn row(label: String, samples: &[f64], extra: String) -> Row {
    let (median, p95, n) = stats(samples);
    Row {
        label,
        median,
        p95,
        n,
        extra,
    }
}

fn print_table(title: &str, first: &str, unit: &str, extra: Option<&str>, rows: &[Row]) {
    println!("\n### {title}\n");
    match extra {
        Some(e) => {
            println!("| {first} | median ms | p95 ms | {unit} | {e} |");
            println!("|---|---:|---:|---:|---:|");
        }
        None => {
            println!("| {first} | median ms | p95 ms | {unit} |");
            println!("|---|---:|---:|---:|");
        }
    }
    for r in rows {
        match extra {
            Some(_) => println!(
                "| {} | {:.3} | {:.3} | {} | {} |",
                r.label, r.median, r.p95, r.n, r.extra
            ),
            None => println!("| {} | {:.3} | {:.3} | {} |", r.label, r.median, r.p95, r.n),
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the arguments are ignored.
    let sizes = [(640usize, 480usize), (1280, 720)];
    let codecs = [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264];

    eprintln!("rendering and encoding {FRAMES}-frame clips ...");
    let mut clips = Vec::new();
    for &(w, h) in &sizes {
        let source: Vec<DecodedFrame> = (0..FRAMES).map(|i| render(Scene::Good, w, h, i)).collect();
        for &c in &codecs {
            clips.push(encode_clip(c, w, h, &source));
        }
    }

    // 1. Bare decode.
    eprintln!("timing decode ...");
    let mut decode_rows = Vec::new();
    for clip in &clips {
        let mut out = DecodedFrame::default();
        decode_pass(clip, &mut out, |_, _, _| {}); // warm-up
        let mut samples = Vec::new();
        let mut bytes = 0usize;
        for _ in 0..PASSES {
            decode_pass(clip, &mut out, |i, dt, _| {
                samples.push(ms(dt));
                bytes += clip.frames[i].0.len();
            });
        }
        let kbps = bytes as f64 * 8.0 / samples.len() as f64 * FPS as f64 / 1000.0;
        let r = row(
            format!("{} {}x{}", codec_name(clip.codec), clip.width, clip.height),
            &samples,
            format!("{kbps:.0}"),
        );
        decode_rows.push(r);
    }
    print_table(
        "Video decode, ms per frame",
        "codec, size",
        "frames",
        Some("stream kbit/s @30 fps"),
        &decode_rows,
    );

    // 2. Quality metrics on decoded frames (VP8 output at each size).
    eprintln!("timing quality metrics ...");
    let mut quality_rows = Vec::new();
    for &(w, h) in &sizes {
        let clip = clips
            .iter()
            .find(|c| c.codec == VideoCodec::Vp8 && c.width == w)
            .unwrap();
        let mut decoded = Vec::new();
        let mut out = DecodedFrame::default();
        decode_pass(clip, &mut out, |_, _, f| decoded.push(f.clone()));
        let mut qa = QualityAnalyzer::new();
        for f in &decoded {
            black_box(qa.analyze(&f.view(), None)); // warm-up (sizes the analyzer's buffers)
        }
        let (mut q, mut s, mut both) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..PASSES {
            for f in &decoded {
                let v = f.view();
                let t0 = Instant::now();
                let m = qa.analyze(black_box(&v), None);
                let t1 = Instant::now();
                let sig = luma_signature(black_box(&v));
                let t2 = Instant::now();
                black_box((m, sig));
                q.push(ms(t1 - t0));
                s.push(ms(t2 - t1));
                both.push(ms(t2 - t0));
            }
        }
        quality_rows.push(row(
            format!("QualityAnalyzer::analyze {w}x{h}"),
            &q,
            String::new(),
        ));
        quality_rows.push(row(format!("luma_signature {w}x{h}"), &s, String::new()));
        // The provenance cues: the repeat check on every decoded frame, and the image cues (noise,
        // moire, face detail) that run once a second, here on every frame with a centred box of a
        // face's size (a third of the width) so that each call measures all three.
        let (mut repeat, mut image) = (Vec::new(), Vec::new());
        let face = Region::new(w / 3, h / 4, w / 3, w / 3);
        let start = Instant::now();
        for pass in 0..PASSES {
            let mut monitor = ProvenanceMonitor::default();
            for (i, f) in decoded.iter().enumerate() {
                let v = f.view();
                let at = start + IMAGE_CUE_INTERVAL * (pass * decoded.len() + i) as u32;
                let t0 = Instant::now();
                monitor.on_decoded(black_box(&v));
                let t1 = Instant::now();
                monitor.on_analysed(black_box(&v), Some(face), at);
                let t2 = Instant::now();
                repeat.push(ms(t1 - t0));
                image.push(ms(t2 - t1));
            }
            black_box(monitor.scores());
        }
        quality_rows.push(row(
            format!("provenance repeat check (every frame) {w}x{h}"),
            &repeat,
            String::new(),
        ));
        quality_rows.push(row(
            format!("provenance image cues (once a second) {w}x{h}"),
            &image,
            String::new(),
        ));
        // The face mesh's input crop (192x192, NCHW, rotated by a head roll of 0.2 rad), which
        // the face tracker samples from every analysed frame.
        let crop = Affine::crop(w as f32 / 2.0, h as f32 / 2.5, w as f32 / 3.0, 0.2, 192);
        let mut tensor = Vec::new();
        let mut warp = Vec::new();
        for _ in 0..PASSES {
            for f in &decoded {
                let v = f.view();
                let t0 = Instant::now();
                warp_to_tensor(
                    black_box(&v),
                    &crop,
                    192,
                    Layout::Nchw,
                    false,
                    |x| x / 255.0,
                    &mut tensor,
                );
                warp.push(ms(t0.elapsed()));
                black_box(&tensor);
            }
        }
        quality_rows.push(row(
            format!("face mesh crop (warp_to_tensor 192x192) {w}x{h}"),
            &warp,
            String::new(),
        ));
        // An evidence JPEG (a call keeps about six: the first frontal frame, one per step).
        let mut jpeg = Vec::new();
        for f in &decoded {
            let v = f.view();
            let t0 = Instant::now();
            let bytes = vericall::store::evidence::encode_jpeg(black_box(&v)).expect("jpeg");
            jpeg.push(ms(t0.elapsed()));
            black_box(bytes);
        }
        quality_rows.push(row(
            format!("evidence JPEG (encode_jpeg, quality 85) {w}x{h}"),
            &jpeg,
            String::new(),
        ));
        quality_rows.push(row(
            format!("analyze + luma_signature {w}x{h}"),
            &both,
            String::new(),
        ));
    }
    print_table(
        "Quality metrics, ms per frame",
        "step",
        "frames",
        None,
        &quality_rows,
    );

    // 3. Whole per-analysed-frame media cost at 640x480, as media::pipeline does it.
    eprintln!("timing the per-frame pipeline ...");
    let mut pipe_rows = Vec::new();
    for clip in clips.iter().filter(|c| c.width == 640) {
        let mut out = DecodedFrame::default();
        let mut qa = QualityAnalyzer::new();
        let mut camera = CameraHealth::default();
        let start = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / FPS as f64);
        let mut frame_no = 0u32;
        let mut full = Vec::new();
        let mut bare = Vec::new();
        // Alternate bare-decode and full passes so machine noise hits both alike.
        for pass in 0..=PASSES {
            let timed = pass > 0;
            decode_pass(clip, &mut out, |_, dt, _| {
                if timed {
                    bare.push(ms(dt));
                }
            });
            let mut dec = VideoDecoder::new(clip.codec).unwrap();
            for (data, key) in &clip.frames {
                let at = start + interval * frame_no;
                frame_no += 1;
                let t = Instant::now();
                camera.on_packet(at);
                if dec
                    .decode(black_box(data), *key, &mut out)
                    .unwrap()
                    .is_none()
                {
                    continue;
                }
                let v = out.view();
                let m = qa.analyze(&v, None);
                let sig = luma_signature(&v);
                let changes = camera.on_frame(
                    at,
                    FrameFacts {
                        width: out.width,
                        height: out.height,
                        black: m.black,
                        dark: m.mean_luma < 50.0,
                        signature: &sig,
                    },
                );
                black_box((m, changes));
                if timed {
                    full.push(ms(t.elapsed()));
                }
            }
        }
        let (bm, _, _) = stats(&bare);
        let (fm, _, _) = stats(&full);
        pipe_rows.push(row(
            format!("{} 640x480 bare decode", codec_name(clip.codec)),
            &bare,
            "1.00".into(),
        ));
        pipe_rows.push(row(
            format!(
                "{} 640x480 decode + quality + signature + camera health",
                codec_name(clip.codec)
            ),
            &full,
            format!("{:.2}", fm / bm),
        ));
    }
    print_table(
        "Whole per-analysed-frame media cost, 640x480",
        "path",
        "frames",
        Some("ratio to bare decode (medians)"),
        &pipe_rows,
    );

    // 4. Opus.
    eprintln!("timing opus decode ...");
    let packets = encode_tone(OPUS_PACKETS, 0.3).unwrap();
    let mut dec = AudioDecoder::new().unwrap();
    let mut pcm = Vec::new();
    for p in &packets {
        dec.decode(p, &mut pcm).unwrap(); // warm-up
    }
    let mut dec = AudioDecoder::new().unwrap();
    let mut samples = Vec::with_capacity(packets.len());
    let mut bytes = 0usize;
    for p in &packets {
        let t = Instant::now();
        let n = dec.decode(black_box(p), &mut pcm).unwrap();
        samples.push(ms(t.elapsed()));
        assert_eq!(n, 960);
        bytes += p.len();
    }
    let opus_rows = [row(
        "Opus 48 kHz mono, 20 ms packet (440 Hz tone, VoIP)".into(),
        &samples,
        format!("{:.0}", bytes as f64 / packets.len() as f64),
    )];
    print_table(
        "Opus decode, ms per 20 ms packet",
        "input",
        "packets",
        Some("mean packet bytes"),
        &opus_rows,
    );
}
