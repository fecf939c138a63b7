//! The crun command line: each daemon keeps its own state dir (`--root`), so
//! daemons on one host never see each other's containers.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::host;
use crate::RuntimeError;

pub(crate) struct Crun {
    root: PathBuf,
    hide_unified: bool,
}

/// The cgroup v2 mount of a "hybrid" host (v1 controllers at
/// /sys/fs/cgroup/*, v2 at /sys/fs/cgroup/unified).
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

/// crun refuses hybrid hosts whose v2 hierarchy owns any controller ("cgroups
/// in hybrid mode not supported"), even when every controller a box needs is
/// on v1. On such hosts crun runs in a private mount namespace without the v2
/// mount, where the host looks like a pure v1 host, which crun supports.
fn hybrid_with_v2_controllers() -> bool {
    std::fs::read_to_string(Path::new(HYBRID_UNIFIED).join("cgroup.controllers"))
        .is_ok_and(|c| !c.trim().is_empty())
}

/// What `crun state` says about a container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct State {
    pub status: String,
    pub pid: i32,
}

impl State {
    /// Processes exist (running, or frozen by pause).
    pub fn is_alive(&self) -> bool {
        (self.status == "running" || self.status == "paused") && self.pid > 0
    }
}

impl Crun {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            hide_unified: hybrid_with_v2_controllers(),
        }
    }

    fn cmd(&self) -> Command {
        self.cmd_with_root(None)
    }

    /// The crun command; with `suid_root`, crun runs in a private mount
    /// namespace where that mount (a box's root) lets setuid programs work.
    ///
    /// A box's disk is mounted on the host `nosuid,nodev`, so that nothing a
    /// box writes to it can raise a host user's privileges. The box's own
    /// root must honour setuid (`su`, `sudo`), and a mount copied into the
    /// box's user namespace keeps its `nosuid` locked: the box could never
    /// clear it. So crun starts from a copy of the host's mounts, private to
    /// it, in which the box's root is remounted without `nosuid` (still
    /// `nodev`); the container's mount namespace is copied from that one. The
    /// copy is gone once crun exits; the host mount never changes.
    fn cmd_with_root(&self, suid_root: Option<&Path>) -> Command {
        let mut cmd = host::command(&host::CRUN);
        cmd.arg("--root").arg(&self.root);
        let hide_unified = self.hide_unified;
        let suid_root = suid_root.and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
        if hide_unified || suid_root.is_some() {
            // SAFETY: only raw syscalls (unshare, mount, umount2) on data
            // prepared before the fork run between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let private = c"/";
                    let unified = c"/sys/fs/cgroup/unified";
                    if libc::unshare(libc::CLONE_NEWNS) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Private first, or the changes below would propagate to
                    // the host.
                    if libc::mount(
                        std::ptr::null(),
                        private.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    if hide_unified && libc::umount2(unified.as_ptr(), libc::MNT_DETACH) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if let Some(root) = &suid_root {
                        // The per-mount flags are replaced: nodev is kept,
                        // nosuid goes; atime flags are kept when none is given.
                        if libc::mount(
                            std::ptr::null(),
                            root.as_ptr(),
                            std::ptr::null(),
                            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NODEV,
                            std::ptr::null(),
                        ) < 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// The container's state, or None if crun does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<State>, RuntimeError> {
        let out = host::output(self.cmd().arg("state").arg(id)).await?;
        if !out.status_ok {
            if out.stderr.contains("does not exist") || out.stderr.contains("No such file") {
                return Ok(None);
            }
            return Err(RuntimeError::Failed(format!(
                "crun state {id} failed: {}",
                out.stderr.trim()
            )));
        }
        let value: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
            RuntimeError::Failed(format!("crun state {id}: unreadable output: {e}"))
        })?;
        Ok(Some(State {
            status: value["status"].as_str().unwrap_or("unknown").to_string(),
            pid: value["pid"].as_i64().unwrap_or(0) as i32,
        }))
    }

    /// Creates and starts the container from `bundle`, whose root is the
    /// mount `rootfs`, detached, with `agent_fd` as its fd 3. crun's own
    /// messages go to `log`.
    pub async fn run(
        &self,
        id: &str,
        bundle: &Path,
        rootfs: &Path,
        log: &Path,
        agent_fd: BorrowedFd<'_>,
    ) -> Result<(), RuntimeError> {
        let raw = agent_fd.as_raw_fd();
        let target = crate::oci::AGENT_FD;
        // Truncate so an error message below is from this attempt.
        std::fs::write(log, b"")?;
        let mut cmd = self.cmd_with_root(Some(rootfs));
        cmd.arg("--log")
            .arg(format!("file:{}", log.display()))
            .arg("run")
            .arg("--detach")
            .arg("--preserve-fds")
            .arg("1")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            // The box's pid 1 inherits crun's stdio. It must not hold pipes to
            // the daemon (it would die of SIGPIPE once the daemon is gone) nor
            // a host file it could grow without bound.
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if raw == target {
                    let flags = libc::fcntl(raw, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd
            .status()
            .await
            .map_err(|e| RuntimeError::Failed(format!("cannot run crun: {e}")))?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(RuntimeError::Failed(format!(
            "crun run {id} failed ({status}): {}",
            tail.join("; ")
        )))
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        host::output(self.cmd().arg("kill").arg(id).arg(signal)).await?;
        Ok(())
    }

    /// Changes the container's memory limit while it runs. The kernel
    /// reclaims down to a lower limit, or refuses when it cannot.
    pub async fn update_memory(&self, id: &str, bytes: u64) -> Result<(), RuntimeError> {
        host::run(
            self.cmd()
                .arg("update")
                .arg("--memory")
                .arg(bytes.to_string())
                .arg(id),
        )
        .await?;
        Ok(())
    }

    pub async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        host::run(self.cmd().arg("pause").arg(id)).await?;
        Ok(())
    }

    pub async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        host::run(self.cmd().arg("resume").arg(id)).await?;
        Ok(())
    }

    /// Deletes the container (killing what is left). Idempotent.
    pub async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let out = host::output(self.cmd().arg("delete").arg("--force").arg(id)).await?;
        if out.status_ok
            || out.stderr.contains("does not exist")
            || out.stderr.contains("No such file")
        {
            Ok(())
        } else {
            Err(RuntimeError::Failed(format!(
                "crun delete {id} failed: {}",
                out.stderr.trim()
            )))
        }
    }

    /// Runs `args` inside the container and returns (exit ok, stdout+stderr).
    pub async fn exec(&self, id: &str, args: &[&str]) -> Result<(bool, String), RuntimeError> {
        let out = host::output(self.cmd().arg("exec").arg(id).args(args)).await?;
        Ok((out.status_ok, format!("{}{}", out.stdout, out.stderr)))
    }
}
