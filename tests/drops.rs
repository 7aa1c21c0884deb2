//! Abrupt drops: clients that disappear without a goodbye, over real WebRTC on loopback,
//! with the server's real timeouts (ICE consent: 30 s).
//!
//! * a client that is killed (its task and socket gone, nothing more sent) and one whose
//!   network path is cut for good (every datagram either way lost, its timers still running)
//!   are both noticed by ICE consent: the session fails, the bot gets `on_client_disconnected`
//!   and then `on_client_closed`, and the session leaves the table — within 35 s;
//! * a client whose path is cut for 5 s and then returns keeps its session: no event reaches
//!   the bot, and audio and app messages flow again.
//!
//! Every time is measured from the moment of the drop to the server's own events (the bot's
//! `TransportEvent`s and the session's `ConnectionEvent`s), not from sleeps. The first two
//! cases run concurrently in one test, so the suite waits out the 30 s consent timeout once.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`:
//!
//! ```sh
//! cargo test --offline --no-run --test drops
//! ../shared/tools/nsrun cargo test --offline --test drops -- --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{ClientEvent, ClientOptions, TestClient};
use serde_json::json;
use smallwebrtc::bots::{echo, BotArgs};
use smallwebrtc::media::audio::{sine, tone_level_db, OpusDecoder, OpusEncoder};
use smallwebrtc::peer::Timeouts;
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputFrame, OutputAudioRawFrame, SmallWebRtcTransport, TransportEvent, TransportParams,
};
use smallwebrtc::{ConnectionEvent, SmallWebRtcRequestHandler};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// Generous bound for anything that is not a timeout under test (a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(20);
/// The brief: a vanished client's session is closed within this long.
const DETECTION_BOUND: Duration = Duration::from_secs(35);
/// The tone the client sends, and hears back from the echo.
const TONE_HZ: f32 = 440.0;

/// One thing the server did, as the bot of a session saw it.
#[derive(Debug)]
struct Report {
    pc_id: String,
    at: Instant,
    what: Seen,
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A bot callback (`on_client_connected`, `on_client_disconnected`, ...).
    Transport(TransportEvent),
    /// The session's own event (`Failed` is the consent failure).
    Connection(ConnectionEvent),
}

/// A bot that echoes like `echo` (audio back at 16 kHz, app messages back) and reports
/// every transport and connection event with the instant it saw it.
async fn reporting_echo(args: BotArgs, reports: mpsc::UnboundedSender<Report>) {
    let connection = args.connection.clone();
    let pc_id = connection.pc_id();
    let report = |what: Seen| {
        let _ = reports.send(Report {
            pc_id: pc_id.clone(),
            at: Instant::now(),
            what,
        });
    };
    let mut session_events = connection.events();
    let transport = SmallWebRtcTransport::new(
        args.connection,
        TransportParams {
            audio_in_enabled: true,
            audio_in_sample_rate: 16_000,
            audio_out_enabled: true,
            audio_out_sample_rate: 16_000,
            ..TransportParams::default()
        },
    )
    .expect("valid parameters");
    let (mut input, output, mut events) =
        (transport.input(), transport.output(), transport.events());
    let about = echo::about();
    let (mut session_open, mut input_open) = (true, true);
    loop {
        tokio::select! {
            frame = input.recv(), if input_open => match frame {
                // Like `echo`: a grown queue would never drain, so drop a frame instead.
                Some(InputFrame::Audio(audio)) if output.queued() < Duration::from_millis(60) => {
                    let _ = output.write_audio(OutputAudioRawFrame {
                        audio: audio.audio,
                        sample_rate: audio.sample_rate,
                        num_channels: audio.num_channels,
                    });
                }
                Some(_) => {}
                None => input_open = false,
            },
            event = session_events.recv(), if session_open => match event {
                Some(event) => report(Seen::Connection(event)),
                None => session_open = false,
            },
            event = events.recv() => match event {
                Some(event) => {
                    if let TransportEvent::AppMessage { message, .. } = &event {
                        echo::answer(&connection, message, &about);
                    }
                    let closed = event == TransportEvent::ClientClosed;
                    report(Seen::Transport(event));
                    if closed {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

struct Harness {
    offer_url: String,
    handler: SmallWebRtcRequestHandler,
    reports: mpsc::UnboundedReceiver<Report>,
    /// Reports read while waiting for another session's, kept for their own waiter.
    held: Vec<Report>,
}

impl Harness {
    /// A server with the real timeouts and the reporting echo bot.
    async fn start() -> Harness {
        let (tx, reports) = mpsc::unbounded_channel();
        let bot = move |args: BotArgs| reporting_echo(args, tx.clone());
        let server = Server::bind(ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            bot: Arc::new(bot),
            timeouts: Timeouts::default(),
            ..ServerConfig::default()
        })
        .await
        .expect("server binds");
        assert_eq!(
            server.handler().session_count(),
            0,
            "a fresh server has no session"
        );
        let offer_url = format!("http://{}/api/offer", server.http_addr());
        let handler = server.handler().clone();
        tokio::spawn(server.run(std::future::pending()));
        Harness {
            offer_url,
            handler,
            reports,
            held: Vec::new(),
        }
    }

    /// Waits (up to `timeout`) for session `pc_id` to report something matching `pred`.
    async fn wait_for(
        &mut self,
        pc_id: &str,
        timeout: Duration,
        pred: impl Fn(&Seen) -> bool,
    ) -> Result<Report, String> {
        if let Some(i) = self
            .held
            .iter()
            .position(|r| r.pc_id == pc_id && pred(&r.what))
        {
            return Ok(self.held.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(r)) if r.pc_id == pc_id && pred(&r.what) => return Ok(r),
                Ok(Some(r)) => self.held.push(r),
                Ok(None) => return Err("the bots' report channel closed".into()),
                Err(_) => return Err(format!("nothing matching within {timeout:?}")),
            }
        }
    }

    /// Everything session `pc_id` reported so far, without waiting.
    fn drain_reports(&mut self, pc_id: &str) -> Vec<Seen> {
        while let Ok(r) = self.reports.try_recv() {
            self.held.push(r);
        }
        let (mine, others) = self.held.drain(..).partition(|r| r.pc_id == pc_id);
        self.held = others;
        mine.into_iter().map(|r: Report| r.what).collect()
    }
}

/// A JS-shaped client, connected, channel open, whose bot said `on_client_connected`.
async fn connect(h: &mut Harness) -> TestClient {
    let client = TestClient::start(&h.offer_url, ClientOptions::js())
        .await
        .expect("offer answered");
    client.wait_connected(WAIT).await.expect("connected");
    client.wait_channel_open(WAIT).await.expect("channel open");
    let pc_id = client.pc_id();
    h.wait_for(&pc_id, WAIT, |s| {
        *s == Seen::Transport(TransportEvent::ClientConnected)
    })
    .await
    .unwrap_or_else(|e| panic!("no on_client_connected for {pc_id}: {e}"));
    client
}

/// Sends a 440 Hz tone from the client as 20 ms Opus packets until aborted. Packets written
/// while the path is cut are lost with it.
fn send_tone(client: &TestClient) -> JoinHandle<()> {
    let mid = client.mids()[0];
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mut encoder = OpusEncoder::new(48_000, 1).expect("encoder");
        let tone = sine(TONE_HZ, 48_000, 48_000, 0.3);
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for n in 0u64.. {
            ticker.tick().await;
            let start = (n as usize * 960) % (tone.len() - 960);
            let packet = encoder.encode(&tone[start..start + 960]).expect("encoded");
            let sent = client
                .with_rtc(move |rtc| {
                    let Some(writer) = rtc.writer(mid) else {
                        return; // the path is cut: the stand-in has no such m-line
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

/// The arrival instants of the client's received audio packets that carry the tone.
fn hear_tone(client: &TestClient) -> mpsc::UnboundedReceiver<Instant> {
    let mut events = client.events();
    let mid = client.mids()[0];
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut decoder = OpusDecoder::new(48_000, 1).expect("decoder");
        loop {
            match events.recv().await {
                Ok(ClientEvent::MediaData { mid: m, data, .. }) if m == mid => {
                    let at = Instant::now();
                    if let Ok(pcm) = decoder.decode(&data) {
                        if tone_level_db(pcm, 48_000, TONE_HZ) > -30.0 && tx.send(at).is_err() {
                            return;
                        }
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    rx
}

/// Waits for `count` echoed tone packets; returns when the first came.
async fn tone_back(heard: &mut mpsc::UnboundedReceiver<Instant>, count: usize) -> Instant {
    let mut first = None;
    for _ in 0..count {
        let at = tokio::time::timeout(WAIT, heard.recv())
            .await
            .expect("the echoed tone keeps coming")
            .expect("the client is listening");
        first.get_or_insert(at);
    }
    first.expect("count > 0")
}

/// An app message goes to the echo bot and comes back; returns the round trip.
async fn message_round_trip(client: &TestClient, n: u64) -> Duration {
    let message = json!({"drops": n});
    let sent = Instant::now();
    client.send_json(&message).await.expect("message sent");
    client
        .recv_json_matching(WAIT, |v| *v == message)
        .await
        .unwrap_or_else(|e| panic!("no echo of {message}: {}", e.message));
    sent.elapsed()
}

/// What the server did after a client dropped: how long after the drop the session failed
/// (consent), the bot heard `on_client_disconnected`, and the session was seen gone from the
/// table.
#[derive(Debug)]
struct Detection {
    failed: Duration,
    disconnected: Duration,
    /// When the test saw the session gone from the table (an upper bound).
    removed: Duration,
}

/// Waits for session `pc_id`, dropped at `dropped`, to be closed by ICE consent; checks the
/// order and number of events and that the session table no longer has it.
async fn expect_consent_close(h: &mut Harness, pc_id: &str, dropped: Instant) -> Detection {
    let failed = h
        .wait_for(pc_id, DETECTION_BOUND + WAIT, |s| {
            *s == Seen::Connection(ConnectionEvent::Failed)
        })
        .await
        .unwrap_or_else(|e| panic!("session {pc_id} never failed: {e}"));
    let disconnected = h
        .wait_for(pc_id, WAIT, |s| {
            *s == Seen::Transport(TransportEvent::ClientDisconnected)
        })
        .await
        .unwrap_or_else(|e| panic!("no on_client_disconnected for {pc_id}: {e}"));
    h.wait_for(pc_id, WAIT, |s| {
        *s == Seen::Transport(TransportEvent::ClientClosed)
    })
    .await
    .unwrap_or_else(|e| panic!("no on_client_closed for {pc_id}: {e}"));
    let disconnects = h
        .drain_reports(pc_id)
        .iter()
        .filter(|s| **s == Seen::Transport(TransportEvent::ClientDisconnected))
        .count();
    assert_eq!(
        disconnects, 0,
        "on_client_disconnected fired more than once"
    );
    // The table lets go of a session in a task of its own once the session has closed; there
    // is no event for that, so poll, with a tight bound.
    let closed = Instant::now();
    while h.handler.connection(pc_id).is_some() {
        assert!(
            closed.elapsed() < Duration::from_secs(2),
            "session {pc_id} is still in the table 2 s after on_client_closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Detection {
        failed: failed.at - dropped,
        disconnected: disconnected.at - dropped,
        removed: dropped.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_cut_off_clients_are_closed_by_ice_consent_within_35_s() {
    let mut h = Harness::start().await;
    let killed = connect(&mut h).await;
    let cut = connect(&mut h).await;
    let (killed_id, cut_id) = (killed.pc_id(), cut.pc_id());
    // Both sessions carry audio and messages before the drop.
    for client in [&killed, &cut] {
        let mut heard = hear_tone(client);
        let sender = send_tone(client);
        tone_back(&mut heard, 3).await;
        message_round_trip(client, 1).await;
        sender.abort();
    }
    let _killed_sender = send_tone(&killed);
    let _cut_sender = send_tone(&cut);

    // (a) Killed: the IO task is aborted and its socket closed; not one more datagram.
    let killed_at = Instant::now();
    killed.vanish();
    // (b) Cut: the client lives on, but nothing it sends arrives and nothing reaches it.
    let cut_at = Instant::now();
    let cutter = tokio::spawn({
        let cut = cut.clone_handle();
        async move { cut.cut_path(Duration::from_secs(3600)).await }
    });

    let killed_detection = expect_consent_close(&mut h, &killed_id, killed_at).await;
    let cut_detection = expect_consent_close(&mut h, &cut_id, cut_at).await;
    println!("killed client: {killed_detection:?}; cut-off client: {cut_detection:?}");
    for (what, d) in [("killed", &killed_detection), ("cut-off", &cut_detection)] {
        assert!(
            d.disconnected <= DETECTION_BOUND && d.removed <= DETECTION_BOUND,
            "the {what} client's session was closed only {:?} after the drop \
             (on_client_disconnected after {:?})",
            d.removed,
            d.disconnected
        );
        // Consent is 30 s of silence: an earlier close would mean something else ended it.
        assert!(
            d.failed >= Duration::from_secs(29),
            "the {what} client's session failed after only {:?}",
            d.failed
        );
    }
    assert_eq!(h.handler.session_count(), 0, "sessions left in the table");
    cutter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_path_returns_after_5_s_keeps_its_session_and_media_flows_again() {
    const CUT: Duration = Duration::from_secs(5);
    let mut h = Harness::start().await;
    let client = connect(&mut h).await;
    let pc_id = client.pc_id();
    let mut heard = hear_tone(&client);
    let _sender = send_tone(&client);
    tone_back(&mut heard, 3).await;
    message_round_trip(&client, 1).await;

    let cut_at = Instant::now();
    client
        .cut_path(CUT)
        .await
        .expect("the path is cut and back");
    let back_at = Instant::now();

    // Nothing reached the client while the path was cut: the tone stopped for about 5 s.
    let mut during = 0;
    let mut after = None;
    while let Ok(at) = heard.try_recv() {
        if at > cut_at + Duration::from_millis(500) && at < back_at {
            during += 1;
        } else if at >= back_at {
            after.get_or_insert(at);
        }
    }
    assert_eq!(
        during, 0,
        "{during} tone packets arrived through a cut path"
    );

    // The same session carries on: the echoed tone and app messages come back.
    let tone_again = match after {
        Some(at) => at,
        None => tone_back(&mut heard, 1).await,
    };
    tone_back(&mut heard, 10).await;
    let round_trip = message_round_trip(&client, 2).await;
    client.wait_connected(WAIT).await.expect("still connected");
    println!(
        "path cut for {:?}: echoed tone back {:?} after the path returned; \
         app message round trip {round_trip:?}",
        back_at - cut_at,
        tone_again.saturating_duration_since(back_at)
    );

    let seen = h.drain_reports(&pc_id);
    assert!(
        !seen.iter().any(|s| matches!(
            s,
            Seen::Transport(TransportEvent::ClientDisconnected | TransportEvent::ClientClosed)
                | Seen::Connection(
                    ConnectionEvent::Failed
                        | ConnectionEvent::Closed
                        | ConnectionEvent::Disconnected
                )
        )),
        "the server gave up on a client whose path came back: {seen:?}"
    );
    assert_eq!(client.pc_id(), pc_id, "the same peer connection");
    let session = h.handler.connection(&pc_id).expect("the session is kept");
    assert!(!session.is_closed());
    assert_eq!(h.handler.session_count(), 1);
}
