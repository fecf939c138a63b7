//! The resources policy (`/policy/resources`): a box's memory limit,
//! changed while it runs and kept across restarts. Clearing the policy
//! brings back the `ram_mb` the box was created with.

use crate::error::{ControlError, ControlResult};
use crate::state::RowState;
use crate::time::now;
use crate::tokens::Caller;
use crate::validate;
use crate::{Boxes, Control};

impl<B: Boxes> Control<B> {
    /// The memory limit the policy sets, if any.
    pub async fn memory_policy(&self, caller: &Caller, name: &str) -> ControlResult<Option<u64>> {
        Ok(self.sprite(caller, name).await?.memory_policy_mb)
    }

    /// Sets (`Some`) or clears (`None`) the box's memory limit, admitted
    /// against the host like a create, and applied to the running box at
    /// once. If the running box refuses it (a limit below what it uses and
    /// cannot give back), the policy stays as it was.
    pub async fn set_memory_policy(
        &self,
        caller: &Caller,
        name: &str,
        mb: Option<u64>,
    ) -> ControlResult<()> {
        if let Some(mb) = mb {
            validate::ram_mb("memory.limit_mb", mb)?;
        }
        let row = self.sprite(caller, name).await?;
        self.to_completion(&row.id.clone(), "resources", move |control| async move {
            let row = control.sprite_by_id(&row.id).await?;
            if row.state != RowState::Ready {
                return Err(ControlError::Busy(format!(
                    "sprite {:?} is being created or destroyed; try again when it is ready",
                    row.name
                )));
            }
            let mut changed = row.clone();
            changed.memory_policy_mb = mb;
            {
                let _admitting = control.inner.admitting.lock().await;
                let awake = control.awake_rows().await?;
                control.admission().check(&changed, &awake)?;
                control
                    .store()
                    .set_memory_policy(row.id.clone(), mb, now())
                    .await?;
            }
            if let Err(e) = control
                .inner
                .boxes
                .set_memory_limit(&row.id, changed.memory_mb())
                .await
            {
                control
                    .store()
                    .set_memory_policy(row.id.clone(), row.memory_policy_mb, now())
                    .await?;
                return Err(match ControlError::from(e) {
                    ControlError::Internal(m) => ControlError::Conflict(format!(
                        "the running sprite {:?} did not take a memory limit of {} MiB ({m}); \
                         free memory in it or ask for more",
                        row.name,
                        changed.memory_mb()
                    )),
                    other => other,
                });
            }
            tracing::info!(box_id = %row.id, memory_mb = changed.memory_mb(), "memory limit set");
            Ok(())
        })
        .await
    }
}
