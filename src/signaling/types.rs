//! The JSON that crosses HTTP: offers, answers, trickled candidates and errors.
//!
//! Field names and shapes follow Pipecat's `SmallWebRTCRequest`,
//! `SmallWebRTCPatchRequest` and `IceCandidate` exactly, so the official clients
//! need no change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An SDP offer from a client: `POST /api/offer`.
///
/// Both spellings of the request data are accepted: `request_data` (what the
/// Python dataclass declares) and `requestData` (what the JS client sends).
///
/// ```
/// use smallwebrtc::SmallWebRtcRequest;
///
/// let req: SmallWebRtcRequest = serde_json::from_str(
///     r#"{"sdp":"v=0\r\n","type":"offer","pc_id":null,"requestData":{"user":"ada"}}"#,
/// ).unwrap();
/// assert_eq!(req.pc_id, None);
/// assert_eq!(req.request_data.unwrap()["user"], "ada");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmallWebRtcRequest {
    /// The offer's SDP text.
    pub sdp: String,
    /// The SDP type; always `"offer"` in practice.
    #[serde(rename = "type")]
    pub sdp_type: String,
    /// The connection this offer renegotiates; `None` starts a new session.
    #[serde(default)]
    pub pc_id: Option<String>,
    /// With a known `pc_id`: replace the peer connection (new `pc_id`), keep the session.
    #[serde(default)]
    pub restart_pc: Option<bool>,
    /// Arbitrary data handed to the bot.
    #[serde(default, alias = "requestData")]
    pub request_data: Option<Value>,
}

/// The answer to an offer: `{"sdp", "type": "answer", "pc_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmallWebRtcAnswer {
    /// The answer's SDP text, with every server candidate and `a=end-of-candidates`.
    pub sdp: String,
    /// Always `"answer"`.
    #[serde(rename = "type")]
    pub sdp_type: String,
    /// The id the client uses for later PATCHes and re-offers.
    pub pc_id: String,
}

/// Trickled ICE candidates from a client: `PATCH /api/offer`.
///
/// ```
/// use smallwebrtc::SmallWebRtcPatchRequest;
///
/// let patch: SmallWebRtcPatchRequest = serde_json::from_str(
///     r#"{"pc_id":"pc-1","candidates":[{"candidate":"","sdp_mid":"0","sdp_mline_index":0}]}"#,
/// ).unwrap();
/// assert!(patch.candidates[0].is_end_of_candidates());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmallWebRtcPatchRequest {
    /// Any `pc_id` the session has had.
    pub pc_id: String,
    /// The candidates, applied in order.
    #[serde(default)]
    pub candidates: Vec<IceCandidate>,
}

/// One trickled candidate, as the browser's `RTCIceCandidate` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// `candidate:...` text without `a=`; the empty string marks end-of-candidates.
    pub candidate: String,
    /// The media id the candidate belongs to.
    pub sdp_mid: String,
    /// The m-line index the candidate belongs to.
    #[serde(default)]
    pub sdp_mline_index: Option<u32>,
}

impl IceCandidate {
    /// True for the empty RFC 8840 end-of-candidates marker (Firefox sends one per m-line).
    pub fn is_end_of_candidates(&self) -> bool {
        self.candidate.trim().is_empty()
    }
}

/// Why a request was refused, and the HTTP status that says so.
///
/// The message is what a client sees as `{"detail": ...}`; the texts that the
/// Python original defines are kept word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// 400: the request can never succeed as sent.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the peer connection or session does not exist (any more).
    #[error("{0}")]
    NotFound(String),
    /// 503: the server is full or shutting down; worth retrying later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: something failed on our side.
    #[error("{0}")]
    Internal(String),
}

impl RequestError {
    /// The HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::NotFound(_) => 404,
            RequestError::Unavailable(_) => 503,
            RequestError::Internal(_) => 500,
        }
    }

    /// The 404 for a PATCH or re-offer whose `pc_id` is unknown.
    pub fn peer_not_found() -> Self {
        RequestError::NotFound("Peer connection not found".into())
    }
}
