//! Scaling with `fast_image_resize` (SIMD convolution), only when the size differs.

use fast_image_resize::images::{Image as DstImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::{check_size, Image, VideoError, VideoFormat, I420};

fn processing(err: impl std::fmt::Display) -> VideoError {
    VideoError::Processing(format!("scaling failed: {err}"))
}

/// Scales images and frames, reusing its working buffers from call to call.
///
/// The filter is Catmull-Rom, the same cubic as PIL's default `Image.resize` filter (`BICUBIC`,
/// what Pipecat's `_draw_image` uses). RGBA is scaled with premultiplied alpha, so transparent
/// pixels do not bleed their colour. I420 is scaled plane by plane.
///
/// ```
/// use smallwebrtc::media::video::{quadrant_colors, quadrants, Scaler, QUADRANT_COLORS};
/// let mut scaler = Scaler::new();
/// let big = scaler.resize(quadrants(640, 480), 1024, 768)?;
/// assert_eq!(big.size(), (1024, 768));
/// assert_eq!(quadrant_colors(&big), QUADRANT_COLORS);
///
/// // Same size: the image comes back untouched, without a copy.
/// let ptr = big.data.as_ptr();
/// let same = scaler.resize(big, 1024, 768)?;
/// assert_eq!(same.data.as_ptr(), ptr);
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Scaler {
    resizer: Resizer,
    options: ResizeOptions,
}

impl Default for Scaler {
    fn default() -> Self {
        Self::new()
    }
}

impl Scaler {
    /// A scaler using the best SIMD instructions the CPU has.
    pub fn new() -> Self {
        Scaler {
            resizer: Resizer::new(),
            options: ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom)),
        }
    }

    /// `image` scaled to `width × height`, in the same format. When the image already has that
    /// size it is returned as it is (after the usual check), without copying.
    ///
    /// # Errors
    ///
    /// As [`Image::validate`] for the input; [`VideoError::InvalidSize`] for a target size of
    /// zero or above [`MAX_DIMENSION`](super::MAX_DIMENSION); [`VideoError::OddI420Size`] for an
    /// I420 image and an odd target size.
    pub fn resize(&mut self, image: Image, width: u32, height: u32) -> Result<Image, VideoError> {
        image.validate()?;
        let data_len = Image::expected_len(width, height, image.format)?;
        if image.size() == (width, height) {
            return Ok(image);
        }
        let format = image.format;
        let data = match format {
            VideoFormat::Rgb | VideoFormat::Rgba => {
                let pixel = if format == VideoFormat::Rgb {
                    PixelType::U8x3
                } else {
                    PixelType::U8x4
                };
                let mut data = vec![0; data_len];
                self.resize_plane(
                    (&image.data, image.width, image.height),
                    (&mut data, width, height),
                    pixel,
                )?;
                data
            }
            VideoFormat::I420 => {
                let frame = I420::from_valid_image(image);
                self.resize_i420(frame, width, height)?.into_data()
            }
        };
        Ok(Image {
            width,
            height,
            format,
            data,
        })
    }

    /// `frame` scaled to `width × height` (any size, odd ones too), plane by plane. When the
    /// frame already has that size it is returned as it is.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidSize`] for a target size of zero or above
    /// [`MAX_DIMENSION`](super::MAX_DIMENSION).
    pub fn resize_i420(
        &mut self,
        frame: I420,
        width: u32,
        height: u32,
    ) -> Result<I420, VideoError> {
        check_size(width, height)?;
        if frame.size() == (width, height) {
            return Ok(frame);
        }
        let mut out = I420::black(width, height)?;
        let (src_cw, src_ch) = (frame.chroma_width(), frame.chroma_height());
        let (dst_cw, dst_ch) = (out.chroma_width(), out.chroma_height());
        let (y, u, v) = out.planes_mut();
        self.resize_plane(
            (frame.y(), frame.width(), frame.height()),
            (y, width, height),
            PixelType::U8,
        )?;
        self.resize_plane(
            (frame.u(), src_cw, src_ch),
            (u, dst_cw, dst_ch),
            PixelType::U8,
        )?;
        self.resize_plane(
            (frame.v(), src_cw, src_ch),
            (v, dst_cw, dst_ch),
            PixelType::U8,
        )?;
        Ok(out)
    }

    /// Scales one tightly packed plane into another, or copies it when the sizes match (chroma
    /// planes can keep their size while luma changes: 5 → 6 pixels wide).
    fn resize_plane(
        &mut self,
        (src, src_w, src_h): (&[u8], u32, u32),
        (dst, dst_w, dst_h): (&mut [u8], u32, u32),
        pixel: PixelType,
    ) -> Result<(), VideoError> {
        if (src_w, src_h) == (dst_w, dst_h) {
            dst.copy_from_slice(src);
            return Ok(());
        }
        let src = ImageRef::new(src_w, src_h, src, pixel).map_err(processing)?;
        let mut dst = DstImage::from_slice_u8(dst_w, dst_h, dst, pixel).map_err(processing)?;
        self.resizer
            .resize(&src, &mut dst, &self.options)
            .map_err(processing)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{quadrant_colors, quadrants, QUADRANT_COLORS};
    use super::*;

    #[test]
    fn upscale_keeps_quadrant_colours_in_every_format() {
        let mut scaler = Scaler::new();
        for format in [VideoFormat::Rgb, VideoFormat::Rgba, VideoFormat::I420] {
            let image = quadrants(640, 480).convert(format).unwrap();
            let big = scaler.resize(image, 1024, 768).unwrap();
            assert_eq!((big.size(), big.format), ((1024, 768), format));
            big.validate().unwrap();
            let colours = quadrant_colors(&big);
            assert!(
                super::super::max_channel_difference(&colours, &QUADRANT_COLORS) <= 3,
                "{format}: {colours:?}"
            );
        }
    }

    #[test]
    fn downscale_and_odd_sizes() {
        let mut scaler = Scaler::new();
        let small = scaler.resize(quadrants(640, 480), 160, 90).unwrap();
        assert_eq!(small.size(), (160, 90));
        assert_eq!(quadrant_colors(&small), QUADRANT_COLORS);
        let odd = scaler.resize(quadrants(64, 48), 33, 17).unwrap();
        assert_eq!(odd.data.len(), 33 * 17 * 3);
        let frame = quadrants(64, 48).into_i420().unwrap();
        let odd = scaler.resize_i420(frame, 33, 17).unwrap();
        assert_eq!(
            (odd.size(), odd.chroma_width(), odd.chroma_height()),
            ((33, 17), 17, 9)
        );
        let rgb = odd.into_image(VideoFormat::Rgb).unwrap();
        assert!(
            super::super::max_channel_difference(&quadrant_colors(&rgb), &QUADRANT_COLORS) <= 8
        );
        // Luma 5 → 6 wide keeps a 3-wide chroma plane: copied, not scaled.
        let frame = I420::black(5, 4).unwrap();
        let wider = scaler.resize_i420(frame, 6, 4).unwrap();
        assert_eq!(wider, I420::black(6, 4).unwrap());
    }

    #[test]
    fn same_size_is_a_no_op() {
        let mut scaler = Scaler::new();
        let frame = I420::black(64, 48).unwrap();
        let ptr = frame.data().as_ptr();
        let same = scaler.resize_i420(frame, 64, 48).unwrap();
        assert_eq!(same.data().as_ptr(), ptr);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let mut scaler = Scaler::new();
        assert!(matches!(
            scaler.resize(quadrants(64, 48), 0, 48),
            Err(VideoError::InvalidSize { .. })
        ));
        assert!(matches!(
            scaler.resize(quadrants(64, 48), 64, 9000),
            Err(VideoError::InvalidSize { .. })
        ));
        let i420 = quadrants(64, 48).convert(VideoFormat::I420).unwrap();
        assert_eq!(
            scaler.resize(i420, 33, 20),
            Err(VideoError::OddI420Size {
                width: 33,
                height: 20
            })
        );
        let mut broken = quadrants(64, 48);
        broken.data.pop();
        assert!(matches!(
            scaler.resize(broken, 32, 24),
            Err(VideoError::WrongDataLength { .. })
        ));
        assert!(I420::black(4, 4).unwrap().resize(0, 4).is_err());
    }
}
