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
use card::{find_card_excluding, judge, rectify, CaptureThresholds, CardScratch};
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
    pub fn is_on(&self) -> bool {
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
    pub fn checks_json(&self) -> Value {
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

/// The per-frame part: find, rectify and judge the card in `frame` (a few ms at 640x480),
/// ignoring the room's own card-like objects (`room`, see [`room::RoomMemory`]).
pub fn examine(
    frame: &I420,
    at: Instant,
    scratch: &mut CardScratch,
    thresholds: &CaptureThresholds,
    room: &[card::CardQuad],
) -> Option<Capture> {
    let quad = find_card_excluding(frame, scratch, room)?;
    let image = rectify(frame, &quad, card::RECTIFIED_WIDTH, card::RECTIFIED_HEIGHT)?;
    let judgement = judge(&quad, &image, frame.width, thresholds);
    Some(Capture {
        at,
        quad,
        judgement,
        image,
    })
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
