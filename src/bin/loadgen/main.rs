//! `loadgen`: N concurrent SmallWebRTC echo sessions over real WebRTC, and what they cost.
//!
//! For each N of `--sessions`, the load generator opens N sessions against a SmallWebRTC server
//! (ours or Pipecat's Python original: both take `POST /api/offer`), each one a str0m peer
//! shaped like the official JS client (audio sendrecv on m-line 0, data channel `"chat"`,
//! `trackStatus` and RTVI `client-ready` once it opens, pings every second). Every session sends
//! the same pre-encoded speech-like Opus stream, with a tone marker at the start of every second;
//! the server's echo bot sends it back. Then, over a steady window of `--duration` seconds, it
//! measures:
//!
//! - sessions connected (ICE + DTLS), and set-up times;
//! - the audio round trip through the echo bot, on `--measure` sessions only (the only ones
//!   that decode what comes back): time from sending a marker's first packet to receiving the
//!   packet in which its onset is found; p50/p90/p99, and its drift over the window (median of
//!   the first 10 s against the last 10 s, and the slope of a least-squares line);
//! - the server's CPU (% of one core, total and per session) and RSS (total, and per session
//!   above the idle RSS read before the first step), from `/proc/<--server-pid>`;
//! - its own CPU the same way, since it shares the machine with the server.
//!
//! With `--video`, every session also sends a camera on m-line 1 (VP8, 640×480 at 30 fps by
//! default: a loop of frames encoded once at start-up, each stamped with its number; see
//! `video.rs`), and the `--video-measure` sessions decode the video that comes back, read the
//! stamp and time the video round trip. Frames received back per second per session are
//! counted on every session.
//!
//! ```text
//! loadgen --server http://127.0.0.1:7860 --server-pid PID --sessions 1,10,50,100,200 \
//!         --duration 60 --ramp 50/s --measure 10 --json out.json
//! loadgen --self-echo-test                     # check the measurement against a known echo
//! loadgen --self-echo-serve 127.0.0.1:7870     # that echo server, standalone
//! loadgen --compare rust.json python.json      # side-by-side markdown of saved runs
//! loadgen --server-pid PID --video --sessions 1,2,4,8 --duration 30 --video-measure 2
//! ```
//!
//! Everything opens sockets on this machine only: run it inside `../shared/tools/nsrun`
//! (see `scripts/bench-audio.sh`).

mod audio;
mod http;
mod procstat;
mod report;
mod run;
mod selfecho;
mod session;
mod stats;
mod video;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::run::{Report, RunConfig};
use crate::selfecho::{EchoConfig, EchoMode, SelfTest};
use crate::video::VideoSpec;

/// Load generator and benchmark for SmallWebRTC echo sessions.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {
    /// Base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:7860")]
    server: String,
    /// Path of the offer route.
    #[arg(long, default_value = "/api/offer")]
    offer_path: String,
    /// The server's process id, for its CPU and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name of the server in the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Session counts to run, one step each, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100,200")]
    sessions: Vec<usize>,
    /// Length of each step's measurement window, seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Sessions started per second (`50/s` or `50`).
    #[arg(long, default_value = "50/s", value_parser = parse_rate)]
    ramp: f64,
    /// Sessions per step whose echo is decoded and timed.
    #[arg(long, default_value_t = 10)]
    measure: usize,
    /// Seconds between all sessions connected and the window.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Seconds to wait after closing a step's sessions.
    #[arg(long, default_value_t = 3.0)]
    cooldown: f64,
    /// A session not connected this many seconds after starting counts as failed.
    #[arg(long, default_value_t = 20.0)]
    connect_timeout: f64,
    /// Video mode: every session also sends a camera (VP8) on m-line 1 and counts the frames
    /// that come back; `--video-measure` of them time the video round trip.
    #[arg(long)]
    video: bool,
    /// Size of the camera video.
    #[arg(long, default_value = "640x480", value_parser = video::parse_size)]
    video_size: (u32, u32),
    /// Frames per second of the camera video.
    #[arg(long, default_value_t = 30)]
    video_fps: u32,
    /// VP8 bitrate of the camera loop, kbit/s.
    #[arg(long, default_value_t = 1_000)]
    video_bitrate: u32,
    /// Frames in the camera loop (it starts with a keyframe), 1..=256.
    #[arg(long, default_value_t = 60)]
    video_loop: usize,
    /// Sensor noise in the camera loop: luma varies by up to ± this much (0: a clean picture).
    #[arg(long, default_value_t = 3)]
    video_noise: u8,
    /// Sessions per step whose video echo is decoded and timed.
    #[arg(long, default_value_t = 2)]
    video_measure: usize,
    /// Send no audio (the audio m-line is still offered, as the JS client does).
    #[arg(long)]
    no_audio: bool,
    /// Do not send the JS client's `ping: <ms>` data-channel messages.
    #[arg(long)]
    no_pings: bool,
    /// Opus bitrate of the sent audio, bits per second.
    #[arg(long, default_value_t = 32_000)]
    bitrate: i32,
    /// Worker threads of the load generator's runtime (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the results as a markdown table here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Print progress to stderr.
    #[arg(long, short)]
    verbose: bool,

    /// Check the measurement end to end against the built-in echo server, then exit (0: pass).
    #[arg(long)]
    self_echo_test: bool,
    /// Run the built-in echo server on this address until interrupted.
    #[arg(long, value_name = "ADDR")]
    self_echo_serve: Option<SocketAddr>,
    /// The built-in echo's delay, ms.
    #[arg(long, default_value_t = 40)]
    self_echo_delay_ms: u64,
    /// The built-in echo re-encodes audio instead of forwarding the packets.
    #[arg(long)]
    self_echo_transcode: bool,
    /// Sessions of each self-test case.
    #[arg(long, default_value_t = 8)]
    self_echo_sessions: usize,
    /// Window of each self-test case, seconds.
    #[arg(long, default_value_t = 8.0)]
    self_echo_duration: f64,

    /// Print a side-by-side markdown table of saved JSON results and exit.
    #[arg(long, num_args = 1.., value_name = "JSON")]
    compare: Vec<PathBuf>,
}

/// Parses `50/s`, `50` or `2.5/s`.
fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.trim().trim_end_matches("/s");
    match number.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("{s:?}: expected a rate like 50/s")),
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn read_report(path: &PathBuf) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

async fn main_async(cli: Cli) -> Result<bool, String> {
    if !cli.compare.is_empty() {
        let reports = cli
            .compare
            .iter()
            .map(read_report)
            .collect::<Result<Vec<_>, _>>()?;
        let md = report::markdown(&reports);
        print!("{md}");
        if let Some(path) = &cli.markdown {
            write(path, &md)?;
        }
        return Ok(true);
    }
    if let Some(addr) = cli.self_echo_serve {
        let config = EchoConfig {
            mode: if cli.self_echo_transcode {
                EchoMode::Transcode
            } else {
                EchoMode::Forward
            },
            delay: Duration::from_millis(cli.self_echo_delay_ms),
            growth_ms_per_sec: 0.0,
        };
        let (local, task) = selfecho::serve(addr, config)
            .await
            .map_err(|e| format!("self-echo server on {addr}: {e}"))?;
        println!("self-echo server on http://{local} ({config:?})");
        tokio::select! {
            _ = task => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return Ok(true);
    }
    if cli.self_echo_test {
        return Ok(selfecho::self_test(&SelfTest {
            sessions: cli.self_echo_sessions,
            duration: secs(cli.self_echo_duration),
            delay: Duration::from_millis(cli.self_echo_delay_ms),
            bitrate: cli.bitrate,
            verbose: cli.verbose,
        })
        .await);
    }

    let cfg = RunConfig {
        label: cli.label,
        server: cli.server,
        offer_path: cli.offer_path,
        server_pid: cli.server_pid,
        sessions: cli.sessions,
        duration: secs(cli.duration),
        ramp_per_sec: cli.ramp,
        measure: cli.measure,
        settle: secs(cli.settle),
        cooldown: secs(cli.cooldown),
        connect_timeout: secs(cli.connect_timeout),
        video: cli.video.then_some(VideoSpec {
            width: cli.video_size.0,
            height: cli.video_size.1,
            fps: cli.video_fps,
            frames: cli.video_loop,
            bitrate_kbps: cli.video_bitrate,
            noise: cli.video_noise,
        }),
        video_measure: cli.video_measure,
        audio: !cli.no_audio,
        pings: !cli.no_pings,
        bitrate: cli.bitrate,
        verbose: cli.verbose,
    };
    let report = run::run(&cfg).await?;
    let md = report::markdown(std::slice::from_ref(&report));
    println!("{md}");
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        write(path, &json)?;
    }
    if let Some(path) = &cli.markdown {
        write(path, &md)?;
    }
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50/s"), Ok(50.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn cli_parses_the_documented_command() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "--server",
            "http://127.0.0.1:7860",
            "--server-pid",
            "42",
            "--sessions",
            "1,10,50,100,200",
            "--duration",
            "60",
            "--ramp",
            "50/s",
            "--measure",
            "10",
            "--json",
            "out.json",
        ])
        .expect("parses");
        assert_eq!(cli.sessions, vec![1, 10, 50, 100, 200]);
        assert_eq!(cli.server_pid, Some(42));
        assert_eq!(cli.ramp, 50.0);
        assert!(!cli.video);
    }

    #[test]
    fn cli_parses_the_video_benchmark_command() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "--video",
            "--video-size",
            "320x240",
            "--video-measure",
            "4",
            "--no-audio",
        ])
        .expect("parses");
        assert!(cli.video && cli.no_audio);
        assert_eq!(cli.video_size, (320, 240));
        assert_eq!((cli.video_fps, cli.video_measure), (30, 4));
        assert!(Cli::try_parse_from(["loadgen", "--video-size", "big"]).is_err());
    }
}
