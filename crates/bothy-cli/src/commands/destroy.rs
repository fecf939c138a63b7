//! `bothy destroy NAME`: destroy a bothy and its disk, after confirmation.

use std::io::{BufRead, Write};

use anyhow::{Context as _, Result};

use crate::cli::DestroyArgs;
use crate::{terminal, Context};

pub async fn run(ctx: &Context, args: DestroyArgs) -> Result<i32> {
    // Never fall back to .bothy here: destroying must name its target.
    let name = match (args.name, &ctx.global.sprite) {
        (Some(n), _) => n,
        (None, Some(n)) => n.clone(),
        (None, None) => anyhow::bail!("say which bothy to destroy: bothy destroy NAME --force"),
    };
    if !args.force && !confirmed(&name)? {
        return Ok(1);
    }
    ctx.client()?.destroy_sprite(&name).await?;
    if ctx.json() {
        crate::output::print_json(&serde_json::json!({"destroyed": name}))?;
    } else {
        println!("destroyed bothy {name}");
    }
    Ok(0)
}

/// Asks the user to type the name; refuses outright when nobody can answer.
fn confirmed(name: &str) -> Result<bool> {
    if !terminal::stdin_is_terminal() {
        anyhow::bail!(
            "refusing to destroy {name} without confirmation: add --force \
             (this deletes its disk and cannot be undone)"
        );
    }
    eprint!("This deletes {name} and its disk for good. Type its name to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    if answer.trim() == name {
        Ok(true)
    } else {
        eprintln!("not destroyed: the name did not match (use --force to skip this question)");
        Ok(false)
    }
}
