//! The one place that waits for children: it reaps every zombie (sessions and
//! the orphans reparented to us) and hands each session's exit status to it.
//!
//! Process-wide by necessity: `waitpid(-1)` takes any child, so there is one
//! reaper thread per process however many agents run in it. Nothing else may
//! wait for children (no `Child::wait`).

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};

use nix::errno::Errno;
use tokio::sync::oneshot;

struct Registry {
    /// Children whose exit somebody waits for, by pid.
    waiting: BTreeMap<i32, oneshot::Sender<i32>>,
    /// Bumped by every spawn, so a reaper with no children knows when to look again.
    spawns: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    waiting: BTreeMap::new(),
    spawns: 0,
});
static NEW_CHILD: Condvar = Condvar::new();
static START: Once = Once::new();

fn registry() -> MutexGuard<'static, Registry> {
    // The registry stays consistent even if a holder panicked: every update is
    // a single insert/remove.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the reaper thread (once per process).
pub(crate) fn start() -> std::io::Result<()> {
    let mut result = Ok(());
    START.call_once(|| {
        result = std::thread::Builder::new()
            .name("bothy-reaper".into())
            .spawn(reap_forever)
            .map(drop);
    });
    result
}

/// Spawns `cmd` and returns a receiver for its exit code (or 128 + signal).
pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<i32>)> {
    // Holding the registry across the spawn keeps the reaper from reaping the
    // child before it is registered, and from stealing the child std waits for
    // itself when exec fails (std asserts that this wait succeeds).
    let mut reg = registry();
    let child = cmd.spawn()?;
    let (tx, rx) = oneshot::channel();
    // A pid is positive and fits in i32 on Linux.
    reg.waiting.insert(child.id() as i32, tx);
    reg.spawns = reg.spawns.wrapping_add(1);
    NEW_CHILD.notify_all();
    Ok((child, rx))
}

fn reap_forever() {
    loop {
        let seen = registry().spawns;
        // WNOWAIT: learn which child ended without reaping it, so the reaping
        // itself happens under the registry lock (see `spawn`).
        // (libc, not nix: nix refuses statuses of real-time signals.)
        match wait_any_without_reaping() {
            Ok(pid) => reap(pid),
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                let mut reg = registry();
                while reg.spawns == seen {
                    reg = NEW_CHILD.wait(reg).unwrap_or_else(PoisonError::into_inner);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "waitid failed; the reaper stops");
                return;
            }
        }
    }
}

/// Blocks until some child has ended; returns its pid, leaving it a zombie.
fn wait_any_without_reaping() -> Result<i32, Errno> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the call's duration.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: waitid succeeded with WEXITED, so `info` describes a child.
    Ok(unsafe { info.si_pid() })
}

fn reap(pid: i32) {
    let mut reg = registry();
    let mut status = 0;
    // SAFETY: plain syscall; `status` is a valid out-pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc != pid {
        // Already reaped by std after a failed exec.
        return;
    }
    let code = if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    };
    if let Some(tx) = reg.waiting.remove(&pid) {
        // The session may be gone already; then nobody needs the code.
        let _ = tx.send(code);
    }
}
