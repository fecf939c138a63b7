//! `bothy bench create|exec|unshare`: latency of create, of exec, and of
//! bare namespaces for reference.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_api::CreateSpriteRequest;
use bothy_client::{Client, ExecParams};

use crate::boxes::{bench_prefix, create_box, destroy_all, run_true};
use crate::stats::report;
use crate::Daemon;

/// On a daemon with a warm pool (`--warm-pool N`) the line is `create-pool`:
/// each create waits (untimed) for a ready pooled box, so it times a
/// create that takes one, not one that outran the refill.
pub async fn create(daemon: &Daemon<'_>, runs: usize) -> Result<i32> {
    let client = daemon.client()?;
    let pooled = client
        .metric("bothy_warm_pool_size")
        .await?
        .is_some_and(|n| n > 0.0);
    let (samples, cleanup) = create_samples(&client, runs, pooled).await?;
    report(if pooled { "create-pool" } else { "create" }, &samples)?;
    cleanup.map(|()| 0)
}

/// How long a create waits for the pool to have a ready box.
const POOL_WAIT: Duration = Duration::from_secs(120);

async fn wait_for_pooled_box(client: &Client) -> Result<()> {
    let deadline = Instant::now() + POOL_WAIT;
    while client.metric("bothy_warm_pool_ready").await?.unwrap_or(0.0) < 1.0 {
        if Instant::now() > deadline {
            anyhow::bail!("the warm pool had no ready box within {POOL_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Creates `runs` bothies one after another, timing each create, and
/// destroys them all again. The samples stand even if that cleanup fails:
/// its outcome is returned beside them.
pub async fn create_samples(
    client: &Client,
    runs: usize,
    pooled: bool,
) -> Result<(Vec<Duration>, Result<()>)> {
    let prefix = bench_prefix();
    let mut created = Vec::new();
    let mut samples = Vec::with_capacity(runs);
    let mut outcome = Ok(());
    for i in 0..runs {
        let name = format!("{prefix}-{i}");
        let request = CreateSpriteRequest {
            name: name.clone(),
            ..Default::default()
        };
        if pooled {
            if let Err(e) = wait_for_pooled_box(client).await {
                outcome = Err(e);
                break;
            }
        }
        let started = Instant::now();
        match client.create_sprite(&request).await {
            Ok(_) => {
                samples.push(started.elapsed());
                created.push(name);
            }
            Err(e) => {
                outcome = Err(anyhow::Error::new(e).context(format!("creating {name}")));
                break;
            }
        }
    }
    // Clean up whatever happened above; the numbers stand even if cleanup fails.
    let cleanup = destroy_all(client, &created).await;
    outcome?;
    Ok((samples, cleanup))
}

pub async fn exec(daemon: &Daemon<'_>, runs: usize) -> Result<i32> {
    let client = daemon.client()?;
    let name = format!("{}-exec", bench_prefix());
    create_box(&client, &name).await?;
    let outcome = time_execs(&client, &name, runs).await;
    let cleanup = destroy_all(&client, std::slice::from_ref(&name)).await;
    report("exec", &outcome?)?;
    cleanup.map(|()| 0)
}

/// One untimed exec first: the numbers are for a box that is up.
async fn time_execs(client: &Client, name: &str, runs: usize) -> Result<Vec<Duration>> {
    let params = ExecParams::new(vec!["true".into()]);
    run_true(client, name, &params).await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        run_true(client, name, &params).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

pub async fn unshare(runs: usize) -> Result<i32> {
    let args = [
        "--user",
        "--map-root-user",
        "--mount",
        "--pid",
        "--fork",
        "--uts",
        "--ipc",
        "--net",
        "/bin/true",
    ];
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let status = tokio::process::Command::new("unshare")
            .args(args)
            .status()
            .await
            .context("cannot run unshare (util-linux): is it installed?")?;
        samples.push(started.elapsed());
        if !status.success() {
            anyhow::bail!(
                "`unshare {}` failed ({status}): this host may not allow user namespaces",
                args.join(" ")
            );
        }
    }
    report("unshare", &samples)?;
    Ok(0)
}
