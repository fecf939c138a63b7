//! The agent's side of the protocol: the session table and one task per
//! connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::fdio;
use crate::outbuf::Stream;
use crate::proto::{
    encode_output, ErrorKind, Frame, FrameError, FrameReader, Input, Output, Reply, Request,
    SpawnRequest,
};
use crate::services::{self, Supervisor};
use crate::session::{Attached, Next, Session, SharedFd, SIGNAL_MAX};
use crate::spawn::{self, Stdio3};

/// How long a new connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Non-TTY sessions keep running this long with no client, by default.
const DEFAULT_NON_TTY_LINGER: Duration = Duration::from_secs(10);
/// Finished sessions are kept this long for a client to collect their exit.
const FINISHED_RETENTION: Duration = Duration::from_secs(300);
/// Sessions kept at once, running or finished.
const MAX_SESSIONS: usize = 512;
/// How long sessions get to end after SIGTERM when the agent stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Input frames read ahead of a stdin write that waits for the process.
const INPUT_QUEUE: usize = 16;
/// How long input sent just before a client left may still take to deliver.
const INPUT_DRAIN: Duration = Duration::from_secs(2);
/// The exec WebSocket's non-TTY end-of-stdin message, as the bridge passes it
/// on raw in TTY mode.
const STDIN_EOF_MARKER: u8 = 4;

pub(crate) struct Agent {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next_id: AtomicU64,
    services: Option<Arc<Supervisor>>,
}

struct Refusal(ErrorKind, String);

impl Agent {
    pub(crate) fn new(services: Option<Arc<Supervisor>>) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            services,
        })
    }

    pub(crate) fn services(&self) -> Option<&Arc<Supervisor>> {
        self.services.as_ref()
    }

    /// Answers a service request; `None` when it was a watch (streamed).
    async fn service_request(
        &self,
        request: Request,
        wr: &mut OwnedWriteHalf,
    ) -> Option<Result<Reply, Refusal>> {
        let Some(sup) = &self.services else {
            return Some(Err(Refusal(
                ErrorKind::BadRequest,
                "this agent runs no services".into(),
            )));
        };
        let refused = |r: services::Refused| Refusal(r.0, r.1);
        let done = |r: Result<(), services::Refused>| r.map(|()| Reply::Done).map_err(refused);
        Some(match request {
            Request::ServiceList => Ok(Reply::Services {
                services: sup.list(),
            }),
            Request::ServicePut {
                name,
                def,
                follow_ms,
            } => {
                let events = match sup.put(&name, def) {
                    Ok(rx) => rx,
                    Err(r) => return Some(Err(refused(r))),
                };
                stream_events(events, follow_ms, wr).await;
                return None;
            }
            Request::ServiceDelete { name } => done(sup.delete(&name)),
            Request::ServiceStart { name, follow_ms } => {
                let events = match sup.start(&name) {
                    Ok(rx) => rx,
                    Err(r) => return Some(Err(refused(r))),
                };
                stream_events(events, follow_ms, wr).await;
                return None;
            }
            Request::ServiceStop { name, timeout_ms } => {
                done(sup.stop(&name, timeout_ms.map(Duration::from_millis)))
            }
            Request::ServiceSignal { name, signal } => {
                if !(1..=SIGNAL_MAX).contains(&signal) {
                    Err(Refusal(
                        ErrorKind::BadRequest,
                        format!("{signal} is not a signal number"),
                    ))
                } else {
                    done(sup.signal(&name, signal))
                }
            }
            Request::ServiceLogs { name, max_bytes } => sup
                .log_tail(&name, max_bytes)
                .map(|(text, path)| Reply::Log { text, path })
                .map_err(refused),
            Request::ServiceWatch { name, duration_ms } => {
                let events = match sup.subscribe(&name) {
                    Ok(rx) => rx,
                    Err(r) => return Some(Err(refused(r))),
                };
                stream_events(events, duration_ms, wr).await;
                return None;
            }
            _ => {
                return Some(Err(Refusal(
                    ErrorKind::BadRequest,
                    "not a service request".into(),
                )))
            }
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().get(id).cloned()
    }

    /// Forgets `session` (if the table still holds this very session).
    fn forget(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions();
        if sessions
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.id);
        }
    }

    /// Makes room for one more session by dropping the oldest finished one.
    fn make_room(&self) -> Result<(), Refusal> {
        let mut sessions = self.sessions();
        if sessions.len() < MAX_SESSIONS {
            return Ok(());
        }
        let oldest_finished = sessions
            .values()
            .filter_map(|s| s.exited_at().map(|at| (at, s.id.clone())))
            .min();
        match oldest_finished {
            Some((_, id)) => {
                sessions.remove(&id);
                Ok(())
            }
            None => Err(Refusal(
                ErrorKind::Busy,
                format!("{MAX_SESSIONS} sessions are running; end some before starting more"),
            )),
        }
    }

    fn spawn(self: &Arc<Self>, req: &SpawnRequest) -> Result<(Arc<Session>, Attached), Refusal> {
        self.make_room()?;
        let started = spawn::start(req).map_err(|e| Refusal(ErrorKind::Spawn, e.0))?;
        let pid = started.pid;
        let (terminal, stdin, outputs) = match watch_stdio(started.stdio) {
            Ok(fds) => fds,
            Err(e) => {
                // SAFETY: plain syscall on the group the child just created.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                return Err(Refusal(
                    ErrorKind::Spawn,
                    format!("cannot watch the new process's output: {e}"),
                ));
            }
        };
        let linger = match req.max_run_after_disconnect_ms {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None if req.tty => None,
            None => Some(DEFAULT_NON_TTY_LINGER),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let (session, attached) = Session::new(
            id.clone(),
            pid,
            req.cmd.join(" "),
            started.workdir,
            req.tty,
            linger,
            terminal,
            stdin,
            outputs.len(),
        );
        self.sessions().insert(id, Arc::clone(&session));
        for (fd, stream) in outputs {
            tokio::spawn(Arc::clone(&session).read_output(fd, stream));
        }
        let agent = Arc::clone(self);
        let watched = Arc::clone(&session);
        let exit = started.exit;
        tokio::spawn(async move {
            // The reaper always answers; a dropped sender would mean it died,
            // and then the process's fate is unknown.
            let code = exit.await.unwrap_or(255);
            watched.set_exited(code);
            tokio::time::sleep(FINISHED_RETENTION).await;
            agent.forget(&watched);
        });
        Ok((session, attached))
    }

    /// Serves one connection: one request, and for spawn/attach the session.
    pub(crate) async fn serve_connection(self: Arc<Self>, stream: UnixStream) {
        let (rd, mut wr) = stream.into_split();
        let mut frames = FrameReader::new(rd);
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, frames.next()).await {
            Ok(Ok(Some(Frame::Request(request)))) => request,
            Ok(Ok(None)) => return,
            Ok(Ok(Some(_))) => {
                return refuse(
                    &mut wr,
                    ErrorKind::BadRequest,
                    "the first frame must be a request".into(),
                )
                .await;
            }
            Ok(Err(e)) => {
                return refuse(
                    &mut wr,
                    ErrorKind::BadRequest,
                    format!("bad request frame: {e}"),
                )
                .await;
            }
            Err(_) => {
                return refuse(
                    &mut wr,
                    ErrorKind::BadRequest,
                    format!("no request within {} s", REQUEST_TIMEOUT.as_secs()),
                )
                .await;
            }
        };
        let reply = match request {
            Request::Ping => Reply::Pong,
            Request::List => {
                let mut sessions: Vec<_> = self.sessions().values().map(|s| s.info()).collect();
                sessions.sort_by_key(|s| (s.created_ms, s.id.parse::<u64>().unwrap_or(u64::MAX)));
                Reply::Sessions { sessions }
            }
            Request::Kill { id, signal } => {
                if !(0..=SIGNAL_MAX).contains(&signal) {
                    return refuse(
                        &mut wr,
                        ErrorKind::BadRequest,
                        format!("{signal} is not a signal number (0 to {SIGNAL_MAX})"),
                    )
                    .await;
                }
                match self.get(&id) {
                    Some(session) => {
                        session.signal(signal);
                        Reply::Done
                    }
                    None => return refuse(&mut wr, ErrorKind::NoSuchSession, id).await,
                }
            }
            Request::ServicePut { .. }
            | Request::ServiceDelete { .. }
            | Request::ServiceList
            | Request::ServiceStart { .. }
            | Request::ServiceStop { .. }
            | Request::ServiceSignal { .. }
            | Request::ServiceWatch { .. }
            | Request::ServiceLogs { .. } => match self.service_request(request, &mut wr).await {
                None => return,
                Some(Ok(reply)) => reply,
                Some(Err(Refusal(kind, message))) => return refuse(&mut wr, kind, message).await,
            },
            Request::Fs(req) => return crate::fs::serve(req, frames, wr).await,
            Request::Spawn(req) => {
                return match self.spawn(&req) {
                    Ok((session, attached)) => {
                        self.stream(session, attached, false, frames, wr).await
                    }
                    Err(Refusal(kind, message)) => refuse(&mut wr, kind, message).await,
                };
            }
            Request::Attach { id } => {
                return match self.get(&id) {
                    Some(session) => {
                        let attached = session.attach();
                        self.stream(session, attached, true, frames, wr).await
                    }
                    None => refuse(&mut wr, ErrorKind::NoSuchSession, id).await,
                };
            }
        };
        if let Err(e) = send(&mut wr, &Frame::Reply(reply)).await {
            tracing::debug!(error = %e, "reply not sent");
        }
    }

    /// Streams a session to an attached client until exit, detach or takeover.
    /// `reattached`: the client attached to a session it did not spawn.
    async fn stream(
        &self,
        session: Arc<Session>,
        attached: Attached,
        reattached: bool,
        mut frames: FrameReader<OwnedReadHalf>,
        mut wr: OwnedWriteHalf,
    ) {
        let Attached {
            generation,
            mut evicted,
        } = attached;
        let reply = Frame::Reply(Reply::Session {
            session: session.info(),
        });
        let delivered = match send(&mut wr, &reply).await {
            Err(_) => false,
            Ok(()) => tokio::select! {
                delivered = pump_output(&session, &mut wr) => delivered,
                () = pump_input(&session, &mut frames, reattached) => false,
                _ = &mut evicted => false,
            },
        };
        if let Some((epoch, linger)) = session.detach(generation) {
            let lingering = Arc::clone(&session);
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                lingering.expire(epoch);
            });
        }
        if delivered {
            self.forget(&session);
        }
    }

    /// Stops every session: SIGTERM, a grace period, then SIGKILL. With
    /// `whole_namespace` (pid 1), every other process in the box too.
    pub(crate) async fn shutdown(&self, whole_namespace: bool) {
        let sessions: Vec<_> = self.sessions().values().cloned().collect();
        for s in &sessions {
            s.signal(libc::SIGTERM);
        }
        if whole_namespace {
            // SAFETY: plain syscall; as pid 1, -1 means every other process in
            // our pid namespace.
            unsafe { libc::kill(-1, libc::SIGTERM) };
        }
        let all_ended = async {
            for s in &sessions {
                s.wait_exit().await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, all_ended)
            .await
            .is_err()
        {
            for s in &sessions {
                s.signal(libc::SIGKILL);
            }
        }
        if whole_namespace {
            // SAFETY: as above.
            unsafe { libc::kill(-1, libc::SIGKILL) };
        }
    }
}

type WatchedStdio = (Option<SharedFd>, Option<SharedFd>, Vec<(SharedFd, Stream)>);

/// Registers our ends of the process's stdio: (terminal, stdin, outputs).
fn watch_stdio(stdio: Stdio3) -> std::io::Result<WatchedStdio> {
    let register = |fd| fdio::register(fd).map(Arc::new);
    Ok(match stdio {
        Stdio3::Terminal { master } => {
            let master = register(master)?;
            (
                Some(Arc::clone(&master)),
                Some(Arc::clone(&master)),
                vec![(master, Stream::Stdout)],
            )
        }
        Stdio3::Pipes {
            stdin,
            stdout,
            stderr,
        } => (
            None,
            Some(register(stdin)?),
            vec![
                (register(stdout)?, Stream::Stdout),
                (register(stderr)?, Stream::Stderr),
            ],
        ),
    })
}

/// Sends buffered and live output; returns whether the exit was delivered.
async fn pump_output(session: &Session, wr: &mut OwnedWriteHalf) -> bool {
    let mut changes = session.subscribe();
    loop {
        changes.borrow_and_update();
        match session.next_for_client() {
            Next::Data(stream, data) => {
                let Ok(bytes) = encode_output(stream == Stream::Stderr, &data) else {
                    return false;
                };
                if wr.write_all(&bytes).await.is_err() {
                    return false;
                }
            }
            Next::Exit(code) => {
                let sent = send(wr, &Frame::Output(Output::Exit(code))).await.is_ok();
                let _ = wr.shutdown().await;
                return sent;
            }
            Next::Idle => {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Feeds client input to the session until the client closes the connection
/// or breaks the protocol.
///
/// Frames are read ahead into a small queue while a stdin write waits for
/// the process, so a client that goes away is noticed (and detached) even
/// when the process never reads its stdin. Signals skip the queue, as a
/// signal to a local process does not wait for its pipe to drain.
///
/// A client re-attaching to a TTY session may not know the session's mode
/// before it reads `session_info`, and then sends the non-TTY end-of-stdin
/// byte (sprites-py does, at once): on a terminal that byte is Ctrl-D, which
/// ends an idle shell. So the first stdin of a re-attached TTY session is
/// dropped when it is exactly that one byte.
async fn pump_input(session: &Session, frames: &mut FrameReader<OwnedReadHalf>, reattached: bool) {
    let (queue, mut queued) = mpsc::channel::<Input>(INPUT_QUEUE);
    let mut first_stdin = reattached && session.tty;
    let read = async move {
        loop {
            match frames.next().await {
                Ok(Some(Frame::Input(input @ Input::Signal(_)))) => session.input(input).await,
                Ok(Some(Frame::Input(Input::Stdin(data)))) if first_stdin => {
                    first_stdin = false;
                    if data == [STDIN_EOF_MARKER] {
                        tracing::debug!(session = %session.id, "dropped a stdin EOF marker sent before session_info");
                        continue;
                    }
                    if queue.send(Input::Stdin(data)).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Frame::Input(input))) => {
                    if queue.send(input).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Ok(Some(_)) | Err(_) => {
                    tracing::debug!(session = %session.id, "client sent a frame that is not input; detaching it");
                    return;
                }
            }
        }
    };
    let mut apply = std::pin::pin!(async {
        while let Some(input) = queued.recv().await {
            session.input(input).await;
        }
    });
    tokio::select! {
        () = read => {
            // The client is gone (the queue's sender with it): still deliver
            // what it sent before leaving, if the process takes it soon.
            let _ = tokio::time::timeout(INPUT_DRAIN, apply).await;
        }
        () = &mut apply => {}
    }
}

async fn send(wr: &mut OwnedWriteHalf, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame.encode()?;
    wr.write_all(&bytes).await?;
    Ok(())
}

/// `done` (the client may act now and see what follows), then the events
/// for `follow_ms`, then the end of the connection.
async fn stream_events(
    mut events: tokio::sync::broadcast::Receiver<crate::proto::ServiceEvent>,
    follow_ms: u64,
    wr: &mut OwnedWriteHalf,
) {
    if send(wr, &Frame::Reply(Reply::Done)).await.is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(follow_ms.min(3_600_000));
    loop {
        let event = match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) => break,
            Ok(Ok(event)) => event,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) => break,
        };
        if send(wr, &Frame::Reply(Reply::ServiceEvent { event }))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn refuse(wr: &mut OwnedWriteHalf, kind: ErrorKind, message: String) {
    let _ = send(wr, &Frame::Reply(Reply::Error { kind, message })).await;
    let _ = wr.shutdown().await;
}
