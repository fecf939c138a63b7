//! The daemon's data dir: its permissions, the admin token file, the instance id.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file a running daemon holds locked (flock), so that two daemons never
/// manage the same boxes.
pub const DAEMON_LOCK_FILE: &str = "daemon.lock";
/// How long a starting daemon waits for a dying predecessor's lock.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the data dir's daemon lock, waiting a little for a predecessor
/// that is still exiting. The lock goes with the process (the descriptor is
/// close-on-exec, so the storage process it starts does not inherit it).
pub fn lock_daemon(dir: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(DAEMON_LOCK_FILE))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = f;
                // Polled: flock has no wait with a timeout.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(io::Error::other(format!(
                "another bothy daemon is running on {}; stop it first (or use another --data-dir)",
                dir.display()
            )))
            }
            Err((_, e)) => return Err(e.into()),
        }
    }
}

/// Name of the file holding the admin token made on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Creates the data dir if needed and makes it private to root: it holds the
/// state database and the admin token.
///
/// An existing dir open to others is tightened only if it is empty or already a
/// bothy data dir: `--data-dir /tmp` must not lock everyone out of /tmp.
pub fn prepare(dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode();
    // Others' search bit alone is allowed: the runtime adds it so that boxes
    // (running as shifted uids) can reach their root filesystems.
    if mode & 0o076 != 0 {
        let ours = dir.join("state.db").exists() || fs::read_dir(dir)?.next().is_none();
        if !ours {
            return Err(io::Error::other(format!(
                "{} is open to other users and holds other files; use a dedicated directory for bothy's data",
                dir.display()
            )));
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    dir.canonicalize()
}

/// Short id unique to a data dir, for names of host-wide things (cgroups,
/// container ids): two daemons with different data dirs never collide.
pub fn instance_id(canonical_dir: &Path) -> String {
    let hash = blake3::hash(canonical_dir.as_os_str().as_encoded_bytes());
    hash.to_hex()[..8].to_string()
}

/// Writes `contents` to `path` with mode 0600 so that a crash leaves either the
/// old file or the whole new one.
pub fn write_private_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_and_atomic_token_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = prepare(&tmp.path().join("data")).expect("prepare");
        assert_eq!(
            fs::metadata(&dir).expect("meta").permissions().mode() & 0o777,
            0o700
        );
        let p = dir.join(ADMIN_TOKEN_FILE);
        write_private_atomic(&p, b"one\n").expect("write");
        write_private_atomic(&p, b"two\n").expect("overwrite");
        assert_eq!(fs::read(&p).expect("read"), b"two\n");
        assert_eq!(
            fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let lock = lock_daemon(&dir).expect("first lock");
        let second = lock_daemon(&dir).expect_err("a second daemon is refused");
        assert!(
            second.to_string().contains("another bothy daemon"),
            "{second}"
        );
        drop(lock);
        lock_daemon(&dir).expect("the lock goes with its holder");
        let id = instance_id(&dir);
        assert_eq!(id.len(), 8);
        assert_eq!(id, instance_id(&dir));
        assert_ne!(id, instance_id(Path::new("/var/lib/other")));
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
        fs::write(shared.join("someone-else"), b"x").expect("write");
        assert!(prepare(&shared).is_err());
        // The runtime's search bit for others is kept.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o701)).expect("chmod");
        prepare(&dir).expect("prepare again");
        assert_eq!(
            fs::metadata(&dir).expect("meta").permissions().mode() & 0o777,
            0o701
        );
        assert_eq!(
            fs::metadata(&shared).expect("meta").permissions().mode() & 0o7777,
            0o1777
        );
    }
}
