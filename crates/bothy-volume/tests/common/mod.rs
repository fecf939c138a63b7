//! What the volume tests share.
// Each test crate uses a part of these.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_store::{Blobs, ChunkStore, FaultPlan, FaultyBlobs, ObjectBlobs, RetryPolicy};
use bothy_volume::{Storage, StorageConfig, Volume};
use object_store::memory::InMemory;

pub const CS: u64 = 4096;

pub fn mem_blobs() -> Arc<dyn Blobs> {
    Arc::new(ObjectBlobs::new(Arc::new(InMemory::new())))
}

pub fn storage(dir: &Path, blobs: Arc<dyn Blobs>) -> Storage {
    Storage::open(
        dir,
        ChunkStore::new(blobs, RetryPolicy::fast()),
        StorageConfig::default(),
    )
    .unwrap()
}

pub fn read_all(v: &Volume) -> Vec<u8> {
    let mut buf = vec![0u8; v.size() as usize];
    v.read(0, &mut buf).unwrap();
    buf
}

/// Chunk `idx` of volume `name` as a host with an empty disk recovers it
/// from the object store alone.
pub fn recovered_chunk(blobs: Arc<dyn Blobs>, name: &str, idx: u64) -> Vec<u8> {
    let empty = tempfile::tempdir().unwrap();
    let s = storage(empty.path(), blobs);
    let v = s.recover_volume(name).unwrap();
    let mut buf = vec![0u8; CS as usize];
    v.read(idx * CS, &mut buf).unwrap();
    buf
}

pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 31 % 251) as u8) | 1)
        .collect()
}

/// Polls `cond` until it holds or `timeout` passes; whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Lets every held store call go when dropped, so a failing test ends
/// instead of waiting on them forever.
pub struct Release<'a>(pub &'a FaultyBlobs);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.set_plan(FaultPlan::default());
    }
}
