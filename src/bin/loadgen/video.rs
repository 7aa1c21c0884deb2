//! The camera video the load generator sends, and how it reads the frame number back.
//!
//! # What is sent
//!
//! One [`VideoClip`] is drawn and VP8-encoded once at start-up (by default 60 frames of
//! 640×480, two seconds at 30 fps), then every session loops over the same encoded frames:
//! sending a frame costs an `Arc` clone plus str0m's packetizing and SRTP, never an encode.
//! The picture is shaped like a webcam's: a fixed textured background, a bright "head" that
//! moves around it, and a little sensor noise (±3 by default) that differs in every frame, so that the server's
//! decoder and re-encoder do the work a real camera would give them (a still picture would
//! encode to almost nothing).
//!
//! The first frame of the loop is a keyframe and the rest are delta frames, each predicted from
//! the one before: sent in order, the loop decodes cleanly round and round (the keyframe at
//! its start resets the decoder's reference). A session never skips a frame of the loop (that
//! would break the prediction); when it falls behind the clock it skips a time slot instead.
//! When the server asks for a keyframe (PLI/FIR) the session restarts the loop.
//!
//! # The stamp
//!
//! Every frame carries its position in the loop, `id`, as a band of [`STAMP_CELLS`] big black
//! or white cells across the top of the picture: eight cells hold the bits of `id`, eight more
//! the bits of `!id`. Cells are a sixteenth of the width wide and as tall, so the stamp
//! survives the server's decode, any resize and a second generation of VP8 at modest bitrates;
//! the check half makes a misread (a blurred cell, a frame caught mid-change) come out as
//! "unreadable" rather than as a wrong number. Only measured sessions decode what comes back
//! ([`StampReader`]); the round trip is the time from handing frame `id` to str0m to having
//! decoded the frame that shows `id`.

use std::f32::consts::PI;
use std::sync::Arc;

use smallwebrtc::media::video::{EncoderConfig, VideoError, Vp8Decoder, Vp8Encoder, I420};

/// Bits of the frame number in the stamp.
const ID_BITS: usize = 8;
/// Cells across the stamp: the id's bits, then their complement.
pub const STAMP_CELLS: usize = 2 * ID_BITS;
/// Luma of a white and a black stamp cell (limited range).
const WHITE: u8 = 235;
const BLACK: u8 = 16;
/// The RTP clock rate of video.
pub const VIDEO_CLOCK_HZ: u64 = 90_000;
/// The camera stream's VP8 speed level and static threshold: those of the server's encoder
/// when the published figures up to 2026-12-03 were taken (a browser is slower and denoises
/// first; this is a fixed, reproducible stand-in). Pinned so that the server's own settings
/// never change what it has to decode.
const CLIENT_VP8_SPEED: u8 = 12;
const CLIENT_VP8_STATIC_THRESHOLD: u32 = 1000;

/// What the clip looks like and how it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    /// Frames per second sent.
    pub fps: u32,
    /// Frames in the loop (at most 256: the stamp has eight bits).
    pub frames: usize,
    /// VP8 target bitrate of the clip, kbit/s.
    pub bitrate_kbps: u32,
    /// Sensor noise: luma varies by up to ± this much per pixel and frame (0: none).
    pub noise: u8,
}

impl Default for VideoSpec {
    fn default() -> Self {
        VideoSpec {
            width: 640,
            height: 480,
            fps: 30,
            frames: 60,
            bitrate_kbps: 1_000,
            noise: 3,
        }
    }
}

/// Parses `640x480`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?}: expected a size like 640x480");
    let (w, h) = s.trim().split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w < 64 || h < 64 || w > 4096 || h > 4096 || !w.is_multiple_of(2) || !h.is_multiple_of(2) {
        return Err(format!(
            "{s:?}: width and height must be even, from 64 to 4096"
        ));
    }
    Ok((w, h))
}

/// A small deterministic PRNG (xorshift64*), so every run sends the same pictures.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The stamp's band: cell `k` spans `x` in `[k·w/16, (k+1)·w/16)` and `y` in `[0, w/16)`.
fn cell_bounds(width: u32, k: usize) -> (usize, usize, usize) {
    let w = width as usize;
    (
        k * w / STAMP_CELLS,
        (k + 1) * w / STAMP_CELLS,
        w / STAMP_CELLS,
    )
}

/// Whether cell `k` of the stamp of `id` is white.
fn cell_is_white(id: u8, k: usize) -> bool {
    let bit = k % ID_BITS;
    let value = if k < ID_BITS { id } else { !id };
    value >> (ID_BITS - 1 - bit) & 1 == 1
}

/// Draws frame `index` of a `frames`-long loop: the background, the moving head, luma noise of
/// up to ±`noise` and the stamp of `index`.
pub fn draw_frame(
    width: u32,
    height: u32,
    index: usize,
    frames: usize,
    noise: u8,
) -> Result<I420, String> {
    let mut frame = I420::black(width, height).map_err(|e| e.to_string())?;
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let phase = 2.0 * PI * index as f32 / frames.max(1) as f32;
    // The head goes round an ellipse once per loop, so the loop has no jump in it.
    let cx = w as f32 * (0.5 + 0.18 * phase.cos());
    let cy = h as f32 * (0.55 + 0.08 * (2.0 * phase).sin());
    let radius = h as f32 * 0.2;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1).wrapping_mul(0x1234_5678_9abc));
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    // Background texture: separable, so a row table and a column table are enough.
    let col: Vec<f32> = (0..w).map(|x| (x as f32 / 23.0).sin() * 30.0).collect();
    let row: Vec<f32> = (0..h).map(|y| (y as f32 / 17.0).cos() * 25.0).collect();
    for y in 0..h {
        let dy = y as f32 - cy;
        for x in 0..w {
            let dx = x as f32 - cx;
            let d2 = dx * dx + dy * dy;
            let base = if d2 < radius * radius {
                // The head: bright, shaded towards its edge.
                200.0 - 60.0 * d2 / (radius * radius)
            } else {
                100.0 + col[x] + row[y] * (x as f32 / w as f32)
            };
            let grain = if noise == 0 {
                0.0
            } else {
                (rng.next_u64() % (2 * u64::from(noise) + 1)) as f32 - f32::from(noise)
            };
            y_plane[y * w + x] = (base + grain).clamp(16.0, 235.0) as u8;
        }
    }
    for y in 0..ch {
        for x in 0..cw {
            let (dx, dy) = (2.0 * x as f32 - cx, 2.0 * y as f32 - cy);
            let head = dx * dx + dy * dy < radius * radius;
            u_plane[y * cw + x] = if head { 110 } else { 128 + (x * 40 / cw) as u8 };
            v_plane[y * cw + x] = if head { 160 } else { 140 - (y * 30 / ch) as u8 };
        }
    }
    stamp(&mut frame, index as u8);
    Ok(frame)
}

/// Writes the stamp of `id` over the top band of `frame` (grey chroma under it).
pub fn stamp(frame: &mut I420, id: u8) {
    let (width, height) = frame.size();
    let (w, cw) = (width as usize, (width as usize).div_ceil(2));
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    for k in 0..STAMP_CELLS {
        let (x0, x1, band) = cell_bounds(width, k);
        let band = band.min(height as usize);
        let luma = if cell_is_white(id, k) { WHITE } else { BLACK };
        for y in 0..band {
            y_plane[y * w + x0..y * w + x1].fill(luma);
        }
        for y in 0..band / 2 {
            u_plane[y * cw + x0 / 2..y * cw + x1 / 2].fill(128);
            v_plane[y * cw + x0 / 2..y * cw + x1 / 2].fill(128);
        }
    }
}

/// Reads the stamp of a decoded frame: `None` when a cell is neither clearly black nor clearly
/// white or the check half disagrees.
pub fn read_stamp(frame: &I420) -> Option<u8> {
    let (width, height) = frame.size();
    let w = width as usize;
    let y_plane = frame.y();
    let mut bits = [false; STAMP_CELLS];
    for (k, bit) in bits.iter_mut().enumerate() {
        let (x0, x1, band) = cell_bounds(width, k);
        let band = band.min(height as usize);
        // The middle half of the cell: its edges blur into the neighbours.
        let (mx0, mx1) = (x0 + (x1 - x0) / 4, x1 - (x1 - x0) / 4);
        let (my0, my1) = (band / 4, band - band / 4);
        if mx1 <= mx0 || my1 <= my0 {
            return None;
        }
        let mut sum = 0u64;
        for y in my0..my1 {
            sum += y_plane[y * w + mx0..y * w + mx1]
                .iter()
                .map(|&v| u64::from(v))
                .sum::<u64>();
        }
        let mean = sum / ((mx1 - mx0) * (my1 - my0)) as u64;
        *bit = match mean {
            m if m >= 170 => true,
            m if m <= 80 => false,
            _ => return None,
        };
    }
    let value = |half: &[bool]| half.iter().fold(0u8, |v, &b| v << 1 | u8::from(b));
    let id = value(&bits[..ID_BITS]);
    (value(&bits[ID_BITS..]) == !id).then_some(id)
}

/// The pre-encoded loop every session sends.
pub struct VideoClip {
    pub spec: VideoSpec,
    /// One encoded VP8 frame per loop position; `frames[0]` is a keyframe.
    pub frames: Vec<Arc<[u8]>>,
}

impl VideoClip {
    /// Draws and encodes the loop once.
    pub fn encode(spec: VideoSpec) -> Result<VideoClip, String> {
        if !(1..=256).contains(&spec.frames) {
            return Err(format!(
                "a video loop of {} frames: it must have 1 to 256 (the stamp has 8 bits)",
                spec.frames
            ));
        }
        if !(1..=120).contains(&spec.fps) {
            return Err(format!("{} fps: expected 1 to 120", spec.fps));
        }
        let mut encoder = Vp8Encoder::new(EncoderConfig {
            bitrate_kbps: spec.bitrate_kbps,
            framerate: spec.fps,
            keyframe_interval: 0,
            threads: 1,
            // The client's stream stays what it was when the published figures were taken,
            // whatever the server's own encoder settings become: a server change must not
            // make its input cheaper to decode.
            vp8_speed: CLIENT_VP8_SPEED,
            vp8_static_threshold: CLIENT_VP8_STATIC_THRESHOLD,
        })
        .map_err(|e| format!("VP8 encoder: {e}"))?;
        let step = VIDEO_CLOCK_HZ / u64::from(spec.fps);
        let mut frames = Vec::with_capacity(spec.frames);
        // Rate control settles over the first frames: encode the loop twice and keep the second
        // pass (restarted with a keyframe), which is what a camera in steady state looks like.
        for pass in 0..2 {
            frames.clear();
            for i in 0..spec.frames {
                let picture = draw_frame(spec.width, spec.height, i, spec.frames, spec.noise)?;
                let pts = (pass * spec.frames + i) as u64 * step;
                let mut out = encoder
                    .encode(&picture, pts, i == 0)
                    .map_err(|e| format!("VP8 encoder: {e}"))?;
                if out.len() != 1 {
                    return Err(format!(
                        "VP8 encoder gave {} frames for one picture",
                        out.len()
                    ));
                }
                let frame = out.remove(0);
                if (i == 0) != frame.keyframe {
                    return Err(format!(
                        "VP8 encoder: frame {i} keyframe={}",
                        frame.keyframe
                    ));
                }
                frames.push(Arc::from(frame.data));
            }
        }
        Ok(VideoClip { spec, frames })
    }

    /// Frames in the loop.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Mean bitrate of the loop, kbit/s.
    pub fn kbps(&self) -> f64 {
        let bytes: usize = self.frames.iter().map(|f| f.len()).sum();
        bytes as f64 * 8.0 * f64::from(self.spec.fps) / self.frames.len().max(1) as f64 / 1e3
    }
}

/// What a [`StampReader`] made of one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Decoded; the stamp says this id.
    Stamp(u8),
    /// Decoded, but the stamp could not be read.
    Unreadable,
    /// Decoded nothing to show (the decoder buffered it).
    Nothing,
    /// Could not be decoded; a keyframe is needed.
    NeedKeyframe,
}

/// A VP8 decoder in front of [`read_stamp`]: what a measured session runs per received frame.
pub struct StampReader {
    decoder: Vp8Decoder,
    /// Frames that failed to decode.
    pub decode_errors: u64,
}

impl StampReader {
    /// A fresh decoder.
    pub fn new() -> Result<Self, VideoError> {
        Ok(StampReader {
            decoder: Vp8Decoder::new()?,
            decode_errors: 0,
        })
    }

    /// Decodes one whole received VP8 frame and reads its stamp.
    pub fn push(&mut self, data: &[u8]) -> Read {
        match self.decoder.decode(data) {
            Ok(Some(frame)) => read_stamp(&frame).map_or(Read::Unreadable, Read::Stamp),
            Ok(None) => Read::Nothing,
            Err(_) => {
                self.decode_errors += 1;
                Read::NeedKeyframe
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back_from_raw_frames() {
        for id in [0u8, 1, 37, 59, 128, 255] {
            let frame = draw_frame(640, 480, id as usize, 256, 3).expect("draw");
            assert_eq!(read_stamp(&frame), Some(id));
        }
        // Not a multiple of 16 wide.
        let frame = draw_frame(330, 250, 5, 60, 0).expect("draw");
        assert_eq!(read_stamp(&frame), Some(5));
    }

    #[test]
    fn a_grey_picture_has_no_stamp() {
        let grey = I420::new(640, 480, vec![128; 640 * 480 * 3 / 2]).expect("frame");
        assert_eq!(read_stamp(&grey), None);
        let black = I420::black(640, 480).expect("frame");
        assert_eq!(read_stamp(&black), None, "all black fails the check half");
    }

    #[test]
    fn the_loop_decodes_round_and_round_with_every_stamp() {
        let spec = VideoSpec {
            width: 320,
            height: 240,
            frames: 12,
            bitrate_kbps: 300,
            ..VideoSpec::default()
        };
        let clip = VideoClip::encode(spec).expect("encode");
        assert_eq!(clip.len(), 12);
        let mut reader = StampReader::new().expect("decoder");
        let mut read = Vec::new();
        for i in 0..3 * clip.len() {
            read.push(reader.push(&clip.frames[i % clip.len()]));
        }
        let expected: Vec<Read> = (0..3 * 12).map(|i| Read::Stamp((i % 12) as u8)).collect();
        assert_eq!(read, expected);
        assert!(
            clip.kbps() > 50.0 && clip.kbps() < 1_000.0,
            "{}",
            clip.kbps()
        );
    }

    #[test]
    fn the_stamp_survives_a_second_generation_of_vp8() {
        // The server decodes and re-encodes: do the same, starting mid-loop at the keyframe.
        let spec = VideoSpec {
            frames: 10,
            ..VideoSpec::default()
        };
        let clip = VideoClip::encode(spec).expect("encode");
        let mut decoder = Vp8Decoder::new().expect("decoder");
        let mut encoder = Vp8Encoder::new(EncoderConfig::default()).expect("encoder");
        let mut reader = StampReader::new().expect("decoder");
        for i in 0..20 {
            let picture = decoder
                .decode(&clip.frames[i % 10])
                .expect("decode")
                .expect("a picture");
            let again = encoder
                .encode(&picture, i as u64 * 3000, false)
                .expect("encode")
                .remove(0);
            assert_eq!(
                reader.push(&again.data),
                Read::Stamp((i % 10) as u8),
                "frame {i}"
            );
        }
    }

    #[test]
    fn a_delta_frame_first_needs_a_keyframe() {
        let clip = VideoClip::encode(VideoSpec {
            width: 160,
            height: 120,
            frames: 3,
            bitrate_kbps: 200,
            fps: 30,
            noise: 3,
        })
        .expect("encode");
        let mut reader = StampReader::new().expect("decoder");
        assert_eq!(reader.push(&clip.frames[1]), Read::NeedKeyframe);
        assert_eq!(reader.push(&clip.frames[0]), Read::Stamp(0));
        assert_eq!(reader.decode_errors, 1);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert_eq!(parse_size("1280×720"), Ok((1280, 720)));
        assert!(parse_size("641x480").is_err());
        assert!(parse_size("big").is_err());
        assert!(parse_size("10x10").is_err());
    }

    #[test]
    fn loops_too_long_for_the_stamp_are_refused() {
        let spec = VideoSpec {
            frames: 300,
            ..VideoSpec::default()
        };
        let err = VideoClip::encode(spec).err().expect("refused");
        assert!(err.contains("256"), "{err}");
    }
}
