//! The Debian base image, built once per host with mmdebstrap. (Stub.)

use std::path::{Path, PathBuf};

/// Where `bothy image build` puts the base image and every daemon finds it.
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/bothy-images";

/// Progress of an image build, for a progress bar or a log.
#[derive(Debug, Clone)]
pub enum BuildProgress {
    Step { n: u32, of: u32, what: String },
    Line(String),
}

/// The base image in `dir`, if it has been built.
pub fn find_base(dir: &Path) -> Option<PathBuf> {
    let _ = dir;
    todo!()
}

/// Builds the base image into `dir` (replacing an older one atomically).
pub async fn build(
    _dir: &Path,
    _progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<PathBuf, crate::RuntimeError> {
    todo!()
}
