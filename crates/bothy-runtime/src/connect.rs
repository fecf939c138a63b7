//! TCP connections into a box's network namespace. The edge reaches a
//! box's web service on the box's own loopback: nothing of the box is
//! published on the host, and a box cannot make the daemon connect to
//! anything but its own namespace.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::RuntimeError;

/// The network namespace of `pid`, opened. The caller checks afterwards
/// that `pid` is still the process it meant (a reused pid would name some
/// other namespace); this refuses the daemon's own namespace outright, so
/// even a mistake there cannot reach the host's loopback.
pub(crate) fn open_netns(pid: i32) -> Result<File, RuntimeError> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| RuntimeError::NotFound(format!("box pid {pid} is gone: {e}")))?;
    let own = std::fs::metadata("/proc/self/ns/net")?;
    let theirs = ns.metadata()?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(RuntimeError::Failed(format!(
            "pid {pid} shares the daemon's network namespace; refusing to connect through it"
        )));
    }
    Ok(ns)
}

/// A non-blocking TCP socket for `addr`'s family, made in namespace `ns`
/// on a thread of its own that enters it and ends: a socket keeps the
/// namespace it was made in, the daemon's threads keep theirs.
fn socket_in(ns: File, addr: SocketAddr) -> Result<OwnedFd, RuntimeError> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    std::thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| RuntimeError::Failed(format!("cannot enter the box's network: {e}")))?;
        socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| RuntimeError::Failed(format!("cannot make a socket in the box: {e}")))
    })
    .join()
    .map_err(|_| RuntimeError::Failed("making a socket in the box panicked".into()))?
}

/// Connects to `addr` as seen from namespace `ns`. Connection refused and
/// the like come back as the `io::Error` they are.
pub(crate) async fn connect_in(
    ns: File,
    addr: SocketAddr,
) -> Result<std::io::Result<tokio::net::TcpStream>, RuntimeError> {
    let fd = socket_in(ns, addr)?;
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    Ok(async {
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
    .await)
}
