//! `bothy token create|list|revoke`: mint, list and revoke API tokens.

use anyhow::{Context as _, Result};
use bothy_api::{CreateTokenRequest, TokenInfo, TokenLimits};

use crate::cli::{TokenCreateArgs, TokenListArgs, TokenRevokeArgs};
use crate::output::{self, cell};
use crate::Context;

pub async fn create(ctx: &Context, args: TokenCreateArgs) -> Result<i32> {
    let request = CreateTokenRequest {
        description: args.description,
        invite_code: None,
        expires_in: args
            .expires_in
            .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        expires_at: args.expires_at,
        mcp: args.max.filter(|_| args.mcp).map(|max| TokenLimits {
            max_sprites: max,
            prefix: args.prefix.clone(),
            read_only: args.read_only,
        }),
    };
    let client = ctx.client()?;
    let org = match args.org {
        Some(o) => o,
        None => {
            client
                .organization()
                .await
                .context("cannot tell the current token's organization; give --org")?
                .slug
        }
    };
    let created = client.create_token(&org, &request).await?;
    if ctx.json() {
        output::print_json(&created)?;
    } else {
        // Only the token on stdout, so `export BOTHY_TOKEN=$(bothy token create ...)` works.
        println!("{}", created.token);
        let expiry = match &created.expires_at {
            Some(at) => format!("expires at {at}"),
            None => "never expires".into(),
        };
        let limits = match &created.mcp {
            Some(l) => format!(
                ", limited to at most {} sprites named {}…{}",
                l.max_sprites,
                l.prefix,
                if l.read_only { ", read-only" } else { "" }
            ),
            None => String::new(),
        };
        eprintln!(
            "token {} for organization {}{limits} {expiry}; it is shown only this once",
            created.id, created.organization
        );
    }
    Ok(0)
}

fn expiry_cell(t: &TokenInfo) -> String {
    match (&t.expires_at, t.expired) {
        (None, _) => "never".into(),
        (Some(at), true) => format!("expired {}", cell(at)),
        (Some(at), false) => cell(at),
    }
}

pub async fn list(ctx: &Context, args: TokenListArgs) -> Result<i32> {
    let tokens = ctx.client()?.list_tokens(args.org.as_deref()).await?;
    if ctx.json() {
        output::print_json(&tokens)?;
        return Ok(0);
    }
    if tokens.is_empty() {
        eprintln!("no tokens here: `bothy token create --org ORG` makes one");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                cell(&t.id),
                cell(&t.organization),
                if t.is_admin { "admin" } else { "" }.to_string(),
                cell(&t.created_at),
                expiry_cell(t),
                cell(t.description.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &["ID", "ORG", "KIND", "CREATED", "EXPIRES", "DESCRIPTION"],
            &rows
        )
    );
    Ok(0)
}

pub async fn revoke(ctx: &Context, args: TokenRevokeArgs) -> Result<i32> {
    // A token pasted instead of its id would end up in a URL and the
    // daemon's request log: refuse it here.
    if args.id.starts_with(bothy_api::TOKEN_PREFIX) {
        anyhow::bail!("that is a token itself, not its id; `bothy token list` shows ids (tok_...)");
    }
    ctx.client()?
        .revoke_token(&args.id)
        .await
        .with_context(|| format!("cannot revoke {}", cell(&args.id)))?;
    if ctx.json() {
        output::print_json(&serde_json::json!({"revoked": args.id}))?;
    } else {
        println!("token {} revoked", cell(&args.id));
    }
    Ok(0)
}
