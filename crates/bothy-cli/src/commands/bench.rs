//! `bothy bench`: latency of create, of exec, and of bare namespaces for
//! reference. Prints one JSON line per bench on stdout.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_api::CreateSpriteRequest;
use bothy_client::{Client, ExecEvent, ExecParams};

use crate::stats::BenchReport;
use crate::Context;

pub async fn create(ctx: &Context, runs: usize) -> Result<i32> {
    let client = ctx.client()?;
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
    let cleanup = destroy_all(&client, &created).await;
    outcome?;
    report("create", &samples)?;
    cleanup.map(|()| 0)
}

pub async fn exec(ctx: &Context, runs: usize) -> Result<i32> {
    let client = ctx.client()?;
    let name = format!("{}-exec", bench_prefix());
    let request = CreateSpriteRequest {
        name: name.clone(),
        ..Default::default()
    };
    client
        .create_sprite(&request)
        .await
        .with_context(|| format!("creating {name}"))?;
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

/// Connects, runs `true`, returns at its exit frame.
async fn run_true(client: &Client, name: &str, params: &ExecParams) -> Result<()> {
    let conn = client.exec(name, params).await?;
    let (mut tx, mut rx) = conn.split();
    tx.send_stdin_eof().await?;
    loop {
        match rx.next_event().await? {
            Some(ExecEvent::Exit(0)) => break,
            Some(ExecEvent::Exit(code)) => anyhow::bail!("`true` exited {code} in {name}"),
            Some(_) => continue,
            None => anyhow::bail!("the connection closed before `true` exited in {name}"),
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
    Ok(())
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
