//! The runtime's directories on the host and the cgroups it leaves behind.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::{RuntimeError, UID_SHIFT};

/// Creates DIR and DIR/boxes. Nothing in them needs to be reachable from a
/// box (its disk is mounted under [`crate::MOUNT_ROOT`]), so the data dir keeps
/// whatever mode its owner gave it.
pub(crate) fn prepare_data_dir(data_dir: &Path) -> Result<(), RuntimeError> {
    for dir in [data_dir.to_path_buf(), data_dir.join("boxes")] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)?;
    }
    Ok(())
}

/// Creates `MOUNT_ROOT/<instance>`, the parent of this daemon's box mount
/// points. Boxes booted by older builds (host ids [`UID_SHIFT`]) have their
/// root here and resolve its path from inside their user namespace, so it
/// must let them through: the directory is 0710 `root:UID_SHIFT`, searchable
/// by that group only, so other host users cannot reach a box's files. Boxes
/// with their own host ids have their root elsewhere (`<instance>.roots`).
pub(crate) fn prepare_mount_dir(mount_dir: &Path) -> Result<(), RuntimeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(mount_dir)?;
    std::os::unix::fs::chown(mount_dir, Some(0), Some(UID_SHIFT))?;
    std::fs::set_permissions(mount_dir, std::fs::Permissions::from_mode(0o710))?;
    Ok(())
}

/// Creates the box dir, 0710 `root:<the box's root group>`.
pub(crate) fn make_box_dir(dir: &Path, box_gid: u32) -> Result<(), RuntimeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o710)
        .create(dir)?;
    std::os::unix::fs::chown(dir, Some(0), Some(box_gid))?;
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
