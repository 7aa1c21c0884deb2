//! The `echo` bot: every app message comes straight back, and RTVI clients get
//! the handshake they wait for (`client-ready` → `bot-ready`, `client-message`
//! → `server-response`). Other RTVI messages get no reply: echoing a client's
//! own RTVI message back would only confuse it.

use serde_json::Value;

use super::rtvi::{self, BotAbout, Capabilities};
use super::BotArgs;
use crate::{ConnectionEvent, SmallWebRtcConnection};

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
    } else {
        connection.send_app_message(message);
    }
}

/// Runs the echo bot until the session closes.
pub async fn run(args: BotArgs) {
    let connection = args.connection;
    let mut events = connection.events();
    connection.connect();
    let about = about();
    while let Some(event) = events.recv().await {
        match event {
            ConnectionEvent::AppMessage(message) => answer(&connection, &message, &about),
            ConnectionEvent::Closed => break,
            _ => {}
        }
    }
}
