//! `bothy checkpoint create|list|info|delete` and `bothy restore vN`.

use anyhow::{Context as _, Result};
use bothy_api::{Checkpoint, CreateCheckpointRequest};

use crate::cli::{CheckpointCreateArgs, CheckpointIdArgs, CheckpointListArgs, RestoreArgs};
use crate::output::{self, cell};
use crate::progress::Spinner;
use crate::Context;

fn check_id(id: &str) -> Result<()> {
    if bothy_api::parse_checkpoint_id(id).is_none() {
        anyhow::bail!("{id:?} is not a checkpoint id: they look like v1, v2, ... (`bothy checkpoint list` shows them)");
    }
    Ok(())
}

fn print_one(c: &Checkpoint) {
    println!("id:       {}", c.id);
    println!("created:  {}", c.create_time);
    if let Some(comment) = &c.comment {
        println!("comment:  {comment}");
    }
    if c.is_automatic() {
        println!("auto:     yes (made before a restore)");
    }
    let stored = if c.in_object_store {
        "yes"
    } else {
        "not yet (it gets there within seconds; `bothy sync` waits for it)"
    };
    println!("in the object store: {stored}");
    if !c.history.is_empty() {
        println!("history:  {}", c.history.join(" → "));
    }
}

pub async fn create(ctx: &Context, args: CheckpointCreateArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let req = CreateCheckpointRequest {
        comment: args.comment,
        durable: args.durable,
    };
    let spinner = args
        .durable
        .then(|| Spinner::start(&format!("checkpointing {name} into the object store")));
    let made = ctx.client()?.checkpoint_with(&name, &req).await;
    if let Some(s) = spinner {
        s.stop();
    }
    let made = made.with_context(|| format!("cannot checkpoint {name}"))?;
    if ctx.json() {
        output::print_json(&made)?;
    } else if made.in_object_store {
        println!(
            "checkpoint {} of {name} created; it is in the object store",
            made.id
        );
    } else {
        println!("checkpoint {} of {name} created", made.id);
    }
    Ok(0)
}

pub async fn list(ctx: &Context, args: CheckpointListArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let mut all = ctx
        .client()?
        .list_checkpoints(&name, args.include_auto)
        .await?;
    if let Some(h) = &args.history {
        all.retain(|c| c.history.contains(h));
    }
    if ctx.json() {
        output::print_json(&all)?;
        return Ok(0);
    }
    if all.is_empty() {
        eprintln!("{name} has no checkpoints yet: `bothy checkpoint create -s {name}` makes one");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|c| {
            vec![
                cell(&c.id),
                cell(&c.create_time),
                cell(if c.is_automatic() { "auto" } else { "" }),
                cell(c.comment.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["ID", "CREATED", "KIND", "COMMENT"], &rows)
    );
    Ok(0)
}

pub async fn info(ctx: &Context, args: CheckpointIdArgs) -> Result<i32> {
    check_id(&args.id)?;
    let name = ctx.sprite()?;
    let c = ctx.client()?.get_checkpoint(&name, &args.id).await?;
    if ctx.json() {
        output::print_json(&c)?;
    } else {
        print_one(&c);
    }
    Ok(0)
}

pub async fn delete(ctx: &Context, args: CheckpointIdArgs) -> Result<i32> {
    check_id(&args.id)?;
    let name = ctx.sprite()?;
    ctx.client()?.delete_checkpoint(&name, &args.id).await?;
    if ctx.json() {
        output::print_json(&serde_json::json!({"deleted": args.id}))?;
    } else {
        println!("checkpoint {} of {name} deleted", args.id);
    }
    Ok(0)
}

pub async fn restore(ctx: &Context, args: RestoreArgs) -> Result<i32> {
    check_id(&args.id)?;
    let name = ctx.sprite()?;
    let progress = crate::progress::StepProgress::new();
    progress.step(1, 1, &format!("restoring {name} to {}", args.id));
    let kept = ctx
        .client()?
        .restore_checkpoint(&name, &args.id)
        .await
        .with_context(|| format!("cannot restore {name} to {}", args.id));
    let kept = match kept {
        Ok(k) => k,
        Err(e) => {
            progress.finish("restore failed");
            return Err(e);
        }
    };
    progress.finish(&format!(
        "{name} restored to {}; the state it replaced is kept as {kept} (`bothy checkpoint list --include-auto`)",
        args.id
    ));
    if ctx.json() {
        output::print_json(&serde_json::json!({"restored": args.id, "kept_as": kept}))?;
    }
    Ok(0)
}
