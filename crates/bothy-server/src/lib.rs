//! The bothy daemon: Sprites-compatible API, auth, orchestration, state.
//!
//! Contract with the binary: [`DaemonConfig`] and [`run_daemon`].

use std::net::SocketAddr;
use std::path::PathBuf;

/// How `bothy daemon` was started.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Default `/var/lib/bothy`.
    pub data_dir: PathBuf,
    /// Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Shared base-image cache; default `bothy_runtime::image::DEFAULT_IMAGE_DIR`.
    pub image_dir: PathBuf,
    /// The running bothy binary (bind-mounted into boxes as their init).
    pub exe: PathBuf,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run_daemon(_cfg: DaemonConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    todo!()
}
