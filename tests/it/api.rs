//! Bad input gets the right status and nothing else breaks: sessions API and WHIP (RFC 9725).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;
use vericall::testkit::peer::{run_peer, PeerOptions};

use crate::common::{test_config, tone, vp8_clip, TestServer};

/// A real offer from str0m with the given video codecs enabled (none = audio only).
fn offer(vp8: bool, video: bool) -> String {
    let mut cfg = RtcConfig::new().clear_codecs().enable_opus(true, false);
    if vp8 {
        cfg = cfg.enable_vp8(true);
    } else {
        cfg = cfg.enable_av1(true);
    }
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(
        str0m::Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap(),
    );
    let mut api = rtc.sdp_api();
    if video {
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    }
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

async fn whip(
    ts: &TestServer,
    method: reqwest::Method,
    id: &str,
    token: Option<&str>,
    ct: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut req = ts
        .http
        .request(method, ts.url(&format!("/whip/{id}")))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_api_requires_a_valid_key_and_returns_usable_links() {
    let ts = TestServer::start().await;
    let url = ts.url("/v1/sessions");
    assert_eq!(ts.http.post(&url).send().await.unwrap().status(), 401);
    let wrong = ts
        .http
        .post(&url)
        .bearer_auth("vck_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    let s = ts.create_session().await;
    assert!(
        s.id.starts_with("ses_") && s.id.len() == 36,
        "128-bit id: {}",
        s.id
    );
    assert!(s.whip_url.ends_with(&format!("/whip/{}", s.id)));
    assert!(
        s.page_url.contains(&format!("#session={}&token=", s.id)),
        "token in the fragment"
    );
    assert!(s.events_url.contains("/events?token=vce_"));
    let v = ts.session(&s.id).await;
    assert_eq!(v["state"], "created");
    assert_eq!(v["subject"], "test-user");
    // Another key cannot read it; unknown ids are 404.
    let other = ts
        .http
        .get(ts.url(&format!("/v1/sessions/{}", s.id)))
        .bearer_auth("vck_x")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);
    let missing = ts
        .http
        .get(ts.url("/v1/sessions/ses_nope"))
        .bearer_auth(&ts.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Operations endpoints.
    assert_eq!(
        ts.http
            .get(ts.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        ts.http
            .get(ts.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = ts
        .http
        .get(ts.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vericall_active_calls 0"));
    assert!(metrics.contains("vericall_http_responses_total{status=\"401\"}"));
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_errors_follow_rfc_9725() {
    let ts = TestServer::start().await;
    let a = ts.create_session().await;
    let b = ts.create_session().await;
    let sdp = Some("application/sdp");
    let post = reqwest::Method::POST;

    let r = whip(&ts, post.clone(), &a.id, None, sdp, offer(true, true)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no token");
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some("vct_forged"),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "unknown token");
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&b.token),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "B's token on A");
    let r = whip(
        &ts,
        post.clone(),
        "ses_00000000000000000000000000000000",
        Some(&a.token),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        Some("application/json"),
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        sdp,
        "this is not sdp".into(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        sdp,
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\ngarbage".into(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "malformed SDP with a video line"
    );
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        sdp,
        offer(false, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE, "AV1 only");
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        sdp,
        offer(true, false),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE, "audio only");
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        sdp,
        "v=0\r\n".repeat(20_000),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A good offer: 201 with the RFC's headers.
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let links: Vec<String> = r
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.contains("rel=\"urn:ietf:params:whip:ext:vericall:events\"")),
        "{links:?}"
    );
    assert!(location.ends_with(&format!("/whip/{}", a.id)));
    assert!(r.text().await.unwrap().starts_with("v=0"));
    // Same session again: 409.
    let r = whip(
        &ts,
        post.clone(),
        &a.id,
        Some(&a.token),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // PATCH: If-Match is required and must match.
    let frag = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host\r\n";
    let patch = |if_match: Option<&str>, body: &str, token: &str| {
        let mut req = ts
            .http
            .patch(&location)
            .bearer_auth(token)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(body.to_string());
        if let Some(m) = if_match {
            req = req.header("if-match", m);
        }
        req.send()
    };
    assert_eq!(
        patch(None, frag, &a.token).await.unwrap().status(),
        StatusCode::PRECONDITION_REQUIRED
    );
    assert_eq!(
        patch(Some("\"nope\""), frag, &a.token)
            .await
            .unwrap()
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        patch(Some(&etag), frag, &b.token).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // New credentials: an ICE restart, 200 with our new credentials and a new ETag.
    let restart = patch(Some(&etag), frag, &a.token).await.unwrap();
    assert_eq!(restart.status(), StatusCode::OK);
    let new_etag = restart.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    let body = restart.text().await.unwrap();
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=candidate:"),
        "{body}"
    );
    assert_eq!(
        patch(Some(&etag), frag, &a.token).await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED,
        "old ETag"
    );
    // The same credentials again: plain trickle, 204.
    assert_eq!(
        patch(Some(&new_etag), frag, &a.token)
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        patch(Some(&new_etag), "a=candidate:garbage", &a.token)
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );

    // B's token cannot end A; A's can.
    let del = |token: &str| {
        ts.http
            .delete(&location)
            .bearer_auth(token.to_string())
            .send()
    };
    assert_eq!(del(&b.token).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(del(&a.token).await.unwrap().status(), StatusCode::OK);
    let v = ts
        .wait_session(&a.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    assert_eq!(v["end_reason"], "deleted");
    // B is untouched.
    assert_eq!(ts.session(&b.id).await["state"], "created");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_whip_answers_503_with_retry_after() {
    let ts = TestServer::start_with(vericall::config::Config {
        max_sessions: 1,
        ..test_config()
    })
    .await;
    let a = ts.create_session().await;
    let b = ts.create_session().await;
    let sdp = Some("application/sdp");
    let r = whip(
        &ts,
        reqwest::Method::POST,
        &a.id,
        Some(&a.token),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = whip(
        &ts,
        reqwest::Method::POST,
        &b.id,
        Some(&b.token),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");
    // Ending A frees the slot.
    let del = ts
        .http
        .delete(ts.url(&format!("/whip/{}", a.id)))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    ts.wait_session(&a.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    let r = whip(
        &ts,
        reqwest::Method::POST,
        &b.id,
        Some(&b.token),
        sdp,
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A node whose analysis cannot keep up (here: a decode queue overflowed) refuses new calls with
/// 503 + Retry-After while it has free slots, and its metrics show why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_node_refuses_new_calls_with_503_and_retry_after() {
    let ts = TestServer::start().await;
    let a = ts.create_session().await;
    ts.server
        .registry
        .load()
        .on_queue_drop(std::time::Instant::now());
    let r = whip(
        &ts,
        reqwest::Method::POST,
        &a.id,
        Some(&a.token),
        Some("application/sdp"),
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "at_capacity");
    // The session is untouched: the client may offer again later (here or on another node).
    assert_eq!(ts.session(&a.id).await["state"], "created");
    let metrics = ts
        .http
        .get(ts.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vericall_active_calls 0"));
    assert!(metrics.contains("vericall_decode_queue_drops_total 1"));
    assert!(metrics.contains("# TYPE vericall_analysis_lag_seconds gauge"));
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_never_connects_ends_as_ice_failed() {
    let ts = TestServer::start_with(vericall::config::Config {
        connect_timeout_secs: 1,
        ..test_config()
    })
    .await;
    let a = ts.create_session().await;
    let r = whip(
        &ts,
        reqwest::Method::POST,
        &a.id,
        Some(&a.token),
        Some("application/sdp"),
        offer(true, true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = ts
        .wait_session(&a.id, Duration::from_secs(6), |v| v["state"] == "ended")
        .await;
    assert_eq!(v["end_reason"], "ice_failed");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_at_the_media_port_leave_a_call_intact() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let media = ts.server.media_addr;
    let spray = tokio::spawn(async move {
        use rand::{Rng, SeedableRng};
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..10_000u32 {
            let len = rng.gen_range(1..1400);
            let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            // A share that looks like STUN, DTLS and RTP, to reach deeper parsers.
            match i % 4 {
                0 => d[0] = 0,
                1 => d[0] = 22,
                2 => d[0] = 0x80,
                _ => {}
            }
            let _ = sock.send_to(&d, media).await;
            // Spread over about 3 s of the call.
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    });
    let report = run_peer(
        &s.whip_url,
        &s.token,
        PeerOptions {
            video: Some(vp8_clip()),
            audio: Some(tone()),
            duration: Duration::from_secs(4),
            ..PeerOptions::default()
        },
    )
    .await
    .expect("peer streams while the port is sprayed");
    spray.await.unwrap();
    let v = ts
        .wait_session(&s.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    let video = crate::common::track(&v, "video");
    assert!(video["frames"].as_u64().unwrap() as f64 >= 0.99 * report.video_frames_sent as f64);
    assert_eq!(video["loss_before_repair"], 0.0);
    assert_eq!(video["duplicates"], 0);
    assert_eq!(v["end_reason"], "deleted");
    let metrics = ts
        .http
        .get(ts.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("vericall_media_datagrams_total{outcome=\"dropped_unknown_source\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        dropped >= 9_000,
        "sprayed datagrams were dropped at the mux: {dropped}"
    );
    assert_eq!(
        ts.http
            .get(ts.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// The page's device reports: client token only, known device codes only, recorded in the
/// timeline and the session, refused once the session has ended; the reason catalog is public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_are_authorised_validated_and_recorded() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let other = ts.create_session().await;
    let url = ts.url(&format!("/v1/sessions/{}/client-report", s.id));
    let post = |token: Option<&str>, body: serde_json::Value| {
        let mut req = ts.http.post(&url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let ok = serde_json::json!({"code": "DEVICE_IN_USE", "device": "camera", "detail": "NotReadableError"});
    assert_eq!(post(None, ok.clone()).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("vct_wrong"), ok.clone()).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(Some(&other.token), ok.clone()).await.unwrap().status(),
        403
    );
    assert_eq!(
        post(Some(&ts.api_key), ok.clone()).await.unwrap().status(),
        401
    );
    for bad in [
        serde_json::json!({"code": "CAMERA_BLACK"}),
        serde_json::json!({"code": "NOPE"}),
        serde_json::json!({"code": "DEVICE_IN_USE", "device": "toaster"}),
    ] {
        let r = post(Some(&s.token), bad.clone()).await.unwrap();
        assert_eq!(r.status(), 422, "{bad}");
    }
    let r = post(Some(&s.token), serde_json::json!({"code": 5}))
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = ts
        .http
        .post(&url)
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body(vec![b' '; 8192])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "oversized report");
    // A detail is reduced to a short identifier before it is stored.
    let noisy = serde_json::json!({"code": "DEVICE_IN_USE", "device": "camera", "detail": "NotReadable<script>Error\n"});
    assert_eq!(post(Some(&s.token), noisy).await.unwrap().status(), 202);
    assert_eq!(
        post(Some(&s.token), ok.clone()).await.unwrap().status(),
        202
    );
    // A repeat of the same code is accepted but not recorded again (a retrying page must not
    // flood the timeline); another code is.
    let missing = serde_json::json!({"code": "DEVICE_NOT_FOUND", "device": "microphone", "detail": "NotFoundError"});
    assert_eq!(post(Some(&s.token), missing).await.unwrap().status(), 202);
    let v = ts.session(&s.id).await;
    assert_eq!(
        v["device_failures"],
        serde_json::json!(["DEVICE_IN_USE", "DEVICE_NOT_FOUND"])
    );
    // The timeline is written asynchronously: wait for both reports.
    let deadline = Instant::now() + Duration::from_secs(5);
    let details = loop {
        let details: Vec<String> = ts
            .timeline(&s.id)
            .await
            .iter()
            .filter(|e| e["type"] == "device_failure")
            .filter_map(|e| e["detail"].as_str().map(String::from))
            .collect();
        if details.len() >= 2 || Instant::now() > deadline {
            break details;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(details, ["NotReadablescriptError", "NotFoundError"]);
    // Ended: refused.
    ts.end_unused(&s).await;
    assert_eq!(post(Some(&s.token), ok).await.unwrap().status(), 409);

    let catalog = ts.get_json("/v1/reasons").await;
    let list = catalog["reasons"].as_array().unwrap();
    assert_eq!(list.len(), vericall::reasons::ReasonCode::ALL.len());
    let denied = list
        .iter()
        .find(|r| r["code"] == "PERMISSION_DENIED")
        .unwrap();
    assert_eq!(denied["retryable"], true);
    assert!(denied["hint"]["zh-CN"].as_str().unwrap().contains("摄像头"));
    assert!(denied["hint"]["en"].as_str().unwrap().contains("camera"));
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Issue 20: `GET /v1/requirements` (public) states what the checks enforce, from their own
/// thresholds and this deployment's configuration, in English and Simplified Chinese; changing
/// the configuration changes what it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirements_follow_the_checks_thresholds_and_the_config() {
    use vericall::analysis::device;
    use vericall::media::netstats;
    let get = |ts: &TestServer| {
        let url = ts.url("/v1/requirements");
        let http = ts.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let ts = TestServer::start().await;
    let r = get(&ts).await;
    assert_eq!(r["camera"]["min_width"], device::MIN_WIDTH);
    assert_eq!(r["camera"]["min_height"], device::MIN_HEIGHT);
    assert_eq!(r["network"]["max_rtt_ms"], netstats::RTT_HIGH_MS);
    assert_eq!(r["network"]["relay_available"], false);
    assert_eq!(r["call"]["max_call_secs"], 300);
    assert_eq!(r["call"]["screen_light"], true);
    for (area, entry) in r.as_object().unwrap() {
        for lang in ["en", "zh-CN"] {
            let text = entry["text"][lang].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{area} has no {lang} text: {entry}");
        }
    }
    assert!(r["call"]["text"]["en"]
        .as_str()
        .unwrap()
        .contains("at most 5 min"));
    assert!(r["call"]["text"]["en"]
        .as_str()
        .unwrap()
        .contains("colours"));
    ts.server.shutdown(Duration::from_secs(1)).await;

    let ts = TestServer::start_with(vericall::config::Config {
        max_call_secs: 120,
        challenge_steps: 2,
        screen_light: false,
        ice_servers: vec![vericall::config::IceServer {
            urls: "turn:turn.example.net:3478".into(),
            username: None,
            credential: None,
        }],
        turn_secret: Some("s".into()),
        ..test_config()
    })
    .await;
    let r = get(&ts).await;
    println!("{r:#}");
    assert_eq!(r["call"]["max_call_secs"], 120);
    assert_eq!(r["call"]["movement_steps"], 2);
    assert_eq!(r["call"]["screen_light"], false);
    assert_eq!(r["network"]["relay_available"], true);
    let call = r["call"]["text"]["en"].as_str().unwrap();
    assert!(
        call.contains("at most 2 min") && call.contains("2 short instructions"),
        "{call}"
    );
    assert!(!call.contains("colours"), "{call}");
    assert!(r["call"]["text"]["zh-CN"]
        .as_str()
        .unwrap()
        .contains("2 分钟"));
    ts.server.shutdown(Duration::from_secs(1)).await;
}
