//! The box's own control API, from inside the box: what `bothy-env` speaks
//! over [`bothy_api::inbox::ENV_SOCKET`]. No token: being able to connect is
//! the credential, and the box can act on itself only.

use std::path::{Path, PathBuf};

use bothy_api::{Checkpoint, CreateCheckpointRequest};
use hyper::Method;
use url::Url;

use crate::checkpoints::{settled, unsettled};
use crate::unix_http::{self, Answer};
use crate::{decode, parse_progress_line, with_segments, ClientError, Result};

/// A client of one box's control socket.
#[derive(Debug, Clone)]
pub struct InBoxClient {
    socket: PathBuf,
}

impl InBoxClient {
    /// A client of the control socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The client of the box this process runs in.
    pub fn this_box() -> Self {
        Self::new(bothy_api::inbox::ENV_SOCKET)
    }

    /// The socket this client connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /checkpoints`: the box's checkpoints, with the automatic ones
    /// (made before each restore) if `include_auto`.
    pub async fn list_checkpoints(&self, include_auto: bool) -> Result<Vec<Checkpoint>> {
        let mut url = target(&["checkpoints"]);
        if include_auto {
            url.query_pairs_mut().append_pair("include_auto", "true");
        }
        let answer = self.send(Method::GET, &url, None).await?;
        decode(&answer.read_all().await?)
    }

    /// `POST /checkpoint`: checkpoints the box while it runs; returns the new
    /// checkpoint's id. With `durable`, once it is in the object store.
    pub async fn create_checkpoint(&self, comment: Option<&str>, durable: bool) -> Result<String> {
        let req = CreateCheckpointRequest {
            comment: comment.map(str::to_string),
            durable,
        };
        let body = serde_json::to_vec(&req)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
        let answer = self
            .send(Method::POST, &target(&["checkpoint"]), Some(body))
            .await?;
        outcome(answer).await
    }

    /// `POST /checkpoints/{id}/restore`: brings the box's disk back to `id`
    /// and restarts the box; returns the automatic checkpoint that keeps the
    /// state it replaced. The restart ends every process in the box, the
    /// caller too: from inside, this usually ends in
    /// [`ClientError::Disconnected`], or never returns at all.
    pub async fn restore_checkpoint(&self, id: &str) -> Result<String> {
        let url = target(&["checkpoints", id, "restore"]);
        let answer = self.send(Method::POST, &url, None).await?;
        outcome(answer).await
    }

    /// A request to the box's own services or tasks; the answer's body.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<(&str, String)>,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>> {
        let mut url = target(segments);
        if let Some((k, v)) = query {
            url.query_pairs_mut().append_pair(k, &v);
        }
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
        self.send(method, &url, body).await?.read_all().await
    }

    pub async fn list_services(&self) -> Result<Vec<serde_json::Value>> {
        decode(&self.call(Method::GET, &["services"], None, None).await?)
    }

    pub async fn get_service(&self, name: &str) -> Result<serde_json::Value> {
        decode(
            &self
                .call(Method::GET, &["services", name], None, None)
                .await?,
        )
    }

    pub async fn put_service(
        &self,
        name: &str,
        def: &serde_json::Value,
        follow_secs: Option<f64>,
    ) -> Result<Vec<serde_json::Value>> {
        let q = follow_secs.map(|s| ("duration", format!("{s}s")));
        crate::services::lines(
            &self
                .call(Method::PUT, &["services", name], q, Some(def))
                .await?,
        )
    }

    pub async fn delete_service(&self, name: &str) -> Result<()> {
        self.call(Method::DELETE, &["services", name], None, None)
            .await
            .map(drop)
    }

    /// `start`, `stop` or `restart` (see [`crate::Client::service_op`]).
    pub async fn service_op(
        &self,
        name: &str,
        op: &str,
        secs: Option<f64>,
    ) -> Result<Vec<serde_json::Value>> {
        let key = if op == "stop" { "timeout" } else { "duration" };
        let q = secs.map(|s| (key, format!("{s}s")));
        crate::services::lines(
            &self
                .call(Method::POST, &["services", name, op], q, None)
                .await?,
        )
    }

    pub async fn signal_service(&self, name: &str, signal: &str) -> Result<()> {
        let body = serde_json::json!({ "name": name, "signal": signal });
        self.call(Method::POST, &["services", "signal"], None, Some(&body))
            .await
            .map(drop)
    }

    pub async fn service_logs(&self, name: &str) -> Result<Vec<serde_json::Value>> {
        crate::services::lines(
            &self
                .call(Method::GET, &["services", name, "logs"], None, None)
                .await?,
        )
    }

    pub async fn hold_task(&self, name: Option<&str>, ttl: &str) -> Result<serde_json::Value> {
        let body = serde_json::json!({ "name": name, "ttl": ttl });
        decode(
            &self
                .call(Method::POST, &["tasks"], None, Some(&body))
                .await?,
        )
    }

    pub async fn extend_task(&self, id: &str, ttl: &str) -> Result<serde_json::Value> {
        let body = serde_json::json!({ "ttl": ttl });
        decode(
            &self
                .call(Method::PUT, &["tasks", id], None, Some(&body))
                .await?,
        )
    }

    pub async fn list_tasks(&self) -> Result<serde_json::Value> {
        decode(&self.call(Method::GET, &["tasks"], None, None).await?)
    }

    pub async fn release_task(&self, id: &str) -> Result<()> {
        self.call(Method::DELETE, &["tasks", id], None, None)
            .await
            .map(drop)
    }

    /// Sends the request; an error status becomes the matching error.
    async fn send(&self, method: Method, url: &Url, body: Option<Vec<u8>>) -> Result<Answer> {
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let answer = unix_http::send(&self.socket, method, &target, body).await?;
        if answer.is_error() {
            let status = answer.status;
            return Err(ClientError::from_error_answer(
                status,
                &answer.read_all().await?,
            ));
        }
        Ok(answer)
    }
}

/// The request URL for `segments`, each encoded as one path segment. The
/// host is a placeholder: the socket decides where the request goes.
fn target(segments: &[&str]) -> Url {
    static ROOT: std::sync::LazyLock<Url> =
        std::sync::LazyLock::new(|| Url::parse("http://bothy/").expect("a constant, valid URL"));
    with_segments(&ROOT, segments)
}

/// Reads a progress stream up to its `complete` or `error` line, and no
/// further: what follows may never come.
async fn outcome(mut answer: Answer) -> Result<String> {
    while let Some(line) = answer.next_line().await? {
        let Some(message) = parse_progress_line(&line) else {
            continue;
        };
        if let Some(result) = settled(&message?) {
            return result;
        }
    }
    Err(unsettled())
}
