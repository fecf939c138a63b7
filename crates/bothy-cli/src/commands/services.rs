//! `bothy services ...`: what a bothy's init keeps running.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::cli::{ServicesCommand, TaskCommand};
use bothy_client::{Client, ClientError, InBoxClient};

use crate::output;
use crate::Context;

/// Where services and tasks calls go: the API, for a named bothy, or the
/// box's own socket, from inside it.
#[allow(async_fn_in_trait)]
pub(crate) trait Api {
    /// The bothy, for messages.
    fn what(&self) -> String;
    async fn list_services(&self) -> Result<Vec<Value>, ClientError>;
    async fn get_service(&self, name: &str) -> Result<Value, ClientError>;
    async fn put_service(
        &self,
        name: &str,
        def: &Value,
        follow: Option<f64>,
    ) -> Result<Vec<Value>, ClientError>;
    async fn delete_service(&self, name: &str) -> Result<(), ClientError>;
    async fn service_op(
        &self,
        name: &str,
        op: &str,
        secs: Option<f64>,
    ) -> Result<Vec<Value>, ClientError>;
    async fn signal_service(&self, name: &str, signal: &str) -> Result<(), ClientError>;
    async fn service_logs(&self, name: &str) -> Result<Vec<Value>, ClientError>;
    async fn hold_task(&self, name: Option<&str>, ttl: &str) -> Result<Value, ClientError>;
    async fn extend_task(&self, id: &str, ttl: &str) -> Result<Value, ClientError>;
    async fn list_tasks(&self) -> Result<Value, ClientError>;
    async fn release_task(&self, id: &str) -> Result<(), ClientError>;
}

/// A bothy through the API.
pub(crate) struct Remote {
    client: Client,
    sprite: String,
}

impl Api for Remote {
    fn what(&self) -> String {
        self.sprite.clone()
    }
    async fn list_services(&self) -> Result<Vec<Value>, ClientError> {
        self.client.list_services(&self.sprite).await
    }
    async fn get_service(&self, name: &str) -> Result<Value, ClientError> {
        self.client.get_service(&self.sprite, name).await
    }
    async fn put_service(
        &self,
        name: &str,
        def: &Value,
        follow: Option<f64>,
    ) -> Result<Vec<Value>, ClientError> {
        self.client
            .put_service(&self.sprite, name, def, follow)
            .await
    }
    async fn delete_service(&self, name: &str) -> Result<(), ClientError> {
        self.client.delete_service(&self.sprite, name).await
    }
    async fn service_op(
        &self,
        name: &str,
        op: &str,
        secs: Option<f64>,
    ) -> Result<Vec<Value>, ClientError> {
        self.client.service_op(&self.sprite, name, op, secs).await
    }
    async fn signal_service(&self, name: &str, signal: &str) -> Result<(), ClientError> {
        self.client.signal_service(&self.sprite, name, signal).await
    }
    async fn service_logs(&self, name: &str) -> Result<Vec<Value>, ClientError> {
        self.client.service_logs(&self.sprite, name).await
    }
    async fn hold_task(&self, name: Option<&str>, ttl: &str) -> Result<Value, ClientError> {
        self.client.hold_task(&self.sprite, name, ttl).await
    }
    async fn extend_task(&self, id: &str, ttl: &str) -> Result<Value, ClientError> {
        self.client.extend_task(&self.sprite, id, ttl).await
    }
    async fn list_tasks(&self) -> Result<Value, ClientError> {
        self.client.list_tasks(&self.sprite).await
    }
    async fn release_task(&self, id: &str) -> Result<(), ClientError> {
        self.client.release_task(&self.sprite, id).await
    }
}

impl Api for InBoxClient {
    fn what(&self) -> String {
        "this bothy".into()
    }
    async fn list_services(&self) -> Result<Vec<Value>, ClientError> {
        InBoxClient::list_services(self).await
    }
    async fn get_service(&self, name: &str) -> Result<Value, ClientError> {
        InBoxClient::get_service(self, name).await
    }
    async fn put_service(
        &self,
        name: &str,
        def: &Value,
        follow: Option<f64>,
    ) -> Result<Vec<Value>, ClientError> {
        InBoxClient::put_service(self, name, def, follow).await
    }
    async fn delete_service(&self, name: &str) -> Result<(), ClientError> {
        InBoxClient::delete_service(self, name).await
    }
    async fn service_op(
        &self,
        name: &str,
        op: &str,
        secs: Option<f64>,
    ) -> Result<Vec<Value>, ClientError> {
        InBoxClient::service_op(self, name, op, secs).await
    }
    async fn signal_service(&self, name: &str, signal: &str) -> Result<(), ClientError> {
        InBoxClient::signal_service(self, name, signal).await
    }
    async fn service_logs(&self, name: &str) -> Result<Vec<Value>, ClientError> {
        InBoxClient::service_logs(self, name).await
    }
    async fn hold_task(&self, name: Option<&str>, ttl: &str) -> Result<Value, ClientError> {
        InBoxClient::hold_task(self, name, ttl).await
    }
    async fn extend_task(&self, id: &str, ttl: &str) -> Result<Value, ClientError> {
        InBoxClient::extend_task(self, id, ttl).await
    }
    async fn list_tasks(&self) -> Result<Value, ClientError> {
        InBoxClient::list_tasks(self).await
    }
    async fn release_task(&self, id: &str) -> Result<(), ClientError> {
        InBoxClient::release_task(self, id).await
    }
}

/// `bothy services ...` against the named bothy.
pub async fn run(ctx: &Context, cmd: ServicesCommand) -> Result<i32> {
    let api = Remote {
        client: ctx.client()?,
        sprite: ctx.sprite()?,
    };
    services(&api, cmd, ctx.json()).await
}

/// `bothy task ...` against the named bothy.
pub async fn task(ctx: &Context, cmd: TaskCommand) -> Result<i32> {
    let api = Remote {
        client: ctx.client()?,
        sprite: ctx.sprite()?,
    };
    tasks(&api, cmd, ctx.json()).await
}

pub(crate) async fn services(api: &impl Api, cmd: ServicesCommand, json: bool) -> Result<i32> {
    let of = api.what();
    let what = |verb: &str, name: &str| format!("cannot {verb} service {name} of {of}");
    match cmd {
        ServicesCommand::List => {
            let list = api
                .list_services()
                .await
                .with_context(|| format!("cannot list the services of {of}"))?;
            if json {
                output::print_json(&list)?;
            } else if list.is_empty() {
                println!("no services: `services create NAME --cmd PROGRAM` makes one");
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
            let s = api
                .get_service(&a.name)
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
            let lines = api
                .put_service(&a.name, &def, Some(a.follow))
                .await
                .with_context(|| what("create", &a.name))?;
            show(json, &lines)?;
        }
        ServicesCommand::Start(ref a) | ServicesCommand::Restart(ref a) => {
            let op = if matches!(cmd, ServicesCommand::Start(_)) {
                "start"
            } else {
                "restart"
            };
            let lines = api
                .service_op(&a.name, op, Some(a.follow))
                .await
                .with_context(|| what(op, &a.name))?;
            show(json, &lines)?;
        }
        ServicesCommand::Stop(a) => {
            let lines = api
                .service_op(&a.name, "stop", a.timeout)
                .await
                .with_context(|| what("stop", &a.name))?;
            show(json, &lines)?;
        }
        ServicesCommand::Signal(a) => {
            api.signal_service(&a.name, &a.signal)
                .await
                .with_context(|| what("signal", &a.name))?;
        }
        ServicesCommand::Delete(a) => {
            api.delete_service(&a.name)
                .await
                .with_context(|| what("delete", &a.name))?;
            if !json {
                println!("deleted service {}", a.name);
            }
        }
        ServicesCommand::Logs(a) => {
            let lines = api
                .service_logs(&a.name)
                .await
                .with_context(|| what("read the log of", &a.name))?;
            show(json, &lines)?;
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
fn show(json: bool, lines: &[Value]) -> Result<()> {
    if json {
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

/// `task hold|list|release`; a hold with a command holds while it runs
/// (extended every third of its time to live) and answers its exit code.
pub(crate) async fn tasks(api: &impl Api, cmd: TaskCommand, json: bool) -> Result<i32> {
    let of = api.what();
    match cmd {
        TaskCommand::Hold(a) => {
            let t = api
                .hold_task(a.name.as_deref(), &a.ttl)
                .await
                .with_context(|| format!("cannot hold {of}"))?;
            let id = t["id"].as_str().unwrap_or_default().to_string();
            if a.command.is_empty() {
                if json {
                    output::print_json(&t)?;
                } else {
                    println!("{id}");
                    eprintln!(
                        "holds {of} awake until {}",
                        t["expires_at"].as_str().unwrap_or("?")
                    );
                }
                return Ok(0);
            }
            let every = crate::duration::parse_duration(&a.ttl).map_err(anyhow::Error::msg)? / 3;
            let mut child = tokio::process::Command::new(&a.command[0])
                .args(&a.command[1..])
                .spawn()
                .with_context(|| format!("cannot run {}", a.command[0]))?;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status?,
                    () = tokio::time::sleep(every) => {
                        if let Err(e) = api.extend_task(&id, &a.ttl).await {
                            eprintln!("warning: could not extend the hold {id}: {e}");
                        }
                    }
                }
            };
            if let Err(e) = api.release_task(&id).await {
                eprintln!("warning: could not release the hold {id}: {e}");
            }
            Ok(status.code().unwrap_or(128 + 9))
        }
        TaskCommand::List => {
            let list = api
                .list_tasks()
                .await
                .with_context(|| format!("cannot list the tasks of {of}"))?;
            if json {
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
            Ok(0)
        }
        TaskCommand::Release(a) => {
            api.release_task(&a.id)
                .await
                .with_context(|| format!("cannot release {}", a.id))?;
            Ok(0)
        }
    }
}
