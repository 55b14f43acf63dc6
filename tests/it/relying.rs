//! What the relying party's backend and operators get: webhooks that survive failures and
//! restarts, signed verdicts, subject deletion, rate limits, CORS and security headers, and the
//! review console in a real browser.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use vericall::config::Config;
use vericall::notify::signing::verify;
use vericall::notify::webhook::verify_signature;

use crate::common::{test_config, CreatedSession, TestServer};

/// A webhook receiver that fails the first `fail_first` requests with 500.
#[derive(Clone, Default)]
struct Receiver {
    fail_first: usize,
    seen: Arc<Mutex<Vec<(HeaderMap, String, u16)>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Receiver, String) {
        let r = Receiver {
            fail_first,
            ..Default::default()
        };
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, format!("http://{addr}/hook"))
    }

    fn requests(&self) -> Vec<(HeaderMap, String, u16)> {
        self.seen.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<(HeaderMap, String)> {
        self.requests()
            .into_iter()
            .filter(|(_, _, s)| *s == 200)
            .map(|(h, b, _)| (h, b))
            .collect()
    }

    async fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Receiver) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {} requests",
                self.requests().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut seen = r.seen.lock().unwrap();
    let status = if seen.len() < r.fail_first { 500 } else { 200 };
    seen.push((headers, String::from_utf8_lossy(&body).into(), status));
    StatusCode::from_u16(status).unwrap()
}

fn fast_webhooks() -> Config {
    Config {
        webhook_retry_base_ms: 300,
        webhook_allow_internal: true,
        ..test_config()
    }
}

async fn set_webhook(ts: &TestServer, url: &str) -> String {
    let r = ts
        .http
        .put(ts.url("/v1/webhook"))
        .bearer_auth(&ts.api_key)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["secret"].as_str().unwrap().to_string()
}

async fn create_for(ts: &TestServer, subject: &str) -> CreatedSession {
    let v: Value = ts
        .http
        .post(ts.url("/v1/sessions"))
        .bearer_auth(&ts.api_key)
        .json(&json!({ "subject": subject }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    CreatedSession {
        id: v["id"].as_str().unwrap().into(),
        token: v["client_token"].as_str().unwrap().into(),
        whip_url: v["whip_url"].as_str().unwrap().into(),
        events_url: v["events_url"].as_str().unwrap().into(),
        page_url: v["page_url"].as_str().unwrap().into(),
    }
}

async fn cancel(ts: &TestServer, s: &CreatedSession) {
    ts.end_unused(s).await;
}

async fn jwks(ts: &TestServer) -> Value {
    ts.get_json("/.well-known/jwks.json").await
}

/// The receiver fails three times, the server restarts in between, and exactly one delivery is
/// accepted: same idempotency key on every attempt, valid signature, a verifiable signed verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_survives_failures_and_a_restart_and_is_accepted_once() {
    let (receiver, url) = Receiver::start(3).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    let secret = set_webhook(&ts, &url).await;
    let s = create_for(&ts, "user-1").await;
    cancel(&ts, &s).await;
    receiver
        .wait("two failed attempts", Duration::from_secs(10), |r| {
            r.requests().len() >= 2
        })
        .await;
    let ts = ts.restart(fast_webhooks()).await;
    receiver
        .wait("an accepted delivery", Duration::from_secs(20), |r| {
            !r.accepted().is_empty()
        })
        .await;
    // Nothing more arrives after the accepted one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = receiver.requests();
    let accepted = receiver.accepted();
    println!(
        "webhook: {} requests, statuses {:?}",
        all.len(),
        all.iter().map(|r| r.2).collect::<Vec<_>>()
    );
    assert_eq!(accepted.len(), 1, "exactly one accepted delivery");
    assert_eq!(all.len(), 4, "three failures then one success");
    let ids: Vec<&str> = all
        .iter()
        .map(|(h, _, _)| h["idempotency-key"].to_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one idempotency key: {ids:?}"
    );
    let (headers, body) = &accepted[0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = headers["vericall-signature"].to_str().unwrap();
    assert!(
        verify_signature(&secret, sig, body, now, 300),
        "HMAC verifies"
    );
    assert!(!verify_signature("whsec_wrong", sig, body, now, 300));
    assert!(!verify_signature(
        &secret,
        sig,
        &body.replace("cancelled", "passed"),
        now,
        300
    ));
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["session_id"], s.id.as_str());
    assert_eq!(payload["status"], "cancelled");
    assert_eq!(payload["id"], ids[0]);
    let claims = verify(
        payload["signed_verdict"].as_str().unwrap(),
        &jwks(&ts).await,
    )
    .unwrap();
    assert_eq!(claims["sid"], s.id.as_str());
    assert_eq!(claims["status"], "cancelled");

    // The delivery log shows every attempt.
    let log: Value = ts
        .get_json(&format!("/v1/sessions/{}/deliveries", s.id))
        .await;
    let d = &log["deliveries"][0];
    let statuses: Vec<&str> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["500", "500", "500", "200"]);
    assert!(d["delivered_at"].is_i64());
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// `GET /v1/sessions/{id}` carries a JWS that verifies with the published JWKS; a tampered one
/// does not; the list endpoint filters by status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_verdict_verifies_with_the_jwks_and_tampering_fails() {
    let ts = TestServer::start().await;
    let s = create_for(&ts, "user-2").await;
    cancel(&ts, &s).await;
    let v = ts.session(&s.id).await;
    let jws = v["signed_verdict"].as_str().expect("signed verdict");
    let keys = jwks(&ts).await;
    assert_eq!(keys["keys"][0]["kty"], "OKP");
    assert_eq!(keys["keys"][0]["crv"], "Ed25519");
    let claims = verify(jws, &keys).unwrap();
    assert_eq!(claims["sid"], s.id.as_str());
    assert_eq!(claims["sub"], "user-2");
    assert_eq!(claims["status"], v["verdict"]["status"]);
    // Change one character of the signature, then of the payload.
    let mut sig_tampered = jws.to_string();
    let last = sig_tampered.pop().unwrap();
    sig_tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(verify(&sig_tampered, &keys).is_err());
    let parts: Vec<&str> = jws.split('.').collect();
    let payload = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .unwrap(),
    )
    .unwrap()
    .replace("cancelled", "passed");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload),
        parts[2]
    );
    assert!(verify(&forged, &keys).is_err());

    let listed: Value = ts.get_json("/v1/sessions?status=cancelled&limit=10").await;
    assert_eq!(listed["sessions"][0]["id"], s.id.as_str());
    let none: Value = ts.get_json("/v1/sessions?status=passed").await;
    assert_eq!(none["sessions"], json!([]));
    let bad = ts
        .http
        .get(ts.url("/v1/sessions?status=maybe"))
        .bearer_auth(&ts.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Deleting a subject removes its sessions, timelines and evidence files, and nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_subject_removes_every_row_and_file_of_it() {
    let ts = TestServer::start().await;
    let alice = [
        create_for(&ts, "alice").await,
        create_for(&ts, "alice").await,
    ];
    let bob = create_for(&ts, "bob").await;
    let evidence = |id: &str| PathBuf::from(ts.dir.path()).join("evidence").join(id);
    for s in alice.iter().chain([&bob]) {
        cancel(&ts, s).await;
        std::fs::create_dir_all(evidence(&s.id)).unwrap();
        std::fs::write(evidence(&s.id).join("frontal.jpg"), b"\xff\xd8jpeg").unwrap();
    }
    let store = ts.server.registry.store().clone();
    ts.timeline_until(&alice[0].id, "session_ended").await;
    assert!(!store.list_events(&alice[0].id, 0).await.unwrap().is_empty());

    let r = ts
        .http
        .delete(ts.url("/v1/subjects/alice"))
        .bearer_auth(&ts.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({ "sessions_deleted": 2, "files_deleted": 2 }));
    for s in &alice {
        assert!(store.get_session(&s.id).await.unwrap().is_none());
        assert!(store.list_events(&s.id, 0).await.unwrap().is_empty());
        assert!(!evidence(&s.id).exists());
        let r = ts
            .http
            .get(ts.url(&format!("/v1/sessions/{}", s.id)))
            .bearer_auth(&ts.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    assert!(store.get_session(&bob.id).await.unwrap().is_some());
    assert!(evidence(&bob.id).join("frontal.jpg").exists());
    assert!(!store.list_events(&bob.id, 0).await.unwrap().is_empty());
    // Another key cannot delete this key's subjects (nothing matches under it).
    let r = ts
        .http
        .delete(ts.url("/v1/subjects/bob"))
        .bearer_auth("vck_not_a_key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Session creation per key and WHIP offers per address are rate limited with Retry-After; CORS
/// answers only configured origins; pages carry CSP and Permissions-Policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_cors_and_security_headers() {
    let ts = TestServer::start_with(Config {
        sessions_per_minute: 3,
        whip_offers_per_minute: 2,
        allowed_origins: vec!["https://wallet.example".into()],
        ..test_config()
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = ts
            .http
            .post(ts.url("/v1/sessions"))
            .bearer_auth(&ts.api_key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").cloned();
        }
    }
    assert_eq!(statuses, [201, 201, 201, 429]);
    assert_eq!(retry_after.unwrap(), "20");

    // WHIP: the third offer from this address within a minute is refused before parsing.
    let mut whip = Vec::new();
    for _ in 0..3 {
        let r = ts
            .http
            .post(ts.url("/whip/ses_nope"))
            .header("content-type", "application/sdp")
            .bearer_auth("vct_x")
            .body("v=0")
            .send()
            .await
            .unwrap();
        whip.push(r.status().as_u16());
    }
    assert_eq!(whip, [404, 404, 429]);

    let preflight = |origin: &'static str| {
        ts.http
            .request(reqwest::Method::OPTIONS, ts.url("/v1/sessions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("https://wallet.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://wallet.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Webhooks may not point into the operator's network (unless configured for a lab).
    for internal in [
        "http://127.0.0.1:9/hook",
        "https://10.0.0.5/hook",
        "https://169.254.169.254/latest",
        "https://localhost/hook",
        "http://wallet.example/hook",
    ] {
        let r = ts
            .http
            .put(ts.url("/v1/webhook"))
            .bearer_auth(&ts.api_key)
            .json(&json!({ "url": internal }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{internal}");
    }
    let page = ts.http.get(ts.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        csp.contains("frame-ancestors 'self' https://wallet.example"),
        "{csp}"
    );
    assert!(page.headers()["permissions-policy"]
        .to_str()
        .unwrap()
        .contains("camera=(self)"));
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// An operator logs in to the review console in Chromium and approves a `needs_review` session;
/// the verdict, its signature, the audit log and the webhook follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_a_session_in_the_review_console() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    set_webhook(&ts, &url).await;
    let s = create_for(&ts, "user-9").await;
    cancel(&ts, &s).await;
    receiver
        .wait(
            "the cancelled verdict's webhook",
            Duration::from_secs(10),
            |r| r.accepted().len() == 1,
        )
        .await;
    // Borderline: the spoof residual close to its threshold (what `decide` sends to review),
    // with an evidence frame rendered from the packaged portrait.
    let store = ts.server.registry.store().clone();
    let frame_dir = PathBuf::from(ts.dir.path()).join("evidence").join(&s.id);
    std::fs::create_dir_all(&frame_dir).unwrap();
    let img = crate::face::stage().renderer.render(&Default::default()).0;
    image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
        .unwrap()
        .save_with_format(frame_dir.join("frontal.jpg"), image::ImageFormat::Jpeg)
        .unwrap();
    let review = json!({
        "status": "needs_review",
        "reasons": [{ "code": "SPOOF_SUSPECTED", "retryable": false, "hint_key": "hint.SPOOF_SUSPECTED",
                      "hint_en": "x", "hint_zh": "x", "evidence": { "kind": "borderline" } }],
        "scores": { "planarity": { "homography_residual": 0.03, "planar_max": 0.025 },
                    "face_match": { "similarity": 0.71, "threshold": 0.66, "frames": 12 } },
        "frames": ["frontal.jpg"],
    });
    assert!(store
        .replace_verdict(&s.id, "cancelled", "needs_review", &review.to_string())
        .await
        .unwrap());
    store
        .insert_operator(
            "ann",
            &vericall::api::review::hash_password("correct horse battery"),
            1,
        )
        .await
        .unwrap();

    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/review.mjs");
    let prefix = crate::browser::artifacts().join("review-1280x800");
    let base = ts.server.base_url.clone();
    let sid = s.id.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(driver)
            .args(["--url", &base, "--username", "ann"])
            .args(["--password", "correct horse battery", "--session", &sid])
            .args([
                "--decision",
                "approve",
                "--note",
                "Face matches the ID; residual is lighting.",
            ])
            .args(["--screens", prefix.to_str().unwrap()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "review driver: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert!(out.status.success(), "review flow failed: {report}");
    assert_eq!(report["wrongPasswordRejected"], true);
    assert_eq!(report["consoleErrors"], json!([]));
    assert_eq!(report["detail"]["reasons"], json!(["SPOOF_SUSPECTED"]));
    assert_eq!(report["detail"]["framesLoaded"], 1, "evidence frame shown");
    assert_eq!(report["detail"]["hasFaceMatch"], true);
    assert_eq!(report["lastDecision"]["status"], "passed");
    assert_eq!(report["queueAfter"], json!([]));

    // The verdict follows, signed, decided by the operator.
    let v = ts.session(&s.id).await;
    assert_eq!(v["verdict"]["status"], "passed");
    assert_eq!(v["verdict"]["review"]["operator"], "ann");
    let claims = verify(v["signed_verdict"].as_str().unwrap(), &jwks(&ts).await).unwrap();
    assert_eq!(claims["status"], "passed");
    assert_eq!(claims["decided_by"], "operator:ann");
    // The audit log has the login, the view and the approval with its note.
    let audit = store.list_audit(None).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for want in ["login_failed", "login", "view", "approve"] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let approve = audit.iter().find(|a| a.action == "approve").unwrap();
    assert_eq!(approve.operator, "ann");
    assert_eq!(approve.session_id.as_deref(), Some(s.id.as_str()));
    assert_eq!(
        approve.note.as_deref(),
        Some("Face matches the ID; residual is lighting.")
    );
    // The webhook follows with the new verdict.
    receiver
        .wait("the review webhook", Duration::from_secs(10), |r| {
            r.accepted().len() == 2
        })
        .await;
    let last: Value = serde_json::from_str(&receiver.accepted()[1].1).unwrap();
    assert_eq!(last["status"], "passed");
    assert_eq!(last["decided_by"], "operator:ann");
    // A second decision is refused: the session is no longer under review.
    let login = ts
        .http
        .post(ts.url("/v1/review/login"))
        .header("x-vericall-csrf", "1")
        .json(&json!({ "username": "ann", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let again = ts
        .http
        .post(ts.url(&format!("/v1/review/sessions/{}/decision", s.id)))
        .header("cookie", &cookie)
        .header("x-vericall-csrf", "1")
        .json(&json!({ "decision": "reject", "note": "late" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let no_csrf = ts
        .http
        .post(ts.url(&format!("/v1/review/sessions/{}/decision", s.id)))
        .header("cookie", &cookie)
        .json(&json!({ "decision": "reject", "note": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    ts.server.shutdown(Duration::from_secs(1)).await;
}
