//! `POST /api/offer` bodies: `SmallWebRtcRequest` from arbitrary bytes, as axum's
//! `Json` extractor reads them (`serde_json::from_slice`), then the cheap offer
//! checks the handler runs first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smallwebrtc::peer::offer::inspect_offer;
use smallwebrtc::SmallWebRtcRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<SmallWebRtcRequest>(data) else {
        return;
    };
    // What the server writes back (logs, the session's request data) re-reads the same.
    let text = serde_json::to_string(&request).expect("a request serializes");
    let again: SmallWebRtcRequest = serde_json::from_str(&text).expect("a request re-reads");
    assert_eq!(again.sdp, request.sdp);
    assert_eq!(again.sdp_type, request.sdp_type);
    assert_eq!(again.pc_id, request.pc_id);
    assert_eq!(again.restart_pc, request.restart_pc);
    // (request_data is not compared: floats may re-read one ULP off without
    // serde_json's float_roundtrip feature.)
    let _ = inspect_offer(&request.sdp);
});
