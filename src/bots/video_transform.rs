//! The `video-transform` bot (`smallwebrtc serve --bot video-transform`): the
//! [`echo`] bot, except that the camera comes back transformed, so
//! a person sees at once that the picture went through the bot:
//!
//! * the colours are **inverted** (red comes back cyan, green magenta, blue
//!   yellow, white black, a face looks like a photographic negative);
//! * a white **marker slides along a black strip** at the bottom edge, left to
//!   right once every [`MARKER_PERIOD`] of the camera's own timeline, so a
//!   frozen picture is told apart from a live one.
//!
//! Audio and app messages are echoed exactly as the echo bot does (including
//! the RTVI `bot-ready` the official client waits for).
//!
//! It is modelled on Pipecat's `video-transform` example (which runs OpenCV's
//! edge detection on RGB frames). Here the work is done on the decoded I420
//! planes themselves: inverting an image is a per-byte formula in BT.601 YUV,
//! so there is no colour conversion on the way in or out, and one pass over
//! 1.5 bytes per pixel is all a frame costs: about 25 µs at 640×480 in a
//! release build, where the two conversions an RGB transform needs would take
//! about 150 µs (2 vCPU, shared and noisy). It runs on the echo's video task,
//! never on its audio loop.
//!
//! `examples/video_transform.rs` writes the same kind of bot on RGB frames,
//! against the public API only.

use std::time::Duration;

use super::{echo, BotArgs};
use crate::media::video::{VideoFormat, I420};
use crate::transport::{OutputImageRawFrame, UserImageRawFrame};

/// How long the marker takes to cross the picture once, on the camera's own
/// timeline (the frames' `pts`), after which it starts again at the left.
pub const MARKER_PERIOD: Duration = Duration::from_secs(2);

/// Runs the `video-transform` bot until the session closes.
pub async fn run(args: BotArgs) {
    echo::run_with(args, transform).await
}

/// One camera image (I420, as [`echo::params`] asks) → the image sent back.
fn transform(image: UserImageRawFrame) -> Option<OutputImageRawFrame> {
    let (width, height) = image.size;
    let mut frame = match I420::new(width, height, image.image) {
        Ok(frame) => frame,
        // Cannot happen with `echo::params` (the transport delivers whole I420
        // frames); skip the image rather than send something untransformed.
        Err(e) => {
            tracing::debug!("video-transform: not an I420 image: {e}");
            return None;
        }
    };
    invert_with_marker(&mut frame, image.pts);
    Some(OutputImageRawFrame {
        image: frame.into_data(),
        size: (width, height),
        format: VideoFormat::I420,
    })
}

/// Where the marker is: `(x0, x1, y0)`, in luma pixels. The strip covers rows
/// `y0..height`, the marker columns `x0..x1` of it. Every bound is even, so the
/// chroma planes (half size) line up with the luma one.
///
/// ```
/// use std::time::Duration;
/// use smallwebrtc::bots::video_transform::marker_span;
///
/// // 640×480: a 24-row strip, an 80-pixel marker; half-way through its period
/// // the marker is half-way across.
/// assert_eq!(marker_span(640, 480, Duration::ZERO), (0, 80, 456));
/// assert_eq!(marker_span(640, 480, Duration::from_secs(1)), (280, 360, 456));
/// ```
pub fn marker_span(width: u32, height: u32, elapsed: Duration) -> (u32, u32, u32) {
    let strip = (height / 20).max(2);
    let y0 = height.saturating_sub(strip) & !1;
    let marker = ((width / 8) & !1).clamp(2.min(width), width);
    let period = MARKER_PERIOD.as_micros();
    let phase = (elapsed.as_micros() % period) as f64 / period as f64;
    let x0 = ((phase * f64::from(width - marker)) as u32) & !1;
    (x0, (x0 + marker).min(width), y0)
}

/// Inverts the colours of `frame` in place and draws the marker for time
/// `elapsed` (see the [module](self) docs) in one pass over its planes.
///
/// In BT.601 limited range, inverting R, G and B (`255 - c`) is
/// `Y' = 251 - Y` (the luma weights add up to 219/255) and `U' = 256 - U`,
/// `V' = 256 - V` (the chroma weights add up to zero), clamped to a byte.
///
/// ```
/// use std::time::Duration;
/// use smallwebrtc::bots::video_transform::invert_with_marker;
/// use smallwebrtc::media::video::{quadrant_colors, quadrants, VideoFormat};
///
/// let mut frame = quadrants(64, 48).into_i420()?;
/// invert_with_marker(&mut frame, Duration::ZERO);
/// let colours = quadrant_colors(&frame.into_image(VideoFormat::Rgb)?);
/// // Red → cyan, green → magenta, blue → yellow, white → black (give or take
/// // a little for the rounding of the colour conversion).
/// let near = |got: [u8; 3], want: [u8; 3]| got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 3);
/// assert!(near(colours[0], [0, 255, 255]), "{colours:?}");
/// assert!(near(colours[1], [255, 0, 255]), "{colours:?}");
/// assert!(near(colours[2], [255, 255, 0]), "{colours:?}");
/// assert!(near(colours[3], [0, 0, 0]), "{colours:?}");
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
pub fn invert_with_marker(frame: &mut I420, elapsed: Duration) {
    let (width, height) = frame.size();
    let (x0, x1, y0) = marker_span(width, height, elapsed);
    let (w, chroma_w) = (width as usize, frame.chroma_width() as usize);
    let (x0, x1, y0) = (x0 as usize, x1 as usize, y0 as usize);
    let (y, u, v) = frame.planes_mut();
    // Above the strip: invert. Kept as plain slice loops so they vectorise.
    let (picture, strip) = y.split_at_mut((y0 * w).min(y.len()));
    for p in picture {
        *p = 251u8.saturating_sub(*p);
    }
    for row in strip.chunks_mut(w.max(1)) {
        for (x, p) in row.iter_mut().enumerate() {
            // Studio white and black: the extremes of limited-range luma.
            *p = if (x0..x1).contains(&x) { 235 } else { 16 };
        }
    }
    // The strip is grey (neutral chroma); everything above it is inverted.
    let chroma_split = (y0 / 2) * chroma_w;
    for plane in [u, v] {
        let (picture, strip) = plane.split_at_mut(chroma_split.min(plane.len()));
        for p in picture {
            *p = (256 - u16::from(*p)).min(255) as u8;
        }
        strip.fill(128);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::video::{max_channel_difference, quadrant_colors, quadrants};

    const INVERTED: [[u8; 3]; 4] = [[0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0]];

    fn rgb_at(frame: &I420, x: u32, y: u32) -> [u8; 3] {
        let rgb = frame.clone().into_image(VideoFormat::Rgb).unwrap();
        let i = (y * frame.width() + x) as usize * 3;
        [rgb.data[i], rgb.data[i + 1], rgb.data[i + 2]]
    }

    #[test]
    fn inverts_every_quadrant_and_inverting_twice_gives_the_picture_back() {
        let original = quadrants(640, 480).into_i420().unwrap();
        let mut frame = original.clone();
        invert_with_marker(&mut frame, Duration::ZERO);
        let colours = quadrant_colors(&frame.clone().into_image(VideoFormat::Rgb).unwrap());
        assert!(
            max_channel_difference(&colours, &INVERTED) <= 3,
            "{colours:?}"
        );
        // Above the strip, a second inversion restores the original bytes
        // (the formulas are their own inverse inside the legal range).
        invert_with_marker(&mut frame, Duration::ZERO);
        let (_, _, y0) = marker_span(640, 480, Duration::ZERO);
        let luma = (y0 * 640) as usize;
        assert_eq!(&frame.y()[..luma], &original.y()[..luma]);
    }

    #[test]
    fn the_marker_is_white_on_black_at_the_bottom_and_moves_with_time() {
        let mut frame = quadrants(640, 480).into_i420().unwrap();
        invert_with_marker(&mut frame, Duration::from_millis(500));
        let (x0, x1, y0) = marker_span(640, 480, Duration::from_millis(500));
        assert_eq!((x0, x1, y0), (140, 220, 456));
        assert_eq!(rgb_at(&frame, (x0 + x1) / 2, 470), [255, 255, 255]);
        assert_eq!(rgb_at(&frame, x1 + 10, 470), [0, 0, 0]);
        assert_eq!(rgb_at(&frame, x0.saturating_sub(10), 470), [0, 0, 0]);
        // A quarter period later it is a quarter of the way further right.
        let (later, _, _) = marker_span(640, 480, Duration::from_millis(1000));
        assert_eq!(later, 280);
        // It wraps round after a period.
        assert_eq!(marker_span(640, 480, MARKER_PERIOD).0, 0);
        assert_eq!(
            marker_span(640, 480, MARKER_PERIOD * 7 + Duration::from_millis(500)).0,
            x0
        );
    }

    #[test]
    fn odd_and_tiny_sizes_do_not_panic() {
        for (w, h) in [(1, 1), (2, 2), (3, 5), (17, 9), (641, 479)] {
            let mut frame = I420::black(w, h).unwrap();
            for ms in [0, 700, 1999, 123_456] {
                invert_with_marker(&mut frame, Duration::from_millis(ms));
            }
            let (x0, x1, y0) = marker_span(w, h, Duration::from_millis(1500));
            assert!(x0 <= x1 && x1 <= w && y0 <= h, "{w}x{h}: {x0} {x1} {y0}");
        }
    }

    #[test]
    fn a_buffer_of_the_wrong_length_is_not_turned_into_a_panic() {
        let out = transform(UserImageRawFrame {
            user_id: "pc".into(),
            image: vec![0; 10],
            size: (64, 48),
            format: VideoFormat::I420,
            pts: Duration::ZERO,
            transport_source: crate::transport::VideoSource::Camera,
        });
        assert!(out.is_none());
    }
}
