//! A bot of your own: echoes app messages (and answers the RTVI handshake),
//! reports camera/microphone switches, and leaves when the client says "bye".
//!
//! ```text
//! cargo run --example custom_bot
//! ```

use std::sync::Arc;

use serde_json::json;
use smallwebrtc::bots::{echo, BotArgs};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::ConnectionEvent;

async fn my_bot(args: BotArgs) {
    let connection = args.connection;
    let mut events = connection.events();
    connection.connect(); // ready: `Connected` fires and queued messages arrive
    while let Some(event) = events.recv().await {
        match event {
            ConnectionEvent::AppMessage(message) if message["type"] == "bye" => break,
            ConnectionEvent::AppMessage(message) => {
                echo::answer(&connection, &message, &echo::about())
            }
            ConnectionEvent::TrackStatus {
                source, enabled, ..
            } => {
                connection.send_app_message(&json!({"seen": format!("{source:?} {enabled}")}));
            }
            ConnectionEvent::Closed => return,
            _ => {}
        }
    }
    // Returning ends the session: the client gets `peerLeft`, then the connection closes.
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
