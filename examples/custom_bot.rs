//! A bot of your own: beeps when the client says something loud, answers app
//! messages (and the RTVI handshake the official client waits for).
//!
//! ```text
//! cargo run --example custom_bot
//! ```

use std::sync::Arc;

use smallwebrtc::bots::{echo, BotArgs};
use smallwebrtc::media::audio::sine;
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputFrame, OutputAudioRawFrame, SmallWebRtcTransport, TransportEvent, TransportParams,
};

async fn my_bot(args: BotArgs) {
    let connection = args.connection.clone();
    let transport = SmallWebRtcTransport::new(
        args.connection,
        TransportParams {
            audio_in_enabled: true,  // 16 kHz mono, 20 ms frames
            audio_out_enabled: true, // we write 24 kHz mono
            ..TransportParams::default()
        },
    )
    .expect("valid parameters");
    let (mut input, output, mut events) =
        (transport.input(), transport.output(), transport.events());
    let beep = OutputAudioRawFrame::from_samples(&sine(880.0, 24_000, 4_800, 0.3), 24_000);
    loop {
        tokio::select! {
            frame = input.recv() => match frame {
                Some(InputFrame::Audio(audio)) => {
                    let loud = audio.samples().iter().any(|s| s.unsigned_abs() > 20_000);
                    if loud && output.queued().is_zero() {
                        let _ = output.write_audio(beep.clone()); // paced by the clock
                    }
                }
                Some(_) => {}
                None => return, // the session is over
            },
            event = events.recv() => match event {
                Some(TransportEvent::AppMessage { message, .. }) => {
                    echo::answer(&connection, &message, &echo::about()) // incl. RTVI bot-ready
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
        bot: Arc::new(my_bot),
        ..ServerConfig::default()
    })
    .await?;
    println!("listening on http://{}", server.http_addr());
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
