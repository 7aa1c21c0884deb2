//! [`SmallWebRtcConnection`]: one WebRTC peer session and its data-channel protocol.
//!
//! Below [`crate::signaling`]'s handler and above [`crate::net`]: it knows SDP,
//! ICE, DTLS and the data channel, nothing of HTTP or codecs.

pub mod connection;
pub mod endpoint;
pub mod media;
pub mod offer;
pub mod protocol;

pub use connection::{ConnectionEvent, ConnectionState, PeerError, SmallWebRtcConnection};
pub use endpoint::{Endpoint, EndpointConfig, Timeouts};
pub use protocol::TrackSource;
