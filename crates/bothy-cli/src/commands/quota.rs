//! `bothy quota get|set`: an organisation's limits and what it uses.

use anyhow::Result;
use bothy_api::{OrgQuota, QuotaLimits};

use crate::cli::{QuotaGetArgs, QuotaSetArgs};
use crate::output::{self, cell};
use crate::Context;

pub async fn get(ctx: &Context, args: QuotaGetArgs) -> Result<i32> {
    let client = ctx.client()?;
    let org = match args.org {
        Some(org) => org,
        None => client.organization().await?.slug,
    };
    show(ctx, &client.quota(&org).await?)
}

pub async fn set(ctx: &Context, args: QuotaSetArgs) -> Result<i32> {
    let limits = QuotaLimits {
        max_boxes: args.max_boxes,
        max_running_boxes: args.max_running_boxes,
        max_storage_gb: args.max_storage_gb,
        max_checkpoints: args.max_checkpoints,
    };
    let set = ctx.client()?.set_quota(&args.org, &limits).await?;
    show(ctx, &set)
}

fn show(ctx: &Context, q: &OrgQuota) -> Result<i32> {
    if ctx.json() {
        output::print_json(q)?;
        return Ok(0);
    }
    let limit = |l: Option<u64>| l.map_or_else(|| "none".to_string(), |v| v.to_string());
    let rows = vec![
        vec![
            "bothies".into(),
            q.usage.boxes.to_string(),
            limit(q.limits.max_boxes),
        ],
        vec![
            "running".into(),
            q.usage.running_boxes.to_string(),
            limit(q.limits.max_running_boxes),
        ],
        vec![
            "disk GiB".into(),
            q.usage.storage_gb.to_string(),
            limit(q.limits.max_storage_gb),
        ],
        vec![
            "checkpoints".into(),
            q.usage.checkpoints.to_string(),
            limit(q.limits.max_checkpoints),
        ],
    ];
    println!("organization {}", cell(&q.organization));
    print!("{}", output::table(&["", "USED", "LIMIT"], &rows));
    Ok(0)
}
