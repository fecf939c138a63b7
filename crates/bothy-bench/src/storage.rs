//! `bothy bench storage`: the same io-worker workloads in a box's disk and,
//! in the same run, on reference file systems on this host; then the
//! daemon's memory per box.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use bothy_client::Client;
use serde::Serialize;

use crate::args::{BenchStorageArgs, BenchTarget, BenchWorkload};
use crate::boxes::{bench_prefix, create_box, destroy_all, run_checked};
use crate::procs::{find_daemon_pid, rss_mib};
use crate::reference::{self, JuiceFs, LoopExt4};
use crate::stats::round1;
use crate::workload::WorkloadResult;
use crate::Daemon;

/// Where the worker runs inside a box (the box's root disk).
const BOX_DIR: &str = "/root/bench";
/// Extra idle boxes for the memory estimate.
const IDLE_BOXES: usize = 4;

const WORKLOADS: [BenchWorkload; 4] = [
    BenchWorkload::SeqWrite,
    BenchWorkload::SeqRead,
    BenchWorkload::RandWrite,
    BenchWorkload::Untar,
];

#[derive(Serialize)]
struct StorageLine<'a> {
    bench: &'static str,
    target: &'a str,
    #[serde(flatten)]
    result: &'a WorkloadResult,
}

#[derive(Serialize)]
struct MemoryLine {
    bench: &'static str,
    target: &'static str,
    workload: &'static str,
    daemon_pid: i32,
    rss_before_mib: f64,
    rss_with_box_mib: f64,
    rss_with_idle_boxes_mib: f64,
    idle_boxes: usize,
    rss_per_idle_volume_mib: f64,
    rss_after_workloads_mib: f64,
}

pub async fn storage(daemon: &Daemon<'_>, args: BenchStorageArgs) -> Result<i32> {
    let targets = selected_targets(&args);
    let scratch = scratch_parent(&args, &daemon.data_dir);
    let mut failures = Vec::new();
    for target in targets {
        let outcome = match target {
            BenchTarget::Bothy => bothy_target(daemon, &args).await,
            BenchTarget::LoopExt4 => loop_ext4_target(&scratch, &args).await,
            BenchTarget::Juicefs => juicefs_target(&scratch, &args, false).await,
            BenchTarget::JuicefsLoop => juicefs_target(&scratch, &args, true).await,
        };
        if let Err(e) = outcome {
            eprintln!("error: {} target: {e:#}", target.name());
            failures.push(target.name());
        }
    }
    if failures.is_empty() {
        Ok(0)
    } else {
        anyhow::bail!("these targets failed: {}", failures.join(", "))
    }
}

fn selected_targets(args: &BenchStorageArgs) -> Vec<BenchTarget> {
    let all = [
        BenchTarget::Bothy,
        BenchTarget::LoopExt4,
        BenchTarget::Juicefs,
        BenchTarget::JuicefsLoop,
    ];
    let juicefs = [BenchTarget::Juicefs, BenchTarget::JuicefsLoop];
    all.into_iter()
        .filter(|t| args.target.is_empty() || args.target.contains(t))
        .filter(|t| !(args.skip_juicefs && juicefs.contains(t)))
        .collect()
}

fn worker_args(workload: BenchWorkload, dir: &str, args: &BenchStorageArgs) -> Vec<String> {
    vec![
        "bench".into(),
        "io-worker".into(),
        workload.name().into(),
        "--dir".into(),
        dir.into(),
        "--size-mb".into(),
        args.size_mb.to_string(),
        "--files".into(),
        args.files.to_string(),
    ]
}

fn print_line(target: &str, result: &WorkloadResult) -> Result<()> {
    let line = StorageLine {
        bench: "storage",
        target,
        result,
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

fn parse_worker_output(stdout: &[u8]) -> Result<WorkloadResult> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("the io-worker printed nothing"))?;
    serde_json::from_str(line).with_context(|| format!("bad io-worker line {line:?}"))
}

/// The page cache holds what was just written; every target reads it back
/// from its storage, not from memory. Background work of the last workload
/// (uploads, writeback) finishes first.
async fn before_workload(workload: BenchWorkload) -> Result<()> {
    crate::settle::settle().await?;
    if workload == BenchWorkload::SeqRead {
        reference::drop_caches()?;
    }
    Ok(())
}

/// Runs the worker (this binary) on the host in `dir`.
async fn host_workloads(target: &str, dir: &Path, args: &BenchStorageArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the bothy binary")?;
    let dir = dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", dir.display()))?;
    for workload in WORKLOADS {
        before_workload(workload).await?;
        let out = tokio::process::Command::new(&exe)
            .args(worker_args(workload, dir, args))
            .output()
            .await
            .context("cannot run the io-worker")?;
        anyhow::ensure!(
            out.status.success(),
            "io-worker {} on {target} failed ({}): {}",
            workload.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        print_line(target, &parse_worker_output(&out.stdout)?)?;
    }
    Ok(())
}

/// Where reference file systems are made: beside the daemon's data dir, so
/// on the same file system as the box disks' chunk cache.
fn scratch_parent(args: &BenchStorageArgs, data_dir: &Path) -> PathBuf {
    if let Some(dir) = &args.scratch_dir {
        return dir.clone();
    }
    data_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// Room for every workload with ext4's own overhead; sparse, so free.
fn loop_size(args: &BenchStorageArgs) -> u64 {
    (args.size_mb as u64 + 4096) << 20
}

async fn loop_ext4_target(scratch: &Path, args: &BenchStorageArgs) -> Result<()> {
    let fs = LoopExt4::setup(scratch, loop_size(args))?;
    host_workloads("loop-ext4", &fs.dir()?, args).await
}

/// JuiceFS itself, or (`with_loop`) ext4 on a loop device over a file in it.
async fn juicefs_target(scratch: &Path, args: &BenchStorageArgs, with_loop: bool) -> Result<()> {
    let bin = match reference::juicefs_binary() {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("skipping juicefs: {e:#} (--skip-juicefs silences this)");
            return Ok(());
        }
    };
    let fs = JuiceFs::setup(scratch, bin)?;
    if !with_loop {
        return host_workloads("juicefs", &fs.dir()?, args).await;
    }
    let inner = fs.dir()?;
    std::fs::create_dir_all(&inner)
        .with_context(|| format!("cannot create {}", inner.display()))?;
    // Declared after `fs`, so dropped first: ext4 and the loop device go
    // before JuiceFS is unmounted.
    let disk = LoopExt4::setup(&inner, loop_size(args))?;
    host_workloads("juicefs-loop", &disk.dir()?, args).await
}

async fn bothy_target(daemon: &Daemon<'_>, args: &BenchStorageArgs) -> Result<()> {
    let client = daemon.client()?;
    let daemon = match args.daemon_pid {
        Some(pid) => Some(pid),
        None => client
            .base_url()
            .port_or_known_default()
            .and_then(find_daemon_pid),
    };
    if daemon.is_none() {
        eprintln!(
            "warning: no local daemon process found for {} (pass --daemon-pid): no memory line",
            client.base_url()
        );
    }
    let prefix = bench_prefix();
    let name = format!("{prefix}-storage");
    let mut boxes = Vec::new();
    let outcome = bothy_run(&client, args, daemon, &prefix, &name, &mut boxes).await;
    let cleanup = destroy_all(&client, &boxes).await;
    outcome?;
    cleanup
}

async fn bothy_run(
    client: &Client,
    args: &BenchStorageArgs,
    daemon: Option<i32>,
    prefix: &str,
    name: &str,
    boxes: &mut Vec<String>,
) -> Result<()> {
    let rss_before = daemon.map(rss_mib).transpose()?;
    create_box(client, name).await?;
    boxes.push(name.to_string());
    run_checked(client, name, &["true"]).await?;
    let rss_with_box = daemon.map(rss_mib).transpose()?;

    let mut idle = Vec::new();
    for i in 0..IDLE_BOXES.saturating_sub(1) {
        let idle_name = format!("{prefix}-idle-{i}");
        create_box(client, &idle_name).await?;
        boxes.push(idle_name.clone());
        run_checked(client, &idle_name, &["true"]).await?;
        idle.push(idle_name);
    }
    let rss_with_idle = daemon.map(rss_mib).transpose()?;
    // The idle boxes only served the memory estimate.
    destroy_all(client, &idle).await?;
    boxes.retain(|b| !idle.contains(b));

    for workload in WORKLOADS {
        before_workload(workload).await?;
        let mut cmd = vec![bothy_api::inbox::EXE.to_string()];
        cmd.extend(worker_args(workload, BOX_DIR, args));
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let stdout = run_checked(client, name, &cmd).await?;
        print_line("bothy", &parse_worker_output(&stdout)?)?;
    }

    if let (Some(pid), Some(before), Some(with_box), Some(with_idle)) =
        (daemon, rss_before, rss_with_box, rss_with_idle)
    {
        let line = MemoryLine {
            bench: "storage",
            target: "bothy",
            workload: "memory",
            daemon_pid: pid,
            rss_before_mib: round1(before),
            rss_with_box_mib: round1(with_box),
            rss_with_idle_boxes_mib: round1(with_idle),
            idle_boxes: IDLE_BOXES,
            rss_per_idle_volume_mib: round1((with_idle - before) / IDLE_BOXES as f64),
            rss_after_workloads_mib: round1(rss_mib(pid)?),
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_parse_with_the_last_line_winning() {
        let r = parse_worker_output(
            b"noise\n{\"workload\":\"untar\",\"files_per_s\":5.0,\"seconds\":2.0}\n\n",
        )
        .expect("parses");
        assert_eq!(r.files_per_s, Some(5.0));
        let line = serde_json::to_value(StorageLine {
            bench: "storage",
            target: "loop-ext4",
            result: &r,
        })
        .expect("json");
        assert_eq!(line["target"], "loop-ext4");
        assert_eq!(line["files_per_s"], 5.0);
        assert!(line.get("mb_per_s").is_none());
    }

    #[test]
    fn loop_ext4_runs_the_worker_and_cleans_up() {
        let parent = tempfile::tempdir().expect("temp dir");
        let fs = LoopExt4::setup(parent.path(), 256 << 20).expect("loop-ext4 (needs root)");
        let dir = fs.dir().expect("mounted");
        let args = crate::workload::WorkerArgs {
            dir: &dir,
            size_mb: 4,
            files: 100,
        };
        std::fs::create_dir_all(&dir).expect("bench dir");
        crate::workload::run(BenchWorkload::SeqWrite, &args).expect("seq-write");
        crate::workload::run(BenchWorkload::SeqRead, &args).expect("seq-read");
        crate::workload::run(BenchWorkload::Untar, &args).expect("untar");
        drop(fs);
        let left = std::fs::read_dir(parent.path()).expect("readable").count();
        assert_eq!(left, 0, "the scratch directory is gone");
        let loops = std::process::Command::new("losetup")
            .arg("-a")
            .output()
            .expect("losetup");
        let listing = String::from_utf8_lossy(&loops.stdout);
        assert!(
            !listing.contains(&parent.path().display().to_string()),
            "{listing}"
        );
    }
}
