//! The few RTVI replies a SmallWebRTC bot needs to talk to the official Pipecat clients.
//!
//! RTVI messages travel on the data channel as app messages: JSON objects with
//! `"label":"rtvi-ai"`, a `"type"`, an optional `"id"` and a `"data"` payload. The JS
//! client only resolves `PipecatClient.connect()` once the bot answers its
//! `client-ready` with `bot-ready`, and it ignores any app message whose label is not
//! `"rtvi-ai"` (so custom data must be wrapped with [`server_message`]).
//!
//! Replies are built as [`serde_json::Value`]s with their keys in the order Pipecat
//! sends them, and every value copied from the client (ids, versions, `client-message`
//! payloads) is copied unchanged, so a client comparing echoed JSON as text sees its
//! own text again.
//!
//! ```
//! use serde_json::json;
//! use smallwebrtc::bots::rtvi::{reply, BotAbout};
//!
//! let client_ready = json!({
//!     "id": "1a2b3c4d", "label": "rtvi-ai", "type": "client-ready",
//!     "data": {"version": "2.1.0"}
//! });
//! let bot_ready = reply(&client_ready, &BotAbout::default()).expect("a reply");
//! assert_eq!(bot_ready["type"], "bot-ready");
//! assert_eq!(bot_ready["id"], "1a2b3c4d");
//! assert_eq!(bot_ready["data"]["version"], "2.2.0");
//! ```

use serde_json::{Map, Value};

/// The `"label"` every RTVI message carries.
pub const RTVI_LABEL: &str = "rtvi-ai";

/// The RTVI protocol version this bot speaks (the one pipecat-ai 1.14.0 sends in
/// `bot-ready`).
pub const PROTOCOL_VERSION: &str = "2.2.0";

/// What the bot can do, as announced in `bot-ready`'s `data.capabilities`.
///
/// The default is all `false`, like a Pipecat transport with nothing enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities {
    /// The bot listens to the client's microphone.
    pub audio_in: bool,
    /// The bot sends audio back.
    pub audio_out: bool,
    /// The bot watches the client's camera or screen.
    pub video_in: bool,
    /// The bot sends video back.
    pub video_out: bool,
    /// The bot sends RTVI metrics messages.
    pub metrics: bool,
}

/// Who the bot is, as announced in `bot-ready`'s `data.about` and `data.capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BotAbout {
    /// The library behind the bot (`data.about.library`).
    pub library: String,
    /// That library's version (`data.about.library_version`).
    pub library_version: String,
    /// What the bot can do (`data.capabilities`).
    pub capabilities: Capabilities,
}

impl Default for BotAbout {
    /// This crate: library `"smallwebrtc"` at its own version, with default (all
    /// `false`) [`Capabilities`].
    fn default() -> Self {
        Self {
            library: "smallwebrtc".to_owned(),
            library_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Capabilities::default(),
        }
    }
}

/// Whether `message` is an RTVI message, i.e. a JSON object whose `"label"` is
/// `"rtvi-ai"`.
///
/// ```
/// use serde_json::json;
/// use smallwebrtc::bots::rtvi::is_rtvi;
///
/// assert!(is_rtvi(&json!({"label": "rtvi-ai", "type": "client-ready"})));
/// assert!(!is_rtvi(&json!({"type": "client-ready"})));
/// ```
pub fn is_rtvi(message: &Value) -> bool {
    message.get("label").and_then(Value::as_str) == Some(RTVI_LABEL)
}

/// The reply an echo bot owes to an incoming RTVI message, if any.
///
/// * `client-ready` gets `bot-ready`:
///   `{"label":"rtvi-ai","type":"bot-ready","id":…,"data":{"version":…,"about":{"library":…,"library_version":…},"capabilities":{"audio_in":…,"audio_out":…,"video_in":…,"video_out":…,"metrics":…}}}`.
///   The version is the client's own `data.version` when that is a string whose major
///   number is 1 (an RTVI 1.x client), and [`PROTOCOL_VERSION`] otherwise.
/// * `client-message` with `data: {t, d}` gets
///   `{"label":"rtvi-ai","type":"server-response","id":…,"data":{"t":…,"d":…}}`, with
///   `t` and `d` copied unchanged (`d` is left out when the client left it out). A
///   `client-message` without an object `data` holding a `t` gets no reply.
///
/// The `id` is echoed unchanged; when the message has no `id` (or a `null` one) the
/// reply has none either. Messages that are not RTVI ([`is_rtvi`]) and other RTVI types
/// give `None`.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use smallwebrtc::bots::rtvi::{reply, BotAbout};
///
/// let request = json!({
///     "label": "rtvi-ai", "type": "client-message", "id": "42",
///     "data": {"t": "echo", "d": {"b": 1, "a": 2}}
/// });
/// let response = reply(&request, &BotAbout::default()).expect("a reply");
/// assert_eq!(
///     serde_json::to_string(&response)?,
///     r#"{"label":"rtvi-ai","type":"server-response","id":"42","data":{"t":"echo","d":{"b":1,"a":2}}}"#
/// );
///
/// assert_eq!(reply(&json!({"label": "other", "type": "client-ready"}), &BotAbout::default()), None);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn reply(message: &Value, about: &BotAbout) -> Option<Value> {
    if !is_rtvi(message) {
        return None;
    }
    let id = message.get("id").filter(|id| !id.is_null());
    let data = message.get("data");
    match message.get("type").and_then(Value::as_str)? {
        "client-ready" => Some(envelope("bot-ready", id, bot_ready_data(data, about))),
        "client-message" => {
            let data = data?.as_object()?;
            let mut response = Map::new();
            response.insert("t".to_owned(), data.get("t")?.clone());
            if let Some(d) = data.get("d") {
                response.insert("d".to_owned(), d.clone());
            }
            Some(envelope("server-response", id, Value::Object(response)))
        }
        _ => None,
    }
}

/// Wraps arbitrary data as an RTVI `server-message`, the way to send custom data the JS
/// client will pass to the application: `{"label":"rtvi-ai","type":"server-message","data":…}`.
///
/// ```
/// use serde_json::json;
/// use smallwebrtc::bots::rtvi::server_message;
///
/// assert_eq!(
///     serde_json::to_string(&server_message(json!({"anything": 1})))?,
///     r#"{"label":"rtvi-ai","type":"server-message","data":{"anything":1}}"#
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn server_message(data: Value) -> Value {
    envelope("server-message", None, data)
}

/// Builds `{"label":"rtvi-ai","type":kind,["id":id,]"data":data}` in that key order.
fn envelope(kind: &str, id: Option<&Value>, data: Value) -> Value {
    let mut message = Map::new();
    message.insert("label".to_owned(), Value::from(RTVI_LABEL));
    message.insert("type".to_owned(), Value::from(kind));
    if let Some(id) = id {
        message.insert("id".to_owned(), id.clone());
    }
    message.insert("data".to_owned(), data);
    Value::Object(message)
}

/// The `data` of `bot-ready`, given the `data` of `client-ready`.
fn bot_ready_data(client_data: Option<&Value>, about: &BotAbout) -> Value {
    let version = client_data
        .and_then(|data| data.get("version"))
        .filter(|version| version.as_str().is_some_and(is_major_one))
        .cloned()
        .unwrap_or_else(|| Value::from(PROTOCOL_VERSION));

    let mut about_map = Map::new();
    about_map.insert("library".to_owned(), Value::from(about.library.as_str()));
    about_map.insert(
        "library_version".to_owned(),
        Value::from(about.library_version.as_str()),
    );

    let caps = about.capabilities;
    let mut capabilities = Map::new();
    for (name, value) in [
        ("audio_in", caps.audio_in),
        ("audio_out", caps.audio_out),
        ("video_in", caps.video_in),
        ("video_out", caps.video_out),
        ("metrics", caps.metrics),
    ] {
        capabilities.insert(name.to_owned(), Value::Bool(value));
    }

    let mut data = Map::new();
    data.insert("version".to_owned(), version);
    data.insert("about".to_owned(), Value::Object(about_map));
    data.insert("capabilities".to_owned(), Value::Object(capabilities));
    Value::Object(data)
}

/// Whether a version string's major number (the part before the first `.`) is 1.
fn is_major_one(version: &str) -> bool {
    version.split('.').next().is_some_and(|major| {
        major.bytes().all(|b| b.is_ascii_digit()) && major.parse() == Ok(1_u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn reply_text(request: &str, about: &BotAbout) -> Option<String> {
        reply(&parse(request), about).map(|value| serde_json::to_string(&value).unwrap())
    }

    fn pipecat_about() -> BotAbout {
        BotAbout {
            library: "pipecat-ai".to_owned(),
            library_version: "1.14.0".to_owned(),
            capabilities: Capabilities {
                audio_in: true,
                audio_out: true,
                video_in: false,
                video_out: false,
                metrics: true,
            },
        }
    }

    #[test]
    fn bot_ready_text_matches_pipecat() {
        let client_ready = r#"{"id":"1a2b3c4d","label":"rtvi-ai","type":"client-ready","data":{"version":"2.1.0","about":{"library":"@pipecat-ai/client-js","library_version":"1.13.1"}}}"#;
        assert_eq!(
            reply_text(client_ready, &pipecat_about()).unwrap(),
            r#"{"label":"rtvi-ai","type":"bot-ready","id":"1a2b3c4d","data":{"version":"2.2.0","about":{"library":"pipecat-ai","library_version":"1.14.0"},"capabilities":{"audio_in":true,"audio_out":true,"video_in":false,"video_out":false,"metrics":true}}}"#
        );
    }

    #[test]
    fn default_about() {
        let about = BotAbout::default();
        assert_eq!(about.library, "smallwebrtc");
        assert_eq!(about.library_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(about.capabilities, Capabilities::default());
        let client_ready =
            r#"{"label":"rtvi-ai","type":"client-ready","id":"x","data":{"version":"2.1.0"}}"#;
        assert_eq!(
            reply_text(client_ready, &about).unwrap(),
            format!(
                r#"{{"label":"rtvi-ai","type":"bot-ready","id":"x","data":{{"version":"2.2.0","about":{{"library":"smallwebrtc","library_version":"{}"}},"capabilities":{{"audio_in":false,"audio_out":false,"video_in":false,"video_out":false,"metrics":false}}}}}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn version_1_is_echoed() {
        for version in ["1.0.0", "1.2.3-beta.1", "1", "1.x"] {
            let request = format!(
                r#"{{"label":"rtvi-ai","type":"client-ready","id":"v","data":{{"version":"{version}"}}}}"#
            );
            let response = reply(&parse(&request), &pipecat_about()).unwrap();
            assert_eq!(response["data"]["version"], version, "{version}");
        }
    }

    #[test]
    fn other_versions_get_ours() {
        let requests = [
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{"version":"2.1.0"}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{"version":"0.3.4"}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{"version":"10.0.0"}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{"version":"+1.0"}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{"version":""}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{"version":1}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{"version":null}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":{}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v","data":"1.0.0"}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":"v"}"#,
        ];
        for request in requests {
            let response = reply(&parse(request), &pipecat_about()).unwrap();
            assert_eq!(response["data"]["version"], PROTOCOL_VERSION, "{request}");
            assert_eq!(response["type"], "bot-ready");
        }
    }

    #[test]
    fn missing_or_null_id_is_omitted() {
        for request in [
            r#"{"label":"rtvi-ai","type":"client-ready","data":{"version":"2.1.0"}}"#,
            r#"{"label":"rtvi-ai","type":"client-ready","id":null,"data":{"version":"2.1.0"}}"#,
        ] {
            let response = reply_text(request, &pipecat_about()).unwrap();
            assert!(response.starts_with(r#"{"label":"rtvi-ai","type":"bot-ready","data":{"#));
        }
        assert_eq!(
            reply_text(
                r#"{"label":"rtvi-ai","type":"client-message","data":{"t":"x","d":1}}"#,
                &pipecat_about()
            )
            .unwrap(),
            r#"{"label":"rtvi-ai","type":"server-response","data":{"t":"x","d":1}}"#
        );
    }

    #[test]
    fn non_string_ids_are_echoed_unchanged() {
        let response = reply_text(
            r#"{"label":"rtvi-ai","type":"client-message","id":12345678901234,"data":{"t":"x"}}"#,
            &pipecat_about(),
        )
        .unwrap();
        assert_eq!(
            response,
            r#"{"label":"rtvi-ai","type":"server-response","id":12345678901234,"data":{"t":"x"}}"#
        );
    }

    #[test]
    fn client_message_echo_keeps_key_order_byte_exact() {
        let d = r#"{"zeta":{"y":[1,{"b":2,"a":1}],"x":"héllo 世界 🎉"},"alpha":-3,"mid":null,"float":0.25,"big":18446744073709551615,"s":"quote \" backslash \\ newline \n"}"#;
        let request = format!(
            r#"{{"label":"rtvi-ai","type":"client-message","id":"c-1","data":{{"t":"echo","d":{d}}}}}"#
        );
        assert_eq!(
            reply_text(&request, &pipecat_about()).unwrap(),
            format!(
                r#"{{"label":"rtvi-ai","type":"server-response","id":"c-1","data":{{"t":"echo","d":{d}}}}}"#
            )
        );
    }

    #[test]
    fn client_message_t_and_d_in_any_order_and_null_d() {
        assert_eq!(
            reply_text(
                r#"{"label":"rtvi-ai","type":"client-message","id":"1","data":{"d":[1,2],"t":"k","extra":true}}"#,
                &pipecat_about()
            )
            .unwrap(),
            r#"{"label":"rtvi-ai","type":"server-response","id":"1","data":{"t":"k","d":[1,2]}}"#
        );
        assert_eq!(
            reply_text(
                r#"{"label":"rtvi-ai","type":"client-message","id":"1","data":{"t":"k","d":null}}"#,
                &pipecat_about()
            )
            .unwrap(),
            r#"{"label":"rtvi-ai","type":"server-response","id":"1","data":{"t":"k","d":null}}"#
        );
    }

    #[test]
    fn malformed_client_messages_get_no_reply() {
        for request in [
            r#"{"label":"rtvi-ai","type":"client-message","id":"1"}"#,
            r#"{"label":"rtvi-ai","type":"client-message","id":"1","data":null}"#,
            r#"{"label":"rtvi-ai","type":"client-message","id":"1","data":"t"}"#,
            r#"{"label":"rtvi-ai","type":"client-message","id":"1","data":{"d":1}}"#,
        ] {
            assert_eq!(reply_text(request, &pipecat_about()), None, "{request}");
        }
    }

    #[test]
    fn non_rtvi_and_other_types_get_no_reply() {
        for request in [
            r#"{"label":"other","type":"client-ready","id":"1","data":{"version":"2.1.0"}}"#,
            r#"{"type":"client-ready","id":"1","data":{"version":"2.1.0"}}"#,
            r#"{"label":null,"type":"client-ready"}"#,
            r#"{"label":"RTVI-AI","type":"client-ready"}"#,
            r#"{"label":"rtvi-ai","type":"disconnect-bot","id":"1"}"#,
            r#"{"label":"rtvi-ai","type":"send-text","id":"1","data":{"content":"hi"}}"#,
            r#"{"label":"rtvi-ai","type":"bot-ready","id":"1","data":{}}"#,
            r#"{"label":"rtvi-ai","id":"1"}"#,
            r#"{"label":"rtvi-ai","type":7}"#,
            r#"["rtvi-ai"]"#,
            r#""rtvi-ai""#,
            "null",
        ] {
            assert_eq!(reply_text(request, &pipecat_about()), None, "{request}");
        }
    }

    #[test]
    fn is_rtvi_checks_the_label() {
        assert!(is_rtvi(&parse(r#"{"label":"rtvi-ai"}"#)));
        assert!(!is_rtvi(&parse(r#"{"label":"chat"}"#)));
        assert!(!is_rtvi(&parse(r#"{"label":["rtvi-ai"]}"#)));
        assert!(!is_rtvi(&parse(r#"[{"label":"rtvi-ai"}]"#)));
        assert!(!is_rtvi(&parse("42")));
    }

    #[test]
    fn server_message_shape() {
        let data = parse(r#"{"z":1,"a":{"nested":"é"}}"#);
        let message = server_message(data);
        assert!(is_rtvi(&message));
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"label":"rtvi-ai","type":"server-message","data":{"z":1,"a":{"nested":"é"}}}"#
        );
        assert_eq!(
            serde_json::to_string(&server_message(Value::Null)).unwrap(),
            r#"{"label":"rtvi-ai","type":"server-message","data":null}"#
        );
    }
}
