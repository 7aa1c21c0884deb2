//! How clients reach the server over UDP: a port per session from
//! `--udp-port-range`, the `--public-ip`/`--nat-1to1` candidate, IPv6 host
//! candidates (`::1`), over real WebRTC sessions on loopback.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`
//! (`../shared/tools/nsrun cargo test --offline --test reach`).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::client::{ClientOptions, OfferShape, TestClient};
use serde_json::{json, Value};
use smallwebrtc::net::{PortRange, UdpMux};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::signaling::ice_servers::IceServer;
use str0m::change::SdpAnswer;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// Generous: the machine is shared and may be busy building.
const WAIT: Duration = Duration::from_secs(20);

struct Running {
    base: String,
    mux: UdpMux,
}

impl Running {
    fn offer_url(&self) -> String {
        format!("{}/api/offer", self.base)
    }
}

/// The server with the echo bot, on an HTTP port of its own.
async fn start(config: ServerConfig) -> Running {
    let server = Server::bind(ServerConfig { port: 0, ..config })
        .await
        .expect("server binds");
    let addr = server.http_addr();
    let base = if addr.is_ipv6() {
        format!("http://[{}]:{}", addr.ip(), addr.port())
    } else {
        format!("http://{addr}")
    };
    let mux = server.udp_mux();
    tokio::spawn(server.run(std::future::pending()));
    Running { base, mux }
}

/// Every `a=candidate` of an SDP as (address, type).
fn candidates(sdp: &str) -> Vec<(SocketAddr, String)> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            let ip: IpAddr = f.get(4)?.parse().ok()?;
            let port: u16 = f.get(5)?.parse().ok()?;
            let kind = f.get(7)?.to_string();
            Some((SocketAddr::new(ip, port), kind))
        })
        .collect()
}

/// A JS-shaped client that connected and got its app message echoed.
async fn echoing_client(url: &str, tag: &str) -> TestClient {
    let client = TestClient::start(url, ClientOptions::js())
        .await
        .unwrap_or_else(|e| panic!("{tag}: {e}"));
    assert_echo(&client, tag).await;
    client
}

async fn assert_echo(client: &TestClient, tag: &str) {
    client
        .wait_channel_open(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{tag}: {e}"));
    let message = json!({"probe": tag});
    client.send_json(&message).await.expect("send");
    client
        .recv_json_matching(WAIT, |v| v == &message)
        .await
        .unwrap_or_else(|e| panic!("{tag}: no echo: {e}"));
}

/// Waits (polling: the mux has no event for it) until `n` ports are leased.
async fn wait_ports_in_use(mux: &UdpMux, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while mux.ports_in_use() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} ports in use, expected {n}",
            mux.ports_in_use()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn range(low: u16, high: u16) -> PortRange {
    PortRange::new(low, high).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_range_gives_each_session_its_own_port_then_refuses_then_reuses() {
    let server = start(ServerConfig {
        host: "127.0.0.1".into(),
        udp_port_range: Some(range(41000, 41002)),
        ..ServerConfig::default()
    })
    .await;
    assert!(
        server.mux.local_addrs().is_empty(),
        "no shared socket: sessions can only be reached on their own port"
    );
    let url = server.offer_url();

    let mut clients = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let client = echoing_client(&url, &format!("client {i}")).await;
        let hosts = candidates(&client.answer_sdp());
        assert_eq!(hosts.len(), 1, "one host candidate: {hosts:?}");
        let (addr, kind) = &hosts[0];
        assert_eq!(kind, "host");
        assert!(
            (41000..=41002).contains(&addr.port()),
            "candidate {addr} is outside 41000-41002"
        );
        ports.push(addr.port());
        clients.push(client);
    }
    ports.sort();
    assert_eq!(ports, vec![41000, 41001, 41002], "a port each");
    assert_eq!(server.mux.ports_in_use(), 3);

    // Range exhausted: the fourth offer is refused, clearly.
    let refused = TestClient::start(&url, ClientOptions::js())
        .await
        .err()
        .expect("a fourth session cannot have a port");
    assert_eq!(refused.status, Some(503), "{}", refused.message);
    let body = refused.body.unwrap_or_default();
    assert!(
        body.contains("no free UDP port in the range 41000-41002")
            && body.contains("3 used by sessions"),
        "{body}"
    );
    // A raw offer gets the same, with Retry-After (the JS client retries 5xx).
    let raw = reqwest::Client::new()
        .post(&url)
        .json(&json!({"sdp": common::offers::offer_without_peer(), "type": "offer"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(raw.status(), 503);
    assert!(raw.headers().contains_key("retry-after"));
    let detail: Value = raw.json().await.expect("JSON body");
    assert!(
        detail["detail"]
            .as_str()
            .is_some_and(|d| d.contains("41000-41002")),
        "{detail}"
    );
    // ...and the sessions already running did not notice.
    for (i, client) in clients.iter().enumerate() {
        assert_echo(client, &format!("client {i} while full")).await;
    }

    // A session ends: its port goes back to the range and the next session gets it.
    let freed = ports[1];
    let leaving = clients.remove(
        clients
            .iter()
            .position(|c| candidates(&c.answer_sdp())[0].0.port() == freed)
            .unwrap(),
    );
    leaving.close().await;
    wait_ports_in_use(&server.mux, 2).await;
    let next = echoing_client(&url, "after one left").await;
    let hosts = candidates(&next.answer_sdp());
    assert_eq!(hosts[0].0.port(), freed, "the freed port is reused");
    assert_eq!(server.mux.ports_in_use(), 3);

    // Everyone leaves: every port is free again.
    next.close().await;
    for client in clients {
        client.close().await;
    }
    wait_ports_in_use(&server.mux, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_vanishes_gives_its_port_back_when_it_times_out() {
    let server = start(ServerConfig {
        host: "127.0.0.1".into(),
        udp_port_range: Some(range(41100, 41100)),
        timeouts: smallwebrtc::peer::Timeouts {
            consent: Duration::from_secs(2),
            ..Default::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let url = server.offer_url();
    let gone = echoing_client(&url, "vanishing").await;
    gone.vanish();
    // Consent freshness closes the session; then its one port is free again.
    wait_ports_in_use(&server.mux, 0).await;
    let back = echoing_client(&url, "after the vanished one").await;
    assert_eq!(candidates(&back.answer_sdp())[0].0.port(), 41100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_port_settings_are_refused_with_the_reason() {
    let both = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        udp_port: 41200,
        udp_port_range: Some(range(41201, 41202)),
        ..ServerConfig::default()
    })
    .await
    .err()
    .expect("both a port and a range");
    assert!(
        both.to_string()
            .contains("--udp-port and --udp-port-range cannot be used together"),
        "{both}"
    );

    let turn = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        udp_port_range: Some(range(41203, 41204)),
        ice_servers: vec![IceServer {
            urls: smallwebrtc::signaling::ice_servers::IceUrls::One("turn:127.0.0.1:3478".into()),
            username: Some("u".into()),
            credential: Some("p".into()),
        }],
        ..ServerConfig::default()
    })
    .await
    .err()
    .expect("TURN needs the shared port");
    assert!(
        turn.to_string().contains("relays need the shared port"),
        "{turn}"
    );

    // Every port of the range taken by another program: said at start-up.
    let _squatter = std::net::UdpSocket::bind("127.0.0.1:41205").unwrap();
    let taken = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        udp_port_range: Some(range(41205, 41205)),
        ..ServerConfig::default()
    })
    .await
    .err()
    .expect("no usable port");
    assert!(
        taken
            .to_string()
            .contains("no port of the UDP port range 41205-41205 can be bound"),
        "{taken}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_1to1_announces_the_public_ip_on_the_sessions_port() {
    let public: IpAddr = "203.0.113.7".parse().unwrap();
    // The shared port.
    let shared = start(ServerConfig {
        host: "127.0.0.1".into(),
        public_ips: vec![public],
        ..ServerConfig::default()
    })
    .await;
    let client = echoing_client(&shared.offer_url(), "shared port").await;
    let port = shared.mux.port();
    let found = candidates(&client.answer_sdp());
    assert!(
        found.contains(&(
            SocketAddr::new("127.0.0.1".parse().unwrap(), port),
            "host".into()
        )) && found.contains(&(SocketAddr::new(public, port), "host".into())),
        "private and public host candidates on port {port}: {found:?}"
    );
    client.close().await;

    // A port per session: the public candidate follows the session's port.
    let ranged = start(ServerConfig {
        host: "127.0.0.1".into(),
        public_ips: vec![public],
        udp_port_range: Some(range(41300, 41301)),
        ..ServerConfig::default()
    })
    .await;
    let mut keep = Vec::new();
    for i in 0..2 {
        let client = echoing_client(&ranged.offer_url(), &format!("ranged {i}")).await;
        let found = candidates(&client.answer_sdp());
        let port = found[0].0.port();
        assert!((41300..=41301).contains(&port), "{found:?}");
        assert_eq!(
            found,
            vec![
                (
                    SocketAddr::new("127.0.0.1".parse().unwrap(), port),
                    "host".into()
                ),
                (SocketAddr::new(public, port), "host".into()),
            ]
        );
        keep.push(client); // connected, so the next one gets the other port
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esp32_answers_still_keep_only_candidates_on_the_host() {
    let server = start(ServerConfig {
        host: "127.0.0.1".into(),
        esp32: true,
        public_ips: vec!["203.0.113.7".parse().unwrap()],
        ..ServerConfig::default()
    })
    .await;
    let client = TestClient::start(
        &server.offer_url(),
        ClientOptions::for_shape(OfferShape::Esp32),
    )
    .await
    .expect("esp32 offer answered");
    let found = candidates(&client.answer_sdp());
    assert_eq!(
        found,
        vec![(
            SocketAddr::new("127.0.0.1".parse().unwrap(), server.mux.port()),
            "host".into()
        )],
        "the public-IP candidate does not match --host and is dropped"
    );
    client.wait_connected(WAIT).await.expect("connects");
}

// ---------------------------------------------------------------------------
// IPv6

/// What an IPv6 client saw.
struct V6Session {
    answer: String,
    /// Every address the client sent to.
    sent_to: Vec<SocketAddr>,
}

/// A minimal WebRTC client on `[::1]`: offers a data channel with its one
/// host candidate, connects, and waits for `message` to come back (the echo bot).
async fn ipv6_client_echo(offer_url: &str, message: &Value) -> Result<V6Session, String> {
    common::client::ensure_crypto();
    let socket = UdpSocket::bind("[::1]:0")
        .await
        .map_err(|e| format!("binding [::1]:0: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    let mut api = rtc.sdp_api();
    let channel = api.add_channel("chat".into());
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?
        .post(offer_url)
        .json(&json!({"sdp": offer.to_sdp_string(), "type": "offer"}))
        .send()
        .await
        .map_err(|e| format!("POST {offer_url}: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("POST {offer_url}: {status}: {body}"));
    }
    let answer = body["sdp"].as_str().ok_or("no sdp")?.to_string();
    let parsed = SdpAnswer::from_sdp_string(&answer).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, parsed)
        .map_err(|e| e.to_string())?;

    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent_to = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut sent = false;
    loop {
        let wake = match rtc.poll_output().map_err(|e| e.to_string())? {
            Output::Transmit(t) => {
                if !sent_to.contains(&t.destination) {
                    sent_to.push(t.destination);
                }
                let _ = socket.send_to(&t.contents, t.destination).await;
                continue;
            }
            Output::Event(Event::ChannelOpen(id, _)) if id == channel && !sent => {
                let mut ch = rtc.channel(channel).ok_or("channel gone")?;
                ch.write(false, message.to_string().as_bytes())
                    .map_err(|e| e.to_string())?;
                sent = true;
                continue;
            }
            Output::Event(Event::ChannelData(data)) => {
                let got: Value = serde_json::from_slice(&data.data).unwrap_or(Value::Null);
                if &got == message {
                    return Ok(V6Session { answer, sent_to });
                }
                continue;
            }
            Output::Event(_) => continue,
            Output::Timeout(t) => t,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no echo within {WAIT:?} (channel open: {sent}, sent to {sent_to:?})"
            ));
        }
        let sleep = wake.saturating_duration_since(Instant::now());
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r.map_err(|e| e.to_string())?;
                let contents = buf[..n].try_into().map_err(|e| format!("{e:?}"))?;
                Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents,
                })
            }
            _ = tokio::time::sleep(sleep.min(Duration::from_millis(100))) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input).map_err(|e| e.to_string())?;
    }
}

fn ipv6_loopback_available() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_ipv6_loopback_connects_to_a_server_on_ipv6_loopback() {
    if !ipv6_loopback_available() {
        eprintln!("SKIPPED: ::1 is not configured here (ip -6 addr shows no ::1)");
        return;
    }
    let server = start(ServerConfig {
        host: "::1".into(),
        ..ServerConfig::default()
    })
    .await;
    assert!(server.base.starts_with("http://[::1]:"), "{}", server.base);
    let message = json!({"over": "ipv6"});
    let session = ipv6_client_echo(&server.offer_url(), &message)
        .await
        .expect("echo over IPv6");
    let port = server.mux.port();
    assert_eq!(
        candidates(&session.answer),
        vec![(SocketAddr::new("::1".parse().unwrap(), port), "host".into())]
    );
    assert_eq!(
        session.sent_to,
        vec![SocketAddr::new("::1".parse().unwrap(), port)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_offers_both_families_and_each_connects() {
    if !ipv6_loopback_available() {
        eprintln!("SKIPPED: ::1 is not configured here (ip -6 addr shows no ::1)");
        return;
    }
    for udp_port_range in [None, Some(range(41400, 41403))] {
        let server = start(ServerConfig {
            host: "localhost".into(),
            udp_port_range,
            ..ServerConfig::default()
        })
        .await;
        // An IPv6 client: its checks go to ::1 only (str0m pairs by family).
        let message = json!({"over": "ipv6", "range": udp_port_range.is_some()});
        let session = ipv6_client_echo(&server.offer_url(), &message)
            .await
            .expect("echo over IPv6");
        let found = candidates(&session.answer);
        let port = found[0].0.port();
        assert_eq!(
            found,
            vec![
                (
                    SocketAddr::new("127.0.0.1".parse().unwrap(), port),
                    "host".into()
                ),
                (SocketAddr::new("::1".parse().unwrap(), port), "host".into()),
            ],
            "one port, both loopback families"
        );
        assert!(session.sent_to.iter().all(SocketAddr::is_ipv6));
        // An IPv4 client, as before.
        let v4 = echoing_client(&server.offer_url(), "ipv4 beside ipv6").await;
        let v4_found = candidates(&v4.answer_sdp());
        assert_eq!(v4_found.len(), 2, "{v4_found:?}");
        if udp_port_range.is_some() {
            assert_ne!(v4_found[0].0.port(), port, "its own port");
            assert!((41400..=41403).contains(&v4_found[0].0.port()));
        }
        v4.close().await;
    }
}

/// The shared socket set is what `--host ::` gives: IPv6 interface addresses
/// beside IPv4 ones, here only loopback's. Binding a mux on both families at
/// once keeps one port number for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mux_on_both_families_uses_one_port_number() {
    if !ipv6_loopback_available() {
        eprintln!("SKIPPED: ::1 is not configured here");
        return;
    }
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let mux = UdpMux::bind(&ips, 0).await.expect("binds");
    let addrs = mux.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].port(), addrs[1].port());
    assert!(addrs[1].is_ipv6());
}

/// A STUN server on loopback that plays a 1:1 NAT: it answers every Binding
/// request with `public` and the port the request came from.
async fn nat_stun_server(public: std::net::Ipv4Addr) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if n < 20 || buf[0..2] != [0x00, 0x01] {
                continue;
            }
            let cookie = 0x2112_A442u32;
            let mut reply = vec![0x01, 0x01, 0x00, 0x0c];
            reply.extend_from_slice(&cookie.to_be_bytes());
            reply.extend_from_slice(&buf[8..20]); // transaction id
            reply.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]); // XOR-MAPPED-ADDRESS, IPv4
            reply.extend_from_slice(&(from.port() ^ (cookie >> 16) as u16).to_be_bytes());
            reply.extend_from_slice(&(u32::from(public) ^ cookie).to_be_bytes());
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_learns_each_sessions_own_port_through_the_nat() {
    let public = std::net::Ipv4Addr::new(198, 51, 100, 9);
    let stun = nat_stun_server(public).await;
    let server = start(ServerConfig {
        host: "127.0.0.1".into(),
        udp_port_range: Some(range(41500, 41501)),
        ice_servers: vec![IceServer::new(format!("stun:{stun}"))],
        ..ServerConfig::default()
    })
    .await;
    let mut keep = Vec::new();
    for i in 0..2 {
        let client = echoing_client(&server.offer_url(), &format!("behind NAT {i}")).await;
        let found = candidates(&client.answer_sdp());
        let port = found[0].0.port();
        assert_eq!(
            found,
            vec![
                (
                    SocketAddr::new("127.0.0.1".parse().unwrap(), port),
                    "host".into()
                ),
                (SocketAddr::new(public.into(), port), "srflx".into()),
            ],
            "the reflexive address of this session's own port"
        );
        keep.push(client);
    }
}
