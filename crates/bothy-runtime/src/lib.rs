//! Boxes on a Linux host: the base image, each box's disk (a volume of the
//! storage stack, served over FUSE, on a loop device, as ext4), the OCI
//! container (crun) with its namespaces, cgroup limits and seccomp filter, and
//! user-mode networking (pasta).
//!
//! Public surface used by the control layer — the contract:
//! - [`RuntimeConfig`], [`Runtime::new`] (checks host tools and the base image,
//!   with errors that say what to install or run; connects to the storage
//!   process that serves box disks, starting it if none answers, and makes
//!   sure the base image is imported into its storage).
//! - [`Runtime::create`] makes a box's disk: a metadata-only clone of the base
//!   image's checkpoint or of another box's checkpoint (fork). Does not start.
//! - [`Runtime::start`] idempotently brings a box to running: disk attached and
//!   mounted, container running with the agent as pid 1, network up. It returns
//!   once the agent answers on [`Runtime::agent_socket`]. Called for every box on
//!   daemon start: a box left running by a previous daemon process is adopted
//!   as it is (its disk is served by the storage process, [`storage`], which
//!   outlives the daemon); one whose storage process died has a dead disk and
//!   boots again, with everything it had fsynced.
//! - [`Runtime::checkpoint`], [`Runtime::restore`], [`Runtime::delete_checkpoint`],
//!   [`Runtime::sync`] (the object-store barrier), [`Runtime::recover_disk`]
//!   (a disk from the object store alone), [`Runtime::collect_garbage`].
//! - [`Runtime::stop`] (syncs the disk to the object store), [`Runtime::destroy`]:
//!   idempotent.
//! - [`image`]: building and finding the shared base image file.
//!
//! On the host, a daemon with data dir `DIR` and instance `I` uses:
//! - `DIR/storage/` (block maps `volumes.db`, chunk cache `cache/`) and, unless
//!   `--object-store` says otherwise, `DIR/objects/` (the object store);
//! - `DIR/boxes/<id>/`: `bundle/config.json`, `crun.log`;
//! - `/run/bothy/I/fuse/<id>/disk`: the box's disk as a file (FUSE, served by
//!   the storage process), attached to a loop device;
//! - `/run/bothy/I/<id>`: the mount point of the box's disk, its root;
//! - `DIR/run/` (0700, never visible in a box): `storage.sock` (the storage
//!   process), `<id>.sock` (the agent's
//!   listening socket, fd 3 of the box's init), `<id>.pasta.pid`, `crun/`
//!   (crun's state), `env/<id>/api.sock` (the box's own control socket, the
//!   only thing of DIR a box sees, at [`bothy_api::inbox::ENV_SOCKET`]);
//! - container `bothy-I-<id>`, cgroup `/bothy-I/<id>` (in each v1 hierarchy,
//!   or the v2 tree).
//!
//! A box's init (pid 1, [`bothy_api::inbox::EXE`] `init` by default) starts
//! as root of the box's user namespace with: the agent's listening socket as
//! fd 3 (also named by `BOTHY_AGENT_FD=3`), stdin/stdout/stderr on /dev/null
//! (so it must log into the box, not to its stdio), cwd `/`, a Debian PATH,
//! `HOME=/root`.
//! stop() sends it SIGTERM and kills the box 5 s later.
//!
//! Files on every box's disk are owned by disk ids: box uid/gid k is stored
//! as 100000 + k ([`UID_SHIFT`]), the same for every box, so disks,
//! checkpoints and forks are interchangeable (the base image's files are
//! stored shifted, see [`image`]). Each box's processes run as host ids of
//! its own, `base + k` ([`Runtime::box_host_id`]), and its root is an
//! idmapped view of its disk at `/run/bothy/I.roots/<id>/root` that shows
//! disk id 100000 + k as base + k; see the `ids` module for how bases are
//! chosen. Boxes booted by older builds keep host ids 100000.. until their
//! next boot.

pub mod disk;
pub mod image;
pub mod netpolicy;
pub mod storage;

mod cgroups;
pub use cgroups::host_memory;
pub use power::Power;
pub use storage::proto::DiskUsage;
mod connect;
mod ports;
pub use ports::ListeningPort;
mod crun;
mod dirs;
mod dns;
mod egress;
mod etc;
mod fsutil;
mod host;
mod idmap;
mod ids;
mod inits;
mod kernel_limits;
mod ksm;
mod network;
mod oci;
mod power;
mod seccomp;
mod validate;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Parent of every daemon's box mount points (`MOUNT_ROOT/<instance>/<id>`).
pub const MOUNT_ROOT: &str = "/run/bothy";

use crate::dirs::{make_box_dir, prepare_data_dir, remove_empty_cgroup_parents, remove_if_exists};
use crate::disk::{DiskCheckpoint, DiskSource, Disks};
use crate::validate::{check_name, check_socket_path, check_spec};

/// Disk ids: box uid/gid k is stored on every box's disk as `UID_SHIFT + k`
/// (for k in 0..[`ID_RANGE`]). Boxes booted by older builds also ran as
/// these host ids; each box now runs as its own range
/// ([`Runtime::box_host_id`]).
pub const UID_SHIFT: u32 = 100_000;
/// Number of ids mapped into a box (all 16-bit ids: apt's `_apt` is 42, and
/// `nobody` is 65534).
pub const ID_RANGE: u32 = 65_536;

/// How long a box's init gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A host tool or kernel feature is missing; the text says what to install.
    #[error("{0}")]
    HostNotReady(String),
    #[error("base image not found in {0}: run `bothy image build` first")]
    NoBaseImage(PathBuf),
    /// A checkpoint or disk the call names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The disk or its device is still held (by the kernel or another
    /// operation) after waiting for it.
    #[error("{0}")]
    Busy(String),
    /// The storage process cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The storage process went away during a call: whether the call took
    /// effect is unknown.
    #[error("{0}")]
    StorageLost(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where a daemon's boxes live and how they are named on the host.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The daemon's data dir; the runtime owns `DIR/boxes` and `DIR/run`.
    pub data_dir: PathBuf,
    /// Short id unique to this daemon (derived from its data dir), used in the
    /// names of host-wide things: cgroups, container ids.
    pub instance: String,
    /// Shared base-image cache (default [`image::DEFAULT_IMAGE_DIR`]).
    pub image_dir: PathBuf,
    /// The bothy binary, bind-mounted into every box as its init.
    pub exe: PathBuf,
    /// Where volume chunks and map snapshots live: `file:///dir` or
    /// `s3://bucket?endpoint=..&region=..`; `None` = `DIR/objects`.
    pub object_store: Option<String>,
    /// Byte budget of the local chunk cache (`DIR/storage/cache`).
    pub cache_bytes: u64,
    /// How box disks are served.
    pub storage: StorageLaunch,
}

/// How the storage process that serves box disks is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageLaunch {
    /// `exe storage-server ...`, a process that outlives the daemon (what
    /// `bothy daemon` does).
    Process,
    /// A task of the calling process: disks die with it. For tests and tools
    /// that run the runtime without the bothy binary.
    InProcess,
}

/// Default local chunk cache budget.
pub const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

/// Resources of one box.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxSpec {
    /// Unique key of the box on this daemon (`b` + 12 hex digits), chosen by the
    /// daemon. Names dirs, the container, the cgroup and the agent socket.
    pub id: String,
    /// The box's user-facing name: its hostname.
    pub hostname: String,
    pub ram_mb: u64,
    pub cpus: u32,
    pub storage_gb: u64,
    /// Containers inside: the box may make user namespaces and mount in them
    /// (see the seccomp module for what that costs).
    pub nesting: bool,
}

pub struct Runtime {
    cfg: RuntimeConfig,
    init: oci::Init,
    crun: crun::Crun,
    disks: Arc<Disks>,
    /// One operation at a time per box (start and stop racing would leave
    /// half a box).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    inits: inits::Inits,
    /// Host id ranges of host users, which no box gets.
    reserved_ids: ids::Reserved,
    /// Serializes choosing id slots (they must be unique across boxes).
    slots: Mutex<()>,
    /// Every box's resolver and network policy.
    dns: dns::Dns,
    frozen: power::FrozenSet,
}

impl Runtime {
    /// Checks the host, opens the volume storage and, the first time, imports
    /// the base image into it (seconds; later starts skip it).
    pub async fn new(cfg: RuntimeConfig) -> Result<Self, RuntimeError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(RuntimeError::HostNotReady(
                "the box runtime needs root (loop devices, mounts, namespaces): run the daemon as root".into(),
            ));
        }
        check_name("instance", &cfg.instance, 32)?;
        host::require(&[
            host::CRUN,
            host::PASTA,
            host::NFT,
            host::NSENTER,
            host::IP,
            host::SYSCTL,
            host::LOSETUP,
            host::MOUNT,
            host::RESIZE2FS,
            host::UMOUNT,
            host::FSFREEZE,
            host::SYNC,
        ])?;
        if !Path::new("/dev/fuse").exists() {
            return Err(RuntimeError::HostNotReady(
                "/dev/fuse is missing: box disks are served over FUSE; load the fuse module (modprobe fuse)".into(),
            ));
        }
        let Some(base_image) = image::find_base(&cfg.image_dir) else {
            return Err(RuntimeError::NoBaseImage(cfg.image_dir.clone()));
        };
        prepare_data_dir(&cfg.data_dir)?;
        kernel_limits::raise_host_floor();
        ksm::start_merging();
        let disks = storage::launch::open_storage(&cfg, &base_image).await?;
        let run_dir = cfg.data_dir.join("run");
        let crun = crun::Crun::new(run_dir.join("crun"));
        Ok(Self {
            disks: Arc::new(disks),
            cfg,
            init: oci::Init::default(),
            crun,
            locks: Mutex::default(),
            inits: inits::Inits::default(),
            reserved_ids: ids::host_reserved(),
            slots: Mutex::default(),
            dns: dns::Dns::default(),
            frozen: power::FrozenSet::default(),
        })
    }

    /// Sets box `id`'s network policy: its resolver applies it from the next
    /// query, and a running box's egress filter is loaded again when the
    /// policy starts or stops denying by default (which empties the sets of
    /// addresses allowed so far: the box's next lookups fill them again).
    /// A box that does not run gets it when it starts.
    pub async fn set_network_policy(
        &self,
        id: &str,
        policy: netpolicy::NetPolicy,
    ) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        let before = self.dns.policy(id).denies_by_default();
        let after = policy.denies_by_default();
        if let Some(pid) = self.dns.set_policy(id, policy) {
            if before != after {
                egress::install(pid, after).await?;
            }
        }
        Ok(())
    }

    /// Replaces the box's init command (default: [`bothy_api::inbox::EXE`]
    /// `init`), for tests and diagnostics that run boxes without the agent.
    pub fn with_init_args(mut self, args: Vec<String>) -> Self {
        self.init = oci::Init { args };
        self
    }

    /// Makes the box's disk (a metadata-only clone of the base image, or of
    /// another box's checkpoint). Does nothing if it exists.
    pub async fn create(&self, spec: &BoxSpec, source: DiskSource) -> Result<(), RuntimeError> {
        check_spec(spec)?;
        if let DiskSource::Checkpoint { box_id, .. } = &source {
            check_name("box id", box_id, 32)?;
        }
        let lock = self.lock(&spec.id);
        let _guard = lock.lock().await;
        let base = self.box_base(&spec.id)?;
        make_box_dir(&self.box_dir(&spec.id), base)?;
        let size = if spec.storage_gb == 0 {
            image::DEFAULT_DISK_BYTES
        } else {
            spec.storage_gb << 30
        };
        self.disks.create(&spec.id, source, size).await
    }

    /// A crash-consistent checkpoint of the box's whole disk, taken without
    /// stopping it. Returns the volume's checkpoint number.
    pub async fn checkpoint(&self, id: &str) -> Result<u64, RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        self.disks.checkpoint(id).await
    }

    /// The volume's checkpoint numbers.
    pub async fn checkpoints(&self, id: &str) -> Result<Vec<DiskCheckpoint>, RuntimeError> {
        check_name("box id", id, 32)?;
        self.disks.checkpoints(id).await
    }

    /// What box `id`'s disk and checkpoints store.
    pub async fn disk_usage(&self, id: &str) -> Result<DiskUsage, RuntimeError> {
        check_name("box id", id, 32)?;
        self.disks.usage(id).await
    }

    /// Stops the box, keeps its current disk as a new checkpoint (returned),
    /// brings the disk back to `checkpoint` and boots the box again. When it
    /// fails, the disk is as it was and the box is booted on it again.
    pub async fn restore(&self, spec: &BoxSpec, checkpoint: u64) -> Result<u64, RuntimeError> {
        check_spec(spec)?;
        let lock = self.lock(&spec.id);
        let _guard = lock.lock().await;
        // Fail before stopping anything if the target is not there.
        if !self
            .disks
            .checkpoints(&spec.id)
            .await?
            .iter()
            .any(|c| c.id == checkpoint)
        {
            return Err(RuntimeError::NotFound(format!(
                "the disk has no checkpoint {checkpoint}"
            )));
        }
        let restored = match self.stop_unlocked(&spec.id, false).await {
            Ok(()) => self.disks.restore(&spec.id, checkpoint).await,
            Err(e) => Err(e),
        };
        // Whatever happened to the disk, the box comes back up.
        let booted = self.boot(spec).await;
        let safety = restored?;
        booted?;
        Ok(safety)
    }

    pub async fn delete_checkpoint(&self, id: &str, checkpoint: u64) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        self.disks.delete_checkpoint(id, checkpoint).await
    }

    /// Brings the box's disk back from the object store if this host lacks
    /// it; returns whether it did.
    pub async fn recover_disk(&self, id: &str) -> Result<bool, RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        self.disks.recover(id).await
    }

    /// Frees chunks that no disk or checkpoint refers to any more.
    pub async fn collect_garbage(&self) -> Result<(usize, usize), RuntimeError> {
        self.disks.gc().await
    }

    /// Completes when the storage process serving box disks dies: every box
    /// it served has a dead disk and must boot again ([`Runtime::start`]).
    pub async fn storage_gone(&self) {
        self.disks.client().gone().await
    }

    /// Asks the storage process to exit; it refuses while it serves any
    /// disk, so stop every box first.
    pub async fn shutdown_storage(&self) -> Result<(), RuntimeError> {
        self.disks.client().shutdown().await
    }

    pub async fn start(&self, spec: &BoxSpec) -> Result<(), RuntimeError> {
        check_spec(spec)?;
        let lock = self.lock(&spec.id);
        let _guard = lock.lock().await;
        let id = &spec.id;
        let cid = self.container_id(id);
        let pasta = self.pasta(id);
        match self.crun.state(&cid).await? {
            Some(state) if state.is_alive() => {
                // A box left running by an earlier daemon process keeps its
                // disk while the storage process that serves it lives; if
                // that process died, the disk is dead and the box boots again.
                let live_disk = self.disks.is_attached(id) || self.disks.adopt(id).await?;
                if !live_disk {
                    tracing::warn!(box_id = %id, "its disk's storage process is gone; booting the box again");
                    self.stop_unlocked(id, false).await?;
                    pasta.stop()?;
                    return self.boot(spec).await;
                }
                // A warm box stays frozen until it is woken (see power.rs).
                self.frozen.set(id, state.status == "paused");
                if self.agent_socket(id).exists() {
                    // Boxes booted by an older build may lack the filter;
                    // loading it again is one idempotent transaction.
                    let deny = self.dns.policy(id).denies_by_default();
                    egress::install(state.pid, deny).await?;
                    // Its resolver moves to this daemon; boxes of builds
                    // without the forwarder get it here, no restart needed.
                    self.dns.serve(id, state.pid).await?;
                    if pasta.running_pid(Some(state.pid)).is_none() {
                        pasta.start(state.pid, deny).await?;
                    }
                    self.inits.started(id, state.pid);
                    return Ok(());
                }
                // The socket's file is gone, so nobody can reach the agent
                // listening on it: boot the box again.
                tracing::warn!(box_id = %id, "agent socket missing; restarting the box");
                self.stop_unlocked(id, false).await?;
            }
            Some(_) => self.crun.delete(&cid).await?,
            None => {}
        }
        pasta.stop()?;
        self.boot(spec).await
    }

    /// Boots a box that is not running.
    async fn boot(&self, spec: &BoxSpec) -> Result<(), RuntimeError> {
        let id = &spec.id;
        let cid = self.container_id(id);
        let box_dir = self.box_dir(id);
        let run_dir = self.make_private_dir(&self.cfg.data_dir.join("run"))?;
        // A box without a slot (made by an older build) gets one now.
        let base = self.box_base(id)?;
        make_box_dir(&box_dir, base)?;
        // A view left by a box that died with its disk would hold the dead
        // disk's filesystem.
        self.unmount_rootfs(id)?;
        let disk_root = self.disks.attach(id).await?;
        // A box that broke its own /etc (full disk, /etc made a file) still
        // boots; it just keeps its own files. They are written with disk ids.
        if let Err(e) = etc::write_identity(&disk_root, &spec.hostname, network::DNS_ADDR) {
            tracing::warn!(box_id = %id, "cannot write /etc/hosts, hostname, resolv.conf: {e}");
        }
        let rootfs = self.mount_rootfs(id, &disk_root, base)?;
        if let Some(host) = cgroups::host_memory() {
            if let Err(e) =
                cgroups::limit_parent(&self.cgroup_path(id), cgroups::boxes_memory_limit(host))
            {
                tracing::warn!(box_id = %id, "cannot limit the boxes' parent cgroup; the host keeps no memory reserve: {e}");
            }
        }
        let bundle = box_dir.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        let env_dir = self.env_dir(id)?;
        // Its socket may have been bound for the box's previous host ids.
        match std::os::unix::fs::lchown(self.env_socket(id), Some(base), Some(base)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let config = oci::config(
            spec,
            base,
            &rootfs,
            &self.cfg.exe,
            &self.cgroup_path(id),
            &self.init,
            &env_dir,
        );
        fsutil::write_atomic(
            &bundle.join("config.json"),
            config.to_string().as_bytes(),
            0o600,
        )?;

        let socket_path = self.agent_socket(id);
        check_socket_path(&socket_path)?;
        match std::fs::remove_file(&socket_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(&socket_path).map_err(|e| {
            RuntimeError::Failed(format!(
                "cannot bind agent socket {}: {e}",
                socket_path.display()
            ))
        })?;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))?;
        std::fs::create_dir_all(run_dir.join("crun"))?;

        if let Err(e) = self
            .crun
            .run(
                &cid,
                &bundle,
                &rootfs,
                &box_dir.join("crun.log"),
                listener.as_fd(),
            )
            .await
        {
            let _ = self.crun.delete(&cid).await;
            return Err(e);
        }
        drop(listener);
        let pid = match self.crun.state(&cid).await? {
            Some(state) if state.is_alive() => state.pid,
            other => {
                let _ = self.crun.delete(&cid).await;
                return Err(RuntimeError::Failed(format!(
                    "box {id} exited right after it started (state {:?}); see {}",
                    other.map(|s| s.status),
                    box_dir.join("crun.log").display()
                )));
            }
        };
        if let Err(e) = kernel_limits::apply_to_box(pid, spec.nesting).await {
            let _ = self.stop_unlocked(id, false).await;
            return Err(e);
        }
        // The resolver before the route out: no query of the box's ever
        // skips its policy.
        if let Err(e) = self.dns.serve(id, pid).await {
            let _ = self.stop_unlocked(id, false).await;
            return Err(e);
        }
        let deny = self.dns.policy(id).denies_by_default();
        if let Err(e) = self.pasta(id).start(pid, deny).await {
            let _ = self.stop_unlocked(id, false).await;
            return Err(e);
        }
        self.inits.started(id, pid);
        Ok(())
    }

    /// Stops the box and boots it again on its disk as it is (nothing is
    /// shipped to the object store on the way: a restart should be quick).
    pub async fn restart(&self, spec: &BoxSpec) -> Result<(), RuntimeError> {
        check_spec(spec)?;
        let lock = self.lock(&spec.id);
        let _guard = lock.lock().await;
        self.stop_unlocked(&spec.id, false).await?;
        self.boot(spec).await
    }

    /// Stops the box and makes its disk whole in the object store.
    /// Sets the memory limit of a running box; a stopped box takes its
    /// limit from its spec at the next boot.
    pub async fn set_memory_limit(&self, id: &str, ram_mb: u64) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let cid = self.container_id(id);
        match self.crun.state(&cid).await? {
            Some(state) if state.is_alive() => {
                self.crun
                    .update_memory(&cid, ram_mb.saturating_mul(1024 * 1024))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Gives a running box the hostname of `spec`: its UTS name now, and
    /// /etc/hostname and /etc/hosts (which every boot writes again anyway).
    /// What a box taken from the warm pool needs to become its user's.
    pub async fn rename(&self, spec: &BoxSpec) -> Result<(), RuntimeError> {
        check_spec(spec)?;
        let id = spec.id.as_str();
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let pid = match self.inits.live_pid(id) {
            Some(pid) => pid,
            None => match self.crun.state(&self.container_id(id)).await? {
                Some(state) if state.is_alive() => state.pid,
                _ => return Err(RuntimeError::NotFound(format!("box {id} is not running"))),
            },
        };
        let disk_root = self.disks.attach(id).await?;
        etc::write_identity(&disk_root, &spec.hostname, network::DNS_ADDR)?;
        let hostname = spec.hostname.clone();
        tokio::task::spawn_blocking(move || set_uts_hostname(pid, &hostname))
            .await
            .map_err(|e| RuntimeError::Failed(format!("renaming the box: {e}")))?
    }

    /// A TCP connection to `port` on the box's own loopback (127.0.0.1, then
    /// ::1 if nothing listens there), made from inside its network
    /// namespace. The outer error says the box cannot be reached at all; the
    /// inner one is the connect's own (refused while its service starts).
    pub async fn connect(
        &self,
        id: &str,
        port: u16,
    ) -> Result<std::io::Result<tokio::net::TcpStream>, RuntimeError> {
        check_name("box id", id, 32)?;
        let not_running = || RuntimeError::NotFound(format!("box {id} is not running"));
        let pid = self.inits.live_pid(id).ok_or_else(not_running)?;
        let ns = connect::open_netns(pid)?;
        // Still alive after the open (its pidfd says so): the pid was not
        // reused, the namespace is the box's.
        if self.inits.live_pid(id) != Some(pid) {
            return Err(not_running());
        }
        let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        match connect::connect_in(ns.try_clone()?, v4).await? {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                match connect::connect_in(ns, v6).await? {
                    // The box has no IPv6 loopback: the v4 refusal is the answer.
                    Err(e6) if e6.kind() != std::io::ErrorKind::ConnectionRefused => Ok(Err(e)),
                    other => Ok(other),
                }
            }
            other => Ok(other),
        }
    }

    /// The TCP ports the box listens on (without owners: see
    /// [`Runtime::port_owners`]). Read from the host, so it neither wakes
    /// nor disturbs the box; a box that is not running has none to report
    /// and gets `NotFound`.
    pub async fn listening_ports(&self, id: &str) -> Result<Vec<ListeningPort>, RuntimeError> {
        let pid = self.box_init(id)?;
        let mut ports = tokio::task::spawn_blocking(move || ports::listeners_of(pid))
            .await
            .map_err(|e| RuntimeError::Failed(format!("reading the box's ports: {e}")))?
            .map_err(|_| self.not_running(id))?;
        // Still the same init after the reads: a reused pid would have
        // answered for some other namespace.
        if self.inits.live_pid(id) != Some(pid) {
            return Err(self.not_running(id));
        }
        ports.sort_by_key(|p| (p.port, p.address));
        ports.dedup_by_key(|p| p.inode);
        Ok(ports)
    }

    /// The pids (as the box sees them) owning the listening sockets
    /// `inodes`; sockets whose owner is not found are left out. Walks the
    /// box's processes, so callers ask only about sockets new to them.
    pub async fn port_owners(
        &self,
        id: &str,
        inodes: std::collections::HashSet<u64>,
    ) -> Result<std::collections::HashMap<u64, u32>, RuntimeError> {
        let pid = self.box_init(id)?;
        let owners = tokio::task::spawn_blocking(move || ports::owners(pid, &inodes))
            .await
            .map_err(|e| RuntimeError::Failed(format!("finding port owners: {e}")))?;
        if self.inits.live_pid(id) != Some(pid) {
            return Err(self.not_running(id));
        }
        Ok(owners)
    }

    fn box_init(&self, id: &str) -> Result<i32, RuntimeError> {
        check_name("box id", id, 32)?;
        self.inits.live_pid(id).ok_or_else(|| self.not_running(id))
    }

    fn not_running(&self, id: &str) -> RuntimeError {
        RuntimeError::NotFound(format!("box {id} is not running"))
    }

    pub async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        self.stop_unlocked(id, true).await
    }

    /// The barrier for a box's disk: everything it wrote and all its
    /// checkpoints are in the object store when this returns. It holds no
    /// lock of the runtime: the box goes on meanwhile.
    pub async fn sync(&self, id: &str) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        self.disks.sync(id).await
    }

    async fn stop_unlocked(&self, id: &str, sync: bool) -> Result<(), RuntimeError> {
        self.inits.stopped(id);
        self.frozen.set(id, false);
        self.dns.stop(id);
        let cid = self.container_id(id);
        if let Some(state) = self.crun.state(&cid).await? {
            if state.status == "paused" {
                // Frozen processes cannot act on (or even die of) signals.
                self.crun.resume(&cid).await?;
            }
            if state.is_alive() {
                self.crun.kill(&cid, "SIGTERM").await?;
                let deadline = tokio::time::Instant::now() + STOP_GRACE;
                while tokio::time::Instant::now() < deadline {
                    match self.crun.state(&cid).await? {
                        Some(s) if s.is_alive() => {}
                        _ => break,
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            self.crun.delete(&cid).await?;
        }
        self.pasta(id).stop()?;
        // The view holds the disk's filesystem: it goes first.
        self.unmount_rootfs(id)?;
        self.remove_root_dirs(id)?;
        self.disks.detach(id, sync).await?;
        remove_if_exists(&self.agent_socket(id))?;
        // The daemon's parent cgroup goes with its last box, so a clean shutdown
        // leaves nothing behind on the host.
        remove_empty_cgroup_parents(&self.cgroup_path(id));
        Ok(())
    }

    pub async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        check_name("box id", id, 32)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        self.stop_unlocked(id, false).await?;
        self.disks.destroy(id).await?;
        let env_dir = self.cfg.data_dir.join("run").join("env").join(id);
        if env_dir.exists() {
            std::fs::remove_dir_all(&env_dir)?;
        }
        let box_dir = self.box_dir(id);
        if box_dir.exists() {
            std::fs::remove_dir_all(&box_dir)?;
        }
        remove_empty_cgroup_parents(&self.cgroup_path(id));
        self.dns.forget(id);
        self.locks.lock().map(|mut l| l.remove(id)).ok();
        Ok(())
    }

    /// Whether the box runs on a live disk (one a previous daemon process
    /// served is dead, and the box counts as not running until it reboots).
    pub async fn is_running(&self, id: &str) -> Result<bool, RuntimeError> {
        check_name("box id", id, 32)?;
        if !self.disks.is_attached(id) {
            return Ok(false);
        }
        if let Some(alive) = self.inits.alive(id) {
            return Ok(alive);
        }
        Ok(self
            .crun
            .state(&self.container_id(id))
            .await?
            .is_some_and(|s| s.is_alive()))
    }

    /// The host uid and gid of the box's root: the first of its range of host
    /// ids ([`UID_SHIFT`] for a box last booted by an older build).
    pub fn box_host_id(&self, id: &str) -> u32 {
        match ids::read_slot(&self.box_dir(id)) {
            Ok(Some(slot)) => ids::base(slot),
            Ok(None) => UID_SHIFT,
            Err(e) => {
                tracing::warn!(box_id = %id, "{e}");
                UID_SHIFT
            }
        }
    }

    /// The box's host id base, choosing its slot if it has none yet.
    fn box_base(&self, id: &str) -> Result<u32, RuntimeError> {
        let box_dir = self.box_dir(id);
        let _guard = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match ids::read_slot(&box_dir) {
            Ok(Some(slot)) => return Ok(ids::base(slot)),
            Ok(None) => {}
            // No other box counts a damaged slot as used: a new one is safe.
            Err(e) => tracing::warn!(box_id = %id, "{e}; choosing a new slot"),
        }
        std::fs::create_dir_all(&box_dir)?;
        let slot = ids::assign(
            &self.cfg.data_dir.join("boxes"),
            &box_dir,
            &self.reserved_ids,
        )?;
        tracing::info!(box_id = %id, slot, base = ids::base(slot), "host ids for the box");
        Ok(ids::base(slot))
    }

    /// `MOUNT_ROOT/<instance>.roots`: one directory per box, 0710
    /// `root:<box's group>` (only that box gets through), holding `root`,
    /// the box's idmapped root. It is 0711 itself: nobody lists it.
    fn roots_dir(&self) -> PathBuf {
        Path::new(MOUNT_ROOT).join(format!("{}.roots", self.cfg.instance))
    }

    /// Mounts the box's root: the view of `disk_root` in which disk id
    /// `UID_SHIFT + k` is host id `base + k`.
    fn mount_rootfs(&self, id: &str, disk_root: &Path, base: u32) -> Result<PathBuf, RuntimeError> {
        let roots = self.roots_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&roots)?;
        std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o711))?;
        let dir = roots.join(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o710)
            .create(&dir)?;
        std::os::unix::fs::chown(&dir, Some(0), Some(base))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))?;
        let target = dir.join("root");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&target)?;
        idmap::mount(disk_root, &target, UID_SHIFT, base, ID_RANGE).map_err(|e| {
            RuntimeError::Failed(format!(
                "cannot mount the idmapped root of box {id} at {}: {e}",
                target.display()
            ))
        })?;
        Ok(target)
    }

    /// Unmounts the box's idmapped root (every layer of it). Not mounted is fine.
    fn unmount_rootfs(&self, id: &str) -> Result<(), RuntimeError> {
        let target = self.roots_dir().join(id).join("root");
        for _ in 0..16 {
            if !fsutil::is_mount_point(&target)? {
                return Ok(());
            }
            idmap::unmount(&target)?;
        }
        Err(RuntimeError::Busy(format!(
            "{} stays mounted",
            target.display()
        )))
    }

    /// Removes the box's (unmounted) root dirs, and the roots dir with the
    /// last of them. Never recursive: should anything still be mounted
    /// there, this fails rather than reach into it.
    fn remove_root_dirs(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.roots_dir().join(id);
        for dir in [dir.join("root"), dir] {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        // Fails while other boxes have theirs.
        let _ = std::fs::remove_dir(self.roots_dir());
        Ok(())
    }

    /// Host path of the socket the box sees at [`bothy_api::inbox::ENV_SOCKET`]; whoever
    /// serves it must make it connectable by box root only (host uid and gid
    /// [`Runtime::box_host_id`], mode 0600).
    pub fn env_socket(&self, id: &str) -> PathBuf {
        self.cfg
            .data_dir
            .join("run")
            .join("env")
            .join(id)
            .join(bothy_api::inbox::ENV_SOCKET_NAME)
    }

    /// The directory of [`Runtime::env_socket`], made searchable for the box.
    fn env_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let dir = self.cfg.data_dir.join("run").join("env").join(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    /// Host path of the box's agent socket (in a directory the box cannot see).
    pub fn agent_socket(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("run").join(format!("{id}.sock"))
    }

    /// Runs a command in a running box directly through crun, bypassing the
    /// agent: a host-side diagnostic (and what the runtime's tests use).
    /// Returns whether it exited with 0, and its stdout followed by stderr.
    pub async fn exec_diagnostic(
        &self,
        id: &str,
        args: &[&str],
    ) -> Result<(bool, String), RuntimeError> {
        check_name("box id", id, 32)?;
        self.crun.exec(&self.container_id(id), args).await
    }

    /// The host-wide container name of box `id`.
    pub fn container_id(&self, id: &str) -> String {
        format!("bothy-{}-{id}", self.cfg.instance)
    }

    /// The box's cgroup, relative to each hierarchy's root.
    pub fn cgroup_path(&self, id: &str) -> String {
        format!("/bothy-{}/{id}", self.cfg.instance)
    }

    fn box_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("boxes").join(id)
    }

    fn pasta(&self, id: &str) -> network::Pasta {
        network::Pasta::new(
            self.cfg
                .data_dir
                .join("run")
                .join(format!("{id}.pasta.pid")),
        )
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut locks) => locks.entry(id.to_string()).or_default().clone(),
            // A panic while holding this map cannot leave it inconsistent.
            Err(poisoned) => poisoned
                .into_inner()
                .entry(id.to_string())
                .or_default()
                .clone(),
        }
    }

    /// Creates `dir` (and parents) and makes it 0700 owned by root: box disks
    /// and sockets must not be reachable by other host users.
    fn make_private_dir(&self, dir: &Path) -> Result<PathBuf, RuntimeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(dir.to_path_buf())
    }
}

/// Completes at the first SIGTERM or SIGINT (what stops the daemon and the
/// storage process). Without signal handlers it never completes.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop this process with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// The object store a daemon with data dir `data_dir` uses: `flag`, or a
/// directory in the data dir.
pub fn object_store_url(data_dir: &Path, flag: Option<&str>) -> String {
    match flag {
        Some(u) => u.to_string(),
        None => format!("file://{}", data_dir.join("objects").display()),
    }
}

/// Sets the hostname of the UTS namespace `pid` is in, from a thread of
/// its own that enters the namespace and ends (the daemon's own namespace
/// never changes).
fn set_uts_hostname(pid: i32, hostname: &str) -> Result<(), RuntimeError> {
    use std::os::fd::AsFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/uts"))?;
    let hostname = hostname.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWUTS).map_err(|e| {
            RuntimeError::Failed(format!("cannot enter box pid {pid}'s UTS namespace: {e}"))
        })?;
        nix::unistd::sethostname(&hostname)
            .map_err(|e| RuntimeError::Failed(format!("cannot set the box's hostname: {e}")))
    })
    .join()
    .map_err(|_| RuntimeError::Failed("setting the box's hostname panicked".into()))?
}
