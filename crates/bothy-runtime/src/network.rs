//! A box's network: its own network namespace, connected to the outside by
//! pasta (user-mode TCP/UDP forwarding, Debian package `passt`).
//!
//! pasta copies the host's address and default route into the namespace, so
//! the box has egress and nothing else (the egress module's filter keeps the
//! host's own addresses, its networks and private ranges out of reach):
//! - no port forwarding in either direction (`-t/-u/-T/-U none`): nothing in
//!   the box is published on the host, and the box cannot reach ports bound
//!   to the host's loopback;
//! - `--no-map-gw`: the gateway address is not a door to the host either;
//! - DNS: the box's resolver is [`DNS_ADDR`], served by the daemon's
//!   forwarder inside the namespace (the dns module), which applies the
//!   box's network policy. pasta still forwards [`DNS_ADDR`] to the host's
//!   nameserver, but the forwarder's local address takes the box's queries
//!   first.
//!
//! pasta parses frames the box crafts, so it holds nothing of the host: it
//! joins the box's user namespace (`--userns`) before it opens the box's
//! network namespace, so whatever capabilities it keeps are the box's own,
//! never the host's; then it confines itself (drops capabilities, installs a
//! seccomp filter, moves into an empty mount namespace). It starts as uid 0
//! (`--runas 0`) only because joining the box's user namespace needs the
//! namespace owner's rights.
//!
//! pasta does not exit when the namespace's processes die; its pid file lets
//! stop() end it.
//!
//! Memory: pasta (Debian 12's passt) zero-fills about 28 MiB of static
//! packet buffers at start whatever the traffic (TCP frames 2 × 8 MiB, UDP
//! frames 2 × 2 MiB, tap packet pools 4.5 MiB, the ICMP id map 2 MiB, port
//! tables 1 MiB), and no option sizes them (`-4` and `--no-icmp` would save
//! 11 MiB at the price of IPv6 egress and ping). It is started opted in to
//! same-page merging (the ksm module), which gives the zero pages back:
//! about 2.2 MiB private per box instead of 29.

use std::path::{Path, PathBuf};

use crate::RuntimeError;
use crate::{egress, host, ksm};

/// The nameserver address a box uses; answered by the dns module.
pub(crate) const DNS_ADDR: &str = "169.254.0.53";

pub(crate) struct Pasta {
    pid_file: PathBuf,
}

impl Pasta {
    pub fn new(pid_file: PathBuf) -> Self {
        Self { pid_file }
    }

    /// Starts pasta for the network namespace of `pid` (the box's init).
    /// Returns once the namespace is configured (pasta forks after that).
    pub async fn start(&self, pid: i32, deny_by_default: bool) -> Result<(), RuntimeError> {
        self.stop()?;
        // `crun run --detach` returns before the box's init has exec'd; until
        // then the process is not dumpable and pasta (which confines itself
        // early) may be refused its namespace. That passes within moments.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match self.try_start(pid, deny_by_default).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if tokio::time::Instant::now() < deadline
                        && Path::new(&format!("/proc/{pid}")).exists() =>
                {
                    tracing::debug!("pasta not started yet, retrying: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_start(&self, pid: i32, deny_by_default: bool) -> Result<(), RuntimeError> {
        // The filter first: the namespace has no route out until pasta runs.
        egress::install(pid, deny_by_default).await?;
        let mut cmd = host::command(&host::PASTA);
        // Its zeroed buffers go back to the kernel's zero page.
        ksm::opt_in(&mut cmd);
        host::run(
            cmd.args(["--config-net", "--quiet", "--runas", "0"])
                .arg("--userns")
                .arg(format!("/proc/{pid}/ns/user"))
                .arg("--netns")
                .arg(netns_path(pid))
                .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
                .arg("--no-map-gw")
                .args(["--dns-forward", DNS_ADDR])
                .arg("--pid")
                .arg(&self.pid_file),
        )
        .await?;
        Ok(())
    }

    /// The pid of our pasta serving the box whose init is `box_pid`, if alive.
    /// The pid is checked against the process's command line so a recycled
    /// pid is never mistaken for (or killed as) our pasta.
    pub fn running_pid(&self, box_pid: Option<i32>) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if pid <= 1 {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_pasta = args
            .first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "pasta"));
        let pid_file = self.pid_file.to_string_lossy();
        let ours = args.iter().any(|a| *a == *pid_file);
        let same_box = match box_pid {
            Some(b) => args.iter().any(|a| *a == netns_path(b)),
            None => true,
        };
        (is_pasta && ours && same_box).then_some(pid)
    }

    /// Kills our pasta if it runs. Idempotent.
    pub fn stop(&self) -> Result<(), RuntimeError> {
        if let Some(pid) = self.running_pid(None) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match std::fs::remove_file(&self.pid_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn netns_path(pid: i32) -> String {
    format!("/proc/{pid}/ns/net")
}
