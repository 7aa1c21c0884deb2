//! Video in the transport: the client's camera and screen as images in the
//! format the bot asks for, and the bot's images out as paced VP8/H.264.
//!
//! # Bitrate of the bot's video
//!
//! The encoder starts at `video_out_bitrate` and then follows the client's
//! bandwidth estimate ([`SmallWebRtcConnection::bandwidth_estimate`]) within
//! `video_out_bitrate_min..=video_out_bitrate_max`: 90 % of it, at most one
//! change every 500 ms, down at once, up by at most 25 % a step, live (the
//! encoder is reconfigured, no keyframe is forced). The policy is
//! [`RateController`](crate::media::video::RateController), tested without I/O.
//!
//! Which estimate is followed (REMB now; TWCC only once send-side estimation is
//! switched on, which it is not, and why) is explained on
//! [`BandwidthEstimate`](crate::peer::connection::BandwidthEstimate).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::TransportError;
use crate::media::video::{
    new_decoder, new_encoder, EncoderConfig, Image, RateConfig, RateController, Scaler, VideoCodec,
    VideoDecoder, VideoEncoder, VideoError, VideoFormat, I420,
};
use crate::metrics;
use crate::peer::media::{Codec, MediaPacket, OutgoingMedia};
use crate::SmallWebRtcConnection;

/// A video source of the client, by its m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoSource {
    /// The camera (m-line 1).
    Camera,
    /// The screen share (m-line 2).
    ScreenVideo,
}

impl VideoSource {
    /// The m-line index.
    pub const fn index(self) -> usize {
        match self {
            VideoSource::Camera => 1,
            VideoSource::ScreenVideo => 2,
        }
    }

    /// Pipecat's name: `"camera"` or `"screenVideo"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            VideoSource::Camera => "camera",
            VideoSource::ScreenVideo => "screenVideo",
        }
    }

    fn off_message(self) -> &'static str {
        match self {
            VideoSource::Camera => "The peer turned off its camera video.",
            VideoSource::ScreenVideo => "The peer turned off its screen video.",
        }
    }

    fn missing_message(self) -> &'static str {
        match self {
            VideoSource::Camera => "The peer isn't sending camera video.",
            VideoSource::ScreenVideo => "The peer isn't sending screen video.",
        }
    }
}

/// Which client video to deliver, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoInSource {
    /// Camera or screen.
    pub source: VideoSource,
    /// `None`: every frame; `Some(0)`: only frames that answer [`request_image`](super::TransportInput::request_image);
    /// `Some(n)`: n frames per second.
    pub framerate: Option<u32>,
}

/// An image of the client's camera or screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserImageRawFrame {
    /// The client (its `pc_id`).
    pub user_id: String,
    /// Packed pixels in `format` (I420: the three planes one after another).
    pub image: Vec<u8>,
    /// Width and height (the client's native size).
    pub size: (u32, u32),
    /// The pixel format the bot asked for.
    pub format: VideoFormat,
    /// Where the frame sits on the stream's timeline.
    pub pts: Duration,
    /// Camera or screen.
    pub transport_source: VideoSource,
}

impl UserImageRawFrame {
    /// The frame as an [`Image`].
    pub fn to_image(&self) -> Result<Image, VideoError> {
        Image::new(self.size.0, self.size.1, self.format, self.image.clone())
    }
}

/// An image for the client; resized to the output size if it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputImageRawFrame {
    /// Packed pixels in `format`.
    pub image: Vec<u8>,
    /// Width and height.
    pub size: (u32, u32),
    /// RGB, RGBA or I420.
    pub format: VideoFormat,
}

/// Images shown in turn at the output framerate (an animation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpriteFrame {
    /// The images, in order.
    pub images: Vec<OutputImageRawFrame>,
}

/// Decoding state of one incoming video source, kept in the reader.
pub(super) struct VideoIn {
    pub(super) source: VideoSource,
    pub(super) packets: mpsc::Receiver<MediaPacket>,
    decoder: Option<(Codec, Box<dyn VideoDecoder>)>,
    framerate: Option<u32>,
    next_due: Option<Instant>,
    pub(super) pending_request: bool,
    pub(super) enabled: bool,
    last_keyframe_request: Option<Instant>,
    first_rtp: Option<u64>,
}

/// At most one keyframe request per source this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// Encoded video frames waiting for the reader.
pub(super) const VIDEO_QUEUE: usize = 30;

impl VideoIn {
    pub(super) fn new(connection: &SmallWebRtcConnection, params: VideoInSource) -> VideoIn {
        VideoIn {
            source: params.source,
            packets: connection.read_media(params.source.index(), VIDEO_QUEUE),
            decoder: None,
            framerate: params.framerate,
            next_due: None,
            pending_request: false,
            enabled: true,
            last_keyframe_request: None,
            first_rtp: None,
        }
    }

    pub(super) fn ask_keyframe(&mut self, connection: &SmallWebRtcConnection) {
        let now = Instant::now();
        if self
            .last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        self.last_keyframe_request = Some(now);
        connection.request_keyframe(self.source.index());
    }

    /// Decodes one frame; returns the image when the sampling (or a request) wants it.
    pub(super) fn decode(
        &mut self,
        connection: &SmallWebRtcConnection,
        packet: MediaPacket,
        format: VideoFormat,
    ) -> Option<UserImageRawFrame> {
        let codec = match packet.codec {
            Codec::Vp8 => VideoCodec::Vp8,
            Codec::H264 => VideoCodec::H264,
            _ => return None,
        };
        if !packet.contiguous {
            self.ask_keyframe(connection);
        }
        if self.decoder.as_ref().map(|(c, _)| *c) != Some(packet.codec) {
            match new_decoder(codec) {
                Ok(d) => self.decoder = Some((packet.codec, d)),
                Err(e) => {
                    tracing::debug!("no {codec} decoder: {e}");
                    return None;
                }
            }
        }
        let (_, decoder) = self.decoder.as_mut()?;
        let started = Instant::now();
        let decoded = decoder.decode(&packet.data);
        metrics::VIDEO_DECODE.record(started.elapsed());
        let frame = match decoded {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(VideoError::NeedKeyframe(_)) => {
                self.ask_keyframe(connection);
                return None;
            }
            Err(e) => {
                tracing::debug!("video decode failed: {e}");
                self.ask_keyframe(connection);
                return None;
            }
        };
        let now = Instant::now();
        let wanted = if self.pending_request {
            true
        } else {
            match self.framerate {
                None => true,
                Some(0) => false,
                Some(n) => match self.next_due {
                    Some(due) if now < due => false,
                    _ => {
                        let step = Duration::from_secs_f64(1.0 / f64::from(n));
                        // Stay on a fixed schedule, re-anchoring after a pause.
                        let next = self.next_due.map_or(now, |d| d + step);
                        self.next_due = Some(if next + step < now {
                            now + step
                        } else {
                            next + step
                        });
                        true
                    }
                },
            }
        };
        if !wanted {
            return None;
        }
        self.pending_request = false;
        let first = *self.first_rtp.get_or_insert(packet.rtp_time);
        let pts = Duration::from_micros(
            packet.rtp_time.saturating_sub(first) * 1_000_000 / u64::from(packet.clock_rate.max(1)),
        );
        let (width, height) = frame.size();
        let image = match frame.into_image(format) {
            Ok(image) => image,
            Err(e) => {
                tracing::debug!("video conversion failed: {e}");
                return None;
            }
        };
        Some(UserImageRawFrame {
            user_id: connection.pc_id(),
            image: image.data,
            size: (width, height),
            format,
            pts,
            transport_source: self.source,
        })
    }

    pub(super) fn off_error(&self) -> String {
        self.source.off_message().to_string()
    }

    pub(super) fn missing_error(source: VideoSource) -> String {
        source.missing_message().to_string()
    }
}

/// What the bot shows, and how it is paced.
enum Showing {
    Nothing,
    /// The latest image, repeated at the framerate.
    Still(I420),
    /// Images cycled at the framerate.
    Sprite(Vec<I420>, usize),
    /// Live frames, each sent once, paced.
    Live(std::collections::VecDeque<I420>),
}

struct VideoOutState {
    showing: Showing,
    encoder: Option<Box<dyn VideoEncoder>>,
    scaler: Scaler,
    force_keyframe: bool,
    connected: bool,
    closed: bool,
    frames: u64,
    /// The encoder's target bitrate, following the client's estimate.
    rate: RateController,
}

/// The bot's video: scaled, encoded and paced at `video_out_framerate`.
pub(super) struct VideoOut {
    state: Mutex<VideoOutState>,
    connection: SmallWebRtcConnection,
    width: u32,
    height: u32,
    framerate: u32,
    /// libvpx's VP8 speed level for every encoder this output makes.
    vp8_speed: u8,
    live: bool,
}

impl std::fmt::Debug for VideoOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoOut")
            .field("size", &(self.width, self.height))
            .field("framerate", &self.framerate)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// Live frames waiting to be sent; older ones are dropped (the bot is ahead).
const LIVE_QUEUE: usize = 2;

impl VideoOut {
    pub(super) fn new(
        connection: &SmallWebRtcConnection,
        width: u32,
        height: u32,
        framerate: u32,
        live: bool,
        (start_kbps, min_kbps, max_kbps): (u32, u32, u32),
        vp8_speed: u8,
    ) -> Result<Arc<VideoOut>, TransportError> {
        // Checked now, so a bad speed is the bot's error at start-up, not a silent encoder
        // failure at its first frame.
        EncoderConfig {
            vp8_speed,
            ..EncoderConfig::default()
        }
        .validate()?;
        let rate = RateController::new(RateConfig {
            start_kbps,
            min_kbps,
            max_kbps,
            ..RateConfig::default()
        })?;
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            return Err(TransportError::Video(VideoError::OddI420Size {
                width,
                height,
            }));
        }
        // The estimator (when the server runs one) should look for room up to our ceiling.
        connection.set_video_bitrate_bounds(u64::from(min_kbps) * 1000, u64::from(max_kbps) * 1000);
        let out = Arc::new(VideoOut {
            state: Mutex::new(VideoOutState {
                showing: Showing::Nothing,
                encoder: None,
                scaler: Scaler::new(),
                force_keyframe: true,
                connected: false,
                closed: false,
                frames: 0,
                rate,
            }),
            connection: connection.clone(),
            width,
            height,
            framerate: framerate.clamp(1, 120),
            vp8_speed,
            live,
        });
        tokio::spawn(clock(Arc::downgrade(&out)));
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, VideoOutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn prepare(
        &self,
        state: &mut VideoOutState,
        frame: OutputImageRawFrame,
    ) -> Result<I420, TransportError> {
        let image = Image::new(frame.size.0, frame.size.1, frame.format, frame.image)?;
        let image = if image.size() != (self.width, self.height) {
            state.scaler.resize(image, self.width, self.height)?
        } else {
            image
        };
        Ok(image.into_i420()?)
    }

    pub(super) fn send_image(&self, frame: OutputImageRawFrame) -> Result<(), TransportError> {
        let mut state = self.lock();
        if state.closed {
            return Err(TransportError::Closed);
        }
        let i420 = self.prepare(&mut state, frame)?;
        if self.live {
            if let Showing::Live(queue) = &mut state.showing {
                if queue.len() >= LIVE_QUEUE {
                    queue.pop_front();
                }
                queue.push_back(i420);
            } else {
                state.showing = Showing::Live([i420].into());
            }
        } else {
            state.showing = Showing::Still(i420);
        }
        Ok(())
    }

    pub(super) fn send_sprite(&self, sprite: SpriteFrame) -> Result<(), TransportError> {
        let mut state = self.lock();
        if state.closed {
            return Err(TransportError::Closed);
        }
        let mut images = Vec::with_capacity(sprite.images.len());
        for frame in sprite.images {
            images.push(self.prepare(&mut state, frame)?);
        }
        state.showing = if images.is_empty() {
            Showing::Nothing
        } else {
            Showing::Sprite(images, 0)
        };
        Ok(())
    }

    pub(super) fn set_connected(&self, connected: bool) {
        let mut state = self.lock();
        if connected && !state.connected {
            state.force_keyframe = true;
        }
        state.connected = connected;
    }

    pub(super) fn request_keyframe(&self) {
        self.lock().force_keyframe = true;
    }

    pub(super) fn bitrate(&self) -> u32 {
        self.lock().rate.target()
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
    }

    fn codec(&self) -> Option<(VideoCodec, Codec)> {
        let names = self.connection.negotiated_codecs(1);
        names.iter().find_map(|n| match n.as_str() {
            "VP8" => Some((VideoCodec::Vp8, Codec::Vp8)),
            "H264" if VideoCodec::H264.is_available() => Some((VideoCodec::H264, Codec::H264)),
            _ => None,
        })
    }

    /// One tick of the clock: encode and send what is showing.
    fn tick(&self, due: Instant) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if !state.connected {
            return;
        }
        // The frame is encoded where it lies: a 640×480 picture is 460 kB, and copying it at
        // every tick was a measurable share of a video session's CPU.
        let popped;
        let frame = match &mut state.showing {
            Showing::Nothing => return,
            Showing::Still(image) => &*image,
            Showing::Sprite(images, i) => {
                let current = *i % images.len();
                *i = (current + 1) % images.len();
                &images[current]
            }
            Showing::Live(queue) => match queue.pop_front() {
                Some(image) => {
                    popped = image;
                    &popped
                }
                None => return,
            },
        };
        let Some((codec, wire)) = self.codec() else {
            return;
        };
        if state.encoder.as_ref().map(|e| e.codec()) != Some(codec) {
            let config = EncoderConfig {
                bitrate_kbps: state.rate.target(),
                framerate: self.framerate,
                vp8_speed: self.vp8_speed,
                ..EncoderConfig::default()
            };
            match new_encoder(codec, config) {
                Ok(e) => {
                    state.encoder = Some(e);
                    state.force_keyframe = true;
                }
                Err(e) => {
                    tracing::warn!("no {codec} encoder: {e}");
                    return;
                }
            }
        }
        let estimate = self.connection.bandwidth_estimate().bitrate_bps();
        if let Some(kbps) = state.rate.update(due, estimate) {
            if let Some(encoder) = state.encoder.as_mut() {
                match encoder.set_bitrate(kbps) {
                    Ok(()) => tracing::debug!(kbps, "video bitrate follows the estimate"),
                    Err(e) => tracing::debug!("video bitrate change refused: {e}"),
                }
            }
        }
        let pts = state.frames * 90_000 / u64::from(self.framerate);
        state.frames += 1;
        let keyframe = std::mem::take(&mut state.force_keyframe);
        let Some(encoder) = state.encoder.as_mut() else {
            return;
        };
        let started = Instant::now();
        let encoded = encoder.encode(frame, pts, keyframe);
        metrics::VIDEO_ENCODE.record(started.elapsed());
        match encoded {
            Ok(frames) => {
                for f in frames {
                    self.connection.write_media(OutgoingMedia {
                        index: 1,
                        codec: wire,
                        rtp_time: pts,
                        wallclock: due,
                        data: f.data,
                    });
                }
            }
            Err(e) => tracing::debug!("video encode failed: {e}"),
        }
    }
}

/// The video clock: one frame every 1/framerate, on a fixed schedule.
async fn clock(out: std::sync::Weak<VideoOut>) {
    let Some(first) = out.upgrade() else {
        return;
    };
    let step = Duration::from_secs_f64(1.0 / f64::from(first.framerate));
    drop(first);
    let mut ticker = tokio::time::interval(step);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let due = ticker.tick().await;
        let Some(out) = out.upgrade() else {
            return;
        };
        if out.lock().closed {
            return;
        }
        out.tick(due.into_std());
    }
}
