//! The spoken step end to end: a rendered person reads the server's digits aloud over real
//! WebRTC (a synthetic voice, Opus-encoded, lips in step with it), in a quiet room the rest of
//! the time; a muted microphone and a voice played over still lips do not pass.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vericall::testkit::actor::{live_person, live_person_with_still_lips};
use vericall::testkit::peer::PeerOptions;
use vericall::testkit::voice::{muted_microphone, speaking_person};

use crate::face::stage;
use crate::liveness::{call_with, server, verdict, ROOM_DBFS};

/// The spoken step's events in a timeline: its announcement and how it ended.
fn spoken_step(timeline: &[Value]) -> (Option<&Value>, Option<&Value>) {
    let asked = timeline
        .iter()
        .find(|e| e["type"] == "challenge" && e["action"] == "speak_digits");
    let ended = asked.and_then(|a| {
        timeline.iter().find(|e| {
            (e["type"] == "challenge_passed" || e["type"] == "challenge_failed")
                && e["id"] == a["id"]
        })
    });
    (asked, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_reads_the_digits_passes_and_a_quiet_room_is_no_fault() {
    let ts = server().await;
    let s = ts.create_session().await;
    let options = PeerOptions {
        video: Some(live_person(
            stage().clone(),
            Arc::new(Mutex::new(Vec::new())),
        )),
        voice: Some(speaking_person(ROOM_DBFS)),
        duration: Duration::from_secs(45),
        ..PeerOptions::default()
    };
    let (_, v, timeline) = call_with(&ts, &s, options).await;
    let (asked, ended) = spoken_step(&timeline);
    println!(
        "speaking: {:?}; asked {asked:?}; ended {ended:?}",
        verdict(&v)
    );
    assert_eq!(verdict(&v), ("passed", vec![]), "{:#}", v["verdict"]);
    let asked = asked.expect("the spoken step was asked");
    let digits = asked["digits"]
        .as_str()
        .expect("digits revealed with the step");
    assert_eq!(digits.split(' ').count(), 4, "{digits}");
    assert!(digits
        .split(' ')
        .all(|d| d.len() == 1 && d.as_bytes()[0].is_ascii_digit()));
    assert_eq!(ended.unwrap()["type"], "challenge_passed");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_microphone_fails_mic_silent() {
    let ts = server().await;
    let s = ts.create_session().await;
    let options = PeerOptions {
        video: Some(live_person(
            stage().clone(),
            Arc::new(Mutex::new(Vec::new())),
        )),
        voice: Some(muted_microphone()),
        duration: Duration::from_secs(45),
        ..PeerOptions::default()
    };
    let (_, v, _) = call_with(&ts, &s, options).await;
    println!("muted: {:?}", verdict(&v));
    let (status, codes) = verdict(&v);
    assert_eq!(status, "failed");
    assert!(codes.contains(&"MIC_SILENT"), "{codes:?}");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_played_over_still_lips_does_not_pass_the_spoken_step() {
    let ts = server().await;
    let s = ts.create_session().await;
    let options = PeerOptions {
        video: Some(live_person_with_still_lips(stage().clone())),
        voice: Some(speaking_person(ROOM_DBFS)),
        duration: Duration::from_secs(45),
        ..PeerOptions::default()
    };
    let (_, v, timeline) = call_with(&ts, &s, options).await;
    let (_, ended) = spoken_step(&timeline);
    println!("played voice: {:?}; spoken step {ended:?}", verdict(&v));
    let (status, codes) = verdict(&v);
    assert_ne!(status, "passed");
    assert_eq!(
        ended.expect("the spoken step ended")["type"],
        "challenge_failed"
    );
    assert!(codes.contains(&"SPEECH_NOT_MATCHED"), "{codes:?}");
    assert!(!codes.contains(&"MIC_SILENT"), "{codes:?}");
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A session that does not want audio gets no spoken step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_audio_is_never_asked_to_speak() {
    let ts = server().await;
    let s = ts
        .create_session_with(serde_json::json!({ "audio": false }))
        .await;
    let options = PeerOptions {
        video: Some(live_person(
            stage().clone(),
            Arc::new(Mutex::new(Vec::new())),
        )),
        duration: Duration::from_secs(45),
        ..PeerOptions::default()
    };
    let (_, v, timeline) = call_with(&ts, &s, options).await;
    println!("no audio: {:?}", verdict(&v));
    assert_eq!(verdict(&v), ("passed", vec![]), "{:#}", v["verdict"]);
    assert_eq!(spoken_step(&timeline).0, None);
    ts.server.shutdown(Duration::from_secs(1)).await;
}
