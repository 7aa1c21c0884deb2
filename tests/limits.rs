//! Floods and limits: offers whose clients never complete ICE are all reaped at
//! the connecting timeout, leaving no session and no descriptor behind; offers
//! past `max_sessions` get 503 with `Retry-After`.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use smallwebrtc::peer::Timeouts;
use smallwebrtc::server::{Server, ServerConfig};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What the open descriptors are ("socket", "anon_inode", "/dev/null", ...), counted.
fn describe_fds() -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let kind = target.split(':').next().unwrap_or("").to_string();
        *kinds.entry(kind).or_default() += 1;
    }
    format!("{kinds:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_offers_that_never_connect_are_all_reaped() {
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        timeouts: Timeouts {
            connecting: Duration::from_secs(2),
            ..Timeouts::default()
        },
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}/api/offer", server.http_addr());
    let handler = server.handler().clone();
    tokio::spawn(server.run(std::future::pending()));
    let http = reqwest::Client::new();
    let offer = common::offers::offer_without_peer();
    // Warm up the HTTP connection pool, then count descriptors at rest.
    http.get(url.replace("/api/offer", "/status"))
        .send()
        .await
        .unwrap();
    let idle_fds = open_fds();

    let statuses: Vec<u16> = futures_util::stream::iter(0..1000)
        .map(|_| {
            let (http, url, offer) = (http.clone(), url.clone(), offer.clone());
            async move {
                http.post(&url)
                    .json(&json!({"sdp": offer, "type": "offer"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "every offer answered");
    assert!(handler.session_count() > 0);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handler.session_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sessions never reaped",
            handler.session_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Sessions share the server's one UDP socket: nothing per session to leak.
    // Close the client's connection pool (both ends live in this process) and
    // let the server see the hang-ups.
    drop(http);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fds = open_fds();
        if fds <= idle_fds {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "descriptors: {idle_fds} at rest, {fds} after the flood: {}",
            describe_fds()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn offers_past_max_sessions_get_503_with_retry_after() {
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        max_sessions: Some(3),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    let http = reqwest::Client::new();
    let offer = common::offers::offer_without_peer();
    for _ in 0..3 {
        let r = http
            .post(&url)
            .json(&json!({"sdp": offer, "type": "offer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = http
        .post(&url)
        .json(&json!({"sdp": offer, "type": "offer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503, "the JS client retries 5xx");
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("capacity"),
        "{body}"
    );
}
