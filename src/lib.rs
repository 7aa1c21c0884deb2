//! # smallwebrtc
//!
//! A Rust implementation of Pipecat's SmallWebRTC transport: the server side of a
//! peer-to-peer WebRTC session between one client (a browser, a phone, an ESP32)
//! and one bot, signalled over plain HTTP.
//!
//! The crate is layered so that each part can be read and tested on its own:
//!
//! | module | holds |
//! |---|---|
//! | [`signaling`] | wire types, ICE-server configuration, ESP32 answer munging, [`SmallWebRtcRequestHandler`] |
//! | [`net`] | the UDP socket(s) all sessions share, the demultiplexer, candidate gathering (host, STUN) |
//! | [`peer`] | [`SmallWebRtcConnection`]: one task per session owning its `str0m::Rtc`, the data-channel protocol |
//! | [`media`] | codecs and timing: Opus in and out, 20 ms chunking, the pacing clock, resampling |
//! | [`metrics`] | process-wide counters, served in Prometheus format at `/metrics` |
//! | [`http`] | axum routes over the handler, CORS and body limits |
//! | [`transport`] | [`SmallWebRtcTransport`](transport::SmallWebRtcTransport): decoded audio in, paced audio out, events — what a bot uses |
//! | [`bots`] | bots written against the public API, starting with `echo` |
//! | [`server`] | configuration → a running server (what the CLI calls) |

pub mod bots;
pub mod http;
pub mod media;
mod memory;
pub mod metrics;
pub mod net;
pub mod peer;
pub mod server;
pub mod signaling;
pub mod transport;

pub use peer::{ConnectionEvent, SmallWebRtcConnection};
pub use signaling::{
    ConnectionMode, IceCandidate, IceServer, RequestError, SmallWebRtcAnswer,
    SmallWebRtcPatchRequest, SmallWebRtcRequest, SmallWebRtcRequestHandler,
};
