//! The `echo` bot: plays the client's microphone back to it, sends every app
//! message straight back, and gives RTVI clients the handshake they wait for
//! (`client-ready` → `bot-ready`, `client-message` → `server-response`). Other
//! RTVI messages get no reply: echoing a client's own RTVI message back would
//! only confuse it.
//!
//! For testing clients, an RTVI `client-message` whose `t` is `"renegotiate"`
//! also makes the bot ask the client to renegotiate (the `renegotiate`
//! signalling message), after answering it.

use serde_json::Value;

use super::rtvi::{self, BotAbout, Capabilities};
use super::BotArgs;
use crate::transport::{
    InputFrame, OutputAudioRawFrame, OutputImageRawFrame, SmallWebRtcTransport, TransportEvent,
    TransportParams, UserImageRawFrame, VideoFormat,
};
use crate::SmallWebRtcConnection;

/// The most audio the echo keeps queued before it drops a frame.
const MAX_QUEUED: std::time::Duration = std::time::Duration::from_millis(40);

/// What the echo bot says about itself in `bot-ready`.
pub fn about() -> BotAbout {
    BotAbout {
        capabilities: Capabilities {
            audio_in: true,
            audio_out: true,
            video_in: true,
            video_out: true,
            metrics: false,
        },
        ..BotAbout::default()
    }
}

/// Answers one app message the way the echo bot does.
///
/// ```no_run
/// # fn demo(connection: smallwebrtc::SmallWebRtcConnection) {
/// use smallwebrtc::bots::echo;
///
/// echo::answer(&connection, &serde_json::json!({"hello": 1}), &echo::about());
/// # }
/// ```
pub fn answer(connection: &SmallWebRtcConnection, message: &Value, about: &BotAbout) {
    if rtvi::is_rtvi(message) {
        if let Some(reply) = rtvi::reply(message, about) {
            connection.send_app_message(&reply);
        }
        if message["type"] == "client-message" && message["data"]["t"] == "renegotiate" {
            connection.ask_to_renegotiate();
        }
    } else {
        connection.send_app_message(message);
    }
}

/// The transport parameters of the echo bot: 16 kHz mono both ways, so audio
/// goes back exactly as it came, with no resampling; camera video in I420 (no
/// colour conversion) sent back live at 640×480, 30 fps.
pub fn params() -> TransportParams {
    TransportParams {
        audio_in_enabled: true,
        audio_in_sample_rate: 16_000,
        audio_out_enabled: true,
        audio_out_sample_rate: 16_000,
        video_in_enabled: true,
        video_in_format: VideoFormat::I420,
        video_out_enabled: true,
        video_out_width: 640,
        video_out_height: 480,
        video_out_is_live: true,
        ..TransportParams::default()
    }
}

/// Runs the echo bot until the session closes.
pub async fn run(args: BotArgs) {
    run_with(args, unchanged).await
}

/// What a bot built on the echo does to each camera image (I420, see
/// [`params`]) before sending it back; `None` sends nothing for it. It runs on
/// the video task, never on the audio loop.
pub(crate) type ImageTransform = fn(UserImageRawFrame) -> Option<OutputImageRawFrame>;

/// The echo's image "transform": the image as it came.
fn unchanged(image: UserImageRawFrame) -> Option<OutputImageRawFrame> {
    Some(OutputImageRawFrame {
        image: image.image,
        size: image.size,
        format: image.format,
    })
}

/// The echo bot, with each camera image passed through `transform` on its way
/// back (the `video-transform` bot is this with a visible transformation).
pub(crate) async fn run_with(args: BotArgs, transform: ImageTransform) {
    let connection = args.connection;
    let transport = match SmallWebRtcTransport::new(connection.clone(), params()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("echo bot cannot start: {e}");
            return;
        }
    };
    let mut events = transport.events();
    let mut input = transport.input();
    let output = transport.output();
    let about = about();
    // Images are resized and converted on their own task, so video work can
    // never delay the audio echo. At most one image waits; a newer one replaces it.
    let (images, mut images_rx) = tokio::sync::mpsc::channel::<UserImageRawFrame>(1);
    let video_output = output.clone();
    tokio::spawn(async move {
        while let Some(image) = images_rx.recv().await {
            let Some(frame) = transform(image) else {
                continue;
            };
            if let Err(e) = video_output.send_image(frame) {
                tracing::debug!("echo image not sent: {e}");
            }
        }
    });
    loop {
        tokio::select! {
            frame = input.recv() => match frame {
                Some(InputFrame::Audio(audio)) => {
                    // Audio comes in and goes out at the same rate, so a queue
                    // that grew (a burst of late packets, the client's clock a
                    // little fast) would never drain: drop a frame instead, to
                    // keep the round trip short for good.
                    if output.queued() > MAX_QUEUED {
                        continue;
                    }
                    // Queue and go on reading: the clock plays it out.
                    let frame = OutputAudioRawFrame {
                        audio: audio.audio,
                        sample_rate: audio.sample_rate,
                        num_channels: audio.num_channels,
                    };
                    if let Err(e) = output.write_audio(frame) {
                        tracing::debug!("echo write failed: {e}");
                    }
                }
                Some(InputFrame::Image(image)) => {
                    // Full: the video task is busy with the previous image; skip this one.
                    let _ = images.try_send(image);
                }
                Some(_) => {}
                None => return,
            },
            event = events.recv() => match event {
                Some(TransportEvent::AppMessage { message, .. }) => {
                    answer(&connection, &message, &about)
                }
                Some(TransportEvent::ClientClosed) | None => return,
                Some(_) => {}
            },
        }
    }
}
