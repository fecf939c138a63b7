//! The HTTP router: which handler serves which path.

mod checkpoints;
mod control;
mod exec;
mod exec_http;
mod fs;
mod kill;
mod machine;
mod mcp;
pub use mcp::McpEndpoint;
mod metrics;

pub use checkpoints::{checkpoint_lines, listing as checkpoint_listing, restore_lines};
mod org;
mod policy;
mod proxy;
mod quotas;
mod resources;
pub(crate) mod services;
mod sprites;
mod sync;
mod tasks;
pub(crate) use tasks::{ExtendBody, HoldBody};
mod tokens;
pub(crate) mod watch;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::handler::Handler;
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, delete, get, post, put};
use axum::Router;

use bothy_control::{Boxes, Control};

use crate::auth::Auth;
use crate::edge::Urls;
use crate::error::ApiError;
use crate::Shutdown;

pub fn router<B: Boxes>(control: Control<B>, shutdown: Shutdown, urls: Urls) -> Router {
    Router::new()
        .route(
            "/v1/sprites",
            post(sprites::create::<B>).get(sprites::list::<B>),
        )
        .route(
            "/v1/sprites/{name}",
            get(sprites::get_one::<B>)
                .put(sprites::update::<B>)
                .delete(sprites::destroy::<B>),
        )
        .route(
            "/v1/sprites/{name}/checkpoint",
            post(checkpoints::create::<B>),
        )
        .route(
            "/v1/sprites/{name}/checkpoints",
            get(checkpoints::list::<B>),
        )
        .route(
            "/v1/sprites/{name}/checkpoints/{id}",
            get(checkpoints::get_one::<B>).delete(checkpoints::delete::<B>),
        )
        .route(
            "/v1/sprites/{name}/checkpoints/{id}/restore",
            post(checkpoints::restore::<B>),
        )
        .route(
            "/v1/sprites/{name}/exec",
            get(exec::exec_or_list::<B>).post(
                exec_http::run::<B>.layer(DefaultBodyLimit::max(bothy_api::exec::MAX_HTTP_STDIN)),
            ),
        )
        .route("/v1/sprites/{name}/exec/{id}", get(exec::attach::<B>))
        .route("/v1/sprites/{name}/exec/{id}/kill", post(kill::kill::<B>))
        .route(
            "/v1/sprites/{name}/policy/network",
            get(policy::get::<B>).post(policy::set::<B>),
        )
        .route("/v1/sprites/{name}/sync", post(sync::sprite::<B>))
        .route("/v1/sync", post(sync::all::<B>))
        .route("/v1/drain", post(sync::drain::<B>))
        .route(
            "/v1/sprites/{name}/policy/resources",
            get(resources::get::<B>)
                .post(resources::set::<B>)
                .delete(resources::clear::<B>),
        )
        .route("/v1/sprites/{name}/restart", post(machine::restart::<B>))
        .route("/v1/sprites/{name}/sleep", post(sprites::sleep::<B>))
        .route("/v1/sprites/{name}/usage", get(sprites::usage::<B>))
        .route(
            "/v1/sprites/{name}/tasks",
            post(tasks::hold::<B>).get(tasks::list::<B>),
        )
        .route(
            "/v1/sprites/{name}/tasks/{id}",
            put(tasks::extend::<B>).delete(tasks::release::<B>),
        )
        .route("/v1/sprites/{name}/services", get(services::list::<B>))
        .route(
            "/v1/sprites/{name}/services/signal",
            post(services::signal::<B>),
        )
        .route(
            "/v1/sprites/{name}/services/{service}",
            get(services::get_one::<B>)
                .put(services::put::<B>)
                .delete(services::delete::<B>),
        )
        .route(
            "/v1/sprites/{name}/services/{service}/start",
            post(services::start::<B>),
        )
        .route(
            "/v1/sprites/{name}/services/{service}/stop",
            post(services::stop::<B>),
        )
        .route(
            "/v1/sprites/{name}/services/{service}/restart",
            post(services::restart::<B>),
        )
        .route(
            "/v1/sprites/{name}/services/{service}/logs",
            get(services::logs::<B>),
        )
        .route("/v1/sprites/{name}/control", get(control::control::<B>))
        .route("/v1/sprites/{name}/proxy", get(proxy::proxy::<B>))
        .route(
            "/v1/sprites/{name}/ports/watch",
            get(proxy::watch_ports::<B>),
        )
        .route("/v1/sprites/{name}/fs/read", get(fs::read::<B>))
        .route(
            "/v1/sprites/{name}/fs/write",
            // Uploads stream to the box; no size limit applies.
            put(fs::write::<B>.layer(DefaultBodyLimit::disable())),
        )
        .route("/v1/sprites/{name}/fs/list", get(fs::list::<B>))
        .route("/v1/sprites/{name}/fs/delete", delete(fs::delete::<B>))
        .route("/v1/sprites/{name}/fs/rename", post(fs::rename::<B>))
        .route("/v1/sprites/{name}/fs/copy", post(fs::copy::<B>))
        .route("/v1/sprites/{name}/fs/chmod", post(fs::chmod::<B>))
        .route("/v1/sprites/{name}/fs/chown", post(fs::chown::<B>))
        .route("/v1/sprites/{name}/fs/watch", get(fs::watch::<B>))
        .route("/v1/sprites/{name}/check", get(machine::check::<B>))
        .route("/v1/sprites/{name}/upgrade", post(machine::upgrade::<B>))
        .route("/v1/organization", get(org::organization::<B>))
        .route(
            "/v1/organizations/{org}/tokens",
            post(org::create_token::<B>),
        )
        .route(
            "/v1/organizations/{org}/quota",
            get(quotas::get::<B>).put(quotas::put::<B>),
        )
        .route("/v1/tokens", get(tokens::list::<B>))
        .route("/metrics", get(metrics::metrics::<B>))
        .route("/v1/tokens/{id}", delete(tokens::revoke::<B>))
        .route("/mcp", any(mcp::serve::<B>))
        .fallback(not_implemented)
        .method_not_allowed_fallback(not_implemented)
        .layer(DefaultBodyLimit::max(bothy_api::MAX_JSON_BODY))
        .layer(axum::Extension(shutdown))
        .layer(axum::Extension(urls))
        .layer(middleware::from_fn(log_request))
        .with_state(control)
}

/// Anything else under `/v1` is part of the Sprites API bothy does not serve
/// yet: say so plainly (to authenticated callers) rather than pretend. Outside
/// `/v1` there is nothing, for anyone.
async fn not_implemented(uri: Uri, caller: Result<Auth, ApiError>) -> ApiError {
    let path = uri.path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return ApiError::NotFound(format!("no such endpoint {path}; the API lives under /v1"));
    }
    if let Err(e) = caller {
        return e;
    }
    ApiError::NotImplemented(format!(
        "{path} (with this method) is not implemented by this bothy server"
    ))
}

/// One line per request. Only the path: query strings can carry secrets (exec
/// env), and headers carry tokens.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    tracing::info!(
        %method,
        path,
        status = res.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    res
}

/// The answer to a plain GET on a route that is a WebSocket: `what` names it.
pub(crate) fn needs_upgrade(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{what} needs a WebSocket upgrade (GET with `Upgrade: websocket`)"
    ))
}

/// `axum::Json` with its rejections turned into the API's error body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}

/// A JSON body that may be absent (the SDK posts some calls without one).
pub fn optional_json<T>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned + Default,
{
    let bytes = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request body is larger than {} bytes; send less",
                bothy_api::MAX_JSON_BODY
            ))
        } else {
            ApiError::bad_request(format!(
                "could not read the request body: {}",
                r.body_text()
            ))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}
