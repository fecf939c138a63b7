//! `bothy sessions`: list the exec sessions of a bothy, or kill one.

use anyhow::Result;
use bothy_api::KillSessionRequest;

use crate::cli::{KillArgs, SessionsAction, SessionsArgs};
use crate::output::{self, cell};
use crate::Context;

pub async fn run(ctx: &Context, args: SessionsArgs) -> Result<i32> {
    match args.action {
        None => list(ctx).await,
        Some(SessionsAction::Kill(k)) => kill(ctx, k).await,
    }
}

async fn list(ctx: &Context) -> Result<i32> {
    let name = ctx.sprite()?;
    let sessions = ctx.client()?.list_sessions(&name).await?;
    if ctx.json() {
        output::print_json(&sessions)?;
        return Ok(0);
    }
    if sessions.is_empty() {
        eprintln!("no sessions in {name}");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let state = match (s.exit_code, s.is_active) {
                (Some(code), _) => format!("exited {code}"),
                (None, true) => "attached".into(),
                (None, false) => "detached".into(),
            };
            vec![
                cell(&s.id),
                if s.tty { "tty" } else { "pipes" }.into(),
                state,
                cell(&s.created),
                cell(&s.command),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["ID", "MODE", "STATE", "CREATED", "COMMAND"], &rows)
    );
    Ok(0)
}

async fn kill(ctx: &Context, args: KillArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let request = KillSessionRequest {
        signal: Some(args.signal),
        timeout: args.timeout,
    };
    let messages = ctx
        .client()?
        .kill_session(&name, &args.id, &request)
        .await?;
    if ctx.json() {
        output::print_json(&messages)?;
    }
    let mut failed = false;
    for m in &messages {
        match m.kind.as_str() {
            "error" => {
                failed = true;
                let text = m
                    .error
                    .as_deref()
                    .or(m.data.as_deref())
                    .unwrap_or("kill failed");
                eprintln!("error: {}", cell(text));
            }
            _ if ctx.json() => {}
            _ => {
                if let Some(d) = &m.data {
                    eprintln!("{}", cell(d));
                }
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}
