//! Shared harness: an in-process server on ephemeral ports with its own SQLite file.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use vericall::config::Config;
use vericall::server::{start, RunningServer};
use vericall::testkit::clip::{encode_pattern, encode_tone, EncodedVideo, VideoCodec};
use vericall::testkit::peer::VideoSource;

pub struct TestServer {
    pub server: RunningServer,
    pub api_key: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub struct CreatedSession {
    pub id: String,
    pub token: String,
    pub whip_url: String,
    pub events_url: String,
    pub page_url: String,
}

pub fn test_config() -> Config {
    Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        media_addr: "127.0.0.1:0".parse().unwrap(),
        // Most tests are about transport and capture; the face tests turn this on.
        face_analysis: false,
        models_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/models").into(),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(cfg: Config) -> TestServer {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let server = Self::boot(cfg, &dir).await;
        let api_key = server
            .created_api_key
            .clone()
            .expect("a fresh database gets a key");
        TestServer {
            server,
            api_key,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// A server on another database (PostgreSQL) with its own data folder.
    pub async fn start_on_database(cfg: Config, database_url: &str) -> TestServer {
        Self::start_with(Config {
            database_url: database_url.to_string(),
            ..cfg
        })
        .await
    }

    async fn boot(mut cfg: Config, dir: &tempfile::TempDir) -> RunningServer {
        if !cfg.database_url.starts_with("postgres") {
            cfg.database_url = format!("sqlite://{}/vericall.db?mode=rwc", dir.path().display());
        }
        cfg.data_dir = dir.path().display().to_string();
        let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/static");
        start(cfg, static_dir).await.expect("server starts")
    }

    /// A server on the database and data folder in `dir` that another process left behind.
    pub async fn start_in(cfg: Config, dir: tempfile::TempDir, api_key: String) -> TestServer {
        init_logs();
        let server = Self::boot(cfg, &dir).await;
        TestServer {
            server,
            api_key,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops this server and starts another on the same database and data folder (new ports).
    pub async fn restart(self, cfg: Config) -> TestServer {
        let TestServer {
            server,
            api_key,
            http,
            dir,
        } = self;
        server.shutdown(Duration::from_secs(1)).await;
        let server = Self::boot(cfg, &dir).await;
        TestServer {
            server,
            api_key,
            http,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url, path)
    }

    pub async fn create_session(&self) -> CreatedSession {
        self.create_session_with(serde_json::json!({ "subject": "test-user" }))
            .await
    }

    /// `POST /v1/sessions` with `body` (must be accepted).
    pub async fn create_session_with(&self, body: Value) -> CreatedSession {
        let resp = self
            .http
            .post(self.url("/v1/sessions"))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let v: Value = resp.json().await.unwrap();
        CreatedSession {
            id: v["id"].as_str().unwrap().into(),
            token: v["client_token"].as_str().unwrap().into(),
            whip_url: v["whip_url"].as_str().unwrap().into(),
            events_url: v["events_url"].as_str().unwrap().into(),
            page_url: v["page_url"].as_str().unwrap().into(),
        }
    }

    /// `GET path` with the API key (public endpoints ignore it), as JSON (any status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Ends a session from the client side before any call (a real `cancelled` verdict) and
    /// waits for the end to be recorded.
    pub async fn end_unused(&self, s: &CreatedSession) -> Value {
        let r = self
            .http
            .delete(&s.whip_url)
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        self.wait_session(&s.id, Duration::from_secs(5), |v| v["state"] == "ended")
            .await
    }

    pub async fn session(&self, id: &str) -> Value {
        let resp = self
            .http
            .get(self.url(&format!("/v1/sessions/{id}")))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Polls the session until `pred` holds (or panics after `timeout`).
    pub async fn wait_session(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.session(id).await;
            if pred(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting; last: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The persisted timeline once it contains an event of type `kind` (written asynchronously).
    pub async fn timeline_until(&self, id: &str, kind: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let events = self.timeline(id).await;
            if events.iter().any(|e| e["type"] == kind) || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn timeline(&self, id: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(self.url(&format!("/v1/sessions/{id}/timeline")))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["events"].as_array().unwrap().clone()
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,vericall=info".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// 640x480 VP8 at 15 fps, ~500 kbit/s, 4 s long (looped by the peers); encoded once per process.
pub fn vp8_clip() -> VideoSource {
    static CLIP: OnceLock<Arc<EncodedVideo>> = OnceLock::new();
    VideoSource::Encoded(
        CLIP.get_or_init(|| {
            Arc::new(encode_pattern(VideoCodec::Vp8, 640, 480, 15, 500, 60).unwrap())
        })
        .clone(),
    )
}

pub fn tone() -> Arc<Vec<Arc<[u8]>>> {
    static TONE: OnceLock<Arc<Vec<Arc<[u8]>>>> = OnceLock::new();
    TONE.get_or_init(|| Arc::new(encode_tone(50, 0.3).unwrap()))
        .clone()
}

/// Track summaries by kind from a session's `network` object.
pub fn track<'a>(session: &'a Value, kind: &str) -> &'a Value {
    session["network"]["tracks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} track in {session:#}"))
}

/// A sendonly offer from str0m (VP8 video and Opus audio), shaped as a browser's would be.
pub fn sendonly_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(std::time::Instant::now());
    rtc.add_local_candidate(
        str0m::Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap(),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

/// The server binary started with `config` (plus `envs`), from the repository root, without the
/// caller's `DATABASE_URL` or `VERICALL_CONFIG`. Returns the process and its stdout up to and
/// including the "vericall listening on" line; a thread keeps draining stdout afterwards, so the
/// server never writes to a closed pipe.
pub async fn start_server_binary(
    config: &std::path::Path,
    envs: &[(&'static str, String)],
) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vericall"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DATABASE_URL")
        .env_remove("VERICALL_CONFIG")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the server binary starts");
    let (found, found_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut head = Vec::new();
        let mut lines = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok);
        for line in lines.by_ref() {
            let listening = line.starts_with("vericall listening on ");
            head.push(line);
            if listening {
                let _ = found.send(std::mem::take(&mut head));
                break;
            }
        }
        lines.for_each(drop);
    });
    let head = tokio::task::spawn_blocking(move || {
        found_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server binary starts and prints its URL")
    })
    .await
    .unwrap();
    (child, head)
}
