//! Encoded media in and out of a session, by m-line index.
//!
//! The session task knows no codec: it hands each depacketized frame to the
//! reader of its m-line (if there is one, and only then — a bot that reads
//! nothing costs nothing), and writes encoded frames it is given. Decoding and
//! encoding happen in [`crate::media`] on the reader's and writer's side.

use std::sync::Arc;
use std::time::Instant;

pub use str0m::format::Codec;

/// One encoded frame from the client (an Opus packet, a whole VP8/H.264 frame).
#[derive(Debug, Clone)]
pub struct MediaPacket {
    /// The m-line index it arrived on (0 microphone, 1 camera, 2 screen).
    pub index: usize,
    /// The codec it is encoded with.
    pub codec: Codec,
    /// Its RTP timestamp, in units of `clock_rate`, extended past wrap-around.
    pub rtp_time: u64,
    /// The RTP clock rate (48000 for Opus, 90000 for video).
    pub clock_rate: u32,
    /// When its last packet arrived.
    pub network_time: Instant,
    /// False when packets were lost just before this frame.
    pub contiguous: bool,
    /// The encoded payload.
    pub data: Arc<[u8]>,
}

/// One encoded frame for the client.
#[derive(Debug, Clone)]
pub struct OutgoingMedia {
    /// The m-line index to send on (0 audio, 1 camera video).
    pub index: usize,
    /// The codec it is encoded with; it must have been negotiated on that m-line.
    pub codec: Codec,
    /// Its RTP timestamp, in units of the codec's clock (48 kHz Opus, 90 kHz video).
    pub rtp_time: u64,
    /// The wall-clock time the frame represents (for RTCP sender reports).
    pub wallclock: Instant,
    /// The encoded payload.
    pub data: Vec<u8>,
}
