//! How fast a session comes up: time from the offer POST to the answer, and to
//! ICE + DTLS connected, over real UDP on loopback, one session at a time.
//!
//! Run inside the loopback-only namespace (it opens sockets):
//!
//! ```text
//! cargo bench --bench connect --no-run
//! ../shared/tools/nsrun cargo bench --offline --bench connect -- 200
//! ```

#[path = "../tests/common/client.rs"]
mod client;

use std::time::Duration;

use client::{ClientOptions, TestClient};
use smallwebrtc::server::{Server, ServerConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let sessions: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        ..ServerConfig::default()
    })
    .await
    .expect("server binds");
    let url = format!("http://{}/api/offer", server.http_addr());
    let handler = server.handler().clone();
    tokio::spawn(server.run(std::future::pending()));

    // Warm up: the first Rtc and the first HTTP connection pay one-time costs.
    for _ in 0..5 {
        let c = TestClient::start(&url, ClientOptions::js()).await.unwrap();
        c.wait_connected(Duration::from_secs(10)).await.unwrap();
        c.close().await;
    }

    let mut answer = Vec::with_capacity(sessions);
    let mut connected = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let opts = ClientOptions {
            trickle: false,
            send_pings: false,
            ..ClientOptions::js()
        };
        let c = TestClient::start(&url, opts).await.expect("answered");
        c.wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");
        let (a, conn) = c.timings();
        answer.push(a);
        connected.push(conn.expect("connected time"));
        c.close().await;
    }
    while handler.session_count() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    answer.sort();
    connected.sort();
    println!(
        "sessions: {sessions} (one at a time, JS-client-shaped offer, candidate in the offer)"
    );
    println!(
        "offer POST -> answer:    median {}  p99 {}  max {}",
        ms(percentile(&answer, 0.5)),
        ms(percentile(&answer, 0.99)),
        ms(*answer.last().unwrap())
    );
    println!(
        "offer POST -> connected: median {}  p99 {}  max {}",
        ms(percentile(&connected, 0.5)),
        ms(percentile(&connected, 0.99)),
        ms(*connected.last().unwrap())
    );
}
