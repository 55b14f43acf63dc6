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
    assert_eq!(
        body,
        json!({ "sessions_deleted": 2, "files_deleted": 2, "enrolments_deleted": 0 })
    );
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
    assert_eq!(last["type"], "session.verdict_changed");
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

    // The console in a Chinese browser: its own strings in Chinese, the decided session shown.
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/review.mjs");
    let prefix = crate::browser::artifacts().join("review-zh-CN");
    let base = ts.server.base_url.clone();
    let sid = s.id.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(driver)
            .args(["--url", &base, "--username", "ann"])
            .args(["--password", "correct horse battery", "--session", &sid])
            .args(["--decision", "none", "--locale", "zh-CN"])
            .args(["--screens", prefix.to_str().unwrap()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "review driver (zh-CN): {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert!(
        out.status.success(),
        "zh-CN review console failed: {report}"
    );
    assert_eq!(report["consoleErrors"], json!([]));
    let texts = &report["texts"];
    assert_eq!(texts["lang"], "zh-CN", "{report}");
    assert_eq!(texts["loginTitle"], "登录审核台");
    assert_eq!(texts["loginSubmit"], "登录");
    assert_eq!(report["wrongPasswordMessage"], "用户名或密码错误。");
    assert_eq!(texts["queueTitle"], "待审队列");
    assert_eq!(texts["metaSession"], "会话");
    assert_eq!(texts["status"], "通过");
    assert_eq!(texts["decisionMessage"], "已有决定：通过。无需操作。");
    assert_eq!(texts["approve"], "批准");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

// ---- issue 17: what a wallet backend's test found ----

/// The delivery log of a session once its first delivery has `n` attempts.
async fn wait_attempts(ts: &TestServer, id: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = ts.get_json(&format!("/v1/sessions/{id}/deliveries")).await;
        if log["deliveries"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() >= n)
        {
            return log;
        }
        assert!(Instant::now() < deadline, "no attempt yet: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With internal targets disallowed, internal literals are refused when the webhook is set, and a
/// name that resolves to 127.0.0.1 (here by the resolver override, as DNS rebinding would) is
/// refused when set and again at delivery: the local receiver never gets a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_never_reach_internal_addresses_even_through_dns() {
    let (receiver, url) = Receiver::start(0).await;
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let ts = TestServer::start_with(Config {
        webhook_retry_base_ms: 60_000,
        webhook_resolve: [(
            "rebind.test".to_string(),
            vec!["127.0.0.1".parse().unwrap()],
        )]
        .into(),
        ..test_config()
    })
    .await;
    for internal in [
        format!("https://[::ffff:127.0.0.1]:{port}/hook"),
        "https://[::ffff:a9fe:a9fe]/latest".to_string(),
        format!("https://[64:ff9b::7f00:1]:{port}/hook"),
        "https://localhost./hook".to_string(),
        "https://metadata.google.internal/computeMetadata/v1/".to_string(),
        "https://100.64.0.1/hook".to_string(),
        "https://224.0.0.1/hook".to_string(),
        "https://255.255.255.255/hook".to_string(),
        format!("https://rebind.test:{port}/hook"),
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
    // URLs stored before the guard existed (or whose DNS changed since): refused at delivery.
    let store = ts.server.registry.store().clone();
    let key_id = ts.server.created_api_key_id.clone().unwrap();
    for target in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://rebind.test:{port}/hook"),
    ] {
        store
            .set_webhook(
                &key_id,
                Some(&vericall::store::WebhookTarget {
                    url: target.clone(),
                    secret: "whsec_test".into(),
                }),
            )
            .await
            .unwrap();
        let s = create_for(&ts, "user-guard").await;
        cancel(&ts, &s).await;
        let log = wait_attempts(&ts, &s.id, 1).await;
        assert_eq!(
            log["deliveries"][0]["attempts"][0]["status"], "blocked_address",
            "{target}: {log}"
        );
    }
    assert!(
        receiver.requests().is_empty(),
        "the local receiver got nothing"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// The signed verdict is made once, when the verdict is decided: every GET returns the same JWS,
/// the webhook carries it too, and its claims are the documented ones (`aud` is the API key id
/// the integrator is shown, `iat` the decision time, `exp` after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_verdict_is_made_once_with_documented_claims() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    set_webhook(&ts, &url).await;
    let created: Value = ts
        .http
        .post(ts.url("/v1/sessions"))
        .bearer_auth(&ts.api_key)
        .json(&json!({ "subject": "user-claims" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = ts.server.created_api_key_id.clone().unwrap();
    assert_eq!(created["api_key_id"], key_id.as_str());
    let s = CreatedSession {
        id: created["id"].as_str().unwrap().into(),
        token: created["client_token"].as_str().unwrap().into(),
        whip_url: created["whip_url"].as_str().unwrap().into(),
        events_url: created["events_url"].as_str().unwrap().into(),
        page_url: created["page_url"].as_str().unwrap().into(),
    };
    cancel(&ts, &s).await;
    let first = ts.session(&s.id).await;
    // Long enough for a re-signed token to carry another `iat`.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = ts.session(&s.id).await;
    let jws = first["signed_verdict"].as_str().unwrap();
    assert_eq!(second["signed_verdict"], jws, "GET returns the stored JWS");
    assert_eq!(first["api_key_id"], key_id.as_str());
    let decided_at = first["verdict"]["decided_at"].as_i64().expect("decided_at");
    assert!(decided_at >= first["created_at"].as_i64().unwrap());
    let claims = verify(jws, &jwks(&ts).await).unwrap();
    assert_eq!(claims["iss"], "vericall");
    assert_eq!(claims["aud"], key_id.as_str());
    assert_eq!(claims["sub"], "user-claims");
    assert_eq!(claims["sid"], s.id.as_str());
    assert_eq!(claims["decided_at"], decided_at);
    assert_eq!(claims["iat"], decided_at / 1000);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        Config::default().signed_verdict_lifetime_secs as i64
    );
    receiver
        .wait("the verdict webhook", Duration::from_secs(10), |r| {
            r.accepted().len() == 1
        })
        .await;
    let body: Value = serde_json::from_str(&receiver.accepted()[0].1).unwrap();
    assert_eq!(
        body["signed_verdict"], jws,
        "the webhook carries the same JWS"
    );
    assert_eq!(body["decided_at"], decided_at);
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// The server binary is killed (SIGKILL) during a call; after a restart on the same database the
/// interrupted session has a verdict, a signed verdict, a `session_ended` event and a delivered
/// webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_interrupted_by_kill_9_gets_a_verdict_and_a_webhook_after_restart() {
    let (receiver, hook) = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vericall.toml");
    std::fs::write(
        &config,
        format!(
            "http_addr = \"127.0.0.1:0\"\nmedia_addr = \"127.0.0.1:0\"\nface_analysis = false\n\
             node_id = \"crash-node\"\nwebhook_allow_internal = true\nwebhook_retry_base_ms = 300\n\
             database_url = \"sqlite://{0}/vericall.db?mode=rwc\"\ndata_dir = \"{0}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // stdout: the API key (on the line after "Created an API key"), then the listening URL.
    let (mut child, head) = crate::common::start_server_binary(&config, &[]).await;
    let api_key = head
        .iter()
        .position(|l| l.starts_with("Created an API key"))
        .and_then(|i| head.get(i + 1))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    let base = head
        .last()
        .and_then(|l| l.strip_prefix("vericall listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    assert!(api_key.starts_with("vck_"), "a new API key: {api_key:?}");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/webhook"))
        .bearer_auth(&api_key)
        .json(&json!({ "url": hook }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(&api_key)
        .json(&json!({ "subject": "user-crash" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let whip = created["whip_url"].as_str().unwrap().to_string();
    let token = created["client_token"].as_str().unwrap().to_string();
    let peer = tokio::spawn(async move {
        vericall::testkit::peer::run_peer(
            &whip,
            &token,
            vericall::testkit::peer::PeerOptions {
                video: Some(crate::common::vp8_clip()),
                audio: Some(crate::common::tone()),
                duration: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = http
            .get(format!("{base}/v1/sessions/{id}"))
            .bearer_auth(&api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "the call did not connect: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the connect reach the store, then crash: no shutdown code runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    peer.abort();
    assert!(
        receiver.requests().is_empty(),
        "nothing was sent before the crash"
    );

    let ts = TestServer::start_in(
        Config {
            node_id: Some("crash-node".into()),
            ..fast_webhooks()
        },
        dir,
        api_key,
    )
    .await;
    let v = ts.session(&id).await;
    assert_eq!(v["state"], "ended");
    assert_eq!(v["end_reason"], "server_restart");
    assert_eq!(v["verdict"]["status"], "failed");
    assert_eq!(v["verdict"]["reasons"][0]["code"], "SESSION_INCOMPLETE");
    assert_eq!(
        v["verdict"]["reasons"][0]["evidence"]["ended"],
        "server_restart"
    );
    let claims = verify(v["signed_verdict"].as_str().unwrap(), &jwks(&ts).await).unwrap();
    assert_eq!(claims["sid"], id.as_str());
    assert_eq!(claims["status"], "failed");
    let timeline = ts.timeline(&id).await;
    let last = timeline.last().unwrap();
    assert_eq!(last["type"], "session_ended", "{timeline:?}");
    assert_eq!(last["reason"], "server_restart");
    receiver
        .wait(
            "the restart verdict's webhook",
            Duration::from_secs(10),
            |r| r.accepted().len() == 1,
        )
        .await;
    let body: Value = serde_json::from_str(&receiver.accepted()[0].1).unwrap();
    assert_eq!(body["session_id"], id.as_str());
    assert_eq!(body["status"], "failed");
    assert_eq!(body["signed_verdict"], v["signed_verdict"]);
    // A server-caused failure does not count against the person's attempts.
    assert_eq!(
        ts.server
            .registry
            .store()
            .count_failed_attempts(claims["aud"].as_str().unwrap(), "user-crash", 0)
            .await
            .unwrap(),
        0
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A session whose server instance vanished (another node, long past any possible call) ends
/// as `node_lost` with a verdict, a signed verdict and a delivered webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_verdict_is_delivered_by_webhook() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    set_webhook(&ts, &url).await;
    let key_id = ts.server.created_api_key_id.clone().unwrap();
    let gone = ts.server.registry.store().clone().for_node("pod-gone");
    let long_ago = vericall::events::unix_ms_now() - 2 * 3600 * 1000;
    gone.insert_session(&vericall::store::SessionRow {
        id: "ses_lostnode0000000000000000".into(),
        api_key_id: key_id.clone(),
        subject: Some("user-lost".into()),
        state: "connected".into(),
        created_at: long_ago,
        expires_at: long_ago + 600_000,
        connected_at: Some(long_ago + 1000),
        ended_at: None,
        end_reason: None,
        network_summary: None,
        practice: false,
    })
    .await
    .unwrap();
    ts.server.registry.end_stale_sessions().await;
    let id = "ses_lostnode0000000000000000";
    let v = ts.session(id).await;
    assert_eq!(v["end_reason"], "node_lost");
    assert_eq!(v["verdict"]["status"], "failed");
    assert_eq!(v["verdict"]["reasons"][0]["evidence"]["ended"], "node_lost");
    verify(v["signed_verdict"].as_str().unwrap(), &jwks(&ts).await).unwrap();
    receiver
        .wait("the node_lost webhook", Duration::from_secs(10), |r| {
            r.accepted().len() == 1
        })
        .await;
    let body: Value = serde_json::from_str(&receiver.accepted()[0].1).unwrap();
    assert_eq!(body["session_id"], id);
    assert_eq!(body["signed_verdict"], v["signed_verdict"]);
    assert_eq!(
        ts.timeline(id).await.last().unwrap()["type"],
        "session_ended"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Many sessions created in the same millisecond: following `next_cursor` reaches each exactly
/// once (`before=<last created_at>` skipped all but the first page's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_by_cursor_reaches_every_session_once() {
    let ts = TestServer::start().await;
    let key_id = ts.server.created_api_key_id.clone().unwrap();
    let store = ts.server.registry.store().clone();
    let at = vericall::events::unix_ms_now();
    let mut want = std::collections::BTreeSet::new();
    for i in 0..23 {
        let id = format!("ses_samems{i:04}");
        store
            .insert_session(&vericall::store::SessionRow {
                id: id.clone(),
                api_key_id: key_id.clone(),
                subject: Some("user-page".into()),
                state: "created".into(),
                created_at: at,
                expires_at: at + 600_000,
                connected_at: None,
                ended_at: None,
                end_reason: None,
                network_summary: None,
                practice: false,
            })
            .await
            .unwrap();
        want.insert(id);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/sessions?limit=5".to_string();
    for _ in 0..10 {
        let page = ts.get_json(&path).await;
        for s in page["sessions"].as_array().unwrap() {
            seen.push(s["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/sessions?limit=5&cursor={c}"),
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no session twice: {seen:?}");
    assert_eq!(unique, want, "every session reached");
    let bad = ts
        .http
        .get(ts.url("/v1/sessions?cursor=garbage"))
        .bearer_auth(&ts.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Failed attempts are counted per API key: one tenant's failures for subject "shared" neither
/// lock out nor reveal anything to another tenant's "shared".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_counted_per_api_key() {
    let ts = TestServer::start_with(Config {
        max_failed_attempts: 1,
        ..test_config()
    })
    .await;
    let store = ts.server.registry.store().clone();
    let (other_key, other_hash) = vericall::session::tokens::new_secret("vck_");
    store
        .insert_api_key("key_other", "other tenant", &other_hash.to_hex(), 1)
        .await
        .unwrap();
    let create = |key: String| {
        let http = ts.http.clone();
        let url = ts.url("/v1/sessions");
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({ "subject": "shared" }))
                .send()
                .await
                .unwrap()
        }
    };
    // The first tenant's user fails once (an unused session made to fail directly).
    let r = create(ts.api_key.clone()).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    store
        .set_verdict(&id, "failed", r#"{"status":"failed","reasons":[]}"#)
        .await
        .unwrap();
    assert!(store
        .end_session(&id, vericall::events::unix_ms_now(), "completed")
        .await
        .unwrap());
    let again = create(ts.api_key.clone()).await;
    assert_eq!(again.status(), 429, "the same tenant's user is limited");
    let other = create(other_key.clone()).await;
    assert_eq!(other.status(), 201, "another tenant's user is not");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// After a subject is deleted, the SQLite file holds neither its session ids nor its webhook
/// bodies (secure_delete zeroes them; the WAL is checkpointed and emptied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subject_leaves_no_bytes_in_the_database_file() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    set_webhook(&ts, &url).await;
    let subject = "erase-me-7f3a9c";
    let s = create_for(&ts, subject).await;
    cancel(&ts, &s).await;
    receiver
        .wait("the verdict webhook", Duration::from_secs(10), |r| {
            r.accepted().len() == 1
        })
        .await;
    ts.timeline_until(&s.id, "session_ended").await;
    let delivery = receiver.accepted()[0].0["vericall-delivery"]
        .to_str()
        .unwrap()
        .to_string();
    let store = ts.server.registry.store().clone();
    let db_bytes = || {
        let mut all = Vec::new();
        for name in ["vericall.db", "vericall.db-wal"] {
            if let Ok(b) = std::fs::read(ts.dir.path().join(name)) {
                all.extend(b);
            }
        }
        all
    };
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    store.checkpoint().await.unwrap();
    let before = db_bytes();
    for marker in [s.id.as_str(), delivery.as_str(), subject] {
        assert!(contains(&before, marker), "{marker} is stored before");
    }
    let r = ts
        .http
        .delete(ts.url(&format!("/v1/subjects/{subject}")))
        .bearer_auth(&ts.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = db_bytes();
    for marker in [s.id.as_str(), delivery.as_str(), subject] {
        assert!(!contains(&after, marker), "{marker} is still in the file");
    }
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// The relying party's `reference` comes back in GET, the listing, the webhook and the signed
/// verdict; a creation retried with the same `Idempotency-Key` gets the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_is_echoed_and_idempotent_creation_returns_one_session() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    set_webhook(&ts, &url).await;
    let post = |key: Option<&'static str>, body: Value| {
        let mut r = ts
            .http
            .post(ts.url("/v1/sessions"))
            .bearer_auth(&ts.api_key)
            .json(&body);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.send()
    };
    let body = json!({ "subject": "user-ref", "reference": "order-4711" });
    let first = post(Some("order-4711-try"), body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post(Some("order-4711-try"), body.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the same session and tokens");
    let other = post(Some("order-4711-try"), json!({ "subject": "someone-else" }))
        .await
        .unwrap();
    assert_eq!(other.status(), 422, "a key reused for another request");
    let bad = post(Some("with space"), body.clone()).await.unwrap();
    assert_eq!(bad.status(), 400);
    let unkeyed = post(None, body.clone()).await.unwrap();
    assert_ne!(
        unkeyed.json::<Value>().await.unwrap()["id"],
        first["id"],
        "no key, a new session"
    );

    assert_eq!(first["reference"], "order-4711");
    let s = CreatedSession {
        id: first["id"].as_str().unwrap().into(),
        token: first["client_token"].as_str().unwrap().into(),
        whip_url: first["whip_url"].as_str().unwrap().into(),
        events_url: first["events_url"].as_str().unwrap().into(),
        page_url: first["page_url"].as_str().unwrap().into(),
    };
    cancel(&ts, &s).await;
    let v = ts.session(&s.id).await;
    assert_eq!(v["reference"], "order-4711");
    let claims = verify(v["signed_verdict"].as_str().unwrap(), &jwks(&ts).await).unwrap();
    assert_eq!(claims["reference"], "order-4711");
    let listed = ts.get_json("/v1/sessions?subject=user-ref").await;
    let mine = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == s.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["reference"], "order-4711");
    receiver
        .wait("the verdict webhook", Duration::from_secs(10), |r| {
            r.accepted().len() == 1
        })
        .await;
    let hook: Value = serde_json::from_str(&receiver.accepted()[0].1).unwrap();
    assert_eq!(hook["reference"], "order-4711");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Sessions an earlier version ended without a verdict (the old `server_restart` path) get one
/// at the next start: signed, and sent by webhook when they ended within the retry window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ended_without_a_verdict_get_one_at_start() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    set_webhook(&ts, &url).await;
    let key_id = ts.server.created_api_key_id.clone().unwrap();
    let store = ts.server.registry.store().clone();
    let now = vericall::events::unix_ms_now();
    for (id, ended_at) in [
        ("ses_oldbug_recent00000000000000", now - 1000),
        (
            "ses_oldbug_longago0000000000000",
            now - 30 * 24 * 3600 * 1000,
        ),
    ] {
        store
            .insert_session(&vericall::store::SessionRow {
                id: id.into(),
                api_key_id: key_id.clone(),
                subject: Some("user-old".into()),
                state: "connected".into(),
                created_at: ended_at - 5000,
                expires_at: ended_at + 600_000,
                connected_at: None,
                ended_at: None,
                end_reason: None,
                network_summary: None,
                practice: false,
            })
            .await
            .unwrap();
        assert!(store
            .end_session(id, ended_at, "server_restart")
            .await
            .unwrap());
    }
    // Kept past the default 30-day session retention, so the backfill (not the purge) is tested.
    let ts = ts
        .restart(vericall::config::Config {
            session_retention_days: Some(3650),
            ..fast_webhooks()
        })
        .await;
    for id in [
        "ses_oldbug_recent00000000000000",
        "ses_oldbug_longago0000000000000",
    ] {
        let v = ts.session(id).await;
        assert_eq!(v["verdict"]["status"], "failed", "{v}");
        assert_eq!(
            v["verdict"]["reasons"][0]["evidence"]["ended"],
            "server_restart"
        );
        verify(v["signed_verdict"].as_str().unwrap(), &jwks(&ts).await).unwrap();
    }
    receiver
        .wait(
            "the recent session's webhook",
            Duration::from_secs(10),
            |r| !r.accepted().is_empty(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies: Vec<Value> = receiver
        .accepted()
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(bodies.len(), 1, "only the recent one is sent: {bodies:?}");
    assert_eq!(bodies[0]["session_id"], "ses_oldbug_recent00000000000000");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A sandbox API key with its own webhook: (key id, key, webhook secret).
async fn sandbox_key(ts: &TestServer, url: &str) -> (String, String, String) {
    let (key, hash) = vericall::session::tokens::new_secret("vck_");
    ts.server
        .registry
        .store()
        .insert_api_key_of_kind("key_sandbox", "sandbox", &hash.to_hex(), 1, true)
        .await
        .unwrap();
    let r = ts
        .http
        .put(ts.url("/v1/webhook"))
        .bearer_auth(&key)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    ("key_sandbox".into(), key, secret)
}

async fn post_as(ts: &TestServer, key: &str, path: &str, body: Value) -> reqwest::Response {
    ts.http
        .post(ts.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn session_id(ts: &TestServer, key: &str) -> String {
    let r = post_as(
        ts,
        key,
        "/v1/sessions",
        json!({ "subject": "sandbox-user" }),
    )
    .await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn unix_secs() -> i64 {
    vericall::events::unix_ms_now() / 1000
}

/// A sandbox key forces a verdict: it arrives by webhook and by GET, signed (the same JWS),
/// marked `sandbox: true` in the verdict, the claims and the webhook body. A live key gets 403
/// and its session keeps going; a sandbox key cannot touch another key's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_key_forces_a_signed_verdict_and_a_live_key_cannot() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    let (key_id, key, secret) = sandbox_key(&ts, &url).await;
    let id = session_id(&ts, &key).await;
    let path = format!("/v1/sessions/{id}/sandbox-verdict");

    let unknown = post_as(
        &ts,
        &key,
        &path,
        json!({ "status": "failed", "reasons": ["NOPE"] }),
    )
    .await;
    assert_eq!(unknown.status(), 422);
    let forced = post_as(
        &ts,
        &key,
        &path,
        json!({ "status": "failed", "reasons": ["NETWORK_LOSS_HIGH"] }),
    )
    .await;
    assert_eq!(forced.status(), 200);
    let again = post_as(&ts, &key, &path, json!({ "status": "passed" })).await;
    assert_eq!(again.status(), 409, "a decided session keeps its verdict");

    receiver
        .wait("the sandbox verdict", Duration::from_secs(10), |r| {
            !r.accepted().is_empty()
        })
        .await;
    let (headers, body) = receiver.accepted().remove(0);
    let sig = headers["vericall-signature"].to_str().unwrap();
    assert!(verify_signature(&secret, sig, &body, unix_secs(), 300));
    let hook: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hook["type"], "session.verdict");
    assert_eq!(hook["session_id"], id.as_str());
    assert_eq!(hook["status"], "failed");
    assert_eq!(hook["reasons"][0]["code"], "NETWORK_LOSS_HIGH");
    assert_eq!(hook["sandbox"], true);
    assert_eq!(hook["decided_by"], "sandbox");

    let got: Value = ts
        .http
        .get(ts.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], "ended");
    assert_eq!(got["end_reason"], "sandbox");
    assert_eq!(got["verdict"]["status"], "failed");
    assert_eq!(got["verdict"]["sandbox"], true);
    let jws = got["signed_verdict"].as_str().unwrap();
    assert_eq!(hook["signed_verdict"], jws, "one token for GET and webhook");
    let claims = verify(jws, &jwks(&ts).await).unwrap();
    assert_eq!(claims["sandbox"], true);
    assert_eq!(claims["aud"], key_id.as_str());
    assert_eq!(claims["status"], "failed");

    // A live key cannot force anything; its session is untouched.
    let live_id = session_id(&ts, &ts.api_key).await;
    let refused = post_as(
        &ts,
        &ts.api_key,
        &format!("/v1/sessions/{live_id}/sandbox-verdict"),
        json!({ "status": "passed" }),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["error"], "forbidden");
    let live = ts.session(&live_id).await;
    assert!(live["ended_at"].is_null() && live["verdict"].is_null());
    // Nor can the sandbox key reach the live key's session.
    let other = post_as(
        &ts,
        &key,
        &format!("/v1/sessions/{live_id}/sandbox-verdict"),
        json!({ "status": "passed" }),
    )
    .await;
    assert_eq!(other.status(), 404);
    // Live verdicts carry no sandbox mark.
    let s = create_for(&ts, "live-user").await;
    cancel(&ts, &s).await;
    let v = ts.session(&s.id).await;
    let claims = verify(v["signed_verdict"].as_str().unwrap(), &jwks(&ts).await).unwrap();
    assert!(claims.get("sandbox").is_none(), "{claims}");
    assert!(v["verdict"].get("sandbox").is_none());
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Webhook bodies name their event type; `POST /v1/webhook/ping` sends a signed `webhook.ping`
/// now and reports what the receiver answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_are_typed_and_a_ping_reaches_the_receiver() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    let none = post_as(&ts, &ts.api_key, "/v1/webhook/ping", json!({})).await;
    assert_eq!(none.status(), 409, "no webhook yet");
    let secret = set_webhook(&ts, &url).await;
    let ping = post_as(&ts, &ts.api_key, "/v1/webhook/ping", json!({})).await;
    assert_eq!(ping.status(), 200);
    let ping: Value = ping.json().await.unwrap();
    assert_eq!(ping["delivered"], true, "{ping}");
    assert_eq!(ping["status"], "200");
    assert_eq!(ping["type"], "webhook.ping");
    let (headers, body) = receiver.accepted().remove(0);
    assert_eq!(headers["vericall-event"], "ping");
    assert_eq!(headers["vericall-delivery"], ping["id"].as_str().unwrap());
    assert!(verify_signature(
        &secret,
        headers["vericall-signature"].to_str().unwrap(),
        &body,
        unix_secs(),
        300
    ));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "webhook.ping");

    let s = create_for(&ts, "typed").await;
    cancel(&ts, &s).await;
    receiver
        .wait("the verdict", Duration::from_secs(10), |r| {
            r.accepted().len() >= 2
        })
        .await;
    let (headers, body) = receiver.accepted().remove(1);
    assert_eq!(headers["vericall-event"], "verdict");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "session.verdict");
    assert_eq!(body["event"], "verdict");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A delivered delivery is sent again on request (same id and body); every attempt in the log
/// has its time, status and duration. Unknown or other keys' deliveries are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_resent_on_request_and_its_attempts_are_timed() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    set_webhook(&ts, &url).await;
    let s = create_for(&ts, "resend").await;
    cancel(&ts, &s).await;
    let log = wait_delivered(&ts, &s.id, 1).await;
    let d = &log["deliveries"][0];
    let id = d["id"].as_str().unwrap().to_string();
    assert_eq!(d["type"], "session.verdict");
    let first = &d["attempts"][0];
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["status"], "200");
    assert!(first["at"].as_i64().unwrap() >= d["created_at"].as_i64().unwrap());
    assert!(first["duration_ms"].as_i64().unwrap() >= 1);
    assert!(d["resent_at"].is_null());

    let r = post_as(
        &ts,
        &ts.api_key,
        &format!("/v1/webhook/deliveries/{id}/resend"),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let log = wait_delivered(&ts, &s.id, 2).await;
    let d = &log["deliveries"][0];
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1]["at"].as_i64() >= attempts[0]["at"].as_i64());
    assert!(d["resent_at"].as_i64().unwrap() >= attempts[0]["at"].as_i64().unwrap());
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0].1, accepted[1].1, "the same body");
    assert_eq!(
        accepted[1].0["idempotency-key"],
        id.as_str(),
        "the same idempotency key"
    );

    let missing = post_as(
        &ts,
        &ts.api_key,
        "/v1/webhook/deliveries/dlv_missing/resend",
        json!({}),
    )
    .await;
    assert_eq!(missing.status(), 404);
    let (other_key, other_hash) = vericall::session::tokens::new_secret("vck_");
    ts.server
        .registry
        .store()
        .insert_api_key("key_other", "other", &other_hash.to_hex(), 1)
        .await
        .unwrap();
    let foreign = post_as(
        &ts,
        &other_key,
        &format!("/v1/webhook/deliveries/{id}/resend"),
        json!({}),
    )
    .await;
    assert_eq!(foreign.status(), 404);
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// The session's delivery log once its first delivery has `n` attempts and is delivered.
async fn wait_delivered(ts: &TestServer, id: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = ts.get_json(&format!("/v1/sessions/{id}/deliveries")).await;
        let d = &log["deliveries"][0];
        if d["attempts"].as_array().map_or(0, Vec::len) >= n && d["delivered_at"].is_i64() {
            return log;
        }
        assert!(Instant::now() < deadline, "not delivered {n} times: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rotating the webhook secret with an overlap: deliveries carry both signatures (either
/// secret verifies) until the overlap ends; rotating with no overlap drops the old one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_webhook_secret_overlaps_with_the_previous_one() {
    let (receiver, url) = Receiver::start(0).await;
    let ts = TestServer::start_with(fast_webhooks()).await;
    let none = post_as(&ts, &ts.api_key, "/v1/webhook/secret", json!({})).await;
    assert_eq!(none.status(), 409, "no webhook yet");
    let first = set_webhook(&ts, &url).await;
    let bad = post_as(
        &ts,
        &ts.api_key,
        "/v1/webhook/secret",
        json!({ "overlap_secs": 30 * 24 * 3600 }),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let r = post_as(
        &ts,
        &ts.api_key,
        "/v1/webhook/secret",
        json!({ "overlap_secs": 3600 }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    let second = r["secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert!(r["previous_secret_valid_until"].as_i64().unwrap() > vericall::events::unix_ms_now());

    let ping = |n: usize| {
        let ts = &ts;
        let receiver = receiver.clone();
        async move {
            let r = post_as(ts, &ts.api_key, "/v1/webhook/ping", json!({})).await;
            assert_eq!(r.status(), 200);
            let (h, body) = receiver.accepted().remove(n);
            (h["vericall-signature"].to_str().unwrap().to_string(), body)
        }
    };
    let (sig, body) = ping(0).await;
    assert_eq!(sig.matches("v1=").count(), 2, "{sig}");
    assert!(verify_signature(&second, &sig, &body, unix_secs(), 300));
    assert!(verify_signature(&first, &sig, &body, unix_secs(), 300));

    let r = post_as(
        &ts,
        &ts.api_key,
        "/v1/webhook/secret",
        json!({ "overlap_secs": 0 }),
    )
    .await;
    let r: Value = r.json().await.unwrap();
    let third = r["secret"].as_str().unwrap().to_string();
    assert!(r["previous_secret_valid_until"].is_null());
    let (sig, body) = ping(1).await;
    assert_eq!(sig.matches("v1=").count(), 1, "{sig}");
    assert!(verify_signature(&third, &sig, &body, unix_secs(), 300));
    assert!(!verify_signature(&second, &sig, &body, unix_secs(), 300));
    assert!(!verify_signature(&first, &sig, &body, unix_secs(), 300));
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// `DELETE /v1/sessions/{id}` cancels a session nobody joined: it ends `cancelled` with a signed
/// verdict; a second DELETE answers the ended session; another key's session is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relying_party_cancels_a_session_with_delete() {
    let ts = TestServer::start().await;
    let s = create_for(&ts, "cancel-me").await;
    let delete = || {
        ts.http
            .delete(ts.url(&format!("/v1/sessions/{}", s.id)))
            .bearer_auth(&ts.api_key)
            .send()
    };
    let r = delete().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["state"], "ended");
    assert_eq!(v["verdict"]["status"], "cancelled");
    let claims = verify(v["signed_verdict"].as_str().unwrap(), &jwks(&ts).await).unwrap();
    assert_eq!(claims["status"], "cancelled");
    let again = delete().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["signed_verdict"], v["signed_verdict"]);
    let (other_key, other_hash) = vericall::session::tokens::new_secret("vck_");
    ts.server
        .registry
        .store()
        .insert_api_key("key_other", "other", &other_hash.to_hex(), 1)
        .await
        .unwrap();
    let foreign = ts
        .http
        .delete(ts.url(&format!("/v1/sessions/{}", s.id)))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    ts.server.shutdown(Duration::from_secs(1)).await;
}
