//! Audio both ways over real WebRTC on loopback: what the bot hears is what the
//! client sent, what the client hears is what the bot wrote, paced by a clock.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{ClientEvent, ClientOptions, OfferShape, TestClient};
use smallwebrtc::bots::BotArgs;
use smallwebrtc::media::audio::{
    dominant_frequency, sine, tone_level_db, OpusDecoder, OpusEncoder,
};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputAudioRawFrame, InputFrame, OutputAudioRawFrame, SmallWebRtcTransport, TransportError,
    TransportEvent, TransportParams,
};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// Starts a server running `bot`; returns the offer URL.
async fn serve<B: smallwebrtc::bots::Bot>(bot: B) -> String {
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        bot: Arc::new(bot),
        ..ServerConfig::default()
    })
    .await
    .expect("server binds");
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    url
}

async fn connect(url: &str) -> TestClient {
    let client = TestClient::start(url, ClientOptions::js())
        .await
        .expect("answered");
    client.wait_connected(WAIT).await.expect("connected");
    client
}

/// Sends a continuous tone from the client as 20 ms Opus packets, dropping
/// every `drop_every`-th packet (0: none), like a lossy network.
fn send_tone(client: &TestClient, freq: f32, drop_every: u64) -> JoinHandle<()> {
    send_tone_packets(client, freq, drop_every, u64::MAX)
}

/// Like [`send_tone`], but stops after `count` packets (dropped ones included).
fn send_tone_packets(
    client: &TestClient,
    freq: f32,
    drop_every: u64,
    count: u64,
) -> JoinHandle<()> {
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mid = client.mids()[0];
        let mut encoder = OpusEncoder::new(48_000, 1).unwrap();
        let tone = sine(freq, 48_000, 48_000 * 60, 0.3);
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for n in 0..count {
            ticker.tick().await;
            let start = (n as usize * 960) % (tone.len() - 960);
            let packet = encoder.encode(&tone[start..start + 960]).unwrap();
            if drop_every > 0 && n % drop_every == drop_every - 1 {
                continue;
            }
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

/// Collects what the client hears on the audio m-line, decoded at 48 kHz, with
/// the arrival time of each 20 ms packet.
fn hear(client: &TestClient) -> mpsc::UnboundedReceiver<(Instant, Vec<i16>)> {
    let mut events = client.events();
    let mid = client.mids()[0];
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut decoder = OpusDecoder::new(48_000, 1).unwrap();
        while let Ok(event) = events.recv().await {
            if let ClientEvent::MediaData { mid: m, data, .. } = event {
                if m == mid {
                    if let Ok(pcm) = decoder.decode(&data) {
                        if tx.send((Instant::now(), pcm.to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

/// Waits for `duration` of heard audio and returns it.
async fn heard(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Vec<i16>)>,
    duration: Duration,
) -> Vec<(Instant, Vec<i16>)> {
    let mut out = Vec::new();
    let mut samples = 0;
    let want = (duration.as_secs_f64() * 48_000.0) as usize;
    while samples < want {
        let item = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("audio keeps coming")
            .expect("open");
        samples += item.1.len();
        out.push(item);
    }
    out
}

fn is_tone(pcm: &[i16], freq: f32) -> bool {
    tone_level_db(pcm, 48_000, freq) > -30.0
}

/// A bot that reports what it hears and plays what it is told to.
enum Say {
    Tone { freq: f32, seconds: f32 },
    Interrupt,
}

struct Probe {
    heard: mpsc::UnboundedReceiver<InputAudioRawFrame>,
    say: mpsc::UnboundedSender<Say>,
    /// How long each `send_audio` took, and how it ended.
    spoken: mpsc::UnboundedReceiver<(Duration, Result<(), TransportError>)>,
    /// Every transport event.
    events: mpsc::UnboundedReceiver<TransportEvent>,
    /// When the bot called `interrupt()`.
    interrupted: mpsc::UnboundedReceiver<Instant>,
}

async fn probe_server() -> (String, mpsc::UnboundedReceiver<Probe>) {
    let (probes_tx, probes) = mpsc::unbounded_channel();
    let bot = move |args: BotArgs| {
        let probes_tx = probes_tx.clone();
        async move {
            let transport = SmallWebRtcTransport::new(
                args.connection,
                TransportParams {
                    audio_in_enabled: true,
                    audio_out_enabled: true,
                    ..TransportParams::default()
                },
            )
            .unwrap();
            let (heard_tx, heard) = mpsc::unbounded_channel();
            let (say, mut say_rx) = mpsc::unbounded_channel();
            let (spoken_tx, spoken) = mpsc::unbounded_channel();
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            let (interrupted_tx, interrupted) = mpsc::unbounded_channel();
            let _ = probes_tx.send(Probe {
                heard,
                say,
                spoken,
                events: events_rx,
                interrupted,
            });
            let mut input = transport.input();
            let output = transport.output();
            let mut events = transport.events();
            loop {
                tokio::select! {
                    frame = input.recv() => match frame {
                        Some(InputFrame::Audio(a)) => { let _ = heard_tx.send(a); }
                        Some(_) => {}
                        None => return,
                    },
                    Some(cmd) = say_rx.recv() => match cmd {
                        Say::Tone { freq, seconds } => {
                            let rate = transport.params().audio_out_sample_rate;
                            let samples = sine(freq, rate, (rate as f32 * seconds) as usize, 0.3);
                            let output = output.clone();
                            let spoken_tx = spoken_tx.clone();
                            tokio::spawn(async move {
                                let t = Instant::now();
                                let result = output.send_audio(OutputAudioRawFrame::from_samples(&samples, rate)).await;
                                let _ = spoken_tx.send((t.elapsed(), result));
                            });
                        }
                        Say::Interrupt => {
                            output.interrupt();
                            let _ = interrupted_tx.send(Instant::now());
                        }
                    },
                    event = events.recv() => match event {
                        Some(TransportEvent::ClientClosed) | None => return,
                        Some(e) => { let _ = events_tx.send(e); }
                    },
                }
            }
        }
    };
    (serve(bot).await, probes)
}

#[tokio::test]
async fn the_bot_hears_the_clients_440_hz_tone_as_20_ms_16_khz_frames() {
    let (url, mut probes) = probe_server().await;
    let client = connect(&url).await;
    let mut probe = probes.recv().await.unwrap();
    let _sender = send_tone(&client, 440.0, 0);

    let mut frames = Vec::new();
    while frames.len() < 100 {
        frames.push(
            tokio::time::timeout(WAIT, probe.heard.recv())
                .await
                .expect("input frames")
                .unwrap(),
        );
    }
    for f in &frames {
        assert_eq!(
            (f.sample_rate, f.num_channels, f.audio.len()),
            (16_000, 1, 640),
            "20 ms of 16 kHz mono"
        );
    }
    for pair in frames.windows(2) {
        assert_eq!(
            pair[1].pts - pair[0].pts,
            Duration::from_millis(20),
            "steady 20 ms timeline"
        );
    }
    // Skip the first frames (the encoder's start-up), then look at one second.
    let pcm: Vec<i16> = frames[25..75].iter().flat_map(|f| f.samples()).collect();
    let freq = dominant_frequency(&pcm, 16_000);
    assert!((freq - 440.0).abs() < 5.0, "heard {freq} Hz");
}

#[tokio::test]
async fn ten_percent_packet_loss_keeps_a_steady_20_ms_cadence() {
    let (url, mut probes) = probe_server().await;
    let client = connect(&url).await;
    let mut probe = probes.recv().await.unwrap();
    // 200 packets (4 s); every 10th is lost, the last one among them.
    let _sender = send_tone_packets(&client, 440.0, 10, 200);

    let mut frames = Vec::new();
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(800), probe.heard.recv()).await
    {
        frames.push(frame);
    }
    // 180 packets arrived; 19 gaps lie between two of them and are concealed
    // (the last loss has no packet after it). Without concealment: 180 frames.
    assert!(
        (197..=199).contains(&frames.len()),
        "got {} frames for 4 s of audio with 10% loss",
        frames.len()
    );
    for pair in frames.windows(2) {
        assert_eq!(
            pair[1].pts - pair[0].pts,
            Duration::from_millis(20),
            "no holes in the timeline"
        );
        assert_eq!(pair[1].audio.len(), 640);
    }
    // Concealment keeps the tone recognisable.
    let pcm: Vec<i16> = frames[50..100].iter().flat_map(|f| f.samples()).collect();
    let freq = dominant_frequency(&pcm, 16_000);
    assert!(
        (freq - 440.0).abs() < 5.0,
        "heard {freq} Hz through 10% loss"
    );
}

#[tokio::test]
async fn the_client_hears_the_bots_1_khz_tone_paced_over_its_length_and_interruption_stops_it() {
    let (url, mut probes) = probe_server().await;
    let client = connect(&url).await;
    let mut heard_rx = hear(&client);
    let mut probe = probes.recv().await.unwrap();

    // Before the bot speaks: silence (auto-silence keeps the track live).
    let quiet = heard(&mut heard_rx, Duration::from_millis(200)).await;
    assert!(quiet.iter().all(|(_, pcm)| !is_tone(pcm, 1000.0)));

    // 2 s written at once plays out over 2 s.
    probe
        .say
        .send(Say::Tone {
            freq: 1000.0,
            seconds: 2.0,
        })
        .unwrap();
    let (took, result) = tokio::time::timeout(WAIT, probe.spoken.recv())
        .await
        .unwrap()
        .unwrap();
    result.expect("played");
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_millis(2100),
        "2 s of audio took {took:?} to play"
    );
    let heard_all = heard(&mut heard_rx, Duration::from_millis(2500)).await;
    let toned: Vec<&(Instant, Vec<i16>)> = heard_all
        .iter()
        .filter(|(_, pcm)| is_tone(pcm, 1000.0))
        .collect();
    let span = toned.last().unwrap().0 - toned.first().unwrap().0;
    assert!(
        span >= Duration::from_millis(1900) && span <= Duration::from_millis(2100),
        "the client heard the tone over {span:?}"
    );
    let pcm: Vec<i16> = toned
        .iter()
        .skip(5)
        .take(50)
        .flat_map(|(_, p)| p.clone())
        .collect();
    let freq = dominant_frequency(&pcm, 48_000);
    assert!((freq - 1000.0).abs() < 5.0, "heard {freq} Hz");

    // Interruption: 5 s queued, interrupted after 500 ms: the writer is told at
    // once and the client hears the tone stop within a frame.
    while heard_rx.try_recv().is_ok() {}
    probe
        .say
        .send(Say::Tone {
            freq: 1000.0,
            seconds: 5.0,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    probe.say.send(Say::Interrupt).unwrap();
    let (took, result) = tokio::time::timeout(WAIT, probe.spoken.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result, Err(TransportError::Interrupted));
    assert!(
        took < Duration::from_millis(700),
        "interrupted write returned after {took:?}"
    );
    let interrupted_at = tokio::time::timeout(WAIT, probe.interrupted.recv())
        .await
        .unwrap()
        .unwrap();
    let after = heard(&mut heard_rx, Duration::from_millis(1500)).await;
    let toned: Vec<Instant> = after
        .iter()
        .filter(|(_, pcm)| is_tone(pcm, 1000.0))
        .map(|(t, _)| *t)
        .collect();
    // About 500 ms of tone was played before the interrupt...
    assert!(
        (20..=35).contains(&toned.len()),
        "heard {} tone frames for about 500 ms before the interrupt",
        toned.len()
    );
    // ...and none after the next frame: the last tone frame left at most one
    // 20 ms slot after interrupt() (plus loopback delivery).
    let last = *toned.last().unwrap();
    let late = last.saturating_duration_since(interrupted_at);
    assert!(
        late <= Duration::from_millis(45),
        "tone still heard {late:?} after the interrupt"
    );
}

#[tokio::test]
async fn the_echo_bot_returns_the_clients_tone() {
    let url = serve(smallwebrtc::bots::echo::run).await;
    let client = connect(&url).await;
    let mut heard_rx = hear(&client);
    let _sender = send_tone(&client, 440.0, 0);
    let t = Instant::now();
    loop {
        let chunk = heard(&mut heard_rx, Duration::from_millis(200)).await;
        let pcm: Vec<i16> = chunk.iter().flat_map(|(_, p)| p.clone()).collect();
        if tone_level_db(&pcm, 48_000, 440.0) > -30.0 {
            let freq = dominant_frequency(&pcm, 48_000);
            assert!((freq - 440.0).abs() < 5.0, "echo came back at {freq} Hz");
            break;
        }
        assert!(t.elapsed() < WAIT, "no echo of the tone");
    }
}

/// An ESP32-shaped client (libpeer's `UDP/TLS/RTP/SAVP` audio, data channel
/// `"rtvi-ai"`, no trickle) against a server in `--esp32` mode hears its own tone.
#[tokio::test]
async fn an_esp32_client_hears_its_tone_echoed() {
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        esp32: true,
        bot: Arc::new(smallwebrtc::bots::echo::run),
        ..ServerConfig::default()
    })
    .await
    .expect("server binds");
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    let client = TestClient::start(&url, ClientOptions::for_shape(OfferShape::Esp32))
        .await
        .expect("answered");
    assert!(client.offer_sdp().contains("m=audio 9 UDP/TLS/RTP/SAVP "));
    client.wait_connected(WAIT).await.expect("connected");
    let mut heard_rx = hear(&client);
    let _sender = send_tone(&client, 440.0, 0);
    let t = Instant::now();
    loop {
        let chunk = heard(&mut heard_rx, Duration::from_millis(200)).await;
        let pcm: Vec<i16> = chunk.iter().flat_map(|(_, p)| p.clone()).collect();
        if is_tone(&pcm, 440.0) {
            let freq = dominant_frequency(&pcm, 48_000);
            assert!((freq - 440.0).abs() < 5.0, "echo came back at {freq} Hz");
            break;
        }
        assert!(t.elapsed() < WAIT, "no echo of the ESP32 client's tone");
    }
}

#[tokio::test]
async fn after_restart_pc_audio_flows_again_and_client_connected_fires_again() {
    let (url, mut probes) = probe_server().await;
    let client = connect(&url).await;
    let mut probe = probes.recv().await.unwrap();
    assert_eq!(
        next_event(&mut probe.events).await,
        TransportEvent::ClientConnected
    );

    client.renegotiate(true).await.expect("restart answered");
    client.wait_connected(WAIT).await.unwrap();
    assert_eq!(
        next_event(&mut probe.events).await,
        TransportEvent::ClientConnected,
        "fires again after restart_pc"
    );
    assert!(probes.try_recv().is_err(), "the same bot, no second one");

    // The new peer connection hears the bot.
    let mut heard_rx = hear(&client);
    probe
        .say
        .send(Say::Tone {
            freq: 1000.0,
            seconds: 1.0,
        })
        .unwrap();
    let chunk = heard(&mut heard_rx, Duration::from_millis(1200)).await;
    let toned = chunk.iter().filter(|(_, pcm)| is_tone(pcm, 1000.0)).count();
    assert!(toned >= 40, "only {toned} tone frames after the restart");
    // And the bot hears the new peer connection.
    let _sender = send_tone(&client, 440.0, 0);
    while probe.heard.try_recv().is_ok() {}
    let frame = tokio::time::timeout(WAIT, probe.heard.recv())
        .await
        .expect("input after restart")
        .unwrap();
    assert_eq!(frame.audio.len(), 640);
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<TransportEvent>) -> TransportEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event")
        .unwrap()
}

#[tokio::test]
async fn bad_writes_get_errors_that_name_the_problem() {
    let (tx, mut results) = mpsc::unbounded_channel::<(&'static str, String)>();
    let bot = move |args: BotArgs| {
        let tx = tx.clone();
        async move {
            let report = |case: &'static str, r: Result<(), TransportError>| {
                let _ = tx.send((
                    case,
                    r.err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "ok".into()),
                ));
            };
            let bad = SmallWebRtcTransport::new(
                args.connection.clone(),
                TransportParams {
                    audio_in_channels: 3,
                    ..TransportParams::default()
                },
            );
            report("three input channels", bad.map(|_| ()));
            let bad = SmallWebRtcTransport::new(
                args.connection.clone(),
                TransportParams {
                    audio_out_enabled: true,
                    audio_out_opus_complexity: 11,
                    ..TransportParams::default()
                },
            );
            report("complexity 11", bad.map(|_| ()));
            let silent =
                SmallWebRtcTransport::new(args.connection.clone(), TransportParams::default())
                    .unwrap();
            report(
                "output disabled",
                silent
                    .output()
                    .write_audio(OutputAudioRawFrame::from_samples(&[0; 480], 24_000))
                    .map(|_| ()),
            );
            let transport = SmallWebRtcTransport::new(
                args.connection.clone(),
                TransportParams {
                    audio_out_enabled: true,
                    ..TransportParams::default()
                },
            )
            .unwrap();
            let output = transport.output();
            let odd = OutputAudioRawFrame {
                audio: vec![0; 3],
                sample_rate: 24_000,
                num_channels: 1,
            };
            report("odd byte count", output.write_audio(odd).map(|_| ()));
            let stereo = OutputAudioRawFrame {
                audio: vec![0; 1920],
                sample_rate: 24_000,
                num_channels: 2,
            };
            report("stereo", output.write_audio(stereo).map(|_| ()));
            let strange = OutputAudioRawFrame::from_samples(&[0; 70], 7_000);
            report("7 kHz", output.write_audio(strange).map(|_| ()));
            let foreign = OutputAudioRawFrame::from_samples(&[0; 441], 22_050);
            report(
                "22.05 kHz is resampled",
                output.write_audio(foreign).map(|_| ()),
            );
            args.connection.close().await;
            // The transport learns of the close through its event task.
            let mut events = transport.events();
            while let Some(e) = events.recv().await {
                if e == TransportEvent::ClientClosed {
                    break;
                }
            }
            report(
                "after close",
                transport
                    .send_audio(OutputAudioRawFrame::from_samples(&[0; 480], 24_000))
                    .await,
            );
        }
    };
    let url = serve(bot).await;
    // The bot closes the session at once: no trickle PATCH may follow the offer.
    let opts = ClientOptions {
        trickle: false,
        ..ClientOptions::js()
    };
    let _client = TestClient::start(&url, opts).await.expect("answered");
    let mut got = Vec::new();
    while got.len() < 8 {
        got.push(
            tokio::time::timeout(WAIT, results.recv())
                .await
                .expect("a result")
                .unwrap(),
        );
    }
    let expect = [
        (
            "three input channels",
            "audio_in_channels must be 1 or 2, got 3",
        ),
        (
            "complexity 11",
            "invalid Opus complexity 11: expected 0..=10",
        ),
        ("output disabled", "audio output is disabled"),
        ("odd byte count", "3"),
        ("stereo", "2"),
        ("7 kHz", "7000"),
        ("22.05 kHz is resampled", "ok"),
        ("after close", "the session is closed"),
    ];
    for ((case, message), (want_case, want)) in got.iter().zip(expect) {
        assert_eq!(*case, want_case);
        assert!(
            message.contains(want),
            "{case}: {message:?} should mention {want:?}"
        );
    }
    // The odd-count and stereo messages say what is wrong, not just a number.
    assert!(
        got[3].1.to_lowercase().contains("odd") || got[3].1.contains("byte"),
        "{}",
        got[3].1
    );
    assert!(got[4].1.to_lowercase().contains("channel"), "{}", got[4].1);
}

/// `/metrics` reports each session's round-trip time and packet loss, from RTCP, and how long
/// datagrams wait for their session.
#[tokio::test]
async fn metrics_report_round_trip_time_and_packet_loss() {
    let url = serve(smallwebrtc::bots::echo::run).await;
    let metrics_url = url.replace("/api/offer", "/metrics");
    let client = connect(&url).await;
    let _sender = send_tone(&client, 440.0, 0);
    let http = reqwest::Client::new();
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    // Stats come every 5 s per session; RTCP needs a report each way first.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if value(&text, "smallwebrtc_round_trip_seconds_count") >= 1.0
            && value(&text, "smallwebrtc_packet_loss_in_ratio_count") >= 1.0
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no round trip or loss sample:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // On loopback the round trip is well under 100 ms.
    let count = value(&text, "smallwebrtc_round_trip_seconds_count");
    let under_100ms = value(&text, "smallwebrtc_round_trip_seconds_bucket{le=\"0.1\"}");
    assert_eq!(under_100ms, count, "{text}");
    // Loopback loses nothing. (Skipping a packet in the test client would not show:
    // str0m numbers only the packets written, so the sequence has no gap.)
    let loss_samples = value(&text, "smallwebrtc_packet_loss_in_ratio_count");
    let lossless = value(&text, "smallwebrtc_packet_loss_in_ratio_bucket{le=\"0\"}");
    assert_eq!(lossless, loss_samples, "{text}");
    // An idle server hands each datagram to its session at once.
    let queued = value(&text, "smallwebrtc_inbound_queue_delay_seconds_count");
    let prompt = value(
        &text,
        "smallwebrtc_inbound_queue_delay_seconds_bucket{le=\"0.025\"}",
    );
    assert!(queued > 0.0 && prompt >= 0.9 * queued, "{text}");
}
