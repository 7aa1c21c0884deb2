//! Process-wide counters, exposed in Prometheus' text format at `GET /metrics`.
//!
//! Plain atomics: a counter costs one relaxed add on the hot path and nothing
//! else; the text is built only when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A total time and how many things took it (a Prometheus summary without quantiles).
#[derive(Debug, Default)]
pub struct Timer {
    nanos: Counter,
    count: Counter,
}

impl Timer {
    /// A timer at zero.
    pub const fn new() -> Self {
        Timer {
            nanos: Counter::new(),
            count: Counter::new(),
        }
    }

    /// Records one thing that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        self.nanos.add(elapsed.as_nanos() as u64);
        self.count.inc();
    }
}

/// UDP datagrams received on the shared port.
pub static UDP_PACKETS_IN: Counter = Counter::new();
/// UDP bytes received on the shared port.
pub static UDP_BYTES_IN: Counter = Counter::new();
/// UDP datagrams sent.
pub static UDP_PACKETS_OUT: Counter = Counter::new();
/// UDP bytes sent.
pub static UDP_BYTES_OUT: Counter = Counter::new();
/// Datagrams that matched no session.
pub static UDP_PACKETS_UNROUTED: Counter = Counter::new();
/// Datagrams dropped because their session was too far behind.
pub static UDP_PACKETS_DROPPED: Counter = Counter::new();

/// Offers answered with a new session.
pub static OFFERS_NEW: Counter = Counter::new();
/// Re-offers answered on an existing session (including `restart_pc`).
pub static OFFERS_RENEGOTIATED: Counter = Counter::new();
/// Offers refused as malformed (400).
pub static OFFERS_BAD: Counter = Counter::new();
/// Offers for an unknown `pc_id` (404).
pub static OFFERS_NOT_FOUND: Counter = Counter::new();
/// Offers refused for capacity or shutdown (503).
pub static OFFERS_UNAVAILABLE: Counter = Counter::new();

/// How many observations fell at or under each of fixed bounds (a Prometheus histogram).
///
/// ```
/// use smallwebrtc::metrics::Histogram;
///
/// static RTT: Histogram<3> = Histogram::new([0.01, 0.1, 1.0]);
/// RTT.observe(0.05);
/// assert_eq!(RTT.count(), 1);
/// ```
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [f64; N],
    buckets: [Counter; N],
    /// The sum, in millionths, so that it stays an atomic integer.
    sum_micros: Counter,
    count: Counter,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram with these upper bounds, in increasing order.
    pub const fn new(bounds: [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { Counter::new() }; N],
            sum_micros: Counter::new(),
            count: Counter::new(),
        }
    }

    /// Records one observation (negative or NaN ones are ignored).
    pub fn observe(&self, value: f64) {
        if value.is_nan() || value < 0.0 {
            return;
        }
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].inc();
        }
        self.sum_micros.add((value * 1e6) as u64);
        self.count.inc();
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count.get()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.get();
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count.get());
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.get() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count.get());
    }
}

/// Round-trip time to clients, in seconds, from RTCP (one observation per session every
/// [`STATS_INTERVAL`](crate::peer::connection::STATS_INTERVAL)).
pub static ROUND_TRIP: Histogram<9> =
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
/// Fraction of the client's packets lost on the way to us, per session and interval.
pub static LOSS_IN: Histogram<7> = Histogram::new([0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]);
/// Fraction of our packets the client reports lost, per session and interval.
pub static LOSS_OUT: Histogram<7> = Histogram::new([0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]);

/// How long client datagrams waited between the socket and their session, in seconds.
/// Near zero on a server with CPU to spare; its upper buckets fill when it has too little.
pub static INBOUND_QUEUE_DELAY: Histogram<8> =
    Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]);

/// Opus frames decoded (and concealed) for bots.
pub static AUDIO_DECODE: Timer = Timer::new();
/// Opus frames encoded for clients.
pub static AUDIO_ENCODE: Timer = Timer::new();
/// Video frames decoded for bots.
pub static VIDEO_DECODE: Timer = Timer::new();
/// Video frames encoded for clients.
pub static VIDEO_ENCODE: Timer = Timer::new();
/// Output audio frames that left later than their slot.
pub static AUDIO_FRAMES_LATE: Counter = Counter::new();
/// Client media frames lost before they reached us (gaps in the stream).
pub static MEDIA_FRAMES_LOST: Counter = Counter::new();

/// Sessions by state, counted at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionCounts {
    /// Created, not yet connected.
    pub connecting: u64,
    /// ICE and DTLS up.
    pub connected: u64,
}

/// The metrics text, given the sessions counted now and the bots running.
pub fn render(sessions: SessionCounts, bots_running: usize) -> String {
    let mut out = String::with_capacity(2048);
    let mut gauge = |name: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    gauge(
        "smallwebrtc_sessions",
        "Sessions by state.",
        &[
            ("{state=\"connecting\"}", sessions.connecting),
            ("{state=\"connected\"}", sessions.connected),
        ],
    );
    gauge(
        "smallwebrtc_bots_running",
        "Bots running.",
        &[("", bots_running as u64)],
    );
    let mut counter = |name: &str, help: &str, samples: &[(&str, &Counter)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, c) in samples {
            let _ = writeln!(out, "{name}{labels} {}", c.get());
        }
    };
    counter(
        "smallwebrtc_offers_total",
        "Offers by outcome.",
        &[
            ("{outcome=\"new_session\"}", &OFFERS_NEW),
            ("{outcome=\"renegotiated\"}", &OFFERS_RENEGOTIATED),
            ("{outcome=\"bad_request\"}", &OFFERS_BAD),
            ("{outcome=\"not_found\"}", &OFFERS_NOT_FOUND),
            ("{outcome=\"unavailable\"}", &OFFERS_UNAVAILABLE),
        ],
    );
    counter(
        "smallwebrtc_udp_packets_total",
        "UDP datagrams on the shared port.",
        &[
            ("{direction=\"in\"}", &UDP_PACKETS_IN),
            ("{direction=\"out\"}", &UDP_PACKETS_OUT),
            ("{direction=\"unrouted\"}", &UDP_PACKETS_UNROUTED),
            ("{direction=\"dropped\"}", &UDP_PACKETS_DROPPED),
        ],
    );
    counter(
        "smallwebrtc_udp_bytes_total",
        "UDP bytes on the shared port.",
        &[
            ("{direction=\"in\"}", &UDP_BYTES_IN),
            ("{direction=\"out\"}", &UDP_BYTES_OUT),
        ],
    );
    counter(
        "smallwebrtc_audio_frames_late_total",
        "Output audio frames sent after their 20 ms slot.",
        &[("", &AUDIO_FRAMES_LATE)],
    );
    counter(
        "smallwebrtc_media_frames_lost_total",
        "Client media frames lost on the way (concealed or skipped).",
        &[("", &MEDIA_FRAMES_LOST)],
    );
    ROUND_TRIP.render(
        &mut out,
        "smallwebrtc_round_trip_seconds",
        "Round-trip time to clients, sampled per session every stats interval.",
    );
    LOSS_IN.render(
        &mut out,
        "smallwebrtc_packet_loss_in_ratio",
        "Fraction of client packets lost on the way in, per session and stats interval.",
    );
    LOSS_OUT.render(
        &mut out,
        "smallwebrtc_packet_loss_out_ratio",
        "Fraction of our packets the client reports lost, per session and stats interval.",
    );
    INBOUND_QUEUE_DELAY.render(
        &mut out,
        "smallwebrtc_inbound_queue_delay_seconds",
        "How long client datagrams waited between the socket and their session.",
    );
    for (name, help, timer) in [
        (
            "smallwebrtc_audio_decode_seconds",
            "Opus decode time.",
            &AUDIO_DECODE,
        ),
        (
            "smallwebrtc_audio_encode_seconds",
            "Opus encode time.",
            &AUDIO_ENCODE,
        ),
        (
            "smallwebrtc_video_decode_seconds",
            "Video decode time.",
            &VIDEO_DECODE,
        ),
        (
            "smallwebrtc_video_encode_seconds",
            "Video encode time.",
            &VIDEO_ENCODE,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        let _ = writeln!(out, "{name}_sum {}", timer.nanos.get() as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {}", timer.count.get());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        OFFERS_NEW.inc();
        AUDIO_ENCODE.record(Duration::from_micros(50));
        let text = render(
            SessionCounts {
                connecting: 1,
                connected: 2,
            },
            3,
        );
        assert!(
            text.contains("smallwebrtc_sessions{state=\"connected\"} 2"),
            "{text}"
        );
        assert!(text.contains("smallwebrtc_bots_running 3"), "{text}");
        assert!(
            text.contains("# TYPE smallwebrtc_offers_total counter"),
            "{text}"
        );
        assert!(
            text.contains("smallwebrtc_audio_encode_seconds_count "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE smallwebrtc_round_trip_seconds histogram"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h: Histogram<3> = Histogram::new([0.01, 0.1, 1.0]);
        for v in [0.005, 0.05, 0.05, 5.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.01\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.1\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        assert!(out.contains("x_sum 5.105\n"), "{out}");
    }
}
