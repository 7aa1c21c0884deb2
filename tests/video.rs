//! Video both ways over real WebRTC on loopback: the bot sees the client's
//! camera as RGB images of the sent size with the right colours; the client
//! sees the bot's image at the configured size and framerate.
//!
//! Every check runs twice: once with a client that offers only VP8, once with a
//! client that offers only H.264 Constrained Baseline in packetization mode 1
//! (what Safari and hardware-only clients insist on). Each run first checks,
//! from the answer, that the codec really is the one negotiated.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{ClientEvent, ClientOptions, TestClient, VideoCodecs};
use smallwebrtc::bots::BotArgs;
use smallwebrtc::media::video::{
    h264_is_keyframe, max_channel_difference, new_decoder, new_encoder, quadrant_colors, quadrants,
    vp8_is_keyframe, EncoderConfig, Image, VideoCodec, QUADRANT_COLORS,
};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputFrame, OutputImageRawFrame, SmallWebRtcTransport, SpriteFrame, TransportEvent,
    TransportOutput, TransportParams, UserImageRawFrame, VideoFormat, VideoInSource, VideoSource,
};
use smallwebrtc::SmallWebRtcConnection;
use str0m::bwe::Bitrate;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
/// Colours survive VP8 or H.264 and BT.601 within this much per channel.
const TOLERANCE: u8 = 40;

/// str0m's name for a codec.
fn wire(codec: VideoCodec) -> Codec {
    match codec {
        VideoCodec::Vp8 => Codec::Vp8,
        VideoCodec::H264 => Codec::H264,
    }
}

/// A JS-shaped client that offers only `codec` for video.
async fn connect(url: &str, codec: VideoCodec) -> (TestClient, Vec<(u8, String)>) {
    let options = ClientOptions {
        video_codecs: match codec {
            VideoCodec::Vp8 => VideoCodecs::Vp8Only,
            VideoCodec::H264 => VideoCodecs::H264Only,
        },
        ..ClientOptions::js()
    };
    let client = TestClient::start(url, options).await.unwrap();
    let negotiated = assert_negotiated(&client.answer_sdp(), codec);
    (client, negotiated)
}

/// Both video m-lines of the answer carry `codec` and nothing else (RTX aside);
/// for H.264, at least Constrained Baseline in packetization mode 1. Returns the
/// payload types of `codec` on the camera m-line, with their `a=fmtp` values.
fn assert_negotiated(answer: &str, codec: VideoCodec) -> Vec<(u8, String)> {
    let sections: Vec<&str> = answer.split("\r\nm=").skip(1).collect();
    let mut camera = Vec::new();
    for index in [1, 2] {
        let section = sections[index];
        assert!(section.starts_with("video "), "m-line {index}: {section}");
        let codecs: Vec<(u8, String)> = section
            .lines()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, name)| !name.starts_with("rtx/"))
            .map(|(pt, name)| {
                assert!(
                    name.starts_with(&format!("{codec}/")),
                    "m-line {index} of the answer has {name}, not only {codec}:\n{section}"
                );
                let fmtp = section
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("a=fmtp:{pt} ")))
                    .unwrap_or("")
                    .to_string();
                (pt.parse().unwrap(), fmtp)
            })
            .collect();
        assert!(
            !codecs.is_empty(),
            "m-line {index} has no {codec}:\n{section}"
        );
        if codec == VideoCodec::H264 {
            assert!(
                codecs
                    .iter()
                    .any(|(_, f)| is_constrained_baseline_mode_1(f)),
                "no Constrained Baseline in packetization mode 1 in {codecs:?}"
            );
        }
        if index == 1 {
            camera = codecs;
        }
    }
    camera
}

/// An H.264 `a=fmtp` value for Constrained Baseline in packetization mode 1.
fn is_constrained_baseline_mode_1(fmtp: &str) -> bool {
    fmtp.contains("packetization-mode=1") && fmtp.contains("profile-level-id=42e01f")
}

enum Ask {
    Image(VideoSource),
}

struct Probe {
    frames: mpsc::UnboundedReceiver<InputFrame>,
    ask: mpsc::UnboundedSender<Ask>,
}

/// A server whose bot reports every image frame (and image error) it reads, shows
/// a quadrant card at `out` size and `fps`, and answers image requests.
async fn serve(
    out: (u32, u32),
    fps: u32,
    sources: Vec<VideoInSource>,
) -> (String, mpsc::UnboundedReceiver<Probe>) {
    let (probes_tx, probes) = mpsc::unbounded_channel();
    let bot = move |args: BotArgs| {
        let probes_tx = probes_tx.clone();
        let sources = sources.clone();
        async move {
            let transport = SmallWebRtcTransport::new(
                args.connection,
                TransportParams {
                    video_in_enabled: true,
                    video_in_sources: sources,
                    video_out_enabled: true,
                    video_out_width: out.0,
                    video_out_height: out.1,
                    video_out_framerate: fps,
                    ..TransportParams::default()
                },
            )
            .unwrap();
            let output = transport.output();
            // A card of another size: the transport resizes it.
            let card = quadrants(320, 240);
            output
                .send_image(OutputImageRawFrame {
                    image: card.data,
                    size: (320, 240),
                    format: VideoFormat::Rgb,
                })
                .unwrap();
            let (frames_tx, frames) = mpsc::unbounded_channel();
            let (ask, mut ask_rx) = mpsc::unbounded_channel();
            let _ = probes_tx.send(Probe { frames, ask });
            let mut input = transport.input();
            let mut events = transport.events();
            loop {
                tokio::select! {
                    frame = input.recv() => match frame {
                        Some(f @ (InputFrame::Image(_) | InputFrame::ImageError { .. })) => { let _ = frames_tx.send(f); }
                        Some(_) => {}
                        None => return,
                    },
                    Some(Ask::Image(source)) = ask_rx.recv() => input.request_image(source),
                    event = events.recv() => if matches!(event, Some(TransportEvent::ClientClosed) | None) { return },
                }
            }
        }
    };
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        bot: Arc::new(bot),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    (url, probes)
}

/// Sends a quadrant card from the client in `codec` at 15 fps on m-line `index`.
fn send_card(
    client: &TestClient,
    index: usize,
    size: (u32, u32),
    codec: VideoCodec,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mid = client.mids()[index];
        let mut encoder = new_encoder(
            codec,
            EncoderConfig {
                bitrate_kbps: 800,
                framerate: 15,
                ..EncoderConfig::default()
            },
        )
        .unwrap();
        let card = quadrants(size.0, size.1).into_i420().unwrap();
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
                let sent = client
                    .with_rtc(move |rtc| {
                        let Some(writer) = rtc.writer(mid) else {
                            return;
                        };
                        let Some(pt) = writer
                            .payload_params()
                            .find(|p| p.spec().codec == wire(codec))
                            .map(|p| p.pt())
                        else {
                            return;
                        };
                        let _ = writer.write(
                            pt,
                            Instant::now(),
                            MediaTime::new(pts, Frequency::NINETY_KHZ),
                            f.data,
                        );
                    })
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }
    })
}

async fn next_image(probe: &mut Probe) -> UserImageRawFrame {
    let frame = tokio::time::timeout(WAIT, probe.frames.recv())
        .await
        .expect("an image in time")
        .unwrap();
    match frame {
        InputFrame::Image(image) => image,
        other => panic!("expected an image, got {other:?}"),
    }
}

macro_rules! both_codecs {
    ($check:ident: $vp8:ident, $h264:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $vp8() {
            $check(VideoCodec::Vp8).await;
        }

        #[cfg(feature = "h264")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $h264() {
            $check(VideoCodec::H264).await;
        }
    };
}

both_codecs!(the_bot_sees_the_clients_camera_and_screen_as_rgb:
    vp8_the_bot_sees_the_clients_camera_and_screen_as_rgb_with_the_right_colours,
    h264_the_bot_sees_the_clients_camera_and_screen_as_rgb_with_the_right_colours);
both_codecs!(the_client_sees_the_bots_image_at_size_and_framerate:
    vp8_the_client_sees_the_bots_image_at_the_configured_size_and_framerate,
    h264_the_client_sees_the_bots_image_at_the_configured_size_and_framerate);
both_codecs!(the_bots_bitrate_follows_the_clients_remb:
    vp8_the_bots_video_bitrate_follows_the_clients_remb_without_keyframes,
    h264_the_bots_video_bitrate_follows_the_clients_remb_without_keyframes);
both_codecs!(image_requests_are_answered_or_refused:
    vp8_image_requests_are_answered_by_the_next_frame_or_by_an_error_when_the_source_is_off,
    h264_image_requests_are_answered_by_the_next_frame_or_by_an_error_when_the_source_is_off);

async fn the_bot_sees_the_clients_camera_and_screen_as_rgb(codec: VideoCodec) {
    let sources = vec![
        VideoInSource {
            source: VideoSource::Camera,
            framerate: None,
        },
        VideoInSource {
            source: VideoSource::ScreenVideo,
            framerate: None,
        },
    ];
    let (url, mut probes) = serve((320, 240), 10, sources).await;
    let (client, _) = connect(&url, codec).await;
    client.wait_connected(WAIT).await.unwrap();
    let mut probe = probes.recv().await.unwrap();
    let _camera = send_card(&client, 1, (640, 480), codec);
    let _screen = send_card(&client, 2, (800, 600), codec);

    let (mut camera, mut screen) = (None, None);
    while camera.is_none() || screen.is_none() {
        let image = next_image(&mut probe).await;
        match image.transport_source {
            VideoSource::Camera => camera = Some(image),
            VideoSource::ScreenVideo => screen = Some(image),
        }
    }
    for (image, size) in [(camera.unwrap(), (640, 480)), (screen.unwrap(), (800, 600))] {
        assert_eq!(
            image.size, size,
            "{:?} at its native size",
            image.transport_source
        );
        assert_eq!(image.format, VideoFormat::Rgb);
        let colors = quadrant_colors(&image.to_image().unwrap());
        let diff = max_channel_difference(&colors, &QUADRANT_COLORS);
        assert!(
            diff <= TOLERANCE,
            "{codec} {:?} quadrants {colors:?} (off by {diff})",
            image.transport_source
        );
    }
}

async fn the_client_sees_the_bots_image_at_size_and_framerate(codec: VideoCodec) {
    for fps in [10u32, 30] {
        let (url, mut probes) = serve((640, 480), fps, vec![]).await;
        let (client, negotiated) = connect(&url, codec).await;
        client.wait_connected(WAIT).await.unwrap();
        let _probe = probes.recv().await.unwrap();
        let mid = client.mids()[1];
        let mut events = client.events();
        let mut decoder = new_decoder(codec).unwrap();
        let mut arrivals = Vec::new();
        let mut last = None;
        let mut payload_types = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let event = match tokio::time::timeout(WAIT, events.recv()).await {
                Ok(Ok(event)) => event,
                // The test fell behind its own event feed: keep counting.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                _ => break,
            };
            if let ClientEvent::MediaData {
                mid: m, data, pt, ..
            } = event
            {
                if m == mid {
                    payload_types.insert(*pt);
                    // The pace is what the server sends; decoding checks the picture.
                    arrivals.push(Instant::now());
                    if let Ok(Some(frame)) = decoder.decode(&data) {
                        last = Some(frame);
                    }
                }
            }
        }
        let frame = last.expect("the client decoded the bot's video");
        // Sent on a payload type the answer gave to this codec; for H.264 one in
        // packetization mode 1 (its access units are cut into FU-A fragments,
        // which mode 0 does not allow).
        for pt in &payload_types {
            let fmtp = negotiated
                .iter()
                .find(|(p, _)| p == pt)
                .map(|(_, f)| f.as_str())
                .unwrap_or_else(|| {
                    panic!("{codec} sent on payload type {pt}, not one of {negotiated:?}")
                });
            if codec == VideoCodec::H264 {
                assert!(
                    fmtp.contains("packetization-mode=1"),
                    "H.264 sent on payload type {pt} ({fmtp:?})"
                );
            }
        }
        assert_eq!(
            frame.size(),
            (640, 480),
            "resized to video_out_width × video_out_height"
        );
        let colors = quadrant_colors(&frame.into_image(VideoFormat::Rgb).unwrap());
        assert!(
            max_channel_difference(&colors, &QUADRANT_COLORS) <= TOLERANCE,
            "{colors:?}"
        );
        // Frames per second over the steady part (skip the first second).
        let start = arrivals[0] + Duration::from_secs(1);
        let steady: Vec<_> = arrivals.iter().filter(|t| **t >= start).collect();
        let span = steady
            .last()
            .unwrap()
            .duration_since(*steady[0])
            .as_secs_f64();
        let rate = (steady.len() - 1) as f64 / span;
        assert!(
            (rate - fps as f64).abs() <= fps as f64 * 0.1,
            "{codec}: asked {fps} fps, got {rate:.1}"
        );
        client.close().await;
    }
}

async fn image_requests_are_answered_or_refused(codec: VideoCodec) {
    // Framerate 0: images only on request.
    let sources = vec![VideoInSource {
        source: VideoSource::Camera,
        framerate: Some(0),
    }];
    let (url, mut probes) = serve((320, 240), 10, sources).await;
    let (client, _) = connect(&url, codec).await;
    client.wait_channel_open(WAIT).await.unwrap();
    let mut probe = probes.recv().await.unwrap();
    let _camera = send_card(&client, 1, (320, 240), codec);

    // Nothing unasked for...
    assert!(
        tokio::time::timeout(Duration::from_millis(800), probe.frames.recv())
            .await
            .is_err()
    );
    // ...one image per request.
    probe.ask.send(Ask::Image(VideoSource::Camera)).unwrap();
    let image = next_image(&mut probe).await;
    assert_eq!(image.size, (320, 240));
    // The screen is not sent at all.
    probe
        .ask
        .send(Ask::Image(VideoSource::ScreenVideo))
        .unwrap();
    match tokio::time::timeout(WAIT, probe.frames.recv())
        .await
        .unwrap()
        .unwrap()
    {
        InputFrame::ImageError { source, message } => {
            assert_eq!(source, VideoSource::ScreenVideo);
            assert_eq!(message, "The peer isn't sending screen video.");
        }
        other => panic!("{other:?}"),
    }
    // The camera turned off: a request is answered at once with the error.
    client.send_track_status(1, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    probe.ask.send(Ask::Image(VideoSource::Camera)).unwrap();
    match tokio::time::timeout(WAIT, probe.frames.recv())
        .await
        .unwrap()
        .unwrap()
    {
        InputFrame::ImageError { source, message } => {
            assert_eq!(source, VideoSource::Camera);
            assert_eq!(message, "The peer turned off its camera video.");
        }
        other => panic!("{other:?}"),
    }
}

/// Grey images with faint noise, different in every frame: an encoder spends
/// whatever budget it is given on them (coarse quantisation wipes the noise out
/// cheaply, fine quantisation keeps it at a high cost).
fn faint_noise(width: u32, height: u32, frames: usize) -> SpriteFrame {
    let mut seed = 0x2545_f491_u32;
    let images = (0..frames)
        .map(|_| {
            let image = (0..width * height * 3)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    116 + (seed % 24) as u8
                })
                .collect();
            OutputImageRawFrame {
                image,
                size: (width, height),
                format: VideoFormat::Rgb,
            }
        })
        .collect();
    SpriteFrame { images }
}

/// A server whose bot shows animated faint noise at 320×240, 15 fps, starting
/// at 1000 kbit/s within 100..=2500.
async fn serve_noise() -> String {
    serve_noise_with(false).await.0
}

/// Like [`serve_noise`], with send-side bandwidth estimation on or off; each session's
/// connection and transport output are handed to the test.
async fn serve_noise_with(
    video_bwe: bool,
) -> (
    String,
    mpsc::UnboundedReceiver<(SmallWebRtcConnection, TransportOutput)>,
) {
    let (sessions_tx, sessions) = mpsc::unbounded_channel();
    let bot = move |args: BotArgs| {
        let sessions_tx = sessions_tx.clone();
        async move {
            let connection = args.connection.clone();
            let transport = SmallWebRtcTransport::new(
                args.connection,
                TransportParams {
                    video_out_enabled: true,
                    video_out_width: 320,
                    video_out_height: 240,
                    video_out_framerate: 15,
                    video_out_bitrate: 1000,
                    video_out_bitrate_min: 100,
                    video_out_bitrate_max: 2500,
                    ..TransportParams::default()
                },
            )
            .unwrap();
            transport
                .output()
                .send_sprite(faint_noise(320, 240, 8))
                .unwrap();
            let _ = sessions_tx.send((connection, transport.output()));
            let mut events = transport.events();
            while !matches!(
                events.recv().await,
                Some(TransportEvent::ClientClosed) | None
            ) {}
        }
    };
    let server = Server::bind(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        bot: Arc::new(bot),
        video_bwe,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}/api/offer", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    (url, sessions)
}

/// Browsers send transport-cc feedback, not REMB: with `video_bwe` the server
/// estimates the bandwidth itself, and the bot's video bitrate follows that estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_video_bwe_the_bots_bitrate_follows_the_transport_cc_estimate() {
    let (url, mut sessions) = serve_noise_with(true).await;
    let (client, _) = connect(&url, VideoCodec::Vp8).await;
    client.wait_connected(WAIT).await.unwrap();
    let (connection, output) = sessions.recv().await.unwrap();
    // The bot starts at its start bitrate; by now the first estimate may already have moved
    // it, so the start is only checked while there is no estimate yet (read after the target,
    // and an estimate never goes away once there is one).
    let start = output.video_bitrate();
    if connection.bandwidth_estimate().bitrate_bps().is_none() {
        assert_eq!(start, Some(1000), "the start bitrate");
    }
    // Keep the video flowing (and its feedback coming) while we watch.
    let _receiving = tokio::spawn({
        let client = client.clone_handle();
        async move { receive(&client, VideoCodec::Vp8, Duration::from_secs(30), None).await }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let followed = loop {
        let estimate = connection.bandwidth_estimate();
        let target = output.video_bitrate().unwrap();
        seen.push((estimate.twcc_bps, target));
        if let Some(twcc) = estimate.twcc_bps {
            // 90 % of the estimate, within the bot's 100..=2500 kbit/s.
            let wanted = (twcc as f64 * 0.9 / 1000.0).clamp(100.0, 2500.0);
            if target != 1000 && (f64::from(target) - wanted).abs() <= wanted * 0.3 {
                break (twcc, target);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the video bitrate did not follow a transport-cc estimate: (estimate bit/s, target kbit/s) {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        connection.bandwidth_estimate().remb_bps,
        None,
        "no REMB involved"
    );
    eprintln!(
        "transport-cc estimate {} bit/s → video target {} kbit/s",
        followed.0, followed.1
    );
    client.close().await;
}

/// What the client received of the bot's video over a stretch of time.
struct Received {
    kbps: f64,
    keyframes: usize,
    frames: usize,
}

/// Counts the bot's video at the client for `span`, sending a REMB of `remb`
/// (as a receiver does, about twice a second) all along when given.
async fn receive(
    client: &TestClient,
    codec: VideoCodec,
    span: Duration,
    remb: Option<Bitrate>,
) -> Received {
    let mid = client.mids()[1];
    let mut events = client.events();
    let mut remb_timer = tokio::time::interval(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + span;
    let (mut bytes, mut keyframes, mut frames) = (0usize, 0, 0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = remb_timer.tick(), if remb.is_some() => {
                let bitrate = remb.unwrap();
                let sent = client
                    .with_rtc(move |rtc| {
                        rtc.direct_api()
                            .stream_rx_by_mid(mid, None)
                            .map(|stream| stream.request_remb(bitrate))
                            .is_some()
                    })
                    .await
                    .unwrap();
                assert!(sent, "the client has no stream of the bot's video to send a REMB for");
            }
            event = events.recv() => match event {
                Ok(ClientEvent::MediaData { mid: m, data, .. }) if m == mid => {
                    bytes += data.len();
                    frames += 1;
                    let key = match codec {
                        VideoCodec::Vp8 => vp8_is_keyframe(&data),
                        VideoCodec::H264 => h264_is_keyframe(&data),
                    };
                    keyframes += usize::from(key);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("client events: {e}"),
            },
        }
    }
    Received {
        kbps: bytes as f64 * 8.0 / 1000.0 / span.as_secs_f64(),
        keyframes,
        frames,
    }
}

async fn the_bots_bitrate_follows_the_clients_remb(codec: VideoCodec) {
    let url = serve_noise().await;
    let (client, _) = connect(&url, codec).await;
    client.wait_connected(WAIT).await.unwrap();
    let measure = Duration::from_secs(2);
    // Settle on the start rate, then measure it.
    receive(&client, codec, Duration::from_secs(1), None).await;
    let start = receive(&client, codec, measure, None).await;
    assert!(
        start.frames >= 20,
        "{codec}: {} frames in 2 s",
        start.frames
    );
    assert!(
        start.kbps > 600.0,
        "{codec}: {:.0} kbit/s before any estimate (target 1000)",
        start.kbps
    );
    // The client says it can take 250 kbit/s: the bot's video follows at once.
    let remb = Some(Bitrate::kbps(250));
    receive(&client, codec, Duration::from_millis(1500), remb).await;
    let low = receive(&client, codec, measure, remb).await;
    assert!(
        low.kbps < 400.0 && low.kbps < start.kbps / 2.0,
        "{codec}: {:.0} kbit/s after a REMB of 250 (target 225), {:.0} before",
        low.kbps,
        start.kbps
    );
    assert!(
        low.frames >= 20,
        "{codec}: the video kept flowing ({} frames)",
        low.frames
    );
    // More room: the rate climbs back in steps (+25 % per 500 ms: 225 → 720 in ~3 s).
    let remb = Some(Bitrate::kbps(800));
    receive(&client, codec, Duration::from_secs(3), remb).await;
    let high = receive(&client, codec, measure, remb).await;
    assert!(
        high.kbps > low.kbps * 1.8,
        "{codec}: {:.0} kbit/s after a REMB of 800 (target 720), {:.0} before",
        high.kbps,
        low.kbps
    );
    // The encoder was reconfigured live: no keyframe after the first.
    assert_eq!(
        (start.keyframes, low.keyframes, high.keyframes),
        (0, 0, 0),
        "{codec}: keyframes while the bitrate changed"
    );
    eprintln!(
        "{codec}: {:.0} kbit/s at the start, {:.0} after REMB 250, {:.0} after REMB 800",
        start.kbps, low.kbps, high.kbps
    );
    client.close().await;
}

#[test]
fn bad_images_get_errors_that_name_the_problem() {
    let err = Image::new(4, 4, VideoFormat::Rgb, vec![0; 10])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs 48 bytes") && err.contains("got 10"),
        "{err}"
    );
    let err = Image::new(3, 3, VideoFormat::I420, vec![0; 14])
        .unwrap_err()
        .to_string();
    assert!(err.contains("even width and height"), "{err}");
    let err = VideoFormat::parse("BGR").unwrap_err().to_string();
    assert!(err.contains("unknown video format \"BGR\""), "{err}");
}
