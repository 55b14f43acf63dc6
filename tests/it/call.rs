//! A real WebRTC call from the str0m test peer into the server over loopback UDP.

use std::time::Duration;

use vericall::testkit::peer::{run_peer, PeerOptions};

use crate::common::{tone, track, vp8_clip, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_peer_connects_fast_and_every_frame_arrives() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    // Follow the events over SSE while the call runs, as a page without a data channel would.
    let sse = tokio::spawn(collect_sse(s.events_url.clone()));
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
    .expect("peer streams");
    let connect = report.connect_time.unwrap();
    assert!(connect < Duration::from_secs(1), "connected in {connect:?}");
    assert_eq!(report.delete_status, Some(200));
    let v = ts
        .wait_session(&s.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    assert_eq!(v["end_reason"], "deleted");
    let video = track(&v, "video");
    let audio = track(&v, "audio");
    let vf = video["frames"].as_u64().unwrap() as f64;
    let af = audio["frames"].as_u64().unwrap() as f64;
    println!(
        "sent video {} audio {}; server video {vf} audio {af}; connect {connect:?}",
        report.video_frames_sent, report.audio_packets_sent
    );
    assert!(
        vf >= 0.99 * report.video_frames_sent as f64,
        "video {vf} of {}",
        report.video_frames_sent
    );
    assert!(
        af >= 0.99 * report.audio_packets_sent as f64,
        "audio {af} of {}",
        report.audio_packets_sent
    );
    assert_eq!(video["codec"], "VP8");
    assert_eq!(video["loss_before_repair"], 0.0);
    // The data channel carried the session's events to the peer.
    let kinds: Vec<&str> = report
        .events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"network"),
        "events on the data channel: {kinds:?}"
    );
    // The whole timeline is persisted, in order, and ends with the session's end.
    let timeline = ts.timeline_until(&s.id, "session_ended").await;
    let kinds: Vec<&str> = timeline.iter().filter_map(|e| e["type"].as_str()).collect();
    for expected in [
        "session_created",
        "connecting",
        "connected",
        "track",
        "network",
        "call_ended",
        "session_ended",
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    let seqs: Vec<u64> = timeline
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless timeline: {seqs:?}"
    );
    let network = timeline.iter().filter(|e| e["type"] == "network").count();
    assert!(
        (3..=6).contains(&network),
        "one network event per second of a 4 s call: {network}"
    );
    let last = timeline
        .iter()
        .rev()
        .find(|e| e["type"] == "network")
        .unwrap();
    assert_eq!(last["quality"], "excellent", "{last}");
    let streamed = tokio::time::timeout(Duration::from_secs(5), sse)
        .await
        .unwrap()
        .unwrap();
    // Live-only events (the microphone's level, face observations) reach the page but are not
    // stored; everything else is the timeline, in order.
    let live_only = |k: &&str| matches!(*k, "audio_level" | "face");
    let streamed_kinds: Vec<&str> = streamed.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        streamed_kinds.contains(&"audio_level"),
        "{streamed_kinds:?}"
    );
    assert!(!kinds.iter().any(live_only), "{kinds:?}");
    let stored: Vec<&str> = streamed_kinds
        .into_iter()
        .filter(|k| !live_only(k))
        .collect();
    assert_eq!(stored, kinds, "SSE carries the same timeline");
    ts.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_webrtc_crate_peer_connects_and_streams() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let report = crate::webrtc_peer::run_webrtc_peer(&s.whip_url, &s.token, Duration::from_secs(4))
        .await
        .expect("webrtc-rs peer runs");
    assert!(report.connected, "webrtc-rs peer did not connect");
    let v = ts
        .wait_session(&s.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    let video = track(&v, "video");
    let frames = video["frames"].as_u64().unwrap();
    println!(
        "webrtc-rs sent {} video frames, {} audio; server got {frames} video, {} audio",
        report.video_frames_sent,
        report.audio_packets_sent,
        track(&v, "audio")["frames"]
    );
    assert!(
        report.video_frames_sent >= 20,
        "sender too slow to judge: {report:?}"
    );
    assert!(
        frames as f64 >= 0.9 * report.video_frames_sent as f64,
        "{frames} of {}",
        report.video_frames_sent
    );
    assert!(track(&v, "audio")["frames"].as_u64().unwrap() > 0);
    ts.server.shutdown(Duration::from_secs(2)).await;
}

/// Reads an SSE stream until `session_ended`, returning the events' JSON.
async fn collect_sse(url: String) -> Vec<serde_json::Value> {
    use futures_util::StreamExt;
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let v: serde_json::Value = serde_json::from_str(data).unwrap();
                    let done = v["type"] == "session_ended";
                    events.push(v);
                    if done {
                        return events;
                    }
                }
            }
        }
    }
    events
}
