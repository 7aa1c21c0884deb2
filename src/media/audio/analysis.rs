//! Signal helpers for tests: a tone generator, the dominant frequency of a signal, and the level
//! of one frequency component.
//!
//! They take mono samples; pass one channel of a stereo signal (for example
//! `samples.iter().step_by(2)`, collected).

use std::f64::consts::PI;

/// At most this many samples are analysed (the first ones); about 5.5 s at 48 kHz.
const MAX_ANALYSED: usize = 1 << 18;

/// A sine tone: `n` samples of `freq` Hz at `sample_rate`, with peak `amplitude` as a fraction
/// of full scale (clamped to 0..=1; 1.0 peaks at 32767). Starts at phase zero.
///
/// A zero sample rate, or a non-finite frequency or amplitude, gives `n` zero samples.
///
/// ```
/// use smallwebrtc::media::audio::sine;
/// let tone = sine(440.0, 16_000, 320, 0.5);
/// assert_eq!(tone.len(), 320);
/// assert_eq!(tone[0], 0);
/// assert!(tone.iter().all(|s| s.unsigned_abs() <= 16_384));
/// ```
pub fn sine(freq: f32, sample_rate: u32, n: usize, amplitude: f32) -> Vec<i16> {
    if sample_rate == 0 || !freq.is_finite() || !amplitude.is_finite() {
        return vec![0; n];
    }
    let peak = f64::from(amplitude.clamp(0.0, 1.0)) * f64::from(i16::MAX);
    let step = 2.0 * PI * f64::from(freq) / f64::from(sample_rate);
    (0..n)
        .map(|i| {
            // Reduce the phase modulo the period exactly enough for long tones.
            let phase = (step * i as f64) % (2.0 * PI);
            (peak * phase.sin()).round() as i16
        })
        .collect()
}

/// The frequency, in Hz, of the strongest spectral component of `samples` (mono) at
/// `sample_rate`.
///
/// It removes the mean, applies a Hann window, finds the peak of a zero-padded FFT, then refines
/// it to a small fraction of a bin by maximising the windowed spectrum between the neighbouring
/// bins. For one second of a pure tone the result is within a few hundredths of a hertz. Only
/// the first 2^18 samples are analysed.
///
/// Returns 0.0 for silence, fewer than two samples, or a zero sample rate.
///
/// ```
/// use smallwebrtc::media::audio::{dominant_frequency, sine};
/// let f = dominant_frequency(&sine(440.0, 16_000, 16_000, 0.5), 16_000);
/// assert!((f - 440.0).abs() < 0.1);
/// ```
pub fn dominant_frequency(samples: &[i16], sample_rate: u32) -> f32 {
    let samples = &samples[..samples.len().min(MAX_ANALYSED)];
    if sample_rate == 0 || samples.len() < 2 {
        return 0.0;
    }
    let windowed = windowed(samples);
    let size = (2 * windowed.len()).next_power_of_two();
    let mut re = vec![0.0; size];
    let mut im = vec![0.0; size];
    re[..windowed.len()].copy_from_slice(&windowed);
    fft(&mut re, &mut im);
    let (peak_bin, peak_power) = (1..size / 2)
        .map(|k| (k, re[k] * re[k] + im[k] * im[k]))
        .fold(
            (0, 0.0),
            |best, cur| if cur.1 > best.1 { cur } else { best },
        );
    if peak_bin == 0 || peak_power <= 1e-9 {
        return 0.0;
    }
    let bin_hz = f64::from(sample_rate) / size as f64;
    let nyquist = f64::from(sample_rate) / 2.0;
    // Golden-section search for the maximum of the windowed DTFT around the peak.
    let mut lo = (peak_bin as f64 - 1.0) * bin_hz;
    let mut hi = ((peak_bin as f64 + 1.0) * bin_hz).min(nyquist);
    let power = |f: f64| goertzel_power(&windowed, 2.0 * PI * f / f64::from(sample_rate));
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - ratio * (hi - lo);
    let mut b = lo + ratio * (hi - lo);
    let mut pa = power(a);
    let mut pb = power(b);
    for _ in 0..40 {
        if pa < pb {
            lo = a;
            a = b;
            pa = pb;
            b = lo + ratio * (hi - lo);
            pb = power(b);
        } else {
            hi = b;
            b = a;
            pb = pa;
            a = hi - ratio * (hi - lo);
            pa = power(a);
        }
    }
    ((lo + hi) / 2.0) as f32
}

/// The level, in dB relative to full scale, of the `freq` Hz component of `samples` (mono):
/// a sine of peak amplitude `a` (as a fraction of full scale) measures about `20·log10(a)`, so a
/// half-scale tone measures −6.02 dBFS. Uses a Hann-windowed Goertzel filter, so components more
/// than a couple of bins (`2 × sample_rate / samples.len()` Hz) away barely contribute.
///
/// Returns −200.0 for silence, fewer than two samples, or a zero sample rate.
///
/// ```
/// use smallwebrtc::media::audio::{sine, tone_level_db};
/// let tone = sine(1_000.0, 16_000, 16_000, 0.5);
/// assert!((tone_level_db(&tone, 16_000, 1_000.0) - -6.02).abs() < 0.05);
/// assert!(tone_level_db(&tone, 16_000, 3_000.0) < -100.0);
/// ```
pub fn tone_level_db(samples: &[i16], sample_rate: u32, freq: f32) -> f32 {
    const FLOOR: f32 = -200.0;
    let samples = &samples[..samples.len().min(MAX_ANALYSED)];
    if sample_rate == 0 || samples.len() < 2 || !freq.is_finite() {
        return FLOOR;
    }
    let windowed = windowed(samples);
    let window_sum: f64 = (0..samples.len()).map(|i| hann(i, samples.len())).sum();
    let power = goertzel_power(
        &windowed,
        2.0 * PI * f64::from(freq) / f64::from(sample_rate),
    );
    let amplitude = 2.0 * power.sqrt() / window_sum / 32768.0;
    if amplitude <= 1e-10 {
        return FLOOR;
    }
    ((20.0 * amplitude.log10()) as f32).max(FLOOR)
}

fn hann(i: usize, n: usize) -> f64 {
    0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos()
}

/// Mean removed, Hann window applied.
fn windowed(samples: &[i16]) -> Vec<f64> {
    let n = samples.len();
    let mean = samples.iter().map(|&s| f64::from(s)).sum::<f64>() / n as f64;
    samples
        .iter()
        .enumerate()
        .map(|(i, &s)| (f64::from(s) - mean) * hann(i, n))
        .collect()
}

/// `|X(ω)|²` of `x` at angular frequency `omega` (radians per sample), by Goertzel's recurrence.
fn goertzel_power(x: &[f64], omega: f64) -> f64 {
    let coeff = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0)
}

/// In-place iterative radix-2 FFT; `re.len()` must be a power of two equal to `im.len()`.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    if n < 2 || !n.is_power_of_two() || im.len() != n {
        return;
    }
    // Bit-reversal permutation.
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if j > i {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let step = -2.0 * PI / len as f64;
        let twiddles: Vec<(f64, f64)> = (0..len / 2)
            .map(|k| {
                let a = step * k as f64;
                (a.cos(), a.sin())
            })
            .collect();
        for start in (0..n).step_by(len) {
            for (k, &(wr, wi)) in twiddles.iter().enumerate() {
                let i = start + k;
                let j = i + len / 2;
                let tr = re[j] * wr - im[j] * wi;
                let ti = re[j] * wi + im[j] * wr;
                re[j] = re[i] - tr;
                im[j] = im[i] - ti;
                re[i] += tr;
                im[i] += ti;
            }
        }
        len *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_a_direct_dft() {
        let x: Vec<f64> = (0..16).map(|i| ((i * 7 % 5) as f64) - 2.0).collect();
        let mut re = x.clone();
        let mut im = vec![0.0; 16];
        fft(&mut re, &mut im);
        for k in 0..16 {
            let (mut dr, mut di) = (0.0, 0.0);
            for (i, &v) in x.iter().enumerate() {
                let a = -2.0 * PI * (k * i) as f64 / 16.0;
                dr += v * a.cos();
                di += v * a.sin();
            }
            assert!(
                (re[k] - dr).abs() < 1e-9 && (im[k] - di).abs() < 1e-9,
                "bin {k}"
            );
        }
    }

    #[test]
    fn finds_tones_precisely() {
        for &(f, rate, n) in &[
            (440.0f32, 16_000u32, 16_000usize),
            (440.0, 48_000, 4_800),
            (440.0, 16_000, 320),
            (1_000.0, 8_000, 1_000),
            (7_900.0, 16_000, 16_000),
            (60.0, 24_000, 24_000),
        ] {
            let got = dominant_frequency(&sine(f, rate, n, 0.3), rate);
            let tolerance = if n < 1_000 { 2.0 } else { 0.2 };
            assert!((got - f).abs() < tolerance, "{f} Hz @ {rate} × {n}: {got}");
        }
    }

    #[test]
    fn picks_the_stronger_of_two_tones() {
        let a = sine(440.0, 16_000, 16_000, 0.1);
        let b = sine(1_500.0, 16_000, 16_000, 0.4);
        let mix: Vec<i16> = a.iter().zip(&b).map(|(&x, &y)| x + y).collect();
        assert!((dominant_frequency(&mix, 16_000) - 1_500.0).abs() < 0.5);
        assert!((tone_level_db(&mix, 16_000, 440.0) - -20.0).abs() < 0.1);
        assert!((tone_level_db(&mix, 16_000, 1_500.0) - -7.96).abs() < 0.1);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert_eq!(dominant_frequency(&[], 16_000), 0.0);
        assert_eq!(dominant_frequency(&[5], 16_000), 0.0);
        assert_eq!(dominant_frequency(&[0; 1000], 16_000), 0.0);
        assert_eq!(dominant_frequency(&[100; 1000], 16_000), 0.0);
        assert_eq!(dominant_frequency(&sine(440.0, 16_000, 100, 0.5), 0), 0.0);
        assert_eq!(tone_level_db(&[], 16_000, 440.0), -200.0);
        assert_eq!(tone_level_db(&[0; 100], 16_000, 440.0), -200.0);
        assert_eq!(tone_level_db(&[1; 100], 16_000, f32::NAN), -200.0);
        assert_eq!(tone_level_db(&[1; 100], 0, 440.0), -200.0);
        assert_eq!(sine(440.0, 0, 3, 1.0), vec![0, 0, 0]);
        assert_eq!(sine(f32::NAN, 16_000, 2, 1.0), vec![0, 0]);
        assert!(sine(440.0, 16_000, 100, 7.0).iter().all(|&s| s > i16::MIN));
        // Longer than the analysis limit: only the head is used, still correct.
        let long = sine(440.0, 48_000, MAX_ANALYSED + 10_000, 0.5);
        assert!((dominant_frequency(&long, 48_000) - 440.0).abs() < 0.1);
        let nyquist_noise: Vec<i16> = (0..1000)
            .map(|i| if i % 2 == 0 { 1000 } else { -1000 })
            .collect();
        let f = dominant_frequency(&nyquist_noise, 16_000);
        assert!((f - 8_000.0).abs() < 20.0, "{f}");
    }
}
