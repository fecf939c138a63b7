//! The one place where failures become HTTP status codes and error bodies.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bothy_api::ErrorBody;

use bothy_control::ControlError;

/// Every way an API call can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// What is there forbids the request (the last admin token);
    /// `code` is the stable error code.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// The sprite is busy with another operation, or being created or
    /// destroyed.
    #[error("{0}")]
    Busy(String),
    /// A malformed or out-of-range request; `code` is the stable error code.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The box is cold and could not be woken, or its agent does not answer.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    /// Nothing in the box accepts the connection a URL or port forward needs.
    #[error("{0}")]
    BadGateway(String),
    /// The client did not send its whole request in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The caller made too many expensive calls in a short time; nothing was
    /// done. `retry_after` is when the next one will be accepted.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A failed fs API call, answered in that API's own shape: `{error:
    /// message, code: errno name, path}`.
    #[error(transparent)]
    Fs(bothy_control::fs::FsError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: "invalid_request",
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::QuotaExceeded(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::AlreadyExists(_) | Self::Busy(_) | Self::Refused { .. } => StatusCode::CONFLICT,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Fs(e) => {
                use bothy_control::fs::FsCode;
                // 404 for a missing file: `sprites-py` raises its
                // FileNotFoundError on the status alone.
                match e.code {
                    FsCode::ENOENT => StatusCode::NOT_FOUND,
                    FsCode::EEXIST => StatusCode::CONFLICT,
                    FsCode::EACCES | FsCode::EPERM => StatusCode::FORBIDDEN,
                    FsCode::ENOTDIR | FsCode::EISDIR | FsCode::ENOTEMPTY | FsCode::EINVAL => {
                        StatusCode::BAD_REQUEST
                    }
                    FsCode::EIO => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::Busy(_) => "busy",
            Self::Refused { code, .. } => code,
            Self::BadRequest { code, .. } => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::NotImplemented(_) => "not_implemented",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::BadGateway(_) => "bad_gateway",
            Self::RequestTimeout(_) => "request_timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
            Self::Fs(e) => e.code.as_str(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Fs(e) = &self {
            // Both SDKs read `error` as the message and `code` as the errno
            // name; `message` repeats it for clients of the rest of the API.
            let body = serde_json::json!({
                "error": e.message,
                "message": e.message,
                "code": e.code.as_str(),
                "path": e.path,
            });
            return (self.status(), Json(body)).into_response();
        }
        let mut res = (self.status(), Json(self.body())).into_response();
        if let Self::RateLimited { retry_after, .. } = &self {
            // Whole seconds, rounded up: a client that waits this long is
            // let through.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        res
    }
}

/// The one mapping from what went wrong in control to what the client sees.
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => Self::NotFound(m),
            ControlError::Conflict(m) => Self::AlreadyExists(m),
            ControlError::Busy(m) => Self::Busy(m),
            ControlError::Refused { code, message } => Self::Refused { code, message },
            ControlError::Invalid { code, message } => Self::BadRequest { code, message },
            ControlError::Unauthorized(m) => Self::Unauthorized(m),
            ControlError::Forbidden(m) => Self::Forbidden(m),
            ControlError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            ControlError::Unavailable(m) => Self::Unavailable(m),
            ControlError::Timeout(m) => Self::Timeout(m),
            ControlError::BadGateway(m) => Self::BadGateway(m),
            ControlError::Fs(e) => Self::Fs(e),
            ControlError::Internal(m) => Self::internal(&m),
        }
    }
}

impl ApiError {
    /// A failure the client cannot act on: the details go to the daemon's
    /// log under a reference, the client gets the reference, never the text
    /// of a lower layer.
    pub fn internal(detail: &str) -> Self {
        let reference = format!("{:08x}", rand::random::<u32>());
        tracing::error!(reference = %reference, error = %detail, "internal error");
        Self::Internal(format!(
            "the bothy daemon failed to do this (reference {reference} in its log); retry, and report it if it persists"
        ))
    }
}
impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(format!(
                "request body is larger than {} bytes; send less",
                bothy_api::MAX_JSON_BODY
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::bad_request("send the body as JSON with `Content-Type: application/json`")
            }
            _ => Self::bad_request(format!("malformed JSON body: {}", r.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(format!("malformed path: {}", r.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
