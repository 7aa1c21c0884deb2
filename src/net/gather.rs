//! Local candidates: which IPs to bind and announce, and server-reflexive
//! addresses learned from STUN servers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::mux::UdpMux;

/// True when `host` names only this machine (`localhost`, `127.x.y.z`, `::1`).
///
/// ```
/// use smallwebrtc::net::gather::is_loopback_host;
/// assert!(is_loopback_host("localhost"));
/// assert!(is_loopback_host("127.0.0.1"));
/// assert!(!is_loopback_host("0.0.0.0"));
/// ```
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The IPs to bind the shared UDP port on, for a server listening on `host`.
///
/// - `localhost` → `127.0.0.1`, and `::1` too when this machine has it, so
///   loopback clients of either family connect;
/// - `127.x.y.z` → `127.0.0.1`; `::1` → `::1`;
/// - `0.0.0.0` → every non-loopback IPv4 interface address (loopback if there is none);
/// - `::` → every non-loopback interface address, IPv4 and IPv6;
/// - an IP → that IP;
/// - a name → what it resolves to.
pub async fn host_ips(host: &str) -> io::Result<Vec<IpAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        if has_ipv6_loopback() {
            ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        return Ok(ips);
    }
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) if v4.is_loopback() => Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        Ok(IpAddr::V4(v4)) if v4.is_unspecified() => Ok(interface_ips(false)),
        Ok(IpAddr::V6(v6)) if v6.is_unspecified() => Ok(interface_ips(true)),
        Ok(ip) => Ok(vec![ip]),
        Err(_) => {
            let mut ips: Vec<IpAddr> = tokio::net::lookup_host((bare, 0))
                .await
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot resolve host {host:?}: {e}"))
                })?
                .map(|a| a.ip())
                .collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("host {host:?} resolves to no address"),
                ));
            }
            Ok(ips)
        }
    }
}

/// Whether `::1` can be bound here (IPv6 may be disabled, e.g. in containers).
fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

fn interface_ips(with_v6: bool) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            // Link-local v6 needs a scope id a candidate cannot carry.
            IpAddr::V6(v6) => with_v6 && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        if with_v6 {
            ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
    }
    ips
}

/// How long a learned server-reflexive address is trusted before asking again.
const REFLEXIVE_TTL: Duration = Duration::from_secs(300);

/// Server-reflexive addresses of the shared port, asked of STUN servers and cached.
///
/// Every session shares one port, so its reflexive address is the same for all
/// of them: one STUN round trip serves every offer for five minutes, and an
/// offer waits at most `timeout` for a server that does not answer.
#[derive(Debug)]
pub struct ReflexiveCache {
    timeout: Duration,
    entries: Mutex<Vec<CachedReflexive>>,
}

#[derive(Debug, Clone)]
struct CachedReflexive {
    server: String,
    local: SocketAddr,
    mapped: Option<SocketAddr>,
    at: Instant,
}

impl ReflexiveCache {
    /// A cache whose queries give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        ReflexiveCache {
            timeout,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The reflexive address of each socket of `mux` bound on one of `locals`
    /// (a session's addresses: the shared ones, or its own port's), as seen by
    /// each STUN server (`host:port`), as `(mapped, base)` pairs. Servers are
    /// asked concurrently; failures are logged and skipped. Results (failures
    /// too) are cached.
    pub async fn gather(
        &self,
        mux: &UdpMux,
        locals: &[SocketAddr],
        servers: &[String],
    ) -> Vec<(SocketAddr, SocketAddr)> {
        let now = Instant::now();
        let mut jobs = Vec::new();
        let mut found = Vec::new();
        for server in servers {
            for &local in locals {
                let cached = self.lookup(server, local, now);
                match cached {
                    Some(Some(mapped)) => found.push((mapped, local)),
                    Some(None) => {}
                    None => jobs.push((server.clone(), local)),
                }
            }
        }
        let timeout = self.timeout;
        let queries = jobs.into_iter().map(|(server, local)| async move {
            let result = tokio::time::timeout(timeout, query(mux, &server, local, timeout)).await;
            let mapped = match result {
                Ok(Ok(addr)) => Some(addr),
                Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::debug!(%server, %local, "STUN server skipped: {e}");
                    None
                }
                Ok(Err(e)) => {
                    tracing::warn!(%server, %local, "STUN query failed: {e}");
                    None
                }
                Err(_) => {
                    tracing::warn!(%server, %local, "STUN server did not answer within {timeout:?}");
                    None
                }
            };
            (server, local, mapped)
        });
        for (server, local, mapped) in futures_util::future::join_all(queries).await {
            if let Some(m) = mapped {
                found.push((m, local));
            }
            self.store(CachedReflexive {
                server,
                local,
                mapped,
                at: Instant::now(),
            });
        }
        found.sort();
        found.dedup();
        found
    }

    fn lookup(&self, server: &str, local: SocketAddr, now: Instant) -> Option<Option<SocketAddr>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|e| {
                e.server == server && e.local == local && now.duration_since(e.at) < REFLEXIVE_TTL
            })
            .map(|e| e.mapped)
    }

    fn store(&self, entry: CachedReflexive) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| !(e.server == entry.server && e.local == entry.local));
        entries.push(entry);
    }
}

async fn query(
    mux: &UdpMux,
    server: &str,
    local: SocketAddr,
    timeout: Duration,
) -> io::Result<SocketAddr> {
    // Only a server this socket can reach: same IP family, and loopback only
    // from loopback (a public STUN server never answers a 127.0.0.1 socket).
    let target = tokio::net::lookup_host(server)
        .await?
        .find(|a| {
            a.is_ipv4() == local.is_ipv4() && a.ip().is_loopback() == local.ip().is_loopback()
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{server} is not reachable from {local}"),
            )
        })?;
    mux.query_reflexive(local, target, timeout).await
}
