//! Rough timings of the video hot path, without a benchmark framework.
//!
//! `cargo bench --bench video` runs it in release mode and prints the mean time per call of one
//! VP8 (and, with the `h264` feature, H.264) encode and decode at 640×480 and at Pipecat's
//! 1024×768 output size, with the real-time settings the transport uses, and of the colour
//! conversion and scaling around them. The frames are a moving camera-like scene: the four-colour
//! test card, a moving bright square and a little sensor noise. Built without `--bench` (as
//! `cargo test` may do) it runs a few iterations only, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use smallwebrtc::media::video::{
    quadrants, EncodedFrame, EncoderConfig, Image, Scaler, VideoCodec, VideoFormat, I420,
};

/// `count` frames of a moving scene at `width × height`.
fn scene(width: u32, height: u32, count: u32) -> Vec<I420> {
    let card = quadrants(width, height).into_i420().expect("valid size");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|t| {
            let mut frame = card.clone();
            let w = width as usize;
            let side = (height / 4) as usize;
            let x0 = (t as usize * 9) % (w - side);
            let y0 = (t as usize * 5) % (height as usize - side);
            let (y, _, _) = frame.planes_mut();
            for (i, px) in y.iter_mut().enumerate() {
                let (x, row) = (i % w, i / w);
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed % 7) as i16 - 3;
                let square = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&row);
                let base = if square { 200 } else { i16::from(*px) };
                *px = (base + noise).clamp(16, 235) as u8;
            }
            frame
        })
        .collect()
}

/// The time this thread has spent on a CPU, from Linux's `/proc/thread-self/schedstat`: unlike
/// the wall clock it does not count time spent waiting while other processes run, so the
/// figures hold on a busy machine. `None` where the file is missing.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The mean wall-clock and on-CPU time of one call.
#[derive(Clone, Copy)]
struct PerCall {
    wall: Duration,
    cpu: Option<Duration>,
}

/// Runs `f` over `items`, cycling, at least `iterations` times and, in a full run, for at least
/// a second (so the scheduler's CPU-time accounting, updated at ticks, is precise enough), and
/// returns the mean time per call.
fn time_per_call<T>(items: &[T], iterations: usize, mut f: impl FnMut(&T)) -> PerCall {
    for item in items.iter().take(iterations.min(10)) {
        f(item); // warm up
    }
    let min_time = if iterations > 10 {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let mut n = 0u32;
    for item in items.iter().cycle() {
        f(item);
        n += 1;
        if n as usize >= iterations && start.elapsed() >= min_time {
            break;
        }
    }
    let n = n.max(1);
    let wall = start.elapsed() / n;
    let cpu = cpu_start
        .zip(thread_cpu_time())
        .map(|(start, end)| end.saturating_sub(start) / n);
    PerCall { wall, cpu }
}

fn report(name: &str, per_call: PerCall) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let cpu = per_call.cpu.unwrap_or(per_call.wall);
    let share = cpu.as_secs_f64() * 30.0 * 100.0;
    println!(
        "{name:<50} {:>8.3} ms CPU {:>8.3} ms wall  ({share:.1}% of a core at 30 fps)",
        ms(cpu),
        ms(per_call.wall)
    );
}

fn codec(codec: VideoCodec, width: u32, height: u32, frames: &[I420], iterations: usize) {
    let config = EncoderConfig::default(); // 1000 kbit/s, 30 fps
    let Ok(mut encoder) = smallwebrtc::media::video::new_encoder(codec, config) else {
        println!("{codec} not built in");
        return;
    };
    let mut pts = 0u64;
    let per_call = time_per_call(frames, iterations, |frame| {
        pts += 3000;
        black_box(
            encoder
                .encode(black_box(frame), pts, false)
                .expect("encode"),
        );
    });
    report(
        &format!("{codec} encode {width}x{height}, 1 Mbit/s, realtime"),
        per_call,
    );

    // Decode a stream encoded once: a keyframe, then deltas.
    let mut encoder = smallwebrtc::media::video::new_encoder(codec, config).expect("encoder");
    let stream: Vec<EncodedFrame> = frames
        .iter()
        .enumerate()
        .flat_map(|(i, frame)| {
            encoder
                .encode(frame, i as u64 * 3000, false)
                .expect("encode")
        })
        .collect();
    let bytes: usize = stream.iter().map(|f| f.data.len()).sum();
    let mut decoder = smallwebrtc::media::video::new_decoder(codec).expect("decoder");
    let per_call = time_per_call(&stream, iterations, |frame| {
        // Cycling restarts at the keyframe, which the decoder takes at any time.
        black_box(decoder.decode(black_box(&frame.data)).expect("decode"));
    });
    report(
        &format!(
            "{codec} decode {width}x{height} ({} B/frame mean)",
            bytes / stream.len().max(1)
        ),
        per_call,
    );
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let iterations = if full { 100 } else { 3 };
    let count = if full { 60 } else { 3 };

    for (width, height) in [(640, 480), (1024, 768)] {
        let frames = scene(width, height, count);
        codec(VideoCodec::Vp8, width, height, &frames, iterations);
        codec(VideoCodec::H264, width, height, &frames, iterations);

        let per_call = time_per_call(&frames, iterations, |frame| {
            black_box(frame.to_image(VideoFormat::Rgb).expect("convert"));
        });
        report(&format!("I420 → RGB {width}x{height} (BT.601)"), per_call);

        let rgb: Vec<Image> = frames
            .iter()
            .take(4)
            .map(|f| f.to_image(VideoFormat::Rgb).expect("convert"))
            .collect();
        let per_call = time_per_call(&rgb, iterations, |image| {
            black_box(image.to_i420().expect("convert"));
        });
        report(&format!("RGB → I420 {width}x{height} (BT.601)"), per_call);
    }

    let mut scaler = Scaler::new();
    let rgb = vec![quadrants(640, 480)];
    let per_call = time_per_call(&rgb, iterations, |image| {
        black_box(scaler.resize(image.clone(), 1024, 768).expect("resize"));
    });
    report("Scaler RGB 640x480 → 1024x768 (with input clone)", per_call);
    let i420 = vec![quadrants(640, 480).into_i420().expect("convert")];
    let per_call = time_per_call(&i420, iterations, |frame| {
        black_box(
            scaler
                .resize_i420(frame.clone(), 1024, 768)
                .expect("resize"),
        );
    });
    report(
        "Scaler I420 640x480 → 1024x768 (with input clone)",
        per_call,
    );
}
