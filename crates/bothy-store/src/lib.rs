//! Content-addressed chunk storage over an object store.
//!
//! A chunk is an immutable object named by the BLAKE3 hash of its uncompressed
//! content (`chunks/ab/cdef…`), stored with a small header and zstd compression
//! (see [`format`]). Reads verify the hash, so corruption is always an error.
//! Calls to the store are retried with bounded exponential backoff when the
//! error looks transient.

pub mod blobs;
pub mod chunks;
pub mod faulty;
pub mod format;
pub mod retry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod url;

pub use blobs::{Blobs, ObjectBlobs};
pub use chunks::ChunkStore;
pub use faulty::{FaultPlan, FaultyBlobs};
pub use retry::RetryPolicy;
pub use url::StoreUrl;

use std::fmt;

/// The BLAKE3 hash of a chunk's uncompressed content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash([u8; 32]);

impl ChunkHash {
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        blake3::Hash::from_hex(s).ok().map(|h| Self(*h.as_bytes()))
    }
    /// `chunks/ab/cdef…`: the two-character fan-out keeps directory sizes sane
    /// on a file-backed store.
    pub fn key(&self) -> String {
        let hex = self.to_hex();
        format!("{CHUNK_PREFIX}/{}/{}", &hex[..2], &hex[2..])
    }
    /// Parses a key produced by [`ChunkHash::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(CHUNK_PREFIX)?.strip_prefix('/')?;
        let (fan, tail) = rest.split_once('/')?;
        if fan.len() != 2 {
            return None;
        }
        Self::from_hex(&format!("{fan}{tail}"))
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

pub const CHUNK_PREFIX: &str = "chunks";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store URL {url:?} is not supported: {why} (use file:///absolute/path or s3://bucket?endpoint=http://host:port&region=REGION)")]
    BadUrl { url: String, why: String },
    #[error("object {0:?} not found in the object store")]
    NotFound(String),
    #[error("chunk {hash} is corrupt in the object store ({why}); it must be re-uploaded from a good copy")]
    Corrupt { hash: String, why: String },
    #[error("chunk of {0} bytes exceeds the maximum chunk size")]
    TooLarge(u64),
    #[error("compressing a chunk failed: {0}")]
    Compression(std::io::Error),
    /// Worth retrying: network trouble, throttling, a store that is briefly down.
    #[error("object store temporarily failed (will be retried): {0}")]
    Transient(String),
    #[error("object store failed: {0}")]
    Permanent(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_rejects_garbage() {
        let h = ChunkHash::of(b"x");
        let key = h.key();
        assert!(key.starts_with("chunks/"));
        assert_eq!(ChunkHash::from_key(&key), Some(h));
        assert_eq!(ChunkHash::from_key("chunks/zz/nothex"), None);
        assert_eq!(ChunkHash::from_key("maps/ab/cd"), None);
        assert_eq!(ChunkHash::from_key(&key.replace('/', "")), None);
    }
}
