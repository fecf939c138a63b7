//! One exec session: a process (group) with its output buffer, its exit
//! status and at most one attached client.
//!
//! Tasks around a session share it through an `Arc`: one reader per output fd
//! fills the buffer, the attached connection drains it, the exit watcher
//! records the status from the reaper. They wake each other through one
//! `watch` channel ("something changed, look again").

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

use crate::fdio;
use crate::outbuf::{OutBuf, Stream};
use crate::proto::{Input, SessionInfo};
use crate::pty;

/// Output kept per session while nobody reads it, and the point at which an
/// attached but slow client makes us stop reading the process's output.
pub(crate) const OUTPUT_BUFFER: usize = 1 << 20;
/// Largest output frame sent to a client.
const MAX_BATCH: usize = 256 * 1024;
/// How long after the process ended we still wait for output that is not in
/// the pipes yet. A background child holding the pipes open would otherwise
/// keep the session from ever reporting its exit.
const EXIT_GRACE: Duration = Duration::from_millis(100);
/// Output still taken after [`EXIT_GRACE`] (see [`Session::read_output`]).
const DRAIN_AFTER_EXIT: usize = OUTPUT_BUFFER;
/// Highest signal number a client may send.
pub(crate) const SIGNAL_MAX: i32 = 64;
/// Longest command or directory string reported in a [`SessionInfo`].
const MAX_INFO_STRING: usize = 512;

pub(crate) type SharedFd = Arc<AsyncFd<OwnedFd>>;

pub(crate) struct Session {
    pub id: String,
    pub pid: i32,
    pub tty: bool,
    command: String,
    workdir: String,
    created_ms: u64,
    /// How long to keep running with no client; `None`: forever.
    linger: Option<Duration>,
    /// The terminal's master side (TTY sessions), for resizing.
    terminal: Option<SharedFd>,
    state: Mutex<State>,
    changed: watch::Sender<()>,
}

struct State {
    out: OutBuf,
    last_activity_ms: u64,
    attachment: Option<Attachment>,
    next_generation: u64,
    /// Bumped on every detach, so a pending linger timer knows whether the
    /// session was re-attached (and detached again) meanwhile.
    detach_epoch: u64,
    exit_code: Option<i32>,
    exited_at: Option<Instant>,
    /// Output fds still being read.
    open_outputs: usize,
    stdin: Option<SharedFd>,
}

struct Attachment {
    generation: u64,
    /// Dropped when another client takes over, which ends this one's stream.
    _evict: oneshot::Sender<()>,
}

/// A client's hold on a session.
pub(crate) struct Attached {
    pub generation: u64,
    /// Resolves when another client takes the session over.
    pub evicted: oneshot::Receiver<()>,
}

/// What an attached client should get next.
pub(crate) enum Next {
    Data(Stream, Vec<u8>),
    Exit(i32),
    /// Nothing yet: wait for a change.
    Idle,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn truncated(s: String) -> String {
    if s.len() <= MAX_INFO_STRING {
        return s;
    }
    let mut end = MAX_INFO_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Session {
    /// A session attached to the client that spawned it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        pid: i32,
        command: String,
        workdir: String,
        tty: bool,
        linger: Option<Duration>,
        terminal: Option<SharedFd>,
        stdin: Option<SharedFd>,
        open_outputs: usize,
    ) -> (Arc<Self>, Attached) {
        let (evict, evicted) = oneshot::channel();
        let now = now_ms();
        let session = Arc::new(Self {
            id,
            pid,
            tty,
            command: truncated(command),
            workdir: truncated(workdir),
            created_ms: now,
            linger,
            terminal,
            state: Mutex::new(State {
                out: OutBuf::new(OUTPUT_BUFFER),
                last_activity_ms: now,
                attachment: Some(Attachment {
                    generation: 0,
                    _evict: evict,
                }),
                next_generation: 1,
                detach_epoch: 0,
                exit_code: None,
                exited_at: None,
                open_outputs,
                stdin,
            }),
            changed: watch::Sender::new(()),
        });
        let attached = Attached {
            generation: 0,
            evicted,
        };
        (session, attached)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is complete before anything can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        self.changed.send_replace(());
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    pub(crate) fn info(&self) -> SessionInfo {
        let st = self.state();
        SessionInfo {
            id: self.id.clone(),
            command: self.command.clone(),
            workdir: self.workdir.clone(),
            tty: self.tty,
            created_ms: self.created_ms,
            last_activity_ms: st.last_activity_ms,
            attached: st.attachment.is_some(),
            pid: self.pid,
            exit_code: st.exit_code,
        }
    }

    pub(crate) fn exit_code(&self) -> Option<i32> {
        self.state().exit_code
    }

    pub(crate) fn exited_at(&self) -> Option<Instant> {
        self.state().exited_at
    }

    /// Attaches a new client, taking over from the current one if any.
    pub(crate) fn attach(&self) -> Attached {
        let (evict, evicted) = oneshot::channel();
        let mut st = self.state();
        let generation = st.next_generation;
        st.next_generation += 1;
        st.attachment = Some(Attachment {
            generation,
            _evict: evict,
        });
        drop(st);
        self.wake();
        Attached {
            generation,
            evicted,
        }
    }

    /// Detaches the client of `generation` if it is still the attached one.
    /// Returns the detach epoch when a linger timer should be started.
    pub(crate) fn detach(&self, generation: u64) -> Option<(u64, Duration)> {
        let mut st = self.state();
        if st.attachment.as_ref().map(|a| a.generation) != Some(generation) {
            return None;
        }
        st.attachment = None;
        st.detach_epoch += 1;
        let epoch = st.detach_epoch;
        let running = st.exit_code.is_none();
        drop(st);
        self.wake();
        match self.linger {
            Some(linger) if running => Some((epoch, linger)),
            _ => None,
        }
    }

    /// Ends the process group if nobody attached since detach `epoch`.
    pub(crate) fn expire(&self, epoch: u64) {
        let st = self.state();
        if st.attachment.is_none() && st.detach_epoch == epoch && st.exit_code.is_none() {
            drop(st);
            tracing::debug!(session = %self.id, "no client came back; killing the session");
            self.signal(libc::SIGKILL);
        }
    }

    /// Sends `signal` to the session's process group while it runs.
    pub(crate) fn signal(&self, signal: i32) {
        if self.exit_code().is_some() {
            // The pid may belong to someone else by now.
            return;
        }
        // SAFETY: plain syscall; a negative pid addresses the process group the
        // session leader made with setsid().
        unsafe {
            libc::kill(-self.pid, signal);
        }
    }

    pub(crate) fn set_exited(&self, code: i32) {
        let mut st = self.state();
        st.exit_code = Some(code);
        st.exited_at = Some(Instant::now());
        st.stdin = None;
        drop(st);
        self.wake();
    }

    /// Resolves once the process has ended.
    pub(crate) async fn wait_exit(&self) {
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            if self.exit_code().is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves [`EXIT_GRACE`] after the process ended.
    async fn exit_grace_over(&self) {
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(at) = self.exited_at() {
                tokio::time::sleep_until((at + EXIT_GRACE).into()).await;
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Waits while an attached client has a full buffer to drain (backpressure).
    async fn wait_for_room(&self, rx: &mut watch::Receiver<()>) {
        loop {
            rx.borrow_and_update();
            {
                let st = self.state();
                if st.attachment.is_none() || !st.out.is_full() {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn push_output(&self, stream: Stream, data: &[u8]) {
        let mut st = self.state();
        let data = Bytes::copy_from_slice(data);
        if st.attachment.is_some() {
            st.out.push(stream, data);
        } else {
            st.out.push_dropping_oldest(stream, data);
        }
        st.last_activity_ms = now_ms();
        drop(st);
        self.wake();
    }

    pub(crate) fn next_for_client(&self) -> Next {
        let mut st = self.state();
        if let Some((stream, data)) = st.out.pop_batch(MAX_BATCH) {
            drop(st);
            // Room in the buffer: a reader may be waiting for it.
            self.wake();
            return Next::Data(stream, data);
        }
        match st.exit_code {
            Some(code) if st.open_outputs == 0 => Next::Exit(code),
            _ => Next::Idle,
        }
    }

    /// Feeds client input to the process.
    pub(crate) async fn input(&self, input: Input) {
        match input {
            Input::Stdin(data) => {
                let stdin = {
                    let mut st = self.state();
                    st.last_activity_ms = now_ms();
                    st.stdin.clone()
                };
                if let Some(stdin) = stdin {
                    if let Err(e) = fdio::write_all(&stdin, &data).await {
                        // The process closed its stdin or ended: drop the input,
                        // as a pipe to a finished reader would.
                        tracing::debug!(session = %self.id, error = %e, "stdin write failed");
                        if !self.tty {
                            self.state().stdin = None;
                        }
                    }
                }
            }
            Input::StdinEof => {
                if !self.tty {
                    self.state().stdin = None;
                }
            }
            Input::Resize { cols, rows } => {
                if let Some(terminal) = &self.terminal {
                    if let Err(e) = pty::resize(terminal.get_ref(), cols, rows) {
                        tracing::debug!(session = %self.id, error = %e, "resize failed");
                    }
                }
            }
            Input::Signal(signal) if (1..=SIGNAL_MAX).contains(&signal) => self.signal(signal),
            Input::Signal(signal) => {
                tracing::debug!(session = %self.id, signal, "client sent a signal number out of range");
            }
        }
    }

    /// Moves the process's output from `fd` into the buffer until end of
    /// output, pausing while the buffer is full and a client is attached.
    ///
    /// Once the process ended, something else may hold the fd open (a
    /// background child): after [`EXIT_GRACE`] only what is already there is
    /// taken, at most [`DRAIN_AFTER_EXIT`] bytes, so the exit gets reported
    /// even if that child never stops writing.
    pub(crate) async fn read_output(self: Arc<Self>, fd: SharedFd, stream: Stream) {
        let mut buf = vec![0u8; 32 * 1024];
        let mut rx = self.subscribe();
        let mut drain_budget = DRAIN_AFTER_EXIT;
        loop {
            self.wait_for_room(&mut rx).await;
            let grace_over = self
                .exited_at()
                .is_some_and(|at| at.elapsed() >= EXIT_GRACE);
            let read = if grace_over {
                match fdio::read_now(&fd, &mut buf) {
                    Ok(n) if n > 0 && drain_budget > 0 => {
                        drain_budget = drain_budget.saturating_sub(n);
                        Ok(n)
                    }
                    _ => break,
                }
            } else {
                tokio::select! {
                    biased;
                    read = fdio::read(&fd, &mut buf) => read,
                    () = self.exit_grace_over() => continue,
                }
            };
            match read {
                Ok(0) => break,
                Ok(n) => self.push_output(stream, &buf[..n]),
                // EIO: the terminal's last user closed it.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => {
                    tracing::debug!(session = %self.id, error = %e, "output read failed");
                    break;
                }
            }
        }
        {
            let mut st = self.state();
            st.open_outputs = st.open_outputs.saturating_sub(1);
        }
        self.wake();
    }
}
