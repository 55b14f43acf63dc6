//! The verification page in headless Chromium (driven by tests/browser/flow.mjs): pre-check,
//! call, guidance and result, at phone and laptop sizes, in English and Chinese. The camera is
//! either Chromium's fake device fed from a clip made with ffmpeg, or a rendered person who
//! reads the instruction on the page and performs it. Screenshots land in tests/artifacts/.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use vericall::testkit::actor::{idle, perform, FPS};

use crate::common::{test_config, track, TestServer};
use crate::face::stage;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn artifacts() -> PathBuf {
    let dir = repo().join("tests/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed by scripts/setup");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Clips made once per test process: a moving test pattern, a black picture (a covered lens),
/// a 440 Hz tone and silence, 4 s each (Chromium loops them).
struct Clips {
    _dir: tempfile::TempDir,
    pattern: PathBuf,
    black: PathBuf,
    tone: PathBuf,
    silence: PathBuf,
}

fn clips() -> &'static Clips {
    static CLIPS: OnceLock<Clips> = OnceLock::new();
    CLIPS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let video = |src: &str, out: &Path| {
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                src,
                "-t",
                "4",
                "-pix_fmt",
                "yuv420p",
                out.to_str().unwrap(),
            ])
        };
        let audio = |src: &str, out: &Path| {
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                src,
                "-t",
                "4",
                "-ar",
                "48000",
                "-ac",
                "1",
                out.to_str().unwrap(),
            ])
        };
        video("testsrc=size=640x480:rate=15", &p("pattern.y4m"));
        video("color=c=black:size=640x480:rate=15", &p("black.y4m"));
        audio("sine=frequency=440", &p("tone.wav"));
        audio("anullsrc=r=48000:cl=mono", &p("silence.wav"));
        Clips {
            pattern: p("pattern.y4m"),
            black: p("black.y4m"),
            tone: p("tone.wav"),
            silence: p("silence.wav"),
            _dir: dir,
        }
    })
}

/// The rendered person as JPEG frames the driver's canvas camera plays: an idle loop and one
/// clip per challenge action (the same motion the Rust test actors perform).
fn person_frames() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let st = stage();
        let write = |clip: &str, index: usize, edit: &vericall::testkit::render::FaceEdit| {
            let img = st.renderer.render(edit).0;
            let path = dir.path().join(clip).join(format!("{index:04}.jpg"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
                .unwrap()
                .save_with_format(&path, image::ImageFormat::Jpeg)
                .unwrap();
        };
        let mut clips = serde_json::Map::new();
        let idle_frames = 3 * FPS as usize;
        for i in 0..idle_frames {
            write("idle", i, &idle(i as u64));
        }
        clips.insert("idle".into(), idle_frames.into());
        // The actor's motion: react, ramp up, hold, ramp back by 2.5 s.
        let action_frames = (2.7 * FPS as f32) as usize;
        for action in [
            "turn_left",
            "turn_right",
            "look_up",
            "look_down",
            "blink",
            "open_mouth",
            "move_closer",
        ] {
            for i in 0..action_frames {
                let t = i as f32 / FPS as f32;
                write(action, i, &perform(action, t, i as u64));
            }
            clips.insert(action.into(), action_frames.into());
        }
        // Reading the digits aloud: the lips open with each syllable (testkit::voice::speaking;
        // the driver's --speaker microphone voices the same syllables).
        let speak_frames = 3 * FPS as usize;
        for i in 0..speak_frames {
            let t = i as f32 / FPS as f32;
            write("speak_digits", i, &perform("speak_digits", t, i as u64));
        }
        clips.insert("speak_digits".into(), speak_frames.into());
        // Where the idle face is (an ellipse around the mesh), for the camera's reflection of
        // the page's light.
        let landmarks = st.renderer.render(&idle(0)).1;
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in &landmarks {
            (x0, y0, x1, y1) = (x0.min(p[0]), y0.min(p[1]), x1.max(p[0]), y1.max(p[1]));
        }
        let face = [(x0 + x1) / 2.0, (y0 + y1) / 2.0, (x1 - x0) * 0.55, (y1 - y0) * 0.58];
        let manifest = serde_json::json!({ "fps": FPS, "width": 640, "height": 480, "clips": clips, "face": face });
        std::fs::write(
            dir.path().join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        dir
    })
    .path()
}

/// Runs the driver; returns its JSON report (and asserts it exited 0).
async fn flow(url: &str, args: &[&str]) -> Value {
    let driver = repo().join("tests/browser/flow.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(driver)
        .args(["--url", url])
        .args(args)
        .current_dir(repo());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("node runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("driver: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("driver printed no JSON ({e}): {stdout}"));
    assert!(out.status.success(), "browser flow failed: {report}");
    assert_eq!(
        report["consoleErrors"],
        serde_json::json!([]),
        "console errors"
    );
    report
}

fn shots(name: &str) -> String {
    artifacts().join(name).display().to_string()
}

async fn face_server() -> TestServer {
    TestServer::start_with(vericall::config::Config {
        face_analysis: true,
        ..test_config()
    })
    .await
}

fn codes(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["code"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The driver's microphone: reads the digits aloud when asked, a quiet room after noise
/// suppression (-70 dBFS) the rest of the time. (One argument: a value starting with "-" would
/// read as an option.)
const SPEAKER: &str = "--speaker=-70";

/// A person who follows the instructions on the page passes; the page and the server agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_following_the_page_passes_at_laptop_size() {
    let frames = person_frames();
    let ts = face_server().await;
    let s = ts.create_session().await;
    let report = flow(
        &s.page_url,
        &[
            "--camera-dir",
            frames.to_str().unwrap(),
            SPEAKER,
            "--viewport",
            "1280x800",
            "--lang",
            "en",
            "--timeout",
            "100",
            "--screens",
            &shots("page-1280x800-en"),
        ],
    )
    .await;
    let challenges = report["challenges"].as_array().unwrap().len();
    println!(
        "page: result {} after challenges {}, events over {}",
        report["result"], report["challenges"], report["transport"]
    );
    let v = ts
        .wait_session(&s.id, Duration::from_secs(20), |v| v["state"] == "ended")
        .await;
    println!("server verdict: {}", v["verdict"]);
    assert_eq!(report["result"]["status"], "passed", "{report}");
    assert!(challenges >= 2, "the page showed {challenges} challenges");
    assert_eq!(report["shown"]["title"], "Verification passed");
    assert_eq!(report["shown"]["retry"], false);
    assert_eq!(
        report["screens"],
        serde_json::json!(["precheck", "call", "result"])
    );
    assert_eq!(v["verdict"]["status"], "passed", "server verdict: {v:#}");
    // The result screen shows the support reference the relying party sees.
    assert_eq!(report["shown"]["supportRef"], v["support_ref"], "{report}");
    // The page painted the colours the server sent, in order (neutral first and last).
    let timeline = ts.timeline(&s.id).await;
    let sent: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["type"] == "challenge" && e["action"] == "screen_light")
        .collect();
    let last = sent.last().expect("a screen-light step was announced");
    assert_eq!(report["light"]["id"], last["id"], "{report}");
    assert_eq!(report["light"]["sequence"], last["light"]);
    let mut expected = vec![last["light"]["neutral"].clone()];
    expected.extend(
        last["light"]["colours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["rgb"].clone()),
    );
    expected.push(last["light"]["neutral"].clone());
    assert_eq!(
        report["light"]["painted"],
        Value::Array(expected),
        "{report}"
    );
    assert_eq!(
        v["verdict"]["scores"]["screen_light"]["result"], "matched",
        "{v:#}"
    );
    // Video reached the server; how many frames depends on how fast the person was (a pass in
    // 6 s is under 100 frames at 15 fps), so only the outcome above is asserted.
    assert!(track(&v, "video")["frames"].as_u64().unwrap() > 0);
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A covered camera ends with the CAMERA_BLACK hint on the result screen; the phone-sized
/// Chinese page has no untranslated text on any screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_camera_ends_with_its_hint_on_a_phone_in_chinese() {
    let ts = face_server().await;
    let s = ts.create_session().await;
    let c = clips();
    let report = flow(
        &s.page_url,
        &[
            "--video",
            c.black.to_str().unwrap(),
            "--audio",
            c.tone.to_str().unwrap(),
            "--viewport",
            "360x640",
            "--lang",
            "zh-CN",
            "--timeout",
            "60",
            "--screens",
            &shots("page-360x640-zh-CN"),
        ],
    )
    .await;
    assert_eq!(report["result"]["status"], "failed", "{report}");
    assert_eq!(
        report["shown"]["reasons"][0]["code"], "CAMERA_BLACK",
        "{report}"
    );
    let hint = vericall::reasons::ReasonCode::CameraBlack.info().hint_zh;
    assert_eq!(report["shown"]["reasons"][0]["text"], hint);
    assert_eq!(report["shown"]["retry"], true, "CAMERA_BLACK is retryable");
    assert_eq!(report["shown"]["lang"], "zh-CN");
    // The pre-check lists what the deployment asks for (GET /v1/requirements), in Chinese.
    let requirements = report["requirements"]
        .as_array()
        .expect("requirements listed");
    assert_eq!(requirements.len(), 7, "{report}");
    assert!(
        requirements[1].as_str().unwrap().contains("摄像头"),
        "{report}"
    );
    assert_eq!(
        report["untranslated"],
        serde_json::json!([]),
        "untranslated text on the zh-CN page"
    );
    assert_eq!(
        report["missingKeys"],
        serde_json::json!([]),
        "strings missing in a language"
    );
    let v = ts
        .wait_session(&s.id, Duration::from_secs(20), |v| v["state"] == "ended")
        .await;
    assert_eq!(codes(&v["verdict"]["reasons"])[0], "CAMERA_BLACK", "{v:#}");

    // The result screen shows the support reference the relying party sees, and customer
    // service finds this session by it in the review console (typed as a caller reads it out).
    let support_ref = report["shown"]["supportRef"]
        .as_str()
        .expect("a support reference");
    assert_eq!(v["support_ref"], support_ref, "{v:#}");
    assert_eq!(v["verdict"]["support_ref"], support_ref, "{v:#}");
    ts.server
        .registry
        .store()
        .insert_operator(
            "cs",
            &vericall::api::review::hash_password("customer service desk"),
            1,
        )
        .await
        .unwrap();
    let typed = support_ref.replace('-', " ").to_lowercase();
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/review.mjs");
    let (base, sid) = (ts.server.base_url.clone(), s.id.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(driver)
            .args([
                "--url",
                &base,
                "--username",
                "cs",
                "--password",
                "customer service desk",
            ])
            .args(["--session", &sid, "--decision", "none", "--find", &typed])
            .args(["--locale", "zh-CN"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let console: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert!(
        out.status.success(),
        "review console lookup failed: {console} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(console["found"]["id"], s.id.as_str(), "{console}");
    assert_eq!(console["found"]["reasons"][0], "CAMERA_BLACK", "{console}");
    // The person-facing hint next to the evidence, in the caller's language too.
    assert!(
        console["found"]["hints"]
            .as_array()
            .is_some_and(|h| h.iter().any(|t| t == hint)),
        "{console}"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// The spoken step in Chinese: the page shows the server's digits in the person's language, the
/// WebAudio microphone reads them aloud (silent at -70 dBFS the rest of the time) while the
/// lips move, and the call passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_reads_the_digits_aloud_passes_in_chinese() {
    let frames = person_frames();
    let ts = face_server().await;
    let s = ts.create_session().await;
    let report = flow(
        &s.page_url,
        &[
            "--camera-dir",
            frames.to_str().unwrap(),
            SPEAKER,
            "--viewport",
            "360x640",
            "--lang",
            "zh-CN",
            "--timeout",
            "100",
            "--screens",
            &shots("page-360x640-zh-CN-speak"),
        ],
    )
    .await;
    let v = ts
        .wait_session(&s.id, Duration::from_secs(20), |v| v["state"] == "ended")
        .await;
    let timeline = ts.timeline(&s.id).await;
    let asked = timeline
        .iter()
        .find(|e| e["type"] == "challenge" && e["action"] == "speak_digits")
        .expect("the spoken step was asked");
    println!(
        "spoken prompt {:?}; server verdict {}",
        report["spoken"], v["verdict"]
    );
    let digits = asked["digits"].as_str().unwrap();
    assert_eq!(
        report["spoken"].as_str(),
        Some(format!("请大声读出这些数字：{digits}").as_str()),
        "{report}"
    );
    assert_eq!(report["result"]["status"], "passed", "{report}");
    assert_eq!(v["verdict"]["status"], "passed", "server verdict: {v:#}");
    assert!(!codes(&v["verdict"]["reasons"]).contains(&"MIC_SILENT".to_string()));
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A silent microphone shows the MIC_SILENT hint during the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_microphone_shows_its_hint() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let c = clips();
    let report = flow(
        &s.page_url,
        &[
            "--video",
            c.pattern.to_str().unwrap(),
            "--audio",
            c.silence.to_str().unwrap(),
            "--viewport",
            "360x640",
            "--lang",
            "en",
            "--until",
            "hint:MIC_SILENT",
            "--timeout",
            "40",
            "--screens",
            &shots("page-360x640-en"),
        ],
    )
    .await;
    let shown = report["shown"]["hints"].as_array().unwrap();
    let mic = shown
        .iter()
        .find(|h| h["code"] == "MIC_SILENT")
        .expect("MIC_SILENT on screen");
    assert_eq!(
        mic["text"],
        vericall::reasons::ReasonCode::MicSilent.info().hint_en
    );
    let timeline = ts.timeline_until(&s.id, "guidance").await;
    assert!(
        timeline
            .iter()
            .any(|e| e["type"] == "guidance" && e["code"] == "MIC_SILENT" && e["active"] == true),
        "server raised MIC_SILENT"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// Camera permission denied: the page shows the permission hint with a retry, and the server
/// records PERMISSION_DENIED (and gives it as the reason when the session ends unused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_permission_is_shown_and_recorded() {
    let ts = TestServer::start().await;
    // zh-CN from the browser's language alone; en forced with ?lang= over a Chinese browser.
    for (lang, size, how) in [
        ("zh-CN", "360x640", "--locale"),
        ("en", "1280x800", "--lang"),
    ] {
        let s = ts.create_session().await;
        let report = flow(
            &s.page_url,
            &[
                "--deny",
                "--viewport",
                size,
                "--locale",
                "zh-CN",
                how,
                lang,
                "--timeout",
                "30",
                "--screens",
                &shots(&format!("page-{size}-{lang}-denied")),
            ],
        )
        .await;
        assert_eq!(report["deviceFailure"], "PERMISSION_DENIED", "{report}");
        let info = vericall::reasons::ReasonCode::PermissionDenied.info();
        let hint = if lang == "en" {
            info.hint_en
        } else {
            info.hint_zh
        };
        assert_eq!(report["shown"]["reasons"][0]["code"], "PERMISSION_DENIED");
        assert_eq!(report["shown"]["reasons"][0]["text"], hint);
        assert_eq!(report["shown"]["retry"], true);
        assert_eq!(report["untranslated"], serde_json::json!([]));
        assert_eq!(report["shown"]["lang"], lang);
        let v = ts.session(&s.id).await;
        assert_eq!(
            v["device_failures"],
            serde_json::json!(["PERMISSION_DENIED"])
        );
        assert_eq!(v["state"], "created", "the session stays open for a retry");
        let timeline = ts.timeline_until(&s.id, "device_failure").await;
        let e = timeline
            .iter()
            .find(|e| e["type"] == "device_failure")
            .expect("device_failure in the timeline");
        assert_eq!(e["code"], "PERMISSION_DENIED");
        assert_eq!(e["detail"], "NotAllowedError");
        // Ended unused (the person gave up): the verdict says why.
        let v = ts.end_unused(&s).await;
        assert_eq!(
            codes(&v["verdict"]["reasons"])[0],
            "PERMISSION_DENIED",
            "{v:#}"
        );
    }
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A UDP forwarder the page's media goes through (the server advertises its address), which can
/// black out both directions completely, STUN included, like a phone losing its network.
struct Blackout {
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Datagrams dropped while blocked, and page-to-server datagrams forwarded.
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    forwarded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackout {
    async fn start(bind: std::net::SocketAddr, server: std::net::SocketAddr) -> Blackout {
        use std::sync::atomic::{AtomicBool, Ordering};
        let outer = tokio::net::UdpSocket::bind(bind)
            .await
            .expect("bind 127.0.0.2");
        let inner = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        inner.connect(server).await.unwrap();
        let blocked = std::sync::Arc::new(AtomicBool::new(false));
        let flag = blocked.clone();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let drops = dropped.clone();
        let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let passed = forwarded.clone();
        let task = tokio::spawn(async move {
            let mut client: Option<std::net::SocketAddr> = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = outer.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { continue };
                        // The page's address can change with an ICE restart: follow the latest.
                        client = Some(from);
                        if !flag.load(Ordering::Relaxed) {
                            let _ = inner.send(&a[..n]).await;
                            passed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            drops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    r = inner.recv(&mut b) => {
                        let Ok(n) = r else { continue };
                        if let (Some(to), false) = (client, flag.load(Ordering::Relaxed)) {
                            let _ = outer.send_to(&b[..n], to).await;
                        } else {
                            drops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Blackout {
            blocked,
            dropped,
            forwarded,
            task,
        }
    }

    fn set(&self, on: bool) {
        self.blocked.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Blackout {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The network drops completely for 12 s after the first step passed: the page restarts ICE over
/// WHIP PATCH, the call continues on the same session and the person still passes, the step done
/// before the drop counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_restarts_ice_after_a_network_drop_and_keeps_its_progress() {
    let frames = person_frames();
    let ts = TestServer::start_with(vericall::config::Config {
        face_analysis: true,
        // The media path is through the forwarder at 127.0.0.2 (same port as the server's).
        public_ip: Some("127.0.0.2".parse().unwrap()),
        idle_timeout_secs: 30,
        reconnect_grace_secs: 30,
        ..test_config()
    })
    .await;
    let media = ts.server.media_addr;
    let forwarder = Blackout::start(
        std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), media.port()),
        media,
    )
    .await;
    let s = ts.create_session().await;
    let url = s.page_url.clone();
    let frames = frames.to_path_buf();
    let page = tokio::spawn(async move {
        flow(
            &url,
            &[
                "--camera-dir",
                frames.to_str().unwrap(),
                SPEAKER,
                "--timeout",
                "120",
                "--hide-client-candidates",
                "--screens",
                &shots("page-1280x800-en-reconnect"),
            ],
        )
        .await
    });
    // Wait for the first passed step, then drop everything for 9 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = ts.timeline(&s.id).await;
        if t.iter().any(|e| e["type"] == "challenge_passed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no step passed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "forwarded before the blackout: {}",
        forwarder
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    // Long enough that the browser reports the connection lost (about 5 s without answers) and
    // the page's restart (2.5 s later) happens while the network is still down.
    forwarder.set(true);
    tokio::time::sleep(Duration::from_secs(12)).await;
    forwarder.set(false);
    let dropped = forwarder.dropped.load(std::sync::atomic::Ordering::Relaxed);
    println!("blackout dropped {dropped} datagrams");
    assert!(dropped > 100, "the media did not go through the forwarder");
    let report = page.await.unwrap();
    let v = ts
        .wait_session(&s.id, Duration::from_secs(30), |v| v["state"] == "ended")
        .await;
    let timeline = ts.timeline(&s.id).await;
    let kinds: Vec<&str> = timeline
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|k| {
            k.starts_with("challenge") || *k == "ice_restart" || k.starts_with("connection")
        })
        .collect();
    println!("reconnect: {kinds:?}; verdict {}", v["verdict"]);
    assert!(
        kinds.contains(&"ice_restart"),
        "the page restarted ICE: {kinds:?}"
    );
    assert_eq!(report["result"]["status"], "passed", "{report}");
    assert_eq!(v["verdict"]["status"], "passed", "{v:#}");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A practice run (issue 20), in Chinese: the page labels it, ends on its own result screen with
/// what to fix, and nothing of it counts: the relying party gets no verdict (only that a practice
/// run happened and how it went), the subject's list and failed attempts are unchanged, and no
/// evidence file exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_run_in_chinese_ends_on_its_own_screen_and_counts_for_nothing() {
    let ts = face_server().await;
    let subject = "practising-user";
    let s = ts
        .create_session_with(serde_json::json!({ "subject": subject, "mode": "practice" }))
        .await;
    assert!(s.page_url.contains("mode=practice"), "{}", s.page_url);
    let c = clips();
    let report = flow(
        &s.page_url,
        &[
            "--video",
            c.black.to_str().unwrap(),
            "--audio",
            c.tone.to_str().unwrap(),
            "--viewport",
            "360x640",
            "--lang",
            "zh-CN",
            "--timeout",
            "60",
            "--screens",
            &shots("practice-360x640-zh-CN"),
        ],
    )
    .await;
    assert_eq!(report["result"]["status"], "failed", "{report}");
    assert_eq!(report["shown"]["title"], "练习结束", "{report}");
    assert_eq!(
        report["shown"]["reasons"][0]["code"], "CAMERA_BLACK",
        "{report}"
    );
    assert_eq!(report["untranslated"], serde_json::json!([]), "{report}");
    assert_eq!(report["missingKeys"], serde_json::json!([]), "{report}");

    let v = ts
        .wait_session(&s.id, Duration::from_secs(20), |v| v["state"] == "ended")
        .await;
    assert_eq!(v["mode"], "practice", "{v:#}");
    assert!(
        v["verdict"].is_null() && v["signed_verdict"].is_null(),
        "{v:#}"
    );
    assert_eq!(v["practice_outcome"]["status"], "failed", "{v:#}");
    assert_eq!(v["practice_outcome"]["reasons"][0], "CAMERA_BLACK", "{v:#}");
    let listed = ts
        .get_json(&format!("/v1/sessions?subject={subject}"))
        .await;
    assert_eq!(listed["sessions"], serde_json::json!([]), "{listed}");
    let failed = ts
        .server
        .registry
        .store()
        .count_failed_attempts(v["api_key_id"].as_str().unwrap(), subject, 0)
        .await
        .unwrap();
    assert_eq!(failed, 0);
    assert!(!ts.dir.path().join("evidence").join(&s.id).exists());
    let practice = ts
        .get_json(&format!("/v1/subjects/{subject}/practice"))
        .await;
    assert_eq!(practice["runs"], 1, "{practice}");
    assert_eq!(
        practice["last"]["outcome"]["status"], "failed",
        "{practice}"
    );
    ts.server.shutdown(Duration::from_secs(1)).await;
}
