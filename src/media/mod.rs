//! Media processing: plain functions and small structs, with no network and no sessions, so every
//! piece can be tested on its own with a fake clock.
//!
//! | module | holds |
//! |---|---|
//! | [`audio`] | Opus decode and encode, 20 ms chunking in both directions, the send-side pacing clock, a windowed-sinc resampler, and signal-analysis helpers for tests |

pub mod audio;
