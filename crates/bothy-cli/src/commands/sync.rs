//! `bothy sync [-s NAME]`: the durability barrier; `bothy drain`.

use anyhow::{Context as _, Result};

use crate::output;
use crate::progress::Spinner;
use crate::Context;

/// With `-s NAME`, that bothy; otherwise every bothy the token sees. A
/// `.bothy` file is not consulted: without `-s` the barrier covers all.
pub async fn run(ctx: &Context) -> Result<i32> {
    let client = ctx.client()?;
    let result = match ctx.global.sprite.as_deref() {
        Some(name) => {
            let spinner = Spinner::start(&format!("syncing {name} to the object store"));
            let r = client.sync_sprite(name).await;
            spinner.stop();
            r.with_context(|| format!("cannot sync {name}"))?
        }
        None => {
            let spinner = Spinner::start("syncing every bothy to the object store");
            let r = client.sync_all().await;
            spinner.stop();
            r.context("cannot sync")?
        }
    };
    if ctx.json() {
        output::print_json(&result)?;
    } else {
        let what = match result.sprites.as_slice() {
            [one] => one.clone(),
            all => format!("{} bothies", all.len()),
        };
        println!(
            "{what} and the state are in the object store ({} ms)",
            result.elapsed_ms
        );
    }
    Ok(0)
}

/// Stops every bothy (admin token).
pub async fn drain(ctx: &Context) -> Result<i32> {
    let spinner = Spinner::start("stopping every bothy");
    let r = ctx.client()?.drain().await;
    spinner.stop();
    let result = r.context("cannot drain")?;
    if ctx.json() {
        output::print_json(&result)?;
    } else {
        println!(
            "stopped {} bothies ({} ms); each wakes again on its next use",
            result.stopped.len(),
            result.elapsed_ms
        );
    }
    Ok(0)
}
