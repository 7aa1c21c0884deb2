//! Datagrams on the shared UDP port, from anyone: the STUN demultiplexing the mux
//! does before a packet reaches a session (`is_stun`, `local_ufrag`, `username`) and
//! the reading of STUN binding responses (`parse_binding_success`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smallwebrtc::net::stun;

fuzz_target!(|packet: &[u8]| {
    let is_stun = stun::is_stun(packet);
    let _ = stun::message_type(packet);
    let _ = stun::transaction_id(packet);
    if let Some(username) = stun::username(packet) {
        assert!(is_stun && username.len() <= packet.len());
    }
    if let Some(ufrag) = stun::local_ufrag(packet) {
        assert!(is_stun && !ufrag.is_empty() && !ufrag.contains(':'));
    }
    if let Some((txid, _addr)) = stun::parse_binding_success(packet) {
        assert!(is_stun);
        assert_eq!(stun::transaction_id(packet), Some(txid));
    }
});
