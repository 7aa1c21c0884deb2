//! Cheap checks and small rewrites of an offer before str0m parses it.
//!
//! Everything here is linear in the text and refuses absurd offers (thousands of
//! m-lines or candidates) before any expensive work, with a message that names
//! the problem.

use std::fmt;

/// The largest SDP offer accepted. Browsers send 3–10 kB; this is plenty of headroom.
pub const MAX_SDP_BYTES: usize = 128 * 1024;
/// The most m-lines accepted. The official client uses four.
pub const MAX_MEDIA_SECTIONS: usize = 32;
/// The most `a=candidate` lines accepted in one offer.
pub const MAX_CANDIDATES: usize = 256;
/// The longest `a=ice-ufrag` accepted, in bytes.
///
/// RFC 8839 allows 256 characters, but every connectivity check carries the STUN
/// USERNAME `<client ufrag>:<our 16-byte ufrag>`, and str0m's STUN encoder takes at
/// most 128 bytes there: it panics on a longer one. Browsers send 4 (Chrome) or 8
/// (Firefox) characters, libpeer 4.
pub const MAX_ICE_UFRAG_BYTES: usize = 128 - 1 - 16;

/// The kind of an m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// `m=audio`
    Audio,
    /// `m=video`
    Video,
    /// `m=application` (the data channel)
    Application,
    /// Anything else.
    Other,
}

/// One m-line of the offer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its kind.
    pub kind: SectionKind,
    /// Its `a=mid`, if it has one.
    pub mid: Option<String>,
}

/// What the offer holds, in m-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// The m-lines in order; the index is the transceiver index (0 audio, 1 camera, 2 screen).
    pub sections: Vec<Section>,
}

impl OfferSummary {
    /// The m-line index of `mid`.
    pub fn index_of(&self, mid: &str) -> Option<usize> {
        self.sections
            .iter()
            .position(|s| s.mid.as_deref() == Some(mid))
    }

    /// True when the offer has a video m-line.
    pub fn has_video(&self) -> bool {
        self.sections.iter().any(|s| s.kind == SectionKind::Video)
    }
}

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferError(pub String);

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OfferError {}

/// Checks the size and shape of an offer and lists its m-lines.
///
/// ```
/// use smallwebrtc::peer::offer::{inspect_offer, SectionKind};
///
/// let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
///            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
/// let summary = inspect_offer(sdp).unwrap();
/// assert_eq!(summary.sections[0].kind, SectionKind::Audio);
/// assert!(inspect_offer("hello").is_err());
/// ```
pub fn inspect_offer(sdp: &str) -> Result<OfferSummary, OfferError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(OfferError(format!(
            "SDP offer is {} bytes; the limit is {MAX_SDP_BYTES}",
            sdp.len()
        )));
    }
    if sdp.trim().is_empty() {
        return Err(OfferError("SDP offer is empty".into()));
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferError(
            "SDP offer must start with \"v=0\" (is this an SDP at all?)".into(),
        ));
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut candidates = 0usize;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            if sections.len() == MAX_MEDIA_SECTIONS {
                return Err(OfferError(format!(
                    "SDP offer has more than {MAX_MEDIA_SECTIONS} m-lines"
                )));
            }
            let kind = match rest.split(' ').next().unwrap_or("") {
                "audio" => SectionKind::Audio,
                "video" => SectionKind::Video,
                "application" => SectionKind::Application,
                _ => SectionKind::Other,
            };
            sections.push(Section { kind, mid: None });
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            if let Some(section) = sections.last_mut() {
                section.mid = Some(mid.trim().to_string());
            }
        } else if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
            let ufrag = ufrag.trim();
            if ufrag.len() > MAX_ICE_UFRAG_BYTES {
                return Err(OfferError(format!(
                    "SDP offer's a=ice-ufrag is {} bytes; the limit is {MAX_ICE_UFRAG_BYTES}",
                    ufrag.len()
                )));
            }
        } else if line.starts_with("a=candidate:") {
            candidates += 1;
            if candidates > MAX_CANDIDATES {
                return Err(OfferError(format!(
                    "SDP offer has more than {MAX_CANDIDATES} candidates"
                )));
            }
        }
    }
    if sections.is_empty() {
        return Err(OfferError(
            "SDP offer has no m-lines: nothing to negotiate (no audio, video or data channel)"
                .into(),
        ));
    }
    Ok(OfferSummary { sections })
}

/// Rewrites the offer into what str0m answers the way Pipecat's server does.
///
/// * **Receive only from m-line 2.** Pipecat's server answers `recvonly` on every
///   m-line from index 2 (screen share): the bot never sends there. A client that
///   offers `sendrecv` there gets a `recvonly` answer, which is what we express by
///   reading its offer as `sendonly`. m-lines 0 and 1 follow what the client offered.
/// * **`UDP/TLS/RTP/SAVP` read as `UDP/TLS/RTP/SAVPF`.** libpeer (the ESP32 client)
///   offers the profile without feedback; str0m parses only the `F` one. The answer
///   then says `SAVPF`, as aiortc's always does, and libpeer does not check it.
///
/// ```
/// use smallwebrtc::peer::offer::rewrite_offer;
///
/// let esp32 = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVP 111\r\na=mid:audio\r\na=sendrecv\r\n";
/// assert!(rewrite_offer(esp32).contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
/// ```
pub fn rewrite_offer(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut index: isize = -1;
    let mut application = false;
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = bare.strip_prefix("m=") {
            index += 1;
            application = rest.starts_with("application");
            if let Some((head, tail)) = rest.split_once(" UDP/TLS/RTP/SAVP ") {
                out.push_str("m=");
                out.push_str(head);
                out.push_str(" UDP/TLS/RTP/SAVPF ");
                out.push_str(tail);
                out.push_str(&line[bare.len()..]);
                continue;
            }
        }
        if index >= 2 && !application && (bare == "a=sendrecv" || bare == "a=recvonly") {
            // recvonly from the client means it wants to receive only; we never
            // send on these m-lines, so the only consistent answer is inactive.
            let replacement = if bare == "a=sendrecv" {
                "a=sendonly"
            } else {
                "a=inactive"
            };
            out.push_str(replacement);
            out.push_str(&line[bare.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JS_OFFER_SHAPE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1 2 3\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendrecv\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendrecv\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";

    #[test]
    fn lists_sections_in_order() {
        let s = inspect_offer(JS_OFFER_SHAPE).unwrap();
        let kinds: Vec<_> = s.sections.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SectionKind::Audio,
                SectionKind::Video,
                SectionKind::Video,
                SectionKind::Application
            ]
        );
        assert_eq!(s.index_of("2"), Some(2));
        assert!(s.has_video());
    }

    #[test]
    fn refuses_garbage_and_absurd_offers() {
        assert!(inspect_offer("").unwrap_err().0.contains("empty"));
        assert!(inspect_offer("not sdp").unwrap_err().0.contains("v=0"));
        assert!(inspect_offer("v=0\r\ns=-\r\n")
            .unwrap_err()
            .0
            .contains("no m-lines"));
        let many = format!(
            "v=0\r\n{}",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(100)
        );
        assert!(inspect_offer(&many).unwrap_err().0.contains("m-lines"));
        let cands = format!(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{}",
            "a=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n".repeat(300)
        );
        assert!(inspect_offer(&cands).unwrap_err().0.contains("candidates"));
        let huge = format!("v=0\r\n{}", "x".repeat(MAX_SDP_BYTES));
        assert!(inspect_offer(&huge).unwrap_err().0.contains("bytes"));
    }

    #[test]
    fn refuses_an_ice_ufrag_too_long_for_a_stun_username() {
        let offer = |ufrag: &str| {
            format!("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:{ufrag}\r\n")
        };
        assert!(inspect_offer(&offer(&"u".repeat(MAX_ICE_UFRAG_BYTES))).is_ok());
        let err = inspect_offer(&offer(&"u".repeat(MAX_ICE_UFRAG_BYTES + 1))).unwrap_err();
        assert!(err.0.contains("a=ice-ufrag is 112 bytes"), "{err}");
    }

    #[test]
    fn libpeer_profile_without_feedback_is_read_as_savpf() {
        let esp32 = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVP 111\r\na=mid:audio\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:datachannel\r\n";
        let out = rewrite_offer(esp32);
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio\r\n"));
        assert!(out.contains("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
        // Already SAVPF: untouched.
        assert_eq!(
            rewrite_offer(JS_OFFER_SHAPE),
            rewrite_offer(&rewrite_offer(JS_OFFER_SHAPE))
        );
    }

    #[test]
    fn screen_share_becomes_receive_only() {
        let out = rewrite_offer(JS_OFFER_SHAPE);
        let sections: Vec<&str> = out.split("m=").collect();
        assert!(sections[1].contains("a=sendrecv"));
        assert!(sections[2].contains("a=sendrecv"));
        assert!(sections[3].contains("a=sendonly\r\n"));
        assert!(!sections[3].contains("a=sendrecv"));
    }
}
