//! Boxes on a Linux host: the base image, each box's volume (its disk), the OCI
//! container (crun) with its namespaces, cgroup limits and seccomp filter, and
//! user-mode networking (pasta).
//!
//! Public surface used by the daemon (bothy-server) — the contract:
//! - [`RuntimeConfig`], [`Runtime::new`] (checks host tools and the base image,
//!   with errors that say what to install or run).
//! - [`Runtime::create`] makes a box's volume from the base image (does not start).
//! - [`Runtime::start`] idempotently brings a box to running: volume attached and
//!   mounted, container running with the agent as pid 1, network up. It returns
//!   once the agent answers on [`Runtime::agent_socket`]. Called for every box on
//!   daemon start, so it must adopt a box that kept running while the daemon was
//!   down (after a SIGKILL) and boot one that is not running (after a reboot).
//! - [`Runtime::stop`], [`Runtime::destroy`]: idempotent.
//! - [`image`]: building and finding the shared base image.

pub mod image;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A host tool or kernel feature is missing; the text says what to install.
    #[error("{0}")]
    HostNotReady(String),
    #[error("base image not found in {0}: run `bothy image build` first")]
    NoBaseImage(PathBuf),
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
}

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
}

pub struct Runtime {
    cfg: RuntimeConfig,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Result<Self, RuntimeError> {
        Ok(Self { cfg })
    }
    pub async fn create(&self, _spec: &BoxSpec) -> Result<(), RuntimeError> {
        todo!()
    }
    pub async fn start(&self, _spec: &BoxSpec) -> Result<(), RuntimeError> {
        todo!()
    }
    pub async fn stop(&self, _id: &str) -> Result<(), RuntimeError> {
        todo!()
    }
    pub async fn destroy(&self, _id: &str) -> Result<(), RuntimeError> {
        todo!()
    }
    pub async fn is_running(&self, _id: &str) -> Result<bool, RuntimeError> {
        todo!()
    }
    /// Host path of the box's agent socket (in a directory the box cannot see).
    pub fn agent_socket(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("run").join(format!("{id}.sock"))
    }
}
