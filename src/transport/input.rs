//! The input half: the client's microphone as 20 ms PCM frames, and its app messages.
//!
//! Decoding happens here, in the reader's task, as the bot asks for frames: a
//! bot that reads nothing costs nothing, and a slow bot never stalls the
//! network. Lost packets are filled with Opus FEC (when the client sends it) or
//! concealment, so frames keep a steady 20 ms timeline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::frames::{InputAudioRawFrame, InputFrame, InputTransportMessageFrame};
use crate::media::audio::{packet_has_fec, AudioError, InputChunker, OpusDecoder};
use crate::metrics;
use crate::peer::media::{Codec, MediaPacket};
use crate::SmallWebRtcConnection;

/// Opus RTP clock ticks per 20 ms.
const TICKS_PER_FRAME: u64 = 960;
/// Gaps up to this many frames are concealed; longer ones (an outage, DTX) jump.
const MAX_CONCEALED_FRAMES: u64 = 5;
/// A reader that has not asked for this long gets fresh audio, not a backlog.
const STALE_AFTER: Duration = Duration::from_secs(2);
/// Encoded frames waiting for the reader (1 s of 20 ms packets).
const AUDIO_QUEUE: usize = 50;

/// Messages and the end of the session, from the transport's driver.
pub(super) enum InputEvent {
    Message(serde_json::Value),
}

struct AudioIn {
    packets: mpsc::Receiver<MediaPacket>,
    decoder: OpusDecoder,
    chunker: InputChunker,
    sample_rate: u32,
    channels: usize,
    /// RTP time expected next (48 kHz ticks), once audio has started.
    expected: Option<u64>,
    /// Added to the chunker's timeline after jumps over long gaps.
    pts_offset: Duration,
}

/// The input half of a [`SmallWebRtcTransport`](super::SmallWebRtcTransport).
///
/// ```no_run
/// # async fn demo(mut input: smallwebrtc::transport::TransportInput) {
/// use smallwebrtc::transport::InputFrame;
///
/// while let Some(frame) = input.recv().await {
///     match frame {
///         InputFrame::Audio(audio) => assert_eq!(audio.audio.len(), 640), // 20 ms, 16 kHz mono
///         InputFrame::Message(message) => println!("{}", message.message),
///         _ => {}
///     }
/// }
/// # }
/// ```
pub struct TransportInput {
    audio: Option<AudioIn>,
    events: mpsc::UnboundedReceiver<InputEvent>,
    ready: VecDeque<InputFrame>,
    last_read: Instant,
}

impl std::fmt::Debug for TransportInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportInput")
            .field("audio", &self.audio.is_some())
            .finish_non_exhaustive()
    }
}

impl TransportInput {
    pub(super) fn new(
        connection: &SmallWebRtcConnection,
        events: mpsc::UnboundedReceiver<InputEvent>,
        audio: Option<(u32, usize)>,
    ) -> Result<Self, AudioError> {
        let audio = match audio {
            Some((sample_rate, channels)) => Some(AudioIn {
                packets: connection.read_media(0, AUDIO_QUEUE),
                decoder: OpusDecoder::new(sample_rate, channels)?,
                chunker: InputChunker::new(sample_rate, channels)?,
                sample_rate,
                channels,
                expected: None,
                pts_offset: Duration::ZERO,
            }),
            None => None,
        };
        Ok(TransportInput {
            audio,
            events,
            ready: VecDeque::new(),
            last_read: Instant::now(),
        })
    }

    /// The next frame; `None` once the session has closed.
    pub async fn recv(&mut self) -> Option<InputFrame> {
        if self.last_read.elapsed() > STALE_AFTER {
            self.drop_backlog();
        }
        let frame = self.next_frame().await;
        self.last_read = Instant::now();
        frame
    }

    /// The frames as a `Stream`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = InputFrame> {
        futures_util::stream::unfold(self, |mut input| async move {
            input.recv().await.map(|frame| (frame, input))
        })
    }

    async fn next_frame(&mut self) -> Option<InputFrame> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(frame);
            }
            let packet = match &mut self.audio {
                Some(audio) => tokio::select! {
                    biased;
                    event = self.events.recv() => return event.map(|InputEvent::Message(m)| {
                        InputFrame::Message(InputTransportMessageFrame { message: m })
                    }),
                    packet = audio.packets.recv() => packet,
                },
                None => {
                    return self.events.recv().await.map(|InputEvent::Message(m)| {
                        InputFrame::Message(InputTransportMessageFrame { message: m })
                    })
                }
            };
            match packet {
                Some(packet) => self.decode(packet),
                // The session ended; what is left are messages.
                None => self.audio = None,
            }
        }
    }

    /// After a pause in reading, start from fresh audio rather than a second-old backlog.
    fn drop_backlog(&mut self) {
        if let Some(audio) = &mut self.audio {
            let mut dropped = 0;
            while audio.packets.try_recv().is_ok() {
                dropped += 1;
            }
            if dropped > 0 {
                tracing::debug!(
                    dropped,
                    "input audio backlog dropped after a pause in reading"
                );
            }
            audio.expected = None;
            audio.chunker.clear();
            let _ = audio.decoder.reset();
        }
    }

    fn decode(&mut self, packet: MediaPacket) {
        let Some(audio) = &mut self.audio else {
            return;
        };
        if packet.codec != Codec::Opus {
            return;
        }
        if let Some(expected) = audio.expected {
            if packet.rtp_time < expected {
                return; // late duplicate or reordered behind concealment
            }
            let missing = (packet.rtp_time - expected) / TICKS_PER_FRAME;
            if missing > MAX_CONCEALED_FRAMES {
                // An outage or a DTX pause: jump the timeline instead of inventing audio.
                let gap = Duration::from_micros((packet.rtp_time - expected) * 1_000_000 / 48_000);
                audio.pts_offset += gap;
                let _ = audio.decoder.reset();
            } else if missing > 0 {
                metrics::MEDIA_FRAMES_LOST.add(missing);
                let fec = packet_has_fec(&packet.data);
                let concealed = if fec { missing - 1 } else { missing };
                for _ in 0..concealed {
                    if let Ok(pcm) = audio.decoder.conceal_frame() {
                        let _ = audio.chunker.push(pcm);
                    }
                }
                if fec {
                    if let Ok(pcm) = audio.decoder.decode_fec(&packet.data) {
                        let _ = audio.chunker.push(pcm);
                    }
                }
            }
        }
        let started = Instant::now();
        let decoded = audio.decoder.decode(&packet.data);
        metrics::AUDIO_DECODE.record(started.elapsed());
        match decoded {
            Ok(pcm) => {
                let per_channel = (pcm.len() / audio.channels.max(1)) as u64;
                let ticks = per_channel * 48_000 / u64::from(audio.sample_rate);
                audio.expected = Some(packet.rtp_time + ticks);
                if let Err(e) = audio.chunker.push(pcm) {
                    tracing::debug!("decoded audio not chunked: {e}");
                }
            }
            Err(e) => {
                tracing::debug!("undecodable Opus packet: {e}");
                return;
            }
        }
        while let Some(frame) = audio.chunker.pop() {
            self.ready.push_back(InputFrame::Audio(InputAudioRawFrame {
                audio: frame.to_le_bytes(),
                sample_rate: frame.sample_rate,
                num_channels: frame.channels,
                pts: audio.pts_offset + frame.pts_time(),
            }));
        }
    }
}
