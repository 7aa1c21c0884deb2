//! Rough timings of the audio hot path, without a benchmark framework.
//!
//! `cargo bench --bench audio` runs it in release mode and prints the mean time per call of one
//! 20 ms Opus decode at 16 kHz, one 20 ms Opus encode at 24 kHz (Pipecat's defaults), and the
//! pieces around them. Built without `--bench` (as `cargo test` may do) it runs a few
//! iterations only, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use smallwebrtc::media::audio::{
    sine, InputChunker, OpusDecoder, OpusEncoder, Pacer, PacerConfig, Resampler,
};

/// Something speech-like enough to keep the codec busy: two tones with a slow tremolo.
fn test_signal(rate: u32, seconds: usize) -> Vec<i16> {
    let n = rate as usize * seconds;
    let a = sine(220.0, rate, n, 0.25);
    let b = sine(1_370.0, rate, n, 0.12);
    let tremolo = sine(3.0, rate, n, 1.0);
    a.iter()
        .zip(&b)
        .zip(&tremolo)
        .map(|((&x, &y), &t)| {
            let gain = 0.6 + 0.4 * f32::from(t) / 32767.0;
            (f32::from(x.saturating_add(y)) * gain) as i16
        })
        .collect()
}

/// Runs `f` `iterations` times over `items`, cycling, and returns the mean time per call.
fn time_per_call<T>(items: &[T], iterations: usize, mut f: impl FnMut(&T)) -> Duration {
    for item in items.iter().take(iterations.min(50)) {
        f(item); // warm up
    }
    let start = Instant::now();
    for item in items.iter().cycle().take(iterations) {
        f(item);
    }
    start.elapsed() / iterations.max(1) as u32
}

fn report(name: &str, per_call: Duration) {
    let micros = per_call.as_secs_f64() * 1e6;
    let share = per_call.as_secs_f64() / 0.020 * 100.0;
    println!("{name:<52} {micros:>9.2} µs/call  ({share:.3}% of a 20 ms frame)");
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let iterations = if full { 5_000 } else { 20 };

    // Encode at 24 kHz (the bot's voice, Pipecat's default output rate).
    let pcm24 = test_signal(24_000, 2);
    let frames24: Vec<&[i16]> = pcm24.chunks_exact(480).collect();
    let mut encoder = OpusEncoder::new(24_000, 1).expect("encoder");
    let per_call = time_per_call(&frames24, iterations, |frame| {
        black_box(encoder.encode(black_box(frame)).expect("encode"));
    });
    report("OpusEncoder 24 kHz mono, encode 20 ms", per_call);

    // What the bot's voice costs at each encoder complexity, at the echo bot's 16 kHz.
    let pcm16 = test_signal(16_000, 2);
    let frames16: Vec<&[i16]> = pcm16.chunks_exact(320).collect();
    for complexity in [0u8, 1, 2, 3, 5, 7, 10] {
        let mut encoder = OpusEncoder::new(16_000, 1).expect("encoder");
        encoder.set_complexity(complexity).expect("complexity");
        let per_call = time_per_call(&frames16, iterations, |frame| {
            black_box(encoder.encode(black_box(frame)).expect("encode"));
        });
        report(
            &format!("OpusEncoder 16 kHz mono, complexity {complexity:>2}, 20 ms"),
            per_call,
        );
    }

    // Decode at 16 kHz (the user's microphone, Pipecat's default input rate), from packets a
    // browser-like 48 kHz encoder made.
    let pcm48 = test_signal(48_000, 2);
    let mut browser = OpusEncoder::new(48_000, 1).expect("encoder");
    browser.set_bitrate(32_000).expect("bitrate");
    let packets: Vec<Vec<u8>> = pcm48
        .chunks_exact(960)
        .map(|frame| browser.encode(frame).expect("encode"))
        .collect();
    let mut decoder = OpusDecoder::new(16_000, 1).expect("decoder");
    let per_call = time_per_call(&packets, iterations, |packet| {
        black_box(decoder.decode(black_box(packet)).expect("decode"));
    });
    report("OpusDecoder 16 kHz mono, decode 20 ms", per_call);

    let mut decoder48 = OpusDecoder::new(48_000, 2).expect("decoder");
    let per_call = time_per_call(&packets, iterations, |packet| {
        black_box(decoder48.decode(black_box(packet)).expect("decode"));
    });
    report(
        "OpusDecoder 48 kHz stereo (aiortc's), decode 20 ms",
        per_call,
    );

    let mut plc = OpusDecoder::new(16_000, 1).expect("decoder");
    plc.decode(&packets[0]).expect("decode");
    let per_call = time_per_call(&packets, iterations, |_| {
        black_box(plc.conceal_frame().expect("conceal"));
    });
    report("OpusDecoder 16 kHz mono, conceal 20 ms", per_call);

    // Non-native rates go through the resampler.
    let pcm22 = test_signal(22_050, 2);
    let frames22: Vec<&[i16]> = pcm22.chunks_exact(441).collect();
    let mut encoder22 = OpusEncoder::new(22_050, 1).expect("encoder");
    let per_call = time_per_call(&frames22, iterations, |frame| {
        black_box(encoder22.encode(black_box(frame)).expect("encode"));
    });
    report("OpusEncoder 22.05 kHz (resampled to 24), 20 ms", per_call);

    let mut resampler = Resampler::new(22_050, 16_000, 1).expect("resampler");
    let mut out = Vec::with_capacity(1_024);
    let per_call = time_per_call(&frames22, iterations, |frame| {
        out.clear();
        resampler
            .process(black_box(frame), &mut out)
            .expect("resample");
        black_box(&out);
    });
    report("Resampler 22.05 → 16 kHz, 20 ms", per_call);

    let mut resampler = Resampler::new(48_000, 44_100, 2).expect("resampler");
    let stereo: Vec<i16> = pcm48.iter().flat_map(|&s| [s, s]).collect();
    let frames48: Vec<&[i16]> = stereo.chunks_exact(1_920).collect();
    let per_call = time_per_call(&frames48, iterations, |frame| {
        out.clear();
        resampler
            .process(black_box(frame), &mut out)
            .expect("resample");
        black_box(&out);
    });
    report("Resampler 48 → 44.1 kHz stereo, 20 ms", per_call);

    // Framing and pacing.
    let mut chunker = InputChunker::new(16_000, 1).expect("chunker");
    let piece = vec![0i16; 960];
    let per_call = time_per_call(&[()], iterations, |_| {
        chunker.push(&piece).expect("push");
        while let Some(frame) = chunker.pop() {
            black_box(frame);
        }
    });
    report("InputChunker, 60 ms in → 3 frames out", per_call);

    let start = Instant::now();
    let mut pacer = Pacer::new(PacerConfig::default(), start).expect("pacer");
    let bytes = vec![0u8; 960];
    let mut slot = 0u32;
    let per_call = time_per_call(&[()], iterations, |_| {
        pacer.push_bytes(&bytes).expect("push");
        let now = start + Duration::from_millis(20) * slot;
        slot += 1;
        black_box(pacer.poll(now));
    });
    report("Pacer, push 20 ms + poll one frame", per_call);
}
