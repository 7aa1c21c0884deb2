//! Signalling: the JSON that crosses HTTP, and the handler that turns offers into sessions.
//!
//! Nothing in here knows about HTTP; [`crate::http`] is a thin layer over
//! [`SmallWebRtcRequestHandler`].

pub mod esp32;
pub mod handler;
pub mod ice_servers;
pub mod types;

pub use handler::{ConnectionMode, HandlerConfig, SmallWebRtcRequestHandler};
pub use ice_servers::{IceServer, IceServerConfigError};
pub use types::{
    IceCandidate, RequestError, SmallWebRtcAnswer, SmallWebRtcPatchRequest, SmallWebRtcRequest,
};
