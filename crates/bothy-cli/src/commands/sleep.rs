//! `bothy sleep [-s NAME] [--cold]` and `bothy update NAME --idle-timeout ...`.

use anyhow::{bail, Context as _, Result};

use crate::cli::{SleepArgs, UpdateArgs};
use crate::output;
use crate::progress::Spinner;
use crate::Context;

pub async fn sleep(ctx: &Context, args: &SleepArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let spinner = Spinner::start(&format!(
        "putting {name} to {} sleep",
        if args.cold { "cold" } else { "warm" }
    ));
    let r = ctx.client()?.sleep_sprite(&name, args.cold).await;
    spinner.stop();
    let answer = r.with_context(|| format!("cannot put {name} to sleep"))?;
    if ctx.json() {
        output::print_json(&answer)?;
    } else {
        let status = answer["status"].as_str().unwrap_or("asleep");
        println!("{name} is {status}; the next exec or API call wakes it");
    }
    Ok(0)
}

pub async fn update(ctx: &Context, args: &UpdateArgs) -> Result<i32> {
    let Some(lifecycle) = args.lifecycle.to_api() else {
        bail!("nothing to change: give --idle-timeout, --cold-after or --[no-]cpu-activity");
    };
    let req = bothy_api::UpdateSpriteRequest {
        lifecycle: Some(lifecycle),
        ..Default::default()
    };
    let sprite = ctx
        .client()?
        .update_sprite(&args.name, &req)
        .await
        .with_context(|| format!("cannot update {}", args.name))?;
    if ctx.json() {
        output::print_json(&sprite)?;
    } else if let Some(l) = &sprite.lifecycle {
        println!(
            "{}: idle timeout {}, cold after {}, CPU activity {}",
            sprite.name,
            l.idle_timeout.as_deref().unwrap_or("?"),
            l.cold_after.as_deref().unwrap_or("?"),
            if l.cpu_activity.unwrap_or(true) {
                "counts"
            } else {
                "ignored"
            }
        );
    }
    Ok(0)
}
