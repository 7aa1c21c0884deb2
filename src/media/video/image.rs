//! The picture types: [`VideoFormat`], the packed [`Image`] that Pipecat frames carry, and the
//! planar [`I420`] frame that codecs read and write.

use std::fmt;
use std::str::FromStr;

use super::{check_size, convert, Scaler, VideoError};

/// The pixel format of an [`Image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoFormat {
    /// Packed 8-bit R, G, B, row-major, no padding: Pipecat's `"RGB"` (PIL's mode name).
    Rgb,
    /// Packed 8-bit R, G, B, A, row-major, no padding: Pipecat's `"RGBA"`.
    Rgba,
    /// Planar YUV 4:2:0: the full Y plane, then the half-size U and V planes, no padding.
    /// BT.601 limited range, as browsers send it.
    I420,
}

impl VideoFormat {
    /// The canonical name: "RGB", "RGBA" or "I420".
    pub const fn as_str(self) -> &'static str {
        match self {
            VideoFormat::Rgb => "RGB",
            VideoFormat::Rgba => "RGBA",
            VideoFormat::I420 => "I420",
        }
    }

    /// Bytes per pixel of the packed formats, `None` for I420.
    pub const fn bytes_per_pixel(self) -> Option<usize> {
        match self {
            VideoFormat::Rgb => Some(3),
            VideoFormat::Rgba => Some(4),
            VideoFormat::I420 => None,
        }
    }

    /// Parses a format name: "RGB", "RGBA", "I420" or its alias "YUV420", in any letter case.
    ///
    /// # Errors
    ///
    /// [`VideoError::UnknownFormat`], naming the format.
    ///
    /// ```
    /// use smallwebrtc::media::video::{VideoError, VideoFormat};
    /// assert_eq!(VideoFormat::parse("RGB"), Ok(VideoFormat::Rgb));
    /// assert_eq!("yuv420".parse(), Ok(VideoFormat::I420));
    /// let err = VideoFormat::parse("BGR").unwrap_err();
    /// assert_eq!(err, VideoError::UnknownFormat("BGR".into()));
    /// assert!(err.to_string().contains("\"BGR\""));
    /// ```
    pub fn parse(name: &str) -> Result<Self, VideoError> {
        const NAMES: [(&str, VideoFormat); 4] = [
            ("RGB", VideoFormat::Rgb),
            ("RGBA", VideoFormat::Rgba),
            ("I420", VideoFormat::I420),
            ("YUV420", VideoFormat::I420),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, format)| format)
            .ok_or_else(|| VideoError::UnknownFormat(name.to_owned()))
    }

    /// The byte length of a `width × height` picture in this format, or `None` if it does not
    /// fit in memory. For I420 the chroma planes are rounded up, as in [`I420`].
    pub fn buffer_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self.bytes_per_pixel() {
            Some(bpp) => w.checked_mul(h)?.checked_mul(bpp),
            None => {
                let chroma = w.div_ceil(2).checked_mul(h.div_ceil(2))?;
                w.checked_mul(h)?.checked_add(chroma.checked_mul(2)?)
            }
        }
    }
}

impl fmt::Display for VideoFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VideoFormat {
    type Err = VideoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VideoFormat::parse(s)
    }
}

/// A picture as Pipecat frames carry it (`UserImageRawFrame`, `OutputImageRawFrame`): a size, a
/// format and the pixel bytes.
///
/// The fields are public, as in Pipecat; every function that reads an image checks it first
/// with [`Image::validate`]. [`Image::new`] checks on the way in.
///
/// ```
/// use smallwebrtc::media::video::{Image, VideoError, VideoFormat};
/// let image = Image::new(2, 2, VideoFormat::Rgb, vec![0; 12])?;
/// assert_eq!(image.data.len(), 12);
///
/// let err = Image::new(2, 2, VideoFormat::Rgba, vec![0; 12]).unwrap_err();
/// assert!(err.to_string().contains("needs 16 bytes of pixel data, got 12"));
/// assert_eq!(
///     Image::new(3, 2, VideoFormat::I420, vec![0; 9]),
///     Err(VideoError::OddI420Size { width: 3, height: 2 })
/// );
/// # Ok::<(), VideoError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How [`data`](Image::data) is laid out.
    pub format: VideoFormat,
    /// The pixels, row-major, no padding between rows.
    pub data: Vec<u8>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl Image {
    /// A checked image.
    ///
    /// # Errors
    ///
    /// As [`Image::validate`].
    pub fn new(
        width: u32,
        height: u32,
        format: VideoFormat,
        data: Vec<u8>,
    ) -> Result<Self, VideoError> {
        let image = Image {
            width,
            height,
            format,
            data,
        };
        image.validate()?;
        Ok(image)
    }

    /// The byte length a `width × height` image in `format` must have.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidSize`] (zero or above [`MAX_DIMENSION`](super::MAX_DIMENSION)) or
    /// [`VideoError::OddI420Size`].
    ///
    /// ```
    /// use smallwebrtc::media::video::{Image, VideoFormat};
    /// assert_eq!(Image::expected_len(640, 480, VideoFormat::Rgb), Ok(921_600));
    /// assert_eq!(Image::expected_len(640, 480, VideoFormat::I420), Ok(460_800));
    /// assert!(Image::expected_len(0, 480, VideoFormat::Rgb).is_err());
    /// ```
    pub fn expected_len(width: u32, height: u32, format: VideoFormat) -> Result<usize, VideoError> {
        check_size(width, height)?;
        if format == VideoFormat::I420 && !(width.is_multiple_of(2) && height.is_multiple_of(2)) {
            return Err(VideoError::OddI420Size { width, height });
        }
        format
            .buffer_len(width, height)
            .ok_or(VideoError::InvalidSize { width, height })
    }

    /// Checks that the size is valid for the format and that the data has exactly the length
    /// they call for.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidSize`], [`VideoError::OddI420Size`], or
    /// [`VideoError::WrongDataLength`] (which says the expected and the actual length).
    pub fn validate(&self) -> Result<(), VideoError> {
        let expected = Image::expected_len(self.width, self.height, self.format)?;
        if self.data.len() != expected {
            return Err(VideoError::WrongDataLength {
                format: self.format,
                width: self.width,
                height: self.height,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }

    /// `(width, height)`.
    pub const fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The image in `format`. When it already is in that format it is returned as it is, without
    /// copying. RGB ↔ RGBA adds an opaque alpha or drops it; to and from I420 use BT.601 limited
    /// range.
    ///
    /// # Errors
    ///
    /// As [`Image::validate`]; converting to I420 also needs an even width and height
    /// ([`VideoError::OddI420Size`]).
    ///
    /// ```
    /// use smallwebrtc::media::video::{Image, VideoFormat};
    /// let red = Image::new(2, 2, VideoFormat::Rgb, [255, 0, 0].repeat(4))?;
    /// let rgba = red.clone().convert(VideoFormat::Rgba)?;
    /// assert_eq!(&rgba.data[..4], &[255, 0, 0, 255]);
    /// let yuv = red.convert(VideoFormat::I420)?;
    /// assert_eq!(yuv.data, [81, 81, 81, 81, 90, 240]); // BT.601 limited-range red
    /// # Ok::<(), smallwebrtc::media::video::VideoError>(())
    /// ```
    pub fn convert(self, format: VideoFormat) -> Result<Image, VideoError> {
        self.validate()?;
        if self.format == format {
            return Ok(self);
        }
        if format == VideoFormat::I420 {
            return self.into_i420()?.into_image(VideoFormat::I420);
        }
        let data = match self.format {
            VideoFormat::I420 => return I420::from_valid_image(self).into_image(format),
            VideoFormat::Rgb => convert::rgb_to_rgba(&self.data),
            VideoFormat::Rgba => convert::rgba_to_rgb(&self.data),
        };
        Ok(Image {
            format,
            data,
            ..self
        })
    }

    /// The image as a planar [`I420`] frame: a move of the bytes when it is I420 already, else a
    /// BT.601 limited-range conversion (any size, odd ones too).
    ///
    /// # Errors
    ///
    /// As [`Image::validate`].
    pub fn into_i420(self) -> Result<I420, VideoError> {
        self.validate()?;
        match self.format {
            VideoFormat::I420 => Ok(I420::from_valid_image(self)),
            VideoFormat::Rgb | VideoFormat::Rgba => convert::packed_to_i420(&self),
        }
    }

    /// As [`Image::into_i420`], leaving the image in place (an I420 image is copied).
    ///
    /// # Errors
    ///
    /// As [`Image::validate`].
    pub fn to_i420(&self) -> Result<I420, VideoError> {
        self.validate()?;
        match self.format {
            VideoFormat::I420 => Ok(I420::from_valid_image(self.clone())),
            VideoFormat::Rgb | VideoFormat::Rgba => convert::packed_to_i420(self),
        }
    }

    /// The image scaled to `width × height`, or the image itself when it already has that size.
    /// A shortcut for [`Scaler::resize`] with a new scaler; keep a [`Scaler`] for repeated use.
    ///
    /// # Errors
    ///
    /// As [`Scaler::resize`].
    pub fn resize(self, width: u32, height: u32) -> Result<Image, VideoError> {
        Scaler::new().resize(self, width, height)
    }
}

/// A planar YUV 4:2:0 picture, 8 bits per sample: what decoders produce and encoders take.
///
/// The planes are stored one after the other without padding: Y (`width × height`), then U and V
/// (`ceil(width / 2) × ceil(height / 2)` each). Any size from 1×1 to
/// [`MAX_DIMENSION`](super::MAX_DIMENSION) works, odd ones included (a browser may send those);
/// for an even size the bytes are exactly those of an I420 [`Image`], so converting between the
/// two is a move.
///
/// ```
/// use smallwebrtc::media::video::{I420, VideoFormat};
/// let frame = I420::black(5, 3)?;
/// assert_eq!((frame.y().len(), frame.u().len(), frame.v().len()), (15, 6, 6));
/// let rgb = frame.into_image(VideoFormat::Rgb)?;
/// assert!(rgb.data.iter().all(|&c| c == 0));
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct I420 {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl fmt::Debug for I420 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I420")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl I420 {
    /// A frame over `data`, the three planes one after the other without padding.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidSize`], or [`VideoError::WrongDataLength`] if `data` does not have
    /// the length of the three planes.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, VideoError> {
        let expected = Self::len_for(width, height)?;
        if data.len() != expected {
            return Err(VideoError::WrongDataLength {
                format: VideoFormat::I420,
                width,
                height,
                expected,
                actual: data.len(),
            });
        }
        Ok(I420 {
            width,
            height,
            data,
        })
    }

    /// A black frame (Y = 16, U = V = 128: limited-range black).
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidSize`].
    pub fn black(width: u32, height: u32) -> Result<Self, VideoError> {
        let len = Self::len_for(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![128; len];
        data[..luma].fill(16);
        Ok(I420 {
            width,
            height,
            data,
        })
    }

    /// A frame copied from three planes with strides (bytes per row), as codec libraries hand
    /// them out. Rows past the picture's width are ignored.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidSize`], or [`VideoError::InvalidPlane`] if a stride is narrower than
    /// its plane or a plane is too short.
    #[allow(clippy::too_many_arguments)]
    pub fn from_planes(
        width: u32,
        height: u32,
        y: &[u8],
        y_stride: usize,
        u: &[u8],
        u_stride: usize,
        v: &[u8],
        v_stride: usize,
    ) -> Result<Self, VideoError> {
        let len = Self::len_for(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = Vec::with_capacity(len);
        for (plane, name, stride, pw, ph) in [
            (y, "Y", y_stride, w, h),
            (u, "U", u_stride, cw, ch),
            (v, "V", v_stride, cw, ch),
        ] {
            // The last row needs only `pw` bytes, not a whole stride.
            let needed = stride.checked_mul(ph - 1).and_then(|n| n.checked_add(pw));
            if stride < pw || needed.is_none_or(|n| plane.len() < n) {
                return Err(VideoError::InvalidPlane {
                    plane: name,
                    width,
                    height,
                });
            }
            for row in plane.chunks(stride).take(ph) {
                data.extend_from_slice(&row[..pw]);
            }
        }
        Ok(I420 {
            width,
            height,
            data,
        })
    }

    /// The byte length of a frame of this size.
    fn len_for(width: u32, height: u32) -> Result<usize, VideoError> {
        check_size(width, height)?;
        VideoFormat::I420
            .buffer_len(width, height)
            .ok_or(VideoError::InvalidSize { width, height })
    }

    /// Takes the bytes of an image already checked to be I420 (so even-sized).
    pub(super) fn from_valid_image(image: Image) -> Self {
        debug_assert_eq!(image.format, VideoFormat::I420);
        I420 {
            width: image.width,
            height: image.height,
            data: image.data,
        }
    }

    /// Width in pixels.
    pub const fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub const fn height(&self) -> u32 {
        self.height
    }

    /// `(width, height)`.
    pub const fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The width of the U and V planes: `ceil(width / 2)`. Also their stride.
    pub const fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// The height of the U and V planes: `ceil(height / 2)`.
    pub const fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    fn chroma_len(&self) -> usize {
        self.chroma_width() as usize * self.chroma_height() as usize
    }

    /// The Y plane; its stride is [`width`](I420::width).
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    /// The U (Cb) plane; its stride is [`chroma_width`](I420::chroma_width).
    pub fn u(&self) -> &[u8] {
        let start = self.luma_len();
        &self.data[start..start + self.chroma_len()]
    }

    /// The V (Cr) plane; its stride is [`chroma_width`](I420::chroma_width).
    pub fn v(&self) -> &[u8] {
        &self.data[self.luma_len() + self.chroma_len()..]
    }

    /// The three planes, writable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (luma, chroma) = (self.luma_len(), self.chroma_len());
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    /// All three planes, one after the other.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The bytes of all three planes, one after the other.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The picture as an [`Image`] in `format`. Asking for I420 moves the planes without any
    /// conversion; RGB and RGBA use BT.601 limited range (what browsers send), with an opaque
    /// alpha.
    ///
    /// # Errors
    ///
    /// [`VideoError::OddI420Size`] when asking for I420 with an odd width or height (ask for RGB
    /// instead: it handles any size).
    pub fn into_image(self, format: VideoFormat) -> Result<Image, VideoError> {
        match format {
            VideoFormat::I420 => {
                if !(self.width.is_multiple_of(2) && self.height.is_multiple_of(2)) {
                    return Err(VideoError::OddI420Size {
                        width: self.width,
                        height: self.height,
                    });
                }
                Ok(Image {
                    width: self.width,
                    height: self.height,
                    format,
                    data: self.data,
                })
            }
            VideoFormat::Rgb | VideoFormat::Rgba => convert::i420_to_packed(&self, format),
        }
    }

    /// As [`I420::into_image`], leaving the frame in place.
    ///
    /// # Errors
    ///
    /// As [`I420::into_image`].
    pub fn to_image(&self, format: VideoFormat) -> Result<Image, VideoError> {
        match format {
            VideoFormat::I420 => self.clone().into_image(format),
            VideoFormat::Rgb | VideoFormat::Rgba => convert::i420_to_packed(self, format),
        }
    }

    /// The frame scaled to `width × height`, or the frame itself when it already has that size.
    /// A shortcut for [`Scaler::resize_i420`] with a new scaler.
    ///
    /// # Errors
    ///
    /// As [`Scaler::resize_i420`].
    pub fn resize(self, width: u32, height: u32) -> Result<I420, VideoError> {
        Scaler::new().resize_i420(self, width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        for (name, format) in [
            ("RGB", VideoFormat::Rgb),
            ("rgba", VideoFormat::Rgba),
            ("I420", VideoFormat::I420),
            ("YUV420", VideoFormat::I420),
            ("yuv420", VideoFormat::I420),
        ] {
            assert_eq!(name.parse::<VideoFormat>(), Ok(format));
        }
        for bad in ["", "RGB ", "NV12", "BGRA", "jpeg"] {
            let err = VideoFormat::parse(bad).unwrap_err();
            assert_eq!(err, VideoError::UnknownFormat(bad.to_owned()));
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(VideoFormat::I420.to_string(), "I420");
        assert_eq!(VideoFormat::Rgba.as_str(), "RGBA");
    }

    #[test]
    fn buffer_lengths() {
        assert_eq!(VideoFormat::Rgb.buffer_len(4, 2), Some(24));
        assert_eq!(VideoFormat::Rgba.buffer_len(4, 2), Some(32));
        assert_eq!(VideoFormat::I420.buffer_len(4, 2), Some(12));
        assert_eq!(VideoFormat::I420.buffer_len(5, 3), Some(15 + 2 * 6));
        assert_eq!(VideoFormat::I420.buffer_len(1, 1), Some(3));
    }

    #[test]
    fn image_validation() {
        assert!(Image::new(4, 2, VideoFormat::Rgb, vec![0; 24]).is_ok());
        assert!(Image::new(3, 3, VideoFormat::Rgba, vec![0; 36]).is_ok());
        let err = Image::new(4, 2, VideoFormat::Rgb, vec![0; 23]).unwrap_err();
        assert_eq!(
            err,
            VideoError::WrongDataLength {
                format: VideoFormat::Rgb,
                width: 4,
                height: 2,
                expected: 24,
                actual: 23
            }
        );
        assert_eq!(
            err.to_string(),
            "RGB image of 4x2 needs 24 bytes of pixel data, got 23"
        );
        assert_eq!(
            Image::new(0, 2, VideoFormat::Rgb, vec![]),
            Err(VideoError::InvalidSize {
                width: 0,
                height: 2
            })
        );
        assert!(Image::new(9000, 2, VideoFormat::Rgb, vec![0; 54_000]).is_err());
        assert_eq!(
            Image::new(4, 3, VideoFormat::I420, vec![0; 18]),
            Err(VideoError::OddI420Size {
                width: 4,
                height: 3
            })
        );
        assert!(VideoError::OddI420Size {
            width: 4,
            height: 3
        }
        .to_string()
        .contains("even"));
        // Public fields can be set wrong after construction: every reader checks.
        let mut image = Image::new(2, 2, VideoFormat::Rgb, vec![0; 12]).unwrap();
        image.width = 3;
        assert!(image.validate().is_err());
        assert!(image.clone().convert(VideoFormat::Rgba).is_err());
        assert!(image.to_i420().is_err());
        assert!(image.into_i420().is_err());
    }

    #[test]
    fn i420_planes() {
        let mut frame = I420::black(5, 3).unwrap();
        assert_eq!(frame.chroma_width(), 3);
        assert_eq!(frame.chroma_height(), 2);
        assert!(frame.y().iter().all(|&b| b == 16));
        assert!(frame.u().iter().chain(frame.v()).all(|&b| b == 128));
        let (y, u, v) = frame.planes_mut();
        y[0] = 1;
        u[0] = 2;
        v[5] = 3;
        assert_eq!(frame.y()[0], 1);
        assert_eq!(frame.u()[0], 2);
        assert_eq!(frame.v()[5], 3);
        assert_eq!(frame.data().len(), 27);
        assert!(I420::new(5, 3, vec![0; 26]).is_err());
        assert!(I420::new(5, 3, vec![0; 27]).is_ok());
        assert!(I420::black(0, 3).is_err());
        assert_eq!(format!("{frame:?}"), "I420 { width: 5, height: 3, .. }");
    }

    #[test]
    fn i420_from_strided_planes() {
        // 3x3: Y stride 4, chroma 2x2 with stride 3; the last rows are short.
        let y = [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9];
        let u = [10, 11, 0, 12, 13];
        let v = [20, 21, 0, 22, 23];
        let frame = I420::from_planes(3, 3, &y, 4, &u, 3, &v, 3).unwrap();
        assert_eq!(frame.y(), &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(frame.u(), &[10, 11, 12, 13]);
        assert_eq!(frame.v(), &[20, 21, 22, 23]);
        // Too short, or a stride narrower than the plane.
        assert!(matches!(
            I420::from_planes(3, 3, &y[..10], 4, &u, 3, &v, 3),
            Err(VideoError::InvalidPlane { plane: "Y", .. })
        ));
        assert!(matches!(
            I420::from_planes(3, 3, &y, 4, &u, 1, &v, 3),
            Err(VideoError::InvalidPlane { plane: "U", .. })
        ));
        assert!(I420::from_planes(3, 3, &y, usize::MAX, &u, 3, &v, 3).is_err());
    }

    #[test]
    fn i420_image_round_trip_is_a_move() {
        let frame = I420::black(4, 2).unwrap();
        let image = frame.clone().into_image(VideoFormat::I420).unwrap();
        assert_eq!(image.data, frame.data());
        assert_eq!(image.clone().into_i420().unwrap(), frame);
        assert_eq!(image.to_i420().unwrap(), frame);
        assert_eq!(frame.to_image(VideoFormat::I420).unwrap(), image);
        assert_eq!(
            I420::black(5, 4).unwrap().into_image(VideoFormat::I420),
            Err(VideoError::OddI420Size {
                width: 5,
                height: 4
            })
        );
    }

    #[test]
    fn same_format_conversion_is_a_no_op() {
        let image = Image::new(2, 2, VideoFormat::Rgb, (0..12).collect()).unwrap();
        let ptr = image.data.as_ptr();
        let same = image.convert(VideoFormat::Rgb).unwrap();
        assert_eq!(same.data.as_ptr(), ptr);
    }

    #[test]
    fn debug_hides_pixels() {
        let image = Image::new(2, 2, VideoFormat::Rgb, vec![0; 12]).unwrap();
        assert_eq!(
            format!("{image:?}"),
            "Image { width: 2, height: 2, format: Rgb, data_len: 12 }"
        );
    }
}
