//! The client's error type: what went wrong, in words a user can act on.

/// Everything a call to the bothy API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the API URL.
    #[error("daemon not reachable at {url}: is `bothy daemon` running? ({detail})")]
    Unreachable { url: String, detail: String },

    /// The API answered with an error body (`{"error": code, "message": text}`).
    #[error("{message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Stable machine-readable code such as `not_found`.
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

    /// The server answered something this client does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),

    /// The connection broke after it was established.
    #[error("connection to the daemon failed: {0}")]
    Transport(String),
}

impl ClientError {
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
    fn unreachable_says_how_to_fix() {
        let e = ClientError::Unreachable {
            url: "http://127.0.0.1:7070".into(),
            detail: "connection refused".into(),
        };
        assert!(e.to_string().contains("is `bothy daemon` running?"));
    }
}
