//! Checks on what the daemon passes in: ids, names and limits end up in
//! paths, cgroup names, hostnames and command lines.

use std::path::Path;

use crate::{BoxSpec, RuntimeError};

/// Ids and instance names end up in paths, cgroup names and command lines.
pub(crate) fn check_name(what: &str, value: &str, max: usize) -> Result<(), RuntimeError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !value.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Failed(format!(
            "invalid {what} {value:?}: use 1 to {max} letters, digits, '-' or '_'"
        )))
    }
}

pub(crate) fn check_spec(spec: &BoxSpec) -> Result<(), RuntimeError> {
    check_name("box id", &spec.id, 32)?;
    let h = &spec.hostname;
    let hostname_ok = !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !h.starts_with('-')
        && !h.ends_with('-');
    if !hostname_ok {
        return Err(RuntimeError::Failed(format!(
            "invalid hostname {h:?}: use 1 to 63 letters, digits and '-'"
        )));
    }
    if spec.ram_mb < 64 {
        return Err(RuntimeError::Failed(format!(
            "a box needs at least 64 MB of memory, not {} MB",
            spec.ram_mb
        )));
    }
    Ok(())
}

/// A unix socket path must fit in sun_path (108 bytes with the NUL).
pub(crate) fn check_socket_path(path: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() >= 108 {
        return Err(RuntimeError::Failed(format!(
            "agent socket path {} is too long for a unix socket: use a shorter data dir",
            path.display()
        )));
    }
    Ok(())
}
