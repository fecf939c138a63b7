//! `bothy services ...`: what a bothy's init keeps running.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::cli::{ServicesCommand, TaskCommand};
use crate::output;
use crate::Context;

pub async fn run(ctx: &Context, cmd: ServicesCommand) -> Result<i32> {
    let sprite = ctx.sprite()?;
    let client = ctx.client()?;
    let what = |verb: &str, name: &str| format!("cannot {verb} service {name} of {sprite}");
    match cmd {
        ServicesCommand::List => {
            let list = client
                .list_services(&sprite)
                .await
                .with_context(|| format!("cannot list the services of {sprite}"))?;
            if ctx.json() {
                output::print_json(&list)?;
            } else if list.is_empty() {
                println!("no services: `bothy services create NAME --cmd PROGRAM` makes one");
            } else {
                println!(
                    "{:<20} {:<9} {:>7} {:>8}  COMMAND",
                    "NAME", "STATUS", "PID", "RESTARTS"
                );
                for s in &list {
                    let st = &s["state"];
                    println!(
                        "{:<20} {:<9} {:>7} {:>8}  {}",
                        s["name"].as_str().unwrap_or("?"),
                        st["status"].as_str().unwrap_or("?"),
                        st["pid"]
                            .as_i64()
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "-".into()),
                        st["restart_count"].as_u64().unwrap_or(0),
                        command_line(s),
                    );
                }
            }
        }
        ServicesCommand::Get(a) => {
            let s = client
                .get_service(&sprite, &a.name)
                .await
                .with_context(|| what("get", &a.name))?;
            output::print_json(&s)?;
        }
        ServicesCommand::Create(a) => {
            let mut env = BTreeMap::new();
            for e in &a.env {
                let Some((k, v)) = e.split_once('=') else {
                    bail!("--env {e:?}: write KEY=VALUE");
                };
                env.insert(k.to_string(), v.to_string());
            }
            let def = json!({
                "cmd": a.cmd, "args": a.args, "env": env, "dir": a.dir,
                "needs": a.needs, "http_port": a.http_port,
            });
            let lines = client
                .put_service(&sprite, &a.name, &def, Some(a.follow))
                .await
                .with_context(|| what("create", &a.name))?;
            show(ctx, &lines)?;
        }
        ServicesCommand::Start(a) => {
            let lines = client
                .service_op(&sprite, &a.name, "start", Some(a.follow))
                .await
                .with_context(|| what("start", &a.name))?;
            show(ctx, &lines)?;
        }
        ServicesCommand::Restart(a) => {
            let lines = client
                .service_op(&sprite, &a.name, "restart", Some(a.follow))
                .await
                .with_context(|| what("restart", &a.name))?;
            show(ctx, &lines)?;
        }
        ServicesCommand::Stop(a) => {
            let lines = client
                .service_op(&sprite, &a.name, "stop", a.timeout)
                .await
                .with_context(|| what("stop", &a.name))?;
            show(ctx, &lines)?;
        }
        ServicesCommand::Signal(a) => {
            client
                .signal_service(&sprite, &a.name, &a.signal)
                .await
                .with_context(|| what("signal", &a.name))?;
        }
        ServicesCommand::Delete(a) => {
            client
                .delete_service(&sprite, &a.name)
                .await
                .with_context(|| what("delete", &a.name))?;
            if !ctx.json() {
                println!("deleted service {}", a.name);
            }
        }
        ServicesCommand::Logs(a) => {
            let lines = client
                .service_logs(&sprite, &a.name)
                .await
                .with_context(|| what("read the log of", &a.name))?;
            show(ctx, &lines)?;
        }
    }
    Ok(0)
}

fn command_line(s: &Value) -> String {
    let mut parts = vec![s["cmd"].as_str().unwrap_or("").to_string()];
    if let Some(args) = s["args"].as_array() {
        parts.extend(args.iter().filter_map(|a| a.as_str()).map(str::to_string));
    }
    parts.join(" ")
}

/// Output as it came (stdout and stderr to ours), other events as notes on
/// stderr; with `--json`, the lines as they are.
fn show(ctx: &Context, lines: &[Value]) -> Result<()> {
    if ctx.json() {
        for l in lines {
            println!("{l}");
        }
        return Ok(());
    }
    for l in lines {
        let data = l["data"].as_str().unwrap_or("");
        match l["type"].as_str().unwrap_or("") {
            "stdout" => print!("{data}"),
            "stderr" => eprint!("{data}"),
            "exit" => eprintln!("[exited with code {}]", l["exit_code"]),
            "complete" => {
                if let Some(path) = l["log_files"]["output"].as_str() {
                    eprintln!("[log: {path} in the bothy]");
                }
            }
            other => eprintln!(
                "[{other}{}]",
                if data.is_empty() {
                    String::new()
                } else {
                    format!(": {data}")
                }
            ),
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// `bothy task hold|list|release`.
pub async fn task(ctx: &Context, cmd: TaskCommand) -> Result<i32> {
    let sprite = ctx.sprite()?;
    let client = ctx.client()?;
    match cmd {
        TaskCommand::Hold(a) => {
            let t = client
                .hold_task(&sprite, a.name.as_deref(), &a.ttl)
                .await
                .with_context(|| format!("cannot hold {sprite}"))?;
            if ctx.json() {
                output::print_json(&t)?;
            } else {
                println!("{}", t["id"].as_str().unwrap_or_default());
                eprintln!(
                    "holds {sprite} awake until {}",
                    t["expires_at"].as_str().unwrap_or("?")
                );
            }
        }
        TaskCommand::List => {
            let list = client
                .list_tasks(&sprite)
                .await
                .with_context(|| format!("cannot list the tasks of {sprite}"))?;
            if ctx.json() {
                output::print_json(&list)?;
            } else {
                for t in list["tasks"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  until {}",
                        t["id"].as_str().unwrap_or("?"),
                        t["name"].as_str().unwrap_or("?"),
                        t["expires_at"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        TaskCommand::Release(a) => {
            client
                .release_task(&sprite, &a.id)
                .await
                .with_context(|| format!("cannot release {}", a.id))?;
        }
    }
    Ok(0)
}
