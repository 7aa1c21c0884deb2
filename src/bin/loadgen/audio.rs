//! The audio the load generator sends, and how it finds its markers in what comes back.
//!
//! # What is sent
//!
//! One [`Clip`] of [`CLIP_SECONDS`] seconds is synthesised and Opus-encoded once at start-up
//! (48 kHz mono, 20 ms packets), then every session loops over the same packets: sending costs
//! an `Arc` clone per packet, never an encode. The clip is speech-like (a glottal pulse train
//! through two formant resonators, syllables of 120–280 ms at a syllabic rate with pauses between
//! phrases, and a few unvoiced bursts) so that Opus codes it the way it codes a voice (SILK or
//! hybrid mode, variable packet sizes).
//!
//! At the start of every second, a **marker** replaces the voice for [`MARKER_MS`] ms: a pure
//! tone at one of [`MARKER_FREQS`], the `k`-th second using frequency `k mod 8`. The frequency
//! is the marker's id, so a marker that comes back can be told from the one sent a second
//! earlier or later even when the round trip grows past a second.
//!
//! # What is looked for
//!
//! Only measured sessions decode what comes back (a [`MarkerDetector`]: Opus decoded at 16 kHz
//! mono, cheaper than 48 kHz and plenty for tones up to 3.4 kHz). The decoded audio is cut into
//! 10 ms blocks; a Goertzel filter per marker frequency measures how much of each block's energy
//! sits on that frequency. A block "has marker `k`" when it is loud enough and at least
//! [`TONE_RATIO`] of its energy is on frequency `k` (speech spreads its energy over many
//! frequencies and never gets close). Two such blocks in a row are a marker; its onset is the
//! arrival time of the packet holding the first of them.

use std::f32::consts::PI;
use std::sync::Arc;
use std::time::Instant;

use opus::{Application, Bitrate, Channels, Decoder, Encoder};

/// The sample rate the clip is synthesised and encoded at (the Opus RTP clock rate).
pub const SEND_RATE: u32 = 48_000;
/// Samples in one 20 ms packet at [`SEND_RATE`].
pub const SAMPLES_PER_PACKET: usize = 960;
/// Packets per second.
pub const PACKETS_PER_SECOND: usize = 50;
/// Length of the looped clip, in seconds: one marker of each frequency.
pub const CLIP_SECONDS: usize = 8;
/// Packets in the clip.
pub const CLIP_PACKETS: usize = CLIP_SECONDS * PACKETS_PER_SECOND;
/// The marker frequencies; a marker's id is its index here. All are multiples of 100 Hz, so each
/// falls exactly on a bin of the detector's 160-sample (10 ms at 16 kHz) Goertzel filters, and
/// all are above the voice's formants.
pub const MARKER_FREQS: [f32; 8] = [
    2_000.0, 2_200.0, 2_400.0, 2_600.0, 2_800.0, 3_000.0, 3_200.0, 3_400.0,
];
/// How long a marker lasts.
pub const MARKER_MS: usize = 60;
/// Marker amplitude (of full scale): −6 dBFS.
const MARKER_AMPLITUDE: f32 = 0.5;
/// The rate the detector decodes at.
pub const DETECT_RATE: u32 = 16_000;
/// The detector's block: 10 ms at [`DETECT_RATE`].
const BLOCK: usize = 160;
/// Share of a block's energy that must sit on one marker frequency.
pub const TONE_RATIO: f32 = 0.6;
/// A block quieter than this RMS (of full scale, about −34 dBFS) never has a marker.
const MIN_RMS: f32 = 0.02;
/// Blocks in a row that make a marker.
const CONFIRM_BLOCKS: u32 = 2;
/// After a marker, no other is looked for during this many decoded samples (0.5 s).
const REFRACTORY_SAMPLES: u64 = DETECT_RATE as u64 / 2;
/// The largest Opus packet duration (120 ms) at [`DETECT_RATE`].
const MAX_DECODED: usize = DETECT_RATE as usize * 120 / 1000;

/// A small deterministic PRNG (xorshift64*), so every run sends the same clip.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f32 {
        self.unit() * 2.0 - 1.0
    }
}

/// A two-pole resonator (a formant), unity gain at its centre frequency.
struct Resonator {
    a1: f32,
    a2: f32,
    gain: f32,
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn new() -> Self {
        Resonator {
            a1: 0.0,
            a2: 0.0,
            gain: 0.0,
            y1: 0.0,
            y2: 0.0,
        }
    }

    /// Retunes without resetting the state, so formants glide between syllables.
    fn tune(&mut self, freq: f32, bandwidth: f32, rate: f32) {
        let r = (-PI * bandwidth / rate).exp();
        let theta = 2.0 * PI * freq / rate;
        self.a1 = 2.0 * r * theta.cos();
        self.a2 = -r * r;
        self.gain = 1.0 - r;
    }

    fn step(&mut self, x: f32) -> f32 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Synthesises `samples` samples of speech-like audio at `rate`, peaking at about −6 dBFS.
pub fn speech_like(samples: usize, rate: u32, seed: u64) -> Vec<f32> {
    let rate_f = rate as f32;
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(samples);
    let (mut f1, mut f2) = (Resonator::new(), Resonator::new());
    let mut phase = 0.0f32; // glottal phase, in periods
    let mut glottal = 0.0f32; // smoothed glottal pulse
    let mut hiss = 0.0f32; // previous noise sample, for a crude high-pass
    while out.len() < samples {
        // A pause between phrases now and then, else a syllable.
        if rng.unit() < 0.15 {
            let pause = (rng.range(0.15, 0.45) * rate_f) as usize;
            out.extend(std::iter::repeat_n(0.0, pause.min(samples - out.len())));
            continue;
        }
        let len = (rng.range(0.12, 0.28) * rate_f) as usize;
        let burst = if rng.unit() < 0.3 {
            (0.04 * rate_f) as usize // an unvoiced consonant first
        } else {
            0
        };
        let (f0_start, f0_end) = (rng.range(95.0, 160.0), rng.range(95.0, 160.0));
        f1.tune(rng.range(300.0, 800.0), 90.0, rate_f);
        f2.tune(rng.range(900.0, 1_700.0), 120.0, rate_f);
        let loudness = rng.range(0.5, 1.0);
        for i in 0..len.min(samples - out.len()) {
            let t = i as f32 / len as f32;
            let envelope = (PI * t).sin().powi(2) * loudness;
            let f0 = f0_start + (f0_end - f0_start) * t;
            phase += f0 / rate_f;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                1.0
            } else {
                0.0
            };
            glottal = 0.7 * glottal + pulse;
            let noise = rng.signed();
            let voiced = f1.step(glottal * 2.0 + noise * 0.05) * 6.0 + f2.step(glottal) * 3.0;
            let sample = if i < burst {
                let highpassed = noise - hiss;
                hiss = noise;
                highpassed * 0.15 * (PI * i as f32 / burst as f32).sin()
            } else {
                voiced * envelope
            };
            out.push(sample);
        }
    }
    let peak = out.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    let scale = 0.5 / peak;
    out.iter_mut().for_each(|x| *x *= scale);
    out
}

/// Writes marker `id` into `pcm` at `start`, replacing what was there, with 1 ms ramps.
fn write_marker(pcm: &mut [f32], start: usize, id: usize, rate: u32) {
    let len = MARKER_MS * rate as usize / 1000;
    let ramp = rate as usize / 1000;
    let omega = 2.0 * PI * MARKER_FREQS[id] / rate as f32;
    for i in 0..len.min(pcm.len().saturating_sub(start)) {
        let edge = i.min(len - 1 - i);
        let gain = if edge < ramp {
            (edge as f32 + 0.5) / ramp as f32
        } else {
            1.0
        };
        pcm[start + i] = MARKER_AMPLITUDE * gain * (omega * i as f32).sin();
    }
}

/// The clip's PCM at `rate`: speech-like audio with marker `k mod 8` at the start of second `k`.
pub fn clip_pcm(rate: u32) -> Vec<f32> {
    let per_second = rate as usize;
    let mut pcm = speech_like(CLIP_SECONDS * per_second, rate, 0x5eed_1234);
    for second in 0..CLIP_SECONDS {
        write_marker(
            &mut pcm,
            second * per_second,
            second % MARKER_FREQS.len(),
            rate,
        );
    }
    pcm
}

/// Converts float samples (full scale ±1) to s16.
pub fn to_i16(pcm: &[f32]) -> Vec<i16> {
    pcm.iter()
        .map(|&x| (x * 32_767.0).clamp(-32_768.0, 32_767.0) as i16)
        .collect()
}

/// The pre-encoded clip every session loops over.
pub struct Clip {
    /// One Opus packet per 20 ms, ready to hand to str0m without copying.
    pub packets: Vec<Arc<[u8]>>,
    /// `markers[i]` is the id of the marker that starts at packet `i`, if one does.
    pub markers: Vec<Option<u8>>,
}

impl Clip {
    /// Synthesises the clip and encodes it once, at `bitrate` bits per second.
    pub fn encode(bitrate: i32) -> Result<Clip, opus::Error> {
        let pcm = to_i16(&clip_pcm(SEND_RATE));
        let mut encoder = Encoder::new(SEND_RATE, Channels::Mono, Application::Voip)?;
        encoder.set_bitrate(Bitrate::Bits(bitrate))?;
        let mut out = [0u8; 4000];
        let mut packets = Vec::with_capacity(CLIP_PACKETS);
        for frame in pcm.chunks_exact(SAMPLES_PER_PACKET) {
            let n = encoder.encode(frame, &mut out)?;
            packets.push(Arc::from(&out[..n]));
        }
        let markers = (0..packets.len())
            .map(|i| {
                (i % PACKETS_PER_SECOND == 0)
                    .then(|| ((i / PACKETS_PER_SECOND) % MARKER_FREQS.len()) as u8)
            })
            .collect();
        Ok(Clip { packets, markers })
    }

    /// Packets in the clip.
    pub fn len(&self) -> usize {
        self.packets.len()
    }
}

/// Goertzel filters for the marker frequencies over 10 ms blocks, with the detection rule.
pub struct ToneDetector {
    coeffs: [f32; MARKER_FREQS.len()],
    block: [f32; BLOCK],
    filled: usize,
    /// Id and first-block time of the run of marker blocks in progress.
    run: Option<(u8, Instant, u32)>,
    /// Decoded samples seen so far, and when looking may resume.
    samples: u64,
    quiet_until: u64,
}

impl Default for ToneDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneDetector {
    /// A detector at [`DETECT_RATE`].
    pub fn new() -> Self {
        let mut coeffs = [0.0; MARKER_FREQS.len()];
        for (c, f) in coeffs.iter_mut().zip(MARKER_FREQS) {
            let k = (f * BLOCK as f32 / DETECT_RATE as f32).round();
            *c = 2.0 * (2.0 * PI * k / BLOCK as f32).cos();
        }
        ToneDetector {
            coeffs,
            block: [0.0; BLOCK],
            filled: 0,
            run: None,
            samples: 0,
            quiet_until: 0,
        }
    }

    /// The marker in one block, if any: the id whose Goertzel power holds at least
    /// [`TONE_RATIO`] of the block's energy.
    fn classify(&self) -> Option<u8> {
        let energy: f32 = self.block.iter().map(|x| x * x).sum();
        if energy < MIN_RMS * MIN_RMS * BLOCK as f32 {
            return None;
        }
        let mut best = (0usize, 0.0f32);
        for (id, &c) in self.coeffs.iter().enumerate() {
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for &x in &self.block {
                let s0 = x + c * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - c * s1 * s2;
            // A full-block tone on the bin has power N²A²/4 and energy NA²/2.
            let ratio = 2.0 * power / (BLOCK as f32 * energy);
            if ratio > best.1 {
                best = (id, ratio);
            }
        }
        (best.1 >= TONE_RATIO).then_some(best.0 as u8)
    }

    /// Feeds decoded samples (full scale ±1) that arrived at `at`. Returns the marker whose
    /// onset is confirmed by these samples, with the arrival time of its first block.
    pub fn push(&mut self, pcm: &[f32], at: Instant) -> Option<(u8, Instant)> {
        let mut found = None;
        for &x in pcm {
            self.block[self.filled] = x;
            self.filled += 1;
            self.samples += 1;
            if self.filled < BLOCK {
                continue;
            }
            self.filled = 0;
            if self.samples < self.quiet_until {
                continue;
            }
            self.run = match (self.classify(), self.run) {
                (Some(id), Some((run_id, first, n))) if id == run_id => Some((id, first, n + 1)),
                (Some(id), _) => Some((id, at, 1)),
                (None, _) => None,
            };
            if let Some((id, first, n)) = self.run {
                if n >= CONFIRM_BLOCKS {
                    found = Some((id, first));
                    self.run = None;
                    self.quiet_until = self.samples + REFRACTORY_SAMPLES;
                }
            }
        }
        found
    }
}

/// An Opus decoder in front of a [`ToneDetector`]: what a measured session runs per packet.
pub struct MarkerDetector {
    decoder: Decoder,
    pcm: Vec<i16>,
    float: Vec<f32>,
    tones: ToneDetector,
    /// Packets that failed to decode.
    pub decode_errors: u64,
}

impl MarkerDetector {
    /// A decoder at [`DETECT_RATE`] mono and a fresh detector.
    pub fn new() -> Result<Self, opus::Error> {
        Ok(MarkerDetector {
            decoder: Decoder::new(DETECT_RATE, Channels::Mono)?,
            pcm: vec![0; MAX_DECODED],
            float: Vec::with_capacity(MAX_DECODED),
            tones: ToneDetector::new(),
            decode_errors: 0,
        })
    }

    /// Decodes one received Opus packet that arrived at `at` and looks for a marker onset.
    pub fn push_packet(&mut self, packet: &[u8], at: Instant) -> Option<(u8, Instant)> {
        let n = match self.decoder.decode(packet, &mut self.pcm, false) {
            Ok(n) => n,
            Err(_) => {
                self.decode_errors += 1;
                return None;
            }
        };
        self.float.clear();
        self.float
            .extend(self.pcm[..n].iter().map(|&s| f32::from(s) / 32_768.0));
        self.tones.push(&self.float, at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Runs a detector over `pcm` (at 16 kHz) in 20 ms packets; returns (packet index, id).
    fn detect_all(pcm: &[f32]) -> Vec<(usize, u8)> {
        let base = Instant::now();
        let mut detector = ToneDetector::new();
        let mut found = Vec::new();
        for (i, packet) in pcm.chunks(320).enumerate() {
            let at = base + Duration::from_millis(20 * i as u64);
            if let Some((id, first)) = detector.push(packet, at) {
                found.push(((first - base).as_millis() as usize / 20, id));
            }
        }
        found
    }

    #[test]
    fn clean_clip_has_each_marker_once_at_its_second() {
        let pcm = clip_pcm(DETECT_RATE);
        let found = detect_all(&pcm);
        let expected: Vec<(usize, u8)> = (0..CLIP_SECONDS).map(|s| (s * 50, s as u8)).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn speech_alone_has_no_marker() {
        for seed in [1, 2, 3] {
            let pcm = speech_like(20 * DETECT_RATE as usize, DETECT_RATE, seed);
            assert_eq!(detect_all(&pcm), vec![], "seed {seed}");
        }
    }

    #[test]
    fn speech_is_speech_loud() {
        let pcm = speech_like(10 * SEND_RATE as usize, SEND_RATE, 7);
        let rms = (pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len() as f32).sqrt();
        let db = 20.0 * rms.log10();
        assert!((-30.0..-10.0).contains(&db), "speech RMS {db:.1} dBFS");
    }

    #[test]
    fn markers_survive_opus_and_are_found_in_their_own_packet() {
        let clip = Clip::encode(32_000).expect("encode");
        assert_eq!(clip.len(), CLIP_PACKETS);
        assert_eq!(clip.markers.iter().flatten().count(), CLIP_SECONDS);
        let base = Instant::now();
        let mut detector = MarkerDetector::new().expect("decoder");
        let mut found = Vec::new();
        // Twice round the loop, as a session sends it.
        for i in 0..2 * clip.len() {
            let at = base + Duration::from_millis(20 * i as u64);
            if let Some((id, first)) = detector.push_packet(&clip.packets[i % clip.len()], at) {
                found.push(((first - base).as_millis() as usize / 20, id));
            }
        }
        let expected: Vec<(usize, u8)> = (0..2 * CLIP_SECONDS)
            .map(|s| (s * 50, (s % 8) as u8))
            .collect();
        assert_eq!(found, expected);
        assert_eq!(detector.decode_errors, 0);
    }

    #[test]
    fn a_mid_packet_onset_is_found_in_the_packet_holding_it() {
        // Marker 3 starting 7 ms into packet 10.
        let mut pcm = vec![0.0f32; 40 * 320];
        write_marker(&mut pcm, 10 * 320 + 112, 3, DETECT_RATE);
        assert_eq!(detect_all(&pcm), vec![(10, 3)]);
    }

    #[test]
    fn a_quiet_tone_is_not_a_marker() {
        let mut pcm = vec![0.0f32; 20 * 320];
        write_marker(&mut pcm, 320, 0, DETECT_RATE);
        pcm.iter_mut().for_each(|x| *x *= 0.01);
        assert_eq!(detect_all(&pcm), vec![]);
    }
}
