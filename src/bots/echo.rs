//! The `echo` bot: every app message comes straight back, and RTVI clients get
//! the handshake they wait for (`client-ready` → `bot-ready`, `client-message`
//! → `server-response`).

use super::rtvi::{self, BotAbout, Capabilities};
use super::BotArgs;
use crate::ConnectionEvent;

/// Runs the echo bot until the session closes.
pub async fn run(args: BotArgs) {
    let connection = args.connection;
    let mut events = connection.events();
    connection.connect();
    let about = BotAbout {
        capabilities: Capabilities {
            audio_in: true,
            audio_out: true,
            video_in: true,
            video_out: true,
            metrics: false,
        },
        ..BotAbout::default()
    };
    while let Some(event) = events.recv().await {
        match event {
            ConnectionEvent::AppMessage(message) => {
                if rtvi::is_rtvi(&message) {
                    if let Some(reply) = rtvi::reply(&message, &about) {
                        connection.send_app_message(&reply);
                    }
                } else {
                    connection.send_app_message(&message);
                }
            }
            ConnectionEvent::Closed => break,
            _ => {}
        }
    }
}
