//! `bothy create NAME`: create a bothy, then open a console in it.

use anyhow::{Context as _, Result};
use bothy_api::names::validate_sprite_name;
use bothy_api::{CreateSpriteRequest, SpriteConfig};

use crate::cli::CreateArgs;
use crate::{output, terminal, Context};

pub async fn run(ctx: &Context, args: CreateArgs) -> Result<i32> {
    // Checked here too so a typo gets its answer without a round trip.
    validate_sprite_name(&args.name).map_err(|e| anyhow::anyhow!("invalid bothy name: {e}"))?;
    let client = ctx.client()?;
    let config = (args.ram_mb.is_some() || args.cpus.is_some() || args.storage_gb.is_some())
        .then_some(SpriteConfig {
            ram_mb: args.ram_mb,
            cpus: args.cpus,
            storage_gb: args.storage_gb,
            region: None,
        });
    let request = CreateSpriteRequest {
        name: args.name.clone(),
        config,
        labels: (!args.labels.is_empty()).then(|| args.labels.clone()),
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
