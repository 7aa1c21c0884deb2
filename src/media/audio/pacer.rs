//! The send-side clock: when each 20 ms frame of bot audio goes out.

use std::time::{Duration, Instant};

use super::{AudioError, OutputQueue, WriteTicket, FRAME_DURATION, RTP_TICKS_PER_FRAME};

const FRAME_NANOS: u128 = FRAME_DURATION.as_nanos();

/// How a [`Pacer`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacerConfig {
    /// The sample rate of the queued mono audio (Pipecat's `audio_out_sample_rate`, 24000 by
    /// default).
    pub sample_rate: u32,
    /// Send silence frames when nothing is queued (Pipecat's `audio_out_auto_silence`, on by
    /// default); otherwise send nothing while idle.
    pub auto_silence: bool,
    /// The most frames a late poll sends back to back. When further behind than this, the pacer
    /// skips the missed slots and sends only the current one (re-anchoring) instead of bursting.
    /// Values below 1 count as 1.
    pub max_burst: u32,
    /// A frame sent more than this after its due time counts as late in [`PacerStats`].
    pub late_tolerance: Duration,
    /// The RTP timestamp of the first slot. RFC 3550 recommends a random one.
    pub rtp_timestamp_base: u32,
}

impl Default for PacerConfig {
    /// 24 kHz, auto-silence on, bursts of at most 3 frames, 5 ms tolerance, RTP base 0.
    fn default() -> Self {
        PacerConfig {
            sample_rate: 24_000,
            auto_silence: true,
            max_burst: 3,
            late_tolerance: Duration::from_millis(5),
            rtp_timestamp_base: 0,
        }
    }
}

/// One 20 ms frame that is due: encode [`pcm`](FrameToSend::pcm) and send it with
/// [`rtp_timestamp`](FrameToSend::rtp_timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameToSend {
    /// 20 ms of mono samples at the pacer's sample rate.
    pub pcm: Vec<i16>,
    /// Whether this is generated silence (the queue was empty).
    pub silence: bool,
    /// The frame's slot: it is due at `start + slot × 20 ms`. Slots skipped by a re-anchor or
    /// while idle never appear.
    pub slot: u64,
    /// The slot's RTP time in 48 kHz ticks since the start, unwrapped (`slot × 960`).
    pub rtp_time: u64,
    /// The 32-bit RTP timestamp: the configured base plus [`rtp_time`](FrameToSend::rtp_time),
    /// wrapping.
    pub rtp_timestamp: u32,
    /// The RTP marker bit: set on the first frame sent, and on the first after a gap in
    /// sending (idle without auto-silence, or a re-anchor).
    pub marker: bool,
    /// When the frame was due.
    pub due: Instant,
    /// How long after its due time it was polled.
    pub late: Duration,
    /// The queue's [`played_index`](OutputQueue::played_index) once this frame is taken: every
    /// write whose [`WriteTicket::end_index`] is at most this has been played.
    pub played_index: u64,
}

/// Counters a [`Pacer`] keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacerStats {
    /// Frames returned by [`Pacer::poll`].
    pub frames_sent: u64,
    /// Of those, frames of queued audio.
    pub audio_frames: u64,
    /// Of those, generated silence frames.
    pub silence_frames: u64,
    /// Frames sent more than [`PacerConfig::late_tolerance`] after their due time.
    pub late_frames: u64,
    /// Slots that passed with nothing queued and auto-silence off.
    pub idle_slots: u64,
    /// Slots skipped by re-anchoring after a stall.
    pub skipped_slots: u64,
    /// How many times the pacer re-anchored after a stall.
    pub reanchors: u64,
}

/// A sans-IO clock that paces bot audio out in 20 ms frames.
///
/// Frame `n` is due at `start + n × 20 ms`, measured from the pacer's own start, never from how
/// fast audio was written. The caller sleeps until [`next_due`](Pacer::next_due), then drains
/// [`poll`](Pacer::poll) with the current time; nothing here sleeps or reads a clock, so tests
/// drive it with a fake one.
///
/// * Queued audio goes out one frame per slot; a partial last frame is zero-padded.
/// * With nothing queued it sends silence if [`PacerConfig::auto_silence`], or nothing.
/// * Polled late, it sends every due frame, at most [`PacerConfig::max_burst`] back to back;
///   further behind (a stall), it skips the missed slots and sends only the current one. The RTP
///   timestamp always follows the slot, so the receiver sees the stall as a gap, not as a
///   growing delay.
///
/// ```
/// use std::time::{Duration, Instant};
/// use smallwebrtc::media::audio::{Pacer, PacerConfig};
///
/// let start = Instant::now();
/// let mut pacer = Pacer::new(PacerConfig::default(), start)?;
/// let ticket = pacer.push_bytes(&[0; 960])?; // 20 ms at 24 kHz
/// let frame = pacer.poll(start).expect("slot 0 is due at the start");
/// assert_eq!((frame.slot, frame.rtp_timestamp, frame.silence), (0, 0, false));
/// assert!(pacer.is_played(ticket));
/// assert!(pacer.poll(start + Duration::from_millis(19)).is_none());
/// let frame = pacer.poll(start + Duration::from_millis(20)).unwrap();
/// assert_eq!((frame.rtp_timestamp, frame.silence), (960, true));
/// # Ok::<(), smallwebrtc::media::audio::AudioError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pacer {
    config: PacerConfig,
    queue: OutputQueue,
    start: Instant,
    /// The next slot to send.
    slot: u64,
    /// Whether the next frame sent starts a talkspurt (marker bit).
    after_gap: bool,
    stats: PacerStats,
}

impl Pacer {
    /// A pacer whose slot 0 is due at `start`.
    ///
    /// # Errors
    ///
    /// [`AudioError::UnsupportedSampleRate`] if 20 ms of [`PacerConfig::sample_rate`] is not a
    /// whole number of samples (or the rate is out of range).
    pub fn new(config: PacerConfig, start: Instant) -> Result<Self, AudioError> {
        let queue = OutputQueue::new(config.sample_rate)?;
        Ok(Pacer {
            config,
            queue,
            start,
            slot: 0,
            after_gap: true,
            stats: PacerStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PacerConfig {
        &self.config
    }

    /// The queue of audio waiting to be sent.
    pub fn queue(&self) -> &OutputQueue {
        &self.queue
    }

    /// The queue of audio waiting to be sent, to write to or clear.
    pub fn queue_mut(&mut self) -> &mut OutputQueue {
        &mut self.queue
    }

    /// Queues PCM s16 mono bytes of any even length: see [`OutputQueue::push_bytes`].
    ///
    /// # Errors
    ///
    /// [`AudioError::OddByteCount`].
    pub fn push_bytes(&mut self, pcm: &[u8]) -> Result<WriteTicket, AudioError> {
        self.queue.push_bytes(pcm)
    }

    /// Queues mono samples: see [`OutputQueue::push_samples`].
    pub fn push_samples(&mut self, pcm: &[i16]) -> WriteTicket {
        self.queue.push_samples(pcm)
    }

    /// Drops all queued audio at once (an interruption); the next frame sent is silence, or
    /// nothing. Returns the number of samples dropped.
    pub fn clear(&mut self) -> usize {
        self.queue.clear()
    }

    /// How much audio is queued.
    pub fn queued_duration(&self) -> Duration {
        self.queue.queued_duration()
    }

    /// Cumulative samples played (sent) or dropped so far.
    pub fn played_index(&self) -> u64 {
        self.queue.played_index()
    }

    /// Whether the write that returned `ticket` has been played (or dropped by a clear).
    pub fn is_played(&self, ticket: WriteTicket) -> bool {
        self.queue.is_played(ticket)
    }

    /// The counters so far.
    pub fn stats(&self) -> &PacerStats {
        &self.stats
    }

    /// The start time: slot `n` is due at `start + n × 20 ms`.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// When the next frame is due. Sleep until then, then [`poll`](Pacer::poll).
    pub fn next_due(&self) -> Instant {
        self.due_at(self.slot)
    }

    /// The frame due at `now`, if any. Call it repeatedly until it returns `None`: a late
    /// caller gets the frames it missed (at most [`PacerConfig::max_burst`]).
    pub fn poll(&mut self, now: Instant) -> Option<FrameToSend> {
        // The latest slot due at `now`.
        let elapsed = now.checked_duration_since(self.start)?;
        let current = u64::try_from(elapsed.as_nanos() / FRAME_NANOS).unwrap_or(u64::MAX);
        if current < self.slot {
            return None;
        }
        let behind = current - self.slot + 1;
        if self.queue.is_empty() && !self.config.auto_silence {
            // Idle: let every due slot pass; sending resumes on a later slot.
            self.stats.idle_slots = self.stats.idle_slots.saturating_add(behind);
            self.slot = current.saturating_add(1);
            self.after_gap = true;
            return None;
        }
        if behind > u64::from(self.config.max_burst.max(1)) {
            let skip = behind - 1;
            self.slot = current;
            self.stats.skipped_slots = self.stats.skipped_slots.saturating_add(skip);
            self.stats.reanchors += 1;
            self.after_gap = true;
        }
        let slot = self.slot;
        self.slot = self.slot.saturating_add(1);
        let due = self.due_at(slot);
        let late = now.saturating_duration_since(due);
        let (pcm, silence) = match self.queue.pop_frame() {
            Some(pcm) => (pcm, false),
            None => (vec![0; self.queue.frame_samples()], true),
        };
        let rtp_time = slot.saturating_mul(u64::from(RTP_TICKS_PER_FRAME));
        let marker = std::mem::replace(&mut self.after_gap, false);
        self.stats.frames_sent += 1;
        if silence {
            self.stats.silence_frames += 1;
        } else {
            self.stats.audio_frames += 1;
        }
        if late > self.config.late_tolerance {
            self.stats.late_frames += 1;
        }
        Some(FrameToSend {
            pcm,
            silence,
            slot,
            rtp_time,
            rtp_timestamp: self.config.rtp_timestamp_base.wrapping_add(rtp_time as u32),
            marker,
            due,
            late,
            played_index: self.queue.played_index(),
        })
    }

    fn due_at(&self, slot: u64) -> Instant {
        let nanos = u128::from(slot) * FRAME_NANOS;
        let offset = Duration::new(
            u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
            (nanos % 1_000_000_000) as u32,
        );
        // Unreachable in practice (centuries away); fall back to the far end rather than panic.
        self.start.checked_add(offset).unwrap_or(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::{pcm_to_le_bytes, sine};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pacer(auto_silence: bool) -> (Pacer, Instant) {
        let start = Instant::now();
        let config = PacerConfig {
            auto_silence,
            ..PacerConfig::default()
        };
        (Pacer::new(config, start).unwrap(), start)
    }

    #[test]
    fn two_seconds_queued_at_once_take_exactly_100_frames_at_20ms() {
        let (mut pacer, start) = pacer(false);
        let audio = pcm_to_le_bytes(&sine(440.0, 24_000, 48_000, 0.5));
        let ticket = pacer.push_bytes(&audio).unwrap();
        assert_eq!(pacer.queued_duration(), Duration::from_secs(2));
        let mut frames = Vec::new();
        let mut now = start;
        // A fake clock that jumps straight to each due time.
        for _ in 0..200 {
            while let Some(frame) = pacer.poll(now) {
                frames.push(frame);
            }
            now = pacer.next_due();
        }
        assert_eq!(frames.len(), 100);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.slot, i as u64);
            assert_eq!(frame.due, start + ms(20 * i as u64));
            assert_eq!(frame.late, Duration::ZERO);
            assert_eq!(frame.rtp_timestamp, 960 * i as u32);
            assert_eq!(frame.pcm.len(), 480);
            assert!(!frame.silence);
            assert_eq!(frame.marker, i == 0);
            assert_eq!(frame.played_index, 480 * (i as u64 + 1));
            assert_eq!(frame.played_index >= ticket.end_index(), i == 99);
        }
        assert!(pacer.is_played(ticket));
        assert_eq!(
            frames
                .iter()
                .flat_map(|f| f.pcm.iter())
                .copied()
                .collect::<Vec<_>>(),
            sine(440.0, 24_000, 48_000, 0.5)
        );
        let stats = pacer.stats();
        assert_eq!((stats.audio_frames, stats.late_frames), (100, 0));
        assert_eq!(stats.idle_slots, 100);
    }

    #[test]
    fn back_pressure_resolves_after_the_write_is_played() {
        let (mut pacer, start) = pacer(true);
        let first = pacer.push_bytes(&[1; 2 * 720]).unwrap(); // 30 ms
        let second = pacer.push_bytes(&[2; 2 * 480]).unwrap(); // 20 ms
        let f0 = pacer.poll(start).unwrap();
        assert!(!pacer.is_played(first));
        assert_eq!(f0.played_index, 480);
        let f1 = pacer.poll(start + ms(20)).unwrap();
        assert!(pacer.is_played(first) && !pacer.is_played(second));
        assert_eq!(f1.pcm[239], 0x0101);
        assert_eq!(f1.pcm[240], 0x0202);
        let f2 = pacer.poll(start + ms(40)).unwrap();
        assert!(pacer.is_played(second));
        assert!(!f2.silence);
        assert_eq!(f2.pcm[240..], [0; 240]);
        assert!(pacer.poll(start + ms(60)).unwrap().silence);
    }

    #[test]
    fn clear_stops_audio_within_one_frame() {
        let (mut pacer, start) = pacer(true);
        let ticket = pacer.push_samples(&[1000; 48_000]);
        for i in 0..10 {
            assert!(!pacer.poll(start + ms(20 * i)).unwrap().silence);
        }
        assert_eq!(pacer.clear(), 48_000 - 10 * 480);
        assert!(pacer.is_played(ticket), "waiting writers are released");
        assert_eq!(pacer.queued_duration(), Duration::ZERO);
        let next = pacer.poll(start + ms(200)).unwrap();
        assert!(next.silence && next.pcm.iter().all(|&s| s == 0));
        assert_eq!(next.slot, 10);
        // Without auto-silence nothing at all is sent after a clear.
        let (mut quiet, start) = pacer_without_silence_and_audio();
        assert!(quiet.poll(start).is_some());
        quiet.clear();
        assert!(quiet.poll(start + ms(20)).is_none());
    }

    fn pacer_without_silence_and_audio() -> (Pacer, Instant) {
        let (mut pacer, start) = pacer(false);
        pacer.push_samples(&[5; 4_800]);
        (pacer, start)
    }

    #[test]
    fn idle_sends_silence_with_auto_silence_and_nothing_without() {
        let (mut loud, start) = pacer(true);
        for i in 0..50 {
            let frame = loud.poll(start + ms(20 * i)).unwrap();
            assert!(frame.silence);
            assert_eq!(frame.pcm, vec![0; 480]);
            assert_eq!(frame.rtp_timestamp, 960 * i as u32);
            assert!(loud.poll(start + ms(20 * i)).is_none());
        }
        assert_eq!(loud.stats().silence_frames, 50);

        let (mut quiet, start) = pacer(false);
        for i in 0..50 {
            assert!(quiet.poll(start + ms(20 * i)).is_none());
        }
        assert_eq!(quiet.stats().idle_slots, 50);
        assert_eq!(quiet.stats().frames_sent, 0);
        // Audio written while idle starts on the next slot, with the marker bit and a timestamp
        // that reflects the time that passed.
        quiet.push_samples(&[7; 480]);
        assert_eq!(quiet.next_due(), start + ms(1_000));
        let frame = quiet.poll(start + ms(1_001)).unwrap();
        assert_eq!((frame.slot, frame.rtp_timestamp), (50, 48_000));
        assert!(frame.marker && !frame.silence);
        assert_eq!(frame.late, ms(1));
        assert!(quiet.poll(start + ms(1_020)).is_none());
    }

    #[test]
    fn a_late_poll_catches_up_but_never_bursts_more_than_three() {
        let (mut pacer, start) = pacer(true);
        pacer.push_samples(&[1; 48_000]);
        // 50 ms late: slots 0, 1 and 2 are due.
        let now = start + ms(50);
        let burst: Vec<FrameToSend> = std::iter::from_fn(|| pacer.poll(now)).collect();
        assert_eq!(burst.iter().map(|f| f.slot).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(burst[0].late, ms(50));
        assert_eq!(burst[2].late, ms(10));
        assert_eq!(pacer.stats().late_frames, 3);
        assert_eq!(pacer.next_due(), start + ms(60));
        // Back on time.
        assert_eq!(pacer.poll(start + ms(60)).unwrap().late, Duration::ZERO);
        // A one-second stall: re-anchor, send one frame for the current slot only.
        let now = start + ms(1_075);
        let burst: Vec<FrameToSend> = std::iter::from_fn(|| pacer.poll(now)).collect();
        assert_eq!(burst.len(), 1);
        let frame = &burst[0];
        assert_eq!(frame.slot, 53);
        assert_eq!(frame.rtp_timestamp, 53 * 960);
        assert_eq!(frame.late, ms(15));
        assert!(frame.marker && !frame.silence);
        // No audio was dropped by the stall: it carries on where it was.
        assert_eq!(frame.played_index, 5 * 480);
        assert_eq!(pacer.stats().skipped_slots, 49);
        assert_eq!(pacer.stats().reanchors, 1);
        assert_eq!(pacer.next_due(), start + ms(1_080));
        // Exactly four slots behind is re-anchored too; three is not.
        let now = start + ms(1_080 + 3 * 20);
        assert_eq!(std::iter::from_fn(|| pacer.poll(now)).count(), 1);
        let now = pacer.next_due() + ms(2 * 20);
        assert_eq!(std::iter::from_fn(|| pacer.poll(now)).count(), 3);
    }

    #[test]
    fn early_and_backwards_clocks_send_nothing() {
        let (mut pacer, start) = pacer(true);
        assert!(start
            .checked_sub(ms(5))
            .is_none_or(|t| pacer.poll(t).is_none()));
        assert!(pacer.poll(start).is_some());
        assert!(pacer.poll(start + ms(19)).is_none());
        assert!(pacer.poll(start).is_none());
        assert!(pacer.poll(start + ms(20)).is_some());
    }

    #[test]
    fn rtp_timestamps_wrap_from_the_base() {
        let start = Instant::now();
        let config = PacerConfig {
            rtp_timestamp_base: u32::MAX - 959,
            ..PacerConfig::default()
        };
        let mut pacer = Pacer::new(config, start).unwrap();
        assert_eq!(pacer.poll(start).unwrap().rtp_timestamp, u32::MAX - 959);
        assert_eq!(pacer.poll(start + ms(20)).unwrap().rtp_timestamp, 0);
        assert_eq!(pacer.poll(start + ms(40)).unwrap().rtp_time, 1_920);
    }

    #[test]
    fn other_rates_and_bad_configs() {
        let start = Instant::now();
        for (rate, frame) in [(16_000, 320), (22_050, 441), (48_000, 960)] {
            let config = PacerConfig {
                sample_rate: rate,
                ..PacerConfig::default()
            };
            let mut pacer = Pacer::new(config, start).unwrap();
            assert_eq!(pacer.poll(start).unwrap().pcm.len(), frame);
        }
        let bad = PacerConfig {
            sample_rate: 11_025,
            ..PacerConfig::default()
        };
        assert_eq!(
            Pacer::new(bad, start).unwrap_err(),
            AudioError::UnsupportedSampleRate(11_025)
        );
        let zero_burst = PacerConfig {
            max_burst: 0,
            ..PacerConfig::default()
        };
        let mut pacer = Pacer::new(zero_burst, start).unwrap();
        assert_eq!(
            std::iter::from_fn(|| pacer.poll(start + ms(100))).count(),
            1
        );
        let (mut p, start) = pacer_without_silence_and_audio();
        assert_eq!(p.push_bytes(&[0; 5]), Err(AudioError::OddByteCount(5)));
        assert!(p
            .poll(start + Duration::from_secs(60 * 60 * 24 * 365))
            .is_some());
    }
}
