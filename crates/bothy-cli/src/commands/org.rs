//! `bothy org`: the organisation of the current token, and how many of its
//! bothies are running, warm and cold.

use anyhow::Result;

use crate::output::{self, cell};
use crate::Context;

pub async fn run(ctx: &Context) -> Result<i32> {
    let org = ctx.client()?.organization().await?;
    if ctx.json() {
        output::print_json(&org)?;
        return Ok(0);
    }
    if org.name == org.slug {
        println!("{}", cell(&org.slug));
    } else {
        println!("{} ({})", cell(&org.name), cell(&org.slug));
    }
    if let Some(c) = org.sprites {
        println!(
            "{} bothies: {} running, {} warm, {} cold",
            c.total, c.running, c.warm, c.cold
        );
    }
    Ok(0)
}
