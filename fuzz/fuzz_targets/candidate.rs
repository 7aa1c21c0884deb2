//! Trickled ICE candidate strings (Chrome, Firefox, Safari, ESP32 shapes), handled as
//! the session task handles one: massaged like `add_candidate`, parsed by str0m, added
//! to an `Rtc` that has answered a browser offer, and the `Rtc` run for a few ticks so
//! the new candidate is paired and checked.
#![no_main]

mod common;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use str0m::Candidate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(candidate) = common::parse_trickled(text) else {
        return;
    };
    // What str0m writes for a candidate it parsed must not upset its own parser.
    let _ = Candidate::from_sdp_string(&candidate.to_sdp_string());
    let now = Instant::now();
    let mut rtc = common::answered_rtc(now);
    rtc.add_remote_candidate(candidate);
    common::drive(&mut rtc, now, 4);
});
