//! One async lock per box: create, destroy, wake, checkpoint and restore of a
//! box never interleave. The map itself is held only to find a lock, never
//! across I/O, so one box's long operation never stalls another box.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::error::ControlError;

/// How long an operation waits for another one on the same box before it
/// answers "busy": long enough for a checkpoint or a wake, short enough that
/// a client is not left hanging behind a slow restore.
pub(crate) const LOCK_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Default)]
pub(crate) struct BoxLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl BoxLocks {
    fn of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(id.to_string()).or_default())
    }

    /// Box `id`'s lock, waiting for whoever holds it. `what` names the
    /// operation for the busy answer.
    pub(crate) async fn lock(
        &self,
        id: &str,
        what: &str,
    ) -> Result<OwnedMutexGuard<()>, ControlError> {
        let lock = self.of(id);
        tokio::time::timeout(LOCK_PATIENCE, lock.lock_owned())
            .await
            .map_err(|_| {
                ControlError::Busy(format!(
                    "another operation on this sprite has been running for over {}s; {what} was not started, retry once it is done",
                    LOCK_PATIENCE.as_secs()
                ))
            })
    }

    /// Box `id`'s lock if nobody holds it.
    pub(crate) fn try_lock(
        &self,
        id: &str,
    ) -> Result<OwnedMutexGuard<()>, tokio::sync::TryLockError> {
        self.of(id).try_lock_owned()
    }

    /// Drops box `id`'s lock once the box is gone.
    pub(crate) fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
