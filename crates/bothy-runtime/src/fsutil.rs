//! Small filesystem helpers: atomic writes, xattrs, sparse copies, mount
//! table lookups, and writing into a box's rootfs without following the
//! box's symlinks out of it.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Writes `data` to `path` via a temp file and rename, so readers (and a
/// restart after a crash) see the old content or the new, never a part.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = tmp_sibling(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `dir/.name.tmp` for `dir/name`.
pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Makes a rename or create in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn get_xattr(path: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let cpath = cstring(path)?;
    let cname = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(err),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let cpath = cstring(path)?;
    let cname = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `path` is a mount point, from the kernel's mount table.
pub(crate) fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_bytes();
    Ok(table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|field| unescape_mount_field(field) == want)
    }))
}

/// Mount table fields escape space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            let parsed = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(v) = parsed {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Opens directory `rel` of the tree at `root`, resolving every component as
/// if `root` were `/`: a symlink planted by the box (`/etc -> /host/path`)
/// stays inside the box's tree.
pub(crate) fn open_dir_in_root(root: &Path, rel: &str) -> std::io::Result<OwnedFd> {
    let root_fd = File::open(root)?;
    let crel = CString::new(rel).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: open_how is plain data; zeroed is a valid value we then fill in.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;
    // SAFETY: valid dirfd, NUL-terminated path and a properly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            crel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Replaces file `name` in directory `dir` (an fd from [`open_dir_in_root`])
/// with `data`, owned by `uid:gid`, through a temp file and rename so that
/// whatever the box left under that name (a symlink, a FIFO) is replaced,
/// never followed or opened.
pub(crate) fn replace_file_at(
    dir: &OwnedFd,
    name: &str,
    data: &[u8],
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    let tmp =
        CString::new(format!(".{name}.bothy-tmp")).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let cname = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let dfd = dir.as_raw_fd();
    // SAFETY: valid dirfd and NUL-terminated name; failure (ENOENT) is fine.
    unsafe { libc::unlinkat(dfd, tmp.as_ptr(), 0) };
    // SAFETY: valid dirfd and NUL-terminated name; O_EXCL|O_NOFOLLOW create a
    // fresh regular file or fail.
    let fd = unsafe {
        libc::openat(
            dfd,
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let result = (|| {
        file.write_all(data)?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        file.sync_all()?;
        // SAFETY: valid dirfd and NUL-terminated names.
        if unsafe { libc::renameat(dfd, tmp.as_ptr(), dfd, cname.as_ptr()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })();
    if result.is_err() {
        // SAFETY: as above; best-effort cleanup of our own temp file.
        unsafe { libc::unlinkat(dfd, tmp.as_ptr(), 0) };
    }
    result
}

/// Reads file `name` in directory `dir`, up to `limit` bytes, without
/// following a symlink or blocking on a FIFO the box may have put there.
pub(crate) fn read_file_at(
    dir: &OwnedFd,
    name: &str,
    limit: u64,
) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let cname = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: valid dirfd and NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: a new fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    let mut text = String::new();
    file.take(limit).read_to_string(&mut text).ok();
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_unescape_octal() {
        assert_eq!(unescape_mount_field(r"/a\040b"), b"/a b");
        assert_eq!(unescape_mount_field(r"/plain"), b"/plain");
        assert_eq!(unescape_mount_field(r"/end\"), b"/end\\");
    }
}
