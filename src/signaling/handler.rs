//! [`SmallWebRtcRequestHandler`]: offers in, answers out, sessions by `pc_id`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::esp32::munge_answer_for_esp32;
use super::ice_servers::IceServer;
use super::types::{RequestError, SmallWebRtcAnswer, SmallWebRtcPatchRequest, SmallWebRtcRequest};
use crate::metrics;
use crate::peer::{ConnectionState, Endpoint, PeerError, SmallWebRtcConnection};

/// How many sessions one handler serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionMode {
    /// One session at a time (a Pipecat Cloud-style container serving one user).
    Single,
    /// Any number of sessions (the default).
    #[default]
    Multiple,
}

/// Settings of a [`SmallWebRtcRequestHandler`].
#[derive(Debug, Clone, Default)]
pub struct HandlerConfig {
    /// ICE servers for new sessions (STUN is used for server-reflexive candidates).
    pub ice_servers: Vec<IceServer>,
    /// Munge answers for ESP32 clients (one fingerprint, host candidates on `host` only).
    pub esp32_mode: bool,
    /// The host whose candidates ESP32 answers keep.
    pub host: Option<String>,
    /// Single or multiple sessions.
    pub connection_mode: ConnectionMode,
    /// Refuse new sessions beyond this many with 503 (`None`: no limit).
    pub max_sessions: Option<usize>,
}

struct Inner {
    endpoint: Endpoint,
    ice_servers: RwLock<Vec<IceServer>>,
    esp32_mode: bool,
    host: Option<String>,
    connection_mode: ConnectionMode,
    max_sessions: Option<usize>,
    /// Every `pc_id` a live session has had, pointing at the session.
    by_pc_id: Mutex<HashMap<String, SmallWebRtcConnection>>,
    live: AtomicUsize,
    closing: AtomicBool,
}

/// Turns offers into sessions and routes re-offers and trickled candidates to them.
///
/// HTTP-agnostic: [`crate::http`] is a thin layer over it, and a user can call it
/// from any web framework.
///
/// ```no_run
/// # async fn demo(handler: smallwebrtc::SmallWebRtcRequestHandler, offer_sdp: String) {
/// use smallwebrtc::SmallWebRtcRequest;
///
/// let request = SmallWebRtcRequest {
///     sdp: offer_sdp,
///     sdp_type: "offer".into(),
///     pc_id: None,
///     restart_pc: None,
///     request_data: None,
/// };
/// let answer = handler
///     .handle_web_request(request, |connection| {
///         tokio::spawn(async move { connection.connect() /* run a bot here */ });
///     })
///     .await;
/// # }
/// ```
#[derive(Clone)]
pub struct SmallWebRtcRequestHandler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SmallWebRtcRequestHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmallWebRtcRequestHandler")
            .field("connection_mode", &self.inner.connection_mode)
            .field("sessions", &self.session_count())
            .finish()
    }
}

impl SmallWebRtcRequestHandler {
    /// A handler whose sessions use `endpoint`.
    pub fn new(endpoint: Endpoint, config: HandlerConfig) -> Self {
        SmallWebRtcRequestHandler {
            inner: Arc::new(Inner {
                endpoint,
                ice_servers: RwLock::new(config.ice_servers),
                esp32_mode: config.esp32_mode,
                host: config.host,
                connection_mode: config.connection_mode,
                max_sessions: config.max_sessions,
                by_pc_id: Mutex::new(HashMap::new()),
                live: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
            }),
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, SmallWebRtcConnection>> {
        self.inner
            .by_pc_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many sessions are live.
    pub fn session_count(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// The session a `pc_id` (current or earlier) belongs to.
    pub fn connection(&self, pc_id: &str) -> Option<SmallWebRtcConnection> {
        self.sessions().get(pc_id).cloned()
    }

    /// The ICE servers new sessions get.
    pub fn ice_servers(&self) -> Vec<IceServer> {
        self.inner
            .ice_servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the ICE servers for sessions created from now on.
    pub fn update_ice_servers(&self, ice_servers: Vec<IceServer>) {
        *self
            .inner
            .ice_servers
            .write()
            .unwrap_or_else(|e| e.into_inner()) = ice_servers;
    }

    /// Answers an offer.
    ///
    /// - A known `pc_id` renegotiates that session (with `restart_pc`, on a new
    ///   peer connection and a new `pc_id`); `on_new_connection` is not called.
    /// - No `pc_id` creates a session and calls `on_new_connection` once with it
    ///   (that is where a bot starts).
    /// - An unknown `pc_id` with `restart_pc: true` also creates a session: the
    ///   client wants a fresh peer connection anyway (for example after a server
    ///   restart). An unknown `pc_id` without it is a 404, since the client's
    ///   existing peer connection cannot continue with a session it never had.
    pub async fn handle_web_request<F>(
        &self,
        request: SmallWebRtcRequest,
        on_new_connection: F,
    ) -> Result<SmallWebRtcAnswer, RequestError>
    where
        F: FnOnce(SmallWebRtcConnection),
    {
        let renegotiation = request
            .pc_id
            .as_deref()
            .is_some_and(|id| self.connection(id).is_some());
        let result = self.answer(request, on_new_connection).await;
        match &result {
            Ok(_) if renegotiation => metrics::OFFERS_RENEGOTIATED.inc(),
            Ok(_) => metrics::OFFERS_NEW.inc(),
            Err(RequestError::BadRequest(_)) => metrics::OFFERS_BAD.inc(),
            Err(RequestError::NotFound(_)) => metrics::OFFERS_NOT_FOUND.inc(),
            Err(RequestError::Unavailable(_)) => metrics::OFFERS_UNAVAILABLE.inc(),
            Err(RequestError::Internal(_)) => {}
        }
        result
    }

    /// Sessions by state, for `/metrics`.
    pub fn state_counts(&self) -> metrics::SessionCounts {
        let sessions = self.sessions();
        let mut counts = metrics::SessionCounts::default();
        let mut seen: Vec<&SmallWebRtcConnection> = Vec::new();
        for c in sessions.values() {
            if seen.iter().any(|s| s.same_session(c)) {
                continue;
            }
            seen.push(c);
            match c.state() {
                ConnectionState::Connected => counts.connected += 1,
                ConnectionState::New | ConnectionState::Connecting => counts.connecting += 1,
                _ => {}
            }
        }
        counts
    }

    async fn answer<F>(
        &self,
        request: SmallWebRtcRequest,
        on_new_connection: F,
    ) -> Result<SmallWebRtcAnswer, RequestError>
    where
        F: FnOnce(SmallWebRtcConnection),
    {
        self.check_single_connection_constraints(request.pc_id.as_deref())?;
        let restart_pc = request.restart_pc.unwrap_or(false);
        let existing = request.pc_id.as_deref().and_then(|id| self.connection(id));
        let answer = match existing {
            Some(connection) => {
                let answer = connection
                    .renegotiate(&request.sdp, &request.sdp_type, restart_pc)
                    .await
                    .map_err(peer_error)?;
                if !connection.is_closed() {
                    self.sessions()
                        .insert(answer.pc_id.clone(), connection.clone());
                }
                answer
            }
            None if request.pc_id.is_some() && !restart_pc => {
                return Err(RequestError::peer_not_found());
            }
            None => {
                if self.inner.closing.load(Ordering::Relaxed) {
                    return Err(RequestError::Unavailable(
                        "Server is shutting down; retry on another server".into(),
                    ));
                }
                if let Some(max) = self.inner.max_sessions {
                    if self.session_count() >= max {
                        return Err(RequestError::Unavailable(format!(
                            "Server is at capacity ({max} sessions); retry later"
                        )));
                    }
                }
                let connection = SmallWebRtcConnection::initialize(
                    &self.inner.endpoint,
                    self.ice_servers(),
                    &request.sdp,
                    &request.sdp_type,
                )
                .await
                .map_err(peer_error)?;
                let answer = connection.get_answer();
                self.track(connection.clone());
                on_new_connection(connection);
                answer
            }
        };
        Ok(self.munge(answer))
    }

    /// Adds trickled candidates to the session that owns `pc_id` (any `pc_id` it
    /// has had); an empty candidate marks end-of-candidates.
    pub async fn handle_patch_request(
        &self,
        request: SmallWebRtcPatchRequest,
    ) -> Result<(), RequestError> {
        let connection = self
            .connection(&request.pc_id)
            .ok_or_else(RequestError::peer_not_found)?;
        for candidate in request.candidates {
            connection
                .add_ice_candidate(candidate)
                .map_err(|_| RequestError::peer_not_found())?;
        }
        Ok(())
    }

    /// Refuses new sessions from now on (503), disconnects every session (each
    /// client gets `peerLeft`) and forgets them.
    pub async fn close(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        let sessions: Vec<SmallWebRtcConnection> = {
            let mut map = self.sessions();
            let mut unique: Vec<SmallWebRtcConnection> = Vec::new();
            for (_, c) in map.drain() {
                if !unique.iter().any(|u| u.same_session(&c)) {
                    unique.push(c);
                }
            }
            unique
        };
        futures_util::future::join_all(sessions.iter().map(|c| c.disconnect())).await;
    }

    fn check_single_connection_constraints(&self, pc_id: Option<&str>) -> Result<(), RequestError> {
        if self.inner.connection_mode != ConnectionMode::Single {
            return Ok(());
        }
        let Some(existing) = self.sessions().values().next().cloned() else {
            return Ok(());
        };
        match pc_id {
            None => Err(RequestError::BadRequest(
                "Cannot create new connection with existing connection active".into(),
            )),
            Some(id) if id != existing.pc_id() => Err(RequestError::BadRequest(
                "PC ID mismatch with existing connection".into(),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Registers a new session and removes all its `pc_id`s when it closes.
    fn track(&self, connection: SmallWebRtcConnection) {
        self.inner.live.fetch_add(1, Ordering::Relaxed);
        self.sessions()
            .insert(connection.pc_id(), connection.clone());
        let handler = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            connection.closed().await;
            if let Some(inner) = handler.upgrade() {
                inner
                    .by_pc_id
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|_, c| !c.same_session(&connection));
                inner.live.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    fn munge(&self, mut answer: SmallWebRtcAnswer) -> SmallWebRtcAnswer {
        if self.inner.esp32_mode {
            answer.sdp = munge_answer_for_esp32(&answer.sdp, self.inner.host.as_deref());
        }
        answer
    }
}

fn peer_error(e: PeerError) -> RequestError {
    match e {
        PeerError::InvalidOffer(m) | PeerError::InvalidCandidate(m) => RequestError::BadRequest(m),
        PeerError::Closed => RequestError::peer_not_found(),
        PeerError::Unavailable(m) => RequestError::Unavailable(m),
    }
}
