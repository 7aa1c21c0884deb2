//! [`SmallWebRtcTransport`]: what a bot uses — decoded audio in, audio out,
//! app messages both ways, and client events.
//!
//! ```no_run
//! use smallwebrtc::bots::BotArgs;
//! use smallwebrtc::transport::{InputFrame, OutputAudioRawFrame, SmallWebRtcTransport, TransportParams};
//!
//! // A bot that plays the client's microphone back to it.
//! async fn echo(args: BotArgs) {
//!     let transport = SmallWebRtcTransport::new(
//!         args.connection,
//!         TransportParams {
//!             audio_in_enabled: true,
//!             audio_out_enabled: true,
//!             audio_out_sample_rate: 16_000,
//!             ..TransportParams::default()
//!         },
//!     )
//!     .expect("valid parameters");
//!     let mut input = transport.input();
//!     let output = transport.output();
//!     while let Some(frame) = input.recv().await {
//!         if let InputFrame::Audio(audio) = frame {
//!             let _ = output.write_audio(OutputAudioRawFrame {
//!                 audio: audio.audio,
//!                 sample_rate: audio.sample_rate,
//!                 num_channels: 1,
//!             });
//!         }
//!     }
//! }
//! ```

mod frames;
mod input;
mod output;
mod video;

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

pub use crate::media::video::VideoFormat;
pub use frames::{
    InputAudioRawFrame, InputFrame, InputTransportMessageFrame, OutputAudioRawFrame,
    OutputTransportMessageFrame,
};
pub use input::TransportInput;
pub use output::{Playback, TransportOutput};
pub use video::{OutputImageRawFrame, SpriteFrame, UserImageRawFrame, VideoInSource, VideoSource};

use crate::media::audio::AudioError;
use crate::peer::TrackSource;
use crate::{ConnectionEvent, SmallWebRtcConnection};

/// What a transport does, with Pipecat's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportParams {
    /// Deliver the client's microphone as [`InputAudioRawFrame`]s (off by default, as in Pipecat).
    pub audio_in_enabled: bool,
    /// Rate of input frames (16000).
    pub audio_in_sample_rate: u32,
    /// 1 (mono, default) or 2 (stereo, interleaved).
    pub audio_in_channels: usize,
    /// Send audio to the client (off by default, as in Pipecat).
    pub audio_out_enabled: bool,
    /// Rate the bot writes at (24000); writes at other rates are resampled.
    pub audio_out_sample_rate: u32,
    /// Pipecat's output chunk size in 10 ms units (4). Kept for compatibility:
    /// here the clock always sends 20 ms Opus frames, and an interruption drops
    /// everything queued whatever this says.
    pub audio_out_10ms_chunks: u32,
    /// Send silence while the bot is quiet, so the client's track stays live (true).
    pub audio_out_auto_silence: bool,
    /// The Opus encoder's complexity for the bot's voice, 0..=10 (1). Not a Pipecat
    /// parameter: aiortc leaves libopus at its default (10). The encoder is most of a
    /// voice session's cost, and with libopus 1.6 on x86-64 complexity 1 costs about a
    /// quarter of 10 per 20 ms frame (38 against 142 µs at 16 kHz; 0 is 34 µs): see
    /// "Opus encoder complexity" in `BENCHMARKS.md`. Speech stays clear at 0–1; raise
    /// it for music.
    pub audio_out_opus_complexity: u8,
    /// Deliver the client's video as [`UserImageRawFrame`]s (off by default).
    pub video_in_enabled: bool,
    /// Which sources, and how often (default: the camera, every frame).
    pub video_in_sources: Vec<VideoInSource>,
    /// The pixel format of delivered images (RGB; I420 costs no conversion).
    pub video_in_format: VideoFormat,
    /// Send the bot's images to the client as video (off by default).
    pub video_out_enabled: bool,
    /// Output width; images of another size are resized (1024).
    pub video_out_width: u32,
    /// Output height (768).
    pub video_out_height: u32,
    /// Frames per second sent (30). Honoured, unlike the original's fixed 30.
    pub video_out_framerate: u32,
    /// Live output: each image is sent once, paced; otherwise the latest image
    /// is repeated at the framerate (false).
    pub video_out_is_live: bool,
    /// Video bitrate in kbit/s before the client's first bandwidth estimate (1000).
    pub video_out_bitrate: u32,
    /// The lowest video bitrate in kbit/s, however low the client's bandwidth
    /// estimate (150). Not a Pipecat parameter: the bitrate follows the estimate
    /// ([`BandwidthEstimate`](crate::peer::connection::BandwidthEstimate)) within
    /// these bounds, changed at most every 500 ms.
    pub video_out_bitrate_min: u32,
    /// The highest video bitrate in kbit/s, however high the client's estimate (2500).
    pub video_out_bitrate_max: u32,
    /// The VP8 encoder's speed level, 1..=16 (16, the fastest). Not a Pipecat parameter:
    /// on a noisy 640×480 camera-like scene level 16 encodes a frame in 1.5–1.7 ms where
    /// level 12 took 2.7–3.0 ms, for 0.2 dB less quality: see "Concurrent echo sessions
    /// (video)" in `BENCHMARKS.md`. Lower it for detailed pictures on a machine with CPU
    /// to spare. H.264 ignores it.
    pub video_out_vp8_speed: u8,
}

impl Default for TransportParams {
    fn default() -> Self {
        TransportParams {
            audio_in_enabled: false,
            audio_in_sample_rate: 16_000,
            audio_in_channels: 1,
            audio_out_enabled: false,
            audio_out_sample_rate: 24_000,
            audio_out_10ms_chunks: 4,
            audio_out_auto_silence: true,
            audio_out_opus_complexity: 1,
            video_in_enabled: false,
            video_in_sources: vec![VideoInSource {
                source: VideoSource::Camera,
                framerate: None,
            }],
            video_in_format: VideoFormat::Rgb,
            video_out_enabled: false,
            video_out_width: 1024,
            video_out_height: 768,
            video_out_framerate: 30,
            video_out_is_live: false,
            video_out_bitrate: 1000,
            video_out_bitrate_min: 150,
            video_out_bitrate_max: 2500,
            video_out_vp8_speed: crate::media::video::MAX_VP8_SPEED,
        }
    }
}

/// What went wrong with a transport call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The audio itself is unusable (odd byte count, unsupported rate or channels).
    #[error("{0}")]
    Audio(#[from] AudioError),
    /// The image is unusable (length, size or format), or the output size is odd.
    #[error("{0}")]
    Video(#[from] crate::media::video::VideoError),
    /// `video_out_enabled` is false.
    #[error("video output is disabled (TransportParams::video_out_enabled is false)")]
    VideoOutDisabled,
    /// The session has closed; nothing more can be sent.
    #[error("the session is closed: audio can no longer be sent")]
    Closed,
    /// The write was dropped by [`TransportOutput::interrupt`].
    #[error("the audio was interrupted before it was played")]
    Interrupted,
    /// `audio_out_enabled` is false.
    #[error("audio output is disabled (TransportParams::audio_out_enabled is false)")]
    AudioOutDisabled,
    /// `audio_in_channels` is not 1 or 2.
    #[error("audio_in_channels must be 1 or 2, got {0}")]
    InputChannels(usize),
}

/// What happens to the client, as Pipecat's transport events.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// `on_client_connected`: the client is connected (again, after a `restart_pc`).
    ClientConnected,
    /// `on_client_disconnected`: the client went away (it closed, or vanished).
    ClientDisconnected,
    /// `on_client_closed`: the session is over; nothing follows.
    ClientClosed,
    /// `on_app_message`: an app message, and the `pc_id` it came from.
    AppMessage {
        /// The message.
        message: Value,
        /// The sender's `pc_id`.
        sender: String,
    },
    /// The client turned its microphone, camera or screen on or off.
    TrackStatus {
        /// Which source.
        source: TrackSource,
        /// On or off.
        enabled: bool,
    },
}

/// Event subscribers, and whether the session is over (late subscribers then
/// get `ClientClosed` at once instead of waiting for ever).
#[derive(Default)]
struct SubscriberList {
    senders: Vec<mpsc::UnboundedSender<TransportEvent>>,
    closed: bool,
}

type Subscribers = Arc<Mutex<SubscriberList>>;

/// A bot's view of a session: decoded input, paced output, events.
///
/// Survives `restart_pc`: the new peer connection gets a fresh output track,
/// audio flows again, and [`TransportEvent::ClientConnected`] fires again.
pub struct SmallWebRtcTransport {
    connection: SmallWebRtcConnection,
    params: TransportParams,
    output: TransportOutput,
    input: Mutex<Option<TransportInput>>,
    subscribers: Subscribers,
}

impl std::fmt::Debug for SmallWebRtcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmallWebRtcTransport")
            .field("connection", &self.connection)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl SmallWebRtcTransport {
    /// A transport over `connection`. Calls [`SmallWebRtcConnection::connect`]:
    /// the bot is ready once it has a transport.
    pub fn new(
        connection: SmallWebRtcConnection,
        params: TransportParams,
    ) -> Result<SmallWebRtcTransport, TransportError> {
        if params.audio_in_channels != 1 && params.audio_in_channels != 2 {
            return Err(TransportError::InputChannels(params.audio_in_channels));
        }
        let mut output = TransportOutput::new(
            &connection,
            params.audio_out_enabled.then_some(output::AudioOutConfig {
                sample_rate: params.audio_out_sample_rate,
                auto_silence: params.audio_out_auto_silence,
                opus_complexity: params.audio_out_opus_complexity,
            }),
        )?;
        if params.video_out_enabled {
            output.set_video(video::VideoOut::new(
                &connection,
                params.video_out_width,
                params.video_out_height,
                params.video_out_framerate,
                params.video_out_is_live,
                (
                    params.video_out_bitrate,
                    params.video_out_bitrate_min,
                    params.video_out_bitrate_max,
                ),
                params.video_out_vp8_speed,
            )?);
        }
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let input = TransportInput::new(
            &connection,
            input_rx,
            params
                .audio_in_enabled
                .then_some((params.audio_in_sample_rate, params.audio_in_channels)),
            if params.video_in_enabled {
                &params.video_in_sources
            } else {
                &[]
            },
            params.video_in_format,
        )?;
        let subscribers: Subscribers = Arc::default();
        let events = connection.events();
        tokio::spawn(drive(
            connection.clone(),
            events,
            output.clone(),
            input_tx,
            subscribers.clone(),
        ));
        connection.connect();
        Ok(SmallWebRtcTransport {
            connection,
            params,
            output,
            input: Mutex::new(Some(input)),
            subscribers,
        })
    }

    /// The input half. There is one: later calls get an input that yields nothing.
    pub fn input(&self) -> TransportInput {
        self.input
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| {
                let (_, rx) = mpsc::unbounded_channel();
                TransportInput::new(&self.connection, rx, None, &[], VideoFormat::Rgb)
                    .expect("an input without audio cannot fail")
            })
    }

    /// The output half (cheap to clone).
    pub fn output(&self) -> TransportOutput {
        self.output.clone()
    }

    /// Queues audio and waits until it has been played. See [`TransportOutput::send_audio`].
    pub async fn send_audio(&self, frame: OutputAudioRawFrame) -> Result<(), TransportError> {
        self.output.send_audio(frame).await
    }

    /// Sends an app message to the client.
    pub fn send_message(&self, frame: OutputTransportMessageFrame) {
        self.connection.send_app_message(&frame.message);
    }

    /// Subscribes to client events from now on.
    pub fn events(&self) -> mpsc::UnboundedReceiver<TransportEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut list = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if list.closed {
            let _ = tx.send(TransportEvent::ClientClosed);
        } else {
            list.senders.push(tx);
        }
        rx
    }

    /// The session underneath.
    pub fn connection(&self) -> &SmallWebRtcConnection {
        &self.connection
    }

    /// The parameters.
    pub fn params(&self) -> &TransportParams {
        &self.params
    }
}

fn emit(subscribers: &Subscribers, event: TransportEvent) {
    let mut list = subscribers.lock().unwrap_or_else(|e| e.into_inner());
    if event == TransportEvent::ClientClosed {
        list.closed = true;
    }
    list.senders.retain(|s| s.send(event.clone()).is_ok());
    if list.closed {
        list.senders.clear();
    }
}

/// Turns connection events into transport behaviour and events.
async fn drive(
    connection: SmallWebRtcConnection,
    mut events: mpsc::UnboundedReceiver<ConnectionEvent>,
    output: TransportOutput,
    input: mpsc::UnboundedSender<input::InputEvent>,
    subscribers: Subscribers,
) {
    let mut failed = false;
    while let Some(event) = events.recv().await {
        match event {
            ConnectionEvent::Connected => {
                output.set_connected(true);
                emit(&subscribers, TransportEvent::ClientConnected);
            }
            ConnectionEvent::Disconnected => output.set_connected(false),
            ConnectionEvent::Failed => failed = true,
            ConnectionEvent::AppMessage(message) => {
                let _ = input.send(input::InputEvent::Message(message.clone()));
                emit(
                    &subscribers,
                    TransportEvent::AppMessage {
                        message,
                        sender: connection.pc_id(),
                    },
                );
            }
            ConnectionEvent::TrackStatus {
                source: Some(source),
                enabled,
                ..
            } => {
                let video = match source {
                    TrackSource::Camera => Some(VideoSource::Camera),
                    TrackSource::ScreenVideo => Some(VideoSource::ScreenVideo),
                    TrackSource::Microphone => None,
                };
                if let Some(video) = video {
                    let _ = input.send(input::InputEvent::SourceEnabled(video, enabled));
                }
                emit(
                    &subscribers,
                    TransportEvent::TrackStatus { source, enabled },
                )
            }
            ConnectionEvent::KeyframeRequest { index: 1 } => output.request_keyframe(),
            ConnectionEvent::Closed => break,
            _ => {}
        }
    }
    output.set_connected(false);
    output.close();
    // A close the bot asked for (disconnect) is not the client leaving; the
    // session tells us which through `closed_by_server`.
    if failed || !connection.closed_by_server() {
        emit(&subscribers, TransportEvent::ClientDisconnected);
    }
    emit(&subscribers, TransportEvent::ClientClosed);
}
