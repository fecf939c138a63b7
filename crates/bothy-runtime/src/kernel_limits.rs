//! Per-box limits on kernel objects that are counted per user.
//!
//! Every box's user namespace is owned by host root (crun makes it as root),
//! and the kernel charges inotify instances and watches, and new namespaces,
//! to each user namespace on the way up and finally to the namespace's owner
//! in the host's namespace: every box, and root on the host, draw from one
//! count. With the host's defaults (128 inotify instances) one box holding
//! 128 would leave every other box, and the host's own root, with none.
//!
//! So each box gets limits of its own, set in its user namespace where box
//! root cannot raise them (it has no CAP_SYS_RESOURCE), and the host's
//! limits are raised to a floor that many boxes at their limits fit under.

use std::path::Path;

use crate::{host, RuntimeError};

/// A box's inotify instances: twice a host user's default.
pub(crate) const BOX_INOTIFY_INSTANCES: u64 = 256;
/// A box's inotify watches: enough for an editor server and a file watcher
/// on a large repository.
pub(crate) const BOX_INOTIFY_WATCHES: u64 = 65_536;
/// Nested user namespaces of a box with nesting (none without: the seccomp
/// filter refuses them too).
const BOX_USER_NAMESPACES_NESTING: u64 = 1024;

/// The host's own limits are raised to at least these (never lowered): 64
/// boxes at their inotify limits, beside the host's own use.
const HOST_INOTIFY_INSTANCES: u64 = 64 * BOX_INOTIFY_INSTANCES;
const HOST_INOTIFY_WATCHES: u64 = 16 * BOX_INOTIFY_WATCHES;
const _: () = assert!(HOST_INOTIFY_INSTANCES >= 32 * BOX_INOTIFY_INSTANCES);

/// The sysctls of a box's user namespace.
pub(crate) fn box_sysctls(nesting: bool) -> Vec<(&'static str, u64)> {
    let namespaces = if nesting {
        BOX_USER_NAMESPACES_NESTING
    } else {
        0
    };
    vec![
        ("user.max_inotify_instances", BOX_INOTIFY_INSTANCES),
        ("user.max_inotify_watches", BOX_INOTIFY_WATCHES),
        ("user.max_user_namespaces", namespaces),
    ]
}

/// Sets the box's limits in the user namespace of `pid` (its init).
pub(crate) async fn apply_to_box(pid: i32, nesting: bool) -> Result<(), RuntimeError> {
    let mut cmd = host::command_in("user", pid, &host::SYSCTL);
    cmd.args(["-q", "-w"]);
    for (key, value) in box_sysctls(nesting) {
        cmd.arg(format!("{key}={value}"));
    }
    host::run(&mut cmd).await.map(drop)
}

/// Raises the host's per-user inotify limits to the floor. A host whose
/// administrator set them higher keeps its values.
pub(crate) fn raise_host_floor() {
    for (file, floor) in [
        (
            "/proc/sys/fs/inotify/max_user_instances",
            HOST_INOTIFY_INSTANCES,
        ),
        (
            "/proc/sys/fs/inotify/max_user_watches",
            HOST_INOTIFY_WATCHES,
        ),
    ] {
        if let Err(e) = raise(Path::new(file), floor) {
            tracing::warn!(
                "cannot raise {file} to {floor}; boxes may run out of inotify sooner: {e}"
            );
        }
    }
}

fn raise(file: &Path, floor: u64) -> std::io::Result<()> {
    let now: u64 = std::fs::read_to_string(file)?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    if now < floor {
        std::fs::write(file, floor.to_string())?;
        tracing::info!("raised {} from {now} to {floor}", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_namespaces_only_with_nesting() {
        let get = |nesting| {
            box_sysctls(nesting)
                .into_iter()
                .find(|(k, _)| *k == "user.max_user_namespaces")
                .map(|(_, v)| v)
        };
        assert_eq!(get(false), Some(0));
        assert_eq!(get(true), Some(BOX_USER_NAMESPACES_NESTING));
    }
}
