//! The network layer: the UDP socket(s) every session shares (or the port range
//! sessions lease a port each from), the demultiplexer that
//! hands each datagram to its session, local candidate gathering, and the TURN
//! relays every session shares.

pub mod gather;
pub mod mux;
pub mod ports;
pub mod stun;
pub mod turn;

pub use mux::{Datagram, MuxSession, UdpMux};
pub use ports::PortRange;
