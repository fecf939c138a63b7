//! Block-map snapshots shipped to the object store, so a host with an empty
//! local disk can bring a volume (and its checkpoints) back.
//!
//! ```text
//! offset size field
//!      0    4 magic b"BYMP"
//!      4    1 format version (1)
//!      5    3 reserved, zero
//!      8    8 volume size in bytes, LE u64
//!     16    8 chunk size in bytes, LE u64
//!     24    8 entry count N, LE u64
//!     32 40*N entries sorted by index: chunk index LE u64, BLAKE3 hash (32)
//!    end   32 BLAKE3 of every byte before it
//! ```
//! Snapshots are immutable objects: `maps/<volume>/head/<seq as 20 digits>` and
//! `maps/<volume>/checkpoints/<id as 20 digits>`.

use bothy_store::ChunkHash;

use crate::VolumeError;

const MAGIC: &[u8; 4] = b"BYMP";
const VERSION: u8 = 1;
const HEADER: usize = 32;
const ENTRY: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSnapshot {
    pub size: u64,
    pub chunk_size: u64,
    /// (chunk index, hash), sorted by index.
    pub entries: Vec<(u64, ChunkHash)>,
}

impl MapSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + ENTRY * self.entries.len() + 32);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (idx, hash) in &self.entries {
            out.extend_from_slice(&idx.to_le_bytes());
            out.extend_from_slice(hash.as_bytes());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, VolumeError> {
        let bad = |why: &str| VolumeError::CorruptSnapshot(why.to_string());
        if body.len() < HEADER + 32 {
            return Err(bad("too short"));
        }
        let (content, sum) = body.split_at(body.len() - 32);
        if blake3::hash(content).as_bytes() != sum {
            return Err(bad("checksum mismatch"));
        }
        if &content[0..4] != MAGIC {
            return Err(bad("bad magic"));
        }
        if content[4] != VERSION {
            return Err(bad("unknown format version"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&content[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let size = u64_at(8);
        let chunk_size = u64_at(16);
        let count = u64_at(24);
        let body = &content[HEADER..];
        if chunk_size == 0 || count.checked_mul(ENTRY as u64) != Some(body.len() as u64) {
            return Err(bad("entry count does not match length"));
        }
        let chunks = size.div_ceil(chunk_size);
        let mut entries = Vec::with_capacity(count as usize);
        for e in body.chunks_exact(ENTRY) {
            let mut i = [0u8; 8];
            i.copy_from_slice(&e[..8]);
            let idx = u64::from_le_bytes(i);
            if idx >= chunks || entries.last().is_some_and(|(prev, _)| *prev >= idx) {
                return Err(bad("entries out of range or order"));
            }
            let mut h = [0u8; 32];
            h.copy_from_slice(&e[8..]);
            entries.push((idx, ChunkHash::from_bytes(h)));
        }
        Ok(Self {
            size,
            chunk_size,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MapSnapshot {
        MapSnapshot {
            size: 10 << 20,
            chunk_size: 1 << 20,
            entries: vec![(0, ChunkHash::of(b"a")), (7, ChunkHash::of(b"b"))],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(MapSnapshot::decode(&s.encode()).unwrap(), s);
        let empty = MapSnapshot {
            entries: vec![],
            ..sample()
        };
        assert_eq!(MapSnapshot::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn any_damage_is_detected() {
        let body = sample().encode();
        for i in 0..body.len() {
            let mut bad = body.clone();
            bad[i] ^= 0x10;
            assert!(MapSnapshot::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(MapSnapshot::decode(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn out_of_range_index_is_refused_even_with_a_valid_checksum() {
        let s = MapSnapshot {
            entries: vec![(10, ChunkHash::of(b"a"))],
            ..sample()
        };
        assert!(MapSnapshot::decode(&s.encode()).is_err());
        let s = MapSnapshot {
            entries: vec![(3, ChunkHash::of(b"a")), (3, ChunkHash::of(b"b"))],
            ..sample()
        };
        assert!(MapSnapshot::decode(&s.encode()).is_err());
    }
}
