//! The network monitor against ground truth: a seeded impairment relay between the peer and the
//! server drops and delays packets, and the server's numbers must match what the relay did.

use std::collections::HashSet;
use std::time::Duration;

use vericall::testkit::peer::{run_peer, PeerOptions};

use crate::common::{tone, track, vp8_clip, TestServer};
use crate::relay::{ImpairmentConfig, Relay, RelayLog};

/// Fraction of a stream's original packets (first copy of each seq) that the relay dropped,
/// over the whole stream (impaired or not), as the server sees the whole stream.
fn dropped_fraction(log: &RelayLog, ssrc: u32) -> (u64, u64) {
    let mut seen = HashSet::new();
    let (mut total, mut dropped) = (0u64, 0u64);
    for r in &log.records {
        let Some(rtp) = r.rtp else { continue };
        if rtp.ssrc != ssrc || r.duplicated || !seen.insert(rtp.seq) {
            continue;
        }
        total += 1;
        dropped += u64::from(r.sent_at.is_none());
    }
    (dropped, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_and_jitter_match_the_relays_ground_truth() {
    let ts = TestServer::start().await;
    let s = ts.create_session().await;
    let relay = Relay::start(
        ts.server.media_addr,
        ImpairmentConfig {
            loss: 0.05,
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(20),
            seed: 7,
            impair_after: Duration::from_millis(1500),
            ..ImpairmentConfig::default()
        },
    )
    .await
    .unwrap();
    let report = run_peer(
        &s.whip_url,
        &s.token,
        PeerOptions {
            video: Some(vp8_clip()),
            audio: Some(tone()),
            duration: Duration::from_secs(10),
            via: Some(relay.local_addr()),
            ..PeerOptions::default()
        },
    )
    .await
    .expect("peer streams through the relay");
    assert_eq!(report.delete_status, Some(200));
    let v = ts
        .wait_session(&s.id, Duration::from_secs(5), |v| v["state"] == "ended")
        .await;
    let log = relay.log();
    relay.stop().await;

    // Audio is Opus (pt 111); the video primary stream is the busiest other SSRC (RTX has fewer).
    let ssrcs = log.ssrcs();
    let audio_ssrc = ssrcs.iter().find(|(_, pt, _)| *pt == 111).unwrap().0;
    let video_ssrc = ssrcs
        .iter()
        .filter(|(_, pt, _)| *pt != 111)
        .max_by_key(|(_, _, n)| *n)
        .unwrap()
        .0;
    for (kind, ssrc, clock) in [("video", video_ssrc, 90_000), ("audio", audio_ssrc, 48_000)] {
        let t = track(&v, kind);
        let (dropped, total) = dropped_fraction(&log, ssrc);
        let truth_loss = dropped as f64 / total as f64;
        let measured_loss = t["loss_before_repair"].as_f64().unwrap();
        let truth_jitter = log.jitter_ms(ssrc, clock);
        let measured_jitter = t["jitter_ms"].as_f64().unwrap();
        println!(
            "{kind}: loss truth {:.4} ({dropped}/{total}) measured {measured_loss:.4}, after repair {}; jitter truth {truth_jitter:.2} ms measured {measured_jitter:.2} ms",
            truth_loss, t["loss_after_repair"]
        );
        assert!(
            total > 300,
            "{kind}: too few packets ({total}) for a meaningful check"
        );
        assert!(
            (measured_loss - truth_loss).abs() <= 0.01,
            "{kind} loss {measured_loss} vs truth {truth_loss}"
        );
        assert!(
            (measured_jitter - truth_jitter).abs() <= 0.25 * truth_jitter,
            "{kind} jitter {measured_jitter} vs truth {truth_jitter}"
        );
    }
    // NACK repair: the server asked for every lost video packet and the sender's retransmissions
    // reached it. (How many frames str0m then completes varies from run to run under this much
    // jitter, 0-5% unrecovered: it is printed, not asserted.)
    let video = track(&v, "video");
    let (lost_video, _) = dropped_fraction(&log, video_ssrc);
    let nacks = video["nacks_sent"].as_u64().unwrap();
    let repairs = video["repairs_received"].as_u64().unwrap();
    println!(
        "video repair: {lost_video} packets lost, nacks {nacks}, repairs {repairs}, loss before {} after {}",
        video["loss_before_repair"], video["loss_after_repair"]
    );
    assert!(
        nacks >= lost_video,
        "{nacks} NACKed packets for {lost_video} lost"
    );
    assert!(
        repairs as f64 >= 0.6 * lost_video as f64,
        "only {repairs} repairs for {lost_video} lost packets"
    );
    ts.server.shutdown(Duration::from_secs(2)).await;
}
