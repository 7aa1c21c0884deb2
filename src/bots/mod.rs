//! Bots written against the public API, as a user of the library would write them.
//!
//! A bot is an async function of [`BotArgs`]; the server starts one per session
//! when the session's first offer arrives, and disconnects the client when the
//! bot returns.
//!
//! ```
//! use smallwebrtc::bots::{Bot, BotArgs};
//! use smallwebrtc::ConnectionEvent;
//!
//! // A bot that greets the client and then waits for the session to end.
//! let bot = |args: BotArgs| async move {
//!     let mut events = args.connection.events();
//!     args.connection.connect();
//!     args.connection.send_app_message(&serde_json::json!({"hello": "world"}));
//!     while let Some(event) = events.recv().await {
//!         if event == ConnectionEvent::Closed {
//!             break;
//!         }
//!     }
//! };
//! let bot: std::sync::Arc<dyn Bot> = std::sync::Arc::new(bot);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::SmallWebRtcConnection;

pub mod echo;
pub mod rtvi;
pub mod video_transform;

/// What a bot gets when its session starts.
#[derive(Debug, Clone)]
pub struct BotArgs {
    /// The client's session.
    pub connection: SmallWebRtcConnection,
    /// The offer's `request_data`, or else the body given to `POST /start`.
    pub body: Option<Value>,
    /// The `/start` session id, when the client came through `/start`.
    pub session_id: Option<String>,
}

/// A boxed bot future.
pub type BotFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Something that runs a session. Any `Fn(BotArgs) -> impl Future<Output = ()>` is one.
pub trait Bot: Send + Sync + 'static {
    /// Runs the bot for one session; the session is disconnected when it returns.
    fn run(&self, args: BotArgs) -> BotFuture;
}

impl<F, Fut> Bot for F
where
    F: Fn(BotArgs) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn run(&self, args: BotArgs) -> BotFuture {
        Box::pin(self(args))
    }
}

/// The names of the bots built into the server.
pub const BOT_NAMES: &[&str] = &["echo", "video-transform"];

/// A built-in bot by name.
///
/// ```
/// assert!(smallwebrtc::bots::by_name("echo").is_some());
/// assert!(smallwebrtc::bots::by_name("video-transform").is_some());
/// assert!(smallwebrtc::bots::by_name("nope").is_none());
/// ```
pub fn by_name(name: &str) -> Option<Arc<dyn Bot>> {
    match name {
        "echo" => Some(Arc::new(echo::run)),
        "video-transform" => Some(Arc::new(video_transform::run)),
        _ => None,
    }
}
