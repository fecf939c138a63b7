//! Background work and the object-store barriers: garbage collection (after
//! deletes and on a period), shipping disks after checkpoints, shipping the
//! state database, and the sync barrier that waits for all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::boxes::Boxes;
use crate::error::{ControlError, ControlResult};
use crate::lifecycle::bounded;
use crate::state::replica::StateReplica;
use crate::state::{RowState, SpriteRow};
use crate::Control;

/// How often garbage is collected besides after deletes.
pub const GC_PERIOD: Duration = Duration::from_secs(600);
/// When the second garbage-collection pass after a delete runs (see
/// [`Control::collect_garbage_later`]): after ext4's periodic commit (5 s) and
/// the next head shipment.
const GC_SECOND_PASS_AFTER: Duration = Duration::from_secs(15);
/// How often changes to the state database are looked for and shipped.
pub const SHIP_INTERVAL: Duration = Duration::from_secs(1);
/// A barrier may upload a lot to a slow store.
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Default)]
pub(crate) struct Jobs {
    /// Where the state database is replicated; `None` in tests without an
    /// object store.
    replica: Mutex<Option<Arc<StateReplica>>>,
    /// The state database's change count right after each checkpoint record
    /// this process committed: the record is in the object store once a
    /// shipped snapshot covers that count.
    records: Mutex<HashMap<(String, u64), u64>>,
}

impl<B: Boxes> Control<B> {
    /// Starts the periodic jobs: garbage collection every `gc_period` and,
    /// with a replica, shipping the state database whenever it changed. They
    /// end at [`Control::shutdown`]; their tasks are returned.
    pub fn start_jobs(
        &self,
        gc_period: Duration,
        replica: Option<Arc<StateReplica>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(r) = &replica {
            tasks.push(tokio::spawn(ship_state_loop(self.clone(), Arc::clone(r))));
        }
        *self
            .inner
            .jobs
            .replica
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = replica;
        tasks.push(tokio::spawn(supervise_storage(self.clone())));
        let control = self.clone();
        let mut stop = self.shutdown_signal();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(crate::sleep::IDLE_PASS) => {}
                    _ = stop.changed() => return,
                }
                control.idle_pass().await;
            }
        }));
        let control = self.clone();
        let mut stop = self.shutdown_signal();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(gc_period) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = control.inner.boxes.collect_garbage().await {
                    tracing::warn!(error = %e, "periodic garbage collection failed; it runs again in {gc_period:?}");
                }
            }
        }));
        tasks
    }

    fn replica(&self) -> Option<Arc<StateReplica>> {
        self.inner
            .jobs
            .replica
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends background jobs; with `stop_boxes`, stops every box first (its
    /// disk synced to the object store). Then ships the state a last time,
    /// after the boxes' own barriers, so it names only what the store holds.
    pub async fn shutdown(&self, stop_boxes: bool) {
        let _ = self.inner.shutdown.send(true);
        if stop_boxes {
            match self.stop_all().await {
                Ok(_) => {
                    if let Err(e) = self.inner.boxes.release_storage().await {
                        tracing::warn!(error = %e, "the storage process did not exit; it serves on");
                    }
                }
                Err(e) => tracing::error!(error = %e, "stopping boxes failed"),
            }
        }
        if let Some(replica) = self.replica() {
            if let Err(e) = replica.ship(self.store().connection()).await {
                tracing::error!(error = %e, "shipping the state database at shutdown failed");
            }
        }
    }

    /// Notes that checkpoint record `seq` of box `id` was just committed.
    pub(crate) fn record_committed(&self, id: &str, seq: u64) {
        let changes = self.store().total_changes();
        self.inner
            .jobs
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((id.to_string(), seq), changes);
    }

    /// Whether checkpoint record `seq` of box `id` is in a state snapshot
    /// in the object store. A record this process did not commit is from
    /// before it started: any snapshot shipped since covers it.
    pub(crate) fn record_in_object_store(&self, id: &str, seq: u64) -> bool {
        let Some(replica) = self.replica() else {
            // No state replication: only the volume's side counts.
            return true;
        };
        let Some(shipped) = replica.shipped_changes() else {
            return false;
        };
        match self
            .inner
            .jobs
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(id.to_string(), seq))
        {
            Some(changes) => shipped >= *changes,
            None => true,
        }
    }

    /// Stops every box of every organisation (disks synced to the object
    /// store) and lets go of the storage process, for host maintenance or
    /// to replace the storage process with a new build; a box wakes again on
    /// its next use. Admins only. Returns the names stopped.
    pub async fn drain(&self, caller: &crate::Caller) -> ControlResult<Vec<String>> {
        if !caller.is_admin() {
            return Err(ControlError::Forbidden(
                "draining stops every box of every organization: it needs an admin token".into(),
            ));
        }
        let stopped = self.stop_all().await?;
        self.inner
            .boxes
            .release_storage()
            .await
            .map_err(|e| match ControlError::from(e) {
                ControlError::Busy(m) => ControlError::Busy(format!(
                    "a box was woken during the drain ({m}); drain again"
                )),
                other => other,
            })?;
        Ok(stopped)
    }

    /// The barrier for one sprite: returns once everything acknowledged
    /// before the call (its disk's writes and checkpoints, and the state
    /// rows that name them) is in the object store.
    pub async fn sync_sprite(&self, row: &SpriteRow) -> ControlResult<()> {
        self.ensure_ready(row)?;
        bounded(
            SYNC_TIMEOUT,
            "syncing the disk to the object store",
            self.inner.boxes.sync(&row.id),
        )
        .await
        .map_err(|e| sync_failed(&row.name, e.into()))?;
        self.ship_state_now().await
    }

    /// The barrier for every sprite the caller sees (an admin: every
    /// sprite of every organisation), and the state; returns their names.
    pub async fn sync_all(&self, caller: &crate::Caller) -> ControlResult<Vec<String>> {
        let rows = self.store().all_sprites().await?;
        let mut synced = Vec::new();
        for row in rows
            .iter()
            .filter(|r| r.state == RowState::Ready)
            .filter(|r| caller.is_admin() || r.org == caller.org())
            .filter(|r| caller.sees(&r.name))
        {
            bounded(
                SYNC_TIMEOUT,
                "syncing a disk to the object store",
                self.inner.boxes.sync(&row.id),
            )
            .await
            .map_err(|e| sync_failed(&row.name, e.into()))?;
            synced.push(row.name.clone());
        }
        self.ship_state_now().await?;
        synced.sort();
        Ok(synced)
    }

    pub(crate) async fn ship_state_now(&self) -> ControlResult<()> {
        let Some(replica) = self.replica() else {
            return Ok(());
        };
        replica
            .ship(self.store().connection())
            .await
            .map(drop)
            .map_err(|e| {
                ControlError::Unavailable(format!(
                    "the object store did not take the state database: {e}; retry the sync"
                ))
            })
    }

    /// Ships a box's disk and checkpoints to the object store in the
    /// background: the checkpoint is already durable locally.
    pub(crate) fn sync_later(&self, id: &str) {
        let control = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = control.inner.boxes.sync(&id).await {
                tracing::warn!(box_id = %id, error = %e, "syncing to the object store failed; retried at the next checkpoint or shutdown");
            }
        });
    }

    /// Frees unreferenced chunks in the background, in two passes. Some
    /// chunks are still named for a few seconds after a delete: by a box's
    /// head until discards that ext4 sends after a checkpoint's syncfs are
    /// flushed, and by the head snapshot last shipped to the object store
    /// until the next one replaces it. The second pass frees those.
    pub(crate) fn collect_garbage_later(&self) {
        let control = self.clone();
        tokio::spawn(async move {
            for pass in 0..2 {
                if pass > 0 {
                    tokio::time::sleep(GC_SECOND_PASS_AFTER).await;
                }
                if let Err(e) = control.inner.boxes.collect_garbage().await {
                    tracing::warn!(error = %e, "garbage collection failed; it runs again after the next delete");
                    return;
                }
            }
        });
    }
}

fn sync_failed(name: &str, e: ControlError) -> ControlError {
    match e {
        ControlError::Internal(m) | ControlError::Timeout(m) => ControlError::Unavailable(format!(
            "could not sync {name:?} to the object store: {m}; nothing acknowledged is lost, retry the sync"
        )),
        other => other,
    }
}

/// When the storage process dies, every box it served has a dead disk: boot
/// them all again (the storage process is started anew on the way), as a
/// restart of the daemon would.
async fn supervise_storage<B: Boxes>(control: Control<B>) {
    let mut stop = control.shutdown_signal();
    loop {
        tokio::select! {
            _ = control.inner.boxes.storage_gone() => {}
            _ = stop.changed() => return,
        }
        tracing::error!("the storage process died: booting every box again on a new one");
        if let Err(e) = control.recover().await {
            tracing::error!(error = %e, "booting boxes again after the storage process died failed");
        }
    }
}

/// Ships the state database whenever it changed, until shutdown.
async fn ship_state_loop<B: Boxes>(control: Control<B>, replica: Arc<StateReplica>) {
    let mut stop = control.shutdown_signal();
    let mut shipped_at = None;
    loop {
        let changes = control.store().total_changes();
        if shipped_at != Some(changes) {
            match replica.ship(control.store().connection()).await {
                Ok(_) => shipped_at = Some(changes),
                Err(e) => {
                    tracing::warn!(error = %e, "shipping the state database failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SHIP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}
