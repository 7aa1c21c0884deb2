//! The built-in `video-transform` bot and the bots in `examples/`, checked the
//! way a user would: what the client sees and hears back, over real WebRTC on
//! loopback; and the examples' building blocks (the voice-activity detector,
//! the RGB transform) on synthetic input.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

// The examples are included as they are, so what is tested is what a user
// copies; their `main`s are unused here.
#[allow(dead_code)]
#[path = "../examples/echo.rs"]
mod echo_example;
#[allow(dead_code)]
#[path = "../examples/video_transform.rs"]
mod video_transform_example;
#[allow(dead_code)]
#[path = "../examples/wait_for_silence.rs"]
mod wait_for_silence;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{ClientEvent, ClientOptions, TestClient, VideoCodecs};
use serde_json::json;
use smallwebrtc::bots::video_transform::{invert_with_marker, marker_span};
use smallwebrtc::media::audio::{
    dominant_frequency, sine, tone_level_db, OpusDecoder, OpusEncoder,
};
use smallwebrtc::media::video::{
    max_channel_difference, quadrant_colors, quadrants, EncoderConfig, Image, VideoFormat,
    Vp8Decoder, Vp8Encoder, QUADRANT_COLORS,
};
use smallwebrtc::server::{Server, ServerConfig};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wait_for_silence::{Utterance, Vad, VadConfig, VadEvent};

const WAIT: Duration = Duration::from_secs(15);
/// Colours survive VP8 and BT.601 within this much per channel.
const TOLERANCE: u8 = 40;
/// The quadrant card inverted: red → cyan, green → magenta, blue → yellow, white → black.
const INVERTED: [[u8; 3]; 4] = [[0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0]];

/// Starts a server running `bot` on loopback; returns the offer URL.
async fn serve(bot: Arc<dyn smallwebrtc::bots::Bot>) -> String {
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        bot,
        ..ServerConfig::default()
    })
    .await
    .expect("server binds");
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    url
}

/// A client like the official one, offering VP8 only so that the test knows
/// which decoder to use.
async fn connect(url: &str) -> TestClient {
    let client = TestClient::start(
        url,
        ClientOptions {
            video_codecs: VideoCodecs::Vp8Only,
            ..ClientOptions::js()
        },
    )
    .await
    .expect("answered");
    client.wait_connected(WAIT).await.expect("connected");
    client
}

/// Writes one encoded frame on `mid` with the first payload type of `codec`.
async fn write_media(
    client: &TestClient,
    mid: Mid,
    codec: Codec,
    time: MediaTime,
    data: Vec<u8>,
) -> bool {
    client
        .with_rtc(move |rtc| {
            let Some(writer) = rtc.writer(mid) else {
                return;
            };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
            else {
                return;
            };
            let _ = writer.write(pt, Instant::now(), time, data);
        })
        .await
        .is_ok()
}

/// Sends a 640×480 quadrant card as the client's camera, VP8 at 15 fps.
fn send_card(client: &TestClient) -> JoinHandle<()> {
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mid = client.mids()[1];
        let mut encoder = Vp8Encoder::new(EncoderConfig {
            bitrate_kbps: 800,
            framerate: 15,
            ..EncoderConfig::default()
        })
        .unwrap();
        let card = quadrants(640, 480).into_i420().unwrap();
        let mut keyframe = true;
        let mut events = client.events();
        let mut ticker = tokio::time::interval(Duration::from_millis(66));
        for n in 0u64.. {
            ticker.tick().await;
            while let Ok(e) = events.try_recv() {
                if matches!(e, ClientEvent::KeyframeRequest { mid: m } if m == mid) {
                    keyframe = true;
                }
            }
            let pts = n * 6000;
            let frames = encoder
                .encode(&card, pts, std::mem::take(&mut keyframe))
                .unwrap();
            for f in frames {
                let time = MediaTime::new(pts, Frequency::NINETY_KHZ);
                if !write_media(&client, mid, Codec::Vp8, time, f.data).await {
                    return;
                }
            }
        }
    })
}

/// Sends `tone_packets` 20 ms Opus packets of a 440 Hz tone from the client's
/// microphone, then silence for ever. `silent` gets the moment the first
/// silent packet was sent.
fn send_tone_then_silence(
    client: &TestClient,
    tone_packets: u64,
    silent: oneshot::Sender<Instant>,
) -> JoinHandle<()> {
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mid = client.mids()[0];
        let mut encoder = OpusEncoder::new(48_000, 1).unwrap();
        // One second holds exactly 440 cycles, so it loops without a click.
        let tone = sine(440.0, 48_000, 48_000, 0.3);
        let quiet = vec![0i16; 960];
        // Delay, not burst, after a stall: the silence the bot waits for must
        // really last as long on the wall clock as it says.
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silent = Some(silent);
        for n in 0u64.. {
            ticker.tick().await;
            let pcm = if n < tone_packets {
                let start = (n % 50) as usize * 960;
                &tone[start..start + 960]
            } else {
                if let Some(tx) = silent.take() {
                    let _ = tx.send(Instant::now());
                }
                &quiet[..]
            };
            let packet = encoder.encode(pcm).unwrap();
            let time = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
            if !write_media(&client, mid, Codec::Opus, time, packet).await {
                return;
            }
        }
    })
}

/// What the client hears, decoded at 48 kHz, with each 20 ms packet's arrival time.
fn hear(client: &TestClient) -> mpsc::UnboundedReceiver<(Instant, Vec<i16>)> {
    let mut events = client.events();
    let mid = client.mids()[0];
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut decoder = OpusDecoder::new(48_000, 1).unwrap();
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
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

fn is_tone(pcm: &[i16]) -> bool {
    tone_level_db(pcm, 48_000, 440.0) > -30.0
}

/// The centre of the bright run of the marker strip in `image` (RGB), and its
/// width, in pixels; `None` if the strip has no bright pixel.
fn marker_in(image: &Image) -> Option<(f64, usize)> {
    let (w, h) = (image.width as usize, image.height as usize);
    // A row in the middle of the strip, away from the picture above it.
    let (_, _, y0) = marker_span(image.width, image.height, Duration::ZERO);
    let y = (y0 as usize + h) / 2;
    let row = &image.data[y * w * 3..(y + 1) * w * 3];
    let bright: Vec<usize> = row
        .chunks_exact(3)
        .enumerate()
        .filter(|(_, px)| px.iter().map(|&c| u32::from(c)).sum::<u32>() > 3 * 128)
        .map(|(x, _)| x)
        .collect();
    let (first, last) = (*bright.first()?, *bright.last()?);
    Some(((first + last) as f64 / 2.0, bright.len()))
}

/// How many clearly different places (40 px apart) the marker was seen in.
fn distinct(markers: &[(f64, usize)]) -> usize {
    let mut xs: Vec<f64> = markers.iter().map(|m| m.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup_by(|a, b| (*a - *b).abs() < 40.0);
    xs.len()
}

/// Runs the built-in bot `name`, sends it the quadrant card as the camera and
/// decodes what comes back until its quadrants show `expected` and the marker
/// strip has shown a marker in `places` different places (or time is up).
/// Returns the last quadrant colours and every marker seen on a right picture.
async fn camera_back(
    name: &str,
    expected: [[u8; 3]; 4],
    places: usize,
) -> ([[u8; 3]; 4], Vec<(f64, usize)>) {
    let url = serve(smallwebrtc::bots::by_name(name).unwrap()).await;
    let client = connect(&url).await;
    let mid = client.mids()[1];
    let mut events = client.events();
    let _camera = send_card(&client);

    let mut decoder = Vp8Decoder::new().unwrap();
    let mut last_colours = None;
    let mut markers: Vec<(f64, usize)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let event = match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(event)) => event,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            _ => break,
        };
        let ClientEvent::MediaData { mid: m, data, .. } = event else {
            continue;
        };
        if m != mid {
            continue;
        }
        let Ok(Some(frame)) = decoder.decode(&data) else {
            continue;
        };
        assert_eq!(frame.size(), (640, 480), "the camera's size comes back");
        let image = frame.into_image(VideoFormat::Rgb).unwrap();
        let colours = quadrant_colors(&image);
        last_colours = Some(colours);
        // The first frames of a VP8 stream may still be coarse; judge the
        // marker only on frames whose picture is already right.
        if max_channel_difference(&colours, &expected) <= TOLERANCE {
            markers.extend(marker_in(&image));
            if distinct(&markers) >= places {
                break;
            }
        }
    }
    client.close().await;
    let colours = last_colours.expect("the client decoded the bot's video");
    (colours, markers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_transform_sends_the_camera_back_inverted_with_a_moving_marker() {
    // Three places: the marker crosses 560 px in 2 s, so this takes about 1 s.
    let (colours, markers) = camera_back("video-transform", INVERTED, 3).await;
    assert!(
        max_channel_difference(&colours, &INVERTED) <= TOLERANCE,
        "red, green, blue, white should come back cyan, magenta, yellow, black: got {colours:?}"
    );
    assert!(
        distinct(&markers) >= 3,
        "the marker should move along the bottom strip: seen at {markers:?}"
    );
    // 640 / 8 = 80 pixels wide, give or take the codec's blur at its edges.
    let (_, width) = markers[markers.len() / 2];
    assert!((64..=96).contains(&width), "marker {width} px wide");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_bot_sends_the_camera_back_unchanged() {
    let (colours, markers) = camera_back("echo", QUADRANT_COLORS, 0).await;
    assert!(
        max_channel_difference(&colours, &QUADRANT_COLORS) <= TOLERANCE,
        "red, green, blue, white should come back as they are: got {colours:?}"
    );
    // The bottom strip is the picture itself (blue and white): no marker.
    assert!(
        markers.iter().all(|&(_, width)| width > 300),
        "no marker on the echo: {markers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_transform_echoes_audio_and_app_messages() {
    let url = serve(smallwebrtc::bots::by_name("video-transform").unwrap()).await;
    let client = connect(&url).await;
    client.wait_channel_open(WAIT).await.unwrap();
    let message = json!({"hello": "video", "n": [1, 2]});
    client.send_json(&message).await.unwrap();
    let back = client
        .recv_json_matching(WAIT, |v| *v == message)
        .await
        .unwrap();
    assert_eq!(back, message);
    client
        .send_json(&json!({"label": "rtvi-ai", "type": "client-ready", "id": "r1", "data": {}}))
        .await
        .unwrap();
    let ready = client
        .recv_json_matching(WAIT, |v| v["type"] == "bot-ready")
        .await
        .unwrap();
    assert_eq!(ready["data"]["capabilities"]["video_out"], true);

    let mut heard = hear(&client);
    let (silent_tx, _silent) = oneshot::channel();
    let _mic = send_tone_then_silence(&client, u64::MAX, silent_tx);
    // The echo is live: a tone comes back within a few seconds of sending it.
    let deadline = Instant::now() + WAIT;
    let mut tone = Vec::new();
    while tone.len() < 48_000 / 2 {
        let (_, pcm) = tokio::time::timeout_at(deadline.into(), heard.recv())
            .await
            .expect("the tone comes back")
            .unwrap();
        if is_tone(&pcm) {
            tone.extend(pcm);
        }
    }
    let f = dominant_frequency(&tone, 48_000);
    assert!((f - 440.0).abs() < 5.0, "heard {f} Hz");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_example_plays_the_microphone_back() {
    let url = serve(Arc::new(echo_example::echo_bot)).await;
    let client = connect(&url).await;
    let mut heard = hear(&client);
    let (silent_tx, _silent) = oneshot::channel();
    let _mic = send_tone_then_silence(&client, u64::MAX, silent_tx);
    let deadline = Instant::now() + WAIT;
    let mut tone = Vec::new();
    while tone.len() < 48_000 / 2 {
        let (_, pcm) = tokio::time::timeout_at(deadline.into(), heard.recv())
            .await
            .expect("the tone comes back")
            .unwrap();
        if is_tone(&pcm) {
            tone.extend(pcm);
        }
    }
    let f = dominant_frequency(&tone, 48_000);
    assert!((f - 440.0).abs() < 5.0, "heard {f} Hz");
    client.wait_channel_open(WAIT).await.unwrap();
    client.send_json(&json!({"ping": 1})).await.unwrap();
    client
        .recv_json_matching(WAIT, |v| *v == json!({"ping": 1}))
        .await
        .unwrap();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_silence_plays_the_utterance_back_only_after_the_user_went_silent() {
    let url = serve(Arc::new(wait_for_silence::wait_for_silence_bot)).await;
    let client = connect(&url).await;
    client.wait_channel_open(WAIT).await.unwrap();
    let mut heard = hear(&client);
    let (silent_tx, silent_rx) = oneshot::channel();
    // One second of tone, then silence.
    let _mic = send_tone_then_silence(&client, 50, silent_tx);

    // Listen until the tone has come back and then been gone for half a second.
    let deadline = Instant::now() + WAIT + Duration::from_secs(5);
    let mut first_tone: Option<Instant> = None;
    let mut last_tone: Option<Instant> = None;
    let mut tone = Vec::new();
    let mut tone_packets = 0;
    loop {
        let (at, pcm) = tokio::time::timeout_at(deadline.into(), heard.recv())
            .await
            .expect("the utterance is played back (and then silence)")
            .unwrap();
        if is_tone(&pcm) {
            first_tone.get_or_insert(at);
            last_tone = Some(at);
            tone_packets += 1;
            tone.extend(pcm);
        } else if last_tone.is_some_and(|t| at.duration_since(t) > Duration::from_millis(500)) {
            break;
        }
    }
    let went_silent = silent_rx.await.unwrap();
    let first_tone = first_tone.unwrap();
    // Nothing while the user spoke, and nothing until the 600 ms hangover had
    // passed (30 silent packets are at least 580 ms of wall clock apart).
    assert!(
        first_tone >= went_silent + Duration::from_millis(550),
        "played back {:?} after the user went silent: it should wait for 600 ms of silence",
        first_tone.saturating_duration_since(went_silent)
    );
    // About the one second that was said, at the pitch it was said.
    let played = Duration::from_millis(20 * tone_packets);
    assert!(
        played >= Duration::from_millis(850) && played <= Duration::from_millis(1150),
        "played back {played:?} of tone for 1 s of speech"
    );
    let f = dominant_frequency(&tone, 48_000);
    assert!((f - 440.0).abs() < 5.0, "played back {f} Hz");
    // It told the client about the turn, RTVI-style.
    client
        .recv_json_matching(WAIT, |v| v["type"] == "user-started-speaking")
        .await
        .unwrap();
    client
        .recv_json_matching(WAIT, |v| v["type"] == "user-stopped-speaking")
        .await
        .unwrap();
    client.close().await;
}

/// Pushes `samples` through a fresh default VAD in 20 ms chunks; returns every
/// event with the time (from the start) of the chunk that produced it.
fn run_vad(samples: &[i16]) -> Vec<(Duration, VadEvent)> {
    let mut vad = Vad::new(VadConfig::default());
    samples
        .chunks(320)
        .enumerate()
        .filter_map(|(i, chunk)| {
            let end = Duration::from_millis(20 * (i as u64 + 1));
            vad.push(chunk).map(|e| (end, e))
        })
        .collect()
}

fn tone_ms(ms: usize) -> Vec<i16> {
    sine(440.0, 16_000, ms * 16, 0.3)
}

fn silence_ms(ms: usize) -> Vec<i16> {
    vec![0; ms * 16]
}

fn utterances(events: &[(Duration, VadEvent)]) -> Vec<&Utterance> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            VadEvent::SpeechEnded(u) => Some(u),
            VadEvent::SpeechStarted => None,
        })
        .collect()
}

#[test]
fn vad_a_tone_burst_then_silence_is_one_utterance_of_the_bursts_length() {
    let burst = tone_ms(1000);
    let audio = [burst.clone(), silence_ms(2000)].concat();
    let events = run_vad(&audio);
    assert_eq!(events.len(), 2, "{events:?}");
    // Started once 300 ms of speech were heard; ended 600 ms into the silence.
    assert_eq!(
        events[0],
        (Duration::from_millis(300), VadEvent::SpeechStarted)
    );
    assert_eq!(events[1].0, Duration::from_millis(1600));
    let said = utterances(&events);
    assert_eq!(said.len(), 1);
    assert_eq!(said[0].duration(), Duration::from_secs(1));
    assert_eq!(said[0].samples, burst, "exactly what was said, no silence");
}

#[test]
fn vad_pauses_shorter_than_the_hangover_stay_in_one_utterance() {
    // Two words 400 ms apart are one turn; the pause is kept inside it.
    let audio = [
        tone_ms(400),
        silence_ms(400),
        tone_ms(400),
        silence_ms(1000),
    ]
    .concat();
    let events = run_vad(&audio);
    let said = utterances(&events);
    assert_eq!(said.len(), 1, "{events:?}");
    assert_eq!(said[0].duration(), Duration::from_millis(1200));
    // Two turns when the pause is longer than the hangover.
    let audio = [tone_ms(400), silence_ms(700), tone_ms(500), silence_ms(700)].concat();
    let events = run_vad(&audio);
    let lengths: Vec<_> = utterances(&events).iter().map(|u| u.duration()).collect();
    assert_eq!(
        lengths,
        [Duration::from_millis(400), Duration::from_millis(500)]
    );
    let starts = events
        .iter()
        .filter(|(_, e)| *e == VadEvent::SpeechStarted)
        .count();
    assert_eq!(starts, 2);
}

#[test]
fn vad_ignores_clicks_quiet_noise_and_never_keeps_more_than_the_maximum() {
    // A 100 ms click: no turn at all.
    assert_eq!(run_vad(&[tone_ms(100), silence_ms(1000)].concat()), []);
    // Noise at -50 dBFS (below the -40 threshold) for 3 s: nothing.
    let noise: Vec<i16> = (0..48_000u32)
        .map(|i| if i % 2 == 0 { 104 } else { -104 })
        .collect();
    assert_eq!(run_vad(&noise), []);
    // Speech that never stops is cut at 30 s, and goes on as a new turn.
    let mut vad = Vad::new(VadConfig::default());
    let chunk = tone_ms(20);
    let mut ended = Vec::new();
    for _ in 0..(31_000 / 20) {
        if let Some(VadEvent::SpeechEnded(u)) = vad.push(&chunk) {
            ended.push(u.duration());
        }
    }
    assert_eq!(ended, [Duration::from_secs(30)]);
    assert!(vad.is_speaking());
    // Empty chunks are no-ops.
    assert_eq!(vad.push(&[]), None);
}

#[test]
fn vad_levels() {
    use wait_for_silence::level_dbfs;
    assert_eq!(level_dbfs(&[]), f32::NEG_INFINITY);
    assert_eq!(level_dbfs(&[0; 320]), f32::NEG_INFINITY);
    assert!((level_dbfs(&[i16::MAX; 320]) - 0.0).abs() < 0.01);
    // A sine's RMS is 3 dB under its peak: 0.3 of full scale is -13.5 dBFS.
    let level = level_dbfs(&tone_ms(20));
    assert!((level + 13.5).abs() < 0.2, "{level}");
}

#[test]
fn the_video_transform_example_draws_what_the_built_in_bot_draws() {
    for elapsed in [
        Duration::ZERO,
        Duration::from_millis(700),
        Duration::from_millis(1500),
    ] {
        let mut rgb = quadrants(640, 480);
        video_transform_example::transform_rgb(&mut rgb.data, 640, 480, elapsed);
        let mut i420 = quadrants(640, 480).into_i420().unwrap();
        invert_with_marker(&mut i420, elapsed);
        let built_in = i420.into_image(VideoFormat::Rgb).unwrap();
        assert!(
            max_channel_difference(&quadrant_colors(&rgb), &INVERTED) == 0,
            "{:?}",
            quadrant_colors(&rgb)
        );
        assert!(max_channel_difference(&quadrant_colors(&built_in), &INVERTED) <= 3);
        let (x, width) = marker_in(&rgb).expect("a marker");
        assert_eq!(marker_in(&built_in), Some((x, width)), "at {elapsed:?}");
        let (x0, x1, _) = marker_span(640, 480, elapsed);
        assert_eq!((x, width), ((x0 + x1 - 1) as f64 / 2.0, (x1 - x0) as usize));
    }
    // A buffer shorter than the size says is left alone where it ends, no panic.
    let mut short = vec![7u8; 100];
    video_transform_example::transform_rgb(&mut short, 640, 480, Duration::ZERO);
    assert!(short.iter().all(|&c| c == 248));
}
