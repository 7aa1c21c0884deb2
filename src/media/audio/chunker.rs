//! Re-framing into exact 20 ms frames: [`InputChunker`] on the receive path, [`OutputQueue`] on
//! the send path.

use std::collections::VecDeque;
use std::time::Duration;

use super::{check_channels, check_frame_rate, check_interleaved, samples_to_duration, AudioError};

/// A frame of interleaved PCM s16 audio with its presentation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Interleaved samples: `samples_per_channel() × channels` of them.
    pub samples: Vec<i16>,
    /// The sample rate in Hz.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: usize,
    /// Presentation time: samples per channel since the start of the stream.
    pub pts: u64,
}

impl AudioFrame {
    /// Samples per channel in this frame.
    pub fn samples_per_channel(&self) -> usize {
        self.samples.len().checked_div(self.channels).unwrap_or(0)
    }

    /// The frame's duration (20 ms for frames from [`InputChunker`]).
    pub fn duration(&self) -> Duration {
        samples_to_duration(self.samples_per_channel() as u64, self.sample_rate)
    }

    /// The presentation time as a duration since the start of the stream.
    pub fn pts_time(&self) -> Duration {
        samples_to_duration(self.pts, self.sample_rate)
    }

    /// The samples as little-endian PCM s16 bytes, the form Pipecat frames carry.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        super::pcm_to_le_bytes(&self.samples)
    }
}

/// Accumulates decoded PCM of any length and yields exact 20 ms frames with a monotonically
/// increasing presentation time, whatever the packet durations (10, 20, 40, 60 ms …).
///
/// ```
/// use smallwebrtc::media::audio::InputChunker;
///
/// let mut chunker = InputChunker::new(16_000, 1)?;
/// chunker.push(&[0; 960])?; // one 60 ms packet
/// let frames: Vec<_> = std::iter::from_fn(|| chunker.pop()).collect();
/// assert_eq!(frames.len(), 3);
/// assert!(frames.iter().all(|f| f.samples.len() == 320));
/// assert_eq!(frames[2].pts, 640);
/// # Ok::<(), smallwebrtc::media::audio::AudioError>(())
/// ```
#[derive(Debug, Clone)]
pub struct InputChunker {
    sample_rate: u32,
    channels: usize,
    /// Interleaved samples per frame.
    frame_len: usize,
    buffer: VecDeque<i16>,
    next_pts: u64,
}

impl InputChunker {
    /// A chunker for `channels` interleaved channels at `sample_rate`.
    ///
    /// # Errors
    ///
    /// [`AudioError::UnsupportedSampleRate`] (20 ms must be whole samples) or
    /// [`AudioError::UnsupportedChannels`].
    pub fn new(sample_rate: u32, channels: usize) -> Result<Self, AudioError> {
        let rate = check_frame_rate(sample_rate)?;
        let channels = check_channels(channels)?;
        let frame_len = (rate / 50) as usize * channels;
        Ok(InputChunker {
            sample_rate: rate,
            channels,
            frame_len,
            buffer: VecDeque::with_capacity(frame_len * 4),
            next_pts: 0,
        })
    }

    /// The sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The channel count.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples per channel in each frame (320 at 16 kHz).
    pub fn frame_samples(&self) -> usize {
        self.frame_len / self.channels
    }

    /// Appends interleaved samples.
    ///
    /// # Errors
    ///
    /// [`AudioError::PartialChannelFrame`] if `pcm` is not a whole number of channel frames;
    /// nothing is appended then.
    pub fn push(&mut self, pcm: &[i16]) -> Result<(), AudioError> {
        check_interleaved(pcm.len(), self.channels)?;
        self.buffer.extend(pcm.iter().copied());
        Ok(())
    }

    /// Appends little-endian PCM s16 bytes.
    ///
    /// # Errors
    ///
    /// [`AudioError::OddByteCount`] or [`AudioError::PartialChannelFrame`]; nothing is appended
    /// then.
    pub fn push_bytes(&mut self, pcm: &[u8]) -> Result<(), AudioError> {
        if !pcm.len().is_multiple_of(2) {
            return Err(AudioError::OddByteCount(pcm.len()));
        }
        check_interleaved(pcm.len() / 2, self.channels)?;
        self.buffer.extend(
            pcm.chunks_exact(2)
                .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
        );
        Ok(())
    }

    /// The next complete 20 ms frame, if one is buffered.
    pub fn pop(&mut self) -> Option<AudioFrame> {
        if self.buffer.len() < self.frame_len {
            return None;
        }
        let samples: Vec<i16> = self.buffer.drain(..self.frame_len).collect();
        Some(self.frame(samples))
    }

    /// The buffered remainder (less than a frame), zero-padded to a full 20 ms frame; `None` if
    /// nothing is buffered. For the end of a stream.
    pub fn flush(&mut self) -> Option<AudioFrame> {
        if let Some(frame) = self.pop() {
            return Some(frame);
        }
        if self.buffer.is_empty() {
            return None;
        }
        let mut samples: Vec<i16> = self.buffer.drain(..).collect();
        samples.resize(self.frame_len, 0);
        Some(self.frame(samples))
    }

    /// Samples per channel buffered and not yet returned.
    pub fn buffered_samples(&self) -> usize {
        self.buffer.len() / self.channels
    }

    /// The presentation time the next frame will carry, in samples per channel.
    pub fn next_pts(&self) -> u64 {
        self.next_pts
    }

    /// Drops everything buffered. The presentation time carries on from where it was: the
    /// dropped samples are as if never pushed.
    pub fn clear(&mut self) {
        self.buffer.clear();
    }

    fn frame(&mut self, samples: Vec<i16>) -> AudioFrame {
        let pts = self.next_pts;
        self.next_pts = self
            .next_pts
            .saturating_add((self.frame_len / self.channels) as u64);
        AudioFrame {
            samples,
            sample_rate: self.sample_rate,
            channels: self.channels,
            pts,
        }
    }
}

/// What a write to an [`OutputQueue`] returns: the cumulative sample index at which the write
/// ends. The write has been played (sent) once the queue's
/// [`played_index`](OutputQueue::played_index) reaches it — see [`OutputQueue::is_played`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteTicket {
    end: u64,
}

impl WriteTicket {
    /// The cumulative number of samples written, up to and including this write.
    pub fn end_index(&self) -> u64 {
        self.end
    }
}

/// The send-side queue of bot audio: PCM s16 **mono** writes of any length in, 20 ms frames out.
///
/// Each write returns a [`WriteTicket`]; the queue counts samples taken for sending (and samples
/// dropped by [`clear`](OutputQueue::clear)), so a writer can wait until its write has been
/// played — Pipecat's real-time back-pressure. [`queued_duration`](OutputQueue::queued_duration)
/// tells how much audio is waiting.
///
/// ```
/// use smallwebrtc::media::audio::{AudioError, OutputQueue};
///
/// let mut queue = OutputQueue::new(24_000)?;
/// let ticket = queue.push_bytes(&[0; 1_000])?; // 500 samples: 20.8 ms
/// assert_eq!(queue.push_bytes(&[0; 3]), Err(AudioError::OddByteCount(3)));
/// assert_eq!(queue.pop_frame().map(|f| f.len()), Some(480));
/// assert!(!queue.is_played(ticket));
/// assert_eq!(queue.pop_frame().map(|f| f.len()), Some(480)); // 20 samples, zero-padded
/// assert!(queue.is_played(ticket));
/// assert_eq!(queue.pop_frame(), None);
/// # Ok::<(), AudioError>(())
/// ```
#[derive(Debug, Clone)]
pub struct OutputQueue {
    sample_rate: u32,
    frame_len: usize,
    queue: VecDeque<i16>,
    /// Samples ever written.
    written: u64,
    /// Samples taken for sending or dropped by `clear`.
    played: u64,
    /// Samples dropped by `clear`.
    cleared: u64,
}

impl OutputQueue {
    /// An empty queue for mono audio at `sample_rate`.
    ///
    /// # Errors
    ///
    /// [`AudioError::UnsupportedSampleRate`] (20 ms must be whole samples).
    pub fn new(sample_rate: u32) -> Result<Self, AudioError> {
        let rate = check_frame_rate(sample_rate)?;
        Ok(OutputQueue {
            sample_rate: rate,
            frame_len: (rate / 50) as usize,
            queue: VecDeque::new(),
            written: 0,
            played: 0,
            cleared: 0,
        })
    }

    /// The sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples in one 20 ms frame (480 at 24 kHz).
    pub fn frame_samples(&self) -> usize {
        self.frame_len
    }

    /// Queues little-endian PCM s16 mono bytes of any (even) length.
    ///
    /// # Errors
    ///
    /// [`AudioError::OddByteCount`] if the buffer ends in half a sample; nothing is queued then.
    pub fn push_bytes(&mut self, pcm: &[u8]) -> Result<WriteTicket, AudioError> {
        if !pcm.len().is_multiple_of(2) {
            return Err(AudioError::OddByteCount(pcm.len()));
        }
        self.queue.extend(
            pcm.chunks_exact(2)
                .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
        );
        Ok(self.advance_written(pcm.len() / 2))
    }

    /// Queues mono samples.
    pub fn push_samples(&mut self, pcm: &[i16]) -> WriteTicket {
        self.queue.extend(pcm.iter().copied());
        self.advance_written(pcm.len())
    }

    /// Takes the next 20 ms frame: a full frame if one is queued, else the queued remainder
    /// zero-padded (so the tail of an utterance is not held back), else `None`.
    pub fn pop_frame(&mut self) -> Option<Vec<i16>> {
        if self.queue.is_empty() {
            return None;
        }
        let take = self.frame_len.min(self.queue.len());
        let mut frame: Vec<i16> = self.queue.drain(..take).collect();
        frame.resize(self.frame_len, 0);
        self.played = self.played.saturating_add(take as u64);
        Some(frame)
    }

    /// Drops everything queued at once (an interruption). Every write so far then counts as
    /// played, so writers waiting on back-pressure are released. Returns the number of samples
    /// dropped.
    pub fn clear(&mut self) -> usize {
        let dropped = self.queue.len();
        self.queue.clear();
        self.played = self.written;
        self.cleared = self.cleared.saturating_add(dropped as u64);
        dropped
    }

    /// Samples queued and not yet taken.
    pub fn queued_samples(&self) -> usize {
        self.queue.len()
    }

    /// How much audio is queued.
    pub fn queued_duration(&self) -> Duration {
        samples_to_duration(self.queue.len() as u64, self.sample_rate)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Cumulative samples ever written.
    pub fn written_index(&self) -> u64 {
        self.written
    }

    /// Cumulative samples taken for sending or dropped by [`clear`](OutputQueue::clear).
    pub fn played_index(&self) -> u64 {
        self.played
    }

    /// Cumulative samples dropped by [`clear`](OutputQueue::clear).
    pub fn cleared_samples(&self) -> u64 {
        self.cleared
    }

    /// Whether the write that returned `ticket` has been played (or dropped by a clear).
    pub fn is_played(&self, ticket: WriteTicket) -> bool {
        self.played >= ticket.end
    }

    fn advance_written(&mut self, samples: usize) -> WriteTicket {
        self.written = self.written.saturating_add(samples as u64);
        WriteTicket { end: self.written }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_chunker_rejects_bad_arguments() {
        assert!(InputChunker::new(11_025, 1).is_err());
        assert!(InputChunker::new(16_000, 0).is_err());
        assert!(InputChunker::new(16_000, 3).is_err());
        let mut c = InputChunker::new(16_000, 2).unwrap();
        assert_eq!(
            c.push(&[1, 2, 3]),
            Err(AudioError::PartialChannelFrame {
                len: 3,
                channels: 2
            })
        );
        assert_eq!(c.push_bytes(&[1, 2, 3]), Err(AudioError::OddByteCount(3)));
        assert_eq!(
            c.push_bytes(&[1, 2]),
            Err(AudioError::PartialChannelFrame {
                len: 1,
                channels: 2
            })
        );
        assert_eq!(c.buffered_samples(), 0);
    }

    #[test]
    fn input_chunker_reframes_any_sizes_in_order() {
        let mut c = InputChunker::new(16_000, 1).unwrap();
        let ramp: Vec<i16> = (0..3_200).map(|i| i as i16).collect();
        let mut frames = Vec::new();
        let mut offset = 0;
        // 10, 40, 60, 20, 7-sample pieces ...
        for &size in [160usize, 640, 960, 320, 7, 313, 800].iter().cycle() {
            if offset >= ramp.len() {
                break;
            }
            let end = (offset + size).min(ramp.len());
            c.push(&ramp[offset..end]).unwrap();
            offset = end;
            while let Some(frame) = c.pop() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 10);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.samples.len(), 320);
            assert_eq!(frame.pts, i as u64 * 320);
            assert_eq!(frame.pts_time(), Duration::from_millis(20 * i as u64));
            assert_eq!(frame.duration(), Duration::from_millis(20));
            assert_eq!(frame.samples[0], (i * 320) as i16);
            assert_eq!(frame.to_le_bytes().len(), 640);
        }
        assert_eq!(c.flush(), None);
    }

    #[test]
    fn input_chunker_stereo_and_flush() {
        let mut c = InputChunker::new(48_000, 2).unwrap();
        assert_eq!(c.frame_samples(), 960);
        c.push(&[1; 2_000]).unwrap();
        let frame = c.pop().unwrap();
        assert_eq!(frame.samples.len(), 1_920);
        assert_eq!(frame.samples_per_channel(), 960);
        assert_eq!(c.pop(), None);
        assert_eq!(c.buffered_samples(), 40);
        let last = c.flush().unwrap();
        assert_eq!(last.samples.len(), 1_920);
        assert_eq!(last.pts, 960);
        assert_eq!(&last.samples[78..82], &[1, 1, 0, 0]);
        assert_eq!(c.flush(), None);
        c.push(&[5; 10]).unwrap();
        c.clear();
        assert_eq!(c.buffered_samples(), 0);
        assert_eq!(c.next_pts(), 1_920);
    }

    #[test]
    fn output_queue_rejects_odd_byte_counts() {
        let mut q = OutputQueue::new(24_000).unwrap();
        for odd in [1usize, 3, 479, 961] {
            assert_eq!(
                q.push_bytes(&vec![0; odd]),
                Err(AudioError::OddByteCount(odd))
            );
        }
        assert_eq!(q.queued_samples(), 0);
        assert_eq!(q.written_index(), 0);
        assert!(OutputQueue::new(44_000 + 1).is_err());
    }

    #[test]
    fn output_queue_frames_any_write_sizes_and_tracks_tickets() {
        let mut q = OutputQueue::new(16_000).unwrap();
        let samples: Vec<i16> = (1..=1_000).collect();
        let bytes = crate::media::audio::pcm_to_le_bytes(&samples);
        let t1 = q.push_bytes(&bytes[..2 * 100]).unwrap();
        let t2 = q.push_bytes(&bytes[2 * 100..2 * 700]).unwrap();
        let t3 = q.push_samples(&samples[700..]);
        assert_eq!(
            (t1.end_index(), t2.end_index(), t3.end_index()),
            (100, 700, 1_000)
        );
        assert_eq!(
            q.queued_duration(),
            Duration::from_millis(62) + Duration::from_micros(500)
        );
        let f1 = q.pop_frame().unwrap();
        assert_eq!(f1.len(), 320);
        assert_eq!(f1[0], 1);
        assert!(q.is_played(t1) && !q.is_played(t2));
        let _ = q.pop_frame().unwrap();
        assert!(!q.is_played(t2));
        let _ = q.pop_frame().unwrap();
        assert!(q.is_played(t2) && !q.is_played(t3));
        let tail = q.pop_frame().unwrap();
        assert_eq!(tail.len(), 320);
        assert_eq!(tail[39], 1_000);
        assert!(tail[40..].iter().all(|&s| s == 0));
        assert!(q.is_played(t3));
        assert_eq!(q.pop_frame(), None);
        assert_eq!(q.played_index(), 1_000);
    }

    #[test]
    fn output_queue_clear_drops_everything_and_releases_writers() {
        let mut q = OutputQueue::new(24_000).unwrap();
        let t = q.push_samples(&[1; 48_000]);
        let _ = q.pop_frame();
        assert_eq!(q.clear(), 48_000 - 480);
        assert!(q.is_empty());
        assert!(q.is_played(t));
        assert_eq!(q.cleared_samples(), 47_520);
        assert_eq!(q.pop_frame(), None);
        let t2 = q.push_samples(&[2; 10]);
        assert_eq!(t2.end_index(), 48_010);
        assert!(!q.is_played(t2));
    }
}
