//! The tools. Each is one call (or a few) of the bothy API with the
//! caller's token: the daemon decides what the token may do (its
//! organisation, and an MCP token's cap, prefix and read-only flag), so
//! nothing here grants or checks a permission.

use std::sync::{Arc, OnceLock};

use bothy_client::Client;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Extensions, Implementation, InitializeRequestParams, InitializeResult,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};

use crate::exec::{self, RunError};
use crate::output::{self, Capped, MAX_TEXT};
use crate::params::*;

/// Most directory entries `fs_list` returns.
const MAX_ENTRIES: usize = 1000;

const INSTRUCTIONS: &str = "bothy sprites are durable Linux computers (Debian, root shell) that \
keep their whole disk until destroyed. Create one with sprite_create, run commands with exec, \
read and write files with fs_read/fs_write/fs_list. Take a checkpoint (checkpoint_create) before \
anything risky and checkpoint_restore if it goes wrong; sprite_fork makes a new sprite from a \
checkpoint to try something on the side. Long-running processes (web servers, workers) belong \
in services (service_create), which restart on their own; url_get gives the URL of a sprite's \
HTTP service. An idle sprite sleeps by itself and wakes on the next call. Errors say what was \
refused and why: a token may be limited to names with a prefix, a number of sprites, or reading.";

/// Where a tool call gets its API client.
enum Access {
    /// `bothy mcp`: the token the process was started with.
    Fixed(Client),
    /// The daemon's `/mcp`: the bearer token of the HTTP request that
    /// opened the session, bound to it at its first request.
    Bearer {
        api: String,
        bound: OnceLock<(String, Client)>,
    },
}

/// One MCP session's server: the tools over the bothy API.
#[derive(Clone)]
pub struct Bothy {
    access: Arc<Access>,
    tool_router: ToolRouter<Self>,
}

impl Bothy {
    /// Tools acting with `client`'s token (stdio).
    pub fn with_client(client: Client) -> Self {
        Self {
            access: Arc::new(Access::Fixed(client)),
            tool_router: Self::tool_router(),
        }
    }

    /// Tools acting with the session's bearer token against the API at
    /// `api` (the daemon's own address).
    pub fn for_bearer(api: impl Into<String>) -> Self {
        Self {
            access: Arc::new(Access::Bearer {
                api: api.into(),
                bound: OnceLock::new(),
            }),
            tool_router: Self::tool_router(),
        }
    }

    /// The client for this call, or the tool error that says why there is none.
    fn client(&self, ext: &Extensions) -> Result<Client, CallToolResult> {
        let (api, bound) = match &*self.access {
            Access::Fixed(c) => return Ok(c.clone()),
            Access::Bearer { api, bound } => (api, bound),
        };
        let token = ext
            .get::<http::request::Parts>()
            .and_then(|p| bearer(&p.headers))
            .ok_or_else(|| {
                output::refused("this request carries no Authorization: Bearer token")
            })?;
        if bound.get().is_none() {
            let client = Client::new(api, token).map_err(|e| output::api_error(&e))?;
            // Two first requests racing: one wins, the other is compared below.
            let _ = bound.set((token.to_string(), client));
        }
        match bound.get() {
            Some((t, c)) if t == token => Ok(c.clone()),
            _ => Err(output::refused(
                "this MCP session was opened with another token; open a new session with this one",
            )),
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Runs `$call` with the call's client; an API error becomes a tool error.
macro_rules! with_client {
    ($self:ident, $ext:ident, |$c:ident| $call:expr) => {{
        let $c = match $self.client(&$ext) {
            Ok(c) => c,
            Err(refusal) => return refusal,
        };
        match $call.await {
            Ok(v) => v,
            Err(e) => return output::api_error(&e),
        }
    }};
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn sprite_summary(s: &bothy_api::Sprite) -> Value {
    json!({
        "name": s.name,
        "status": s.status,
        "url": s.url,
        "organization": s.organization,
        "created_at": s.created_at,
        "last_active_at": s.last_active_at,
    })
}

#[tool_router]
impl Bothy {
    #[tool(
        description = "List the sprites this token can see (name, status: running, warm or cold, URL). \
Use it first to find an existing sprite before creating a new one.",
        annotations(
            title = "List sprites",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn sprite_list(&self, params: Parameters<ListArgs>, ext: Extensions) -> CallToolResult {
        let a = params.0;
        let sprites = with_client!(self, ext, |c| c.list_all(a.prefix.as_deref()));
        let list: Vec<Value> = sprites.iter().map(sprite_summary).collect();
        output::json(json!({ "sprites": list }))
    }

    #[tool(
        description = "Create a new sprite: a Debian Linux computer with a root shell whose disk persists \
until it is destroyed (ready in about a second). Then run commands in it with exec. A token may be \
limited to names starting with a prefix and to a number of sprites; the error says so.",
        annotations(
            title = "Create a sprite",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn sprite_create(
        &self,
        params: Parameters<CreateArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let req = params.0.request();
        let s = with_client!(self, ext, |c| c.create_sprite(&req));
        output::json(to_json(&s))
    }

    #[tool(
        description = "Show one sprite: status (running, warm = frozen, cold = stopped; calls wake it), \
URL and its settings, resources, labels, idle policy.",
        annotations(
            title = "Get a sprite",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn sprite_get(&self, params: Parameters<SpriteArgs>, ext: Extensions) -> CallToolResult {
        let s = with_client!(self, ext, |c| c.get_sprite(&params.0.sprite));
        output::json(to_json(&s))
    }

    #[tool(
        description = "Destroy a sprite with its disk and all its checkpoints. This cannot be undone: \
only use it on a sprite you created for this task and no longer need.",
        annotations(
            title = "Destroy a sprite",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn sprite_destroy(
        &self,
        params: Parameters<SpriteArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let name = params.0.sprite;
        with_client!(self, ext, |c| c.destroy_sprite(&name));
        output::text(format!("destroyed sprite {name}"))
    }

    #[tool(
        description = "Run a command in a sprite (as root) and wait for it: returns exit_code, stdout and \
stderr. cmd is an argv array, not a shell line: use [\"bash\", \"-lc\", \"cd app && make\"] for \
shell syntax. Output past 32 KiB per stream keeps its start and end and says what was left out. \
Commands longer than timeout_secs (default 120) are killed: run servers as a service instead. \
The sprite can reach the internet (apt-get, pip, git clone work). Checkpoint before risky steps.",
        annotations(
            title = "Run a command",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn exec(&self, params: Parameters<ExecArgs>, ext: Extensions) -> CallToolResult {
        let a = params.0;
        let client = match self.client(&ext) {
            Ok(c) => c,
            Err(refusal) => return refusal,
        };
        match exec::run(&client, &a).await {
            Ok(outcome) => output::json(outcome.to_json(a.timeout())),
            Err(RunError::Refused(why)) => output::refused(why),
            Err(RunError::Api(e)) => output::api_error(&e),
        }
    }

    #[tool(
        description = "Checkpoint a sprite's whole disk now, while it runs (instant; ids v1, v2, ...). \
Do this before risky steps (upgrades, migrations, rm -rf, experiments) so checkpoint_restore can \
bring the disk back, and sprite_fork can start new sprites from it.",
        annotations(
            title = "Checkpoint a sprite",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn checkpoint_create(
        &self,
        params: Parameters<CheckpointCreateArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let cp = with_client!(self, ext, |c| c
            .create_checkpoint(&a.sprite, a.comment.as_deref()));
        output::json(to_json(&cp))
    }

    #[tool(
        description = "List a sprite's checkpoints (id, time, comment), oldest first.",
        annotations(
            title = "List checkpoints",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn checkpoint_list(
        &self,
        params: Parameters<CheckpointListArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let cps = with_client!(self, ext, |c| c.list_checkpoints(&a.sprite, a.include_auto));
        output::json(json!({ "checkpoints": to_json(&cps) }))
    }

    #[tool(
        description = "Bring a sprite's disk back to a checkpoint and restart it (about a second): every \
change since is undone and its processes restart. The state it replaces is kept as an automatic \
checkpoint (its id is returned), so a restore can itself be undone.",
        annotations(
            title = "Restore a checkpoint",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn checkpoint_restore(
        &self,
        params: Parameters<RestoreArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let kept = with_client!(self, ext, |c| c
            .restore_checkpoint(&a.sprite, &a.checkpoint));
        output::json(json!({
            "sprite": a.sprite,
            "restored": a.checkpoint,
            "previous_state_checkpoint": kept,
        }))
    }

    #[tool(
        description = "Create a new sprite whose disk starts as a checkpoint of another sprite (instant): \
try an alternative, or run several attempts side by side, without touching the original.",
        annotations(
            title = "Fork a sprite",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn sprite_fork(&self, params: Parameters<ForkArgs>, ext: Extensions) -> CallToolResult {
        let req = params.0.request();
        let s = with_client!(self, ext, |c| c.create_sprite(&req));
        output::json(to_json(&s))
    }

    #[tool(
        description = "The sprite's URL and who may open it. Requests to it go to the sprite's HTTP \
service (service_create with http_port), else to port 8080 in the sprite; they wake it.",
        annotations(
            title = "Get the sprite's URL",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn url_get(&self, params: Parameters<SpriteArgs>, ext: Extensions) -> CallToolResult {
        let s = with_client!(self, ext, |c| c.get_sprite(&params.0.sprite));
        output::json(json!({
            "sprite": s.name,
            "url": s.url,
            "auth": s.url_settings.auth.as_deref().unwrap_or("sprite"),
        }))
    }

    #[tool(
        description = "Set who may open the sprite's URL: \"public\" (anyone on the internet; only for \
what may be public) or \"sprite\" (only holders of a token of its organisation).",
        annotations(
            title = "Set URL access",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn url_set_auth(
        &self,
        params: Parameters<UrlAuthArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let s = with_client!(self, ext, |c| c.update_sprite(&a.sprite, &a.request()));
        output::json(json!({
            "sprite": s.name,
            "url": s.url,
            "auth": s.url_settings.auth.as_deref().unwrap_or("sprite"),
        }))
    }

    #[tool(
        description = "List the sprite's services (long-running processes its init keeps running) and \
their state.",
        annotations(
            title = "List services",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn services_list(
        &self,
        params: Parameters<SpriteArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let list = with_client!(self, ext, |c| c.list_services(&params.0.sprite));
        output::json(json!({ "services": list }))
    }

    #[tool(
        description = "Create (or replace) a service: a long-running process the sprite keeps running, \
started on every boot and wake and restarted when it exits. Use it for web servers and workers \
rather than exec. With http_port, the sprite's URL goes to it. Returns its first output.",
        annotations(
            title = "Create a service",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn service_create(
        &self,
        params: Parameters<ServiceCreateArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let def = a.definition();
        let lines = with_client!(self, ext, |c| c.put_service(&a.sprite, &a.name, &def, None));
        output::json(json!({ "service": a.name, "events": lines }))
    }

    #[tool(
        description = "Start a stopped service and return its first output.",
        annotations(
            title = "Start a service",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn service_start(
        &self,
        params: Parameters<ServiceArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let lines = with_client!(self, ext, |c| c
            .service_op(&a.sprite, &a.name, "start", None));
        output::json(json!({ "service": a.name, "events": lines }))
    }

    #[tool(
        description = "Stop a service (SIGTERM, then SIGKILL after timeout_secs). It stays stopped, also \
across wakes, until service_start.",
        annotations(
            title = "Stop a service",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn service_stop(
        &self,
        params: Parameters<ServiceStopArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let secs = a.timeout_secs.map(|s| s as f64);
        let lines = with_client!(self, ext, |c| c
            .service_op(&a.sprite, &a.name, "stop", secs));
        output::json(json!({ "service": a.name, "events": lines }))
    }

    #[tool(
        description = "A service's recent output (stdout and stderr). Long logs keep their start and \
their most recent 60 KiB.",
        annotations(
            title = "Service logs",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn service_logs(
        &self,
        params: Parameters<ServiceArgs>,
        ext: Extensions,
    ) -> CallToolResult {
        let a = params.0;
        let lines = with_client!(self, ext, |c| c.service_logs(&a.sprite, &a.name));
        let mut log = Capped::new(4 * 1024, 60 * 1024);
        for line in &lines {
            if let Some(data) = line.get("data").and_then(Value::as_str) {
                log.push(data.as_bytes());
            }
        }
        output::text(log.text())
    }

    #[tool(
        description = "Read a text file from a sprite. Files over 64 KiB are cut (the answer says so): \
read big files in parts with exec (head, tail, sed -n, grep).",
        annotations(
            title = "Read a file",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn fs_read(&self, params: Parameters<FsPathArgs>, ext: Extensions) -> CallToolResult {
        let a = params.0;
        let bytes = with_client!(self, ext, |c| c.fs_read(&a.sprite, &a.path));
        match std::str::from_utf8(&bytes) {
            Ok(text) => output::text(output::truncate(
                text,
                MAX_TEXT,
                "read the rest with exec (e.g. tail -c, sed -n)",
            )),
            Err(_) => output::text(format!(
                "{} is not UTF-8 text ({} bytes); inspect it with exec (file, xxd | head, base64)",
                a.path,
                bytes.len()
            )),
        }
    }

    #[tool(
        description = "Write a text file in a sprite, replacing it whole (parent directories are \
created). Use mode \"0755\" for scripts.",
        annotations(
            title = "Write a file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn fs_write(&self, params: Parameters<FsWriteArgs>, ext: Extensions) -> CallToolResult {
        let a = params.0;
        let mode = match file_mode(a.mode.as_deref()) {
            Ok(m) => m,
            Err(why) => return output::refused(why),
        };
        let len = a.content.len();
        with_client!(self, ext, |c| c.fs_write(
            &a.sprite,
            &a.path,
            a.content.into_bytes(),
            &mode,
            true
        ));
        output::text(format!("wrote {len} bytes to {} (mode {mode})", a.path))
    }

    #[tool(
        description = "List a directory in a sprite: each entry's name, size, mode, modification time \
and whether it is a directory.",
        annotations(
            title = "List a directory",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn fs_list(&self, params: Parameters<FsPathArgs>, ext: Extensions) -> CallToolResult {
        let a = params.0;
        let mut listing = with_client!(self, ext, |c| c.fs_list(&a.sprite, &a.path));
        if let Some(entries) = listing.get_mut("entries").and_then(Value::as_array_mut) {
            if entries.len() > MAX_ENTRIES {
                let total = entries.len();
                entries.truncate(MAX_ENTRIES);
                listing["note"] = json!(format!(
                    "{total} entries, the first {MAX_ENTRIES} shown; list subdirectories or use exec (find, ls | grep)"
                ));
            }
        }
        output::json(listing)
    }

    #[tool(
        description = "Put a sprite to sleep now instead of waiting for its idle timeout: warm (processes \
frozen, resumed as they were) or, with cold, stopped (processes end; services start again on wake). \
Any later call wakes it. Its disk is kept either way.",
        annotations(
            title = "Sleep a sprite",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn sprite_sleep(&self, params: Parameters<SleepArgs>, ext: Extensions) -> CallToolResult {
        let a = params.0;
        let status = with_client!(self, ext, |c| c.sleep_sprite(&a.sprite, a.cold));
        output::json(status)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Bothy {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bothy", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    /// Binds an HTTP session to the token of the request that opens it.
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        if let Access::Bearer { api, bound } = &*self.access {
            let token = context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| bearer(&p.headers));
            if let Some(token) = token {
                if let Ok(client) = Client::new(api, token) {
                    let _ = bound.set((token.to_string(), client));
                }
            }
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_there_with_annotations() {
        let tools = Bothy::with_client(Client::new("http://127.0.0.1:1", "t").expect("client"))
            .tool_router
            .list_all();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "checkpoint_create",
                "checkpoint_list",
                "checkpoint_restore",
                "exec",
                "fs_list",
                "fs_read",
                "fs_write",
                "service_create",
                "service_logs",
                "service_start",
                "service_stop",
                "services_list",
                "sprite_create",
                "sprite_destroy",
                "sprite_fork",
                "sprite_get",
                "sprite_list",
                "sprite_sleep",
                "url_get",
                "url_set_auth",
            ]
        );
        for t in &tools {
            let a = t.annotations.as_ref().expect("annotations");
            let read_only = a.read_only_hint.expect("readOnlyHint");
            assert!(
                a.destructive_hint.is_some() && a.idempotent_hint.is_some(),
                "{}",
                t.name
            );
            assert!(
                !(read_only && a.destructive_hint == Some(true)),
                "{}",
                t.name
            );
            assert!(
                t.description.as_ref().is_some_and(|d| d.len() > 40),
                "{}",
                t.name
            );
        }
        let exec = tools.iter().find(|t| t.name == "exec").expect("exec");
        let schema = serde_json::to_value(&exec.input_schema).expect("schema");
        assert_eq!(schema["required"], json!(["sprite", "cmd"]));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer abc".parse().expect("header"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            "bearer  x ".parse().expect("header"),
        );
        assert_eq!(bearer(&h), Some("x"));
        h.insert(
            http::header::AUTHORIZATION,
            "Basic abc".parse().expect("header"),
        );
        assert_eq!(bearer(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer ".parse().expect("header"),
        );
        assert_eq!(bearer(&h), None);
    }

    fn with_bearer(token: &str) -> Extensions {
        let (mut parts, ()) = http::Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .expect("request")
            .into_parts();
        parts.extensions = http::Extensions::new();
        let mut ext = Extensions::new();
        ext.insert(parts);
        ext
    }

    #[test]
    fn a_session_keeps_the_token_that_opened_it() {
        let b = Bothy::for_bearer("http://127.0.0.1:7070");
        assert!(b.client(&Extensions::new()).is_err(), "no token, no client");
        assert!(b.client(&with_bearer("first")).is_ok());
        assert!(b.client(&with_bearer("first")).is_ok());
        let refused = b.client(&with_bearer("second")).expect_err("another token");
        assert_eq!(refused.is_error, Some(true));
    }
}
