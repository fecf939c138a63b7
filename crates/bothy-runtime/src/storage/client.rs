//! The daemon's side of the storage socket: calls, and starting the storage
//! process when none answers.
//!
//! The storage process is started detached (its own session, stdio on the
//! daemon's log, never waited for), so a daemon that dies or restarts leaves
//! it serving. A daemon that finds a storage process of another build
//! replaces it when it serves no disk, and otherwise keeps using it (the
//! protocol is versioned); draining the boxes lets the next start replace it.

use std::ffi::OsString;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::BufReader;
use tokio::net::UnixStream;

use super::proto::{self, Answer, Hello, Request};
use super::server::{self, ServerConfig};
use crate::RuntimeError;

/// How long a starting storage process may take to answer: it may wait for
/// a dying predecessor's lock (10 s) and open a large block-map database.
const START_PATIENCE: Duration = Duration::from_secs(90);

/// How the storage process is run.
pub enum Launch {
    /// A process of its own: `exe` with `args` (the daemon's mode).
    Process { exe: PathBuf, args: Vec<OsString> },
    /// A task in this process: disks die with it. For tests and tools.
    InProcess(ServerConfig),
}

/// The storage process we talk to: its pid and a pidfd that tells when it
/// is gone.
struct Peer {
    hello: Hello,
    pidfd: Option<OwnedFd>,
}

pub struct StorageClient {
    socket: PathBuf,
    launch: Launch,
    peer: std::sync::Mutex<Option<Peer>>,
    /// One start at a time.
    starting: tokio::sync::Mutex<()>,
    /// Stops an in-process server when the client goes.
    in_process_stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The pid of a storage process asked to exit: its end is no death.
    released: std::sync::atomic::AtomicI32,
}

impl StorageClient {
    pub fn new(socket: PathBuf, launch: Launch) -> Self {
        Self {
            socket,
            launch,
            peer: std::sync::Mutex::new(None),
            starting: tokio::sync::Mutex::new(()),
            in_process_stop: std::sync::Mutex::new(None),
            released: std::sync::atomic::AtomicI32::new(0),
        }
    }

    fn peer(&self) -> std::sync::MutexGuard<'_, Option<Peer>> {
        self.peer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pid of the storage process last talked to, if it is still alive.
    pub fn live_pid(&self) -> Option<i32> {
        let peer = self.peer();
        let p = peer.as_ref()?;
        match &p.pidfd {
            Some(fd) => {
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
                    Ok(0) => Some(p.hello.pid),
                    _ => None,
                }
            }
            // In process: alive as long as we are.
            None => Some(p.hello.pid),
        }
    }

    /// Completes when the storage process last talked to dies: exits
    /// without having been asked to ([`StorageClient::shutdown`]). Waits for
    /// one to be known first (in-process servers never end this way).
    pub async fn gone(&self) {
        loop {
            let watched = {
                let peer = self.peer();
                peer.as_ref().and_then(|p| {
                    let fd = p.pidfd.as_ref()?.try_clone().ok()?;
                    Some((p.hello.pid, fd))
                })
            };
            let watched = match watched {
                Some((pid, _)) if pid == self.released.load(Ordering::SeqCst) => None,
                Some((_, fd)) => Some(fd),
                None => None,
            };
            match watched {
                Some(fd) => {
                    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it
                    // stays open and the same description until it drops.
                    let registered = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            fd,
                            tokio::io::Interest::READABLE,
                        )
                    };
                    match registered {
                        Ok(fd) => {
                            // A pidfd turns readable when its process exits.
                            let _ = fd.readable().await;
                            let pid = self.peer().as_ref().map(|p| p.hello.pid);
                            if pid.is_none_or(|p| p != self.released.load(Ordering::SeqCst)) {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot watch the storage process");
                        }
                    }
                }
                None if matches!(self.launch, Launch::InProcess(_)) => {
                    std::future::pending::<()>().await
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Makes sure a storage process answers (starting one if needed) and
    /// returns who it is.
    pub async fn ensure_started(&self) -> Result<Hello, RuntimeError> {
        match self.call_once::<Hello>(&Request::Hello).await {
            Ok(h) => {
                self.remember(&h);
                Ok(h)
            }
            Err(_) => self.start().await,
        }
    }

    /// Sends `req` and returns the answer, starting the storage process if
    /// none is there.
    pub async fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, RuntimeError> {
        match self.call_once(req).await {
            Err(RuntimeError::Unavailable(_)) => {
                self.start().await?;
                self.call_once(req).await
            }
            other => other,
        }
    }

    /// One call on a fresh connection. `Unavailable` when nobody listens.
    async fn call_once<T: DeserializeOwned>(&self, req: &Request) -> Result<T, RuntimeError> {
        let conn = UnixStream::connect(&self.socket).await.map_err(|e| {
            RuntimeError::Unavailable(format!(
                "the storage process does not answer on {}: {e}",
                self.socket.display()
            ))
        })?;
        let (read, mut write) = conn.into_split();
        proto::write_line(&mut write, req)
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("storage request not sent: {e}")))?;
        let line = proto::read_line(&mut BufReader::new(read))
            .await
            .map_err(|e| RuntimeError::StorageLost(format!("storage answer unreadable: {e}")))?
            .ok_or_else(|| {
                RuntimeError::StorageLost(
                    "the storage process closed the connection without answering (did it die? see the daemon's log)".into(),
                )
            })?;
        match serde_json::from_slice::<Answer>(&line)
            .map_err(|e| RuntimeError::Failed(format!("storage answer malformed: {e}")))?
        {
            Answer::Ok(v) => serde_json::from_value(v)
                .map_err(|e| RuntimeError::Failed(format!("storage answer unexpected: {e}"))),
            Answer::Error(e) => Err(e.into()),
        }
    }

    fn remember(&self, hello: &Hello) {
        let mut peer = self.peer();
        if peer.as_ref().is_some_and(|p| p.hello == *hello) {
            return;
        }
        let pidfd = if hello.pid == std::process::id() as i32 {
            None
        } else {
            pidfd_open(hello.pid)
        };
        *peer = Some(Peer {
            hello: hello.clone(),
            pidfd,
        });
    }

    /// Starts the storage process unless another call just did, and waits
    /// until it answers.
    async fn start(&self) -> Result<Hello, RuntimeError> {
        let _one = self.starting.lock().await;
        if let Ok(h) = self.call_once::<Hello>(&Request::Hello).await {
            self.remember(&h);
            return Ok(h);
        }
        let mut child = match &self.launch {
            Launch::Process { exe, args } => Some(spawn_detached(exe, args)?),
            Launch::InProcess(cfg) => {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                *self
                    .in_process_stop
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(tx);
                let cfg = cfg.clone();
                // A thread and runtime of its own: the caller's runtime may
                // block (a test's current-thread runtime waiting on a
                // cleanup), and the disks must be served meanwhile.
                std::thread::Builder::new()
                    .name("bothy-storage".into())
                    .spawn(move || {
                        let rt = match tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot start the in-process storage server");
                                return;
                            }
                        };
                        let stop = async move {
                            let _ = rx.await;
                        };
                        if let Err(e) = rt.block_on(server::serve(cfg, stop, server::OnStop::AtOnce)) {
                            tracing::error!(error = %e, "in-process storage server failed");
                        }
                    })
                    .map_err(|e| {
                        RuntimeError::Failed(format!("cannot start the storage thread: {e}"))
                    })?;
                None
            }
        };
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            match self.call_once::<Hello>(&Request::Hello).await {
                Ok(h) => {
                    tracing::info!(pid = h.pid, "storage process started");
                    self.remember(&h);
                    return Ok(h);
                }
                Err(e) => {
                    if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        return Err(RuntimeError::Failed(format!(
                            "the storage process exited ({status}) before answering; see the daemon's log"
                        )));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(RuntimeError::Failed(format!(
                            "the storage process did not answer within {START_PATIENCE:?}: {e}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Asks the storage process to exit (it refuses while it serves disks)
    /// and waits until it has.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        let pid = self.live_pid();
        if let Some(p) = pid {
            self.released.store(p, Ordering::SeqCst);
        }
        match self.call_once::<()>(&Request::Shutdown).await {
            // Gone before it answered: what was asked; wait for the exit.
            Ok(()) | Err(RuntimeError::StorageLost(_)) => {}
            Err(RuntimeError::Unavailable(_)) => return Ok(()),
            Err(e) => {
                // It refused (disks in use) and serves on: its death is one.
                self.released.store(0, Ordering::SeqCst);
                return Err(e);
            }
        }
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        while pid.is_some() && self.live_pid().is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Failed(
                    "the storage process did not exit after it was asked to".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for StorageClient {
    fn drop(&mut self) {
        if let Some(tx) = self
            .in_process_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

/// Starts `exe args` in a session of its own, with the daemon's stdout and
/// stderr (its log) and no stdin: a daemon that dies or is restarted leaves
/// it running, and a signal to the daemon's process group does not reach it.
fn spawn_detached(
    exe: &std::path::Path,
    args: &[OsString],
) -> Result<tokio::process::Child, RuntimeError> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        RuntimeError::Failed(format!(
            "cannot start the storage process {}: {e}",
            exe.display()
        ))
    })
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; nothing else is read or written.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
