//! The runtime's directories on the host and the cgroups it leaves behind.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::{RuntimeError, UID_SHIFT};

/// The box's init resolves its rootfs path (DIR/boxes/<id>/rootfs) from
/// inside its user namespace, as host uid/gid [`UID_SHIFT`]: every directory
/// on that path must let it through. DIR and DIR/boxes get the search bit
/// for others (no listing); DIR/boxes/<id> is searchable by the boxes' group
/// only, so other host users cannot reach a box's files. DIR/run stays 0700.
pub(crate) fn prepare_data_dir(data_dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(data_dir)?;
    let boxes = data_dir.join("boxes");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&boxes)?;
    std::fs::set_permissions(&boxes, std::fs::Permissions::from_mode(0o711))?;
    let mode = std::fs::metadata(data_dir)?.mode() & 0o7777;
    if mode & 0o001 == 0 {
        tracing::info!(
            "adding the search bit to {} so boxes can reach their rootfs (mode {:o} -> {:o})",
            data_dir.display(),
            mode,
            mode | 0o001
        );
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode | 0o001))?;
    }
    Ok(())
}

pub(crate) fn make_box_dir(dir: &Path) -> Result<(), RuntimeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o710)
        .create(dir)?;
    std::os::unix::fs::chown(dir, Some(0), Some(UID_SHIFT))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))?;
    Ok(())
}

/// Removes this daemon's parent cgroup (`/bothy-<instance>`) from every
/// hierarchy once no box is left in it; crun removes only the box's own.
/// rmdir fails on a cgroup that still has children or tasks, so this never
/// touches a running box.
pub(crate) fn remove_empty_cgroup_parents(box_cgroup: &str) {
    let Some(parent) = Path::new(box_cgroup.trim_start_matches('/')).parent() else {
        return;
    };
    let root = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![root.join(parent)];
    if let Ok(entries) = std::fs::read_dir(root) {
        candidates.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join(parent)),
        );
    }
    for dir in candidates {
        if dir.is_dir() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
