//! Uploading flushed chunks to the object store: the background uploader,
//! the rules that make it give way to writers and to foreground work, and
//! the upload pass a `sync` barrier runs.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Duration;

use crate::storage::Inner;
use crate::{db, Storage, VolumeError};

/// Background uploads wait until no volume has flushed for this long: on a
/// small host they take the CPU and disk bandwidth a burst of writes needs
/// (measured: they were half of the daemon's CPU during a 1 GiB write).
const UPLOAD_QUIET: Duration = Duration::from_millis(250);
/// How often paused background uploads look whether they may go on.
const PRIORITY_POLL: Duration = Duration::from_millis(10);

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

    /// Wakes the background uploader.
    pub(crate) fn kick(&self) {
        self.lock_wake().kicked = true;
        self.wake_cv.notify_all();
    }

    pub(crate) fn upload_loop(&self) {
        loop {
            {
                let mut w = self.lock_wake();
                if !w.kicked && !w.shutdown {
                    w = self.wait_wake(w, self.interval);
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
            match self.upload_dirty(true) {
                // Writers came back: wait for the next quiet spell.
                Ok(false) => self.kick(),
                Ok(true) => {
                    if let Err(e) = self.ship_changed_heads() {
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

    /// Time since the last flush of any volume, if it is shorter than
    /// [`UPLOAD_QUIET`] and less than the high-water mark is waiting.
    fn writers_busy(&self, waiting: u64) -> Option<Duration> {
        let since = self
            .last_flush
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())?;
        (since < UPLOAD_QUIET && waiting < self.dirty_high_water).then_some(since)
    }

    /// Sleeps until writers have been quiet for [`UPLOAD_QUIET`] (or too much
    /// is waiting). Whether the storage is shutting down.
    pub(crate) fn wait_for_quiet(&self) -> Result<bool, VolumeError> {
        loop {
            let wait = if self.priority.load(Ordering::SeqCst) > 0 {
                PRIORITY_POLL
            } else {
                let waiting = db::cache_totals(&self.db(), true)?.1;
                let Some(since) = self.writers_busy(waiting) else {
                    return Ok(false);
                };
                UPLOAD_QUIET - since
            };
            let w = self.wait_wake(self.lock_wake(), wait);
            if w.shutdown {
                return Ok(true);
            }
        }
    }

    /// Uploads every dirty chunk and marks it clean. A background pass
    /// (`background`) stops early, returning `false`, when a volume flushes
    /// meanwhile or a barrier pass wants the upload lock.
    pub(crate) fn upload_dirty(&self, background: bool) -> Result<bool, VolumeError> {
        if !background {
            self.priority.fetch_add(1, Ordering::SeqCst);
        }
        let _one_pass = self.upload_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !background {
            self.priority.fetch_sub(1, Ordering::SeqCst);
        }
        let _fence = self.fence.read().unwrap_or_else(|p| p.into_inner());
        let dirty = db::cached_chunks(&self.db(), true)?;
        let mut waiting: u64 = dirty.iter().map(|(_, len)| *len).sum();
        for (hash, len) in dirty {
            if background
                && (self.writers_busy(waiting).is_some()
                    || self.priority.load(Ordering::SeqCst) > 0)
            {
                self.evict()?;
                return Ok(false);
            }
            waiting = waiting.saturating_sub(len);
            let data = self
                .cache
                .read(&hash)?
                .ok_or_else(|| VolumeError::LostDirtyChunk(hash.to_hex()))?;
            self.rt.block_on(self.store.put_with_hash(hash, &data))?;
            db::mark_clean(&self.db(), &hash)?;
        }
        self.evict()?;
        Ok(true)
    }
}
