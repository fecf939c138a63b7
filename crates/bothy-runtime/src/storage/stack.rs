//! A box's disk, as the storage process serves it: a volume of the storage
//! stack (block map over chunks in the object store), shown to the kernel as
//! the file `disk` on a FUSE mount of its own, attached to a loop device and
//! mounted as ext4: the box's root.
//!
//! ```text
//! /run/bothy/<instance>/fuse/<id>/disk   FUSE file served by the storage process
//!        │ losetup --direct-io
//! /dev/loopN  ──mount ext4──▶  /run/bothy/<instance>/<id>   (the box's /)
//! ```
//!
//! What a box fsyncs is durable in the volume when the fsync returns (it
//! reaches `Volume::flush` through the loop device).
//!
//! The storage process never does I/O on its boxes' filesystems from its own
//! threads: syncfs, thaw and unmount write through the loop device to the
//! FUSE server, which is this process. Were it killed during such a call, its
//! thread would wait in the kernel for an answer only the dead process could
//! give, the process could never finish exiting, and its FUSE connection (and
//! every `sync` on the host) would hang. So those calls run in child
//! processes (`sync -f`, `fsfreeze -u`, `umount`), which the kernel lets go
//! once the FUSE connection closes. As a second line, a starting storage
//! process aborts the FUSE connections of any mount of its instance that a
//! previous process left ([`abort_stale_connections`]); boxes on such a dead
//! disk are booted again by the runtime, and ext4 replays its journal.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bothy_fuse::{MountOptions, VolumeMount};
use bothy_volume::{CheckpointId, Storage, Volume, VolumeError};

use crate::fsutil;
use crate::host;
use crate::storage::proto;
use crate::RuntimeError;

struct Attached {
    fuse: VolumeMount,
    loop_dev: String,
}

/// Every box disk of one storage process.
pub struct Stack {
    storage: Arc<Storage>,
    /// `/run/bothy/<instance>`: box roots live here, FUSE mounts under `fuse/`.
    mount_root: PathBuf,
    attached: Mutex<HashMap<String, Attached>>,
    /// One garbage collection at a time.
    gc_lock: tokio::sync::Mutex<()>,
    /// Set when a disk could not be brought back from the object store: its
    /// chunks are in the store but no local map names them, so a collection
    /// now would delete them.
    gc_blocked: std::sync::atomic::AtomicBool,
}

/// How long a detach waits for the kernel to let go of a disk file.
const RELEASE_PATIENCE: Duration = Duration::from_secs(120);

/// Loop devices over our FUSE files use direct I/O: no second page cache
/// between the box's ext4 and the volume, and an fsync in the box is one
/// round trip to the FUSE server.
const LOOP_DIRECT_IO: bool = true;

fn volume_err(e: VolumeError) -> RuntimeError {
    match e {
        VolumeError::NoSuchCheckpoint { id, .. } => {
            RuntimeError::NotFound(format!("the disk has no checkpoint {id}"))
        }
        VolumeError::NoSuchVolume(v) => RuntimeError::NotFound(format!("no disk {v:?}")),
        other => RuntimeError::Failed(format!("storage: {other}")),
    }
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, RuntimeError> + Send + 'static,
) -> Result<R, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Failed(format!("storage task failed: {e}")))?
}

impl Stack {
    pub fn new(storage: Arc<Storage>, mount_root: PathBuf) -> Self {
        Self {
            storage,
            mount_root,
            attached: Mutex::default(),
            gc_lock: tokio::sync::Mutex::new(()),
            gc_blocked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `/run/bothy/<instance>`.
    pub fn mount_root(&self) -> &Path {
        &self.mount_root
    }

    pub fn mount_point(&self, id: &str) -> PathBuf {
        self.mount_root.join(id)
    }

    fn fuse_dir(&self, id: &str) -> PathBuf {
        self.mount_root.join("fuse").join(id)
    }

    fn attached(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Loop device and mount point of every disk whose ext4 is mounted.
    pub(super) fn mounted_disks(&self) -> Vec<(String, PathBuf)> {
        self.attached()
            .iter()
            .filter(|(_, a)| {
                let dev = Path::new(&a.loop_dev).file_name().unwrap_or_default();
                Path::new("/sys/fs/ext4").join(dev).exists()
            })
            .map(|(id, a)| (a.loop_dev.clone(), self.mount_point(id)))
            .collect()
    }

    pub fn is_attached(&self, id: &str) -> bool {
        self.attached().contains_key(id)
    }

    /// Runs `f` on box `id`'s volume: through its mount when attached (so it is
    /// serialised with the box's I/O), else on a handle opened for the call.
    async fn with_volume<R: Send + 'static>(
        self: &Arc<Self>,
        id: &str,
        f: impl FnOnce(&mut Volume) -> Result<R, VolumeError> + Send + 'static,
    ) -> Result<R, RuntimeError> {
        let me = Arc::clone(self);
        let id = id.to_string();
        blocking(move || {
            if let Some(a) = me.attached().get(&id) {
                return a.fuse.with_volume(f).map_err(volume_err);
            }
            let mut vol = me.storage.open_volume(&id).map_err(volume_err)?;
            let out = f(&mut vol).map_err(volume_err)?;
            vol.flush().map_err(volume_err)?;
            Ok(out)
        })
        .await
    }

    /// Makes box `id`'s volume as a clone of `source` (metadata only), `size`
    /// bytes large. Does nothing if the volume exists.
    pub async fn create(
        self: &Arc<Self>,
        id: &str,
        from: &str,
        checkpoint: u64,
        size: u64,
    ) -> Result<(), RuntimeError> {
        let new = id.to_string();
        // The clone has its source's size; `None` when it already exists.
        let cloned = self
            .with_volume(from, move |v| {
                match v.clone_from_checkpoint(CheckpointId(checkpoint), &new) {
                    Ok(()) => Ok(Some(v.size())),
                    Err(VolumeError::Exists(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let Some(current) = cloned else {
            return Ok(());
        };
        if current != size {
            if let Err(e) = self.resize(id, current, size).await {
                let _ = self.destroy(id).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Grows or shrinks a new, never-booted disk and its filesystem.
    async fn resize(self: &Arc<Self>, id: &str, from: u64, to: u64) -> Result<(), RuntimeError> {
        const MIN_BYTES: u64 = 1 << 30;
        if to < MIN_BYTES {
            return Err(RuntimeError::Failed(format!(
                "a box disk needs at least 1 GiB, not {to} bytes"
            )));
        }
        let set_size = |size: u64| {
            let me = Arc::clone(self);
            let id = id.to_string();
            blocking(move || me.storage.resize_volume(&id, size).map_err(volume_err))
        };
        if to > from {
            set_size(to).await?;
        }
        let dev = self.attach_device(id).await?;
        let fitted = async {
            // -f: the filesystem is a clean, never-mounted clone.
            host::run(
                host::command(&host::RESIZE2FS)
                    .arg("-f")
                    .arg(&dev)
                    .arg(format!("{}K", to / 1024)),
            )
            .await
        }
        .await;
        self.detach(id, false).await?;
        fitted?;
        if to < from {
            set_size(to).await?;
        }
        Ok(())
    }

    /// Serves the volume over FUSE and attaches a loop device to it; returns
    /// the device.
    async fn attach_device(self: &Arc<Self>, id: &str) -> Result<String, RuntimeError> {
        if let Some(a) = self.attached().get(id) {
            return Ok(a.loop_dev.clone());
        }
        self.clear_stale(id).await?;
        let fuse_dir = self.fuse_dir(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&fuse_dir)?;
        let me = Arc::clone(self);
        let vid = id.to_string();
        let dir = fuse_dir.clone();
        let fuse = blocking(move || {
            let vol = me.storage.open_volume(&vid).map_err(volume_err)?;
            VolumeMount::mount(vol, &dir, MountOptions::default())
                .map_err(|e| RuntimeError::Failed(format!("cannot serve the disk of {vid}: {e}")))
        })
        .await?;
        let mut losetup = host::command(&host::LOSETUP);
        losetup.args(["--find", "--show"]);
        if LOOP_DIRECT_IO {
            losetup.arg("--direct-io=on");
        }
        let loop_dev = match host::run(losetup.arg(fuse.disk_path())).await {
            Ok(out) => out.trim().to_string(),
            Err(e) => {
                let _ = blocking(move || {
                    fuse.unmount()
                        .map(drop)
                        .map_err(|e| RuntimeError::Failed(e.to_string()))
                })
                .await;
                return Err(e);
            }
        };
        self.attached().insert(
            id.to_string(),
            Attached {
                fuse,
                loop_dev: loop_dev.clone(),
            },
        );
        Ok(loop_dev)
    }

    /// Attaches the disk and mounts its filesystem; returns the mount point.
    pub async fn attach(self: &Arc<Self>, id: &str) -> Result<PathBuf, RuntimeError> {
        let mount_point = self.mount_point(id);
        if self.is_attached(id) {
            if fsutil::is_mount_point(&mount_point)? {
                return Ok(mount_point);
            }
            // A detach that could not finish (the kernel held the disk):
            // finish it, so the disk is never served twice.
            self.detach(id, false).await?;
        }
        let dev = self.attach_device(id).await?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&mount_point)?;
        // nodev, nosuid: device nodes and setuid programs on the box's disk
        // (which the box writes) must never open host devices or raise a
        // host user's privileges. The box's own view of its root honours
        // setuid: crun mounts it from a private copy without nosuid (see
        // `crun::Crun::cmd_with_root`).
        // discard: files deleted in the box give their chunks back (a box
        // cannot run fstrim: FITRIM needs host CAP_SYS_ADMIN).
        let mounted = host::run(
            host::command(&host::MOUNT)
                .args(["-t", "ext4", "-o", "nodev,nosuid,noatime,discard"])
                .arg(&dev)
                .arg(&mount_point),
        )
        .await;
        if let Err(e) = mounted {
            let _ = self.detach(id, false).await;
            return Err(e);
        }
        Ok(mount_point)
    }

    /// Unmounts, detaches the loop device and stops serving the volume; with
    /// `sync`, then makes it whole in the object store. Idempotent; also
    /// clears what a dead storage process left behind.
    ///
    /// The kernel lets go of the disk file some time after the loop device
    /// is detached (once the last user of the filesystem, such as a box's
    /// mount namespace still being torn down, is gone): this waits for that
    /// real condition, for up to [`RELEASE_PATIENCE`], and fails with
    /// [`RuntimeError::Busy`] (changing nothing more) if it does not come.
    pub async fn detach(self: &Arc<Self>, id: &str, sync: bool) -> Result<(), RuntimeError> {
        let mount_point = self.mount_point(id);
        unmount_root(&mount_point).await?;
        let loop_dev = self.attached().get(id).map(|a| a.loop_dev.clone());
        match loop_dev {
            Some(dev) => {
                detach_loop(&dev).await?;
                let open = self.attached().get(id).map(|a| a.fuse.open_files());
                let released = match open {
                    Some(open) => {
                        blocking(move || {
                            Ok(open.wait_released(std::time::Instant::now() + RELEASE_PATIENCE))
                        })
                        .await?
                    }
                    None => true,
                };
                if !released {
                    return Err(RuntimeError::Busy(format!(
                        "the disk of {id} is still held by the kernel {}s after its box stopped (a process on the host may have a file of it open); retry in a moment",
                        RELEASE_PATIENCE.as_secs()
                    )));
                }
                let Some(a) = self.attached().remove(id) else {
                    return Ok(());
                };
                let vol = blocking(move || {
                    a.fuse.unmount().map_err(|e| match e {
                        bothy_fuse::FuseError::Busy { .. } => RuntimeError::Busy(format!(
                            "cannot unmount a disk: {e}; retry in a moment"
                        )),
                        e => RuntimeError::Failed(format!("cannot unmount a disk: {e}")),
                    })
                })
                .await?;
                if sync {
                    blocking(move || {
                        let mut vol = vol;
                        vol.sync().map_err(volume_err)
                    })
                    .await?;
                }
            }
            None => self.clear_stale(id).await?,
        }
        // Empty once unmounted; made again by the next attach.
        for dir in [self.mount_point(id), self.fuse_dir(id)] {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// The volumes served now.
    pub fn served(&self) -> Vec<String> {
        let mut v: Vec<String> = self.attached().keys().cloned().collect();
        v.sort();
        v
    }

    /// Imports the base image into `volume` unless it is there already.
    pub async fn ensure_base(
        self: &Arc<Self>,
        volume: &str,
        image: &Path,
    ) -> Result<(), RuntimeError> {
        let me = Arc::clone(self);
        let (volume, image) = (volume.to_string(), image.to_path_buf());
        blocking(move || super::base::ensure_imported(&me.storage, &volume, &image)).await
    }

    /// Removes what a previous daemon process left for box `id`: a (possibly
    /// frozen) root mount, loop devices over its dead FUSE file, the FUSE mount.
    async fn clear_stale(&self, id: &str) -> Result<(), RuntimeError> {
        unmount_root(&self.mount_point(id)).await?;
        let fuse_dir = self.fuse_dir(id);
        let disk = fuse_dir.join("disk");
        for dev in loops_backed_by(&disk).await? {
            detach_loop(&dev).await?;
        }
        if fsutil::is_mount_point(&fuse_dir)? {
            bothy_fuse::force_unmount(&fuse_dir)?;
        }
        Ok(())
    }

    /// A crash-consistent checkpoint of box `id`'s disk, without stopping or
    /// freezing anything.
    /// A `syncfs` of the box's ext4 (in a child process, see the module
    /// docs) first writes back and commits everything written before the
    /// request; then the volume's map is frozen in one step under the volume
    /// lock. A write racing the checkpoint is in it or not, as at a power cut,
    /// and ext4's journal makes either consistent (it is replayed when the
    /// checkpoint is next mounted). `FIFREEZE` would leave a clean journal
    /// instead, but costs 40-70 ms of kernel RCU grace periods even on an idle
    /// disk (measured on this kernel), more than everything else together.
    pub async fn checkpoint(self: &Arc<Self>, id: &str) -> Result<u64, RuntimeError> {
        let started = std::time::Instant::now();
        let _pause = self.storage.pause_uploads();
        self.syncfs(id).await?;
        let synced = started.elapsed();
        let made = self.with_volume(id, |v| v.checkpoint()).await?;
        tracing::debug!(
            box_id = id,
            syncfs_ms = synced.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "checkpointed a disk"
        );
        Ok(made.0)
    }

    /// What the volume stores (read from the database, served or not).
    pub async fn usage(self: &Arc<Self>, id: &str) -> Result<proto::DiskUsage, RuntimeError> {
        let me = Arc::clone(self);
        let id = id.to_string();
        blocking(move || {
            let u = me.storage.volume_usage(&id).map_err(volume_err)?;
            Ok(proto::DiskUsage {
                disk_bytes: u.disk_bytes,
                checkpoint_bytes: u.checkpoint_bytes,
                checkpoints: u.checkpoints,
            })
        })
        .await
    }

    /// The volume's checkpoints, and whether each is in the object store.
    pub async fn checkpoints(self: &Arc<Self>, id: &str) -> Result<Vec<(u64, bool)>, RuntimeError> {
        let states = self.with_volume(id, |v| v.checkpoint_states()).await?;
        Ok(states
            .into_iter()
            .map(|(c, stored)| (c.0, stored))
            .collect())
    }

    /// Brings a detached disk back to `checkpoint`, first keeping its current
    /// state as a new checkpoint, whose id is returned.
    pub async fn restore(self: &Arc<Self>, id: &str, checkpoint: u64) -> Result<u64, RuntimeError> {
        if self.is_attached(id) {
            return Err(RuntimeError::Busy(format!(
                "box {id} must be stopped before its disk is restored"
            )));
        }
        self.with_volume(id, move |v| {
            // Fail before making the safety checkpoint if the target is gone.
            if !v.checkpoints()?.contains(&CheckpointId(checkpoint)) {
                return Err(VolumeError::NoSuchCheckpoint {
                    volume: v.name().to_string(),
                    id: checkpoint,
                });
            }
            let safety = v.checkpoint()?;
            v.restore(CheckpointId(checkpoint))?;
            Ok(safety.0)
        })
        .await
    }

    pub async fn delete_checkpoint(
        self: &Arc<Self>,
        id: &str,
        checkpoint: u64,
    ) -> Result<(), RuntimeError> {
        self.with_volume(id, move |v| v.delete_checkpoint(CheckpointId(checkpoint)))
            .await
    }

    /// Detaches and deletes the box's volume. Idempotent.
    pub async fn destroy(self: &Arc<Self>, id: &str) -> Result<(), RuntimeError> {
        self.detach(id, false).await?;
        let me = Arc::clone(self);
        let vid = id.to_string();
        blocking(move || match me.storage.delete_volume(&vid) {
            Ok(()) | Err(VolumeError::NoSuchVolume(_)) => Ok(()),
            Err(e) => Err(volume_err(e)),
        })
        .await?;
        for dir in [self.mount_point(id), self.fuse_dir(id)] {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes back and commits everything the box's filesystem holds for
    /// the disk (in a child process: see the module docs), so that what the
    /// box wrote, fsynced or not, is in the volume.
    pub async fn syncfs(&self, id: &str) -> Result<(), RuntimeError> {
        let mount_point = self.mount_point(id);
        if self.is_attached(id) && fsutil::is_mount_point(&mount_point)? {
            host::run(host::command(&host::SYNC).arg("-f").arg(&mount_point)).await?;
        }
        Ok(())
    }

    /// Uploads every chunk not yet in the object store, holding no volume.
    pub async fn upload_pending(self: &Arc<Self>) -> Result<(), RuntimeError> {
        let me = Arc::clone(self);
        blocking(move || me.storage.upload_pending().map_err(volume_err)).await
    }

    /// The sync barrier for one box: everything it wrote and all its
    /// checkpoints are durable in the object store when this returns. Run
    /// [`Stack::upload_pending`] first so the box's I/O, which waits while
    /// this holds its volume, waits only for a small last step.
    pub async fn sync(self: &Arc<Self>, id: &str) -> Result<(), RuntimeError> {
        self.with_volume(id, |v| v.sync()).await
    }

    /// Brings box `id`'s disk and checkpoints back from the object store if
    /// this host does not have it (a host that lost its data dir). Returns
    /// whether it did.
    pub async fn recover(self: &Arc<Self>, id: &str) -> Result<bool, RuntimeError> {
        let me = Arc::clone(self);
        let vid = id.to_string();
        let result = blocking(move || {
            if me
                .storage
                .volume_names()
                .map_err(volume_err)?
                .contains(&vid)
            {
                return Ok(false);
            }
            me.storage.recover_volume(&vid).map_err(volume_err)?;
            Ok(true)
        })
        .await;
        if result.is_err() {
            self.gc_blocked
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    /// Frees chunks no volume or checkpoint refers to any more.
    pub async fn gc(self: &Arc<Self>) -> Result<bothy_volume::GcReport, RuntimeError> {
        if self.gc_blocked.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RuntimeError::Failed(
                "garbage collection is off until the daemon restarts: a box's disk could not be recovered from the object store, and collecting now would delete its chunks".into(),
            ));
        }
        let _one = self.gc_lock.lock().await;
        let me = Arc::clone(self);
        blocking(move || me.storage.gc().map_err(volume_err)).await
    }
}

/// Unmounts a box root (lazily if busy), thawing it first if a crashed
/// daemon left it frozen.
async fn unmount_root(mount_point: &Path) -> Result<(), RuntimeError> {
    if !fsutil::is_mount_point(mount_point)? {
        return Ok(());
    }
    // Fails when not frozen: nothing to do then.
    let _ = host::output(host::command(&host::FSFREEZE).arg("-u").arg(mount_point)).await;
    let out = host::output(host::command(&host::UMOUNT).arg(mount_point)).await?;
    if out.status_ok || !fsutil::is_mount_point(mount_point)? {
        return Ok(());
    }
    // Busy: a host process has a file open in the box's tree; detach lazily
    // so the box still stops.
    tracing::warn!(
        "{} is busy ({}); detaching it lazily",
        mount_point.display(),
        out.stderr.trim()
    );
    host::run(host::command(&host::UMOUNT).arg("-l").arg(mount_point)).await?;
    Ok(())
}

/// Loop devices whose backing file is `file` (by path: a dead FUSE file
/// cannot be stat'ed, so `losetup -j` would not find them).
async fn loops_backed_by(file: &Path) -> Result<Vec<String>, RuntimeError> {
    let out = host::run(host::command(&host::LOSETUP).args([
        "--list",
        "--noheadings",
        "--raw",
        "--output",
        "NAME,BACK-FILE",
    ]))
    .await?;
    let want = file.to_string_lossy();
    Ok(out
        .lines()
        .filter_map(|l| {
            let (name, back) = l.trim().split_once(' ')?;
            // A deleted or dead backing file may carry a " (deleted)" suffix.
            let back = back.trim().trim_end_matches(" (deleted)");
            (back == want).then(|| name.to_string())
        })
        .collect())
}

/// Detaches a loop device, waiting for the kernel to let go of it (it lags
/// the unmount while the box's namespaces are torn down).
async fn detach_loop(dev: &str) -> Result<(), RuntimeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = host::output(host::command(&host::LOSETUP).arg("-d").arg(dev)).await?;
        let gone = !Path::new("/sys/block")
            .join(dev.trim_start_matches("/dev/"))
            .join("loop")
            .exists();
        if out.status_ok || gone {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            // Autoclear is set by -d even when busy: the device goes when its
            // last user (a process that unshared the box's mount) does.
            tracing::warn!("loop device {dev} is still held elsewhere; left to autoclear");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Aborts the FUSE connections of this instance's disk mounts that a previous
/// daemon process left behind (see the module docs): a thread of it may be
/// stuck waiting for its own FUSE server, which keeps it from exiting.
pub fn abort_stale_connections(mount_root: &Path) {
    let fuse_root = mount_root.join("fuse");
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let stale: Vec<String> = table
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let (dev, path) = (fields.get(2)?, fields.get(4)?);
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            let minor = dev.split_once(':')?.1;
            (fstype.starts_with("fuse") && Path::new(path).starts_with(&fuse_root))
                .then(|| minor.to_string())
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let control = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(control)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
    {
        let _ = nix::mount::mount(
            Some("fusectl"),
            control,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    for minor in stale {
        let abort = control.join(&minor).join("abort");
        match std::fs::write(&abort, b"1") {
            Ok(()) => {
                tracing::info!(connection = %minor, "aborted a FUSE connection left by an earlier daemon process")
            }
            Err(e) => {
                tracing::debug!(connection = %minor, error = %e, "cannot abort a stale FUSE connection")
            }
        }
    }
}
