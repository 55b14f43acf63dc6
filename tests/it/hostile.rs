//! Hostile clients (issue 18): each probe answers the stated status with the API's JSON error,
//! leaves live calls and memory alone, and slow connections are closed. Loopback only, bounded in
//! count and time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use vericall::media::wire::{classify, parse_rtp_header, DatagramKind};
use vericall::testkit::peer::{run_peer, PeerOptions};

use crate::common::{test_config, tone, track, vp8_clip, TestServer};

/// Asserts the status and the API's error shape; returns the body.
async fn expect_error(resp: reqwest::Response, status: u16, what: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "{what}");
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct}"
    );
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string(), "{what}: {body}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {body}"));
    assert!(
        !message.contains(" 0x") && !message.contains("(0x") && !message.contains("PointerOffset"),
        "{what}: internal detail in {message}"
    );
    body
}

/// Resident memory of this process (the test server runs in it), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Largest resident growth tolerated under a memory probe (allocator noise included).
const RSS_TOLERANCE_MIB: f64 = 50.0;

/// A sendonly offer from str0m: VP8 video and Opus audio.
fn good_offer() -> String {
    crate::common::sendonly_offer()
}

/// `OPTIONS` on a WHIP resource with the session's client token (the pre-flight that carries the
/// ICE servers).
async fn whip_preflight(ts: &TestServer, whip_url: &str, token: &str) -> reqwest::Response {
    ts.http
        .request(reqwest::Method::OPTIONS, whip_url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn post_offer(ts: &TestServer, id: &str, token: &str, sdp: String) -> reqwest::Response {
    ts.http
        .post(ts.url(&format!("/whip/{id}")))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .unwrap()
}

/// What the capturing relay saw from the client.
#[derive(Default)]
struct Captured {
    stun_requests: Vec<Vec<u8>>,
    /// (ssrc, payload type, bytes) of the busiest RTP stream so far.
    rtp: std::collections::HashMap<u32, (u8, usize)>,
}

/// A plain UDP relay between the client peer and the media port that keeps copies of what the
/// client sends, like an observer on the path.
async fn capturing_relay(server: SocketAddr) -> (SocketAddr, Arc<Mutex<Captured>>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let front_addr = front.local_addr().unwrap();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let (front, back, captured, client) = (
            front.clone(),
            back.clone(),
            captured.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let d = &buf[..n];
                {
                    let mut c = captured.lock().unwrap();
                    match classify(d) {
                        // A binding request (type 0x0001).
                        DatagramKind::Stun if d.len() > 20 && d[0] == 0 && d[1] == 1 => {
                            c.stun_requests.push(d.to_vec())
                        }
                        DatagramKind::Rtp => {
                            if let Some(h) = parse_rtp_header(d) {
                                let e = c.rtp.entry(h.ssrc).or_insert((h.payload_type, 0));
                                e.1 += n;
                            }
                        }
                        _ => {}
                    }
                }
                let _ = back.send_to(d, server).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (front_addr, captured)
}

/// Item 1: an observer replays the client's STUN binding requests from 20 new ports and then
/// sends forged RTP with the client's SSRC from them. The call's measurements are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_stun_and_forged_rtp_leave_a_live_call_unchanged() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let (relay, captured) = capturing_relay(ts.server.media_addr).await;
    let media = ts.server.media_addr;
    let mux = ts.server.registry.mux().clone();
    let session_id = s.id.clone();
    let attack = tokio::spawn(async move {
        // Wait for the call to be up and video to flow (bounded).
        let deadline = Instant::now() + Duration::from_secs(8);
        let (requests, ssrc, pt) = loop {
            {
                let c = captured.lock().unwrap();
                let busiest = c.rtp.iter().max_by_key(|(_, (_, bytes))| *bytes);
                if let (false, Some((ssrc, (pt, bytes)))) = (c.stun_requests.is_empty(), busiest) {
                    if *bytes > 50_000 {
                        let first = c.stun_requests[0].clone();
                        let last = c.stun_requests.last().unwrap().clone();
                        break (vec![first, last], *ssrc, *pt);
                    }
                }
            }
            assert!(Instant::now() < deadline, "no call traffic to capture");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let learned_before = mux.learned_addresses(&session_id);
        let mut sockets = Vec::new();
        for _ in 0..20 {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for r in &requests {
                sock.send_to(r, media).await.unwrap();
            }
            sockets.push(sock);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let learned_after = mux.learned_addresses(&session_id);
        // Forged media: the client's SSRC, sequence numbers far off, random payload.
        for (i, sock) in sockets.iter().enumerate() {
            for k in 0..25u16 {
                let seq = 20_000u16.wrapping_add(i as u16 * 997 + k * 13);
                let mut rtp = vec![0x80, pt];
                rtp.extend_from_slice(&seq.to_be_bytes());
                rtp.extend_from_slice(&(k as u32 * 123_457).to_be_bytes());
                rtp.extend_from_slice(&ssrc.to_be_bytes());
                rtp.extend(std::iter::repeat_n(0xab, 300));
                sock.send_to(&rtp, media).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (learned_before, learned_after)
    });
    let report = run_peer(
        &s.whip_url,
        &s.token,
        PeerOptions {
            video: Some(vp8_clip()),
            audio: Some(tone()),
            duration: Duration::from_secs(5),
            via: Some(relay),
            ..PeerOptions::default()
        },
    )
    .await
    .expect("the victim streams through the attack");
    let (learned_before, learned_after) = attack.await.unwrap();
    assert_eq!(
        learned_after, learned_before,
        "replayed requests taught the media port no address"
    );
    let v = ts
        .wait_session(&s.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    let video = track(&v, "video");
    assert!(video["frames"].as_u64().unwrap() as f64 >= 0.95 * report.video_frames_sent as f64);
    assert_eq!(video["loss_before_repair"], 0.0, "{video}");
    assert_eq!(track(&v, "audio")["loss_before_repair"], 0.0);
    assert_eq!(v["network"]["warnings"], json!([]), "{:#}", v["network"]);
    let timeline = ts.timeline_until(&s.id, "call_ended").await;
    assert!(
        !timeline.iter().any(|e| e["type"] == "network_warning"),
        "no network warning reached the person"
    );
    assert!(!v.to_string().contains("NETWORK_UNSTABLE"), "{v:#}");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Items 2 and 8: JSON endpoints need `application/json` and an object; every framework
/// rejection has the API's error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_need_the_content_type_and_an_object() {
    let ts = TestServer::start().await;
    let url = ts.url("/v1/sessions");
    let post = |body: &'static str, ct: Option<&'static str>| {
        let mut req = ts.http.post(&url).bearer_auth(&ts.api_key).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let r = post(r#"{"subject":"s1"}"#, None).await.unwrap();
    expect_error(r, 415, "JSON without a content type").await;
    let r = post(r#"{"subject":"s1"}"#, Some("text/plain"))
        .await
        .unwrap();
    expect_error(r, 415, "JSON as text/plain").await;
    let r = post(r#"["s1", true]"#, Some("application/json"))
        .await
        .unwrap();
    expect_error(r, 422, "a positional array").await;
    let r = post(r#""s1""#, Some("application/json")).await.unwrap();
    expect_error(r, 422, "a scalar").await;
    let r = post(r#"{"subject":"#, Some("application/json"))
        .await
        .unwrap();
    expect_error(r, 400, "broken JSON").await;
    let r = post(r#"{"subjekt":"s1"}"#, Some("application/json"))
        .await
        .unwrap();
    let body = expect_error(r, 422, "an unknown field").await;
    assert!(
        body["message"].as_str().unwrap().contains("subjekt"),
        "{body}"
    );
    // No body at all is still a session with defaults; with the type, the subject is kept.
    let r = post("", None).await.unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        r#"{"subject":"s1"}"#,
        Some("application/json; charset=utf-8"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ts.session(&id).await["subject"], "s1");

    // Other framework rejections: query, path, method, size, unknown route.
    let r = ts
        .http
        .get(ts.url("/v1/sessions?nope=1"))
        .bearer_auth(&ts.api_key)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "unknown query parameter").await;
    let r = ts.http.put(&url).send().await.unwrap();
    expect_error(r, 405, "wrong method").await;
    let r = ts.http.get(ts.url("/no/such/file")).send().await.unwrap();
    expect_error(r, 404, "unknown path").await;
    let s = ts.create_session().await;
    let r = ts
        .http
        .post(ts.url(&format!("/v1/sessions/{}/client-report", s.id)))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"code":"{}"}}"#, "x".repeat(8000)))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "oversized report").await;
    let r = ts
        .http
        .post(ts.url(&format!("/v1/sessions/{}/client-report", s.id)))
        .bearer_auth(&s.token)
        .body(r#"{"code":"DEVICE_IN_USE","device":"camera"}"#)
        .send()
        .await
        .unwrap();
    expect_error(r, 415, "report without a content type").await;

    // A webhook URL is bounded.
    let r = ts
        .http
        .put(ts.url("/v1/webhook"))
        .bearer_auth(&ts.api_key)
        .json(&json!({ "url": format!("https://example.com/{}", "a".repeat(1_500_000)) }))
        .send()
        .await
        .unwrap();
    expect_error(r, 422, "a 1.5 MB webhook URL").await;

    // A missing CSRF header says so.
    let r = ts
        .http
        .post(ts.url("/v1/review/login"))
        .json(&json!({ "username": "a", "password": "b" }))
        .send()
        .await
        .unwrap();
    let body = expect_error(r, 403, "login without the CSRF header").await;
    assert_eq!(body["error"], "csrf_required");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("x-vericall-csrf"));
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Issue 19: with `metrics_token` set, `/metrics` answers 401 without the token or with a wrong
/// one, and the metrics with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_behind_a_token_need_it() {
    let ts = TestServer::start_with(vericall::config::Config {
        metrics_token: Some("scrape-token-1".into()),
        ..test_config()
    })
    .await;
    let get = |auth: Option<&'static str>| {
        let ts = &ts;
        async move {
            let mut r = ts.http.get(ts.url("/metrics"));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r.send().await.unwrap()
        }
    };
    expect_error(get(None).await, 401, "metrics without the token").await;
    expect_error(
        get(Some("Bearer scrape-token-2")).await,
        401,
        "metrics with a wrong token",
    )
    .await;
    let r = get(Some("Bearer scrape-token-1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("vericall_active_calls 0"));
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Issue 19: with coturn's shared secret configured, each session's pre-flight carries its own
/// short-lived TURN credential (coturn's REST-API scheme: `<expiry>:<session id>` and
/// base64(HMAC-SHA1(secret, username))), never one shared by every client; a STUN server gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_are_minted_per_session_and_expire() {
    let secret = "turn-shared-secret";
    let ts = TestServer::start_with(vericall::config::Config {
        ice_servers: vec![
            vericall::config::IceServer {
                urls: "turn:turn.example.net:3478?transport=udp".into(),
                username: None,
                credential: None,
            },
            vericall::config::IceServer {
                urls: "stun:stun.example.net:3478".into(),
                username: None,
                credential: None,
            },
        ],
        turn_secret: Some(secret.into()),
        ..test_config()
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let s = ts.create_session().await;
        let r = whip_preflight(&ts, &s.whip_url, &s.token).await;
        let links: Vec<String> = r
            .headers()
            .get_all("link")
            .iter()
            .map(|l| l.to_str().unwrap().to_string())
            .collect();
        let turn = links
            .iter()
            .find(|l| l.contains("turn:"))
            .expect("TURN link");
        let stun = links
            .iter()
            .find(|l| l.contains("stun:"))
            .expect("STUN link");
        assert!(!stun.contains("username"), "{stun}");
        let field = |name: &str| {
            let start = turn.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            turn[start..start + turn[start..].find('"').unwrap()].to_string()
        };
        let (username, credential) = (field("username"), field("credential"));
        let (expiry, session) = username.split_once(':').unwrap();
        let session_id = s.whip_url.rsplit('/').next().unwrap();
        assert_eq!(session, session_id);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expiry: u64 = expiry.parse().unwrap();
        assert!(
            (now + 890..=now + 910).contains(&expiry),
            "expires in {} s",
            expiry as i64 - now as i64
        );
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        let tag = ring::hmac::sign(&key, username.as_bytes());
        use base64::Engine;
        assert_eq!(
            credential,
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        );
        seen.push(username);
    }
    assert_ne!(seen[0], seen[1], "each session has its own credential");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Item 5: OPTIONS reaches the WHIP handler, GET answers 405 as RFC 9725 reserves it, PATCH
/// after the end is 409, and the RFC's bundle-only example shape is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_options_get_patch_and_bundle_only_follow_rfc_9725() {
    let ts = TestServer::start_with(vericall::config::Config {
        ice_servers: vec![vericall::config::IceServer {
            urls: "stun:stun.example.net:3478".into(),
            username: None,
            credential: None,
        }],
        allowed_origins: vec!["https://app.example".into()],
        ..test_config()
    })
    .await;
    let s = ts.create_session().await;
    let r = whip_preflight(&ts, &s.whip_url, &s.token).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let h = r.headers();
    assert!(h["allow"].to_str().unwrap().contains("PATCH"), "{h:?}");
    assert_eq!(h["accept-patch"], "application/trickle-ice-sdpfrag");
    assert!(
        h.get_all("link")
            .iter()
            .any(|l| l.to_str().unwrap().contains("rel=\"ice-server\"")),
        "{h:?}"
    );
    // A browser's CORS pre-flight is still answered by the CORS layer.
    let r = ts
        .http
        .request(reqwest::Method::OPTIONS, &s.whip_url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = ts
        .http
        .get(&s.whip_url)
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["allow"].to_str().unwrap().contains("POST"));
    expect_error(r, 405, "GET on the WHIP resource").await;

    // The RFC's example: video at port 0 with a=bundle-only.
    let offer = good_offer();
    let mut bundled = String::new();
    let mut in_video = false;
    for line in offer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ");
        }
        match line.strip_prefix("m=video ") {
            Some(m) => bundled.push_str(&format!("m=video 0 {}", m.split_once(' ').unwrap().1)),
            None => bundled.push_str(line),
        }
        bundled.push_str("\r\n");
        if in_video && line.starts_with("a=mid:") {
            bundled.push_str("a=bundle-only\r\n");
        }
    }
    assert!(bundled.contains("m=video 0 ") && bundled.contains("a=bundle-only"));
    let r = post_offer(&ts, &s.id, &s.token, bundled).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    // PATCH after the end: 409, as documented.
    let r = ts
        .http
        .delete(&s.whip_url)
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    ts.wait_session(&s.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    let r = ts
        .http
        .patch(&s.whip_url)
        .bearer_auth(&s.token)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", "*")
        .body("a=end-of-candidates\r\n")
        .send()
        .await
        .unwrap();
    expect_error(r, 409, "PATCH after the end").await;
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Item 6: malformed offers are refused with a reason and hold no call slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_offers_are_refused_and_hold_no_slot() {
    let ts = TestServer::start_with(vericall::config::Config {
        max_sessions: 1,
        whip_offers_per_minute: 0,
        ..test_config()
    })
    .await;
    let s = ts.create_session().await;
    let offer = good_offer();
    let line = |prefix: &str| {
        offer
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {offer}"))
            .to_string()
    };
    let fingerprint = line("a=fingerprint:");
    let ufrag = line("a=ice-ufrag:");
    let pwd = line("a=ice-pwd:");
    let video = line("m=video ");
    let rtpmap = line("a=rtpmap:");
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "2-byte md5 fingerprint",
            offer.replace(&fingerprint, "a=fingerprint:md5 AB:CD"),
            400,
        ),
        (
            "short sha-256 fingerprint",
            offer.replace(&fingerprint, "a=fingerprint:sha-256 AB:CD"),
            400,
        ),
        (
            "10k-character ufrag",
            offer.replace(&ufrag, &format!("a=ice-ufrag:{}", "u".repeat(10_000))),
            400,
        ),
        (
            "1-character ice-pwd",
            offer.replace(&pwd, "a=ice-pwd:x"),
            400,
        ),
        (
            "NUL in an attribute name",
            offer.replace(&rtpmap, &rtpmap.replace("rtpmap", "rtp\0map")),
            400,
        ),
        (
            "m=video -1",
            offer.replace(&video, &video.replacen("m=video 9", "m=video -1", 1)),
            400,
        ),
        (
            "a garbage line",
            offer.replace("s=-", "s=-\r\ngarbage"),
            400,
        ),
        (
            "unparsable by the WebRTC stack",
            offer.replace(&line("o="), "o=-"),
            400,
        ),
        (
            "recvonly video",
            offer.replacen("a=sendonly", "a=recvonly", 1),
            406,
        ),
        (
            "inactive video",
            offer.replacen("a=sendonly", "a=inactive", 1),
            406,
        ),
    ];
    for (what, sdp, status) in cases {
        assert_ne!(sdp, offer, "{what} changed the offer");
        let r = post_offer(&ts, &s.id, &s.token, sdp).await;
        let body = expect_error(r, status, what).await;
        assert!(
            body["message"].as_str().unwrap().len() > 10,
            "{what}: a reason: {body}"
        );
    }
    // The one slot is still free.
    let r = post_offer(&ts, &s.id, &s.token, offer).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A PNG header declaring a `side` x `side` 8-bit greyscale image, then one tiny IDAT: what a
/// decompression bomb looks like before its data.
fn png_declaring(side: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // A zlib stream of zeros is ~1000:1; the 292 KB bomb of the report was this shape.
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Items 3 and 4: a decompression bomb and oversized logins are refused before they cost memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_and_huge_logins_do_not_grow_memory() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let upload = |bytes: Vec<u8>| {
        ts.http
            .post(ts.url(&format!("/v1/sessions/{}/reference", s.id)))
            .bearer_auth(&ts.api_key)
            .header("content-type", "image/png")
            .body(bytes)
            .send()
    };
    // Warm up the paths once, then measure.
    let r = upload(png_declaring(30_000)).await.unwrap();
    expect_error(r, 422, "a PNG declaring 30000x30000").await;
    let before = rss_mib();
    for side in [20_000, 30_000, 65_000] {
        for _ in 0..3 {
            let r = upload(png_declaring(side)).await.unwrap();
            let body = expect_error(r, 422, "decompression bomb").await;
            assert!(
                body["message"].as_str().unwrap().contains("pixels"),
                "{body}"
            );
        }
    }
    let r = upload(b"GIF89a not a png".to_vec()).await.unwrap();
    expect_error(r, 422, "not a PNG").await;

    // No pooled connections for the logins: the server closes the connection it answers 413 on
    // without reading the body, and a pooled client could send the next login on it (a broken
    // pipe that says nothing about the server).
    let unpooled = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let login = |username: String| {
        unpooled
            .post(ts.url("/v1/review/login"))
            .header("x-vericall-csrf", "1")
            .json(&json!({ "username": username, "password": "pw" }))
            .send()
    };
    match login("u".repeat(1_900_000)).await {
        Ok(r) => {
            expect_error(r, 413, "a 1.9 MB username").await;
        }
        // The server answers 413 from the declared length and closes without reading the body:
        // a client still writing it may see the close (broken pipe) before the answer.
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "a 1.9 MB username: {e}"),
    }
    for i in 0..40 {
        let r = login(format!("{i}{}", "u".repeat(4000))).await.unwrap();
        expect_error(r, 422, "a 4 kB username").await;
    }
    let grown = rss_mib() - before;
    assert!(
        grown < RSS_TOLERANCE_MIB,
        "resident memory grew by {grown:.1} MiB"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Item 7: connections that trickle headers or a body are closed within the read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_are_closed_within_the_read_timeout() {
    let ts = TestServer::start_with(vericall::config::Config {
        http_read_timeout_secs: 1,
        ..test_config()
    })
    .await;
    let addr = ts.server.http_addr;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let key = ts.api_key.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let partial = match i % 5 {
                // Headers that never end.
                0 => "POST /v1/sessions HTTP/1.1\r\nHost: x\r\n".to_string(),
                // Complete headers, a body that never arrives.
                1 => format!(
                    "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {key}\r\n\
                     content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
                ),
                // Nothing at all after connecting.
                2 => String::new(),
                // A body nobody reads (refused before), trickling.
                3 => "POST /v1/sessions HTTP/1.1\r\nHost: x\r\ncontent-length: 1000\r\n\r\n{"
                    .to_string(),
                // One request, then an idle keep-alive connection.
                _ => "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            };
            conn.write_all(partial.as_bytes()).await.unwrap();
            // Read until the server closes (a 408 may come first); bounded.
            let mut buf = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
                .await
                .is_ok();
            let text = String::from_utf8_lossy(&buf).to_string();
            if i % 5 == 1 {
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
            }
            (i % 5, closed, started.elapsed())
        }));
    }
    for t in tasks {
        let (case, closed, after) = t.await.unwrap();
        assert!(closed, "slow connection case {case} stayed open");
        assert!(
            after < Duration::from_secs(4),
            "case {case} closed only after {after:?}"
        );
    }
    // The server still answers.
    let r = ts.http.get(ts.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    ts.server.shutdown(Duration::from_secs(1)).await;
}
