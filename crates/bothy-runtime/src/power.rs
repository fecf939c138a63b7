//! Sleeping boxes. A warm box's processes are frozen in their cgroup (the
//! freezer: memory, network namespace, pasta and open connections kept;
//! the same processes go on, with the same pids, when it is thawed). A box
//! that is off has no processes and its disk is detached (`Runtime::stop`).
//!
//! A frozen box stays frozen across a restart of the daemon: adopting it
//! (`Runtime::start`) does not thaw it; only [`Runtime::thaw`] does.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::{check_name, Runtime, RuntimeError};

/// What a box is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Running,
    /// Its processes are frozen.
    Frozen,
    /// No processes (or a dead disk): the next start boots it.
    Off,
}

/// Boxes known to be frozen, so a status check need not ask crun.
#[derive(Default)]
pub(crate) struct FrozenSet(Mutex<HashSet<String>>);

impl FrozenSet {
    pub(crate) fn set(&self, id: &str, frozen: bool) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if frozen {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }
}

impl Runtime {
    /// Freezes a running box's processes; a box that does not run is left
    /// as it is.
    pub async fn freeze(&self, id: &str) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let cid = self.container_id(id);
        match self.crun.state(&cid).await? {
            Some(s) if s.status == "running" => {
                self.crun.pause(&cid).await?;
                self.frozen.set(id, true);
            }
            Some(s) if s.status == "paused" => self.frozen.set(id, true),
            _ => {}
        }
        Ok(())
    }

    /// Lets a frozen box's processes go on: by the cgroup's freezer file
    /// when there is one (a wake is on the path of the caller's first
    /// command; two runs of crun cost more than the thaw), else by crun.
    pub async fn thaw(&self, id: &str) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        if self.frozen.contains(id) && self.thaw_by_cgroup(id) {
            self.frozen.set(id, false);
            return Ok(());
        }
        let cid = self.container_id(id);
        if let Some(s) = self.crun.state(&cid).await? {
            if s.status == "paused" {
                self.crun.resume(&cid).await?;
            }
        }
        self.frozen.set(id, false);
        Ok(())
    }

    /// Writes the cgroup's freezer file; whether it could.
    fn thaw_by_cgroup(&self, id: &str) -> bool {
        let path = self.cgroup_path(id);
        let v1 = format!("/sys/fs/cgroup/freezer{path}/freezer.state");
        if std::path::Path::new(&v1).exists() {
            return std::fs::write(v1, "THAWED").is_ok();
        }
        let v2 = format!("/sys/fs/cgroup{path}/cgroup.freeze");
        std::path::Path::new(&v2).exists() && std::fs::write(v2, "0").is_ok()
    }

    /// Whether the box runs, is frozen, or is off.
    pub async fn power(&self, id: &str) -> Result<Power, RuntimeError> {
        if !self.is_running(id).await? {
            return Ok(Power::Off);
        }
        Ok(if self.frozen.contains(id) {
            Power::Frozen
        } else {
            Power::Running
        })
    }

    /// CPU time the box's processes have used since it booted; `None` when
    /// the cgroup cannot tell (the box is off).
    pub fn cpu_used(&self, id: &str) -> Option<Duration> {
        let path = self.cgroup_path(id);
        let v1 = format!("/sys/fs/cgroup/cpuacct{path}/cpuacct.usage");
        if let Ok(ns) = std::fs::read_to_string(v1) {
            return ns.trim().parse().ok().map(Duration::from_nanos);
        }
        let v2 = format!("/sys/fs/cgroup{path}/cpu.stat");
        let stat = std::fs::read_to_string(v2).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|us| us.trim().parse().ok())
            .map(Duration::from_micros)
    }
}
