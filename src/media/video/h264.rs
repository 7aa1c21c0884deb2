//! H.264 Constrained Baseline encoding and decoding over OpenH264 (the `openh264` crate, which
//! compiles Cisco's C++ sources into the binary). Behind the `h264` cargo feature.
//!
//! The encoder writes Constrained Baseline (`profile_idc` 66 with `constraint_set0` and
//! `constraint_set1`), one slice per picture, BT.601 limited range signalled in the SPS, and the
//! SPS and PPS in front of every IDR picture, so any IDR access unit decodes on its own. The
//! level is chosen from the size and frame rate (3.1 for 1024×768 at 30 fps, what browsers offer
//! as `42e01f`). Access units come out in Annex-B form; the RTP packetization (mode 1: single NAL
//! units and FU-A) is str0m's.

use std::os::raw::{c_int, c_void};

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig as OpenH264Config, FrameRate, FrameType,
    IntraFramePeriod, Profile, RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};

use super::nal::{h264_nal_type, h264_nal_units, NAL_IDR};
use super::{
    check_bitrate, check_encoded, EncodedFrame, EncoderConfig, VideoCodec, VideoDecoder,
    VideoEncoder, VideoError, I420,
};

fn openh264_error(function: &'static str, err: &openh264::Error) -> VideoError {
    let text = err.to_string();
    let message = text
        .trim_end_matches(". Backtraces enabled.")
        .trim_start_matches("OpenH264 encountered an error. ")
        .to_owned();
    VideoError::OpenH264 { function, message }
}

/// OpenH264 encodes nothing narrower or lower than one macroblock.
const MIN_SIZE: u32 = 16;

/// An [`I420`] as OpenH264 reads it, cropped to an even size: H.264 4:2:0 cannot code an odd
/// width or height. The crop is a view with the original strides, no copy.
struct EvenView<'a> {
    frame: &'a I420,
    width: usize,
    height: usize,
}

impl<'a> EvenView<'a> {
    fn new(frame: &'a I420) -> Result<Self, VideoError> {
        let (width, height) = (frame.width() & !1, frame.height() & !1);
        if width < MIN_SIZE || height < MIN_SIZE {
            return Err(VideoError::InvalidSize {
                width: frame.width(),
                height: frame.height(),
            });
        }
        Ok(EvenView {
            frame,
            width: width as usize,
            height: height as usize,
        })
    }
}

impl YUVSource for EvenView<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let chroma = self.frame.chroma_width() as usize;
        (self.frame.width() as usize, chroma, chroma)
    }

    fn y(&self) -> &[u8] {
        self.frame.y()
    }

    fn u(&self) -> &[u8] {
        self.frame.u()
    }

    fn v(&self) -> &[u8] {
        self.frame.v()
    }
}

/// An H.264 Constrained Baseline encoder with real-time settings: bitrate rate control, no
/// frame skipping, no B-frames, IDR pictures at the start, after a size change, on demand, and
/// otherwise only every [`EncoderConfig::keyframe_interval`] frames.
///
/// Odd sizes lose their last column or row (H.264 4:2:0 only codes even sizes); the smallest
/// frame OpenH264 takes is 16×16.
///
/// ```
/// use smallwebrtc::media::video::{h264_is_keyframe, EncoderConfig, H264Encoder, I420};
/// let mut encoder = H264Encoder::new(EncoderConfig::default())?;
/// let black = I420::black(320, 240)?;
/// let first = encoder.encode(&black, 0, false)?;
/// let second = encoder.encode(&black, 3000, false)?;
/// let forced = encoder.encode(&black, 6000, true)?;
/// assert!(first[0].keyframe && !second[0].keyframe && forced[0].keyframe);
/// assert!(h264_is_keyframe(&forced[0].data));
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
pub struct H264Encoder {
    config: EncoderConfig,
    encoder: Option<(Encoder, (usize, usize))>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("config", &self.config)
            .field("size", &self.encoder.as_ref().map(|(_, size)| *size))
            .finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// An encoder with these settings.
    ///
    /// # Errors
    ///
    /// As [`EncoderConfig::validate`].
    pub fn new(config: EncoderConfig) -> Result<Self, VideoError> {
        config.validate()?;
        Ok(H264Encoder {
            config,
            encoder: None,
        })
    }

    fn openh264_config(&self) -> OpenH264Config {
        OpenH264Config::new()
            .bitrate(BitRate::from_bps(self.config.bitrate_kbps * 1000))
            .max_frame_rate(FrameRate::from_hz(self.config.framerate as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .complexity(Complexity::Low)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            // Keyframes only when asked for or due, not at every cut in the bot's video.
            .scene_change_detect(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                self.config.keyframe_interval,
            ))
            .num_threads(self.config.clamped_threads() as u16)
            .vui(VuiConfig::bt601())
    }

    /// Encodes one frame; see [`VideoEncoder::encode`]. With these settings there is exactly
    /// one access unit out per frame in.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidSize`] for a frame narrower or lower than 2 pixels, or
    /// [`VideoError::OpenH264`].
    pub fn encode(
        &mut self,
        frame: &I420,
        pts: u64,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VideoError> {
        let view = EvenView::new(frame)?;
        let size = (view.width, view.height);
        if self.encoder.as_ref().is_none_or(|(_, s)| *s != size) {
            self.encoder = None;
            let mut encoder =
                Encoder::with_api_config(OpenH264API::from_source(), self.openh264_config())
                    .map_err(|e| openh264_error("create encoder", &e))?;
            quiet(&mut encoder);
            self.encoder = Some((encoder, size));
        }
        let Some((encoder, _)) = &mut self.encoder else {
            unreachable!("created above");
        };
        if force_keyframe {
            encoder.force_intra_frame();
        }
        let timestamp = Timestamp::from_millis(pts / 90);
        let stream = encoder
            .encode_at(&view, timestamp)
            .map_err(|e| openh264_error("encode", &e))?;
        let keyframe = stream.frame_type() == FrameType::IDR;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(Vec::new());
        }
        let data = stream.to_vec();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![EncodedFrame { data, keyframe }])
    }

    /// Changes the target bitrate from the next frame on, without an IDR.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidBitrate`], or [`VideoError::OpenH264`].
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        check_bitrate(kbps)?;
        if let Some((encoder, _)) = &mut self.encoder {
            let old = self.config.bitrate_kbps;
            let target = |encoder: &mut Encoder| {
                set_bitrate_option(encoder, openh264_sys2::ENCODER_OPTION_BITRATE, kbps)
            };
            let max = |encoder: &mut Encoder| {
                set_bitrate_option(encoder, openh264_sys2::ENCODER_OPTION_MAX_BITRATE, kbps)
            };
            // OpenH264 refuses a target above the maximum: move them in the order that keeps
            // target <= maximum at every step.
            if kbps > old {
                max(encoder)?;
                target(encoder)?;
            } else {
                target(encoder)?;
                max(encoder)?;
            }
        }
        self.config.bitrate_kbps = kbps;
        Ok(())
    }

    /// The current target bitrate in kbit/s.
    pub fn bitrate(&self) -> u32 {
        self.config.bitrate_kbps
    }

    /// The encoder's own idea of its target bitrate, in bit/s, once it has encoded a frame.
    #[cfg(test)]
    fn native_bitrate(&mut self) -> Option<i32> {
        let (encoder, _) = self.encoder.as_mut()?;
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: 0,
        };
        // SAFETY: ENCODER_OPTION_BITRATE reads into an SBitrateInfo.
        let result = unsafe {
            encoder.raw_api().get_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                (&mut info as *mut openh264_sys2::SBitrateInfo).cast::<c_void>(),
            )
        };
        (result == 0).then_some(info.iBitrate)
    }
}

/// Silences OpenH264's log before the encoder initialises (at its first frame): it would
/// otherwise print a warning to stderr for every new encoder (that rate control cannot hold the
/// bitrate exactly without frame skipping, which is off on purpose).
fn quiet(encoder: &mut Encoder) {
    let mut level: c_int = openh264_sys2::WELS_LOG_QUIET;
    // SAFETY: ENCODER_OPTION_TRACE_LEVEL reads one int, and is accepted before initialisation.
    unsafe {
        encoder.raw_api().set_option(
            openh264_sys2::ENCODER_OPTION_TRACE_LEVEL,
            (&mut level as *mut c_int).cast::<c_void>(),
        );
    }
}

fn set_bitrate_option(
    encoder: &mut Encoder,
    option: openh264_sys2::ENCODER_OPTION,
    kbps: u32,
) -> Result<(), VideoError> {
    let layer = if option == openh264_sys2::ENCODER_OPTION_BITRATE {
        openh264_sys2::SPATIAL_LAYER_ALL
    } else {
        openh264_sys2::SPATIAL_LAYER_0
    };
    let mut info = openh264_sys2::SBitrateInfo {
        iLayer: layer,
        iBitrate: (kbps * 1000) as c_int,
    };
    // SAFETY: both bitrate options take a pointer to an SBitrateInfo, which OpenH264 only reads
    // during the call; the encoder is initialised (it has encoded a frame).
    let result = unsafe {
        encoder.raw_api().set_option(
            option,
            (&mut info as *mut openh264_sys2::SBitrateInfo).cast::<c_void>(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(VideoError::OpenH264 {
            function: "set bitrate",
            message: format!("native code {result}"),
        })
    }
}

impl VideoEncoder for H264Encoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::H264
    }

    fn encode(
        &mut self,
        frame: &I420,
        pts: u64,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VideoError> {
        H264Encoder::encode(self, frame, pts, force_keyframe)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        H264Encoder::set_bitrate(self, kbps)
    }

    fn bitrate(&self) -> u32 {
        H264Encoder::bitrate(self)
    }
}

/// An H.264 decoder: Annex-B access units in, I420 pictures at their native size out.
///
/// Before the first IDR, and after an access unit that fails to decode, non-IDR access units
/// are refused with [`VideoError::NeedKeyframe`] without reaching OpenH264.
///
/// ```
/// use smallwebrtc::media::video::{EncoderConfig, H264Decoder, H264Encoder, I420};
/// let mut encoder = H264Encoder::new(EncoderConfig::default())?;
/// let idr = encoder.encode(&I420::black(64, 48)?, 0, false)?.remove(0);
/// let mut decoder = H264Decoder::new()?;
/// assert_eq!(decoder.decode(&idr.data)?.unwrap().size(), (64, 48));
/// assert!(decoder.decode(b"garbage").is_err());
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
pub struct H264Decoder {
    decoder: openh264::decoder::Decoder,
    have_reference: bool,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder")
            .field("have_reference", &self.have_reference)
            .finish_non_exhaustive()
    }
}

impl H264Decoder {
    /// A single-threaded decoder.
    ///
    /// # Errors
    ///
    /// [`VideoError::OpenH264`] if OpenH264 cannot create one.
    pub fn new() -> Result<Self, VideoError> {
        let decoder =
            openh264::decoder::Decoder::new().map_err(|e| openh264_error("create decoder", &e))?;
        Ok(H264Decoder {
            decoder,
            have_reference: false,
        })
    }

    /// Decodes one Annex-B access unit; see [`VideoDecoder::decode`].
    ///
    /// # Errors
    ///
    /// [`VideoError::EmptyFrame`], [`VideoError::FrameTooLarge`], [`VideoError::InvalidFrame`]
    /// (no NAL unit in it), [`VideoError::NeedKeyframe`], [`VideoError::InvalidSize`], or
    /// [`VideoError::OpenH264`].
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420>, VideoError> {
        check_encoded(data)?;
        let mut units = h264_nal_units(data).peekable();
        if units.peek().is_none() {
            return Err(VideoError::InvalidFrame {
                codec: VideoCodec::H264,
                reason: "no Annex-B NAL unit",
            });
        }
        let idr = units.any(|nal| h264_nal_type(nal) == Some(NAL_IDR));
        let has_slice = h264_nal_units(data).any(|nal| matches!(h264_nal_type(nal), Some(1..=5)));
        if has_slice && !idr && !self.have_reference {
            return Err(VideoError::NeedKeyframe(VideoCodec::H264));
        }
        match self.decode_unit(data) {
            Ok(picture) => {
                if picture.is_some() {
                    self.have_reference = true;
                }
                Ok(picture)
            }
            Err(err) => {
                self.have_reference = false;
                Err(err)
            }
        }
    }

    fn decode_unit(&mut self, data: &[u8]) -> Result<Option<I420>, VideoError> {
        let decoded = self
            .decoder
            .decode(data)
            .map_err(|e| openh264_error("decode", &e))?;
        let Some(picture) = decoded else {
            return Ok(None);
        };
        let (width, height) = picture.dimensions();
        let (y_stride, u_stride, v_stride) = picture.strides();
        let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        I420::from_planes(
            size(width),
            size(height),
            picture.y(),
            y_stride,
            picture.u(),
            u_stride,
            picture.v(),
            v_stride,
        )
        .map(Some)
    }
}

impl VideoDecoder for H264Decoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::H264
    }

    fn decode(&mut self, data: &[u8]) -> Result<Option<I420>, VideoError> {
        H264Decoder::decode(self, data)
    }
}

#[cfg(test)]
mod tests {
    use super::super::nal::{NAL_PPS, NAL_SPS};
    use super::super::testing::busy_card;
    use super::super::{max_channel_difference, quadrant_colors, quadrants, QUADRANT_COLORS};
    use super::*;
    use crate::media::video::VideoFormat;

    fn card(width: u32, height: u32) -> I420 {
        quadrants(width, height).into_i420().unwrap()
    }

    fn nal_types(data: &[u8]) -> Vec<u8> {
        h264_nal_units(data).filter_map(h264_nal_type).collect()
    }

    #[test]
    fn quadrants_survive_encode_and_decode() {
        let mut encoder = H264Encoder::new(EncoderConfig::default()).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        let frame = card(640, 480);
        for i in 0..5u64 {
            let out = encoder.encode(&frame, i * 3000, false).unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].keyframe, i == 0);
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
    fn every_idr_carries_sps_and_pps_and_is_constrained_baseline() {
        let mut encoder = H264Encoder::new(EncoderConfig {
            keyframe_interval: 0,
            ..EncoderConfig::default()
        })
        .unwrap();
        let mut idrs = Vec::new();
        for i in 0..30u32 {
            let out = encoder
                .encode(
                    &busy_card(1024, 768, i),
                    u64::from(i) * 3000,
                    i == 12 || i == 25,
                )
                .unwrap();
            assert_eq!(out.len(), 1);
            let types = nal_types(&out[0].data);
            assert_eq!(out[0].keyframe, types.contains(&NAL_IDR), "{types:?}");
            assert!(out[0].data.starts_with(&[0, 0, 0, 1]));
            if out[0].keyframe {
                idrs.push(i);
                assert!(
                    types.starts_with(&[NAL_SPS, NAL_PPS]),
                    "frame {i}: {types:?}"
                );
                let sps = h264_nal_units(&out[0].data).next().unwrap();
                // profile_idc 66, constraint_set0 and set1 (Constrained Baseline), level 3.1.
                assert_eq!(sps[1], 66);
                assert_eq!(sps[2] & 0xc0, 0xc0, "constraint flags {:#04x}", sps[2]);
                assert_eq!(sps[3], 31, "level_idc");
            } else {
                assert!(!types.contains(&NAL_SPS) && !types.contains(&NAL_PPS));
                assert_eq!(types, [1], "frame {i}");
            }
        }
        assert_eq!(idrs, [0, 12, 25]);

        let mut encoder = H264Encoder::new(EncoderConfig {
            keyframe_interval: 10,
            ..EncoderConfig::default()
        })
        .unwrap();
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
    fn size_changes_and_odd_sizes() {
        let mut encoder = H264Encoder::new(EncoderConfig::default()).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        for (i, ((w, h), coded)) in [
            ((320, 240), (320, 240)),
            ((320, 240), (320, 240)),
            ((640, 360), (640, 360)),
            ((641, 361), (640, 360)),
            ((16, 16), (16, 16)),
            ((17, 19), (16, 18)),
        ]
        .into_iter()
        .enumerate()
        {
            let out = encoder.encode(&card(w, h), i as u64 * 3000, false).unwrap();
            assert_eq!(out[0].keyframe, i != 1 && i != 3, "frame {i}");
            let picture = decoder.decode(&out[0].data).unwrap().unwrap();
            assert_eq!(picture.size(), coded);
        }
        for (w, h) in [(1, 1), (15, 100), (100, 14)] {
            assert_eq!(
                encoder.encode(&card(w, h), 99_000, false),
                Err(VideoError::InvalidSize {
                    width: w,
                    height: h
                })
            );
        }
    }

    #[test]
    fn bitrate_changes_at_run_time() {
        let mut encoder = H264Encoder::new(EncoderConfig {
            bitrate_kbps: 2_000,
            ..EncoderConfig::default()
        })
        .unwrap();
        encoder.set_bitrate(1_500).unwrap(); // before the first frame: only remembered
        let size = |encoder: &mut H264Encoder, from: u32| -> usize {
            (from..from + 30)
                .map(|i| {
                    let out = encoder
                        .encode(&busy_card(320, 240, i), u64::from(i) * 3000, false)
                        .unwrap();
                    assert!(!out[0].keyframe || i == 0, "frame {i}");
                    out[0].data.len()
                })
                .sum()
        };
        let _warm_up = size(&mut encoder, 0);
        assert_eq!(encoder.native_bitrate(), Some(1_500_000));
        let high = size(&mut encoder, 30);
        encoder.set_bitrate(100).unwrap();
        assert_eq!(encoder.native_bitrate(), Some(100_000));
        let _settle = size(&mut encoder, 60);
        let low = size(&mut encoder, 90);
        assert!(low * 3 < high, "high {high} low {low}");
        encoder.set_bitrate(3_000).unwrap();
        assert_eq!(encoder.native_bitrate(), Some(3_000_000));
        assert_eq!(encoder.bitrate(), 3_000);
        assert_eq!(
            encoder.set_bitrate(200_000),
            Err(VideoError::InvalidBitrate(200_000))
        );
    }

    #[test]
    fn decoder_survives_garbage_and_truncation() {
        let mut encoder = H264Encoder::new(EncoderConfig::default()).unwrap();
        let frames: Vec<EncodedFrame> = (0..10u32)
            .map(|i| {
                encoder
                    .encode(&busy_card(320, 240, i), u64::from(i) * 3000, i == 5)
                    .unwrap()
                    .remove(0)
            })
            .collect();
        let mut decoder = H264Decoder::new().unwrap();
        assert_eq!(decoder.decode(&[]), Err(VideoError::EmptyFrame));
        assert!(matches!(
            decoder.decode(&[1, 2, 3]),
            Err(VideoError::InvalidFrame { .. })
        ));
        assert_eq!(
            decoder.decode(&frames[1].data),
            Err(VideoError::NeedKeyframe(VideoCodec::H264))
        );

        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2_000 {
            let len = (next() % 2000) as usize + 1;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half of them look like Annex-B units of plausible types.
            if round % 2 == 0 && len > 6 {
                data[..4].copy_from_slice(&[0, 0, 0, 1]);
                data[4] = [0x67, 0x68, 0x65, 0x41][round / 2 % 4];
            }
            let _ = decoder.decode(&data);
        }
        for frame in &frames {
            for cut in [5, 20, frame.data.len() / 2, frame.data.len() - 1] {
                let _ = decoder.decode(&frame.data[..cut.min(frame.data.len())]);
            }
            let mut flipped = frame.data.clone();
            for i in (40..flipped.len()).step_by(11) {
                flipped[i] ^= 0x5a;
            }
            let _ = decoder.decode(&flipped);
        }
        // A fresh decoder still decodes the real stream.
        let mut decoder = H264Decoder::new().unwrap();
        for frame in &frames {
            let picture = decoder.decode(&frame.data).unwrap().unwrap();
            assert_eq!(picture.size(), (320, 240));
        }
    }
}
