//! A box's disk: a volume made from the base image, attached to the host as
//! a mounted filesystem that becomes the container's root.
//!
//! Today a volume is a sparse ext4 file on a loop device. The storage stack
//! will replace what is under the loop device (chunks in an object store,
//! shown as a file on a FUSE mount); the [`Volume`] trait is the seam.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsutil;
use crate::host;
use crate::RuntimeError;

/// A box's disk, seen by the runtime.
pub trait Volume: Send + Sync {
    /// Makes the volume from the base image, `size_bytes` large. Does nothing
    /// if it exists; a crash part-way leaves no volume behind.
    fn create_from_base(
        &self,
        base: &Path,
        size_bytes: u64,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Mounts the volume (if it is not mounted) and returns the mount point.
    fn attach(&self) -> impl Future<Output = Result<PathBuf, RuntimeError>> + Send;
    /// Unmounts the volume and frees what backs the mount. Idempotent.
    fn detach(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Detaches and deletes the volume. Idempotent.
    fn destroy(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Whether the volume is mounted.
    fn is_attached(&self) -> Result<bool, RuntimeError>;
}

/// A sparse ext4 image in the box's dir, mounted through a loop device.
pub struct LoopVolume {
    box_dir: PathBuf,
    mount_point: PathBuf,
}

impl LoopVolume {
    /// The volume of the box whose files live in `box_dir`.
    /// `mount_point` is where `attach` mounts it.
    pub fn new(box_dir: PathBuf, mount_point: PathBuf) -> Self {
        Self {
            box_dir,
            mount_point,
        }
    }
    pub fn disk(&self) -> PathBuf {
        self.box_dir.join("disk.ext4")
    }
    pub fn mount_point(&self) -> PathBuf {
        self.mount_point.clone()
    }

    /// Loop devices backed by our disk file (normally none once unmounted).
    async fn loop_devices(&self) -> Result<Vec<String>, RuntimeError> {
        let disk = self.disk();
        if !disk.exists() {
            return Ok(Vec::new());
        }
        let out = host::run(
            host::command(&host::LOSETUP)
                .arg("-n")
                .arg("-O")
                .arg("NAME")
                .arg("-j")
                .arg(&disk),
        )
        .await?;
        Ok(out
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }
}

impl Volume for LoopVolume {
    async fn create_from_base(&self, base: &Path, size_bytes: u64) -> Result<(), RuntimeError> {
        let disk = self.disk();
        if disk.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.box_dir)?;
        let tmp = fsutil::tmp_sibling(&disk);
        let (src, dst) = (base.to_path_buf(), tmp.clone());
        tokio::task::spawn_blocking(move || fsutil::copy_sparse(&src, &dst))
            .await
            .map_err(|e| RuntimeError::Failed(format!("disk copy panicked: {e}")))?
            .map_err(|e| {
                RuntimeError::Failed(format!(
                    "cannot copy base image {} to {}: {e}",
                    base.display(),
                    tmp.display()
                ))
            })?;
        let base_size = std::fs::metadata(base)?.len();
        if size_bytes != base_size {
            resize(&tmp, base_size, size_bytes).await?;
        }
        std::fs::rename(&tmp, &disk)?;
        fsutil::sync_dir(&self.box_dir)?;
        Ok(())
    }

    async fn attach(&self) -> Result<PathBuf, RuntimeError> {
        let mount_point = self.mount_point();
        if fsutil::is_mount_point(&mount_point)? {
            return Ok(mount_point);
        }
        let disk = self.disk();
        if !disk.exists() {
            return Err(RuntimeError::Failed(format!(
                "box disk {} is missing: create the box first",
                disk.display()
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&mount_point)?;
        // nodev: device nodes on the box's disk must never open host devices.
        let mut mount = host::command(&host::MOUNT);
        match self.loop_devices().await?.first() {
            // A loop device still attached to this disk (left by a crash between
            // losetup and mount, or its filesystem still mounted in another
            // mount namespace) must be reused: a second loop device over the same
            // file would mount the filesystem twice and corrupt it.
            Some(dev) => mount.args(["-t", "ext4", "-o", "nodev,noatime"]).arg(dev),
            // `-o loop` sets autoclear: the loop device goes away with the last
            // unmount, even if the daemon is gone by then.
            None => mount
                .args(["-t", "ext4", "-o", "loop,nodev,noatime"])
                .arg(&disk),
        };
        host::run(mount.arg(&mount_point)).await?;
        Ok(mount_point)
    }

    async fn detach(&self) -> Result<(), RuntimeError> {
        let mount_point = self.mount_point();
        if fsutil::is_mount_point(&mount_point)? {
            use nix::mount::{umount2, MntFlags};
            // EBUSY means a host process has a file open in the box's tree;
            // detach lazily so the box still stops, and let the loop device
            // go when that process lets go (waited for below).
            let result = match umount2(&mount_point, MntFlags::empty()) {
                Err(nix::errno::Errno::EBUSY) => {
                    tracing::warn!("{} is busy; detaching it lazily", mount_point.display());
                    umount2(&mount_point, MntFlags::MNT_DETACH)
                }
                other => other,
            };
            result.map_err(|e| {
                RuntimeError::Failed(format!("cannot unmount {}: {e}", mount_point.display()))
            })?;
        }
        // The kernel releases an autoclear loop device once the last user of
        // the filesystem is gone, which may lag the unmount by a moment while
        // the container's namespaces are torn down.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let devices = self.loop_devices().await?;
            if devices.is_empty() {
                return Ok(());
            }
            for dev in &devices {
                host::output(host::command(&host::LOSETUP).arg("-d").arg(dev)).await?;
            }
            if tokio::time::Instant::now() > deadline {
                // Another mount namespace (a process that unshared while the box
                // was mounted) still holds the filesystem. The device has
                // autoclear set and goes when that namespace does; attach reuses
                // it meanwhile, so the filesystem is never mounted twice.
                tracing::warn!(
                    "loop device(s) {} for {} are still held elsewhere; leaving them to autoclear",
                    devices.join(", "),
                    self.disk().display()
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn destroy(&self) -> Result<(), RuntimeError> {
        self.detach().await?;
        // Never delete through a mounted rootfs: that would erase the disk's
        // files rather than the disk.
        if fsutil::is_mount_point(&self.mount_point())? {
            return Err(RuntimeError::Failed(format!(
                "{} is still mounted; not deleting",
                self.mount_point().display()
            )));
        }
        if self.box_dir.exists() {
            std::fs::remove_dir_all(&self.box_dir)?;
        }
        match std::fs::remove_dir(&self.mount_point) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        Ok(())
    }

    fn is_attached(&self) -> Result<bool, RuntimeError> {
        Ok(fsutil::is_mount_point(&self.mount_point())?)
    }
}

/// Resizes a fresh (never mounted) ext4 image file offline.
async fn resize(image: &Path, from: u64, to: u64) -> Result<(), RuntimeError> {
    const MIN_BYTES: u64 = 1 << 30;
    if to < MIN_BYTES {
        return Err(RuntimeError::Failed(format!(
            "a box disk needs at least 1 GiB, not {to} bytes"
        )));
    }
    if to > from {
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)?
            .set_len(to)?;
    }
    // -f: the image has just been copied from a clean, never-mounted image,
    // so the fsck resize2fs would otherwise insist on has nothing to find.
    host::run(
        host::command(&host::RESIZE2FS)
            .arg("-f")
            .arg(image)
            .arg(format!("{}K", to / 1024)),
    )
    .await?;
    if to < from {
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)?
            .set_len(to)?;
    }
    Ok(())
}
