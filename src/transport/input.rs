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
use super::video::{VideoIn, VideoInSource, VideoSource};
use crate::media::audio::{packet_has_fec, AudioError, InputChunker, OpusDecoder};
use crate::media::video::VideoFormat;
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
    /// A source was turned on or off (`trackStatus`).
    SourceEnabled(VideoSource, bool),
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
    videos: Vec<VideoIn>,
    video_format: VideoFormat,
    connection: SmallWebRtcConnection,
    /// Sources asked for whose frames nothing has arrived yet (keyframe pending).
    started_reading: bool,
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
        video: &[VideoInSource],
        video_format: VideoFormat,
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
        let videos = video.iter().map(|v| VideoIn::new(connection, *v)).collect();
        Ok(TransportInput {
            audio,
            videos,
            video_format,
            connection: connection.clone(),
            started_reading: false,
            events,
            ready: VecDeque::new(),
            last_read: Instant::now(),
        })
    }

    /// The next frame; `None` once the session has closed.
    pub async fn recv(&mut self) -> Option<InputFrame> {
        if !self.started_reading {
            // Video decoding starts now: ask for a keyframe rather than wait for one.
            self.started_reading = true;
            for v in &mut self.videos {
                v.ask_keyframe(&self.connection);
            }
        }
        if self.last_read.elapsed() > STALE_AFTER {
            self.drop_backlog();
        }
        let frame = self.next_frame().await;
        self.last_read = Instant::now();
        frame
    }

    /// Asks for the next image of `source`, whatever the sampling says. It arrives
    /// as an [`InputFrame::Image`], or at once as an [`InputFrame::ImageError`]
    /// when the client has turned that source off or does not send it at all.
    pub fn request_image(&mut self, source: VideoSource) {
        match self.videos.iter_mut().find(|v| v.source == source) {
            Some(v) if !v.enabled => {
                let message = v.off_error();
                self.ready
                    .push_back(InputFrame::ImageError { source, message });
            }
            Some(v) => {
                v.pending_request = true;
                v.ask_keyframe(&self.connection);
            }
            None => self.ready.push_back(InputFrame::ImageError {
                source,
                message: VideoIn::missing_error(source),
            }),
        }
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
            let (camera, screen) = match self.videos.as_mut_slice() {
                [] => (None, None),
                [a] => (Some(&mut a.packets), None),
                [a, b, ..] => (Some(&mut a.packets), Some(&mut b.packets)),
            };
            let audio = self.audio.as_mut().map(|a| &mut a.packets);
            let got = tokio::select! {
                biased;
                event = self.events.recv() => Got::Event(event),
                Some(p) = recv_opt(audio) => Got::Audio(p),
                Some(p) = recv_opt(camera) => Got::Video(0, p),
                Some(p) = recv_opt(screen) => Got::Video(1, p),
            };
            match got {
                Got::Event(None) => {
                    // The session is over: pending image requests get their answer.
                    for v in &mut self.videos {
                        if std::mem::take(&mut v.pending_request) {
                            self.ready.push_back(InputFrame::ImageError {
                                source: v.source,
                                message: "The peer disconnected.".into(),
                            });
                        }
                    }
                    self.videos.clear();
                    self.audio = None;
                    if self.ready.is_empty() {
                        return None;
                    }
                }
                Got::Event(Some(InputEvent::Message(m))) => {
                    return Some(InputFrame::Message(InputTransportMessageFrame {
                        message: m,
                    }))
                }
                Got::Event(Some(InputEvent::SourceEnabled(source, enabled))) => {
                    if let Some(v) = self.videos.iter_mut().find(|v| v.source == source) {
                        v.enabled = enabled;
                        if !enabled && std::mem::take(&mut v.pending_request) {
                            let message = v.off_error();
                            self.ready
                                .push_back(InputFrame::ImageError { source, message });
                        }
                    }
                }
                Got::Audio(Some(packet)) => self.decode(packet),
                Got::Audio(None) => self.audio = None,
                Got::Video(i, Some(packet)) => {
                    let format = self.video_format;
                    if let Some(v) = self.videos.get_mut(i) {
                        if let Some(frame) = v.decode(&self.connection, packet, format) {
                            self.ready.push_back(InputFrame::Image(frame));
                        }
                    }
                }
                Got::Video(i, None) => {
                    if i < self.videos.len() {
                        self.videos.remove(i);
                    }
                }
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

enum Got {
    Event(Option<InputEvent>),
    Audio(Option<MediaPacket>),
    Video(usize, Option<MediaPacket>),
}

/// Receives from `rx`, or never resolves when there is no receiver.
async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<Option<T>> {
    match rx {
        Some(rx) => Some(rx.recv().await),
        None => std::future::pending().await,
    }
}
