//! Rough timings of the video hot path, without a benchmark framework.
//!
//! `cargo bench --bench video` runs it in release mode and prints the mean time per call of one
//! VP8 (and, with the `h264` feature, H.264) encode and decode at 640×480 and at Pipecat's
//! 1024×768 output size, with the real-time settings the transport uses, and of the colour
//! conversion and scaling around them. The frames are a moving camera-like scene: the four-colour
//! test card, a moving bright square and a little sensor noise. Built without `--bench` (as
//! `cargo test` may do) it runs a few iterations only, as a smoke test. `VP8_SPEED=n` (1..=16)
//! sets the VP8 encoder's speed level (default 16, the transport's).

use std::hint::black_box;
use std::time::{Duration, Instant};

use smallwebrtc::media::video::{
    quadrants, EncodedFrame, EncoderConfig, Image, Scaler, VideoCodec, VideoFormat, I420,
};

/// `count` frames of a camera-like scene at `width × height`, with sensor noise, and the same
/// frames without it (what a perfect camera would have seen, to judge quality against): the
/// four-colour test card under a soft texture, and a textured square moving across it.
fn scene(width: u32, height: u32, count: u32) -> (Vec<I420>, Vec<I420>) {
    let card = quadrants(width, height).into_i420().expect("valid size");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let w = width as usize;
    let side = (height / 4) as usize;
    let texture = |x: usize, y: usize| {
        let (x, y) = (x as f32, y as f32);
        (12.0 * (x / 7.0).sin() * (y / 11.0).cos() + 6.0 * ((x + y) / 23.0).sin()) as i16
    };
    (0..count)
        .map(|t| {
            let mut clean = card.clone();
            let x0 = (t as usize * 9) % (w - side);
            let y0 = (t as usize * 5) % (height as usize - side);
            let (y, _, _) = clean.planes_mut();
            for (i, px) in y.iter_mut().enumerate() {
                let (x, row) = (i % w, i / w);
                let square = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&row);
                let base = if square {
                    160 + 2 * texture(x - x0, row - y0)
                } else {
                    i16::from(*px) + texture(x, row)
                };
                *px = base.clamp(16, 235) as u8;
            }
            let mut noisy = clean.clone();
            let (y, _, _) = noisy.planes_mut();
            for px in y.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed % 7) as i16 - 3;
                *px = (i16::from(*px) + noise).clamp(16, 235) as u8;
            }
            (noisy, clean)
        })
        .unzip()
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

fn codec(
    codec: VideoCodec,
    (width, height): (u32, u32),
    (frames, clean): (&[I420], &[I420]),
    iterations: usize,
) {
    // 1000 kbit/s, 30 fps; `VP8_SPEED=12 cargo bench --bench video -- vp8` tries another level.
    let mut config = EncoderConfig::default();
    if let Some(speed) = std::env::var("VP8_SPEED").ok().and_then(|v| v.parse().ok()) {
        config.vp8_speed = speed;
        if codec == VideoCodec::Vp8 {
            println!("VP8 speed level {speed}");
        }
    }
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
    // What the speed bought: luma PSNR of the decoded stream against the source, after the
    // first second (rate control settles), and the bitrate it really used.
    let decoded: Vec<I420> = stream
        .iter()
        .filter_map(|frame| decoder.decode(&frame.data).expect("decode"))
        .collect();
    let settled = decoded.len().saturating_sub(1).min(30);
    let psnr = mean_luma_psnr(&decoded[settled..], &frames[settled..]);
    let psnr_clean = mean_luma_psnr(&decoded[settled..], &clean[settled..]);
    println!(
        "{codec} quality {width}x{height}: luma PSNR {psnr:.2} dB against the camera, \
         {psnr_clean:.2} dB against the noiseless scene; {:.0} kbit/s",
        bytes as f64 * 8.0 * 30.0 / stream.len().max(1) as f64 / 1000.0
    );
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

/// The mean over frames of the luma PSNR of `decoded` against `source`, in dB.
fn mean_luma_psnr(decoded: &[I420], source: &[I420]) -> f64 {
    let psnrs: Vec<f64> = decoded
        .iter()
        .zip(source)
        .map(|(d, s)| {
            let squared: u64 = d
                .y()
                .iter()
                .zip(s.y())
                .map(|(&a, &b)| u64::from(a.abs_diff(b)).pow(2))
                .sum();
            let mse = squared as f64 / s.y().len() as f64;
            if mse == 0.0 {
                99.0
            } else {
                10.0 * (255.0f64 * 255.0 / mse).log10()
            }
        })
        .collect();
    psnrs.iter().sum::<f64>() / psnrs.len().max(1) as f64
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    // `cargo bench --bench video -- vp8 640` runs only what names every word given.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .map(|arg| arg.to_lowercase())
        .collect();
    let wanted = |name: &str| {
        words
            .iter()
            .all(|w| name.to_lowercase().contains(w.as_str()))
    };
    let iterations = if full { 100 } else { 3 };
    let count = if full { 60 } else { 3 };

    for (width, height) in [(640, 480), (1024, 768)] {
        let (frames, clean) = scene(width, height, count);
        for kind in [VideoCodec::Vp8, VideoCodec::H264] {
            if wanted(&format!("{kind} {width}x{height}")) {
                codec(kind, (width, height), (&frames, &clean), iterations);
            }
        }
        if !wanted(&format!("convert {width}x{height}")) {
            continue;
        }

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

    if !wanted("scaler 640x480 1024x768") {
        return;
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
