//! Frames a bot reads and writes, named as in Pipecat.

use std::time::Duration;

use serde_json::Value;

use crate::media::audio::{pcm_from_le_bytes, pcm_to_le_bytes, AudioError};

/// 20 ms of the client's microphone: 16-bit little-endian PCM, interleaved if stereo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputAudioRawFrame {
    /// s16le samples, interleaved when `num_channels` is 2.
    pub audio: Vec<u8>,
    /// Samples per second (`audio_in_sample_rate`, 16000 by default).
    pub sample_rate: u32,
    /// 1 or 2.
    pub num_channels: usize,
    /// Where the frame starts on the session's audio timeline.
    pub pts: Duration,
}

impl InputAudioRawFrame {
    /// The samples, decoded from the little-endian bytes.
    pub fn samples(&self) -> Vec<i16> {
        pcm_from_le_bytes(&self.audio).unwrap_or_default()
    }

    /// How long the frame lasts.
    pub fn duration(&self) -> Duration {
        let per_channel = self.audio.len() / 2 / self.num_channels.max(1);
        Duration::from_secs_f64(per_channel as f64 / f64::from(self.sample_rate.max(1)))
    }
}

/// Audio for the client: 16-bit little-endian mono PCM of any length and rate.
///
/// ```
/// use smallwebrtc::transport::OutputAudioRawFrame;
///
/// let frame = OutputAudioRawFrame::from_samples(&[0i16; 480], 24_000);
/// assert_eq!(frame.audio.len(), 960);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputAudioRawFrame {
    /// s16le samples.
    pub audio: Vec<u8>,
    /// Samples per second.
    pub sample_rate: u32,
    /// Must be 1: the output is mono, as in the original.
    pub num_channels: usize,
}

impl OutputAudioRawFrame {
    /// A mono frame from samples.
    pub fn from_samples(samples: &[i16], sample_rate: u32) -> Self {
        OutputAudioRawFrame {
            audio: pcm_to_le_bytes(samples),
            sample_rate,
            num_channels: 1,
        }
    }

    /// The samples; an error for an odd byte count.
    pub fn samples(&self) -> Result<Vec<i16>, AudioError> {
        pcm_from_le_bytes(&self.audio)
    }
}

/// An app message from the client (any JSON that is not signalling or a ping).
#[derive(Debug, Clone, PartialEq)]
pub struct InputTransportMessageFrame {
    /// The message, keys in the order the client sent them.
    pub message: Value,
}

/// An app message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTransportMessageFrame {
    /// The message.
    pub message: Value,
}

/// What [`TransportInput`](super::TransportInput) yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InputFrame {
    /// 20 ms of microphone audio.
    Audio(InputAudioRawFrame),
    /// An app message.
    Message(InputTransportMessageFrame),
    /// An image of the client's camera or screen.
    Image(super::video::UserImageRawFrame),
    /// An image request that cannot be answered (the source is off, missing, or
    /// the client left), with Pipecat's message.
    ImageError {
        /// The source asked for.
        source: super::video::VideoSource,
        /// Why there is no image.
        message: String,
    },
}
