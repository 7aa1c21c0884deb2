//! A streaming windowed-sinc (Kaiser) polyphase resampler for interleaved s16 audio.
//!
//! Output sample `n` sits at input time `n × M / L` (with `from_rate / to_rate = M / L` in lowest
//! terms). It is the input convolved with a low-pass sinc kernel whose cutoff is just below the
//! lower of the two Nyquist frequencies, windowed by a Kaiser window (about 90 dB of stopband
//! attenuation). When downsampling the cutoff follows the *output* Nyquist, so content above it
//! is removed rather than folded back (no aliasing).
//!
//! The kernel is tabulated once per phase (`L` phases) when `L` is small, which covers every
//! common pair (44 100 ↔ 48 000 has `L` = 160 or 147); otherwise a table of 512 phases is linearly
//! interpolated, which keeps the error near −88 dB.

use super::{check_channels, check_interleaved, check_rate, AudioError};

/// Zero crossings of the sinc on each side of the kernel centre.
const ZERO_CROSSINGS: f64 = 32.0;
/// Kaiser window shape: about 90 dB of stopband attenuation.
const KAISER_BETA: f64 = 8.96;
/// Cutoff as a fraction of the lower Nyquist frequency. With the transition band this puts the
/// start of the stopband just below the lower Nyquist frequency.
const ROLLOFF: f64 = 0.9;
/// Above this many phases, use an interpolated table of this many phases instead.
const MAX_EXACT_PHASES: u64 = 512;

/// A streaming sample-rate converter for interleaved s16 audio (mono or stereo).
///
/// It keeps state between calls, so a stream may be fed in pieces of any size; the output has a
/// constant latency of [`latency_input_frames`](Resampler::latency_input_frames) input frames
/// (about 0.7 ms at 48 kHz), so the first call yields slightly fewer samples than the ratio
/// suggests.
///
/// ```
/// use smallwebrtc::media::audio::{dominant_frequency, sine, Resampler};
///
/// let mut resampler = Resampler::new(44_100, 16_000, 1)?;
/// let mut out = Vec::new();
/// resampler.process(&sine(1_000.0, 44_100, 44_100, 0.5), &mut out)?;
/// // One second in, one second out, less the look-ahead still held back.
/// let held_back = resampler.latency_output_frames() as i64;
/// assert!((out.len() as i64 - (16_000 - held_back)).abs() <= 1);
/// assert!((dominant_frequency(&out, 16_000) - 1_000.0).abs() < 1.0);
/// # Ok::<(), smallwebrtc::media::audio::AudioError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Resampler {
    from_rate: u32,
    to_rate: u32,
    channels: usize,
    /// `L`: output steps per `M` input steps.
    up: u64,
    /// `M`.
    down: u64,
    /// Kernel half-width in input frames; each output uses `2 × half` input frames.
    half: usize,
    /// Number of phases tabulated.
    phases: usize,
    /// Whether `phases == up` (exact) or the table is interpolated.
    exact: bool,
    /// `phases` rows (+1 when interpolated) of `2 × half` taps.
    table: Vec<f32>,
    /// Interleaved input frames not yet fully used; frame 0 has absolute index `hist_start`.
    history: Vec<f32>,
    hist_start: i64,
    /// Absolute input index of the integer part of the next output's position.
    pos: i64,
    /// Fractional part of the next output's position, in `1 / up` units.
    phase: u64,
    /// Scratch row for interpolated taps.
    row: Vec<f32>,
}

impl Resampler {
    /// A resampler from `from_rate` to `to_rate` Hz for `channels` interleaved channels.
    ///
    /// # Errors
    ///
    /// [`AudioError::UnsupportedSampleRate`] for rates outside 8000..=192000 Hz, and
    /// [`AudioError::UnsupportedChannels`] unless `channels` is 1 or 2.
    pub fn new(from_rate: u32, to_rate: u32, channels: usize) -> Result<Self, AudioError> {
        check_rate(from_rate)?;
        check_rate(to_rate)?;
        check_channels(channels)?;
        let g = gcd(u64::from(from_rate), u64::from(to_rate));
        let up = u64::from(to_rate) / g;
        let down = u64::from(from_rate) / g;
        // Cutoff relative to the input Nyquist frequency.
        let cutoff = (up as f64 / down as f64).min(1.0) * ROLLOFF;
        let half = (ZERO_CROSSINGS / cutoff).ceil() as usize;
        let taps = 2 * half;
        let exact = up <= MAX_EXACT_PHASES;
        let phases = if exact {
            up as usize
        } else {
            MAX_EXACT_PHASES as usize
        };
        let rows = if exact { phases } else { phases + 1 };
        let mut table = Vec::with_capacity(rows * taps);
        let norm = bessel_i0(KAISER_BETA);
        for row in 0..rows {
            let frac = row as f64 / phases as f64;
            let start = table.len();
            for t in 0..taps {
                // Distance from the output position to the input sample this tap weighs.
                let tau = t as f64 - half as f64 + 1.0 - frac;
                table.push(kernel(tau, cutoff, half as f64, norm) as f32);
            }
            // Normalise each phase to unit DC gain.
            let sum: f32 = table[start..].iter().sum();
            if sum.abs() > f32::EPSILON {
                for tap in &mut table[start..] {
                    *tap /= sum;
                }
            }
        }
        let mut resampler = Resampler {
            from_rate,
            to_rate,
            channels,
            up,
            down,
            half,
            phases,
            exact,
            table,
            history: Vec::new(),
            hist_start: 0,
            pos: 0,
            phase: 0,
            row: vec![0.0; taps],
        };
        resampler.reset();
        Ok(resampler)
    }

    /// The input sample rate.
    pub fn from_rate(&self) -> u32 {
        self.from_rate
    }

    /// The output sample rate.
    pub fn to_rate(&self) -> u32 {
        self.to_rate
    }

    /// The number of interleaved channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// How many input frames (samples per channel) the output lags behind the input: the kernel's
    /// look-ahead. Zero when the rates are equal.
    pub fn latency_input_frames(&self) -> usize {
        if self.is_passthrough() {
            0
        } else {
            self.half
        }
    }

    /// How many output frames the output lags behind the input, rounded up.
    pub fn latency_output_frames(&self) -> usize {
        let lag = self.latency_input_frames() as u64 * self.up;
        lag.div_ceil(self.down) as usize
    }

    /// Forgets all buffered input, as if newly built.
    pub fn reset(&mut self) {
        self.history.clear();
        // Zeros before the first input sample, so the first output can be computed.
        let lead = self.half.saturating_sub(1);
        self.history.resize(lead * self.channels, 0.0);
        self.hist_start = -(lead as i64);
        self.pos = 0;
        self.phase = 0;
    }

    /// Resamples `input` (interleaved) and appends every output sample that can be computed so
    /// far to `output`.
    ///
    /// # Errors
    ///
    /// [`AudioError::PartialChannelFrame`] if `input` is not a whole number of channel frames;
    /// nothing is consumed then.
    pub fn process(&mut self, input: &[i16], output: &mut Vec<i16>) -> Result<(), AudioError> {
        check_interleaved(input.len(), self.channels)?;
        if self.is_passthrough() {
            output.extend_from_slice(input);
            return Ok(());
        }
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        let ch = self.channels;
        let taps = 2 * self.half;
        let frames = (self.history.len() / ch) as i64;
        let last_available = self.hist_start + frames - 1;
        let expected = (input.len() as u64 / ch as u64) * self.up / self.down + 1;
        output.reserve(expected as usize * ch);
        while self.pos + self.half as i64 <= last_available {
            let first = (self.pos - self.half as i64 + 1 - self.hist_start) as usize;
            let window = &self.history[first * ch..(first + taps) * ch];
            let coefs: &[f32] = if self.exact {
                let row = self.phase as usize;
                &self.table[row * taps..(row + 1) * taps]
            } else {
                let x = self.phase as f64 * self.phases as f64 / self.up as f64;
                let row = (x.floor() as usize).min(self.phases - 1);
                let w = (x - row as f64) as f32;
                let a = &self.table[row * taps..(row + 1) * taps];
                let b = &self.table[(row + 1) * taps..(row + 2) * taps];
                for ((dst, &a), &b) in self.row.iter_mut().zip(a).zip(b) {
                    *dst = a + (b - a) * w;
                }
                &self.row
            };
            if ch == 1 {
                output.push(to_i16(dot(window, coefs)));
            } else {
                let (left, right) = dot_stereo(window, coefs);
                output.push(to_i16(left));
                output.push(to_i16(right));
            }
            self.phase += self.down;
            self.pos += (self.phase / self.up) as i64;
            self.phase %= self.up;
        }
        // Drop input frames that no future output needs.
        let keep_from = self.pos - self.half as i64 + 1;
        let drop = (keep_from - self.hist_start).clamp(0, frames) as usize;
        if drop > 0 {
            self.history.drain(..drop * ch);
            self.hist_start += drop as i64;
        }
        Ok(())
    }

    /// Like [`process`](Resampler::process), returning a new vector.
    ///
    /// # Errors
    ///
    /// As for [`process`](Resampler::process).
    pub fn process_to_vec(&mut self, input: &[i16]) -> Result<Vec<i16>, AudioError> {
        let mut out = Vec::new();
        self.process(input, &mut out)?;
        Ok(out)
    }

    fn is_passthrough(&self) -> bool {
        self.up == self.down
    }
}

/// A dot product written so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Two dot products at once: `coefs` against the left and right samples of the interleaved
/// stereo `window`.
fn dot_stereo(window: &[f32], coefs: &[f32]) -> (f32, f32) {
    let mut left = [0.0f32; 4];
    let mut right = [0.0f32; 4];
    let frames = window.chunks_exact(8);
    let taps = coefs.chunks_exact(4);
    let (mut tail_l, mut tail_r) = (0.0, 0.0);
    for (pair, &k) in frames.remainder().chunks_exact(2).zip(taps.remainder()) {
        tail_l += k * pair[0];
        tail_r += k * pair[1];
    }
    for (x, k) in frames.zip(taps) {
        for i in 0..4 {
            left[i] += k[i] * x[2 * i];
            right[i] += k[i] * x[2 * i + 1];
        }
    }
    (
        left.iter().sum::<f32>() + tail_l,
        right.iter().sum::<f32>() + tail_r,
    )
}

fn to_i16(x: f32) -> i16 {
    // `as` saturates, and maps NaN to 0.
    x.round() as i16
}

/// The windowed-sinc kernel at distance `tau` input samples from the centre.
fn kernel(tau: f64, cutoff: f64, half: f64, i0_beta: f64) -> f64 {
    let r = tau / half;
    if r.abs() >= 1.0 {
        return 0.0;
    }
    let x = std::f64::consts::PI * cutoff * tau;
    let sinc = if x.abs() < 1e-12 { 1.0 } else { x.sin() / x };
    let window = bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / i0_beta;
    cutoff * sinc * window
}

/// The zeroth-order modified Bessel function of the first kind, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let quarter_x2 = x * x / 4.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut k = 1.0;
    while term > sum * 1e-16 && k < 500.0 {
        term *= quarter_x2 / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::super::{dominant_frequency, sine, tone_level_db};
    use super::*;

    fn resample_all(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let mut r = Resampler::new(from, to, 1).unwrap();
        r.process_to_vec(input).unwrap()
    }

    #[test]
    fn rejects_bad_arguments() {
        assert_eq!(
            Resampler::new(0, 16_000, 1).unwrap_err(),
            AudioError::UnsupportedSampleRate(0)
        );
        assert_eq!(
            Resampler::new(16_000, 1_000_000, 1).unwrap_err(),
            AudioError::UnsupportedSampleRate(1_000_000)
        );
        assert_eq!(
            Resampler::new(16_000, 48_000, 3).unwrap_err(),
            AudioError::UnsupportedChannels(3)
        );
        let mut r = Resampler::new(16_000, 48_000, 2).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            r.process(&[1, 2, 3], &mut out),
            Err(AudioError::PartialChannelFrame {
                len: 3,
                channels: 2
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn passthrough_when_rates_match() {
        let input = sine(440.0, 16_000, 1000, 0.5);
        assert_eq!(resample_all(16_000, 16_000, &input), input);
    }

    #[test]
    fn bessel_matches_known_values() {
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-12);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_4).abs() < 1e-12);
        assert!((bessel_i0(5.0) - 27.239_871_823_604_45).abs() < 1e-9);
    }

    #[test]
    fn output_length_tracks_the_ratio_and_latency() {
        for &(from, to) in &[
            (22_050, 16_000),
            (16_000, 22_050),
            (44_100, 48_000),
            (48_000, 44_100),
            (24_000, 22_050),
            (11_025, 48_000),
            (48_000, 8_000),
            (8_000, 192_000),
            (44_101, 48_000),
        ] {
            let mut r = Resampler::new(from, to, 1).unwrap();
            let input = sine(300.0, from, from as usize, 0.5);
            let mut out = Vec::new();
            // Feed in odd-sized pieces to exercise the streaming state.
            for piece in input.chunks(333) {
                r.process(piece, &mut out).unwrap();
            }
            let ideal = (from as f64 - r.latency_input_frames() as f64) * to as f64 / from as f64;
            assert!(
                (out.len() as f64 - ideal).abs() <= 2.0,
                "{from}->{to}: {} vs {ideal}",
                out.len()
            );
            // Streaming gives the same samples as one call.
            let whole = resample_all(from, to, &input);
            assert!(whole == out, "{from}->{to}: streaming differs");
        }
    }

    #[test]
    fn tones_keep_their_frequency_and_level() {
        for &(from, to) in &[
            (22_050, 16_000),
            (16_000, 22_050),
            (44_100, 48_000),
            (48_000, 44_100),
            (11_025, 48_000),
            (44_101, 48_000),
        ] {
            let input = sine(1_234.0, from, from as usize, 0.5);
            let out = resample_all(from, to, &input);
            let f = dominant_frequency(&out, to);
            assert!((f - 1_234.0).abs() < 0.5, "{from}->{to}: {f}");
            let level = tone_level_db(&out[out.len() / 4..], to, 1_234.0);
            assert!((level - (-6.02)).abs() < 0.2, "{from}->{to}: {level} dBFS");
        }
    }

    #[test]
    fn stereo_channels_stay_separate() {
        let left = sine(500.0, 48_000, 4_800, 0.5);
        let right = sine(3_000.0, 48_000, 4_800, 0.25);
        let interleaved: Vec<i16> = left
            .iter()
            .zip(&right)
            .flat_map(|(&l, &r)| [l, r])
            .collect();
        let mut r = Resampler::new(48_000, 44_100, 2).unwrap();
        let out = r.process_to_vec(&interleaved).unwrap();
        assert_eq!(out.len() % 2, 0);
        let l: Vec<i16> = out.iter().step_by(2).copied().collect();
        let rr: Vec<i16> = out.iter().skip(1).step_by(2).copied().collect();
        assert!((dominant_frequency(&l, 44_100) - 500.0).abs() < 2.0);
        assert!((dominant_frequency(&rr, 44_100) - 3_000.0).abs() < 2.0);
        // The mono path gives the same left channel (up to rounding of the summation order).
        let mono = resample_all(48_000, 44_100, &left);
        assert_eq!(mono.len(), l.len());
        let worst = mono.iter().zip(&l).map(|(&a, &b)| (a - b).abs()).max();
        assert!(worst <= Some(1), "{worst:?}");
    }

    /// 22 050 → 16 000 Hz: a 9 kHz tone is above the output Nyquist (8 kHz). A resampler without
    /// an anti-aliasing filter folds it to 16 − 9 = 7 kHz; ours must remove it.
    #[test]
    fn downsampling_does_not_alias() {
        let n = 22_050;
        let passband = resample_all(22_050, 16_000, &sine(3_000.0, 22_050, n, 0.5));
        let above_nyquist = resample_all(22_050, 16_000, &sine(9_000.0, 22_050, n, 0.5));
        let skip = 200; // past the start-up transient
        let tone = tone_level_db(&passband[skip..], 16_000, 3_000.0);
        let alias = tone_level_db(&above_nyquist[skip..], 16_000, 7_000.0);
        assert!((tone - (-6.02)).abs() < 0.2, "passband tone at {tone} dBFS");
        assert!(
            alias < tone - 40.0,
            "alias at 7 kHz is {alias} dBFS, tone {tone} dBFS"
        );
        // The actual margin is far larger than 40 dB.
        assert!(alias < tone - 70.0, "alias {alias} dBFS");
        // And the whole output of the 9 kHz tone is near silence, not just the 7 kHz bin.
        let peak = above_nyquist[skip..]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!(peak < 30, "residual peak {peak}");
    }

    #[test]
    fn stopband_and_passband_edges() {
        // 48 kHz → 16 kHz: 6 kHz passes within 0.5 dB, 8.5 kHz and above is gone.
        let pass = resample_all(48_000, 16_000, &sine(6_000.0, 48_000, 48_000, 0.5));
        let level = tone_level_db(&pass[1000..], 16_000, 6_000.0);
        assert!((level - (-6.02)).abs() < 0.5, "{level}");
        for f in [8_500.0, 12_000.0, 20_000.0] {
            let out = resample_all(48_000, 16_000, &sine(f, 48_000, 48_000, 0.5));
            let peak = out[1000..]
                .iter()
                .map(|s| s.unsigned_abs())
                .max()
                .unwrap_or(0);
            assert!(peak < 20, "{f} Hz leaks with peak {peak}");
        }
    }

    #[test]
    fn extreme_input_does_not_overflow() {
        let loud: Vec<i16> = (0..4_800)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let _ = resample_all(48_000, 44_100, &loud);
        let square: Vec<i16> = (0..4_800)
            .map(|i| {
                if (i / 24) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let out = resample_all(48_000, 44_100, &square);
        assert!(!out.is_empty());
    }
}
