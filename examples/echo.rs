//! The simplest bot: plays your microphone back to you and sends every app
//! message back.
//!
//! ```text
//! cargo run --example echo
//! ```
//!
//! Then open <http://localhost:7860/client/>, press **Connect** and talk: you
//! hear yourself a fraction of a second later. Type a message in the page's
//! message box: it comes straight back in the log. (The server listens where
//! `smallwebrtc serve` does by default: `localhost:7860`.)
//!
//! The built-in `echo` bot (`smallwebrtc serve --bot echo`) is this plus the
//! camera, and a cap on how much audio it lets queue up.

use std::sync::Arc;

use smallwebrtc::bots::{echo, BotArgs};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputFrame, OutputAudioRawFrame, SmallWebRtcTransport, TransportEvent, TransportParams,
};

/// One session: echo until the client leaves.
pub async fn echo_bot(args: BotArgs) {
    let connection = args.connection.clone();
    let transport = match SmallWebRtcTransport::new(
        args.connection,
        TransportParams {
            audio_in_enabled: true,
            audio_out_enabled: true,
            // Out at the rate it comes in (16 kHz), so nothing is resampled.
            audio_out_sample_rate: 16_000,
            ..TransportParams::default()
        },
    ) {
        Ok(transport) => transport,
        Err(e) => return eprintln!("cannot start the transport: {e}"),
    };
    let (mut input, output, mut events) =
        (transport.input(), transport.output(), transport.events());
    loop {
        tokio::select! {
            frame = input.recv() => match frame {
                Some(InputFrame::Audio(audio)) => {
                    // Queued at once; the transport's clock plays it out in real time.
                    let _ = output.write_audio(OutputAudioRawFrame {
                        audio: audio.audio,
                        sample_rate: audio.sample_rate,
                        num_channels: 1,
                    });
                }
                Some(_) => {}
                None => return, // the session is over
            },
            event = events.recv() => match event {
                // Sends plain messages back, and answers the RTVI handshake
                // (`client-ready` → `bot-ready`) the official client waits for.
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
        bot: Arc::new(echo_bot),
        ..ServerConfig::default()
    })
    .await?;
    println!("open http://{}/client/ and talk", server.http_addr());
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
