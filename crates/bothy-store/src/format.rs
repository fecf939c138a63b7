//! On-store chunk body format.
//!
//! ```text
//! offset size field
//!      0    4 magic  b"BYCK"
//!      4    1 format version (1)
//!      5    1 compression kind (0 = none, 1 = zstd)
//!      6    2 reserved, zero
//!      8    8 uncompressed length, little-endian u64
//!     16   32 BLAKE3 hash of the uncompressed content (also the object key)
//!     48    . payload (compressed as the kind says)
//! ```
//! The hash doubles as the checksum: a reader recomputes it over the decompressed
//! bytes and refuses anything that does not match, so a corrupt or substituted
//! object is an error and never reaches a disk.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{ChunkHash, StoreError};

pub const MAGIC: &[u8; 4] = b"BYCK";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 48;
/// zstd level 3: the library default, fast enough to keep up with a disk.
const ZSTD_LEVEL: i32 = 3;
/// Chunks are at most this large; a larger declared length is corruption, and
/// refusing it early keeps a hostile object from making us allocate gigabytes.
pub const MAX_CHUNK_LEN: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// Encodes `data` as a chunk body, compressing it unless that does not help.
pub fn encode(data: &[u8]) -> Result<(ChunkHash, Bytes), StoreError> {
    if data.len() as u64 > MAX_CHUNK_LEN {
        return Err(StoreError::TooLarge(data.len() as u64));
    }
    let hash = ChunkHash::of(data);
    let compressed = zstd::bulk::compress(data, ZSTD_LEVEL).map_err(StoreError::Compression)?;
    let (kind, payload): (Compression, &[u8]) = if compressed.len() < data.len() {
        (Compression::Zstd, &compressed)
    } else {
        (Compression::None, data)
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind as u8);
    out.put_u16_le(0);
    out.put_u64_le(data.len() as u64);
    out.put_slice(hash.as_bytes());
    out.put_slice(payload);
    Ok((hash, out.freeze()))
}

/// Decodes a chunk body and checks it is the chunk `expected` names.
pub fn decode(expected: &ChunkHash, body: &[u8]) -> Result<Bytes, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt {
        hash: expected.to_hex(),
        why: why.to_string(),
    };
    if body.len() < HEADER_LEN {
        return Err(corrupt("shorter than the header"));
    }
    if &body[0..4] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    if body[4] != VERSION {
        return Err(corrupt(&format!("unknown format version {}", body[4])));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&body[8..16]);
    let len = u64::from_le_bytes(len_bytes);
    if len > MAX_CHUNK_LEN {
        return Err(corrupt("declared length too large"));
    }
    if &body[16..48] != expected.as_bytes() {
        return Err(corrupt("header names another chunk"));
    }
    let payload = &body[HEADER_LEN..];
    let data = match body[5] {
        0 => payload.to_vec(),
        1 => zstd::bulk::decompress(payload, len as usize)
            .map_err(|e| corrupt(&format!("zstd: {e}")))?,
        k => return Err(corrupt(&format!("unknown compression kind {k}"))),
    };
    if data.len() as u64 != len {
        return Err(corrupt("length mismatch"));
    }
    if ChunkHash::of(&data) != *expected {
        return Err(corrupt("content hash mismatch"));
    }
    Ok(Bytes::from(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_compressible_and_random() {
        let zeros = vec![0u8; 100_000];
        let (h, body) = encode(&zeros).unwrap();
        assert!(body.len() < 1000, "zeros should compress");
        assert_eq!(body[5], Compression::Zstd as u8);
        assert_eq!(&decode(&h, &body).unwrap()[..], &zeros[..]);

        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let (h, body) = encode(&noise).unwrap();
        assert_eq!(&decode(&h, &body).unwrap()[..], &noise[..]);

        let (h, body) = encode(&[]).unwrap();
        assert!(decode(&h, &body).unwrap().is_empty());
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let data = b"hello bothy hello bothy hello bothy".repeat(10);
        let (h, body) = encode(&data).unwrap();
        for i in 0..body.len() {
            if (6..8).contains(&i) {
                continue; // reserved bytes are not interpreted
            }
            let mut bad = body.to_vec();
            bad[i] ^= 0x40;
            assert!(decode(&h, &bad).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_hash_truncation_and_unknown_kind_are_errors() {
        let (h, body) = encode(b"abc").unwrap();
        let other = ChunkHash::of(b"abd");
        assert!(matches!(
            decode(&other, &body),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(decode(&h, &body[..HEADER_LEN - 1]).is_err());
        let mut bad = body.to_vec();
        bad[5] = 9;
        assert!(decode(&h, &bad).is_err());
        let mut bad = body.to_vec();
        bad[4] = 2;
        assert!(decode(&h, &bad).is_err());
    }
}
