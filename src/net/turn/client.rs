//! A sans-IO TURN client (RFC 8656): one allocation on one TURN server, shared by
//! every session that uses the relay.
//!
//! It never touches a socket or a clock: bytes from the server go in with
//! [`TurnClient::handle_input`], bytes for the server come out of
//! [`TurnClient::poll_transmit`], and time moves only through the `now` each call
//! is given ([`TurnClient::poll_timeout`] says when to call
//! [`TurnClient::handle_timeout`] next). So every path — the 401 dance, stale
//! nonces, retransmissions, refreshes, expiry, lost allocations — is tested with a
//! fake clock and a fake server, in microseconds.
//!
//! What it does:
//!
//! - **Allocate** with long-term credentials: the first request goes without
//!   them, the 401 brings REALM and NONCE, the second carries USERNAME, REALM,
//!   NONCE and MESSAGE-INTEGRITY. A 401 to *that* is [`TurnError::Unauthorized`]:
//!   the credentials are wrong. A 438 (stale nonce) is retried with the new nonce
//!   on every request kind. A 437 (an allocation already exists for our 5-tuple,
//!   e.g. after a restart on the same port) deletes it and allocates afresh.
//! - **Refresh** a minute before the lifetime ends; a refresh that fails, or an
//!   allocation that expires, is [`TurnEvent::Lost`], and the client allocates
//!   again. A failed allocation is retried with a backoff (2 s doubling to 5 min;
//!   at least a minute for refused credentials).
//! - **Peers**: the first datagram to a peer binds a channel to it (ChannelBind
//!   also installs the permission for its IP), and is queued (up to 32
//!   datagrams) until the binding succeeds; from then on data goes as
//!   ChannelData, four bytes of overhead. Bindings are refreshed every 4 minutes
//!   while the peer is in use (sent to or heard from in the last 2 minutes), and
//!   left to lapse otherwise, so a long-lived allocation does not refresh every
//!   client it ever served. A channel number is reused only 5 minutes after its
//!   binding expired (RFC 8656 §12). Should all 16 383 channel numbers be taken,
//!   a peer gets a plain permission (CreatePermission) and Send indications.
//! - Requests are retransmitted over UDP (300 ms doubling, given up after 10 s),
//!   sent once over TCP and TLS, where ChannelData is padded to 4 bytes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::proto::{self, attr, method, Class, Message, MessageBuilder};

/// How long a permission lasts on the server (RFC 8656 §9: 300 s).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// We stop using a permission this long before the server drops it.
const PERMISSION_MARGIN: Duration = Duration::from_secs(15);
/// A binding in use is refreshed this long after it was made.
const BINDING_REFRESH: Duration = Duration::from_secs(240);
/// A peer counts as in use if it was sent to or heard from this recently.
const PEER_IDLE: Duration = Duration::from_secs(120);
/// How long a channel binding lasts (RFC 8656 §12: 600 s).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a binding expires, its number and peer stay reserved this long.
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
/// A peer whose binding failed is not retried for this long.
const PEER_FAILURE_HOLD: Duration = Duration::from_secs(30);
/// Datagrams queued per peer while its binding is being made.
const PEER_QUEUE: usize = 32;
/// First retransmission timeout over UDP.
const INITIAL_RTO: Duration = Duration::from_millis(300);
/// Largest retransmission timeout over UDP.
const MAX_RTO: Duration = Duration::from_millis(3200);
/// A request unanswered this long has failed.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The allocation lifetime we ask for.
const REQUESTED_LIFETIME: u32 = 600;
/// Refresh this long before the allocation would expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Stale-nonce retries of one request.
const MAX_NONCE_RETRIES: u8 = 3;
/// First channel number (RFC 8656 §12).
const FIRST_CHANNEL: u16 = 0x4000;
/// Last channel number.
const LAST_CHANNEL: u16 = 0x7FFE;

/// What the client is set up with.
#[derive(Debug, Clone)]
pub struct TurnClientConfig {
    /// The TURN server's transport address.
    pub server: SocketAddr,
    /// True over TCP or TLS: requests are not retransmitted and ChannelData is
    /// padded to 4 bytes.
    pub stream: bool,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// Ask for an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY) instead of IPv4.
    pub ipv6_relay: bool,
}

/// Why an allocation failed or was lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// The server answered 401 to a request carrying our credentials.
    #[error("401 Unauthorized after authenticating")]
    Unauthorized,
    /// The server answered with another error.
    #[error("{code} {reason}")]
    Rejected {
        /// The ERROR-CODE number.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The server did not answer.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server's answer lacked something required.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// The allocation expired without a successful refresh.
    #[error("the allocation expired")]
    Expired,
}

/// What the client tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// An allocation was made: peers can reach us at `relay`.
    Allocated {
        /// The relayed transport address.
        relay: SocketAddr,
        /// Our address as the server sees it (XOR-MAPPED-ADDRESS), if given.
        mapped: Option<SocketAddr>,
        /// How long the server grants it before a refresh.
        lifetime: Duration,
    },
    /// Allocating failed; it is retried at `retry_at`.
    Failed {
        /// Why.
        error: TurnError,
        /// When the next attempt starts.
        retry_at: Instant,
    },
    /// The allocation we had is gone (the relayed address is dead); a new one
    /// is being made at once.
    Lost(TurnError),
}

/// What a datagram from the server was.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// Application data relayed from `peer` (ChannelData or a Data indication).
    PeerData {
        /// The peer's address.
        peer: SocketAddr,
        /// The data.
        data: &'a [u8],
    },
    /// A response to one of our requests, now handled.
    Control,
    /// Not for us, stale, malformed or unauthenticated: dropped.
    Ignored,
}

/// What became of a datagram given to [`TurnClient::send_to`].
#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Send these bytes to the TURN server now.
    Ready(Vec<u8>),
    /// Queued until the peer's channel is bound.
    Queued,
    /// Dropped (no allocation, peer refused, queue full).
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Allocate,
    Refresh { lifetime: u32 },
    Bind { peer: SocketAddr },
}

#[derive(Debug)]
struct Transaction {
    txid: [u8; 12],
    kind: TxKind,
    bytes: Vec<u8>,
    authenticated: bool,
    next_send: Instant,
    rto: Duration,
    deadline: Instant,
    nonce_retries: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No allocation; the next attempt starts at `retry_at` (never if `None`).
    Idle { retry_at: Option<Instant> },
    /// An Allocate is in flight (or a 437 clean-up before one).
    Allocating,
    /// Allocated.
    Allocated {
        relay: SocketAddr,
        expires_at: Instant,
        refresh_at: Instant,
    },
}

#[derive(Debug)]
struct Peer {
    /// `None`: no channel number was free; plain permission and Send indications.
    channel: Option<u16>,
    /// When the last binding (or permission) succeeded.
    bound_at: Option<Instant>,
    /// A binding request is in flight.
    pending: bool,
    failed_until: Option<Instant>,
    last_used: Instant,
    queue: Vec<Vec<u8>>,
}

impl Peer {
    fn usable(&self, now: Instant) -> bool {
        self.bound_at
            .is_some_and(|t| now < t + PERMISSION_LIFETIME - PERMISSION_MARGIN)
    }

    /// When the binding is refreshed, if the peer is still in use by then.
    fn refresh_at(&self) -> Option<Instant> {
        self.bound_at.map(|t| t + BINDING_REFRESH)
    }

    /// When the entry (and its channel number) can be forgotten.
    fn forget_at(&self) -> Instant {
        match self.bound_at {
            Some(t) => t + CHANNEL_LIFETIME + CHANNEL_QUARANTINE,
            None => self.failed_until.unwrap_or(self.last_used) + PEER_IDLE,
        }
    }
}

/// Counters of what went through the relay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TurnStats {
    /// Datagrams relayed from peers.
    pub packets_in: u64,
    /// Their application bytes.
    pub bytes_in: u64,
    /// Datagrams relayed to peers.
    pub packets_out: u64,
    /// Their application bytes.
    pub bytes_out: u64,
    /// Allocations made.
    pub allocations: u64,
}

/// One allocation on one TURN server. See the module documentation.
#[derive(Debug)]
pub struct TurnClient {
    config: TurnClientConfig,
    state: State,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    transactions: Vec<Transaction>,
    peers: HashMap<SocketAddr, Peer>,
    by_channel: HashMap<u16, SocketAddr>,
    next_channel: u16,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
    failures: u32,
    mismatch_cleared: bool,
    stats: TurnStats,
}

impl TurnClient {
    /// A client that starts allocating at the first [`handle_timeout`](Self::handle_timeout)
    /// (or at once: call it with `now`).
    pub fn new(config: TurnClientConfig, now: Instant) -> Self {
        TurnClient {
            config,
            state: State::Idle {
                retry_at: Some(now),
            },
            realm: None,
            nonce: None,
            key: None,
            transactions: Vec::new(),
            peers: HashMap::new(),
            by_channel: HashMap::new(),
            next_channel: FIRST_CHANNEL,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            failures: 0,
            mismatch_cleared: false,
            stats: TurnStats::default(),
        }
    }

    /// The TURN server's address.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The relayed address, while allocated.
    pub fn relay(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relay, .. } => Some(relay),
            _ => None,
        }
    }

    /// What went through so far.
    pub fn stats(&self) -> TurnStats {
        self.stats
    }

    /// How many peers have a binding (or are getting one).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The next datagram (or stream frame) to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (`None`: only
    /// when something else happens).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = match self.state {
            State::Idle { retry_at } => retry_at,
            State::Allocating => None,
            State::Allocated {
                expires_at,
                refresh_at,
                ..
            } => Some(if self.refreshing() {
                expires_at
            } else {
                refresh_at.min(expires_at)
            }),
        };
        let mut earlier = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        for tx in &self.transactions {
            earlier(tx.deadline);
            if !self.config.stream {
                earlier(tx.next_send);
            }
        }
        for peer in self.peers.values() {
            if peer.pending {
                continue;
            }
            if let Some(refresh) = peer.refresh_at() {
                if peer.last_used + PEER_IDLE >= refresh {
                    earlier(refresh);
                    continue;
                }
            }
            earlier(peer.forget_at());
        }
        at
    }

    fn refreshing(&self) -> bool {
        self.transactions
            .iter()
            .any(|t| matches!(t.kind, TxKind::Refresh { .. }))
    }

    /// Moves time forward: retransmits, gives up on requests, refreshes, retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Transactions: retransmit or time out.
        let mut timed_out = Vec::new();
        for tx in &mut self.transactions {
            if now >= tx.deadline {
                timed_out.push(tx.txid);
            } else if !self.config.stream && now >= tx.next_send {
                self.outbox.push_back(tx.bytes.clone());
                tx.rto = (tx.rto * 2).min(MAX_RTO);
                tx.next_send = now + tx.rto;
            }
        }
        for txid in timed_out {
            if let Some(tx) = self.take_transaction(&txid) {
                self.transaction_failed(tx, TurnError::Timeout(TRANSACTION_TIMEOUT), now);
            }
        }
        match self.state {
            State::Idle {
                retry_at: Some(retry_at),
            } if now >= retry_at => self.start_allocation(now),
            State::Allocated {
                expires_at,
                refresh_at,
                ..
            } => {
                if now >= expires_at {
                    self.lose(TurnError::Expired, now);
                } else if now >= refresh_at && !self.refreshing() {
                    self.request(
                        TxKind::Refresh {
                            lifetime: REQUESTED_LIFETIME,
                        },
                        now,
                    );
                }
            }
            _ => {}
        }
        if matches!(self.state, State::Allocated { .. }) {
            self.refresh_peers(now);
        }
    }

    fn refresh_peers(&mut self, now: Instant) {
        let mut rebind = Vec::new();
        let mut forget = Vec::new();
        for (addr, peer) in &self.peers {
            if peer.pending {
                continue;
            }
            if let Some(refresh) = peer.refresh_at() {
                if now >= refresh && peer.last_used + PEER_IDLE >= refresh {
                    rebind.push(*addr);
                    continue;
                }
            }
            if now >= peer.forget_at() {
                forget.push(*addr);
            }
        }
        for addr in forget {
            if let Some(peer) = self.peers.remove(&addr) {
                if let Some(ch) = peer.channel {
                    self.by_channel.remove(&ch);
                }
            }
        }
        for addr in rebind {
            if let Some(peer) = self.peers.get_mut(&addr) {
                peer.pending = true;
            }
            self.request(TxKind::Bind { peer: addr }, now);
        }
    }

    /// Wraps a datagram for `peer` (see [`SendOutcome`]).
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8], now: Instant) -> SendOutcome {
        if self.relay().is_none() {
            return SendOutcome::Dropped;
        }
        if !self.peers.contains_key(&peer) {
            let channel = self.free_channel();
            if let Some(ch) = channel {
                self.by_channel.insert(ch, peer);
            }
            self.peers.insert(
                peer,
                Peer {
                    channel,
                    bound_at: None,
                    pending: false,
                    failed_until: None,
                    last_used: now,
                    queue: Vec::new(),
                },
            );
        }
        let stream = self.config.stream;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return SendOutcome::Dropped;
        };
        entry.last_used = now;
        if entry.failed_until.is_some_and(|t| now < t) {
            return SendOutcome::Dropped;
        }
        if entry.usable(now) {
            self.stats.packets_out += 1;
            self.stats.bytes_out += data.len() as u64;
            return SendOutcome::Ready(frame(entry.channel, peer, data, stream));
        }
        if entry.queue.len() >= PEER_QUEUE {
            return SendOutcome::Dropped;
        }
        entry.queue.push(data.to_vec());
        if !entry.pending {
            entry.pending = true;
            entry.failed_until = None;
            self.request(TxKind::Bind { peer }, now);
        }
        SendOutcome::Queued
    }

    fn free_channel(&mut self) -> Option<u16> {
        let span = LAST_CHANNEL - FIRST_CHANNEL + 1;
        for _ in 0..span {
            let ch = self.next_channel;
            self.next_channel = if ch >= LAST_CHANNEL {
                FIRST_CHANNEL
            } else {
                ch + 1
            };
            if !self.by_channel.contains_key(&ch) {
                return Some(ch);
            }
        }
        None
    }

    /// Handles one datagram (or stream frame) from the server.
    pub fn handle_input<'a>(&mut self, packet: &'a [u8], now: Instant) -> Received<'a> {
        if proto::is_channel_data(packet) {
            let Some((ch, data)) = proto::parse_channel_data(packet) else {
                return Received::Ignored;
            };
            let Some(peer) = self.by_channel.get(&ch).copied() else {
                return Received::Ignored;
            };
            if let Some(p) = self.peers.get_mut(&peer) {
                p.last_used = now;
            }
            self.stats.packets_in += 1;
            self.stats.bytes_in += data.len() as u64;
            return Received::PeerData { peer, data };
        }
        let Some(msg) = Message::parse(packet) else {
            return Received::Ignored;
        };
        if !msg.fingerprint_ok() {
            return Received::Ignored;
        }
        match msg.class {
            Class::Indication if msg.method == method::DATA => {
                let (Some(peer), Some(data)) = (
                    msg.get_xor_address(attr::XOR_PEER_ADDRESS),
                    msg.get(attr::DATA),
                ) else {
                    return Received::Ignored;
                };
                if self.relay().is_none() {
                    return Received::Ignored;
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.last_used = now;
                }
                self.stats.packets_in += 1;
                self.stats.bytes_in += data.len() as u64;
                Received::PeerData { peer, data }
            }
            Class::Success | Class::Error => self.handle_response(&msg, now),
            _ => Received::Ignored,
        }
    }

    fn take_transaction(&mut self, txid: &[u8; 12]) -> Option<Transaction> {
        let at = self.transactions.iter().position(|t| &t.txid == txid)?;
        Some(self.transactions.swap_remove(at))
    }

    fn handle_response(&mut self, msg: &Message<'_>, now: Instant) -> Received<'static> {
        let Some(tx) = self.transactions.iter().find(|t| t.txid == msg.txid) else {
            return Received::Ignored;
        };
        let expected = match tx.kind {
            TxKind::Allocate => method::ALLOCATE,
            TxKind::Refresh { .. } => method::REFRESH,
            TxKind::Bind { peer } => {
                if self.peers.get(&peer).is_some_and(|p| p.channel.is_none()) {
                    method::CREATE_PERMISSION
                } else {
                    method::CHANNEL_BIND
                }
            }
        };
        if msg.method != expected {
            return Received::Ignored;
        }
        // A success to an authenticated request must prove it knows the key,
        // or anyone who saw the transaction id could forge it.
        if tx.authenticated && msg.class == Class::Success {
            let Some(key) = self.key else {
                return Received::Ignored;
            };
            if !msg.verify_integrity(&key) {
                tracing::debug!(server = %self.config.server, "TURN response with a bad MESSAGE-INTEGRITY dropped");
                return Received::Ignored;
            }
        }
        let Some(tx) = self.take_transaction(&msg.txid) else {
            return Received::Ignored;
        };
        if msg.class == Class::Success {
            self.on_success(tx, msg, now);
            return Received::Control;
        }
        let (code, reason) = msg.error_code().unwrap_or((0, "no ERROR-CODE"));
        let changed = matches!(code, 401 | 438) && self.learn_auth(msg);
        match code {
            // The first 401 brings what we need to authenticate: try again with
            // credentials.
            401 if !tx.authenticated => self.retry(tx, now),
            // A stale nonce (or a 401 that changed it) is retried, a few times.
            401 | 438 if changed && tx.nonce_retries < MAX_NONCE_RETRIES => {
                let mut tx = tx;
                tx.nonce_retries += 1;
                self.retry(tx, now);
            }
            401 => self.transaction_failed(tx, TurnError::Unauthorized, now),
            437 if tx.kind == TxKind::Allocate && !self.mismatch_cleared => {
                // An allocation already exists for our 5-tuple (a restart on the
                // same port): delete it, then allocate again.
                self.mismatch_cleared = true;
                self.request(TxKind::Refresh { lifetime: 0 }, now);
            }
            _ => self.transaction_failed(
                tx,
                TurnError::Rejected {
                    code,
                    reason: reason.to_string(),
                },
                now,
            ),
        }
        Received::Control
    }

    /// Takes REALM and NONCE from an error response; true if either changed.
    fn learn_auth(&mut self, msg: &Message<'_>) -> bool {
        let realm = msg.get_str(attr::REALM).map(str::to_string);
        let nonce = msg.get_str(attr::NONCE).map(str::to_string);
        let mut changed = false;
        if let Some(realm) = realm {
            if self.realm.as_ref() != Some(&realm) {
                self.key = Some(proto::long_term_key(
                    &self.config.username,
                    &realm,
                    &self.config.password,
                ));
                self.realm = Some(realm);
                changed = true;
            }
        }
        if let Some(nonce) = nonce {
            if self.nonce.as_ref() != Some(&nonce) {
                self.nonce = Some(nonce);
                changed = true;
            }
        }
        changed
    }

    /// Sends a request again (new transaction id, current credentials).
    fn retry(&mut self, tx: Transaction, now: Instant) {
        if self.key.is_none() || self.nonce.is_none() {
            self.transaction_failed(tx, TurnError::Malformed("401 without REALM and NONCE"), now);
            return;
        }
        let nonce_retries = tx.nonce_retries;
        self.request(tx.kind, now);
        if let Some(new) = self.transactions.last_mut() {
            new.nonce_retries = nonce_retries;
        }
    }

    fn on_success(&mut self, tx: Transaction, msg: &Message<'_>, now: Instant) {
        match tx.kind {
            TxKind::Allocate => {
                let Some(relay) = msg.get_xor_address(attr::XOR_RELAYED_ADDRESS) else {
                    self.fail_allocation(TurnError::Malformed("no XOR-RELAYED-ADDRESS"), now);
                    return;
                };
                let lifetime = Duration::from_secs(u64::from(
                    msg.get_u32(attr::LIFETIME).unwrap_or(REQUESTED_LIFETIME),
                ));
                let (expires_at, refresh_at) = expiry(lifetime, now);
                self.state = State::Allocated {
                    relay,
                    expires_at,
                    refresh_at,
                };
                self.failures = 0;
                self.mismatch_cleared = false;
                self.stats.allocations += 1;
                self.events.push_back(TurnEvent::Allocated {
                    relay,
                    mapped: msg.get_xor_address(attr::XOR_MAPPED_ADDRESS),
                    lifetime,
                });
            }
            TxKind::Refresh { lifetime: 0 } => {
                if self.state == State::Allocating {
                    // The 437 clean-up is done: allocate again.
                    self.request(TxKind::Allocate, now);
                } else {
                    self.reset_allocation();
                    self.state = State::Idle { retry_at: None };
                }
            }
            TxKind::Refresh { .. } => {
                if let State::Allocated { relay, .. } = self.state {
                    let lifetime = Duration::from_secs(u64::from(
                        msg.get_u32(attr::LIFETIME).unwrap_or(REQUESTED_LIFETIME),
                    ));
                    let (expires_at, refresh_at) = expiry(lifetime, now);
                    self.state = State::Allocated {
                        relay,
                        expires_at,
                        refresh_at,
                    };
                }
            }
            TxKind::Bind { peer } => {
                let stream = self.config.stream;
                let Some(entry) = self.peers.get_mut(&peer) else {
                    return;
                };
                entry.pending = false;
                entry.bound_at = Some(now);
                entry.failed_until = None;
                let queued = std::mem::take(&mut entry.queue);
                let channel = entry.channel;
                for data in queued {
                    self.stats.packets_out += 1;
                    self.stats.bytes_out += data.len() as u64;
                    self.outbox.push_back(frame(channel, peer, &data, stream));
                }
            }
        }
    }

    fn transaction_failed(&mut self, tx: Transaction, error: TurnError, now: Instant) {
        match tx.kind {
            TxKind::Allocate => self.fail_allocation(error, now),
            TxKind::Refresh { lifetime: 0 } => {
                if self.state == State::Allocating {
                    self.request(TxKind::Allocate, now);
                }
            }
            TxKind::Refresh { .. } => match (&error, self.state) {
                // A refresh lost in the network: try again shortly, the
                // allocation is still good until it expires.
                (
                    TurnError::Timeout(_),
                    State::Allocated {
                        relay, expires_at, ..
                    },
                ) => {
                    self.state = State::Allocated {
                        relay,
                        expires_at,
                        refresh_at: now + Duration::from_secs(5),
                    };
                }
                _ => self.lose(error, now),
            },
            TxKind::Bind { peer } => {
                tracing::debug!(server = %self.config.server, %peer, "TURN channel binding failed: {error}");
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.pending = false;
                    entry.bound_at = None;
                    entry.failed_until = Some(now + PEER_FAILURE_HOLD);
                    entry.queue.clear();
                }
            }
        }
    }

    fn fail_allocation(&mut self, error: TurnError, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let mut backoff = Duration::from_secs(2)
            .saturating_mul(1 << self.failures.min(8).saturating_sub(1))
            .min(Duration::from_secs(300));
        if error == TurnError::Unauthorized {
            backoff = backoff.max(Duration::from_secs(60));
        }
        let retry_at = now + backoff;
        self.reset_allocation();
        self.state = State::Idle {
            retry_at: Some(retry_at),
        };
        self.events.push_back(TurnEvent::Failed { error, retry_at });
    }

    fn lose(&mut self, error: TurnError, now: Instant) {
        self.reset_allocation();
        self.events.push_back(TurnEvent::Lost(error));
        self.start_allocation(now);
    }

    /// Forgets everything tied to the allocation (bindings, pending requests).
    fn reset_allocation(&mut self) {
        self.transactions.clear();
        self.peers.clear();
        self.by_channel.clear();
        self.next_channel = FIRST_CHANNEL;
    }

    fn start_allocation(&mut self, now: Instant) {
        self.state = State::Allocating;
        self.request(TxKind::Allocate, now);
    }

    /// Deletes the allocation (Refresh with LIFETIME 0), best effort: the
    /// request is queued once, and the client forgets the allocation at once.
    pub fn deallocate(&mut self) {
        if self.relay().is_some() {
            let txid = crate::net::stun::new_transaction_id();
            let bytes = self.build(TxKind::Refresh { lifetime: 0 }, txid);
            self.outbox.push_back(bytes);
        }
        self.reset_allocation();
        self.state = State::Idle { retry_at: None };
    }

    fn request(&mut self, kind: TxKind, now: Instant) {
        let txid = crate::net::stun::new_transaction_id();
        let bytes = self.build(kind, txid);
        self.outbox.push_back(bytes.clone());
        self.transactions.push(Transaction {
            txid,
            kind,
            bytes,
            authenticated: self.key.is_some() && self.nonce.is_some(),
            next_send: now + INITIAL_RTO,
            rto: INITIAL_RTO,
            deadline: now + TRANSACTION_TIMEOUT,
            nonce_retries: 0,
        });
    }

    fn build(&self, kind: TxKind, txid: [u8; 12]) -> Vec<u8> {
        let (m, peer) = match kind {
            TxKind::Allocate => (method::ALLOCATE, None),
            TxKind::Refresh { .. } => (method::REFRESH, None),
            TxKind::Bind { peer } => {
                let channel = self.peers.get(&peer).and_then(|p| p.channel);
                if channel.is_some() {
                    (method::CHANNEL_BIND, Some((peer, channel)))
                } else {
                    (method::CREATE_PERMISSION, Some((peer, None)))
                }
            }
        };
        let mut b = MessageBuilder::new(m, Class::Request, txid);
        match kind {
            TxKind::Allocate => {
                // UDP relaying (protocol 17), whatever carries us to the server.
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                if self.config.ipv6_relay {
                    b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
                }
                b.attr_u32(attr::LIFETIME, REQUESTED_LIFETIME);
            }
            TxKind::Refresh { lifetime } => {
                b.attr_u32(attr::LIFETIME, lifetime);
            }
            TxKind::Bind { .. } => {
                if let Some((peer, channel)) = peer {
                    if let Some(ch) = channel {
                        b.attr_u32(attr::CHANNEL_NUMBER, u32::from(ch) << 16);
                    }
                    b.xor_address(attr::XOR_PEER_ADDRESS, peer);
                }
            }
        }
        b.attr(attr::SOFTWARE, b"smallwebrtc");
        match (&self.realm, &self.nonce, &self.key) {
            (Some(realm), Some(nonce), Some(key)) => {
                b.attr(attr::USERNAME, self.config.username.as_bytes())
                    .attr(attr::REALM, realm.as_bytes())
                    .attr(attr::NONCE, nonce.as_bytes());
                b.finish(Some(key), true)
            }
            _ => b.finish(None, true),
        }
    }
}

fn expiry(lifetime: Duration, now: Instant) -> (Instant, Instant) {
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    (now + lifetime, now + lifetime - margin)
}

/// Wraps `data` for `peer`: ChannelData on `channel`, else a Send indication.
fn frame(channel: Option<u16>, peer: SocketAddr, data: &[u8], stream: bool) -> Vec<u8> {
    match channel {
        Some(ch) => {
            let mut out = Vec::with_capacity(data.len() + 8);
            proto::write_channel_data(&mut out, ch, data, stream);
            out
        }
        None => {
            let mut b = MessageBuilder::new(
                method::SEND,
                Class::Indication,
                crate::net::stun::new_transaction_id(),
            );
            b.xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data);
            b.finish(None, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "user";
    const PASS: &str = "pass";
    const REALM: &str = "smallwebrtc.test";

    fn server() -> SocketAddr {
        "127.0.0.1:3478".parse().unwrap()
    }
    fn relay() -> SocketAddr {
        "127.0.0.1:50000".parse().unwrap()
    }
    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], port))
    }

    fn client(now: Instant) -> TurnClient {
        TurnClient::new(
            TurnClientConfig {
                server: server(),
                stream: false,
                username: USER.into(),
                password: PASS.into(),
                ipv6_relay: false,
            },
            now,
        )
    }

    /// A fake TURN server: checks requests and writes the answers a real one would.
    struct FakeServer {
        nonce: String,
        password: String,
        stale_nonce_once: bool,
        channels: HashMap<u16, SocketAddr>,
        requests: Vec<u16>,
    }

    impl FakeServer {
        fn new() -> Self {
            FakeServer {
                nonce: "nonce-1".into(),
                password: PASS.into(),
                stale_nonce_once: false,
                channels: HashMap::new(),
                requests: Vec::new(),
            }
        }

        fn key(&self) -> [u8; 16] {
            proto::long_term_key(USER, REALM, &self.password)
        }

        fn error(&self, m: u16, txid: [u8; 12], code: u16, with_realm: bool) -> Vec<u8> {
            let mut b = MessageBuilder::new(m, Class::Error, txid);
            let mut value = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
            value.extend_from_slice(b"error");
            b.attr(attr::ERROR_CODE, &value);
            if with_realm {
                b.attr(attr::REALM, REALM.as_bytes());
            }
            b.attr(attr::NONCE, self.nonce.as_bytes());
            b.finish(None, true)
        }

        /// Answers one request; `None` for anything that is not a request.
        fn answer(&mut self, request: &[u8]) -> Option<Vec<u8>> {
            let msg = Message::parse(request)?;
            if msg.class == Class::Indication {
                return None; // a Send indication: data for a peer
            }
            assert_eq!(msg.class, Class::Request);
            assert!(
                msg.fingerprint_ok(),
                "every request carries a good FINGERPRINT"
            );
            self.requests.push(msg.method);
            if !msg.has_integrity() {
                return Some(self.error(msg.method, msg.txid, 401, true));
            }
            assert_eq!(msg.get_str(attr::USERNAME), Some(USER));
            assert_eq!(msg.get_str(attr::REALM), Some(REALM));
            if !msg.verify_integrity(&self.key()) {
                return Some(self.error(msg.method, msg.txid, 401, true));
            }
            if self.stale_nonce_once || msg.get_str(attr::NONCE) != Some(&self.nonce) {
                self.stale_nonce_once = false;
                self.nonce = format!("{}x", self.nonce);
                return Some(self.error(msg.method, msg.txid, 438, true));
            }
            let mut b = MessageBuilder::new(msg.method, Class::Success, msg.txid);
            match msg.method {
                method::ALLOCATE => {
                    assert_eq!(msg.get(attr::REQUESTED_TRANSPORT), Some(&[17, 0, 0, 0][..]));
                    b.xor_address(attr::XOR_RELAYED_ADDRESS, relay())
                        .xor_address(
                            attr::XOR_MAPPED_ADDRESS,
                            "203.0.113.1:4000".parse().unwrap(),
                        )
                        .attr_u32(attr::LIFETIME, 600);
                }
                method::REFRESH => {
                    b.attr_u32(attr::LIFETIME, msg.get_u32(attr::LIFETIME).unwrap());
                }
                method::CHANNEL_BIND => {
                    let ch = (msg.get_u32(attr::CHANNEL_NUMBER).unwrap() >> 16) as u16;
                    let peer = msg.get_xor_address(attr::XOR_PEER_ADDRESS).unwrap();
                    assert!((FIRST_CHANNEL..=LAST_CHANNEL).contains(&ch));
                    if let Some(bound) = self.channels.insert(ch, peer) {
                        assert_eq!(
                            bound, peer,
                            "a channel number is never rebound to another peer"
                        );
                    }
                }
                method::CREATE_PERMISSION => {}
                other => panic!("unexpected method {other:#x}"),
            }
            Some(b.finish(Some(&self.key()), true))
        }
    }

    /// Runs the client against the fake server until neither has anything to say.
    fn exchange(client: &mut TurnClient, server: &mut FakeServer, now: Instant) -> Vec<Vec<u8>> {
        let mut data = Vec::new();
        for _ in 0..100 {
            let Some(out) = client.poll_transmit() else {
                return data;
            };
            match server.answer(&out) {
                Some(answer) => {
                    client.handle_input(&answer, now);
                }
                None => data.push(out),
            }
        }
        panic!("the client never stops talking");
    }

    fn allocated(now: Instant) -> (TurnClient, FakeServer) {
        let mut c = client(now);
        let mut s = FakeServer::new();
        c.handle_timeout(now);
        exchange(&mut c, &mut s, now);
        assert_eq!(c.relay(), Some(relay()));
        assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
        (c, s)
    }

    #[test]
    fn allocates_after_the_401_dance() {
        let now = Instant::now();
        let mut c = client(now);
        let mut s = FakeServer::new();
        assert!(
            c.poll_transmit().is_none(),
            "nothing before the first timeout"
        );
        c.handle_timeout(now);
        exchange(&mut c, &mut s, now);
        assert_eq!(s.requests, vec![method::ALLOCATE, method::ALLOCATE]);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Allocated {
                relay: relay(),
                mapped: Some("203.0.113.1:4000".parse().unwrap()),
                lifetime: Duration::from_secs(600),
            })
        );
        assert_eq!(c.relay(), Some(relay()));
        assert_eq!(c.stats().allocations, 1);
    }

    #[test]
    fn wrong_credentials_are_reported_as_unauthorized_and_retried_later() {
        let now = Instant::now();
        let mut c = client(now);
        let mut s = FakeServer::new();
        s.password = "something else".into();
        c.handle_timeout(now);
        exchange(&mut c, &mut s, now);
        assert_eq!(s.requests.len(), 2, "one plain, one authenticated attempt");
        let Some(TurnEvent::Failed { error, retry_at }) = c.poll_event() else {
            panic!("allocation should fail");
        };
        assert_eq!(error, TurnError::Unauthorized);
        assert!(retry_at >= now + Duration::from_secs(60));
        assert_eq!(c.relay(), None);
        assert_eq!(c.poll_timeout(), Some(retry_at));
        // Nothing happens before the retry; at it, a new (authenticated) attempt.
        c.handle_timeout(retry_at - Duration::from_millis(1));
        assert!(c.poll_transmit().is_none());
        c.handle_timeout(retry_at);
        s.password = PASS.into();
        exchange(&mut c, &mut s, retry_at);
        assert_eq!(c.relay(), Some(relay()));
        assert_eq!(s.requests.len(), 3, "the realm and nonce are remembered");
    }

    #[test]
    fn stale_nonce_is_retried_with_the_new_nonce() {
        let now = Instant::now();
        let (mut c, mut s) = allocated(now);
        s.stale_nonce_once = true;
        let later = now + Duration::from_secs(541);
        c.handle_timeout(later);
        exchange(&mut c, &mut s, later);
        assert_eq!(
            &s.requests[2..],
            &[method::REFRESH, method::REFRESH],
            "refreshed after a 438"
        );
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.relay(), Some(relay()));
        // The refreshed allocation lives 600 s from now.
        assert_eq!(c.poll_timeout(), Some(later + Duration::from_secs(540)));
    }

    #[test]
    fn retransmits_over_udp_then_gives_up_and_backs_off() {
        let now = Instant::now();
        let mut c = client(now);
        c.handle_timeout(now);
        assert!(c.poll_transmit().is_some());
        let mut t = now;
        let mut sends = 0;
        while t < now + Duration::from_secs(11) {
            t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
            while c.poll_transmit().is_some() {
                sends += 1;
            }
            if c.poll_event().is_some() {
                break;
            }
        }
        // 0.3 + 0.6 + 1.2 + 2.4 + 3.2 (+3.2): five or six retransmissions in 10 s.
        assert!((5..=6).contains(&sends), "{sends} retransmissions");
        assert!(t >= now + TRANSACTION_TIMEOUT);
        assert!(c.relay().is_none());
    }

    #[test]
    fn no_retransmissions_over_a_stream() {
        let now = Instant::now();
        let mut c = client(now);
        c.config.stream = true;
        c.handle_timeout(now);
        assert!(c.poll_transmit().is_some());
        assert_eq!(c.poll_timeout(), Some(now + TRANSACTION_TIMEOUT));
        c.handle_timeout(now + Duration::from_secs(5));
        assert!(c.poll_transmit().is_none());
        c.handle_timeout(now + TRANSACTION_TIMEOUT);
        assert!(matches!(
            c.poll_event(),
            Some(TurnEvent::Failed {
                error: TurnError::Timeout(_),
                ..
            })
        ));
    }

    #[test]
    fn data_waits_for_the_channel_then_goes_as_channel_data() {
        let now = Instant::now();
        let (mut c, mut s) = allocated(now);
        assert_eq!(c.send_to(peer(1), b"first", now), SendOutcome::Queued);
        assert_eq!(c.send_to(peer(1), b"second", now), SendOutcome::Queued);
        let flushed = exchange(&mut c, &mut s, now);
        assert_eq!(s.requests.last(), Some(&method::CHANNEL_BIND));
        assert_eq!(s.requests.len(), 3, "one binding for both datagrams");
        assert_eq!(flushed.len(), 2);
        let (ch, data) = proto::parse_channel_data(&flushed[0]).unwrap();
        assert_eq!(data, b"first");
        assert_eq!(s.channels.get(&ch), Some(&peer(1)));
        // Now straight through, 4 bytes of overhead.
        let SendOutcome::Ready(bytes) = c.send_to(peer(1), b"third", now) else {
            panic!("bound");
        };
        assert_eq!(bytes.len(), 4 + 5);
        // Incoming on the channel maps back to the peer.
        let mut incoming = Vec::new();
        proto::write_channel_data(&mut incoming, ch, b"reply", false);
        assert_eq!(
            c.handle_input(&incoming, now),
            Received::PeerData {
                peer: peer(1),
                data: b"reply"
            }
        );
        // Unknown channel: ignored.
        let mut stray = Vec::new();
        proto::write_channel_data(&mut stray, ch + 1, b"x", false);
        assert_eq!(c.handle_input(&stray, now), Received::Ignored);
        // Another peer gets another channel.
        assert_eq!(c.send_to(peer(2), b"other", now), SendOutcome::Queued);
        let flushed = exchange(&mut c, &mut s, now);
        let (ch2, _) = proto::parse_channel_data(&flushed[0]).unwrap();
        assert_ne!(ch, ch2);
        let stats = c.stats();
        assert_eq!((stats.packets_out, stats.bytes_out), (4, 5 + 6 + 5 + 5));
        assert_eq!((stats.packets_in, stats.bytes_in), (1, 5));
    }

    #[test]
    fn data_indications_are_unwrapped() {
        let now = Instant::now();
        let (mut c, _s) = allocated(now);
        let mut b = MessageBuilder::new(method::DATA, Class::Indication, [5; 12]);
        b.xor_address(attr::XOR_PEER_ADDRESS, peer(9))
            .attr(attr::DATA, b"hi!");
        let bytes = b.finish(None, true);
        assert_eq!(
            c.handle_input(&bytes, now),
            Received::PeerData {
                peer: peer(9),
                data: b"hi!"
            }
        );
        // A stray response (unknown transaction) is ignored.
        let stray =
            MessageBuilder::new(method::ALLOCATE, Class::Success, [6; 12]).finish(None, true);
        assert_eq!(c.handle_input(&stray, now), Received::Ignored);
        assert_eq!(c.handle_input(b"garbage", now), Received::Ignored);
    }

    #[test]
    fn forged_success_without_integrity_is_ignored() {
        let now = Instant::now();
        let mut c = client(now);
        let mut s = FakeServer::new();
        c.handle_timeout(now);
        // Answer the first request with 401 so the second is authenticated.
        let first = c.poll_transmit().unwrap();
        c.handle_input(&s.answer(&first).unwrap(), now);
        let second = c.poll_transmit().unwrap();
        let msg = Message::parse(&second).unwrap();
        let mut forged = MessageBuilder::new(method::ALLOCATE, Class::Success, msg.txid);
        forged.xor_address(attr::XOR_RELAYED_ADDRESS, peer(666));
        assert_eq!(
            c.handle_input(&forged.finish(None, true), now),
            Received::Ignored
        );
        assert_eq!(c.relay(), None);
        c.handle_input(&s.answer(&second).unwrap(), now);
        assert_eq!(c.relay(), Some(relay()));
    }

    #[test]
    fn bindings_in_use_are_refreshed_idle_ones_lapse_and_are_forgotten() {
        let now = Instant::now();
        let (mut c, mut s) = allocated(now);
        c.send_to(peer(1), b"a", now);
        c.send_to(peer(2), b"b", now);
        exchange(&mut c, &mut s, now);
        let binds = |s: &FakeServer| {
            s.requests
                .iter()
                .filter(|m| **m == method::CHANNEL_BIND)
                .count()
        };
        assert_eq!(binds(&s), 2);
        // Peer 1 keeps talking, peer 2 goes quiet.
        let mut t = now;
        while t < now + BINDING_REFRESH {
            t += Duration::from_secs(10);
            assert!(matches!(c.send_to(peer(1), b"a", t), SendOutcome::Ready(_)));
            c.handle_timeout(t);
            exchange(&mut c, &mut s, t);
        }
        assert_eq!(binds(&s), 3, "only the peer in use was refreshed");
        assert_eq!(c.peer_count(), 2);
        // Peer 2's permission lapsed: sending again needs a new binding, on
        // the same channel number (it is still bound on the server).
        let later = now + PERMISSION_LIFETIME;
        assert_eq!(c.send_to(peer(2), b"b", later), SendOutcome::Queued);
        exchange(&mut c, &mut s, later);
        assert_eq!(binds(&s), 4);
        // Quiet for good: after lifetime + quarantine, both are forgotten.
        let mut t = later;
        let end = later + CHANNEL_LIFETIME + CHANNEL_QUARANTINE + Duration::from_secs(1);
        while t < end {
            t = c.poll_timeout().unwrap().min(end);
            c.handle_timeout(t);
            exchange(&mut c, &mut s, t);
        }
        assert_eq!(c.peer_count(), 0);
        assert_eq!(binds(&s), 4, "idle bindings are not refreshed");
        assert_eq!(c.relay(), Some(relay()), "the allocation itself is kept");
    }

    #[test]
    fn a_refused_binding_drops_data_for_a_while() {
        let now = Instant::now();
        let (mut c, _s) = allocated(now);
        assert_eq!(c.send_to(peer(1), b"a", now), SendOutcome::Queued);
        let bind = c.poll_transmit().unwrap();
        let msg = Message::parse(&bind).unwrap();
        let mut b = MessageBuilder::new(method::CHANNEL_BIND, Class::Error, msg.txid);
        b.attr(attr::ERROR_CODE, &[0, 0, 4, 3, b'n', b'o']);
        assert_eq!(
            c.handle_input(&b.finish(None, true), now),
            Received::Control
        );
        assert_eq!(c.send_to(peer(1), b"a", now), SendOutcome::Dropped);
        assert_eq!(
            c.send_to(peer(1), b"a", now + PEER_FAILURE_HOLD),
            SendOutcome::Queued
        );
    }

    #[test]
    fn queue_is_bounded() {
        let now = Instant::now();
        let (mut c, _s) = allocated(now);
        for _ in 0..PEER_QUEUE {
            assert_eq!(c.send_to(peer(1), b"a", now), SendOutcome::Queued);
        }
        assert_eq!(c.send_to(peer(1), b"a", now), SendOutcome::Dropped);
    }

    #[test]
    fn nothing_is_sent_without_an_allocation() {
        let now = Instant::now();
        let mut c = client(now);
        assert_eq!(c.send_to(peer(1), b"a", now), SendOutcome::Dropped);
    }

    #[test]
    fn a_failed_refresh_loses_the_allocation_and_reallocates() {
        let now = Instant::now();
        let (mut c, mut s) = allocated(now);
        c.send_to(peer(1), b"a", now);
        exchange(&mut c, &mut s, now);
        let at = now + Duration::from_secs(540);
        c.handle_timeout(at);
        let refresh = c.poll_transmit().unwrap();
        let msg = Message::parse(&refresh).unwrap();
        let mut b = MessageBuilder::new(method::REFRESH, Class::Error, msg.txid);
        b.attr(attr::ERROR_CODE, &[0, 0, 4, 37]);
        c.handle_input(&b.finish(None, true), at);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Lost(TurnError::Rejected {
                code: 437,
                reason: String::new()
            }))
        );
        assert_eq!(c.relay(), None);
        assert_eq!(c.peer_count(), 0, "bindings die with the allocation");
        exchange(&mut c, &mut s, at);
        assert_eq!(c.relay(), Some(relay()));
    }

    #[test]
    fn an_unanswered_refresh_is_retried_until_expiry() {
        let now = Instant::now();
        let (mut c, mut s) = allocated(now);
        let mut t = now + Duration::from_secs(540);
        c.handle_timeout(t);
        // Drop everything the client sends until the allocation expires.
        let expiry = now + Duration::from_secs(600);
        let mut refreshes = 0;
        while t < expiry {
            while let Some(out) = c.poll_transmit() {
                if Message::parse(&out).unwrap().method == method::REFRESH {
                    refreshes += 1;
                }
            }
            t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
        }
        assert!(refreshes > 6, "{refreshes}");
        assert_eq!(c.poll_event(), Some(TurnEvent::Lost(TurnError::Expired)));
        exchange(&mut c, &mut s, t);
        assert_eq!(c.relay(), Some(relay()));
    }

    #[test]
    fn allocation_mismatch_deletes_the_old_allocation_first() {
        let now = Instant::now();
        let mut c = client(now);
        let mut s = FakeServer::new();
        c.handle_timeout(now);
        let first = c.poll_transmit().unwrap();
        c.handle_input(&s.answer(&first).unwrap(), now);
        let second = c.poll_transmit().unwrap();
        let msg = Message::parse(&second).unwrap();
        let mut b = MessageBuilder::new(method::ALLOCATE, Class::Error, msg.txid);
        b.attr(attr::ERROR_CODE, &[0, 0, 4, 37]);
        c.handle_input(&b.finish(None, true), now);
        let delete = c.poll_transmit().unwrap();
        let msg = Message::parse(&delete).unwrap();
        assert_eq!(msg.method, method::REFRESH);
        assert_eq!(msg.get_u32(attr::LIFETIME), Some(0));
        c.handle_input(&s.answer(&delete).unwrap(), now);
        exchange(&mut c, &mut s, now);
        assert_eq!(c.relay(), Some(relay()));
    }

    #[test]
    fn channel_numbers_run_out_into_permissions_and_send_indications() {
        let now = Instant::now();
        let (mut c, mut s) = allocated(now);
        for ch in FIRST_CHANNEL..=LAST_CHANNEL {
            c.by_channel.insert(ch, peer(1));
        }
        assert_eq!(c.send_to(peer(3), b"data", now), SendOutcome::Queued);
        let flushed = exchange(&mut c, &mut s, now);
        assert_eq!(s.requests.last(), Some(&method::CREATE_PERMISSION));
        let msg = Message::parse(&flushed[0]).unwrap();
        assert_eq!((msg.method, msg.class), (method::SEND, Class::Indication));
        assert_eq!(msg.get_xor_address(attr::XOR_PEER_ADDRESS), Some(peer(3)));
        assert_eq!(msg.get(attr::DATA), Some(&b"data"[..]));
    }

    #[test]
    fn stream_channel_data_is_padded() {
        let now = Instant::now();
        let mut c = client(now);
        c.config.stream = true;
        let mut s = FakeServer::new();
        c.handle_timeout(now);
        exchange(&mut c, &mut s, now);
        c.send_to(peer(1), b"abcde", now);
        let flushed = exchange(&mut c, &mut s, now);
        assert_eq!(flushed[0].len(), 12);
    }

    #[test]
    fn deallocate_sends_a_zero_lifetime_refresh() {
        let now = Instant::now();
        let (mut c, _s) = allocated(now);
        c.deallocate();
        let msg = c.poll_transmit().unwrap();
        let msg = Message::parse(&msg).unwrap();
        assert_eq!(msg.method, method::REFRESH);
        assert_eq!(msg.get_u32(attr::LIFETIME), Some(0));
        assert_eq!(c.relay(), None);
    }
}
