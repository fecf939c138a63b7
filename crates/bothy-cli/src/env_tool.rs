//! `bothy-env`, run inside a bothy: the bothy acting on itself through the
//! control socket its daemon gives it ([`bothy_api::inbox::ENV_SOCKET`]).
//! The bothy binary is mounted in every box as [`bothy_api::inbox::ENV_TOOL`]
//! and picks this grammar when called by that name.

use std::ffi::OsString;

use anyhow::{anyhow, bail, Result};
use bothy_client::{ClientError, InBoxClient};
use clap::{Args, Parser, Subcommand};

/// The bothy you are in, acting on itself
#[derive(Debug, Parser)]
#[command(name = bothy_api::inbox::ENV_TOOL_NAME, version)]
struct EnvCli {
    /// Print JSON instead of sentences and tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: EnvCommand,
}

#[derive(Debug, Subcommand)]
enum EnvCommand {
    /// Checkpoints of this bothy's disk
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Services this bothy's init keeps running
    #[command(subcommand)]
    Services(crate::cli::ServicesCommand),
    /// Holds that keep this bothy awake; `tasks hold --ttl 10m -- CMD...`
    /// holds while CMD runs
    #[command(subcommand)]
    Tasks(crate::cli::TaskCommand),
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// Checkpoint this bothy now (it keeps running)
    Create(CreateArgs),
    /// List this bothy's checkpoints
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Bring this bothy's disk back to a checkpoint: the bothy restarts, which
    /// ends this command and every other process in it
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[arg(long)]
    comment: Option<String>,
    /// Return only once the checkpoint is in the object store
    #[arg(long)]
    durable: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Also list automatic checkpoints (made before each restore)
    #[arg(long)]
    include_auto: bool,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// Checkpoint id: v1, v2, ...
    id: String,
}

/// Entry point when the binary runs as `bothy-env`; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = EnvCli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bothy-env: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli, &InBoxClient::this_box())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bothy-env: {e:#}");
            1
        }
    }
}

async fn run(cli: EnvCli, client: &InBoxClient) -> Result<i32> {
    let cmd = match cli.command {
        EnvCommand::Checkpoints(cmd) => cmd,
        EnvCommand::Services(cmd) => {
            return crate::commands::services::services(client, cmd, cli.json).await
        }
        EnvCommand::Tasks(cmd) => {
            return crate::commands::services::tasks(client, cmd, cli.json).await
        }
    };
    match cmd {
        CheckpointsCommand::Create(a) => {
            let id = client
                .create_checkpoint(a.comment.as_deref(), a.durable)
                .await
                .map_err(in_words)?;
            if cli.json {
                println!("{}", serde_json::json!({ "id": id }));
            } else {
                println!("checkpoint {id} created");
            }
        }
        CheckpointsCommand::List(a) => {
            let list = client
                .list_checkpoints(a.include_auto)
                .await
                .map_err(in_words)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                eprintln!("no checkpoints yet: `bothy-env checkpoints create` makes one");
            } else {
                for c in &list {
                    let kind = if c.is_automatic() { " (auto)" } else { "" };
                    let comment = c.comment.as_deref().unwrap_or("");
                    println!("{}\t{}{kind}\t{comment}", c.id, c.create_time);
                }
            }
        }
        CheckpointsCommand::Restore(a) => {
            if bothy_api::parse_checkpoint_id(&a.id).is_none() {
                bail!(
                    "{:?} is not a checkpoint id: they look like v1, v2, ...",
                    a.id
                );
            }
            // Said first: if the restore goes ahead, this process does not
            // live to print anything after it.
            eprintln!(
                "restoring this bothy to {}: it restarts now, ending this session",
                a.id
            );
            match client.restore_checkpoint(&a.id).await {
                Ok(kept) => {
                    println!("restored to {}; the state before is kept as {kept}", a.id);
                }
                // The box went down under us: that is the restore happening.
                Err(ClientError::Disconnected(_)) => {}
                Err(e) => return Err(in_words(e)),
            }
        }
    }
    Ok(0)
}

/// The daemon's own explanation of a refusal, with its HTTP status, as
/// bothy-env has always shown it; every other error as the client words it.
fn in_words(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Api {
            status,
            code,
            message,
        } if code != format!("http_{status}") => anyhow!("{message} (HTTP {status})"),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::body::{Body, Bytes};
    use axum::routing::post;
    use axum::Router;
    use futures_util::stream::{self, StreamExt};

    use super::*;

    /// A control socket that starts every progress stream and breaks off, as
    /// the daemon's side does when the box stops under a restore.
    fn breaking_box(dir: &std::path::Path) -> PathBuf {
        let socket = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the socket");
        let cut_short = || async {
            let started = stream::iter([Ok(Bytes::from_static(b"{\"type\":\"info\"}\n"))]);
            Body::from_stream(started.chain(stream::iter([Err(std::io::Error::other("gone"))])))
        };
        let router = Router::new()
            .route("/checkpoint", post(cut_short))
            .route("/checkpoints/{id}/restore", post(cut_short));
        tokio::spawn(async move { axum::serve(listener, router).await });
        socket
    }

    async fn run_args(socket: PathBuf, args: &[&str]) -> Result<i32> {
        let cli = EnvCli::parse_from(std::iter::once("bothy-env").chain(args.iter().copied()));
        run(cli, &InBoxClient::new(socket)).await
    }

    #[tokio::test]
    async fn a_restore_cut_short_by_the_box_stopping_succeeds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = breaking_box(dir.path());
        let code = run_args(socket, &["checkpoints", "restore", "v1"])
            .await
            .expect("the broken connection is the restore happening");
        assert_eq!(code, 0);
    }

    #[tokio::test]
    async fn a_checkpoint_cut_short_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = breaking_box(dir.path());
        let e = run_args(socket, &["checkpoints", "create"])
            .await
            .expect_err("a checkpoint does not stop the box");
        assert!(e.to_string().contains("closed the connection"), "{e}");
    }

    #[test]
    fn refusals_show_the_daemons_message_and_status() {
        let refused = ClientError::Api {
            status: 404,
            code: "not_found".into(),
            message: "no checkpoint v9".into(),
        };
        assert_eq!(in_words(refused).to_string(), "no checkpoint v9 (HTTP 404)");
        // Not the API's error JSON: the client's words already name the status.
        let foreign = ClientError::Api {
            status: 502,
            code: "http_502".into(),
            message: "the daemon answered HTTP 502: bad gateway".into(),
        };
        assert_eq!(
            in_words(foreign).to_string(),
            "the daemon answered HTTP 502: bad gateway"
        );
    }
}
