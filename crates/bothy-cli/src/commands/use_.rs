//! `bothy use NAME`: select a bothy for this directory and below.

use anyhow::{Context as _, Result};
use bothy_api::names::validate_sprite_name;

use crate::cli::UseArgs;
use crate::selection::{self, DOT_FILE};
use crate::Context;

pub async fn run(ctx: &Context, args: UseArgs) -> Result<i32> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let Some(name) = args.name else {
        return unset(&cwd);
    };
    validate_sprite_name(&name).map_err(|e| anyhow::anyhow!("invalid bothy name: {e}"))?;
    // Catch typos now rather than at the next exec.
    ctx.client()?.get_sprite(&name).await?;
    let path = selection::write_dot_file(&cwd, &name)
        .with_context(|| format!("cannot write {}", cwd.join(DOT_FILE).display()))?;
    if ctx.json() {
        crate::output::print_json(&serde_json::json!({"name": name, "file": path}))?;
    } else {
        println!("using bothy {name} here and below ({})", path.display());
    }
    Ok(0)
}

fn unset(cwd: &std::path::Path) -> Result<i32> {
    let path = cwd.join(DOT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            eprintln!("removed {}", path.display());
            Ok(0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match selection::find_dot_file(cwd) {
            Some(other) => anyhow::bail!(
                "no {DOT_FILE} in this directory; the selection comes from {}: \
                     run `bothy use --unset` there",
                other.display()
            ),
            None => {
                eprintln!("no bothy was selected here");
                Ok(0)
            }
        },
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
