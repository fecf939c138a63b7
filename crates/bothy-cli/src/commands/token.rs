//! `bothy token create --org ORG`: mint an API token.

use anyhow::Result;
use bothy_api::CreateTokenRequest;

use crate::cli::TokenCreateArgs;
use crate::{output, Context};

pub async fn create(ctx: &Context, args: TokenCreateArgs) -> Result<i32> {
    let request = CreateTokenRequest {
        description: args.description,
        invite_code: None,
    };
    let created = ctx.client()?.create_token(&args.org, &request).await?;
    if ctx.json() {
        output::print_json(&created)?;
    } else {
        // Only the token on stdout, so `export BOTHY_TOKEN=$(bothy token create ...)` works.
        println!("{}", created.token);
    }
    Ok(0)
}
