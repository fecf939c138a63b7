//! Checkpoints: create, list, get, restore, delete.

use bothy_api::{Checkpoint, CreateCheckpointRequest, StreamMessage};

use crate::{parse_ndjson, Client, ClientError, Result};

/// What one line of a progress stream settles: the id in its `complete`
/// line or the error in its `error` line; `None` for an `info` line.
pub(crate) fn settled(line: &StreamMessage) -> Option<Result<String>> {
    match line.kind.as_str() {
        "error" => Some(Err(ClientError::OperationFailed(
            line.error
                .clone()
                .or_else(|| line.data.clone())
                .unwrap_or_default(),
        ))),
        "complete" => Some(line.data.clone().ok_or_else(|| {
            ClientError::Protocol("the daemon's progress stream completed without an id".into())
        })),
        _ => None,
    }
}

/// The error for a progress stream that ended before it settled.
pub(crate) fn unsettled() -> ClientError {
    ClientError::Protocol("the daemon's progress stream ended without completing".into())
}

/// The outcome of a whole progress stream: its first `complete` or `error` line.
fn outcome(lines: &[StreamMessage]) -> Result<String> {
    lines
        .iter()
        .find_map(settled)
        .unwrap_or_else(|| Err(unsettled()))
}

impl Client {
    /// `POST /v1/sprites/{name}/checkpoint`: returns the new checkpoint.
    pub async fn create_checkpoint(&self, name: &str, comment: Option<&str>) -> Result<Checkpoint> {
        self.checkpoint_with(
            name,
            &CreateCheckpointRequest {
                comment: comment.map(str::to_string),
                durable: false,
            },
        )
        .await
    }

    /// `POST /v1/sprites/{name}/checkpoint` with every option (`durable`:
    /// answer once it is in the object store).
    pub async fn checkpoint_with(
        &self,
        name: &str,
        req: &CreateCheckpointRequest,
    ) -> Result<Checkpoint> {
        let url = self.url(&["v1", "sprites", name, "checkpoint"]);
        let body = self.bytes(self.http.post(url).json(req)).await?;
        let id = outcome(&parse_ndjson(&body)?)?;
        self.get_checkpoint(name, &id).await
    }

    /// `GET /v1/sprites/{name}/checkpoints`.
    pub async fn list_checkpoints(
        &self,
        name: &str,
        include_auto: bool,
    ) -> Result<Vec<Checkpoint>> {
        let mut url = self.url(&["v1", "sprites", name, "checkpoints"]);
        if include_auto {
            url.query_pairs_mut().append_pair("include_auto", "true");
        }
        self.json(self.http.get(url)).await
    }

    /// `GET /v1/sprites/{name}/checkpoints/{id}`.
    pub async fn get_checkpoint(&self, name: &str, id: &str) -> Result<Checkpoint> {
        let url = self.url(&["v1", "sprites", name, "checkpoints", id]);
        self.json(self.http.get(url)).await
    }

    /// `POST /v1/sprites/{name}/checkpoints/{id}/restore`: returns once the
    /// bothy runs again, with the id of the automatic checkpoint that keeps
    /// the state it replaced.
    pub async fn restore_checkpoint(&self, name: &str, id: &str) -> Result<String> {
        let url = self.url(&["v1", "sprites", name, "checkpoints", id, "restore"]);
        let body = self.bytes(self.http.post(url)).await?;
        outcome(&parse_ndjson(&body)?)
    }

    /// `DELETE /v1/sprites/{name}/checkpoints/{id}`.
    pub async fn delete_checkpoint(&self, name: &str, id: &str) -> Result<()> {
        let url = self.url(&["v1", "sprites", name, "checkpoints", id]);
        self.empty(self.http.delete(url)).await
    }
}
