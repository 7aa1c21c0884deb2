//! TURN relay: relayed candidates for every session, through one allocation per
//! TURN server.
//!
//! The relay is shared the way the UDP port is. For each configured TURN server
//! (and each IP family of the shared sockets) there is one [`TurnClient`]
//! allocation, made at the first offer that needs it, refreshed before it
//! expires and made again if it is lost. Its relayed address is one more local
//! candidate of every session: `Candidate::relayed(relay, base, "udp")`.
//!
//! ```text
//!  session (str0m) ── Transmit { source: relay, destination: peer } ──► MuxSession::send
//!        ──► Relay::send: ChannelData (or, before the channel is bound, queued) ──► TURN server ──► peer
//!  peer ──► TURN server ──► ChannelData / Data indication ──► UdpMux receive loop (or TCP reader)
//!        ──► Relay::receive: unwrapped ──► routed as if it had arrived on `relay` from `peer`
//! ```
//!
//! Routing of relayed datagrams is the ordinary one, with the relayed address as
//! the local address: by `(relay, peer)` once the session has talked to the peer,
//! else by the STUN USERNAME ufrag. Responses to our own requests (Allocate,
//! Refresh, ChannelBind, ...) stay in the client.
//!
//! Transports to the TURN server: UDP (`turn:host:port`), TCP
//! (`turn:host:port?transport=tcp`, RFC 8656 §12.5 framing) and TLS
//! (`turns:host:port`, the same framing over rustls; the server's certificate
//! is checked against the system's trusted roots, or those in `SSL_CERT_FILE`).
//! Relaying towards peers is always UDP.

pub mod client;
mod md5;
pub mod proto;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

pub use client::{TurnClient, TurnClientConfig, TurnError, TurnEvent, TurnStats};

use super::mux::{self, UdpMux};

/// How the server talks to a TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    /// `turn:host:port` (or `?transport=udp`).
    Udp,
    /// `turn:host:port?transport=tcp`.
    Tcp,
    /// `turns:host:port` (TLS over TCP).
    Tls,
}

/// A TURN server to allocate on.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TurnServer {
    /// The URL, for logs (`turn:127.0.0.1:3478?transport=tcp`).
    pub url: String,
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport to the server.
    pub transport: TurnTransport,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password.
    pub credential: String,
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Where an allocation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayState {
    /// The first allocation (or one after a loss) is being made.
    Allocating,
    /// Allocated: peers reach us at `relay`.
    Ready {
        /// The relayed transport address.
        relay: SocketAddr,
    },
    /// Allocating failed (retried in the background).
    Failed(String),
}

/// What [`UdpMux::relays`] reports of each allocation.
#[derive(Debug, Clone)]
pub struct RelayInfo {
    /// The TURN server's URL.
    pub url: String,
    /// The TURN server's address.
    pub server: SocketAddr,
    /// Where the allocation stands.
    pub state: RelayState,
    /// What went through it.
    pub stats: TurnStats,
}

/// Every relay of a mux: the allocations, and the two lookups of the data path.
#[derive(Default)]
pub(crate) struct RelayTable {
    all: Mutex<Vec<Arc<Relay>>>,
    /// UDP relays by (local socket, TURN server): where their datagrams arrive.
    by_server: RwLock<HashMap<(SocketAddr, SocketAddr), Arc<Relay>>>,
    /// Allocated relays by relayed address: where sessions send through them.
    by_relay: RwLock<HashMap<SocketAddr, Arc<Relay>>>,
    /// Why each skipped TURN URL was skipped, so it is warned about once.
    skipped: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RelayTable {
    /// The UDP relay whose TURN server is `server`, on the socket bound to `local`.
    pub(crate) fn for_server(&self, local: SocketAddr, server: SocketAddr) -> Option<Arc<Relay>> {
        let map = self.by_server.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(&(local, server)).cloned()
    }

    /// The relay whose relayed address is `relay`.
    pub(crate) fn for_relay(&self, relay: SocketAddr) -> Option<Arc<Relay>> {
        let map = self.by_relay.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(&relay).cloned()
    }

    fn set_relay(&self, old: Option<SocketAddr>, new: Option<(SocketAddr, Arc<Relay>)>) {
        let mut map = self.by_relay.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = old {
            map.remove(&old);
        }
        if let Some((addr, relay)) = new {
            map.insert(addr, relay);
        }
    }

    /// Deletes every allocation (best effort) and stops the relays' tasks.
    pub(crate) fn shutdown(&self) {
        let relays = std::mem::take(&mut *lock(&self.all));
        for relay in relays {
            relay.shutdown();
        }
        self.by_server
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.by_relay
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

enum Link {
    Udp(Arc<UdpSocket>),
    Stream(Mutex<Option<mpsc::Sender<Vec<u8>>>>),
}

/// One allocation and the tasks that keep it.
pub(crate) struct Relay {
    server: TurnServer,
    /// The TURN server's resolved address.
    remote: SocketAddr,
    /// The local address the allocation is made from (the UDP socket, or the
    /// TCP connection's local end).
    base: Mutex<SocketAddr>,
    client: Mutex<TurnClient>,
    link: Link,
    state: watch::Sender<RelayState>,
    wake: Notify,
    table: Weak<RelayTable>,
    /// The relayed address published in the table.
    published: Mutex<Option<SocketAddr>>,
    /// Warned about the current failure already (so a retry loop logs once).
    warned: Mutex<Option<String>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    fn config(&self, stream: bool) -> TurnClientConfig {
        TurnClientConfig {
            server: self.remote,
            stream,
            username: self.server.username.clone(),
            password: self.server.credential.clone(),
            ipv6_relay: self.remote.is_ipv6(),
        }
    }

    fn info(&self) -> RelayInfo {
        RelayInfo {
            url: self.server.url.clone(),
            server: self.remote,
            state: self.state.borrow().clone(),
            stats: lock(&self.client).stats(),
        }
    }

    /// Sends frames to the TURN server (never waits: UDP semantics).
    fn transmit(&self, frames: impl IntoIterator<Item = Vec<u8>>) {
        match &self.link {
            Link::Udp(socket) => {
                for frame in frames {
                    // Sent on the shared port: counted with its traffic.
                    crate::metrics::UDP_PACKETS_OUT.inc();
                    crate::metrics::UDP_BYTES_OUT.add(frame.len() as u64);
                    if let Err(e) = socket.try_send_to(&frame, self.remote) {
                        tracing::trace!(server = %self.remote, "TURN send failed: {e}");
                    }
                }
            }
            Link::Stream(tx) => {
                let tx = lock(tx).clone();
                let Some(tx) = tx else { return };
                for frame in frames {
                    if tx.try_send(frame).is_err() {
                        tracing::trace!(server = %self.remote, "TURN stream backlog full: frame dropped");
                    }
                }
            }
        }
    }

    /// Relays a session's datagram to `peer`.
    pub(crate) fn send(&self, peer: SocketAddr, contents: &[u8]) {
        let now = Instant::now();
        let (ready, control) = {
            let mut client = lock(&self.client);
            let outcome = client.send_to(peer, contents, now);
            let mut control = Vec::new();
            while let Some(frame) = client.poll_transmit() {
                control.push(frame);
            }
            (outcome, control)
        };
        if !control.is_empty() {
            // A new request (a channel binding) has a timer the driver must know.
            self.transmit(control);
            self.wake.notify_one();
        }
        if let client::SendOutcome::Ready(frame) = ready {
            self.transmit(Some(frame));
        }
    }

    /// Handles a datagram (or stream frame) from the TURN server: relayed data is
    /// routed to its session, responses go to the client.
    pub(crate) fn receive(&self, inner: &mux::Inner, packet: &[u8]) {
        let now = Instant::now();
        let mut frames = Vec::new();
        let mut control = false;
        let (peer_data, relay) = {
            let mut client = lock(&self.client);
            match client.handle_input(packet, now) {
                client::Received::PeerData { peer, data } => (Some((peer, data)), client.relay()),
                client::Received::Control => {
                    control = true;
                    // Data queued for a peer whose binding just succeeded goes now.
                    while let Some(frame) = client.poll_transmit() {
                        frames.push(frame);
                    }
                    (None, None)
                }
                client::Received::Ignored => (None, None),
            }
        };
        if !frames.is_empty() {
            self.transmit(frames);
        }
        if control {
            // A response may have produced events and changed the timers: the
            // driver publishes and re-arms them.
            self.wake.notify_one();
        }
        if let (Some((peer, data)), Some(relay)) = (peer_data, relay) {
            mux::route_relayed(inner, relay, peer, data);
        }
    }

    /// Runs the client's timers and publishes what happened; returns when to
    /// run again.
    fn pump(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let mut frames = Vec::new();
        let mut events = Vec::new();
        let next = {
            let mut client = lock(&self.client);
            client.handle_timeout(now);
            while let Some(frame) = client.poll_transmit() {
                frames.push(frame);
            }
            while let Some(event) = client.poll_event() {
                events.push(event);
            }
            client.poll_timeout()
        };
        self.transmit(frames);
        for event in events {
            self.on_event(event);
        }
        next
    }

    fn on_event(self: &Arc<Self>, event: TurnEvent) {
        let url = &self.server.url;
        match event {
            TurnEvent::Allocated {
                relay, lifetime, ..
            } => {
                tracing::info!(
                    base = %lock(&self.base),
                    "TURN relay {relay} allocated on {url} (lifetime {}s)",
                    lifetime.as_secs()
                );
                *lock(&self.warned) = None;
                self.publish(Some(relay));
                self.state.send_replace(RelayState::Ready { relay });
            }
            TurnEvent::Failed { error, retry_at } => {
                self.publish(None);
                let message = match &error {
                    TurnError::Unauthorized => format!(
                        "TURN server {url} refused our credentials ({error}): check username/credential"
                    ),
                    _ => format!("TURN allocation on {url} failed: {error}"),
                };
                let retry = retry_at
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
                    .round();
                let mut warned = lock(&self.warned);
                if warned.as_deref() != Some(message.as_str()) {
                    tracing::warn!(
                        "{message}; no relay candidate until it works (retrying in {retry}s)"
                    );
                    *warned = Some(message.clone());
                } else {
                    tracing::debug!("{message} (again; retrying in {retry}s)");
                }
                drop(warned);
                self.state.send_replace(RelayState::Failed(message));
            }
            TurnEvent::Lost(error) => {
                tracing::warn!("TURN allocation on {url} lost ({error}): allocating again");
                self.publish(None);
                self.state.send_replace(RelayState::Allocating);
            }
        }
    }

    fn publish(self: &Arc<Self>, relay: Option<SocketAddr>) {
        let mut published = lock(&self.published);
        if *published == relay {
            return;
        }
        if let Some(table) = self.table.upgrade() {
            table.set_relay(*published, relay.map(|r| (r, self.clone())));
        }
        *published = relay;
    }

    fn fail_connect(self: &Arc<Self>, message: String) {
        self.publish(None);
        let mut warned = lock(&self.warned);
        if warned.as_deref() != Some(message.as_str()) {
            tracing::warn!("{message}; no relay candidate until it works");
            *warned = Some(message.clone());
        }
        drop(warned);
        self.state.send_replace(RelayState::Failed(message));
    }

    fn shutdown(&self) {
        let frames: Vec<Vec<u8>> = {
            let mut client = lock(&self.client);
            client.deallocate();
            std::iter::from_fn(|| client.poll_transmit()).collect()
        };
        self.transmit(frames);
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Keeps a UDP relay: timers and events.
async fn drive_udp(relay: Arc<Relay>) {
    loop {
        if relay.table.strong_count() == 0 {
            return; // the mux is gone
        }
        let next = relay.pump();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = relay.wake.notified() => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => relay.wake.notified().await,
        }
    }
}

/// How long connecting to a TURN server over TCP may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames waiting for a slow TCP connection before new ones are dropped.
const STREAM_BACKLOG: usize = 1024;

/// Keeps a TCP or TLS relay: connects, allocates, reads, and starts over when
/// the connection drops (the allocation dies with it).
async fn drive_stream(relay: Arc<Relay>, inner: Weak<mux::Inner>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let (allocated, why) = match connect(&relay).await {
            Ok(Connection::Tcp(stream)) => run_connection(&relay, &inner, stream).await,
            Ok(Connection::Tls(stream)) => run_connection(&relay, &inner, *stream).await,
            Err(message) => {
                relay.fail_connect(message);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        if let Link::Stream(slot) = &relay.link {
            *lock(slot) = None;
        }
        if inner.strong_count() == 0 || relay.table.strong_count() == 0 {
            return;
        }
        if allocated {
            backoff = Duration::from_secs(1);
            tracing::warn!(
                "TURN connection to {} lost ({why}): the relay is gone, reconnecting",
                relay.server.url
            );
            relay.publish(None);
            relay.state.send_replace(RelayState::Allocating);
        } else {
            relay.fail_connect(format!(
                "TURN connection to {} closed before an allocation ({why})",
                relay.server.url
            ));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to the TURN server over TCP, and TLS for `turns:`.
async fn connect(relay: &Relay) -> Result<Connection, String> {
    let url = &relay.server.url;
    let remote = relay.remote;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot connect to TURN server {url} ({remote}): {e}"
            ))
        }
        Err(_) => {
            return Err(format!(
            "cannot connect to TURN server {url} ({remote}): no answer within {CONNECT_TIMEOUT:?}"
        ))
        }
    };
    let _ = tcp.set_nodelay(true);
    if let Ok(local) = tcp.local_addr() {
        *lock(&relay.base) = local;
    }
    if relay.server.transport != TurnTransport::Tls {
        return Ok(Connection::Tcp(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(relay.server.host.clone()).map_err(|e| {
        format!(
            "TURN server {url}: {:?} is no TLS server name: {e}",
            relay.server.host
        )
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls_config());
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(Connection::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(format!("TLS with TURN server {url} ({remote}) failed: {e}")),
        Err(_) => Err(format!(
            "TLS with TURN server {url} ({remote}): no handshake within {CONNECT_TIMEOUT:?}"
        )),
    }
}

/// The TLS client configuration for `turns:` servers: the system's trusted roots
/// (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace them, as for OpenSSL), ALPN
/// `stun.turn` (RFC 7443).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!("loading trusted TLS roots: {error}");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "trusted TLS roots for turns: servers");
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"stun.turn".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// Runs one connection to the TURN server: a fresh client allocates over it,
/// frames are read and routed, frames to send are written. Returns whether an
/// allocation was made, and why the connection ended.
async fn run_connection<S>(
    relay: &Arc<Relay>,
    inner: &Weak<mux::Inner>,
    stream: S,
) -> (bool, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_BACKLOG);
    if let Link::Stream(slot) = &relay.link {
        *lock(slot) = Some(tx);
    }
    *lock(&relay.client) = TurnClient::new(relay.config(true), Instant::now());
    let writing = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
            // Batch what is already queued into one TLS record / segment.
            while let Ok(frame) = rx.try_recv() {
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    });
    let mut framer = proto::StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut allocated = false;
    let why = loop {
        let next = relay.pump();
        if matches!(*relay.state.borrow(), RelayState::Ready { .. }) {
            allocated = true;
        }
        if relay.table.strong_count() == 0 {
            break "the mux is gone".to_string();
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => break "closed by the server".to_string(),
                Err(e) => break e.to_string(),
                Ok(n) => {
                    framer.push(&buf[..n]);
                    let Some(inner) = inner.upgrade() else {
                        break "the mux is gone".to_string();
                    };
                    loop {
                        match framer.next_frame() {
                            Ok(Some(frame)) => relay.receive(&inner, &frame),
                            Ok(None) => break,
                            Err(()) => {
                                tracing::warn!(server = %relay.remote, "TURN server sent something that is not TURN framing");
                                framer = proto::StreamFramer::new();
                                break;
                            }
                        }
                    }
                }
            },
            _ = relay.wake.notified() => {}
            _ = sleep => {}
        }
        if writing.is_finished() {
            break "write failed".to_string();
        }
    };
    writing.abort();
    (allocated, why)
}

impl UdpMux {
    /// Relayed candidates from every TURN server in `servers`, as `(relayed,
    /// base)` pairs: one allocation per server and IP family of the shared
    /// sockets, made on first use and shared by every session afterwards. The
    /// first use waits at most `timeout`; a server that failed is not waited for
    /// again (it is retried in the background, and used once it works).
    pub async fn relay_candidates(
        &self,
        servers: &[TurnServer],
        timeout: Duration,
    ) -> Vec<(SocketAddr, SocketAddr)> {
        let mut relays = Vec::new();
        for server in servers {
            match self.relays_for(server).await {
                Ok(found) => relays.extend(found),
                Err(e) => {
                    let message = e.to_string();
                    let table = self.relay_table();
                    let mut skipped = lock(&table.skipped);
                    if skipped.get(&server.url) != Some(&message) {
                        tracing::warn!("TURN server {} skipped: {message}", server.url);
                        skipped.insert(server.url.clone(), message);
                    } else {
                        tracing::debug!("TURN server {} skipped: {message}", server.url);
                    }
                }
            }
        }
        let waits = relays.into_iter().map(|relay| async move {
            let mut state = relay.state.subscribe();
            let ready = tokio::time::timeout(
                timeout,
                state.wait_for(|s| !matches!(s, RelayState::Allocating)),
            )
            .await;
            match ready {
                Ok(Ok(s)) => match &*s {
                    RelayState::Ready { relay: addr } => Some((*addr, *lock(&relay.base))),
                    _ => None,
                },
                _ => {
                    tracing::debug!(url = %relay.server.url, "TURN allocation not ready within {timeout:?}");
                    None
                }
            }
        });
        let mut out: Vec<_> = futures_util::future::join_all(waits)
            .await
            .into_iter()
            .flatten()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every relay and where it stands.
    pub fn relays(&self) -> Vec<RelayInfo> {
        let table = self.relay_table();
        let all = lock(&table.all).clone();
        all.iter().map(|r| r.info()).collect()
    }

    /// The relays for `server`, one per IP family of the shared sockets that can
    /// reach it: existing ones, or new ones started now.
    async fn relays_for(&self, server: &TurnServer) -> io::Result<Vec<Arc<Relay>>> {
        let table = self.relay_table();
        {
            let all = lock(&table.all);
            let existing: Vec<_> = all
                .iter()
                .filter(|r| &r.server == server)
                .cloned()
                .collect();
            if !existing.is_empty() {
                return Ok(existing);
            }
        }
        let resolved: Vec<SocketAddr> =
            tokio::net::lookup_host((server.host.as_str(), server.port))
                .await
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot resolve {}: {e}", server.host))
                })?
                .collect();
        let locals = self.local_addrs();
        let mut plans = Vec::new();
        for v6 in [false, true] {
            let family_locals: Vec<_> = locals.iter().filter(|l| l.is_ipv6() == v6).collect();
            let Some(remote) = resolved.iter().find(|a| a.is_ipv6() == v6) else {
                continue;
            };
            // Prefer a socket on the same side of loopback as the server.
            let Some(local) = family_locals
                .iter()
                .find(|l| l.ip().is_loopback() == remote.ip().is_loopback())
                .or(family_locals.first())
            else {
                continue;
            };
            plans.push((**local, *remote));
        }
        if plans.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} resolves to no address of a family we have a socket for",
                    server.host
                ),
            ));
        }
        let mut all = lock(&table.all);
        // Another offer may have started them meanwhile.
        let existing: Vec<_> = all
            .iter()
            .filter(|r| &r.server == server)
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Ok(existing);
        }
        let mut started = Vec::new();
        for (local, remote) in plans {
            let relay = self.start_relay(&table, server.clone(), local, remote);
            all.push(relay.clone());
            started.push(relay);
        }
        Ok(started)
    }

    fn start_relay(
        &self,
        table: &Arc<RelayTable>,
        server: TurnServer,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Arc<Relay> {
        let stream = server.transport != TurnTransport::Udp;
        let link = if stream {
            Link::Stream(Mutex::new(None))
        } else {
            match self.socket_for(local) {
                Some(socket) => Link::Udp(socket.clone()),
                None => Link::Stream(Mutex::new(None)), // unreachable: `local` is one of ours
            }
        };
        let config = TurnClientConfig {
            server: remote,
            stream,
            username: server.username.clone(),
            password: server.credential.clone(),
            ipv6_relay: remote.is_ipv6(),
        };
        let relay = Arc::new(Relay {
            server,
            remote,
            base: Mutex::new(local),
            client: Mutex::new(TurnClient::new(config, Instant::now())),
            link,
            state: watch::channel(RelayState::Allocating).0,
            wake: Notify::new(),
            table: Arc::downgrade(table),
            published: Mutex::new(None),
            warned: Mutex::new(None),
            task: Mutex::new(None),
        });
        let task = if stream {
            tokio::spawn(drive_stream(relay.clone(), self.downgrade_inner()))
        } else {
            table
                .by_server
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert((local, remote), relay.clone());
            tokio::spawn(drive_udp(relay.clone()))
        };
        *lock(&relay.task) = Some(task);
        relay
    }
}
