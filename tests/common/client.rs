//! A test-side WebRTC client peer for the SmallWebRTC HTTP signalling protocol.
//!
//! `TestClient` plays the browser's role with str0m: it binds a UDP socket on loopback, builds an
//! offer shaped like one of the known clients (`OfferShape`), POSTs it to the offer URL, applies
//! the answer, optionally PATCHes its trickled candidate, and then runs the classic str0m IO loop
//! in a tokio task. Tests talk to that task through commands (`send_text`, `with_rtc`, ...) and
//! observe it through `ClientEvent`s and the text queue behind `recv_text`.
//!
//! Note: str0m picks random three-character mids (not the browser's `"0"`, `"1"`, ...), so a
//! server must identify m-lines by their order, never by their mid text. `mids()` returns the
//! client's mids in m-line order.

#![allow(dead_code)]

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// How long `close()` waits for the IO loop to drain the DTLS close_notify.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// Upper bound on one IO-loop sleep, so the loop re-checks its deadlines regularly.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// Timeout of every HTTP request the client makes.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Capacity of the event broadcast channel (media events can be plentiful).
const EVENT_CAPACITY: usize = 4096;

static CRYPTO: Once = Once::new();

/// Installs str0m's process-wide crypto provider (idempotent).
pub fn ensure_crypto() {
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// Error returned by `TestClient` operations. `status`/`body` are set when an HTTP request got a
/// non-2xx response, so tests can assert on rejections (for example a 400 in SINGLE mode).
#[derive(Debug, Clone)]
pub struct ClientError {
    pub message: String,
    pub status: Option<u16>,
    pub body: Option<String>,
}

impl ClientError {
    fn new(message: impl Into<String>) -> Self {
        ClientError {
            message: message.into(),
            status: None,
            body: None,
        }
    }

    fn http(what: &str, status: u16, body: String) -> Self {
        ClientError {
            message: format!("{what}: HTTP {status}: {body}"),
            status: Some(status),
            body: Some(body),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

impl From<String> for ClientError {
    fn from(message: String) -> Self {
        ClientError::new(message)
    }
}

impl From<&str> for ClientError {
    fn from(message: &str) -> Self {
        ClientError::new(message)
    }
}

/// The m-line layout and POST body style of the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferShape {
    /// Like `@pipecat-ai/small-webrtc-transport`: audio sendrecv, video sendrecv, video sendonly,
    /// then data channel `"chat"`. POST body `{sdp, type, pc_id, restart_pc[, requestData]}`.
    JsClient,
    /// Audio sendrecv + video sendrecv, no data channel. POST body `{sdp, type}` (plus
    /// `request_data` if set, and `pc_id`/`restart_pc` when renegotiating).
    RawAudioVideo,
    /// Like pipecat-esp32 (libpeer): audio sendrecv as `UDP/TLS/RTP/SAVP` + data channel
    /// `"rtvi-ai"`. POST body `{sdp, type}`
    /// (plus `request_data` if set). Never trickles: the candidate is always in the offer.
    Esp32,
}

impl OfferShape {
    /// The data channel label of this shape, if it has one.
    pub fn channel_label(self) -> Option<&'static str> {
        match self {
            OfferShape::JsClient => Some("chat"),
            OfferShape::RawAudioVideo => None,
            OfferShape::Esp32 => Some("rtvi-ai"),
        }
    }

    fn medias(self) -> &'static [(MediaKind, Direction)] {
        match self {
            OfferShape::JsClient => &[
                (MediaKind::Audio, Direction::SendRecv),
                (MediaKind::Video, Direction::SendRecv),
                (MediaKind::Video, Direction::SendOnly),
            ],
            OfferShape::RawAudioVideo => &[
                (MediaKind::Audio, Direction::SendRecv),
                (MediaKind::Video, Direction::SendRecv),
            ],
            OfferShape::Esp32 => &[(MediaKind::Audio, Direction::SendRecv)],
        }
    }
}

/// Options for `TestClient::start`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub shape: OfferShape,
    /// true: the offer carries no candidate; the local candidate is PATCHed after the answer.
    /// false: the candidate is inside the offer. Ignored (always false) for `OfferShape::Esp32`.
    pub trickle: bool,
    /// Sent as `requestData` (JsClient, like the JS client) or `request_data` (other shapes).
    pub request_data: Option<Value>,
    /// Send `"ping: <unix ms>"` every second once the data channel is open.
    pub send_pings: bool,
    /// Which video codecs the offer carries.
    pub video_codecs: VideoCodecs,
}

/// The video codecs a client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodecs {
    /// str0m's defaults: VP8, VP9, AV1 and several H.264 profiles, like a browser.
    #[default]
    Default,
    /// VP8 only.
    Vp8Only,
    /// H.264 only, and only Constrained Baseline (`profile-level-id=42e01f`) in
    /// packetization mode 1: what Safari and hardware-only clients insist on.
    H264Only,
}

impl ClientOptions {
    /// The official JS client: JsClient shape, trickle, pings.
    pub fn js() -> Self {
        ClientOptions {
            shape: OfferShape::JsClient,
            trickle: true,
            request_data: None,
            send_pings: true,
            video_codecs: VideoCodecs::Default,
        }
    }

    /// Defaults that fit `shape`: JS → `js()`; the others neither trickle nor ping.
    pub fn for_shape(shape: OfferShape) -> Self {
        match shape {
            OfferShape::JsClient => Self::js(),
            _ => ClientOptions {
                shape,
                trickle: false,
                request_data: None,
                send_pings: false,
                video_codecs: VideoCodecs::Default,
            },
        }
    }

    fn trickles(&self) -> bool {
        self.trickle && self.shape != OfferShape::Esp32
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self::js()
    }
}

/// What the client's IO loop observed. Published on a broadcast channel (`TestClient::events`).
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// str0m `Event::Connected` (ICE + DTLS up).
    Connected,
    /// ICE connection state, lower case W3C-ish names: "new", "checking", "connected",
    /// "completed", "disconnected".
    IceState(String),
    ChannelOpen(String),
    ChannelClose,
    ChannelText(String),
    ChannelBinary(Vec<u8>),
    MediaAdded {
        mid: Mid,
        kind: MediaKind,
        direction: Direction,
    },
    MediaData {
        mid: Mid,
        pt: Pt,
        time: MediaTime,
        data: Arc<[u8]>,
        contiguous: bool,
    },
    KeyframeRequest {
        mid: Mid,
    },
    /// The remote closed DTLS/SCTP (str0m `Event::Closed`).
    Closed,
    /// The IO loop of the current peer connection ended (after a close, a remote close or an
    /// error; not sent for the old peer replaced by a restart_pc renegotiation).
    LoopEnded(String),
}

/// Snapshot of one peer connection's state, kept by its IO loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PeerState {
    /// When str0m first reported ICE + DTLS connected.
    connected_at: Option<Instant>,
    connected: bool,
    ever_connected: bool,
    channel_open: bool,
    remote_closed: bool,
    ended: Option<String>,
    ice: String,
}

/// What the IO loop owns besides the socket.
struct PeerCtx {
    rtc: Rtc,
    /// The channel this client created (from `add_channel`).
    own_channel: Option<ChannelId>,
    /// The channel used for sending: ours once open, else the first one that opened.
    open_channel: Option<ChannelId>,
    publish: bool,
    /// Re-offers made on this Rtc (str0m always writes session version 2; browsers count up).
    reoffers: u64,
}

type PeerFn = Box<dyn FnOnce(&mut PeerCtx) + Send>;

enum Cmd {
    Run(PeerFn),
    Close {
        publish: bool,
        done: oneshot::Sender<()>,
    },
}

/// Handle to one running peer connection (one Rtc + socket + IO task).
struct PeerHandle {
    cmd: mpsc::UnboundedSender<Cmd>,
    state: watch::Receiver<PeerState>,
    task: JoinHandle<()>,
    local_addr: SocketAddr,
    local_candidate: String,
    mids: Vec<Mid>,
}

#[derive(Debug, Clone, Default)]
struct SessionInfo {
    /// When the latest offer POST was sent and its answer read.
    offer_posted: Option<Instant>,
    answer_received: Option<Instant>,
    pc_id: Option<String>,
    answer_sdp: String,
    answer_json: Value,
    offer_sdp: String,
}

struct Shared {
    http: reqwest::Client,
    offer_url: String,
    opts: ClientOptions,
    events: broadcast::Sender<ClientEvent>,
    texts_tx: mpsc::UnboundedSender<String>,
    texts_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    session: Mutex<SessionInfo>,
    peer: Mutex<Option<PeerHandle>>,
    negotiation: tokio::sync::Mutex<()>,
}

/// A str0m-based WebRTC client speaking SmallWebRTC HTTP signalling.
pub struct TestClient {
    shared: Arc<Shared>,
}

/// A peer connection that has been offered but whose IO loop is not running yet.
struct NewPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local_addr: SocketAddr,
    candidate: Candidate,
    offer_sdp: String,
    pending: SdpPendingOffer,
    own_channel: Option<ChannelId>,
    mids: Vec<Mid>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn ice_state_name(s: IceConnectionState) -> &'static str {
    match s {
        IceConnectionState::New => "new",
        IceConnectionState::Checking => "checking",
        IceConnectionState::Connected => "connected",
        IceConnectionState::Completed => "completed",
        IceConnectionState::Disconnected => "disconnected",
    }
}

/// The value of the first `a=ice-ufrag:` line of an SDP.
fn sdp_ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// The Rtc configuration for the offered video codecs (audio is always Opus).
fn rtc_config(codecs: VideoCodecs) -> RtcConfig {
    match codecs {
        VideoCodecs::Default => Rtc::builder(),
        VideoCodecs::Vp8Only => Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true),
        VideoCodecs::H264Only => {
            let mut config = Rtc::builder().clear_codecs().enable_opus(true, false);
            // Chrome's payload types for Constrained Baseline, mode 1 (and its RTX).
            config
                .codec_config()
                .add_h264(Pt::from(106), Some(Pt::from(107)), true, 0x42e01f);
            config
        }
    }
}

/// Binds a socket and builds a fresh Rtc with an offer of the given shape.
async fn new_peer(opts: &ClientOptions) -> Result<NewPeer, ClientError> {
    ensure_crypto();
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("binding a UDP socket on 127.0.0.1: {e}"))?;
    let local_addr = socket
        .local_addr()
        .map_err(|e| format!("reading the UDP socket's address: {e}"))?;
    let candidate = Candidate::host(local_addr, "udp")
        .map_err(|e| format!("building a host candidate for {local_addr}: {e}"))?;

    let mut rtc = rtc_config(opts.video_codecs).build(Instant::now());
    if !opts.trickles() {
        rtc.add_local_candidate(candidate.clone())
            .ok_or("str0m refused the local host candidate")?;
    }

    let mut api = rtc.sdp_api();
    for (kind, dir) in opts.shape.medias() {
        api.add_media(*kind, *dir, None, None, None);
    }
    let own_channel = opts
        .shape
        .channel_label()
        .map(|label| api.add_channel(label.to_string()));
    let (offer, pending) = api
        .apply()
        .ok_or("str0m produced no offer for the initial changes")?;
    let mut offer_sdp = offer.to_sdp_string();
    if opts.shape == OfferShape::Esp32 {
        // libpeer offers its audio as `UDP/TLS/RTP/SAVP` (no feedback profile).
        offer_sdp = offer_sdp.replace(" UDP/TLS/RTP/SAVPF ", " UDP/TLS/RTP/SAVP ");
    }
    let mids = mids_from_sdp(&offer_sdp)
        .iter()
        .map(|m| Mid::from(m.as_str()))
        .collect();

    Ok(NewPeer {
        rtc,
        socket,
        local_addr,
        candidate,
        offer_sdp,
        pending,
        own_channel,
        mids,
    })
}

/// Rewrites the session version of the `o=` line (`o=<user> <id> <version> ...`).
fn bump_sdp_version(sdp: &str, version: u64) -> String {
    let mut out = String::with_capacity(sdp.len() + 8);
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("o=") {
            let body = line.trim_end_matches(['\r', '\n']);
            let ending = &line[body.len()..];
            let mut fields: Vec<String> = body.split(' ').map(str::to_string).collect();
            if fields.len() > 2 {
                fields[2] = version.to_string();
            }
            out.push_str(&fields.join(" "));
            out.push_str(ending);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The `a=mid:` values of an SDP in m-line order.
fn mids_from_sdp(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_string)
        .collect()
}

/// The POST body for an offer, in the shape's style.
fn offer_body(
    opts: &ClientOptions,
    sdp: &str,
    pc_id: Option<&str>,
    restart_pc: bool,
    renegotiation: bool,
) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("sdp".into(), json!(sdp));
    body.insert("type".into(), json!("offer"));
    match opts.shape {
        OfferShape::JsClient => {
            body.insert("pc_id".into(), json!(pc_id));
            body.insert("restart_pc".into(), json!(restart_pc));
            if let Some(data) = &opts.request_data {
                body.insert("requestData".into(), data.clone());
            }
        }
        OfferShape::RawAudioVideo | OfferShape::Esp32 => {
            if renegotiation {
                body.insert("pc_id".into(), json!(pc_id));
                body.insert("restart_pc".into(), json!(restart_pc));
            }
            if let Some(data) = &opts.request_data {
                body.insert("request_data".into(), data.clone());
            }
        }
    }
    Value::Object(body)
}

/// A parsed answer response.
struct Answer {
    json: Value,
    sdp: String,
    pc_id: Option<String>,
}

async fn post_offer(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<Answer, ClientError> {
    let resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("POST {url}: reading the response body: {e}"))?;
    if !status.is_success() {
        return Err(ClientError::http(
            &format!("POST {url} (offer)"),
            status.as_u16(),
            text,
        ));
    }
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| format!("POST {url}: response is not JSON ({e}): {text}"))?;
    let sdp = json
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("POST {url}: response has no string \"sdp\": {text}"))?
        .to_string();
    if let Some(t) = json.get("type") {
        if t != "answer" {
            return Err(format!("POST {url}: response \"type\" is {t}, not \"answer\"").into());
        }
    }
    let pc_id = json
        .get("pc_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Answer { json, sdp, pc_id })
}

fn parse_answer(sdp: &str) -> Result<SdpAnswer, ClientError> {
    SdpAnswer::from_sdp_string(sdp)
        .map_err(|e| ClientError::new(format!("parsing the answer SDP: {e}\n{sdp}")))
}

fn candidate_patch_body(pc_id: &str, candidate: &str, mid: &str) -> Value {
    json!({
        "pc_id": pc_id,
        "candidates": [{"candidate": candidate, "sdp_mid": mid, "sdp_mline_index": 0}],
    })
}

async fn send_patch(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<reqwest::Response, ClientError> {
    http.patch(url)
        .json(body)
        .send()
        .await
        .map_err(|e| ClientError::new(format!("PATCH {url}: {e}")))
}

impl TestClient {
    /// Binds a UDP socket on 127.0.0.1:0, builds the offer, POSTs it to `offer_url`, applies the
    /// answer, starts the IO loop and (trickle mode) PATCHes the local candidate. Does not wait
    /// for the connection.
    pub async fn start(offer_url: &str, opts: ClientOptions) -> Result<TestClient, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (texts_tx, texts_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            http,
            offer_url: offer_url.to_string(),
            opts,
            events,
            texts_tx,
            texts_rx: tokio::sync::Mutex::new(texts_rx),
            session: Mutex::new(SessionInfo::default()),
            peer: Mutex::new(None),
            negotiation: tokio::sync::Mutex::new(()),
        });
        let client = TestClient { shared };
        client.connect_new_peer(None).await?;
        Ok(client)
    }

    /// Builds a new peer, POSTs its offer (`restart_of`: the old pc_id for a restart_pc
    /// re-offer), starts it and makes it current; a replaced peer is then closed.
    async fn connect_new_peer(&self, restart_of: Option<String>) -> Result<(), ClientError> {
        let sh = &self.shared;
        let mut peer = new_peer(&sh.opts).await?;
        let restart = restart_of.is_some();
        let body = offer_body(
            &sh.opts,
            &peer.offer_sdp,
            restart_of.as_deref(),
            restart,
            restart,
        );
        let posted = Instant::now();
        let answer = post_offer(&sh.http, &sh.offer_url, &body).await?;
        let answered = Instant::now();
        {
            let mut s = lock(&sh.session);
            s.offer_posted = Some(posted);
            s.answer_received = Some(answered);
        }
        let sdp_answer = parse_answer(&answer.sdp)?;
        peer.rtc
            .sdp_api()
            .accept_answer(peer.pending, sdp_answer)
            .map_err(|e| format!("applying the answer: {e}\n{}", answer.sdp))?;

        let trickle = sh.opts.trickles();
        if trickle {
            peer.rtc
                .add_local_candidate(peer.candidate.clone())
                .ok_or("str0m refused the local host candidate")?;
        }
        let local_candidate = peer.candidate.to_sdp_string();
        let first_mid = peer.mids.first().map(|m| m.to_string()).unwrap_or_default();

        {
            let mut s = lock(&sh.session);
            s.pc_id = answer.pc_id.clone();
            s.answer_sdp = answer.sdp.clone();
            s.answer_json = answer.json;
            s.offer_sdp = peer.offer_sdp.clone();
        }

        let ctx = PeerCtx {
            rtc: peer.rtc,
            own_channel: peer.own_channel,
            open_channel: None,
            publish: true,
            reoffers: 0,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(PeerState {
            ice: "new".into(),
            ..PeerState::default()
        });
        let task = tokio::spawn(run_peer(
            ctx,
            peer.socket,
            cmd_rx,
            state_tx,
            sh.events.clone(),
            sh.texts_tx.clone(),
            sh.opts.send_pings,
        ));
        let handle = PeerHandle {
            cmd: cmd_tx,
            state: state_rx,
            task,
            local_addr: peer.local_addr,
            local_candidate: local_candidate.clone(),
            mids: peer.mids,
        };
        let old = lock(&sh.peer).replace(handle);
        if let Some(old) = old {
            // Like the JS client: the old PC is closed once the new answer is applied.
            retire(old).await;
        }

        if trickle {
            // Like the JS client: the candidate queue is flushed as one PATCH once the answer
            // (and so the pc_id) is known.
            let pc_id = answer.pc_id.clone().unwrap_or_default();
            let body = candidate_patch_body(&pc_id, &local_candidate, &first_mid);
            let resp = send_patch(&sh.http, &sh.offer_url, &body).await?;
            let status = resp.status();
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(ClientError::http(
                    &format!("PATCH {} (trickled candidate)", sh.offer_url),
                    status.as_u16(),
                    text,
                ));
            }
        }
        Ok(())
    }

    fn current<T>(&self, f: impl FnOnce(&PeerHandle) -> T) -> Result<T, ClientError> {
        lock(&self.shared.peer)
            .as_ref()
            .map(f)
            .ok_or_else(|| ClientError::new("the client has no peer connection"))
    }

    async fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&PeerState) -> bool,
    ) -> Result<(), ClientError> {
        let mut rx = self.current(|p| p.state.clone())?;
        match watch_until(&mut rx, timeout, |s| pred(s) || s.ended.is_some()).await {
            Waited::TimedOut(s) => {
                Err(format!("timed out after {timeout:?} waiting for {what} (state: {s:?})").into())
            }
            Waited::Gone => Err(format!("IO loop gone while waiting for {what}").into()),
            Waited::Done(s) if pred(&s) => Ok(()),
            Waited::Done(s) => Err(format!(
                "peer connection ended while waiting for {what}: {}",
                s.ended.unwrap_or_default()
            )
            .into()),
        }
    }

    /// Waits until ICE and DTLS are connected (str0m `Event::Connected`).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        self.wait_state("the connection", timeout, |s| s.connected)
            .await
    }

    /// Waits until the data channel is open.
    pub async fn wait_channel_open(&self, timeout: Duration) -> Result<(), ClientError> {
        if self.shared.opts.shape.channel_label().is_none() {
            return Err(format!(
                "{:?} offers no data channel; nothing to wait for",
                self.shared.opts.shape
            )
            .into());
        }
        self.wait_state("the data channel to open", timeout, |s| s.channel_open)
            .await
    }

    /// Waits until the current peer connection's IO loop has ended (remote close, local close,
    /// error). Returns the reason.
    pub async fn wait_ended(&self, timeout: Duration) -> Result<String, ClientError> {
        let mut rx = self.current(|p| p.state.clone())?;
        match watch_until(&mut rx, timeout, |s| s.ended.is_some()).await {
            Waited::TimedOut(_) => {
                Err(format!("timed out after {timeout:?} waiting for the peer to end").into())
            }
            Waited::Gone => Ok("IO loop gone".into()),
            Waited::Done(s) => Ok(s.ended.unwrap_or_default()),
        }
    }

    /// Waits until the remote closed DTLS/SCTP (str0m `Event::Closed`).
    pub async fn wait_remote_closed(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.current(|p| p.state.clone())?;
        match watch_until(&mut rx, timeout, |s| s.remote_closed).await {
            Waited::TimedOut(_) => {
                Err(format!("timed out after {timeout:?} waiting for a remote close").into())
            }
            Waited::Gone => Err("IO loop gone before a remote close was seen".into()),
            Waited::Done(_) => Ok(()),
        }
    }

    /// For the latest offer: how long the POST took to be answered, and how long
    /// from sending it until ICE + DTLS connected (None while not connected).
    pub fn timings(&self) -> (Duration, Option<Duration>) {
        let (posted, answered) = {
            let s = lock(&self.shared.session);
            (s.offer_posted, s.answer_received)
        };
        let (Some(posted), Some(answered)) = (posted, answered) else {
            return (Duration::ZERO, None);
        };
        let connected = self
            .current(|p| p.state.borrow().connected_at)
            .ok()
            .flatten()
            .map(|t| t.saturating_duration_since(posted));
        (answered - posted, connected)
    }

    /// The pc_id from the latest answer ("" if the server sent none).
    pub fn pc_id(&self) -> String {
        lock(&self.shared.session).pc_id.clone().unwrap_or_default()
    }

    /// The latest answer SDP, verbatim.
    pub fn answer_sdp(&self) -> String {
        lock(&self.shared.session).answer_sdp.clone()
    }

    /// The latest full answer response body.
    pub fn answer_json(&self) -> Value {
        lock(&self.shared.session).answer_json.clone()
    }

    /// The latest offer SDP this client POSTed, verbatim.
    pub fn offer_sdp(&self) -> String {
        lock(&self.shared.session).offer_sdp.clone()
    }

    /// The offer URL this client POSTs and PATCHes to.
    pub fn offer_url(&self) -> String {
        self.shared.offer_url.clone()
    }

    /// The local UDP address of the current peer connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.current(|p| p.local_addr).ok()
    }

    /// The current peer's host candidate as a PATCH would carry it ("candidate:...").
    pub fn local_candidate(&self) -> String {
        self.current(|p| p.local_candidate.clone())
            .unwrap_or_default()
    }

    /// The mids of the current peer connection in m-line order (data channel last, if any).
    pub fn mids(&self) -> Vec<Mid> {
        self.current(|p| p.mids.clone()).unwrap_or_default()
    }

    /// Whether the current peer connection is connected (ICE + DTLS) right now.
    pub fn is_connected(&self) -> bool {
        self.current(|p| {
            let s = p.state.borrow();
            s.connected && s.ended.is_none()
        })
        .unwrap_or(false)
    }

    /// Subscribes to the client's events (from now on).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    async fn run_cmd<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PeerCtx) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        let cmd = self.current(|p| p.cmd.clone())?;
        let (tx, rx) = oneshot::channel();
        cmd.send(Cmd::Run(Box::new(move |ctx| {
            let _ = tx.send(f(ctx));
        })))
        .map_err(|_| ClientError::new("the client's IO loop has ended"))?;
        rx.await
            .map_err(|_| ClientError::new("the client's IO loop ended before running the command"))
    }

    /// Runs `f` on the current peer's `Rtc` inside its IO task (use it to write media, read
    /// stats, ...). The loop drains `poll_output` right after.
    pub async fn with_rtc<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Rtc) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        self.run_cmd(move |ctx| f(&mut ctx.rtc)).await
    }

    /// Sends a data-channel message (text or binary).
    pub async fn send_data(&self, binary: bool, data: Vec<u8>) -> Result<(), ClientError> {
        self.run_cmd(move |ctx| {
            let id = ctx
                .open_channel
                .ok_or_else(|| "the data channel is not open".to_string())?;
            let mut chan = ctx
                .rtc
                .channel(id)
                .ok_or_else(|| "the data channel is not available".to_string())?;
            match chan.write(binary, &data) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    Err("the data channel did not accept the message (buffer full)".into())
                }
                Err(e) => Err(format!("data channel write failed: {e}")),
            }
        })
        .await?
        .map_err(ClientError::from)
    }

    /// Sends a data-channel text message.
    pub async fn send_text(&self, text: &str) -> Result<(), ClientError> {
        self.send_data(false, text.as_bytes().to_vec()).await
    }

    /// Sends `value` serialized as a data-channel text message.
    pub async fn send_json(&self, value: &Value) -> Result<(), ClientError> {
        self.send_text(&value.to_string()).await
    }

    /// Sends a `trackStatus` signalling message like the JS client.
    pub async fn send_track_status(
        &self,
        receiver_index: u32,
        enabled: bool,
    ) -> Result<(), ClientError> {
        self.send_json(&json!({
            "type": "signalling",
            "message": {"type": "trackStatus", "receiver_index": receiver_index, "enabled": enabled},
        }))
        .await
    }

    /// The next data-channel text message received (from any peer connection of this client).
    pub async fn recv_text(&self, timeout: Duration) -> Result<String, ClientError> {
        let mut rx = self.shared.texts_rx.lock().await;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(text)) => Ok(text),
            Ok(None) => Err("the text queue is closed".into()),
            Err(_) => Err(format!(
                "timed out after {timeout:?} waiting for a data-channel text message"
            )
            .into()),
        }
    }

    /// The next received text message that parses as JSON and satisfies `pred` (others are
    /// skipped).
    pub async fn recv_json_matching(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let text = self.recv_text(left).await.map_err(|e| {
                ClientError::new(format!("no matching JSON message: {}", e.message))
            })?;
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if pred(&v) {
                    return Ok(v);
                }
            }
        }
    }

    /// Drops every text message received so far.
    pub async fn clear_texts(&self) {
        let mut rx = self.shared.texts_rx.lock().await;
        while rx.try_recv().is_ok() {}
    }

    /// Re-offers to the same URL with the current pc_id.
    ///
    /// * `restart_pc == false`: the same `Rtc` makes a re-offer that keeps its ICE credentials,
    ///   DTLS fingerprint and mids, like a browser's `createOffer` on an existing PC (str0m only
    ///   emits re-offers for changes, so an ICE restart change is used to produce the offer and
    ///   its new credentials are replaced by the current ones in the text; the answer's
    ///   credentials must then be unchanged). POST `{.., pc_id, restart_pc: false}`.
    /// * `restart_pc == true`: a brand-new `Rtc` and socket with the same shape, POSTed with
    ///   `restart_pc: true` and the old pc_id; after the answer the old `Rtc` is closed (DTLS
    ///   close_notify), like the JS client's `attemptReconnection(true)`.
    pub async fn renegotiate(&self, restart_pc: bool) -> Result<(), ClientError> {
        let _guard = self.shared.negotiation.lock().await;
        if restart_pc {
            let old = self.pc_id();
            return self.connect_new_peer(Some(old)).await;
        }
        self.reoffer_same_rtc(false).await
    }

    /// Like `renegotiate(false)`, but a real ICE restart: new ICE credentials in the offer, and
    /// the connection re-checks (use `wait_connected` afterwards).
    pub async fn renegotiate_ice_restart(&self) -> Result<(), ClientError> {
        let _guard = self.shared.negotiation.lock().await;
        self.reoffer_same_rtc(true).await
    }

    async fn reoffer_same_rtc(&self, ice_restart: bool) -> Result<(), ClientError> {
        let sh = &self.shared;
        let (offer_sdp, pending) = self
            .run_cmd(move |ctx| -> Result<(String, SdpPendingOffer), String> {
                let current = ctx.rtc.direct_api().local_ice_credentials();
                let mut api = ctx.rtc.sdp_api();
                let new = api.ice_restart(true);
                let (offer, pending): (SdpOffer, SdpPendingOffer) = api
                    .apply()
                    .ok_or("str0m produced no re-offer for an ICE restart change")?;
                let mut sdp = offer.to_sdp_string();
                if !ice_restart {
                    sdp = sdp
                        .replace(&new.ufrag, &current.ufrag)
                        .replace(&new.pass, &current.pass);
                }
                ctx.reoffers += 1;
                Ok((bump_sdp_version(&sdp, 2 + ctx.reoffers), pending))
            })
            .await??;

        let previous_answer = self.answer_sdp();
        let pc_id = self.pc_id();
        let body = offer_body(&sh.opts, &offer_sdp, Some(&pc_id), false, true);
        let answer = post_offer(&sh.http, &sh.offer_url, &body).await?;
        if !ice_restart && sdp_ice_ufrag(&answer.sdp) != sdp_ice_ufrag(&previous_answer) {
            return Err(format!(
                "the answer to a re-offer without ICE restart changed the server's ICE \
                 credentials (previous ufrag {:?}, new {:?})",
                sdp_ice_ufrag(&previous_answer),
                sdp_ice_ufrag(&answer.sdp)
            )
            .into());
        }
        let sdp_answer = parse_answer(&answer.sdp)?;
        let answer_text = answer.sdp.clone();
        self.run_cmd(move |ctx| ctx.rtc.sdp_api().accept_answer(pending, sdp_answer))
            .await?
            .map_err(|e| format!("applying the re-offer's answer: {e}\n{answer_text}"))?;

        let mut s = lock(&sh.session);
        if answer.pc_id.is_some() {
            s.pc_id = answer.pc_id;
        }
        s.answer_sdp = answer.sdp;
        s.answer_json = answer.json;
        s.offer_sdp = offer_sdp;
        Ok(())
    }

    /// A raw PATCH of `body` to the offer URL. Panics if the request cannot be sent at all (use
    /// `try_patch` to get an error instead).
    pub async fn patch(&self, body: Value) -> reqwest::Response {
        match self.try_patch(body).await {
            Ok(resp) => resp,
            Err(e) => panic!("{e}"),
        }
    }

    /// A raw PATCH of `body` to the offer URL.
    pub async fn try_patch(&self, body: Value) -> Result<reqwest::Response, ClientError> {
        send_patch(&self.shared.http, &self.shared.offer_url, &body).await
    }

    /// A raw POST of `body` to the offer URL, sharing this client's HTTP client.
    pub async fn post_raw(&self, body: Value) -> Result<reqwest::Response, ClientError> {
        let url = &self.shared.offer_url;
        self.shared
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| ClientError::new(format!("POST {url}: {e}")))
    }

    /// Clean close, like `pc.close()`: str0m `close()` (RTCP BYE, SCTP shutdown, DTLS
    /// close_notify), drained to the socket, then the loop stops.
    pub async fn close(self) {
        let peer = lock(&self.shared.peer).take();
        if let Some(peer) = peer {
            close_peer(peer, true).await;
        }
    }

    /// Stops everything without sending anything more (a killed tab): the IO task is aborted
    /// and its socket dropped.
    pub fn vanish(self) {
        if let Some(peer) = lock(&self.shared.peer).take() {
            peer.task.abort();
        }
    }
}

impl TestClient {
    /// Another handle to the same client (for a sender task). The IO loop stops
    /// when the last handle is dropped.
    pub fn clone_handle(&self) -> TestClient {
        TestClient {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        if Arc::strong_count(&self.shared) > 1 {
            return;
        }
        if let Some(peer) = lock(&self.shared.peer).take() {
            peer.task.abort();
        }
    }
}

enum Waited {
    Done(PeerState),
    TimedOut(PeerState),
    Gone,
}

async fn watch_until(
    rx: &mut watch::Receiver<PeerState>,
    timeout: Duration,
    pred: impl FnMut(&PeerState) -> bool,
) -> Waited {
    let res = tokio::time::timeout(timeout, async {
        rx.wait_for(pred).await.map(|s| s.clone())
    })
    .await;
    match res {
        Ok(Ok(s)) => Waited::Done(s),
        Ok(Err(_)) => Waited::Gone,
        Err(_) => Waited::TimedOut(rx.borrow().clone()),
    }
}

/// Closes a replaced peer silently (its events are no longer published).
async fn retire(peer: PeerHandle) {
    close_peer(peer, false).await;
}

async fn close_peer(peer: PeerHandle, publish: bool) {
    let (tx, rx) = oneshot::channel();
    if peer.cmd.send(Cmd::Close { publish, done: tx }).is_ok() {
        let _ = tokio::time::timeout(CLOSE_DRAIN + Duration::from_secs(1), rx).await;
    }
    peer.task.abort();
}

/// Updates the published state with `f`, notifying waiters only on change.
fn set_state(state: &watch::Sender<PeerState>, f: impl FnOnce(&mut PeerState)) {
    state.send_if_modified(|s| {
        let before = s.clone();
        f(s);
        before != *s
    });
}

/// The classic str0m IO loop for one peer connection.
async fn run_peer(
    mut ctx: PeerCtx,
    socket: UdpSocket,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    state: watch::Sender<PeerState>,
    events: broadcast::Sender<ClientEvent>,
    texts: mpsc::UnboundedSender<String>,
    send_pings: bool,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            set_state(&state, |s| s.ended = Some(format!("socket address: {e}")));
            return;
        }
    };
    let mut buf = vec![0u8; 65536];
    let mut ping: Option<tokio::time::Interval> = None;
    let mut close_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut close_deadline: Option<tokio::time::Instant> = None;

    let reason = loop {
        // Drain everything str0m wants to do until it asks to be woken at a deadline.
        let deadline = match drain(&mut ctx, &socket, &state, &events, &texts).await {
            Ok(t) => t,
            Err(e) => break e,
        };
        if !ctx.rtc.is_alive() {
            break if close_deadline.is_some() {
                "closed locally".to_string()
            } else {
                "rtc no longer alive".to_string()
            };
        }
        let connected = ctx.rtc.is_connected();
        set_state(&state, |s| s.connected = connected);
        if send_pings && ping.is_none() && ctx.open_channel.is_some() {
            let period = Duration::from_secs(1);
            ping = Some(tokio::time::interval_at(
                tokio::time::Instant::now() + period,
                period,
            ));
        }

        let now = tokio::time::Instant::now();
        if let Some(d) = close_deadline {
            if now >= d {
                break "closed locally (drain deadline)".to_string();
            }
        }
        let mut wake = tokio::time::Instant::from_std(deadline).min(now + MAX_SLEEP);
        if let Some(d) = close_deadline {
            wake = wake.min(d);
        }

        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if let Err(e) = ctx.rtc.handle_input(Input::Timeout(Instant::now())) {
                    tracing::debug!("test client: handle timeout: {e}");
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    let now = Instant::now();
                    match Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                        Ok(receive) => {
                            if let Err(e) = ctx.rtc.handle_input(Input::Receive(now, receive)) {
                                tracing::debug!("test client: handle datagram from {source}: {e}");
                            }
                        }
                        Err(e) => tracing::debug!("test client: unparsable datagram from {source}: {e}"),
                    }
                }
                Err(e) => tracing::debug!("test client: recv_from: {e}"),
            },
            cmd = cmd_rx.recv() => match cmd {
                Some(Cmd::Run(f)) => f(&mut ctx),
                Some(Cmd::Close { publish, done }) => {
                    ctx.publish = ctx.publish && publish;
                    close_waiters.push(done);
                    if close_deadline.is_none() {
                        if let Err(e) = ctx.rtc.close() {
                            tracing::debug!("test client: rtc.close(): {e}");
                            ctx.rtc.disconnect();
                        }
                        close_deadline = Some(tokio::time::Instant::now() + CLOSE_DRAIN);
                    }
                }
                None => break "client handle dropped".to_string(),
            },
            _ = async {
                match ping.as_mut() {
                    Some(p) => { p.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if let Some(id) = ctx.open_channel {
                    if let Some(mut chan) = ctx.rtc.channel(id) {
                        let msg = format!("ping: {}", unix_ms());
                        if let Err(e) = chan.write(false, msg.as_bytes()) {
                            tracing::debug!("test client: ping write: {e}");
                        }
                    }
                }
            }
        }
    };

    set_state(&state, |s| {
        s.connected = false;
        s.channel_open = false;
        s.ended = Some(reason.clone());
    });
    if ctx.publish {
        let _ = events.send(ClientEvent::LoopEnded(reason));
    }
    for w in close_waiters {
        let _ = w.send(());
    }
}

/// Drains `poll_output`: transmits go to the socket, events are published. Returns the next
/// timeout, or an error text if str0m failed.
async fn drain(
    ctx: &mut PeerCtx,
    socket: &UdpSocket,
    state: &watch::Sender<PeerState>,
    events: &broadcast::Sender<ClientEvent>,
    texts: &mpsc::UnboundedSender<String>,
) -> Result<Instant, String> {
    loop {
        let output = match ctx.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => return Err(format!("poll_output failed: {e}")),
        };
        match output {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => {
                if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                    tracing::debug!("test client: send_to {}: {e}", t.destination);
                }
            }
            Output::Event(event) => handle_event(ctx, event, state, events, texts),
        }
    }
}

fn handle_event(
    ctx: &mut PeerCtx,
    event: Event,
    state: &watch::Sender<PeerState>,
    events: &broadcast::Sender<ClientEvent>,
    texts: &mpsc::UnboundedSender<String>,
) {
    let publish = ctx.publish;
    let emit = |e: ClientEvent| {
        if publish {
            let _ = events.send(e);
        }
    };
    match event {
        Event::Connected => {
            set_state(state, |s| {
                s.connected_at.get_or_insert_with(Instant::now);
                s.connected = true;
                s.ever_connected = true;
            });
            emit(ClientEvent::Connected);
        }
        Event::IceConnectionStateChange(ice) => {
            let name = ice_state_name(ice);
            set_state(state, |s| s.ice = name.to_string());
            emit(ClientEvent::IceState(name.to_string()));
        }
        Event::ChannelOpen(id, label) => {
            if ctx.open_channel.is_none() || Some(id) == ctx.own_channel {
                ctx.open_channel = Some(id);
            }
            set_state(state, |s| s.channel_open = true);
            emit(ClientEvent::ChannelOpen(label));
        }
        Event::ChannelClose(id) => {
            if ctx.open_channel == Some(id) {
                ctx.open_channel = None;
                set_state(state, |s| s.channel_open = false);
            }
            emit(ClientEvent::ChannelClose);
        }
        Event::ChannelData(d) => {
            if d.binary {
                emit(ClientEvent::ChannelBinary(d.data));
            } else {
                let text = String::from_utf8_lossy(&d.data).into_owned();
                if publish {
                    let _ = texts.send(text.clone());
                }
                emit(ClientEvent::ChannelText(text));
            }
        }
        Event::MediaAdded(m) => emit(ClientEvent::MediaAdded {
            mid: m.mid,
            kind: m.kind,
            direction: m.direction,
        }),
        Event::MediaData(m) => emit(ClientEvent::MediaData {
            mid: m.mid,
            pt: m.pt,
            time: m.time,
            data: m.data,
            contiguous: m.contiguous,
        }),
        Event::KeyframeRequest(k) => emit(ClientEvent::KeyframeRequest { mid: k.mid }),
        Event::Closed => {
            set_state(state, |s| s.remote_closed = true);
            emit(ClientEvent::Closed);
        }
        _ => {}
    }
}

impl TestClient {
    /// Cuts this client's network path for `duration`, like a tunnel or Wi-Fi that drops out:
    /// every datagram the client would send is lost, every datagram that arrives is lost, and
    /// the client's own timers keep running (its ICE checks, retransmissions and pings are made
    /// and thrown away). Then the path comes back and the same peer connection carries on.
    /// Resolves when the path is back; dropping the future before then leaves it cut for good
    /// (the peer connection is gone without a word, as when a device dies).
    ///
    /// How: the IO loop's `Rtc` is swapped for an idle stand-in (whose ICE credentials match
    /// nothing, so arrivals are refused and dropped, and which has nowhere to send), while the
    /// real `Rtc` is driven here with its output discarded. Commands sent meanwhile reach the
    /// stand-in: `with_rtc` writes go nowhere, `send_text` fails (no open channel there); events
    /// of the real `Rtc` during the cut are not published.
    pub async fn cut_path(&self, duration: Duration) -> Result<(), ClientError> {
        let stand_in = Rtc::builder().build(Instant::now());
        let mut rtc = self
            .run_cmd(move |ctx| std::mem::replace(&mut ctx.rtc, stand_in))
            .await?;
        let until = tokio::time::Instant::now() + duration;
        loop {
            let next = loop {
                match rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(_)) | Ok(Output::Event(_)) => {}
                    Err(e) => return Err(format!("poll_output failed during the cut: {e}").into()),
                }
            };
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            let wake = tokio::time::Instant::from_std(next)
                .min(until)
                .min(now + MAX_SLEEP);
            tokio::time::sleep_until(wake).await;
            if let Err(e) = rtc.handle_input(Input::Timeout(Instant::now())) {
                tracing::debug!("test client: handle timeout during the cut: {e}");
            }
        }
        self.run_cmd(move |ctx| ctx.rtc = rtc).await
    }
}
