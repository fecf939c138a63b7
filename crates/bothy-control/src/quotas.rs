//! Per-organisation quotas: how many boxes (and running boxes), how much
//! disk (the sum of the boxes' `storage_gb`) and how many checkpoints an
//! organisation may have. An admin sets them; a create or a checkpoint that
//! would pass one is refused (`QuotaExceeded`) and changes nothing.
//!
//! Running boxes are those not cold (running or warm: they hold memory); a
//! cold box's wake is refused while its organisation is at
//! `max_running_boxes`.

use crate::error::{ControlError, ControlResult};
use crate::state::{Quota, SpriteRow, Usage};
use crate::tokens::Caller;
use crate::{Boxes, Control};

/// Largest value a quota may take.
pub const MAX_QUOTA: u64 = 1_000_000;

/// What an operation adds to an organisation's usage.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Adding {
    pub boxes: u64,
    /// Boxes that start running (a create, a cold wake).
    pub running: u64,
    pub storage_gb: u64,
    pub checkpoints: u64,
}

/// The first quota `adding` would pass, as a message that says what to do.
pub(crate) fn exceeded(org: &str, quota: &Quota, usage: &Usage, adding: Adding) -> Option<String> {
    let over = |limit: Option<u64>, used: u64, more: u64| {
        limit.filter(|l| more > 0 && used.saturating_add(more) > *l)
    };
    if let Some(l) = over(quota.max_boxes, usage.boxes, adding.boxes) {
        return Some(format!(
            "organization {org:?} may have {l} bothies and has {}; destroy one or ask an admin to raise max_boxes",
            usage.boxes
        ));
    }
    if let Some(l) = over(quota.max_running_boxes, usage.running_boxes, adding.running) {
        return Some(format!(
            "organization {org:?} may run {l} bothies at once and runs {}; put one to cold sleep (`bothy sleep --cold`), destroy one, or ask an admin to raise max_running_boxes",
            usage.running_boxes
        ));
    }
    if let Some(l) = over(quota.max_storage_gb, usage.storage_gb, adding.storage_gb) {
        return Some(format!(
            "organization {org:?} may have {l} GiB of bothy disks and has {} GiB; this one needs {} GiB more; \
             ask for a smaller storage_gb, destroy a bothy, or ask an admin to raise max_storage_gb",
            usage.storage_gb, adding.storage_gb
        ));
    }
    if let Some(l) = over(quota.max_checkpoints, usage.checkpoints, adding.checkpoints) {
        return Some(format!(
            "organization {org:?} may keep {l} checkpoints and keeps {}; delete one or ask an admin to raise max_checkpoints",
            usage.checkpoints
        ));
    }
    None
}

fn check_values(q: &Quota) -> ControlResult<()> {
    for (name, v) in [
        ("max_boxes", q.max_boxes),
        ("max_running_boxes", q.max_running_boxes),
        ("max_storage_gb", q.max_storage_gb),
        ("max_checkpoints", q.max_checkpoints),
    ] {
        if v.is_some_and(|v| v > MAX_QUOTA) {
            return Err(ControlError::invalid(format!(
                "{name} must be at most {MAX_QUOTA} (or null for no limit)"
            )));
        }
    }
    Ok(())
}

impl<B: Boxes> Control<B> {
    /// `org`'s quota and usage: for an admin, or a member of `org`.
    pub async fn quota(&self, caller: &Caller, org: &str) -> ControlResult<(Quota, Usage)> {
        if !caller.is_admin() && caller.org() != org {
            return Err(ControlError::Forbidden(format!(
                "your token belongs to organization {:?} and cannot read the quota of {org:?}",
                caller.org()
            )));
        }
        if !self.store().org_exists(org.to_string()).await? {
            return Err(ControlError::NotFound(format!(
                "no organization {org:?}; minting a token for it creates it"
            )));
        }
        let quota = self.store().quota(org.to_string()).await?;
        let usage = self.store().usage(org.to_string()).await?;
        Ok((quota, usage))
    }

    /// Replaces `org`'s quota (admin only). Lowering a quota below what the
    /// organisation has removes nothing; it only refuses more.
    pub async fn set_quota(
        &self,
        caller: &Caller,
        org: &str,
        quota: Quota,
    ) -> ControlResult<(Quota, Usage)> {
        if !caller.is_admin() {
            return Err(ControlError::Forbidden(
                "only an admin token may set quotas".into(),
            ));
        }
        check_values(&quota)?;
        if !self.store().set_quota(org.to_string(), quota).await? {
            return Err(ControlError::NotFound(format!(
                "no organization {org:?}; minting a token for it creates it"
            )));
        }
        tracing::info!(org = %org, ?quota, "quota set");
        self.quota(caller, org).await
    }

    /// Refuses the new box `row` if its organisation is at a quota.
    pub(crate) async fn admit_by_quota(&self, row: &SpriteRow) -> ControlResult<()> {
        self.check_quota(
            &row.org,
            Adding {
                boxes: 1,
                running: 1,
                storage_gb: row.storage_gb,
                checkpoints: 0,
            },
        )
        .await
    }

    /// Refuses the wake of cold box `row` if its organisation runs as many
    /// boxes as it may.
    pub(crate) async fn admit_wake_by_quota(&self, row: &SpriteRow) -> ControlResult<()> {
        self.check_quota(
            &row.org,
            Adding {
                running: 1,
                ..Adding::default()
            },
        )
        .await
    }

    pub(crate) async fn check_quota(&self, org: &str, adding: Adding) -> ControlResult<()> {
        let quota = self.store().quota(org.to_string()).await?;
        if quota == Quota::default() {
            return Ok(());
        }
        let usage = self.store().usage(org.to_string()).await?;
        match exceeded(org, &quota, &usage, adding) {
            Some(message) => Err(ControlError::QuotaExceeded(message)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(boxes: u64, storage_gb: u64, checkpoints: u64) -> Usage {
        Usage {
            boxes,
            running_boxes: boxes,
            storage_gb,
            checkpoints,
        }
    }

    #[test]
    fn no_quota_refuses_nothing() {
        let adding = Adding {
            boxes: 1,
            running: 1,
            storage_gb: 1000,
            checkpoints: 1,
        };
        assert!(exceeded(
            "o",
            &Quota::default(),
            &usage(1 << 40, 1 << 40, 1 << 40),
            adding
        )
        .is_none());
    }

    #[test]
    fn each_quota_refuses_what_would_pass_it() {
        let q = Quota {
            max_boxes: Some(3),
            max_running_boxes: None,
            max_storage_gb: Some(100),
            max_checkpoints: Some(2),
        };
        let one_box = Adding {
            boxes: 1,
            running: 1,
            storage_gb: 10,
            checkpoints: 0,
        };
        assert!(exceeded("o", &q, &usage(2, 20, 0), one_box).is_none());
        let m = exceeded("o", &q, &usage(3, 20, 0), one_box).expect("a 4th box");
        assert!(m.contains("max_boxes"), "{m}");
        let big = Adding {
            boxes: 1,
            running: 1,
            storage_gb: 90,
            checkpoints: 0,
        };
        let m = exceeded("o", &q, &usage(1, 20, 0), big).expect("110 GiB");
        assert!(m.contains("max_storage_gb"), "{m}");
        let checkpoint = Adding {
            checkpoints: 1,
            ..Adding::default()
        };
        assert!(exceeded("o", &q, &usage(3, 100, 1), checkpoint).is_none());
        let m = exceeded("o", &q, &usage(3, 100, 2), checkpoint).expect("a 3rd checkpoint");
        assert!(m.contains("max_checkpoints"), "{m}");
    }

    #[test]
    fn a_quota_already_passed_still_lets_other_things_through() {
        // Lowered below usage: boxes are refused, checkpoints are not.
        let q = Quota {
            max_boxes: Some(1),
            ..Quota::default()
        };
        let checkpoint = Adding {
            checkpoints: 1,
            ..Adding::default()
        };
        assert!(exceeded("o", &q, &usage(5, 0, 0), checkpoint).is_none());
    }

    #[test]
    fn values_are_bounded() {
        let q = Quota {
            max_checkpoints: Some(MAX_QUOTA + 1),
            ..Quota::default()
        };
        assert!(check_values(&q).is_err());
        assert!(check_values(&Quota::default()).is_ok());
    }

    #[test]
    fn running_boxes_count_only_what_runs() {
        let q = Quota {
            max_running_boxes: Some(2),
            ..Quota::default()
        };
        let asleep = Usage {
            boxes: 5,
            running_boxes: 1,
            ..Usage::default()
        };
        let wake = Adding {
            running: 1,
            ..Adding::default()
        };
        assert!(exceeded("o", &q, &asleep, wake).is_none(), "1 of 2 runs");
        let busy = Usage {
            running_boxes: 2,
            ..asleep
        };
        let m = exceeded("o", &q, &busy, wake).expect("a third running box");
        assert!(m.contains("max_running_boxes"), "{m}");
    }
}
