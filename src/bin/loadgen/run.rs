//! The run: for each N, ramp N sessions up, measure a steady window, close them.
//!
//! ```text
//! ramp (N at --ramp per second) ─► wait until all connected or failed ─► settle
//!   ─► window (--duration): /proc samples of server and loadgen at both ends, RTT samples
//!   ─► stop every session ─► cooldown ─► server RSS after close
//! ```
//!
//! In video mode every session also sends the camera loop, and the step's [`VideoStep`] holds
//! the frames that came back and the video round trip of the sessions measured for video.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use str0m::config::DtlsCert;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audio::Clip;
use crate::http::Target;
use crate::procstat::{self, Machine, ProcSample};
use crate::session::{self, late_quantile, Env, LateHistogram, SessionStats, State, PHASES, TICK};
use crate::stats::{quantile, RttStats};
use crate::video::{VideoClip, VideoSpec};

const MIB: f64 = 1024.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Name of the server under test in the report.
    pub label: String,
    /// Base URL, e.g. `http://127.0.0.1:7860`.
    pub server: String,
    /// Path of the offer route under it.
    pub offer_path: String,
    /// The server's process, for CPU and RSS.
    pub server_pid: Option<u32>,
    /// The N of each step.
    pub sessions: Vec<usize>,
    /// Length of each step's measurement window.
    pub duration: Duration,
    /// Sessions started per second.
    pub ramp_per_sec: f64,
    /// Sessions whose echo is decoded and timed, per step.
    pub measure: usize,
    /// Pause between "all connected" and the window.
    pub settle: Duration,
    /// Pause after closing a step's sessions.
    pub cooldown: Duration,
    /// A session not connected this long after starting fails.
    pub connect_timeout: Duration,
    /// Video mode: every session sends this camera loop on m-line 1.
    pub video: Option<VideoSpec>,
    /// Sessions whose video echo is decoded and timed, per step (video mode).
    pub video_measure: usize,
    /// Send audio (the audio m-line is offered either way).
    pub audio: bool,
    /// Send the JS client's pings.
    pub pings: bool,
    /// Opus bitrate of the clip.
    pub bitrate: i32,
    /// Print progress to stderr.
    pub verbose: bool,
}

/// CPU and memory of a process over a window.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct ProcFigures {
    /// CPU over the window, percent of one core.
    pub cpu_pct: f64,
    /// Per connected session.
    pub cpu_pct_per_session: Option<f64>,
    /// RSS at the end of the window, MiB.
    pub rss_mib: f64,
    /// Peak RSS so far, MiB.
    pub hwm_mib: f64,
    /// RSS before the first step's sessions, MiB (server only).
    pub rss_idle_mib: Option<f64>,
    /// `(rss - rss_idle) / connected`, MiB (server only).
    pub rss_mib_per_session: Option<f64>,
    /// RSS after this step's sessions were closed and the cooldown passed, MiB (server only).
    pub rss_after_close_mib: Option<f64>,
}

/// Everything measured for one N.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct StepResult {
    pub sessions_requested: usize,
    /// Connected (ICE + DTLS) when the window opened.
    pub sessions_connected: usize,
    /// Still connected when the window closed.
    pub sessions_connected_at_end: usize,
    /// With the data channel open when the window opened.
    pub sessions_with_data_channel: usize,
    /// That got RTVI `bot-ready` in answer to `client-ready` by the end of the window.
    pub sessions_bot_ready: usize,
    pub sessions_failed: usize,
    /// Distinct failure reasons, with counts.
    pub failures: BTreeMap<String, usize>,
    /// Seconds from the first session's start until all were connected or had failed.
    pub ramp_secs: f64,
    /// Offer POST → answer, p50/p90, ms.
    pub answer_p50_ms: Option<f64>,
    pub answer_p90_ms: Option<f64>,
    /// Offer POST → connected (ICE + DTLS), p50/p90, ms.
    pub connect_p50_ms: Option<f64>,
    pub connect_p90_ms: Option<f64>,
    /// Length of the measurement window, s.
    pub window_secs: f64,
    /// Sessions that received audio on m-line 0 during the window.
    pub sessions_echoing: usize,
    /// Packets sent and audio packets received during the window (all sessions).
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Packets skipped because a session fell behind the clock.
    pub packets_skipped: u64,
    /// Datagrams that a non-blocking send could not send (all sessions, whole step).
    pub send_errors: u64,
    /// How late packets left compared with the clock during the window: p50, p99 and max, ms
    /// (200 means 200 or more). The load generator's own scheduling delay.
    pub send_late_p50_ms: Option<usize>,
    pub send_late_p99_ms: Option<usize>,
    pub send_late_max_ms: Option<usize>,
    /// Sessions whose echo was decoded and timed.
    pub sessions_measured: usize,
    /// Markers sent and found in the echo, on measured sessions, during the window.
    pub markers_sent: u64,
    pub markers_detected: u64,
    pub markers_unmatched: u64,
    /// Of the markers detected, those matched while a later one with the same id waited too:
    /// their round trip may be eight markers (8 s) too long.
    pub markers_ambiguous: u64,
    /// Round trip through the echo bot.
    pub rtt: Option<RttStats>,
    /// Video mode: frames and the video round trip.
    pub video: Option<VideoStep>,
    /// The server process (when its pid was given).
    pub server: Option<ProcFigures>,
    /// This load generator.
    pub loadgen: ProcFigures,
    /// Share of the whole machine (all cores) that was busy during the window, percent.
    pub machine_busy_pct: Option<f64>,
    /// What went wrong or looks odd, in words.
    pub notes: Vec<String>,
}

/// The video figures of one step (video mode).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct VideoStep {
    /// Sessions that received video back during the window.
    pub sessions_receiving: usize,
    /// Frames sent and received back during the window (all sessions).
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Frames sent per second per connected session.
    pub fps_sent_per_session: Option<f64>,
    /// Frames received back per second per connected session, on average and for the
    /// session that got the fewest.
    pub fps_received_per_session: Option<f64>,
    pub fps_received_min: Option<f64>,
    /// Time slots skipped because a session fell behind its frame clock.
    pub slots_skipped: u64,
    /// Keyframe requests the server sent during the window (all sessions).
    pub keyframe_requests: u64,
    /// Sessions whose video came back decoded and timed.
    pub sessions_measured: usize,
    /// On measured sessions, during the window: stamped frames sent, frames decoded, frames
    /// that failed to decode, decoded frames whose stamp was unreadable, stamps matched to a
    /// sent frame (timed) and stamps that matched nothing, and keyframe requests sent.
    pub stamps_sent: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub stamps_unreadable: u64,
    pub stamps_matched: u64,
    pub stamps_unmatched: u64,
    pub plis_sent: u64,
    /// Video round trip: frame handed to str0m → the frame showing its stamp decoded.
    pub rtt: Option<RttStats>,
}

/// How the camera loop was made (video mode).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct VideoSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub loop_frames: usize,
    /// Target and measured mean bitrate of the loop, kbit/s.
    pub bitrate_kbps: u32,
    pub loop_kbps: f64,
    /// Sensor noise of the loop (± luma).
    pub noise: u8,
    /// Sessions measured for video per step.
    pub measure: usize,
    /// Whether audio was sent too.
    pub audio: bool,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Report {
    pub label: String,
    pub server: String,
    pub server_pid: Option<u32>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub machine: Machine,
    pub duration_secs: f64,
    pub ramp_per_sec: f64,
    pub measure: usize,
    pub opus_bitrate: i32,
    /// Video mode's settings.
    pub video: Option<VideoSettings>,
    /// Server RSS before any session, MiB.
    pub server_rss_idle_mib: Option<f64>,
    /// Share of the machine busy during the second before the run, percent: other work on
    /// the machine (the server idles then).
    pub background_busy_pct: Option<f64>,
    pub steps: Vec<StepResult>,
}

/// The shared clock: one watch channel per phase, each carrying the number of the packet due.
///
/// Tick `k` (every 5 ms from `epoch`) is phase `k % PHASES` and packet `k / PHASES`, so packet
/// `n` of phase `p` is due at `epoch + n × 20 ms + p × 5 ms`. A late tick publishes only the
/// newest packet of each phase; the sessions catch up on what they missed.
async fn clock(epoch: Instant, phases: Vec<watch::Sender<u64>>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval_at((epoch + TICK).into(), TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut published = 0u64;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let now = (Instant::now() - epoch).as_nanos() / TICK.as_nanos();
        let now = now as u64;
        let from = (published + 1).max(now.saturating_sub(PHASES as u64 - 1));
        for k in from..=now {
            phases[(k % PHASES as u64) as usize].send_replace(k / PHASES as u64);
        }
        published = now;
    }
}

/// The local address that reaches `server` (the one its answer's candidates are on).
fn local_ip_for(server: SocketAddr) -> Result<IpAddr, String> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let probe = std::net::UdpSocket::bind(any).map_err(|e| format!("UDP probe: {e}"))?;
    probe
        .connect(server)
        .map_err(|e| format!("no route to {server}: {e}"))?;
    Ok(probe
        .local_addr()
        .map_err(|e| format!("UDP probe: {e}"))?
        .ip())
}

fn sample_server(pid: Option<u32>) -> Option<ProcSample> {
    pid.and_then(|pid| procstat::sample(Some(pid)).ok())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / MIB
}

/// Sums one counter over the sessions.
fn total(stats: &[Arc<SessionStats>], f: impl Fn(&SessionStats) -> &AtomicU64) -> u64 {
    stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
}

/// Counters of a step at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    sent: u64,
    received: u64,
    skipped: u64,
    markers_sent: u64,
    markers_detected: u64,
    markers_unmatched: u64,
    markers_ambiguous: u64,
    video: VideoCounters,
}

/// Video counters of a step at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct VideoCounters {
    sent: u64,
    received: u64,
    skipped: u64,
    keyframe_requests: u64,
    stamps_sent: u64,
    decoded: u64,
    decode_errors: u64,
    unreadable: u64,
    matched: u64,
    unmatched: u64,
    plis: u64,
}

impl VideoCounters {
    fn read(stats: &[Arc<SessionStats>]) -> VideoCounters {
        VideoCounters {
            sent: total(stats, |s| &s.video_frames_sent),
            received: total(stats, |s| &s.video_frames_received),
            skipped: total(stats, |s| &s.video_slots_skipped),
            keyframe_requests: total(stats, |s| &s.video_keyframe_requests),
            stamps_sent: total(stats, |s| &s.video_stamps_sent),
            decoded: total(stats, |s| &s.video_frames_decoded),
            decode_errors: total(stats, |s| &s.video_decode_errors),
            unreadable: total(stats, |s| &s.video_stamps_unreadable),
            matched: total(stats, |s| &s.video_stamps_matched),
            unmatched: total(stats, |s| &s.video_stamps_unmatched),
            plis: total(stats, |s| &s.video_plis_sent),
        }
    }
}

impl Counters {
    fn read(stats: &[Arc<SessionStats>]) -> Counters {
        Counters {
            sent: total(stats, |s| &s.packets_sent),
            received: total(stats, |s| &s.packets_received),
            skipped: total(stats, |s| &s.packets_skipped),
            markers_sent: total(stats, |s| &s.markers_sent),
            markers_detected: total(stats, |s| &s.markers_detected),
            markers_unmatched: total(stats, |s| &s.markers_unmatched),
            markers_ambiguous: total(stats, |s| &s.markers_ambiguous),
            video: VideoCounters::read(stats),
        }
    }
}

/// `(seconds since the window opened, ms)` of the round trips of every session timed in the
/// window `[w0, w1]`.
fn window_samples(
    stats: &[Arc<SessionStats>],
    rtts: impl Fn(&SessionStats) -> &std::sync::Mutex<Vec<session::RttSample>>,
    w0: Instant,
    w1: Instant,
) -> Vec<(f64, f64)> {
    stats
        .iter()
        .flat_map(|s| {
            rtts(s)
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|r| r.at >= w0 && r.at <= w1)
                .map(|r| ((r.at - w0).as_secs_f64(), r.rtt_ms))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The sessions measured out of `n`: `m` of them, evenly spread.
pub fn measured_set(n: usize, m: usize) -> Vec<bool> {
    let mut set = vec![false; n];
    let m = m.min(n);
    for k in 0..m {
        set[k * n / m] = true;
    }
    set
}

/// Millisecond quantiles of a µs counter over the sessions that set it.
fn latency_quantiles(
    stats: &[Arc<SessionStats>],
    f: impl Fn(&SessionStats) -> u64,
) -> [Option<f64>; 2] {
    let mut v: Vec<f64> = stats
        .iter()
        .map(|s| f(s))
        .filter(|&us| us > 0)
        .map(|us| us as f64 / 1e3)
        .collect();
    v.sort_by(f64::total_cmp);
    [quantile(&v, 0.5), quantile(&v, 0.9)]
}

/// Runs every step of `cfg` against its server.
pub async fn run(cfg: &RunConfig) -> Result<Report, String> {
    let provider = str0m::crypto::from_feature_flags();
    let cert: DtlsCert = provider
        .dtls_provider
        .generate_certificate()
        .ok_or("could not generate a DTLS certificate")?;
    provider.install_process_default();
    let clip = Arc::new(Clip::encode(cfg.bitrate).map_err(|e| format!("Opus encoder: {e}"))?);
    let video_clip = match cfg.video {
        Some(spec) => {
            let clip = VideoClip::encode(spec)?;
            if cfg.verbose {
                eprintln!(
                    "loadgen: camera loop: {} frames of {}×{} at {} fps, VP8 {:.0} kbit/s (keyframe {} bytes)",
                    clip.len(),
                    spec.width,
                    spec.height,
                    spec.fps,
                    clip.kbps(),
                    clip.frames[0].len()
                );
            }
            Some(Arc::new(clip))
        }
        None => None,
    };
    let target = Target::parse(&cfg.server, &cfg.offer_path)?;
    let server_addr = target.resolve().await?;
    let local_ip = local_ip_for(server_addr)?;

    let epoch = Instant::now();
    let (clock_stop, clock_stop_rx) = watch::channel(false);
    let mut senders = Vec::with_capacity(PHASES);
    let mut ticks = Vec::with_capacity(PHASES);
    for _ in 0..PHASES {
        let (tx, rx) = watch::channel(0u64);
        senders.push(tx);
        ticks.push(rx);
    }
    let clock_task = tokio::spawn(clock(epoch, senders, clock_stop_rx));

    let sys_before = procstat::sample_sys();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let background_busy_pct = sys_before
        .zip(procstat::sample_sys())
        .and_then(|(a, b)| procstat::sys_busy_percent(&a, &b));
    if let Some(busy) = background_busy_pct.filter(|&b| b > 20.0) {
        eprintln!(
            "loadgen: warning: the machine is already {busy:.0}% busy before the run; figures will be noisy (scripts/bench-audio.sh: try PRIORITY=rt)"
        );
    }
    let idle = sample_server(cfg.server_pid);
    if cfg.server_pid.is_some() && idle.is_none() {
        eprintln!(
            "loadgen: cannot read /proc/{} (server CPU and RSS will be missing)",
            cfg.server_pid.unwrap_or(0)
        );
    }
    let mut report = Report {
        label: cfg.label.clone(),
        server: cfg.server.clone(),
        server_pid: cfg.server_pid,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: Machine::read(),
        duration_secs: cfg.duration.as_secs_f64(),
        ramp_per_sec: cfg.ramp_per_sec,
        measure: cfg.measure,
        opus_bitrate: cfg.bitrate,
        video: video_clip.as_ref().map(|clip| VideoSettings {
            width: clip.spec.width,
            height: clip.spec.height,
            fps: clip.spec.fps,
            loop_frames: clip.len(),
            bitrate_kbps: clip.spec.bitrate_kbps,
            loop_kbps: clip.kbps(),
            noise: clip.spec.noise,
            measure: cfg.video_measure,
            audio: cfg.audio,
        }),
        server_rss_idle_mib: idle.map(|s| mib(s.rss_kib)),
        background_busy_pct,
        steps: Vec::new(),
    };
    for &n in &cfg.sessions {
        let (stop_tx, stop_rx) = watch::channel(false);
        let env = Arc::new(Env {
            target: target.clone(),
            local_ip,
            clip: clip.clone(),
            cert: cert.clone(),
            ticks: ticks.clone(),
            stop: stop_rx,
            epoch,
            video: video_clip.clone(),
            audio: cfg.audio,
            pings: cfg.pings,
            connect_timeout: cfg.connect_timeout,
            late: Arc::new(LateHistogram::default()),
        });
        let step = run_step(cfg, n, env, stop_tx, idle).await;
        crate::report::print_step(&cfg.label, &step);
        report.steps.push(step);
    }
    let _ = clock_stop.send(true);
    let _ = clock_task.await;
    Ok(report)
}

async fn run_step(
    cfg: &RunConfig,
    n: usize,
    env: Arc<Env>,
    stop: watch::Sender<bool>,
    idle: Option<ProcSample>,
) -> StepResult {
    let log = |msg: String| {
        if cfg.verbose {
            eprintln!("loadgen [{} N={n}] {msg}", cfg.label);
        }
    };
    let measured = measured_set(n, cfg.measure);
    let video_measured = measured_set(n, cfg.video_measure);
    let stats: Vec<Arc<SessionStats>> = (0..n).map(|_| Arc::default()).collect();
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(n);

    // Ramp.
    log(format!("starting {n} sessions at {}/s", cfg.ramp_per_sec));
    let start = Instant::now();
    for (i, stat) in stats.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / cfg.ramp_per_sec.max(0.001));
        tokio::time::sleep_until(due.into()).await;
        tasks.push(tokio::spawn(session::run(
            i,
            measured[i] && cfg.audio,
            video_measured[i] && cfg.video.is_some(),
            env.clone(),
            stat.clone(),
        )));
    }
    let give_up = Instant::now() + cfg.connect_timeout + Duration::from_secs(1);
    loop {
        let pending = stats
            .iter()
            .filter(|s| matches!(s.state(), State::Starting | State::Offered))
            .count();
        if pending == 0 || Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_secs = start.elapsed().as_secs_f64();
    let connected = |stats: &[Arc<SessionStats>]| {
        stats
            .iter()
            .filter(|s| s.state() == State::Connected)
            .count()
    };
    log(format!(
        "{}/{n} connected after {ramp_secs:.1} s; settling {:?}",
        connected(&stats),
        cfg.settle
    ));
    tokio::time::sleep(cfg.settle).await;

    // The window.
    let sessions_connected = connected(&stats);
    let sessions_with_data_channel = stats
        .iter()
        .filter(|s| s.state() == State::Connected && s.channel_open.load(Ordering::Relaxed))
        .count();
    let received_before: Vec<u64> = stats
        .iter()
        .map(|s| s.packets_received.load(Ordering::Relaxed))
        .collect();
    let frames_before: Vec<u64> = stats
        .iter()
        .map(|s| s.video_frames_received.load(Ordering::Relaxed))
        .collect();
    let c0 = Counters::read(&stats);
    let late0 = env.late.snapshot();
    let server0 = sample_server(cfg.server_pid);
    let self0 = procstat::sample(None).ok();
    let sys0 = procstat::sample_sys();
    let w0 = Instant::now();
    let mut next_progress = w0 + Duration::from_secs(10);
    let w_end = w0 + cfg.duration;
    while Instant::now() < w_end {
        let until = next_progress.min(w_end);
        tokio::time::sleep_until(until.into()).await;
        if until == next_progress {
            next_progress += Duration::from_secs(10);
            let c = Counters::read(&stats);
            let video = if cfg.video.is_some() {
                format!(
                    "; video {} frames back of {} sent, {} timed",
                    c.video.received - c0.video.received,
                    c.video.sent - c0.video.sent,
                    c.video.matched - c0.video.matched
                )
            } else {
                String::new()
            };
            log(format!(
                "{:.0} s: {} connected, {} packets back of {} sent, {} markers timed{video}",
                w0.elapsed().as_secs_f64(),
                connected(&stats),
                c.received - c0.received,
                c.sent - c0.sent,
                c.markers_detected - c0.markers_detected
            ));
        }
    }
    let server1 = sample_server(cfg.server_pid);
    let self1 = procstat::sample(None).ok();
    let sys1 = procstat::sample_sys();
    let w1 = Instant::now();
    let c1 = Counters::read(&stats);
    let late: Vec<u64> = env
        .late
        .snapshot()
        .iter()
        .zip(&late0)
        .map(|(b, a)| b - a)
        .collect();
    let sessions_connected_at_end = connected(&stats);
    let sessions_bot_ready = stats
        .iter()
        .filter(|s| s.bot_ready.load(Ordering::Relaxed))
        .count();
    let sessions_echoing = stats
        .iter()
        .zip(&received_before)
        .filter(|(s, &before)| s.packets_received.load(Ordering::Relaxed) > before)
        .count();
    let window_secs = (w1 - w0).as_secs_f64();
    let frames_in_window: Vec<u64> = stats
        .iter()
        .zip(&frames_before)
        .filter(|(s, _)| s.state() == State::Connected)
        .map(|(s, &before)| s.video_frames_received.load(Ordering::Relaxed) - before)
        .collect();
    let video_samples = window_samples(&stats, |s| &s.video_rtts, w0, w1);
    let samples = window_samples(&stats, |s| &s.rtts, w0, w1);

    // Stop.
    log("closing".into());
    let _ = stop.send(true);
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    tokio::time::sleep(cfg.cooldown).await;
    let server_after = sample_server(cfg.server_pid);

    let mut failures = BTreeMap::new();
    for s in &stats {
        if s.state() == State::Failed {
            let e = s
                .error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "unknown".into());
            *failures.entry(e).or_insert(0) += 1;
        }
    }
    let per = |x: f64| (sessions_connected > 0).then(|| x / sessions_connected as f64);
    let server = server0.zip(server1).map(|(a, b)| {
        let cpu = procstat::cpu_percent(&a, &b);
        let rss = mib(b.rss_kib);
        let rss_idle = idle.map(|s| mib(s.rss_kib));
        ProcFigures {
            cpu_pct: cpu,
            cpu_pct_per_session: per(cpu),
            rss_mib: rss,
            hwm_mib: mib(b.hwm_kib),
            rss_idle_mib: rss_idle,
            rss_mib_per_session: rss_idle.and_then(|idle| per(rss - idle)),
            rss_after_close_mib: server_after.map(|s| mib(s.rss_kib)),
        }
    });
    let loadgen = self0
        .zip(self1)
        .map(|(a, b)| {
            let cpu = procstat::cpu_percent(&a, &b);
            ProcFigures {
                cpu_pct: cpu,
                cpu_pct_per_session: per(cpu),
                rss_mib: mib(b.rss_kib),
                hwm_mib: mib(b.hwm_kib),
                ..ProcFigures::default()
            }
        })
        .unwrap_or_default();
    let [answer_p50_ms, answer_p90_ms] =
        latency_quantiles(&stats, |s| s.answer_us.load(Ordering::Relaxed));
    let [connect_p50_ms, connect_p90_ms] =
        latency_quantiles(&stats, |s| s.connect_us.load(Ordering::Relaxed));

    let mut step = StepResult {
        sessions_requested: n,
        sessions_connected,
        sessions_connected_at_end,
        sessions_with_data_channel,
        sessions_bot_ready,
        sessions_failed: failures.values().sum(),
        failures,
        ramp_secs,
        answer_p50_ms,
        answer_p90_ms,
        connect_p50_ms,
        connect_p90_ms,
        window_secs,
        sessions_echoing,
        packets_sent: c1.sent - c0.sent,
        packets_received: c1.received - c0.received,
        packets_skipped: c1.skipped - c0.skipped,
        send_errors: total(&stats, |s| &s.send_errors),
        send_late_p50_ms: late_quantile(&late, 0.5),
        send_late_p99_ms: late_quantile(&late, 0.99),
        send_late_max_ms: late_quantile(&late, 1.0),
        sessions_measured: measured.iter().filter(|&&m| m).count(),
        markers_sent: c1.markers_sent - c0.markers_sent,
        markers_detected: c1.markers_detected - c0.markers_detected,
        markers_unmatched: c1.markers_unmatched - c0.markers_unmatched,
        markers_ambiguous: c1.markers_ambiguous - c0.markers_ambiguous,
        rtt: RttStats::from_samples(&samples, window_secs),
        video: None,
        server,
        loadgen,
        machine_busy_pct: sys0
            .zip(sys1)
            .and_then(|(a, b)| procstat::sys_busy_percent(&a, &b)),
        notes: Vec::new(),
    };
    if cfg.video.is_some() {
        let v0 = c0.video;
        let v1 = c1.video;
        let per_second = |frames: u64| {
            (sessions_connected > 0 && window_secs > 0.0)
                .then(|| frames as f64 / window_secs / sessions_connected as f64)
        };
        step.video = Some(VideoStep {
            sessions_receiving: frames_in_window.iter().filter(|&&f| f > 0).count(),
            frames_sent: v1.sent - v0.sent,
            frames_received: v1.received - v0.received,
            fps_sent_per_session: per_second(v1.sent - v0.sent),
            fps_received_per_session: per_second(v1.received - v0.received),
            fps_received_min: frames_in_window
                .iter()
                .min()
                .filter(|_| window_secs > 0.0)
                .map(|&f| f as f64 / window_secs),
            slots_skipped: v1.skipped - v0.skipped,
            keyframe_requests: v1.keyframe_requests - v0.keyframe_requests,
            sessions_measured: video_measured.iter().filter(|&&m| m).count(),
            stamps_sent: v1.stamps_sent - v0.stamps_sent,
            frames_decoded: v1.decoded - v0.decoded,
            decode_errors: v1.decode_errors - v0.decode_errors,
            stamps_unreadable: v1.unreadable - v0.unreadable,
            stamps_matched: v1.matched - v0.matched,
            stamps_unmatched: v1.unmatched - v0.unmatched,
            plis_sent: v1.plis - v0.plis,
            rtt: RttStats::from_samples(&video_samples, window_secs),
        });
    }
    step.notes = notes(&step, cfg.server_pid.is_some());
    step
}

/// What a reader should know about a step, in words.
fn notes(step: &StepResult, have_pid: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if step.sessions_connected < step.sessions_requested {
        notes.push(format!(
            "only {} of {} sessions connected",
            step.sessions_connected, step.sessions_requested
        ));
    }
    if step.packets_sent == 0 {
        // No audio sent (video mode with --no-audio): nothing to say about its echo.
    } else if step.sessions_connected > 0 && step.packets_received == 0 {
        notes.push(
            "no echo received: the server sent no audio back on m-line 0 during the window".into(),
        );
    } else if step.packets_received > 0 && step.markers_detected == 0 && step.markers_sent > 0 {
        notes.push(
            "audio came back but no marker was found in it: not an echo of what was sent".into(),
        );
    } else if step.sessions_echoing < step.sessions_connected {
        notes.push(format!(
            "only {} of {} connected sessions received audio",
            step.sessions_echoing, step.sessions_connected
        ));
    }
    if step.markers_sent > 0 && step.markers_detected > 0 {
        let found = step.markers_detected as f64 / step.markers_sent as f64;
        if found < 0.9 {
            notes.push(format!(
                "only {:.0}% of markers came back (lost or late beyond the window)",
                found * 100.0
            ));
        }
    }
    if step.markers_ambiguous > 0 {
        notes.push(format!(
            "{} of {} round trips are ambiguous (8 or more markers in a row lost, or a round trip over 8 s): taken in order, each may be 8 s too long",
            step.markers_ambiguous, step.markers_detected
        ));
    }
    if step.markers_unmatched > 0 {
        notes.push(format!(
            "{} markers found that match nothing sent",
            step.markers_unmatched
        ));
    }
    if step.packets_skipped > 0 || step.send_late_p99_ms.is_some_and(|ms| ms >= 10) {
        notes.push(format!(
            "the load generator was late sending (p99 {} ms, max {} ms, {} packets skipped): round trips include its own scheduling delay (busy machine?)",
            step.send_late_p99_ms.unwrap_or(0),
            step.send_late_max_ms.unwrap_or(0),
            step.packets_skipped
        ));
    }
    if let Some(v) = &step.video {
        notes.extend(video_notes(v, step.sessions_connected));
    }
    if have_pid && step.server.is_none() {
        notes.push("server process could not be read (exited?)".into());
    }
    notes
}

/// What a reader should know about a step's video.
fn video_notes(v: &VideoStep, connected: usize) -> Vec<String> {
    let mut notes = Vec::new();
    if connected > 0 && v.frames_received == 0 {
        notes.push("no video back: the server sent nothing on the camera m-line".into());
        return notes;
    }
    if v.sessions_receiving < connected {
        notes.push(format!(
            "only {} of {connected} connected sessions received video",
            v.sessions_receiving
        ));
    }
    if let (Some(sent), Some(back)) = (v.fps_sent_per_session, v.fps_received_per_session) {
        if back < 0.9 * sent {
            notes.push(format!(
                "{back:.1} frames/s came back per session of {sent:.1} sent: the server dropped frames"
            ));
        }
    }
    if v.frames_decoded > 0 && v.stamps_matched == 0 {
        notes.push("video came back but no stamp in it matched a frame sent".into());
    } else if v.frames_decoded > 0 && v.stamps_unreadable * 10 > v.frames_decoded {
        notes.push(format!(
            "{} of {} decoded frames had an unreadable stamp",
            v.stamps_unreadable, v.frames_decoded
        ));
    }
    if v.decode_errors > 0 {
        notes.push(format!(
            "{} frames came back undecodable ({} keyframe requests sent)",
            v.decode_errors, v.plis_sent
        ));
    }
    if v.slots_skipped > 0 {
        notes.push(format!(
            "the load generator fell behind its frame clock ({} frame slots skipped)",
            v.slots_skipped
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_notes_say_what_is_missing() {
        let none = VideoStep::default();
        assert_eq!(
            video_notes(&none, 4),
            vec!["no video back: the server sent nothing on the camera m-line".to_string()]
        );
        let dropping = VideoStep {
            sessions_receiving: 4,
            frames_received: 100,
            fps_sent_per_session: Some(30.0),
            fps_received_per_session: Some(20.0),
            frames_decoded: 50,
            stamps_matched: 50,
            ..VideoStep::default()
        };
        let notes = video_notes(&dropping, 4);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("dropped frames"), "{notes:?}");
        let fine = VideoStep {
            fps_received_per_session: Some(29.5),
            ..dropping
        };
        assert_eq!(video_notes(&fine, 4), Vec::<String>::new());
    }

    #[test]
    fn measured_sessions_are_spread() {
        assert_eq!(measured_set(4, 10), vec![true; 4]);
        let set = measured_set(200, 10);
        assert_eq!(set.iter().filter(|&&m| m).count(), 10);
        assert!(set[0] && set[20] && set[180] && !set[1]);
        assert_eq!(measured_set(5, 0), vec![false; 5]);
    }

    #[test]
    fn notes_say_no_echo() {
        let step = StepResult {
            sessions_requested: 10,
            sessions_connected: 10,
            packets_sent: 5000,
            markers_sent: 50,
            ..StepResult::default()
        };
        let notes = notes(&step, false);
        assert!(
            notes.iter().any(|n| n.starts_with("no echo received")),
            "{notes:?}"
        );
    }

    #[test]
    fn notes_stay_quiet_when_all_is_well() {
        let step = StepResult {
            sessions_requested: 10,
            sessions_connected: 10,
            sessions_echoing: 10,
            packets_sent: 5000,
            packets_received: 5000,
            markers_sent: 100,
            markers_detected: 99,
            server: Some(ProcFigures::default()),
            ..StepResult::default()
        };
        assert_eq!(notes(&step, true), Vec::<String>::new());
    }

    #[test]
    fn notes_say_how_many_round_trips_are_ambiguous() {
        let step = StepResult {
            sessions_requested: 10,
            sessions_connected: 10,
            sessions_echoing: 10,
            packets_sent: 5000,
            packets_received: 2000,
            markers_sent: 100,
            markers_detected: 30,
            markers_ambiguous: 12,
            server: Some(ProcFigures::default()),
            ..StepResult::default()
        };
        let notes = notes(&step, true);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("12 of 30 round trips are ambiguous")),
            "{notes:?}"
        );
    }
}
