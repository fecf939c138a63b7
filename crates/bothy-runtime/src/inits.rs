//! Whether a box's init is still alive, without asking crun.
//!
//! `crun state` is a fork and exec of the daemon: 10-20 ms, growing with the
//! daemon's memory, and every API call that needs a running box (exec,
//! checkpoint) asks first. The runtime keeps a pidfd of each init it started
//! instead: it becomes readable when the process exits, and it cannot be
//! fooled by a reused pid.

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

#[derive(Default)]
pub(crate) struct Inits(Mutex<HashMap<String, (i32, OwnedFd)>>);

impl Inits {
    /// Remembers box `id`'s init `pid`. Best effort: without a pidfd the
    /// runtime asks crun.
    pub(crate) fn started(&self, id: &str, pid: i32) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; nothing else is read or written.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if fd < 0 {
            map.remove(id);
            return;
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        map.insert(
            id.to_string(),
            (pid, unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        );
    }

    pub(crate) fn stopped(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The pid of box `id`'s init if this runtime knows it alive.
    pub(crate) fn live_pid(&self, id: &str) -> Option<i32> {
        let pid = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(id)?.0;
        (self.alive(id) == Some(true)).then_some(pid)
    }

    /// `Some(alive)` when this runtime started the init; `None` when it
    /// cannot tell.
    pub(crate) fn alive(&self, id: &str) -> Option<bool> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (_, fd) = map.get(id)?;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => Some(true),
            Ok(_) => Some(false),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_child_reads_as_dead_and_a_live_one_as_alive() {
        let inits = Inits::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        inits.started("b", child.id() as i32);
        assert_eq!(inits.alive("b"), Some(true));
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert_eq!(inits.alive("b"), Some(false));
        inits.stopped("b");
        assert_eq!(inits.alive("b"), None);
    }
}
