//! What the server writes to its log must not hand out a session: no ICE password
//! (`a=ice-pwd`, of the client's offer or of our answer) in any line at info level or
//! above, through a whole session with trickle, renegotiation, an ICE restart and a
//! `restart_pc`.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client::{ClientOptions, TestClient};
use serde_json::json;
use smallwebrtc::server::{Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(10);

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

fn ice_passwords(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=ice-pwd:"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn no_log_line_at_info_level_carries_an_ice_password() {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || LogWriter(writer.clone()))
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only test in this binary");

    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        ..ServerConfig::default()
    })
    .await
    .expect("server binds");
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));

    let client = TestClient::start(&url, ClientOptions::js())
        .await
        .expect("answered");
    client.wait_connected(WAIT).await.expect("connected");
    client.wait_channel_open(WAIT).await.expect("channel open");
    let mut secrets = ice_passwords(&client.offer_sdp());
    secrets.extend(ice_passwords(&client.answer_sdp()));
    client.renegotiate(false).await.expect("renegotiated");
    secrets.extend(ice_passwords(&client.offer_sdp()));
    secrets.extend(ice_passwords(&client.answer_sdp()));
    client
        .renegotiate_ice_restart()
        .await
        .expect("ICE restarted");
    client
        .wait_connected(WAIT)
        .await
        .expect("connected after the ICE restart");
    secrets.extend(ice_passwords(&client.offer_sdp()));
    secrets.extend(ice_passwords(&client.answer_sdp()));
    client.renegotiate(true).await.expect("restarted");
    client.wait_connected(WAIT).await.expect("connected again");
    client
        .wait_channel_open(WAIT)
        .await
        .expect("channel open again");
    secrets.extend(ice_passwords(&client.offer_sdp()));
    secrets.extend(ice_passwords(&client.answer_sdp()));
    client.send_json(&json!({"hello": "log"})).await.unwrap();
    client.close().await;

    secrets.sort();
    secrets.dedup();
    assert!(
        secrets.len() >= 2,
        "the SDPs carried no ice-pwd: {secrets:?}"
    );
    let logs = String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    // The test would prove nothing if the server logged nothing at all.
    assert!(logs.contains("peer connected"), "{logs}");
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "an ICE password is in the log:\n{logs}"
        );
    }
}
