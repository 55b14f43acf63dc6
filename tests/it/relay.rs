//! User-space UDP impairment relay for integration tests.
//!
//! The test kernel has no `netem`, so tests place this relay between a WebRTC client peer and
//! the server's UDP media port:
//!
//! ```text
//! client peer  <->  [client_sock] Relay [server_sock]  <->  server media port
//! ```
//!
//! * The client talks to [`Relay::local_addr`] as if it were the server (the SDP answer's
//!   candidate must be rewritten, or the client pointed at the relay by other means).
//! * The server sees the relay's second socket as the client's address.
//! * Only the client -> server direction is impaired. Server -> client passes straight through so
//!   that NACKs / RTCP feedback / retransmission requests flow unhindered.
//! * Only media (RTP and RTCP, classified per RFC 7983) is impaired. STUN (first byte 0..=3) and
//!   DTLS (20..=63) are never dropped, delayed or duplicated: the tests measure *media* loss, and
//!   losing control traffic would only slow down or break ICE/DTLS setup, which is noise for
//!   those measurements.
//! * Nothing is impaired during [`ImpairmentConfig::impair_after`] after start, so ICE and DTLS
//!   connect cleanly.
//!
//! Only client -> server datagrams are recorded in the [`RelayLog`].
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the relay does to client -> server media datagrams.
#[derive(Clone, Debug)]
pub struct ImpairmentConfig {
    /// Drop probability, 0..=1.
    pub loss: f64,
    /// Mean one-way extra delay.
    pub delay: Duration,
    /// Each packet's delay is `delay + uniform(-jitter, +jitter)`, clamped at zero. Packets with
    /// independent delays reorder naturally.
    pub jitter: Duration,
    /// Probability of holding a packet for one extra packet-time (the last observed inter-arrival
    /// gap of impaired packets, plus 0.5 ms so it really lands behind its successor).
    pub reorder: f64,
    /// Probability of sending a second copy of the packet (with its own independent delay).
    pub duplicate: f64,
    /// RNG seed; the same seed and the same input order give the same decisions.
    pub seed: u64,
    /// Pass everything unimpaired for this long after [`Relay::start`].
    pub impair_after: Duration,
    /// Drop every impaired packet (retransmissions included) during this window, measured from
    /// start: an outage that NACKs cannot repair, so the receiver must ask for a keyframe.
    pub outage: Option<(Duration, Duration)>,
}

impl Default for ImpairmentConfig {
    fn default() -> Self {
        ImpairmentConfig {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            duplicate: 0.0,
            seed: 0,
            impair_after: Duration::ZERO,
            outage: None,
        }
    }
}

/// Clear-text RTP header fields of a forwarded datagram (the SRTP header is not encrypted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpInfo {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
}

/// One client -> server datagram (or a duplicate copy of one).
#[derive(Clone, Debug)]
pub struct PacketRecord {
    pub received_at: Instant,
    /// When the relay forwarded it to the server; `None` if it was dropped.
    pub sent_at: Option<Instant>,
    pub rtp: Option<RtpInfo>,
    /// Whether impairment decisions were applied to it (media after `impair_after`).
    pub impaired: bool,
    /// This record is the extra copy produced by `duplicate`.
    pub duplicated: bool,
}

/// Snapshot of what the relay did to client -> server traffic.
#[derive(Clone, Debug, Default)]
pub struct RelayLog {
    pub records: Vec<PacketRecord>,
}

impl RelayLog {
    /// Ground truth for one SSRC over impaired packets: the fraction of ORIGINAL RTP packets
    /// (first transmission of each sequence number, duplicates excluded) that the relay dropped.
    /// Sequence numbers are unwrapped, so long runs are handled. Returns 0 if there were none.
    pub fn loss_fraction(&self, ssrc: u32) -> f64 {
        let mut seen: HashMap<u64, ()> = HashMap::new();
        let mut last_ext: Option<u64> = None;
        let mut total = 0u64;
        let mut dropped = 0u64;
        for rec in &self.records {
            let Some(rtp) = rec.rtp else { continue };
            if rtp.ssrc != ssrc || rec.duplicated {
                continue;
            }
            let ext = unwrap_seq(&mut last_ext, rtp.seq);
            if !rec.impaired {
                // Still remember the seq: a later retransmission of it is not an original.
                seen.insert(ext, ());
                continue;
            }
            if seen.insert(ext, ()).is_some() {
                continue; // retransmission (same SSRC, same seq)
            }
            total += 1;
            if rec.sent_at.is_none() {
                dropped += 1;
            }
        }
        if total == 0 {
            0.0
        } else {
            dropped as f64 / total as f64
        }
    }

    /// RFC 3550 A.8 interarrival jitter, in milliseconds, computed from the relay's own send
    /// timestamps (`sent_at`) and the RTP timestamps, in send order, over every forwarded packet
    /// of `ssrc` (what the server receives, duplicates included).
    pub fn jitter_ms(&self, ssrc: u32, clock_rate: u32) -> f64 {
        let mut sent: Vec<(Instant, u32)> = self
            .records
            .iter()
            .filter_map(|r| match (r.rtp, r.sent_at) {
                (Some(rtp), Some(t)) if rtp.ssrc == ssrc => Some((t, rtp.timestamp)),
                _ => None,
            })
            .collect();
        sent.sort_by_key(|(t, _)| *t);
        rfc3550_jitter_ms(&sent, clock_rate)
    }

    /// Every RTP SSRC seen client -> server, with its (first seen) payload type and the number of
    /// records (duplicates included), in order of first appearance.
    pub fn ssrcs(&self) -> Vec<(u32, u8, usize)> {
        let mut out: Vec<(u32, u8, usize)> = Vec::new();
        for rtp in self.records.iter().filter_map(|r| r.rtp) {
            match out.iter_mut().find(|(s, _, _)| *s == rtp.ssrc) {
                Some(entry) => entry.2 += 1,
                None => out.push((rtp.ssrc, rtp.payload_type, 1)),
            }
        }
        out
    }
}

/// RFC 3550 A.8 jitter over `(arrival, rtp_timestamp)` pairs already in arrival order.
pub fn rfc3550_jitter_ms(arrivals: &[(Instant, u32)], clock_rate: u32) -> f64 {
    let clock = f64::from(clock_rate);
    let mut jitter = 0.0f64;
    for w in arrivals.windows(2) {
        let (a0, ts0) = w[0];
        let (a1, ts1) = w[1];
        let arrival_delta = a1.duration_since(a0).as_secs_f64() * clock;
        let ts_delta = f64::from(ts1.wrapping_sub(ts0) as i32);
        let d = (arrival_delta - ts_delta).abs();
        jitter += (d - jitter) / 16.0;
    }
    jitter / clock * 1000.0
}

fn unwrap_seq(last: &mut Option<u64>, seq: u16) -> u64 {
    let ext = match *last {
        None => u64::from(seq) + (1 << 16),
        Some(prev) => {
            let delta = i64::from(seq.wrapping_sub(prev as u16) as i16);
            (prev as i64 + delta).max(0) as u64
        }
    };
    if last.is_none_or(|p| ext > p) {
        *last = Some(ext);
    }
    ext
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

/// RFC 7983 demultiplexing on the first byte (plus the RTP/RTCP split of RFC 5761).
fn classify(buf: &[u8]) -> Kind {
    match buf.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) if buf.len() >= 2 => {
            if (64..=95).contains(&(buf[1] & 0x7f)) {
                Kind::Rtcp
            } else {
                Kind::Rtp
            }
        }
        _ => Kind::Other,
    }
}

fn parse_rtp(buf: &[u8]) -> Option<RtpInfo> {
    if buf.len() < 12 {
        return None;
    }
    Some(RtpInfo {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    })
}

/// A delayed datagram: (deadline, FIFO tie-breaker, record index, bytes).
type Scheduled = (Instant, u64, usize, Vec<u8>);

/// The running relay. Dropping it aborts its tasks; [`Relay::stop`] does so and waits.
pub struct Relay {
    local_addr: SocketAddr,
    records: Arc<Mutex<Vec<PacketRecord>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds 127.0.0.1:0, forwards datagrams between the single client (first sender) and
    /// `server`. Only the client -> server direction is impaired (server -> client passes
    /// straight, so NACKs/RTCP flow). Datagrams from other senders are ignored.
    pub async fn start(server: SocketAddr, cfg: ImpairmentConfig) -> std::io::Result<Relay> {
        let client_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let server_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        server_sock.connect(server).await?;
        let local_addr = client_sock.local_addr()?;
        let records: Arc<Mutex<Vec<PacketRecord>>> = Arc::new(Mutex::new(Vec::new()));
        let client_addr: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (sched_tx, sched_rx) = mpsc::unbounded_channel::<Scheduled>();

        let upstream = tokio::spawn(client_to_server(
            Arc::clone(&client_sock),
            Arc::clone(&server_sock),
            Arc::clone(&records),
            Arc::clone(&client_addr),
            sched_tx,
            cfg,
        ));
        let scheduler = tokio::spawn(delayed_sender(
            Arc::clone(&server_sock),
            Arc::clone(&records),
            sched_rx,
        ));
        let downstream = tokio::spawn(server_to_client(client_sock, server_sock, client_addr));

        Ok(Relay {
            local_addr,
            records,
            tasks: vec![upstream, scheduler, downstream],
        })
    }

    /// What the client should send to (the relay appears to the client as the server).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Snapshot of what the relay did so far.
    pub fn log(&self) -> RelayLog {
        RelayLog {
            records: self.records.lock().unwrap().clone(),
        }
    }

    /// Stops forwarding (packets still queued for delayed sending are discarded).
    pub async fn stop(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn client_to_server(
    client_sock: Arc<UdpSocket>,
    server_sock: Arc<UdpSocket>,
    records: Arc<Mutex<Vec<PacketRecord>>>,
    client_addr: Arc<Mutex<Option<SocketAddr>>>,
    sched_tx: mpsc::UnboundedSender<Scheduled>,
    cfg: ImpairmentConfig,
) {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut buf = vec![0u8; 65536];
    let mut fifo = 0u64;
    let mut last_impaired_rx: Option<Instant> = None;
    let mut packet_time = Duration::from_millis(2);
    loop {
        let (n, from) = match client_sock.recv_from(&mut buf).await {
            Ok(v) => v,
            // e.g. ECONNRESET from an ICMP error: keep relaying.
            Err(_) => continue,
        };
        let now = Instant::now();
        {
            let mut client = client_addr.lock().unwrap();
            match *client {
                None => *client = Some(from),
                Some(c) if c != from => continue,
                Some(_) => {}
            }
        }
        let data = &buf[..n];
        let kind = classify(data);
        let rtp = if kind == Kind::Rtp {
            parse_rtp(data)
        } else {
            None
        };
        let impaired =
            matches!(kind, Kind::Rtp | Kind::Rtcp) && now.duration_since(start) >= cfg.impair_after;

        if !impaired {
            let sent_at = server_sock.send(data).await.ok().map(|_| Instant::now());
            records.lock().unwrap().push(PacketRecord {
                received_at: now,
                sent_at,
                rtp,
                impaired: false,
                duplicated: false,
            });
            continue;
        }

        if let Some(prev) = last_impaired_rx {
            packet_time = now.duration_since(prev).min(Duration::from_millis(100));
        }
        last_impaired_rx = Some(now);

        // Always draw the same number of values per impaired packet so the decisions depend
        // only on the seed and the packet order.
        let u_loss: f64 = rng.gen();
        let u_jitter: f64 = rng.gen();
        let u_reorder: f64 = rng.gen();
        let u_dup: f64 = rng.gen();
        let u_dup_jitter: f64 = rng.gen();

        let in_outage = cfg.outage.is_some_and(|(from, len)| {
            let t = now.duration_since(start);
            t >= from && t < from + len
        });
        let dropped = u_loss < cfg.loss || (in_outage && kind == Kind::Rtp);
        let reorder_hold = if u_reorder < cfg.reorder {
            packet_time + Duration::from_micros(500)
        } else {
            Duration::ZERO
        };
        let copies: &[(bool, f64)] = if !dropped && u_dup < cfg.duplicate {
            &[(false, u_jitter), (true, u_dup_jitter)]
        } else {
            &[(false, u_jitter)]
        };
        if dropped {
            records.lock().unwrap().push(PacketRecord {
                received_at: now,
                sent_at: None,
                rtp,
                impaired: true,
                duplicated: false,
            });
            continue;
        }
        for &(duplicated, u) in copies {
            let offset = (2.0 * u - 1.0) * cfg.jitter.as_secs_f64();
            let delay = (cfg.delay.as_secs_f64() + offset).max(0.0);
            let delay = Duration::from_secs_f64(delay) + reorder_hold;
            let idx = {
                let mut recs = records.lock().unwrap();
                recs.push(PacketRecord {
                    received_at: now,
                    sent_at: None,
                    rtp,
                    impaired: true,
                    duplicated,
                });
                recs.len() - 1
            };
            if delay.is_zero() {
                if server_sock.send(data).await.is_ok() {
                    records.lock().unwrap()[idx].sent_at = Some(Instant::now());
                }
            } else {
                fifo += 1;
                if sched_tx
                    .send((now + delay, fifo, idx, data.to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn delayed_sender(
    server_sock: Arc<UdpSocket>,
    records: Arc<Mutex<Vec<PacketRecord>>>,
    mut rx: mpsc::UnboundedReceiver<Scheduled>,
) {
    let mut heap: BinaryHeap<Reverse<Scheduled>> = BinaryHeap::new();
    let mut open = true;
    loop {
        // Send everything that is due.
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(s)| s.0 <= now) {
            let Reverse((_, _, idx, data)) = heap.pop().expect("peeked");
            if server_sock.send(&data).await.is_ok() {
                records.lock().unwrap()[idx].sent_at = Some(Instant::now());
            }
        }
        let next = heap.peek().map(|Reverse(s)| s.0);
        match (next, open) {
            (None, false) => return,
            (None, true) => match rx.recv().await {
                Some(item) => heap.push(Reverse(item)),
                None => open = false,
            },
            (Some(deadline), true) => {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(item) => heap.push(Reverse(item)),
                        None => open = false,
                    },
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            (Some(deadline), false) => tokio::time::sleep_until(deadline.into()).await,
        }
    }
}

async fn server_to_client(
    client_sock: Arc<UdpSocket>,
    server_sock: Arc<UdpSocket>,
    client_addr: Arc<Mutex<Option<SocketAddr>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match server_sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(_) => continue,
        };
        let to = *client_addr.lock().unwrap();
        if let Some(to) = to {
            let _ = client_sock.send_to(&buf[..n], to).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCK: u32 = 90_000;
    const SSRC: u32 = 0x1234_5678;

    fn rtp_packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0u8; 12 + 100];
        p[0] = 0x80;
        p[1] = 96;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    fn stun_packet(i: u16) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[1] = 1; // binding request
        p[2..4].copy_from_slice(&i.to_be_bytes());
        p
    }

    type Arrivals = Vec<(Instant, Vec<u8>)>;

    struct Run {
        log: RelayLog,
        /// (arrival, datagram) at the fake server, in arrival order.
        received: Arrivals,
    }

    /// Sends `n` RTP packets (2 ms spacing, 90 kHz timestamps) through a relay with `cfg`; with
    /// `stun_every > 0` a STUN-looking packet is interleaved every `stun_every` packets.
    async fn run(cfg: ImpairmentConfig, n: u16, stun_every: u16) -> Run {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let received: Arc<Mutex<Arrivals>> = Arc::default();
        let rx_task = {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let (len, _) = server.recv_from(&mut buf).await.unwrap();
                    received
                        .lock()
                        .unwrap()
                        .push((Instant::now(), buf[..len].to_vec()));
                }
            })
        };
        let tail = cfg.delay + cfg.jitter + Duration::from_millis(300);
        let relay = Relay::start(server_addr, cfg).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        for i in 0..n {
            tick.tick().await;
            let pkt = rtp_packet(i.wrapping_add(65000), 7_000 + u32::from(i) * 180, SSRC);
            client.send_to(&pkt, relay.local_addr()).await.unwrap();
            if stun_every > 0 && i % stun_every == 0 {
                client
                    .send_to(&stun_packet(i), relay.local_addr())
                    .await
                    .unwrap();
            }
        }
        tokio::time::sleep(tail).await;
        let log = relay.log();
        relay.stop().await;
        rx_task.abort();
        let received = received.lock().unwrap().clone();
        Run { log, received }
    }

    fn received_rtp(run: &Run) -> Vec<(Instant, RtpInfo)> {
        run.received
            .iter()
            .filter(|(_, d)| classify(d) == Kind::Rtp)
            .map(|(t, d)| (*t, parse_rtp(d).unwrap()))
            .collect()
    }

    #[test]
    fn classify_rfc7983() {
        assert_eq!(classify(&[0, 1]), Kind::Stun);
        assert_eq!(classify(&[22, 254]), Kind::Dtls);
        assert_eq!(classify(&[0x80, 96]), Kind::Rtp);
        assert_eq!(classify(&[0x80, 0x80 | 111]), Kind::Rtp);
        assert_eq!(classify(&[0x80, 200]), Kind::Rtcp); // SR
        assert_eq!(classify(&[0x81, 205]), Kind::Rtcp); // RTPFB
        assert_eq!(classify(&[0x80, 96 + 128]), Kind::Rtp);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loss_matches_ground_truth() {
        let cfg = ImpairmentConfig {
            loss: 0.05,
            delay: Duration::from_millis(10),
            seed: 7,
            ..Default::default()
        };
        let n = 2000u16;
        let run = run(cfg, n, 0).await;
        let got = received_rtp(&run).len();
        let ratio = got as f64 / f64::from(n);
        assert!((0.93..=0.97).contains(&ratio), "received ratio {ratio}");
        let lf = run.log.loss_fraction(SSRC);
        let expected = 1.0 - ratio;
        assert!(
            (lf - expected).abs() < 1e-12,
            "loss_fraction {lf} != 1 - received/sent {expected}"
        );
        assert_eq!(run.log.ssrcs(), vec![(SSRC, 96, usize::from(n))]);
        assert_eq!(run.log.loss_fraction(0xdead), 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jitter_matches_server_side_measurement() {
        let cfg = ImpairmentConfig {
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(20),
            seed: 11,
            ..Default::default()
        };
        let run = run(cfg, 2000, 0).await;
        let arrivals: Vec<(Instant, u32)> = received_rtp(&run)
            .into_iter()
            .filter(|(_, r)| r.ssrc == SSRC)
            .map(|(t, r)| (t, r.timestamp))
            .collect();
        assert_eq!(arrivals.len(), 2000);
        let server_side = rfc3550_jitter_ms(&arrivals, CLOCK);
        let relay_side = run.log.jitter_ms(SSRC, CLOCK);
        eprintln!("jitter: server {server_side:.2} ms, relay log {relay_side:.2} ms");
        assert!(relay_side > 5.0, "relay jitter {relay_side}");
        let rel = (server_side - relay_side).abs() / relay_side;
        assert!(
            rel < 0.25,
            "server {server_side} ms vs relay {relay_side} ms"
        );
        // Reordering really happened.
        let seqs: Vec<u16> = received_rtp(&run).iter().map(|(_, r)| r.seq).collect();
        assert!(seqs.windows(2).any(|w| w[1] != w[0].wrapping_add(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stun_is_never_dropped() {
        let cfg = ImpairmentConfig {
            loss: 0.5,
            seed: 3,
            ..Default::default()
        };
        let run = run(cfg, 500, 5).await;
        let stun = run
            .received
            .iter()
            .filter(|(_, d)| classify(d) == Kind::Stun)
            .count();
        assert_eq!(stun, 100);
        let rtp = received_rtp(&run).len();
        assert!((150..350).contains(&rtp), "rtp received {rtp}");
        assert!(run
            .log
            .records
            .iter()
            .filter(|r| r.rtp.is_none())
            .all(|r| !r.impaired && r.sent_at.is_some()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_seed_same_drop_pattern() {
        let cfg = |seed| ImpairmentConfig {
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.05,
            seed,
            ..Default::default()
        };
        let dropped = |log: &RelayLog| -> Vec<u16> {
            log.records
                .iter()
                .filter(|r| r.sent_at.is_none())
                .filter_map(|r| r.rtp.map(|r| r.seq))
                .collect()
        };
        let a = run(cfg(42), 500, 0).await;
        let b = run(cfg(42), 500, 0).await;
        let c = run(cfg(43), 500, 0).await;
        assert!(!dropped(&a.log).is_empty());
        assert_eq!(dropped(&a.log), dropped(&b.log));
        assert_ne!(dropped(&a.log), dropped(&c.log));
        let dups = |log: &RelayLog| log.records.iter().filter(|r| r.duplicated).count();
        assert!(dups(&a.log) > 0);
        assert_eq!(dups(&a.log), dups(&b.log));
        // Duplicates do not count as originals.
        let lf = a.log.loss_fraction(SSRC);
        assert!(
            (lf - dropped(&a.log).len() as f64 / 500.0).abs() < 1e-12,
            "{lf}"
        );
    }

    #[test]
    fn loss_fraction_ignores_retransmissions_and_unimpaired() {
        let t = Instant::now();
        let rec = |seq: u16, sent: bool, impaired: bool| PacketRecord {
            received_at: t,
            sent_at: sent.then_some(t),
            rtp: Some(RtpInfo {
                ssrc: 1,
                seq,
                timestamp: 0,
                payload_type: 96,
                marker: false,
            }),
            impaired,
            duplicated: false,
        };
        let log = RelayLog {
            records: vec![
                rec(65534, true, false),
                rec(65535, false, true),
                rec(0, true, true),
                rec(65535, true, true), // retransmission of a dropped packet
                rec(1, false, true),
                rec(2, true, true),
            ],
        };
        assert!((log.loss_fraction(1) - 2.0 / 4.0).abs() < 1e-12);
    }
}
