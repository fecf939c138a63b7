//! The boxes a bench works in: names that clash with nothing, create,
//! destroy, and commands run in them with their output collected.

use std::time::Duration;

use anyhow::Result;
use bothy_api::CreateSpriteRequest;
use bothy_client::{Client, ExecEvent, ExecParams};

/// `bench-<random>`: unlikely to clash with a user's bothy or a parallel bench.
pub fn bench_prefix() -> String {
    format!("bench-{:08x}", rand::random::<u32>())
}

pub async fn create_box(client: &Client, name: &str) -> Result<()> {
    let request = CreateSpriteRequest {
        name: name.to_string(),
        ..Default::default()
    };
    create_box_from(client, &request).await
}

/// A box only the bench puts to sleep: the daemon's idle pass must not
/// freeze it between rounds.
pub fn sleepless(name: &str) -> CreateSpriteRequest {
    CreateSpriteRequest {
        name: name.to_string(),
        lifecycle: Some(bothy_api::Lifecycle {
            idle_timeout: Some("never".into()),
            cold_after: Some("never".into()),
            cpu_activity: None,
        }),
        ..Default::default()
    }
}

/// Creates a [`sleepless`] box and waits until it runs.
pub async fn create_sleepless_box(client: &Client, name: &str) -> Result<()> {
    create_box_from(client, &sleepless(name)).await
}

/// Creates the box `request` describes and waits until it runs.
pub async fn create_box_from(client: &Client, request: &CreateSpriteRequest) -> Result<()> {
    client
        .create_sprite(request)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("creating {}", request.name)))?;
    Ok(())
}

pub async fn destroy_all(client: &Client, names: &[String]) -> Result<()> {
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
pub async fn run_true(client: &Client, name: &str, params: &ExecParams) -> Result<()> {
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
pub async fn run_checked(client: &Client, name: &str, cmd: &[&str]) -> Result<Vec<u8>> {
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
