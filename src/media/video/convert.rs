//! Colour conversion between packed RGB/RGBA and planar I420, over the `yuv` crate's SIMD
//! converters, always BT.601 limited range: what browsers' VP8 and H.264 encoders produce and
//! expect, and what OpenCV's `COLOR_YUV2RGB_I420` (used by Pipecat) assumes.
//!
//! Odd sizes are handled: the chroma planes are `ceil(w / 2) × ceil(h / 2)`, the last column and
//! row of chroma covering one pixel instead of two.

use yuv::{
    BufferStoreMut, YuvConversionMode, YuvPlanarImage, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};

use super::{Image, VideoError, VideoFormat, I420};

const RANGE: YuvRange = YuvRange::Limited;
const MATRIX: YuvStandardMatrix = YuvStandardMatrix::Bt601;

fn processing(err: impl std::fmt::Display) -> VideoError {
    VideoError::Processing(format!("colour conversion failed: {err}"))
}

/// I420 → packed RGB or RGBA (opaque). `format` must be RGB or RGBA.
pub(super) fn i420_to_packed(frame: &I420, format: VideoFormat) -> Result<Image, VideoError> {
    let bpp = format
        .bytes_per_pixel()
        .ok_or_else(|| processing("target format must be packed"))?;
    let (width, height) = frame.size();
    let chroma_stride = frame.chroma_width();
    let planar = YuvPlanarImage {
        y_plane: frame.y(),
        y_stride: width,
        u_plane: frame.u(),
        u_stride: chroma_stride,
        v_plane: frame.v(),
        v_stride: chroma_stride,
        width,
        height,
    };
    let mut data = vec![0u8; width as usize * height as usize * bpp];
    let stride = width * bpp as u32;
    match format {
        VideoFormat::Rgb => yuv::yuv420_to_rgb(&planar, &mut data, stride, RANGE, MATRIX),
        _ => yuv::yuv420_to_rgba(&planar, &mut data, stride, RANGE, MATRIX),
    }
    .map_err(processing)?;
    Ok(Image {
        width,
        height,
        format,
        data,
    })
}

/// Packed RGB or RGBA (already validated) → I420; alpha is ignored.
pub(super) fn packed_to_i420(image: &Image) -> Result<I420, VideoError> {
    let (width, height) = image.size();
    let mut frame = I420::black(width, height)?;
    let chroma_stride = frame.chroma_width();
    let (y, u, v) = frame.planes_mut();
    let mut planar = YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: width,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: chroma_stride,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: chroma_stride,
        width,
        height,
    };
    let mode = YuvConversionMode::Balanced;
    match image.format {
        VideoFormat::Rgb => {
            yuv::rgb_to_yuv420(&mut planar, &image.data, width * 3, RANGE, MATRIX, mode)
        }
        VideoFormat::Rgba => {
            yuv::rgba_to_yuv420(&mut planar, &image.data, width * 4, RANGE, MATRIX, mode)
        }
        VideoFormat::I420 => return Err(processing("source format must be packed")),
    }
    .map_err(processing)?;
    Ok(frame)
}

/// RGB → RGBA with an opaque alpha.
pub(super) fn rgb_to_rgba(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() / 3 * 4);
    for px in rgb.chunks_exact(3) {
        out.extend_from_slice(&[px[0], px[1], px[2], 255]);
    }
    out
}

/// RGBA → RGB, dropping alpha.
pub(super) fn rgba_to_rgb(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        out.extend_from_slice(&px[..3]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BT.601 limited range, by the book.
    fn reference_yuv([r, g, b]: [u8; 3]) -> [f64; 3] {
        let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
        let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
        let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
        let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
        [y, u, v]
    }

    fn solid(width: u32, height: u32, rgb: [u8; 3]) -> Image {
        Image::new(
            width,
            height,
            VideoFormat::Rgb,
            rgb.repeat(width as usize * height as usize),
        )
        .unwrap()
    }

    #[test]
    fn rgb_to_i420_is_bt601_limited_range() {
        for rgb in [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 255],
            [0, 0, 0],
            [128, 64, 200],
        ] {
            let frame = solid(4, 4, rgb).into_i420().unwrap();
            let [y, u, v] = reference_yuv(rgb);
            assert!((f64::from(frame.y()[0]) - y).abs() <= 1.0, "{rgb:?} Y");
            assert!((f64::from(frame.u()[0]) - u).abs() <= 1.0, "{rgb:?} U");
            assert!((f64::from(frame.v()[0]) - v).abs() <= 1.0, "{rgb:?} V");
        }
    }

    #[test]
    fn round_trips_within_rounding_any_size() {
        for (w, h) in [(1, 1), (2, 2), (3, 5), (7, 4), (16, 9), (33, 17)] {
            for rgb in [[255, 0, 0], [10, 200, 30], [255, 255, 255], [0, 0, 0]] {
                let image = solid(w, h, rgb);
                let frame = image.to_i420().unwrap();
                assert_eq!(frame.size(), (w, h));
                let back = frame.to_image(VideoFormat::Rgb).unwrap();
                assert_eq!(back.size(), (w, h));
                for (got, want) in back.data.iter().zip(&image.data) {
                    assert!(got.abs_diff(*want) <= 3, "{w}x{h} {rgb:?}: {got} vs {want}");
                }
                let rgba = frame.into_image(VideoFormat::Rgba).unwrap();
                assert!(rgba.data.chunks(4).all(|px| px[3] == 255));
                let again = rgba.into_i420().unwrap();
                assert_eq!(again.size(), (w, h));
            }
        }
    }

    #[test]
    fn rgb_rgba_shuffles() {
        let rgb = [1, 2, 3, 4, 5, 6];
        assert_eq!(rgb_to_rgba(&rgb), [1, 2, 3, 255, 4, 5, 6, 255]);
        assert_eq!(rgba_to_rgb(&[1, 2, 3, 9, 4, 5, 6, 9]), rgb);
        let image = Image::new(2, 1, VideoFormat::Rgba, vec![1, 2, 3, 0, 4, 5, 6, 0]).unwrap();
        assert_eq!(image.convert(VideoFormat::Rgb).unwrap().data, rgb);
    }

    #[test]
    fn i420_image_to_packed_and_back() {
        let image = solid(6, 4, [0, 0, 255]).convert(VideoFormat::I420).unwrap();
        assert_eq!(image.format, VideoFormat::I420);
        assert_eq!(image.data.len(), 36);
        let rgba = image.convert(VideoFormat::Rgba).unwrap();
        assert!(rgba.data.chunks(4).all(|px| px[2] > 250 && px[0] < 5));
        let odd = solid(5, 4, [0, 0, 255]);
        assert_eq!(
            odd.convert(VideoFormat::I420),
            Err(VideoError::OddI420Size {
                width: 5,
                height: 4
            })
        );
    }
}
