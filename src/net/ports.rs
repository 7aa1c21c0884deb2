//! `--udp-port-range LOW-HIGH`: a UDP port per session, leased from a range.
//!
//! By default every session shares one UDP port ([`super::mux`]). Some networks
//! are set up for the other model, the one aiortc (and so Pipecat's Python
//! server) uses: each peer connection gets its own port, and the firewall opens
//! a range. With a [`PortRange`] the mux leases one port of the range to each
//! session when its offer arrives and gives it back when the session ends; a
//! new offer that finds every port taken is refused (503) with a message saying
//! so, and nothing already running is affected.
//!
//! `PortPool` (crate-private) is the bookkeeping: which ports are leased, and which are still
//! closing (their receive task has not yet dropped the socket, so the number
//! cannot be bound again for a moment).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// An inclusive range of UDP ports, `LOW-HIGH`.
///
/// ```
/// use smallwebrtc::net::ports::PortRange;
///
/// let range: PortRange = "40000-40099".parse().unwrap();
/// assert_eq!((range.low(), range.high(), range.len()), (40000, 40099, 100));
/// assert!(range.contains(40050));
/// assert_eq!(range.to_string(), "40000-40099");
///
/// let err = "40099-40000".parse::<PortRange>().unwrap_err();
/// assert!(err.to_string().contains("40099 is above 40000"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    low: u16,
    high: u16,
}

/// Why a port range is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not of the form `LOW-HIGH` with two port numbers.
    #[error("malformed UDP port range {0:?}: expected LOW-HIGH, e.g. 40000-40099")]
    Malformed(String),
    /// Port 0 means "any port", which a range cannot hold.
    #[error("UDP port range {0:?}: ports go from 1 to 65535")]
    Zero(String),
    /// The low end is above the high end.
    #[error("UDP port range {low}-{high}: {low} is above {high}")]
    Reversed {
        /// The first number given.
        low: u16,
        /// The second number given.
        high: u16,
    },
}

impl PortRange {
    /// The ports `low..=high`.
    pub fn new(low: u16, high: u16) -> Result<PortRange, PortRangeError> {
        if low == 0 || high == 0 {
            return Err(PortRangeError::Zero(format!("{low}-{high}")));
        }
        if low > high {
            return Err(PortRangeError::Reversed { low, high });
        }
        Ok(PortRange { low, high })
    }

    /// The first port.
    pub fn low(&self) -> u16 {
        self.low
    }

    /// The last port.
    pub fn high(&self) -> u16 {
        self.high
    }

    /// How many ports the range holds (at least 1).
    #[allow(clippy::len_without_is_empty)] // a range is never empty
    pub fn len(&self) -> usize {
        usize::from(self.high - self.low) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || PortRangeError::Malformed(s.to_string());
        let (low, high) = s.trim().split_once('-').ok_or_else(malformed)?;
        let low: u16 = low.trim().parse().map_err(|_| malformed())?;
        let high: u16 = high.trim().parse().map_err(|_| malformed())?;
        PortRange::new(low, high)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// What a taken port is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Reserved for binding, or bound and owned by a session.
    Leased,
    /// Its session ended; this many sockets are still open.
    Closing(usize),
}

#[derive(Debug)]
struct PoolState {
    taken: HashMap<u16, Use>,
    /// Where the next search starts: ports are handed out round-robin, so a
    /// port just given back is the last to be reused (a late packet of the old
    /// session is less likely to reach a new one).
    cursor: u16,
}

/// Which ports of a [`PortRange`] are taken. Binding is the caller's job; the
/// pool only makes sure two sessions never try the same port at once.
#[derive(Debug)]
pub(crate) struct PortPool {
    range: PortRange,
    state: Mutex<PoolState>,
    /// Woken whenever a closing port becomes free.
    freed: Notify,
}

impl PortPool {
    pub(crate) fn new(range: PortRange) -> PortPool {
        PortPool {
            range,
            state: Mutex::new(PoolState {
                taken: HashMap::new(),
                cursor: range.low,
            }),
            freed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        // Every update is a single map operation: a panic elsewhere cannot leave
        // the map inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn range(&self) -> PortRange {
        self.range
    }

    /// Takes the next free port not in `skip`, round-robin from the cursor.
    pub(crate) fn reserve(&self, skip: &HashSet<u16>) -> Option<u16> {
        let mut state = self.state();
        let len = self.range.len();
        let start = usize::from(state.cursor - self.range.low);
        let found = (0..len)
            .map(|i| self.range.low + ((start + i) % len) as u16)
            .find(|p| !state.taken.contains_key(p) && !skip.contains(p))?;
        state.taken.insert(found, Use::Leased);
        state.cursor = if found == self.range.high {
            self.range.low
        } else {
            found + 1
        };
        Some(found)
    }

    /// Gives back a reserved port that could not be bound.
    pub(crate) fn unreserve(&self, port: u16) {
        self.state().taken.remove(&port);
    }

    /// The session holding `port` ended; `open` sockets on it are still to close.
    pub(crate) fn closing(&self, port: u16, open: usize) {
        if open == 0 {
            self.state().taken.remove(&port);
            self.freed.notify_waiters();
        } else {
            self.state().taken.insert(port, Use::Closing(open));
        }
    }

    /// One socket on a closing `port` is closed.
    pub(crate) fn socket_closed(&self, port: u16) {
        let mut state = self.state();
        match state.taken.get(&port).copied() {
            Some(Use::Closing(n)) if n > 1 => {
                state.taken.insert(port, Use::Closing(n - 1));
            }
            Some(Use::Closing(_)) => {
                state.taken.remove(&port);
                drop(state);
                self.freed.notify_waiters();
            }
            _ => {}
        }
    }

    /// `(leased, closing)` port counts.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.state();
        let closing = state
            .taken
            .values()
            .filter(|u| matches!(u, Use::Closing(_)))
            .count();
        (state.taken.len() - closing, closing)
    }

    /// Resolves when some closing port becomes free. Create it (and `enable` it)
    /// before looking at [`counts`](Self::counts), so no wake-up is missed.
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_clearly() {
        assert_eq!(
            "1000-1002".parse::<PortRange>().unwrap(),
            PortRange::new(1000, 1002).unwrap()
        );
        assert_eq!(" 7 - 7 ".parse::<PortRange>().unwrap().len(), 1);
        for bad in ["", "40000", "40000-", "-40000", "a-b", "1-70000", "1-2-3"] {
            let err = bad.parse::<PortRange>().unwrap_err();
            assert!(
                err.to_string().contains("expected LOW-HIGH"),
                "{bad:?}: {err}"
            );
        }
        assert!("0-10"
            .parse::<PortRange>()
            .unwrap_err()
            .to_string()
            .contains("from 1 to 65535"));
        assert_eq!(
            "10-9".parse::<PortRange>().unwrap_err(),
            PortRangeError::Reversed { low: 10, high: 9 }
        );
    }

    #[test]
    fn pool_hands_out_round_robin_and_reuses() {
        let pool = PortPool::new(PortRange::new(65533, 65535).unwrap());
        let none = HashSet::new();
        assert_eq!(pool.reserve(&none), Some(65533));
        assert_eq!(pool.reserve(&none), Some(65534));
        pool.closing(65533, 2);
        assert_eq!(pool.counts(), (1, 1));
        assert_eq!(pool.reserve(&none), Some(65535));
        assert_eq!(pool.reserve(&none), None, "65533 is still closing");
        pool.socket_closed(65533);
        assert_eq!(pool.reserve(&none), None, "one socket still open");
        pool.socket_closed(65533);
        assert_eq!(pool.counts(), (2, 0));
        assert_eq!(pool.reserve(&none), Some(65533), "freed, reused");
        pool.unreserve(65534);
        assert_eq!(pool.reserve(&HashSet::from([65534])), None, "skipped");
        assert_eq!(pool.reserve(&none), Some(65534));
    }
}
