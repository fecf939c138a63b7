//! Pseudo-terminals for TTY sessions.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, unlockpt};

const DEFAULT_COLS: u16 = 80;
const DEFAULT_ROWS: u16 = 24;

/// A new terminal: `(master, slave)`, both close-on-exec, sized `cols`×`rows`
/// (0 means the 80×24 default).
pub(crate) fn open(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    // TIOCGPTPEER opens the slave through the master itself, so no path
    // lookup in /dev/pts can be raced or redirected.
    // SAFETY: ioctl on a valid master fd; the result is a new fd or -1.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    let master = OwnedFd::from(master);
    resize(&master, cols, rows)?;
    Ok((master, slave))
}

/// Sets the terminal size; the kernel sends SIGWINCH to the foreground group.
pub(crate) fn resize(master: &OwnedFd, cols: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: if rows == 0 { DEFAULT_ROWS } else { rows },
        ws_col: if cols == 0 { DEFAULT_COLS } else { cols },
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
