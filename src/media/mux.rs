//! The one UDP socket that carries every session's media, and the demultiplexer in front of it.
//!
//! A datagram from a known remote address goes to that address's session. A STUN binding request
//! from a new address is routed by the local ICE ufrag in its USERNAME (each session has its own),
//! which also teaches the mux the new address. Everything else is dropped and counted: random
//! datagrams sprayed at the port never reach a session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::wire::{classify, stun_local_ufrag, DatagramKind};

/// Remote addresses one session may accumulate (each STUN check from a new candidate adds one).
const MAX_ADDRS_PER_SESSION: usize = 16;
/// Receive buffer refilled in large chunks so the hot path does not allocate per datagram.
const RECV_CHUNK: usize = 256 * 1024;
const MAX_DATAGRAM: usize = 2048;

/// A datagram for one session, stamped with its arrival time at the socket.
#[derive(Debug)]
pub struct Datagram {
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
    pub dropped_queue_full: AtomicU64,
    pub sent: AtomicU64,
}

#[derive(Debug, Clone)]
struct Route {
    session: Arc<str>,
    inbox: mpsc::Sender<Datagram>,
}

#[derive(Debug, Default)]
struct Routes {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
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

    /// Registers a session's local ICE ufrag; datagrams for it go to `inbox`.
    pub fn register(&self, session: &Arc<str>, ufrag: &str, inbox: mpsc::Sender<Datagram>) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.by_ufrag.insert(
            ufrag.to_string(),
            Route {
                session: session.clone(),
                inbox,
            },
        );
    }

    /// Forgets one ufrag (after an ICE restart replaced it); learned addresses stay.
    pub fn unregister_ufrag(&self, ufrag: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.by_ufrag.remove(ufrag);
    }

    /// Forgets every route of a session.
    pub fn unregister_session(&self, session: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.by_ufrag.retain(|_, r| &*r.session != session);
        routes.by_addr.retain(|_, r| &*r.session != session);
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
        if let Some(r) = routes.by_addr.get(&source) {
            return Some(r.clone());
        }
        if classify(contents) != DatagramKind::Stun {
            return None;
        }
        let ufrag = stun_local_ufrag(contents)?;
        let route = routes.by_ufrag.get(ufrag)?.clone();
        let known = routes
            .by_addr
            .values()
            .filter(|r| r.session == route.session)
            .count();
        if known < MAX_ADDRS_PER_SESSION {
            routes.by_addr.insert(source, route.clone());
        }
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
