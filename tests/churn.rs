//! Churn soak: many short sessions come and go, and the server ends where it started.
//!
//! Sessions run in batches. Every session of a batch connects over real WebRTC (a str0m client
//! shaped like the official JS client), gets an app message and a 440 Hz tone back from the
//! `echo` bot, and waits until the whole batch is live at once; then half close cleanly
//! (`pc.close()`: DTLS close_notify) and half vanish (no goodbye: the server must notice by ICE
//! consent). After each batch the test waits until the server is idle again — session table
//! empty, tokio tasks and open file descriptors back to their counts before the first session —
//! and records its resident memory. At the end, RSS must be within 10 % of its level after the
//! first batch (the first batch grows the allocator's pools; later ones must reuse them).
//!
//! **The server runs as a child process**, so the figures are the server's alone: this test's
//! own executable, started again on the ignored test `churn_server_process` with
//! `CHURN_SERVER_CHILD=1`, which runs an ordinary [`Server`] with the built-in echo bot on a
//! two-worker runtime (like `smallwebrtc serve` on this 2-core machine). RSS and descriptors are
//! read from the child's `/proc/<pid>/status` and `/proc/<pid>/fd`; the tokio task count
//! (`RuntimeMetrics::num_alive_tasks`) and the session count can only be read inside, so the
//! child answers a `stats` line on its stdin. The test client's own memory, sockets and tasks
//! (hundreds of str0m peers) thus pollute nothing. The real `smallwebrtc serve` binary is not
//! used because the ICE consent timeout must be shortened: a vanished client is reaped
//! `CHURN_CONSENT_MS` (default 5,000; the server's default is 30 s) after its last datagram, so
//! a batch does not wait 30 s.
//!
//! Settings (environment): `CHURN_SESSIONS` (default 300), `CHURN_BATCH` (sessions live at
//! once, default 50), `CHURN_CONSENT_MS` (default 5000). The 5,000-session soak recorded in
//! RELIABILITY.md:
//!
//! ```sh
//! cargo test --offline --release --no-run --test churn
//! CHURN_SESSIONS=5000 CHURN_BATCH=100 ../shared/tools/nsrun \
//!     cargo test --offline --release --test churn -- --nocapture
//! ```
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{ClientEvent, ClientOptions, TestClient};
use serde_json::{json, Value};
use smallwebrtc::bots;
use smallwebrtc::media::audio::{sine, tone_level_db, OpusDecoder, OpusEncoder};
use smallwebrtc::peer::Timeouts;
use smallwebrtc::server::{Server, ServerConfig};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{broadcast, mpsc, watch};

/// Set in the environment of the child that runs the server.
const CHILD_ENV: &str = "CHURN_SERVER_CHILD";
/// Tags of the child's lines meant for the test (libtest prints its own lines too).
const READY: &str = "CHURN-READY ";
const STATS: &str = "CHURN-STATS ";
/// Bound on one session's steps (connect, echo, tone) on a loaded 2-core machine.
const STEP: Duration = Duration::from_secs(60);
/// The tone the clients send and must hear back.
const TONE_HZ: f32 = 440.0;
/// Allowed growth of RSS from the first batch to the end.
const RSS_GROWTH: f64 = 0.10;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a whole number: {e}")),
        Err(_) => default,
    }
}

/// The server process of [`churn_soak`]: a [`Server`] with the echo bot and a short ICE
/// consent timeout, answering `stats` lines on stdin until stdin closes. Does nothing unless
/// `CHURN_SERVER_CHILD` is set (so `cargo test -- --ignored` does not hang on it).
#[test]
#[ignore = "the server process of churn_soak, which starts it"]
fn churn_server_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let consent = Duration::from_millis(env_number("CHURN_CONSENT_MS", 5_000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let metrics = runtime.handle().clone();
    runtime.block_on(async move {
        let server = Server::bind(ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            bot: bots::by_name("echo").expect("the echo bot"),
            timeouts: Timeouts {
                consent,
                ..Timeouts::default()
            },
            ..ServerConfig::default()
        })
        .await
        .expect("server binds");
        let handler = server.handler().clone();
        let offer_url = format!("http://{}/api/offer", server.http_addr());
        tokio::spawn(server.run(std::future::pending()));
        // A plain thread reads the commands, so asking never adds a task to the count.
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                match line {
                    Ok(line) if matches!(line.trim(), "stats" | "trim") => {
                        if line.trim() == "trim" {
                            trim_heap();
                        }
                        let counts = handler.state_counts();
                        println!(
                            "{STATS}{}",
                            json!({
                                "tasks": metrics.metrics().num_alive_tasks(),
                                "sessions": handler.session_count(),
                                "counts": format!("{counts:?}"),
                            })
                        );
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // The test is gone (or done): so is its server.
            std::process::exit(0);
        });
        println!("{READY}{}", json!({ "offer_url": offer_url }));
        std::future::pending::<()>().await
    });
}

/// Gives the C allocator's free pages back to the system (glibc's `malloc_trim`), so that RSS
/// shows the memory in use rather than what the allocator keeps cached for reuse: which of its
/// per-thread arenas a batch's sessions happened to use moves raw RSS by a few MiB between
/// runs, and that is not a leak.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointer and is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The server as the test sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stats {
    /// Resident memory (`VmRSS`), KiB.
    rss_kib: u64,
    /// Open file descriptors.
    fds: usize,
    /// Live tokio tasks.
    tasks: usize,
    /// Sessions in the table.
    sessions: usize,
}

struct ServerProcess {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    offer_url: String,
}

impl ServerProcess {
    async fn start() -> ServerProcess {
        let exe = std::env::current_exe().expect("the test's own executable");
        let mut child = Command::new(exe)
            .args([
                "churn_server_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the server process starts");
        let pid = child.id().expect("a running child has a pid");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = read_tagged(&mut lines, READY).await;
        let offer_url = ready["offer_url"]
            .as_str()
            .expect("READY names the offer URL")
            .to_string();
        ServerProcess {
            child,
            pid,
            stdin,
            lines,
            offer_url,
        }
    }

    async fn stats(&mut self) -> Stats {
        self.ask("stats").await
    }

    /// [`stats`](Self::stats) after the server trimmed its heap ([`trim_heap`]).
    async fn trimmed(&mut self) -> Stats {
        self.ask("trim").await
    }

    async fn ask(&mut self, command: &str) -> Stats {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("the server process reads its stdin");
        self.stdin.flush().await.expect("flushed");
        let inside = read_tagged(&mut self.lines, STATS).await;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("the server process's /proc status");
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("the server process's /proc fd list")
            .count();
        Stats {
            rss_kib,
            fds,
            tasks: inside["tasks"].as_u64().expect("tasks") as usize,
            sessions: inside["sessions"].as_u64().expect("sessions") as usize,
        }
    }

    /// The counts once they hold still for a moment (right after start-up, the server's own
    /// tasks may still be spawning).
    async fn settled(&mut self) -> Stats {
        let mut last = self.stats().await;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.stats().await;
            if (now.tasks, now.fds, now.sessions) == (last.tasks, last.fds, last.sessions) {
                return now;
            }
            last = now;
        }
    }

    /// Polls until no session is left and tasks and descriptors are back to `idle`'s counts.
    /// There is no event for "every task has ended", hence the polling; the bound is generous.
    async fn wait_idle(&mut self, idle: &Stats, bound: Duration) -> Stats {
        let deadline = Instant::now() + bound;
        loop {
            let now = self.stats().await;
            if now.sessions == 0 && now.tasks <= idle.tasks && now.fds <= idle.fds {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the server is not idle {bound:?} after the batch left: {now:?} \
                 (idle before the first session: {idle:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        drop(self.stdin); // the child exits when its stdin closes
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The next line starting with `tag`, its JSON after the tag.
async fn read_tagged(lines: &mut Lines<BufReader<ChildStdout>>, tag: &str) -> Value {
    loop {
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the server process said no {tag:?} line within {STEP:?}"))
            .expect("reading the server process's stdout")
            .unwrap_or_else(|| panic!("the server process exited before a {tag:?} line"));
        // The first one shares its line with libtest's "test churn_server_process ... ".
        if let Some(at) = line.find(tag) {
            return serde_json::from_str(&line[at + tag.len()..])
                .expect("the server process writes JSON");
        }
    }
}

/// One second of a 440 Hz tone as 20 ms Opus packets at 48 kHz, made once for every client.
fn tone_packets() -> Arc<Vec<Vec<u8>>> {
    let mut encoder = OpusEncoder::new(48_000, 1).expect("encoder");
    let tone = sine(TONE_HZ, 48_000, 48_000, 0.3);
    Arc::new(
        tone.chunks_exact(960)
            .map(|pcm| encoder.encode(pcm).expect("encoded").to_vec())
            .collect(),
    )
}

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// `pc.close()`: BYE, SCTP shutdown, DTLS close_notify.
    Close,
    /// Gone without a word; the server must notice by ICE consent.
    Vanish,
}

/// One session: connect, an app message and the tone echoed, report `live`, wait for `go`,
/// leave. Errors name the session and the step.
async fn one_session(
    offer_url: String,
    n: usize,
    packets: Arc<Vec<Vec<u8>>>,
    live: mpsc::UnboundedSender<Result<(), String>>,
    mut go: watch::Receiver<bool>,
    leave: Leave,
) -> Result<(), String> {
    let result = async {
        let client = TestClient::start(&offer_url, ClientOptions::js())
            .await
            .map_err(|e| format!("offer: {e}"))?;
        client.wait_connected(STEP).await.map_err(|e| e.message)?;
        client
            .wait_channel_open(STEP)
            .await
            .map_err(|e| e.message)?;

        let message = json!({"churn": n});
        client.send_json(&message).await.map_err(|e| e.message)?;
        client
            .recv_json_matching(STEP, |v| *v == message)
            .await
            .map_err(|e| format!("app message echo: {}", e.message))?;

        hear_own_tone(&client, &packets).await?;
        Ok::<_, String>(client)
    }
    .await;
    let client = match result {
        Ok(client) => client,
        Err(e) => {
            let e = format!("session {n}: {e}");
            let _ = live.send(Err(e.clone()));
            return Err(e);
        }
    };
    let _ = live.send(Ok(()));
    let _ = go.wait_for(|go| *go).await;
    match leave {
        Leave::Close => client.close().await,
        Leave::Vanish => client.vanish(),
    }
    Ok(())
}

/// Sends the tone until three echoed packets carrying it have come back.
async fn hear_own_tone(client: &TestClient, packets: &[Vec<u8>]) -> Result<(), String> {
    let mid = *client.mids().first().ok_or("no audio m-line")?;
    let mut events = client.events();
    let mut decoder = OpusDecoder::new(48_000, 1).map_err(|e| e.to_string())?;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + STEP;
    let (mut sent, mut heard) = (0u64, 0);
    while heard < 3 {
        tokio::select! {
            _ = ticker.tick() => {
                let packet = packets[sent as usize % packets.len()].clone();
                let time = MediaTime::new(sent * 960, Frequency::FORTY_EIGHT_KHZ);
                sent += 1;
                client
                    .with_rtc(move |rtc| {
                        let Some(writer) = rtc.writer(mid) else { return };
                        let Some(pt) = writer
                            .payload_params()
                            .find(|p| p.spec().codec == Codec::Opus)
                            .map(|p| p.pt())
                        else {
                            return;
                        };
                        let _ = writer.write(pt, Instant::now(), time, packet);
                    })
                    .await
                    .map_err(|e| format!("sending audio: {e}"))?;
            }
            event = events.recv() => match event {
                Ok(ClientEvent::MediaData { mid: m, data, .. }) if m == mid => {
                    if let Ok(pcm) = decoder.decode(&data) {
                        if tone_level_db(pcm, 48_000, TONE_HZ) > -30.0 {
                            heard += 1;
                        }
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err("client events closed".into()),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!("no echo of the tone after {STEP:?} ({sent} packets sent, {heard} heard)"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_soak() {
    let sessions = env_number("CHURN_SESSIONS", 300) as usize;
    let batch = (env_number("CHURN_BATCH", 50) as usize).max(1);
    let consent = Duration::from_millis(env_number("CHURN_CONSENT_MS", 5_000));
    let started = Instant::now();
    let mut server = ServerProcess::start().await;
    let idle = server.settled().await;
    let idle_trimmed = server.trimmed().await;
    println!("idle: {idle:?}; RSS {} KiB trimmed", idle_trimmed.rss_kib);
    let packets = tone_packets();
    // A vanished session is reaped `consent` after its last datagram; then its bot and
    // its HTTP connection end. Generous on a loaded machine.
    let idle_bound = consent + Duration::from_secs(30);

    // (raw, trimmed) RSS once idle after the first batch.
    let mut first: Option<(Stats, Stats)> = None;
    // Raw RSS once idle after the latest batch (before its trim).
    let mut last = idle;
    let mut peak = idle;
    let mut done = 0;
    let mut batch_no = 0;
    while done < sessions {
        let size = batch.min(sessions - done);
        let batch_start = Instant::now();
        let (live_tx, mut live_rx) = mpsc::unbounded_channel();
        let (go_tx, go_rx) = watch::channel(false);
        let tasks: Vec<_> = (done..done + size)
            .map(|n| {
                let leave = if n % 2 == 0 {
                    Leave::Close
                } else {
                    Leave::Vanish
                };
                tokio::spawn(one_session(
                    server.offer_url.clone(),
                    n,
                    packets.clone(),
                    live_tx.clone(),
                    go_rx.clone(),
                    leave,
                ))
            })
            .collect();
        drop(live_tx);
        // Every session of the batch is live at once before any leaves.
        let mut failures = Vec::new();
        for _ in 0..size {
            match live_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => failures.push(e),
                None => failures.push("a session task ended without a word".into()),
            }
        }
        assert!(
            failures.is_empty(),
            "batch {batch_no}: {} of {size} sessions failed: {failures:#?}",
            failures.len()
        );
        let busy = server.stats().await;
        assert_eq!(
            busy.sessions, size,
            "batch {batch_no}: every session of the batch is in the table"
        );
        if busy.rss_kib > peak.rss_kib {
            peak = busy;
        }
        let live_after = batch_start.elapsed();
        go_tx.send_replace(true);
        for task in tasks {
            task.await
                .expect("a session task panicked")
                .unwrap_or_else(|e| panic!("batch {batch_no}: {e}"));
        }
        let after = server.wait_idle(&idle, idle_bound).await;
        let idle_again = batch_start.elapsed();
        let trimmed = server.trimmed().await;
        done += size;
        println!(
            "batch {batch_no:>3}: {size} live after {:>4.1} s (RSS {} KiB, {} tasks, {} fds); \
             idle after {:>4.1} s: RSS {} KiB ({} KiB trimmed), {} tasks, {} fds; \
             {done} done in {:.0} s",
            live_after.as_secs_f64(),
            busy.rss_kib,
            busy.tasks,
            busy.fds,
            idle_again.as_secs_f64(),
            after.rss_kib,
            trimmed.rss_kib,
            after.tasks,
            after.fds,
            started.elapsed().as_secs_f64(),
        );
        first.get_or_insert((after, trimmed));
        last = after;
        batch_no += 1;
    }

    let end = server.wait_idle(&idle, idle_bound).await;
    let end_trimmed = server.trimmed().await;
    let (first, first_trimmed) = first.expect("at least one batch");
    println!(
        "{sessions} sessions in batches of {batch} in {:.0} s. RSS: idle {} KiB ({} trimmed), \
         after the first batch {} KiB ({} trimmed), peak with a batch live {} KiB, at the end \
         {} KiB ({} trimmed). Tasks {} -> {}, fds {} -> {}.",
        started.elapsed().as_secs_f64(),
        idle.rss_kib,
        idle_trimmed.rss_kib,
        first.rss_kib,
        first_trimmed.rss_kib,
        peak.rss_kib,
        last.rss_kib,
        end_trimmed.rss_kib,
        idle.tasks,
        end.tasks,
        idle.fds,
        end.fds,
    );
    assert_eq!(end.sessions, 0, "the session table is empty");
    assert!(
        end.tasks <= idle.tasks,
        "tokio tasks {} > {} before the first session",
        end.tasks,
        idle.tasks
    );
    assert!(
        end.fds <= idle.fds,
        "file descriptors {} > {} before the first session",
        end.fds,
        idle.fds
    );
    // Memory in use (the allocator's cache given back), so a leak shows and arena luck does not.
    let limit = first_trimmed.rss_kib as f64 * (1.0 + RSS_GROWTH);
    assert!(
        end_trimmed.rss_kib as f64 <= limit,
        "RSS (trimmed) grew from {} KiB after the first batch to {} KiB after {sessions} \
         sessions (more than {:.0} %)",
        first_trimmed.rss_kib,
        end_trimmed.rss_kib,
        RSS_GROWTH * 100.0
    );
    server.stop().await;
}
