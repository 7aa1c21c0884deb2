//! Several nodes behind one load balancer.
//!
//! Every id a node issues (`/start` session ids, `pc_id`s) starts with its node
//! id and a dash, so any node can tell whose a request is. The official client
//! sends its offer, every PATCH and every re-offer to one URL with the `pc_id`
//! only in the body, so a plain load balancer may hand them to any node: a node
//! that gets a request for another node's id forwards it there (the nodes know
//! each other from `--peers`) and relays the answer. A forwarded request is
//! never forwarded again.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Marks a request one node forwarded to another.
pub const FORWARDED_HEADER: &str = "x-smallwebrtc-forwarded-by";

/// Why a node id or peer list is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The node id is empty or has characters that are not URL-safe.
    #[error("node id {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    BadNodeId(String),
    /// A `--peers` entry is not `id=http://host:port`.
    #[error("peer {0:?} must look like ID=http://HOST:PORT")]
    BadPeer(String),
}

/// Checks a node id: URL-safe, so it can prefix ids that travel in URLs.
///
/// ```
/// use smallwebrtc::http::cluster::validate_node_id;
/// assert!(validate_node_id("eu-1").is_ok());
/// assert!(validate_node_id("a/b").is_err());
/// ```
pub fn validate_node_id(id: &str) -> Result<(), ClusterError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadNodeId(id.to_string()))
    }
}

/// Parses a `--peers` entry, `ID=http://HOST:PORT`.
///
/// ```
/// use smallwebrtc::http::cluster::parse_peer;
/// let (id, url) = parse_peer("b=http://10.0.0.2:7860").unwrap();
/// assert_eq!((id.as_str(), url.as_str()), ("b", "http://10.0.0.2:7860"));
/// ```
pub fn parse_peer(entry: &str) -> Result<(String, String), ClusterError> {
    let bad = || ClusterError::BadPeer(entry.to_string());
    let (id, url) = entry.split_once('=').ok_or_else(bad)?;
    let (id, url) = (id.trim(), url.trim().trim_end_matches('/'));
    validate_node_id(id).map_err(|_| bad())?;
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        return Err(bad());
    }
    Ok((id.to_string(), url.to_string()))
}

/// This node and the others.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    node_id: Option<String>,
    peers: Vec<(String, String)>,
    client: Option<reqwest::Client>,
}

impl Cluster {
    /// A cluster seen from `node_id`, with `peers` as `(id, base URL)`.
    pub fn new(
        node_id: Option<String>,
        peers: Vec<(String, String)>,
    ) -> Result<Self, ClusterError> {
        if let Some(id) = &node_id {
            validate_node_id(id)?;
        }
        for (id, _) in &peers {
            validate_node_id(id)?;
        }
        let client = (!peers.is_empty()).then(|| {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default()
        });
        Ok(Cluster {
            node_id,
            peers,
            client,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    /// The prefix of every id this node issues (`"<node>-"`, or nothing).
    pub fn id_prefix(&self) -> String {
        self.node_id
            .as_deref()
            .map(|n| format!("{n}-"))
            .unwrap_or_default()
    }

    /// The base URL of the peer that issued `id`, if another node did.
    pub fn owner_of(&self, id: &str) -> Option<&str> {
        let mine = self
            .node_id
            .as_deref()
            .filter(|n| id.starts_with(&format!("{n}-")))
            .map_or(0, str::len);
        self.peers
            .iter()
            .filter(|(peer, _)| peer.len() > mine && id.starts_with(&format!("{peer}-")))
            .max_by_key(|(peer, _)| peer.len())
            .map(|(_, url)| url.as_str())
    }

    /// Sends a request on to `base` and returns its answer as ours.
    pub async fn forward(
        &self,
        base: &str,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<Response, ApiError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| ApiError::new(StatusCode::BAD_GATEWAY, "no peers configured"))?;
        let url = format!("{base}{path_and_query}");
        let response = client
            .request(method, &url)
            .header("content-type", "application/json")
            .header(
                FORWARDED_HEADER,
                self.node_id.as_deref().unwrap_or("unnamed"),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // 502: the client retries 5xx with a fresh peer connection.
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("the node owning this session ({base}) is unreachable: {e}"),
                )
            })?;
        let status = response.status();
        let content_type = response.headers().get("content-type").cloned();
        let bytes = response.bytes().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("reading the answer of {base}: {e}"),
            )
        })?;
        let mut out = (status, Body::from(bytes)).into_response();
        if let Some(ct) = content_type {
            out.headers_mut().insert("content-type", ct);
        } else {
            out.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_longest_matching_other_node() {
        let c = Cluster::new(
            Some("a".into()),
            vec![
                ("b".into(), "http://b:1".into()),
                ("b-2".into(), "http://b2:1".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.owner_of("a-pc-123"), None);
        assert_eq!(c.owner_of("b-pc-123"), Some("http://b:1"));
        assert_eq!(c.owner_of("b-2-pc-123"), Some("http://b2:1"));
        assert_eq!(c.owner_of("pc-123"), None);
        assert_eq!(c.owner_of("bb-pc-1"), None);
    }

    #[test]
    fn a_node_never_forwards_its_own_ids_even_if_a_peer_prefix_matches() {
        // Node "b-2" and peer "b": "b-2-x" is ours.
        let c = Cluster::new(Some("b-2".into()), vec![("b".into(), "http://b:1".into())]).unwrap();
        assert_eq!(c.owner_of("b-2-pc-1"), None);
        assert_eq!(c.owner_of("b-pc-1"), Some("http://b:1"));
    }

    #[test]
    fn bad_ids_and_peers_are_refused_with_a_reason() {
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id("a.b").is_err());
        assert!(parse_peer("b")
            .unwrap_err()
            .to_string()
            .contains("ID=http://HOST:PORT"));
        assert!(parse_peer("b=ftp://x").is_err());
        assert!(parse_peer("b c=http://x:1").is_err());
    }
}
