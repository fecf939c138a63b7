//! What a box has used: the time it spent running, warm and cold, and what
//! its disk and checkpoints store.
//!
//! Time is counted in the `sleep` table from the state last seen: every
//! transition control makes is counted when it is made, and the idle pass
//! counts any other (a crash, a daemon restart) within a second. The time a
//! daemon was down goes to the state the box was in.

use std::time::Duration;

use bothy_api::SpriteUsage;

use crate::boxes::Boxes;
use crate::error::ControlResult;
use crate::lifecycle::bounded;
use crate::state::SpriteRow;
use crate::time::now_ms;
use crate::Control;

/// How long asking the storage for a disk's usage may take.
const DISK_USAGE_TIMEOUT: Duration = Duration::from_secs(10);

impl<B: Boxes> Control<B> {
    pub async fn usage(&self, row: &SpriteRow) -> ControlResult<SpriteUsage> {
        let status = self.status_of(&row.id).await;
        // The state seen now is counted before reading, so a box whose
        // change the idle pass has not seen yet reads right.
        self.count_state(&row.id, status).await;
        let times = self.store().state_times(row.id.clone(), now_ms()).await?;
        let checkpoints = self.store().checkpoints(row.id.clone()).await?.len() as u64;
        let disk = match bounded(
            DISK_USAGE_TIMEOUT,
            "reading the disk's usage",
            self.boxes().disk_usage(&row.id),
        )
        .await
        {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(box_id = %row.id, error = %e, "cannot read the disk's usage");
                None
            }
        };
        let secs = |ms: u64| ms as f64 / 1000.0;
        Ok(SpriteUsage {
            name: row.name.clone(),
            id: row.id.clone(),
            status: status.as_str().to_string(),
            since: row.created_at.clone(),
            running_seconds: secs(times.running_ms),
            warm_seconds: secs(times.warm_ms),
            cold_seconds: secs(times.cold_ms),
            disk_bytes: disk.map(|d| d.disk_bytes),
            checkpoint_bytes: disk.map(|d| d.checkpoint_bytes),
            checkpoints,
        })
    }
}

/// One sprite's line of the metrics.
#[derive(Debug, Clone)]
pub struct SpriteMetrics {
    pub org: String,
    pub usage: SpriteUsage,
    /// CPU time its processes used since it last booted, if it runs.
    pub cpu_seconds: Option<f64>,
    pub tasks: u64,
}

/// What `/metrics` shows: the daemon and each sprite the caller may see.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The daemon's resident memory, if it can be read.
    pub daemon_rss_bytes: Option<u64>,
    /// Ready boxes in the warm pool, and how many it keeps.
    pub pool_ready: u64,
    pub pool_size: u64,
    pub sprites: Vec<SpriteMetrics>,
}

impl<B: Boxes> Control<B> {
    /// The sprites of the caller's organisation, or of every one for an
    /// admin token.
    pub async fn metrics(&self, caller: &crate::Caller) -> ControlResult<Metrics> {
        let rows: Vec<SpriteRow> = self
            .store()
            .all_sprites()
            .await?
            .into_iter()
            .filter(|r| r.state == crate::RowState::Ready)
            .filter(|r| !crate::pool::is_pooled(r))
            .filter(|r| caller.is_admin() || r.org == caller.org())
            .filter(|r| caller.sees(&r.name))
            .collect();
        let mut sprites = Vec::with_capacity(rows.len());
        for row in rows {
            let usage = self.usage(&row).await?;
            sprites.push(SpriteMetrics {
                org: row.org.clone(),
                cpu_seconds: self.boxes().cpu_used(&row.id).map(|d| d.as_secs_f64()),
                tasks: self.inner.tasks.live(&row.id) as u64,
                usage,
            });
        }
        Ok(Metrics {
            daemon_rss_bytes: own_rss_bytes(),
            pool_ready: self.pool_ready().await? as u64,
            pool_size: self.pool_size() as u64,
            sprites,
        })
    }
}

/// `VmRSS` of this process.
fn own_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
