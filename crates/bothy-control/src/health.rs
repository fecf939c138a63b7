//! A box's health, as a check sees it: does its agent answer. A check never
//! wakes a box: a stopped box is reported, not started.

use std::time::{Duration, Instant};

use crate::boxes::{BoxError, Boxes};
use crate::error::ControlResult;
use crate::lifecycle::bounded;
use crate::state::SpriteRow;
use crate::time::now;
use crate::Control;

/// A healthy agent answers a ping in microseconds; one that takes this long
/// is wedged as far as a user is concerned.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Why the box is unhealthy; `None` when it is healthy.
    pub problem: Option<String>,
    /// RFC 3339: when the check completed.
    pub checked_at: String,
    pub elapsed: Duration,
}

impl<B: Boxes> Control<B> {
    /// Pings the box's agent.
    pub async fn check(&self, row: &SpriteRow) -> ControlResult<Health> {
        self.ensure_ready(row)?;
        let started = Instant::now();
        if self.status_of(&row.id).await == crate::SpriteStatus::Warm {
            return Ok(Health {
                problem: Some("the box is asleep (warm); an exec wakes it".into()),
                checked_at: now(),
                elapsed: started.elapsed(),
            });
        }
        let pinged = bounded(
            PING_TIMEOUT,
            "the agent's answer to a ping",
            self.inner.boxes.ping(&row.id),
        )
        .await;
        // The reason is for the user; what the lower layers said goes to the log.
        let problem = match &pinged {
            Ok(()) => None,
            Err(BoxError::NotRunning(_)) => Some(
                "the box is not running, or its agent does not listen; an exec starts it".to_string(),
            ),
            Err(BoxError::Timeout(_)) => Some(format!(
                "the box's agent did not answer within {PING_TIMEOUT:?}; the box may be overloaded, or restart it"
            )),
            Err(_) => Some(
                "the box's agent answered with an error (details in the daemon's log); restart the box if this persists".to_string(),
            ),
        };
        if let Err(e) = &pinged {
            tracing::info!(box_id = %row.id, error = %e, "health check failed");
        }
        Ok(Health {
            problem,
            checked_at: now(),
            elapsed: started.elapsed(),
        })
    }
}
