//! `bothy bench checkpoint`: checkpoint create after a small and after a big
//! write, restore until the box runs `true` again, and create of new boxes.

use std::time::{Duration, Instant};

use anyhow::Result;
use bothy_client::{Client, ExecParams};
use serde::Serialize;

use crate::args::BenchCheckpointArgs;
use crate::boxes::{bench_prefix, create_box, destroy_all, run_checked, run_true};
use crate::latency::create_samples;
use crate::stats::{percentile, report, round3};
use crate::Daemon;

/// The small write before every checkpoint of the first series.
const SMALL_MB: usize = 10;
/// A restored box that does not run `true` within this is a failure.
const RESTORE_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Serialize)]
struct RatioLine {
    bench: &'static str,
    small_mb: usize,
    big_mb: usize,
    small_p50_ms: f64,
    big_p50_ms: f64,
    ratio: f64,
}

pub async fn checkpoint(daemon: &Daemon<'_>, args: BenchCheckpointArgs) -> Result<i32> {
    let client = daemon.client()?;
    // New boxes first: destroying the checkpointed box below starts a garbage
    // collection of its chunks, and creates during it measure that instead.
    let (samples, cleanup) = create_samples(&client, args.create_runs, false).await?;
    report("create", &samples)?;
    cleanup?;
    let name = format!("{}-ckpt", bench_prefix());
    create_box(&client, &name).await?;
    let outcome = checkpoint_run(&client, &name, &args).await;
    let cleanup = destroy_all(&client, std::slice::from_ref(&name)).await;
    outcome?;
    cleanup.map(|()| 0)
}

async fn write_mb(client: &Client, name: &str, dir: &str, mb: usize) -> Result<()> {
    let mb = mb.to_string();
    run_checked(
        client,
        name,
        &[
            bothy_api::inbox::EXE,
            "bench",
            "io-worker",
            "seq-write",
            "--dir",
            dir,
            "--size-mb",
            &mb,
        ],
    )
    .await
    .map(drop)
}

/// Writes `mb` MiB of fresh data (untimed), waits for the host to settle
/// (the daemon uploads what was written once the box is quiet; on a `file://`
/// store that is a second write of it to the same disk, which is not the
/// checkpoint's cost), then times one checkpoint.
async fn timed_checkpoints(
    client: &Client,
    name: &str,
    dir: &str,
    mb: usize,
    runs: usize,
) -> Result<(Vec<Duration>, Vec<String>)> {
    let mut samples = Vec::with_capacity(runs);
    let mut ids = Vec::with_capacity(runs);
    for _ in 0..runs {
        write_mb(client, name, dir, mb).await?;
        crate::settle::settle().await?;
        let started = Instant::now();
        let cp = client.create_checkpoint(name, Some("bench")).await?;
        samples.push(started.elapsed());
        ids.push(cp.id);
    }
    Ok((samples, ids))
}

fn p50_ms(samples: &[Duration]) -> Option<f64> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    percentile(&ms, 50.0)
}

async fn checkpoint_run(client: &Client, name: &str, args: &BenchCheckpointArgs) -> Result<()> {
    let small_name = format!("checkpoint-create-{SMALL_MB}mb");
    let (small, ids) =
        timed_checkpoints(client, name, "/root/ckpt-small", SMALL_MB, args.runs).await?;
    report(&small_name, &small)?;

    let big_name = format!("checkpoint-create-{}mb", args.big_mb);
    let (big, _) =
        timed_checkpoints(client, name, "/root/ckpt-big", args.big_mb, args.big_runs).await?;
    report(&big_name, &big)?;
    if let (Some(s), Some(b)) = (p50_ms(&small), p50_ms(&big)) {
        let line = RatioLine {
            bench: "checkpoint-ratio",
            small_mb: SMALL_MB,
            big_mb: args.big_mb,
            small_p50_ms: round3(s),
            big_p50_ms: round3(b),
            ratio: round3(b / s.max(1e-9)),
        };
        println!("{}", serde_json::to_string(&line)?);
    }

    let target = ids
        .first()
        .ok_or_else(|| anyhow::anyhow!("no checkpoint to restore"))?;
    let mut restores = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let started = Instant::now();
        client.restore_checkpoint(name, target).await?;
        wait_for_true(client, name).await?;
        restores.push(started.elapsed());
    }
    report("restore", &restores)?;
    Ok(())
}

/// Runs `true` until it succeeds: restore answers when the box is back, but
/// the first exec is what a user waits for.
async fn wait_for_true(client: &Client, name: &str) -> Result<()> {
    let params = ExecParams::new(vec!["true".into()]);
    let deadline = Instant::now() + RESTORE_DEADLINE;
    loop {
        match run_true(client, name, &params).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "{name} did not run `true` within {RESTORE_DEADLINE:?} of a restore"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_durations() {
        let s = [30, 10, 20].map(Duration::from_millis);
        assert_eq!(p50_ms(&s), Some(20.0));
        assert_eq!(p50_ms(&[]), None);
    }
}
