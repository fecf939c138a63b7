//! The storage process: every box's disk is served by a process of its own
//! that outlives the daemon, so a daemon that crashes, is killed or is
//! upgraded leaves the boxes running and their disk I/O working; the next
//! daemon finds it on its socket and adopts the boxes.
//!
//! One storage process per data dir, not one per box: the volumes share one
//! block-map database, one chunk cache with one budget, one upload queue
//! and one garbage collector, whose safety rests on in-process locks (see
//! the GC protocol in `bothy-volume`); one process keeps those as they are
//! and costs one set of threads rather than one per box.
//!
//! - [`server`]: the process itself (`bothy storage-server`, started by the
//!   daemon), serving [`proto`] on `DATA_DIR/run/storage.sock`;
//! - [`stack`]: a box's disk as it serves it: volume → FUSE → loop → ext4;
//! - [`space`]: the guard that turns a full host disk into ENOSPC in boxes;
//! - [`client`]: the daemon's side, which starts the process when none
//!   answers.

pub(crate) mod base;
pub mod client;
pub(crate) mod launch;
pub mod proto;
pub mod server;
pub mod space;
mod stack;

pub use server::{socket_path, OnStop, ServerConfig};
pub use stack::abort_stale_connections;

/// Runs the storage process (`bothy storage-server`) until it is asked to
/// exit, or SIGTERM/SIGINT arrives while it serves no disk.
pub fn run_process(cfg: ServerConfig) -> Result<(), crate::RuntimeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(server::serve(cfg, crate::termination(), OnStop::WhenIdle))
}
