//! `POST /v1/sessions/{id}/sandbox-verdict`: with a sandbox API key, the relying party forces a
//! session's verdict to test its integration end to end (webhook, signed verdict, GET). The
//! verdict goes through the normal path (`Notifier::record`: stored, signed, delivered by webhook)
//! and is marked `sandbox: true` in the verdict, the signed claims and the webhook body. A live
//! key gets 403.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sessions::ApiKey;
use super::{ApiError, AppState};
use crate::events::unix_ms_now;
use crate::notify::VerdictNotice;
use crate::reasons::ReasonCode;
use crate::store::VerdictWrite;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForcedVerdict {
    /// `passed` or `failed`.
    pub status: String,
    /// Reason codes (docs/REASONS.md); at least one for `failed`.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// The verdict JSON a forced verdict is stored as (the shape of a decided one).
fn forced_verdict(req: &ForcedVerdict) -> Result<Value, ApiError> {
    if !matches!(req.status.as_str(), "passed" | "failed") {
        return Err(ApiError::Unprocessable(
            "status must be passed or failed".into(),
        ));
    }
    if req.status == "failed" && req.reasons.is_empty() {
        return Err(ApiError::Unprocessable(
            "a failed verdict needs at least one reason code".into(),
        ));
    }
    let mut reasons = Vec::new();
    for code in &req.reasons {
        let info = ReasonCode::from_code(code)
            .ok_or_else(|| ApiError::Unprocessable(format!("unknown reason code {code:?}")))?
            .info();
        reasons.push(json!({
            "code": info.code,
            "retryable": info.retryable,
            "meaning": info.meaning,
        }));
    }
    Ok(json!({
        "status": req.status,
        "reasons": reasons,
        "sandbox": true,
    }))
}

pub(crate) async fn force_verdict(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
    Json(req): Json<ForcedVerdict>,
) -> Result<Json<Value>, ApiError> {
    if !key.0.sandbox {
        return Err(ApiError::Forbidden);
    }
    let row = key.owned_session(&state, &id).await?;
    if row.ended_at.is_some() {
        return Err(ApiError::Conflict(
            "the session already has a verdict".into(),
        ));
    }
    if row.connected_at.is_some() {
        return Err(ApiError::Conflict(
            "the session has a call; force verdicts on sessions nobody has joined".into(),
        ));
    }
    let verdict = forced_verdict(&req)?;
    let store = state.registry.store();
    let reference = store.get_session_reference(&id).await?;
    let notice = VerdictNotice {
        session_id: &row.id,
        api_key_id: &row.api_key_id,
        subject: row.subject.as_deref(),
        reference: reference.as_deref(),
        verdict: &verdict,
        decided_by: "sandbox",
    };
    let write = VerdictWrite::End {
        at: unix_ms_now(),
        reason: "sandbox",
        network_summary: None,
        document_fields: None,
        timeline_event: true,
    };
    let written = state.registry.notifier().record(&notice, &write).await?;
    if !written {
        return Err(ApiError::Conflict(
            "the session already has a verdict".into(),
        ));
    }
    // Its page can no longer join: the session is decided.
    state.registry.forget(&id);
    tracing::info!(session = %id, api_key = %key.0.id, "sandbox verdict forced");
    let (signed_verdict, _) = store.get_signed_verdict(&id).await?.unzip();
    Ok(Json(json!({
        "id": id,
        "verdict": store.get_verdict(&id).await?.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
        "signed_verdict": signed_verdict,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_verdicts_are_checked_and_marked_sandbox() {
        let v = forced_verdict(&ForcedVerdict {
            status: "failed".into(),
            reasons: vec!["NETWORK_LOSS_HIGH".into()],
        })
        .unwrap();
        assert_eq!(v["reasons"][0]["code"], "NETWORK_LOSS_HIGH");
        assert_eq!(v["reasons"][0]["retryable"], true);
        assert_eq!(v["sandbox"], true);
        let bad = forced_verdict(&ForcedVerdict {
            status: "failed".into(),
            reasons: vec!["NOT_A_CODE".into()],
        });
        assert!(bad.is_err());
        let passed = forced_verdict(&ForcedVerdict {
            status: "passed".into(),
            reasons: vec![],
        })
        .unwrap();
        assert_eq!(passed["sandbox"], true);
        assert!(forced_verdict(&ForcedVerdict {
            status: "needs_review".into(),
            reasons: vec![],
        })
        .is_err());
        assert!(forced_verdict(&ForcedVerdict {
            status: "failed".into(),
            reasons: vec![],
        })
        .is_err());
    }
}
