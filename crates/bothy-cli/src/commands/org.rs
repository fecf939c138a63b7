//! `bothy org`: the organisation of the current token.

use anyhow::Result;

use crate::output::{self, cell};
use crate::Context;

pub async fn run(ctx: &Context) -> Result<i32> {
    let org = ctx.client()?.organization().await?;
    if ctx.json() {
        output::print_json(&org)?;
    } else if org.name == org.slug {
        println!("{}", cell(&org.slug));
    } else {
        println!("{} ({})", cell(&org.name), cell(&org.slug));
    }
    Ok(0)
}
