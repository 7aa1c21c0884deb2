//! Video both ways over real WebRTC on loopback: the bot sees the client's
//! camera as RGB images of the sent size with the right colours; the client
//! sees the bot's image at the configured size and framerate.
//!
//! Opens sockets: run inside `../shared/tools/nsrun`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{ClientEvent, ClientOptions, TestClient};
use smallwebrtc::bots::BotArgs;
use smallwebrtc::media::video::{
    max_channel_difference, quadrant_colors, quadrants, EncoderConfig, Image, Vp8Decoder,
    Vp8Encoder, QUADRANT_COLORS,
};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputFrame, OutputImageRawFrame, SmallWebRtcTransport, TransportEvent, TransportParams,
    UserImageRawFrame, VideoFormat, VideoInSource, VideoSource,
};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
/// Colours survive VP8 and BT.601 within this much per channel.
const TOLERANCE: u8 = 40;

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

/// Sends a quadrant card from the client as VP8 at 15 fps on m-line `index`.
fn send_card(client: &TestClient, index: usize, size: (u32, u32)) -> tokio::task::JoinHandle<()> {
    let client = client.clone_handle();
    tokio::spawn(async move {
        let mid = client.mids()[index];
        let mut encoder = Vp8Encoder::new(EncoderConfig {
            bitrate_kbps: 800,
            framerate: 15,
            ..EncoderConfig::default()
        })
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
                            .find(|p| p.spec().codec == Codec::Vp8)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_sees_the_clients_camera_and_screen_as_rgb_with_the_right_colours() {
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
    let client = TestClient::start(&url, ClientOptions::js()).await.unwrap();
    client.wait_connected(WAIT).await.unwrap();
    let mut probe = probes.recv().await.unwrap();
    let _camera = send_card(&client, 1, (640, 480));
    let _screen = send_card(&client, 2, (800, 600));

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
            "{:?} quadrants {colors:?} (off by {diff})",
            image.transport_source
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_the_bots_image_at_the_configured_size_and_framerate() {
    for fps in [10u32, 30] {
        let (url, mut probes) = serve((640, 480), fps, vec![]).await;
        let client = TestClient::start(&url, ClientOptions::js()).await.unwrap();
        client.wait_connected(WAIT).await.unwrap();
        let _probe = probes.recv().await.unwrap();
        let mid = client.mids()[1];
        let mut events = client.events();
        let mut decoder = Vp8Decoder::new().unwrap();
        let mut arrivals = Vec::new();
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let event = match tokio::time::timeout(WAIT, events.recv()).await {
                Ok(Ok(event)) => event,
                // The test fell behind its own event feed: keep counting.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                _ => break,
            };
            if let ClientEvent::MediaData { mid: m, data, .. } = event {
                if m == mid {
                    // The pace is what the server sends; decoding checks the picture.
                    arrivals.push(Instant::now());
                    if let Ok(Some(frame)) = decoder.decode(&data) {
                        last = Some(frame);
                    }
                }
            }
        }
        let frame = last.expect("the client decoded the bot's video");
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
            "asked {fps} fps, got {rate:.1}"
        );
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_requests_are_answered_by_the_next_frame_or_by_an_error_when_the_source_is_off() {
    // Framerate 0: images only on request.
    let sources = vec![VideoInSource {
        source: VideoSource::Camera,
        framerate: Some(0),
    }];
    let (url, mut probes) = serve((320, 240), 10, sources).await;
    let client = TestClient::start(&url, ClientOptions::js()).await.unwrap();
    client.wait_channel_open(WAIT).await.unwrap();
    let mut probe = probes.recv().await.unwrap();
    let _camera = send_card(&client, 1, (320, 240));

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
