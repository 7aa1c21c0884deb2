//! The encoder's target bitrate, following the client's bandwidth estimate: [`RateController`].

use std::time::{Duration, Instant};

use super::{check_bitrate, VideoError};

/// How the target bitrate follows the estimate. See [`RateController`] for the reasons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// The target before any estimate arrives, in kbit/s; clamped into the bounds. Default
    /// 1000, the encoder's default.
    pub start_kbps: u32,
    /// The lowest target, in kbit/s. Default 150: 1024×768 stays legible (blurry) at 30 fps.
    pub min_kbps: u32,
    /// The highest target, in kbit/s. Default 2500: more buys nothing visible for bot video.
    pub max_kbps: u32,
    /// The share of the estimate given to video, 0.1..=1.0. Default 0.9.
    pub share: f64,
    /// The shortest time between two changes. Default 500 ms.
    pub min_interval: Duration,
    /// The largest factor of one increase, above 1.0. Default 1.25.
    pub max_increase: f64,
    /// Changes smaller than this fraction of the current target are not made. Default 0.05.
    pub dead_band: f64,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            start_kbps: 1_000,
            min_kbps: 150,
            max_kbps: 2_500,
            share: 0.9,
            min_interval: Duration::from_millis(500),
            max_increase: 1.25,
            dead_band: 0.05,
        }
    }
}

impl RateConfig {
    /// Checks the bounds and factors.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidBitrate`] for a bound outside the encoders' range,
    /// [`VideoError::InvalidBitrateRange`] when `min_kbps > max_kbps` or a factor is out of
    /// range.
    pub fn validate(&self) -> Result<(), VideoError> {
        check_bitrate(self.min_kbps)?;
        check_bitrate(self.max_kbps)?;
        let factors_ok = (0.1..=1.0).contains(&self.share)
            && self.max_increase > 1.0
            && self.max_increase.is_finite()
            && (0.0..1.0).contains(&self.dead_band);
        if self.min_kbps > self.max_kbps || !factors_ok {
            return Err(VideoError::InvalidBitrateRange {
                min: self.min_kbps,
                max: self.max_kbps,
            });
        }
        Ok(())
    }
}

/// The target bitrate of one video output, following the client's bandwidth estimate.
///
/// Sans-IO: an estimate and the time go in, a new target (or nothing) comes out. The transport
/// calls [`RateController::update`] once per video frame and hands any new target to the
/// encoder's `set_bitrate`, which changes it from the next frame on without a keyframe.
///
/// The rules, and why:
///
/// * **A share of the estimate.** The target is [`RateConfig::share`] (90 %) of the estimate: the
///   estimate covers everything sent (audio, RTP and SRTP overhead, retransmissions), and an
///   encoder's rate control overshoots on busy frames.
/// * **Within bounds.** Never below `min_kbps` (a picture must stay recognisable) nor above
///   `max_kbps` (more is wasted on bot video), whatever the estimate says.
/// * **At most one change per [`RateConfig::min_interval`]** (500 ms). Estimates arrive many
///   times a second (REMB about once a second, send-side estimates more often) and jitter;
///   libvpx and OpenH264 reset part of their rate-control state on every reconfiguration.
/// * **Down at once, up in steps.** A lower estimate means the path is congested now: the target
///   drops to it in one step, or the queue (and the delay) grows. A higher one is followed by at
///   most [`RateConfig::max_increase`] (+25 %) per change, so one optimistic estimate cannot
///   swamp the path.
/// * **No churn.** A change smaller than [`RateConfig::dead_band`] (5 %) is not made, unless it
///   reaches a bound.
///
/// ```
/// use std::time::{Duration, Instant};
/// use smallwebrtc::media::video::{RateConfig, RateController};
///
/// let mut rate = RateController::new(RateConfig { start_kbps: 1000, ..RateConfig::default() })?;
/// let t0 = Instant::now();
/// // The client can take 300 kbit/s: the target drops to 90 % of it at once.
/// assert_eq!(rate.update(t0, Some(300_000)), Some(270));
/// // A better estimate 100 ms later waits for the 500 ms interval...
/// assert_eq!(rate.update(t0 + Duration::from_millis(100), Some(2_000_000)), None);
/// // ...and is then followed by at most +25 %.
/// assert_eq!(rate.update(t0 + Duration::from_millis(500), Some(2_000_000)), Some(337));
/// # Ok::<(), smallwebrtc::media::video::VideoError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RateController {
    config: RateConfig,
    target: u32,
    last_change: Option<Instant>,
}

impl RateController {
    /// A controller at `config.start_kbps` (clamped into the bounds).
    ///
    /// # Errors
    ///
    /// Those of [`RateConfig::validate`].
    pub fn new(config: RateConfig) -> Result<Self, VideoError> {
        config.validate()?;
        Ok(RateController {
            target: config.start_kbps.clamp(config.min_kbps, config.max_kbps),
            config,
            last_change: None,
        })
    }

    /// The current target, in kbit/s.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Takes the latest estimate (bits per second, `None` while there is none) at `now`, and
    /// returns the new target in kbit/s when it changes.
    pub fn update(&mut self, now: Instant, estimate_bps: Option<u64>) -> Option<u32> {
        let estimate = estimate_bps?;
        if self
            .last_change
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.min_interval)
        {
            return None;
        }
        let (min, max) = (self.config.min_kbps, self.config.max_kbps);
        let wanted = (estimate as f64 * self.config.share / 1000.0).clamp(min as f64, max as f64);
        let current = f64::from(self.target);
        let next = if wanted > current {
            wanted.min(current * self.config.max_increase)
        } else {
            wanted
        };
        // Truncation is fine: `next` is within min..=max, both u32.
        let next = (next as u32).clamp(min, max);
        let change = f64::from(next.abs_diff(self.target));
        let at_bound = next == min || next == max;
        if next == self.target || (change < current * self.config.dead_band && !at_bound) {
            return None;
        }
        self.target = next;
        self.last_change = Some(now);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn controller() -> (RateController, Instant) {
        (
            RateController::new(RateConfig::default()).unwrap(),
            Instant::now(),
        )
    }

    #[test]
    fn starts_at_the_start_rate_and_waits_for_an_estimate() {
        let (mut rate, t0) = controller();
        assert_eq!(rate.target(), 1000);
        assert_eq!(rate.update(t0, None), None);
        assert_eq!(rate.target(), 1000);
        let high = RateController::new(RateConfig {
            start_kbps: 9000,
            ..RateConfig::default()
        })
        .unwrap();
        assert_eq!(high.target(), 2500, "the start is clamped into the bounds");
    }

    #[test]
    fn a_lower_estimate_is_followed_at_once_and_within_the_bounds() {
        let (mut rate, t0) = controller();
        assert_eq!(rate.update(t0, Some(400_000)), Some(360));
        assert_eq!(rate.update(t0 + ms(500), Some(10_000)), Some(150), "min");
        assert_eq!(rate.update(t0 + ms(1000), Some(5_000)), None);
    }

    #[test]
    fn no_change_more_often_than_every_500_ms() {
        let (mut rate, t0) = controller();
        assert_eq!(rate.update(t0, Some(500_000)), Some(450));
        for step in 1..10 {
            assert_eq!(rate.update(t0 + ms(step * 49), Some(200_000)), None);
        }
        assert_eq!(rate.update(t0 + ms(500), Some(200_000)), Some(180));
    }

    #[test]
    fn a_higher_estimate_is_followed_in_steps_of_at_most_25_percent() {
        let (mut rate, t0) = controller();
        assert_eq!(rate.update(t0, Some(200_000)), Some(180));
        let mut targets = Vec::new();
        let mut now = t0;
        for _ in 0..12 {
            now += ms(500);
            if let Some(t) = rate.update(now, Some(100_000_000)) {
                targets.push(t);
            }
        }
        assert_eq!(
            targets,
            [225, 281, 351, 438, 547, 683, 853, 1066, 1332, 1665, 2081, 2500]
        );
        for pair in targets.windows(2) {
            assert!(f64::from(pair[1]) <= f64::from(pair[0]) * 1.25 + 1.0);
        }
    }

    #[test]
    fn small_wobbles_do_not_reconfigure_the_encoder() {
        let (mut rate, t0) = controller();
        assert_eq!(rate.update(t0, Some(1_000_000)), Some(900));
        assert_eq!(rate.update(t0 + ms(600), Some(1_030_000)), None, "+3 %");
        assert_eq!(rate.update(t0 + ms(1200), Some(980_000)), None, "-2 %");
        assert_eq!(rate.update(t0 + ms(1800), Some(1_200_000)), Some(1080));
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let err = RateController::new(RateConfig {
            min_kbps: 3000,
            max_kbps: 2000,
            ..RateConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            VideoError::InvalidBitrateRange {
                min: 3000,
                max: 2000
            }
        );
        assert!(err.to_string().contains("3000"), "{err}");
        let err = RateController::new(RateConfig {
            min_kbps: 0,
            ..RateConfig::default()
        })
        .unwrap_err();
        assert_eq!(err, VideoError::InvalidBitrate(0));
        assert!(RateController::new(RateConfig {
            share: 1.5,
            ..RateConfig::default()
        })
        .is_err());
    }
}
