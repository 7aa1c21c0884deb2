//! One UDP port for every session (or, with a port range, one port per session).
//!
//! [`UdpMux`] owns the socket(s) (one per local IP, all on the same port) and a
//! receive task per socket. With a [`PortRange`] ([`UdpMux::bind_range`]) there is
//! no shared port: [`UdpMux::register`] leases a port of the range to each
//! session (a socket per local IP on it) and the port goes back to the range when
//! the session's [`MuxSession`] is dropped ([`super::ports`]). Routing is the same
//! either way. Each datagram goes to the session that owns it:
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
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::ports::{PortPool, PortRange};
use super::stun;
use super::turn::RelayTable;
use crate::metrics;

/// How many datagrams may wait for a busy session before newer ones are dropped
/// (UDP semantics: a stalled session loses packets, it never stalls the port).
const SESSION_QUEUE: usize = 1024;

/// Largest datagram we read; WebRTC stays under the path MTU, this is headroom.
const RECV_BUFFER: usize = 4096;

/// How long a new session waits for a port of the range that is still closing
/// (its old session's receive task has yet to drop the socket: microseconds).
const CLOSING_WAIT: Duration = Duration::from_secs(1);

/// How often binding every IP on an OS-picked port is retried when that number
/// is taken on another IP.
const SHARED_PORT_ATTEMPTS: usize = 8;

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
    /// The shared sockets (none with a port range).
    sockets: Vec<Arc<UdpSocket>>,
    /// The IPs sockets are bound on.
    ips: Vec<IpAddr>,
    /// With a port range: which of its ports are leased.
    pool: Option<PortPool>,
    /// Sockets leased to sessions, by address (for STUN queries from them).
    leased: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
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

    fn leased(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<UdpSocket>>> {
        self.leased.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new(sockets: Vec<Arc<UdpSocket>>, ips: &[IpAddr], pool: Option<PortPool>) -> Arc<Inner> {
        Arc::new(Inner {
            sockets,
            ips: ips.to_vec(),
            pool,
            leased: Mutex::new(HashMap::new()),
            routes: Mutex::new(Routes::default()),
            pending_stun: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            relays: Arc::new(RelayTable::default()),
        })
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
///
/// // Or a port per session, from a range a firewall opens:
/// let ranged = UdpMux::bind_range(&["127.0.0.1".parse().unwrap()], "40000-40099".parse().unwrap())?;
/// let (session, _datagrams) = ranged.register().await?; // leases one port of the range
/// println!("this session uses {:?}", session.local_addrs());
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
        check_ips(ips)?;
        let mut attempt = 1;
        let sockets = loop {
            match bind_shared(ips, port).await {
                // The OS picked a number free on the first IP but taken on
                // another: pick again rather than fail at start-up.
                Err(e)
                    if port == 0
                        && e.kind() == io::ErrorKind::AddrInUse
                        && attempt < SHARED_PORT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                result => break result?,
            }
        };
        let inner = Inner::new(sockets, ips, None);
        let tasks = inner
            .sockets
            .iter()
            .map(|s| tokio::spawn(receive_loop(Arc::downgrade(&inner), s.clone(), None)))
            .collect();
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(UdpMux { inner })
    }

    /// A mux with no shared port: each session [`register`](Self::register)s a
    /// port of `range` of its own (a socket on it per IP), given back when the
    /// session ends. Fails now, with the reason, if no port of the range can be
    /// bound on every IP (permissions, an address that is not local, or all
    /// taken by other programs).
    pub fn bind_range(ips: &[IpAddr], range: PortRange) -> io::Result<UdpMux> {
        check_ips(ips)?;
        let mut last_error = None;
        let usable = (range.low()..=range.high()).any(|port| match bind_std(ips, port) {
            Ok(_probe) => true, // dropped at once: this only checks
            Err(e) => {
                last_error = Some(e);
                false
            }
        });
        if !usable {
            let why = last_error.map(|e| e.to_string()).unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("no port of the UDP port range {range} can be bound: {why}"),
            ));
        }
        Ok(UdpMux {
            inner: Inner::new(Vec::new(), ips, Some(PortPool::new(range))),
        })
    }

    /// The UDP port every session shares (0 with a port range: see
    /// [`port_range`](Self::port_range)).
    pub fn port(&self) -> u16 {
        self.local_addrs().first().map(|a| a.port()).unwrap_or(0)
    }

    /// The range sessions lease their port from, if the mux has one.
    pub fn port_range(&self) -> Option<PortRange> {
        self.inner.pool.as_ref().map(|p| p.range())
    }

    /// How many ports of the range are leased to sessions (or still closing);
    /// 0 without a range.
    pub fn ports_in_use(&self) -> usize {
        self.inner.pool.as_ref().map_or(0, |p| {
            let (leased, closing) = p.counts();
            leased + closing
        })
    }

    /// The address of each shared socket (none with a port range: a session's
    /// own are [`MuxSession::local_addrs`]).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Registers a new session: datagrams for it arrive on the returned receiver.
    ///
    /// With a port range this leases the session a port (one socket per IP),
    /// which goes back to the range when the [`MuxSession`] is dropped. When every
    /// port of the range is taken the error (kind `AddrInUse`) says so; a port
    /// still closing from an ended session is waited for, briefly.
    pub async fn register(&self) -> io::Result<(MuxSession, mpsc::Receiver<Datagram>)> {
        let lease = match &self.inner.pool {
            Some(pool) => Some(self.lease_port(pool).await?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let session = MuxSession {
            mux: self.clone(),
            key,
            tx,
            known_addrs: HashSet::new(),
            lease,
        };
        Ok((session, rx))
    }

    async fn lease_port(&self, pool: &PortPool) -> io::Result<PortLease> {
        let range = pool.range();
        let deadline = tokio::time::Instant::now() + CLOSING_WAIT;
        loop {
            let freed = pool.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let mut tried = HashSet::new();
            let mut busy = 0;
            let mut last_error = None;
            while let Some(port) = pool.reserve(&tried) {
                tried.insert(port);
                match bind_std(&self.inner.ips, port) {
                    Ok(sockets) => return Ok(self.start_lease(port, sockets)),
                    Err(e) => {
                        pool.unreserve(port);
                        busy += 1;
                        last_error = Some(e);
                    }
                }
            }
            let (leased, closing) = pool.counts();
            if closing == 0 || tokio::time::Instant::now() >= deadline {
                let mut message = format!(
                    "no free UDP port in the range {range} ({} ports: {leased} used by sessions",
                    range.len()
                );
                if closing > 0 {
                    message.push_str(&format!(", {closing} closing"));
                }
                if busy > 0 {
                    message.push_str(&format!(", {busy} busy outside this server"));
                }
                message.push_str("); retry later");
                if let Some(e) = last_error.filter(|e| e.kind() != io::ErrorKind::AddrInUse) {
                    message.push_str(&format!(" (last bind error: {e})"));
                }
                return Err(io::Error::new(io::ErrorKind::AddrInUse, message));
            }
            let _ = tokio::time::timeout_at(deadline, freed).await;
        }
    }

    fn start_lease(&self, port: u16, sockets: Vec<std::net::UdpSocket>) -> PortLease {
        let (stop, stopped) = watch::channel(());
        let mut lease = PortLease {
            port,
            sockets: Vec::with_capacity(sockets.len()),
            stop: Some(stop),
            inner: Arc::downgrade(&self.inner),
        };
        for socket in sockets {
            let socket = match UdpSocket::from_std(socket) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    // Only fails outside a runtime, which `register` is not.
                    tracing::warn!(port, "cannot use a leased UDP socket: {e}");
                    continue;
                }
            };
            if let Ok(addr) = socket.local_addr() {
                self.inner.leased().insert(addr, socket.clone());
            }
            tokio::spawn(receive_loop(
                Arc::downgrade(&self.inner),
                socket.clone(),
                Some((stopped.clone(), port)),
            ));
            lease.sockets.push(socket);
        }
        lease
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
        let socket = self.socket_for(local).cloned();
        let socket = socket.or_else(|| self.inner.leased().get(&local).cloned());
        let socket = socket.ok_or_else(|| {
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
    /// The session's own port, with a port range.
    lease: Option<PortLease>,
}

impl std::fmt::Debug for MuxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxSession")
            .field("key", &self.key)
            .finish()
    }
}

impl MuxSession {
    /// The local addresses this session is reached on: its leased port's
    /// sockets with a port range, else the shared ones.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        match &self.lease {
            Some(lease) => lease
                .sockets
                .iter()
                .filter_map(|s| s.local_addr().ok())
                .collect(),
            None => self.mux.local_addrs(),
        }
    }

    /// The port leased to this session, with a port range.
    pub fn leased_port(&self) -> Option<u16> {
        self.lease.as_ref().map(|l| l.port)
    }

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
        let own = self.lease.as_ref().and_then(|l| {
            l.sockets
                .iter()
                .find(|s| s.local_addr().ok() == Some(source))
        });
        let Some(socket) = own.or_else(|| self.mux.socket_for(source)) else {
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
        // Routes first, so nothing is delivered to this session on a port that
        // may already be leased again.
        self.mux.inner.routes().forget(self.key);
    }
}

/// A port of the range, leased to one session: a socket per IP and their
/// receive tasks. Dropping it closes them and gives the port back.
struct PortLease {
    port: u16,
    sockets: Vec<Arc<UdpSocket>>,
    /// Dropped to stop the receive tasks.
    stop: Option<watch::Sender<()>>,
    inner: Weak<Inner>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        {
            let mut leased = inner.leased();
            for socket in &self.sockets {
                if let Ok(addr) = socket.local_addr() {
                    leased.remove(&addr);
                }
            }
        }
        if let Some(pool) = &inner.pool {
            // The receive task holds the last reference to each socket; the
            // port is free once every one of them has ended.
            pool.closing(self.port, self.sockets.len());
        }
        self.sockets.clear();
        self.stop.take();
    }
}

/// `stop`: for a leased socket, the lease's stop signal and its port; the task
/// ends when the lease is dropped, closes the socket and tells the pool.
async fn receive_loop(
    inner: Weak<Inner>,
    socket: Arc<UdpSocket>,
    stop: Option<(watch::Receiver<()>, u16)>,
) {
    let (mut stop, _closed) = match stop {
        Some((rx, port)) => (
            Some(rx),
            Some(PortClosed {
                inner: inner.clone(),
                port,
            }),
        ),
        None => (None, None),
    };
    // Declared after the guard, so dropped before it, however the task ends:
    // the port is free only once this socket is closed.
    let socket = socket;
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let stopped = async {
            match stop.as_mut() {
                // Only an error ever comes: the lease never sends, it is dropped.
                Some(rx) => while rx.changed().await.is_ok() {},
                None => std::future::pending().await,
            }
        };
        let received = tokio::select! {
            biased;
            _ = stopped => break,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, source) = match received {
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

/// Tells the pool a leased socket is closed, when the receive task ends.
struct PortClosed {
    inner: Weak<Inner>,
    port: u16,
}

impl Drop for PortClosed {
    fn drop(&mut self) {
        if let Some(pool) = self.inner.upgrade().as_ref().and_then(|i| i.pool.as_ref()) {
            pool.socket_closed(self.port);
        }
    }
}

fn check_ips(ips: &[IpAddr]) -> io::Result<()> {
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no local IP address to bind the UDP port on",
        ));
    }
    Ok(())
}

/// One socket per IP on `port` (0: the number the OS picks for the first).
async fn bind_shared(ips: &[IpAddr], port: u16) -> io::Result<Vec<Arc<UdpSocket>>> {
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
    Ok(sockets)
}

/// One non-blocking socket per IP on `port`, all or none (synchronous: binding
/// does not block, and a half-bound port must not be left behind).
fn bind_std(ips: &[IpAddr], port: u16) -> io::Result<Vec<std::net::UdpSocket>> {
    ips.iter()
        .map(|ip| {
            let addr = SocketAddr::new(*ip, port);
            let socket = std::net::UdpSocket::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens sockets on loopback: run inside nsrun.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_port_given_back_is_leased_again_at_once() {
        let ips = [IpAddr::from([127, 0, 0, 1])];
        let mux = UdpMux::bind_range(&ips, PortRange::new(42000, 42000).unwrap()).unwrap();
        for round in 0..20 {
            let (session, _rx) = mux.register().await.expect("the one port is free");
            assert_eq!(session.leased_port(), Some(42000), "round {round}");
            assert_eq!(
                session.local_addrs(),
                vec!["127.0.0.1:42000".parse().unwrap()]
            );
            let full = mux.register().await.expect_err("only one port");
            assert_eq!(full.kind(), io::ErrorKind::AddrInUse);
            assert!(full.to_string().contains("42000-42000"), "{full}");
            // Dropped, then wanted again before its receive task has closed the
            // socket: the new session waits for it instead of being refused.
            drop(session);
        }
        let (_session, _rx) = mux.register().await.unwrap();
        assert_eq!(mux.ports_in_use(), 1);
    }

    /// A Binding request whose only attribute is USERNAME `username`.
    fn binding_request_for(username: &[u8; 9]) -> Vec<u8> {
        let mut packet = stun::binding_request([1; 12]);
        let padded = username.len().div_ceil(4) * 4;
        packet[2..4].copy_from_slice(&((4 + padded) as u16).to_be_bytes());
        packet.extend_from_slice(&0x0006u16.to_be_bytes());
        packet.extend_from_slice(&(username.len() as u16).to_be_bytes());
        packet.extend_from_slice(username);
        packet.resize(20 + 4 + padded, 0);
        packet
    }

    #[tokio::test]
    async fn a_datagram_reaches_the_session_on_its_own_port() {
        let ips = [IpAddr::from([127, 0, 0, 1])];
        let mux = UdpMux::bind_range(&ips, PortRange::new(42010, 42011).unwrap()).unwrap();
        let (a, mut a_rx) = mux.register().await.unwrap();
        let (b, mut b_rx) = mux.register().await.unwrap();
        a.claim_ufrag("aaaa");
        b.claim_ufrag("bbbb");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // A binding request for b, sent to b's port.
        let request = binding_request_for(b"bbbb:peer");
        peer.send_to(&request, b.local_addrs()[0]).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), b_rx.recv())
            .await
            .expect("delivered")
            .unwrap();
        assert_eq!(got.destination, b.local_addrs()[0]);
        assert!(a_rx.try_recv().is_err());
        drop(a);
    }
}
