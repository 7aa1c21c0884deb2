//! The video media layer: VP8 and H.264 in and out, colour conversion and scaling.
//!
//! Everything here is sans-IO: no sockets, no sleeping, no tasks. Frames go in, frames come out.
//!
//! # Receive path (client camera or screen to bot)
//!
//! ```text
//! depacketized VP8 frame ──► Vp8Decoder  ──┐
//! Annex-B H.264 access unit ► H264Decoder ──┴─► I420 (native size) ──► I420::into_image(Rgb) ──► Image
//! ```
//!
//! Pipecat hands the pipeline packed RGB24 at the frame's native size (§5.3 of the protocol
//! notes), so [`I420::into_image`] with [`VideoFormat::Rgb`] is the usual last step. Asking for
//! [`VideoFormat::I420`] skips the conversion and moves the planes as they are.
//!
//! # Send path (bot to client)
//!
//! ```text
//! Image (RGB, RGBA or I420, any size) ──► Scaler (only if the size differs) ──► Image::into_i420
//!     ──► Vp8Encoder / H264Encoder ──► EncodedFrame { data, keyframe } ──► RTP (str0m)
//! ```
//!
//! The encoder's target bitrate follows the client's bandwidth estimate within bounds, changed
//! live (no keyframe) at most every 500 ms by a [`RateController`].
//!
//! Pipecat resizes every output image to `video_out_width × video_out_height` (1024×768 by
//! default) when its size differs (§5.5); [`Scaler::resize`] does the same with a SIMD
//! Catmull-Rom filter, PIL's default `BICUBIC`, and returns the image untouched when the size
//! already matches. Encoders run with real-time settings: constant bitrate, no look-ahead, one
//! frame out per frame in, keyframes on demand (a PLI or FIR from the client) and otherwise
//! rarely.
//!
//! ```
//! use smallwebrtc::media::video::{
//!     max_channel_difference, quadrant_colors, quadrants, EncoderConfig, Scaler, VideoFormat,
//!     Vp8Decoder, Vp8Encoder, QUADRANT_COLORS,
//! };
//!
//! // Send: a 640×480 bot image, scaled to Pipecat's 1024×768 output size, encoded.
//! let mut scaler = Scaler::new();
//! let image = scaler.resize(quadrants(640, 480), 1024, 768)?;
//! let mut encoder = Vp8Encoder::new(EncoderConfig::default())?;
//! let frames = encoder.encode(&image.into_i420()?, 0, false)?;
//! assert_eq!(frames.len(), 1);
//! assert!(frames[0].keyframe); // the first frame always is
//!
//! // Receive: decode it and hand the pipeline RGB at the native size.
//! let mut decoder = Vp8Decoder::new()?;
//! let picture = decoder.decode(&frames[0].data)?.expect("a shown frame");
//! let rgb = picture.into_image(VideoFormat::Rgb)?;
//! assert_eq!((rgb.width, rgb.height), (1024, 768));
//! assert!(max_channel_difference(&quadrant_colors(&rgb), &QUADRANT_COLORS) <= 20);
//! # Ok::<(), smallwebrtc::media::video::VideoError>(())
//! ```
#![warn(missing_docs)]

mod convert;
#[cfg(feature = "h264")]
mod h264;
mod image;
mod nal;
mod rate;
mod scale;
mod testing;
mod vp8;

use std::fmt;

#[cfg(feature = "h264")]
pub use h264::{H264Decoder, H264Encoder};
pub use image::{Image, VideoFormat, I420};
pub use nal::{h264_is_keyframe, h264_nal_type, h264_nal_units};
pub use rate::{RateConfig, RateController};
pub use scale::Scaler;
pub use testing::{max_channel_difference, quadrant_colors, quadrants, QUADRANT_COLORS};
pub use vp8::{vp8_is_keyframe, vp8_keyframe_size, Vp8Decoder, Vp8Encoder};

/// The RTP clock rate of every video codec (RFC 7741 for VP8, RFC 6184 for H.264). Encoder
/// timestamps (`pts`) are in ticks of this clock.
pub const VIDEO_RTP_CLOCK_RATE: u32 = 90_000;

/// The largest width or height accepted anywhere in this module: images, frames, encoders and
/// decoded pictures. Larger sizes are rejected before any memory is allocated for them.
pub const MAX_DIMENSION: u32 = 8_192;

/// The largest encoded frame a decoder accepts: 16 MiB, far above any real frame.
pub const MAX_ENCODED_FRAME_BYTES: usize = 16 << 20;

/// The lowest bitrate an encoder accepts, in kbit/s.
pub const MIN_BITRATE_KBPS: u32 = 10;

/// The highest bitrate an encoder accepts, in kbit/s.
pub const MAX_BITRATE_KBPS: u32 = 100_000;

/// The fastest of libvpx's fixed real-time VP8 speed levels, and the default
/// ([`EncoderConfig::vp8_speed`]).
///
/// In libvpx's real-time mode a *negative* `cpu-used` pins the speed level at its magnitude;
/// a positive one is a CPU budget instead ((16 − n)/16 of the frame time), and the encoder
/// slows its search down until a frame takes about that long (at 12, ~4.5 ms of a 640×480
/// frame's 33 ms, however many sessions share the machine). So the level is always pinned.
/// Level 16 with [`DEFAULT_VP8_STATIC_THRESHOLD`] takes 1.5–1.7 ms per 640×480
/// frame at 46.2 dB luma PSNR on the benchmark's camera scene, where level 12 with a threshold
/// of 1000 took 2.7–3.0 ms at 46.3 dB (`cargo bench --bench video -- vp8 640`): a server
/// encodes for many sessions.
pub const MAX_VP8_SPEED: u8 = 16;

/// The default [`EncoderConfig::vp8_static_threshold`].
///
/// Macroblocks whose luma differs from the previous frame by less than this sum of squared
/// differences are coded as skipped (libvpx's `VP8E_SET_STATIC_THRESHOLD`, its encode breakout;
/// 1 is off in effect). A camera's sensor noise (about ±3 levels) otherwise makes every static
/// macroblock look changed and re-codes it every frame. At 1500 (an RMS difference under 2.5
/// levels per pixel) a still background's noise is skipped and its bits go to what moves: on
/// the benchmark scene, at speed 16, 46.2 dB against 45.7 dB at 1000, and 30 % less encoder
/// time; at 2000 rate control starves (45 dB). The price: a slow fade over a still area moves
/// in steps of up to 3 levels instead of 2.
pub const DEFAULT_VP8_STATIC_THRESHOLD: u32 = 1500;

/// Pipecat's default output size, `video_out_width × video_out_height`.
pub const DEFAULT_OUTPUT_SIZE: (u32, u32) = (1024, 768);

/// Everything that can go wrong in the video layer. No function in this module panics on bad
/// input: it returns one of these instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// A format name that is not RGB, RGBA, I420 or YUV420.
    #[error("unknown video format {0:?}: expected \"RGB\", \"RGBA\", \"I420\" or \"YUV420\"")]
    UnknownFormat(String),
    /// A width or height of zero, or above [`MAX_DIMENSION`].
    #[error("invalid video size {width}x{height}: width and height must be 1..=8192")]
    InvalidSize {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
    },
    /// An I420 [`Image`] must have an even width and height (its chroma planes are exactly half
    /// size). The planar [`I420`] frame type has no such limit.
    #[error("I420 image of {width}x{height} needs an even width and height")]
    OddI420Size {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
    },
    /// The pixel data does not have the length the size and format call for.
    #[error(
        "{format} image of {width}x{height} needs {expected} bytes of pixel data, got {actual}"
    )]
    WrongDataLength {
        /// The format of the image.
        format: VideoFormat,
        /// The width of the image.
        width: u32,
        /// The height of the image.
        height: u32,
        /// The byte length the size and format call for.
        expected: usize,
        /// The byte length given.
        actual: usize,
    },
    /// A plane given to [`I420::from_planes`] is too short for its size and stride, or its
    /// stride is narrower than the plane.
    #[error("{plane} plane too short or stride too narrow for {width}x{height}")]
    InvalidPlane {
        /// "Y", "U" or "V".
        plane: &'static str,
        /// The width of the frame.
        width: u32,
        /// The height of the frame.
        height: u32,
    },
    /// A bitrate outside [`MIN_BITRATE_KBPS`]..=[`MAX_BITRATE_KBPS`].
    #[error("invalid bitrate {0} kbit/s: expected 10..=100000")]
    InvalidBitrate(u32),
    /// Bitrate bounds with the minimum above the maximum (or [`RateConfig`] factors out of
    /// range).
    #[error(
        "invalid video bitrate bounds {min}..={max} kbit/s: the minimum must not exceed the maximum"
    )]
    InvalidBitrateRange {
        /// The minimum given, in kbit/s.
        min: u32,
        /// The maximum given, in kbit/s.
        max: u32,
    },
    /// A frame rate outside 1..=240.
    #[error("invalid frame rate {0} fps: expected 1..=240")]
    InvalidFrameRate(u32),
    /// A VP8 speed level outside 1..=[`MAX_VP8_SPEED`].
    #[error("invalid VP8 speed {0}: expected 1..=16 (16 is the fastest)")]
    InvalidVp8Speed(u8),
    /// An empty encoded frame was given to a decoder.
    #[error("empty encoded frame")]
    EmptyFrame,
    /// An encoded frame larger than [`MAX_ENCODED_FRAME_BYTES`].
    #[error("encoded frame of {0} bytes is larger than 16 MiB")]
    FrameTooLarge(usize),
    /// The encoded frame is not a valid frame of its codec (for VP8: a bad frame tag or
    /// keyframe start code, found before the decoder sees it).
    #[error("invalid {codec} frame: {reason}")]
    InvalidFrame {
        /// The codec.
        codec: VideoCodec,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A delta frame arrived while the decoder has no good reference: before the first
    /// keyframe, or after a frame failed to decode. Ask the sender for a keyframe (RTCP PLI)
    /// and drop frames until one comes.
    #[error("{0} decoder needs a keyframe")]
    NeedKeyframe(VideoCodec),
    /// The codec was left out of this build (H.264 needs the `h264` cargo feature).
    #[error("{0} is not available: this build has no `h264` cargo feature")]
    CodecUnavailable(VideoCodec),
    /// libvpx returned an error.
    #[error("libvpx {function} failed: {message}")]
    Vpx {
        /// The libvpx function that failed.
        function: &'static str,
        /// libvpx's description of the error.
        message: String,
    },
    /// OpenH264 returned an error.
    #[error("OpenH264 {function} failed: {message}")]
    OpenH264 {
        /// What was being done.
        function: &'static str,
        /// OpenH264's description of the error.
        message: String,
    },
    /// The colour converter or the scaler rejected its input (a bug if it happens: sizes are
    /// checked before).
    #[error("{0}")]
    Processing(String),
}

/// A video codec negotiated with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8 (RFC 6386), through libvpx.
    Vp8,
    /// H.264 Constrained Baseline (RFC 6184 packetization mode 1), through OpenH264.
    H264,
}

impl VideoCodec {
    /// The codec's name as SDP writes it: "VP8" or "H264".
    pub const fn as_str(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }

    /// Whether this build can encode and decode the codec: always for VP8, with the `h264`
    /// feature for H.264.
    ///
    /// ```
    /// use smallwebrtc::media::video::VideoCodec;
    /// assert!(VideoCodec::Vp8.is_available());
    /// assert_eq!(VideoCodec::H264.is_available(), cfg!(feature = "h264"));
    /// ```
    pub const fn is_available(self) -> bool {
        match self {
            VideoCodec::Vp8 => true,
            VideoCodec::H264 => cfg!(feature = "h264"),
        }
    }
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One encoded frame: a whole VP8 frame, or a whole H.264 access unit in Annex-B form (each NAL
/// unit after a `00 00 00 01` start code). The RTP packetizer cuts it up.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The encoded bytes.
    pub data: Vec<u8>,
    /// Whether the frame can be decoded on its own: a VP8 keyframe, or an H.264 IDR access unit
    /// (which then also carries the SPS and PPS).
    pub keyframe: bool,
}

impl fmt::Debug for EncodedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedFrame")
            .field("len", &self.data.len())
            .field("keyframe", &self.keyframe)
            .finish()
    }
}

/// Encoder settings shared by VP8 and H.264.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// The target bitrate in kbit/s, [`MIN_BITRATE_KBPS`]..=[`MAX_BITRATE_KBPS`]. Default
    /// 1000, plenty for 1024×768 bot video; change it at run time with `set_bitrate`.
    pub bitrate_kbps: u32,
    /// The expected frame rate, 1..=240, used by rate control until real timestamps take over.
    /// Default 30, Pipecat's `video_out_framerate`.
    pub framerate: u32,
    /// A keyframe at least every this many frames; 0 means only on demand (and at the start and
    /// after a size change). Default 3000, 100 s at 30 fps: keyframes are big, and WebRTC
    /// clients ask for one (PLI) when they need it.
    pub keyframe_interval: u32,
    /// Encoder threads, 1..=16. Default 1: one session's bot video at 1024×768 takes a few
    /// milliseconds per frame, and many sessions share the cores.
    pub threads: u32,
    /// libvpx's VP8 real-time speed level, 1..=[`MAX_VP8_SPEED`]. Default 16, the fastest;
    /// lower levels search harder, for a little more quality at more CPU per frame. H.264
    /// ignores it.
    pub vp8_speed: u8,
    /// VP8 macroblocks that changed less than this (sum of squared luma differences) are
    /// skipped. Default [`DEFAULT_VP8_STATIC_THRESHOLD`]; 1 codes every change, as WebRTC
    /// does for cameras behind a denoiser. H.264 ignores it.
    pub vp8_static_threshold: u32,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            bitrate_kbps: 1_000,
            framerate: 30,
            keyframe_interval: 3_000,
            threads: 1,
            vp8_speed: MAX_VP8_SPEED,
            vp8_static_threshold: DEFAULT_VP8_STATIC_THRESHOLD,
        }
    }
}

impl EncoderConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidBitrate`], [`VideoError::InvalidFrameRate`] or
    /// [`VideoError::InvalidVp8Speed`]. The thread count is clamped to 1..=16 rather than
    /// refused.
    pub fn validate(&self) -> Result<(), VideoError> {
        check_bitrate(self.bitrate_kbps)?;
        if !(1..=240).contains(&self.framerate) {
            return Err(VideoError::InvalidFrameRate(self.framerate));
        }
        if !(1..=MAX_VP8_SPEED).contains(&self.vp8_speed) {
            return Err(VideoError::InvalidVp8Speed(self.vp8_speed));
        }
        Ok(())
    }

    fn clamped_threads(&self) -> u32 {
        self.threads.clamp(1, 16)
    }
}

/// A video encoder: [`Vp8Encoder`] or `H264Encoder`, behind one interface for the transport.
pub trait VideoEncoder: Send {
    /// The codec this encoder produces.
    fn codec(&self) -> VideoCodec;

    /// Encodes one frame. `pts` is its presentation time in ticks of the 90 kHz RTP clock
    /// ([`VIDEO_RTP_CLOCK_RATE`]); it should increase from frame to frame (a timestamp that does
    /// not is treated as one tick after the previous one). With `force_keyframe` the frame is
    /// encoded as a keyframe (answer to a PLI or FIR).
    ///
    /// A size change from one frame to the next restarts the encoder, and the next frame is a
    /// keyframe. Returns the encoded frames: one per call with these settings, possibly none if
    /// the encoder chose to drop the frame.
    ///
    /// # Errors
    ///
    /// [`VideoError::Vpx`] or [`VideoError::OpenH264`] if the codec library fails.
    fn encode(
        &mut self,
        frame: &I420,
        pts: u64,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VideoError>;

    /// Changes the target bitrate, in kbit/s, from the next frame on (no keyframe).
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidBitrate`] outside [`MIN_BITRATE_KBPS`]..=[`MAX_BITRATE_KBPS`], or a
    /// codec library error.
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError>;

    /// The current target bitrate in kbit/s.
    fn bitrate(&self) -> u32;
}

/// A video decoder: [`Vp8Decoder`] or `H264Decoder`, behind one interface for the transport.
pub trait VideoDecoder: Send {
    /// The codec this decoder reads.
    fn codec(&self) -> VideoCodec;

    /// Decodes one whole encoded frame (a VP8 frame, or an Annex-B H.264 access unit) into a
    /// picture at its native size, or `None` if the frame shows nothing (an H.264 parameter-set
    /// only unit, a hidden VP8 frame).
    ///
    /// # Errors
    ///
    /// [`VideoError::EmptyFrame`], [`VideoError::FrameTooLarge`], [`VideoError::InvalidFrame`],
    /// [`VideoError::InvalidSize`] (a picture larger than [`MAX_DIMENSION`]),
    /// [`VideoError::NeedKeyframe`], or the codec library's error. After an error the decoder
    /// waits for a keyframe; it never panics, whatever the bytes.
    fn decode(&mut self, data: &[u8]) -> Result<Option<I420>, VideoError>;
}

/// An encoder for `codec`.
///
/// # Errors
///
/// [`VideoError::CodecUnavailable`] for H.264 in a build without the `h264` feature, or the
/// encoder's own errors.
///
/// ```
/// use smallwebrtc::media::video::{new_encoder, EncoderConfig, VideoCodec, I420};
/// let mut encoder = new_encoder(VideoCodec::Vp8, EncoderConfig::default())?;
/// let frames = encoder.encode(&I420::black(320, 240)?, 0, false)?;
/// assert!(frames[0].keyframe);
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
pub fn new_encoder(
    codec: VideoCodec,
    config: EncoderConfig,
) -> Result<Box<dyn VideoEncoder>, VideoError> {
    match codec {
        VideoCodec::Vp8 => Ok(Box::new(Vp8Encoder::new(config)?)),
        #[cfg(feature = "h264")]
        VideoCodec::H264 => Ok(Box::new(H264Encoder::new(config)?)),
        #[cfg(not(feature = "h264"))]
        VideoCodec::H264 => {
            let _ = config;
            Err(VideoError::CodecUnavailable(codec))
        }
    }
}

/// A decoder for `codec`.
///
/// # Errors
///
/// [`VideoError::CodecUnavailable`] for H.264 in a build without the `h264` feature, or the
/// decoder's own errors.
pub fn new_decoder(codec: VideoCodec) -> Result<Box<dyn VideoDecoder>, VideoError> {
    match codec {
        VideoCodec::Vp8 => Ok(Box::new(Vp8Decoder::new()?)),
        #[cfg(feature = "h264")]
        VideoCodec::H264 => Ok(Box::new(H264Decoder::new()?)),
        #[cfg(not(feature = "h264"))]
        VideoCodec::H264 => Err(VideoError::CodecUnavailable(codec)),
    }
}

/// Checks a bitrate in kbit/s.
fn check_bitrate(kbps: u32) -> Result<u32, VideoError> {
    if (MIN_BITRATE_KBPS..=MAX_BITRATE_KBPS).contains(&kbps) {
        Ok(kbps)
    } else {
        Err(VideoError::InvalidBitrate(kbps))
    }
}

/// Checks a frame or image size: both sides 1..=[`MAX_DIMENSION`].
fn check_size(width: u32, height: u32) -> Result<(), VideoError> {
    if (1..=MAX_DIMENSION).contains(&width) && (1..=MAX_DIMENSION).contains(&height) {
        Ok(())
    } else {
        Err(VideoError::InvalidSize { width, height })
    }
}

/// Checks an encoded frame before it reaches a decoder.
fn check_encoded(data: &[u8]) -> Result<(), VideoError> {
    if data.is_empty() {
        Err(VideoError::EmptyFrame)
    } else if data.len() > MAX_ENCODED_FRAME_BYTES {
        Err(VideoError::FrameTooLarge(data.len()))
    } else {
        Ok(())
    }
}

/// The duration since the previous frame, in 90 kHz ticks, for rate control: the gap between
/// the timestamps when it is sane (1 tick to 1 s), else one frame interval.
fn frame_duration(previous: Option<u64>, pts: u64, framerate: u32) -> u64 {
    let nominal = u64::from(VIDEO_RTP_CLOCK_RATE / framerate.max(1)).max(1);
    match previous {
        Some(prev) if pts > prev && pts - prev <= u64::from(VIDEO_RTP_CLOCK_RATE) => pts - prev,
        _ => nominal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert_eq!(EncoderConfig::default().validate(), Ok(()));
        let bad = EncoderConfig {
            bitrate_kbps: 0,
            ..EncoderConfig::default()
        };
        assert_eq!(bad.validate(), Err(VideoError::InvalidBitrate(0)));
        let bad = EncoderConfig {
            framerate: 0,
            ..EncoderConfig::default()
        };
        assert_eq!(bad.validate(), Err(VideoError::InvalidFrameRate(0)));
        for speed in [0, MAX_VP8_SPEED + 1] {
            let bad = EncoderConfig {
                vp8_speed: speed,
                ..EncoderConfig::default()
            };
            let err = bad.validate().unwrap_err();
            assert_eq!(err, VideoError::InvalidVp8Speed(speed));
            assert!(err.to_string().contains("VP8 speed"), "{err}");
        }
        let many = EncoderConfig {
            threads: 1000,
            ..EncoderConfig::default()
        };
        assert_eq!(many.clamped_threads(), 16);
    }

    #[test]
    fn durations() {
        assert_eq!(frame_duration(None, 0, 30), 3000);
        assert_eq!(frame_duration(Some(0), 1500, 30), 1500);
        assert_eq!(frame_duration(Some(5000), 5000, 30), 3000);
        assert_eq!(frame_duration(Some(5000), 10, 25), 3600);
        assert_eq!(frame_duration(Some(0), 1_000_000, 30), 3000);
        assert_eq!(frame_duration(None, 0, 0), 90_000);
    }

    #[test]
    fn sizes_and_frames_are_checked() {
        assert_eq!(check_size(1, 1), Ok(()));
        assert_eq!(check_size(8192, 8192), Ok(()));
        assert!(check_size(0, 10).is_err());
        assert!(check_size(10, 8193).is_err());
        assert_eq!(check_encoded(&[]), Err(VideoError::EmptyFrame));
        assert_eq!(check_encoded(&[1]), Ok(()));
    }

    #[test]
    fn codecs() {
        assert_eq!(VideoCodec::Vp8.to_string(), "VP8");
        assert_eq!(VideoCodec::H264.to_string(), "H264");
        assert!(new_decoder(VideoCodec::Vp8).is_ok());
        match new_decoder(VideoCodec::H264) {
            Ok(decoder) => assert_eq!(decoder.codec(), VideoCodec::H264),
            Err(err) => assert_eq!(err, VideoError::CodecUnavailable(VideoCodec::H264)),
        }
    }

    #[test]
    fn encoded_frame_debug_hides_bytes() {
        let frame = EncodedFrame {
            data: vec![0; 1000],
            keyframe: true,
        };
        assert_eq!(
            format!("{frame:?}"),
            "EncodedFrame { len: 1000, keyframe: true }"
        );
    }
}
