//! Issue 21 acceptance, on one machine: two vericall nodes on one PostgreSQL database and one
//! S3-compatible store (moto's server), behind one public URL (node B's). Node A is a separate
//! process, so that it can be killed with SIGKILL; node B runs in this test. Needs
//! `VERICALL_TEST_POSTGRES_URL` (make test starts the server) and `.deps/moto` (scripts/setup).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::common::{test_config, TestServer};

const NODE_SECRET: &str = "cluster-test-secret-0123456789";
const SESSIONS_PER_MINUTE: u32 = 10;
const NODE_LOST_SECS: u64 = 6;
const BUCKET: &str = "vericall-evidence";

/// moto's S3 server on a free port, with the evidence bucket; stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    async fn start() -> Option<S3Server> {
        let bin =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/moto/bin/moto_server");
        if !bin.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the scale-out test: scripts/setup installs moto into .deps/moto"
            );
            println!(
                "{} is missing (scripts/setup installs it): skipping",
                bin.display()
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http
                .put(format!("{}/{BUCKET}", server.endpoint))
                .send()
                .await
            {
                assert!(r.status().is_success(), "bucket created: {}", r.status());
                return Some(server);
            }
            assert!(Instant::now() < deadline, "moto_server answers");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The keys in the bucket under `prefix`.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let listing = reqwest::get(format!(
            "{}/{BUCKET}?list-type=2&prefix={prefix}",
            self.endpoint
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// The environment both nodes read their S3 settings from.
    fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records every webhook body it is sent.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<Value>>>);

impl Hooks {
    async fn start() -> (Hooks, String) {
        let hooks = Hooks::default();
        let seen = hooks.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: String| {
                let seen = seen.clone();
                async move {
                    if let Ok(v) = serde_json::from_str(&body) {
                        seen.0.lock().unwrap().push(v);
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hooks, format!("http://{addr}/hook"))
    }

    fn for_session(&self, id: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["session_id"] == id)
            .cloned()
            .collect()
    }
}

/// Node A: the server binary on `database_url`, its links pointing at `public_url`.
struct ChildNode {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl ChildNode {
    async fn start(database_url: &str, public_url: &str, s3: &S3Server) -> ChildNode {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vericall.toml");
        std::fs::write(
            &config,
            format!(
                "http_addr = \"127.0.0.1:0\"\nmedia_addr = \"127.0.0.1:0\"\nnode_id = \"node-a\"\n\
                 node_secret = \"{NODE_SECRET}\"\nnode_lost_secs = {NODE_LOST_SECS}\n\
                 public_url = \"{public_url}\"\nsessions_per_minute = {SESSIONS_PER_MINUTE}\n\
                 evidence_url = \"s3://{BUCKET}/frames\"\n\
                 webhook_allow_internal = true\nwebhook_retry_base_ms = 300\n\
                 models_dir = \"{models}\"\ndatabase_url = \"{database_url}\"\ndata_dir = \"{data}\"\n",
                models = concat!(env!("CARGO_MANIFEST_DIR"), "/models"),
                data = dir.path().display(),
            ),
        )
        .unwrap();
        let (child, head) = crate::common::start_server_binary(&config, &s3.env()).await;
        // "vericall listening on <public URL> (HTTP <address>, media UDP <address>)": its own
        // address, not the public URL (node B's) its links carry.
        let printed = head
            .last()
            .and_then(|l| l.split_once("(HTTP "))
            .and_then(|(_, rest)| rest.split(',').next())
            .map(|addr| format!("http://{addr}"))
            .expect("node A prints its HTTP address");
        ChildNode {
            child,
            base: printed,
            _dir: dir,
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create(http: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/sessions"))
        .bearer_auth(key)
        .json(&json!({ "subject": "user-cluster" }))
        .send()
        .await
        .unwrap()
}

async fn session(http: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    http.get(format!("{base}/v1/sessions/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_ended(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = session(http, base, key, id).await;
        if s["state"] == "ended" && s["verdict"].is_object() {
            return s;
        }
        assert!(Instant::now() < deadline, "session {id} did not end: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `DELETE /v1/subjects/{subject}` through `base`: the answer's counts.
async fn delete_subject(http: &reqwest::Client, base: &str, key: &str, subject: &str) -> Value {
    http.delete(format!("{base}/v1/subjects/{subject}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The Prometheus text of the node at `base`.
async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Starts a call of `created` (a session as created) through its `whip_url` and returns once the
/// session reads as connected through `base`; the call streams for a minute unless aborted.
async fn connected_call(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    created: &Value,
) -> tokio::task::JoinHandle<anyhow::Result<crate::webrtc_peer::WebrtcPeerReport>> {
    let created = created.clone();
    let id = created["id"].as_str().unwrap().to_string();
    let call = tokio::spawn(async move {
        crate::webrtc_peer::run_webrtc_peer(
            created["whip_url"].as_str().unwrap(),
            created["client_token"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while session(http, base, key, &id).await["connected_at"].is_null() {
        assert!(Instant::now() < deadline, "the call on A connects");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_one_url() {
    let Some(url) = crate::store::postgres_schema().await else {
        return;
    };
    let Some(s3) = S3Server::start().await else {
        return;
    };
    for (name, value) in s3.env() {
        // This test runs in its own process (nextest); nothing else here reads these.
        std::env::set_var(name, value);
    }
    let (hooks, hook_url) = Hooks::start().await;
    let b = TestServer::start_on_database(
        vericall::config::Config {
            evidence_url: Some(format!("s3://{BUCKET}/frames")),
            node_id: Some("node-b".into()),
            node_secret: Some(NODE_SECRET.into()),
            node_lost_secs: NODE_LOST_SECS,
            sessions_per_minute: SESSIONS_PER_MINUTE,
            webhook_allow_internal: true,
            webhook_retry_base_ms: 300,
            ..test_config()
        },
        &url,
    )
    .await;
    let b_url = b.url("");
    let a = ChildNode::start(&url, &b_url, &s3).await;
    let http = reqwest::Client::new();
    let key = b.api_key.clone();
    let r = http
        .put(format!("{b_url}/v1/webhook"))
        .bearer_auth(&key)
        .json(&json!({ "url": hook_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A creation retried with its Idempotency-Key on the other node gets the same session: B
    // forwards the retry to A, which holds the answer. (Each answer takes one of the key's
    // sessions per minute, as on one node.)
    let mut first = None;
    for base in [&a.base, &b_url] {
        let r = http
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(&key)
            .header("idempotency-key", "order-1/attempt-1")
            .json(&json!({ "subject": "user-cluster" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let replayed = r.headers().contains_key("idempotent-replayed");
        let v: Value = r.json().await.unwrap();
        match &first {
            None => {
                assert!(!replayed);
                first = Some(v);
            }
            Some(f) => {
                assert!(replayed, "answered again, not created anew");
                assert_eq!(v["id"], f["id"]);
                assert_eq!(v["client_token"], f["client_token"]);
            }
        }
    }
    // A session of another subject on A, deleted through B while its call runs (below).
    let gone: Value = http
        .post(format!("{}/v1/sessions", a.base))
        .bearer_auth(&key)
        .json(&json!({ "subject": "user-gone" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    const IDEMPOTENT_ANSWERS: u32 = 3;

    // Session creation alternates between A and B: the limit holds for both together.
    let mut created_on_a = Vec::new();
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..SESSIONS_PER_MINUTE - IDEMPOTENT_ANSWERS + 4 {
        let base = if i % 2 == 0 { &a.base } else { &b_url };
        let r = create(&http, base, &key).await;
        match r.status().as_u16() {
            201 => {
                accepted += 1;
                let v: Value = r.json().await.unwrap();
                if i % 2 == 0 {
                    created_on_a.push(v);
                }
            }
            429 => {
                refused += 1;
                assert!(r.headers().contains_key("retry-after"));
            }
            other => panic!("creating a session answered {other}"),
        }
    }
    println!("sessions created alternately on A and B: {accepted} accepted, {refused} refused");
    assert_eq!(
        accepted,
        SESSIONS_PER_MINUTE - IDEMPOTENT_ANSWERS,
        "the limit is for the cluster"
    );
    assert_eq!(refused, 4);

    // Session 1, created on A, entirely through B: watched, given a reference, called, ended.
    let s1 = &created_on_a[0];
    let id1 = s1["id"].as_str().unwrap().to_string();
    for link in ["whip_url", "events_url", "page_url"] {
        assert!(
            s1[link].as_str().unwrap().starts_with(&b_url),
            "{link} is on the one public URL: {s1}"
        );
    }
    let events = Arc::new(Mutex::new(String::new()));
    let watcher = {
        let events = events.clone();
        let r = http
            .get(s1["events_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "events through B");
        tokio::spawn(async move {
            let mut body = r.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                events
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        })
    };
    let (w, _, rgb) = crate::face::load_rgb("astronaut.png");
    let crop: Vec<u8> = (0..200)
        .flat_map(|y| rgb[((30 + y) * w + 144) * 3..][..480].to_vec())
        .collect();
    let photo = {
        let img = image::RgbImage::from_raw(160, 200, crop).unwrap();
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let r = http
        .post(format!("{b_url}/v1/sessions/{id1}/reference"))
        .bearer_auth(&key)
        .header("content-type", "image/png")
        .body(photo)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "reference through B: {}",
        r.text().await.unwrap()
    );
    // A rendered person, so that A keeps an evidence frame.
    let frames =
        crate::face::rendered_clip(&[(0.0, vericall::testkit::render::FaceEdit::default())], 15);
    let report = vericall::testkit::peer::run_peer(
        s1["whip_url"].as_str().unwrap(),
        s1["client_token"].as_str().unwrap(),
        vericall::testkit::peer::PeerOptions {
            video: Some(vericall::testkit::peer::VideoSource::Live(Arc::new(
                vericall::testkit::peer::LiveVideo {
                    codec: vericall::media::decode::VideoCodec::Vp8,
                    fps: 15,
                    bitrate_kbps: 800,
                    frames,
                },
            ))),
            audio: Some(crate::common::tone()),
            duration: Duration::from_secs(4),
            ..Default::default()
        },
    )
    .await
    .expect("WHIP through B");
    assert!(
        report.video_frames_sent > 0,
        "the call ran on A: {report:?}"
    );
    let on_b = wait_ended(&http, &b_url, &key, &id1, Duration::from_secs(20)).await;
    let on_a = session(&http, &a.base, &key, &id1).await;
    assert_eq!(
        on_a["verdict"], on_b["verdict"],
        "the verdict is readable from both"
    );
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the events stream ends with the session")
        .unwrap();
    let seen = events.lock().unwrap().clone();
    for kind in ["reference_set", "connected", "session_ended"] {
        assert!(seen.contains(kind), "{kind} streamed through B: {seen}");
    }

    // A kept the frontal frame in S3; B's review console shows it.
    let frames: Vec<String> = on_b["verdict"]["frames"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        frames.contains(&"frontal.jpg".to_string()),
        "{}",
        on_b["verdict"]
    );
    assert!(s3
        .keys("frames/")
        .await
        .contains(&format!("frames/{id1}/frontal.jpg")));
    b.server
        .registry
        .store()
        .insert_operator(
            "ann",
            &vericall::api::review::hash_password("correct horse battery"),
            1,
        )
        .await
        .unwrap();
    let login = http
        .post(format!("{b_url}/v1/review/login"))
        .header("x-vericall-csrf", "1")
        .json(&json!({ "username": "ann", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let frame = http
        .get(format!(
            "{b_url}/v1/review/sessions/{id1}/frames/frontal.jpg"
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(frame.status(), 200, "B's review console shows A's frame");
    assert_eq!(&frame.bytes().await.unwrap()[..2], &[0xff, 0xd8]);

    // Session 2, created on A: the person's device fails, reported through B.
    let s2 = &created_on_a[1];
    let id2 = s2["id"].as_str().unwrap().to_string();
    let r = http
        .post(format!("{b_url}/v1/sessions/{id2}/client-report"))
        .bearer_auth(s2["client_token"].as_str().unwrap())
        .json(&json!({ "code": "PERMISSION_DENIED", "device": "camera", "detail": "NotAllowedError" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "client report through B");
    // B reads it from the timeline A's event writer stores in batches: wait for the batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = session(&http, &b_url, &key, &id2).await;
        if seen["device_failures"] != json!([]) || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        seen["device_failures"],
        json!(["PERMISSION_DENIED"]),
        "{seen}"
    );
    // The relying party cancels it through B; A ends it.
    let r = http
        .delete(format!("{b_url}/v1/sessions/{id2}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "cancel through B");
    let ended = wait_ended(&http, &b_url, &key, &id2, Duration::from_secs(20)).await;
    assert_eq!(ended["verdict"]["status"], "cancelled");
    println!("session 2: device failure reported and cancelled through B");

    // B counts what it forwarded.
    let metrics = metrics_text(&http, &b_url).await;
    let answered = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vericall_forwarded_requests_total{outcome=\"answered\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(answered >= 5, "forwarded and answered: {answered}");

    // A request that claims to come from a node but is not signed with the secret is refused.
    let r = http
        .post(format!("{}/whip/{id2}", a.base))
        .header("x-vericall-node", "1.00")
        .header("x-vericall-client", "203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A subject deleted through B while its call runs on A: B has A end the call first, so
    // nothing is written back after the deletion.
    let gone_id = gone["id"].as_str().unwrap().to_string();
    let call = connected_call(&http, &b_url, &key, &gone).await;
    let r = delete_subject(&http, &b_url, &key, "user-gone").await;
    assert_eq!(r["sessions_deleted"], 1, "{r}");
    let a_metrics = metrics_text(&http, &a.base).await;
    assert!(
        a_metrics.lines().any(|l| l == "vericall_active_calls 0"),
        "A ended the call before B deleted the subject"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for base in [&a.base, &b_url] {
        let r = http
            .get(format!("{base}/v1/sessions/{gone_id}/timeline"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "nothing written back on {base}");
    }
    call.abort();
    println!("subject deleted through B while its call ran on A: the call was ended first");

    // Session 3, created on A, its call through B; A dies mid-call.
    let third = created_on_a[2].clone();
    let id3 = third["id"].as_str().unwrap().to_string();
    let call = connected_call(&http, &b_url, &key, &third).await;
    let mut a = a;
    a.child.kill().expect("SIGKILL node A");
    let _ = a.child.wait();
    let killed = Instant::now();
    let ended = wait_ended(
        &http,
        &b_url,
        &key,
        &id3,
        Duration::from_secs(NODE_LOST_SECS + 20),
    )
    .await;
    let took = killed.elapsed();
    println!(
        "node A killed mid-call: B ended the session {} after {:.1} s (node_lost_secs {NODE_LOST_SECS})",
        ended["end_reason"],
        took.as_secs_f64()
    );
    assert_eq!(ended["end_reason"], "node_lost");
    assert_eq!(ended["verdict"]["reasons"][0]["code"], "SESSION_INCOMPLETE");
    assert!(ended["signed_verdict"].is_string());
    let deadline = Instant::now() + Duration::from_secs(20);
    while hooks.for_session(&id3).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the webhook of the lost session is delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    call.abort();

    // The subject is deleted through B: A's frames go from the shared storage too.
    let r = delete_subject(&http, &b_url, &key, "user-cluster").await;
    println!("subject deleted through B: {r}");
    assert!(r["files_deleted"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(
        s3.keys("frames/").await,
        Vec::<String>::new(),
        "nothing left in S3"
    );
    b.server.shutdown(Duration::from_secs(1)).await;
}
