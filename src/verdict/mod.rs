//! The verdict: `passed`, `failed`, `needs_review`, `expired` or `cancelled`, with reasons that are
//! stable codes (see `reasons`). Decided from the liveness outcome, the spoof score, the ID-photo
//! match and the call's device and network history. Network-aware: failed steps while the
//! network was poor are the network's fault (`NETWORK_UNSTABLE`, retryable), not the person's.

use serde::Serialize;
use serde_json::{json, Value};

use crate::analysis::provenance::ProvenanceScores;
use crate::document::fields::{DocumentKind, FieldMatch, NumberCheck};
use crate::document::{DocumentMode, DocumentOutcome};
use crate::liveness::light::LightResult;
use crate::liveness::plan::Action;
use crate::liveness::spoof::{
    looks_planar, FlatMotion, PlanarityScore, FLAT_MOTION_MIN_FRAMES, PLANAR_RESIDUAL_MAX,
};
use crate::liveness::LivenessOutcome;
use crate::reasons::ReasonCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictStatus {
    Passed,
    Failed,
    NeedsReview,
    Expired,
    Cancelled,
}

impl VerdictStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictStatus::Passed => "passed",
            VerdictStatus::Failed => "failed",
            VerdictStatus::NeedsReview => "needs_review",
            VerdictStatus::Expired => "expired",
            VerdictStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictReason {
    pub code: ReasonCode,
    pub retryable: bool,
    pub hint_key: String,
    pub hint_en: &'static str,
    pub hint_zh: &'static str,
    /// For the operator only (metrics, timestamps, frame references).
    pub evidence: Value,
}

impl VerdictReason {
    pub fn new(code: ReasonCode, evidence: Value) -> Self {
        let info = code.info();
        VerdictReason {
            code,
            retryable: info.retryable,
            hint_key: code.hint_key(),
            hint_en: info.hint_en,
            hint_zh: info.hint_zh,
            evidence,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub status: VerdictStatus,
    pub reasons: Vec<VerdictReason>,
    /// Scores for the relying party (never shown to the person).
    pub scores: Value,
    /// Evidence frames stored with the session (file names under its evidence folder).
    pub frames: Vec<String>,
    /// Text read from the ID document, kept apart from the verdict (its own column, purged by
    /// retention) and only when the session's policy retains it.
    #[serde(skip)]
    pub document_fields: Option<Value>,
    /// The live face's template (the mean of its embeddings), never in the verdict's JSON: kept
    /// as the subject's enrolment when the session asked for one and passed.
    #[serde(skip)]
    pub live_face: Option<crate::analysis::face::embed::Embedding>,
}

impl Verdict {
    /// Keeps the text read from the ID document with the verdict (see `document_fields`).
    pub fn set_document_fields<T: Serialize>(&mut self, fields: &T) {
        self.document_fields = serde_json::to_value(fields).ok();
    }

    /// What the person's page may see: the status and each reason's code, retryability and hint.
    pub(crate) fn for_client(&self) -> Value {
        json!({
            "status": self.status,
            "reasons": self.reasons.iter().map(|r| json!({
                "code": r.code,
                "retryable": r.retryable,
                "hint_key": r.hint_key,
            })).collect::<Vec<_>>(),
        })
    }
}

/// What the live face is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceKind {
    /// The ID photo the relying party uploaded (`FACE_MISMATCH`).
    IdPhoto,
    /// The face enrolled when the subject last passed, in a re-verification
    /// (`ENROLMENT_MISMATCH`).
    Enrolment,
}

/// A comparison of the live face with a reference: the best similarity over the `frames` live
/// frames embedded (none: the face was never frontal and well lit long enough to compare).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MatchResult {
    pub similarity: f32,
    pub threshold: f32,
    pub frames: usize,
    pub against: ReferenceKind,
}

/// Everything the decision looks at.
#[derive(Debug, Clone)]
pub struct VerdictInputs {
    pub liveness: Option<LivenessOutcome>,
    pub face_match: Option<MatchResult>,
    /// Milliseconds with poor network quality while steps ran.
    pub network_poor_ms: u64,
    /// Camera/microphone/capture faults active when the decision is made (persistent ones).
    pub persistent_faults: Vec<ReasonCode>,
    /// Capture and framing faults that were active while a step that failed was running.
    pub step_faults: Vec<ReasonCode>,
    /// The call ended before the plan finished (how it ended).
    pub ended_early: Option<&'static str>,
    /// The ID-document step's result, when the session asked for one.
    pub document: Option<crate::document::DocumentOutcome>,
    /// Screen and injection cues (`analysis::provenance`): reported in the scores, never a
    /// reason on their own.
    pub provenance: Option<ProvenanceScores>,
}

/// Capture and framing faults that can explain a failed step, in the order a person should fix
/// them: light, then framing, then the picture itself.
pub(crate) const STEP_CAUSE_ORDER: [ReasonCode; 11] = [
    ReasonCode::LightingTooDark,
    ReasonCode::LightingTooBright,
    ReasonCode::LightingBacklit,
    ReasonCode::Glare,
    ReasonCode::FaceOccluded,
    ReasonCode::MultipleFaces,
    ReasonCode::FaceTooClose,
    ReasonCode::FaceTooFar,
    ReasonCode::FaceNotCentered,
    ReasonCode::Blur,
    ReasonCode::CameraStalled,
];

/// A card portrait that scores below the match threshold by less than this goes to review, not to
/// a non-retryable failure: the same person's card read 0.638 and 0.677 against 0.66 in an
/// independent run (a crop that caught the fingers beside the card), while different people stay
/// below 0.50 (docs/DOCUMENTS.md).
pub const PORTRAIT_REVIEW_MARGIN: f32 = 0.08;

/// Poor network for at least this long during the steps makes failures the network's fault.
pub(crate) const NETWORK_BLAME_MS: u64 = 2_000;
/// Spoof residual below this multiple of the planar threshold (but not planar) goes to review.
pub(crate) const SPOOF_REVIEW_MARGIN: f64 = 1.3;

pub fn decide(v: &VerdictInputs) -> Verdict {
    let mut reasons = Vec::new();
    let mut scores = serde_json::Map::new();
    let spoof = v.liveness.as_ref().and_then(|l| l.spoof.clone());
    if let Some(s) = &spoof {
        scores.insert("planarity".into(), spoof_json(s));
    }
    if let Some(m) = &v.face_match {
        scores.insert("face_match".into(), json!(m));
    }
    if let Some(l) = &v.liveness {
        scores.insert("flat_motion".into(), flat_json(&l.flat));
        if let Some(light) = &l.light {
            scores.insert("screen_light".into(), json!(light));
        }
    }
    let light = v.liveness.as_ref().and_then(|l| l.light.as_ref());
    let light_result = light.and_then(|l| l.result);
    if let Some(d) = &v.document {
        scores.insert("document".into(), d.checks_json());
    }
    if let Some(p) = &v.provenance {
        scores.insert("provenance".into(), json!(p));
    }
    let scores = Value::Object(scores);
    let verdict = |status, reasons| Verdict {
        status,
        reasons,
        scores: scores.clone(),
        frames: Vec::new(),
        document_fields: None,
        live_face: None,
    };
    let network_poor = v.network_poor_ms >= NETWORK_BLAME_MS;
    let device_fault = v.persistent_faults.iter().copied().find(|c| {
        matches!(
            c,
            ReasonCode::PermissionDenied
                | ReasonCode::DeviceNotFound
                | ReasonCode::DeviceInUse
                | ReasonCode::DeviceUnsupported
                | ReasonCode::BrowserUnsupported
                | ReasonCode::CameraBlack
                | ReasonCode::CameraFrozen
                | ReasonCode::CameraNoVideo
                | ReasonCode::MicMissing
                | ReasonCode::MicSilent
        )
    });
    // The cause a person can fix first: light before framing before presence. Blur, glare and
    // colour cast do not stop the steps: they are named only when a step failed while they lasted.
    let capture_fault = [
        ReasonCode::LightingTooDark,
        ReasonCode::LightingTooBright,
        ReasonCode::LightingBacklit,
        ReasonCode::FaceOccluded,
        ReasonCode::MultipleFaces,
        ReasonCode::FaceTooClose,
        ReasonCode::FaceTooFar,
        ReasonCode::FaceNotFound,
    ]
    .into_iter()
    .find(|c| v.persistent_faults.contains(c));
    // What to fix when steps failed: the persistent cause, then the faults that lasted through a
    // failed step, in the same order of what a person fixes first.
    let step_causes: Vec<ReasonCode> = capture_fault
        .into_iter()
        .chain(
            STEP_CAUSE_ORDER
                .into_iter()
                .filter(|c| v.step_faults.contains(c)),
        )
        .fold(Vec::new(), |mut acc, c| {
            if !acc.contains(&c) {
                acc.push(c);
            }
            acc
        });
    let fault_reason = |code: ReasonCode| VerdictReason::new(code, json!({ "persistent": true }));

    // A flat face is decisive whatever else happened.
    let flat = v
        .liveness
        .as_ref()
        .map(|l| &l.flat)
        .filter(|f| f.frames >= FLAT_MOTION_MIN_FRAMES);
    if spoof.as_ref().is_some_and(looks_planar) || flat.is_some() {
        reasons.push(VerdictReason::new(
            ReasonCode::SpoofSuspected,
            json!({ "kind": "photo", "planarity": spoof.as_ref().map(spoof_json), "flat_motion": flat.map(flat_json) }),
        ));
        return verdict(VerdictStatus::Failed, reasons);
    }
    // No reflection of the screen's colours in good conditions, on every attempt: a recording.
    if let Some(l) = light.filter(|l| l.absent()) {
        reasons.push(VerdictReason::new(
            ReasonCode::SpoofSuspected,
            json!({ "kind": "screen_light", "screen_light": l }),
        ));
        return verdict(VerdictStatus::Failed, reasons);
    }
    // The light step could not be judged for a reason the person can fix.
    let light_cause = light_result
        .filter(|r| matches!(r, LightResult::TooBright | LightResult::TooFar))
        .and_then(|r| r.reason());
    let light_reason =
        |code: ReasonCode| VerdictReason::new(code, json!({ "screen_light": light }));
    if let Some(m) = v
        .face_match
        .filter(|m| m.frames > 0 && m.similarity < m.threshold)
    {
        let code = match m.against {
            ReferenceKind::IdPhoto => ReasonCode::FaceMismatch,
            ReferenceKind::Enrolment => ReasonCode::EnrolmentMismatch,
        };
        reasons.push(VerdictReason::new(code, json!(m)));
        return verdict(VerdictStatus::Failed, reasons);
    }
    let Some(liveness) = v
        .liveness
        .as_ref()
        .filter(|l| l.finished && v.ended_early.is_none())
    else {
        // The call ended before the checks were done: a broken device first, then the network
        // (which makes everything else unreliable), then the room, then the ID card.
        let document_fault = v.document.as_ref().and_then(|d| d.failure);
        if let Some(code) = device_fault {
            reasons.push(fault_reason(code));
        } else if network_poor {
            reasons.push(VerdictReason::new(
                ReasonCode::NetworkUnstable,
                json!({ "poor_ms": v.network_poor_ms }),
            ));
        } else if let Some(code) = capture_fault {
            reasons.push(fault_reason(code));
        } else if let Some(code) = document_fault {
            reasons.push(VerdictReason::new(
                code,
                json!({ "during": "document step" }),
            ));
        }
        reasons.push(VerdictReason::new(
            ReasonCode::SessionIncomplete,
            json!({ "ended": v.ended_early }),
        ));
        let status = match v.ended_early {
            Some("deleted") | Some("closed_by_peer") => VerdictStatus::Cancelled,
            Some("expired") => VerdictStatus::Expired,
            _ => VerdictStatus::Failed,
        };
        return verdict(status, reasons);
    };
    let failed: Vec<_> = liveness
        .steps
        .iter()
        .filter(|(_, r, _)| *r == Some(false))
        .collect();
    if !failed.is_empty() {
        if network_poor {
            reasons.push(VerdictReason::new(
                ReasonCode::NetworkUnstable,
                json!({ "poor_ms": v.network_poor_ms }),
            ));
        } else if let Some(code) = device_fault {
            reasons.push(fault_reason(code));
        } else {
            // The cause the person can fix comes first, so the result screen and the relying
            // party say what to change; the failed steps follow.
            reasons.extend(light_cause.map(light_reason));
            for code in &step_causes {
                reasons.push(VerdictReason::new(
                    *code,
                    json!({ "during": "failed step", "persistent": capture_fault == Some(*code) }),
                ));
            }
            reasons.push(VerdictReason::new(
                ReasonCode::ChallengeFailed,
                json!({ "failed": failed.len(), "steps": liveness.steps.len() }),
            ));
            for (step, _, evidence) in &failed {
                // The spoken step says what it missed: no voice (MIC_SILENT) or lips that did
                // not follow it (SPEECH_NOT_MATCHED).
                let speech = liveness
                    .speech
                    .as_ref()
                    .filter(|_| step.action == Action::SpeakDigits)
                    .and_then(|s| s.failure.map(|code| (code, s)));
                reasons.push(match speech {
                    Some((code, s)) => VerdictReason::new(
                        code,
                        json!({ "step": step, "evidence": evidence, "speech": s.evidence }),
                    ),
                    None => VerdictReason::new(
                        ReasonCode::ChallengeTimeout,
                        json!({ "step": step, "evidence": evidence }),
                    ),
                });
            }
        }
        return verdict(VerdictStatus::Failed, reasons);
    }
    // Steps passed, but a device the session requires is still failing (e.g. no microphone).
    if let Some(code) = device_fault {
        reasons.push(fault_reason(code));
        return verdict(VerdictStatus::Failed, reasons);
    }
    if let Some(code) = light_cause {
        reasons.push(light_reason(code));
        return verdict(VerdictStatus::Failed, reasons);
    }
    if let Some((status, mut found)) = v.document.as_ref().and_then(document_reasons) {
        reasons.append(&mut found);
        return verdict(status, reasons);
    }
    // Inconclusive evidence goes to a reviewer: a weak, unmeasurable or skipped light step, too little head
    // motion to judge the geometry, or a borderline geometry.
    match light {
        Some(l) if l.skipped() => reasons.push(light_reason(ReasonCode::ScreenLightSkipped)),
        Some(_)
            if matches!(
                light_result,
                Some(LightResult::Weak | LightResult::Unmeasured)
            ) =>
        {
            reasons.push(light_reason(ReasonCode::ScreenLightNotSeen))
        }
        _ => {}
    }
    match &spoof {
        None => {
            reasons.push(VerdictReason::new(
                ReasonCode::SpoofSuspected,
                json!({ "kind": "unknown", "note": "not enough head motion to judge" }),
            ));
        }
        Some(s) if s.homography_residual < PLANAR_RESIDUAL_MAX * SPOOF_REVIEW_MARGIN => {
            reasons.push(VerdictReason::new(
                ReasonCode::SpoofSuspected,
                json!({ "kind": "borderline", "planarity": spoof_json(s) }),
            ));
        }
        Some(_) => {}
    }
    // A reference was given but the face was never frontal and well lit long enough to be
    // compared: never a pass without the comparison; an operator looks.
    if let Some(m) = v.face_match.filter(|m| m.frames == 0) {
        let code = match m.against {
            ReferenceKind::IdPhoto => ReasonCode::FaceMismatch,
            ReferenceKind::Enrolment => ReasonCode::EnrolmentMismatch,
        };
        reasons.push(VerdictReason::new(
            code,
            json!({ "against": m.against, "frames": 0, "note": "no frontal, well-lit frame to compare" }),
        ));
    }
    if reasons.is_empty() {
        verdict(VerdictStatus::Passed, reasons)
    } else {
        verdict(VerdictStatus::NeedsReview, reasons)
    }
}

/// What the ID document says against the session, most decisive first: a portrait of someone
/// else, a number that fails its check, data that differs from what the relying party expects,
/// then a capture that never became readable (only when the document is required).
fn document_reasons(d: &DocumentOutcome) -> Option<(VerdictStatus, Vec<VerdictReason>)> {
    let required = d.mode == DocumentMode::Required;
    if let Some(p) = d.portrait {
        match p.similarity {
            Some(s) if s < p.threshold - PORTRAIT_REVIEW_MARGIN => {
                return Some((
                    VerdictStatus::Failed,
                    vec![VerdictReason::new(
                        ReasonCode::DocumentPortraitMismatch,
                        json!(p),
                    )],
                ))
            }
            Some(s) if s < p.threshold => {
                return Some((
                    VerdictStatus::NeedsReview,
                    vec![VerdictReason::new(
                        ReasonCode::DocumentPortraitMismatch,
                        json!({ "kind": "borderline", "similarity": s, "threshold": p.threshold, "review_margin": PORTRAIT_REVIEW_MARGIN }),
                    )],
                ))
            }
            None if d.kind != DocumentKind::Passport || required => {
                return Some((
                    VerdictStatus::NeedsReview,
                    vec![VerdictReason::new(
                        ReasonCode::DocumentPortraitMismatch,
                        json!({ "portrait": "not found on the card", "threshold": p.threshold }),
                    )],
                ))
            }
            _ => {}
        }
    }
    if let Some(read) = &d.read {
        if let NumberCheck::Invalid { why } = &read.number_check {
            return Some((
                VerdictStatus::Failed,
                vec![VerdictReason::new(
                    ReasonCode::IdNumberInvalid,
                    json!({ "check": why }),
                )],
            ));
        }
        let differing: Vec<&str> = d
            .expected
            .iter()
            .filter(|(_, m)| *m == FieldMatch::Mismatch)
            .map(|(k, _)| *k)
            .collect();
        if !differing.is_empty() || read.birth_date_conflict {
            return Some((
                VerdictStatus::Failed,
                vec![VerdictReason::new(
                    ReasonCode::IdInfoMismatch,
                    json!({ "differing": differing, "birth_date_conflict": read.birth_date_conflict }),
                )],
            ));
        }
        let unread: Vec<&str> = d
            .expected
            .iter()
            .filter(|(_, m)| *m == FieldMatch::Unread)
            .map(|(k, _)| *k)
            .collect();
        if !unread.is_empty() {
            return Some((
                VerdictStatus::NeedsReview,
                vec![VerdictReason::new(
                    ReasonCode::DocumentBlur,
                    json!({ "unread": unread }),
                )],
            ));
        }
    }
    match d.failure {
        Some(code) if required => Some((
            VerdictStatus::Failed,
            vec![VerdictReason::new(
                code,
                json!({ "capture": d.capture, "captures": d.captures }),
            )],
        )),
        _ => None,
    }
}

fn flat_json(f: &FlatMotion) -> Value {
    json!({ "frames": f.frames, "max_ratio_change": f.max_ratio_change, "min_frames": FLAT_MOTION_MIN_FRAMES })
}

fn spoof_json(s: &PlanarityScore) -> Value {
    json!({
        "homography_residual": s.homography_residual,
        "affine_residual": s.affine_residual,
        "frames": s.frames,
        "max_yaw": s.max_yaw,
        "max_pitch": s.max_pitch,
        "planar_max": PLANAR_RESIDUAL_MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::plan::{Action, ChallengePlan};
    use std::time::Duration;

    fn outcome(results: &[Option<bool>], residual: Option<f64>) -> LivenessOutcome {
        let plan = ChallengePlan::from_actions(
            &[Action::TurnLeft, Action::Blink, Action::LookUp][..results.len()],
            Duration::from_secs(6),
        );
        LivenessOutcome {
            steps: plan
                .steps
                .into_iter()
                .zip(results)
                .map(|(s, r)| (s, *r, None))
                .collect(),
            finished: results.iter().all(|r| r.is_some()),
            spoof: residual.map(|r| PlanarityScore {
                homography_residual: r,
                affine_residual: r,
                frames: 10,
                max_yaw: 20.0,
                max_pitch: 0.0,
            }),
            flat: FlatMotion {
                frames: 0,
                max_ratio_change: 0.0,
            },
            light: None,
            speech: None,
        }
    }

    fn inputs(l: LivenessOutcome) -> VerdictInputs {
        VerdictInputs {
            liveness: Some(l),
            face_match: None,
            network_poor_ms: 0,
            persistent_faults: vec![],
            step_faults: Vec::new(),
            ended_early: None,
            document: None,
            provenance: None,
        }
    }

    fn codes(v: &Verdict) -> Vec<ReasonCode> {
        v.reasons.iter().map(|r| r.code).collect()
    }

    #[test]
    fn all_steps_and_a_3d_face_pass() {
        let v = decide(&inputs(outcome(&[Some(true); 3], Some(0.06))));
        assert_eq!(v.status, VerdictStatus::Passed);
        assert!(v.reasons.is_empty());
        assert!(
            v.for_client().get("scores").is_none(),
            "scores never reach the client"
        );
    }

    #[test]
    fn a_flat_face_fails_as_spoof_even_when_steps_pass() {
        let v = decide(&inputs(outcome(&[Some(true); 3], Some(0.01))));
        assert_eq!(
            (v.status, codes(&v)),
            (VerdictStatus::Failed, vec![ReasonCode::SpoofSuspected])
        );
        assert!(!v.reasons[0].retryable);
    }

    #[test]
    fn failed_steps_blame_the_network_when_it_was_poor() {
        let mut i = inputs(outcome(&[Some(true), Some(false), Some(false)], Some(0.06)));
        i.network_poor_ms = 5_000;
        let v = decide(&i);
        assert_eq!(codes(&v), vec![ReasonCode::NetworkUnstable]);
        assert!(v.reasons[0].retryable);
        i.network_poor_ms = 0;
        let v = decide(&i);
        assert_eq!(
            codes(&v),
            vec![
                ReasonCode::ChallengeFailed,
                ReasonCode::ChallengeTimeout,
                ReasonCode::ChallengeTimeout
            ]
        );
        i.persistent_faults = vec![ReasonCode::LightingTooDark];
        assert_eq!(
            codes(&decide(&i)),
            vec![
                ReasonCode::LightingTooDark,
                ReasonCode::ChallengeFailed,
                ReasonCode::ChallengeTimeout,
                ReasonCode::ChallengeTimeout
            ]
        );
    }

    /// The result screen and the relying party must be able to say what to fix: a framing or
    /// capture fault that lasted through a failed step comes before the `CHALLENGE_*` reasons.
    #[test]
    fn failed_steps_name_the_capture_cause_first() {
        let mut i = inputs(outcome(&[Some(true), Some(false), Some(true)], Some(0.06)));
        i.step_faults = vec![ReasonCode::Blur, ReasonCode::FaceNotCentered];
        let v = decide(&i);
        assert_eq!(
            codes(&v),
            vec![
                ReasonCode::FaceNotCentered,
                ReasonCode::Blur,
                ReasonCode::ChallengeFailed,
                ReasonCode::ChallengeTimeout
            ]
        );
        assert!(v.reasons.iter().all(|r| r.retryable));
    }

    /// A person blocked by their own framing the whole time is told that, never a spoof.
    #[test]
    fn a_call_blocked_by_framing_names_the_framing() {
        let mut i = inputs(outcome(&[None, None, None], None));
        i.ended_early = Some("blocked");
        i.persistent_faults = vec![ReasonCode::FaceTooClose];
        let v = decide(&i);
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::Failed,
                vec![ReasonCode::FaceTooClose, ReasonCode::SessionIncomplete]
            )
        );
        assert!(v.reasons[0].retryable);
    }

    #[test]
    fn mismatch_and_incomplete_calls() {
        let mut i = inputs(outcome(&[Some(true); 3], Some(0.06)));
        i.face_match = Some(MatchResult {
            similarity: 0.2,
            threshold: 0.5,
            frames: 3,
            against: ReferenceKind::IdPhoto,
        });
        assert_eq!(codes(&decide(&i)), vec![ReasonCode::FaceMismatch]);
        // A re-verification names the enrolment, not an ID photo.
        i.face_match = i.face_match.map(|m| MatchResult {
            against: ReferenceKind::Enrolment,
            ..m
        });
        let v = decide(&i);
        assert_eq!(v.status, VerdictStatus::Failed);
        assert_eq!(codes(&v), vec![ReasonCode::EnrolmentMismatch]);
        assert_eq!(v.reasons[0].evidence["against"], "enrolment");
        // Nothing compared (never frontal and lit): no pass without the comparison.
        i.face_match = i.face_match.map(|m| MatchResult { frames: 0, ..m });
        let v = decide(&i);
        assert_eq!(v.status, VerdictStatus::NeedsReview);
        assert_eq!(codes(&v), vec![ReasonCode::EnrolmentMismatch]);
        let mut i = inputs(outcome(&[Some(true), None, None], None));
        i.ended_early = Some("deleted");
        let v = decide(&i);
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::Cancelled,
                vec![ReasonCode::SessionIncomplete]
            )
        );
        i.ended_early = Some("max_duration");
        i.persistent_faults = vec![ReasonCode::CameraBlack];
        let v = decide(&i);
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::Failed,
                vec![ReasonCode::CameraBlack, ReasonCode::SessionIncomplete]
            )
        );
    }

    #[test]
    fn missing_or_borderline_geometry_goes_to_review() {
        assert_eq!(
            decide(&inputs(outcome(&[Some(true); 3], None))).status,
            VerdictStatus::NeedsReview
        );
        assert_eq!(
            decide(&inputs(outcome(
                &[Some(true); 3],
                Some(PLANAR_RESIDUAL_MAX * 1.1)
            )))
            .status,
            VerdictStatus::NeedsReview
        );
    }

    /// A card portrait just under the threshold is a person to look at, not a non-retryable
    /// failure; well under it is someone else's card.
    #[test]
    fn a_borderline_card_portrait_goes_to_review() {
        let with_similarity = |s: f32| {
            let mut i = inputs(outcome_of_three_passes());
            i.document = Some(DocumentOutcome {
                mode: DocumentMode::Required,
                kind: DocumentKind::CnResidentId,
                failure: None,
                read: None,
                expected: vec![],
                portrait: Some(crate::document::PortraitMatch {
                    similarity: Some(s),
                    threshold: 0.66,
                }),
                capture: None,
                captures: 10,
            });
            decide(&i)
        };
        let v = with_similarity(0.638);
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::NeedsReview,
                vec![ReasonCode::DocumentPortraitMismatch]
            )
        );
        let v = with_similarity(0.45);
        assert_eq!(v.status, VerdictStatus::Failed);
        assert_eq!(codes(&v), vec![ReasonCode::DocumentPortraitMismatch]);
    }

    #[test]
    fn a_required_document_that_was_never_read_fails_with_the_capture_reason() {
        use crate::document::fields::{DocumentRead, ReadFields};
        let incomplete = DocumentRead {
            fields: ReadFields::default(),
            number_check: NumberCheck::Unread,
            birth_date_conflict: false,
        };
        let outcome = |mode, failure, read: Option<DocumentRead>| DocumentOutcome {
            mode,
            kind: DocumentKind::CnResidentId,
            failure,
            read,
            expected: vec![],
            portrait: None,
            capture: None,
            captures: 40,
        };
        let with = |d: DocumentOutcome| {
            let mut i = inputs(outcome_of_three_passes());
            i.document = Some(d);
            decide(&i)
        };
        let v = with(outcome(
            DocumentMode::Required,
            Some(ReasonCode::DocumentBlur),
            Some(incomplete.clone()),
        ));
        assert_eq!(v.status, VerdictStatus::Failed);
        assert_eq!(codes(&v), vec![ReasonCode::DocumentBlur]);
        let v = with(outcome(
            DocumentMode::Required,
            Some(ReasonCode::DocumentGlare),
            None,
        ));
        assert_eq!(codes(&v), vec![ReasonCode::DocumentGlare]);
        // Optional: reported in the scores, not held against the person.
        let v = with(outcome(
            DocumentMode::Optional,
            Some(ReasonCode::DocumentNotShown),
            None,
        ));
        assert_eq!(v.status, VerdictStatus::Passed);
        assert_eq!(v.scores["document"]["failure"], "DOCUMENT_NOT_SHOWN");
    }

    #[test]
    fn a_call_ended_during_the_document_step_is_incomplete_with_the_card_issue_first() {
        let mut i = inputs(outcome_of_three_passes());
        i.ended_early = Some("closed_by_peer");
        i.document = Some(DocumentOutcome {
            mode: DocumentMode::Optional,
            kind: DocumentKind::CnResidentId,
            failure: Some(ReasonCode::DocumentGlare),
            read: None,
            expected: vec![],
            portrait: None,
            capture: None,
            captures: 12,
        });
        let v = decide(&i);
        assert_eq!(v.status, VerdictStatus::Cancelled, "never passed");
        assert_eq!(
            codes(&v),
            vec![ReasonCode::DocumentGlare, ReasonCode::SessionIncomplete]
        );
    }

    /// Three motions passed, then the spoken step ended as `speech` says.
    fn with_spoken_step(failure: Option<ReasonCode>) -> LivenessOutcome {
        use crate::liveness::speech::{SpeechEvidence, SpeechOutcome};
        let mut l = outcome_of_three_passes();
        let spoken = ChallengePlan::from_actions(&[Action::SpeakDigits], Duration::from_secs(8))
            .steps
            .remove(0);
        l.steps.push((spoken, Some(failure.is_none()), None));
        l.speech = Some(SpeechOutcome {
            failure,
            evidence: SpeechEvidence {
                onset_ms: None,
                voiced_ms: 0,
                correlation: None,
                mouth_range: 0.0,
                pairs: 0,
            },
        });
        l
    }

    #[test]
    fn the_spoken_step_names_what_it_missed_and_a_quiet_room_is_no_fault() {
        // Spoke with the lips moving; silent elsewhere (no persistent fault): passed.
        let v = decide(&inputs(with_spoken_step(None)));
        assert_eq!((v.status, codes(&v)), (VerdictStatus::Passed, vec![]));
        // No voice when asked.
        let v = decide(&inputs(with_spoken_step(Some(ReasonCode::MicSilent))));
        assert_eq!(v.status, VerdictStatus::Failed);
        assert_eq!(
            codes(&v),
            vec![ReasonCode::ChallengeFailed, ReasonCode::MicSilent]
        );
        assert!(v.reasons[1].evidence["speech"].is_object());
        // A voice the lips did not follow.
        let v = decide(&inputs(with_spoken_step(Some(
            ReasonCode::SpeechNotMatched,
        ))));
        assert_eq!(
            codes(&v),
            vec![ReasonCode::ChallengeFailed, ReasonCode::SpeechNotMatched]
        );
        // A spoken step that timed out without the speech judge deciding is a timeout.
        let mut l = with_spoken_step(Some(ReasonCode::MicSilent));
        l.speech = None;
        let v = decide(&inputs(l));
        assert_eq!(
            codes(&v),
            vec![ReasonCode::ChallengeFailed, ReasonCode::ChallengeTimeout]
        );
        // A digitally silent track (muted microphone) is a device fault, named first.
        let mut i = inputs(with_spoken_step(Some(ReasonCode::MicSilent)));
        i.persistent_faults = vec![ReasonCode::MicSilent];
        let v = decide(&i);
        assert_eq!(codes(&v), vec![ReasonCode::MicSilent]);
    }

    fn outcome_of_three_passes() -> LivenessOutcome {
        outcome(&[Some(true); 3], Some(0.06))
    }

    fn with_light(result: Option<LightResult>) -> Verdict {
        use crate::liveness::light::{LightOutcome, LightScore};
        let mut l = outcome(&[Some(true), Some(true), Some(true)], Some(0.06));
        let score = LightScore {
            correlation: 0.1,
            worst_window: -0.2,
            gain: 0.001,
            latency_ms: 200,
            windows: 5,
            frames: 40,
            face_luma: 0.5,
            inter_eye_px: 80.0,
        };
        l.light = Some(LightOutcome {
            result,
            skipped: result.is_none(),
            attempts: result.map(|r| vec![(r, score); 2]).unwrap_or_default(),
        });
        decide(&inputs(l))
    }

    #[test]
    fn the_light_step_decides_spoof_review_or_a_cause_to_fix() {
        let v = with_light(Some(LightResult::Matched));
        assert_eq!(v.status, VerdictStatus::Passed);
        assert!(v.scores["screen_light"]["attempts"].is_array());
        let v = with_light(Some(LightResult::Absent));
        assert_eq!(
            (v.status, codes(&v)),
            (VerdictStatus::Failed, vec![ReasonCode::SpoofSuspected])
        );
        assert_eq!(v.reasons[0].evidence["kind"], "screen_light");
        let v = with_light(Some(LightResult::TooBright));
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::Failed,
                vec![ReasonCode::ScreenLightTooBright]
            )
        );
        assert!(v.reasons[0].retryable);
        let v = with_light(Some(LightResult::TooFar));
        assert_eq!(codes(&v), vec![ReasonCode::ScreenLightTooFar]);
        let v = with_light(Some(LightResult::Weak));
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::NeedsReview,
                vec![ReasonCode::ScreenLightNotSeen]
            )
        );
        // Too few frames to judge (a stalling camera), on every try: review, never a spoof.
        let v = with_light(Some(LightResult::Unmeasured));
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::NeedsReview,
                vec![ReasonCode::ScreenLightNotSeen]
            )
        );
        // Skipped at the person's request: review, never a failure.
        let v = with_light(None);
        assert_eq!(
            (v.status, codes(&v)),
            (
                VerdictStatus::NeedsReview,
                vec![ReasonCode::ScreenLightSkipped]
            )
        );
    }
}
