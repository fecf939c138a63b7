//! `bothy policy get|set`: a bothy's network policy (DNS rules).

use std::io::Read;

use anyhow::{Context as _, Result};
use bothy_api::policy::NetworkPolicy;

use crate::cli::PolicySetArgs;
use crate::output::{self, cell};
use crate::Context;

pub async fn get(ctx: &Context) -> Result<i32> {
    let name = ctx.sprite()?;
    let policy = ctx.client()?.network_policy(&name).await?;
    show(ctx, &policy)
}

pub async fn set(ctx: &Context, args: PolicySetArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let text = if args.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the rules from stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading the rules from {}", args.file))?
    };
    let policy: NetworkPolicy = serde_json::from_str(&text).with_context(|| {
        "the rules are JSON: {\"rules\": [{\"domain\": \"example.com\", \"action\": \"deny\"}]}"
    })?;
    let client = ctx.client()?;
    client.set_network_policy(&name, &policy).await?;
    show(ctx, &client.network_policy(&name).await?)
}

fn show(ctx: &Context, p: &NetworkPolicy) -> Result<i32> {
    if ctx.json() {
        output::print_json(p)?;
        return Ok(0);
    }
    if p.rules.is_empty() {
        println!("no rules: every name resolves");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = p
        .rules
        .iter()
        .map(|r| {
            let what = match (&r.domain, &r.include) {
                (Some(d), _) => cell(d),
                (None, Some(i)) => format!("include {}", cell(i)),
                _ => String::new(),
            };
            vec![what, cell(r.action.as_deref().unwrap_or("allow"))]
        })
        .collect();
    print!("{}", output::table(&["RULE", "ACTION"], &rows));
    Ok(0)
}
