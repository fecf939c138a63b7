//! `bothy list`: the bothies of the organisation.

use anyhow::Result;

use crate::cli::ListArgs;
use crate::output::{self, cell};
use crate::Context;

pub async fn run(ctx: &Context, args: ListArgs) -> Result<i32> {
    let sprites = ctx.client()?.list_all(args.prefix.as_deref()).await?;
    if ctx.json() {
        output::print_json(&sprites)?;
        return Ok(0);
    }
    if sprites.is_empty() {
        eprintln!("no bothies yet: `bothy create NAME` makes one");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = sprites
        .iter()
        .map(|s| {
            vec![
                cell(&s.name),
                cell(&s.status),
                cell(&s.created_at),
                cell(&s.labels.join(",")),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["NAME", "STATUS", "CREATED", "LABELS"], &rows)
    );
    Ok(0)
}
