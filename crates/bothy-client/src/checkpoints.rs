//! Checkpoints: create, list, get, restore, delete.

use bothy_api::{Checkpoint, CreateCheckpointRequest, StreamMessage};

use crate::{parse_ndjson, Client, ClientError, Result};

/// The id in the `complete` line of a progress stream, or the error it ends with.
fn outcome(lines: &[StreamMessage]) -> Result<String> {
    for l in lines {
        if l.kind == "error" {
            return Err(ClientError::Api {
                status: 500,
                code: "operation_failed".into(),
                message: l
                    .error
                    .clone()
                    .or_else(|| l.data.clone())
                    .unwrap_or_default(),
            });
        }
    }
    lines
        .iter()
        .rev()
        .find(|l| l.kind == "complete")
        .and_then(|l| l.data.clone())
        .ok_or_else(|| {
            ClientError::Protocol("the daemon's progress stream ended without completing".into())
        })
}

impl Client {
    /// `POST /v1/sprites/{name}/checkpoint`: returns the new checkpoint.
    pub async fn create_checkpoint(&self, name: &str, comment: Option<&str>) -> Result<Checkpoint> {
        let url = self.url(&["v1", "sprites", name, "checkpoint"]);
        let req = CreateCheckpointRequest {
            comment: comment.map(str::to_string),
        };
        let body = self.bytes(self.http.post(url).json(&req)).await?;
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
