//! `bothy url [-s NAME]` and `bothy url update -s NAME --auth public|sprite`.

use anyhow::{Context as _, Result};

use crate::cli::{UrlArgs, UrlCommand};
use crate::output;
use crate::Context;

pub async fn run(ctx: &Context, args: UrlArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let client = ctx.client()?;
    let sprite = match args.command {
        None => client
            .get_sprite(&name)
            .await
            .with_context(|| format!("cannot read {name}"))?,
        Some(UrlCommand::Update(u)) => {
            let req = bothy_api::UpdateSpriteRequest {
                url_settings: Some(bothy_api::UrlSettings {
                    auth: Some(u.auth),
                    private_access: None,
                }),
                ..Default::default()
            };
            client
                .update_sprite(&name, &req)
                .await
                .with_context(|| format!("cannot change {name}'s URL settings"))?
        }
    };
    let auth = sprite.url_settings.auth.as_deref().unwrap_or("sprite");
    if ctx.json() {
        output::print_json(&serde_json::json!({
            "name": sprite.name,
            "url": sprite.url,
            "auth": auth,
        }))?;
        return Ok(0);
    }
    let url = sprite
        .url
        .as_deref()
        .unwrap_or("(this server gives no URL)");
    println!("{url}");
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        let who = if auth == "public" {
            "public: anyone can open it"
        } else {
            "private: needs a token of its organization (`Authorization: Bearer`), or a login in the browser"
        };
        eprintln!("{who}");
    }
    Ok(0)
}
