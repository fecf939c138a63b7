//! Admission: a box is made only if the host can hold it.
//!
//! Memory and CPU limits are ceilings, not reservations (an idle box uses a
//! few MiB and no CPU), so the sum of the limits of all boxes may exceed the
//! host by a configurable factor, the overcommit. One box may never ask for
//! more than the host has: that box could never get what it was promised.
//!
//! Only boxes that hold memory count: running and warm ones. A cold box
//! holds nothing, so hundreds may sleep on a small host; it is admitted
//! again when it wakes, and a host too full for it says so then.

use crate::error::{ControlError, ControlResult};
use crate::state::{SpriteRow, StoreError};
use crate::{Boxes, Control};

/// Default overcommit of memory limits: four times the host's RAM.
pub const DEFAULT_RAM_OVERCOMMIT: f64 = 4.0;
/// Default overcommit of CPU limits: CPU quotas only cap a box's share.
pub const DEFAULT_CPU_OVERCOMMIT: f64 = 32.0;

/// What the host has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub ram_mb: u64,
    pub cpus: u32,
}

impl Capacity {
    /// This host's RAM (`MemTotal`) and CPUs.
    pub fn of_this_host() -> Self {
        let ram_mb = bothy_runtime::host_memory()
            .map(|bytes| bytes / (1024 * 1024))
            .unwrap_or(u64::MAX);
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(u32::MAX);
        Self { ram_mb, cpus }
    }
}

/// The host's capacity and how far the sum of box limits may exceed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    pub host: Capacity,
    pub ram_overcommit: f64,
    pub cpu_overcommit: f64,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            host: Capacity::of_this_host(),
            ram_overcommit: DEFAULT_RAM_OVERCOMMIT,
            cpu_overcommit: DEFAULT_CPU_OVERCOMMIT,
        }
    }
}

impl Admission {
    fn ram_budget_mb(&self) -> u64 {
        scaled(self.host.ram_mb, self.ram_overcommit)
    }

    fn cpu_budget(&self) -> u64 {
        scaled(u64::from(self.host.cpus), self.cpu_overcommit)
    }

    /// Whether `new` may join `existing` (every box of every organisation
    /// on this host; `new` itself, when it is there with other settings, is
    /// counted as `new`).
    pub fn check(&self, new: &SpriteRow, existing: &[SpriteRow]) -> ControlResult<()> {
        if new.memory_mb() > self.host.ram_mb {
            return Err(ControlError::Invalid {
                code: "exceeds_host",
                message: format!(
                    "ram_mb {} is more than this host has ({} MiB); ask for less",
                    new.memory_mb(),
                    self.host.ram_mb
                ),
            });
        }
        if new.cpus > self.host.cpus {
            return Err(ControlError::Invalid {
                code: "exceeds_host",
                message: format!(
                    "cpus {} is more than this host has ({}); ask for less",
                    new.cpus, self.host.cpus
                ),
            });
        }
        let ram: u64 = existing
            .iter()
            .filter(|r| r.id != new.id)
            .map(SpriteRow::memory_mb)
            .sum();
        let cpus: u64 = existing
            .iter()
            .filter(|r| r.id != new.id)
            .map(|r| u64::from(r.cpus))
            .sum();
        if ram.saturating_add(new.memory_mb()) > self.ram_budget_mb() {
            return Err(ControlError::Unavailable(format!(
                "this host is full: its bothies' memory limits add up to {ram} MiB of {} admitted \
                 ({} MiB × overcommit {}); destroy a bothy or put one to cold sleep, ask for less ram_mb, or raise \
                 `bothy daemon --ram-overcommit`",
                self.ram_budget_mb(),
                self.host.ram_mb,
                self.ram_overcommit
            )));
        }
        if cpus.saturating_add(u64::from(new.cpus)) > self.cpu_budget() {
            return Err(ControlError::Unavailable(format!(
                "this host is full: its bothies' CPU limits add up to {cpus} of {} admitted \
                 ({} CPUs × overcommit {}); destroy a bothy or put one to cold sleep, ask for fewer cpus, or raise \
                 `bothy daemon --cpu-overcommit`",
                self.cpu_budget(),
                self.host.cpus,
                self.cpu_overcommit
            )));
        }
        Ok(())
    }
}

impl<B: Boxes> Control<B> {
    /// The boxes admission counts: every box but those last seen cold.
    pub(crate) async fn awake_rows(&self) -> Result<Vec<SpriteRow>, StoreError> {
        let sleep = self.store().sleep_rows().await?;
        let cold = |r: &SpriteRow| {
            sleep
                .get(&r.id)
                .is_some_and(|s| s.seen_state.as_deref() == Some("cold"))
        };
        Ok(self
            .store()
            .all_sprites()
            .await?
            .into_iter()
            .filter(|r| !cold(r))
            .collect())
    }

    /// Whether cold box `row` may wake: the host must have room for it.
    pub(crate) async fn admit_wake(&self, row: &SpriteRow) -> ControlResult<()> {
        let _admitting = self.inner.admitting.lock().await;
        self.admit_wake_by_quota(row).await?;
        let awake = self.awake_rows().await?;
        self.admission().check(row, &awake).map_err(|e| match e {
            ControlError::Unavailable(m) => {
                ControlError::Unavailable(format!("sprite {:?} cannot wake: {m}", row.name))
            }
            other => other,
        })
    }
}

fn scaled(n: u64, factor: f64) -> u64 {
    let v = n as f64 * factor.max(0.0);
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        v as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RowState;

    fn row(ram_mb: u64, cpus: u32) -> SpriteRow {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SpriteRow {
            id: format!("b{n}"),
            org: "o".into(),
            name: "n".into(),
            ram_mb,
            cpus,
            storage_gb: 1,
            url_auth: "sprite".into(),
            url_private_access: None,
            labels: vec![],
            state: RowState::Ready,
            created_at: "t".into(),
            updated_at: "t".into(),
            last_running_at: None,
            nesting: false,
            memory_policy_mb: None,
        }
    }

    fn host() -> Admission {
        Admission {
            host: Capacity {
                ram_mb: 24 * 1024,
                cpus: 2,
            },
            ram_overcommit: 2.0,
            cpu_overcommit: 4.0,
        }
    }

    #[test]
    fn one_box_never_gets_more_than_the_host_has() {
        let a = host();
        let e = a.check(&row(64 * 1024, 1), &[]).expect_err("64 GiB on 24");
        assert!(
            matches!(
                e,
                ControlError::Invalid {
                    code: "exceeds_host",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = a.check(&row(512, 64), &[]).expect_err("64 CPUs on 2");
        assert!(
            matches!(
                e,
                ControlError::Invalid {
                    code: "exceeds_host",
                    ..
                }
            ),
            "{e:?}"
        );
        a.check(&row(24 * 1024, 2), &[]).expect("the whole host");
    }

    #[test]
    fn boxes_together_stay_within_the_overcommit() {
        let a = host();
        // 48 GiB admitted: 23 boxes of 2 GiB fit beside one more, not two.
        let many: Vec<SpriteRow> = (0..23).map(|_| row(2048, 0)).collect();
        a.check(&row(2048, 0), &many).expect("the 24th fits");
        let full: Vec<SpriteRow> = (0..24).map(|_| row(2048, 0)).collect();
        let e = a.check(&row(2048, 0), &full).expect_err("the 25th");
        assert!(matches!(e, ControlError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("--ram-overcommit"), "{e}");
        // 8 CPUs admitted.
        let busy: Vec<SpriteRow> = (0..4).map(|_| row(1, 2)).collect();
        let e = a.check(&row(1, 1), &busy).expect_err("a 9th CPU");
        assert!(e.to_string().contains("--cpu-overcommit"), "{e}");
    }

    #[test]
    fn this_host_is_measured() {
        let here = Capacity::of_this_host();
        assert!(here.ram_mb > 0 && here.cpus > 0);
    }
}
