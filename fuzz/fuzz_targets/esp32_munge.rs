//! ESP32 answer munging (`munge_answer_for_esp32`) on arbitrary SDP text and hosts.
//!
//! Input: the first line is the configured `--host`, the rest the SDP; an input that
//! does not start with `H` munges with no host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smallwebrtc::signaling::esp32::munge_answer_for_esp32;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host, sdp) = match text.strip_prefix('H') {
        Some(rest) => match rest.split_once('\n') {
            Some((host, sdp)) => (Some(host), sdp),
            None => (Some(rest), ""),
        },
        None => (None, text),
    };
    let out = munge_answer_for_esp32(sdp, host);
    // The documented shape of the result.
    assert!(!out.contains("sha-384") && !out.contains("sha-512"));
    assert!(out.is_empty() || out.ends_with("\r\n"));
    assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
    assert!(!out.starts_with("\r\n") && !out.contains("\n\r\n"));
    assert!(out.matches("\r\n").count() <= sdp.split('\n').count());
    // Munging a munged answer changes nothing.
    assert_eq!(munge_answer_for_esp32(&out, host), out);
});
