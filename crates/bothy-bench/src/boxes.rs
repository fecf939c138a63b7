//! `bothy bench`: latency (create, exec, unshare), storage (box disk beside
//! ext4 on a plain loop device and JuiceFS), checkpoints. Every bench prints
//! JSON lines on stdout; progress and warnings go to stderr.

mod checkpoint;
mod latency;
mod reference;
mod settle;
mod storage;
mod workload;

use std::time::Duration;

use anyhow::Result;
use bothy_api::CreateSpriteRequest;
use bothy_client::{Client, ExecEvent, ExecParams};

use crate::stats::BenchReport;

pub use checkpoint::checkpoint;
pub use latency::{create, exec, unshare};
pub use storage::storage;
pub use workload::{io_worker, WorkerArgs};

fn report(bench: &str, samples: &[Duration]) -> Result<()> {
    let report = BenchReport::from_samples(bench, samples)
        .ok_or_else(|| anyhow::anyhow!("no {bench} run finished"))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `bench-<random>`: unlikely to clash with a user's bothy or a parallel bench.
fn bench_prefix() -> String {
    format!("bench-{:08x}", rand::random::<u32>())
}

async fn create_box(client: &Client, name: &str) -> Result<()> {
    let request = CreateSpriteRequest {
        name: name.to_string(),
        ..Default::default()
    };
    client
        .create_sprite(&request)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("creating {name}")))?;
    Ok(())
}

async fn destroy_all(client: &Client, names: &[String]) -> Result<()> {
    let mut first_error = None;
    for name in names {
        if let Err(e) = client.destroy_sprite(name).await {
            eprintln!("warning: could not destroy {name}: {e}");
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(anyhow::Error::new(e).context(
            "cleaning up bench bothies (`bothy list --prefix bench-` shows what is left)",
        )),
        None => Ok(()),
    }
}

/// Connects, runs `true`, returns at its exit frame.
async fn run_true(client: &Client, name: &str, params: &ExecParams) -> Result<()> {
    let out = run_captured(client, name, params).await?;
    anyhow::ensure!(out.code == 0, "`true` exited {} in {name}", out.code);
    Ok(())
}

struct Captured {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `params.cmd` in box `name` with empty stdin and collects its output.
async fn run_captured(client: &Client, name: &str, params: &ExecParams) -> Result<Captured> {
    let conn = client.exec(name, params).await?;
    let (mut tx, mut rx) = conn.split();
    tx.send_stdin_eof().await?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let code = loop {
        match rx.next_event().await? {
            Some(ExecEvent::Exit(code)) => break code,
            Some(ExecEvent::Stdout(b)) => stdout.extend_from_slice(&b),
            Some(ExecEvent::Stderr(b)) => stderr.extend_from_slice(&b),
            Some(_) => continue,
            None => anyhow::bail!(
                "the connection closed before `{}` exited in {name}",
                params.cmd.join(" ")
            ),
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
    Ok(Captured {
        code,
        stdout,
        stderr,
    })
}

/// Runs a command in a box and fails with its stderr unless it exits 0.
async fn run_checked(client: &Client, name: &str, cmd: &[&str]) -> Result<Vec<u8>> {
    let params = ExecParams::new(cmd.iter().map(|s| s.to_string()).collect());
    let out = run_captured(client, name, &params).await?;
    anyhow::ensure!(
        out.code == 0,
        "`{}` exited {} in {name}: {}",
        cmd.join(" "),
        out.code,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::{BenchCommand, BenchTarget, BenchWorkload, Cli, Command};

    fn bench(args: &[&str]) -> BenchCommand {
        let cli = Cli::try_parse_from(["bothy", "bench"].iter().chain(args)).expect("valid");
        match cli.command {
            Command::Bench(b) => b,
            other => panic!("expected bench, got {other:?}"),
        }
    }

    #[test]
    fn io_worker_parses_and_is_hidden() {
        let BenchCommand::IoWorker(w) = bench(&[
            "io-worker",
            "untar",
            "--dir",
            "/root/bench",
            "--files",
            "10",
        ]) else {
            panic!("expected io-worker");
        };
        assert_eq!(
            (w.workload, w.files, w.size_mb),
            (BenchWorkload::Untar, 10, 1024)
        );
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("bench")
            .expect("bench")
            .render_help()
            .to_string();
        assert!(
            help.contains("storage") && !help.contains("io-worker"),
            "{help}"
        );
    }

    #[test]
    fn storage_and_checkpoint_defaults() {
        let BenchCommand::Storage(s) = bench(&["storage", "--target", "juicefs-loop"]) else {
            panic!("expected storage");
        };
        assert_eq!((s.size_mb, s.files, s.skip_juicefs), (1024, 50_000, false));
        assert_eq!(s.target, [BenchTarget::JuicefsLoop]);
        let BenchCommand::Checkpoint(c) = bench(&["checkpoint"]) else {
            panic!("expected checkpoint");
        };
        assert_eq!(
            (c.runs, c.big_mb, c.big_runs, c.create_runs),
            (20, 2048, 5, 10)
        );
        assert!(Cli::try_parse_from(["bothy", "bench", "storage", "--size-mb", "0"]).is_err());
    }
}
