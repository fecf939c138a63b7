//! The base image as a volume: imported once per storage from the image file
//! that `bothy image build` made, then checkpointed, so that every new box's
//! disk is a metadata-only clone of checkpoint 1 and all boxes share its
//! chunks.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bothy_volume::{CheckpointId, Storage, VolumeError};

use crate::RuntimeError;

/// The base volume's name for an image version.
pub fn volume_name(image_version: &str) -> String {
    format!("base-{image_version}")
}

/// Makes sure `name` exists with checkpoint 1 holding the image at `image`.
/// An import that a crash interrupted has no checkpoint yet; it is redone.
pub fn ensure_imported(storage: &Storage, name: &str, image: &Path) -> Result<(), RuntimeError> {
    let err = |e: VolumeError| RuntimeError::Failed(format!("importing the base image: {e}"));
    if storage
        .volume_names()
        .map_err(err)?
        .iter()
        .any(|n| n == name)
    {
        let vol = storage.open_volume(name).map_err(err)?;
        if vol.checkpoints().map_err(err)?.contains(&CheckpointId(1)) {
            return Ok(());
        }
        drop(vol);
        storage.delete_volume(name).map_err(err)?;
    }
    let file = File::open(image)?;
    let size = file.metadata()?.len();
    let chunk = bothy_volume::DEFAULT_CHUNK_SIZE;
    if size % chunk != 0 {
        return Err(RuntimeError::Failed(format!(
            "base image {} is {size} bytes, not a multiple of {chunk}: rebuild it with `bothy image build`",
            image.display()
        )));
    }
    tracing::info!(image = %image.display(), "importing the base image into the volume store (once)");
    let started = std::time::Instant::now();
    let mut vol = storage.create_volume(name, size, chunk).map_err(err)?;
    let mut buf = vec![0u8; chunk as usize];
    let mut copied = 0u64;
    for (start, end) in data_extents(&file, size)? {
        let mut offset = start - start % chunk;
        while offset < end {
            file.read_exact_at(&mut buf, offset)?;
            // Holes inside an extent's chunk and zeroed blocks cost nothing.
            if buf.iter().any(|&b| b != 0) {
                vol.write(offset, &buf).map_err(err)?;
                copied += chunk;
            }
            offset += chunk;
        }
    }
    vol.flush().map_err(err)?;
    let id = vol.checkpoint().map_err(err)?;
    if id != CheckpointId(1) {
        return Err(RuntimeError::Failed(format!(
            "base volume {name} got checkpoint {} instead of 1; delete the storage dir's volumes.db to start over",
            id.0
        )));
    }
    tracing::info!(
        mib = copied >> 20,
        ms = started.elapsed().as_millis() as u64,
        "base image imported"
    );
    Ok(())
}

/// The (start, end) byte ranges of `file` that hold data, merged so that
/// consecutive extents in the same chunk are read once.
fn data_extents(file: &File, size: u64) -> Result<Vec<(u64, u64)>, RuntimeError> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on an open fd has no memory-safety preconditions.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e.into());
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        match out.last_mut() {
            Some(last) if last.1 >= data as u64 => last.1 = hole as u64,
            _ => out.push((data as u64, hole as u64)),
        }
        pos = hole;
    }
    Ok(out)
}
