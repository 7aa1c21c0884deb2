//! What several targets share: the server's treatment of a trickled candidate and a
//! fresh `Rtc` built the way the server builds one.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};

/// The text of a trickled candidate as `add_candidate` in src/peer/connection.rs
/// massages it before parsing: `None` where the server drops it unparsed.
///
/// Keep in step with `SessionTask::add_candidate`: end-of-candidates (blank) is
/// skipped, the text is trimmed, an `a=` prefix is removed, mDNS (`.local `)
/// candidates are skipped and `candidate:` is added when missing.
pub fn massage_trickled(candidate: &str) -> Option<String> {
    if candidate.trim().is_empty() {
        return None;
    }
    let text = candidate.trim();
    let text = text.strip_prefix("a=").unwrap_or(text);
    if text.contains(".local ") {
        return None;
    }
    Some(if text.starts_with("candidate:") {
        text.to_owned()
    } else {
        format!("candidate:{text}")
    })
}

/// Parses a trickled candidate exactly as the server does.
pub fn parse_trickled(candidate: &str) -> Option<Candidate> {
    Candidate::from_sdp_string(&massage_trickled(candidate)?).ok()
}

/// Installs the crypto provider once (as the server does at start-up) and makes one
/// DTLS certificate that every fuzzed `Rtc` reuses.
///
/// The server lets each `Rtc` make its own certificate; the certificate plays no part
/// in parsing or answering an offer, and making one per input would spend most of
/// the run on key generation.
fn dtls_cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        smallwebrtc::server::init_crypto();
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("a DTLS certificate")
    })
    .clone()
}

/// A fresh `Rtc` configured like the server's (`Peer::accept`): default config, the
/// server's host candidates added before the offer is accepted.
pub fn fresh_rtc(now: Instant) -> Rtc {
    let mut rtc = RtcConfig::new().set_dtls_cert(dtls_cert()).build(now);
    for addr in ["127.0.0.1:50000", "[::1]:50000"] {
        let addr: SocketAddr = addr.parse().unwrap();
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    }
    rtc
}

/// A small offer made by str0m (audio and a data channel, the ESP32's shape) whose
/// only candidate is 127.0.0.1:9. (The seed corpus of `sdp_offer` holds the
/// browser-shaped ones; here only the ICE state an answer sets up matters, and a
/// short offer keeps the per-input set-up cheap.)
pub fn client_offer() -> &'static str {
    static OFFER: OnceLock<String> = OnceLock::new();
    OFFER.get_or_init(|| {
        let mut rtc = fresh_rtc(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        api.add_channel("chat".into());
        let (offer, _pending) = api.apply().expect("an offer");
        offer.to_sdp_string()
    })
}

/// A fresh `Rtc` that has answered [`client_offer`], as a session is once its
/// answer has gone out and the client starts trickling.
pub fn answered_rtc(now: Instant) -> Rtc {
    let mut rtc = fresh_rtc(now);
    let offer = SdpOffer::from_sdp_string(client_offer()).expect("our own offer parses");
    rtc.sdp_api()
        .accept_offer(offer)
        .expect("our own offer is accepted");
    rtc
}

/// Runs the `Rtc` as the session task would for a short while with no peer
/// answering: handle timeouts, drain outputs. Bounded, so a target stays fast.
pub fn drive(rtc: &mut Rtc, mut now: Instant, rounds: usize) {
    for _ in 0..rounds {
        let mut outputs = 0;
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // Jump to the next deadline, but never stall on a far one.
                    now = t.min(now + Duration::from_millis(200)).max(now + Duration::from_millis(1));
                    break;
                }
                Ok(_) => {
                    outputs += 1;
                    if outputs > 256 {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        if !rtc.is_alive() || rtc.handle_input(Input::Timeout(now)).is_err() {
            return;
        }
    }
}
