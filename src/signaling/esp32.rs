//! ESP32 mode: the SDP answer munging Pipecat's runner applies for `--esp32` clients
//! (`smallwebrtc_sdp_munging`), so that the small libpeer stack on the device can use it.
//!
//! Unlike the Python original, the host filter compares the candidate's address with the
//! configured host literally; the original used the host as an unescaped regular expression,
//! so `10.0.0.1` also matched `10a0b0c1` and `10.0.0.12`.

use std::net::IpAddr;

/// Rewrites an SDP **answer** for an ESP32 client.
///
/// 1. Every line containing `sha-384` or `sha-512` is dropped, leaving only the `sha-256`
///    fingerprint (the device handles just one).
/// 2. If `host` is `Some` and not blank, an `a=candidate` line is kept only if its
///    connection address is `host` (the same text, or the same IP address written another
///    way) and it has no `raddr`, i.e. only host candidates on that address survive;
///    server-reflexive and relay candidates, other interfaces and other families are
///    dropped. With `None` every candidate is kept.
///
/// Everything else, including `a=end-of-candidates` and `c=` lines, is kept. Lines are split
/// on `\n` (a trailing `\r` is removed), empty lines are dropped, and each kept line is
/// followed by `\r\n`.
///
/// ```
/// use smallwebrtc::signaling::esp32::munge_answer_for_esp32;
///
/// let answer = "v=0\n\
///     a=fingerprint:sha-256 AA:BB\n\
///     a=fingerprint:sha-384 CC:DD\n\
///     a=candidate:1 1 udp 2130706431 192.168.1.20 5000 typ host\n\
///     a=candidate:2 1 udp 2130706431 10.0.0.1 5000 typ host\n\
///     a=candidate:3 1 udp 1694498815 203.0.113.7 5000 typ srflx raddr 192.168.1.20 rport 5000\n\
///     a=end-of-candidates\n";
/// assert_eq!(
///     munge_answer_for_esp32(answer, Some("192.168.1.20")),
///     "v=0\r\n\
///      a=fingerprint:sha-256 AA:BB\r\n\
///      a=candidate:1 1 udp 2130706431 192.168.1.20 5000 typ host\r\n\
///      a=end-of-candidates\r\n"
/// );
/// ```
pub fn munge_answer_for_esp32(sdp: &str, host: Option<&str>) -> String {
    let host = host.map(str::trim).filter(|h| !h.is_empty());
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.contains("sha-384") || line.contains("sha-512") {
            continue;
        }
        if let Some(host) = host {
            if line.starts_with("a=candidate") && !keeps_candidate(line, host) {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// Whether an `a=candidate:` line is a candidate on `host` without a related address.
///
/// The grammar is `a=candidate:<foundation> <component> <transport> <priority> <address>
/// <port> typ <type> [raddr <addr> rport <port>] …`, so the address is the fifth field.
fn keeps_candidate(line: &str, host: &str) -> bool {
    let mut fields = line.split_whitespace();
    if fields.clone().any(|field| field == "raddr") {
        return false;
    }
    fields
        .nth(4)
        .is_some_and(|address| same_address(address, host))
}

fn same_address(address: &str, host: &str) -> bool {
    if address == host {
        return true;
    }
    match (address.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => address.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An aiortc-style answer: two m-lines, three fingerprints each, host candidates on
    /// 127.0.0.1, 192.168.1.20 and ::1, and a server-reflexive candidate with raddr.
    const ANSWER: &str = "v=0\r\n\
o=- 3918237415 3918237415 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=msid-semantic:WMS *\r\n\
m=audio 51000 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 192.168.1.20\r\n\
a=sendrecv\r\n\
a=mid:0\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=candidate:a1 1 udp 2130706431 127.0.0.1 51000 typ host\r\n\
a=candidate:b2 1 udp 2130706431 192.168.1.20 51000 typ host\r\n\
a=candidate:c3 1 udp 2130706431 ::1 51001 typ host\r\n\
a=candidate:d4 1 udp 1694498815 203.0.113.7 51000 typ srflx raddr 192.168.1.20 rport 51000\r\n\
a=end-of-candidates\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:0123456789abcdef01234567\r\n\
a=fingerprint:sha-256 11:22:33\r\n\
a=fingerprint:sha-384 44:55:66\r\n\
a=fingerprint:sha-512 77:88:99\r\n\
a=setup:active\r\n\
m=application 51000 DTLS/SCTP 5000\r\n\
c=IN IP4 192.168.1.20\r\n\
a=mid:1\r\n\
a=sctpmap:5000 webrtc-datachannel 65535\r\n\
a=max-message-size:65536\r\n\
a=candidate:a1 1 udp 2130706431 127.0.0.1 51000 typ host\r\n\
a=candidate:b2 1 udp 2130706431 192.168.1.20 51000 typ host\r\n\
a=candidate:c3 1 udp 2130706431 ::1 51001 typ host\r\n\
a=candidate:d4 1 udp 1694498815 203.0.113.7 51000 typ srflx raddr 192.168.1.20 rport 51000\r\n\
a=end-of-candidates\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:0123456789abcdef01234567\r\n\
a=fingerprint:sha-256 11:22:33\r\n\
a=fingerprint:sha-384 44:55:66\r\n\
a=fingerprint:sha-512 77:88:99\r\n\
a=setup:active\r\n";

    fn lines(sdp: &str) -> Vec<&str> {
        sdp.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    fn candidates(sdp: &str) -> Vec<&str> {
        lines(sdp)
            .into_iter()
            .filter(|l| l.starts_with("a=candidate"))
            .collect()
    }

    #[test]
    fn keeps_only_sha256_fingerprints() {
        let out = munge_answer_for_esp32(ANSWER, None);
        let fingerprints: Vec<_> = lines(&out)
            .into_iter()
            .filter(|l| l.starts_with("a=fingerprint"))
            .collect();
        assert_eq!(
            fingerprints,
            vec![
                "a=fingerprint:sha-256 11:22:33",
                "a=fingerprint:sha-256 11:22:33"
            ]
        );
        assert!(!out.contains("sha-384"));
        assert!(!out.contains("sha-512"));
    }

    #[test]
    fn host_filter_keeps_matching_host_candidates() {
        let out = munge_answer_for_esp32(ANSWER, Some("192.168.1.20"));
        assert_eq!(
            candidates(&out),
            vec![
                "a=candidate:b2 1 udp 2130706431 192.168.1.20 51000 typ host",
                "a=candidate:b2 1 udp 2130706431 192.168.1.20 51000 typ host",
            ]
        );
        // Everything that is not a candidate or a long fingerprint is untouched.
        let expected: Vec<&str> = lines(ANSWER)
            .into_iter()
            .filter(|l| {
                !(l.contains("sha-384") || l.contains("sha-512"))
                    && (!l.starts_with("a=candidate") || l.contains(" 192.168.1.20 51000 typ host"))
            })
            .collect();
        assert_eq!(lines(&out), expected);
        assert_eq!(
            lines(&out).iter().filter(|l| l.starts_with("c=")).count(),
            2
        );
        assert_eq!(
            lines(&out)
                .iter()
                .filter(|l| **l == "a=end-of-candidates")
                .count(),
            2
        );
    }

    #[test]
    fn host_filter_ipv6_and_loopback() {
        let out = munge_answer_for_esp32(ANSWER, Some("::1"));
        assert_eq!(candidates(&out).len(), 2);
        assert!(candidates(&out).iter().all(|c| c.contains(" ::1 ")));
        // The same IPv6 address written another way still matches.
        let out = munge_answer_for_esp32(ANSWER, Some("0:0:0:0:0:0:0:1"));
        assert_eq!(candidates(&out).len(), 2);
        let out = munge_answer_for_esp32(ANSWER, Some("127.0.0.1"));
        assert!(candidates(&out).iter().all(|c| c.contains(" 127.0.0.1 ")));
        assert_eq!(candidates(&out).len(), 2);
    }

    #[test]
    fn srflx_dropped_even_if_its_address_matches() {
        let out = munge_answer_for_esp32(ANSWER, Some("203.0.113.7"));
        assert!(candidates(&out).is_empty());
    }

    #[test]
    fn host_is_not_a_regex() {
        let sdp = "v=0\r\n\
a=candidate:1 1 udp 2130706431 10a0b0c1 5000 typ host\r\n\
a=candidate:2 1 udp 2130706431 10.0.0.1 5000 typ host\r\n";
        assert_eq!(
            candidates(&munge_answer_for_esp32(sdp, Some("10.0.0.1"))),
            vec!["a=candidate:2 1 udp 2130706431 10.0.0.1 5000 typ host"]
        );
        // Regex metacharacters in the host are plain text.
        assert!(candidates(&munge_answer_for_esp32(sdp, Some("10.*"))).is_empty());
        assert!(candidates(&munge_answer_for_esp32(sdp, Some("(["))).is_empty());
    }

    #[test]
    fn host_must_be_the_whole_address() {
        let sdp = "a=candidate:1 1 udp 2130706431 10.0.0.12 5000 typ host\r\n\
a=candidate:2 1 udp 2130706431 110.0.0.1 5000 typ host\r\n\
a=candidate:3 1 udp 2130706431 10.0.0.1 5000 typ host\r\n\
a=candidate:4 1 udp 10 1 10.0.0.1 typ host\r\n";
        assert_eq!(
            candidates(&munge_answer_for_esp32(sdp, Some("10.0.0.1"))),
            vec!["a=candidate:3 1 udp 2130706431 10.0.0.1 5000 typ host"]
        );
    }

    #[test]
    fn none_or_blank_host_keeps_all_candidates() {
        for host in [None, Some(""), Some("   ")] {
            let out = munge_answer_for_esp32(ANSWER, host);
            assert_eq!(candidates(&out), candidates(ANSWER));
        }
    }

    #[test]
    fn truncated_candidates_are_dropped_when_filtering() {
        let sdp = "a=candidate:1 1 udp\r\na=candidate\r\na=mid:0\r\n";
        assert_eq!(munge_answer_for_esp32(sdp, Some("10.0.0.1")), "a=mid:0\r\n");
        assert_eq!(munge_answer_for_esp32(sdp, None), sdp);
    }

    #[test]
    fn line_endings_normalized() {
        let sdp = "v=0\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\n\r\n\nt=0 0";
        assert_eq!(
            munge_answer_for_esp32(sdp, None),
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        );
        let bare_lf = ANSWER.replace("\r\n", "\n");
        assert_eq!(
            munge_answer_for_esp32(&bare_lf, Some("::1")),
            munge_answer_for_esp32(ANSWER, Some("::1"))
        );
        // 4 long fingerprints removed, every other line kept and CRLF-terminated.
        let out = munge_answer_for_esp32(ANSWER, None);
        assert_eq!(out.matches("\r\n").count(), lines(ANSWER).len() - 4);
        assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
        assert_eq!(munge_answer_for_esp32("", None), "");
        assert!(munge_answer_for_esp32(ANSWER, None).ends_with("a=setup:active\r\n"));
    }
}
