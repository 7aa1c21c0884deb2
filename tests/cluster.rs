//! Two nodes behind a real nginx that spreads requests round-robin: every
//! session, its trickled candidates and its renegotiations reach the node that
//! owns it, through `/api/offer` (forwarding) and through `/sessions/...`.
//!
//! Needs Debian's nginx (`apt-get install nginx-light`); opens sockets: run
//! inside `../shared/tools/nsrun`.

mod common;

use std::time::Duration;

use common::client::{ClientOptions, TestClient};
use serde_json::{json, Value};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::SmallWebRtcRequestHandler;

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    id: &'static str,
    handler: SmallWebRtcRequestHandler,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts node `a` and `b` (each knowing the other) and nginx in front of them.
async fn cluster() -> (String, Vec<Node>, Nginx) {
    // Each node must know the other's URL before it binds, so the ports are picked first and
    // may be taken by someone else (the other test in this binary) before the bind: try again.
    for attempt in 1.. {
        let a = free_port();
        let b = free_port();
        if a == b {
            continue;
        }
        match bind_nodes([a, b]).await {
            Ok(nodes) => {
                let nginx = Nginx::start(&[a, b]);
                return (format!("http://127.0.0.1:{}", nginx.port), nodes, nginx);
            }
            Err(e) if attempt < 10 => eprintln!("node ports {a}, {b} taken ({e}); new ports"),
            Err(e) => panic!("nodes do not bind: {e}"),
        }
    }
    unreachable!()
}

async fn bind_nodes(ports: [u16; 2]) -> std::io::Result<Vec<Node>> {
    let ids = ["a", "b"];
    let mut servers = Vec::new();
    for i in 0..2 {
        let other = 1 - i;
        servers.push(
            Server::bind(ServerConfig {
                host: "127.0.0.1".into(),
                port: ports[i],
                node_id: Some(ids[i].into()),
                peers: vec![(
                    ids[other].into(),
                    format!("http://127.0.0.1:{}", ports[other]),
                )],
                ..ServerConfig::default()
            })
            .await?,
        );
    }
    // Both bound: only now start them, so a failed attempt leaves nothing running.
    Ok(servers
        .into_iter()
        .zip(ids)
        .map(|(server, id)| {
            let handler = server.handler().clone();
            tokio::spawn(server.run(std::future::pending()));
            Node { id, handler }
        })
        .collect())
}

struct Nginx {
    port: u16,
    child: std::process::Child,
    _dir: TempDir,
}

impl Nginx {
    fn start(upstreams: &[u16]) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is not installed: apt-get install nginx-light (scripts/test.sh does)");
        // The port is picked before nginx binds it, so another listener may get it first; then
        // nginx exits and something else answers on the port. Try again on a new port.
        for attempt in 1.. {
            match Nginx::launch(nginx, upstreams) {
                Ok(started) => return started,
                Err(log) if attempt < 10 && log.contains("Address already in use") => {}
                Err(log) => panic!("nginx did not start: {log}"),
            }
        }
        unreachable!()
    }

    /// One try: nginx on a free port, ready when it has written its pid file (after binding
    /// its listening socket) and accepts connections. `Err` carries its error log.
    fn launch(nginx: &str, upstreams: &[u16]) -> Result<Nginx, String> {
        let dir = TempDir::new("nginx");
        let port = free_port();
        // The configuration shipped in docs/ (round-robin, no stickiness), on test ports.
        let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/nginx.conf"))
            .expect("docs/nginx.conf")
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "server 10.0.0.1:7860;",
                &format!("server 127.0.0.1:{};", upstreams[0]),
            )
            .replace(
                "server 10.0.0.2:7860;",
                &format!("server 127.0.0.1:{};", upstreams[1]),
            );
        let full = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n{conf}\n}}\n",
            d = dir.path()
        );
        let conf_path = format!("{}/nginx.conf", dir.path());
        std::fs::write(&conf_path, full).unwrap();
        let mut child = std::process::Command::new(nginx)
            .args(["-p", dir.path(), "-c", &conf_path])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx starts");
        let pid_file = format!("{}/nginx.pid", dir.path());
        let error_log =
            || std::fs::read_to_string(format!("{}/error.log", dir.path())).unwrap_or_default();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("it exited ({status}): {}", error_log()));
            }
            if std::path::Path::new(&pid_file).exists()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(Nginx {
                    port,
                    child,
                    _dir: dir,
                });
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not ready after {WAIT:?}: {}", error_log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master must take its worker down with it,
        // or the worker outlives the test holding its output pipes.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

struct TempDir(String);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = format!(
            "{}/smallwebrtc-{name}-{}-{}",
            std::env::temp_dir().display(),
            std::process::id(),
            free_port()
        );
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn path(&self) -> &str {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn owner<'a>(nodes: &'a [Node], pc_id: &str) -> &'a Node {
    let node = nodes
        .iter()
        .find(|n| pc_id.starts_with(&format!("{}-", n.id)))
        .unwrap_or_else(|| panic!("pc_id {pc_id} carries no node id"));
    assert!(
        node.handler.connection(pc_id).is_some(),
        "{pc_id} is not on node {}",
        node.id
    );
    node
}

async fn echo(client: &TestClient, n: usize) {
    let message = json!({"n": n});
    client.send_json(&message).await.unwrap();
    client
        .recv_json_matching(WAIT, |v| v == &message)
        .await
        .unwrap_or_else(|e| panic!("session {n}: no echo: {}", e.message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_through_round_robin_nginx_each_reach_their_node() {
    let (base, nodes, _nginx) = cluster().await;
    let http = reqwest::Client::new();
    let mut on_node = [0usize; 2];
    for n in 0..50 {
        // Half use the runner's flow (/start then /sessions/...), half /api/offer directly.
        let url = if n % 2 == 0 {
            let start: Value = http
                .post(format!("{base}/start"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let sid = start["sessionId"].as_str().unwrap().to_string();
            assert!(
                sid.starts_with("a-") || sid.starts_with("b-"),
                "session id {sid} carries its node"
            );
            format!("{base}/sessions/{sid}/api/offer")
        } else {
            format!("{base}/api/offer")
        };
        // Trickle: the only candidate arrives by PATCH, through the balancer.
        let client = TestClient::start(
            &url,
            ClientOptions {
                trickle: true,
                ..ClientOptions::js()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("session {n}: {e:?}"));
        client
            .wait_connected(WAIT)
            .await
            .unwrap_or_else(|e| panic!("session {n}: trickle lost: {}", e.message));
        client.wait_channel_open(WAIT).await.unwrap();
        let pc_id = client.pc_id();
        let node = owner(&nodes, &pc_id);
        on_node[(node.id == "b") as usize] += 1;
        echo(&client, n).await;

        // A renegotiation on the same pc_id, through the balancer again.
        client
            .renegotiate(false)
            .await
            .unwrap_or_else(|e| panic!("session {n}: renegotiation: {}", e.message));
        assert_eq!(client.pc_id(), pc_id);
        echo(&client, n).await;
        client.close().await;
    }
    assert!(
        on_node[0] > 5 && on_node[1] > 5,
        "sessions spread over both nodes: {on_node:?}"
    );
    // No phantom sessions: once every client has closed, both nodes are empty.
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes.iter().any(|n| n.handler.session_count() > 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions left behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_pc_through_the_balancer_keeps_the_session_on_its_node() {
    let (base, nodes, _nginx) = cluster().await;
    let client = TestClient::start(&format!("{base}/api/offer"), ClientOptions::js())
        .await
        .unwrap();
    client.wait_channel_open(WAIT).await.unwrap();
    let first = client.pc_id();
    let node = owner(&nodes, &first).id;
    for round in 0..4 {
        client.renegotiate(true).await.unwrap();
        client.wait_channel_open(WAIT).await.unwrap();
        let current = client.pc_id();
        assert_eq!(
            owner(&nodes, &current).id,
            node,
            "restart {round} moved the session"
        );
        echo(&client, round).await;
    }
    let total: usize = nodes.iter().map(|n| n.handler.session_count()).sum();
    assert_eq!(total, 1, "one session, no phantom bot on the other node");
}
