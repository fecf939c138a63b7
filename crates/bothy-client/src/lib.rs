//! Typed HTTP and WebSocket client of the bothy API (the Sprites-compatible
//! REST + WebSocket protocol), and [`InBoxClient`] for a box's own control
//! socket.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bothy_client::ClientError> {
//! use bothy_client::{Client, ExecEvent, ExecParams};
//! let client = Client::new("http://127.0.0.1:7070", "token")?;
//! let conn = client.exec("dev", &ExecParams::new(vec!["uname".into(), "-a".into()])).await?;
//! let (mut tx, mut rx) = conn.split();
//! tx.send_stdin_eof().await?;
//! while let Some(event) = rx.next_event().await? {
//!     if let ExecEvent::Exit(code) = event {
//!         println!("exit {code}");
//!     }
//! }
//! # Ok(()) }
//! ```

mod checkpoints;
mod error;
mod exec;
mod files;
pub mod frame;
mod inbox;
mod policy;
mod proxy;
mod services;
mod tokens;
mod unix_http;

use std::time::Duration;

use bothy_api::{
    CreateSpriteRequest, ExecSession, ExecSessionList, KillSessionRequest, OrgQuota, Organization,
    QuotaLimits, Sprite, SpriteList, StreamMessage, SyncResult, UpdateSpriteRequest,
};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::de::DeserializeOwned;
use url::Url;

pub use error::{ClientError, ErrorKind, Result};
pub use exec::{ExecConnection, ExecParams, ExecReceiver, ExecSender};
pub use frame::{ExecEvent, SessionInfo};
pub use inbox::InBoxClient;
pub use proxy::ProxyConnection;

/// Creating a box may include building its volume; leave it room.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A barrier may upload gigabytes to a slow object store.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3600);
/// Stops `list_all` if a server keeps handing out continuation tokens.
const MAX_LIST_PAGES: usize = 10_000;

/// A client of one bothy API endpoint, authenticated with one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

/// Never prints the token: clients end up in logs and error reports.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// `base_url` is the API root, e.g. `http://127.0.0.1:7070`.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Self> {
        let token = token.into();
        let base = parse_base_url(base_url)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::InvalidToken)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("bothy/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self { http, base, token })
    }

    /// The API root this client talks to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The bearer token this client sends, for callers that make their own
    /// requests to the same API (streamed bodies, other WebSockets).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `POST /v1/sprites`.
    pub async fn create_sprite(&self, req: &CreateSpriteRequest) -> Result<Sprite> {
        let url = self.url(&["v1", "sprites"]);
        self.json(self.http.post(url).json(req)).await
    }

    /// `GET /v1/sprites/{name}`.
    pub async fn get_sprite(&self, name: &str) -> Result<Sprite> {
        self.json(self.http.get(self.url(&["v1", "sprites", name])))
            .await
    }

    /// `GET /v1/sprites`: one page.
    pub async fn list_sprites(
        &self,
        prefix: Option<&str>,
        max_results: Option<usize>,
        continuation_token: Option<&str>,
    ) -> Result<SpriteList> {
        let mut url = self.url(&["v1", "sprites"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(p) = prefix {
                q.append_pair("prefix", p);
            }
            if let Some(m) = max_results {
                q.append_pair("max_results", &m.to_string());
            }
            if let Some(t) = continuation_token {
                q.append_pair("continuation_token", t);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.json(self.http.get(url)).await
    }

    /// Every bothy (optionally with a name prefix), following continuation tokens.
    pub async fn list_all(&self, prefix: Option<&str>) -> Result<Vec<Sprite>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self
                .list_sprites(prefix, Some(bothy_api::MAX_LIST_RESULTS), token.as_deref())
                .await?;
            all.extend(page.sprites);
            match page.next_continuation_token {
                Some(next) if page.has_more && token.as_deref() != Some(next.as_str()) => {
                    token = Some(next)
                }
                Some(_) if page.has_more => {
                    return Err(ClientError::Protocol(
                        "the list repeated its continuation token".into(),
                    ))
                }
                _ => return Ok(all),
            }
        }
        Err(ClientError::Protocol(format!(
            "the list did not end after {MAX_LIST_PAGES} pages"
        )))
    }

    /// `PUT /v1/sprites/{name}`: a partial update.
    pub async fn update_sprite(&self, name: &str, req: &UpdateSpriteRequest) -> Result<Sprite> {
        let url = self.url(&["v1", "sprites", name]);
        self.json(self.http.put(url).json(req)).await
    }

    /// `DELETE /v1/sprites/{name}`.
    pub async fn destroy_sprite(&self, name: &str) -> Result<()> {
        let url = self.url(&["v1", "sprites", name]);
        self.empty(self.http.delete(url)).await
    }

    /// `GET /v1/sprites/{name}/exec`.
    pub async fn list_sessions(&self, name: &str) -> Result<Vec<ExecSession>> {
        let url = self.url(&["v1", "sprites", name, "exec"]);
        let list: ExecSessionList = self.json(self.http.get(url)).await?;
        Ok(list.sessions)
    }

    /// `POST /v1/sprites/{name}/exec/{id}/kill`: the NDJSON progress lines.
    pub async fn kill_session(
        &self,
        name: &str,
        id: &str,
        req: &KillSessionRequest,
    ) -> Result<Vec<StreamMessage>> {
        let url = self.url(&["v1", "sprites", name, "exec", id, "kill"]);
        let body = self.bytes(self.http.post(url).json(req)).await?;
        parse_ndjson(&body)
    }

    /// `POST /v1/sprites/{name}/sync`: returns once everything acknowledged
    /// for the sprite is in the object store.
    pub async fn sync_sprite(&self, name: &str) -> Result<SyncResult> {
        let url = self.url(&["v1", "sprites", name, "sync"]);
        self.json(self.http.post(url).timeout(SYNC_TIMEOUT)).await
    }

    /// `POST /v1/sprites/{name}/sleep`: warm now, or cold; the new status.
    pub async fn sleep_sprite(&self, name: &str, cold: bool) -> Result<serde_json::Value> {
        let url = self.url(&["v1", "sprites", name, "sleep"]);
        let body = bothy_api::SleepRequest { cold };
        self.json(self.http.post(url).json(&body).timeout(SYNC_TIMEOUT))
            .await
    }

    /// `GET /v1/sprites/{name}/usage`.
    pub async fn sprite_usage(&self, name: &str) -> Result<bothy_api::SpriteUsage> {
        let url = self.url(&["v1", "sprites", name, "usage"]);
        self.json(self.http.get(url)).await
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let url = self.url(&["metrics"]);
        let body = self.bytes(self.http.get(url)).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// One value of `GET /metrics` without labels (`bothy_warm_pool_ready`).
    pub async fn metric(&self, name: &str) -> Result<Option<f64>> {
        let text = self.metrics().await?;
        Ok(text.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        }))
    }

    /// `POST /v1/sync`: the barrier for every sprite the token sees.
    pub async fn sync_all(&self) -> Result<SyncResult> {
        let url = self.url(&["v1", "sync"]);
        self.json(self.http.post(url).timeout(SYNC_TIMEOUT)).await
    }

    /// `POST /v1/drain` (admin token): stops every box.
    pub async fn drain(&self) -> Result<bothy_api::DrainResult> {
        let url = self.url(&["v1", "drain"]);
        self.json(self.http.post(url).timeout(SYNC_TIMEOUT)).await
    }

    /// `GET /v1/organization`: the token's organisation.
    pub async fn organization(&self) -> Result<Organization> {
        self.json(self.http.get(self.url(&["v1", "organization"])))
            .await
    }

    /// Organisation `org`'s quota and usage.
    pub async fn quota(&self, org: &str) -> Result<OrgQuota> {
        let url = self.url(&["v1", "organizations", org, "quota"]);
        self.json(self.http.get(url)).await
    }

    /// Replaces organisation `org`'s quota (admin token).
    pub async fn set_quota(&self, org: &str, limits: &QuotaLimits) -> Result<OrgQuota> {
        let url = self.url(&["v1", "organizations", org, "quota"]);
        self.json(self.http.put(url).json(limits)).await
    }

    /// Starts `params.cmd` in a new session of bothy `name`.
    pub async fn exec(&self, name: &str, params: &ExecParams) -> Result<ExecConnection> {
        if params.cmd.is_empty() {
            return Err(ClientError::Protocol("exec needs a command to run".into()));
        }
        let mut url = exec::websocket_url(self.url(&["v1", "sprites", name, "exec"]))?;
        url.query_pairs_mut().extend_pairs(params.query_pairs());
        ExecConnection::connect(url, &self.token, self.base.as_str(), Some(params.tty)).await
    }

    /// Re-attaches to session `id` of bothy `name`.
    pub async fn attach(&self, name: &str, id: &str) -> Result<ExecConnection> {
        let url = exec::websocket_url(self.url(&["v1", "sprites", name, "exec", id]))?;
        ExecConnection::connect(url, &self.token, self.base.as_str(), None).await
    }

    /// Opens a forward to `port` on the loopback of bothy `name` (`host`
    /// names it: `localhost`, `127.0.0.1` or `::1`).
    pub async fn proxy(&self, name: &str, host: &str, port: u16) -> Result<ProxyConnection> {
        let url = proxy::proxy_url(self.url(&["v1", "sprites", name, "proxy"]))?;
        ProxyConnection::connect(url, &self.token, self.base.as_str(), host, port).await
    }

    fn url(&self, segments: &[&str]) -> Url {
        with_segments(&self.base, segments)
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        decode(&self.bytes(req).await?)
    }

    async fn empty(&self, req: reqwest::RequestBuilder) -> Result<()> {
        self.bytes(req).await.map(drop)
    }

    async fn bytes(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
        let response = req.send().await.map_err(|e| self.request_error(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.request_error(e))?;
        if status.is_client_error() || status.is_server_error() {
            return Err(ClientError::from_error_answer(status.as_u16(), &body));
        }
        Ok(body)
    }

    fn request_error(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Unreachable {
                url: self.base.to_string(),
                detail: innermost_cause(&e),
            }
        } else if e.is_timeout() {
            ClientError::Transport(format!(
                "the daemon at {} did not answer in time",
                self.base
            ))
        } else {
            ClientError::Transport(innermost_cause(&e))
        }
    }
}

/// `base` with `segments` appended, each percent-encoded as one segment (a
/// name like `../x` cannot escape its place in the path).
fn with_segments(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A JSON answer of the daemon.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("could not read the daemon's answer: {e}")))
}

/// reqwest's and hyper's own messages ("error sending request") say little;
/// the useful part (e.g. "Connection refused") is at the bottom of the chain.
fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn parse_base_url(base_url: &str) -> Result<Url> {
    let url = Url::parse(base_url).map_err(|e| ClientError::InvalidUrl {
        url: base_url.to_string(),
        reason: format!("{e}; expected something like http://127.0.0.1:7070"),
    })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(ClientError::InvalidUrl {
            url: base_url.to_string(),
            reason: "expected an http:// or https:// URL with a host".into(),
        }),
    }
}

/// Parses an NDJSON progress stream; blank lines are skipped.
pub fn parse_ndjson(body: &[u8]) -> Result<Vec<StreamMessage>> {
    body.split(|b| *b == b'\n')
        .filter_map(parse_progress_line)
        .collect()
}

/// One line of a progress stream, `None` if it is blank.
fn parse_progress_line(line: &[u8]) -> Option<Result<StreamMessage>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice(line)
            .map_err(|e| ClientError::Protocol(format!("bad progress line from the daemon: {e}"))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_base_path_and_encode_names() {
        let c = Client::new("http://h:1/api/", "t").expect("client");
        assert_eq!(
            c.url(&["v1", "sprites", "../x y"]).as_str(),
            "http://h:1/api/v1/sprites/..%2Fx%20y"
        );
        let c = Client::new("http://h:1", "t").expect("client");
        assert_eq!(c.url(&["v1", "sprites"]).as_str(), "http://h:1/v1/sprites");
    }

    #[test]
    fn bad_base_urls_are_refused_with_a_hint() {
        for bad in ["127.0.0.1:7070", "ftp://h", "nonsense", "unix:/x"] {
            let e = Client::new(bad, "t").expect_err(bad);
            assert!(matches!(e, ClientError::InvalidUrl { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = Client::new("http://h", "s3cret").expect("client");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn token_with_a_newline_is_refused() {
        assert!(matches!(
            Client::new("http://h", "a\nb"),
            Err(ClientError::InvalidToken)
        ));
    }

    #[test]
    fn ndjson_lines_are_parsed_and_blanks_skipped() {
        let body = b"{\"type\":\"info\",\"data\":\"signalled\"}\n\n{\"type\":\"complete\"}\n";
        let msgs = parse_ndjson(body).expect("valid");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].data.as_deref(), Some("signalled"));
        assert_eq!(msgs[1].kind, "complete");
        assert!(parse_ndjson(b"{nope").is_err());
    }

    #[tokio::test]
    async fn nothing_listening_is_reported_as_unreachable() {
        // Bind then drop to get a loopback port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let c = Client::new(&format!("http://127.0.0.1:{port}"), "t").expect("client");
        let e = c.organization().await.expect_err("nobody listens");
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("bothy daemon"), "{e}");
        let e = c
            .exec("x", &ExecParams::new(vec!["true".into()]))
            .await
            .err()
            .expect("nobody listens");
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    }
}
