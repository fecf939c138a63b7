//! `bothy bench create|exec|unshare`: latency of create, of exec, and of
//! bare namespaces for reference.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_api::CreateSpriteRequest;
use bothy_client::{Client, ExecParams};

use crate::boxes::{bench_prefix, create_box, destroy_all, run_true};
use crate::stats::report;
use crate::Daemon;

pub async fn create(daemon: &Daemon<'_>, runs: usize) -> Result<i32> {
    let client = daemon.client()?;
    let (samples, cleanup) = create_samples(&client, runs).await?;
    report("create", &samples)?;
    cleanup.map(|()| 0)
}

/// Creates `runs` bothies one after another, timing each create, and
/// destroys them all again. The samples stand even if that cleanup fails:
/// its outcome is returned beside them.
pub async fn create_samples(client: &Client, runs: usize) -> Result<(Vec<Duration>, Result<()>)> {
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
