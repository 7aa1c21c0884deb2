//! Whole sessions over real WebRTC on loopback: a str0m client peer shaped like
//! the official JS client (or a raw/ESP32 client) against the server in-process.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::{ClientOptions, OfferShape, TestClient};
use serde_json::{json, Value};
use smallwebrtc::bots::{echo, BotArgs};
use smallwebrtc::peer::Timeouts;
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::{ConnectionEvent, SmallWebRtcRequestHandler};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// What the probe bot saw.
#[derive(Debug)]
struct Seen {
    event: ConnectionEvent,
}

struct Harness {
    base: String,
    handler: SmallWebRtcRequestHandler,
    bots_started: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Harness {
    /// A server whose bot echoes like `echo`, reports every event, and ends
    /// (so the server disconnects the client) when it gets `{"cmd": "bye"}`.
    async fn start(config: ServerConfig) -> Harness {
        let bots_started = Arc::new(AtomicUsize::new(0));
        let (tx, seen) = mpsc::unbounded_channel();
        let started = bots_started.clone();
        let bot = move |args: BotArgs| {
            started.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            async move {
                let connection = args.connection;
                let mut events = connection.events();
                connection.connect();
                let about = echo::about();
                while let Some(event) = events.recv().await {
                    let _ = tx.send(Seen {
                        event: event.clone(),
                    });
                    match event {
                        ConnectionEvent::AppMessage(m) if m == json!({"cmd": "bye"}) => return,
                        ConnectionEvent::AppMessage(m) => echo::answer(&connection, &m, &about),
                        ConnectionEvent::Closed => return,
                        _ => {}
                    }
                }
            }
        };
        let server = Server::bind(ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            bot: Arc::new(bot),
            ..config
        })
        .await
        .expect("server binds");
        let base = format!("http://{}", server.http_addr());
        let handler = server.handler().clone();
        tokio::spawn(server.run(std::future::pending()));
        Harness {
            base,
            handler,
            bots_started,
            seen,
        }
    }

    fn offer_url(&self) -> String {
        format!("{}/api/offer", self.base)
    }

    async fn connect(&self, opts: ClientOptions) -> TestClient {
        let client = TestClient::start(&self.offer_url(), opts)
            .await
            .expect("offer answered");
        client.wait_connected(WAIT).await.expect("connected");
        client
    }

    /// Waits for the bot to report an event matching `pred`.
    async fn expect_event(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) if pred(&seen) => return seen,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("bot channel closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits until the handler has no session left.
    async fn expect_no_sessions(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.handler.session_count() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sessions left: {}",
                self.handler.session_count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn echo_round_trip(client: &TestClient, message: &Value) {
    client.send_json(message).await.expect("sent");
    let back = client
        .recv_json_matching(WAIT, |v| v == message)
        .await
        .unwrap_or_else(|e| panic!("no echo of {message}: {}", e.message));
    assert_eq!(&back, message);
}

#[tokio::test]
async fn data_channel_echo_rtvi_and_text_exactness() {
    let mut h = Harness::start(ServerConfig::default()).await;
    let client = h.connect(ClientOptions::js()).await;
    client.wait_channel_open(WAIT).await.expect("channel open");

    echo_round_trip(&client, &json!({"hello": "world", "n": 1})).await;
    echo_round_trip(&client, &json!({"text": "héllo 世界 🎉", "z": 1, "a": 2})).await;
    let big = json!({"blob": "x".repeat(2048)});
    echo_round_trip(&client, &big).await;

    // Key order survives the trip: the official client compares echoed data as text.
    let text = r#"{"zeta":1,"alpha":{"y":2,"b":[3,{"q":4,"c":5}]}}"#;
    client.send_text(text).await.unwrap();
    let back = loop {
        let t = client.recv_text(WAIT).await.expect("echo");
        if t.contains("zeta") {
            break t;
        }
    };
    assert_eq!(back, text);

    // RTVI: client-ready → bot-ready with the id echoed and a 2.x version.
    client
        .send_json(&json!({"id": "abc123", "label": "rtvi-ai", "type": "client-ready",
            "data": {"version": "2.1.0", "about": {"library": "@pipecat-ai/client-js", "library_version": "1.13.1"}}}))
        .await
        .unwrap();
    let ready = client
        .recv_json_matching(WAIT, |v| v["type"] == "bot-ready")
        .await
        .expect("bot-ready");
    assert_eq!(ready["id"], "abc123");
    assert_eq!(ready["label"], "rtvi-ai");
    assert!(
        ready["data"]["version"].as_str().unwrap().starts_with("2."),
        "{ready}"
    );
    assert!(ready["data"]["about"]["library"].is_string(), "{ready}");

    // client-message → server-response with the same t and d.
    client
        .send_json(&json!({"id": "m1", "label": "rtvi-ai", "type": "client-message", "data": {"t": "ping-me", "d": {"k": [1, 2]}}}))
        .await
        .unwrap();
    let response = client
        .recv_json_matching(WAIT, |v| v["type"] == "server-response")
        .await
        .expect("server-response");
    assert_eq!(
        response["data"],
        json!({"t": "ping-me", "d": {"k": [1, 2]}})
    );

    // trackStatus reaches the bot as an event with its source.
    client.send_track_status(1, false).await.unwrap();
    let seen = h
        .expect_event("trackStatus", |s| {
            matches!(s.event, ConnectionEvent::TrackStatus { .. })
        })
        .await;
    assert!(
        matches!(seen.event, ConnectionEvent::TrackStatus { receiver_index: 1, enabled: false, source: Some(s) } if s.as_str() == "camera"),
        "{seen:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn candidates_trickled_by_patch_connect() {
    let h = Harness::start(ServerConfig::default()).await;
    // trickle: the offer has no candidate, the client PATCHes its own after the answer.
    let client = TestClient::start(
        &h.offer_url(),
        ClientOptions {
            trickle: true,
            ..ClientOptions::js()
        },
    )
    .await
    .unwrap();
    assert!(
        !client.offer_sdp().contains("a=candidate"),
        "the offer must carry no candidate"
    );
    client
        .wait_connected(WAIT)
        .await
        .expect("connected through the trickled candidate");
    client.wait_channel_open(WAIT).await.unwrap();
    echo_round_trip(&client, &json!({"after": "trickle"})).await;
}

#[tokio::test]
async fn renegotiation_keeps_the_pc_id_and_restart_pc_keeps_the_session() {
    let mut h = Harness::start(ServerConfig::default()).await;
    let client = h.connect(ClientOptions::js()).await;
    client.wait_channel_open(WAIT).await.unwrap();
    let first = client.pc_id();

    client.renegotiate(false).await.expect("re-offer answered");
    assert_eq!(
        client.pc_id(),
        first,
        "a plain renegotiation keeps the pc_id"
    );
    echo_round_trip(&client, &json!({"after": "renegotiate"})).await;

    client.renegotiate(true).await.expect("restart answered");
    let second = client.pc_id();
    assert_ne!(second, first, "restart_pc gives a new pc_id");
    client.wait_connected(WAIT).await.unwrap();
    client.wait_channel_open(WAIT).await.unwrap();
    echo_round_trip(&client, &json!({"after": "restart"})).await;
    assert_eq!(
        h.bots_started.load(Ordering::SeqCst),
        1,
        "the bot survives a restart"
    );
    h.expect_event("Disconnected on restart", |s| {
        s.event == ConnectionEvent::Disconnected
    })
    .await;

    // Both ids route to the session (the JS client PATCHes with the old one during a restart).
    for id in [&first, &second] {
        let r = client
            .patch(json!({"pc_id": id, "candidates": [{"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0}]}))
            .await;
        assert_eq!(r.status().as_u16(), 200, "PATCH with {id}");
    }
    assert_eq!(h.handler.session_count(), 1);

    // When the session ends, every alias goes.
    client.close().await;
    h.expect_no_sessions().await;
    for id in [&first, &second] {
        assert!(h.handler.connection(id).is_none(), "alias {id} left behind");
    }
}

#[tokio::test]
async fn server_disconnect_sends_peer_left_first() {
    let h = Harness::start(ServerConfig::default()).await;
    let client = h.connect(ClientOptions::js()).await;
    client.wait_channel_open(WAIT).await.unwrap();
    echo_round_trip(&client, &json!({"warm": "up"})).await;
    client.send_json(&json!({"cmd": "bye"})).await.unwrap();
    let left = client
        .recv_json_matching(WAIT, |v| v["type"] == "signalling")
        .await
        .expect("peerLeft");
    assert_eq!(
        left,
        json!({"type": "signalling", "message": {"type": "peerLeft"}})
    );
    client
        .wait_remote_closed(WAIT)
        .await
        .expect("the server closes after peerLeft");
    h.expect_no_sessions().await;
}

#[tokio::test]
async fn a_session_is_removed_when_the_client_closes() {
    let mut h = Harness::start(ServerConfig::default()).await;
    let client = h.connect(ClientOptions::js()).await;
    client.wait_channel_open(WAIT).await.unwrap();
    let pc_id = client.pc_id();
    h.expect_event("Connected", |s| s.event == ConnectionEvent::Connected)
        .await;
    client.close().await;
    h.expect_event("Closed", |s| s.event == ConnectionEvent::Closed)
        .await;
    h.expect_no_sessions().await;
    let r = reqwest::Client::new()
        .patch(h.offer_url())
        .json(&json!({"pc_id": pc_id, "candidates": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "a PATCH for an ended session is a 404"
    );
}

#[tokio::test]
async fn a_session_whose_client_vanishes_is_closed_by_consent_timeout() {
    let mut h = Harness::start(ServerConfig {
        // The real 30 s is exercised by the reliability suite; the mechanism is the same.
        timeouts: Timeouts {
            consent: Duration::from_secs(4),
            ..Timeouts::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let client = h.connect(ClientOptions::js()).await;
    client.wait_channel_open(WAIT).await.unwrap();
    h.expect_event("Connected", |s| s.event == ConnectionEvent::Connected)
        .await;
    let vanished_at = tokio::time::Instant::now();
    client.vanish();
    h.expect_event("Failed", |s| s.event == ConnectionEvent::Failed)
        .await;
    h.expect_event("Closed", |s| s.event == ConnectionEvent::Closed)
        .await;
    assert!(
        vanished_at.elapsed() >= Duration::from_secs(4),
        "closed before the consent timeout"
    );
    h.expect_no_sessions().await;
}

#[tokio::test]
async fn a_session_that_never_connects_is_closed_at_the_connecting_timeout() {
    let h = Harness::start(ServerConfig {
        timeouts: Timeouts {
            connecting: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..ServerConfig::default()
    })
    .await;
    // An offer whose only candidate is a port nobody listens on: no check is ever answered.
    let offer = common::offers::offer_without_peer();
    let answer: Value = reqwest::Client::new()
        .post(h.offer_url())
        .json(&json!({"sdp": offer, "type": "offer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pc_id = answer["pc_id"].as_str().unwrap().to_string();
    assert_eq!(h.handler.session_count(), 1);
    h.expect_no_sessions().await;
    assert!(h.handler.connection(&pc_id).is_none());
}

#[tokio::test]
async fn raw_client_without_data_channel_connects() {
    let mut h = Harness::start(ServerConfig::default()).await;
    let client = h
        .connect(ClientOptions::for_shape(OfferShape::RawAudioVideo))
        .await;
    let sdp = client.answer_sdp();
    assert!(!sdp.contains("m=application"), "{sdp}");
    h.expect_event("Connected", |s| s.event == ConnectionEvent::Connected)
        .await;
    client.close().await;
    h.expect_no_sessions().await;
}

#[tokio::test]
async fn esp32_answers_are_munged_and_still_connect() {
    let h = Harness::start(ServerConfig {
        esp32: true,
        // An extra host candidate the munging must drop: it is not --host.
        public_ips: vec!["10.20.30.40".parse().unwrap()],
        ..ServerConfig::default()
    })
    .await;
    // The ESP32 POSTs {sdp, type} to a /start session's URL.
    let start: Value = reqwest::Client::new()
        .post(format!("{}/start", h.base))
        .json(&json!({"createDailyRoom": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/sessions/{}/api/offer",
        h.base,
        start["sessionId"].as_str().unwrap()
    );
    let client = TestClient::start(&url, ClientOptions::for_shape(OfferShape::Esp32))
        .await
        .unwrap();
    let sdp = client.answer_sdp();
    let fingerprints: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=fingerprint:"))
        .collect();
    assert!(!fingerprints.is_empty());
    assert!(
        fingerprints
            .iter()
            .all(|l| l.starts_with("a=fingerprint:sha-256 ")),
        "{sdp}"
    );
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert!(!candidates.is_empty(), "{sdp}");
    for c in &candidates {
        assert!(
            c.contains(" 127.0.0.1 ") && c.contains("typ host") && !c.contains("raddr"),
            "{c}"
        );
    }
    assert!(!sdp.contains("10.20.30.40"), "{sdp}");
    client.wait_connected(WAIT).await.expect("connected");
    client
        .wait_channel_open(WAIT)
        .await
        .expect("rtvi-ai channel open");
    echo_round_trip(&client, &json!({"from": "esp32"})).await;
}

#[tokio::test]
async fn the_echo_bot_asks_for_renegotiation_on_request_and_the_re_offer_is_answered() {
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    let client = TestClient::start(&url, ClientOptions::js()).await.unwrap();
    client.wait_channel_open(WAIT).await.unwrap();
    client
        .send_json(&json!({"id": "r1", "label": "rtvi-ai", "type": "client-message", "data": {"t": "renegotiate", "d": null}}))
        .await
        .unwrap();
    let request = client
        .recv_json_matching(WAIT, |v| v["type"] == "signalling")
        .await
        .expect("a renegotiate request");
    assert_eq!(
        request,
        json!({"type": "signalling", "message": {"type": "renegotiate"}})
    );
    let pc_id = client.pc_id();
    client.renegotiate(false).await.expect("re-offer answered");
    assert_eq!(client.pc_id(), pc_id);
    echo_round_trip(&client, &json!({"after": "server-asked renegotiation"})).await;
}

/// The real binary, as a user runs it: SIGTERM makes it tell every client
/// `peerLeft` and exit 0 within 5 s.
#[tokio::test]
async fn sigterm_sends_peer_left_and_exits_cleanly_within_five_seconds() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_smallwebrtc"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split([' ', '/']).next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_string();
    let client = TestClient::start(&format!("http://{addr}/api/offer"), ClientOptions::js())
        .await
        .unwrap();
    client.wait_channel_open(WAIT).await.unwrap();
    echo_round_trip(&client, &json!({"before": "shutdown"})).await;

    let t = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let left = client
        .recv_json_matching(WAIT, |v| v["type"] == "signalling")
        .await
        .expect("peerLeft before the server exits");
    assert_eq!(left["message"]["type"], "peerLeft");
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(t.elapsed() < Duration::from_secs(5));
}
