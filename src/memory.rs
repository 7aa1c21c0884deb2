//! Giving freed memory back to the system after sessions end.
//!
//! A video session holds ~20 MiB (libvpx's encoder and decoder state at 640×480). When it ends,
//! glibc's allocator keeps those pages for reuse, so after a busy hour the process stays at its
//! peak RSS however few sessions are left — which is what a container's memory limit and an
//! operator's dashboard see. Once the session table has settled after sessions ended, the
//! server asks the allocator to return its free pages (`malloc_trim`): a few milliseconds,
//! at most once per check interval, and never while sessions keep arriving or leaving.

use std::time::Duration;

use crate::SmallWebRtcRequestHandler;

/// How often the session count is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Decides when to trim, from the session count seen at each check (no IO, no clock).
#[derive(Debug, Default)]
struct TrimPolicy {
    last: usize,
    /// Sessions ended since the last trim.
    ended: bool,
}

impl TrimPolicy {
    /// Takes the session count at a check; `true` when now is the time to trim: some sessions
    /// ended, and the count has not changed since the previous check (their bots and media
    /// tasks, which free most of the memory, have had a whole interval to finish).
    fn check(&mut self, sessions: usize) -> bool {
        let settled = sessions == self.last;
        self.ended |= sessions < self.last;
        self.last = sessions;
        if self.ended && settled {
            self.ended = false;
            true
        } else {
            false
        }
    }
}

/// Watches `handler`'s session count and trims the allocator once it settles after sessions
/// ended. Runs until aborted ([`Server::run`](crate::server::Server::run) does when it ends).
pub(crate) async fn trim_after_sessions_end(handler: SmallWebRtcRequestHandler) {
    let mut policy = TrimPolicy::default();
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let sessions = handler.session_count();
        if policy.check(sessions) {
            let released = release_free_memory();
            tracing::debug!(sessions, released, "returned free memory to the system");
        }
    }
}

/// Returns the allocator's free pages to the system; `true` if any were. A no-op (`false`)
/// where the C library is not glibc.
pub(crate) fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointer and may be called from any thread at any time.
        unsafe { malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::TrimPolicy;

    #[test]
    fn trims_once_the_count_settles_after_sessions_end() {
        let mut policy = TrimPolicy::default();
        // Sessions arrive: nothing to give back.
        assert!(!policy.check(5));
        assert!(!policy.check(5));
        // Three leave; their tasks may still be finishing, so wait for a settled check.
        assert!(!policy.check(2));
        assert!(policy.check(2));
        // Nothing more ended: no second trim.
        assert!(!policy.check(2));
    }

    #[test]
    fn waits_while_sessions_keep_changing() {
        let mut policy = TrimPolicy::default();
        assert!(!policy.check(10));
        assert!(!policy.check(8));
        assert!(!policy.check(9));
        assert!(!policy.check(4));
        assert!(policy.check(4));
    }

    #[test]
    fn an_idle_server_never_trims() {
        let mut policy = TrimPolicy::default();
        assert!((0..10).all(|_| !policy.check(0)));
    }
}
