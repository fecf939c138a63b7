//! What can go wrong in a control operation, by kind. Frontends choose their
//! status codes from the kind alone; the message is for the user and says what
//! to do.

use crate::boxes::BoxError;
use crate::state::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// No such sprite, checkpoint or session (another organisation's sprite
    /// is not found either).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but what is there forbids it (revoking
    /// the last admin token); `code` is the stable error code.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// The sprite is being created, destroyed or changed by another
    /// operation that must finish first.
    #[error("{0}")]
    Busy(String),
    /// Bad input; `code` is the stable error code.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The organisation is at one of its quotas; nothing was done.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The box cannot be reached or started now; retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// A box or the storage did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The box runs but nothing in it accepts the connection its URL or a
    /// port forward needs.
    #[error("{0}")]
    BadGateway(String),
    /// A filesystem operation in the box failed, or its input is not one
    /// (the fs API answers these in its own error shape).
    #[error(transparent)]
    Fs(bothy_agent::proto::FsError),
    /// A bug or a broken host; the daemon's log has the details.
    #[error("{0}")]
    Internal(String),
}

pub type ControlResult<T> = Result<T, ControlError>;

impl ControlError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// The sprite `name` is not in the caller's organisation.
    pub fn sprite_not_found(name: &str) -> Self {
        Self::NotFound(format!(
            "sprite {name:?} not found in your organization; `GET /v1/sprites` lists the ones you have"
        ))
    }

    pub fn checkpoint_not_found(sprite: &str, id: &str) -> Self {
        Self::NotFound(format!(
            "sprite {sprite:?} has no checkpoint {id}; `checkpoint list --include-auto` shows the ones it has"
        ))
    }

    pub fn session_not_found(id: &str) -> Self {
        Self::NotFound(format!(
            "exec session {id:?} not found; `GET /v1/sprites/{{name}}/exec` lists live sessions"
        ))
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict("already exists".into()),
            other => Self::Internal(format!("state database: {other}")),
        }
    }
}

impl From<BoxError> for ControlError {
    fn from(e: BoxError) -> Self {
        match e {
            BoxError::NotRunning(m) => Self::Unavailable(format!(
                "the box is not reachable ({m}); retry in a moment, or destroy and recreate it if this persists"
            )),
            BoxError::NoSuchSession(id) => Self::session_not_found(&id),
            BoxError::NotFound(m) => Self::NotFound(m),
            BoxError::Busy(m) => Self::Busy(m),
            BoxError::Conflict(m) => Self::Conflict(m),
            BoxError::Spawn(m) => Self::invalid(m),
            BoxError::Timeout(what) => Self::Timeout(format!(
                "the box did not answer in time ({what}); it may be overloaded, retry later"
            )),
            BoxError::Unavailable(m) => Self::Unavailable(m),
            BoxError::Fs(e) => Self::Fs(e),
            BoxError::Failed(m) => Self::Internal(m),
        }
    }
}
