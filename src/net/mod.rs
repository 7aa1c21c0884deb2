//! The network layer: the UDP socket(s) every session shares, the demultiplexer that
//! hands each datagram to its session, and local candidate gathering.

pub mod gather;
pub mod mux;
pub mod stun;

pub use mux::{Datagram, MuxSession, UdpMux};
