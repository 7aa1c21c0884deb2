//! HTTP routes: a thin axum layer over [`SmallWebRtcRequestHandler`].
//!
//! [`router`] gives the routes Pipecat's development runner serves, ready to
//! nest in a user's own axum app:
//!
//! | route | does |
//! |---|---|
//! | `POST /api/offer` | offer → answer (a new session starts its bot) |
//! | `PATCH /api/offer` | trickled ICE candidates |
//! | `POST /start` | `{"sessionId", "iceConfig"?}`; the bot starts with the first offer |
//! | `POST`/`PATCH /sessions/{id}/api/offer` | the same, for a `/start` session |
//! | `GET /status` | `{"status":"ready","transports":["webrtc"]}` |
//! | `GET /metrics` | Prometheus counters: sessions, offers, UDP traffic, audio timing |
//! | `GET /` | redirect to `/client/` |
//!
//! Every error is JSON `{"detail": "..."}` with a status that says what kind of
//! problem it is: 400 bad offer or body, 404 unknown session or `pc_id`, 413 body
//! over 1 MiB, 422 body of the wrong shape, 503 server full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

mod client_page;
pub mod cluster;
pub mod tls;

use self::cluster::{Cluster, FORWARDED_HEADER};
use crate::bots::{Bot, BotArgs};
use crate::signaling::ice_servers::{default_stun_servers, IceServer};
use crate::{RequestError, SmallWebRtcPatchRequest, SmallWebRtcRequest, SmallWebRtcRequestHandler};

/// The largest request body accepted (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An error answered as `{"detail": message}` with `status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub detail: String,
}

impl ApiError {
    fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "detail": self.detail }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("2"));
        }
        response
    }
}

/// A JSON body parsed with errors that name the problem. Unlike axum's `Json`
/// it ignores the content type (ESP32 clients do not always send one).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
    } else {
        ApiError::new(
            e.status(),
            format!("cannot read request body: {}", e.body_text()),
        )
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid request body: {e}"),
            ),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {e}"),
            ),
        }
    })
}

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    handler: SmallWebRtcRequestHandler,
    bot: Arc<dyn Bot>,
    /// `/start` sessions: id → the body the bot will get.
    start_sessions: Arc<Mutex<HashMap<String, Value>>>,
    /// Bots still running, so a shutdown can wait for them.
    bots_running: Arc<tokio::sync::watch::Sender<usize>>,
    cluster: Cluster,
}

impl AppState {
    /// Routes over `handler`, starting `bot` for each new session.
    pub fn new(handler: SmallWebRtcRequestHandler, bot: Arc<dyn Bot>) -> Self {
        AppState {
            handler,
            bot,
            start_sessions: Arc::new(Mutex::new(HashMap::new())),
            bots_running: Arc::new(tokio::sync::watch::channel(0).0),
            cluster: Cluster::default(),
        }
    }

    /// The same state as one node of several: ids get the node's prefix, and
    /// requests for other nodes' ids are forwarded to them.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = cluster;
        self
    }

    /// Where a request for `id` must go instead of here, unless it was already
    /// forwarded once (then it is answered here, whatever the answer).
    fn elsewhere(&self, id: Option<&str>, headers: &HeaderMap) -> Option<String> {
        if headers.contains_key(FORWARDED_HEADER) {
            return None;
        }
        id.and_then(|id| self.cluster.owner_of(id))
            .map(str::to_string)
    }

    /// How many bots are running.
    pub fn bots_running(&self) -> usize {
        *self.bots_running.borrow()
    }

    /// Resolves when no bot is running.
    pub async fn bots_finished(&self) {
        let mut rx = self.bots_running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The request handler.
    pub fn handler(&self) -> &SmallWebRtcRequestHandler {
        &self.handler
    }

    fn start_session_body(&self, id: &str) -> Option<Value> {
        self.start_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Starts the bot for a new session; a `/start` session is forgotten when its
    /// bot ends, so later offers to it get 404, as in the original.
    fn spawn_bot(&self, args: BotArgs) {
        let bot = self.bot.clone();
        let sessions = self.start_sessions.clone();
        let running = self.bots_running.clone();
        running.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            let connection = args.connection.clone();
            let session_id = args.session_id.clone();
            // Counted down even if the bot panics: the guard drops either way.
            let _running = RunningBot(running);
            bot.run(args).await;
            connection.disconnect().await;
            if let Some(id) = session_id {
                sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
        });
    }

    async fn offer(
        &self,
        request: SmallWebRtcRequest,
        session_id: Option<String>,
        start_body: Option<Value>,
    ) -> Result<Response, ApiError> {
        let body = request.request_data.clone().or(start_body);
        let answer = self
            .handler
            .handle_web_request(request, |connection| {
                self.spawn_bot(BotArgs {
                    connection,
                    body,
                    session_id,
                });
            })
            .await?;
        Ok(
            Json(json!({"sdp": answer.sdp, "type": answer.sdp_type, "pc_id": answer.pc_id}))
                .into_response(),
        )
    }
}

struct RunningBot(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for RunningBot {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Settings of the routes.
#[derive(Debug, Clone, Default)]
pub struct RouterConfig {
    /// Origins allowed by CORS; empty allows any (the original's default).
    pub allowed_origins: Vec<String>,
}

/// The SmallWebRTC routes over `state`, with CORS and the body limit.
///
/// ```no_run
/// # async fn demo(state: smallwebrtc::http::AppState) {
/// use smallwebrtc::http::{router, RouterConfig};
///
/// let app = axum::Router::new().nest("/bot", router(state, &RouterConfig::default()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7860").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// ```
pub fn router(state: AppState, config: &RouterConfig) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/client/") }))
        .route("/client", get(|| async { Redirect::permanent("/client/") }))
        .route("/client/", get(client_page::index))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/start", post(start))
        .route("/api/offer", post(offer).patch(patch))
        .route(
            "/sessions/{session_id}/api/offer",
            post(session_offer).patch(session_patch),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors(config))
        .with_state(state)
}

fn cors(config: &RouterConfig) -> CorsLayer {
    let origins =
        if config.allowed_origins.is_empty() || config.allowed_origins.iter().any(|o| o == "*") {
            // Reflect the origin rather than "*", so credentialed requests work too.
            AllowOrigin::mirror_request()
        } else {
            AllowOrigin::list(
                config
                    .allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_credentials(true)
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let text = crate::metrics::render(state.handler.state_counts(), state.bots_running());
    ([("content-type", "text/plain; version=0.0.4")], text)
}

async fn status() -> Json<Value> {
    Json(json!({"status": "ready", "transports": ["webrtc"]}))
}

#[derive(Deserialize)]
struct OfferQuery {
    session_id: Option<String>,
}

async fn offer(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(query): Query<OfferQuery>,
    JsonBody(request): JsonBody<SmallWebRtcRequest>,
) -> Result<Response, ApiError> {
    if let Some(owner) = state.elsewhere(request.pc_id.as_deref(), &headers) {
        return forward(&state, &owner, Method::POST, &uri, &request).await;
    }
    let start_body = query
        .session_id
        .as_deref()
        .and_then(|id| state.start_session_body(id));
    state.offer(request, query.session_id, start_body).await
}

async fn patch(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SmallWebRtcPatchRequest>,
) -> Result<Response, ApiError> {
    if let Some(owner) = state.elsewhere(Some(&request.pc_id), &headers) {
        return forward(&state, &owner, Method::PATCH, &uri, &request).await;
    }
    state.handler.handle_patch_request(request).await?;
    Ok(Json(json!({"status": "success"})).into_response())
}

async fn forward<T: serde::Serialize>(
    state: &AppState,
    owner: &str,
    method: Method,
    uri: &axum::http::Uri,
    body: &T,
) -> Result<Response, ApiError> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let body = serde_json::to_vec(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state.cluster.forward(owner, method, path, body).await
}

fn unknown_session() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Invalid or not-yet-ready session_id")
}

async fn session_offer(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(session_id): Path<String>,
    JsonBody(request): JsonBody<SmallWebRtcRequest>,
) -> Result<Response, ApiError> {
    if let Some(owner) = state.elsewhere(Some(&session_id), &headers) {
        return forward(&state, &owner, Method::POST, &uri, &request).await;
    }
    let body = state
        .start_session_body(&session_id)
        .ok_or_else(unknown_session)?;
    state.offer(request, Some(session_id), Some(body)).await
}

async fn session_patch(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(session_id): Path<String>,
    JsonBody(request): JsonBody<SmallWebRtcPatchRequest>,
) -> Result<Response, ApiError> {
    if let Some(owner) = state.elsewhere(Some(&session_id), &headers) {
        return forward(&state, &owner, Method::PATCH, &uri, &request).await;
    }
    if state.start_session_body(&session_id).is_none() {
        return Err(unknown_session());
    }
    state.handler.handle_patch_request(request).await?;
    Ok(Json(json!({"status": "success"})).into_response())
}

/// `POST /start`: the body need not be JSON (a parse failure reads as `{}`).
async fn start(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let request: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    let transport = match request.get("transport") {
        None | Some(Value::Null) => "webrtc".to_string(),
        Some(Value::String(t)) => t.clone(),
        Some(other) => other.to_string(),
    };
    if transport != "webrtc" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Transport '{transport}' is not allowed. Server is configured for 'webrtc' only (-t webrtc)."),
        ));
    }
    let session_id = format!("{}{}", state.cluster.id_prefix(), new_session_id());
    let session_body = request.get("body").cloned().unwrap_or_else(|| json!({}));
    state
        .start_sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(session_id.clone(), session_body);
    let mut response = serde_json::Map::new();
    response.insert("sessionId".into(), Value::String(session_id));
    let configured = state.handler.ice_servers();
    let ice_servers: Vec<IceServer> = if !configured.is_empty() {
        configured
    } else if truthy(request.get("enableDefaultIceServers")) {
        default_stun_servers()
    } else {
        Vec::new()
    };
    if !ice_servers.is_empty() {
        response.insert("iceConfig".into(), json!({ "iceServers": ice_servers }));
    }
    Ok(Json(Value::Object(response)))
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A random (version 4) UUID, as the original's `/start` returns.
fn new_session_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
