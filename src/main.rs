//! `smallwebrtc serve`: a SmallWebRTC server with a built-in bot.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use smallwebrtc::bots;
use smallwebrtc::http::cluster::parse_peer;
use smallwebrtc::net::PortRange;
use smallwebrtc::server::{Server, ServerConfig, TlsConfig};
use smallwebrtc::signaling::ice_servers::parse_ice_server_args;
use smallwebrtc::ConnectionMode;

#[derive(Parser)]
#[command(
    name = "smallwebrtc",
    version,
    about = "Pipecat-compatible SmallWebRTC server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve SmallWebRTC sessions, each running a bot.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Policy {
    All,
    Relay,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Single,
    Multiple,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Host to listen on; its address is also what clients connect to over UDP.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// HTTP port.
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// The bot each session runs: echo or video-transform (bots::BOT_NAMES).
    #[arg(long, default_value = "echo")]
    bot: String,
    /// ICE servers: bare URLs, JSON objects {"urls","username","credential"},
    /// or a JSON array of either. May be repeated.
    #[arg(
        long = "ice-servers",
        env = "SMALLWEBRTC_ICE_SERVERS",
        value_name = "SERVERS"
    )]
    ice_servers: Vec<String>,
    /// One session at a time, or many.
    #[arg(long, value_enum, default_value = "multiple")]
    connection_mode: Mode,
    /// Munge answers for ESP32 clients (needs a non-localhost --host).
    #[arg(long)]
    esp32: bool,
    /// The UDP port every session shares (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    udp_port: u16,
    /// Instead of one shared UDP port: a port per session from LOW-HIGH (e.g.
    /// 40000-40099), given back when the session ends; offers beyond the range
    /// get 503.
    #[arg(long, value_name = "LOW-HIGH", conflicts_with = "udp_port")]
    udp_port_range: Option<PortRange>,
    /// The public IP of a 1:1 NAT in front of this host (a cloud VM's public
    /// address): announced as an extra host candidate on the same UDP port.
    /// Comma-separated or repeated; alias --nat-1to1. Default: env
    /// SMALLWEBRTC_PUBLIC_IP (empty = none).
    #[arg(
        long = "public-ip",
        visible_alias = "nat-1to1",
        value_name = "IP",
        value_delimiter = ','
    )]
    public_ips: Vec<IpAddr>,
    /// CORS origins allowed (comma-separated); default: any.
    #[arg(long, value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Refuse sessions beyond this many with 503 and Retry-After
    /// (default: 250 per CPU core; 0 = no limit).
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<String>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<String>,
    /// Serve HTTPS with a self-signed certificate made at start-up (a quick test
    /// from a phone on the same network: the browser warns once).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// Estimate each client's bandwidth from its transport-cc feedback (what browsers
    /// send), so the bot's video bitrate follows it. Costs pacing and up to 50 kbit/s of
    /// padding per video session; off, the video follows only REMB.
    #[arg(long)]
    video_bwe: bool,
    /// Which candidates answers carry: all, or only TURN relays.
    #[arg(long, value_enum, default_value = "all")]
    ice_transport_policy: Policy,
    /// This node's id (URL-safe): every session id and pc_id it issues starts with it.
    #[arg(long)]
    node_id: Option<String>,
    /// The other nodes, as ID=http://HOST:PORT (comma-separated or repeated):
    /// requests for their sessions are forwarded to them.
    #[arg(long, value_delimiter = ',', value_name = "ID=URL")]
    peers: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "smallwebrtc=info,tower_http=warn".into()),
        )
        .init();
    let Cli {
        command: Command::Serve(args),
    } = Cli::parse();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let bot = bots::by_name(&args.bot).ok_or_else(|| {
        format!(
            "unknown bot {:?}; built-in bots: {}",
            args.bot,
            bots::BOT_NAMES.join(", ")
        )
    })?;
    let ice_servers = parse_ice_server_args(&args.ice_servers).map_err(|e| e.to_string())?;
    let peers = args
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let public_ips = if args.public_ips.is_empty() {
        public_ips_from_env()?
    } else {
        args.public_ips
    };
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        bot,
        ice_servers,
        connection_mode: match args.connection_mode {
            Mode::Single => ConnectionMode::Single,
            Mode::Multiple => ConnectionMode::Multiple,
        },
        esp32: args.esp32,
        udp_port: args.udp_port,
        udp_port_range: args.udp_port_range,
        public_ips,
        allowed_origins: args.allowed_origins,
        max_sessions: match args.max_sessions {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(default_max_sessions()),
        },
        node_id: args.node_id,
        relay_only: args.ice_transport_policy == Policy::Relay,
        video_bwe: args.video_bwe,
        tls: match (args.tls_cert, args.tls_key, args.tls_self_signed) {
            (Some(cert), Some(key), _) => Some(TlsConfig::Files { cert, key }),
            (_, _, true) => Some(TlsConfig::SelfSigned),
            _ => None,
        },
        peers,
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.map_err(|e| e.to_string())?;
    let addr = server.http_addr();
    let scheme = if server.is_https() { "https" } else { "http" };
    let udp = match server.udp_port_range() {
        Some(range) => format!("UDP ports {range}, one per session"),
        None => format!("UDP port {}", server.udp_port()),
    };
    println!("smallwebrtc listening on {scheme}://{addr} ({udp}); open {scheme}://{addr}/client/");
    server
        .run(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// `SMALLWEBRTC_PUBLIC_IP`: comma-separated IPs. Read by hand rather than by
/// clap, so a container may set it empty (`-e SMALLWEBRTC_PUBLIC_IP=`) to mean none.
fn public_ips_from_env() -> Result<Vec<IpAddr>, String> {
    let Ok(value) = std::env::var(PUBLIC_IP_ENV) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| format!("{PUBLIC_IP_ENV}: {s:?} is not an IP address ({e})"))
        })
        .collect()
}

const PUBLIC_IP_ENV: &str = "SMALLWEBRTC_PUBLIC_IP";

/// Sessions one machine should take: an echo session costs well under 0.5% of a
/// core, so 250 per core leaves headroom for bots that do real work.
fn default_max_sessions() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) * 250
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
