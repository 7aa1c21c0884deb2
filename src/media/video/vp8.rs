//! VP8 encoding and decoding over the system's libvpx (`env-libvpx-sys` bindings), with a thin
//! safe wrapper written here.
//!
//! The encoder runs libvpx's real-time path: constant bitrate, no look-ahead
//! (`g_lag_in_frames = 0`), the realtime deadline, a fixed fast speed level, skipped static
//! macroblocks, error-resilient mode, one token partition, and no dropped frames, so every frame
//! in gives one frame out at once.
//! Keyframes come at the start, after a size change, on demand, and otherwise only every
//! [`EncoderConfig::keyframe_interval`] frames.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint, c_ulong};
use std::ptr;

use vpx_sys as vpx;

use super::{
    check_bitrate, check_encoded, check_size, frame_duration, EncodedFrame, EncoderConfig,
    VideoCodec, VideoDecoder, VideoEncoder, VideoError, I420, MAX_DIMENSION, VIDEO_RTP_CLOCK_RATE,
};

/// The quantizer range WebRTC uses for VP8 (of 0..=63).
const MIN_QUANTIZER: c_uint = 2;
const MAX_QUANTIZER: c_uint = 56;
/// Rate-control buffer, in milliseconds of the target bitrate.
const BUFFER_INITIAL_MS: c_uint = 500;
const BUFFER_OPTIMAL_MS: c_uint = 600;
const BUFFER_MS: c_uint = 1000;
/// `kf_max_dist` when automatic keyframes are off (`keyframe_interval == 0`): never reached.
const NO_AUTO_KEYFRAME: c_uint = 1 << 30;

/// The result of reading a VP8 frame's uncompressed header (RFC 6386 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    keyframe: bool,
    /// Width and height, for keyframes.
    size: Option<(u32, u32)>,
}

/// Reads the frame tag, and for keyframes the start code and size, without decoding anything.
fn parse_header(data: &[u8]) -> Result<FrameHeader, &'static str> {
    let [b0, b1, b2, ..] = *data else {
        return Err("shorter than the 3-byte frame tag");
    };
    let tag = u32::from(b0) | u32::from(b1) << 8 | u32::from(b2) << 16;
    let keyframe = tag & 1 == 0;
    let version = (tag >> 1) & 7;
    let first_partition = (tag >> 5) as usize;
    if version > 3 {
        return Err("unknown version in the frame tag");
    }
    if !keyframe {
        if 3 + first_partition > data.len() {
            return Err("first partition runs past the end of the frame");
        }
        return Ok(FrameHeader {
            keyframe,
            size: None,
        });
    }
    let Some(&[_, _, _, s0, s1, s2, w0, w1, h0, h1]) = data.first_chunk::<10>() else {
        return Err("keyframe shorter than its 10-byte header");
    };
    if [s0, s1, s2] != [0x9d, 0x01, 0x2a] {
        return Err("keyframe without the 9d 01 2a start code");
    }
    if 10 + first_partition > data.len() {
        return Err("first partition runs past the end of the frame");
    }
    // The top two bits of each are the upscaling mode, which does not change the coded size.
    let width = u32::from(u16::from_le_bytes([w0, w1]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h0, h1]) & 0x3fff);
    if width == 0 || height == 0 {
        return Err("keyframe with a zero width or height");
    }
    Ok(FrameHeader {
        keyframe,
        size: Some((width, height)),
    })
}

/// Whether a whole VP8 frame (as depacketized from RTP) is a keyframe, read from its header.
/// Garbage gives `false`.
///
/// ```
/// use smallwebrtc::media::video::vp8_is_keyframe;
/// assert!(!vp8_is_keyframe(&[]));
/// assert!(!vp8_is_keyframe(&[0x31, 0x00, 0x00])); // a delta frame's tag
/// ```
pub fn vp8_is_keyframe(data: &[u8]) -> bool {
    parse_header(data).is_ok_and(|header| header.keyframe)
}

/// The width and height a VP8 keyframe declares, read from its header; `None` for delta frames
/// and garbage.
pub fn vp8_keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    parse_header(data).ok().and_then(|header| header.size)
}

/// A libvpx error as a [`VideoError`], with the context's detail when there is one.
fn vpx_error(
    function: &'static str,
    err: vpx::vpx_codec_err_t,
    ctx: Option<&mut vpx::vpx_codec_ctx_t>,
) -> VideoError {
    // SAFETY: libvpx returns static or context-owned NUL-terminated strings (or null).
    let text = |s: *const c_char| unsafe {
        (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
    };
    let mut message = text(unsafe { vpx::vpx_codec_err_to_string(err) })
        .unwrap_or_else(|| format!("error {}", err as c_int));
    if let Some(ctx) = ctx {
        // SAFETY: `ctx` is an initialised context (or zeroed, for which libvpx returns null).
        if let Some(detail) = text(unsafe { vpx::vpx_codec_error_detail(ctx) }) {
            message.push_str(": ");
            message.push_str(&detail);
        }
    }
    VideoError::Vpx { function, message }
}

fn check(
    function: &'static str,
    err: vpx::vpx_codec_err_t,
    ctx: &mut vpx::vpx_codec_ctx_t,
) -> Result<(), VideoError> {
    if err == vpx::vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(vpx_error(function, err, Some(ctx)))
    }
}

/// An all-zero codec context, as libvpx wants it before init.
fn zeroed_context() -> Box<vpx::vpx_codec_ctx_t> {
    // SAFETY: vpx_codec_ctx_t is a plain C struct of pointers, integers, a union of pointers and
    // an enum whose zero is VPX_CODEC_OK; all-zero is its documented pre-init state.
    Box::new(unsafe { std::mem::zeroed() })
}

/// An initialised libvpx encoder for one frame size.
struct EncoderContext {
    /// Boxed so its address is stable: libvpx keeps pointers to it and to `cfg`.
    ctx: Box<vpx::vpx_codec_ctx_t>,
    cfg: Box<vpx::vpx_codec_enc_cfg_t>,
    width: u32,
    height: u32,
}

impl EncoderContext {
    fn new(config: &EncoderConfig, width: u32, height: u32) -> Result<Self, VideoError> {
        // SAFETY: vpx_codec_vp8_cx returns a static interface.
        let iface = unsafe { vpx::vpx_codec_vp8_cx() };
        // The configuration holds C enums without a zero value: let libvpx fill it in.
        let mut cfg = Box::<vpx::vpx_codec_enc_cfg_t>::new_uninit();
        // SAFETY: vpx_codec_enc_config_default writes the whole structure.
        let err = unsafe { vpx::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0) };
        if err != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(vpx_error("vpx_codec_enc_config_default", err, None));
        }
        // SAFETY: initialised by the successful call above.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_threads = config.clamped_threads();
        cfg.g_timebase = vpx::vpx_rational {
            num: 1,
            den: VIDEO_RTP_CLOCK_RATE as c_int,
        };
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_lag_in_frames = 0;
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = config.bitrate_kbps;
        cfg.rc_min_quantizer = MIN_QUANTIZER;
        cfg.rc_max_quantizer = MAX_QUANTIZER;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = BUFFER_INITIAL_MS;
        cfg.rc_buf_optimal_sz = BUFFER_OPTIMAL_MS;
        cfg.rc_buf_sz = BUFFER_MS;
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = match config.keyframe_interval {
            0 => NO_AUTO_KEYFRAME,
            n => n,
        };

        let mut ctx = zeroed_context();
        // SAFETY: `ctx` is zeroed and `cfg` filled in; both are boxed and outlive the context
        // (Drop destroys the context first).
        let err = unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                iface,
                &*cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if err != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            // Nothing to destroy: init failed.
            return Err(vpx_error("vpx_codec_enc_init", err, Some(&mut ctx)));
        }
        let mut this = EncoderContext {
            ctx,
            cfg,
            width,
            height,
        };
        // Key frames may be at most this many times the size of an average frame: half the
        // optimal buffer, in frames.
        let max_intra_pct = BUFFER_OPTIMAL_MS / 2 * config.framerate / 10;
        for (id, value) in [
            (
                vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED,
                // Negative: a fixed speed level, not a CPU budget (see `MAX_VP8_SPEED`).
                -c_int::from(config.vp8_speed),
            ),
            (
                vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD,
                c_int::try_from(config.vp8_static_threshold).unwrap_or(c_int::MAX),
            ),
            (vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0),
            (
                vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS,
                vpx::vp8e_token_partitions::VP8_ONE_TOKENPARTITION as c_int,
            ),
            (
                vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT,
                max_intra_pct.max(300) as c_int,
            ),
        ] {
            // SAFETY: each of these controls takes one int argument.
            let err = unsafe { vpx::vpx_codec_control_(&mut *this.ctx, id as c_int, value) };
            check("vpx_codec_control", err, &mut this.ctx)?;
        }
        Ok(this)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: an initialised context and a valid configuration for it.
        let err = unsafe { vpx::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        check("vpx_codec_enc_config_set", err, &mut self.ctx)
    }

    fn encode(
        &mut self,
        frame: &I420,
        pts: i64,
        duration: u64,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VideoError> {
        debug_assert_eq!(frame.size(), (self.width, self.height));
        // SAFETY: all-zero is a valid vpx_image_t (null pointers, zero integers and enum
        // values); the fields libvpx reads are set below.
        let mut image: vpx::vpx_image_t = unsafe { std::mem::zeroed() };
        image.fmt = vpx::vpx_img_fmt::VPX_IMG_FMT_I420;
        image.cs = vpx::vpx_color_space::VPX_CS_BT_601;
        image.range = vpx::vpx_color_range::VPX_CR_STUDIO_RANGE;
        image.w = frame.width();
        image.h = frame.height();
        image.d_w = frame.width();
        image.d_h = frame.height();
        image.r_w = frame.width();
        image.r_h = frame.height();
        image.bit_depth = 8;
        image.bps = 12;
        image.x_chroma_shift = 1;
        image.y_chroma_shift = 1;
        // libvpx only reads the input planes; the pointers are cast to *mut for the C API.
        image.planes = [
            frame.y().as_ptr().cast_mut(),
            frame.u().as_ptr().cast_mut(),
            frame.v().as_ptr().cast_mut(),
            ptr::null_mut(),
        ];
        let chroma_stride = frame.chroma_width() as c_int;
        image.stride = [frame.width() as c_int, chroma_stride, chroma_stride, 0];

        let flags = if force_keyframe {
            vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: `image` describes `frame`'s planes, which outlive the call; libvpx copies
        // the picture before returning (lag 0).
        let err = unsafe {
            vpx::vpx_codec_encode(
                &mut *self.ctx,
                &image,
                pts,
                duration as c_ulong,
                flags,
                c_ulong::from(vpx::VPX_DL_REALTIME),
            )
        };
        check("vpx_codec_encode", err, &mut self.ctx)?;

        let mut out = Vec::new();
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the iterator starts null and is only advanced by libvpx.
            let packet = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if packet.is_null() {
                break;
            }
            // SAFETY: a non-null packet stays valid until the next call on the context.
            let packet = unsafe { &*packet };
            if packet.kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: for a frame packet the `frame` member of the union is the live one, and
            // `buf` holds `sz` bytes.
            let (data, flags) = unsafe {
                let f = packet.data.frame;
                let len = usize::try_from(f.sz).unwrap_or(0);
                let data = if f.buf.is_null() || len == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(f.buf.cast::<u8>(), len).to_vec()
                };
                (data, f.flags)
            };
            if !data.is_empty() {
                out.push(EncodedFrame {
                    data,
                    keyframe: flags & vpx::VPX_FRAME_IS_KEY != 0,
                });
            }
        }
        Ok(out)
    }
}

impl Drop for EncoderContext {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// A VP8 encoder with libvpx's real-time settings: constant bitrate, no look-ahead
/// (`g_lag_in_frames = 0`), the realtime deadline, a fixed speed level (`cpu-used` -12),
/// error-resilient mode, one token partition, and no dropped frames, so every frame in gives one
/// frame out at once. Keyframes come at the start, after a size change, on demand, and otherwise
/// only every [`EncoderConfig::keyframe_interval`] frames.
///
/// The libvpx encoder is created at the first frame, for that frame's size, and created anew
/// when the size changes (so the next frame is a keyframe).
///
/// ```
/// use smallwebrtc::media::video::{EncoderConfig, I420, Vp8Encoder, vp8_is_keyframe};
/// let mut encoder = Vp8Encoder::new(EncoderConfig::default())?;
/// let black = I420::black(320, 240)?;
/// let first = encoder.encode(&black, 0, false)?;
/// let second = encoder.encode(&black, 3000, false)?;
/// let forced = encoder.encode(&black, 6000, true)?;
/// assert!(first[0].keyframe && !second[0].keyframe && forced[0].keyframe);
/// assert!(vp8_is_keyframe(&forced[0].data));
/// encoder.set_bitrate(300)?;
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
pub struct Vp8Encoder {
    config: EncoderConfig,
    context: Option<EncoderContext>,
    last_pts: Option<u64>,
}

// SAFETY: the libvpx context is owned by this value alone and has no thread affinity; it is
// only used through `&mut self`.
unsafe impl Send for Vp8Encoder {}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder")
            .field("config", &self.config)
            .field("size", &self.context.as_ref().map(|c| (c.width, c.height)))
            .finish_non_exhaustive()
    }
}

impl Vp8Encoder {
    /// An encoder with these settings.
    ///
    /// # Errors
    ///
    /// As [`EncoderConfig::validate`].
    pub fn new(config: EncoderConfig) -> Result<Self, VideoError> {
        config.validate()?;
        Ok(Vp8Encoder {
            config,
            context: None,
            last_pts: None,
        })
    }

    /// Encodes one frame; see [`VideoEncoder::encode`]. With these settings there is exactly
    /// one frame out per frame in.
    ///
    /// # Errors
    ///
    /// [`VideoError::Vpx`] if libvpx fails.
    pub fn encode(
        &mut self,
        frame: &I420,
        pts: u64,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VideoError> {
        let (width, height) = frame.size();
        check_size(width, height)?;
        if self
            .context
            .as_ref()
            .is_none_or(|c| (c.width, c.height) != (width, height))
        {
            self.context = None; // destroy the old one first
            self.context = Some(EncoderContext::new(&self.config, width, height)?);
            self.last_pts = None;
        }
        // libvpx wants increasing timestamps.
        let pts = match self.last_pts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        }
        .min(i64::MAX as u64 / 2);
        let duration = frame_duration(self.last_pts, pts, self.config.framerate);
        self.last_pts = Some(pts);
        match &mut self.context {
            Some(context) => context.encode(frame, pts as i64, duration, force_keyframe),
            None => unreachable!("created above"),
        }
    }

    /// Changes the target bitrate from the next frame on, without a keyframe.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidBitrate`], or [`VideoError::Vpx`].
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        check_bitrate(kbps)?;
        if let Some(context) = &mut self.context {
            context.set_bitrate(kbps)?;
        }
        self.config.bitrate_kbps = kbps;
        Ok(())
    }

    /// The current target bitrate in kbit/s.
    pub fn bitrate(&self) -> u32 {
        self.config.bitrate_kbps
    }
}

impl VideoEncoder for Vp8Encoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::Vp8
    }

    fn encode(
        &mut self,
        frame: &I420,
        pts: u64,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VideoError> {
        Vp8Encoder::encode(self, frame, pts, force_keyframe)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        Vp8Encoder::set_bitrate(self, kbps)
    }

    fn bitrate(&self) -> u32 {
        Vp8Encoder::bitrate(self)
    }
}

/// A VP8 decoder: whole frames in, I420 pictures at their native size out.
///
/// Frame sizes may change at any keyframe. Before the first keyframe, and after a frame that
/// fails to decode, delta frames are refused with [`VideoError::NeedKeyframe`] without reaching
/// libvpx (the caller asks the sender for a keyframe). Keyframes larger than
/// [`MAX_DIMENSION`] on a side are refused before libvpx allocates anything for them.
///
/// ```
/// use smallwebrtc::media::video::{EncoderConfig, I420, VideoError, VideoCodec, Vp8Decoder, Vp8Encoder};
/// let mut encoder = Vp8Encoder::new(EncoderConfig::default())?;
/// let key = encoder.encode(&I420::black(64, 48)?, 0, false)?.remove(0);
/// let delta = encoder.encode(&I420::black(64, 48)?, 3000, false)?.remove(0);
///
/// let mut decoder = Vp8Decoder::new()?;
/// assert_eq!(decoder.decode(&delta.data), Err(VideoError::NeedKeyframe(VideoCodec::Vp8)));
/// assert_eq!(decoder.decode(&key.data)?.unwrap().size(), (64, 48));
/// assert!(decoder.decode(&delta.data)?.is_some());
/// assert!(decoder.decode(b"garbage").is_err());
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
pub struct Vp8Decoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
    /// Boxed for a stable address: libvpx may keep a pointer to it.
    _cfg: Box<vpx::vpx_codec_dec_cfg_t>,
    have_reference: bool,
}

// SAFETY: as for Vp8Encoder: exclusively owned, no thread affinity, used through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder")
            .field("have_reference", &self.have_reference)
            .finish_non_exhaustive()
    }
}

impl Vp8Decoder {
    /// A single-threaded decoder.
    ///
    /// # Errors
    ///
    /// [`VideoError::Vpx`] if libvpx cannot create one.
    pub fn new() -> Result<Self, VideoError> {
        let cfg = Box::new(vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        });
        let mut ctx = zeroed_context();
        // SAFETY: a zeroed context, the static VP8 interface and a boxed configuration that
        // outlives the context.
        let err = unsafe {
            vpx::vpx_codec_dec_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_dx(),
                &*cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if err != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(vpx_error("vpx_codec_dec_init", err, Some(&mut ctx)));
        }
        Ok(Vp8Decoder {
            ctx,
            _cfg: cfg,
            have_reference: false,
        })
    }

    /// Decodes one whole VP8 frame; see [`VideoDecoder::decode`].
    ///
    /// # Errors
    ///
    /// [`VideoError::EmptyFrame`], [`VideoError::FrameTooLarge`], [`VideoError::InvalidFrame`]
    /// (a bad header, or a frame libvpx reports corrupted), [`VideoError::InvalidSize`],
    /// [`VideoError::NeedKeyframe`], or [`VideoError::Vpx`].
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420>, VideoError> {
        check_encoded(data)?;
        let header = parse_header(data).map_err(|reason| VideoError::InvalidFrame {
            codec: VideoCodec::Vp8,
            reason,
        })?;
        if let Some((width, height)) = header.size {
            check_size(width, height)?;
        } else if !self.have_reference {
            return Err(VideoError::NeedKeyframe(VideoCodec::Vp8));
        }
        match self.decode_frame(data) {
            Ok(picture) => {
                self.have_reference = true;
                Ok(picture)
            }
            Err(err) => {
                self.have_reference = false;
                Err(err)
            }
        }
    }

    fn decode_frame(&mut self, data: &[u8]) -> Result<Option<I420>, VideoError> {
        // SAFETY: an initialised context; `data` is valid for `len` bytes (at most 16 MiB, so
        // the length fits a c_uint).
        let err = unsafe {
            vpx::vpx_codec_decode(
                &mut *self.ctx,
                data.as_ptr(),
                data.len() as c_uint,
                ptr::null_mut(),
                0,
            )
        };
        check("vpx_codec_decode", err, &mut self.ctx)?;

        let mut corrupted: c_int = 0;
        // SAFETY: VP8D_GET_FRAME_CORRUPTED takes an int pointer.
        let err = unsafe {
            vpx::vpx_codec_control_(
                &mut *self.ctx,
                vpx::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupted as *mut c_int,
            )
        };
        check("vpx_codec_control", err, &mut self.ctx)?;
        if corrupted != 0 {
            // Drain the picture so it is not handed out with the next frame.
            while !self.next_image().is_null() {}
            return Err(VideoError::InvalidFrame {
                codec: VideoCodec::Vp8,
                reason: "libvpx reports the decoded frame corrupted",
            });
        }

        let mut picture = None;
        loop {
            let image = self.next_image();
            if image.is_null() {
                break;
            }
            // SAFETY: a non-null image is valid until the next call on the context.
            picture = Some(copy_image(unsafe { &*image })?);
        }
        Ok(picture)
    }

    fn next_image(&mut self) -> *mut vpx::vpx_image_t {
        // A fresh iterator each time: libvpx's VP8 decoder yields at most one picture per
        // decode call and then reports none.
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        // SAFETY: an initialised context and a null iterator.
        unsafe { vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter) }
    }
}

/// Copies a decoded libvpx picture into an [`I420`].
fn copy_image(image: &vpx::vpx_image_t) -> Result<I420, VideoError> {
    let (width, height) = (image.d_w, image.d_h);
    check_size(width, height)?;
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(VideoError::InvalidSize { width, height });
    }
    let unexpected = |reason| VideoError::InvalidFrame {
        codec: VideoCodec::Vp8,
        reason,
    };
    if image.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420 {
        return Err(unexpected("decoded picture is not I420"));
    }
    let (cw, ch) = (width.div_ceil(2) as usize, height.div_ceil(2) as usize);
    let mut planes: [&[u8]; 3] = [&[]; 3];
    let mut strides = [0usize; 3];
    for (i, (pw, ph)) in [(width as usize, height as usize), (cw, ch), (cw, ch)]
        .into_iter()
        .enumerate()
    {
        let stride = usize::try_from(image.stride[i]).unwrap_or(0);
        if stride < pw || image.planes[i].is_null() {
            return Err(unexpected("decoded picture has a bad plane"));
        }
        // SAFETY: libvpx's plane `i` holds `ph` rows of `stride` bytes (the last row at least
        // `pw`).
        planes[i] = unsafe { std::slice::from_raw_parts(image.planes[i], stride * (ph - 1) + pw) };
        strides[i] = stride;
    }
    I420::from_planes(
        width, height, planes[0], strides[0], planes[1], strides[1], planes[2], strides[2],
    )
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

impl VideoDecoder for Vp8Decoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::Vp8
    }

    fn decode(&mut self, data: &[u8]) -> Result<Option<I420>, VideoError> {
        Vp8Decoder::decode(self, data)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::busy_card;
    use super::super::{
        max_channel_difference, quadrant_colors, quadrants, MAX_VP8_SPEED, QUADRANT_COLORS,
    };
    use super::*;
    use crate::media::video::VideoFormat;

    fn card(width: u32, height: u32) -> I420 {
        quadrants(width, height).into_i420().unwrap()
    }

    #[test]
    fn quadrants_survive_encode_and_decode() {
        let mut encoder = Vp8Encoder::new(EncoderConfig::default()).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let frame = card(640, 480);
        for i in 0..5u64 {
            let out = encoder.encode(&frame, i * 3000, false).unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].keyframe, i == 0);
            assert_eq!(vp8_is_keyframe(&out[0].data), i == 0);
            let picture = decoder.decode(&out[0].data).unwrap().unwrap();
            assert_eq!(picture.size(), (640, 480));
            let rgb = picture.into_image(VideoFormat::Rgb).unwrap();
            let colours = quadrant_colors(&rgb);
            assert!(
                max_channel_difference(&colours, &QUADRANT_COLORS) <= 20,
                "frame {i}: {colours:?}"
            );
        }
    }

    #[test]
    fn every_speed_level_encodes_and_the_level_reaches_libvpx() {
        let frames: Vec<I420> = (0..6).map(|i| busy_card(320, 240, i)).collect();
        let encode_all = |speed: u8| -> Vec<Vec<u8>> {
            let mut encoder = Vp8Encoder::new(EncoderConfig {
                vp8_speed: speed,
                ..EncoderConfig::default()
            })
            .unwrap();
            let mut decoder = Vp8Decoder::new().unwrap();
            let mut out = Vec::new();
            for (i, frame) in frames.iter().enumerate() {
                let encoded = encoder.encode(frame, i as u64 * 3000, false).unwrap();
                assert_eq!(encoded.len(), 1, "speed {speed}, frame {i}");
                let picture = decoder.decode(&encoded[0].data).unwrap().unwrap();
                assert_eq!(picture.size(), (320, 240));
                out.push(encoded[0].data.clone());
            }
            out
        };
        let slow = encode_all(1);
        let fast = encode_all(MAX_VP8_SPEED);
        // A slower level searches differently: the moving picture's delta frames differ.
        assert!(
            slow[1..] != fast[1..],
            "speed 1 and 16 gave the same stream"
        );
        let card = card(320, 240);
        let mut encoder = Vp8Encoder::new(EncoderConfig {
            vp8_speed: 8,
            ..EncoderConfig::default()
        })
        .unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let out = encoder.encode(&card, 0, false).unwrap();
        let rgb = decoder.decode(&out[0].data).unwrap().unwrap();
        let colours = quadrant_colors(&rgb.into_image(VideoFormat::Rgb).unwrap());
        assert!(
            max_channel_difference(&colours, &QUADRANT_COLORS) <= 20,
            "{colours:?}"
        );
    }

    #[test]
    fn forced_keyframes_and_interval() {
        let config = EncoderConfig {
            keyframe_interval: 0,
            ..EncoderConfig::default()
        };
        let mut encoder = Vp8Encoder::new(config).unwrap();
        let mut keys = Vec::new();
        for i in 0..40u32 {
            let out = encoder
                .encode(&busy_card(160, 120, i), u64::from(i) * 3000, i == 20)
                .unwrap();
            assert_eq!(out.len(), 1);
            if out[0].keyframe {
                keys.push(i);
            }
        }
        assert_eq!(keys, [0, 20]);

        let config = EncoderConfig {
            keyframe_interval: 10,
            ..EncoderConfig::default()
        };
        let mut encoder = Vp8Encoder::new(config).unwrap();
        let keys: Vec<u32> = (0..25u32)
            .filter(|&i| {
                encoder
                    .encode(&busy_card(160, 120, i), u64::from(i) * 3000, false)
                    .unwrap()[0]
                    .keyframe
            })
            .collect();
        assert_eq!(keys, [0, 10, 20]);
    }

    #[test]
    fn size_changes_restart_with_a_keyframe() {
        let mut encoder = Vp8Encoder::new(EncoderConfig::default()).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        for (i, (w, h)) in [
            (320, 240),
            (320, 240),
            (640, 360),
            (641, 361),
            (2, 2),
            (1, 1),
        ]
        .into_iter()
        .enumerate()
        {
            let out = encoder.encode(&card(w, h), i as u64 * 3000, false).unwrap();
            assert_eq!(out[0].keyframe, i != 1, "frame {i}");
            if out[0].keyframe {
                assert_eq!(vp8_keyframe_size(&out[0].data), Some((w, h)));
            }
            let picture = decoder.decode(&out[0].data).unwrap().unwrap();
            assert_eq!(picture.size(), (w, h));
            if w > 100 {
                let rgb = picture.into_image(VideoFormat::Rgb).unwrap();
                assert!(max_channel_difference(&quadrant_colors(&rgb), &QUADRANT_COLORS) <= 20);
            }
        }
    }

    #[test]
    fn bitrate_changes_at_run_time() {
        let mut encoder = Vp8Encoder::new(EncoderConfig {
            bitrate_kbps: 2_000,
            ..EncoderConfig::default()
        })
        .unwrap();
        let size = |encoder: &mut Vp8Encoder, from: u32| -> usize {
            (from..from + 30)
                .map(|i| {
                    let out = encoder
                        .encode(&busy_card(320, 240, i), u64::from(i) * 3000, false)
                        .unwrap();
                    assert!(!out[0].keyframe || i == 0);
                    out[0].data.len()
                })
                .sum()
        };
        let _warm_up = size(&mut encoder, 0);
        let high = size(&mut encoder, 30);
        encoder.set_bitrate(100).unwrap();
        assert_eq!(encoder.bitrate(), 100);
        let _settle = size(&mut encoder, 60);
        let low = size(&mut encoder, 90);
        assert!(low * 3 < high, "high {high} low {low}");
        assert_eq!(encoder.set_bitrate(0), Err(VideoError::InvalidBitrate(0)));
        assert_eq!(encoder.bitrate(), 100);
    }

    #[test]
    fn non_increasing_timestamps_are_tolerated() {
        let mut encoder = Vp8Encoder::new(EncoderConfig::default()).unwrap();
        for pts in [0, 0, 10, 5, u64::MAX, u64::MAX, 0] {
            assert_eq!(encoder.encode(&card(64, 48), pts, false).unwrap().len(), 1);
        }
    }

    #[test]
    fn headers() {
        let mut encoder = Vp8Encoder::new(EncoderConfig::default()).unwrap();
        let key = encoder.encode(&card(176, 144), 0, false).unwrap().remove(0);
        let delta = encoder
            .encode(&card(176, 144), 3000, false)
            .unwrap()
            .remove(0);
        assert_eq!(
            parse_header(&key.data),
            Ok(FrameHeader {
                keyframe: true,
                size: Some((176, 144))
            })
        );
        assert_eq!(
            parse_header(&delta.data),
            Ok(FrameHeader {
                keyframe: false,
                size: None
            })
        );
        assert!(parse_header(&key.data[..9]).is_err());
        assert!(parse_header(&key.data[..20]).is_err()); // first partition cut off
        let mut bad = key.data.clone();
        bad[3] = 0;
        assert!(parse_header(&bad).is_err());
        assert_eq!(vp8_keyframe_size(&delta.data), None);
        assert!(!vp8_is_keyframe(&[0x00, 0x00]));
    }

    #[test]
    fn decoder_survives_garbage_and_truncation() {
        let mut encoder = Vp8Encoder::new(EncoderConfig::default()).unwrap();
        let frames: Vec<EncodedFrame> = (0..10u32)
            .map(|i| {
                encoder
                    .encode(&busy_card(320, 240, i), u64::from(i) * 3000, i == 5)
                    .unwrap()
                    .remove(0)
            })
            .collect();
        let mut decoder = Vp8Decoder::new().unwrap();
        assert_eq!(decoder.decode(&[]), Err(VideoError::EmptyFrame));
        assert!(matches!(
            decoder.decode(&vec![0; MAX_ENCODED_FRAME_BYTES_PLUS_ONE]),
            Err(VideoError::FrameTooLarge(_))
        ));

        // Pseudo-random garbage, and garbage behind a valid keyframe header.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2_000 {
            let len = (next() % 3000) as usize + 1;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && len >= 10 {
                data[..10].copy_from_slice(&frames[0].data[..10]);
                data[0] &= 0x1f; // keep the first partition small enough to pass the header check
                data[1] = 0;
                data[2] = 0;
            }
            let _ = decoder.decode(&data);
        }
        // Truncated and bit-flipped real frames.
        for frame in &frames {
            for cut in [1, 3, 10, frame.data.len() / 2, frame.data.len() - 1] {
                let _ = decoder.decode(&frame.data[..cut.min(frame.data.len())]);
            }
            let mut flipped = frame.data.clone();
            for i in (10..flipped.len()).step_by(7) {
                flipped[i] ^= 0x55;
            }
            let _ = decoder.decode(&flipped);
        }
        // A huge declared size is refused before libvpx allocates it.
        let mut huge = frames[0].data.clone();
        huge[6..10].copy_from_slice(&[0xff, 0x3f, 0xff, 0x3f]);
        assert_eq!(
            decoder.decode(&huge),
            Err(VideoError::InvalidSize {
                width: 16383,
                height: 16383
            })
        );
        // Still decodes the real stream afterwards, from its keyframe.
        assert!(matches!(
            decoder.decode(&frames[6].data),
            Err(VideoError::NeedKeyframe(VideoCodec::Vp8)) | Ok(Some(_))
        ));
        assert!(decoder.decode(&frames[0].data).unwrap().is_some());
        let mut decoder = Vp8Decoder::new().unwrap();
        for frame in &frames {
            let picture = decoder.decode(&frame.data).unwrap().unwrap();
            assert_eq!(picture.size(), (320, 240));
        }
    }

    const MAX_ENCODED_FRAME_BYTES_PLUS_ONE: usize =
        crate::media::video::MAX_ENCODED_FRAME_BYTES + 1;
}
