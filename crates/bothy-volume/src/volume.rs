//! [`Volume`]: one open volume's reads, writes, hole punching and flush.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_store::ChunkHash;

use crate::cache::{self, ChunkCache};
use crate::storage::Inner;
use crate::{db, space, VolumeError};

/// Unflushed writes are flushed early past this, bounding memory per volume.
pub const MAX_PENDING_BYTES: u64 = 64 << 20;

/// How long a flush that finds the local disk full keeps trying (shedding
/// clean cached chunks, waiting for a collection) before it fails: a failed
/// flush reaches the box's ext4 as an I/O error.
const NO_SPACE_PATIENCE: Duration = Duration::from_secs(10);

/// One open volume. Reads see this handle's own unflushed writes.
pub struct Volume {
    pub(crate) inner: Arc<Inner>,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) chunk_size: u64,
    pub(crate) head: i64,
    /// The committed head map (the rows of `head`), in memory: every read and
    /// write looks a chunk up, and a checkpoint copies it whole. Only this
    /// handle changes the head while it is open.
    pub(crate) map: BTreeMap<u64, ChunkHash>,
    /// Chunk index → new content since the last flush (`None` = zeros).
    pub(crate) pending: BTreeMap<u64, Option<Vec<u8>>>,
    /// Bytes of `pending` counted in [`Inner::pending_bytes`].
    pub(crate) counted: u64,
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.inner
            .pending_bytes
            .fetch_sub(self.counted, Ordering::SeqCst);
    }
}

impl Volume {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(VolumeError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Calls `f(chunk index, offset in chunk, offset in the caller's range, len)`
    /// for each chunk piece of a range.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, usize, usize, usize)> {
        let mut out = Vec::new();
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let idx = pos / self.chunk_size;
            let within = pos % self.chunk_size;
            let n = (self.chunk_size - within).min(len - done);
            out.push((idx, within as usize, done as usize, n as usize));
            done += n;
        }
        out
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.check_range(offset, buf.len() as u64)?;
        for (idx, within, at, n) in self.pieces(offset, buf.len() as u64) {
            let dst = &mut buf[at..at + n];
            if let Some(p) = self.pending.get(&idx) {
                match p {
                    Some(data) => dst.copy_from_slice(&data[within..within + n]),
                    None => dst.fill(0),
                }
                continue;
            }
            match self.map.get(&idx) {
                Some(hash) => self.inner.read_range(hash, self.chunk_size, within, dst)?,
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    /// Applies `src` (bytes, or zeros for `None`) to `len` bytes at
    /// `offset`. Changed chunks are edited in place in `pending`, so a small
    /// write costs a copy of its own bytes once the chunk is loaded; chunks
    /// that end up all zeros are found at flush time.
    fn modify_range(
        &mut self,
        offset: u64,
        len: u64,
        src: Option<&[u8]>,
    ) -> Result<(), VolumeError> {
        self.check_range(offset, len)?;
        let cs = self.chunk_size as usize;
        for (idx, within, at, n) in self.pieces(offset, len) {
            let piece = src.map(|d| &d[at..at + n]);
            if n == cs {
                self.pending.insert(idx, piece.map(<[u8]>::to_vec));
                continue;
            }
            let slot = match self.pending.get_mut(&idx) {
                Some(slot) => slot,
                None => {
                    let current = match self.map.get(&idx) {
                        Some(hash) => Some(self.inner.chunk_data(hash, self.chunk_size)?),
                        // Zeroing a range of an unmapped chunk changes nothing.
                        None if piece.is_none() => continue,
                        None => None,
                    };
                    self.pending.entry(idx).or_insert(current)
                }
            };
            match (slot.as_mut(), piece) {
                (Some(data), Some(p)) => data[within..within + n].copy_from_slice(p),
                (Some(data), None) => data[within..within + n].fill(0),
                (None, Some(p)) => {
                    let mut data = vec![0u8; cs];
                    data[within..within + n].copy_from_slice(p);
                    *slot = Some(data);
                }
                (None, None) => {}
            }
        }
        self.count_pending();
        if self.pending.len() as u64 * self.chunk_size > MAX_PENDING_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Keeps the storage-wide count of unflushed bytes (which the host disk
    /// will have to hold) in step with `pending`.
    pub(crate) fn count_pending(&mut self) {
        let now = self.pending.len() as u64 * self.chunk_size;
        if now >= self.counted {
            self.inner
                .pending_bytes
                .fetch_add(now - self.counted, Ordering::SeqCst);
        } else {
            self.inner
                .pending_bytes
                .fetch_sub(self.counted - now, Ordering::SeqCst);
        }
        self.counted = now;
    }

    /// Writes `data` at `offset`; durable after the next [`Volume::flush`].
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        self.modify_range(offset, data.len() as u64, Some(data))
    }

    /// Zeros a range; chunks that become all zeros are dropped from the map
    /// and cost nothing.
    pub fn punch_hole(&mut self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.modify_range(offset, len, None)
    }

    /// Number of chunks that hold data (the rest are holes), counting
    /// unflushed writes. Cost grows with the map.
    pub fn allocated_chunks(&self) -> Result<u64, VolumeError> {
        let mut n = self.map.len() as i64;
        for (idx, p) in &self.pending {
            let mapped = self.map.contains_key(idx);
            let data = p.as_ref().is_some_and(|d| !is_zero(d));
            n += i64::from(data) - i64::from(mapped);
        }
        Ok(n.max(0) as u64)
    }

    /// Makes every write so far durable on local disk. A local disk that is
    /// full is given [`NO_SPACE_PATIENCE`] to get room back (see space.rs).
    pub fn flush(&mut self) -> Result<(), VolumeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let chunks = self.pending.len();
        let mut wait = Duration::from_millis(10);
        loop {
            match self.try_flush() {
                Err(e) if space::is_no_space(&e) && started.elapsed() < NO_SPACE_PATIENCE => {
                    let need = self.pending.len() as u64 * self.chunk_size;
                    match self.inner.drop_clean(need) {
                        Ok(freed) if freed >= need => {
                            tracing::info!(volume = %self.name, freed, "the local disk is full: shed clean cached chunks");
                            continue;
                        }
                        Ok(_) => {}
                        Err(shed) => {
                            tracing::warn!(error = %shed, "could not shed clean cached chunks")
                        }
                    }
                    tracing::warn!(volume = %self.name, error = %e, "the local disk is full; the flush waits for room");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                other => other?,
            }
            if self.pending.is_empty() {
                break;
            }
        }
        tracing::debug!(volume = %self.name, chunks, us = started.elapsed().as_micros() as u64, "flushed");
        Ok(())
    }

    /// One attempt at [`Volume::flush`]; on error `pending` is as it was.
    /// Holds the fence only for the attempt, so a collection freeing room
    /// can run between attempts.
    fn try_flush(&mut self) -> Result<(), VolumeError> {
        let inner = self.inner.clone();
        let _fence = inner.fence.read().unwrap_or_else(|p| p.into_inner());
        let pending: Vec<(u64, Option<&Vec<u8>>)> = self
            .pending
            .iter()
            .map(|(idx, data)| (*idx, data.as_ref().filter(|d| !is_zero(d))))
            .collect();
        let staged = store_chunks(&inner.cache, &pending)?;
        let committed = self.commit_flush(&inner, &staged);
        if committed.is_err() {
            for s in staged.iter().filter_map(|(_, s)| *s) {
                inner.cache.discard(s);
            }
        }
        committed?;
        for (idx, chunk) in &staged {
            match chunk {
                Some(s) => self.map.insert(*idx, s.hash),
                None => self.map.remove(idx),
            };
        }
        self.pending.clear();
        self.count_pending();
        inner.flushed(&self.name);
        Ok(())
    }

    /// Makes staged chunks durable, then commits them and the map in one
    /// transaction, publishing the chunks before the database lock goes (see
    /// [`cache::adopt`]). Nothing is published on error.
    fn commit_flush(
        &self,
        inner: &Inner,
        staged: &[(u64, Option<cache::Staged>)],
    ) -> Result<(), VolumeError> {
        inner.cache.sync()?;
        let mut conn = inner.db();
        let tx = conn.transaction()?;
        self.freeze_checkpoints(&tx)?;
        let mut decided = Vec::with_capacity(staged.len());
        for (idx, chunk) in staged {
            match chunk {
                None => db::unmap_chunk(&tx, self.head, *idx)?,
                Some(s) => {
                    db::map_chunk(&tx, self.head, *idx, &s.hash)?;
                    decided.push((*s, cache::adopt(&inner.cache, &tx, s, true, inner.tick())?));
                }
            }
        }
        tx.commit()?;
        for (s, keep) in decided {
            if keep {
                inner.cache.publish(s);
            } else {
                inner.cache.discard(s);
            }
        }
        drop(conn);
        Ok(())
    }
}

/// Most chunks a flush hashes and writes to the cache at once.
const FLUSH_THREADS: usize = 4;

/// Hashes changed chunks and stages them in the cache (see cache.rs), in
/// parallel when there are several. Gives each index with its staged chunk
/// (`None` for a hole). On error nothing stays staged.
fn store_chunks(
    cache: &ChunkCache,
    pending: &[(u64, Option<&Vec<u8>>)],
) -> Result<Vec<(u64, Option<cache::Staged>)>, VolumeError> {
    let one = |(idx, data): &(u64, Option<&Vec<u8>>)| -> Result<_, VolumeError> {
        Ok((
            *idx,
            match data {
                Some(d) => Some(cache.stage(&ChunkHash::of(d), d)?),
                None => None,
            },
        ))
    };
    let busy = pending.iter().filter(|(_, d)| d.is_some()).count();
    let results: Vec<Result<_, VolumeError>> = if busy <= 1 {
        pending.iter().map(one).collect()
    } else {
        let per = pending.len().div_ceil(FLUSH_THREADS.min(busy));
        std::thread::scope(|scope| {
            let workers: Vec<_> = pending
                .chunks(per)
                .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join().unwrap_or_else(|_| {
                        vec![Err(std::io::Error::other("a flush worker panicked").into())]
                    })
                })
                .collect()
        })
    };
    let mut out = Vec::with_capacity(results.len());
    let mut failed = None;
    for r in results {
        match r {
            Ok(item) => out.push(item),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    match failed {
        None => Ok(out),
        Some(e) => {
            for staged in out.into_iter().filter_map(|(_, s)| s) {
                cache.discard(staged);
            }
            Err(e)
        }
    }
}

fn is_zero(data: &[u8]) -> bool {
    // Word-sized compares (vectorised by the compiler): this runs over every
    // changed chunk at flush.
    let mut words = data.chunks_exact(8);
    words
        .by_ref()
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}
