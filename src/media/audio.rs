//! The audio media layer: Opus in and out, 20 ms framing, pacing and resampling.
//!
//! Everything here is sans-IO: no sockets, no sleeping, no tasks. Time is passed in as an
//! [`Instant`](std::time::Instant), so the pacing logic is tested with a fake clock.
//!
//! # Receive path (client microphone to bot)
//!
//! ```text
//! RTP Opus payload ──► OpusDecoder (straight at the wanted rate) ──► InputChunker ──► 20 ms AudioFrames
//!        lost packet ──► OpusDecoder::decode_fec(next) or ::conceal_frame()
//! ```
//!
//! Pipecat's default is 16 kHz mono: [`OpusDecoder::new(16_000, 1)`](OpusDecoder::new) and
//! [`InputChunker::new(16_000, 1)`](InputChunker::new) deliver 320-sample frames whatever the
//! packet durations the client sends (10, 20, 40 or 60 ms).
//!
//! # Send path (bot to client)
//!
//! ```text
//! PCM s16 mono bytes, any length ──► Pacer (OutputQueue inside) ──poll(now)──► 20 ms frame ──► OpusEncoder ──► RTP
//! ```
//!
//! The [`Pacer`] paces from its own start time (`start + n × 20 ms`), sends silence when idle if
//! asked to, and reports how far playback has got so that a writer can wait for "this write has
//! been played" (back-pressure). The RTP timestamp advances by 960 per frame: Opus always uses a
//! 48 kHz RTP clock.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use smallwebrtc::media::audio::{sine, pcm_to_le_bytes, OpusEncoder, Pacer, PacerConfig};
//!
//! let start = Instant::now();
//! let mut pacer = Pacer::new(PacerConfig::default(), start)?; // 24 kHz mono, auto-silence on
//! let mut encoder = OpusEncoder::new(24_000, 1)?;
//! let tone = pcm_to_le_bytes(&sine(440.0, 24_000, 24_000, 0.3)); // one second
//! let ticket = pacer.push_bytes(&tone)?;
//!
//! let mut now = start;
//! let mut packets = 0;
//! while !pacer.is_played(ticket) {
//!     while let Some(frame) = pacer.poll(now) {
//!         let packet = encoder.encode(&frame.pcm)?;
//!         assert!(!packet.is_empty());
//!         packets += 1;
//!     }
//!     now = pacer.next_due(); // a real caller sleeps until then
//! }
//! assert_eq!(packets, 50); // one second of audio is 50 frames ...
//! assert_eq!(now - start, Duration::from_secs(1)); // ... sent over one second
//! # Ok::<(), smallwebrtc::media::audio::AudioError>(())
//! ```
#![warn(missing_docs)]

mod analysis;
mod chunker;
mod codec;
mod pacer;
mod resample;

use std::time::Duration;

pub use analysis::{dominant_frequency, sine, tone_level_db};
pub use chunker::{AudioFrame, InputChunker, OutputQueue, WriteTicket};
pub use codec::{packet_has_fec, OpusDecoder, OpusEncoder};
pub use pacer::{FrameToSend, Pacer, PacerConfig, PacerStats};
pub use resample::Resampler;

/// The RTP clock rate of Opus, whatever the audio's sample rate (RFC 7587).
pub const OPUS_RTP_CLOCK_RATE: u32 = 48_000;

/// The duration of one frame on both paths.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// How far the Opus RTP timestamp advances per 20 ms frame: 960 ticks of the 48 kHz clock.
pub const RTP_TICKS_PER_FRAME: u32 = OPUS_RTP_CLOCK_RATE / 50;

/// The sample rates libopus encodes and decodes natively, without resampling.
pub const OPUS_NATIVE_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

/// The lowest sample rate accepted anywhere in this module.
pub const MIN_SAMPLE_RATE: u32 = 8_000;

/// The highest sample rate accepted anywhere in this module.
pub const MAX_SAMPLE_RATE: u32 = 192_000;

/// Everything that can go wrong in the audio layer. No function in this module panics on bad
/// input: it returns one of these instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The sample rate is outside [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`], or (where 20 ms
    /// frames are involved) 20 ms of it is not a whole number of samples.
    #[error(
        "unsupported sample rate {0} Hz: expected 8000..=192000 Hz, and a multiple of 50 Hz \
         where 20 ms frames are cut"
    )]
    UnsupportedSampleRate(u32),
    /// Only mono (1) and stereo (2) are supported.
    #[error("unsupported channel count {0}: expected 1 (mono) or 2 (stereo)")]
    UnsupportedChannels(usize),
    /// A PCM s16 byte buffer with an odd length: it ends in half a sample.
    #[error("PCM s16 buffer of {0} bytes has an odd length: not a whole number of samples")]
    OddByteCount(usize),
    /// Interleaved samples whose count is not a multiple of the channel count.
    #[error("{len} interleaved samples is not a whole number of {channels}-channel frames")]
    PartialChannelFrame {
        /// The number of samples given.
        len: usize,
        /// The channel count they should be a multiple of.
        channels: usize,
    },
    /// The encoder takes exactly 20 ms of audio per call.
    #[error("expected exactly {expected} interleaved samples (20 ms), got {actual}")]
    WrongFrameLength {
        /// The number of interleaved samples in 20 ms.
        expected: usize,
        /// The number given.
        actual: usize,
    },
    /// An empty packet was passed to a decoding function: a lost packet is concealed with
    /// [`OpusDecoder::conceal`] instead.
    #[error("empty Opus packet (use conceal() or decode_fec() for a lost packet)")]
    EmptyPacket,
    /// The packet is larger than 64 KiB, more than any RTP payload can be.
    #[error("Opus packet of {0} bytes is larger than 64 KiB")]
    PacketTooLarge(usize),
    /// The packet is not a valid Opus packet, or holds more than 120 ms of audio.
    #[error("invalid Opus packet: {0}")]
    InvalidPacket(&'static str),
    /// Packet-loss concealment works in whole 2.5 ms steps at the decoder's internal rate, up to
    /// 120 ms.
    #[error(
        "cannot conceal {0} samples: must be a non-zero whole number of 2.5 ms steps, at most \
         120 ms"
    )]
    InvalidConcealLength(usize),
    /// A bitrate outside libopus's 500..=512000 bit/s.
    #[error("invalid Opus bitrate {0} bit/s: expected 500..=512000")]
    InvalidBitrate(u32),
    /// A packet-loss percentage above 100.
    #[error("invalid expected packet loss {0}%: expected 0..=100")]
    InvalidPacketLoss(u8),
    /// A complexity above 10.
    #[error("invalid Opus complexity {0}: expected 0..=10")]
    InvalidComplexity(u8),
    /// libopus itself returned an error.
    #[error("libopus {function} failed: {description}")]
    Opus {
        /// The libopus function that failed.
        function: &'static str,
        /// libopus's description of the error code.
        description: &'static str,
    },
}

impl From<opus::Error> for AudioError {
    fn from(err: opus::Error) -> Self {
        AudioError::Opus {
            function: err.function(),
            description: err.description(),
        }
    }
}

/// Samples per channel in one 20 ms frame at `sample_rate`: 320 at 16 kHz, 480 at 24 kHz.
///
/// # Errors
///
/// [`AudioError::UnsupportedSampleRate`] if the rate is out of range or not a multiple of 50 Hz.
///
/// ```
/// use smallwebrtc::media::audio::frame_samples;
/// assert_eq!(frame_samples(16_000), Ok(320));
/// assert_eq!(frame_samples(22_050), Ok(441));
/// assert!(frame_samples(11_025).is_err());
/// ```
pub fn frame_samples(sample_rate: u32) -> Result<usize, AudioError> {
    check_frame_rate(sample_rate).map(|rate| (rate / 50) as usize)
}

/// Decodes little-endian PCM s16 bytes (Pipecat's `audio` bytes) into samples.
///
/// # Errors
///
/// [`AudioError::OddByteCount`] if the buffer ends in half a sample.
///
/// ```
/// use smallwebrtc::media::audio::{pcm_from_le_bytes, AudioError};
/// assert_eq!(pcm_from_le_bytes(&[0x01, 0x00, 0xff, 0xff]), Ok(vec![1, -1]));
/// assert_eq!(pcm_from_le_bytes(&[0x01]), Err(AudioError::OddByteCount(1)));
/// ```
pub fn pcm_from_le_bytes(bytes: &[u8]) -> Result<Vec<i16>, AudioError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(AudioError::OddByteCount(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect())
}

/// Encodes samples as little-endian PCM s16 bytes (Pipecat's `audio` bytes).
///
/// ```
/// use smallwebrtc::media::audio::pcm_to_le_bytes;
/// assert_eq!(pcm_to_le_bytes(&[1, -1]), vec![0x01, 0x00, 0xff, 0xff]);
/// ```
pub fn pcm_to_le_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Checks a sample rate for use anywhere (resampler, analysis).
fn check_rate(sample_rate: u32) -> Result<u32, AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        Ok(sample_rate)
    } else {
        Err(AudioError::UnsupportedSampleRate(sample_rate))
    }
}

/// Checks a sample rate for use where 20 ms frames are cut: 20 ms must be whole samples.
fn check_frame_rate(sample_rate: u32) -> Result<u32, AudioError> {
    let rate = check_rate(sample_rate)?;
    if rate % 50 == 0 {
        Ok(rate)
    } else {
        Err(AudioError::UnsupportedSampleRate(sample_rate))
    }
}

/// Checks a channel count: 1 or 2.
fn check_channels(channels: usize) -> Result<usize, AudioError> {
    match channels {
        1 | 2 => Ok(channels),
        other => Err(AudioError::UnsupportedChannels(other)),
    }
}

/// Checks that `len` interleaved samples are whole channel frames.
fn check_interleaved(len: usize, channels: usize) -> Result<(), AudioError> {
    if channels == 0 || !len.is_multiple_of(channels) {
        Err(AudioError::PartialChannelFrame { len, channels })
    } else {
        Ok(())
    }
}

/// The duration of `samples` samples per channel at `sample_rate`.
fn samples_to_duration(samples: u64, sample_rate: u32) -> Duration {
    if sample_rate == 0 {
        return Duration::ZERO;
    }
    let rate = u64::from(sample_rate);
    let secs = samples / rate;
    let rem = samples % rate;
    // rem < rate <= 192_000, so rem * 1e9 fits in u64.
    let nanos = rem * 1_000_000_000 / rate;
    Duration::from_secs(secs) + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes() {
        assert_eq!(frame_samples(8_000), Ok(160));
        assert_eq!(frame_samples(16_000), Ok(320));
        assert_eq!(frame_samples(24_000), Ok(480));
        assert_eq!(frame_samples(44_100), Ok(882));
        assert_eq!(frame_samples(48_000), Ok(960));
        assert_eq!(frame_samples(0), Err(AudioError::UnsupportedSampleRate(0)));
        assert!(frame_samples(u32::MAX).is_err());
        assert!(frame_samples(7_999).is_err());
        assert_eq!(RTP_TICKS_PER_FRAME, 960);
    }

    #[test]
    fn byte_conversions_round_trip_and_reject_odd_lengths() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 1234];
        let bytes = pcm_to_le_bytes(&samples);
        assert_eq!(bytes.len(), 12);
        assert_eq!(pcm_from_le_bytes(&bytes).as_deref(), Ok(&samples[..]));
        assert_eq!(
            pcm_from_le_bytes(&bytes[..5]),
            Err(AudioError::OddByteCount(5))
        );
        assert_eq!(pcm_from_le_bytes(&[]), Ok(vec![]));
    }

    #[test]
    fn durations() {
        assert_eq!(samples_to_duration(320, 16_000), Duration::from_millis(20));
        assert_eq!(samples_to_duration(48_000, 24_000), Duration::from_secs(2));
        assert_eq!(samples_to_duration(441, 22_050), Duration::from_millis(20));
        assert_eq!(samples_to_duration(5, 0), Duration::ZERO);
        // No overflow at the extremes.
        let _ = samples_to_duration(u64::MAX, 8_000);
    }

    #[test]
    fn errors_display() {
        let err = AudioError::OddByteCount(3);
        assert!(err.to_string().contains("3 bytes"));
        let err = AudioError::WrongFrameLength {
            expected: 480,
            actual: 10,
        };
        assert!(err.to_string().contains("480"));
    }
}
