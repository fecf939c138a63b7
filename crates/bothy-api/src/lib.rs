//! Wire types of the Sprites-compatible API that bothy serves.
//!
//! The executable specification is the published `sprites-py` SDK (0.7.x): field
//! names, optionality and framing here follow what that SDK sends and parses.
//! Timestamps are RFC 3339 strings in UTC.

pub mod control;
pub mod exec;
pub mod inbox;
pub mod names;
pub mod policy;
pub mod ports;

use serde::{Deserialize, Serialize};

/// Default memory limit of a new bothy, MiB.
pub const DEFAULT_RAM_MB: u64 = 2048;
/// Default CPU limit of a new bothy.
pub const DEFAULT_CPUS: u32 = 2;
/// Default size of a bothy's disk, GiB.
pub const DEFAULT_STORAGE_GB: u64 = 100;
/// Largest `max_results` a list call honours.
pub const MAX_LIST_RESULTS: usize = 50;
/// Largest JSON request body the API accepts, bytes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Resource settings of a bothy (`config` in create and get).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpriteConfig {
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_mb: Option<u64>,
    /// CPU limit in whole CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Region; bothy has one, `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Disk size in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_gb: Option<u64>,
    /// bothy extension: containers inside the box (user namespaces and
    /// mounts in them). Off by default; README explains the risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesting: Option<bool>,
}

/// Who may reach a bothy's URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UrlSettings {
    /// `"sprite"` (token required) or `"public"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Accepted for compatibility; stored and echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_access: Option<String>,
}

/// `POST /v1/sprites` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateSpriteRequest {
    /// The new bothy's name (see [`names::validate_sprite_name`]).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SpriteConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_settings: Option<UrlSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Accepted for compatibility: a bothy host either has room or says so.
    #[serde(default)]
    pub wait_for_capacity: bool,
    /// Accepted for compatibility (`default` or `dev`); ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// bothy extension: fork. The new bothy's disk starts as this checkpoint
    /// of another bothy in the same organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_checkpoint: Option<CheckpointRef>,
    /// bothy extension: when the new bothy goes to sleep by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// A checkpoint of a named bothy: `{"sprite": "dev", "checkpoint": "v3"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub sprite: String,
    pub checkpoint: String,
}

/// `POST /v1/sprites/{name}/checkpoint` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateCheckpointRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// bothy extension: answer only once the checkpoint is in the object
    /// store (a host that loses its disk right after still has it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
}

/// `POST /v1/drain` answer (bothy extension, admin tokens only): every box
/// is stopped, its disk synced to the object store; boxes wake again on
/// their next use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainResult {
    /// The sprites stopped, of every organization.
    pub stopped: Vec<String>,
    pub elapsed_ms: u64,
}

/// `POST /v1/sprites/{name}/sync` and `POST /v1/sync` answer (bothy
/// extension): everything acknowledged before the call (writes, checkpoints,
/// the state naming them) is in the object store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncResult {
    /// The sprites whose disks were synced.
    pub sprites: Vec<String>,
    /// RFC 3339: when the barrier completed.
    pub synced_at: String,
    pub elapsed_ms: u64,
}

/// One checkpoint, as `GET .../checkpoints` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `v1`, `v2`, ... per bothy.
    pub id: String,
    /// RFC 3339.
    pub create_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The checkpoints this one descends from, oldest first (the one the
    /// bothy was restored to or forked from, and its own history).
    #[serde(default)]
    pub history: Vec<String>,
    /// Made automatically (before a restore, or found after a crash),
    /// listed only with `?include_auto=true`.
    #[serde(default)]
    pub is_auto: bool,
    /// `is_auto` under the name bothy gave it first, for clients and
    /// scripts that read that. Not an alias of `is_auto`: serde refuses a
    /// body that has a field and its alias both.
    #[serde(default)]
    pub auto: bool,
    /// bothy extension: whether the checkpoint (its block map, the chunks it
    /// names and its record) is in the object store yet, so that a host
    /// that loses its disk gets it back. A checkpoint gets there within
    /// seconds; `durable` on create, or a sync, waits for it.
    #[serde(default)]
    pub in_object_store: bool,
    /// The checkpoint the disk descended from when this one was taken: the
    /// last entry of `history` (`vK`, or `sprite@vK` for a fork's source);
    /// `null` for a disk that was never restored or forked.
    #[serde(default)]
    pub source_id: Option<String>,
    /// Empty when the checkpoint can be restored; otherwise what is wrong.
    #[serde(default)]
    pub health: String,
}

impl Checkpoint {
    /// Whether it was made automatically, from a server of any version.
    pub fn is_automatic(&self) -> bool {
        self.is_auto || self.auto
    }
}

/// Parses a checkpoint id `vN` (N ≥ 1) into N.
pub fn parse_checkpoint_id(id: &str) -> Option<u64> {
    let n = id.strip_prefix('v')?;
    if n.is_empty() || n.len() > 18 || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0')
    {
        return None;
    }
    n.parse().ok()
}

/// `PUT /v1/sprites/{name}` body: a partial update.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateSpriteRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_settings: Option<UrlSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// When a bothy goes to sleep by itself: durations such as `30s`, `10m`,
/// `2h`, or `never`. In a request, fields left out keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Time without activity before the box goes warm (frozen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Time warm before it goes cold (stopped, disk in the object store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_after: Option<String>,
    /// Whether processes using CPU count as activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_activity: Option<bool>,
}

/// `POST /v1/sprites/{name}/sleep` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepRequest {
    /// Stop the box (cold) rather than freeze it (warm).
    #[serde(default)]
    pub cold: bool,
}

/// A bothy as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sprite {
    pub id: String,
    pub name: String,
    pub organization: String,
    /// `running`, `warm` or `cold`.
    pub status: String,
    pub config: SpriteConfig,
    pub url_settings: UrlSettings,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_running_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
}

/// `GET /v1/sprites` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpriteList {
    pub sprites: Vec<Sprite>,
    pub has_more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_continuation_token: Option<String>,
    #[serde(default)]
    pub running: u64,
    #[serde(default)]
    pub warm: u64,
    #[serde(default)]
    pub cold: u64,
}

/// One exec session in `GET /v1/sprites/{name}/exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSession {
    pub id: String,
    pub command: String,
    pub workdir: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    #[serde(default)]
    pub bytes_per_second: f64,
    /// A client is attached right now.
    pub is_active: bool,
    pub tty: bool,
    /// Exit code once the process has ended (bothy extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// `GET /v1/sprites/{name}/exec` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecSessionList {
    pub sessions: Vec<ExecSession>,
}

/// `POST /v1/sprites/{name}/exec/{id}/kill` body (`sprites-py` sends one;
/// `@fly/sprites` sends `?signal=&timeout=` instead, which wins).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KillSessionRequest {
    /// Signal name such as `SIGTERM` or `TERM`; default `SIGTERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Seconds before SIGKILL follows; default [`DEFAULT_KILL_TIMEOUT_SECS`],
    /// at most [`MAX_KILL_TIMEOUT_SECS`]; 0 sends the signal only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// Grace period of a kill before SIGKILL follows, unless the call says.
pub const DEFAULT_KILL_TIMEOUT_SECS: u64 = 10;
/// Longest grace period a kill accepts.
pub const MAX_KILL_TIMEOUT_SECS: u64 = 300;

/// What a line of the kill stream reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillEventKind {
    /// The signal asked for was sent.
    Signal,
    /// The process outlived the grace period.
    Timeout,
    /// SIGKILL was sent after the grace period.
    Killed,
    /// The process has ended (`exit_code` when known).
    Exited,
    /// Something failed; `error` says what.
    Error,
    /// Last line of every stream.
    Complete,
}

/// One line of the NDJSON answer of `POST .../exec/{id}/kill`: what
/// `@fly/sprites` reads (`type, message, signal, pid, exit_code`) and what
/// `sprites-py` reads (`type, data, error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillEvent {
    #[serde(rename = "type")]
    pub kind: KillEventKind,
    pub message: String,
    /// The same text as `message`, where `sprites-py` looks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// On `error` lines: the same text again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The signal sent, always with its `SIG` prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The session's process (in the box's pid namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl KillEvent {
    pub fn new(kind: KillEventKind, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            kind,
            data: Some(message.clone()),
            error: (kind == KillEventKind::Error).then(|| message.clone()),
            message,
            signal: None,
            pid: None,
            exit_code: None,
        }
    }
}

/// One line of an NDJSON progress stream (checkpoint, restore, kill).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMessage {
    /// `info`, `error` or `complete`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The organisation's counts in a [`SpriteStateEvent`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgCounts {
    pub name: String,
    pub running: u64,
    pub warm: u64,
    pub cold: u64,
    /// bothy sets no limits; absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_limit: Option<u64>,
}

/// One line of `GET /v1/sprites` with `Accept: application/x-ndjson` (the
/// list watch): a sprite's state, or a heartbeat with only the counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpriteStateEvent {
    /// `heartbeat` on heartbeats; absent on sprite lines.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `running`, `warm`, `cold`, or `destroyed` once it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_running_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warming_at: Option<String>,
    /// RFC 3339: when this line was made.
    pub timestamp: String,
    pub org: OrgCounts,
}

/// `POST /v1/sprites/{name}/restart` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartResult {
    pub sprite_name: String,
    /// The box's id (bothy has no machines apart from boxes).
    pub machine_id: String,
    pub message: String,
}

/// `GET /v1/sprites/{name}/check` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpriteCheck {
    pub sprite_name: String,
    pub sprite_id: String,
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// Why it is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339.
    pub checked_at: String,
    /// How long the check took, ms.
    pub elapsed: u64,
}

/// `GET /v1/organization` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub name: String,
    pub slug: String,
    /// bothy extension: how many of the organisation's sprites are in each
    /// state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sprites: Option<StateCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub running: u64,
    pub warm: u64,
    pub cold: u64,
    pub total: u64,
}

/// `GET /v1/sprites/{name}/usage` (bothy extension): what a sprite has used
/// since it was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpriteUsage {
    pub name: String,
    pub id: String,
    pub status: String,
    /// RFC 3339: when the sprite was created. Sprites made by a bothy that
    /// did not count time yet count from its upgrade.
    pub since: String,
    pub running_seconds: f64,
    pub warm_seconds: f64,
    pub cold_seconds: f64,
    /// Distinct chunks the current disk refers to, in bytes (uncompressed;
    /// chunks shared with other sprites count for each). `null` when the
    /// storage cannot tell.
    pub disk_bytes: Option<u64>,
    /// Distinct chunks only its checkpoints keep, in bytes.
    pub checkpoint_bytes: Option<u64>,
    pub checkpoints: u64,
}

/// Longest lifetime a token may be given: 10 years, in seconds.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;

/// `POST /v1/organizations/{org}/tokens` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    /// What the token is for (at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Accepted for compatibility; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_code: Option<String>,
    /// The token expires this many seconds from now (1 to
    /// [`MAX_TOKEN_LIFETIME_SECS`]); a bothy extension. Without it and
    /// `expires_at`, the token never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// The token expires at this RFC 3339 time (in the future, at most
    /// [`MAX_TOKEN_LIFETIME_SECS`] away); a bothy extension. Give this or
    /// `expires_in`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// bothy extension: a token for an agent (MCP), limited to sprites whose
    /// names start with a prefix, a number of them, and maybe to reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<TokenLimits>,
}

/// The prefix a limited token's sprites have unless it says otherwise.
pub const DEFAULT_MCP_PREFIX: &str = "mcp-";
/// The longest prefix a limited token may be given.
pub const MAX_MCP_PREFIX: usize = 20;

/// What a token made for an agent may do (bothy extension). The daemon
/// enforces it on every call, whatever the frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLimits {
    /// How many sprites with the prefix the organisation may have for the
    /// token to create another.
    pub max_sprites: u32,
    /// The token sees, and may create, only sprites whose names start with it.
    #[serde(default = "default_mcp_prefix")]
    pub prefix: String,
    /// Reading only: every call that changes something is refused.
    #[serde(default)]
    pub read_only: bool,
}

fn default_mcp_prefix() -> String {
    DEFAULT_MCP_PREFIX.into()
}

/// `POST /v1/organizations/{org}/tokens` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    /// The secret: shown once, never again.
    pub token: String,
    pub organization: String,
    /// The token's public id (`tok_` and 12 hex digits), to list and revoke
    /// it by; not a secret. Empty from a server that has no ids.
    #[serde(default)]
    pub id: String,
    /// Its limits, if it was made for an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<TokenLimits>,
    /// When it expires (RFC 3339), `null` for never.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// One token as `GET /v1/tokens` lists it: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id, `tok_` and 12 hex digits.
    pub id: String,
    pub organization: String,
    #[serde(default)]
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, `null` for never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Admin tokens act on every organisation.
    pub is_admin: bool,
    /// Whether it has expired (it is refused with 401 then).
    pub expired: bool,
    /// Its limits, if it was made for an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<TokenLimits>,
}

/// `GET /v1/tokens[?org=ORG]` answer, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// Every token starts with this, so leaked tokens are easy to recognise.
pub const TOKEN_PREFIX: &str = "bothy_";

/// Whether `id` has the shape of a token id: `tok_` and 12 lowercase hex
/// digits.
pub fn is_token_id(id: &str) -> bool {
    id.strip_prefix("tok_").is_some_and(|hex| {
        hex.len() == 12
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// An organisation's limits (bothy extension); `null` is no limit. The body
/// of `PUT /v1/organizations/{org}/quota`, which replaces all four.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimits {
    #[serde(default)]
    pub max_boxes: Option<u64>,
    #[serde(default)]
    pub max_running_boxes: Option<u64>,
    #[serde(default)]
    pub max_storage_gb: Option<u64>,
    #[serde(default)]
    pub max_checkpoints: Option<u64>,
}

/// What an organisation has, against its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaUsage {
    pub boxes: u64,
    pub running_boxes: u64,
    pub storage_gb: u64,
    pub checkpoints: u64,
}

/// `GET|PUT /v1/organizations/{org}/quota` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgQuota {
    pub organization: String,
    pub limits: QuotaLimits,
    pub usage: QuotaUsage,
}

/// `GET|POST /v1/sprites/{name}/policy/resources` (what `@fly/sprites`
/// sends and reads): the box's memory limit, `{}` when no policy is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryPolicy {
    pub limit_mb: u64,
    /// bothy keeps the limit set; `true` is refused.
    #[serde(default)]
    pub autoscale: bool,
}

/// Body of every error answer: `{"error": code, "message": text}`, as the SDK's
/// `parse_api_error` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_name`.
    pub error: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_read_from_servers_old_and_new() {
        let new: Checkpoint = serde_json::from_str(
            r#"{"id":"v2","create_time":"t","history":["v1"],"is_auto":true,"auto":true,"source_id":"v1","health":""}"#,
        )
        .expect("both keys at once");
        assert!(new.is_automatic());
        let old: Checkpoint =
            serde_json::from_str(r#"{"id":"v2","create_time":"t","auto":true}"#).expect("old");
        assert!(old.is_automatic());
        assert_eq!(old.source_id, None);
        let out = serde_json::to_value(&old).expect("serialise");
        for key in ["is_auto", "auto", "source_id", "health"] {
            assert!(out.get(key).is_some(), "{key} missing from {out}");
        }
    }

    #[test]
    fn kill_events_carry_their_text_where_each_sdk_reads_it() {
        let e = serde_json::to_value(KillEvent::new(KillEventKind::Error, "boom")).expect("json");
        assert_eq!(
            e,
            serde_json::json!({"type": "error", "message": "boom", "data": "boom", "error": "boom"})
        );
        let s = serde_json::to_value(KillEvent::new(KillEventKind::Signal, "sent")).expect("json");
        assert!(s.get("error").is_none(), "{s}");
    }

    #[test]
    fn token_ids() {
        assert!(is_token_id("tok_0123456789ab"));
        for bad in [
            "",
            "tok_",
            "tok_0123456789AB",
            "tok_0123456789a",
            "tok_0123456789abc",
            "bothy_0123456789ab",
            "tok_0123456789ag",
        ] {
            assert!(!is_token_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn checkpoint_ids() {
        assert_eq!(parse_checkpoint_id("v1"), Some(1));
        assert_eq!(parse_checkpoint_id("v42"), Some(42));
        for bad in [
            "",
            "v",
            "1",
            "v0",
            "v01",
            "v-1",
            "V1",
            "v1 ",
            "v99999999999999999999",
            "../v1",
        ] {
            assert_eq!(parse_checkpoint_id(bad), None, "{bad:?}");
        }
    }
}
