//! The parent cgroup of all of a daemon's boxes (`/bothy-<instance>`): its
//! memory limit keeps a reserve for the host, the daemon and the storage
//! process that serves the boxes' disks. Boxes together may use the rest;
//! when they want more, the kernel reclaims and kills inside the boxes,
//! never the processes the boxes depend on.

use std::path::Path;

const ROOT: &str = "/sys/fs/cgroup";
const MIB: u64 = 1024 * 1024;

/// What the host keeps for itself: a tenth of its RAM, at least 512 MiB and
/// at most 4 GiB (the daemon and the storage process use tens of MiB; the
/// rest is the host's own and the page cache the storage process needs).
pub(crate) fn boxes_memory_limit(host_bytes: u64) -> u64 {
    let reserve = (host_bytes / 10).clamp(512 * MIB, 4096 * MIB);
    host_bytes.saturating_sub(reserve).max(256 * MIB)
}

/// This host's RAM (`MemTotal`), if /proc/meminfo says.
pub fn host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Makes the parent cgroup of `box_cgroup` (if crun has not yet) with its
/// memory limit, on a v1 memory hierarchy or on cgroup v2. Idempotent; run
/// before every boot because the parent goes away with the last box.
pub(crate) fn limit_parent(box_cgroup: &str, limit: u64) -> std::io::Result<()> {
    let Some(parent) = Path::new(box_cgroup.trim_start_matches('/')).parent() else {
        return Ok(());
    };
    let v1 = Path::new(ROOT).join("memory");
    if v1.join("memory.limit_in_bytes").exists() {
        let dir = v1.join(parent);
        std::fs::create_dir_all(&dir)?;
        return std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string());
    }
    let root = Path::new(ROOT);
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))?;
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(std::io::Error::other(
            "the host's cgroups have no memory controller",
        ));
    }
    std::fs::write(root.join("cgroup.subtree_control"), "+memory")?;
    let dir = root.join(parent);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("memory.max"), limit.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * MIB;

    #[test]
    fn the_reserve_is_a_tenth_within_bounds() {
        assert_eq!(boxes_memory_limit(24 * GIB), 24 * GIB - (24 * GIB / 10));
        assert_eq!(boxes_memory_limit(2 * GIB), 2 * GIB - 512 * MIB);
        assert_eq!(boxes_memory_limit(256 * GIB), 252 * GIB);
        assert_eq!(boxes_memory_limit(100 * MIB), 256 * MIB);
    }

    #[test]
    fn host_memory_is_read() {
        assert!(host_memory().is_some_and(|m| m > 0));
    }
}
