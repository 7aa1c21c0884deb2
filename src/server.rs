//! A whole server from a configuration: what `smallwebrtc serve` runs, and what
//! tests start in-process.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use smallwebrtc::server::{Server, ServerConfig};
//!
//! let server = Server::bind(ServerConfig {
//!     port: 0, // any free port
//!     ..ServerConfig::default()
//! })
//! .await?;
//! println!("listening on http://{}", server.http_addr());
//! server.run(std::future::pending()).await
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::bots::{self, Bot};
use crate::http::cluster::Cluster;
use crate::http::tls::{TlsIdentity, TlsListener};
use crate::http::{router, AppState, RouterConfig};
use crate::net::gather::host_ips;
use crate::net::{PortRange, UdpMux};
use crate::peer::{Endpoint, EndpointConfig, Timeouts};
use crate::signaling::ice_servers::IceServer;
use crate::signaling::{ConnectionMode, HandlerConfig, SmallWebRtcRequestHandler};

/// Everything a server needs to know.
#[derive(Clone)]
pub struct ServerConfig {
    /// Host to listen on (HTTP) and to announce candidates for (`localhost`).
    pub host: String,
    /// HTTP port (7860; 0 picks a free one).
    pub port: u16,
    /// The bot each session runs (`echo`).
    pub bot: Arc<dyn Bot>,
    /// ICE servers for the server's candidates and `/start`'s `iceConfig`.
    pub ice_servers: Vec<IceServer>,
    /// Single or multiple sessions.
    pub connection_mode: ConnectionMode,
    /// Munge answers for ESP32 clients.
    pub esp32: bool,
    /// The UDP port every session shares (0 picks a free one).
    pub udp_port: u16,
    /// Instead of one shared port: a port per session, leased from this range
    /// and given back when the session ends (`--udp-port-range`). Offers that
    /// find every port taken get 503. Needs `udp_port` 0.
    pub udp_port_range: Option<PortRange>,
    /// Extra host-candidate IPs, announced with the sessions' port, for a
    /// server behind a 1:1 NAT (`--public-ip` / `--nat-1to1`).
    pub public_ips: Vec<IpAddr>,
    /// CORS origins; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Refuse sessions beyond this many with 503.
    pub max_sessions: Option<usize>,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// This node's id, prefixing every session id and `pc_id` it issues.
    pub node_id: Option<String>,
    /// The other nodes, as `(id, base URL)`: requests for their ids are forwarded.
    pub peers: Vec<(String, String)>,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<TlsConfig>,
    /// Announce only relay (TURN) candidates, like a client's
    /// `iceTransportPolicy: "relay"`: every session's media goes through TURN.
    pub relay_only: bool,
    /// Estimate the bandwidth to each client from its transport-cc feedback, so the
    /// bot's video bitrate follows it (see
    /// [`EndpointConfig::send_side_bwe`](crate::peer::endpoint::EndpointConfig)). Off by
    /// default: it costs pacing and padding, which bots that send no video do not need.
    pub video_bwe: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "localhost".into(),
            port: 7860,
            bot: bots::by_name("echo").expect("the echo bot is built in"),
            ice_servers: Vec::new(),
            connection_mode: ConnectionMode::Multiple,
            esp32: false,
            udp_port: 0,
            udp_port_range: None,
            public_ips: Vec::new(),
            allowed_origins: Vec::new(),
            max_sessions: None,
            timeouts: Timeouts::default(),
            node_id: None,
            peers: Vec::new(),
            relay_only: false,
            tls: None,
            video_bwe: false,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("ice_servers", &self.ice_servers)
            .field("connection_mode", &self.connection_mode)
            .field("esp32", &self.esp32)
            .field("udp_port", &self.udp_port)
            .field("udp_port_range", &self.udp_port_range)
            .field("public_ips", &self.public_ips)
            .finish_non_exhaustive()
    }
}

/// Where HTTPS gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// PEM files: certificate chain and private key.
    Files {
        /// The certificate chain.
        cert: String,
        /// The private key.
        key: String,
    },
    /// A certificate made at start-up for the host name (browsers warn once).
    SelfSigned,
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsIdentity>,
    handler: SmallWebRtcRequestHandler,
    state: AppState,
    mux: UdpMux,
    app: axum::Router,
}

/// How long a shutdown waits for bots to finish after their clients got `peerLeft`.
const BOT_GRACE: Duration = Duration::from_secs(3);

/// Installs str0m's crypto provider once per process and builds a first `Rtc`,
/// so the first client does not pay its one-time set-up (~30 ms).
pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        str0m::crypto::from_feature_flags().install_process_default();
        let _ = str0m::Rtc::builder().build(Instant::now());
    });
}

impl Server {
    /// Binds the HTTP listener and the shared UDP port.
    pub async fn bind(config: ServerConfig) -> io::Result<Server> {
        // As in the original: ESP32 munging keeps only candidates on --host, so
        // the default "localhost" makes no sense with it.
        if config.esp32 && config.host.eq_ignore_ascii_case("localhost") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "For ESP32, you need to specify `--host IP` so we can do SDP munging.",
            ));
        }
        let cluster = Cluster::new(config.node_id.clone(), config.peers.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        init_crypto();
        let ips = host_ips(&config.host).await?;
        let mux = match config.udp_port_range {
            None => UdpMux::bind(&ips, config.udp_port).await?,
            Some(_) if config.udp_port != 0 => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--udp-port and --udp-port-range cannot be used together: one shared \
                     port, or a port per session from a range",
                ))
            }
            // TURN allocations live on the shared port, which a range has not.
            Some(range) if !crate::peer::endpoint::turn_servers(&config.ice_servers).is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "--udp-port-range {range} cannot be used with TURN servers in \
                         --ice-servers (relays need the shared port): use --udp-port"
                    ),
                ))
            }
            Some(range) => UdpMux::bind_range(&ips, range)?,
        };
        let endpoint = Endpoint::new(
            mux.clone(),
            EndpointConfig {
                public_ips: config.public_ips.clone(),
                pc_id_prefix: format!("{}pc-", cluster.id_prefix()),
                timeouts: config.timeouts,
                send_side_bwe: config.video_bwe,
            },
        );
        endpoint.set_relay_only(config.relay_only);
        if config.relay_only && crate::peer::endpoint::turn_servers(&config.ice_servers).is_empty()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a relay-only ICE policy needs a TURN server in --ice-servers",
            ));
        }
        // Allocate on every TURN server now, so the first client does not wait.
        endpoint.start_relays(&config.ice_servers).await;
        let handler = SmallWebRtcRequestHandler::new(
            endpoint,
            HandlerConfig {
                ice_servers: config.ice_servers.clone(),
                esp32_mode: config.esp32,
                host: Some(config.host.clone()),
                connection_mode: config.connection_mode,
                max_sessions: config.max_sessions,
            },
        );
        let state = AppState::new(handler.clone(), config.bot.clone()).with_cluster(cluster);
        let app = router(
            state.clone(),
            &RouterConfig {
                allowed_origins: config.allowed_origins.clone(),
            },
        )
        .layer(tower_http::trace::TraceLayer::new_for_http());
        let http_host = if config.host.eq_ignore_ascii_case("localhost") {
            "127.0.0.1"
        } else {
            config.host.trim_start_matches('[').trim_end_matches(']')
        };
        let listener = TcpListener::bind((http_host, config.port))
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {http_host}:{}: {e}", config.port),
                )
            })?;
        let tls = match &config.tls {
            None => None,
            Some(TlsConfig::Files { cert, key }) => Some(TlsIdentity::from_pem_files(cert, key)?),
            Some(TlsConfig::SelfSigned) => {
                let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
                names.push(config.host.clone());
                names.extend(config.public_ips.iter().map(|ip| ip.to_string()));
                names.extend(
                    if_addrs::get_if_addrs()
                        .unwrap_or_default()
                        .iter()
                        .map(|i| i.ip().to_string()),
                );
                names.sort();
                names.dedup();
                Some(TlsIdentity::self_signed(&names)?)
            }
        };
        Ok(Server {
            listener,
            tls,
            handler,
            state,
            mux,
            app,
        })
    }

    /// True when serving HTTPS.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// The certificate served over HTTPS (leaf, DER), if any.
    pub fn tls_certificate(&self) -> Option<Vec<u8>> {
        self.tls
            .as_ref()
            .and_then(|t| t.certs.first())
            .map(|c| c.to_vec())
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The shared UDP port (0 with a port range).
    pub fn udp_port(&self) -> u16 {
        self.mux.port()
    }

    /// The range sessions lease their UDP port from, if configured.
    pub fn udp_port_range(&self) -> Option<PortRange> {
        self.mux.port_range()
    }

    /// How many ports of the range sessions hold right now (0 without a range).
    pub fn udp_ports_in_use(&self) -> usize {
        self.mux.ports_in_use()
    }

    /// The UDP mux (a clone: it stays usable after [`run`](Self::run) takes the
    /// server), e.g. to watch [`UdpMux::ports_in_use`] or the shared addresses.
    pub fn udp_mux(&self) -> UdpMux {
        self.mux.clone()
    }

    /// The request handler (sessions, ICE servers).
    pub fn handler(&self) -> &SmallWebRtcRequestHandler {
        &self.handler
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: new offers
    /// get 503, every client gets `peerLeft` and is disconnected, bots get up to
    /// 3 s to finish, and in-flight HTTP requests are answered.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let handler = self.handler.clone();
        let state = self.state.clone();
        let trimming = tokio::spawn(crate::memory::trim_after_sessions_end(handler.clone()));
        let graceful = async move {
            shutdown.await;
            tracing::info!(
                "shutting down: disconnecting {} sessions",
                handler.session_count()
            );
            handler.close().await;
            if tokio::time::timeout(BOT_GRACE, state.bots_finished())
                .await
                .is_err()
            {
                tracing::warn!(
                    "{} bots still running after {BOT_GRACE:?}; leaving them",
                    state.bots_running()
                );
            }
        };
        let result = match self.tls {
            None => {
                axum::serve(self.listener, self.app)
                    .with_graceful_shutdown(graceful)
                    .await
            }
            Some(identity) => {
                axum::serve(TlsListener::new(self.listener, identity)?, self.app)
                    .with_graceful_shutdown(graceful)
                    .await
            }
        };
        trimming.abort();
        self.mux.shutdown();
        result
    }
}
