//! The `echo` bot: plays the client's microphone back to it, sends every app
//! message straight back, and gives RTVI clients the handshake they wait for
//! (`client-ready` → `bot-ready`, `client-message` → `server-response`). Other
//! RTVI messages get no reply: echoing a client's own RTVI message back would
//! only confuse it.
//!
//! For testing clients, an RTVI `client-message` whose `t` is `"renegotiate"`
//! also makes the bot ask the client to renegotiate (the `renegotiate`
//! signalling message), after answering it.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::rtvi::{self, BotAbout, Capabilities};
use super::BotArgs;
use crate::transport::{
    InputFrame, OutputAudioRawFrame, OutputImageRawFrame, SmallWebRtcTransport, TransportEvent,
    TransportParams, UserImageRawFrame, VideoFormat,
};
use crate::SmallWebRtcConnection;

/// The most audio the echo keeps queued before it drops a frame.
const MAX_QUEUED: Duration = Duration::from_millis(40);
/// How long the queue must stay at least a frame deep before a frame is dropped.
const STANDING_WINDOW: Duration = Duration::from_secs(1);
/// One frame of input audio.
const FRAME: Duration = Duration::from_millis(20);

/// Decides when the echo drops a frame to keep its round trip short.
///
/// Audio comes in and goes out at the same rate, so a queue that grew (a burst of
/// late packets, the client's clock a little fast) never drains by itself. Two
/// rules: never queue more than [`MAX_QUEUED`]; and if the queue, looked at as each
/// frame arrives, never fell below one frame for a whole [`STANDING_WINDOW`], that
/// frame is a standing delay the echo does not need: drop one. A queue that dips
/// below a frame now and then is just the two clocks' phase, and is left alone.
#[derive(Debug)]
struct QueueTrimmer {
    window_start: Instant,
    shallowest: Duration,
}

impl QueueTrimmer {
    fn new(now: Instant) -> Self {
        QueueTrimmer {
            window_start: now,
            shallowest: Duration::MAX,
        }
    }

    /// Whether to drop the frame that arrived `now` with `queued` audio ahead of it.
    fn should_drop(&mut self, queued: Duration, now: Instant) -> bool {
        if queued > MAX_QUEUED {
            return true;
        }
        self.shallowest = self.shallowest.min(queued);
        if now.duration_since(self.window_start) < STANDING_WINDOW {
            return false;
        }
        let standing = self.shallowest >= FRAME;
        *self = QueueTrimmer::new(now);
        standing
    }
}

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
    let mut trimmer = QueueTrimmer::new(Instant::now());
    loop {
        tokio::select! {
            frame = input.recv() => match frame {
                Some(InputFrame::Audio(audio)) => {
                    if trimmer.should_drop(output.queued(), Instant::now()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the trimmer one frame every 20 ms for `seconds`, with the queue ahead of
    /// each frame given by `queued(i)`; returns the indices of dropped frames.
    fn run(seconds: u32, queued: impl Fn(u32) -> Duration) -> Vec<u32> {
        let start = Instant::now();
        let mut trimmer = QueueTrimmer::new(start);
        (0..seconds * 50)
            .filter(|&i| trimmer.should_drop(queued(i), start + FRAME * i))
            .collect()
    }

    #[test]
    fn the_clocks_phase_alone_drops_nothing() {
        // Between 0 and a frame, as two 20 ms clocks out of phase leave it.
        let dropped = run(10, |i| Duration::from_millis(u64::from(i * 7 % 20)));
        assert!(dropped.is_empty(), "{dropped:?}");
    }

    #[test]
    fn a_standing_frame_is_dropped_after_a_whole_window_not_before() {
        // A frame's worth queued at every arrival (here it never drains, so once per window).
        let dropped = run(3, |_| Duration::from_millis(25));
        assert_eq!(dropped, vec![50, 100]);
    }

    #[test]
    fn a_queue_that_dips_below_a_frame_is_left_alone() {
        let dropped = run(5, |i| {
            Duration::from_millis(if i % 40 == 0 { 5 } else { 30 })
        });
        assert!(dropped.is_empty(), "{dropped:?}");
    }

    #[test]
    fn more_than_the_cap_is_dropped_at_once() {
        let dropped = run(1, |i| Duration::from_millis(if i == 3 { 45 } else { 0 }));
        assert_eq!(dropped, vec![3]);
    }
}
