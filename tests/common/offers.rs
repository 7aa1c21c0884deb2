//! Offers made without a live peer behind them.
#![allow(dead_code)]

use std::time::Instant;

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// A browser-shaped offer (audio, camera, screen, data channel) whose only
/// candidate is 127.0.0.1:9 (discard), where nobody answers ICE checks.
pub fn offer_without_peer() -> String {
    smallwebrtc::server::init_crypto();
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_channel("chat".into());
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}
