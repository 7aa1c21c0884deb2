//! ICE-server configuration strings (`--ice-servers`, `PIPECAT_ICE_SERVERS`):
//! `parse_ice_servers` and `IceUrl::parse`, with their round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smallwebrtc::signaling::ice_servers::{parse_ice_servers, IceUrl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(servers) = parse_ice_servers(text) {
        for server in &servers {
            assert!(server.validate().is_ok());
            assert!(server.parsed_urls().iter().all(Result::is_ok));
        }
        // What /start echoes as iceConfig is itself a valid configuration, and the same.
        let json = serde_json::to_string(&servers).expect("servers serialize");
        assert_eq!(parse_ice_servers(&json).as_ref(), Ok(&servers), "{json}");
    }
    if let Ok(url) = IceUrl::parse(text) {
        // The normalized form parses back to the same URL.
        let normalized = url.to_string();
        assert_eq!(IceUrl::parse(&normalized).as_ref(), Ok(&url), "{normalized}");
    }
});
