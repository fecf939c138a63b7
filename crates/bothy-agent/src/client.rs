//! The daemon's side of the agent protocol. (Stub: signatures are the contract.)

use std::path::PathBuf;

use crate::proto::{Input, Output, SessionInfo, SpawnRequest};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's socket could not be reached (box stopped or starting).
    #[error("the box's agent is not reachable: {0}")]
    Unreachable(std::io::Error),
    #[error("no such session: {0}")]
    NoSuchSession(String),
    /// The command could not be started (not found, bad dir, ...).
    #[error("{0}")]
    Spawn(String),
    #[error("agent protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }
    pub async fn ping(&self) -> Result<(), AgentError> {
        let _ = &self.socket;
        todo!()
    }
    pub async fn spawn(&self, _req: SpawnRequest) -> Result<AgentSession, AgentError> {
        todo!()
    }
    pub async fn attach(&self, _id: &str) -> Result<AgentSession, AgentError> {
        todo!()
    }
    pub async fn list(&self) -> Result<Vec<SessionInfo>, AgentError> {
        todo!()
    }
    /// Sends `signal` (a number) to the session's process group.
    pub async fn kill(&self, _id: &str, _signal: i32) -> Result<(), AgentError> {
        todo!()
    }
}

pub struct AgentSession {
    info: SessionInfo,
}

impl AgentSession {
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }
    pub fn split(self) -> (SessionReader, SessionWriter) {
        todo!()
    }
}

pub struct SessionReader;
impl SessionReader {
    /// `Ok(None)` after `Exit` has been returned or the agent went away.
    pub async fn next(&mut self) -> Result<Option<Output>, AgentError> {
        todo!()
    }
}

pub struct SessionWriter;
impl SessionWriter {
    pub async fn send(&mut self, _input: Input) -> Result<(), AgentError> {
        todo!()
    }
}
