//! Serves one volume on a FUSE mount until stdin closes; for benchmarks.
//!
//! `serve STATE_DIR STORE_DIR MOUNT_DIR SIZE CHUNK_SIZE DIRECT_IO(0|1)`
//! creates volume "bench" (or opens it if it exists) over a `file://` store,
//! mounts it, prints `ready`, and unmounts when stdin reaches EOF.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use bothy_fuse::{MountOptions, VolumeMount};
use bothy_store::{ChunkStore, ObjectBlobs, RetryPolicy, StoreUrl};
use bothy_volume::{Storage, StorageConfig, VolumeError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, store, dir, size, chunk, dio] = &args[..] else {
        return Err("usage: serve STATE_DIR STORE_DIR MOUNT_DIR SIZE CHUNK_SIZE DIRECT_IO".into());
    };
    let url: StoreUrl = format!("file://{store}").parse()?;
    let store = ChunkStore::new(
        Arc::new(ObjectBlobs::new(url.open()?)),
        RetryPolicy::default(),
    );
    let storage = Storage::open(Path::new(state), store, StorageConfig::default())?;
    let volume = match storage.open_volume("bench") {
        Ok(v) => v,
        Err(VolumeError::NoSuchVolume(_)) => {
            storage.create_volume("bench", size.parse()?, chunk.parse()?)?
        }
        Err(e) => return Err(e.into()),
    };
    let mount = VolumeMount::mount(
        volume,
        Path::new(dir),
        MountOptions {
            direct_io: dio == "1",
        },
    )?;
    println!("ready");
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    mount.unmount()?;
    Ok(())
}
