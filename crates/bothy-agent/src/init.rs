//! `bothy init`: pid 1 of a box.
//!
//! [`run`] is the pid-1 wrapper (socket on fd 3, SIGTERM = stop the box);
//! [`serve`] is the agent itself, usable on any listener, which is how tests
//! run it.

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

use crate::reaper;
use crate::server::Agent;

/// The fd on which the daemon passes the listening agent socket.
pub const LISTEN_FD: RawFd = 3;
/// Connections served at once; more are closed right away.
const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (e.g. out of fds) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Where services are defined and logged; `None`: no services.
    pub services: Option<crate::services::Places>,
    /// Become a child subreaper, so orphaned descendants are reparented to
    /// (and reaped by) this process even when it is not pid 1.
    pub subreaper: bool,
    /// On shutdown, signal every process in the pid namespace, not only the
    /// sessions (right for pid 1 only).
    pub whole_namespace: bool,
}

/// Runs the agent with the listening socket inherited as fd 3. Returns only
/// after SIGTERM, once every process in the box was stopped (SIGTERM, up to
/// 5 s, then SIGKILL); the caller should then exit with status 0.
pub fn run() -> io::Result<()> {
    reset_signals();
    // Nothing we hold (fd 3 included) may leak into the box's processes.
    // SAFETY: plain syscall; it only sets flags on our own fds. Kernels
    // before 5.11 lack it: fd 3 is marked below in any case.
    unsafe {
        libc::close_range(LISTEN_FD as u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32);
    }
    // SAFETY: F_SETFD only changes the flags of fd 3, if it is open.
    if unsafe { libc::fcntl(LISTEN_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::other(
            "no agent socket on fd 3: `bothy init` is started by the bothy daemon inside a box, not by hand",
        ));
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this process
    // owns it; the listener takes ownership.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FD) };
    if listener.local_addr().is_err() {
        return Err(io::Error::other(
            "fd 3 is not a unix socket: `bothy init` expects the daemon's agent socket there",
        ));
    }
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = UnixListener::from_std(listener)?;
        let mut terminate = signal(SignalKind::terminate())?;
        let opts = ServeOptions {
            services: Some(crate::services::Places::default()),
            subreaper: true,
            whole_namespace: std::process::id() == 1,
        };
        serve(listener, opts, async move {
            terminate.recv().await;
        })
        .await
    })
}

/// Undoes what our parent may have set and every session would inherit:
/// ignored signals (kept across exec) and a blocked signal mask. SIGPIPE
/// alone stays ignored, for ourselves.
fn reset_signals() {
    for signal in 1..libc::SIGRTMIN() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition is always valid; no
        // handler of ours is installed yet.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // Writes to a pipe or socket whose reader left must fail with EPIPE, not
    // kill pid 1. (Children get SIGPIPE back at its default when spawned.)
    // SAFETY: ignoring SIGPIPE is always valid.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: an empty, initialised set, passed by valid pointers.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Serves the agent protocol on `listener` until `shutdown` resolves, then
/// stops all sessions and returns.
pub async fn serve(
    listener: UnixListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if opts.subreaper {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SIGCHLD ignored (inheritable) would make the kernel reap children
    // itself, and sessions would never learn their exit status.
    // SAFETY: restoring the default disposition is always valid.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    reaper::start()?;
    let agent = Agent::new(opts.services.clone().map(crate::services::Supervisor::open));
    if let Some(services) = agent.services() {
        services.start_all();
    }
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                        tracing::warn!("too many agent connections; refusing one");
                        continue;
                    };
                    let agent = Arc::clone(&agent);
                    tokio::spawn(async move {
                        agent.serve_connection(stream).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    // Services first, so none is started again while the box stops.
    if let Some(services) = agent.services() {
        services.stop_all();
    }
    agent.shutdown(opts.whole_namespace).await;
    // Attached clients are owed their sessions' exit frames: let the
    // connections that carry them finish, for a bounded time.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_GRACE, connections.acquire_many(all)).await;
    Ok(())
}

/// How long a stopping agent waits for connections to deliver final frames.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
