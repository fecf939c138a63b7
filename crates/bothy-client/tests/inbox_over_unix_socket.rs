//! The in-box client against an axum server on a unix socket, shaped like a
//! box's control socket: what goes over the wire and what the caller sees,
//! including a server that goes away mid-answer as a restoring box does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bothy_api::{Checkpoint, CreateCheckpointRequest, ErrorBody};
use bothy_client::{ClientError, ErrorKind, InBoxClient};
use futures_util::stream::{self, StreamExt};

/// Generous: every answer here is immediate, this only stops a hung test.
const DEADLINE: Duration = Duration::from_secs(30);

/// What the fake box's socket was asked.
#[derive(Default)]
struct Seen {
    queries: Vec<Option<String>>,
    comments: Vec<Option<String>>,
    restores: Vec<String>,
}

type Log = Arc<Mutex<Seen>>;

/// A fake control socket in a temp dir; the dir lives as long as the test.
struct FakeBox {
    _dir: tempfile::TempDir,
    client: InBoxClient,
    seen: Log,
}

async fn fake_box() -> FakeBox {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind the socket");
    let seen = Log::default();
    let router = Router::new()
        .route("/checkpoints", get(list))
        .route("/checkpoint", post(create))
        .route("/checkpoints/{id}/restore", post(restore))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    FakeBox {
        _dir: dir,
        client: InBoxClient::new(socket),
        seen,
    }
}

fn checkpoint(id: &str, comment: Option<&str>, auto: bool) -> Checkpoint {
    Checkpoint {
        id: id.into(),
        create_time: "2025-01-01T00:00:00Z".into(),
        comment: comment.map(str::to_string),
        history: vec![],
        is_auto: auto,
        auto,
        in_object_store: false,
        source_id: None,
        health: String::new(),
    }
}

async fn list(State(seen): State<Log>, RawQuery(query): RawQuery) -> Json<Vec<Checkpoint>> {
    let include_auto = query.as_deref() == Some("include_auto=true");
    seen.lock().expect("log").queries.push(query);
    let mut all = vec![checkpoint("v1", Some("first"), false)];
    if include_auto {
        all.push(checkpoint("v2", None, true));
    }
    Json(all)
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: code.into(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// An NDJSON answer whose body is `chunks`, each sent as it comes.
fn progress<S>(chunks: S) -> Response
where
    S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn lines(text: &'static str) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    stream::iter([Ok(Bytes::from_static(text.as_bytes()))])
}

async fn create(State(seen): State<Log>, body: Bytes) -> Response {
    let req: CreateCheckpointRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    seen.lock().expect("log").comments.push(req.comment.clone());
    match req.comment.as_deref() {
        Some("\u{7}") => refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "comment must be printable characters",
        ),
        Some("disk on fire") => progress(lines(
            "{\"type\":\"info\",\"data\":\"Creating checkpoint\"}\n\
             {\"type\":\"error\",\"error\":\"the disk is on fire\"}\n",
        )),
        // Sent in pieces that split lines, with a blank line between.
        _ => progress(stream::iter(
            [
                "{\"type\":\"info\",\"data\":\"Creating ",
                "checkpoint\"}\n\n{\"type\":\"info\",\"data\":\"made\"}\n{\"type\":\"comp",
                "lete\",\"data\":\"v2\"}\n",
            ]
            .map(|piece| Ok(Bytes::from_static(piece.as_bytes()))),
        )),
    }
}

async fn restore(State(seen): State<Log>, Path(id): Path<String>) -> Response {
    seen.lock().expect("log").restores.push(id.clone());
    let started = "{\"type\":\"info\",\"data\":\"Restoring\"}\n";
    match id.as_str() {
        "v1" => progress(lines(
            "{\"type\":\"info\",\"data\":\"Restoring\"}\n{\"type\":\"complete\",\"data\":\"v3\"}\n",
        )),
        // The box stops before the answer is whole: the connection breaks.
        "v4" => progress(
            lines(started).chain(stream::iter([Err(std::io::Error::other(
                "the box stopped",
            ))])),
        ),
        // Complete, then the answer never ends: the caller must not wait on it.
        "v5" => {
            progress(lines("{\"type\":\"complete\",\"data\":\"v6\"}\n").chain(stream::pending()))
        }
        // Ends cleanly without saying how it went.
        "v7" => progress(lines(started)),
        "v0" => refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "\"v0\" is not a checkpoint id",
        ),
        _ => refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no checkpoint {id}"),
        ),
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the client answers without waiting for more than it needs")
}

async fn failure<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> ClientError {
    within(call).await.expect_err("the call fails")
}

#[tokio::test]
async fn lists_checkpoints_with_and_without_the_automatic_ones() {
    let b = fake_box().await;
    let plain = within(b.client.list_checkpoints(false))
        .await
        .expect("list");
    assert_eq!(plain, vec![checkpoint("v1", Some("first"), false)]);
    let all = within(b.client.list_checkpoints(true)).await.expect("list");
    assert_eq!(
        all.iter()
            .map(|c| (c.id.as_str(), c.is_automatic()))
            .collect::<Vec<_>>(),
        vec![("v1", false), ("v2", true)]
    );
    let seen = b.seen.lock().expect("log");
    assert_eq!(
        seen.queries,
        vec![None, Some("include_auto=true".to_string())]
    );
}

#[tokio::test]
async fn create_reads_the_progress_stream_to_its_id() {
    let b = fake_box().await;
    let id = within(b.client.create_checkpoint(Some("before upgrade"), false))
        .await
        .expect("created");
    assert_eq!(id, "v2");
    let id = within(b.client.create_checkpoint(None, true))
        .await
        .expect("created");
    assert_eq!(id, "v2");
    assert_eq!(
        b.seen.lock().expect("log").comments,
        vec![Some("before upgrade".to_string()), None]
    );
}

#[tokio::test]
async fn an_error_line_fails_the_operation_with_its_message() {
    let b = fake_box().await;
    let e = failure(b.client.create_checkpoint(Some("disk on fire"), false)).await;
    assert_eq!(e.kind(), ErrorKind::Failed, "{e:?}");
    assert_eq!(e.to_string(), "the disk is on fire");
}

#[tokio::test]
async fn a_400_is_a_bad_request_with_the_servers_message() {
    let b = fake_box().await;
    let e = failure(b.client.create_checkpoint(Some("\u{7}"), false)).await;
    assert_eq!(e.kind(), ErrorKind::BadRequest, "{e:?}");
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.to_string(), "comment must be printable characters");
    let e = failure(b.client.restore_checkpoint("v0")).await;
    assert_eq!(e.kind(), ErrorKind::BadRequest, "{e:?}");
}

#[tokio::test]
async fn restore_returns_the_checkpoint_keeping_the_replaced_state() {
    let b = fake_box().await;
    // v5's answer never ends after its complete line: it is read no further.
    for (id, kept) in [("v1", "v3"), ("v5", "v6")] {
        let answer = within(b.client.restore_checkpoint(id)).await;
        assert_eq!(answer.expect("restored"), kept, "restore {id}");
    }
}

#[tokio::test]
async fn restore_of_an_unknown_checkpoint_is_not_found_with_the_servers_message() {
    let b = fake_box().await;
    for id in ["v9", "../v1"] {
        let e = failure(b.client.restore_checkpoint(id)).await;
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.to_string(), format!("no checkpoint {id}"));
    }
    // The id reached the restore route whole, as one path segment.
    assert_eq!(b.seen.lock().expect("log").restores, vec!["v9", "../v1"]);
}

#[tokio::test]
async fn a_server_closing_mid_stream_is_a_disconnect() {
    let b = fake_box().await;
    let e = failure(b.client.restore_checkpoint("v4")).await;
    assert!(matches!(e, ClientError::Disconnected(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Transport);
}

#[tokio::test]
async fn a_server_closing_before_it_answers_is_a_disconnect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind the socket");
    tokio::spawn(async move {
        // Take the request in, then go away as a stopping box's socket does.
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut request).await;
    });
    let e = failure(InBoxClient::new(socket).restore_checkpoint("v1")).await;
    assert!(matches!(e, ClientError::Disconnected(_)), "{e:?}");
}

#[tokio::test]
async fn a_stream_ending_without_an_outcome_is_a_protocol_error() {
    let b = fake_box().await;
    let e = failure(b.client.restore_checkpoint("v7")).await;
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e:?}");
}

#[tokio::test]
async fn no_socket_is_unavailable_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = InBoxClient::new(dir.path().join("api.sock"));
    let e = failure(client.list_checkpoints(false)).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
    assert!(e.to_string().contains("are you root in it?"), "{e}");
    let cause = std::error::Error::source(&e).map(ToString::to_string);
    assert!(
        cause.is_some_and(|c| c.contains("No such file")),
        "the OS's reason is kept: {e:?}"
    );
}
