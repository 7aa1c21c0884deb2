//! The output half: bot audio paced onto the wire by a clock, with back-pressure
//! and interruption.
//!
//! A write is queued at once; a clock task takes one 20 ms frame per tick (or
//! silence when idle), encodes it and hands it to the session. The clock, not
//! the bot, decides when audio leaves: a bot that writes 10 s at once is played
//! over 10 s, and can await the end of each write.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::Notify;

use super::frames::OutputAudioRawFrame;
use super::TransportError;
use crate::media::audio::{
    frame_samples, AudioError, OpusEncoder, Pacer, PacerConfig, Resampler, WriteTicket,
};
use crate::metrics;
use crate::peer::media::{Codec, OutgoingMedia};
use crate::SmallWebRtcConnection;

struct State {
    pacer: Pacer,
    encoder: OpusEncoder,
    /// For writes at a rate other than the output rate: (their rate, resampler).
    resampler: Option<(u32, Resampler)>,
    /// Bumped by every interruption, so waiting writers know theirs was dropped.
    epoch: u64,
    connected: bool,
    closed: bool,
}

pub(super) struct Shared {
    state: Mutex<State>,
    progress: Notify,
    connection: SmallWebRtcConnection,
    sample_rate: u32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queued write; [`played`](Playback::played) resolves when its last sample has been sent.
#[derive(Debug)]
pub struct Playback {
    shared: Option<Arc<Shared>>,
    ticket: Option<WriteTicket>,
    epoch: u64,
}

impl Playback {
    /// Waits until the write has been played, or says why it never will be.
    pub async fn played(self) -> Result<(), TransportError> {
        let (Some(shared), Some(ticket)) = (self.shared, self.ticket) else {
            return Ok(());
        };
        loop {
            let notified = shared.progress.notified();
            {
                let state = shared.lock();
                if state.epoch != self.epoch {
                    return Err(TransportError::Interrupted);
                }
                if state.pacer.is_played(ticket) {
                    return Ok(());
                }
                if state.closed {
                    return Err(TransportError::Closed);
                }
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputShared")
            .field("sample_rate", &self.sample_rate)
            .finish_non_exhaustive()
    }
}

/// The output half of a [`SmallWebRtcTransport`](super::SmallWebRtcTransport). Cheap to clone.
///
/// ```no_run
/// # async fn demo(output: smallwebrtc::transport::TransportOutput) -> Result<(), smallwebrtc::transport::TransportError> {
/// use smallwebrtc::media::audio::sine;
/// use smallwebrtc::transport::OutputAudioRawFrame;
///
/// // Two seconds of a 1 kHz tone: returns after it has been played (about 2 s).
/// output
///     .send_audio(OutputAudioRawFrame::from_samples(&sine(1000.0, 24_000, 48_000, 0.3), 24_000))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TransportOutput {
    shared: Option<Arc<Shared>>,
    video: Option<Arc<super::video::VideoOut>>,
    connection: SmallWebRtcConnection,
}

impl TransportOutput {
    pub(super) fn new(
        connection: &SmallWebRtcConnection,
        audio: Option<AudioOutConfig>,
    ) -> Result<Self, AudioError> {
        let shared = match audio {
            Some(AudioOutConfig {
                sample_rate,
                auto_silence,
                opus_complexity,
            }) => {
                let pacer = Pacer::new(
                    PacerConfig {
                        sample_rate,
                        auto_silence,
                        ..PacerConfig::default()
                    },
                    Instant::now(),
                )?;
                let shared = Arc::new(Shared {
                    state: Mutex::new(State {
                        pacer,
                        encoder: voice_encoder(sample_rate, opus_complexity)?,
                        resampler: None,
                        epoch: 0,
                        connected: false,
                        closed: false,
                    }),
                    progress: Notify::new(),
                    connection: connection.clone(),
                    sample_rate,
                });
                tokio::spawn(clock(Arc::downgrade(&shared)));
                Some(shared)
            }
            None => None,
        };
        Ok(TransportOutput {
            shared,
            video: None,
            connection: connection.clone(),
        })
    }

    /// Queues audio and waits until it has been played.
    ///
    /// Errors: an odd byte count, a stereo frame, a rate that cannot be
    /// resampled, a write after the session closed, or an interruption.
    pub async fn send_audio(&self, frame: OutputAudioRawFrame) -> Result<(), TransportError> {
        self.write_audio(frame)?.played().await
    }

    /// Queues audio and returns at once; await the [`Playback`] for the end.
    pub fn write_audio(&self, frame: OutputAudioRawFrame) -> Result<Playback, TransportError> {
        let shared = self
            .shared
            .as_ref()
            .ok_or(TransportError::AudioOutDisabled)?;
        if frame.num_channels != 1 {
            return Err(TransportError::Audio(AudioError::UnsupportedChannels(
                frame.num_channels,
            )));
        }
        let samples = frame.samples()?;
        let mut state = shared.lock();
        if state.closed {
            return Err(TransportError::Closed);
        }
        let ticket = if frame.sample_rate == shared.sample_rate {
            state.pacer.push_samples(&samples)
        } else {
            let resampled = resample(&mut state, frame.sample_rate, shared.sample_rate, &samples)?;
            state.pacer.push_samples(&resampled)
        };
        Ok(Playback {
            shared: Some(shared.clone()),
            ticket: Some(ticket),
            epoch: state.epoch,
        })
    }

    /// Shows an image to the client: resized to the output size if it differs,
    /// encoded and sent at `video_out_framerate` (repeated until the next one,
    /// unless `video_out_is_live`). Errors name what is wrong with the image.
    pub fn send_image(&self, frame: super::OutputImageRawFrame) -> Result<(), TransportError> {
        self.video
            .as_ref()
            .ok_or(TransportError::VideoOutDisabled)?
            .send_image(frame)
    }

    /// Shows images in turn at the output framerate.
    pub fn send_sprite(&self, sprite: super::SpriteFrame) -> Result<(), TransportError> {
        self.video
            .as_ref()
            .ok_or(TransportError::VideoOutDisabled)?
            .send_sprite(sprite)
    }

    /// The video encoder's current target bitrate in kbit/s (it follows the
    /// client's bandwidth estimate), or `None` when video output is disabled.
    pub fn video_bitrate(&self) -> Option<u32> {
        self.video.as_ref().map(|video| video.bitrate())
    }

    pub(super) fn set_video(&mut self, video: Arc<super::video::VideoOut>) {
        self.video = Some(video);
    }

    pub(super) fn request_keyframe(&self) {
        if let Some(video) = &self.video {
            video.request_keyframe();
        }
    }

    /// Drops every queued sample at once: the client hears silence from the next
    /// 20 ms frame on. Writers waiting on dropped audio get
    /// [`TransportError::Interrupted`].
    pub fn interrupt(&self) {
        if let Some(shared) = &self.shared {
            {
                let mut state = shared.lock();
                state.pacer.clear();
                state.epoch += 1;
            }
            shared.progress.notify_waiters();
        }
    }

    /// How much audio is queued and not yet played.
    pub fn queued(&self) -> std::time::Duration {
        self.shared
            .as_ref()
            .map(|s| s.lock().pacer.queued_duration())
            .unwrap_or_default()
    }

    /// Sends an app message to the client (queued until the data channel opens).
    pub fn send_message(&self, message: &Value) {
        self.connection.send_app_message(message);
    }

    pub(super) fn set_connected(&self, connected: bool) {
        if let Some(video) = &self.video {
            video.set_connected(connected);
        }
        if let Some(shared) = &self.shared {
            let mut state = shared.lock();
            if connected && !state.connected {
                // A fresh track for a new peer connection: no leftover encoder state.
                let _ = state.encoder.reset();
            }
            state.connected = connected;
        }
    }

    pub(super) fn close(&self) {
        if let Some(video) = &self.video {
            video.close();
        }
        if let Some(shared) = &self.shared {
            shared.lock().closed = true;
            shared.progress.notify_waiters();
        }
    }
}

/// What the audio half of the output is set up with (from [`TransportParams`](super::TransportParams)).
pub(super) struct AudioOutConfig {
    pub(super) sample_rate: u32,
    pub(super) auto_silence: bool,
    pub(super) opus_complexity: u8,
}

/// The bot's voice encoder. A profile of the server under load found half its time
/// in the encoder at libopus' default complexity, hence the lower default.
fn voice_encoder(sample_rate: u32, complexity: u8) -> Result<OpusEncoder, AudioError> {
    let mut encoder = OpusEncoder::new(sample_rate, 1)?;
    encoder.set_complexity(complexity)?;
    Ok(encoder)
}

fn resample(
    state: &mut State,
    from: u32,
    to: u32,
    samples: &[i16],
) -> Result<Vec<i16>, TransportError> {
    frame_samples(from).map_err(TransportError::Audio)?;
    let reuse = matches!(&state.resampler, Some((rate, _)) if *rate == from);
    if !reuse {
        state.resampler = Some((from, Resampler::new(from, to, 1)?));
    }
    let Some((_, resampler)) = &mut state.resampler else {
        return Ok(Vec::new());
    };
    Ok(resampler.process_to_vec(samples)?)
}

/// The pacing clock: one 20 ms frame per tick, encoded and handed to the session.
async fn clock(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let due = {
            let state = strong.lock();
            if state.closed {
                return;
            }
            state.pacer.next_due()
        };
        drop(strong);
        tokio::time::sleep_until(due.into()).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let mut sent = false;
        {
            let mut guard = strong.lock();
            let state = &mut *guard;
            while let Some(frame) = state.pacer.poll(Instant::now()) {
                sent = true;
                if !state.connected {
                    continue;
                }
                if frame.late > PacerConfig::default().late_tolerance {
                    metrics::AUDIO_FRAMES_LATE.inc();
                }
                let started = Instant::now();
                let encoded = state.encoder.encode(&frame.pcm);
                metrics::AUDIO_ENCODE.record(started.elapsed());
                match encoded {
                    Ok(packet) => strong.connection.write_media(OutgoingMedia {
                        index: 0,
                        codec: Codec::Opus,
                        rtp_time: frame.rtp_time,
                        wallclock: frame.due,
                        data: packet,
                    }),
                    Err(e) => tracing::debug!("Opus encode failed: {e}"),
                }
            }
        }
        if sent {
            strong.progress.notify_waiters();
        }
    }
}
