//! A tiny echo server of the load generator's own, to check the measurement end to end without
//! the real server: `loadgen --self-echo-test`.
//!
//! It answers `POST /api/offer` like a SmallWebRTC server (str0m answerer, one UDP socket per
//! session, the candidate inside the answer) and sends the client's audio back on the same
//! m-line after a known delay, either
//!
//! - **forward**: the very Opus packets that came in, so the round trip measured must be the
//!   delay plus a millisecond or so of loopback and scheduling; or
//! - **transcode**: decoded, shifted by 7 ms (so markers start mid-packet) and re-encoded in
//!   20 ms packets, as a real bot's output path does, so the markers must survive a second
//!   generation of Opus and the round trip is the delay plus up to one packet.
//!
//! The delay can also grow steadily, to check that drift and slope are reported. Video (VP8 on
//! the camera m-line) is always forwarded unchanged after the same delay, so the video round
//! trip measured must be the delay plus a millisecond or so as well.
//! The self-test runs the load generator against each of these in the same process and checks
//! what it measured against what the echo did.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use opus::{Application, Bitrate, Channels, Decoder, Encoder};
use serde_json::{json, Value};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaData, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::audio::{SAMPLES_PER_PACKET, SEND_RATE};
use crate::run::{self, RunConfig, StepResult};
use crate::video::VideoSpec;

/// How the echo sends audio back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoMode {
    /// The received Opus packets, unchanged.
    Forward,
    /// Decoded, shifted by [`TRANSCODE_SHIFT_SAMPLES`] and re-encoded.
    Transcode,
}

/// The transcoder's shift: 7 ms of silence before the client's audio.
const TRANSCODE_SHIFT_SAMPLES: usize = SEND_RATE as usize * 7 / 1000;
/// A session that hears nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the echo does.
#[derive(Debug, Clone, Copy)]
pub struct EchoConfig {
    pub mode: EchoMode,
    /// Delay before audio is sent back.
    pub delay: Duration,
    /// The delay grows by this many ms per second since the server started.
    pub growth_ms_per_sec: f64,
}

struct AppState {
    config: EchoConfig,
    cert: DtlsCert,
    started: Instant,
    next_id: AtomicU64,
    ip: std::net::IpAddr,
}

/// Starts the echo server on `addr` (port 0 picks one); returns where it listens.
pub async fn serve(
    addr: SocketAddr,
    config: EchoConfig,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let provider = str0m::crypto::from_feature_flags();
    let cert = provider
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| io::Error::other("could not generate a DTLS certificate"))?;
    provider.install_process_default();
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let state = Arc::new(AppState {
        config,
        cert,
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        ip: local.ip(),
    });
    let app = Router::new()
        .route("/api/offer", post(offer))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("self-echo server: {e}");
        }
    });
    Ok((local, task))
}

async fn offer(
    State(state): State<Arc<AppState>>,
    body: String,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    answer(&state, &body)
        .await
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, Json(json!({ "detail": e }))))
}

async fn answer(state: &AppState, body: &str) -> Result<Value, String> {
    let request: Value = serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}"))?;
    let sdp = request["sdp"].as_str().ok_or("no \"sdp\"")?;
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("bad SDP: {e}"))?;
    let socket = UdpSocket::bind((state.ip, 0))
        .await
        .map_err(|e| format!("UDP bind: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = RtcConfig::new()
        .set_dtls_cert(state.cert.clone())
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .set_reordering_size_audio(0)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?)
        .ok_or("candidate refused")?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| format!("offer refused: {e}"))?;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let echo = Echo {
        rtc,
        socket,
        local,
        config: state.config,
        started: state.started,
        queue: VecDeque::new(),
        transcoder: None,
    };
    tokio::spawn(echo.run());
    Ok(json!({
        "sdp": answer.to_sdp_string(),
        "type": "answer",
        "pc_id": format!("SelfEcho-{id}"),
    }))
}

/// A packet waiting for its time to go back.
struct Delayed {
    due: Instant,
    mid: Mid,
    pt: Pt,
    time: MediaTime,
    data: Arc<[u8]>,
}

/// Decode → shift → re-encode.
struct Transcoder {
    decoder: Decoder,
    encoder: Encoder,
    pcm: Vec<i16>,
    decoded: Vec<i16>,
    next_time: u64,
}

impl Transcoder {
    fn new() -> Result<Self, opus::Error> {
        let mut encoder = Encoder::new(SEND_RATE, Channels::Mono, Application::Voip)?;
        encoder.set_bitrate(Bitrate::Bits(32_000))?;
        Ok(Transcoder {
            decoder: Decoder::new(SEND_RATE, Channels::Mono)?,
            encoder,
            pcm: vec![0; TRANSCODE_SHIFT_SAMPLES],
            decoded: vec![0; SEND_RATE as usize * 120 / 1000],
            next_time: 0,
        })
    }

    /// Feeds one received packet; returns the 20 ms packets now complete, with RTP times.
    fn push(&mut self, packet: &[u8]) -> Vec<(u64, Arc<[u8]>)> {
        let Ok(n) = self.decoder.decode(packet, &mut self.decoded, false) else {
            return Vec::new();
        };
        self.pcm.extend_from_slice(&self.decoded[..n]);
        let mut out = Vec::new();
        let mut buf = [0u8; 4000];
        while self.pcm.len() >= SAMPLES_PER_PACKET {
            if let Ok(len) = self
                .encoder
                .encode(&self.pcm[..SAMPLES_PER_PACKET], &mut buf)
            {
                out.push((self.next_time, Arc::from(&buf[..len])));
            }
            self.next_time += SAMPLES_PER_PACKET as u64;
            self.pcm.drain(..SAMPLES_PER_PACKET);
        }
        out
    }
}

/// One echo session.
struct Echo {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    config: EchoConfig,
    started: Instant,
    queue: VecDeque<Delayed>,
    transcoder: Option<Transcoder>,
}

impl Echo {
    fn delay_at(&self, at: Instant) -> Duration {
        let grown = at.saturating_duration_since(self.started).as_secs_f64()
            * self.config.growth_ms_per_sec
            / 1e3;
        self.config.delay + Duration::from_secs_f64(grown.max(0.0))
    }

    fn media(&mut self, data: MediaData) {
        let codec = data.params.spec().codec;
        if codec != Codec::Opus && codec != Codec::Vp8 {
            return;
        }
        let due = data.network_time + self.delay_at(data.network_time);
        let mode = if codec == Codec::Vp8 {
            EchoMode::Forward
        } else {
            self.config.mode
        };
        match mode {
            EchoMode::Forward => self.queue.push_back(Delayed {
                due,
                mid: data.mid,
                pt: data.pt,
                time: data.time,
                data: data.data,
            }),
            EchoMode::Transcode => {
                if self.transcoder.is_none() {
                    self.transcoder = Transcoder::new().ok();
                }
                let Some(transcoder) = self.transcoder.as_mut() else {
                    return;
                };
                for (time, packet) in transcoder.push(&data.data) {
                    self.queue.push_back(Delayed {
                        due,
                        mid: data.mid,
                        pt: data.pt,
                        time: MediaTime::new(time, Frequency::FORTY_EIGHT_KHZ),
                        data: packet,
                    });
                }
            }
        }
    }

    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rtc.poll_output().ok()? {
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::MediaData(data)) => self.media(data),
                Output::Event(_) => {}
                Output::Timeout(t) => return Some(t),
            }
        }
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let mut heard = Instant::now();
        loop {
            let Some(deadline) = self.drain() else {
                return;
            };
            if !self.rtc.is_alive() || heard.elapsed() > IDLE_TIMEOUT {
                return;
            }
            let wake = self
                .queue
                .front()
                .map_or(deadline, |d| d.due.min(deadline))
                .min(Instant::now() + Duration::from_secs(1));
            tokio::select! {
                ready = self.socket.readable() => {
                    if ready.is_err() {
                        return;
                    }
                    while let Ok((n, source)) = self.socket.try_recv_from(&mut buf) {
                        heard = Instant::now();
                        if let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                            let _ = self.rtc.handle_input(Input::Receive(heard, r));
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    while self.queue.front().is_some_and(|d| d.due <= now) {
                        let Some(d) = self.queue.pop_front() else { break };
                        if let Some(writer) = self.rtc.writer(d.mid) {
                            let _ = writer.write(d.pt, now, d.time, d.data);
                        }
                    }
                    let _ = self.rtc.handle_input(Input::Timeout(now));
                }
            }
        }
    }
}

/// Sessions of the video case whose video is decoded and timed.
const VIDEO_MEASURED: usize = 2;

/// What is wrong with the video figures of a self-test step whose p50 must be in `[lo, hi]` ms.
fn check_video(step: &StepResult, opts: &SelfTest, lo: f64, hi: f64) -> Vec<String> {
    let mut failures = Vec::new();
    let Some(v) = &step.video else {
        return vec!["no video figures".into()];
    };
    let fps = VideoSpec::default().fps as f64;
    match v.fps_received_min {
        Some(f) if f >= 0.9 * fps => {}
        f => failures.push(format!(
            "fewest frames back {} /s, expected about {fps}",
            f.map_or("–".into(), |f| format!("{f:.1}"))
        )),
    }
    let expected = VIDEO_MEASURED.min(opts.sessions) as f64
        * fps
        * (opts.duration.as_secs_f64() - 1.0).max(0.0);
    match &v.rtt {
        None => failures.push("no video round trip measured".into()),
        Some(r) => {
            if (r.count as f64) < 0.8 * expected {
                failures.push(format!(
                    "only {} frames timed, expected about {expected:.0}",
                    r.count
                ));
            }
            if r.p50_ms < lo || r.p50_ms > hi {
                failures.push(format!(
                    "p50 video round trip {:.1} ms outside [{lo:.0}, {hi:.0}] ms",
                    r.p50_ms
                ));
            }
        }
    }
    if v.stamps_unreadable + v.stamps_unmatched + v.decode_errors > 0 {
        failures.push(format!(
            "{} unreadable stamps, {} unmatched, {} undecodable frames",
            v.stamps_unreadable, v.stamps_unmatched, v.decode_errors
        ));
    }
    failures
}

/// Options of the self-test.
#[derive(Debug, Clone)]
pub struct SelfTest {
    pub sessions: usize,
    pub duration: Duration,
    pub delay: Duration,
    pub bitrate: i32,
    pub verbose: bool,
}

/// One self-test case and what it must measure.
struct Case {
    name: &'static str,
    echo: EchoConfig,
    /// The p50 round trip must fall in `delay + [lo, hi]` ms.
    extra_ms: (f64, f64),
    /// Expected slope, ms per minute (checked within ±25 %, and at least ±160/window ms/min).
    slope_ms_per_min: f64,
    /// Send camera video too (640×480 at 30 fps), and check its round trip like the audio's.
    video: bool,
}

/// Runs the load generator against the built-in echo in every mode; true if all checks pass.
pub async fn self_test(opts: &SelfTest) -> bool {
    let delay_ms = opts.delay.as_secs_f64() * 1e3;
    let cases = [
        Case {
            name: "forward",
            echo: EchoConfig {
                mode: EchoMode::Forward,
                delay: opts.delay,
                growth_ms_per_sec: 0.0,
            },
            extra_ms: (0.0, 8.0),
            slope_ms_per_min: 0.0,
            video: false,
        },
        Case {
            name: "transcode",
            echo: EchoConfig {
                mode: EchoMode::Transcode,
                delay: opts.delay,
                growth_ms_per_sec: 0.0,
            },
            extra_ms: (0.0, 30.0),
            slope_ms_per_min: 0.0,
            video: false,
        },
        Case {
            name: "forward, delay growing 2 ms/s",
            echo: EchoConfig {
                mode: EchoMode::Forward,
                delay: opts.delay,
                growth_ms_per_sec: 2.0,
            },
            // The delay grows while sessions connect and settle: only the slope is checked.
            extra_ms: (0.0, f64::INFINITY),
            slope_ms_per_min: 120.0,
            video: false,
        },
        Case {
            name: "forward with camera video",
            echo: EchoConfig {
                mode: EchoMode::Forward,
                delay: opts.delay,
                growth_ms_per_sec: 0.0,
            },
            // A 640×480 frame is a few packets: the last one leaves a little after the first.
            extra_ms: (0.0, 10.0),
            slope_ms_per_min: 0.0,
            video: true,
        },
    ];
    let mut all_ok = true;
    for case in &cases {
        let label = format!("self-echo {}", case.name);
        let (addr, server) = match serve("127.0.0.1:0".parse().expect("literal"), case.echo).await {
            Ok(s) => s,
            Err(e) => {
                println!("FAIL {label}: cannot start the echo server: {e}");
                return false;
            }
        };
        let cfg = RunConfig {
            label: label.clone(),
            server: format!("http://{addr}"),
            offer_path: "/api/offer".into(),
            server_pid: Some(std::process::id()),
            sessions: vec![opts.sessions],
            duration: opts.duration,
            ramp_per_sec: 50.0,
            measure: opts.sessions,
            settle: Duration::from_secs(1),
            cooldown: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(10),
            video: case.video.then(VideoSpec::default),
            video_measure: VIDEO_MEASURED.min(opts.sessions),
            audio: true,
            pings: true,
            bitrate: opts.bitrate,
            verbose: opts.verbose,
        };
        let result = run::run(&cfg).await;
        server.abort();
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                println!("FAIL {label}: {e}");
                all_ok = false;
                continue;
            }
        };
        let Some(step) = report.steps.first() else {
            println!("FAIL {label}: no result");
            all_ok = false;
            continue;
        };
        let mut failures = Vec::new();
        if step.sessions_connected != opts.sessions {
            failures.push(format!(
                "{} of {} sessions connected",
                step.sessions_connected, opts.sessions
            ));
        }
        let expected_markers = opts.sessions as f64 * (opts.duration.as_secs_f64() - 1.0);
        match &step.rtt {
            None => failures.push("no round trip measured".into()),
            Some(r) => {
                if (r.count as f64) < 0.8 * expected_markers {
                    failures.push(format!(
                        "only {} markers timed, expected about {expected_markers:.0}",
                        r.count
                    ));
                }
                let (lo, hi) = (delay_ms + case.extra_ms.0, delay_ms + case.extra_ms.1);
                if r.p50_ms < lo || r.p50_ms > hi {
                    failures.push(format!(
                        "p50 round trip {:.1} ms outside [{lo:.0}, {hi:.0}] ms",
                        r.p50_ms
                    ));
                }
                let slope = r.slope_ms_per_min.unwrap_or(f64::NAN);
                // A least-squares slope over a short window is noisy: ±1.5 ms of jitter over
                // 8 s is about ±7 ms/min at one standard error.
                let window = opts.duration.as_secs_f64().max(1.0);
                let tolerance = (case.slope_ms_per_min.abs() * 0.25).max(160.0 / window);
                if slope.is_nan() || (slope - case.slope_ms_per_min).abs() > tolerance {
                    failures.push(format!(
                        "slope {slope:.1} ms/min, expected {:.0} ± {tolerance:.0}",
                        case.slope_ms_per_min
                    ));
                }
            }
        }
        if step.markers_unmatched > 0 {
            failures.push(format!("{} unmatched markers", step.markers_unmatched));
        }
        if case.video {
            failures.extend(check_video(
                step,
                opts,
                delay_ms + case.extra_ms.0,
                delay_ms + case.extra_ms.1,
            ));
        }
        if step.server.is_none() {
            failures.push("CPU/RSS sampling failed".into());
        }
        if failures.is_empty() {
            println!("PASS {label}");
        } else {
            all_ok = false;
            println!("FAIL {label}: {}", failures.join("; "));
        }
    }
    all_ok
}
