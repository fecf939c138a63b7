//! Uploading flushed chunks to the object store: the background uploader,
//! the rules that make it give way to writers and to foreground work, and
//! the upload pass a `sync` barrier runs.
//!
//! The rules, in order: a barrier pass or a checkpoint under way goes
//! first (background uploads pause at once); background uploads wait for
//! writers to pause ([`UPLOAD_QUIET`]), unless a quarter of the cache
//! budget waits, a flushed chunk has waited [`MAX_UPLOAD_DELAY`], or a head
//! frozen for shipment waits for the pass (shipping.rs). A pass never holds
//! the GC fence across an object-store call (see gc.rs).

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use bothy_store::ChunkHash;

use crate::storage::Inner;
use crate::{db, Storage, VolumeError};

/// Background uploads wait until no volume has flushed for this long: on a
/// small host they take the CPU and disk bandwidth a burst of writes needs
/// (measured: they were half of the daemon's CPU during a 1 GiB write).
const UPLOAD_QUIET: Duration = Duration::from_millis(250);
/// The longest a flushed chunk waits for writers to pause. A box that
/// writes and fsyncs without pausing (a database, a log every 100 ms)
/// never gives [`UPLOAD_QUIET`], and its acknowledged writes would stay on
/// this host's disk alone until gigabytes piled up. The bursts the quiet
/// rule is for (an untar, a package install, a build step) mostly pause
/// within a few seconds; a writer that has not paused for 5 s is a steady
/// load, which must share the host with its uploads. It also matches the
/// shipping interval of head snapshots (shipping.rs), so a host that loses
/// its disk loses seconds of writes, not hours.
const MAX_UPLOAD_DELAY: Duration = Duration::from_secs(5);
/// How often paused background uploads look whether they may go on.
const PRIORITY_POLL: Duration = Duration::from_millis(10);

/// When volumes flushed, as the uploader's rules need it.
#[derive(Debug, Default)]
pub(crate) struct Flushes {
    /// The last flush of any volume.
    last: Option<Instant>,
    /// The oldest flush whose chunks no finished upload pass covered yet.
    oldest_waiting: Option<Instant>,
}

impl Flushes {
    /// As a storage opens: dirty chunks left by the previous process count
    /// as flushed now.
    pub(crate) fn after_open(dirty: bool) -> Self {
        Self {
            last: None,
            oldest_waiting: dirty.then(Instant::now),
        }
    }

    /// Puts back the flushes a pass covered but did not upload all of.
    fn still_waiting(&mut self, since: Option<Instant>) {
        self.oldest_waiting = match (self.oldest_waiting, since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Default)]
pub(crate) struct Wake {
    kicked: bool,
    pub(crate) shutdown: bool,
}

impl Storage {
    /// Keeps background uploads (and [`Storage::upload_pending`]) off the
    /// disk until the guard drops: a checkpoint's few small flushes would
    /// otherwise queue behind a backlog of uploads.
    pub fn pause_uploads(&self) -> UploadPause<'_> {
        self.inner.priority.fetch_add(1, Ordering::SeqCst);
        UploadPause(&self.inner)
    }

    /// Uploads every chunk written locally but not yet in the object store,
    /// without holding any volume: run it before [`crate::Volume::sync`] so
    /// that the barrier itself (which holds the volume) finds little to do.
    /// It gives way to writers like the background uploader (a checkpoint's
    /// barrier must not slow the box's next writes), so it returns once the
    /// volumes were quiet long enough, or enough waited, to drain.
    pub fn upload_pending(&self) -> Result<(), VolumeError> {
        let inner = &self.inner;
        loop {
            if inner.wait_for_quiet()? {
                return Ok(());
            }
            if inner.upload_dirty(true)? {
                return Ok(());
            }
        }
    }
}

/// See [`Storage::pause_uploads`].
pub struct UploadPause<'a>(&'a Inner);

impl Drop for UploadPause<'_> {
    fn drop(&mut self) {
        self.0.priority.fetch_sub(1, Ordering::SeqCst);
        self.0.kick();
    }
}

impl Inner {
    pub(crate) fn lock_wake(&self) -> MutexGuard<'_, Wake> {
        self.wake.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flushes(&self) -> MutexGuard<'_, Flushes> {
        self.flushes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the background uploader.
    pub(crate) fn kick(&self) {
        self.lock_wake().kicked = true;
        self.wake_cv.notify_all();
    }

    /// A flush of `volume` committed: its head changed and its chunks wait.
    pub(crate) fn flushed(&self, volume: &str) {
        {
            let mut f = self.flushes();
            let now = Instant::now();
            f.last = Some(now);
            f.oldest_waiting.get_or_insert(now);
        }
        self.head_changed(volume);
        self.kick();
    }

    pub(crate) fn upload_loop(&self) {
        loop {
            {
                // Woken by a flush, or when a changed head is due to ship.
                let wait = self
                    .next_freeze_in()
                    .map_or(self.interval, |due| due.min(self.interval));
                let mut w = self.lock_wake();
                if !w.kicked && !w.shutdown {
                    w = self.wait_wake(w, wait);
                }
                if w.shutdown {
                    return;
                }
                w.kicked = false;
            }
            match self.wait_for_quiet() {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(%e, "reading the cache index failed; will retry"),
            }
            // Before the pass lists what is dirty, so it uploads every chunk
            // the frozen heads name (see shipping.rs).
            if let Err(e) = self.freeze_changed_heads() {
                tracing::warn!(%e, "freezing block maps for shipment failed; will retry");
            }
            match self.upload_dirty(true) {
                // Writers came back: wait for the next quiet spell.
                Ok(false) => self.kick(),
                Ok(true) => {
                    if let Err(e) = self.ship_frozen_heads() {
                        tracing::warn!(%e, "shipping block-map snapshots failed; will retry");
                    }
                }
                Err(e) => tracing::warn!(%e, "background upload failed; will retry"),
            }
        }
    }

    fn wait_wake<'a>(&self, w: MutexGuard<'a, Wake>, timeout: Duration) -> MutexGuard<'a, Wake> {
        self.wake_cv
            .wait_timeout(w, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    }

    /// How much longer background uploads should wait for writers, with
    /// `waiting` dirty bytes: `None` once no volume flushed for
    /// [`UPLOAD_QUIET`], the high-water mark is reached, or a flushed chunk
    /// waited [`MAX_UPLOAD_DELAY`].
    fn writers_busy(&self, waiting: u64) -> Option<Duration> {
        let f = self.flushes();
        let quiet_in = UPLOAD_QUIET.checked_sub(f.last?.elapsed())?;
        if waiting >= self.dirty_high_water {
            return None;
        }
        let due_in = match f.oldest_waiting {
            Some(t) => MAX_UPLOAD_DELAY.checked_sub(t.elapsed())?,
            None => quiet_in,
        };
        Some(quiet_in.min(due_in)).filter(|d| !d.is_zero())
    }

    /// Sleeps until background uploads may go (see [`Inner::writers_busy`]).
    /// Whether the storage is shutting down.
    pub(crate) fn wait_for_quiet(&self) -> Result<bool, VolumeError> {
        loop {
            let wait = if self.priority.load(Ordering::SeqCst) > 0 {
                PRIORITY_POLL
            } else {
                let waiting = db::cache_totals(&self.db(), true)?.1;
                match self.writers_busy(waiting) {
                    Some(wait) => wait,
                    None => return Ok(false),
                }
            };
            let w = self.wait_wake(self.lock_wake(), wait);
            if w.shutdown {
                return Ok(true);
            }
        }
    }

    /// Uploads every dirty chunk and marks it clean. A background pass
    /// (`background`) stops early, returning `false`, when a barrier pass
    /// wants the upload lock or a checkpoint is under way, or when a volume
    /// flushes meanwhile, unless a chunk it covers waited
    /// [`MAX_UPLOAD_DELAY`] or a frozen head waits for it: then it goes
    /// through. It also leaves for a later pass a chunk whose object GC is
    /// deleting, where a barrier pass waits for the delete.
    pub(crate) fn upload_dirty(&self, background: bool) -> Result<bool, VolumeError> {
        if !background {
            self.priority.fetch_add(1, Ordering::SeqCst);
        }
        let _one_pass = self.upload_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !background {
            self.priority.fetch_sub(1, Ordering::SeqCst);
        }
        let covers = self.flushes().oldest_waiting.take();
        // A pass that a frozen head waits for goes through as an overdue one
        // does: it only uploads what was dirty when it started.
        let through =
            covers.is_some_and(|t| t.elapsed() >= MAX_UPLOAD_DELAY) || self.heads_waiting();
        let pass = self.upload_listed(background, through);
        if !matches!(pass, Ok(Pass::Done)) {
            self.flushes().still_waiting(covers);
        }
        let pass = pass?;
        self.evict()?;
        Ok(pass != Pass::GaveWay)
    }

    fn upload_listed(&self, background: bool, through: bool) -> Result<Pass, VolumeError> {
        let dirty = db::cached_chunks(&self.db(), true)?;
        let mut waiting: u64 = dirty.iter().map(|(_, len)| *len).sum();
        let mut pass = Pass::Done;
        for (hash, len) in dirty {
            // A closing storage leaves the rest to the next process: dirty
            // chunks are durable in the cache, and closing must not wait
            // for a backlog (a fresh base image is a few hundred MiB).
            if background && self.lock_wake().shutdown {
                return Ok(Pass::GaveWay);
            }
            if background
                && (self.priority.load(Ordering::SeqCst) > 0
                    || (!through && self.writers_busy(waiting).is_some()))
            {
                return Ok(Pass::GaveWay);
            }
            waiting = waiting.saturating_sub(len);
            if !self.upload_one(&hash, !background)? {
                pass = Pass::LeftSome;
            }
        }
        Ok(pass)
    }

    /// Uploads a dirty chunk and marks it clean; `false` if it stays dirty
    /// for a later pass: GC is deleting its object and `wait` is not set, or
    /// GC dropped cache rows while it was uploaded (see gc.rs).
    fn upload_one(&self, hash: &ChunkHash, wait: bool) -> Result<bool, VolumeError> {
        let (data, drops) = {
            let _fence = self.fence.read().unwrap_or_else(|p| p.into_inner());
            // Dropped by GC since the pass listed it: it is dead.
            if !db::is_dirty(&self.db(), hash)? {
                return Ok(true);
            }
            let data = self
                .cache
                .read(hash)?
                .ok_or_else(|| VolumeError::LostDirtyChunk(hash.to_hex()))?;
            (data, self.gc_drops.load(Ordering::SeqCst))
        };
        if !self.deleting.is_free(hash, wait) {
            return Ok(false);
        }
        self.rt.block_on(self.store.put_with_hash(*hash, &data))?;
        let _fence = self.fence.read().unwrap_or_else(|p| p.into_inner());
        if self.gc_drops.load(Ordering::SeqCst) != drops {
            return Ok(false);
        }
        db::mark_clean(&self.db(), hash)?;
        Ok(true)
    }
}

/// How an upload pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every chunk it listed is uploaded.
    Done,
    /// It went through the list, leaving some chunks dirty for a later pass.
    LeftSome,
    /// It gave way to writers or foreground work.
    GaveWay,
}
