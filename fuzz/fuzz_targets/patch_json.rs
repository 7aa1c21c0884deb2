//! `PATCH /api/offer` bodies: `SmallWebRtcPatchRequest` from arbitrary bytes, then
//! every trickled candidate through the server's massaging and str0m's parser.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use smallwebrtc::SmallWebRtcPatchRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(patch) = serde_json::from_slice::<SmallWebRtcPatchRequest>(data) else {
        return;
    };
    let text = serde_json::to_string(&patch).expect("a patch serializes");
    let again: SmallWebRtcPatchRequest = serde_json::from_str(&text).expect("a patch re-reads");
    assert_eq!(again, patch);
    for candidate in &patch.candidates {
        if candidate.is_end_of_candidates() {
            assert!(common::massage_trickled(&candidate.candidate).is_none());
            continue;
        }
        let _ = common::parse_trickled(&candidate.candidate);
    }
});
