//! The data-channel protocol between a SmallWebRTC client and the server.
//!
//! The client opens one data channel (the JS client labels it `"chat"`, the ESP32
//! client `"rtvi-ai"`) and three kinds of message share it:
//!
//! * **keep-alives**: the JS client sends the text `ping: <ms since the epoch>` every
//!   second while the channel is open;
//! * **transport signalling**: JSON objects shaped
//!   `{"type":"signalling","message":{"type":…}}`. The client sends `trackStatus`
//!   (see [`Incoming::TrackStatus`]); the server sends [`Signal::Renegotiate`] and
//!   [`Signal::PeerLeft`];
//! * **app messages**: every other JSON object, passed through untouched. In practice
//!   these are RTVI messages labelled `"rtvi-ai"`.
//!
//! Everything here is pure: [`parse_incoming`] classifies the bytes of one received
//! message, and [`Signal::to_json`] produces the text of one message to send.
//!
//! ```
//! use smallwebrtc::peer::protocol::{parse_incoming, Incoming, Signal, TrackSource};
//!
//! let text = br#"{"type":"signalling","message":{"type":"trackStatus","receiver_index":1,"enabled":false}}"#;
//! let message = parse_incoming(text, false)?;
//! assert_eq!(message, Incoming::TrackStatus { receiver_index: 1, enabled: false });
//! assert_eq!(TrackSource::from_receiver_index(1), Some(TrackSource::Camera));
//!
//! assert_eq!(parse_incoming(b"ping: 1718035200123", false)?, Incoming::Ping);
//! assert_eq!(
//!     Signal::PeerLeft.to_json(),
//!     r#"{"type":"signalling","message":{"type":"peerLeft"}}"#
//! );
//! # Ok::<(), smallwebrtc::peer::protocol::ProtocolError>(())
//! ```

use std::fmt;

use serde_json::{Map, Value};

/// The value of the outer `"type"` key that marks a transport signalling message.
const SIGNALLING: &str = "signalling";

/// The UTF-8 byte-order mark, tolerated at the start of binary messages.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One message received on the data channel, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A keep-alive: a text message starting with `ping` (the JS client sends
    /// `ping: <ms since the epoch>`). The rest of the text is not looked at.
    Ping,
    /// A `trackStatus` signalling message: the client turned one of its tracks on or off.
    ///
    /// `receiver_index` is the transceiver index (0 microphone, 1 camera, 2 screen);
    /// [`TrackSource::from_receiver_index`] maps it. Indexes above 2 are passed on
    /// rather than rejected, so the caller decides what to do with them.
    TrackStatus {
        /// The transceiver (m-line) index of the track.
        receiver_index: u32,
        /// Whether the client now sends media on that track.
        enabled: bool,
    },
    /// A signalling message this server does not handle (for example a client echoing
    /// `renegotiate`). Holds the inner `"type"` when it is a string, otherwise a short
    /// description of what was wrong with the inner message; meant for logging.
    UnknownSignalling(String),
    /// Any other JSON object: an app message (in practice RTVI), passed on unchanged.
    ///
    /// Key order, strings and integers are kept as received, so re-serializing it with
    /// `serde_json::to_string` gives back the client's compact text. Floating-point
    /// numbers keep their value but may be re-spelled (for example `1e5` becomes
    /// `100000.0`).
    ///
    /// Unlike the Python original, which drops objects without a `"type"` key with a
    /// logged error, such objects are app messages here: a user's app message need not
    /// have a type. An object whose `"type"` is `"signalling"` but whose `"message"` is
    /// missing or falsy (`null`, `{}`, `""`, `0`, `false`, `[]`) is also an app message,
    /// as in the original.
    App(Value),
}

/// Why a data-channel message could not be understood.
///
/// None of these is fatal to the session: the reference server logs them and keeps the
/// channel open.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The message is not valid UTF-8 (text messages, and binary messages that are not
    /// pings, must be UTF-8 JSON).
    #[error("data-channel message is not valid UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The message is UTF-8 but not JSON.
    #[error("data-channel message is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The message is JSON but not an object; holds what it is instead (`"an array"`,
    /// `"a string"`, `"a number"`, `"a boolean"` or `"null"`).
    #[error("data-channel message must be a JSON object, got {0}")]
    NotObject(&'static str),
    /// A `trackStatus` signalling message whose `receiver_index` is not an integer in
    /// `0..=u32::MAX`, or whose `enabled` is not a boolean.
    #[error("trackStatus needs an integer \"receiver_index\" and a boolean \"enabled\"")]
    BadTrackStatus,
}

/// Classifies one message received on the data channel.
///
/// `binary` says whether the message arrived as binary (rather than text). As in the
/// Python original, only **text** messages starting with `ping` are keep-alives; binary
/// messages are always parsed as JSON (a leading UTF-8 byte-order mark is skipped).
///
/// A JSON object whose `"type"` is `"signalling"` and whose `"message"` is truthy is
/// signalling: `trackStatus` becomes [`Incoming::TrackStatus`], anything else
/// [`Incoming::UnknownSignalling`]. Every other JSON object is [`Incoming::App`].
///
/// # Errors
///
/// [`ProtocolError`] when the message is not UTF-8, not JSON, not a JSON object, or a
/// `trackStatus` with bad fields.
///
/// # Examples
///
/// ```
/// use smallwebrtc::peer::protocol::{parse_incoming, Incoming, ProtocolError};
///
/// let app = parse_incoming(br#"{"label":"rtvi-ai","type":"client-ready"}"#, false)?;
/// let Incoming::App(value) = app else { panic!("not an app message") };
/// assert_eq!(value["type"], "client-ready");
///
/// let error = parse_incoming(b"[1, 2]", false).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "data-channel message must be a JSON object, got an array"
/// );
/// # Ok::<(), ProtocolError>(())
/// ```
pub fn parse_incoming(data: &[u8], binary: bool) -> Result<Incoming, ProtocolError> {
    if !binary && data.starts_with(b"ping") {
        return Ok(Incoming::Ping);
    }
    let data = if binary {
        data.strip_prefix(UTF8_BOM).unwrap_or(data)
    } else {
        data
    };
    let text = std::str::from_utf8(data).map_err(ProtocolError::NotUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(ProtocolError::NotJson)?;
    classify(value)
}

/// Sorts a parsed JSON value into signalling or app message.
fn classify(value: Value) -> Result<Incoming, ProtocolError> {
    let Value::Object(object) = &value else {
        return Err(ProtocolError::NotObject(kind(&value)));
    };
    if object.get("type").and_then(Value::as_str) == Some(SIGNALLING) {
        if let Some(inner) = object.get("message").filter(|inner| is_truthy(inner)) {
            return signalling(inner);
        }
    }
    Ok(Incoming::App(value))
}

/// Interprets the inner `"message"` of a signalling message.
fn signalling(inner: &Value) -> Result<Incoming, ProtocolError> {
    let Value::Object(inner) = inner else {
        return Ok(Incoming::UnknownSignalling(format!(
            "a signalling \"message\" that is {}, not an object",
            kind(inner)
        )));
    };
    match inner.get("type") {
        Some(Value::String(kind)) if kind == "trackStatus" => track_status(inner),
        Some(Value::String(kind)) => Ok(Incoming::UnknownSignalling(kind.clone())),
        Some(other) => Ok(Incoming::UnknownSignalling(format!(
            "a signalling message whose \"type\" is {}",
            kind(other)
        ))),
        None => Ok(Incoming::UnknownSignalling(
            "a signalling message without a \"type\"".to_owned(),
        )),
    }
}

/// Reads the fields of a `trackStatus` signalling message.
fn track_status(inner: &Map<String, Value>) -> Result<Incoming, ProtocolError> {
    let receiver_index = inner
        .get("receiver_index")
        .and_then(Value::as_u64)
        .and_then(|index| u32::try_from(index).ok());
    let enabled = inner.get("enabled").and_then(Value::as_bool);
    match (receiver_index, enabled) {
        (Some(receiver_index), Some(enabled)) => Ok(Incoming::TrackStatus {
            receiver_index,
            enabled,
        }),
        _ => Err(ProtocolError::BadTrackStatus),
    }
}

/// Python's truthiness of a JSON value, which the original uses to decide whether a
/// `"signalling"` object carries a message.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// What kind of JSON value this is, with an article, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A signalling message the server sends to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Asks the client to send a new offer on the same peer connection (same `pc_id`,
    /// `restart_pc: false`).
    Renegotiate,
    /// Tells the client the bot is leaving; sent right before the server closes the peer
    /// connection. The JS client then disconnects by default.
    PeerLeft,
}

impl Signal {
    /// The inner `"type"` of this signal: `"renegotiate"` or `"peerLeft"`.
    ///
    /// ```
    /// use smallwebrtc::peer::protocol::Signal;
    ///
    /// assert_eq!(Signal::Renegotiate.as_str(), "renegotiate");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Renegotiate => "renegotiate",
            Self::PeerLeft => "peerLeft",
        }
    }

    /// The compact JSON text to send on the data channel (as a text message), for
    /// example `{"type":"signalling","message":{"type":"renegotiate"}}`.
    ///
    /// ```
    /// use smallwebrtc::peer::protocol::Signal;
    ///
    /// assert_eq!(
    ///     Signal::Renegotiate.to_json(),
    ///     r#"{"type":"signalling","message":{"type":"renegotiate"}}"#
    /// );
    /// ```
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"type":"{SIGNALLING}","message":{{"type":"{}"}}}}"#,
            self.as_str()
        )
    }
}

/// Which client track a transceiver index carries.
///
/// The JS client always creates its transceivers in this order: 0 audio (microphone),
/// 1 camera video, 2 screen-share video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    /// Transceiver 0: the client's microphone (and the bot's voice back).
    Microphone,
    /// Transceiver 1: the client's camera (and the bot's video back).
    Camera,
    /// Transceiver 2: the client's screen share (client to server only).
    ScreenVideo,
}

impl TrackSource {
    /// The source for a transceiver (receiver) index, or `None` for an index above 2.
    ///
    /// ```
    /// use smallwebrtc::peer::protocol::TrackSource;
    ///
    /// assert_eq!(TrackSource::from_receiver_index(2), Some(TrackSource::ScreenVideo));
    /// assert_eq!(TrackSource::from_receiver_index(3), None);
    /// ```
    pub const fn from_receiver_index(index: u32) -> Option<Self> {
        match index {
            0 => Some(Self::Microphone),
            1 => Some(Self::Camera),
            2 => Some(Self::ScreenVideo),
            _ => None,
        }
    }

    /// The transceiver (receiver) index of this source: 0, 1 or 2.
    pub const fn receiver_index(self) -> u32 {
        match self {
            Self::Microphone => 0,
            Self::Camera => 1,
            Self::ScreenVideo => 2,
        }
    }

    /// The name Pipecat uses for this source: `"microphone"`, `"camera"` or
    /// `"screenVideo"`.
    ///
    /// ```
    /// use smallwebrtc::peer::protocol::TrackSource;
    ///
    /// assert_eq!(TrackSource::ScreenVideo.as_str(), "screenVideo");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Microphone => "microphone",
            Self::Camera => "camera",
            Self::ScreenVideo => "screenVideo",
        }
    }
}

impl fmt::Display for TrackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Result<Incoming, ProtocolError> {
        parse_incoming(s.as_bytes(), false)
    }

    fn app_text(s: &str) -> String {
        match text(s) {
            Ok(Incoming::App(value)) => serde_json::to_string(&value).unwrap(),
            other => panic!("expected an app message, got {other:?}"),
        }
    }

    fn track_status_json(receiver_index: &str, enabled: &str) -> String {
        format!(
            r#"{{"type":"signalling","message":{{"type":"trackStatus","receiver_index":{receiver_index},"enabled":{enabled}}}}}"#
        )
    }

    #[test]
    fn pings() {
        assert_eq!(text("ping: 1718035200123").unwrap(), Incoming::Ping);
        assert_eq!(text("ping").unwrap(), Incoming::Ping);
        assert_eq!(text("pingpong {not json").unwrap(), Incoming::Ping);
        // The rest of a ping is never looked at, not even for UTF-8.
        assert_eq!(
            parse_incoming(b"ping: \xFF\xFE", false).unwrap(),
            Incoming::Ping
        );
    }

    #[test]
    fn not_pings() {
        // Binary messages are never pings: they are parsed as JSON, as in the original.
        assert!(matches!(
            parse_incoming(b"ping: 1", true),
            Err(ProtocolError::NotJson(_))
        ));
        // Case and leading whitespace matter (Python's `str.startswith`).
        assert!(matches!(text("PING"), Err(ProtocolError::NotJson(_))));
        assert!(matches!(text(" ping"), Err(ProtocolError::NotJson(_))));
        assert!(matches!(text("pin"), Err(ProtocolError::NotJson(_))));
    }

    #[test]
    fn track_status_for_each_index() {
        for index in 0..=2 {
            for enabled in [true, false] {
                let message = track_status_json(&index.to_string(), &enabled.to_string());
                assert_eq!(
                    text(&message).unwrap(),
                    Incoming::TrackStatus {
                        receiver_index: index,
                        enabled
                    }
                );
            }
        }
        // Larger indexes are passed on; the caller maps them.
        assert_eq!(
            text(&track_status_json("7", "true")).unwrap(),
            Incoming::TrackStatus {
                receiver_index: 7,
                enabled: true
            }
        );
    }

    #[test]
    fn track_status_with_spaces_and_extra_keys() {
        let message = r#"{"type": "signalling", "message": {"enabled": true, "type": "trackStatus", "receiver_index": 0, "extra": [1]}, "more": null}"#;
        assert_eq!(
            text(message).unwrap(),
            Incoming::TrackStatus {
                receiver_index: 0,
                enabled: true
            }
        );
    }

    /// Pipecat's `TestTrackStatus`: indexes 2/2/1/0 map to
    /// (screenVideo, true), (screenVideo, false), (camera, false), (microphone, false).
    #[test]
    fn track_status_mapping_like_pipecat() {
        let sent = [(2, true), (2, false), (1, false), (0, false)];
        let got: Vec<(&str, bool)> = sent
            .iter()
            .map(|(index, enabled)| {
                match text(&track_status_json(&index.to_string(), &enabled.to_string())) {
                    Ok(Incoming::TrackStatus {
                        receiver_index,
                        enabled,
                    }) => (
                        TrackSource::from_receiver_index(receiver_index)
                            .unwrap()
                            .as_str(),
                        enabled,
                    ),
                    other => panic!("expected trackStatus, got {other:?}"),
                }
            })
            .collect();
        assert_eq!(
            got,
            [
                ("screenVideo", true),
                ("screenVideo", false),
                ("camera", false),
                ("microphone", false)
            ]
        );
    }

    #[test]
    fn bad_track_status_fields() {
        let bad = [
            track_status_json("-1", "true"),
            track_status_json("1.0", "true"),
            track_status_json("1.5", "true"),
            track_status_json("\"1\"", "true"),
            track_status_json("null", "true"),
            track_status_json("4294967296", "true"),
            track_status_json("0", "1"),
            track_status_json("0", "\"true\""),
            track_status_json("0", "null"),
            r#"{"type":"signalling","message":{"type":"trackStatus"}}"#.to_owned(),
            r#"{"type":"signalling","message":{"type":"trackStatus","enabled":true}}"#.to_owned(),
            r#"{"type":"signalling","message":{"type":"trackStatus","receiver_index":0}}"#
                .to_owned(),
        ];
        for message in &bad {
            let error = text(message).unwrap_err();
            assert!(
                matches!(error, ProtocolError::BadTrackStatus),
                "{message}: {error:?}"
            );
            assert_eq!(
                error.to_string(),
                r#"trackStatus needs an integer "receiver_index" and a boolean "enabled""#
            );
        }
        assert_eq!(
            text(&track_status_json("4294967295", "false")).unwrap(),
            Incoming::TrackStatus {
                receiver_index: u32::MAX,
                enabled: false
            }
        );
    }

    #[test]
    fn other_signalling_is_unknown() {
        assert_eq!(
            text(r#"{"type":"signalling","message":{"type":"renegotiate"}}"#).unwrap(),
            Incoming::UnknownSignalling("renegotiate".to_owned())
        );
        assert_eq!(
            text(r#"{"type":"signalling","message":{"type":"peerLeft"}}"#).unwrap(),
            Incoming::UnknownSignalling("peerLeft".to_owned())
        );
        for message in [
            r#"{"type":"signalling","message":{"receiver_index":0}}"#,
            r#"{"type":"signalling","message":{"type":3}}"#,
            r#"{"type":"signalling","message":"renegotiate"}"#,
            r#"{"type":"signalling","message":[1]}"#,
            r#"{"type":"signalling","message":true}"#,
        ] {
            assert!(
                matches!(text(message), Ok(Incoming::UnknownSignalling(_))),
                "{message}"
            );
        }
    }

    #[test]
    fn signalling_without_a_message_is_an_app_message() {
        for message in [
            r#"{"type":"signalling"}"#,
            r#"{"type":"signalling","message":null}"#,
            r#"{"type":"signalling","message":{}}"#,
            r#"{"type":"signalling","message":""}"#,
            r#"{"type":"signalling","message":0}"#,
            r#"{"type":"signalling","message":0.0}"#,
            r#"{"type":"signalling","message":false}"#,
            r#"{"type":"signalling","message":[]}"#,
        ] {
            assert_eq!(app_text(message), message);
        }
    }

    #[test]
    fn app_messages_keep_key_order_byte_exact() {
        let message = r#"{"label":"rtvi-ai","type":"client-message","id":"a1","data":{"t":"echo","d":{"zeta":1,"alpha":[3,2,1],"mid":{"z":null,"a":true,"m":-17},"big":9007199254740993,"neg":-9223372036854775808,"f":0.1,"e":""}}}"#;
        assert_eq!(app_text(message), message);
    }

    #[test]
    fn objects_without_a_type_are_app_messages() {
        let message = r#"{"hello":"world","n":[{}]}"#;
        assert_eq!(app_text(message), message);
        let message = r#"{"type":42}"#;
        assert_eq!(app_text(message), message);
        assert_eq!(app_text("{}"), "{}");
    }

    #[test]
    fn non_ascii_round_trips() {
        let message = r#"{"label":"rtvi-ai","type":"client-message","data":{"t":"héllo 世界 🎉","d":"héllo 世界 🎉 \"q\" \\ \n\t\u0001"}}"#;
        assert_eq!(app_text(message), message);
        match text(message).unwrap() {
            Incoming::App(value) => assert_eq!(value["data"]["t"], "héllo 世界 🎉"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_kilobyte_message() {
        let payload: String = "abcdefghij\u{e9}".repeat(200);
        let message = format!(
            r#"{{"label":"rtvi-ai","type":"client-message","data":{{"t":"big","d":"{payload}"}}}}"#
        );
        assert!(message.len() > 2048);
        assert_eq!(app_text(&message), message);
    }

    #[test]
    fn invalid_json() {
        for message in ["", "   ", "{", r#"{"a":1,}"#, "{\"a\":1} x", "NaN", "hello"] {
            let error = text(message).unwrap_err();
            assert!(matches!(error, ProtocolError::NotJson(_)), "{message:?}");
            assert!(error
                .to_string()
                .starts_with("data-channel message is not JSON: "));
        }
    }

    #[test]
    fn not_an_object() {
        let cases = [
            ("[]", "an array"),
            ("[1,2]", "an array"),
            ("\"ping\"", "a string"),
            ("1", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
        ];
        for (message, what) in cases {
            let error = text(message).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("data-channel message must be a JSON object, got {what}")
            );
        }
    }

    #[test]
    fn invalid_utf8() {
        for binary in [false, true] {
            let error = parse_incoming(b"{\"a\":\"\xFF\"}", binary).unwrap_err();
            assert!(matches!(error, ProtocolError::NotUtf8(_)));
            assert_eq!(error.to_string(), "data-channel message is not valid UTF-8");
            assert!(std::error::Error::source(&error).is_some());
        }
    }

    #[test]
    fn binary_json_is_accepted() {
        let message = r#"{"label":"rtvi-ai","type":"client-ready","id":"x"}"#;
        match parse_incoming(message.as_bytes(), true).unwrap() {
            Incoming::App(value) => assert_eq!(serde_json::to_string(&value).unwrap(), message),
            other => panic!("{other:?}"),
        }
        let mut with_bom = UTF8_BOM.to_vec();
        with_bom.extend_from_slice(track_status_json("1", "true").as_bytes());
        assert_eq!(
            parse_incoming(&with_bom, true).unwrap(),
            Incoming::TrackStatus {
                receiver_index: 1,
                enabled: true
            }
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(text(&deep), Err(ProtocolError::NotJson(_))));
        let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(matches!(text(&deep), Err(ProtocolError::NotJson(_))));
    }

    #[test]
    fn signals() {
        assert_eq!(
            Signal::Renegotiate.to_json(),
            r#"{"type":"signalling","message":{"type":"renegotiate"}}"#
        );
        assert_eq!(
            Signal::PeerLeft.to_json(),
            r#"{"type":"signalling","message":{"type":"peerLeft"}}"#
        );
        // What we send, we would parse as the same (unknown-to-the-server) signal.
        for signal in [Signal::Renegotiate, Signal::PeerLeft] {
            assert_eq!(
                text(&signal.to_json()).unwrap(),
                Incoming::UnknownSignalling(signal.as_str().to_owned())
            );
        }
    }

    #[test]
    fn track_sources() {
        for source in [
            TrackSource::Microphone,
            TrackSource::Camera,
            TrackSource::ScreenVideo,
        ] {
            assert_eq!(
                TrackSource::from_receiver_index(source.receiver_index()),
                Some(source)
            );
            assert_eq!(source.to_string(), source.as_str());
        }
        assert_eq!(TrackSource::Microphone.as_str(), "microphone");
        assert_eq!(TrackSource::Camera.as_str(), "camera");
        assert_eq!(TrackSource::ScreenVideo.as_str(), "screenVideo");
        assert_eq!(TrackSource::from_receiver_index(3), None);
        assert_eq!(TrackSource::from_receiver_index(u32::MAX), None);
    }
}
