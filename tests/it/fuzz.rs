//! Bounded mutational fuzzing of what a hostile client controls byte by byte: the media port's
//! datagram classifier, clear RTP header and STUN readers, the WHIP offer checks (and str0m's
//! parser and answerer behind them), trickle-ICE sdpfrags, the codec-header readers and the
//! video and Opus decoders. Each target starts from valid inputs and mutates them (bit flips,
//! byte changes, boundary values, truncation, duplication, splices) with a seeded generator, so
//! a run is reproducible; an input that panics is printed in hex with the target's name.
//!
//! cargo-fuzz needs a nightly toolchain, which the build machines do not have; this harness runs
//! on stable, in `make test` at its default size. Longer runs:
//!
//!     FUZZ_ITERATIONS=20 FUZZ_SEED=7 cargo test --test it fuzz:: -- --nocapture
//!
//! (`FUZZ_ITERATIONS` multiplies every target's count; `FUZZ_SEED` picks another sequence.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::change::SdpOffer;
use str0m::IceCreds;

use vericall::media::decode::{
    is_opus_dtx, vpx_is_keyframe, AudioDecoder, DecodedFrame, VideoCodec, VideoDecoder,
};
use vericall::media::{peer, sdp, wire};

/// Inputs tried per target at the default size (times `FUZZ_ITERATIONS`).
fn iterations(base: usize) -> usize {
    let times: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    base * times.max(1)
}

fn rng(target: &str) -> StdRng {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let salt = target
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64);
    StdRng::seed_from_u64(seed ^ salt)
}

/// One mutation of `input` (in place): what a fuzzer's havoc stage does.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b':'];
    let rounds = 1 + rng.gen_range(0..4);
    for _ in 0..rounds {
        let len = input.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = rng.gen();
            }
            2 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            3 if len > 0 => input.truncate(rng.gen_range(0..len)),
            4 if len > 0 => {
                // Duplicate a range (repeated headers, lines, extensions).
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=64)).min(len);
                let piece = input[a..b].to_vec();
                let at = rng.gen_range(0..=len);
                input.splice(at..at, piece);
            }
            5 => {
                let n = rng.gen_range(1..=16);
                let at = rng.gen_range(0..=len);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(at..at, bytes);
            }
            6 if len > 0 => {
                // Remove a range.
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=64)).min(len);
                input.drain(a..b);
            }
            _ => {
                // Splice with another seed.
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() && len > 0 {
                    let cut = rng.gen_range(0..len);
                    let from = rng.gen_range(0..other.len());
                    input.truncate(cut);
                    input.extend_from_slice(&other[from..]);
                }
            }
        }
    }
}

/// Runs `target` on `n` mutants of `seeds` (and the seeds themselves); fails with the first input
/// that panics.
fn fuzz(name: &str, seeds: &[Vec<u8>], n: usize, mut target: impl FnMut(&[u8])) {
    let mut rng = rng(name);
    let started = Instant::now();
    let n = iterations(n);
    for seed in seeds {
        target(seed);
    }
    for i in 0..n {
        let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
        mutate(&mut rng, &mut input, seeds);
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{name}: input {i} panicked: {hex}");
        }
    }
    println!(
        "{name}: {n} inputs in {:.1} s, no panic",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn datagram_readers_survive_mutated_packets() {
    let request = wire::signed_binding_request("abcd:efgh", "password-of-22-chars!!", [7; 12]);
    let mut rtp = vec![
        0x90, 0x60, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef,
    ];
    rtp.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
    rtp.extend_from_slice(&[0x55; 40]);
    let rtcp = vec![
        0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let dtls = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let seeds = vec![request, rtp, rtcp, dtls];
    fuzz("datagrams", &seeds, 1_000_000, |d| {
        let _ = wire::classify(d);
        let _ = wire::parse_rtp_header(d);
        let _ = wire::stun_local_ufrag(d);
        let _ = wire::stun_transaction_id(d);
        let _ = wire::stun_integrity_ok(d, "password-of-22-chars!!");
    });
}

#[test]
fn offer_checks_and_the_answerer_survive_mutated_offers() {
    let seeds = vec![crate::common::sendonly_offer().into_bytes()];
    fuzz("offers", &seeds, 20_000, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let _ = sdp::offers_audio(&text);
        let _ = sdp::ice_credentials(&text);
        // What the WHIP handler does with an offer that passes the checks.
        if let Ok(checked) = sdp::check_offer(&text) {
            if let Ok(parsed) = SdpOffer::from_sdp_string(&checked) {
                let mut rtc = peer::server_rtc(IceCreds::new(), Instant::now());
                let _ = rtc.sdp_api().accept_offer(parsed);
            }
        }
    });
}

#[test]
fn sdpfrag_parsing_survives_mutated_fragments() {
    let frag = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\n\
                a=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n\
                a=end-of-candidates\r\n";
    let seeds = vec![frag.as_bytes().to_vec()];
    fuzz("sdpfrags", &seeds, 200_000, |bytes| {
        let _ = sdp::parse_fragment(&String::from_utf8_lossy(bytes));
    });
}

#[test]
fn codec_readers_and_decoders_survive_mutated_frames() {
    let clip = vericall::testkit::clip::encode_pattern(
        vericall::testkit::clip::VideoCodec::Vp8,
        160,
        120,
        15,
        300,
        3,
    )
    .unwrap();
    let video: Vec<Vec<u8>> = clip.frames.iter().map(|f| f.data.to_vec()).collect();
    let mut decoder = VideoDecoder::new(VideoCodec::Vp8).unwrap();
    let mut frame = DecodedFrame::default();
    fuzz("vp8 frames", &video, 20_000, |bytes| {
        let key = vpx_is_keyframe(VideoCodec::Vp8, bytes);
        let _ = vpx_is_keyframe(VideoCodec::Vp9, bytes);
        let _ = vpx_is_keyframe(VideoCodec::H264, bytes);
        // A decode error asks for a keyframe; it must never panic or leave a broken frame.
        if decoder.decode(bytes, key, &mut frame).is_err() {
            decoder = VideoDecoder::new(VideoCodec::Vp8).unwrap();
        }
    });
    let audio: Vec<Vec<u8>> = vericall::testkit::clip::encode_tone(5, 0.3)
        .unwrap()
        .iter()
        .map(|p| p.to_vec())
        .collect();
    let mut decoder = AudioDecoder::new().unwrap();
    let mut pcm = Vec::new();
    fuzz("opus packets", &audio, 100_000, |bytes| {
        let _ = is_opus_dtx(bytes);
        let _ = decoder.decode(bytes, &mut pcm);
    });
}
