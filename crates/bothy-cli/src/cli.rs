//! The command line grammar (clap derive). Admin verbs (`daemon`, `init`,
//! `image`) are parsed here so that `bothy --help` shows one tool, and run by
//! the binary, which links the daemon; this crate stays a pure API client.
//! `bench` is the binary's too: it adds `bothy-bench`'s grammar to this one,
//! so that no benchmark code is linked into the client verbs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::duration::parse_duration;

const LONG_ABOUT: &str = "\
bothy: durable Linux computers (\"bothies\") for coding agents and people.

A bothy is a root shell on a Debian userland, created in under a second, that
keeps its disk for as long as you want it. This one binary is the command line,
the daemon (`bothy daemon`) and the init inside every bothy.";

const AFTER_LONG_HELP: &str = "\
Examples:
  sudo bothy image build                 # once per host: the Debian base image
  sudo bothy daemon &                    # start the local daemon
  bothy create dev                       # create a bothy and open a shell in it
  bothy use dev                          # select it for this directory (.bothy)
  bothy exec -- uname -a                 # run a command in the selected bothy
  bothy x -s dev --env A=1,B=2 -- env    # short form, explicit bothy, extra env
  echo hi | bothy exec -s dev -- cat     # stdin is streamed, exit code is kept
  bothy console -s dev                   # root shell; Ctrl-\\ detaches
  bothy sessions -s dev                  # sessions that are still running
  bothy attach 42 -s dev                 # re-attach to one of them
  bothy checkpoint create -s dev --comment 'before upgrade'
  bothy restore -s dev v1                # disk back to v1 (the current state is kept)
  bothy create dev2 --from dev@v1        # fork: a new bothy from a checkpoint
  bothy --json list --prefix dev         # machine-readable output
  bothy destroy dev --force

Connection:
  --api / BOTHY_API_URL     default http://127.0.0.1:7070
  --token / BOTHY_TOKEN     default: the local daemon's admin token, read from
                            $BOTHY_DATA_DIR/admin-token (default /var/lib/bothy)";

/// The `bothy` command line.
#[derive(Debug, Parser)]
#[command(
    name = "bothy",
    version,
    about = "Durable Linux computers for coding agents: CLI, daemon and in-box init",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every verb accepts, before or after the verb.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// API URL of the bothy daemon
    #[arg(long, global = true, env = "BOTHY_API_URL", value_name = "URL")]
    pub api: Option<String>,

    /// API token (default: the local daemon's admin token)
    #[arg(
        long,
        global = true,
        env = "BOTHY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// The bothy to act on (default: the one named in the nearest .bothy file)
    #[arg(
        short = 's',
        long = "sprite",
        visible_alias = "bothy",
        global = true,
        value_name = "NAME"
    )]
    pub sprite: Option<String>,

    /// Print machine-readable JSON instead of tables and sentences
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a bothy, then open a console in it
    Create(CreateArgs),
    /// List bothies
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Select a bothy for this directory and below (writes .bothy)
    Use(UseArgs),
    /// Run a command in a bothy
    #[command(visible_alias = "x")]
    Exec(ExecArgs),
    /// Open a root shell in a bothy (Ctrl-\ detaches)
    #[command(visible_alias = "c")]
    Console,
    /// List the exec sessions of a bothy, or kill one
    Sessions(SessionsArgs),
    /// Re-attach to a running session
    Attach(AttachArgs),
    /// Destroy a bothy and its disk
    Destroy(DestroyArgs),
    /// Checkpoints of a bothy's disk: create, list, info, delete
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Bring a bothy's whole disk back to a checkpoint and restart it (the
    /// state it replaces is kept as an automatic checkpoint)
    Restore(RestoreArgs),
    /// Wait until everything written and checkpointed so far is in the object
    /// store: of one bothy with -s NAME, else of every bothy you can see
    Sync(SyncArgs),
    /// Services the bothy's init keeps running: create, list, get, start,
    /// stop, restart, signal, delete, logs
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Tasks: holds that keep a bothy running (no idle sleep) until released
    /// or expired
    #[command(subcommand)]
    Task(TaskCommand),
    /// Put a bothy to sleep now: warm (processes frozen) or, with --cold,
    /// stopped; the next exec or API call wakes it
    Sleep(SleepArgs),
    /// Change a bothy's settings: when it goes to sleep by itself
    Update(UpdateArgs),
    /// Print a bothy's URL, or change who may open it (`url update --auth
    /// public|sprite`)
    Url(UrlArgs),
    /// Forward local TCP ports to ports on a bothy's loopback, one
    /// connection at a time over the API, until Ctrl-C
    Proxy(ProxyArgs),
    /// Stop every bothy of every organization (admin token), their disks
    /// synced to the object store, e.g. before host maintenance; each wakes
    /// again on its next use
    Drain,
    /// API tokens: create (optionally expiring), list, revoke
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the organisation of the current token and how many of its
    /// bothies are running, warm and cold
    Org,
    /// Time each bothy spent running, warm and cold, and the bytes its disk
    /// and checkpoints store: of one bothy with -s NAME, else of every bothy
    Usage,
    /// Print a one-page guide (Markdown) for agents and people: create, exec,
    /// checkpoint before risky steps, restore, fork, URLs, services, tasks
    Skill,
    /// Serve the MCP tools (create, exec, checkpoint, restore, fork,
    /// services, URLs, files) on stdin/stdout for an agent, acting with
    /// this CLI's token
    Mcp,
    /// Show or set an organisation's quotas (setting needs an admin token)
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Show or set a bothy's network policy (which DNS names it may resolve)
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the bothy daemon (needs root)
    #[command(hide = true)]
    Daemon(Box<DaemonArgs>),
    /// The process that serves every bothy's disk (started by the daemon;
    /// it outlives the daemon so that boxes keep running across a restart)
    #[command(hide = true)]
    StorageServer(StorageServerArgs),
    /// Pid 1 inside a bothy (started by the daemon, not by people)
    #[command(hide = true)]
    Init,
    /// Manage the base image every bothy starts from
    #[command(subcommand, hide = true)]
    Image(ImageCommand),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name: lowercase letters, digits and '-', starting with a letter
    pub name: String,
    /// Do not open a console after creating
    #[arg(long)]
    pub skip_console: bool,
    /// A label to attach (repeatable)
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Memory limit in MiB
    #[arg(long, value_name = "MIB")]
    pub ram_mb: Option<u64>,
    /// CPU limit in whole CPUs
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Disk size in GiB
    #[arg(long, value_name = "GIB")]
    pub storage_gb: Option<u64>,
    /// Allow containers inside the bothy (user namespaces and mounts in
    /// them). Widens the kernel surface the bothy's code can reach: use it for
    /// bothies that need podman, docker or bwrap inside
    #[arg(long)]
    pub nesting: bool,
    /// Fork: start the new bothy's disk as a checkpoint of another, NAME@vN
    #[arg(long, value_name = "NAME@vN")]
    pub from: Option<String>,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// When a bothy goes to sleep by itself.
#[derive(Debug, Clone, Default, Args)]
pub struct LifecycleArgs {
    /// Time without activity before it goes warm (processes frozen), e.g.
    /// 30s, 5m, or never [default: the daemon's, 30s]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Time warm before it goes cold (stopped, disk in the object store),
    /// e.g. 10m, 2h, or never [default: the daemon's, 10m]
    #[arg(long, value_name = "DURATION")]
    pub cold_after: Option<String>,
    /// Processes using CPU do not keep it awake (only attached clients do)
    #[arg(long, conflicts_with = "cpu_activity")]
    pub no_cpu_activity: bool,
    /// Processes using CPU keep it awake (the default)
    #[arg(long)]
    pub cpu_activity: bool,
}

impl LifecycleArgs {
    /// What the flags ask for; `None` when no flag was given.
    pub fn to_api(&self) -> Option<bothy_api::Lifecycle> {
        let cpu = match (self.cpu_activity, self.no_cpu_activity) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        let l = bothy_api::Lifecycle {
            idle_timeout: self.idle_timeout.clone(),
            cold_after: self.cold_after.clone(),
            cpu_activity: cpu,
        };
        (l != bothy_api::Lifecycle::default()).then_some(l)
    }
}

#[derive(Debug, Args)]
pub struct UrlArgs {
    #[command(subcommand)]
    pub command: Option<UrlCommand>,
}

#[derive(Debug, Subcommand)]
pub enum UrlCommand {
    /// Change who may open the bothy's URL
    Update(UrlUpdateArgs),
}

#[derive(Debug, Args)]
pub struct UrlUpdateArgs {
    /// `sprite`: a token of the bothy's organization is needed (a bearer
    /// header, or a browser login); `public`: anyone
    #[arg(long, value_parser = ["public", "sprite"])]
    pub auth: String,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// LOCAL[:REMOTE]: listen on 127.0.0.1:LOCAL and forward each
    /// connection to port REMOTE (default LOCAL) in the bothy
    #[arg(required = true, value_name = "LOCAL[:REMOTE]", value_parser = parse_forward)]
    pub ports: Vec<PortForward>,
}

/// One `LOCAL[:REMOTE]` of `bothy proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub local: u16,
    pub remote: u16,
}

pub fn parse_forward(spec: &str) -> Result<PortForward, String> {
    let port = |what: &str, s: &str| -> Result<u16, String> {
        match s.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{what} port {s:?} is not a port number (1-65535)")),
        }
    };
    let (local, remote) = match spec.split_once(':') {
        None => (spec, spec),
        Some((l, r)) if !r.contains(':') => (l, r),
        Some(_) => {
            return Err(format!(
                "{spec:?} is not LOCAL or LOCAL:REMOTE (e.g. 8000:8080)"
            ))
        }
    };
    Ok(PortForward {
        local: port("local", local)?,
        remote: port("remote", remote)?,
    })
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The bothy to change
    pub name: String,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Create or replace a service and start it (it starts again on every
    /// boot and wake, and after it exits)
    Create(ServiceCreateArgs),
    /// List services and their state
    #[command(visible_alias = "ls")]
    List,
    /// Show one service
    Get(ServiceNameArgs),
    /// Start a stopped service
    Start(ServiceFollowArgs),
    /// Stop a service (it stays stopped until started)
    Stop(ServiceStopArgs),
    /// Stop and start a service
    Restart(ServiceFollowArgs),
    /// Send a signal to a service's processes
    Signal(ServiceSignalArgs),
    /// Stop and delete a service
    #[command(visible_alias = "rm")]
    Delete(ServiceNameArgs),
    /// Print the end of a service's log
    Logs(ServiceNameArgs),
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Take a hold; prints its id
    Hold(TaskHoldArgs),
    /// List the holds
    #[command(visible_alias = "ls")]
    List,
    /// Release a hold
    #[command(visible_alias = "rm")]
    Release(TaskReleaseArgs),
}

#[derive(Debug, Args)]
pub struct TaskHoldArgs {
    /// How long it holds unless extended: e.g. 10m (at most 1h)
    #[arg(long, value_name = "DURATION")]
    pub ttl: String,
    /// A name to tell holds apart
    #[arg(long)]
    pub name: Option<String>,
    /// Hold while this command runs (here), then release; exits with its code
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskReleaseArgs {
    /// The hold's id (task_…)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ServiceNameArgs {
    /// Service name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ServiceCreateArgs {
    /// Service name: a-z 0-9 - _ .
    pub name: String,
    /// The program to run
    #[arg(long)]
    pub cmd: String,
    /// Its arguments, comma-separated (repeat --args for ones with commas)
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Environment, KEY=VALUE, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub env: Vec<String>,
    /// Working directory in the bothy [default: /]
    #[arg(long)]
    pub dir: Option<String>,
    /// Services to start before this one, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub needs: Vec<String>,
    /// The port it serves HTTP on (one service per bothy)
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Follow its output for this many seconds
    #[arg(long, value_name = "SECONDS", default_value = "2")]
    pub follow: f64,
}

#[derive(Debug, Args)]
pub struct ServiceFollowArgs {
    pub name: String,
    /// Follow its output for this many seconds
    #[arg(long, value_name = "SECONDS", default_value = "2")]
    pub follow: f64,
}

#[derive(Debug, Args)]
pub struct ServiceStopArgs {
    pub name: String,
    /// Seconds between SIGTERM and SIGKILL
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ServiceSignalArgs {
    pub name: String,
    /// Signal name or number: TERM, SIGHUP, 9
    pub signal: String,
}

#[derive(Debug, Args)]
pub struct SleepArgs {
    /// Stop it (cold: disk synced to the object store) rather than freeze it
    /// (warm)
    #[arg(long)]
    pub cold: bool,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Checkpoint the bothy's disk now (it keeps running)
    Create(CheckpointCreateArgs),
    /// List checkpoints
    #[command(visible_alias = "ls")]
    List(CheckpointListArgs),
    /// Show one checkpoint
    Info(CheckpointIdArgs),
    /// Delete a checkpoint and free what only it used
    #[command(visible_alias = "rm")]
    Delete(CheckpointIdArgs),
}

#[derive(Debug, Args)]
pub struct CheckpointCreateArgs {
    /// A note to remember it by
    #[arg(long)]
    pub comment: Option<String>,
    /// Return only once the checkpoint is in the object store (otherwise it
    /// gets there within seconds)
    #[arg(long)]
    pub durable: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {}

#[derive(Debug, Args)]
pub struct CheckpointListArgs {
    /// Also list automatic checkpoints (made before each restore)
    #[arg(long)]
    pub include_auto: bool,
    /// Only checkpoints descending from this one (e.g. v2)
    #[arg(long, value_name = "ID")]
    pub history: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckpointIdArgs {
    /// Checkpoint id: v1, v2, ...
    pub id: String,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: bothy restore -s dev v3")]
pub struct RestoreArgs {
    /// Checkpoint id: v1, v2, ...
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only bothies whose name starts with this
    #[arg(long)]
    pub prefix: Option<String>,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    /// The bothy to select
    #[arg(required_unless_present = "unset", conflicts_with = "unset")]
    pub name: Option<String>,
    /// Remove the .bothy file of the current directory
    #[arg(long)]
    pub unset: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: bothy exec -s dev --env A=1,B=2 --dir /tmp -- sh -c 'echo $A'")]
pub struct ExecArgs {
    /// Run under a pseudo-terminal (puts the local terminal in raw mode)
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Working directory in the bothy
    #[arg(long, value_name = "DIR")]
    pub dir: Option<String>,
    /// Environment: K=V, comma-separated and repeatable (a piece without '='
    /// continues the previous value: A=1,2 sets A to "1,2")
    #[arg(short = 'e', long = "env", value_name = "K=V,..")]
    pub env: Vec<String>,
    /// Keep the command running this long after this client disconnects
    /// (30, 30s, 5m, 1h30m; 0 = until it exits)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_run_after_disconnect: Option<std::time::Duration>,
    /// The command and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub action: Option<SessionsAction>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// Signal a session's process (SIGKILL follows after the timeout)
    Kill(KillArgs),
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Session id (see `bothy sessions`)
    pub id: String,
    /// Signal name, e.g. TERM, SIGINT, KILL
    #[arg(long, default_value = "SIGTERM")]
    pub signal: String,
    /// Seconds before SIGKILL follows
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Session id (see `bothy sessions`)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The bothy to destroy (default: -s NAME)
    pub name: Option<String>,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for an organisation and print it
    ///
    /// Only the token goes to stdout, so `$(bothy token create ...)` captures
    /// it; its id and expiry go to stderr (all of it to stdout with --json).
    /// The token is shown only this once: afterwards it is known by its id.
    #[command(after_help = "Examples:\n  \
        export BOTHY_TOKEN=$(bothy token create --org acme --expires-in 30d)\n  \
        bothy token create --org acme --description ci --expires-at 2030-01-31T00:00:00Z")]
    Create(TokenCreateArgs),
    /// List tokens by id, never the tokens themselves
    ///
    /// Shows each token's id, organisation, kind, creation and expiry. An
    /// admin token sees every organisation's tokens, others only their own.
    #[command(visible_alias = "ls")]
    List(TokenListArgs),
    /// Revoke a token by its id
    ///
    /// The token's next request is refused (401). Ids (`tok_...`) come from
    /// `bothy token list`. A non-admin token revokes only its organisation's
    /// tokens; the last admin token that has not expired cannot be revoked.
    #[command(visible_alias = "rm")]
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Organisation slug (created if new; admin tokens only, others may
    /// mint only for their own) [default: the current token's]
    #[arg(long, short = 'o', value_name = "ORG")]
    pub org: Option<String>,
    /// A token for an agent (MCP): it sees and creates only sprites named
    /// with --prefix, at most --max of them, and cannot manage tokens
    #[arg(long, requires = "max")]
    pub mcp: bool,
    /// With --mcp: how many sprites with the prefix may exist for it to
    /// create another
    #[arg(long, value_name = "N", requires = "mcp")]
    pub max: Option<u32>,
    /// With --mcp: the names its sprites must start with
    #[arg(long, value_name = "PREFIX", default_value = bothy_api::DEFAULT_MCP_PREFIX, requires = "mcp")]
    pub prefix: String,
    /// With --mcp: only calls that read (no create, exec, destroy, ...)
    #[arg(long, requires = "mcp")]
    pub read_only: bool,
    /// What the token is for
    #[arg(long)]
    pub description: Option<String>,
    /// Expire this long from now (30d, 12h, 90m, 3600; at most 10 years);
    /// without it or --expires-at the token never expires
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime, conflicts_with = "expires_at")]
    pub expires_in: Option<u64>,
    /// Expire at this RFC 3339 time, e.g. 2030-01-31T00:00:00Z
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
}

/// A token lifetime in whole seconds, at least one.
fn parse_lifetime(s: &str) -> Result<u64, String> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!(
            "{s:?}: a token lives whole seconds, at least 1 (e.g. 30d, 12h, 3600)"
        ));
    }
    Ok(d.as_secs())
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    /// Only this organisation's tokens (an admin token sees every one's)
    #[arg(long, short = 'o', value_name = "ORG")]
    pub org: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id, `tok_` and 12 hex digits (not the token itself)
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Show an organisation's quotas and what it uses
    Get(QuotaGetArgs),
    /// Replace an organisation's quotas; a limit left out is no limit
    Set(QuotaSetArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the bothy's rules
    Get,
    /// Replace the bothy's rules with JSON from a file or stdin:
    /// {"rules": [{"domain": "example.com", "action": "deny"}]}
    Set(PolicySetArgs),
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// File with the rules as JSON; `-` reads stdin
    #[arg(default_value = "-", value_name = "FILE")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct QuotaGetArgs {
    /// Organisation slug [default: the current token's]
    #[arg(long, short = 'o', value_name = "ORG")]
    pub org: Option<String>,
}

#[derive(Debug, Args)]
pub struct QuotaSetArgs {
    /// Organisation slug
    #[arg(long, short = 'o', value_name = "ORG")]
    pub org: String,
    /// Most bothies the organisation may have
    #[arg(long, value_name = "N")]
    pub max_boxes: Option<u64>,
    /// Most bothies it may run at once
    #[arg(long, value_name = "N")]
    pub max_running_boxes: Option<u64>,
    /// Most GiB of disk (the sum of its bothies' storage_gb)
    #[arg(long, value_name = "GIB")]
    pub max_storage_gb: Option<u64>,
    /// Most checkpoints it may keep (automatic ones not counted)
    #[arg(long, value_name = "N")]
    pub max_checkpoints: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Where state, the admin token and volumes live
    #[arg(long, default_value = "/var/lib/bothy", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address of the API
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Base image directory (default: the runtime's shared image cache)
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// Where disk chunks, block maps and state snapshots are kept:
    /// file:///DIR or s3://BUCKET?endpoint=URL&region=R (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) [default: DATA_DIR/objects]
    #[arg(long, value_name = "URL", env = "BOTHY_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// Budget of the local chunk cache, e.g. 512M, 20G
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,
    /// On SIGTERM or SIGINT, stop every bothy (disks synced to the object
    /// store) before exiting. Without it boxes keep running across a restart
    /// or an upgrade of the daemon, and the next daemon adopts them.
    #[arg(long)]
    pub stop_boxes: bool,
    /// How far the memory limits of all bothies together may exceed the
    /// host's RAM (limits are ceilings, not reservations). A create that
    /// would pass it is refused with 503 until a bothy is destroyed
    /// [default: 4]
    #[arg(long, value_name = "FACTOR", value_parser = parse_overcommit)]
    pub ram_overcommit: Option<f64>,
    /// How far the CPU limits of all bothies together may exceed the host's
    /// CPUs [default: 32]
    #[arg(long, value_name = "FACTOR", value_parser = parse_overcommit)]
    pub cpu_overcommit: Option<f64>,
    /// Time without activity before a bothy without its own idle policy
    /// goes warm (processes frozen): e.g. 30s, 5m, or never
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub idle_timeout: String,
    /// Time warm before such a bothy goes cold (stopped): e.g. 10m, or never
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub cold_after: String,
    /// Keep N booted bothies ready, so a create of the default size is a
    /// rename (at most 64; 0: none). They use memory like any bothy but
    /// are invisible to users and quotas
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub warm_pool: u16,
    /// Bothy URLs are http(s)://NAME.DOMAIN (NAME--ORG.DOMAIN outside the
    /// `default` organization), served on every listener by Host. With
    /// `localhost`, browsers and curl need no DNS set-up
    #[arg(long, value_name = "DOMAIN", default_value = "localhost", value_parser = parse_domain)]
    pub domain: String,
    /// Another address that serves bothy URLs only (not the API), e.g.
    /// 0.0.0.0:80
    #[arg(long, value_name = "ADDR")]
    pub edge_listen: Option<SocketAddr>,
    /// Serve HTTPS here (the API and bothy URLs, HTTP/2 and HTTP/1.1). With
    /// no --tls-cert, bothy makes its own CA in DATA_DIR/tls/ca.pem and
    /// issues certificates on demand: trust that file
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// A certificate chain (PEM) to serve, wildcard or per-name; repeat with
    /// --tls-key in pairs (the first that fits the requested name is used)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Vec<PathBuf>,
    /// The private key (PEM) of the --tls-cert at the same position
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Vec<PathBuf>,
    /// How long a request to a bothy URL waits for the bothy's web service
    /// to accept (a sleeping bothy is woken first) before a 502
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration::parse_duration)]
    pub edge_wait: std::time::Duration,
}

/// A lower-case DNS name without a trailing dot.
fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 200
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(d)
    } else {
        Err(format!(
            "{s:?} is not a DNS name such as localhost or bothy.example.com"
        ))
    }
}

fn parse_overcommit(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 1000.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not an overcommit factor: a number above 0 and at most 1000, e.g. 1.5"
        )),
    }
}

#[derive(Debug, Args)]
pub struct StorageServerArgs {
    /// The daemon's data dir
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The daemon's instance id (names its mounts under /run/bothy)
    #[arg(long, value_name = "ID")]
    pub instance: String,
    /// Object store URL
    #[arg(long, value_name = "URL")]
    pub object_store: String,
    /// Budget of the local chunk cache
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub cache_size: u64,
}

/// `512M`, `20G`, `1T` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown unit {c:?} in {s:?}; use K, M, G or T")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 512M or 20G"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the Debian base image with mmdebstrap (needs root)
    Build(ImageBuildArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImageBuildArgs {
    /// Base image directory (default: the runtime's shared image cache)
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// Rebuild even if an image is already there
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bothy").chain(args.iter().copied()))
    }

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Words of a shell command line: quotes group, `#` starts a comment.
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
        for c in line.chars() {
            match (quote, c) {
                (None, '#') if !any => break,
                (None, '\'') | (None, '"') => {
                    quote = Some(c);
                    any = true;
                }
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => {
                    if any {
                        words.push(std::mem::take(&mut word));
                    }
                    any = false;
                }
                (_, c) => {
                    word.push(c);
                    any = true;
                }
            }
        }
        if any {
            words.push(word);
        }
        words
    }

    /// Every `bothy ...` command the skill page shows is one this CLI
    /// accepts: an agent that copies one gets no usage error.
    #[test]
    fn the_skill_pages_commands_parse() {
        let page = include_str!("skill.md");
        let commands: Vec<Vec<String>> = page
            .lines()
            .flat_map(|l| l.split('`'))
            .map(str::trim)
            .filter(|l| l.starts_with("bothy "))
            .map(shell_words)
            .collect();
        assert!(commands.len() > 20, "{}", commands.len());
        for words in commands {
            // Placeholders in upper case stand for values.
            let args: Vec<&str> = words[1..]
                .iter()
                .map(|w| if w.ends_with("...") { "x" } else { w.as_str() })
                .filter(|w| !w.contains('|') && !w.starts_with('['))
                .collect();
            if args.len() + 1 != words.len() {
                continue; // a grammar summary, not a command
            }
            if let Err(e) = parse(&args) {
                panic!("`{}` does not parse: {e}", words.join(" "));
            }
        }
        for verb in [
            "checkpoint create",
            "restore",
            "--from",
            "url",
            "services create",
            "task hold",
            "proxy",
        ] {
            assert!(page.contains(verb), "the page mentions {verb}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("20g"), Ok(20 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "G", "12X", "-1G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exec_takes_everything_after_dashes_verbatim() {
        let cli = parse(&[
            "x", "-s", "dev", "--env", "A=1", "--", "ls", "-la", "--json",
        ])
        .expect("valid");
        assert_eq!(cli.global.sprite.as_deref(), Some("dev"));
        assert!(!cli.global.json);
        let Command::Exec(e) = cli.command else {
            panic!("expected exec");
        };
        assert_eq!(e.cmd, ["ls", "-la", "--json"]);
        assert_eq!(e.env, ["A=1"]);
    }

    #[test]
    fn global_flags_go_before_or_after_the_verb() {
        let a = parse(&["--json", "--bothy", "b", "sessions"]).expect("valid");
        let b = parse(&["sessions", "--json", "--sprite", "b"]).expect("valid");
        assert!(a.global.json && b.global.json);
        assert_eq!(a.global.sprite, b.global.sprite);
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        assert!(parse(&["exec"]).is_err(), "exec without a command");
        assert!(parse(&["use"]).is_err(), "use without a name or --unset");
        assert!(parse(&["use", "a", "--unset"]).is_err());
        assert!(parse(&["exec", "--max-run-after-disconnect", "soon", "--", "x"]).is_err());
    }

    #[test]
    fn defaults_of_admin_verbs() {
        let Command::Daemon(d) = parse(&["daemon"]).expect("valid").command else {
            panic!("expected daemon");
        };
        assert_eq!(d.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(d.data_dir, PathBuf::from("/var/lib/bothy"));
        let Command::Sessions(s) = parse(&["sessions", "kill", "7", "--signal", "INT"])
            .expect("valid")
            .command
        else {
            panic!("expected sessions");
        };
        assert!(matches!(s.action, Some(SessionsAction::Kill(k)) if k.signal == "INT"));
    }
}
