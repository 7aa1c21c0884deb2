//! ICE-server configuration: the `--ice-servers` flag / `PIPECAT_ICE_SERVERS` text form, the
//! JSON shape echoed to clients in `/start`'s `iceConfig`, and validation of STUN/TURN URLs
//! (RFC 7064 and RFC 7065).
//!
//! The text form accepts, after trimming:
//!
//! * text starting with `[`: a JSON array whose entries are URL strings or objects;
//! * text starting with `{`: one JSON object;
//! * anything else: bare URLs separated by commas (each trimmed, empty pieces skipped).
//!
//! An object may only have the keys `urls` (a string or an array of strings, required),
//! `username` and `credential`; keys whose value is `null` are treated as absent. Every URL is
//! validated, and a TURN URL needs a username and a credential in its entry.
//!
//! ```
//! use smallwebrtc::signaling::ice_servers::parse_ice_servers;
//!
//! let servers = parse_ice_servers(
//!     r#"[ "stun:stun.example.com",
//!          {"urls": "turn:turn.example.com:3478", "username": "u", "credential": "p"} ]"#,
//! )
//! .unwrap();
//! assert_eq!(servers.len(), 2);
//! assert_eq!(
//!     serde_json::to_string(&servers[1]).unwrap(),
//!     r#"{"urls":"turn:turn.example.com:3478","username":"u","credential":"p"}"#
//! );
//! ```

use std::fmt;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The public STUN server used when a client asks for default ICE servers
/// (`enableDefaultIceServers`) and none are configured.
pub const GOOGLE_STUN_URL: &str = "stun:stun.l.google.com:19302";

/// One ICE server, shaped like the WebRTC `RTCIceServer` dictionary.
///
/// Serializing it reproduces the configured JSON: `urls` keeps its string-or-array shape and
/// absent `username`/`credential` are omitted. Deserializing with serde is lenient (unknown
/// keys are ignored, nothing is validated); use [`parse_ice_servers`] for the strict
/// configuration form, or call [`IceServer::validate`].
///
/// ```
/// use smallwebrtc::signaling::ice_servers::IceServer;
///
/// let server = IceServer::new("stun:stun.example.com:3478");
/// assert_eq!(
///     serde_json::to_string(&server).unwrap(),
///     r#"{"urls":"stun:stun.example.com:3478"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// The server's URL or URLs, exactly as configured.
    pub urls: IceUrls,
    /// The TURN username, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN credential (password), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The `urls` member of an [`IceServer`]: a single string or an array of strings.
///
/// It is untagged, so a string is (de)serialized as a JSON string and a list as a JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IceUrls {
    /// `"urls": "stun:…"`.
    One(String),
    /// `"urls": ["stun:…", …]`.
    Many(Vec<String>),
}

impl IceUrls {
    /// The URLs as string slices, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            IceUrls::One(url) => std::slice::from_ref(url),
            IceUrls::Many(urls) => urls,
        }
    }
}

impl IceServer {
    /// A server with one URL (kept as a JSON string) and no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        IceServer {
            urls: IceUrls::One(url.into()),
            username: None,
            credential: None,
        }
    }

    /// The same server with `username` and `credential` set (needed for TURN).
    ///
    /// ```
    /// use smallwebrtc::signaling::ice_servers::IceServer;
    ///
    /// let turn = IceServer::new("turn:turn.example.com").with_credentials("u", "p");
    /// assert!(turn.validate().is_ok());
    /// assert!(IceServer::new("turn:turn.example.com").validate().is_err());
    /// ```
    #[must_use]
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        credential: impl Into<String>,
    ) -> Self {
        self.username = Some(username.into());
        self.credential = Some(credential.into());
        self
    }

    /// The server's URLs, in order, whatever the shape of `urls`.
    pub fn urls(&self) -> impl Iterator<Item = &str> + '_ {
        self.urls.as_slice().iter().map(String::as_str)
    }

    /// Each URL parsed with [`IceUrl::parse`], in order.
    pub fn parsed_urls(&self) -> Vec<Result<IceUrl, IceServerConfigError>> {
        self.urls().map(IceUrl::parse).collect()
    }

    /// Checks the entry: at least one URL, every URL valid, and a non-empty username and
    /// credential if any URL is a TURN URL.
    pub fn validate(&self) -> Result<(), IceServerConfigError> {
        if self.urls.as_slice().is_empty() {
            return Err(IceServerConfigError::EmptyUrls);
        }
        let has_credentials = self.username.as_deref().is_some_and(|u| !u.is_empty())
            && self.credential.as_deref().is_some_and(|c| !c.is_empty());
        for url in self.urls() {
            let parsed = IceUrl::parse(url)?;
            if parsed.scheme.is_turn() && !has_credentials {
                return Err(IceServerConfigError::MissingTurnCredentials {
                    url: url.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The `iceConfig` fallback of `/start`: exactly `[{"urls":["stun:stun.l.google.com:19302"]}]`.
///
/// ```
/// use smallwebrtc::signaling::ice_servers::default_stun_servers;
///
/// assert_eq!(
///     serde_json::to_string(&default_stun_servers()).unwrap(),
///     r#"[{"urls":["stun:stun.l.google.com:19302"]}]"#
/// );
/// ```
pub fn default_stun_servers() -> Vec<IceServer> {
    vec![IceServer {
        urls: IceUrls::Many(vec![GOOGLE_STUN_URL.to_owned()]),
        username: None,
        credential: None,
    }]
}

/// Parses the text form of the ICE-server configuration (see the module docs) and validates
/// every entry.
///
/// Empty or blank text gives an empty list.
///
/// ```
/// use smallwebrtc::signaling::ice_servers::parse_ice_servers;
///
/// let servers = parse_ice_servers("stun:a.example.com, stun:b.example.com:19302").unwrap();
/// assert_eq!(servers.len(), 2);
///
/// let err = parse_ice_servers(r#"{"urls": "stun:a.example.com", "foo": 1}"#).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"ICE server entry has unknown key "foo" (allowed: urls, username, credential)"#
/// );
/// ```
pub fn parse_ice_servers(text: &str) -> Result<Vec<IceServer>, IceServerConfigError> {
    let text = text.trim();
    let servers = if text.starts_with('[') || text.starts_with('{') {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| IceServerConfigError::InvalidJson(e.to_string()))?;
        match value {
            Value::Array(entries) => entries
                .into_iter()
                .map(server_from_entry)
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![server_from_entry(other)?],
        }
    } else {
        text.split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(IceServer::new)
            .collect()
    };
    for server in &servers {
        server.validate()?;
    }
    Ok(servers)
}

/// Parses several occurrences of the `--ice-servers` flag: each one with
/// [`parse_ice_servers`], the results concatenated in order.
///
/// ```
/// use smallwebrtc::signaling::ice_servers::parse_ice_server_args;
///
/// let args = vec![
///     "stun:a.example.com".to_string(),
///     r#"{"urls":["turn:t.example.com"],"username":"u","credential":"p"}"#.to_string(),
/// ];
/// assert_eq!(parse_ice_server_args(&args).unwrap().len(), 2);
/// ```
pub fn parse_ice_server_args(args: &[String]) -> Result<Vec<IceServer>, IceServerConfigError> {
    let mut servers = Vec::new();
    for arg in args {
        servers.extend(parse_ice_servers(arg)?);
    }
    Ok(servers)
}

/// One entry of a JSON configuration: a URL string or an object.
fn server_from_entry(entry: Value) -> Result<IceServer, IceServerConfigError> {
    match entry {
        Value::String(url) => Ok(IceServer::new(url)),
        Value::Object(map) => server_from_object(map),
        other => Err(IceServerConfigError::InvalidEntry {
            found: other.to_string(),
        }),
    }
}

fn server_from_object(map: Map<String, Value>) -> Result<IceServer, IceServerConfigError> {
    let mut urls = None;
    let mut username = None;
    let mut credential = None;
    for (key, value) in map {
        if value.is_null() {
            // Null values are dropped before the keys are checked, whatever the key.
            continue;
        }
        match key.as_str() {
            "urls" => urls = Some(urls_from_value(value)?),
            "username" => username = Some(string_from_value("username", value)?),
            "credential" => credential = Some(string_from_value("credential", value)?),
            _ => return Err(IceServerConfigError::UnknownKey { key }),
        }
    }
    Ok(IceServer {
        urls: urls.ok_or(IceServerConfigError::MissingUrls)?,
        username,
        credential,
    })
}

fn urls_from_value(value: Value) -> Result<IceUrls, IceServerConfigError> {
    let wrong_type = |found: &Value| IceServerConfigError::WrongType {
        key: "urls",
        expected: "a string or an array of strings",
        found: found.to_string(),
    };
    match value {
        Value::String(url) => Ok(IceUrls::One(url)),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(url) => Ok(url),
                other => Err(wrong_type(&other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(IceUrls::Many),
        other => Err(wrong_type(&other)),
    }
}

fn string_from_value(key: &'static str, value: Value) -> Result<String, IceServerConfigError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(IceServerConfigError::WrongType {
            key,
            expected: "a string",
            found: other.to_string(),
        }),
    }
}

/// What went wrong in an ICE-server configuration. Every message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceServerConfigError {
    /// The text started with `[` or `{` but is not valid JSON.
    #[error("invalid ICE server JSON: {0}")]
    InvalidJson(String),
    /// A JSON entry is neither a URL string nor an object (a number, a bool, `null`, …).
    #[error("ICE server entry must be a URL string or an object with \"urls\", got {found}")]
    InvalidEntry {
        /// The entry, as JSON.
        found: String,
    },
    /// An object has a key other than `urls`, `username` and `credential`.
    #[error("ICE server entry has unknown key {key:?} (allowed: urls, username, credential)")]
    UnknownKey {
        /// The unknown key.
        key: String,
    },
    /// An object has no `urls` (or a `null` one).
    #[error("ICE server entry is missing \"urls\"")]
    MissingUrls,
    /// An entry's `urls` is an empty array.
    #[error("ICE server entry has an empty \"urls\" array")]
    EmptyUrls,
    /// A known key holds a value of the wrong JSON type.
    #[error("ICE server \"{key}\" must be {expected}, got {found}")]
    WrongType {
        /// The key (`urls`, `username` or `credential`).
        key: &'static str,
        /// What was expected.
        expected: &'static str,
        /// The value found, as JSON.
        found: String,
    },
    /// A URL is not a valid `stun:`, `stuns:`, `turn:` or `turns:` URL.
    #[error("invalid ICE server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL's port is not a number from 1 to 65535.
    #[error("invalid port in ICE server URL {url:?}: {port:?} is not a number from 1 to 65535")]
    InvalidPort {
        /// The URL as given.
        url: String,
        /// The port text.
        port: String,
    },
    /// A TURN URL's entry has no username or no credential.
    #[error("TURN server {url} needs a username and a credential")]
    MissingTurnCredentials {
        /// The TURN URL.
        url: String,
    },
}

/// The scheme of an ICE server URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceScheme {
    /// `stun:` (RFC 7064), default port 3478.
    Stun,
    /// `stuns:` (STUN over TLS), default port 5349.
    Stuns,
    /// `turn:` (RFC 7065), default port 3478.
    Turn,
    /// `turns:` (TURN over TLS), default port 5349.
    Turns,
}

impl IceScheme {
    /// The scheme name without the colon, e.g. `"turns"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IceScheme::Stun => "stun",
            IceScheme::Stuns => "stuns",
            IceScheme::Turn => "turn",
            IceScheme::Turns => "turns",
        }
    }

    /// The port used when the URL has none: 3478, or 5349 for the TLS schemes.
    pub fn default_port(self) -> u16 {
        if self.is_secure() {
            5349
        } else {
            3478
        }
    }

    /// Whether this is `turn:` or `turns:`.
    pub fn is_turn(self) -> bool {
        matches!(self, IceScheme::Turn | IceScheme::Turns)
    }

    /// Whether this is a TLS scheme (`stuns:` or `turns:`).
    pub fn is_secure(self) -> bool {
        matches!(self, IceScheme::Stuns | IceScheme::Turns)
    }
}

impl fmt::Display for IceScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `?transport=` parameter of a TURN URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceTransport {
    /// `?transport=udp`.
    Udp,
    /// `?transport=tcp`.
    Tcp,
}

impl IceTransport {
    /// `"udp"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IceTransport::Udp => "udp",
            IceTransport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for IceTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed STUN or TURN URL: `stun:host[:port]`, `stuns:host[:port]`,
/// `turn:host[:port][?transport=udp|tcp]` or `turns:host[:port][?transport=udp|tcp]`.
///
/// IPv6 hosts are written in brackets (`stun:[::1]:3478`) and stored without them. Scheme and
/// transport are matched case-insensitively. [`Display`](fmt::Display) gives the normalized
/// form, always with the port.
///
/// ```
/// use smallwebrtc::signaling::ice_servers::{IceScheme, IceTransport, IceUrl};
///
/// let url = IceUrl::parse("turn:[2001:db8::1]?transport=tcp").unwrap();
/// assert_eq!(url.scheme, IceScheme::Turn);
/// assert_eq!(url.host, "2001:db8::1");
/// assert_eq!(url.port, 3478);
/// assert_eq!(url.transport, Some(IceTransport::Tcp));
/// assert_eq!(url.to_string(), "turn:[2001:db8::1]:3478?transport=tcp");
///
/// assert!(IceUrl::parse("http://example.com").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IceUrl {
    /// The scheme.
    pub scheme: IceScheme,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port, or the scheme's default.
    pub port: u16,
    /// The `?transport=` parameter (TURN only).
    pub transport: Option<IceTransport>,
}

impl IceUrl {
    /// Parses and validates one URL.
    pub fn parse(url: &str) -> Result<IceUrl, IceServerConfigError> {
        const BAD_SCHEME: &str = "scheme must be stun:, stuns:, turn: or turns:";
        let invalid = |reason: String| IceServerConfigError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        if url.is_empty() {
            return Err(invalid("empty URL".to_owned()));
        }
        let (scheme_text, rest) = url
            .split_once(':')
            .ok_or_else(|| invalid(BAD_SCHEME.to_owned()))?;
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "stun" => IceScheme::Stun,
            "stuns" => IceScheme::Stuns,
            "turn" => IceScheme::Turn,
            "turns" => IceScheme::Turns,
            _ => return Err(invalid(BAD_SCHEME.to_owned())),
        };
        if rest.starts_with("//") {
            return Err(invalid(format!(
                "no \"//\" after the scheme (write {scheme}:host:port)"
            )));
        }
        let (host_port, query) = match rest.split_once('?') {
            Some((host_port, query)) => (host_port, Some(query)),
            None => (rest, None),
        };
        let (host, port_text) = split_host_port(host_port).map_err(invalid)?;
        let port = match port_text {
            None => scheme.default_port(),
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => {
                    return Err(IceServerConfigError::InvalidPort {
                        url: url.to_owned(),
                        port: text.to_owned(),
                    })
                }
            },
        };
        let transport = match query {
            None => None,
            Some(query) => Some(parse_transport(scheme, query).map_err(invalid)?),
        };
        Ok(IceUrl {
            scheme,
            host: host.to_owned(),
            port,
            transport,
        })
    }
}

/// Splits `host[:port]` or `[ipv6][:port]` and checks the host; the error is the reason.
fn split_host_port(host_port: &str) -> Result<(&str, Option<&str>), String> {
    if host_port.is_empty() {
        return Err("missing host".to_owned());
    }
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("missing \"]\" after the IPv6 address")?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{inside:?} is not an IPv6 address"));
        }
        if after.is_empty() {
            return Ok((inside, None));
        }
        let port = after
            .strip_prefix(':')
            .ok_or("unexpected text after the IPv6 address")?;
        return Ok((inside, Some(port)));
    }
    let (host, port) = match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    };
    if port.is_some_and(|p| p.contains(':')) {
        return Err("an IPv6 address must be in brackets, e.g. stun:[::1]:3478".to_owned());
    }
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!("invalid character {bad:?} in host"));
    }
    Ok((host, port))
}

/// Parses the query of a URL (the text after `?`); the error is the reason.
fn parse_transport(scheme: IceScheme, query: &str) -> Result<IceTransport, String> {
    if !scheme.is_turn() {
        return Err(
            "a \"?transport=\" parameter is only allowed on turn: and turns: URLs".to_owned(),
        );
    }
    let value = query
        .split_once('=')
        .filter(|(key, _)| key.eq_ignore_ascii_case("transport"))
        .map(|(_, value)| value.to_ascii_lowercase());
    match value.as_deref() {
        Some("udp") => Ok(IceTransport::Udp),
        Some("tcp") => Ok(IceTransport::Tcp),
        _ => Err("the only query allowed is ?transport=udp or ?transport=tcp".to_owned()),
    }
}

impl fmt::Display for IceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}:[{}]:{}", self.scheme, self.host, self.port)?;
        } else {
            write!(f, "{}:{}:{}", self.scheme, self.host, self.port)?;
        }
        if let Some(transport) = self.transport {
            write!(f, "?transport={transport}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(url: &str) -> IceServer {
        IceServer::new(url)
    }

    fn many(urls: &[&str]) -> IceServer {
        IceServer {
            urls: IceUrls::Many(urls.iter().map(|u| u.to_string()).collect()),
            username: None,
            credential: None,
        }
    }

    fn err(text: &str) -> String {
        parse_ice_servers(text)
            .expect_err("expected an error")
            .to_string()
    }

    // --- text forms (§2.1, TestIceServerParsing) ---

    #[test]
    fn bare_url() {
        assert_eq!(
            parse_ice_servers("stun:stun.l.google.com:19302").unwrap(),
            vec![one("stun:stun.l.google.com:19302")]
        );
    }

    #[test]
    fn blank_text_is_empty() {
        assert_eq!(parse_ice_servers("").unwrap(), vec![]);
        assert_eq!(parse_ice_servers("   ").unwrap(), vec![]);
        assert_eq!(parse_ice_servers(" , ,").unwrap(), vec![]);
        assert_eq!(parse_ice_servers("[]").unwrap(), vec![]);
    }

    #[test]
    fn comma_separated() {
        assert_eq!(
            parse_ice_servers(" stun:a.example.com , stun:b.example.com:19302,, ").unwrap(),
            vec![one("stun:a.example.com"), one("stun:b.example.com:19302")]
        );
    }

    #[test]
    fn json_object() {
        let servers = parse_ice_servers(
            r#"  {"urls":"turn:t.example.com:3478","username":"u","credential":"p"}  "#,
        )
        .unwrap();
        assert_eq!(
            servers,
            vec![one("turn:t.example.com:3478").with_credentials("u", "p")]
        );
    }

    #[test]
    fn json_object_with_url_array() {
        let servers = parse_ice_servers(
            r#"{"urls":["stun:s.example.com","turn:t.example.com?transport=tcp"],
                "username":"u","credential":"p"}"#,
        )
        .unwrap();
        assert_eq!(
            servers,
            vec![
                many(&["stun:s.example.com", "turn:t.example.com?transport=tcp"])
                    .with_credentials("u", "p")
            ]
        );
    }

    #[test]
    fn json_array_mixed() {
        let servers = parse_ice_servers(
            r#"["stun:a.example.com",
                {"urls":["stun:b.example.com:19302"]},
                {"urls":"turns:t.example.com","username":"u","credential":"p"}]"#,
        )
        .unwrap();
        assert_eq!(
            servers,
            vec![
                one("stun:a.example.com"),
                many(&["stun:b.example.com:19302"]),
                one("turns:t.example.com").with_credentials("u", "p"),
            ]
        );
    }

    #[test]
    fn nulls_dropped() {
        let servers =
            parse_ice_servers(r#"{"urls":"stun:a.example.com","username":null,"credential":null}"#)
                .unwrap();
        assert_eq!(servers, vec![one("stun:a.example.com")]);
        assert_eq!(
            serde_json::to_string(&servers).unwrap(),
            r#"[{"urls":"stun:a.example.com"}]"#
        );
    }

    #[test]
    fn null_urls_is_missing() {
        assert_eq!(
            err(r#"{"urls":null}"#),
            r#"ICE server entry is missing "urls""#
        );
    }

    #[test]
    fn missing_urls() {
        assert_eq!(
            err(r#"{"username":"u","credential":"p"}"#),
            r#"ICE server entry is missing "urls""#
        );
        assert_eq!(err(r#"[{}]"#), r#"ICE server entry is missing "urls""#);
    }

    #[test]
    fn unknown_key() {
        assert_eq!(
            err(r#"{"urls":"stun:a.example.com","foo":"bar"}"#),
            r#"ICE server entry has unknown key "foo" (allowed: urls, username, credential)"#
        );
        assert_eq!(
            err(r#"[{"urls":"stun:a.example.com","credentialType":"password"}]"#),
            r#"ICE server entry has unknown key "credentialType" (allowed: urls, username, credential)"#
        );
        // A null value is dropped before the key is checked.
        assert!(parse_ice_servers(r#"{"urls":"stun:a.example.com","foo":null}"#).is_ok());
    }

    #[test]
    fn malformed_json() {
        let message = err(r#"[{"urls": }]"#);
        assert!(
            message.starts_with("invalid ICE server JSON: expected value at line 1 column"),
            "{message}"
        );
        assert!(err("{").starts_with("invalid ICE server JSON: "));
        assert!(err(r#"["stun:a.example.com"] trailing"#).starts_with("invalid ICE server JSON: "));
    }

    #[test]
    fn scalars_rejected() {
        assert_eq!(
            err("[5]"),
            r#"ICE server entry must be a URL string or an object with "urls", got 5"#
        );
        assert_eq!(
            err("[true]"),
            r#"ICE server entry must be a URL string or an object with "urls", got true"#
        );
        assert!(err("[null]").contains("got null"));
        assert!(err(r#"[["stun:a.example.com"]]"#).contains("must be a URL string"));
        // Top-level scalars are not JSON (no [ or {): they are read as bare URLs and fail.
        assert_eq!(
            err("5"),
            r#"invalid ICE server URL "5": scheme must be stun:, stuns:, turn: or turns:"#
        );
        assert!(err("true").starts_with(r#"invalid ICE server URL "true""#));
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            err(r#"{"urls":5}"#),
            r#"ICE server "urls" must be a string or an array of strings, got 5"#
        );
        assert_eq!(
            err(r#"{"urls":["stun:a.example.com",7]}"#),
            r#"ICE server "urls" must be a string or an array of strings, got 7"#
        );
        assert_eq!(
            err(r#"{"urls":"turn:t.example.com","username":1,"credential":"p"}"#),
            r#"ICE server "username" must be a string, got 1"#
        );
        assert_eq!(
            err(r#"{"urls":"turn:t.example.com","username":"u","credential":{}}"#),
            r#"ICE server "credential" must be a string, got {}"#
        );
    }

    #[test]
    fn empty_urls() {
        assert_eq!(
            err(r#"{"urls":[]}"#),
            r#"ICE server entry has an empty "urls" array"#
        );
        assert_eq!(err(r#"[""]"#), r#"invalid ICE server URL "": empty URL"#);
        assert_eq!(
            err(r#"{"urls":""}"#),
            r#"invalid ICE server URL "": empty URL"#
        );
        assert_eq!(
            err(r#"{"urls":["stun:a.example.com",""]}"#),
            r#"invalid ICE server URL "": empty URL"#
        );
    }

    #[test]
    fn turn_needs_credentials() {
        assert_eq!(
            err("turn:x"),
            "TURN server turn:x needs a username and a credential"
        );
        assert_eq!(
            err(r#"{"urls":["stun:s.example.com","turns:x:443"],"username":"u"}"#),
            "TURN server turns:x:443 needs a username and a credential"
        );
        assert_eq!(
            err(r#"{"urls":"turn:x","username":"","credential":"p"}"#),
            "TURN server turn:x needs a username and a credential"
        );
        // STUN needs none, and credentials on a STUN server are allowed.
        assert!(parse_ice_servers(r#"{"urls":"stun:x","username":"u","credential":"p"}"#).is_ok());
    }

    #[test]
    fn invalid_urls_in_config() {
        assert_eq!(
            err("stun:a.example.com,http://x"),
            r#"invalid ICE server URL "http://x": scheme must be stun:, stuns:, turn: or turns:"#
        );
        assert_eq!(
            err(r#"["stun:"]"#),
            r#"invalid ICE server URL "stun:": missing host"#
        );
    }

    #[test]
    fn cli_args_concatenated() {
        let args = vec![
            "stun:a.example.com,stun:b.example.com".to_string(),
            r#"[{"urls":"turn:t.example.com","username":"u","credential":"p"}]"#.to_string(),
            "".to_string(),
        ];
        assert_eq!(
            parse_ice_server_args(&args).unwrap(),
            vec![
                one("stun:a.example.com"),
                one("stun:b.example.com"),
                one("turn:t.example.com").with_credentials("u", "p"),
            ]
        );
        assert_eq!(parse_ice_server_args(&[]).unwrap(), vec![]);
        assert!(parse_ice_server_args(&["stun:ok".to_string(), "{".to_string()]).is_err());
    }

    // --- serialization ---

    #[test]
    fn serialization_round_trip_keeps_shape() {
        let text = r#"[{"urls":"turn:t.example.com:3478","username":"u","credential":"p"},{"urls":["stun:a.example.com","stun:b.example.com"]},{"urls":"stun:c.example.com"}]"#;
        let servers = parse_ice_servers(text).unwrap();
        let json = serde_json::to_string(&servers).unwrap();
        assert_eq!(json, text);
        let back: Vec<IceServer> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, servers);
        assert!(matches!(back[0].urls, IceUrls::One(_)));
        assert!(matches!(back[1].urls, IceUrls::Many(_)));
    }

    #[test]
    fn serde_deserialize_is_lenient() {
        let server: IceServer =
            serde_json::from_str(r#"{"urls":"stun:x","credentialType":"password"}"#).unwrap();
        assert_eq!(server, one("stun:x"));
        let server: IceServer =
            serde_json::from_str(r#"{"urls":["stun:x"],"username":null}"#).unwrap();
        assert_eq!(server, many(&["stun:x"]));
    }

    #[test]
    fn default_servers() {
        let servers = default_stun_servers();
        assert_eq!(
            serde_json::to_value(&servers).unwrap(),
            serde_json::json!([{"urls": ["stun:stun.l.google.com:19302"]}])
        );
        assert!(servers.iter().all(|s| s.validate().is_ok()));
    }

    #[test]
    fn urls_iterator_and_parsed_urls() {
        let server = many(&["stun:a.example.com", "bogus"]);
        assert_eq!(
            server.urls().collect::<Vec<_>>(),
            vec!["stun:a.example.com", "bogus"]
        );
        let parsed = server.parsed_urls();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].as_ref().unwrap().host, "a.example.com");
        assert!(parsed[1].is_err());
        assert_eq!(one("stun:x").urls().collect::<Vec<_>>(), vec!["stun:x"]);
    }

    // --- URL parsing ---

    fn url(text: &str) -> IceUrl {
        IceUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn url_err(text: &str) -> String {
        IceUrl::parse(text)
            .expect_err("expected an error")
            .to_string()
    }

    #[test]
    fn url_default_ports() {
        assert_eq!(
            url("stun:stun.example.com"),
            IceUrl {
                scheme: IceScheme::Stun,
                host: "stun.example.com".into(),
                port: 3478,
                transport: None
            }
        );
        assert_eq!(url("stuns:s.example.com").port, 5349);
        assert_eq!(url("turn:t.example.com").port, 3478);
        assert_eq!(url("turns:t.example.com").port, 5349);
        assert_eq!(url("turns:t.example.com").scheme, IceScheme::Turns);
    }

    #[test]
    fn url_explicit_port_and_ipv4() {
        let u = url("stun:192.0.2.1:19302");
        assert_eq!(u.host, "192.0.2.1");
        assert_eq!(u.port, 19302);
        assert_eq!(url("turn:t.example.com:65535").port, 65535);
    }

    #[test]
    fn url_ipv6() {
        let u = url("stun:[::1]:3479");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 3479);
        assert_eq!(u.to_string(), "stun:[::1]:3479");
        let u = url("turns:[2001:db8::5]");
        assert_eq!(u.host, "2001:db8::5");
        assert_eq!(u.port, 5349);
        assert_eq!(
            url_err("stun:::1"),
            r#"invalid ICE server URL "stun:::1": an IPv6 address must be in brackets, e.g. stun:[::1]:3478"#
        );
        assert!(url_err("stun:2001:db8::1").contains("must be in brackets"));
        assert!(url_err("stun:[::1").contains("missing \"]\""));
        assert!(url_err("stun:[nope]:3478").contains("is not an IPv6 address"));
        assert!(url_err("stun:[::1]x").contains("unexpected text after the IPv6 address"));
        assert!(url_err("stun:[]").contains("is not an IPv6 address"));
    }

    #[test]
    fn url_transport() {
        assert_eq!(
            url("turn:t.example.com?transport=udp").transport,
            Some(IceTransport::Udp)
        );
        let u = url("turn:t.example.com:443?transport=TCP");
        assert_eq!(u.transport, Some(IceTransport::Tcp));
        assert_eq!(u.port, 443);
        assert_eq!(u.to_string(), "turn:t.example.com:443?transport=tcp");
        assert_eq!(
            url("turns:[::1]:5350?transport=tcp").to_string(),
            "turns:[::1]:5350?transport=tcp"
        );
        assert!(url_err("stun:s.example.com?transport=udp").contains("only allowed on turn:"));
        assert!(url_err("turn:t.example.com?transport=sctp").contains("?transport=udp"));
        assert!(url_err("turn:t.example.com?foo=udp").contains("?transport=udp"));
        assert!(url_err("turn:t.example.com?").contains("?transport=udp"));
    }

    #[test]
    fn url_scheme_errors() {
        assert_eq!(
            url_err("http://x"),
            r#"invalid ICE server URL "http://x": scheme must be stun:, stuns:, turn: or turns:"#
        );
        assert!(url_err("stun.example.com").contains("scheme must be"));
        assert!(url_err(":3478").contains("scheme must be"));
        assert!(url_err("stun://s.example.com:3478").contains("no \"//\""));
        assert_eq!(url("STUN:s.example.com").scheme, IceScheme::Stun);
    }

    #[test]
    fn url_host_errors() {
        assert_eq!(
            url_err("stun:"),
            r#"invalid ICE server URL "stun:": missing host"#
        );
        assert!(url_err("stun::3478").contains("missing host"));
        assert!(url_err("turn:?transport=udp").contains("missing host"));
        assert!(url_err("stun:a b").contains("invalid character ' ' in host"));
        assert!(url_err("turn:user@host").contains("invalid character '@'"));
        assert!(url_err("stun:s.example.com/path").contains("invalid character '/'"));
    }

    #[test]
    fn url_port_errors() {
        for bad in [
            "stun:x:",
            "stun:x:0",
            "stun:x:65536",
            "stun:x:+1",
            "stun:x:abc",
            "stun:[::1]:",
        ] {
            let message = url_err(bad);
            assert!(
                message.starts_with(&format!("invalid port in ICE server URL {bad:?}")),
                "{message}"
            );
        }
        assert_eq!(
            url_err("stun:x:99999"),
            r#"invalid port in ICE server URL "stun:x:99999": "99999" is not a number from 1 to 65535"#
        );
    }

    #[test]
    fn url_display_round_trip() {
        for text in [
            "stun:stun.l.google.com:19302",
            "stuns:s.example.com:5349",
            "turn:t.example.com:3478?transport=udp",
            "turns:[fe80::1]:443?transport=tcp",
        ] {
            let u = url(text);
            assert_eq!(u.to_string(), text);
            assert_eq!(url(&u.to_string()), u);
        }
        assert_eq!(url("stun:x").to_string(), "stun:x:3478");
    }

    #[test]
    fn url_parse_never_panics() {
        let samples = [
            "",
            ":",
            "::",
            "[",
            "]",
            "[]:",
            "stun:[",
            "stun:]",
            "turn:[::1]:?",
            "turn:?=",
            "?",
            "é:",
            "stun:é",
            "turn:x?transport",
            "turn:x?transport=",
            "stun:[::1]:3478:1",
            "stun:x:1:2",
        ];
        for s in samples {
            let _ = IceUrl::parse(s);
            let _ = parse_ice_servers(s);
        }
    }
}
