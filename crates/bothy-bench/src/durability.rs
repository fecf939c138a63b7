//! `bothy bench durability`: the window of the fast path (how long work the
//! API or an fsync acknowledged takes to reach the object store without
//! being asked), and the cost of asking (the barriers).
//!
//! - `durability-checkpoint-window`: a checkpoint is acknowledged → it lists
//!   as `in_object_store`.
//! - `durability-checkpoint-durable`: `checkpoint create --durable`, end to end.
//! - `durability-sync-1mb`: `bothy sync -s` right after 1 MiB written and synced.
//! - `durability-write-window-idle` / `-busy`: 1 MiB written and fsynced in a
//!   box that then goes quiet / that keeps writing and fsyncing every 100 ms
//!   → a block-map snapshot newer than the write is in the object store
//!   (observed in `DATA_DIR/objects`, so only for the default `file://`
//!   store on this host; skipped otherwise).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_api::CreateCheckpointRequest;
use bothy_client::Client;

use crate::args::BenchDurabilityArgs;
use crate::boxes::{bench_prefix, create_box, destroy_all, run_checked};
use crate::stats::report;
use crate::Daemon;

/// Anything slower is a failure, not a measurement.
const WINDOW_DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(10);

pub async fn durability(daemon: &Daemon<'_>, args: BenchDurabilityArgs) -> Result<i32> {
    let client = daemon.client()?;
    let name = format!("{}-dur", bench_prefix());
    create_box(&client, &name).await?;
    let outcome = run(&client, &name, &daemon.data_dir, args.runs).await;
    let cleanup = destroy_all(&client, std::slice::from_ref(&name)).await;
    outcome?;
    cleanup.map(|()| 0)
}

async fn write_1mb(client: &Client, name: &str, n: usize) -> Result<()> {
    let script = format!("head -c 1048576 /dev/urandom > /root/d{n} && sync /root/d{n}");
    run_checked(client, name, &["sh", "-c", &script])
        .await
        .map(drop)
}

async fn run(client: &Client, name: &str, data_dir: &Path, runs: usize) -> Result<()> {
    let mut window = Vec::with_capacity(runs);
    for n in 0..runs {
        write_1mb(client, name, n).await?;
        let started = Instant::now();
        let made = client.create_checkpoint(name, Some("bench")).await?;
        loop {
            if client.get_checkpoint(name, &made.id).await?.in_object_store {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < WINDOW_DEADLINE,
                "{} never reached the object store",
                made.id
            );
            tokio::time::sleep(POLL).await;
        }
        window.push(started.elapsed());
    }
    report("durability-checkpoint-window", &window)?;

    let mut durable = Vec::with_capacity(runs);
    for n in 0..runs {
        write_1mb(client, name, n).await?;
        let started = Instant::now();
        let made = client
            .checkpoint_with(
                name,
                &CreateCheckpointRequest {
                    comment: Some("bench".into()),
                    durable: true,
                },
            )
            .await?;
        durable.push(started.elapsed());
        anyhow::ensure!(made.in_object_store, "a durable checkpoint is in the store");
    }
    report("durability-checkpoint-durable", &durable)?;

    let mut sync = Vec::with_capacity(runs);
    for n in 0..runs {
        write_1mb(client, name, n).await?;
        let started = Instant::now();
        client.sync_sprite(name).await?;
        sync.push(started.elapsed());
    }
    report("durability-sync-1mb", &sync)?;

    let id = client.get_sprite(name).await?.id;
    let heads = data_dir.join("objects/maps").join(&id).join("head");
    if !heads.is_dir() {
        eprintln!(
            "note: no {} (the daemon's object store is not its file:// default): skipping the write windows",
            heads.display()
        );
        return Ok(());
    }
    let mut idle = Vec::with_capacity(runs);
    for n in 0..runs {
        idle.push(write_window(client, name, &heads, n).await?);
    }
    report("durability-write-window-idle", &idle)?;

    // A box that never goes quiet: a writer appends and fsyncs every 100 ms
    // for as long as the box lives.
    let busy_writer = "i=0; while true; do i=$((i+1)); echo $i >> /root/busy.log; \
                       sync /root/busy.log; sleep 0.1; done";
    let params = bothy_client::ExecParams {
        max_run_after_disconnect: Some("0".into()),
        ..bothy_client::ExecParams::new(vec!["sh".into(), "-c".into(), busy_writer.into()])
    };
    let conn = client.exec(name, &params).await?;
    drop(conn);
    let mut busy = Vec::with_capacity(runs);
    for n in 0..runs {
        busy.push(write_window(client, name, &heads, runs + n).await?);
    }
    report("durability-write-window-busy", &busy)?;
    Ok(())
}

/// Writes and fsyncs 1 MiB, then waits until a head snapshot shipped after
/// the fsync returned is in the store.
async fn write_window(client: &Client, name: &str, heads: &Path, n: usize) -> Result<Duration> {
    write_1mb(client, name, n).await?;
    let before = newest(heads)?;
    let started = Instant::now();
    loop {
        if newest(heads)? > before {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < WINDOW_DEADLINE,
            "no block-map snapshot reached {} after a write",
            heads.display()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The newest head snapshot's sequence number in a `maps/<id>/head` dir.
fn newest(heads: &Path) -> Result<u64> {
    let entries =
        std::fs::read_dir(heads).with_context(|| format!("reading {}", heads.display()))?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            PathBuf::from(e.file_name())
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0))
}
