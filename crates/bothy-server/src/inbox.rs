//! Each box's own control API, a frontend like the HTTP API: on a unix socket
//! that the box sees at [`bothy_api::inbox::ENV_SOCKET`] (`bothy-env` talks
//! to it). The socket is the credential: whoever can connect acts on that one
//! box and nothing else, and only box root can connect (owner = the box's root
//! on the host, mode 0600).
//!
//! Which boxes have a socket follows control's event stream: a box that is
//! created or comes up gets one, a box that is gone loses it.
//!
//! Routes (no auth header; JSON and NDJSON as in the public API):
//! `GET /checkpoints[?include_auto=true]`, `POST /checkpoint {comment?}`,
//! `POST /checkpoints/{id}/restore`. A restore restarts the box, which ends
//! the asking process and its connection; the restore itself runs to the end
//! regardless (control runs it in a task of its own).
//!
//! Box root runs other people's code, so the socket is served as hostile
//! input, and one box can never exhaust the daemon:
//! - at most [`MAX_CONNECTIONS`] connections of a box are open at once; more
//!   wait in the socket's listen backlog, unaccepted, holding no fd of the
//!   daemon, until one closes;
//! - a connection that sends no complete request within the idle timeout
//!   ([`DEFAULT_IDLE_TIMEOUT`]), first or between keep-alive requests, is
//!   closed;
//! - checkpoint create and restore take a token of the box's bucket
//!   ([`BURST`], one more every [`REFILL`]); without one the answer is 429
//!   `rate_limited` with `Retry-After`, and nothing is done.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bothy_api::{Checkpoint, CreateCheckpointRequest};
use bothy_control::{Boxes, Control, EventKind, InboxSocket, RowState, SpriteRow};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::error::{ApiError, ApiResult};
use crate::routes::services as svc;
use crate::routes::{checkpoint_lines, checkpoint_listing, optional_json, restore_lines, ApiJson};

/// Largest request body a box may send.
const MAX_BODY: usize = 64 * 1024;

/// Connections one box may have open on its socket at once. `bothy-env`
/// makes one per command, so 16 lets a box run a dozen of them side by side,
/// while a box that opens thousands costs the daemon 16 fds. Connections
/// past the cap are not accepted until one closes: they wait in the listen
/// backlog (bounded by the kernel, `net.core.somaxconn`), which costs the
/// daemon no fd, and a well-behaved client is served as soon as a slot
/// frees, where accept-and-close would make it fail.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a connection may sit without a complete request (from accept,
/// or from the end of the previous answer on a kept-alive connection), and
/// how long a request body may take once its head arrived. `bothy-env`
/// sends its request at once, so this only ever closes a stalled or hostile
/// client, freeing its slot.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Test knob, read once when the daemon starts: the idle timeout in
/// milliseconds instead of [`DEFAULT_IDLE_TIMEOUT`], so a test need not wait
/// for it. Not meant for production.
pub const IDLE_TIMEOUT_ENV: &str = "BOTHY_INBOX_IDLE_TIMEOUT_MS";

/// Checkpoint creates and restores a box may make in a row. A checkpoint is
/// a copy of the disk's block map and a restore reboots the box: a few in a
/// row are normal (checkpoint, try, restore), hundreds a second would keep
/// the storage process and the box's lock busy for everyone else.
pub const BURST: u32 = 6;
/// One more expensive call is allowed per this much time (6 a minute).
pub const REFILL: Duration = Duration::from_secs(10);

/// The limits of every box's socket.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl Limits {
    /// The defaults, with the idle timeout from [`IDLE_TIMEOUT_ENV`] if set.
    pub fn from_env() -> Self {
        let mut limits = Self::default();
        if let Ok(raw) = std::env::var(IDLE_TIMEOUT_ENV) {
            match raw.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => limits.idle_timeout = Duration::from_millis(ms),
                _ => tracing::warn!(
                    value = %raw,
                    "{IDLE_TIMEOUT_ENV} is not a positive number of milliseconds; ignored"
                ),
            }
        }
        limits
    }
}

/// A token bucket: [`BURST`] tokens, one back every [`REFILL`].
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Self {
            tokens: f64::from(BURST),
            updated: now,
        }
    }

    /// Takes a token, or says how long until there is one.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let earned =
            now.saturating_duration_since(self.updated).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(BURST));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(REFILL.mul_f64(1.0 - self.tokens))
        }
    }
}

/// The rate limit of one box's expensive calls; shared by its socket's
/// connections and kept while the box lives (a restart of the socket server
/// does not refill it).
#[derive(Clone)]
struct RateLimit(Arc<Mutex<Bucket>>);

impl RateLimit {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Bucket::full(Instant::now()))))
    }

    fn take(&self, what: &str) -> ApiResult<()> {
        let mut bucket = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bucket
            .take(Instant::now())
            .map_err(|retry_after| ApiError::RateLimited {
                message: format!(
                    "too many checkpoint creates and restores from this box ({BURST} in a row, then one every {}s); {what} was not done, retry in {}s",
                    REFILL.as_secs(),
                    retry_after.as_secs_f64().ceil()
                ),
                retry_after,
            })
    }
}

/// One box's socket: its server task and its rate limit.
struct Served {
    task: JoinHandle<()>,
    limit: RateLimit,
}

/// The socket servers of all boxes, by box id.
struct Servers {
    limits: Limits,
    boxes: Mutex<HashMap<String, Served>>,
}

impl Servers {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            boxes: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Served>> {
        self.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves box `id`'s socket unless it is served already.
    fn ensure<B: Boxes>(&self, control: &Control<B>, id: &str) {
        let Some(socket) = control.env_socket(id) else {
            return;
        };
        let mut servers = self.lock();
        if servers.get(id).is_some_and(|s| !s.task.is_finished()) {
            return;
        }
        match bind(&socket) {
            Ok(listener) => {
                let limit = servers
                    .remove(id)
                    .map(|s| s.limit)
                    .unwrap_or_else(RateLimit::new);
                let router = router(control.clone(), id, limit.clone(), self.limits);
                let limits = self.limits;
                let id_for_log = id.to_string();
                let task = tokio::spawn(async move {
                    if let Err(e) = serve_socket(listener, router, limits).await {
                        tracing::warn!(box_id = %id_for_log, error = %e, "box control socket stopped");
                    }
                });
                servers.insert(id.to_string(), Served { task, limit });
            }
            Err(e) => {
                tracing::warn!(box_id = id, path = %socket.path.display(), error = %e, "cannot serve the box's control socket; bothy-env will not work in it");
            }
        }
    }

    fn remove(&self, id: &str) {
        if let Some(s) = self.lock().remove(id) {
            s.task.abort();
        }
    }

    fn stop_all(&self) {
        for (_, s) in self.lock().drain() {
            s.task.abort();
        }
    }
}

/// Serves the sockets of every box that is up, following control's events,
/// until `stop` fires.
pub async fn serve<B: Boxes>(
    control: Control<B>,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let servers = Arc::new(Servers::new(limits));
    // Subscribe before reading the boxes: nothing is missed in between.
    let mut events = control.events();
    serve_ready(&control, &servers).await;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => match ev.kind {
                    EventKind::Created | EventKind::Ready | EventKind::Restored => {
                        servers.ensure(&control, &ev.box_id)
                    }
                    EventKind::Gone => servers.remove(&ev.box_id),
                    EventKind::Stopped | EventKind::Checkpointed => {}
                },
                Err(RecvError::Lagged(_)) => serve_ready(&control, &servers).await,
                Err(RecvError::Closed) => break,
            },
            _ = stop.changed() => break,
        }
    }
    servers.stop_all();
}

async fn serve_ready<B: Boxes>(control: &Control<B>, servers: &Servers) {
    match control.store().all_sprites().await {
        Ok(rows) => {
            for row in rows.iter().filter(|r| r.state == RowState::Ready) {
                servers.ensure(control, &row.id);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list boxes to serve their control sockets"),
    }
}

/// Box `id`'s routes.
fn router<B: Boxes>(control: Control<B>, id: &str, limit: RateLimit, limits: Limits) -> Router {
    Router::new()
        .route("/checkpoints", get(list::<B>))
        .route("/checkpoint", post(create::<B>))
        .route("/checkpoints/{id}/restore", post(restore::<B>))
        .route("/services", get(services_list::<B>))
        .route("/services/signal", post(services_signal::<B>))
        .route(
            "/services/{name}",
            get(services_get::<B>)
                .put(services_put::<B>)
                .delete(services_delete::<B>),
        )
        .route("/services/{name}/start", post(services_start::<B>))
        .route("/services/{name}/stop", post(services_stop::<B>))
        .route("/services/{name}/restart", post(services_restart::<B>))
        .route("/services/{name}/logs", get(services_logs::<B>))
        .route("/tasks", post(tasks_hold::<B>).get(tasks_list::<B>))
        .route(
            "/tasks/{id}",
            axum::routing::put(tasks_extend::<B>).delete(tasks_release::<B>),
        )
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| whole_body_in_time(limits.idle_timeout, req, next),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(BoxState {
            control,
            id: id.to_string(),
            limit,
        })
}

/// Accepts connections on one box's socket and serves each over HTTP/1.1,
/// at most `limits.max_connections` at a time, until the listener fails or
/// the task is aborted (which closes every connection: they live in a
/// [`JoinSet`] of this task).
async fn serve_socket(
    listener: tokio::net::UnixListener,
    router: Router,
    limits: Limits,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // A slot first, then accept: past the cap, connections stay in the
        // kernel's backlog instead of costing an fd here.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return Ok(());
        };
        let stream = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => break stream,
                    // The peer went away before the accept, or the daemon
                    // is at its fd limit: not the socket's end.
                    Err(e) if transient(&e) => {
                        tracing::debug!(error = %e, "accept on a box control socket failed");
                        if is_fd_exhaustion(&e) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Err(e) => return Err(e),
                },
                // Reap finished connections while waiting, so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let idle = limits.idle_timeout;
        connections.spawn(async move {
            let _slot = slot;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "box control connection ended");
            }
        });
    }
}

fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error()
        .is_some_and(|n| matches!(Errno::from_raw(n), Errno::EMFILE | Errno::ENFILE))
}

/// An accept error that ends one connection attempt, not the socket.
fn transient(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    is_fd_exhaustion(e)
        || e.raw_os_error().is_some_and(|n| {
            matches!(
                Errno::from_raw(n),
                Errno::ECONNABORTED | Errno::EINTR | Errno::EAGAIN | Errno::ENOBUFS | Errno::ENOMEM
            )
        })
}

/// Reads the whole request body (at most [`MAX_BODY`]) within `limit`
/// before the handler runs: hyper's header read timeout covers only the
/// head, and a client trickling its body would otherwise hold its slot.
async fn whole_body_in_time(limit: Duration, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => ApiError::RequestTimeout(format!(
            "the request body did not arrive within {}s",
            limit.as_secs_f64()
        ))
        .into_response(),
        Ok(Err(e)) if is_length_limit(&e) => ApiError::PayloadTooLarge(format!(
            "request body is larger than {MAX_BODY} bytes; send less"
        ))
        .into_response(),
        // The client broke the connection: it will not read this answer.
        Ok(Err(e)) => {
            ApiError::bad_request(format!("could not read the request body: {e}")).into_response()
        }
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

struct BoxState<B> {
    control: Control<B>,
    id: String,
    limit: RateLimit,
}

// By hand: a derive would require `B: Clone`, but `Control<B>` is a shared handle.
impl<B> Clone for BoxState<B> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
            id: self.id.clone(),
            limit: self.limit.clone(),
        }
    }
}

fn bind(socket: &InboxSocket) -> std::io::Result<tokio::net::UnixListener> {
    let path: &FsPath = &socket.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(socket.uid)),
        Some(nix::unistd::Gid::from_raw(socket.gid)),
    )
    .map_err(std::io::Error::from)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn this_box<B: Boxes>(s: &BoxState<B>) -> ApiResult<SpriteRow> {
    Ok(s.control.sprite_by_id(&s.id).await?)
}

async fn list<B: Boxes>(
    State(s): State<BoxState<B>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    let row = this_box(&s).await?;
    Ok(Json(
        checkpoint_listing(&s.control, &row, raw.as_deref()).await?,
    ))
}

async fn create<B: Boxes>(
    State(s): State<BoxState<B>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    s.limit.take("the checkpoint")?;
    let row = this_box(&s).await?;
    let req: CreateCheckpointRequest = optional_json(body)?;
    checkpoint_lines(&s.control, &row, req).await
}

async fn restore<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = path?;
    s.limit.take("the restore")?;
    let row = this_box(&s).await?;
    restore_lines(&s.control, &row, &id).await
}

// The box's own services and tasks: the same calls as the API's, on this
// box only.

async fn services_list<B: Boxes>(State(s): State<BoxState<B>>) -> ApiResult<Response> {
    svc::call(&s.control, &this_box(&s).await?, svc::Call::List).await
}

async fn services_get<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(name) = path?;
    svc::call(&s.control, &this_box(&s).await?, svc::Call::Get(name)).await
}

async fn services_put<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    ApiJson(body): ApiJson<svc::ServiceBody>,
) -> ApiResult<Response> {
    let Path(name) = path?;
    svc::call(
        &s.control,
        &this_box(&s).await?,
        svc::Call::Put(name, body, raw),
    )
    .await
}

async fn services_delete<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(name) = path?;
    svc::call(&s.control, &this_box(&s).await?, svc::Call::Delete(name)).await
}

async fn service_op<B: Boxes>(
    s: BoxState<B>,
    path: Result<Path<String>, PathRejection>,
    raw: Option<String>,
    op: svc::Op,
) -> ApiResult<Response> {
    let Path(name) = path?;
    svc::call(
        &s.control,
        &this_box(&s).await?,
        svc::Call::Op(name, op, raw),
    )
    .await
}

async fn services_start<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    service_op(s, path, raw, svc::Op::Start).await
}

async fn services_stop<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    service_op(s, path, raw, svc::Op::Stop).await
}

async fn services_restart<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    service_op(s, path, raw, svc::Op::Restart).await
}

async fn services_signal<B: Boxes>(
    State(s): State<BoxState<B>>,
    ApiJson(body): ApiJson<svc::SignalBody>,
) -> ApiResult<Response> {
    svc::call(&s.control, &this_box(&s).await?, svc::Call::Signal(body)).await
}

async fn services_logs<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let Path(name) = path?;
    svc::call(&s.control, &this_box(&s).await?, svc::Call::Logs(name, raw)).await
}

async fn tasks_hold<B: Boxes>(
    State(s): State<BoxState<B>>,
    ApiJson(body): ApiJson<crate::routes::HoldBody>,
) -> ApiResult<Response> {
    let row = this_box(&s).await?;
    let (name, ttl) = body.parts()?;
    let task = s.control.hold_task(&row, name, ttl).await?;
    Ok((axum::http::StatusCode::CREATED, Json(task)).into_response())
}

async fn tasks_list<B: Boxes>(State(s): State<BoxState<B>>) -> ApiResult<Response> {
    let row = this_box(&s).await?;
    Ok(Json(serde_json::json!({ "tasks": s.control.tasks(&row) })).into_response())
}

async fn tasks_extend<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<crate::routes::ExtendBody>,
) -> ApiResult<Response> {
    let Path(id) = path?;
    let row = this_box(&s).await?;
    Ok(Json(s.control.extend_task(&row, &id, body.ttl()?)?).into_response())
}

async fn tasks_release<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = path?;
    let row = this_box(&s).await?;
    s.control.release_task(&row, &id)?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_bucket_allows_a_burst_then_one_per_refill() {
        let start = Instant::now();
        let mut bucket = Bucket::full(start);
        for _ in 0..BURST {
            assert!(bucket.take(start).is_ok());
        }
        let wait = bucket.take(start).expect_err("the burst is spent");
        assert!(
            wait > REFILL - Duration::from_millis(1) && wait <= REFILL,
            "{wait:?}"
        );
        let half = start + REFILL / 2;
        let wait = bucket.take(half).expect_err("half a refill is not a token");
        assert!(wait <= REFILL / 2 + Duration::from_millis(1), "{wait:?}");
        assert!(bucket.take(start + REFILL).is_ok());
        assert!(bucket.take(start + REFILL).is_err());
        // A long pause refills up to the burst, not beyond.
        let later = start + REFILL * 100;
        for _ in 0..BURST {
            assert!(bucket.take(later).is_ok());
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn over_the_limit_is_429_with_retry_after() {
        let limit = RateLimit::new();
        for _ in 0..BURST {
            limit.take("it").expect("within the burst");
        }
        let res = limit
            .take("the checkpoint")
            .expect_err("over the limit")
            .into_response();
        assert_eq!(res.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = res
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        assert!((1..=REFILL.as_secs()).contains(&retry), "{retry}");
    }

    fn test_router(limits: Limits) -> Router {
        Router::new()
            .route(
                "/",
                get(|| async { "ok" }).post(|b: Bytes| async move { b }),
            )
            .layer(axum::middleware::from_fn(
                move |req: Request, next: Next| whole_body_in_time(limits.idle_timeout, req, next),
            ))
    }

    /// Serves `test_router` on a socket in a temp dir; returns its path.
    fn start(limits: Limits) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(serve_socket(listener, test_router(limits), limits));
        (dir, path)
    }

    /// Sends `request` and reads until the server closes or `timeout`.
    fn exchange(stream: &mut UnixStream, request: &[u8], timeout: Duration) -> String {
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        stream.write_all(request).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_cap_wait_for_a_slot() {
        let limits = Limits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(30),
        };
        let (_dir, path) = start(limits);
        tokio::task::spawn_blocking(move || {
            let first = UnixStream::connect(&path).expect("connect");
            let _second = UnixStream::connect(&path).expect("connect");
            // Connects (the backlog takes it) but is not served yet.
            let mut third = UnixStream::connect(&path).expect("connect");
            let early = exchange(&mut third, GET, Duration::from_millis(500));
            assert!(early.is_empty(), "served past the cap: {early}");
            drop(first);
            let late = exchange(&mut third, b"", Duration::from_secs(10));
            assert!(
                late.starts_with("HTTP/1.1 200"),
                "served once a slot frees: {late}"
            );
        })
        .await
        .expect("the client thread");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_slow_clients_are_cut_off() {
        let limits = Limits {
            max_connections: 4,
            idle_timeout: Duration::from_millis(300),
        };
        let (_dir, path) = start(limits);
        tokio::task::spawn_blocking(move || {
            let deadline = Duration::from_secs(10);
            // Silent: closed without an answer.
            let started = std::time::Instant::now();
            let mut silent = UnixStream::connect(&path).expect("connect");
            assert_eq!(exchange(&mut silent, b"", deadline), "");
            assert!(started.elapsed() < deadline, "closed by the server");
            // Served once, then idle on a kept-alive connection: closed.
            let mut kept = UnixStream::connect(&path).expect("connect");
            let answer = exchange(&mut kept, b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", deadline);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("ok"), "{answer}");
            // A body that trickles: 408 in the error shape.
            let mut slow = UnixStream::connect(&path).expect("connect");
            let answer = exchange(
                &mut slow,
                b"POST / HTTP/1.1\r\nHost: box\r\nContent-Length: 10\r\n\r\nab",
                deadline,
            );
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("\"request_timeout\""), "{answer}");
            // A body over the limit: 413.
            let mut big = UnixStream::connect(&path).expect("connect");
            let head = format!(
                "POST / HTTP/1.1\r\nHost: box\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            );
            let mut request = head.into_bytes();
            request.extend(std::iter::repeat_n(b'x', MAX_BODY + 1));
            let answer = exchange(&mut big, &request, deadline);
            assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        })
        .await
        .expect("the client thread");
    }
}
