//! The whole per-offer path of `Peer::accept` (src/peer/connection.rs): the cheap
//! checks of `inspect_offer`, the `rewrite_offer` rewrite, str0m's
//! SDP parser and `accept_offer` on a fresh `Rtc`; then the answer through the ESP32
//! munging, and the `Rtc` run for a few ticks (ICE towards the offer's candidates).
//!
//! A NUL byte splits the input: what follows it is a re-offer on the same `Rtc`
//! (`Peer::reoffer`: a client renegotiating with the same `pc_id`).
//!
//! As in the server (`answer_offer`), a panic inside str0m's `accept_offer` is caught
//! and the offer refused (str0m 0.25 panics on some offers, see RELIABILITY.md); a
//! panic anywhere else is a crash.
#![no_main]

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use smallwebrtc::peer::offer::{rewrite_offer, inspect_offer};
use smallwebrtc::signaling::esp32::munge_answer_for_esp32;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::Rtc;

/// One offer as `Peer::accept` / `Peer::reoffer` take it; the answer's text if accepted.
fn offer(rtc: &mut Rtc, sdp: &str) -> Option<String> {
    let rewritten = rewrite_offer(sdp);
    // The rewrite only swaps whole direction lines.
    assert_eq!(rewritten.lines().count(), sdp.lines().count());
    let summary = inspect_offer(sdp).ok()?;
    for section in &summary.sections {
        if let Some(mid) = &section.mid {
            assert!(summary.index_of(mid).is_some());
        }
    }
    let offer = SdpOffer::from_sdp_string(&rewritten).ok()?;
    let answer = answer_offer(rtc, offer)?;
    Some(answer.to_sdp_string())
}

/// `answer_offer` in src/peer/connection.rs: `accept_offer` with a panic caught, the
/// `Rtc` then disconnected (the session ends) and the offer refused.
///
/// libfuzzer-sys's panic hook aborts on every panic, caught or not, so it is silenced
/// for this one call only.
fn answer_offer(rtc: &mut Rtc, offer: SdpOffer) -> Option<SdpAnswer> {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)));
    panic::set_hook(hook);
    match result {
        Ok(answer) => answer.ok(),
        Err(_) => {
            rtc.disconnect();
            None
        }
    }
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
        if !rtc.is_alive() {
            return; // a re-offer str0m panicked on: the session is over
        }
    }
    common::drive(&mut rtc, now, 3);
});
