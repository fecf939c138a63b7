//! Non-blocking I/O on the pipe and terminal fds of sessions.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// Registers `fd` with the runtime, switching it to non-blocking mode. Only
/// our end of a pipe or terminal: the process's end stays blocking.
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which owns it until
    // dropped; nothing replaces or closes it meanwhile.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// Reads what is available. Cancel-safe. A terminal whose other side closed
/// reports `EIO`, which callers treat as end of output.
pub(crate) async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| nix::unistd::read(inner.get_ref(), buf).map_err(io::Error::from))
        {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Reads what is available right now without waiting; `WouldBlock` if nothing.
pub(crate) fn read_now(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)
}

pub(crate) async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard
            .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}
