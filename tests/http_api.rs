//! The HTTP API as a client sees it: every malformed request gets the documented
//! status and a JSON `detail` naming the problem; `/start`, `/status`, CORS and
//! SINGLE mode behave as Pipecat's runner does.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

use std::time::Instant;

use serde_json::{json, Value};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::signaling::ice_servers::IceServer;
use smallwebrtc::ConnectionMode;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

struct Running {
    base: String,
    http: reqwest::Client,
}

async fn start(config: ServerConfig) -> Running {
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        ..config
    })
    .await
    .expect("server binds");
    let base = format!("http://{}", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    Running {
        base,
        http: reqwest::Client::new(),
    }
}

/// A browser-shaped offer (audio, camera, screen, data channel) made by str0m.
fn browser_offer() -> String {
    smallwebrtc::server::init_crypto();
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_channel("chat".into());
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

impl Running {
    async fn send(&self, method: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("POST", path, body.to_string()).await
    }
}

#[tokio::test]
async fn malformed_requests_get_a_status_and_a_detail_naming_the_problem() {
    let server = start(ServerConfig::default()).await;
    let offer = browser_offer();
    let many_m_lines = format!(
        "v=0\r\n{}",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(100)
    );
    let big_body =
        json!({"sdp": "v=0\r\n", "type": "offer", "request_data": "x".repeat(1024 * 1024 + 1)});

    // (method, path, body, status, text the detail must contain)
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/api/offer",
            "not json".into(),
            400,
            "not valid JSON",
        ),
        ("POST", "/api/offer", "".into(), 400, "empty"),
        ("POST", "/api/offer", "[1,2]".into(), 422, "invalid type"),
        (
            "POST",
            "/api/offer",
            json!({"type": "offer"}).to_string(),
            422,
            "missing field `sdp`",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": offer}).to_string(),
            422,
            "missing field `type`",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": 5, "type": "offer"}).to_string(),
            422,
            "invalid type: integer `5`",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": offer, "type": "offer", "restart_pc": "yes"}).to_string(),
            422,
            "invalid type: string \"yes\"",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": "garbage", "type": "offer"}).to_string(),
            400,
            "must start with \"v=0\"",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": "", "type": "offer"}).to_string(),
            400,
            "SDP offer is empty",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": "v=0\r\ns=-\r\n", "type": "offer"}).to_string(),
            400,
            "no m-lines",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": "v=0\r\nm=audio nonsense\r\n", "type": "offer"}).to_string(),
            400,
            "invalid SDP offer",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": many_m_lines, "type": "offer"}).to_string(),
            400,
            "more than 32 m-lines",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": offer, "type": "answer"}).to_string(),
            400,
            "SDP type must be \"offer\"",
        ),
        (
            "POST",
            "/api/offer",
            json!({"sdp": offer, "type": "offer", "pc_id": "pc-unknown"}).to_string(),
            404,
            "Peer connection not found",
        ),
        (
            "POST",
            "/api/offer",
            big_body.to_string(),
            413,
            "larger than the limit",
        ),
        (
            "PATCH",
            "/api/offer",
            json!({"pc_id": "pc-unknown", "candidates": []}).to_string(),
            404,
            "Peer connection not found",
        ),
        (
            "PATCH",
            "/api/offer",
            json!({"candidates": []}).to_string(),
            422,
            "missing field `pc_id`",
        ),
        (
            "PATCH",
            "/api/offer",
            json!({"pc_id": null, "candidates": []}).to_string(),
            422,
            "invalid type: null",
        ),
        (
            "PATCH",
            "/api/offer",
            json!({"pc_id": "x", "candidates": [{"candidate": ""}]}).to_string(),
            422,
            "missing field `sdp_mid`",
        ),
        ("PATCH", "/api/offer", "{".into(), 400, "not valid JSON"),
        (
            "POST",
            "/sessions/no-such-session/api/offer",
            json!({"sdp": offer, "type": "offer"}).to_string(),
            404,
            "Invalid or not-yet-ready session_id",
        ),
        (
            "PATCH",
            "/sessions/no-such-session/api/offer",
            json!({"pc_id": "x", "candidates": []}).to_string(),
            404,
            "Invalid or not-yet-ready session_id",
        ),
        (
            "POST",
            "/start",
            json!({"transport": "daily"}).to_string(),
            400,
            "Transport 'daily' is not allowed",
        ),
        ("GET", "/no/such/route", String::new(), 404, "Not Found"),
    ];

    let mut failures = Vec::new();
    for (method, path, body, want_status, want_text) in cases {
        let (status, value) = server.send(method, path, body.clone()).await;
        let detail = value.get("detail").and_then(Value::as_str).unwrap_or("");
        if status != want_status || !detail.contains(want_text) {
            let shown: String = body.chars().take(60).collect();
            failures.push(format!(
                "{method} {path} {shown:?}: got {status} {value}, want {want_status} with {want_text:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn a_valid_offer_is_answered_with_candidates_and_end_of_candidates() {
    let server = start(ServerConfig::default()).await;
    let offer = browser_offer();
    let (status, answer) = server
        .post_json(
            "/api/offer",
            &json!({"sdp": offer, "type": "offer", "pc_id": null, "restart_pc": false}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "answer");
    let pc_id = answer["pc_id"].as_str().unwrap();
    // 128 random bits after the prefix.
    assert!(
        pc_id.len() >= 32 && pc_id.chars().rev().take(32).all(|c| c.is_ascii_hexdigit()),
        "{pc_id}"
    );
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("typ host"), "{sdp}");
    assert!(
        sdp.contains("127.0.0.1"),
        "loopback host gets a 127.0.0.1 candidate: {sdp}"
    );
    assert!(sdp.contains("a=end-of-candidates"), "{sdp}");
    let offer_mids: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .collect();
    let bundle = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE "))
        .expect("a BUNDLE group");
    assert_eq!(
        bundle.split(' ').collect::<Vec<_>>(),
        offer_mids,
        "max-bundle keeps every mid in order"
    );
    let answer_mids: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .collect();
    assert_eq!(answer_mids, offer_mids);
    assert!(sdp.contains("a=max-message-size:262144"), "{sdp}");
    // Directions by m-line index: 0 and 1 sendrecv, 2 recvonly.
    let sections: Vec<&str> = sdp.split("\r\nm=").skip(1).collect();
    assert_eq!(sections.len(), 4, "{sdp}");
    assert!(sections[0].contains("a=sendrecv"), "{}", sections[0]);
    assert!(sections[1].contains("a=sendrecv"), "{}", sections[1]);
    assert!(sections[2].contains("a=recvonly"), "{}", sections[2]);
    assert!(sections[3].starts_with("application"), "{}", sections[3]);

    // PATCH on the new pc_id is accepted, end-of-candidates included.
    let (status, body) = server
        .send(
            "PATCH",
            "/api/offer",
            json!({"pc_id": pc_id, "candidates": [
                {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host", "sdp_mid": "0", "sdp_mline_index": 0},
                {"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0},
                {"candidate": "candidate:2 1 udp 2130706431 host.local 40001 typ host", "sdp_mid": "1", "sdp_mline_index": 1}
            ]})
            .to_string(),
        )
        .await;
    assert_eq!((status, body), (200, json!({"status": "success"})));
}

#[tokio::test]
async fn single_mode_refuses_a_second_session_with_the_original_texts() {
    let server = start(ServerConfig {
        connection_mode: ConnectionMode::Single,
        ..ServerConfig::default()
    })
    .await;
    let (status, first) = server
        .post_json(
            "/api/offer",
            &json!({"sdp": browser_offer(), "type": "offer"}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, body) = server
        .post_json(
            "/api/offer",
            &json!({"sdp": browser_offer(), "type": "offer"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"detail": "Cannot create new connection with existing connection active"})
        )
    );
    let (status, body) = server
        .post_json(
            "/api/offer",
            &json!({"sdp": browser_offer(), "type": "offer", "pc_id": "pc-someone-else"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"detail": "PC ID mismatch with existing connection"})
        )
    );
}

#[tokio::test]
async fn start_returns_a_session_and_ice_config_as_the_runner_does() {
    let plain = start(ServerConfig::default()).await;
    let (status, body) = plain
        .post_json("/start", &json!({"transport": "webrtc"}))
        .await;
    assert_eq!(status, 200);
    let id = body["sessionId"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a uuid4: {id}");
    assert!(body.get("iceConfig").is_none(), "{body}");

    let (_, body) = plain
        .post_json("/start", &json!({"enableDefaultIceServers": true}))
        .await;
    assert_eq!(
        body["iceConfig"],
        json!({"iceServers": [{"urls": ["stun:stun.l.google.com:19302"]}]})
    );

    // Not JSON at all reads as {}.
    let (status, body) = plain.send("POST", "/start", "garbage").await;
    assert_eq!(status, 200);
    assert!(body["sessionId"].is_string());

    // Configured servers are returned verbatim and win over the default.
    let configured = start(ServerConfig {
        ice_servers: vec![IceServer::new("turn:127.0.0.1:3478").with_credentials("u", "p")],
        ..ServerConfig::default()
    })
    .await;
    let (_, body) = configured
        .post_json("/start", &json!({"enableDefaultIceServers": true}))
        .await;
    assert_eq!(
        body["iceConfig"],
        json!({"iceServers": [{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "p"}]})
    );
}

#[tokio::test]
async fn status_redirect_and_cors() {
    let server = start(ServerConfig::default()).await;
    let (status, body) = server.send("GET", "/status", "").await;
    assert_eq!(
        (status, body),
        (200, json!({"status": "ready", "transports": ["webrtc"]}))
    );

    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirect
        .get(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    assert_eq!(response.headers()["location"], "/client/");

    let preflight = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/offer", server.base),
        )
        .header("origin", "http://example.test")
        .header("access-control-request-method", "PATCH")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://example.test"
    );

    let restricted = start(ServerConfig {
        allowed_origins: vec!["http://good.test".into()],
        ..ServerConfig::default()
    })
    .await;
    let response = restricted
        .http
        .get(format!("{}/status", restricted.base))
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn a_dead_stun_server_delays_only_the_first_offer_and_by_at_most_about_two_seconds() {
    // Nothing listens on port 1: the STUN query can only time out.
    let server = start(ServerConfig {
        ice_servers: vec![IceServer::new("stun:127.0.0.1:1")],
        ..ServerConfig::default()
    })
    .await;
    let body = json!({"sdp": browser_offer(), "type": "offer"});
    let t = std::time::Instant::now();
    let (status, answer) = server.post_json("/api/offer", &body).await;
    let first = t.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["sdp"].as_str().unwrap().contains("typ host"),
        "host candidates still offered"
    );
    assert!(
        first >= std::time::Duration::from_millis(1500)
            && first < std::time::Duration::from_millis(3000),
        "the first offer waits for the STUN query, bounded: {first:?}"
    );
    let t = std::time::Instant::now();
    let (status, _) = server.post_json("/api/offer", &body).await;
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "the failure is cached: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn metrics_count_offers_by_outcome_in_prometheus_text() {
    let server = start(ServerConfig::default()).await;
    let read = |text: &str, line: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(line)
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    let scrape = || async {
        let r = reqwest::get(format!("{}/metrics", server.base))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    };
    let before = scrape().await;
    server
        .post_json("/api/offer", &json!({"sdp": "garbage", "type": "offer"}))
        .await;
    let (status, _) = server
        .post_json(
            "/api/offer",
            &json!({"sdp": browser_offer(), "type": "offer"}),
        )
        .await;
    assert_eq!(status, 200);
    let after = scrape().await;
    // Counters are process-wide and tests run in parallel: they can only have grown.
    let new = r#"smallwebrtc_offers_total{outcome="new_session"}"#;
    let bad = r#"smallwebrtc_offers_total{outcome="bad_request"}"#;
    assert!(read(&after, new) >= read(&before, new) + 1.0);
    assert!(read(&after, bad) >= read(&before, bad) + 1.0);
    assert!(read(&after, r#"smallwebrtc_sessions{state="connecting"}"#) >= 1.0);
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_serves_the_routes() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        tls: Some(smallwebrtc::server::TlsConfig::SelfSigned),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    assert!(server.is_https());
    let addr = server.http_addr();
    let cert = server.tls_certificate().expect("a certificate");
    tokio::spawn(server.run(std::future::pending()));

    // A client that trusts exactly that certificate, checking the name 127.0.0.1.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the self-signed certificate");
    tls.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#"{"status":"ready","transports":["webrtc"]}"#),
        "{response}"
    );

    // A plain-HTTP request to the HTTPS port is not served.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buf).contains("ready"));
}

#[tokio::test]
async fn tls_files_that_cannot_be_read_give_a_clear_error() {
    let err = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        tls: Some(smallwebrtc::server::TlsConfig::Files {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        }),
        ..ServerConfig::default()
    })
    .await
    .err()
    .expect("an error");
    assert!(
        err.to_string()
            .contains("cannot read the TLS certificate \"/nonexistent/cert.pem\""),
        "{err}"
    );
}

/// Found by fuzzing: str0m panics answering an offer that gives one payload
/// type two configurations. The client gets a 400 naming the problem, and the
/// server keeps serving.
#[tokio::test]
async fn an_offer_that_makes_str0m_panic_is_refused_and_the_server_keeps_serving() {
    let server = start(ServerConfig::default()).await;
    let sdp =
        String::from_utf8_lossy(include_bytes!("data/offer-one-pt-two-configs.sdp")).to_string();
    let (status, body) = server
        .post_json("/api/offer", &json!({"sdp": sdp, "type": "offer"}))
        .await;
    assert!(status == 400, "got {status} {body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("cannot answer the SDP offer"),
        "{body}"
    );
    let (status, _) = server
        .post_json(
            "/api/offer",
            &json!({"sdp": browser_offer(), "type": "offer"}),
        )
        .await;
    assert_eq!(status, 200, "still serving");
}

/// Found by fuzzing: a client ufrag too long for a STUN USERNAME was answered, then
/// panicked the session's task at its first connectivity check.
#[tokio::test]
async fn an_ice_ufrag_too_long_for_stun_is_refused_up_front() {
    let server = start(ServerConfig::default()).await;
    let sdp = browser_offer().replace("a=ice-ufrag:", &format!("a=ice-ufrag:{}", "u".repeat(112)));
    let (status, body) = server
        .post_json("/api/offer", &json!({"sdp": sdp, "type": "offer"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("a=ice-ufrag"),
        "{body}"
    );
}
