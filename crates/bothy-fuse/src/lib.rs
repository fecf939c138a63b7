//! Shows one [`Volume`] to the kernel as a file: a FUSE filesystem whose only
//! entry is the regular file `disk`, `volume.size()` bytes long, mode 0600,
//! owned by root. The runtime attaches that file to a loop device and mounts
//! ext4 from it.
//!
//! Requests are served by a few threads around one `RwLock<Volume>`: reads
//! share it, writes, flushes and punches take it alone. `fsync` and `flush`
//! (close) become [`Volume::flush`], which is what makes a box's fsync
//! durable. `fallocate(PUNCH_HOLE)` (fstrim, `-o discard` through the loop
//! device) and `ZERO_RANGE` become [`Volume::punch_hole`], which frees chunks.
//!
//! If the serving process dies, the mount stays behind with every request
//! failing with `ENOTCONN` ([`is_dead_mount`]); [`force_unmount`] removes it.

mod fs;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bothy_volume::Volume;
use fuser::{Config, INodeNo, MountOption, Notifier, Session, SessionACL};
use nix::mount::MntFlags;

/// Request-serving threads. Reads of cached chunks run in parallel; writes
/// are serialised by the volume lock anyway.
const SERVER_THREADS: usize = 4;
/// How long [`VolumeMount::unmount`] waits for a busy mount to be released.
const BUSY_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("mount point {0:?} must be an existing empty directory")]
    BadMountPoint(PathBuf),
    #[error("mounting the FUSE filesystem at {dir:?} failed: {source}")]
    Mount { dir: PathBuf, source: io::Error },
    #[error("{dir:?} is busy (a loop device or a process still uses the disk file); it was detached lazily and is flushed when released")]
    Busy { dir: PathBuf },
    #[error("unmounting {dir:?} failed: {source}")]
    Unmount { dir: PathBuf, source: io::Error },
    #[error("the FUSE server thread panicked")]
    ServerPanicked,
    #[error(transparent)]
    Volume(#[from] bothy_volume::VolumeError),
}

#[derive(Debug, Clone, Copy)]
pub struct MountOptions {
    /// Open the disk file with `FOPEN_DIRECT_IO`: the FUSE file keeps no page
    /// cache, so data is cached once (by ext4 above the loop device), not
    /// twice. Measured: see BENCHMARKS.md.
    pub direct_io: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self { direct_io: true }
    }
}

/// State shared by the handle and the server threads.
struct Shared {
    /// `None` only after [`VolumeMount::unmount`] took it back.
    volume: RwLock<Option<Volume>>,
    /// Opens of the disk file not yet released: a loop device holds one
    /// until the kernel lets go of it, which lags the detach.
    open_files: AtomicUsize,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Option<Volume>> {
        self.volume.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Option<Volume>> {
        self.volume.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// See [`VolumeMount::open_files`].
#[derive(Clone)]
pub struct OpenFiles(Arc<Shared>);

impl OpenFiles {
    pub fn count(&self) -> usize {
        self.0.open_files.load(Ordering::SeqCst)
    }

    /// Waits until nothing has the disk file open (a detached loop device
    /// releases it asynchronously, once the last user of its filesystem is
    /// gone); whether that happened before `deadline`. Polled: the kernel's
    /// release arrives on a FUSE thread with nobody to notify.
    pub fn wait_released(&self, deadline: Instant) -> bool {
        while self.count() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// A mounted volume. Dropping it unmounts (lazily if busy).
pub struct VolumeMount {
    dir: PathBuf,
    shared: Arc<Shared>,
    notifier: Notifier,
    server: Option<JoinHandle<()>>,
}

impl VolumeMount {
    /// Mounts a FUSE filesystem at `dir` (an existing empty directory) whose only
    /// entry is the regular file `disk` of `volume.size()` bytes, mode 0600 root.
    /// Serves requests on its own threads until unmounted.
    pub fn mount(volume: Volume, dir: &Path, opts: MountOptions) -> Result<Self, FuseError> {
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(FuseError::BadMountPoint(dir.to_path_buf()));
        }
        let size = volume.size();
        let chunk_size = volume.chunk_size();
        let shared = Arc::new(Shared {
            volume: RwLock::new(Some(volume)),
            open_files: AtomicUsize::new(0),
        });
        let filesystem = fs::DiskFs::new(shared.clone(), size, chunk_size, opts.direct_io);
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("bothy".into()),
            MountOption::Subtype("bothy".into()),
            MountOption::RW,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
            MountOption::NoAtime,
        ];
        config.acl = SessionACL::Owner;
        config.n_threads = Some(SERVER_THREADS);
        config.clone_fd = true;
        let mount_err = |source| FuseError::Mount {
            dir: dir.to_path_buf(),
            source,
        };
        // Mounts and answers the kernel's INIT before returning, so the file
        // is usable as soon as this returns.
        let session = Session::new(filesystem, dir, &config).map_err(mount_err)?;
        let notifier = session.notifier();
        let bg = shared.clone();
        let label = dir.display().to_string();
        let server = std::thread::Builder::new()
            .name("bothy-fuse".into())
            .spawn(move || {
                if let Err(e) = session.run() {
                    tracing::error!(dir = %label, %e, "FUSE server stopped with an error");
                }
                // Anything written but not yet fsynced is made durable when the
                // kernel lets go, as a clean shutdown of a disk would.
                if let Some(v) = bg.write().as_mut() {
                    if let Err(e) = v.flush() {
                        tracing::error!(dir = %label, %e, "flushing the volume at unmount failed");
                    }
                }
            })
            .map_err(mount_err)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            shared,
            notifier,
            server: Some(server),
        })
    }

    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(fs::DISK_NAME)
    }

    /// A handle on the count of opens of the disk file that the kernel has
    /// not released yet; it can be waited on without holding the mount.
    pub fn open_files(&self) -> OpenFiles {
        OpenFiles(Arc::clone(&self.shared))
    }

    /// Runs `f` on the volume while mounted (serialised with FUSE requests),
    /// e.g. checkpoint. If `f` changes the content underneath (restore), the
    /// kernel's cached pages of the file are dropped afterwards; the ext4
    /// above must not be mounted then.
    pub fn with_volume<R>(&self, f: impl FnOnce(&mut Volume) -> R) -> R {
        let r = {
            let mut guard = self.shared.write();
            let Some(v) = guard.as_mut() else {
                // The volume is taken only by `unmount(self)`, which consumes
                // the handle, so this cannot be reached.
                unreachable!("volume present while the mount handle lives");
            };
            f(v)
        };
        // Outside the lock: invalidation may wait for writes in flight.
        if let Err(e) = self.notifier.inval_inode(INodeNo(fs::DISK_INO), 0, -1) {
            // ENOENT: the kernel has no cached inode, so nothing is stale.
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!(%e, "invalidating the disk file's page cache failed");
            }
        }
        r
    }

    /// Unmounts (waits for the server threads to end) and gives the volume
    /// back, flushed. If the file is still in use (a loop device attached),
    /// fails with [`FuseError::Busy`] after detaching the mount lazily: the
    /// volume is then flushed and closed when the kernel releases it.
    pub fn unmount(mut self) -> Result<Volume, FuseError> {
        // A loop device detached just before lets go of the file a moment
        // later (its release is asynchronous), so busy is retried briefly.
        let deadline = Instant::now() + BUSY_GRACE;
        let res = loop {
            match nix::mount::umount2(&self.dir, MntFlags::empty()) {
                Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                res => break res,
            }
        };
        match res {
            // EINVAL: already unmounted from outside; the server has ended.
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(nix::errno::Errno::EBUSY) => {
                self.detach_lazily();
                return Err(FuseError::Busy {
                    dir: self.dir.clone(),
                });
            }
            Err(e) => {
                return Err(FuseError::Unmount {
                    dir: self.dir.clone(),
                    source: e.into(),
                })
            }
        }
        if let Some(server) = self.server.take() {
            server.join().map_err(|_| FuseError::ServerPanicked)?;
        }
        let mut volume = self
            .shared
            .write()
            .take()
            .ok_or(FuseError::ServerPanicked)?;
        volume.flush()?;
        Ok(volume)
    }

    fn detach_lazily(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH) {
            tracing::warn!(dir = %self.dir.display(), %e, "lazy unmount failed");
        }
        // The server ends by itself once the kernel releases the file.
        self.server.take();
    }
}

impl Drop for VolumeMount {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        match nix::mount::umount2(&self.dir, MntFlags::empty()) {
            Ok(()) => {
                let _ = server.join();
            }
            Err(_) => {
                self.server = Some(server);
                self.detach_lazily();
            }
        }
    }
}

/// True when `dir` is a FUSE mount whose server died: every request to it
/// fails with `ENOTCONN`. Asks with statfs, which always reaches the server
/// (a stat can be answered from the kernel's attribute cache).
pub fn is_dead_mount(dir: &Path) -> bool {
    let dead = |e: nix::errno::Errno| e == nix::errno::Errno::ENOTCONN;
    nix::sys::statfs::statfs(dir).err().is_some_and(dead)
        || matches!(std::fs::metadata(dir), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Lazily unmounts a (dead) FUSE mount at `dir`. Succeeds when nothing is
/// mounted there, so it can be repeated.
pub fn force_unmount(dir: &Path) -> io::Result<()> {
    match nix::mount::umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
