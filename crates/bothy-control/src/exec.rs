//! Exec sessions: run a command in a box, list, re-attach, signal, wait for
//! the end. The session itself lives in the box's agent, so it outlives the
//! daemon.

use std::time::Duration;

pub use bothy_agent::proto::{Input, Output, SessionInfo, SpawnRequest, MAX_PAYLOAD};
use tokio::time::Instant;

use crate::boxes::{BoxError, Boxes, ExecChannels, AGENT_TIMEOUT};
use crate::error::{ControlError, ControlResult};
use crate::state::SpriteRow;
use crate::Control;

pub(crate) async fn agent_call<T>(
    fut: impl std::future::Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    tokio::time::timeout(AGENT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(BoxError::Timeout("the box's agent did not answer".into())))
}

/// How often [`Control::wait_session_end`] looks at the session list.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// Whether a session has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Its process exited with this code (128 + N for signal N).
    Exited(i32),
    /// It is no longer listed: it ended and its exit was collected.
    Gone,
    /// It still runs.
    Running,
}

/// What came of asking to run a command.
pub enum Spawned {
    Session(ExecChannels),
    /// The command could not be started (not found, bad directory): the
    /// reason, for the user, as a shell would print it.
    NotStarted(String),
}

impl<B: Boxes> Control<B> {
    /// Runs a command in the box, waking it first.
    pub async fn spawn(&self, row: &SpriteRow, req: SpawnRequest) -> ControlResult<Spawned> {
        let awake = self.ensure_running(row).await?;
        match agent_call(self.boxes().spawn(&row.id, req)).await {
            Ok(mut chans) => {
                chans.awake = Some(awake);
                Ok(Spawned::Session(chans))
            }
            Err(BoxError::Spawn(reason)) => Ok(Spawned::NotStarted(reason)),
            Err(e) => Err(e.into()),
        }
    }

    /// Re-attaches to a live session.
    pub async fn attach(&self, row: &SpriteRow, session: &str) -> ControlResult<ExecChannels> {
        let awake = self.ensure_running(row).await?;
        let mut chans = agent_call(self.boxes().attach(&row.id, session)).await?;
        chans.awake = Some(awake);
        Ok(chans)
    }

    pub async fn sessions(&self, row: &SpriteRow) -> ControlResult<Vec<SessionInfo>> {
        let _awake = self.ensure_running(row).await?;
        Ok(agent_call(self.boxes().sessions(&row.id)).await?)
    }

    /// The session `session` of the box, or not found.
    pub async fn session(&self, row: &SpriteRow, session: &str) -> ControlResult<SessionInfo> {
        self.sessions(row)
            .await?
            .into_iter()
            .find(|s| s.id == session)
            .ok_or_else(|| ControlError::session_not_found(session))
    }

    /// Sends `signal` to a session's process group.
    pub async fn signal_session(
        &self,
        row: &SpriteRow,
        session: &str,
        signal: i32,
    ) -> ControlResult<()> {
        Ok(agent_call(self.boxes().kill(&row.id, session, signal)).await?)
    }

    /// Waits until the session has ended, or `deadline`.
    pub async fn wait_session_end(
        &self,
        row: &SpriteRow,
        session: &str,
        deadline: Instant,
    ) -> ControlResult<SessionEnd> {
        loop {
            let listed = self.sessions(row).await?;
            match listed.iter().find(|s| s.id == session) {
                None => return Ok(SessionEnd::Gone),
                Some(SessionInfo {
                    exit_code: Some(code),
                    ..
                }) => return Ok(SessionEnd::Exited(*code)),
                Some(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(SessionEnd::Running);
            }
            // The agent tells only an attached client of an exit, so look again.
            tokio::time::sleep_until((now + EXIT_POLL).min(deadline)).await;
        }
    }
}
