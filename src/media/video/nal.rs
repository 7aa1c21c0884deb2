//! H.264 Annex-B helpers, in plain Rust (available with or without the `h264` feature): split
//! an access unit into NAL units, read their types, tell a keyframe.

/// NAL unit type of an IDR slice (a keyframe).
pub(super) const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
#[cfg(test)]
pub(super) const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
#[cfg(test)]
pub(super) const NAL_PPS: u8 = 8;

/// The NAL units of an Annex-B byte stream, without their start codes (`00 00 01` or
/// `00 00 00 01`) or trailing zero bytes. Bytes before the first start code are skipped; empty
/// units are left out.
///
/// ```
/// use smallwebrtc::media::video::{h264_nal_type, h264_nal_units};
/// let au = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88];
/// let nals: Vec<&[u8]> = h264_nal_units(&au).collect();
/// assert_eq!(nals, [&[0x67, 0x42][..], &[0x68, 0xce], &[0x65, 0x88]]);
/// assert_eq!(h264_nal_type(nals[2]), Some(5)); // IDR slice
/// ```
pub fn h264_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut rest = match find_start_code(data) {
        Some((_, after)) => &data[after..],
        None => &[][..],
    };
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let (unit, next) = match find_start_code(rest) {
            Some((at, after)) => (&rest[..at], &rest[after..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let end = unit.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if end > 0 {
            return Some(&unit[..end]);
        }
    })
}

/// Where the first `00 00 01` start code is: (its start, the index just after it).
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    data.windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|at| (at, at + 3))
}

/// The type of a NAL unit (the low 5 bits of its first byte): 1 non-IDR slice, 5 IDR slice, 7
/// SPS, 8 PPS, and so on. `None` for an empty unit.
pub fn h264_nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Whether an Annex-B access unit holds an IDR slice, so it decodes on its own (given SPS and
/// PPS, which OpenH264 puts in every IDR access unit).
///
/// ```
/// use smallwebrtc::media::video::h264_is_keyframe;
/// assert!(h264_is_keyframe(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 0x88]));
/// assert!(!h264_is_keyframe(&[0, 0, 0, 1, 0x41, 0x9a]));
/// assert!(!h264_is_keyframe(&[0x65, 0x88])); // no start code: not Annex-B
/// ```
pub fn h264_is_keyframe(data: &[u8]) -> bool {
    h264_nal_units(data).any(|nal| h264_nal_type(nal) == Some(NAL_IDR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            9, 9, // junk before the first start code
            0, 0, 1, 0x67, 1, 2, // SPS
            0, 0, 0, 1, 0x68, 3, // PPS
            0, 0, 1, // empty unit
            0, 0, 0, 1, 0x65, 0, 0, 3, 1, 0, 0, // IDR with an emulation byte, trailing zeros
        ];
        let nals: Vec<&[u8]> = h264_nal_units(&data).collect();
        assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 0, 0, 3, 1]]);
        let types: Vec<_> = nals.iter().filter_map(|n| h264_nal_type(n)).collect();
        assert_eq!(types, [NAL_SPS, NAL_PPS, NAL_IDR]);
    }

    #[test]
    fn degenerate_input() {
        assert_eq!(h264_nal_units(&[]).count(), 0);
        assert_eq!(h264_nal_units(&[0, 0, 1]).count(), 0);
        assert_eq!(h264_nal_units(&[0, 0, 0, 0]).count(), 0);
        assert_eq!(h264_nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(h264_nal_type(&[]), None);
        assert!(!h264_is_keyframe(&[0, 0, 1, 0x41]));
    }
}
