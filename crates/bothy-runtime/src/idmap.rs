//! Idmapped mounts: a view of a mounted filesystem in which the owners of its
//! files are translated. A box's disk stores disk ids ([`crate::UID_SHIFT`] +
//! k); the box's root is a view of it in which they are the box's host ids
//! (base + k), so no two boxes share host ids while their disks stay
//! interchangeable (checkpoints, forks).
//!
//! The kernel calls (`clone` into a user namespace, `open_tree`,
//! `mount_setattr`, `move_mount`, `umount2`) are raw syscalls kept in this
//! module; the rest of the runtime sees [`mount`] and [`unmount`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// From `<linux/mount.h>` (stable kernel ABI since 5.12).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mounts at `target` (an existing directory) a view of the mount at
/// `source` in which the ids `from..from + count` of its files are
/// `to..to + count`; other ids show as the overflow id. The view keeps the
/// mount flags of `source` (nosuid, nodev).
pub(crate) fn mount(
    source: &Path,
    target: &Path,
    from: u32,
    to: u32,
    count: u32,
) -> io::Result<()> {
    let userns = user_namespace(from, to, count)?;
    let source = c_path(source)?;
    let target = c_path(target)?;
    // SAFETY: `source` is a NUL-terminated path that outlives the call; the
    // returned fd, if any, is owned by nobody else.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(os_error("open_tree"));
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed, the empty path
    // is NUL-terminated, and both fds are open for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(os_error("mount_setattr(MOUNT_ATTR_IDMAP)"));
    }
    // SAFETY: the fd is open, both paths are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(os_error("move_mount"));
    }
    Ok(())
}

/// Unmounts `target`; if it is busy, detaches it lazily. Not mounted is fine.
pub(crate) fn unmount(target: &Path) -> io::Result<()> {
    let path = c_path(target)?;
    // SAFETY: `path` is NUL-terminated and outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(os_error("umount2(MNT_DETACH)"))
            }
        }
        _ => Err(io::Error::new(
            err.kind(),
            format!("umount {}: {err}", target.display()),
        )),
    }
}

/// An fd of a new user namespace whose uid and gid maps are
/// `from to count`, made by a child process that lives only until the fd is
/// open.
fn user_namespace(from: u32, to: u32, count: u32) -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(os_error("pipe2"));
    }
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: a fork-like clone (no new stack, no shared memory). The child
    // runs only async-signal-safe raw syscalls (close, read, _exit) on fds
    // opened before the clone and never returns into Rust code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::SIGCHLD,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(os_error("clone(CLONE_NEWUSER)"));
    }
    if pid == 0 {
        // The child: wait until the parent closes its end of the pipe.
        let mut byte = 0u8;
        // SAFETY: raw syscalls on fds the child inherited; `byte` is valid.
        unsafe {
            libc::close(write.as_raw_fd());
            libc::read(read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let pid = pid as libc::pid_t;
    let result = (|| {
        let map = format!("{from} {to} {count}\n");
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok::<_, io::Error>(OwnedFd::from(ns))
    })();
    drop(write);
    drop(read);
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is valid for the call.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("user namespace for the id map: {e}")))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn os_error(call: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{call}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Needs root and a kernel with idmapped tmpfs (6.3+); skipped otherwise.
    #[test]
    fn a_view_shows_shifted_owners_and_writes_unshifted_ones() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        for d in [&src, &dst] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let tmpfs = c_path(&src).expect("path");
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                tmpfs.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        std::fs::write(src.join("f"), b"x").expect("write");
        std::os::unix::fs::chown(src.join("f"), Some(100_042), Some(100_042)).expect("chown");
        let mounted = mount(&src, &dst, 100_000, 300_000, 65_536);
        let check = || {
            mounted?;
            let meta = std::fs::metadata(dst.join("f"))?;
            assert_eq!((meta.uid(), meta.gid()), (300_042, 300_042));
            // An owner set through the view as host id 300_007 lands as 100_007.
            std::fs::write(src.join("g"), b"y")?;
            std::os::unix::fs::chown(dst.join("g"), Some(300_007), Some(300_007))?;
            let meta = std::fs::metadata(src.join("g"))?;
            assert_eq!((meta.uid(), meta.gid()), (100_007, 100_007));
            Ok::<_, io::Error>(())
        };
        let result = check();
        unmount(&dst).expect("unmount the view");
        unmount(&src).expect("unmount the tmpfs");
        result.expect("the view");
    }
}
