//! `bothy create NAME`: create a bothy, then open a console in it.

use anyhow::{Context as _, Result};
use bothy_api::names::validate_sprite_name;
use bothy_api::{CheckpointRef, CreateSpriteRequest, SpriteConfig};

use crate::cli::CreateArgs;
use crate::{output, terminal, Context};

pub async fn run(ctx: &Context, args: CreateArgs) -> Result<i32> {
    // Checked here too so a typo gets its answer without a round trip.
    validate_sprite_name(&args.name).map_err(|e| anyhow::anyhow!("invalid bothy name: {e}"))?;
    let client = ctx.client()?;
    let config =
        (args.ram_mb.is_some() || args.cpus.is_some() || args.storage_gb.is_some() || args.nesting)
            .then_some(SpriteConfig {
                ram_mb: args.ram_mb,
                cpus: args.cpus,
                storage_gb: args.storage_gb,
                region: None,
                nesting: args.nesting.then_some(true),
            });
    let from_checkpoint = match &args.from {
        Some(from) => Some(parse_fork_source(from)?),
        None => None,
    };
    let request = CreateSpriteRequest {
        name: args.name.clone(),
        config,
        labels: (!args.labels.is_empty()).then(|| args.labels.clone()),
        from_checkpoint,
        lifecycle: args.lifecycle.to_api(),
        ..Default::default()
    };
    let sprite = client
        .create_sprite(&request)
        .await
        .with_context(|| format!("cannot create bothy {}", args.name))?;
    if ctx.json() {
        output::print_json(&sprite)?;
    } else {
        println!("created bothy {}", sprite.name);
    }
    if args.skip_console || ctx.json() || !terminal::stdin_is_terminal() {
        return Ok(0);
    }
    super::console::open(&client, &sprite.name).await
}

/// `NAME@vN`.
fn parse_fork_source(s: &str) -> Result<CheckpointRef> {
    let (sprite, checkpoint) = s
        .rsplit_once('@')
        .filter(|(_, id)| bothy_api::parse_checkpoint_id(id).is_some())
        .ok_or_else(|| {
            anyhow::anyhow!("--from wants NAME@vN (a bothy and one of its checkpoints), not {s:?}")
        })?;
    validate_sprite_name(sprite).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    Ok(CheckpointRef {
        sprite: sprite.to_string(),
        checkpoint: checkpoint.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_fork_source;

    #[test]
    fn fork_sources() {
        let r = parse_fork_source("dev@v3").expect("valid");
        assert_eq!((r.sprite.as_str(), r.checkpoint.as_str()), ("dev", "v3"));
        for bad in ["dev", "dev@", "@v1", "dev@3", "Dev@v1", "dev@v0"] {
            assert!(parse_fork_source(bad).is_err(), "{bad:?}");
        }
    }
}
