//! Data-channel messages: `parse_incoming` (keep-alives, transport signalling, app
//! messages) and, for app messages, what the echo bot does with them (the RTVI
//! `reply`, the renegotiate check, serializing what it sends back).
//!
//! Input: the first byte's low bit says whether the message arrived as binary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smallwebrtc::bots::{echo, rtvi};
use smallwebrtc::peer::protocol::{parse_incoming, Incoming, TrackSource};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, message)) = data.split_first() else {
        return;
    };
    let binary = flags & 1 == 1;
    match parse_incoming(message, binary) {
        Ok(Incoming::App(value)) => {
            assert!(value.is_object());
            let about = echo::about();
            if rtvi::is_rtvi(&value) {
                if let Some(reply) = rtvi::reply(&value, &about) {
                    assert!(rtvi::is_rtvi(&reply));
                    let text = serde_json::to_string(&reply).expect("a reply serializes");
                    // A reply sent on the channel is read back as an app message.
                    assert!(matches!(
                        parse_incoming(text.as_bytes(), false),
                        Ok(Incoming::App(_))
                    ));
                }
                let _ = value["type"] == "client-message" && value["data"]["t"] == "renegotiate";
            } else {
                let _ = serde_json::to_string(&value).expect("an app message serializes");
            }
        }
        Ok(Incoming::TrackStatus { receiver_index, .. }) => {
            let _ = TrackSource::from_receiver_index(receiver_index);
        }
        Ok(Incoming::Ping | Incoming::UnknownSignalling(_)) => {}
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
