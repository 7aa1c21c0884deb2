//! [`SmallWebRtcConnection`]: one client's session.
//!
//! A session is a handle plus one task. The task owns the session's
//! `str0m::Rtc` outright (no lock around it) and selects on three things: the
//! datagrams the [`UdpMux`](crate::net::UdpMux) routes to it, commands from the
//! handle, and the `Rtc`'s own timeout. Events flow out to subscribers.
//!
//! A session outlives its peer connections: `restart_pc` swaps in a new `Rtc`
//! (and a new `pc_id`) while the bot and the handle stay the same.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::media::{KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tokio::sync::{mpsc, oneshot, watch};

use super::endpoint::Endpoint;
use super::media::{MediaPacket, OutgoingMedia};
use super::offer::{inspect_offer, rewrite_offer, OfferSummary};
use super::protocol::{parse_incoming, Incoming, Signal, TrackSource};
use crate::metrics;
use crate::net::{Datagram, MuxSession};
use crate::signaling::ice_servers::IceServer;
use crate::signaling::types::{IceCandidate, SmallWebRtcAnswer};

/// Outgoing app messages queued while the data channel is not open yet.
pub const MAX_MESSAGE_QUEUE_SIZE: usize = 50;

/// Audio packets that may arrive after a later one and still be used in order.
const AUDIO_REORDER_PACKETS: usize = 3;
/// Video packets held while a frame is incomplete: a big screen keyframe fits.
const VIDEO_REORDER_PACKETS: usize = 1024;
/// The longest an audio frame waits for a missing earlier packet.
const AUDIO_REORDER_WAIT: Duration = Duration::from_millis(60);

/// Where send-side bandwidth estimation starts, before any feedback.
const BWE_START_BPS: u64 = 1_000_000;
/// Headroom over the video's highest bitrate asked of the estimator, for audio.
const BWE_AUDIO_HEADROOM_BPS: u64 = 64_000;

/// How often each session samples its round-trip time and packet loss for `/metrics`.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// How long after a processed re-offer a new `renegotiate` request may be sent.
const RENEGOTIATION_GUARD: Duration = Duration::from_secs(2);
/// How many already-due str0m timeouts one `drive` handles inline before it leaves
/// the rest to the timer (a guard against an `Rtc` that keeps asking for the past).
const MAX_DUE_TIMEOUTS_PER_DRIVE: u32 = 8;

/// The state of a session, as Pipecat names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Created from an offer; no connectivity check yet.
    New,
    /// ICE and DTLS are being established.
    Connecting,
    /// ICE and DTLS are up.
    Connected,
    /// ICE failed or consent was lost.
    Failed,
    /// Closed for good.
    Closed,
}

/// What a session tells its subscribers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// ICE checks started.
    Connecting,
    /// Connected, and the bot has called [`SmallWebRtcConnection::connect`].
    Connected,
    /// The peer connection was replaced (`restart_pc`); a new one is coming.
    Disconnected,
    /// Connectivity was lost for good (consent failure).
    Failed,
    /// The session is over; nothing follows.
    Closed,
    /// The client's media on an m-line is known.
    TrackStarted {
        /// The m-line index (0 microphone, 1 camera, 2 screen).
        index: usize,
        /// The m-line's mid.
        mid: String,
        /// `"audio"` or `"video"`.
        kind: &'static str,
    },
    /// The client's media on an m-line went away.
    TrackEnded {
        /// The m-line index.
        index: usize,
        /// The m-line's mid.
        mid: String,
    },
    /// The client turned a source on or off (`trackStatus`).
    TrackStatus {
        /// 0 microphone, 1 camera, 2 screen.
        receiver_index: u32,
        /// The source, when the index is one of the three known ones.
        source: Option<TrackSource>,
        /// On or off.
        enabled: bool,
    },
    /// A JSON app message (anything that is not signalling or a ping).
    AppMessage(Value),
    /// The client asks for a keyframe (PLI or FIR) of the video we send on an m-line.
    KeyframeRequest {
        /// The m-line index.
        index: usize,
    },
}

/// The latest estimates of the bandwidth towards the client, for what we send.
/// The bot's video bitrate follows [`bitrate_bps`](Self::bitrate_bps) (see
/// `TransportParams::video_out_bitrate_min` and `_max`).
///
/// * `remb_bps`: the client's own estimate, from RTCP REMB (`goog-remb`). str0m
///   reports every REMB it receives, with no configuration.
/// * `twcc_bps`: str0m's send-side estimate from transport-cc feedback, which is what
///   Chrome and Firefox send (they send REMB only for streams without the
///   transport-wide sequence number, which str0m negotiates). It exists only when
///   the server runs send-side estimation (`ServerConfig::video_bwe`, `--video-bwe`)
///   and the offer has video. That is off by default: str0m then paces every packet
///   and pads up to 50 kbit/s on each peer connection with a sending video m-line —
///   every session of the official client, including the many whose bot sends no
///   video — and it must be chosen when the offer is answered, before the bot says
///   whether it sends video. Without it, browsers' sessions keep `video_out_bitrate`.
///
/// Clients that send REMB (str0m, GStreamer, libwebrtc without transport-cc, SFUs)
/// are followed either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthEstimate {
    /// The last REMB the client sent, in bit/s.
    pub remb_bps: Option<u64>,
    /// The last send-side (TWCC) estimate, in bit/s.
    pub twcc_bps: Option<u64>,
}

impl BandwidthEstimate {
    /// The bitrate to respect: the lower of the two estimates present (a REMB is the client's
    /// ceiling even when the send-side estimate is higher), or `None` without any.
    ///
    /// ```
    /// use smallwebrtc::peer::connection::BandwidthEstimate;
    /// let both = BandwidthEstimate { remb_bps: Some(300_000), twcc_bps: Some(900_000) };
    /// assert_eq!(both.bitrate_bps(), Some(300_000));
    /// assert_eq!(BandwidthEstimate::default().bitrate_bps(), None);
    /// ```
    pub fn bitrate_bps(&self) -> Option<u64> {
        match (self.remb_bps, self.twcc_bps) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The offer cannot be used; the message says why.
    #[error("{0}")]
    InvalidOffer(String),
    /// The session has ended.
    #[error("the session is closed")]
    Closed,
    /// A trickled candidate could not be parsed.
    #[error("{0}")]
    InvalidCandidate(String),
    /// The server cannot take the session now (every port of
    /// `--udp-port-range` is in use); the message says why.
    #[error("{0}")]
    Unavailable(String),
}

enum Command {
    Renegotiate {
        sdp: String,
        restart_pc: bool,
        candidates: Vec<Candidate>,
        reply: oneshot::Sender<Result<SmallWebRtcAnswer, PeerError>>,
    },
    AddCandidate(IceCandidate),
    Send(String),
    SetMediaReader(usize, Option<mpsc::Sender<MediaPacket>>),
    WriteMedia(OutgoingMedia),
    RequestKeyframe(usize),
    SetVideoBitrateBounds {
        min_bps: u64,
        max_bps: u64,
    },
    Connect,
    AskToRenegotiate,
    Disconnect,
    Close,
}

struct SharedState {
    pc_id: String,
    pc_ids: Vec<String>,
    answer: SmallWebRtcAnswer,
    subscribers: Vec<mpsc::UnboundedSender<ConnectionEvent>>,
    state: ConnectionState,
    connect_invoked: bool,
    last_ping: Option<Instant>,
    closed_by_server: bool,
    estimate: BandwidthEstimate,
}

struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    state: Mutex<SharedState>,
    closed: watch::Receiver<bool>,
    ice_servers: Vec<IceServer>,
    endpoint: Endpoint,
    /// Where the session is reached (its own port, with a port range): a
    /// `restart_pc` answer announces the same addresses.
    local_addrs: Vec<std::net::SocketAddr>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: ConnectionEvent) {
        self.lock()
            .subscribers
            .retain(|s| s.send(event.clone()).is_ok());
    }
}

/// One client's WebRTC session: the peer connection, its data channel and events.
///
/// Cheap to clone; every clone is the same session. Created by
/// [`SmallWebRtcRequestHandler`](crate::SmallWebRtcRequestHandler) for each new
/// offer and handed to the bot.
///
/// ```no_run
/// use smallwebrtc::{ConnectionEvent, SmallWebRtcConnection};
///
/// async fn bot(connection: SmallWebRtcConnection) {
///     let mut events = connection.events();
///     connection.connect();
///     while let Some(event) = events.recv().await {
///         match event {
///             ConnectionEvent::AppMessage(message) => connection.send_app_message(&message),
///             ConnectionEvent::Closed => break,
///             _ => {}
///         }
///     }
/// }
/// ```
#[derive(Clone)]
pub struct SmallWebRtcConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SmallWebRtcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmallWebRtcConnection")
            .field("pc_id", &self.pc_id())
            .field("state", &self.state())
            .finish()
    }
}

impl SmallWebRtcConnection {
    /// Creates a session from a client's offer and starts its task.
    ///
    /// The answer is ready when this returns ([`get_answer`](Self::get_answer)):
    /// it carries every server candidate, so the server never trickles.
    pub async fn initialize(
        endpoint: &Endpoint,
        ice_servers: Vec<IceServer>,
        sdp: &str,
        sdp_type: &str,
    ) -> Result<SmallWebRtcConnection, PeerError> {
        check_type(sdp_type)?;
        let (mux_session, datagrams) = endpoint
            .mux()
            .register()
            .await
            .map_err(|e| PeerError::Unavailable(e.to_string()))?;
        let local_addrs = mux_session.local_addrs();
        let candidates = endpoint
            .local_candidates_at(&local_addrs, &ice_servers)
            .await;
        let pc_id = endpoint.new_pc_id();
        let peer = Peer::accept(
            &mux_session,
            sdp,
            candidates,
            Instant::now(),
            endpoint.send_side_bwe(),
        )?;
        let answer = SmallWebRtcAnswer {
            sdp: peer.answer.clone(),
            sdp_type: "answer".into(),
            pc_id: pc_id.clone(),
        };
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            commands: commands_tx,
            state: Mutex::new(SharedState {
                pc_id: pc_id.clone(),
                pc_ids: vec![pc_id.clone()],
                answer,
                subscribers: Vec::new(),
                state: ConnectionState::New,
                connect_invoked: false,
                last_ping: None,
                closed_by_server: false,
                estimate: BandwidthEstimate::default(),
            }),
            closed: closed_rx,
            ice_servers,
            endpoint: endpoint.clone(),
            local_addrs,
        });
        let task = SessionTask::new(
            shared.clone(),
            endpoint.clone(),
            mux_session,
            peer,
            closed_tx,
        );
        let span = tracing::info_span!("session", pc_id = %pc_id);
        tokio::spawn(tracing::Instrument::instrument(
            task.run(datagrams, commands_rx),
            span,
        ));
        Ok(SmallWebRtcConnection { shared })
    }

    /// The latest answer: `{sdp, type: "answer", pc_id}`.
    pub fn get_answer(&self) -> SmallWebRtcAnswer {
        self.shared.lock().answer.clone()
    }

    /// The current `pc_id` (it changes with `restart_pc`).
    pub fn pc_id(&self) -> String {
        self.shared.lock().pc_id.clone()
    }

    /// Every `pc_id` this session has had, oldest first.
    pub fn pc_ids(&self) -> Vec<String> {
        self.shared.lock().pc_ids.clone()
    }

    /// The session's state.
    pub fn state(&self) -> ConnectionState {
        self.shared.lock().state
    }

    /// The ICE servers this session was created with; renegotiations reuse them.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.shared.ice_servers
    }

    /// Subscribes to the session's events from now on.
    pub fn events(&self) -> mpsc::UnboundedReceiver<ConnectionEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.shared.lock();
        if state.state == ConnectionState::Closed {
            let _ = tx.send(ConnectionEvent::Closed);
        } else {
            state.subscribers.push(tx);
        }
        rx
    }

    /// Says the bot is ready: `Connected` fires (now, if the peer is already
    /// connected) and app messages that arrived before are delivered.
    pub fn connect(&self) {
        let _ = self.shared.commands.send(Command::Connect);
    }

    /// True when the bot may talk to the client: [`connect`](Self::connect) was
    /// called, the peer is connected and, for clients that ping, a ping came in
    /// the last 3 seconds.
    pub fn is_connected(&self) -> bool {
        let state = self.shared.lock();
        if !state.connect_invoked || state.state != ConnectionState::Connected {
            return false;
        }
        match state.last_ping {
            None => true,
            Some(t) => t.elapsed() < self.shared.endpoint.timeouts().ping_liveness,
        }
    }

    /// Sends a JSON message over the data channel (queued until it opens).
    pub fn send_app_message(&self, message: &Value) {
        self.send_text(message.to_string());
    }

    /// Sends pre-serialized JSON text over the data channel (queued until it opens).
    pub fn send_text(&self, text: String) {
        let _ = self.shared.commands.send(Command::Send(text));
    }

    /// Asks the client to re-offer (`renegotiate` signalling message). At most
    /// one request is in flight.
    pub fn ask_to_renegotiate(&self) {
        let _ = self.shared.commands.send(Command::AskToRenegotiate);
    }

    /// Applies a re-offer from the client. With `restart_pc` a new peer
    /// connection replaces the old one and the answer carries a new `pc_id`.
    pub async fn renegotiate(
        &self,
        sdp: &str,
        sdp_type: &str,
        restart_pc: bool,
    ) -> Result<SmallWebRtcAnswer, PeerError> {
        check_type(sdp_type)?;
        let candidates = if restart_pc {
            self.shared
                .endpoint
                .local_candidates_at(&self.shared.local_addrs, &self.shared.ice_servers)
                .await
        } else {
            Vec::new()
        };
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Renegotiate {
                sdp: sdp.to_string(),
                restart_pc,
                candidates,
                reply,
            })
            .map_err(|_| PeerError::Closed)?;
        answer.await.map_err(|_| PeerError::Closed)?
    }

    /// Adds a trickled candidate; an empty one marks end-of-candidates.
    pub fn add_ice_candidate(&self, candidate: IceCandidate) -> Result<(), PeerError> {
        if self.state() == ConnectionState::Closed {
            return Err(PeerError::Closed);
        }
        let _ = self.shared.commands.send(Command::AddCandidate(candidate));
        Ok(())
    }

    /// Sends `peerLeft` to the client, then closes.
    pub async fn disconnect(&self) {
        let _ = self.shared.commands.send(Command::Disconnect);
        self.closed().await;
    }

    /// Closes without telling the client.
    pub async fn close(&self) {
        let _ = self.shared.commands.send(Command::Close);
        self.closed().await;
    }

    /// Resolves when the session has closed.
    pub async fn closed(&self) {
        let mut closed = self.shared.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// True once the session has closed.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Starts handing the client's encoded frames on m-line `index` to the
    /// returned receiver (replacing any earlier reader). Frames that find the
    /// receiver full are dropped, oldest-first semantics being the reader's job:
    /// the network task never waits for a slow reader. Nothing is forwarded
    /// while nobody reads: drop the receiver to stop.
    pub fn read_media(&self, index: usize, capacity: usize) -> mpsc::Receiver<MediaPacket> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let _ = self
            .shared
            .commands
            .send(Command::SetMediaReader(index, Some(tx)));
        rx
    }

    /// Sends an encoded frame to the client; dropped while not connected.
    pub fn write_media(&self, media: OutgoingMedia) {
        let _ = self.shared.commands.send(Command::WriteMedia(media));
    }

    /// Asks the client for a keyframe (PLI) on m-line `index`.
    pub fn request_keyframe(&self, index: usize) {
        let _ = self.shared.commands.send(Command::RequestKeyframe(index));
    }

    /// Tells the bandwidth estimator the bounds of the bot's video bitrate, so it
    /// probes for up to `max_bps` (plus room for audio). Only has an effect when the
    /// server runs send-side estimation (`ServerConfig::video_bwe`) and the session
    /// has video; [`VideoOut`](crate::transport) calls it when video output starts.
    pub fn set_video_bitrate_bounds(&self, min_bps: u64, max_bps: u64) {
        let _ = self
            .shared
            .commands
            .send(Command::SetVideoBitrateBounds { min_bps, max_bps });
    }

    /// True when the session was ended by [`disconnect`](Self::disconnect) or
    /// [`close`](Self::close) on our side, not by the client or a timeout.
    pub fn closed_by_server(&self) -> bool {
        self.shared.lock().closed_by_server
    }

    /// The codecs the answer accepted on m-line `index`, by name as SDP writes
    /// them (`"VP8"`, `"H264"`, `"opus"`), in the answer's order.
    pub fn negotiated_codecs(&self, index: usize) -> Vec<String> {
        let answer = self.get_answer();
        let Some(section) = answer.sdp.split("\r\nm=").nth(index + 1) else {
            return Vec::new();
        };
        let mut names: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|codec| codec.split('/').next())
            .map(str::to_string)
            .collect();
        names.dedup();
        names
    }

    /// The latest bandwidth estimates towards the client (reset by `restart_pc`).
    pub fn bandwidth_estimate(&self) -> BandwidthEstimate {
        self.shared.lock().estimate
    }

    /// True when both handles are the same session.
    pub fn same_session(&self, other: &SmallWebRtcConnection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Closes an `Rtc` politely: RTCP BYE, SCTP shutdown and the DTLS
/// close_notify go out now, so the client learns at once that we are gone.
async fn close_rtc(rtc: &mut Rtc, mux: &mut MuxSession) {
    if !rtc.is_alive() {
        return;
    }
    if let Err(e) = rtc.close() {
        tracing::debug!("close failed: {e}");
    }
    // Closing only queues output, all of it due now: drain until quiet.
    for _ in 0..64 {
        match rtc.poll_output() {
            Ok(Output::Transmit(t)) => mux.send(t.source, t.destination, &t.contents).await,
            Ok(Output::Event(_)) => {}
            Ok(Output::Timeout(_)) | Err(_) => break,
        }
    }
    rtc.disconnect();
}

fn check_type(sdp_type: &str) -> Result<(), PeerError> {
    if sdp_type != "offer" {
        return Err(PeerError::InvalidOffer(format!(
            "SDP type must be \"offer\", got {sdp_type:?}"
        )));
    }
    Ok(())
}

/// One `Rtc` and what we know of its offer.
struct Peer {
    rtc: Rtc,
    ufrag: String,
    summary: OfferSummary,
    answer: String,
    /// Whether str0m's send-side bandwidth estimation runs on this `Rtc`.
    bwe: bool,
}

impl Peer {
    /// `send_side_bwe`: estimate the bandwidth from transport-cc feedback if the
    /// offer has video ([`EndpointConfig::send_side_bwe`](super::endpoint::EndpointConfig)).
    fn accept(
        mux: &MuxSession,
        sdp: &str,
        candidates: Vec<Candidate>,
        now: Instant,
        send_side_bwe: bool,
    ) -> Result<Peer, PeerError> {
        let summary = inspect_offer(sdp).map_err(|e| PeerError::InvalidOffer(e.0))?;
        let offer = parse_offer(sdp)?;
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let bwe = send_side_bwe && summary.has_video();
        let mut config = RtcConfig::new();
        if bwe {
            config = config.enable_bwe(Some(Bitrate::bps(BWE_START_BPS)));
        }
        let mut rtc = config
            .set_local_ice_credentials(creds)
            // A lost audio packet holds back the ones after it until this many
            // have arrived (str0m's default, 15, is 300 ms of voice). The reader
            // conceals the gap, so release them after 3 (60 ms) at most.
            .set_reordering_size_audio(AUDIO_REORDER_PACKETS)
            .set_reordering_timeout_audio(Some(AUDIO_REORDER_WAIT))
            // A screen-share keyframe can span hundreds of packets.
            .set_reordering_size_video(VIDEO_REORDER_PACKETS)
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(now);
        for c in candidates {
            rtc.add_local_candidate(c);
        }
        let answer = answer_offer(&mut rtc, offer)?;
        mux.claim_ufrag(&ufrag);
        Ok(Peer {
            rtc,
            ufrag,
            summary,
            answer: finish_answer(&answer.to_sdp_string()),
            bwe,
        })
    }

    fn reoffer(&mut self, sdp: &str) -> Result<String, PeerError> {
        let summary = inspect_offer(sdp).map_err(|e| PeerError::InvalidOffer(e.0))?;
        let offer = parse_offer(sdp)?;
        let answer = answer_offer(&mut self.rtc, offer)?;
        self.summary = summary;
        self.answer = finish_answer(&answer.to_sdp_string());
        Ok(self.answer.clone())
    }

    fn mid_index(&self, mid: &str) -> usize {
        self.summary.index_of(mid).unwrap_or(usize::MAX)
    }

    fn mid_at(&self, index: usize) -> Option<Mid> {
        self.summary
            .sections
            .get(index)
            .and_then(|s| s.mid.as_deref())
            .map(Mid::from)
    }

    fn index_of_mid(&self, mid: Mid) -> Option<usize> {
        self.summary
            .sections
            .iter()
            .position(|s| s.mid.as_deref() == Some(&*mid))
    }
}

/// Answers an offer, turning a panic inside str0m into a refused offer.
///
/// Fuzzing found offers that str0m 0.25 answers with a panic (one payload type
/// given two configurations in bundled m-lines): without this, one bad POST
/// kills the HTTP worker, or a bad re-offer the session task. After a panic the
/// `Rtc` is not trusted again: it is disconnected, so the session ends.
fn answer_offer(rtc: &mut Rtc, offer: SdpOffer) -> Result<str0m::change::SdpAnswer, PeerError> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rtc.sdp_api().accept_offer(offer)
    }));
    match result {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(PeerError::InvalidOffer(format!(
            "cannot answer the SDP offer: {e}"
        ))),
        Err(_) => {
            rtc.disconnect();
            Err(PeerError::InvalidOffer(
                "cannot answer the SDP offer: its codecs are inconsistent (for example one payload type with two configurations)".into(),
            ))
        }
    }
}

fn parse_offer(sdp: &str) -> Result<SdpOffer, PeerError> {
    SdpOffer::from_sdp_string(&rewrite_offer(sdp))
        .map_err(|e| PeerError::InvalidOffer(format!("invalid SDP offer: {e}")))
}

/// Makes sure every m-section with candidates ends its candidate list with
/// `a=end-of-candidates`: the server never trickles, so the client need not wait.
fn finish_answer(sdp: &str) -> String {
    if sdp.contains("a=end-of-candidates") {
        return sdp.to_string();
    }
    let mut out = String::with_capacity(sdp.len() + 128);
    let mut in_candidates = false;
    for line in sdp.split_inclusive('\n') {
        let is_candidate = line.starts_with("a=candidate:");
        if in_candidates && !is_candidate {
            out.push_str("a=end-of-candidates\r\n");
        }
        in_candidates = is_candidate;
        out.push_str(line);
    }
    if in_candidates {
        out.push_str("a=end-of-candidates\r\n");
    }
    out
}

struct SessionTask {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    mux: MuxSession,
    peer: Peer,
    closed_tx: watch::Sender<bool>,
    channel: Option<ChannelId>,
    outgoing: VecDeque<String>,
    queueing: bool,
    pending_app: Vec<Value>,
    connect_invoked: bool,
    rtc_connected: bool,
    started: Instant,
    connected_at: Option<Instant>,
    last_receive: Instant,
    renegotiation_guard_until: Option<Instant>,
    renegotiation_requested: bool,
    connecting_emitted: bool,
    finished: bool,
    /// Readers of the client's media, by m-line index; kept across `restart_pc`.
    readers: Vec<Option<mpsc::Sender<MediaPacket>>>,
    /// The bot's video bitrate bounds, for the bandwidth estimator.
    video_bitrate_bounds: Option<(u64, u64)>,
}

impl SessionTask {
    fn new(
        shared: Arc<Shared>,
        endpoint: Endpoint,
        mux: MuxSession,
        peer: Peer,
        closed_tx: watch::Sender<bool>,
    ) -> Self {
        let now = Instant::now();
        SessionTask {
            shared,
            endpoint,
            mux,
            peer,
            closed_tx,
            channel: None,
            outgoing: VecDeque::new(),
            queueing: true,
            pending_app: Vec::new(),
            connect_invoked: false,
            rtc_connected: false,
            started: now,
            connected_at: None,
            last_receive: now,
            renegotiation_guard_until: None,
            renegotiation_requested: false,
            connecting_emitted: false,
            finished: false,
            readers: Vec::new(),
            video_bitrate_bounds: None,
        }
    }

    async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<Datagram>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        // One timer for the session's life, moved only when the deadline moves: a
        // fresh sleep per turn would insert into and remove from tokio's timer wheel
        // for every packet.
        let timer = tokio::time::sleep_until(Instant::now().into());
        tokio::pin!(timer);
        while !self.finished {
            let rtc_timeout = self.drive().await;
            if self.finished {
                break;
            }
            let deadline = tokio::time::Instant::from_std(self.next_deadline(rtc_timeout));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command).await,
                    // Every handle is gone: nobody can ever use this session.
                    None => self.finish(ConnectionEvent::Closed).await,
                },
                Some(datagram) = datagrams.recv() => self.handle_datagram(datagram),
                _ = &mut timer => {
                    self.handle_timeout();
                    self.check_deadlines().await;
                }
            }
        }
    }

    /// Polls the `Rtc` until it wants to wait: sends what it transmits, handles its
    /// events. Returns when it next wants to be woken.
    ///
    /// A timeout that is already due is handled here and now. str0m asks for one after
    /// every media write (it packetizes on its next timeout), so going through the timer
    /// instead would cost every outgoing packet a timer wake-up and up to a millisecond.
    async fn drive(&mut self) -> Instant {
        let mut due_handled = 0;
        loop {
            match self.peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    let now = Instant::now();
                    // Bounded, so an `Rtc` that keeps asking for the past cannot spin us.
                    if t > now || due_handled == MAX_DUE_TIMEOUTS_PER_DRIVE {
                        return t;
                    }
                    due_handled += 1;
                    if let Err(e) = self.peer.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!("timeout handling failed: {e}");
                    }
                }
                Ok(Output::Transmit(t)) => {
                    self.mux.send(t.source, t.destination, &t.contents).await;
                }
                Ok(Output::Event(event)) => self.handle_event(event).await,
                Err(e) => {
                    tracing::warn!("peer connection error: {e}");
                    self.finish(ConnectionEvent::Failed).await;
                    return Instant::now();
                }
            }
            if self.finished {
                return Instant::now();
            }
        }
    }

    fn next_deadline(&self, rtc_timeout: Instant) -> Instant {
        let timeouts = self.endpoint.timeouts();
        let mut deadline = rtc_timeout;
        if !self.rtc_connected {
            deadline = deadline.min(self.started + timeouts.connecting);
        }
        if let (Some(at), true) = (self.connected_at, self.queueing && self.channel.is_none()) {
            deadline = deadline.min(at + timeouts.data_channel);
        }
        if self.rtc_connected {
            deadline = deadline.min(self.last_receive + timeouts.consent);
        }
        if let Some(until) = self.renegotiation_guard_until {
            deadline = deadline.min(until);
        }
        // Never sleep for ever: a far-away deadline still wakes us to re-check.
        deadline.min(Instant::now() + Duration::from_secs(3600))
    }

    fn handle_datagram(&mut self, datagram: Datagram) {
        self.last_receive = datagram.received;
        metrics::INBOUND_QUEUE_DELAY.observe(datagram.received.elapsed().as_secs_f64());
        let Ok(receive) = Receive::new(
            Protocol::Udp,
            datagram.source,
            datagram.destination,
            &datagram.contents,
        ) else {
            return;
        };
        let input = Input::Receive(datagram.received, receive);
        if self.peer.rtc.accepts(&input) {
            if let Err(e) = self.peer.rtc.handle_input(input) {
                tracing::debug!("bad datagram from {}: {e}", datagram.source);
            }
        }
    }

    fn handle_timeout(&mut self) {
        let now = Instant::now();
        if let Err(e) = self.peer.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!("timeout handling failed: {e}");
        }
        let timeouts = self.endpoint.timeouts();
        if let Some(until) = self.renegotiation_guard_until {
            if now >= until {
                self.renegotiation_guard_until = None;
                self.renegotiation_requested = false;
            }
        }
        if let Some(at) = self.connected_at {
            if self.queueing && self.channel.is_none() && now >= at + timeouts.data_channel {
                if !self.outgoing.is_empty() {
                    tracing::warn!(
                        dropped = self.outgoing.len(),
                        "no data channel opened within {:?}: dropping queued messages",
                        timeouts.data_channel
                    );
                }
                self.outgoing.clear();
                self.queueing = false;
            }
        }
    }

    async fn check_deadlines(&mut self) {
        let now = Instant::now();
        let timeouts = self.endpoint.timeouts();
        if !self.rtc_connected && now >= self.started + timeouts.connecting {
            tracing::info!("not connected after {:?}: closing", timeouts.connecting);
            self.finish(ConnectionEvent::Closed).await;
        } else if self.rtc_connected && now >= self.last_receive + timeouts.consent {
            tracing::info!(
                "client silent for {:?} (ICE consent lost): closing",
                timeouts.consent
            );
            self.finish(ConnectionEvent::Failed).await;
        } else if !self.peer.rtc.is_alive() {
            self.finish(ConnectionEvent::Closed).await;
        }
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(?state, "ICE state");
                match state {
                    IceConnectionState::Checking if !self.connecting_emitted => {
                        self.connecting_emitted = true;
                        self.set_state(ConnectionState::Connecting);
                        self.shared.emit(ConnectionEvent::Connecting);
                    }
                    _ => {}
                }
            }
            Event::Connected => {
                tracing::info!(elapsed = ?self.started.elapsed(), "peer connected");
                self.rtc_connected = true;
                self.connected_at.get_or_insert_with(Instant::now);
                self.set_state(ConnectionState::Connected);
                if self.connect_invoked {
                    self.shared.emit(ConnectionEvent::Connected);
                }
            }
            Event::ChannelOpen(id, label) => {
                tracing::debug!(%label, "data channel open");
                // The last channel the client opens wins, as in the original.
                self.channel = Some(id);
                self.flush_outgoing();
            }
            Event::ChannelClose(id) if self.channel == Some(id) => self.channel = None,
            Event::ChannelBufferedAmountLow(_) => self.flush_outgoing(),
            Event::ChannelData(data) => self.handle_channel_data(&data.data, data.binary),
            Event::MediaAdded(added) => {
                let mid = added.mid.to_string();
                self.shared.emit(ConnectionEvent::TrackStarted {
                    index: self.peer.mid_index(&mid),
                    mid,
                    kind: match added.kind {
                        MediaKind::Audio => "audio",
                        MediaKind::Video => "video",
                    },
                });
            }
            Event::MediaData(data) => self.forward_media(data),
            Event::KeyframeRequest(request) => {
                if let Some(index) = self.peer.index_of_mid(request.mid) {
                    self.shared.emit(ConnectionEvent::KeyframeRequest { index });
                }
            }
            Event::EgressBitrateEstimate(kind) => {
                let mut state = self.shared.lock();
                match kind {
                    BweKind::Remb { estimate, .. } => {
                        state.estimate.remb_bps = Some(estimate.as_u64())
                    }
                    BweKind::Twcc { estimate, .. } => {
                        state.estimate.twcc_bps = Some(estimate.as_u64())
                    }
                    _ => {}
                }
            }
            Event::PeerStats(stats) => {
                if let Some(rtt) = stats.rtt {
                    metrics::ROUND_TRIP.observe(rtt.as_secs_f64());
                }
                if let Some(loss) = stats.ingress_loss_fraction {
                    metrics::LOSS_IN.observe(f64::from(loss));
                }
                if let Some(loss) = stats.egress_loss_fraction {
                    metrics::LOSS_OUT.observe(f64::from(loss));
                }
            }
            Event::Closed => {
                tracing::info!("client closed the connection");
                self.finish(ConnectionEvent::Closed).await;
            }
            _ => {}
        }
    }

    fn handle_channel_data(&mut self, data: &[u8], binary: bool) {
        match parse_incoming(data, binary) {
            Ok(Incoming::Ping) => self.shared.lock().last_ping = Some(Instant::now()),
            Ok(Incoming::TrackStatus {
                receiver_index,
                enabled,
            }) => self.shared.emit(ConnectionEvent::TrackStatus {
                receiver_index,
                source: TrackSource::from_receiver_index(receiver_index),
                enabled,
            }),
            Ok(Incoming::UnknownSignalling(kind)) => {
                tracing::debug!(%kind, "unknown signalling message ignored")
            }
            Ok(Incoming::App(message)) => {
                if self.connect_invoked {
                    self.shared.emit(ConnectionEvent::AppMessage(message));
                } else {
                    self.pending_app.push(message);
                }
            }
            Err(e) => tracing::debug!("data-channel message ignored: {e}"),
        }
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Send(text) => self.send_text(text),
            Command::Connect => {
                self.connect_invoked = true;
                self.shared.lock().connect_invoked = true;
                if self.rtc_connected {
                    self.shared.emit(ConnectionEvent::Connected);
                }
                for message in std::mem::take(&mut self.pending_app) {
                    self.shared.emit(ConnectionEvent::AppMessage(message));
                }
            }
            Command::AddCandidate(candidate) => self.add_candidate(candidate),
            Command::SetMediaReader(index, reader) => {
                if self.readers.len() <= index {
                    self.readers.resize(index + 1, None);
                }
                self.readers[index] = reader;
            }
            Command::WriteMedia(media) => self.write_media(media),
            Command::RequestKeyframe(index) => self.request_keyframe(index),
            Command::SetVideoBitrateBounds { min_bps, max_bps } => {
                self.video_bitrate_bounds = Some((min_bps, max_bps));
                self.apply_video_bitrate_bounds();
            }
            Command::AskToRenegotiate => {
                if !self.renegotiation_requested {
                    self.renegotiation_requested = true;
                    self.send_text(Signal::Renegotiate.to_json());
                }
            }
            Command::Renegotiate {
                sdp,
                restart_pc,
                candidates,
                reply,
            } => {
                let result = if restart_pc {
                    self.restart(&sdp, candidates).await
                } else {
                    self.peer.reoffer(&sdp)
                };
                let result = result.map(|sdp| SmallWebRtcAnswer {
                    sdp,
                    sdp_type: "answer".into(),
                    pc_id: self.shared.lock().pc_id.clone(),
                });
                if let Ok(answer) = &result {
                    self.shared.lock().answer = answer.clone();
                    if self.renegotiation_requested {
                        self.renegotiation_guard_until = Some(Instant::now() + RENEGOTIATION_GUARD);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Disconnect => {
                self.shared.lock().closed_by_server = true;
                if self.channel.is_some() {
                    self.send_text(Signal::PeerLeft.to_json());
                    // Let the message leave before the close_notify.
                    let _ = self.drive().await;
                }
                self.finish(ConnectionEvent::Closed).await;
            }
            Command::Close => {
                self.shared.lock().closed_by_server = true;
                self.finish(ConnectionEvent::Closed).await
            }
        }
        self.check_deadlines().await;
    }

    /// Passes the video bitrate bounds to str0m's estimator, if it runs: probing
    /// goes up to the highest video bitrate plus audio; no minimum beyond str0m's own
    /// padding floor, so a quiet bot is not padded up to its video rate.
    fn apply_video_bitrate_bounds(&mut self) {
        if let (true, Some((_, max_bps))) = (self.peer.bwe, self.video_bitrate_bounds) {
            self.peer.rtc.bwe().set_bitrate(
                Bitrate::ZERO,
                Bitrate::bps(max_bps + BWE_AUDIO_HEADROOM_BPS),
            );
        }
    }

    async fn restart(
        &mut self,
        sdp: &str,
        candidates: Vec<Candidate>,
    ) -> Result<String, PeerError> {
        let peer = Peer::accept(
            &self.mux,
            sdp,
            candidates,
            Instant::now(),
            self.endpoint.send_side_bwe(),
        )?;
        let mut old = std::mem::replace(&mut self.peer, peer);
        self.apply_video_bitrate_bounds();
        self.mux.release_ufrag(&old.ufrag);
        close_rtc(&mut old.rtc, &mut self.mux).await;
        let pc_id = self.endpoint.new_pc_id();
        {
            let mut state = self.shared.lock();
            state.pc_id = pc_id.clone();
            state.pc_ids.push(pc_id.clone());
            state.state = ConnectionState::New;
            state.last_ping = None;
            state.estimate = BandwidthEstimate::default();
        }
        tracing::info!(new_pc_id = %pc_id, "peer connection restarted");
        self.shared.emit(ConnectionEvent::Disconnected);
        let now = Instant::now();
        self.channel = None;
        self.outgoing.clear();
        self.queueing = true;
        self.pending_app.clear();
        self.rtc_connected = false;
        self.started = now;
        self.connected_at = None;
        self.last_receive = now;
        self.connecting_emitted = false;
        Ok(self.peer.answer.clone())
    }

    fn forward_media(&mut self, data: str0m::media::MediaData) {
        let Some(index) = self.peer.index_of_mid(data.mid) else {
            return;
        };
        let Some(Some(reader)) = self.readers.get(index) else {
            return;
        };
        let packet = MediaPacket {
            index,
            codec: data.params.spec().codec,
            rtp_time: data.time.numer(),
            clock_rate: data.time.denom(),
            network_time: data.network_time,
            contiguous: data.contiguous,
            data: data.data,
        };
        match reader.try_send(packet) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::trace!(index, "media reader behind: frame dropped")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.readers[index] = None,
        }
    }

    fn write_media(&mut self, media: OutgoingMedia) {
        if !self.rtc_connected {
            return;
        }
        let Some(mid) = self.peer.mid_at(media.index) else {
            return;
        };
        let Some(writer) = self.peer.rtc.writer(mid) else {
            return;
        };
        let Some((pt, clock)) = writer
            .payload_params()
            .find(|p| p.spec().codec == media.codec)
            .map(|p| (p.pt(), p.spec().clock_rate))
        else {
            tracing::debug!(index = media.index, codec = ?media.codec, "codec not negotiated on this m-line");
            return;
        };
        let time = MediaTime::new(media.rtp_time, clock);
        if let Err(e) = writer.write(pt, media.wallclock, time, media.data) {
            tracing::debug!("media write failed: {e}");
        }
    }

    fn request_keyframe(&mut self, index: usize) {
        let Some(mid) = self.peer.mid_at(index) else {
            return;
        };
        if let Some(mut writer) = self.peer.rtc.writer(mid) {
            if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
            }
        }
    }

    fn add_candidate(&mut self, candidate: IceCandidate) {
        if candidate.is_end_of_candidates() {
            // str0m needs no end-of-candidates signal; checks simply run out.
            return;
        }
        let text = candidate.candidate.trim();
        let text = text.strip_prefix("a=").unwrap_or(text);
        if text.contains(".local ") {
            tracing::debug!("mDNS candidate skipped: {text}");
            return;
        }
        let with_prefix;
        let text = if text.starts_with("candidate:") {
            text
        } else {
            with_prefix = format!("candidate:{text}");
            &with_prefix
        };
        match Candidate::from_sdp_string(text) {
            Ok(c) => self.peer.rtc.add_remote_candidate(c),
            Err(e) => tracing::debug!("trickled candidate ignored ({e}): {text}"),
        }
    }

    fn send_text(&mut self, text: String) {
        if self.channel.is_some() && self.outgoing.is_empty() && self.write(&text) {
            return;
        }
        if self.channel.is_none() && !self.queueing {
            tracing::debug!("no data channel: message dropped");
            return;
        }
        if self.outgoing.len() >= MAX_MESSAGE_QUEUE_SIZE {
            tracing::warn!(
                "outgoing message queue full ({MAX_MESSAGE_QUEUE_SIZE}): message dropped"
            );
            return;
        }
        self.outgoing.push_back(text);
    }

    fn flush_outgoing(&mut self) {
        while let Some(text) = self.outgoing.pop_front() {
            if !self.write(&text) {
                self.outgoing.push_front(text);
                break;
            }
        }
    }

    /// Writes on the open channel; false when it cannot take the message now.
    fn write(&mut self, text: &str) -> bool {
        let Some(id) = self.channel else {
            return false;
        };
        let Some(mut channel) = self.peer.rtc.channel(id) else {
            self.channel = None;
            return false;
        };
        match channel.write(false, text.as_bytes()) {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("data-channel write failed: {e}");
                false
            }
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.shared.lock().state = state;
    }

    async fn finish(&mut self, reason: ConnectionEvent) {
        if self.finished {
            return;
        }
        self.finished = true;
        close_rtc(&mut self.peer.rtc, &mut self.mux).await;
        self.mux.release_ufrag(&self.peer.ufrag);
        if reason == ConnectionEvent::Failed {
            self.set_state(ConnectionState::Failed);
            self.shared.emit(ConnectionEvent::Failed);
        }
        self.set_state(ConnectionState::Closed);
        self.shared.emit(ConnectionEvent::Closed);
        self.shared.lock().subscribers.clear();
        let _ = self.closed_tx.send(true);
        tracing::info!("session closed");
    }
}
