//! One client session: a str0m offerer shaped like the official JS client, on its own UDP
//! socket, sending the pre-encoded clip on the shared clock, and in video mode the
//! pre-encoded camera loop ([`crate::video`]) on its own frame clock.
//!
//! A session task wakes for three reasons only: datagrams on its socket (read in a batch), a
//! tick of the shared clock for its phase (send the due packet, run str0m's timers if due), or
//! — while a timer of str0m's is due before the next tick — that timer. No per-session
//! interval, no per-packet allocation on the send path (packets are `Arc` clones of the clip),
//! and no decoding unless the session is measured.
//!
//! Sessions are spread over [`PHASES`] phases 5 ms apart, so that a clock tick wakes a quarter
//! of them and the packets of N sessions leave in four small bursts per 20 ms, not one.
//!
//! Video frames are due every 1/fps from the moment the session connected, so sessions that
//! connected at different times send their frames at different moments. A video frame that is
//! late is sent late rather than skipped (skipping one would break the loop's prediction
//! chain); the time slots it missed are skipped instead.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use str0m::change::SdpAnswer;
use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::audio::{Clip, MarkerDetector, PACKETS_PER_SECOND, SAMPLES_PER_PACKET};
use crate::http::{self, Target};
use crate::video::{Read, StampReader, VideoClip, VIDEO_CLOCK_HZ};

/// Phases of the shared clock: sessions `i` with the same `i % PHASES` send together.
pub const PHASES: usize = 4;
/// Time between two phases' ticks.
pub const TICK: Duration = Duration::from_millis(5);
/// One packet's duration.
pub const FRAME: Duration = Duration::from_millis(20);
/// A session that fell further behind than this many packets skips ahead rather than bursting.
const MAX_CATCH_UP: u64 = 5;
/// A str0m timer due later than this is left to the next clock tick (at most 20 ms late).
const TIMER_SLACK: Duration = Duration::from_millis(20);
/// Datagrams read per wake-up before str0m's output is drained.
const RECV_BATCH: usize = 64;
/// Sent markers remembered while waiting for their echo (a minute of them).
const MAX_PENDING_MARKERS: usize = 60;
/// Sent video frames remembered while waiting for their echo (10 s at 30 fps).
const MAX_PENDING_FRAMES: usize = 300;
/// A measured session asks the server for a keyframe at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Timeout of the offer POST.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Building the offer or waiting for the answer.
    Starting = 0,
    /// Answer applied; ICE and DTLS under way.
    Offered = 1,
    /// ICE and DTLS up.
    Connected = 2,
    /// Gave up (see `SessionStats::error`).
    Failed = 3,
    /// Ended after being connected (stopped by us or closed by the server).
    Closed = 4,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Starting,
            1 => State::Offered,
            2 => State::Connected,
            3 => State::Failed,
            _ => State::Closed,
        }
    }
}

/// A round trip measured on one marker.
#[derive(Debug, Clone, Copy)]
pub struct RttSample {
    /// When the marker's onset came back.
    pub at: Instant,
    pub rtt_ms: f64,
}

/// How late packets left compared with the clock, in 1 ms buckets (the last one: 200 ms or
/// more), shared by every session of a step. A load generator starved of CPU shows here first.
#[derive(Debug)]
pub struct LateHistogram {
    buckets: Vec<AtomicU64>,
}

impl Default for LateHistogram {
    fn default() -> Self {
        LateHistogram {
            buckets: (0..=LATE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Buckets of [`LateHistogram`] below its overflow bucket.
pub const LATE_BUCKETS: usize = 200;

impl LateHistogram {
    /// Counts one packet sent `late` after it was due.
    pub fn record(&self, late: Duration) {
        let ms = (late.as_millis() as usize).min(LATE_BUCKETS);
        self.buckets[ms].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The `q`-quantile (0..=1) of a histogram snapshot, in ms (bucket index), and the largest
/// non-empty bucket.
pub fn late_quantile(counts: &[u64], q: f64) -> Option<usize> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (ms, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(ms);
        }
    }
    None
}

/// What a session reports, shared with the orchestrator (atomics, plus a lock taken once a
/// second by measured sessions only).
#[derive(Debug, Default)]
pub struct SessionStats {
    state: AtomicU8,
    /// Opus packets handed to str0m.
    pub packets_sent: AtomicU64,
    /// Audio frames received on m-line 0.
    pub packets_received: AtomicU64,
    /// Packets skipped because the session fell behind the clock.
    pub packets_skipped: AtomicU64,
    /// Markers sent (measured sessions only).
    pub markers_sent: AtomicU64,
    /// Markers found in the echo and matched to a sent one (measured sessions only).
    pub markers_detected: AtomicU64,
    /// Markers found in the echo that matched nothing sent.
    pub markers_unmatched: AtomicU64,
    /// Of the markers detected, those matched while a later one with the same id waited too.
    pub markers_ambiguous: AtomicU64,
    /// Received packets that failed to decode (measured sessions only).
    pub decode_errors: AtomicU64,
    /// Datagrams a non-blocking send could not send.
    pub send_errors: AtomicU64,
    /// Offer POST → answer, µs (0: not yet).
    pub answer_us: AtomicU64,
    /// Offer POST → connected, µs (0: not yet).
    pub connect_us: AtomicU64,
    /// The data channel is open.
    pub channel_open: AtomicBool,
    /// The bot answered RTVI `client-ready` with `bot-ready`.
    pub bot_ready: AtomicBool,
    /// Round trips of a measured session.
    pub rtts: Mutex<Vec<RttSample>>,
    /// Video frames handed to str0m.
    pub video_frames_sent: AtomicU64,
    /// Video frames received on the camera m-line.
    pub video_frames_received: AtomicU64,
    /// Video time slots skipped because the session fell behind its frame clock.
    pub video_slots_skipped: AtomicU64,
    /// Stamped frames sent (measured sessions only).
    pub video_stamps_sent: AtomicU64,
    /// Received frames decoded to a picture (measured sessions only).
    pub video_frames_decoded: AtomicU64,
    /// Received frames that failed to decode (measured sessions only).
    pub video_decode_errors: AtomicU64,
    /// Decoded frames whose stamp could not be read (measured sessions only).
    pub video_stamps_unreadable: AtomicU64,
    /// Decoded frames whose stamp matched a sent frame: the ones timed.
    pub video_stamps_matched: AtomicU64,
    /// Decoded frames whose stamp matched nothing sent.
    pub video_stamps_unmatched: AtomicU64,
    /// Keyframe requests (PLI/FIR) from the server.
    pub video_keyframe_requests: AtomicU64,
    /// Keyframe requests sent to the server (measured sessions, after a frame failed to decode).
    pub video_plis_sent: AtomicU64,
    /// Video round trips of a measured session.
    pub video_rtts: Mutex<Vec<RttSample>>,
    /// Why the session failed or ended.
    pub error: Mutex<Option<String>>,
}

impl SessionStats {
    /// Where the session is.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    fn end(&self, error: Option<String>) {
        let failed = error.is_some() && self.state() != State::Connected;
        if let Some(e) = error {
            *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        self.set_state(if failed { State::Failed } else { State::Closed });
    }
}

/// What every session of a run step shares.
pub struct Env {
    /// Where offers go.
    pub target: Target,
    /// The address sessions bind their UDP sockets to (the one that reaches the server).
    pub local_ip: IpAddr,
    /// The packets to send.
    pub clip: Arc<Clip>,
    /// One DTLS certificate for every session (generating one per session costs CPU).
    pub cert: DtlsCert,
    /// The shared clock, one channel per phase, carrying the number of the packet now due.
    pub ticks: Vec<watch::Receiver<u64>>,
    /// Set to true to close every session.
    pub stop: watch::Receiver<bool>,
    /// Packet 0 of the clock was due at this instant.
    pub epoch: Instant,
    /// In video mode, the camera loop every session sends on m-line 1.
    pub video: Option<Arc<VideoClip>>,
    /// Send the audio clip (the audio m-line is offered either way, as the JS client does).
    pub audio: bool,
    /// Send the JS client's `ping: <ms>` on the data channel every second.
    pub pings: bool,
    /// A session not connected this long after it started fails.
    pub connect_timeout: Duration,
    /// How late packets leave.
    pub late: Arc<LateHistogram>,
}

/// Sent markers waiting for their echo, matched in order.
///
/// The first marker found is matched to the most recent one sent with its id (markers sent
/// before the echo path was up never come back); after that, each is matched to the oldest
/// unmatched one with its id, and the ones skipped over were lost. Eight ids keep this right
/// through up to seven lost markers in a row, however long the round trip. A match made while
/// a later marker with the same id was also waiting is *ambiguous*: either the round trip is
/// over eight markers long, or eight or more in a row were lost and the round trip is eight
/// markers shorter than the one taken. The report says how many there were.
#[derive(Debug)]
pub struct MarkerLog {
    pending: VecDeque<(u8, Instant)>,
    synced: bool,
    capacity: usize,
}

impl Default for MarkerLog {
    fn default() -> Self {
        MarkerLog::with_capacity(MAX_PENDING_MARKERS)
    }
}

impl MarkerLog {
    /// A log that remembers the last `capacity` sent markers.
    pub fn with_capacity(capacity: usize) -> Self {
        MarkerLog {
            pending: VecDeque::with_capacity(capacity),
            synced: false,
            capacity: capacity.max(1),
        }
    }

    /// Remembers that marker `id` left at `at`.
    pub fn sent(&mut self, id: u8, at: Instant) {
        if self.pending.len() >= self.capacity {
            self.pending.pop_front();
        }
        self.pending.push_back((id, at));
    }

    /// Matches marker `id` found at `at`; returns when it was sent.
    pub fn found(&mut self, id: u8, at: Instant) -> Option<Found> {
        let mut candidates = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, m)| m.0 == id && m.1 <= at);
        let (index, ambiguous) = if self.synced {
            let first = candidates.next()?.0;
            (first, candidates.next().is_some())
        } else {
            (candidates.next_back()?.0, false)
        };
        self.synced = true;
        let (_, sent) = self.pending.drain(..=index).next_back()?;
        Some(Found { sent, ambiguous })
    }
}

/// A marker matched by [`MarkerLog::found`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// When the marker was sent.
    pub sent: Instant,
    /// Another marker with the same id, sent later, was waiting too (see [`MarkerLog`]).
    pub ambiguous: bool,
}

/// The per-packet work of a measured session.
struct Measure {
    detector: MarkerDetector,
    log: MarkerLog,
}

/// Where a session is in sending its camera loop.
struct VideoSend {
    /// Slot 0 was due at this instant (when the session connected).
    epoch: Instant,
    /// Time between frames.
    period: Duration,
    /// The next time slot to send in.
    next_slot: u64,
    /// The next position in the loop to send.
    position: usize,
}

impl VideoSend {
    fn due(&self, slot: u64) -> Instant {
        self.epoch + self.period.mul_f64(slot as f64)
    }
}

/// The per-frame work of a session whose video is measured.
struct VideoMeasure {
    reader: StampReader,
    log: MarkerLog,
    last_pli: Option<Instant>,
}

/// The session's state inside its task.
struct Peer<'a> {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    env: &'a Env,
    stats: &'a SessionStats,
    index: usize,
    audio_mid: Mid,
    video_mid: Option<Mid>,
    channel: Option<ChannelId>,
    pt: Option<Pt>,
    vp8_pt: Option<Pt>,
    video_send: Option<VideoSend>,
    video_measure: Option<VideoMeasure>,
    /// The next packet number to send (None until connected).
    next_packet: Option<u64>,
    measure: Option<Measure>,
    started: Instant,
    connected: bool,
    remote_closed: bool,
}

/// Whether a data-channel message is RTVI `bot-ready` (a substring test: no JSON parsing on
/// the hot path).
fn is_bot_ready(message: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"bot-ready\"";
    message.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Runs session `index` until the stop signal, a failure or the server closing it.
///
/// `measured`: decode and time the audio echo; `video_measured`: decode and time the video echo
/// (video mode only).
pub async fn run(
    index: usize,
    measured: bool,
    video_measured: bool,
    env: Arc<Env>,
    stats: Arc<SessionStats>,
) {
    let result = session(index, measured, video_measured, &env, &stats).await;
    stats.end(result.err());
}

async fn session(
    index: usize,
    measured: bool,
    video_measured: bool,
    env: &Env,
    stats: &SessionStats,
) -> Result<(), String> {
    let started = Instant::now();
    let socket = UdpSocket::bind((env.local_ip, 0))
        .await
        .map_err(|e| format!("binding a UDP socket on {}: {e}", env.local_ip))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("UDP socket address: {e}"))?;

    let mut config = RtcConfig::new()
        .set_dtls_cert(env.cert.clone())
        .clear_codecs()
        .enable_opus(true, false)
        // Hand every audio packet over at once, gap or not: a round trip is a network figure.
        .set_reordering_size_audio(0);
    if env.video.is_some() {
        // The benchmark is of VP8: offer nothing else, so the server cannot pick H.264.
        config = config.enable_vp8(true);
    }
    let mut rtc = config.build(Instant::now());
    let candidate =
        Candidate::host(local, "udp").map_err(|e| format!("host candidate {local}: {e}"))?;
    rtc.add_local_candidate(candidate)
        .ok_or("str0m refused the host candidate")?;
    let mut api = rtc.sdp_api();
    let audio_mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let video_mid = env
        .video
        .is_some()
        .then(|| api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
    api.add_channel("chat".to_string());
    let (offer, pending) = api.apply().ok_or("str0m made no offer")?;

    // The JS client's body: {sdp, type, pc_id, restart_pc}.
    let body = json!({
        "sdp": offer.to_sdp_string(),
        "type": "offer",
        "pc_id": null,
        "restart_pc": false,
    })
    .to_string();
    let response = http::post_json(&env.target, &body, HTTP_TIMEOUT).await?;
    if response.status != 200 {
        let mut text = response.body;
        text.truncate(200);
        return Err(format!("offer: HTTP {}: {text}", response.status));
    }
    let answer: Value = serde_json::from_str(&response.body)
        .map_err(|e| format!("offer: answer is not JSON: {e}"))?;
    let sdp = answer["sdp"]
        .as_str()
        .ok_or("offer: answer has no \"sdp\"")?;
    stats.answer_us.store(
        started.elapsed().as_micros().max(1) as u64,
        Ordering::Relaxed,
    );
    let sdp = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("answer SDP: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, sdp)
        .map_err(|e| format!("applying the answer: {e}"))?;
    stats.set_state(State::Offered);

    let measure = if measured {
        Some(Measure {
            detector: MarkerDetector::new().map_err(|e| format!("Opus decoder: {e}"))?,
            log: MarkerLog::default(),
        })
    } else {
        None
    };
    let video_measure = if video_measured && env.video.is_some() {
        Some(VideoMeasure {
            reader: StampReader::new().map_err(|e| format!("VP8 decoder: {e}"))?,
            log: MarkerLog::with_capacity(MAX_PENDING_FRAMES),
            last_pli: None,
        })
    } else {
        None
    };
    let mut peer = Peer {
        rtc,
        socket,
        local,
        env,
        stats,
        index,
        audio_mid,
        video_mid,
        channel: None,
        pt: None,
        vp8_pt: None,
        video_send: None,
        video_measure,
        next_packet: None,
        measure,
        started,
        connected: false,
        remote_closed: false,
    };
    peer.run().await
}

impl Peer<'_> {
    async fn run(&mut self) -> Result<(), String> {
        let phase = self.index % PHASES;
        let mut tick = self.env.ticks[phase].clone();
        let mut stop = self.env.stop.clone();
        let connect_by = self.started + self.env.connect_timeout;
        let mut buf = vec![0u8; 2048];
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let video_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(video_timer);
        loop {
            if *stop.borrow_and_update() {
                return self.close();
            }
            let deadline = self.drain()?;
            if !self.rtc.is_alive() || self.remote_closed {
                return if self.connected {
                    Err("closed by the server".into())
                } else {
                    Err("closed before connecting".into())
                };
            }
            let now = Instant::now();
            if !self.connected && now > connect_by {
                return Err(format!(
                    "not connected {:?} after starting",
                    self.env.connect_timeout
                ));
            }
            let timer_armed = deadline <= now + TIMER_SLACK;
            if timer_armed {
                timer.as_mut().reset(deadline.into());
            }
            let video_due = self.video_send.as_ref().map(|v| v.due(v.next_slot));
            if let Some(due) = video_due {
                video_timer.as_mut().reset(due.into());
            }
            tokio::select! {
                biased;
                _ = stop.changed() => {}
                ready = self.socket.readable() => {
                    ready.map_err(|e| format!("UDP socket: {e}"))?;
                    self.receive(&mut buf);
                }
                changed = tick.changed() => {
                    if changed.is_err() {
                        return self.close();
                    }
                    let due = *tick.borrow_and_update();
                    self.send_due(due, phase);
                    let now = Instant::now();
                    if now >= deadline {
                        self.timeout(now);
                    }
                }
                _ = &mut timer, if timer_armed => self.timeout(Instant::now()),
                _ = &mut video_timer, if video_due.is_some() => self.send_video(),
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
    }

    /// Reads the datagrams waiting on the socket into str0m.
    fn receive(&mut self, buf: &mut [u8]) {
        for _ in 0..RECV_BATCH {
            let (n, source) = match self.socket.try_recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            if let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                let _ = self
                    .rtc
                    .handle_input(Input::Receive(Instant::now(), receive));
            }
        }
    }

    /// Sends what str0m has to send and handles its events; returns its next deadline.
    fn drain(&mut self) -> Result<Instant, String> {
        let mut timeouts = 0;
        loop {
            match self.rtc.poll_output().map_err(|e| format!("str0m: {e}"))? {
                Output::Transmit(t) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Output::Event(event) => self.event(event),
                Output::Timeout(t) => {
                    let now = Instant::now();
                    if t <= now && timeouts < 8 {
                        timeouts += 1;
                        self.timeout(now);
                        continue;
                    }
                    return Ok(t);
                }
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                if let Some(clip) = &self.env.video {
                    self.video_send = Some(VideoSend {
                        epoch: Instant::now(),
                        period: Duration::from_secs_f64(1.0 / f64::from(clip.spec.fps)),
                        next_slot: 0,
                        position: 0,
                    });
                }
                self.stats.connect_us.store(
                    self.started.elapsed().as_micros().max(1) as u64,
                    Ordering::Relaxed,
                );
                self.stats.set_state(State::Connected);
            }
            Event::ChannelOpen(id, _) => {
                self.channel = Some(id);
                self.stats.channel_open.store(true, Ordering::Relaxed);
                // What the JS client says as soon as its channel opens: the state of its
                // microphone and camera, then RTVI `client-ready`.
                if let Some(mut channel) = self.rtc.channel(id) {
                    let camera = self.env.video.is_some();
                    for (index, enabled) in [(0, self.env.audio), (1, camera)] {
                        let status = json!({
                            "type": "signalling",
                            "message": {"type": "trackStatus", "receiver_index": index, "enabled": enabled},
                        });
                        let _ = channel.write(false, status.to_string().as_bytes());
                    }
                    let ready = json!({
                        "id": format!("loadgen-{}", self.index),
                        "label": "rtvi-ai",
                        "type": "client-ready",
                        "data": {"version": "2.1.0", "about": {"library": "loadgen"}},
                    });
                    let _ = channel.write(false, ready.to_string().as_bytes());
                }
            }
            Event::ChannelData(data) if !data.binary && is_bot_ready(&data.data) => {
                self.stats.bot_ready.store(true, Ordering::Relaxed);
            }
            Event::ChannelClose(id) if self.channel == Some(id) => {
                self.channel = None;
                self.stats.channel_open.store(false, Ordering::Relaxed);
            }
            Event::MediaData(data) if data.mid == self.audio_mid => {
                self.stats.packets_received.fetch_add(1, Ordering::Relaxed);
                if let Some(measure) = &mut self.measure {
                    if let Some((id, at)) =
                        measure.detector.push_packet(&data.data, data.network_time)
                    {
                        match measure.log.found(id, at) {
                            Some(Found { sent, ambiguous }) => {
                                self.stats.markers_detected.fetch_add(1, Ordering::Relaxed);
                                if ambiguous {
                                    self.stats.markers_ambiguous.fetch_add(1, Ordering::Relaxed);
                                }
                                let rtt_ms = at.duration_since(sent).as_secs_f64() * 1e3;
                                self.stats
                                    .rtts
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(RttSample { at, rtt_ms });
                            }
                            None => {
                                self.stats.markers_unmatched.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    self.stats
                        .decode_errors
                        .store(measure.detector.decode_errors, Ordering::Relaxed);
                }
            }
            Event::MediaData(data) if Some(data.mid) == self.video_mid => {
                self.stats
                    .video_frames_received
                    .fetch_add(1, Ordering::Relaxed);
                self.measure_video(&data.data);
            }
            Event::KeyframeRequest(request) if Some(request.mid) == self.video_mid => {
                self.stats
                    .video_keyframe_requests
                    .fetch_add(1, Ordering::Relaxed);
                // The loop starts with its keyframe: start it again with the next frame.
                if let Some(send) = &mut self.video_send {
                    send.position = 0;
                }
            }
            Event::Closed => self.remote_closed = true,
            _ => {}
        }
    }

    /// Decodes a video frame received by a measured session, reads its stamp and times it.
    fn measure_video(&mut self, frame: &[u8]) {
        let Some(measure) = &mut self.video_measure else {
            return;
        };
        let read = measure.reader.push(frame);
        let now = Instant::now();
        match read {
            Read::Stamp(id) => {
                self.stats
                    .video_frames_decoded
                    .fetch_add(1, Ordering::Relaxed);
                match measure.log.found(id, now) {
                    Some(Found { sent, .. }) => {
                        self.stats
                            .video_stamps_matched
                            .fetch_add(1, Ordering::Relaxed);
                        let rtt_ms = now.duration_since(sent).as_secs_f64() * 1e3;
                        self.stats
                            .video_rtts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(RttSample { at: now, rtt_ms });
                    }
                    None => {
                        self.stats
                            .video_stamps_unmatched
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Read::Unreadable => {
                self.stats
                    .video_frames_decoded
                    .fetch_add(1, Ordering::Relaxed);
                self.stats
                    .video_stamps_unreadable
                    .fetch_add(1, Ordering::Relaxed);
            }
            Read::Nothing => {}
            Read::NeedKeyframe => {
                self.stats
                    .video_decode_errors
                    .store(measure.reader.decode_errors, Ordering::Relaxed);
                // What a browser does: ask for a keyframe (PLI), not too often.
                if measure
                    .last_pli
                    .is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL)
                {
                    let asked = self
                        .video_mid
                        .and_then(|mid| self.rtc.writer(mid))
                        .is_some_and(|mut w| {
                            w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
                        });
                    if asked {
                        measure.last_pli = Some(now);
                        self.stats.video_plis_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// The VP8 payload type the server accepted on the camera m-line.
    fn vp8_pt(&mut self) -> Option<Pt> {
        if self.vp8_pt.is_none() {
            let writer = self.rtc.writer(self.video_mid?)?;
            self.vp8_pt = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Vp8)
                .map(|p| p.pt());
        }
        self.vp8_pt
    }

    /// Sends the next frame of the camera loop in the newest time slot that is due.
    fn send_video(&mut self) {
        let Some(clip) = self.env.video.clone() else {
            return;
        };
        let now = Instant::now();
        let Some(send) = &self.video_send else {
            return;
        };
        // The newest slot due now (never one before `next_slot`).
        let elapsed = now.saturating_duration_since(send.epoch).as_secs_f64();
        let slot = ((elapsed / send.period.as_secs_f64()) as u64).max(send.next_slot);
        let skipped = slot - send.next_slot;
        let wallclock = send.due(slot);
        let position = send.position;
        if !self.rtc.is_connected() {
            // Nothing is sent while ICE is down; start again at the keyframe when it is up.
            if let Some(send) = &mut self.video_send {
                send.next_slot = slot + 1;
                send.position = 0;
            }
            return;
        }
        if skipped > 0 {
            self.stats
                .video_slots_skipped
                .fetch_add(skipped, Ordering::Relaxed);
        }
        let sent = match (self.vp8_pt(), self.video_mid) {
            (Some(pt), Some(mid)) => {
                let step = VIDEO_CLOCK_HZ / u64::from(clip.spec.fps);
                let time = MediaTime::new(slot * step, Frequency::NINETY_KHZ);
                self.rtc.writer(mid).is_some_and(|writer| {
                    writer
                        .write(pt, wallclock, time, clip.frames[position].clone())
                        .is_ok()
                })
            }
            _ => false,
        };
        if let Some(send) = &mut self.video_send {
            send.next_slot = slot + 1;
            // A frame not sent breaks the chain: the next one sent is the keyframe.
            send.position = if sent { (position + 1) % clip.len() } else { 0 };
        }
        if !sent {
            return;
        }
        self.stats.video_frames_sent.fetch_add(1, Ordering::Relaxed);
        self.env
            .late
            .record(Instant::now().saturating_duration_since(wallclock));
        if let Some(measure) = &mut self.video_measure {
            measure.log.sent(position as u8, Instant::now());
            self.stats.video_stamps_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Opus payload type the server accepted on m-line 0.
    fn opus_pt(&mut self) -> Option<Pt> {
        if self.pt.is_none() {
            let writer = self.rtc.writer(self.audio_mid)?;
            self.pt = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
        }
        self.pt
    }

    /// Sends every packet due up to packet `due` (normally exactly that one).
    fn send_due(&mut self, due: u64, phase: usize) {
        if !self.env.audio {
            self.send_pings(due);
            return;
        }
        if !self.connected || !self.rtc.is_connected() {
            // Nothing is sent while ICE is down; start afresh when it is up again.
            self.next_packet = None;
            return;
        }
        let Some(pt) = self.opus_pt() else {
            return;
        };
        let mut first = self.next_packet.unwrap_or(due);
        if due >= first + MAX_CATCH_UP {
            let skip = due + 1 - MAX_CATCH_UP - first;
            self.stats
                .packets_skipped
                .fetch_add(skip, Ordering::Relaxed);
            first += skip;
        }
        let clip = &self.env.clip;
        let offset = (self.index * 17) as u64;
        for n in first..=due {
            let at = (n + offset) as usize % clip.len();
            let wallclock = self.env.epoch + FRAME * n as u32 + TICK * phase as u32;
            let time = MediaTime::new(n * SAMPLES_PER_PACKET as u64, Frequency::FORTY_EIGHT_KHZ);
            let Some(writer) = self.rtc.writer(self.audio_mid) else {
                return;
            };
            if writer
                .write(pt, wallclock, time, clip.packets[at].clone())
                .is_err()
            {
                continue;
            }
            self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
            self.env
                .late
                .record(Instant::now().saturating_duration_since(wallclock));
            if let (Some(measure), Some(id)) = (&mut self.measure, clip.markers[at]) {
                measure.log.sent(id, Instant::now());
                self.stats.markers_sent.fetch_add(1, Ordering::Relaxed);
            }
            if self.env.pings && at % PACKETS_PER_SECOND == PACKETS_PER_SECOND / 2 {
                if let Some(mut channel) = self.channel.and_then(|id| self.rtc.channel(id)) {
                    let _ = channel.write(false, format!("ping: {}", unix_ms()).as_bytes());
                }
            }
        }
        self.next_packet = Some(due + 1);
    }

    /// Without audio, the JS client's once-a-second ping still goes out, on packet `due`'s tick.
    fn send_pings(&mut self, due: u64) {
        let at = (due + (self.index * 17) as u64) as usize % PACKETS_PER_SECOND;
        if !self.env.pings || !self.connected || at != PACKETS_PER_SECOND / 2 {
            return;
        }
        if let Some(mut channel) = self.channel.and_then(|id| self.rtc.channel(id)) {
            let _ = channel.write(false, format!("ping: {}", unix_ms()).as_bytes());
        }
    }

    /// Closes politely (RTCP BYE, SCTP shutdown, DTLS close_notify) and sends what that makes.
    fn close(&mut self) -> Result<(), String> {
        if self.rtc.close().is_err() {
            self.rtc.disconnect();
        }
        let _ = self.drain();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_marker_found_matches_the_latest_sent() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_secs(k);
        let mut log = MarkerLog::default();
        for k in 0..10u64 {
            log.sent((k % 8) as u8, s(k));
        }
        // Marker 1 comes back 50 ms after second 9: the one sent at 9 s, not at 1 s.
        let found = log.found(1, s(9) + Duration::from_millis(50));
        assert_eq!(found.map(|f| f.sent), Some(s(9)));
        assert!(log.pending.is_empty());
    }

    #[test]
    fn later_markers_match_in_order_across_long_round_trips_and_losses() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_secs(k);
        let ms = Duration::from_millis;
        let mut log = MarkerLog::default();
        log.sent(0, s(0));
        // The first one found syncs the log.
        assert_eq!(log.found(0, s(0) + ms(10)).map(|f| f.sent), Some(s(0)));
        for k in 1..30u64 {
            log.sent((k % 8) as u8, s(k));
        }
        // A round trip of 12.5 s: the marker sent at 1 s comes back at 13.5 s and is matched to
        // 1 s, not to 9 s, because matching is in order once synced.
        assert_eq!(log.found(1, s(13) + ms(500)).map(|f| f.sent), Some(s(1)));
        // Markers 2, 3 and 4 were lost; 5 comes back.
        assert_eq!(log.found(5, s(17) + ms(600)).map(|f| f.sent), Some(s(5)));
        // Marker 7 is pending at 7, 15 and 23 s: the oldest is the one.
        assert_eq!(log.found(7, s(19)).map(|f| f.sent), Some(s(7)));
        assert_eq!(log.pending.front(), Some(&(0, s(8))));
    }

    #[test]
    fn a_match_is_ambiguous_only_while_a_later_marker_with_its_id_waits() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_secs(k);
        let ms = Duration::from_millis;
        let mut log = MarkerLog::default();
        for k in 0..4u64 {
            log.sent(k as u8, s(k));
        }
        assert!(!log.found(0, s(0) + ms(10)).unwrap().ambiguous);
        assert!(!log.found(1, s(1) + ms(10)).unwrap().ambiguous);
        for k in 4..12u64 {
            log.sent((k % 8) as u8, s(k));
        }
        // Markers 2 to 10 lost; 3's second copy comes back 10 ms after 11 s. In order, it is
        // taken for the one sent at 3 s, 8 s earlier, and said to be ambiguous.
        let found = log.found(3, s(11) + ms(10)).unwrap();
        assert_eq!((found.sent, found.ambiguous), (s(3), true));
    }

    #[test]
    fn markers_from_the_future_do_not_match() {
        let t0 = Instant::now();
        let mut log = MarkerLog::default();
        log.sent(3, t0 + Duration::from_secs(5));
        assert!(log.found(3, t0 + Duration::from_secs(1)).is_none());
        assert!(log.found(2, t0 + Duration::from_secs(6)).is_none());
        assert_eq!(log.pending.len(), 1);
    }

    #[test]
    fn pending_markers_are_bounded() {
        let t0 = Instant::now();
        let mut log = MarkerLog::default();
        for k in 0..1000u64 {
            log.sent((k % 8) as u8, t0 + Duration::from_secs(k));
        }
        assert_eq!(log.pending.len(), MAX_PENDING_MARKERS);
    }

    #[test]
    fn late_histogram_quantiles() {
        let h = LateHistogram::default();
        for ms in [0u64, 0, 0, 1, 1, 2, 3, 10, 50, 5000] {
            h.record(Duration::from_millis(ms));
        }
        let counts = h.snapshot();
        assert_eq!(late_quantile(&counts, 0.5), Some(1));
        assert_eq!(late_quantile(&counts, 0.9), Some(50));
        assert_eq!(late_quantile(&counts, 1.0), Some(LATE_BUCKETS));
        assert_eq!(late_quantile(&[0, 0], 0.5), None);
    }

    #[test]
    fn bot_ready_is_recognised() {
        assert!(is_bot_ready(
            br#"{"label":"rtvi-ai","type":"bot-ready","id":"x","data":{}}"#
        ));
        assert!(!is_bot_ready(br#"{"type":"signalling"}"#));
        assert!(!is_bot_ready(b""));
    }

    #[test]
    fn states_round_trip() {
        let stats = SessionStats::default();
        assert_eq!(stats.state(), State::Starting);
        stats.set_state(State::Connected);
        assert_eq!(stats.state(), State::Connected);
        stats.end(Some("closed by the server".into()));
        assert_eq!(stats.state(), State::Closed);
        let stats = SessionStats::default();
        stats.end(Some("HTTP 503".into()));
        assert_eq!(stats.state(), State::Failed);
    }
}
