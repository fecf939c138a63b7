//! The client's error type: what went wrong, in words a user can act on.

/// Everything a call to the bothy API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the API URL.
    #[error("daemon not reachable at {url}: is `bothy daemon` running? ({detail})")]
    Unreachable { url: String, detail: String },

    /// The box's control socket could not be connected to: not in a bothy,
    /// or not root in it (the socket is box root's only).
    #[error(
        "cannot reach this bothy's control socket {path}: is this a bothy, and are you root in it?"
    )]
    ControlSocketUnreachable {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The API answered with an error body (`{"error": code, "message": text}`).
    #[error("{message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Stable machine-readable code such as `not_found`; `http_<status>`
        /// when the answer was not the API's error JSON.
        code: String,
        /// The server's explanation, meant for the user.
        message: String,
    },

    /// The base URL or a name could not be turned into a request URL.
    #[error("invalid API URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The token cannot be sent in an HTTP header.
    #[error("the API token contains characters that cannot be sent (newline or control characters): check BOTHY_TOKEN or --token")]
    InvalidToken,

    /// A progress stream (checkpoint, restore) ended with an error line: the
    /// request was accepted, the operation itself failed.
    #[error("{0}")]
    OperationFailed(String),

    /// The server answered something this client does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),

    /// The connection broke after it was established.
    #[error("connection to the daemon failed: {0}")]
    Transport(String),

    /// The daemon's side closed the connection before the answer was whole.
    /// A restore asked from inside the box ends this way when the box stops
    /// before the answer arrives.
    #[error("the daemon closed the connection before its answer was complete ({0})")]
    Disconnected(String),
}

/// What a [`ClientError`] means for the caller, whichever transport it came
/// over: the part of an error a program acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was refused as it stands (HTTP 400, 413 and other 4xx).
    BadRequest,
    /// The token was refused (HTTP 401, 403).
    Unauthorized,
    /// No such box, checkpoint or session (HTTP 404).
    NotFound,
    /// The name is taken or the state forbids it (HTTP 409).
    Conflict,
    /// The server does not implement this (HTTP 501).
    Unsupported,
    /// Nothing to talk to right now: no daemon or socket, or HTTP 502-504.
    Unavailable,
    /// The server failed the operation (other 5xx, or an error line).
    Failed,
    /// The connection broke or timed out.
    Transport,
    /// An answer this client does not understand.
    Protocol,
    /// The caller's own input cannot be sent: the URL or the token.
    Usage,
}

impl ErrorKind {
    /// The kind of an HTTP error status.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Unauthorized,
            404 => Self::NotFound,
            409 => Self::Conflict,
            400..=499 => Self::BadRequest,
            501 => Self::Unsupported,
            502..=504 => Self::Unavailable,
            _ => Self::Failed,
        }
    }
}

impl ClientError {
    /// What this error means for the caller.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unreachable { .. } | Self::ControlSocketUnreachable { .. } => {
                ErrorKind::Unavailable
            }
            Self::Api { status, .. } => ErrorKind::of_status(*status),
            Self::InvalidUrl { .. } | Self::InvalidToken => ErrorKind::Usage,
            Self::OperationFailed(_) => ErrorKind::Failed,
            Self::Protocol(_) => ErrorKind::Protocol,
            Self::Transport(_) | Self::Disconnected(_) => ErrorKind::Transport,
        }
    }

    /// The API error code (`not_found`, `invalid_name`, ...), if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds the error for an HTTP error answer. Bodies that are not the API's
    /// JSON error shape (a proxy's HTML page, say) are shown trimmed, so the user
    /// still sees what came back.
    pub(crate) fn from_error_answer(status: u16, body: &[u8]) -> Self {
        if let Ok(parsed) = serde_json::from_slice::<bothy_api::ErrorBody>(body) {
            return Self::Api {
                status,
                code: parsed.error,
                message: parsed.message,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(300).collect();
        let message = if text.is_empty() {
            format!("the daemon answered HTTP {status} with no explanation")
        } else {
            format!("the daemon answered HTTP {status}: {text}")
        };
        Self::Api {
            status,
            code: format!("http_{status}"),
            message,
        }
    }
}

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_body_becomes_code_and_message() {
        let e = ClientError::from_error_answer(
            404,
            br#"{"error":"not_found","message":"no bothy named x"}"#,
        );
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.to_string(), "no bothy named x");
    }

    #[test]
    fn foreign_error_body_is_shown_trimmed() {
        let e = ClientError::from_error_answer(502, b"  <html>bad gateway</html>\n");
        assert_eq!(
            e.to_string(),
            "the daemon answered HTTP 502: <html>bad gateway</html>"
        );
        let empty = ClientError::from_error_answer(500, b"");
        assert!(empty.to_string().contains("HTTP 500"));
    }

    #[test]
    fn statuses_map_to_kinds() {
        for (status, kind) in [
            (400, ErrorKind::BadRequest),
            (413, ErrorKind::BadRequest),
            (401, ErrorKind::Unauthorized),
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (500, ErrorKind::Failed),
            (501, ErrorKind::Unsupported),
            (503, ErrorKind::Unavailable),
        ] {
            let e = ClientError::from_error_answer(status, b"{}");
            assert_eq!(e.kind(), kind, "HTTP {status}");
        }
    }

    #[test]
    fn unreachable_says_how_to_fix() {
        let e = ClientError::Unreachable {
            url: "http://127.0.0.1:7070".into(),
            detail: "connection refused".into(),
        };
        assert!(e.to_string().contains("is `bothy daemon` running?"));
    }
}
