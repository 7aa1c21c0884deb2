//! The whole per-offer path of `Peer::accept` (src/peer/connection.rs): the cheap
//! checks of `inspect_offer`, the `force_receive_only_from_index_2` rewrite, str0m's
//! SDP parser and `accept_offer` on a fresh `Rtc`; then the answer through the ESP32
//! munging, and the `Rtc` run for a few ticks (ICE towards the offer's candidates).
//!
//! A NUL byte splits the input: what follows it is a re-offer on the same `Rtc`
//! (`Peer::reoffer`: a client renegotiating with the same `pc_id`).
#![no_main]

mod common;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use smallwebrtc::peer::offer::{force_receive_only_from_index_2, inspect_offer};
use smallwebrtc::signaling::esp32::munge_answer_for_esp32;
use str0m::change::SdpOffer;
use str0m::Rtc;

/// One offer as `Peer::accept` / `Peer::reoffer` take it; the answer's text if accepted.
fn offer(rtc: &mut Rtc, sdp: &str) -> Option<String> {
    let rewritten = force_receive_only_from_index_2(sdp);
    // The rewrite only swaps whole direction lines.
    assert_eq!(rewritten.lines().count(), sdp.lines().count());
    let summary = inspect_offer(sdp).ok()?;
    for section in &summary.sections {
        if let Some(mid) = &section.mid {
            assert!(summary.index_of(mid).is_some());
        }
    }
    let offer = SdpOffer::from_sdp_string(&rewritten).ok()?;
    let answer = rtc.sdp_api().accept_offer(offer).ok()?;
    Some(answer.to_sdp_string())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = match text.split_once('\0') {
        Some((first, second)) => (first, Some(second)),
        None => (text, None),
    };
    let now = Instant::now();
    let mut rtc = common::fresh_rtc(now);
    let Some(answer) = offer(&mut rtc, first) else {
        return;
    };
    let _ = munge_answer_for_esp32(&answer, Some("127.0.0.1"));
    if let Some(second) = second {
        let _ = offer(&mut rtc, second);
    }
    common::drive(&mut rtc, now, 3);
});
