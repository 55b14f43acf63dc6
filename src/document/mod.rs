//! ID documents shown during the call (issue 8).
//!
//! - `card`: find the card in a frame, rectify it to ID-1 proportions, judge the capture.
//! - `step`: the "show your ID" step (sans-IO): guidance, best capture over a window, give-up.
//! - `ocr`: PP-OCRv4 detection + recognition on the rectified card.
//! - `fields`: OCR lines to name / number / birth date; expected identity comparison.
//! - `checks`: GB 11643 (MOD 11-2) and ICAO 9303 check digits.
//!
//! [`DocumentReader::read`] ties them together for one chosen capture; the media pipeline runs
//! it on the call's media thread (off the async reactor; frames queue meanwhile) and turns the
//! result into a [`DocumentOutcome`] for the verdict.

pub mod card;
pub mod checks;
pub mod fields;
pub mod ocr;
pub mod room;
pub mod step;

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::analysis::face::embed::{embed_single_face, Embedding, MATCH_THRESHOLD};
use crate::analysis::face::FaceModels;
use crate::analysis::quality::I420;
use card::{card_candidates, judge, rectify, CaptureThresholds, CardScratch};
use fields::{DocumentKind, DocumentRead, ExpectedIdentity, FieldMatch, NumberCheck};
use step::Capture;

/// Whether the session asks for an ID document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DocumentMode {
    #[default]
    Off,
    /// Asked for; a failed capture is reported but does not fail the session.
    Optional,
    /// The session fails without a good capture.
    Required,
}

/// What of the document is kept with the session (purged by retention either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Retain {
    /// Only the checks' results (match / mismatch, valid / invalid).
    None,
    /// Also the recognised text (name, number, birth date), for the relying party's API.
    #[default]
    Text,
    /// Also the rectified card image, as an evidence frame.
    TextAndImage,
}

/// The relying party's document policy for one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentPolicy {
    #[serde(default)]
    pub mode: DocumentMode,
    #[serde(default)]
    pub kind: DocumentKind,
    #[serde(default)]
    pub retain: Retain,
    /// Identity data to compare with the card (clear or salted hashes). Never stored or logged.
    #[serde(default, skip_serializing)]
    pub expected: Option<ExpectedIdentity>,
}

impl DocumentPolicy {
    pub(crate) fn is_on(&self) -> bool {
        self.mode != DocumentMode::Off
    }
}

/// The card portrait compared with the live face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PortraitMatch {
    /// `None`: no face was found on the card.
    pub similarity: Option<f32>,
    pub threshold: f32,
}

/// Everything the verdict needs from the document step.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentOutcome {
    pub mode: DocumentMode,
    pub kind: DocumentKind,
    /// The step gave up with this reason (no readable capture).
    pub failure: Option<crate::reasons::ReasonCode>,
    pub read: Option<DocumentRead>,
    pub expected: Vec<(&'static str, FieldMatch)>,
    pub portrait: Option<PortraitMatch>,
    pub capture: Option<card::CaptureJudgement>,
    pub captures: usize,
}

impl DocumentOutcome {
    /// The relying party's view of the checks (no recognised text: that is stored apart, per
    /// the retain policy).
    pub(crate) fn checks_json(&self) -> Value {
        json!({
            "mode": self.mode,
            "kind": self.kind,
            "failure": self.failure,
            "number_check": self.read.as_ref().map(|r| &r.number_check),
            "birth_date_conflict": self.read.as_ref().map(|r| r.birth_date_conflict),
            "expected": self.expected.iter().map(|(k, v)| json!({ "field": k, "result": v })).collect::<Vec<_>>(),
            "portrait": self.portrait,
            "capture": self.capture,
            "captures": self.captures,
        })
    }
}

/// What the per-frame search needs besides the frame: capture thresholds, the room's own
/// card-like objects (see [`room::RoomMemory`]), the kind of card asked for (where it prints
/// text and its portrait) and the face detector that finds that portrait.
#[derive(Clone, Copy)]
pub struct Examine<'a> {
    pub thresholds: &'a CaptureThresholds,
    pub room: &'a [card::CardQuad],
    pub kind: DocumentKind,
    /// Without it the portrait is not looked for (the text lines still are).
    pub faces: Option<&'a FaceModels>,
}

/// Candidates judged for content per frame, best-supported first (each costs a small
/// rectification, and one with a portrait a face detection: about 1 ms).
const MAX_CANDIDATES_JUDGED: usize = 6;

/// The per-frame part: find, rectify and judge the card in `frame` (a few ms at 640x480). A
/// candidate counts only when it looks like the card asked for ([`looks_like_card`]): the room's
/// frames, windows, books and screens have a card's edges but not its print.
pub fn examine(
    frame: &I420,
    at: Instant,
    scratch: &mut CardScratch,
    with: &Examine<'_>,
) -> Option<Capture> {
    let candidates = card_candidates(frame, scratch, with.room);
    let quad = candidates
        .into_iter()
        .take(MAX_CANDIDATES_JUDGED)
        .find(|quad| {
            rectify(frame, quad, card::CONTENT_WIDTH, card::CONTENT_HEIGHT)
                .is_some_and(|small| looks_like_card(&small, quad.cut_off, with.kind, with.faces))
        })?;
    let image = rectify(frame, &quad, card::RECTIFIED_WIDTH, card::RECTIFIED_HEIGHT)?;
    let judgement = judge(&quad, &image, frame.width, with.thresholds);
    Some(Capture {
        at,
        quad,
        judgement,
        image,
    })
}

/// Where a kind of card prints its text lines and its portrait (shares of the rectified card:
/// x0, y0, x1, y1), and how many of those lines must look printed.
struct Layout {
    text_lines: &'static [[f32; 4]],
    min_lines: usize,
    portrait: Option<[f32; 4]>,
}

fn layout(kind: DocumentKind) -> Layout {
    match kind {
        // Name, birth date, address (two lines), number; a glare patch may wash out two of them.
        DocumentKind::CnResidentId => Layout {
            text_lines: &[
                [0.17, 0.07, 0.45, 0.19],
                [0.17, 0.34, 0.55, 0.43],
                [0.17, 0.47, 0.60, 0.63],
                [0.35, 0.81, 0.92, 0.91],
            ],
            min_lines: 2,
            portrait: Some(portrait_region(kind)),
        },
        // The two MRZ lines.
        DocumentKind::Passport => Layout {
            text_lines: &[[0.04, 0.80, 0.96, 0.97]],
            min_lines: 1,
            portrait: Some(portrait_region(kind)),
        },
        // Layout unknown: print somewhere on it.
        DocumentKind::Id1Card => Layout {
            text_lines: &[[0.05, 0.05, 0.95, 0.95]],
            min_lines: 1,
            portrait: None,
        },
    }
}

/// Share of a text line's cells that must look printed (characters leave gaps between them).
const PRINTED_LINE: f32 = 0.25;
/// Share of a cut-off candidate's visible part that must look printed: its layout cannot be
/// placed, but a card is print edge to edge while a wall meeting the frame's border is not.
const PRINTED_CUT_OFF: f32 = 0.25;

/// Whether the rectified candidate `small` ([`card::CONTENT_WIDTH`] wide) looks like the card
/// asked for: print where the kind's layout puts its text lines and, for kinds with a portrait
/// (when a detector is given), a face where the portrait goes. A candidate leaning on the
/// frame's border needs print over its visible part.
pub(crate) fn looks_like_card(
    small: &image::RgbImage,
    cut_off: bool,
    kind: DocumentKind,
    faces: Option<&FaceModels>,
) -> bool {
    if cut_off {
        return card::printed_share(small, [0.03, 0.03, 0.97, 0.97]) >= PRINTED_CUT_OFF;
    }
    let layout = layout(kind);
    let printed = layout
        .text_lines
        .iter()
        .filter(|r| card::printed_share(small, **r) >= PRINTED_LINE)
        .count();
    if printed < layout.min_lines {
        return false;
    }
    match (layout.portrait, faces) {
        (Some(region), Some(faces)) => portrait_has_face(faces, small, region),
        _ => true,
    }
}

/// Whether the face detector finds a face in `region` of the rectified card `img`. The crop is
/// placed in the middle of a grey canvas twice its size: the short-range detector misses faces
/// that fill the whole picture, as a portrait does its frame.
fn portrait_has_face(faces: &FaceModels, img: &image::RgbImage, region: [f32; 4]) -> bool {
    let [x0, y0, x1, y1] = region;
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (cx, cy) = ((x0 * w) as u32, (y0 * h) as u32);
    let (cw, ch) = (((x1 - x0) * w) as u32, ((y1 - y0) * h) as u32);
    let crop = image::imageops::crop_imm(img, cx, cy, cw, ch).to_image();
    let side = 2 * cw.max(ch);
    let mut canvas = image::RgbImage::from_pixel(side, side, image::Rgb([128, 128, 128]));
    image::imageops::replace(
        &mut canvas,
        &crop,
        ((side - cw) / 2) as i64,
        ((side - ch) / 2) as i64,
    );
    let (width, height) = (side as usize, side as usize);
    let (y, u, v) = crate::analysis::image::rgb_to_i420(width, height, canvas.as_raw());
    let planes = I420 {
        width,
        height,
        y: &y,
        u: &u,
        v: &v,
        y_stride: width,
        uv_stride: width.div_ceil(2),
        full_range: false,
    };
    let mut session = faces.detector.acquire(0);
    crate::analysis::face::detector::detect(&mut session, &planes, &mut Vec::new())
        .is_ok_and(|found| !found.is_empty())
}

/// Where the portrait is on each kind of card (share of the rectified card: x0, y0, x1, y1).
fn portrait_region(kind: DocumentKind) -> [f32; 4] {
    match kind {
        DocumentKind::CnResidentId => [0.60, 0.04, 1.0, 0.74],
        DocumentKind::Passport => [0.0, 0.10, 0.38, 0.80],
        DocumentKind::Id1Card => [0.0, 0.0, 1.0, 1.0],
    }
}

/// Reads a chosen capture: OCR, field checks, and the portrait's embedding.
pub struct DocumentReader {
    pub ocr: Arc<ocr::OcrModels>,
    pub faces: Arc<FaceModels>,
}

impl std::fmt::Debug for DocumentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentReader").finish_non_exhaustive()
    }
}

impl DocumentReader {
    /// OCR and the kind's field checks (`today` bounds birth dates).
    pub fn read(
        &self,
        capture: &Capture,
        kind: DocumentKind,
        today: (i32, u32, u32),
    ) -> Result<DocumentRead, crate::analysis::face::models::ModelError> {
        let lines = self.ocr.read(&capture.image)?;
        Ok(match kind {
            DocumentKind::CnResidentId => fields::read_cn_id(&lines, today),
            DocumentKind::Passport => fields::read_passport(&lines, today),
            DocumentKind::Id1Card => DocumentRead {
                fields: Default::default(),
                number_check: NumberCheck::Unread,
                birth_date_conflict: false,
            },
        })
    }

    /// The embedding of the card's portrait, if a face is found where the kind puts it.
    pub fn portrait(&self, capture: &Capture, kind: DocumentKind) -> Option<Embedding> {
        let [x0, y0, x1, y1] = portrait_region(kind);
        let (w, h) = (capture.image.width() as f32, capture.image.height() as f32);
        let crop = image::imageops::crop_imm(
            &capture.image,
            (x0 * w) as u32,
            (y0 * h) as u32,
            ((x1 - x0) * w) as u32,
            ((y1 - y0) * h) as u32,
        )
        .to_image();
        embed_single_face(&self.faces, &crop).ok()
    }
}

/// The portrait compared with the best live embedding.
pub fn compare_portrait(portrait: Option<&Embedding>, live: &[Embedding]) -> PortraitMatch {
    let similarity = portrait.and_then(|p| {
        live.iter()
            .map(|e| e.cosine(p))
            .fold(None, |acc: Option<f32>, s| {
                Some(acc.map_or(s, |a| a.max(s)))
            })
    });
    PortraitMatch {
        similarity,
        threshold: MATCH_THRESHOLD,
    }
}

/// Today's date (UTC) as (year, month, day), for birth-date plausibility.
pub fn today_utc() -> (i32, u32, u32) {
    let days = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        / 86_400) as i64;
    civil_from_days(days)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + (m <= 2) as i64) as i32;
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn policy_json_defaults_and_expected_is_never_serialized() {
        let p: DocumentPolicy = serde_json::from_value(json!({
            "mode": "required",
            "expected": { "name": "张伟" }
        }))
        .unwrap();
        assert_eq!(p.kind, DocumentKind::CnResidentId);
        assert_eq!(p.retain, Retain::Text);
        assert!(p.expected.is_some());
        let back = serde_json::to_string(&p).unwrap();
        assert!(!back.contains("张伟"), "{back}");
        assert!(serde_json::from_value::<DocumentPolicy>(json!({ "mode": "sometimes" })).is_err());
    }
}
