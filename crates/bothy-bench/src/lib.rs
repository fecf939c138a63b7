//! `bothy bench`: latency (create, exec, unshare), storage (box disk beside
//! ext4 on a plain loop device and JuiceFS), checkpoints, durability, wake
//! from sleep, density (memory per cold box), the edge (requests to a
//! box's URL, and the wake they cause), the filesystem API and the control
//! WebSocket beside exec. Every bench prints
//! JSON lines on stdout; progress and warnings go to stderr.
//!
//! Benches reach the daemon only through `bothy-client`. The binary adds
//! [`Verb`] to the CLI's grammar and hands a parsed [`BenchCommand`] to
//! [`run`] with the [`Daemon`] its global flags name.

mod args;
mod boxes;
mod checkpoint;
mod control;
mod density;
mod durability;
mod edge;
mod fs;
mod latency;
mod procs;
mod reference;
mod settle;
mod stats;
mod storage;
mod wake;
mod workload;

use std::path::PathBuf;

use anyhow::Result;
use bothy_client::Client;

pub use args::{
    BenchCheckpointArgs, BenchCommand, BenchControlArgs, BenchCreateArgs, BenchDensityArgs,
    BenchDurabilityArgs, BenchEdgeArgs, BenchExecArgs, BenchFsArgs, BenchIoWorkerArgs,
    BenchStorageArgs, BenchTarget, BenchWakeArgs, BenchWorkload, Verb, WakeFrom,
};

/// The daemon under test, as the command line around the benches names it.
pub struct Daemon<'a> {
    /// A client for its API. Only the benches that talk to it call this, so
    /// `unshare`, and `io-worker` inside a box, need no token.
    pub connect: &'a dyn Fn() -> Result<Client>,
    /// Its data dir: the storage references make their scratch files beside
    /// it, on the file system of its chunk cache.
    pub data_dir: PathBuf,
}

impl Daemon<'_> {
    fn client(&self) -> Result<Client> {
        (self.connect)()
    }
}

/// Runs one bench; returns the exit code.
pub async fn run(command: BenchCommand, daemon: &Daemon<'_>) -> Result<i32> {
    match command {
        BenchCommand::Create(a) => latency::create(daemon, a.runs).await,
        BenchCommand::Exec(a) => latency::exec(daemon, a.runs).await,
        BenchCommand::Unshare(a) => latency::unshare(a.runs).await,
        BenchCommand::Storage(a) => storage::storage(daemon, a).await,
        BenchCommand::Checkpoint(a) => checkpoint::checkpoint(daemon, a).await,
        BenchCommand::Durability(a) => durability::durability(daemon, a).await,
        BenchCommand::Wake(a) => wake::wake(daemon, a).await,
        BenchCommand::Density(a) => density::density(daemon, a).await,
        BenchCommand::Edge(a) => edge::edge(daemon, a).await,
        BenchCommand::Fs(a) => fs::fs(daemon, a).await,
        BenchCommand::Control(a) => control::control(daemon, a).await,
        BenchCommand::IoWorker(a) => workload::io_worker(
            a.workload,
            &workload::WorkerArgs {
                dir: &a.dir,
                size_mb: a.size_mb,
                files: a.files,
            },
        ),
    }
}
