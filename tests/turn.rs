//! TURN relay against a real coturn (Debian's `turnserver`) on loopback.
//!
//! Each test starts its own coturn on a free port with a generated configuration
//! (long-term credentials user/pass, loopback only, loopback peers allowed), so
//! `cargo test` alone runs them — inside `../shared/tools/nsrun`, like every test
//! that opens sockets. Without coturn installed they fail, saying so.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::client::{ClientEvent, ClientOptions, TestClient};
use serde_json::json;
use smallwebrtc::http::{router, AppState, RouterConfig};
use smallwebrtc::media::audio::{
    dominant_frequency, sine, tone_level_db, OpusDecoder, OpusEncoder,
};
use smallwebrtc::net::turn::RelayState;
use smallwebrtc::net::UdpMux;
use smallwebrtc::peer::{Endpoint, EndpointConfig};
use smallwebrtc::signaling::ice_servers::IceServer;
use smallwebrtc::signaling::{HandlerConfig, SmallWebRtcRequestHandler};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// coturn

/// A coturn on 127.0.0.1, killed on drop.
struct Coturn {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// The TLS port, when started with TLS.
    tls_port: Option<u16>,
}

/// A port free on 127.0.0.1 for both UDP and TCP.
fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = StdTcpListener::bind("127.0.0.1:0").expect("bind TCP");
        let port = tcp.local_addr().unwrap().port();
        if StdUdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Makes a CA and a certificate for 127.0.0.1 signed by it, with openssl.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=smallwebrtc test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

impl Coturn {
    fn start() -> Coturn {
        Coturn::launch(false)
    }

    /// Also listening for TLS, with a certificate for 127.0.0.1 from a test CA
    /// (`ca.pem` in its directory).
    fn start_with_tls() -> Coturn {
        Coturn::launch(true)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Starts coturn on free ports. A port is picked before coturn binds it, so another test's
    /// socket may get it first; coturn then retries the bind forever, so start again on new
    /// ports.
    fn launch(tls: bool) -> Coturn {
        for attempt in 1.. {
            match Coturn::try_launch(tls) {
                Ok(coturn) => return coturn,
                Err(log) if attempt < 10 && log.contains("errno=98") => {}
                Err(log) => panic!("coturn did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    fn try_launch(tls: bool) -> Result<Coturn, String> {
        match Command::new("turnserver").arg("--version").output() {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "coturn is not installed: `apt-get install -y coturn` (these tests need its \
                 `turnserver` binary)"
            ),
            Err(e) => panic!("cannot run turnserver: {e}"),
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "smallwebrtc-turn-test-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Relay ports: a range of its own per instance.
        let min_port = 20_000 + (port % 300) * 100;
        let tls_port = tls.then(free_port);
        let tls_config = match tls_port {
            Some(tls_port) => {
                make_certificates(&dir);
                format!(
                    "tls-listening-port={tls_port}\ncert={dir}/cert.pem\npkey={dir}/key.pem\n",
                    dir = dir.display()
                )
            }
            None => "no-tls\n".to_string(),
        };
        let config = format!(
            "{tls_config}\
             listening-ip=127.0.0.1\n\
             listening-port={port}\n\
             relay-ip=127.0.0.1\n\
             min-port={min_port}\n\
             max-port={}\n\
             realm=smallwebrtc.test\n\
             lt-cred-mech\n\
             user=user:pass\n\
             fingerprint\n\
             allow-loopback-peers\n\
             no-dtls\n\
             no-cli\n\
             no-rfc5780\n\
             userdb={dir}/turndb\n\
             pidfile={dir}/turnserver.pid\n\
             log-file={dir}/turnserver.log\n\
             simple-log\n\
             verbose\n",
            min_port + 99,
            dir = dir.display(),
        );
        std::fs::write(dir.join("turnserver.conf"), config).unwrap();
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(dir.join("turnserver.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let coturn = Coturn {
            child,
            dir,
            port,
            tls_port,
        };
        let started = Instant::now();
        loop {
            let log = coturn.log();
            if log.contains("UDP listener opened")
                && log.contains("TCP listener opened")
                && (!tls || log.contains("TLS/TCP listener opened"))
            {
                return Ok(coturn);
            }
            // Dropping `coturn` stops it and removes its directory.
            if log.contains("errno=98") || started.elapsed() > Duration::from_secs(10) {
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }

    fn url(&self, transport: &str) -> String {
        match transport {
            "udp" => format!("turn:127.0.0.1:{}", self.port),
            "tls" => format!(
                "turns:127.0.0.1:{}",
                self.tls_port.expect("started with TLS")
            ),
            other => format!("turn:127.0.0.1:{}?transport={other}", self.port),
        }
    }

    fn ice_server(&self, transport: &str, credential: &str) -> IceServer {
        IceServer::new(self.url(transport)).with_credentials("user", credential)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("coturn log kept in {}", self.dir.display());
        }
    }
}

// ---------------------------------------------------------------------------
// the server

struct Served {
    url: String,
    mux: UdpMux,
}

/// A server with the echo bot, configured with `ice_servers`; `relay_only`
/// announces relayed candidates only.
async fn serve(ice_servers: Vec<IceServer>, relay_only: bool) -> Served {
    capture_logs();
    smallwebrtc::server::init_crypto();
    let mux = UdpMux::bind(&["127.0.0.1".parse().unwrap()], 0)
        .await
        .expect("UDP port");
    let endpoint = Endpoint::new(mux.clone(), EndpointConfig::default());
    endpoint.set_relay_only(relay_only);
    let handler = SmallWebRtcRequestHandler::new(
        endpoint,
        HandlerConfig {
            ice_servers,
            ..HandlerConfig::default()
        },
    );
    let bot = smallwebrtc::bots::by_name("echo").expect("echo bot");
    let app = router(AppState::new(handler, bot), &RouterConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/offer", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served { url, mux }
}

/// Every log line of this test binary (all tests share it), for asserting
/// that a warning was given.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&capture_logs().lock().unwrap()).into_owned()
}

fn candidates(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// audio (as in tests/audio.rs)

/// Sends a 440 Hz tone from the client as 20 ms Opus packets.
fn send_tone(client: &TestClient, freq: f32) -> JoinHandle<()> {
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mid = client.mids()[0];
        let mut encoder = OpusEncoder::new(48_000, 1).unwrap();
        let tone = sine(freq, 48_000, 48_000 * 60, 0.3);
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for n in 0u64.. {
            ticker.tick().await;
            let start = (n as usize * 960) % (tone.len() - 960);
            let packet = encoder.encode(&tone[start..start + 960]).unwrap();
            let sent = client
                .with_rtc(move |rtc| {
                    let Some(writer) = rtc.writer(mid) else {
                        return;
                    };
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt())
                    else {
                        return;
                    };
                    let time = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
                    let _ = writer.write(pt, Instant::now(), time, packet);
                })
                .await;
            if sent.is_err() {
                return;
            }
        }
    })
}

/// What the client hears, decoded at 48 kHz.
fn hear(client: &TestClient) -> mpsc::UnboundedReceiver<Vec<i16>> {
    let mut events = client.events();
    let mid = client.mids()[0];
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut decoder = OpusDecoder::new(48_000, 1).unwrap();
        while let Ok(event) = events.recv().await {
            if let ClientEvent::MediaData { mid: m, data, .. } = event {
                if m == mid {
                    if let Ok(pcm) = decoder.decode(&data) {
                        if tx.send(pcm.to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

/// Waits until the echo bot plays the client's 440 Hz tone back.
async fn expect_tone_echo(client: &TestClient) {
    let mut heard = hear(client);
    let sender = send_tone(client, 440.0);
    let started = Instant::now();
    let mut pcm = Vec::new();
    loop {
        let chunk = tokio::time::timeout(WAIT, heard.recv())
            .await
            .expect("audio keeps coming")
            .expect("open");
        pcm.extend(chunk);
        if pcm.len() >= 9_600 {
            if tone_level_db(&pcm, 48_000, 440.0) > -30.0 {
                let freq = dominant_frequency(&pcm, 48_000);
                assert!((freq - 440.0).abs() < 5.0, "echo came back at {freq} Hz");
                break;
            }
            pcm.clear();
        }
        assert!(started.elapsed() < WAIT, "no echo of the tone");
    }
    sender.abort();
}

async fn expect_message_echo(client: &TestClient) {
    client.wait_channel_open(WAIT).await.expect("data channel");
    client
        .send_json(&json!({"via": "relay", "n": 1}))
        .await
        .unwrap();
    client
        .recv_json_matching(WAIT, |v| v["via"] == "relay")
        .await
        .expect("the echo bot answers through the relay");
}

/// A relay-only session over `transport` to coturn: only relayed candidates in
/// the answer, and messages and audio flow both ways through coturn.
async fn relay_only_session(transport: &str) {
    let coturn = if transport == "tls" {
        let coturn = Coturn::start_with_tls();
        // The relay trusts the system's roots, or these (read once per process:
        // this is the only test here that uses TLS).
        std::env::set_var("SSL_CERT_FILE", coturn.ca_file());
        coturn
    } else {
        Coturn::start()
    };
    let served = serve(vec![coturn.ice_server(transport, "pass")], true).await;
    let client = TestClient::start(&served.url, ClientOptions::js())
        .await
        .expect("answered");
    let answer = client.answer_sdp();
    let cands = candidates(&answer);
    assert!(!cands.is_empty(), "no candidate in the answer:\n{answer}");
    assert!(
        cands.iter().all(|c| c.contains("typ relay")),
        "relay-only answers carry only relayed candidates: {cands:#?}"
    );
    client
        .wait_connected(WAIT)
        .await
        .expect("connected through coturn");
    expect_message_echo(&client).await;
    expect_tone_echo(&client).await;

    // It really went through coturn: our relay counted the traffic both ways,
    // coturn bound our channel, and, once the allocation is deleted, coturn's
    // own accounting of what it relayed to and from the peer agrees.
    let relays = served.mux.relays();
    assert_eq!(relays.len(), 1, "{relays:?}");
    assert!(
        matches!(relays[0].state, RelayState::Ready { .. }),
        "{relays:?}"
    );
    let stats = relays[0].stats;
    assert!(
        stats.packets_in > 20 && stats.packets_out > 20,
        "relayed {stats:?}"
    );
    client.close().await;
    served.mux.shutdown(); // deletes the allocation: coturn logs its usage
    let started = Instant::now();
    let usage = loop {
        let log = coturn.log();
        if let Some(line) = log.lines().find(|l| l.contains("peer usage:")) {
            break line.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "coturn logged no usage:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = coturn.log();
    assert!(
        log.contains("CHANNEL_BIND processed, success"),
        "coturn bound no channel:\n{log}"
    );
    let count = |key: &str| -> u64 {
        let at = usage
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {usage}"))
            + key.len();
        usage[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    // rp: packets coturn received from the peer (the client), sp: sent to it.
    let (rp, sp) = (count("rp="), count("sp="));
    assert!(
        rp >= stats.packets_in && sp >= stats.packets_out.saturating_sub(5),
        "coturn relayed rp={rp} sp={sp}, we counted {stats:?}"
    );
}

#[tokio::test]
async fn a_relay_only_session_carries_audio_and_messages_through_coturn_over_udp() {
    relay_only_session("udp").await;
}

#[tokio::test]
async fn a_relay_only_session_carries_audio_and_messages_through_coturn_over_tcp() {
    relay_only_session("tcp").await;
}

#[tokio::test]
async fn a_relay_only_session_carries_audio_and_messages_through_coturn_over_tls() {
    relay_only_session("tls").await;
}

#[tokio::test]
async fn wrong_credentials_warn_clearly_and_the_session_connects_on_host_candidates() {
    let coturn = Coturn::start();
    let served = serve(vec![coturn.ice_server("udp", "not-the-password")], false).await;
    let client = TestClient::start(&served.url, ClientOptions::js())
        .await
        .expect("answered");
    let cands = candidates(&client.answer_sdp());
    assert!(
        cands.iter().any(|c| c.contains("typ host")),
        "host candidates kept: {cands:#?}"
    );
    assert!(
        !cands.iter().any(|c| c.contains("typ relay")),
        "no relay with refused credentials: {cands:#?}"
    );
    client
        .wait_connected(WAIT)
        .await
        .expect("connected on host");
    expect_message_echo(&client).await;

    let expected = format!(
        "TURN server {} refused our credentials (401 Unauthorized after authenticating): \
         check username/credential",
        coturn.url("udp")
    );
    assert!(
        logs().contains(&expected),
        "no clear warning; wanted {expected:?}"
    );
    let relays = served.mux.relays();
    assert!(
        matches!(&relays[0].state, RelayState::Failed(m) if m.contains("refused our credentials")),
        "{relays:?}"
    );
    // A second offer neither waits for nor repeats the failure.
    let started = Instant::now();
    let second = TestClient::start(&served.url, ClientOptions::js())
        .await
        .expect("answered");
    assert!(started.elapsed() < Duration::from_secs(1));
    second
        .wait_connected(WAIT)
        .await
        .expect("connected on host");
    assert_eq!(
        logs().matches(&expected).count(),
        1,
        "the warning is given once"
    );
    client.close().await;
    second.close().await;
}

#[tokio::test]
async fn every_configured_turn_server_gives_a_relayed_candidate() {
    let first = Coturn::start();
    let second = Coturn::start();
    let served = serve(
        vec![
            first.ice_server("udp", "pass"),
            // Two URLs in one entry, as browsers take them.
            IceServer {
                urls: smallwebrtc::signaling::ice_servers::IceUrls::Many(vec![
                    second.url("udp"),
                    second.url("tcp"),
                ]),
                username: Some("user".into()),
                credential: Some("pass".into()),
            },
        ],
        true,
    )
    .await;
    let client = TestClient::start(&served.url, ClientOptions::js())
        .await
        .expect("answered");
    let cands = candidates(&client.answer_sdp());
    let relayed: Vec<_> = cands.iter().filter(|c| c.contains("typ relay")).collect();
    assert_eq!(relayed.len(), 3, "one relay per TURN URL: {cands:#?}");
    let relays = served.mux.relays();
    assert_eq!(relays.len(), 3);
    let mut servers: Vec<SocketAddr> = relays.iter().map(|r| r.server).collect();
    servers.sort();
    servers.dedup();
    assert_eq!(servers.len(), 2, "both coturns: {relays:?}");
    client.wait_connected(WAIT).await.expect("connected");
    expect_message_echo(&client).await;
    client.close().await;
}

#[tokio::test]
async fn an_unreachable_turn_server_delays_an_offer_by_at_most_the_timeout() {
    // A port nobody listens on.
    let port = free_port();
    let served = serve(
        vec![IceServer::new(format!("turn:127.0.0.1:{port}")).with_credentials("user", "pass")],
        false,
    )
    .await;
    let started = Instant::now();
    let client = TestClient::start(&served.url, ClientOptions::js())
        .await
        .expect("answered");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_800),
        "answered after {took:?}"
    );
    assert!(!candidates(&client.answer_sdp())
        .iter()
        .any(|c| c.contains("typ relay")));
    client
        .wait_connected(WAIT)
        .await
        .expect("connected on host");
    client.close().await;
}

// ---------------------------------------------------------------------------
// measurements (not a test: run by hand, in release mode, for BENCHMARKS.md)
//
//   cargo test --release --test turn --no-run
//   ../shared/tools/nsrun cargo test --release --offline --test turn -- --ignored --nocapture measure

/// CPU time (user + system) of process `pid` ("self" for this one), from /proc.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Sends 20 ms Opus packets: the tone while `on`, silence otherwise.
fn send_switchable(client: &TestClient, on: Arc<std::sync::atomic::AtomicBool>) -> JoinHandle<()> {
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mid = client.mids()[0];
        let mut encoder = OpusEncoder::new(48_000, 1).unwrap();
        let tone = sine(440.0, 48_000, 48_000 * 60, 0.3);
        let silence = vec![0i16; 960];
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for n in 0u64.. {
            ticker.tick().await;
            let start = (n as usize * 960) % (tone.len() - 960);
            let pcm = if on.load(std::sync::atomic::Ordering::Relaxed) {
                &tone[start..start + 960]
            } else {
                &silence[..]
            };
            let packet = encoder.encode(pcm).unwrap();
            let sent = client
                .with_rtc(move |rtc| {
                    let Some(writer) = rtc.writer(mid) else {
                        return;
                    };
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt())
                    else {
                        return;
                    };
                    let time = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
                    let _ = writer.write(pt, Instant::now(), time, packet);
                })
                .await;
            if sent.is_err() {
                return;
            }
        }
    })
}

fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

struct Mode {
    name: &'static str,
    transport: Option<&'static str>,
}

const MODES: [Mode; 3] = [
    Mode {
        name: "direct (host candidates)",
        transport: None,
    },
    Mode {
        name: "relayed, UDP to coturn",
        transport: Some("udp"),
    },
    Mode {
        name: "relayed, TCP to coturn",
        transport: Some("tcp"),
    },
];

async fn serve_mode(mode: &Mode, coturn: &Coturn) -> Served {
    match mode.transport {
        None => serve(vec![], false).await,
        Some(t) => serve(vec![coturn.ice_server(t, "pass")], true).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a test: run by hand in release mode"]
async fn measure_relay_overhead() {
    let coturn = Coturn::start();
    let coturn_pid = coturn.child.id().to_string();
    println!("\n## data-channel round trip (echo bot), 300 messages, one session\n");
    println!("| path | median | p99 | max |\n|---|---|---|---|");
    for mode in &MODES {
        let served = serve_mode(mode, &coturn).await;
        let client = TestClient::start(&served.url, ClientOptions::js())
            .await
            .unwrap();
        client.wait_channel_open(WAIT).await.unwrap();
        let mut rtts = Vec::new();
        for i in 0..320 {
            let sent = Instant::now();
            client.send_json(&json!({"seq": i})).await.unwrap();
            client
                .recv_json_matching(WAIT, |v| v["seq"] == i)
                .await
                .unwrap();
            if i >= 20 {
                rtts.push(sent.elapsed());
            }
        }
        rtts.sort();
        println!(
            "| {} | {} | {} | {} |",
            mode.name,
            ms(percentile(&rtts, 0.5)),
            ms(percentile(&rtts, 0.99)),
            ms(*rtts.last().unwrap())
        );
        client.close().await;
        served.mux.shutdown();
    }

    println!(
        "\n## audio echo latency: tone on → first loud echoed frame heard, 4 sessions × 5 onsets\n"
    );
    println!("| path | median | p90 | max |\n|---|---|---|---|");
    for mode in &MODES {
        let served = serve_mode(mode, &coturn).await;
        let mut lags = Vec::new();
        // Several sessions: the client's 20 ms clock and the bot's fall in a
        // different phase in each, which moves the echo by up to a frame.
        for _ in 0..4 {
            let client = TestClient::start(&served.url, ClientOptions::js())
                .await
                .unwrap();
            client.wait_connected(WAIT).await.unwrap();
            let on = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sender = send_switchable(&client, on.clone());
            let mut heard = hear(&client);
            tokio::time::sleep(Duration::from_millis(500)).await;
            for _ in 0..5 {
                // Quiet first, until the echo is quiet too.
                on.store(false, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(600)).await;
                while heard.try_recv().is_ok() {}
                on.store(true, std::sync::atomic::Ordering::Relaxed);
                let start = Instant::now();
                loop {
                    let pcm = tokio::time::timeout(WAIT, heard.recv())
                        .await
                        .unwrap()
                        .unwrap();
                    if rms(&pcm) > 1000.0 {
                        lags.push(start.elapsed());
                        break;
                    }
                }
            }
            sender.abort();
            client.close().await;
        }
        lags.sort();
        println!(
            "| {} | {} | {} | {} |",
            mode.name,
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.9)),
            ms(*lags.last().unwrap())
        );
        served.mux.shutdown();
    }

    const SESSIONS: usize = 10;
    const SECONDS: u64 = 20;
    println!(
        "\n## CPU: {SESSIONS} sessions, each a continuous tone echoed back (50 packets/s each way), {SECONDS} s\n"
    );
    println!("| path | this process (server + clients) | per session | coturn | coturn per session |\n|---|---|---|---|---|");
    for mode in &MODES {
        let served = serve_mode(mode, &coturn).await;
        let mut clients = Vec::new();
        let mut senders = Vec::new();
        let mut ears = Vec::new();
        for _ in 0..SESSIONS {
            let client = TestClient::start(&served.url, ClientOptions::js())
                .await
                .unwrap();
            client.wait_connected(WAIT).await.unwrap();
            senders.push(send_tone(&client, 440.0));
            ears.push(hear(&client));
            clients.push(client);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (ours, theirs) = (cpu_time("self"), cpu_time(&coturn_pid));
        let mut frames = 0usize;
        let end = Instant::now() + Duration::from_secs(SECONDS);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for ear in &mut ears {
                while ear.try_recv().is_ok() {
                    frames += 1;
                }
            }
        }
        let ours = cpu_time("self") - ours;
        let theirs = cpu_time(&coturn_pid) - theirs;
        let pct = |d: Duration| d.as_secs_f64() / SECONDS as f64 * 100.0;
        println!(
            "| {} | {:.1}% of a core | {:.2}% | {:.1}% | {:.2}% |",
            mode.name,
            pct(ours),
            pct(ours) / SESSIONS as f64,
            pct(theirs),
            pct(theirs) / SESSIONS as f64,
        );
        let expected = SESSIONS as u64 * SECONDS * 50;
        assert!(
            frames as u64 > expected * 8 / 10,
            "only {frames} echoed frames of {expected}"
        );
        for s in senders {
            s.abort();
        }
        for c in clients {
            c.close().await;
        }
        served.mux.shutdown();
    }
}
