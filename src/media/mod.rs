//! Media processing: plain functions and small structs, with no network and no sessions, so every
//! piece can be tested on its own with a fake clock.
//!
//! | module | holds |
//! |---|---|
//! | [`video`] | VP8 (libvpx) and H.264 (OpenH264, feature `h264`) encode and decode, BT.601 RGB↔I420 conversion, SIMD scaling, test-card helpers |
//! | [`audio`] | Opus decode and encode, 20 ms chunking in both directions, the send-side pacing clock, a windowed-sinc resampler, and signal-analysis helpers for tests |

pub mod audio;
pub mod video;
