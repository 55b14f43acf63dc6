//! The document step run over a rendered clip, as the pipeline runs it but without a call: the
//! room is learnt from the frames before the step, each frame of the step is examined, and the
//! best capture is read when the step asks. Shared by the document tests and the capture bench.

use std::time::{Duration, Instant};

use super::actor::FPS;
use super::render::RgbImage;
use crate::document::card::{CaptureThresholds, CardScratch};
use crate::document::fields::{settles, DocumentKind, DocumentRead};
use crate::document::room::RoomMemory;
use crate::document::step::{Capture, DocumentStep, StepEvent};
use crate::document::{examine, DocumentReader, Examine};
use crate::media::decode::{DecodedFrame, VideoCodec, VideoDecoder, VpxEncoder};

/// Encodes `frames` with VP8 at a call's bitrate and decodes them again, as the server would
/// receive them.
pub fn through_vp8(frames: &[RgbImage], bitrate_kbps: u32) -> Vec<DecodedFrame> {
    let (w, h) = (frames[0].width, frames[0].height);
    let mut enc = VpxEncoder::new(VideoCodec::Vp8, w as u32, h as u32, FPS, bitrate_kbps)
        .expect("VP8 encoder");
    let mut dec = VideoDecoder::new(VideoCodec::Vp8).expect("VP8 decoder");
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let planes = DecodedFrame::from_rgb(f.width, f.height, &f.data);
        for (bytes, key) in enc.encode(&planes, i as i64, i == 0).expect("encoded") {
            let mut decoded = DecodedFrame::default();
            if dec
                .decode(&bytes, key, &mut decoded)
                .expect("decoded")
                .is_some()
            {
                out.push(decoded);
            }
        }
    }
    out
}

/// What the document step did with one clip.
pub struct StepRun {
    /// The last read and the capture it was read from.
    pub read: Option<(DocumentRead, Capture)>,
    /// Guidance codes raised, in order, each with the step frame it was raised on.
    pub guidance: Vec<(usize, crate::reasons::ReasonCode)>,
    pub gave_up: Option<crate::reasons::ReasonCode>,
    /// The step frame on which the step finished (read or gave up), if it did.
    pub finished_at: Option<usize>,
    /// Per-frame find + rectify + judge time (ms).
    pub examine_ms: Vec<f64>,
    /// OCR + field checks time of each read (ms).
    pub read_ms: Vec<f64>,
}

impl StepRun {
    pub fn codes(&self) -> Vec<crate::reasons::ReasonCode> {
        self.guidance.iter().map(|(_, c)| *c).collect()
    }
}

/// Runs the document step over decoded `frames` at 15 fps, after learning the room from
/// `before` (frames of the same call before the step), reading captures as it asks.
pub fn run_step(
    reader: &DocumentReader,
    kind: DocumentKind,
    before: &[DecodedFrame],
    frames: &[DecodedFrame],
) -> StepRun {
    let t0 = Instant::now();
    let frame_time = |i: usize| t0 + Duration::from_millis(i as u64 * 1000 / FPS as u64);
    let mut scratch = CardScratch::default();
    let mut room = RoomMemory::default();
    for (i, f) in before.iter().enumerate() {
        room.observe(&f.view(), frame_time(i), &mut scratch);
    }
    let start = frame_time(before.len());
    let mut step = DocumentStep::new(start);
    let thresholds = CaptureThresholds::default();
    let mut run = StepRun {
        read: None,
        guidance: Vec::new(),
        gave_up: None,
        finished_at: None,
        examine_ms: Vec::new(),
        read_ms: Vec::new(),
    };
    for (i, f) in frames.iter().enumerate() {
        let at = frame_time(before.len() + i);
        let clock = Instant::now();
        let with = Examine {
            thresholds: &thresholds,
            room: room.objects(),
            kind,
            faces: Some(&reader.faces),
        };
        let capture = examine(&f.view(), at, &mut scratch, &with);
        run.examine_ms.push(clock.elapsed().as_secs_f64() * 1000.0);
        let mut events = step.on_frame(at, capture);
        while let Some(e) = events.pop() {
            match e {
                StepEvent::Guidance { code, active: true } => run.guidance.push((i, code)),
                StepEvent::Guidance { .. } => {}
                StepEvent::GaveUp { code } => run.gave_up = Some(code),
                StepEvent::ReadyToRead => {
                    let Some(best) = step.take_best() else {
                        events.extend(step.on_read(at, false));
                        continue;
                    };
                    if let Some(dir) = std::env::var_os("DOC_DUMP") {
                        let path = std::path::Path::new(&dir).join(format!("read-{i}.png"));
                        let _ = best.image.save(path);
                        eprintln!("read at frame {i}: quad {:?}", best.quad.corners);
                    }
                    let clock = Instant::now();
                    let r = reader
                        .read(&best, kind, (2026, 11, 30))
                        .expect("OCR models run");
                    run.read_ms.push(clock.elapsed().as_secs_f64() * 1000.0);
                    let previous = run.read.as_ref().map(|(p, _)| p);
                    let complete = settles(previous, &r, kind);
                    run.read = Some((r, best));
                    events.extend(step.on_read(at, complete));
                }
            }
        }
        if step.is_done() {
            run.finished_at = Some(i);
            break;
        }
    }
    if run.gave_up.is_some() {
        // A step that gave up judges no text (as the pipeline does).
        run.read = None;
    }
    run
}
