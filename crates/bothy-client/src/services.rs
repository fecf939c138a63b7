//! Services of a bothy (list, get, create, start, stop, restart, signal,
//! delete, logs) and tasks (holds that keep it running). The operations that follow a service answer NDJSON lines
//! (`{type, data?, exit_code?, timestamp, log_files?}`), returned whole.

use serde_json::Value;

use crate::{Client, ClientError, Result};

pub(crate) fn lines(body: &[u8]) -> Result<Vec<Value>> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            serde_json::from_slice(l)
                .map_err(|e| ClientError::Protocol(format!("bad line in the daemon's stream: {e}")))
        })
        .collect()
}

fn follow_query(follow_secs: Option<f64>) -> String {
    follow_secs.map(|s| format!("{s}s")).unwrap_or_default()
}

impl Client {
    pub async fn list_services(&self, sprite: &str) -> Result<Vec<Value>> {
        let url = self.url(&["v1", "sprites", sprite, "services"]);
        self.json(self.http.get(url)).await
    }

    pub async fn get_service(&self, sprite: &str, name: &str) -> Result<Value> {
        let url = self.url(&["v1", "sprites", sprite, "services", name]);
        self.json(self.http.get(url)).await
    }

    /// Creates or replaces a service; follows it for `follow_secs`.
    pub async fn put_service(
        &self,
        sprite: &str,
        name: &str,
        def: &Value,
        follow_secs: Option<f64>,
    ) -> Result<Vec<Value>> {
        let mut url = self.url(&["v1", "sprites", sprite, "services", name]);
        if follow_secs.is_some() {
            url.query_pairs_mut()
                .append_pair("duration", &follow_query(follow_secs));
        }
        lines(&self.bytes(self.http.put(url).json(def)).await?)
    }

    pub async fn delete_service(&self, sprite: &str, name: &str) -> Result<()> {
        let url = self.url(&["v1", "sprites", sprite, "services", name]);
        self.empty(self.http.delete(url)).await
    }

    /// `start`, `stop` or `restart`; `secs` is the follow duration (stop:
    /// the grace before SIGKILL).
    pub async fn service_op(
        &self,
        sprite: &str,
        name: &str,
        op: &str,
        secs: Option<f64>,
    ) -> Result<Vec<Value>> {
        let mut url = self.url(&["v1", "sprites", sprite, "services", name, op]);
        if secs.is_some() {
            let key = if op == "stop" { "timeout" } else { "duration" };
            url.query_pairs_mut().append_pair(key, &follow_query(secs));
        }
        lines(&self.bytes(self.http.post(url)).await?)
    }

    pub async fn signal_service(&self, sprite: &str, name: &str, signal: &str) -> Result<()> {
        let url = self.url(&["v1", "sprites", sprite, "services", "signal"]);
        let body = serde_json::json!({ "name": name, "signal": signal });
        self.empty(self.http.post(url).json(&body)).await
    }

    pub async fn service_logs(&self, sprite: &str, name: &str) -> Result<Vec<Value>> {
        let url = self.url(&["v1", "sprites", sprite, "services", name, "logs"]);
        lines(&self.bytes(self.http.get(url)).await?)
    }
}

impl Client {
    /// `POST /v1/sprites/{name}/tasks`: a hold that keeps the box running.
    pub async fn hold_task(&self, sprite: &str, name: Option<&str>, ttl: &str) -> Result<Value> {
        let url = self.url(&["v1", "sprites", sprite, "tasks"]);
        let body = serde_json::json!({ "name": name, "ttl": ttl });
        self.json(self.http.post(url).json(&body)).await
    }

    /// `PUT /v1/sprites/{name}/tasks/{id}`: the heartbeat that extends it.
    pub async fn extend_task(&self, sprite: &str, id: &str, ttl: &str) -> Result<Value> {
        let url = self.url(&["v1", "sprites", sprite, "tasks", id]);
        let body = serde_json::json!({ "ttl": ttl });
        self.json(self.http.put(url).json(&body)).await
    }

    pub async fn list_tasks(&self, sprite: &str) -> Result<Value> {
        let url = self.url(&["v1", "sprites", sprite, "tasks"]);
        self.json(self.http.get(url)).await
    }

    pub async fn release_task(&self, sprite: &str, id: &str) -> Result<()> {
        let url = self.url(&["v1", "sprites", sprite, "tasks", id]);
        self.empty(self.http.delete(url)).await
    }
}
