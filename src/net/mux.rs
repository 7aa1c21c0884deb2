//! One UDP port for every session.
//!
//! [`UdpMux`] owns the socket(s) (one per local IP, all on the same port) and a
//! receive task per socket. Each datagram goes to the session that owns it:
//!
//! 1. by the (local, remote) address pair, once a session has talked to that remote;
//! 2. else, for a STUN binding request, by the ufrag in its USERNAME, which is the
//!    session's own ICE ufrag;
//! 3. else, for a STUN binding response, to a pending server-reflexive query.
//!
//! Datagrams from a TURN server we hold an allocation on go to its relay
//! ([`super::turn`]), which unwraps relayed data and routes it the same way, with
//! the relayed address as the local address; sessions send through a relay by
//! sending from its relayed address.
//!
//! Everything else is dropped: it belongs to no session we know. This plays the
//! role `quinn-proto`'s `Endpoint` plays for its connections: the only shared
//! state on the receive path.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::stun;
use super::turn::RelayTable;
use crate::metrics;

/// How many datagrams may wait for a busy session before newer ones are dropped
/// (UDP semantics: a stalled session loses packets, it never stalls the port).
const SESSION_QUEUE: usize = 1024;

/// Largest datagram we read; WebRTC stays under the path MTU, this is headroom.
const RECV_BUFFER: usize = 4096;

/// A datagram received for a session.
#[derive(Debug)]
pub struct Datagram {
    /// When the socket handed it to us.
    pub received: Instant,
    /// The remote address it came from.
    pub source: SocketAddr,
    /// The local address (socket) it arrived on.
    pub destination: SocketAddr,
    /// The payload.
    pub contents: Vec<u8>,
}

type SessionKey = u64;

struct Route {
    key: SessionKey,
    tx: mpsc::Sender<Datagram>,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<(SocketAddr, SocketAddr), Route>,
}

impl Routes {
    fn forget(&mut self, key: SessionKey) {
        self.by_ufrag.retain(|_, r| r.key != key);
        self.by_addr.retain(|_, r| r.key != key);
    }
}

pub(crate) struct Inner {
    sockets: Vec<Arc<UdpSocket>>,
    routes: Mutex<Routes>,
    pending_stun: Mutex<HashMap<[u8; 12], oneshot::Sender<SocketAddr>>>,
    next_key: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// TURN allocations ([`super::turn`]): relayed addresses act as more local
    /// addresses of this mux.
    relays: Arc<RelayTable>,
}

impl Inner {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic while holding the lock cannot leave the maps half-updated in a
        // way that matters (each update is a single insert/remove), so keep going.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending_stun(&self) -> MutexGuard<'_, HashMap<[u8; 12], oneshot::Sender<SocketAddr>>> {
        self.pending_stun.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared UDP endpoint. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use smallwebrtc::net::UdpMux;
///
/// let mux = UdpMux::bind(&["127.0.0.1".parse().unwrap()], 0).await?;
/// println!("all sessions share UDP port {}", mux.port());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct UdpMux {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UdpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpMux")
            .field("local_addrs", &self.local_addrs())
            .finish()
    }
}

impl UdpMux {
    /// Binds one socket per IP, all on `port` (0 = let the OS pick one for the
    /// first socket and reuse that number for the rest), and starts receiving.
    pub async fn bind(ips: &[IpAddr], port: u16) -> io::Result<UdpMux> {
        if ips.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no local IP address to bind the UDP port on",
            ));
        }
        let mut sockets = Vec::with_capacity(ips.len());
        let mut port = port;
        for ip in ips {
            let addr = SocketAddr::new(*ip, port);
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
            port = socket.local_addr()?.port();
            sockets.push(Arc::new(socket));
        }
        let inner = Arc::new(Inner {
            sockets,
            routes: Mutex::new(Routes::default()),
            pending_stun: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            relays: Arc::new(RelayTable::default()),
        });
        let tasks = inner
            .sockets
            .iter()
            .map(|s| tokio::spawn(receive_loop(Arc::downgrade(&inner), s.clone())))
            .collect();
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(UdpMux { inner })
    }

    /// The UDP port every session shares.
    pub fn port(&self) -> u16 {
        self.local_addrs().first().map(|a| a.port()).unwrap_or(0)
    }

    /// The address of each bound socket.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Registers a new session: datagrams for it arrive on the returned receiver.
    pub fn register(&self) -> (MuxSession, mpsc::Receiver<Datagram>) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let session = MuxSession {
            mux: self.clone(),
            key,
            tx,
            known_addrs: HashSet::new(),
        };
        (session, rx)
    }

    pub(crate) fn socket_for(&self, local: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.inner
            .sockets
            .iter()
            .find(|s| s.local_addr().ok() == Some(local))
    }

    pub(crate) fn relay_table(&self) -> Arc<RelayTable> {
        self.inner.relays.clone()
    }

    pub(crate) fn downgrade_inner(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// Asks a STUN server, from the socket bound to `local`, which address it
    /// sees us as (our server-reflexive address). Retransmits until `timeout`.
    pub async fn query_reflexive(
        &self,
        local: SocketAddr,
        server: SocketAddr,
        timeout: Duration,
    ) -> io::Result<SocketAddr> {
        let socket = self.socket_for(local).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no socket bound on {local}"),
            )
        })?;
        let txid = stun::new_transaction_id();
        let (tx, mut rx) = oneshot::channel();
        self.inner.pending_stun().insert(txid, tx);
        let request = stun::binding_request(txid);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = Duration::from_millis(250);
        let result = loop {
            if let Err(e) = socket.send_to(&request, server).await {
                break Err(e);
            }
            let next = (tokio::time::Instant::now() + wait).min(deadline);
            match tokio::time::timeout_at(next, &mut rx).await {
                Ok(Ok(addr)) => break Ok(addr),
                Ok(Err(_)) => break Err(io::Error::other("STUN query cancelled")),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("STUN server {server} did not answer within {timeout:?}"),
                    ))
                }
                Err(_) => wait *= 2,
            }
        };
        self.inner.pending_stun().remove(&txid);
        result
    }

    /// Stops the receive tasks and deletes the TURN allocations. Sessions still
    /// holding a [`MuxSession`] can no longer receive.
    pub fn shutdown(&self) {
        self.inner.relays.shutdown();
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// A session's place in the [`UdpMux`]: how it claims ufrags and addresses and
/// sends datagrams. Dropping it removes every route to the session.
pub struct MuxSession {
    mux: UdpMux,
    key: SessionKey,
    tx: mpsc::Sender<Datagram>,
    known_addrs: HashSet<(SocketAddr, SocketAddr)>,
}

impl std::fmt::Debug for MuxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxSession")
            .field("key", &self.key)
            .finish()
    }
}

impl MuxSession {
    /// Routes STUN binding requests whose USERNAME starts with `ufrag` to this session.
    pub fn claim_ufrag(&self, ufrag: &str) {
        self.mux.inner.routes().by_ufrag.insert(
            ufrag.to_string(),
            Route {
                key: self.key,
                tx: self.tx.clone(),
            },
        );
    }

    /// Stops routing by `ufrag` (after a peer connection is replaced).
    pub fn release_ufrag(&self, ufrag: &str) {
        let mut routes = self.mux.inner.routes();
        if routes.by_ufrag.get(ufrag).map(|r| r.key) == Some(self.key) {
            routes.by_ufrag.remove(ufrag);
        }
    }

    /// Sends a datagram from the socket bound to `source`, or through the TURN
    /// relay whose relayed address is `source`.
    ///
    /// Sending to a remote also claims the (local, remote) pair, so its answers
    /// (STUN responses, DTLS, SRTP) come back to this session.
    pub async fn send(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        if self.known_addrs.insert((source, destination)) {
            let mut routes = self.mux.inner.routes();
            routes
                .by_addr
                .entry((source, destination))
                .or_insert_with(|| Route {
                    key: self.key,
                    tx: self.tx.clone(),
                });
        }
        let Some(socket) = self.mux.socket_for(source) else {
            if let Some(relay) = self.mux.inner.relays.for_relay(source) {
                relay.send(destination, contents);
            } else {
                tracing::debug!(%source, "no socket or relay for this source address; datagram dropped");
            }
            return;
        };
        metrics::UDP_PACKETS_OUT.inc();
        metrics::UDP_BYTES_OUT.add(contents.len() as u64);
        if let Err(e) = socket.send_to(contents, destination).await {
            // UDP send errors (no route, buffer full) are transient from ICE's
            // point of view: it retransmits or declares the pair dead itself.
            tracing::trace!(%destination, "UDP send failed: {e}");
        }
    }
}

impl Drop for MuxSession {
    fn drop(&mut self) {
        self.mux.inner.routes().forget(self.key);
    }
}

async fn receive_loop(inner: std::sync::Weak<Inner>, socket: Arc<UdpSocket>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP errors surface here on Linux (connection refused from an
                // earlier send); they say nothing about the socket itself.
                tracing::trace!(%local, "UDP receive error: {e}");
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let packet = &buf[..len];
        dispatch(&inner, local, source, packet);
    }
}

fn dispatch(inner: &Inner, local: SocketAddr, source: SocketAddr, packet: &[u8]) {
    metrics::UDP_PACKETS_IN.inc();
    metrics::UDP_BYTES_IN.add(packet.len() as u64);
    if route_by_addr(inner, local, source, packet) {
        return;
    }
    if let Some(relay) = inner.relays.for_server(local, source) {
        relay.receive(inner, packet);
        return;
    }
    if route_by_ufrag(inner, local, source, packet) {
        return;
    }
    if let Some((txid, mapped)) = stun::parse_binding_success(packet) {
        if let Some(waiter) = inner.pending_stun().remove(&txid) {
            let _ = waiter.send(mapped);
            return;
        }
    }
    metrics::UDP_PACKETS_UNROUTED.inc();
    tracing::trace!(%source, %local, len = packet.len(), "datagram for no known session dropped");
}

/// Routes a datagram a TURN relay unwrapped as if it had arrived on the relayed
/// address `relay` from `peer`.
pub(crate) fn route_relayed(inner: &Inner, relay: SocketAddr, peer: SocketAddr, packet: &[u8]) {
    if route_by_addr(inner, relay, peer, packet) || route_by_ufrag(inner, relay, peer, packet) {
        return;
    }
    metrics::UDP_PACKETS_UNROUTED.inc();
    tracing::trace!(%peer, %relay, len = packet.len(), "relayed datagram for no known session dropped");
}

fn deliver(route: &Route, local: SocketAddr, source: SocketAddr, packet: &[u8]) {
    let datagram = Datagram {
        received: Instant::now(),
        source,
        destination: local,
        contents: packet.to_vec(),
    };
    if route.tx.try_send(datagram).is_err() {
        metrics::UDP_PACKETS_DROPPED.inc();
    }
}

/// 1. By the (local, remote) pair a session has talked on.
fn route_by_addr(inner: &Inner, local: SocketAddr, source: SocketAddr, packet: &[u8]) -> bool {
    let routes = inner.routes();
    match routes.by_addr.get(&(local, source)) {
        Some(route) => {
            deliver(route, local, source, packet);
            true
        }
        None => false,
    }
}

/// 2. A STUN binding request, by the session's ufrag in its USERNAME; the pair
///    is then remembered.
fn route_by_ufrag(inner: &Inner, local: SocketAddr, source: SocketAddr, packet: &[u8]) -> bool {
    if !stun::is_stun(packet) {
        return false;
    }
    let Some(ufrag) = stun::local_ufrag(packet) else {
        return false;
    };
    let mut routes = inner.routes();
    let Some(route) = routes.by_ufrag.get(ufrag) else {
        return false;
    };
    let route = Route {
        key: route.key,
        tx: route.tx.clone(),
    };
    deliver(&route, local, source, packet);
    routes.by_addr.insert((local, source), route);
    true
}
