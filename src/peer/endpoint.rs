//! [`Endpoint`]: what every peer connection of a server shares — the UDP mux,
//! which candidates to announce, and the timeouts.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use str0m::Candidate;

use crate::net::gather::ReflexiveCache;
use crate::net::turn::{TurnServer, TurnTransport};
use crate::net::UdpMux;
use crate::signaling::ice_servers::{IceScheme, IceServer, IceTransport};

/// Timeouts of a peer connection. The defaults are those of Pipecat's original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection still not connected after this long is closed (60 s).
    pub connecting: Duration,
    /// Outgoing messages are queued this long after connecting for a data channel
    /// to open, then dropped (10 s).
    pub data_channel: Duration,
    /// A connected session that has heard nothing from its client this long is
    /// closed, as ICE consent freshness prescribes (30 s). A live client is never
    /// silent that long: ICE consent checks alone arrive every few seconds.
    pub consent: Duration,
    /// A client that sent pings and then stopped for this long counts as not
    /// connected for sending (3 s).
    pub ping_liveness: Duration,
    /// The longest an offer waits for a STUN server, or for the first
    /// allocation on a TURN server (2 s).
    pub stun: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connecting: Duration::from_secs(60),
            data_channel: Duration::from_secs(10),
            consent: Duration::from_secs(30),
            ping_liveness: Duration::from_secs(3),
            stun: Duration::from_secs(2),
        }
    }
}

/// Settings of an [`Endpoint`].
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// Extra host-candidate IPs, each announced with the port of the session's
    /// own host candidates, for servers behind a 1:1 NAT (`--public-ip`, alias
    /// `--nat-1to1`): a cloud VM whose public IP maps every port to its private IP.
    pub public_ips: Vec<IpAddr>,
    /// Prefix of every `pc_id` (a node id, for several machines).
    pub pc_id_prefix: String,
    /// Timeouts of each connection.
    pub timeouts: Timeouts,
    /// Run str0m's send-side bandwidth estimation (TWCC) on sessions whose offer has
    /// video, so the bot's video bitrate follows browsers (they send transport-cc
    /// feedback, not REMB). It paces every packet and pads up to 50 kbit/s when
    /// video sends less, so it is for servers whose bots send video.
    pub send_side_bwe: bool,
}

struct Inner {
    mux: UdpMux,
    config: EndpointConfig,
    reflexive: ReflexiveCache,
    relay_only: AtomicBool,
}

/// What the peer connections of one server share. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("mux", &self.inner.mux)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Endpoint {
    /// An endpoint over `mux`.
    pub fn new(mux: UdpMux, config: EndpointConfig) -> Self {
        let reflexive = ReflexiveCache::new(config.timeouts.stun);
        Endpoint {
            inner: Arc::new(Inner {
                mux,
                config,
                reflexive,
                relay_only: AtomicBool::new(false),
            }),
        }
    }

    /// The shared UDP mux.
    pub fn mux(&self) -> &UdpMux {
        &self.inner.mux
    }

    /// The connection timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.inner.config.timeouts
    }

    /// Whether sessions with video run send-side bandwidth estimation.
    pub fn send_side_bwe(&self) -> bool {
        self.inner.config.send_side_bwe
    }

    /// A fresh, unguessable `pc_id`: the prefix and 128 random bits in hex.
    pub fn new_pc_id(&self) -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let mut id = self.inner.config.pc_id_prefix.clone();
        for b in bytes {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }

    /// Starts allocating on every TURN server in `ice_servers` without waiting,
    /// so the first offer finds the relays ready (call it at start-up; offers
    /// would otherwise start them and wait for them, once).
    pub async fn start_relays(&self, ice_servers: &[IceServer]) {
        let servers = turn_servers(ice_servers);
        if !servers.is_empty() {
            self.inner
                .mux
                .relay_candidates(&servers, Duration::ZERO)
                .await;
        }
    }

    /// Announce only relayed (TURN) candidates from now on: the server side of
    /// `iceTransportPolicy: "relay"`. Every session's media then goes through a
    /// TURN server, whatever the client offers; with no TURN server working, no
    /// session connects. Off by default.
    pub fn set_relay_only(&self, relay_only: bool) {
        self.inner.relay_only.store(relay_only, Ordering::Relaxed);
    }

    /// Whether only relayed candidates are announced ([`set_relay_only`](Self::set_relay_only)).
    pub fn relay_only(&self) -> bool {
        self.inner.relay_only.load(Ordering::Relaxed)
    }

    /// Every candidate an answer should carry, for a session on the shared
    /// sockets: see [`local_candidates_at`](Self::local_candidates_at).
    pub async fn local_candidates(&self, ice_servers: &[IceServer]) -> Vec<Candidate> {
        self.local_candidates_at(&self.inner.mux.local_addrs(), ice_servers)
            .await
    }

    /// Every candidate an answer should carry for a session reached on
    /// `locals` ([`MuxSession::local_addrs`](crate::net::MuxSession::local_addrs):
    /// the shared sockets, or the session's own port of a port range): a host
    /// candidate per address (IPv4 and IPv6 alike), one per `--public-ip` on
    /// the same port, the server-reflexive address of each of them from each
    /// STUN server in `ice_servers`, and a relayed address from each TURN server
    /// in it (one shared allocation per server; see [`crate::net::turn`]). With
    /// [`relay_only`](Self::relay_only), just the relayed ones.
    pub async fn local_candidates_at(
        &self,
        locals: &[SocketAddr],
        ice_servers: &[IceServer],
    ) -> Vec<Candidate> {
        let mux = &self.inner.mux;
        let relay_only = self.relay_only();
        let mut out = Vec::new();
        if !relay_only {
            for addr in locals {
                push_candidate(&mut out, Candidate::host(*addr, "udp"), addr);
            }
            // Every local address shares one port (the shared one, or the
            // session's own): a 1:1 NAT maps the public IP's same port to it.
            if let Some(port) = locals.first().map(|a| a.port()) {
                for ip in &self.inner.config.public_ips {
                    let addr = SocketAddr::new(*ip, port);
                    if !locals.contains(&addr) {
                        push_candidate(&mut out, Candidate::host(addr, "udp"), &addr);
                    }
                }
            }
        }
        let stun_servers: Vec<String> = if relay_only {
            Vec::new()
        } else {
            ice_servers
                .iter()
                .flat_map(|s| s.parsed_urls())
                .filter_map(|u| u.ok())
                .filter(|u| u.scheme == IceScheme::Stun)
                .map(|u| host_port(&u.host, u.port))
                .collect()
        };
        let turn_servers = turn_servers(ice_servers);
        let timeout = self.inner.config.timeouts.stun;
        let reflexive = async {
            if stun_servers.is_empty() {
                Vec::new()
            } else {
                self.inner
                    .reflexive
                    .gather(mux, locals, &stun_servers)
                    .await
            }
        };
        let relayed = async {
            if turn_servers.is_empty() {
                Vec::new()
            } else {
                mux.relay_candidates(&turn_servers, timeout).await
            }
        };
        let (reflexive, relayed) = futures_util::future::join(reflexive, relayed).await;
        for (mapped, base) in reflexive {
            if locals.iter().any(|l| l.ip() == mapped.ip()) {
                continue; // no NAT in between: the host candidate says it all
            }
            push_candidate(
                &mut out,
                Candidate::server_reflexive(mapped, base, "udp"),
                &mapped,
            );
        }
        for (relay, base) in relayed {
            push_candidate(&mut out, Candidate::relayed(relay, base, "udp"), &relay);
        }
        if relay_only && out.is_empty() {
            tracing::warn!("relay-only: no TURN relay is available, the answer has no candidate");
        }
        out
    }
}

/// Every TURN URL of `ice_servers` (each `turn:`/`turns:` URL of each entry, in
/// order, without duplicates) with its entry's credentials.
pub fn turn_servers(ice_servers: &[IceServer]) -> Vec<TurnServer> {
    let mut out: Vec<TurnServer> = Vec::new();
    for server in ice_servers {
        let (Some(username), Some(credential)) = (&server.username, &server.credential) else {
            continue;
        };
        for url in server.parsed_urls().into_iter().flatten() {
            let transport = match (url.scheme, url.transport) {
                (IceScheme::Turn, None | Some(IceTransport::Udp)) => TurnTransport::Udp,
                (IceScheme::Turn, Some(IceTransport::Tcp)) => TurnTransport::Tcp,
                (IceScheme::Turns, None | Some(IceTransport::Tcp)) => TurnTransport::Tls,
                // DTLS to the TURN server: not a thing we speak.
                (IceScheme::Turns, Some(IceTransport::Udp)) => continue,
                _ => continue,
            };
            let turn = TurnServer {
                url: url.to_string(),
                host: url.host.clone(),
                port: url.port,
                transport,
                username: username.clone(),
                credential: credential.clone(),
            };
            if !out.contains(&turn) {
                out.push(turn);
            }
        }
    }
    out
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn push_candidate(
    out: &mut Vec<Candidate>,
    candidate: Result<Candidate, str0m::error::IceError>,
    addr: &SocketAddr,
) {
    match candidate {
        Ok(c) => out.push(c),
        Err(e) => tracing::warn!(%addr, "cannot announce candidate: {e}"),
    }
}
