//! The one UDP socket that carries every session's media, and the demultiplexer in front of it.
//!
//! A datagram from a known remote address goes to that address's session. A STUN binding request
//! from a new address is routed by the local ICE ufrag in its USERNAME (each session has its own)
//! and teaches the mux the new address only when its MESSAGE-INTEGRITY verifies with that
//! session's ICE password and its transaction id was not already seen from another address (a
//! replayed request). Everything else is dropped and counted: random datagrams sprayed at the port
//! never reach a session.
//!
//! A session holds at most `MAX_ADDRS_PER_SESSION` addresses. The peer task marks an address
//! verified once str0m accepts it as a checked candidate pair; when the cap is reached the oldest
//! unverified address gives way, so requests replayed from many ports cannot lock out the client.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::wire::{
    classify, stun_integrity_ok, stun_local_ufrag, stun_transaction_id, DatagramKind,
};

/// Remote addresses one session may accumulate (each STUN check from a new candidate adds one).
const MAX_ADDRS_PER_SESSION: usize = 16;
/// STUN transaction ids remembered per session to recognise a request replayed from another address.
const RECENT_TRANSACTIONS: usize = 128;
/// Receive buffer refilled in large chunks so the hot path does not allocate per datagram.
const RECV_CHUNK: usize = 256 * 1024;
const MAX_DATAGRAM: usize = 2048;

/// A datagram for one session, stamped with its arrival time at the socket.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub source: SocketAddr,
    pub arrival: Instant,
    pub contents: Bytes,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MuxStats {
    pub received: AtomicU64,
    pub routed: AtomicU64,
    pub dropped_unknown_source: AtomicU64,
    /// STUN requests from new addresses that failed MESSAGE-INTEGRITY or were replays.
    pub dropped_unauthenticated: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub sent: AtomicU64,
}

#[derive(Debug, Clone)]
struct Route {
    session: Arc<str>,
    inbox: mpsc::Sender<Datagram>,
}

/// A local ufrag's session and the ICE password that signs its STUN requests.
#[derive(Debug)]
struct UfragRoute {
    route: Route,
    password: String,
}

/// A learned remote address.
#[derive(Debug)]
struct AddrRoute {
    route: Route,
    /// str0m accepted the address (a checked candidate pair): never evicted.
    verified: bool,
    /// Order of learning, for evicting the oldest unverified address first.
    learned: u64,
}

#[derive(Debug, Default)]
struct Routes {
    by_ufrag: HashMap<String, UfragRoute>,
    by_addr: HashMap<SocketAddr, AddrRoute>,
    /// Recent STUN transaction ids per session with the address each came from.
    transactions: HashMap<Arc<str>, VecDeque<([u8; 12], SocketAddr)>>,
    learned: u64,
}

impl Routes {
    /// Learns `source` for `route`'s session, evicting its oldest unverified address when the
    /// session is at its cap; false when every address it holds is verified.
    fn learn(&mut self, source: SocketAddr, route: &Route) -> bool {
        let mine = || {
            self.by_addr
                .iter()
                .filter(|(_, a)| a.route.session == route.session)
        };
        if mine().count() >= MAX_ADDRS_PER_SESSION {
            let oldest = mine()
                .filter(|(_, a)| !a.verified)
                .min_by_key(|(_, a)| a.learned)
                .map(|(addr, _)| *addr);
            match oldest {
                Some(addr) => {
                    self.by_addr.remove(&addr);
                }
                None => return false,
            }
        }
        self.learned += 1;
        self.by_addr.insert(
            source,
            AddrRoute {
                route: route.clone(),
                verified: false,
                learned: self.learned,
            },
        );
        true
    }

    /// Remembers a request's transaction id; false when the same id came from another address
    /// (a replay: a client retransmits a request only from the address it first used).
    fn fresh_transaction(&mut self, session: &Arc<str>, id: [u8; 12], source: SocketAddr) -> bool {
        let recent = self.transactions.entry(session.clone()).or_default();
        if let Some((_, from)) = recent.iter().find(|(t, _)| *t == id) {
            return *from == source;
        }
        if recent.len() >= RECENT_TRANSACTIONS {
            recent.pop_front();
        }
        recent.push_back((id, source));
        true
    }
}

/// Kernel receive buffer requested for the media socket: bursts (many calls' keyframes at once,
/// or junk sprayed at the port) must not overflow it while the receive loop is briefly busy.
/// Linux caps it at net.core.rmem_max.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the media receive buffer");
    }
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

#[derive(Debug)]
pub struct MediaMux {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    routes: Mutex<Routes>,
    pub stats: MuxStats,
}

impl MediaMux {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Arc<MediaMux>> {
        let socket = bind_udp(addr)?;
        let local_addr = socket.local_addr()?;
        Ok(Arc::new(MediaMux {
            socket: Arc::new(socket),
            local_addr,
            routes: Mutex::new(Routes::default()),
            stats: MuxStats::default(),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers a session's local ICE credentials; datagrams for its ufrag go to `inbox`, and
    /// new addresses are learned only from STUN requests signed with `password`.
    pub(crate) fn register(
        &self,
        session: &Arc<str>,
        ufrag: &str,
        password: &str,
        inbox: mpsc::Sender<Datagram>,
    ) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.by_ufrag.insert(
            ufrag.to_string(),
            UfragRoute {
                route: Route {
                    session: session.clone(),
                    inbox,
                },
                password: password.to_string(),
            },
        );
    }

    /// Forgets one ufrag (after an ICE restart replaced it); learned addresses stay.
    pub(crate) fn unregister_ufrag(&self, ufrag: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.by_ufrag.remove(ufrag);
    }

    /// Forgets every route of a session.
    pub(crate) fn unregister_session(&self, session: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.by_ufrag.retain(|_, r| &*r.route.session != session);
        routes.by_addr.retain(|_, r| &*r.route.session != session);
        routes.transactions.remove(session);
    }

    /// Marks a learned address of `session` as verified by its ICE agent (kept at the cap).
    pub(crate) fn mark_verified(&self, session: &str, source: SocketAddr) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = routes.by_addr.get_mut(&source) {
            if &*a.route.session == session {
                a.verified = true;
            }
        }
    }

    /// Addresses a session has learned (for tests and diagnostics).
    pub fn learned_addresses(&self, session: &str) -> usize {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .by_addr
            .values()
            .filter(|a| &*a.route.session == session)
            .count()
    }

    pub async fn send_to(&self, contents: &[u8], destination: SocketAddr) {
        // UDP sends rarely block; a failed send is a lost packet, which RTP tolerates.
        match self.socket.send_to(contents, destination).await {
            Ok(_) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, %destination, "media send failed"),
        }
    }

    fn route(&self, source: SocketAddr, contents: &[u8]) -> Option<Route> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let is_stun = classify(contents) == DatagramKind::Stun;
        if let Some(r) = routes.by_addr.get(&source) {
            let route = r.route.clone();
            // Remembered so that this request replayed from elsewhere is recognised.
            if let Some(id) = is_stun.then(|| stun_transaction_id(contents)).flatten() {
                routes.fresh_transaction(&route.session, id, source);
            }
            return Some(route);
        }
        if !is_stun {
            return None;
        }
        let ufrag = stun_local_ufrag(contents)?;
        let target = routes.by_ufrag.get(ufrag)?;
        // Anyone who saw a ufrag on the wire can name it; only the peer holds the password.
        if !stun_integrity_ok(contents, &target.password) {
            self.stats
                .dropped_unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let route = target.route.clone();
        let transaction = stun_transaction_id(contents)?;
        if !routes.fresh_transaction(&route.session, transaction, source) {
            self.stats
                .dropped_unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        routes.learn(source, &route);
        Some(route)
    }

    /// Receives forever, handing each datagram to its session without ever waiting on one.
    pub async fn run(self: Arc<Self>) {
        let mut buf = BytesMut::with_capacity(RECV_CHUNK);
        loop {
            if buf.capacity() < MAX_DATAGRAM {
                buf = BytesMut::with_capacity(RECV_CHUNK);
            }
            // SAFETY-free: recv_buf_from appends into spare capacity.
            let (n, source) = match self.socket.recv_buf_from(&mut buf).await {
                Ok(v) => v,
                Err(e) => {
                    // ICMP port-unreachable from a vanished peer shows up here on some systems.
                    tracing::debug!(error = %e, "media recv error");
                    continue;
                }
            };
            let arrival = Instant::now();
            let contents = buf.split_to(n).freeze();
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let Some(route) = self.route(source, &contents) else {
                self.stats
                    .dropped_unknown_source
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let datagram = Datagram {
                source,
                arrival,
                contents,
            };
            match route.inbox.try_send(datagram) {
                Ok(()) => {
                    self.stats.routed.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.unregister_session(&route.session);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::wire::signed_binding_request;

    const PWD: &str = "0123456789012345678901";

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn learns_addresses_only_from_signed_fresh_requests_and_evicts_unverified() {
        let mux = MediaMux::bind(addr(0)).await.unwrap();
        let session: Arc<str> = "ses_a".into();
        let (tx, _rx) = mpsc::channel(4);
        mux.register(&session, "abcd", PWD, tx);
        let client = signed_binding_request("abcd:remote", PWD, [1; 12]);
        assert!(mux.route(addr(1000), &client).is_some());
        assert_eq!(mux.learned_addresses("ses_a"), 1);
        mux.mark_verified("ses_a", addr(1000));
        // A forged signature, an unknown ufrag, media from a stranger: nothing learned.
        let forged = signed_binding_request("abcd:remote", "wrong-password-0123456789", [2; 12]);
        assert!(mux.route(addr(1001), &forged).is_none());
        let other = signed_binding_request("zzzz:remote", PWD, [3; 12]);
        assert!(mux.route(addr(1002), &other).is_none());
        assert!(mux.route(addr(1003), &[0x80, 96, 0, 1]).is_none());
        // The client's request replayed from other ports: recognised by its transaction id.
        for port in 2000..2020 {
            assert!(mux.route(addr(port), &client).is_none());
        }
        assert_eq!(mux.learned_addresses("ses_a"), 1);
        // Fresh signed requests from many ports (only the password holder can make them) fill the
        // cap; the verified address is never the one evicted.
        for (i, port) in (3000..3040).enumerate() {
            let fresh = signed_binding_request("abcd:remote", PWD, [10 + i as u8; 12]);
            assert!(mux.route(addr(port), &fresh).is_some());
        }
        assert_eq!(mux.learned_addresses("ses_a"), MAX_ADDRS_PER_SESSION);
        assert!(mux.route(addr(1000), &[0x80, 96, 0, 1]).is_some(), "kept");
        assert!(mux.route(addr(3039), &[0x80, 96, 0, 1]).is_some(), "newest");
        assert!(
            mux.route(addr(3000), &[0x80, 96, 0, 1]).is_none(),
            "evicted"
        );
        mux.unregister_session("ses_a");
        assert_eq!(mux.learned_addresses("ses_a"), 0);
    }
}
