//! A bot that shows you your own camera, transformed: colours inverted (a
//! photographic negative) with a white marker sliding along a black strip at
//! the bottom. It also echoes your microphone and your app messages.
//!
//! ```text
//! cargo run --example video_transform
//! ```
//!
//! Then open <http://localhost:7860/client/>, turn the **camera** on and press
//! **Connect**: the bot's video shows you in negative (a red shirt comes back
//! cyan), and the marker crosses the bottom edge every two seconds, so you can
//! tell a live picture from a frozen one. Talk and you hear yourself.
//!
//! This is the built-in `video-transform` bot (`smallwebrtc serve --bot
//! video-transform`) written on RGB images with only the public API: RGB is
//! what the transport delivers by default, and what most image code expects.
//! (The built-in bot does the same arithmetic on the I420 planes, which spares
//! two colour conversions per frame.) Replace [`transform_rgb`] with your own
//! effect: it gets packed `R, G, B` bytes, row after row.

use std::sync::Arc;
use std::time::Duration;

use smallwebrtc::bots::video_transform::marker_span;
use smallwebrtc::bots::{echo, BotArgs};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputFrame, OutputAudioRawFrame, OutputImageRawFrame, SmallWebRtcTransport, TransportEvent,
    TransportParams, UserImageRawFrame,
};

/// Inverts packed RGB pixels in place and draws the sliding marker for time
/// `elapsed` (the frame's `pts`), in one pass over the bytes. The marker's
/// place comes from the library's [`marker_span`], so this draws the very
/// picture the built-in bot does.
pub fn transform_rgb(rgb: &mut [u8], width: u32, height: u32, elapsed: Duration) {
    let (x0, x1, y0) = marker_span(width, height, elapsed);
    let row_bytes = width as usize * 3;
    let (picture, strip) = rgb.split_at_mut((y0 as usize * row_bytes).min(rgb.len()));
    for c in picture {
        *c = 255 - *c;
    }
    for row in strip.chunks_mut(row_bytes.max(1)) {
        for (x, pixel) in row.chunks_mut(3).enumerate() {
            let on = (x0 as usize..x1 as usize).contains(&x);
            pixel.fill(if on { 255 } else { 0 });
        }
    }
}

/// One camera image in, the transformed image out.
fn transform(mut image: UserImageRawFrame) -> OutputImageRawFrame {
    let (width, height) = image.size;
    transform_rgb(&mut image.image, width, height, image.pts);
    OutputImageRawFrame {
        image: image.image,
        size: image.size,
        format: image.format,
    }
}

/// One session: the transformed camera back, the microphone and messages echoed.
pub async fn video_transform_bot(args: BotArgs) {
    let connection = args.connection.clone();
    let transport = match SmallWebRtcTransport::new(
        args.connection,
        TransportParams {
            audio_in_enabled: true,
            audio_out_enabled: true,
            audio_out_sample_rate: 16_000,
            video_in_enabled: true, // the camera, as RGB, every frame
            video_out_enabled: true,
            video_out_width: 640,
            video_out_height: 480,
            // Each image is sent once, paced, instead of repeated until the next.
            video_out_is_live: true,
            ..TransportParams::default()
        },
    ) {
        Ok(transport) => transport,
        Err(e) => return eprintln!("cannot start the transport: {e}"),
    };
    let (mut input, output, mut events) =
        (transport.input(), transport.output(), transport.events());

    // Image work runs on its own task so it never delays the audio echo. The
    // channel holds one image: when the task is busy, newer frames are skipped
    // rather than queued (a late picture is worse than a dropped one).
    let (images, mut images_rx) = tokio::sync::mpsc::channel::<UserImageRawFrame>(1);
    let video_output = output.clone();
    tokio::spawn(async move {
        while let Some(image) = images_rx.recv().await {
            if let Err(e) = video_output.send_image(transform(image)) {
                eprintln!("image not sent: {e}");
            }
        }
    });

    loop {
        tokio::select! {
            frame = input.recv() => match frame {
                Some(InputFrame::Audio(audio)) => {
                    let _ = output.write_audio(OutputAudioRawFrame {
                        audio: audio.audio,
                        sample_rate: audio.sample_rate,
                        num_channels: 1,
                    });
                }
                Some(InputFrame::Image(image)) => {
                    let _ = images.try_send(image);
                }
                Some(_) => {}
                None => return,
            },
            event = events.recv() => match event {
                Some(TransportEvent::AppMessage { message, .. }) => {
                    echo::answer(&connection, &message, &echo::about())
                }
                Some(TransportEvent::ClientClosed) | None => return,
                Some(_) => {}
            },
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let server = Server::bind(ServerConfig {
        bot: Arc::new(video_transform_bot),
        ..ServerConfig::default()
    })
    .await?;
    println!(
        "open http://{}/client/, turn the camera on and connect",
        server.http_addr()
    );
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
