//! Answers a task writes while the client reads them: NDJSON lines (kill,
//! watch) and exec frames (HTTP exec), each item one HTTP chunk.

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

pub const NDJSON: &str = "application/x-ndjson";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Items queued for a slow client before the writer waits.
const QUEUE: usize = 16;

/// The writing end of a streamed answer; dropping it ends the answer.
pub struct Chunks(mpsc::Sender<Bytes>);

impl Chunks {
    /// Sends one chunk; false once the client has gone.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> bool {
        self.0.send(chunk.into()).await.is_ok()
    }

    /// Sends `value` as one NDJSON line; false once the client has gone.
    pub async fn line(&self, value: &impl serde::Serialize) -> bool {
        // The wire types are plain structs: serialising them cannot fail.
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.send(line).await
    }

    /// Completes once the client has gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// A 200 answer of `content_type` whose body is what is sent on the
/// returned [`Chunks`].
pub fn streamed(content_type: &'static str) -> (Chunks, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    let response = ([(CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response();
    (Chunks(tx), response)
}
