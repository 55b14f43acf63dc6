//! Headless Chromium joins through the page in static/, with a fake camera fed from a y4m clip
//! (generated with ffmpeg), and the server receives and counts its frames.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{track, TestServer};

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

/// A moving test pattern (y4m) and a tone (wav), 4 s each.
fn make_clips(dir: &Path) -> (PathBuf, PathBuf) {
    let video = dir.join("testsrc.y4m");
    let audio = dir.join("tone.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x480:rate=15",
        "-t",
        "4",
        "-pix_fmt",
        "yuv420p",
        video.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=4",
        "-ar",
        "48000",
        "-ac",
        "1",
        audio.to_str().unwrap(),
    ]);
    (video, audio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_publishes_through_the_page() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let dir = tempfile::tempdir().unwrap();
    let (video, audio) = make_clips(dir.path());
    let driver = repo().join("tests/browser/publish.mjs");
    let shot = artifacts().join("publish-connected.png");
    let url = s.page_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(driver)
            .args([
                "--url",
                &url,
                "--video",
                video.to_str().unwrap(),
                "--audio",
                audio.to_str().unwrap(),
            ])
            .args(["--seconds", "5", "--screenshot", shot.to_str().unwrap()])
            .current_dir(repo())
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("driver: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert!(out.status.success(), "browser driver failed: {result}");
    assert_eq!(result["state"], "connected");
    assert!(
        result["eventsReceived"].as_u64().unwrap() > 0,
        "the page got no events"
    );
    // The page's unload sends DELETE; either way the call ends.
    let v = ts
        .wait_session(&s.id, Duration::from_secs(20), |v| v["state"] == "ended")
        .await;
    let video = track(&v, "video");
    let frames = video["frames"].as_u64().unwrap();
    println!(
        "chromium: server received {frames} video frames, codec {}",
        video["codec"]
    );
    assert!(frames >= 30, "too few frames from Chromium: {frames}");
    assert!(["VP8", "VP9", "H264"].contains(&video["codec"].as_str().unwrap()));
    ts.server.shutdown(Duration::from_secs(1)).await;
}
