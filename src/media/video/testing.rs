//! Test helpers: a four-colour test card and a way to read its colours back after encoding,
//! scaling or conversion.

use super::{Image, VideoFormat};

/// The colours of [`quadrants`], in the order [`quadrant_colors`] returns them: top-left red,
/// top-right green, bottom-left blue, bottom-right white.
pub const QUADRANT_COLORS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

/// An RGB test card: solid red, green, blue and white quadrants (see [`QUADRANT_COLORS`]). The
/// left quadrants are `width / 2` wide and the top ones `height / 2` high.
///
/// A zero or too large size gives an image that fails [`Image::validate`].
///
/// ```
/// use smallwebrtc::media::video::{quadrants, VideoFormat};
/// let card = quadrants(4, 2);
/// assert_eq!(card.format, VideoFormat::Rgb);
/// assert_eq!(&card.data[..6], &[255, 0, 0, 255, 0, 0]); // two red pixels
/// assert_eq!(&card.data[18..], &[255, 255, 255, 255, 255, 255]); // two white ones
/// ```
pub fn quadrants(width: u32, height: u32) -> Image {
    let (w, h) = (width as usize, height as usize);
    let mut data = Vec::with_capacity(w.saturating_mul(h).saturating_mul(3));
    for row in 0..h {
        let bottom = row >= h / 2;
        for col in 0..w {
            let right = col >= w / 2;
            let colour = QUADRANT_COLORS[usize::from(bottom) * 2 + usize::from(right)];
            data.extend_from_slice(&colour);
        }
    }
    Image {
        width,
        height,
        format: VideoFormat::Rgb,
        data,
    }
}

/// The mean colour of the centre of each quadrant of an image, in [`QUADRANT_COLORS`] order.
///
/// The centre of a quadrant is its middle half in each direction, away from the edges where
/// chroma subsampling, scaling filters and codec blocks blur one colour into the next. RGBA and
/// I420 images are converted to RGB first. An invalid image gives all zeros.
///
/// ```
/// use smallwebrtc::media::video::{quadrant_colors, quadrants, VideoFormat, QUADRANT_COLORS};
/// let card = quadrants(64, 48).convert(VideoFormat::I420)?;
/// let colours = quadrant_colors(&card);
/// assert!(colours.iter().flatten().zip(QUADRANT_COLORS.iter().flatten())
///     .all(|(got, want)| got.abs_diff(*want) <= 2));
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
pub fn quadrant_colors(image: &Image) -> [[u8; 3]; 4] {
    let rgb;
    let image = match image.format {
        VideoFormat::Rgb => image,
        _ => match image.clone().convert(VideoFormat::Rgb) {
            Ok(converted) => {
                rgb = converted;
                &rgb
            }
            Err(_) => return [[0; 3]; 4],
        },
    };
    if image.validate().is_err() {
        return [[0; 3]; 4];
    }
    let (w, h) = (image.width as usize, image.height as usize);
    let (half_w, half_h) = (w / 2, h / 2);
    let mut out = [[0u8; 3]; 4];
    for (index, colour) in out.iter_mut().enumerate() {
        let (x0, x1) = if index % 2 == 0 {
            (0, half_w)
        } else {
            (half_w, w)
        };
        let (y0, y1) = if index < 2 { (0, half_h) } else { (half_h, h) };
        // The middle half, at least one pixel when the quadrant has any.
        let (cx0, cx1) = middle_half(x0, x1);
        let (cy0, cy1) = middle_half(y0, y1);
        let mut sums = [0u64; 3];
        let mut count = 0u64;
        for y in cy0..cy1 {
            let row = &image.data[(y * w + cx0) * 3..(y * w + cx1) * 3];
            for px in row.chunks_exact(3) {
                for (sum, &c) in sums.iter_mut().zip(px) {
                    *sum += u64::from(c);
                }
                count += 1;
            }
        }
        for (c, sum) in colour.iter_mut().zip(sums) {
            *c = (sum + count / 2).checked_div(count).unwrap_or(0) as u8;
        }
    }
    out
}

/// The middle half of `start..end`: a quarter trimmed from each side, keeping at least one
/// element when the range has any.
fn middle_half(start: usize, end: usize) -> (usize, usize) {
    let len = end - start;
    let trim = len / 4;
    if len == 0 {
        (start, end)
    } else {
        (start + trim, (end - trim).max(start + trim + 1))
    }
}

/// The largest difference, over every quadrant and channel, between two sets of quadrant colours
/// (from [`quadrant_colors`] and [`QUADRANT_COLORS`], say).
///
/// ```
/// use smallwebrtc::media::video::{max_channel_difference, QUADRANT_COLORS};
/// let mut got = QUADRANT_COLORS;
/// got[3] = [250, 255, 241];
/// assert_eq!(max_channel_difference(&got, &QUADRANT_COLORS), 14);
/// ```
pub fn max_channel_difference(a: &[[u8; 3]; 4], b: &[[u8; 3]; 4]) -> u8 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// Test frames for the codec tests: the test card with a moving stripe pattern and fresh noise
/// on every frame, so that delta frames carry real information and rate control has work.
#[cfg(test)]
pub(super) fn busy_card(width: u32, height: u32, t: u32) -> super::I420 {
    let mut frame = quadrants(width, height).into_i420().expect("valid size");
    let w = width as usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(t).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let (y, _, _) = frame.planes_mut();
    for (i, px) in y.iter_mut().enumerate() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = (seed % 41) as i16 - 20;
        let stripe = if (i % w + i / w + t as usize * 7) % 32 < 4 {
            60
        } else {
            0
        };
        *px = (i16::from(*px) + noise + stripe).clamp(16, 235) as u8;
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_card_reads_back_exactly() {
        for (w, h) in [(640, 480), (2, 2), (3, 3), (1, 1), (101, 37)] {
            let card = quadrants(w, h);
            card.validate().unwrap();
            let colours = quadrant_colors(&card);
            if w >= 2 && h >= 2 {
                assert_eq!(colours, QUADRANT_COLORS, "{w}x{h}");
            }
        }
        // 1x1: only the bottom-right quadrant has a pixel.
        assert_eq!(quadrant_colors(&quadrants(1, 1))[3], [255, 255, 255]);
        assert_eq!(quadrant_colors(&quadrants(1, 1))[0], [0, 0, 0]);
    }

    #[test]
    fn invalid_images_give_zeros() {
        assert_eq!(quadrant_colors(&quadrants(0, 0)), [[0; 3]; 4]);
        let mut card = quadrants(4, 4);
        card.height = 5;
        assert_eq!(quadrant_colors(&card), [[0; 3]; 4]);
        card.format = VideoFormat::Rgba;
        assert_eq!(quadrant_colors(&card), [[0; 3]; 4]);
    }

    #[test]
    fn middle_halves() {
        assert_eq!(middle_half(0, 8), (2, 6));
        assert_eq!(middle_half(8, 16), (10, 14));
        assert_eq!(middle_half(0, 1), (0, 1));
        assert_eq!(middle_half(0, 3), (0, 3));
        assert_eq!(middle_half(5, 5), (5, 5));
    }

    #[test]
    fn rgba_cards_read_back() {
        let card = quadrants(8, 8).convert(VideoFormat::Rgba).unwrap();
        assert_eq!(quadrant_colors(&card), QUADRANT_COLORS);
    }
}
