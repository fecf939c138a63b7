//! One module per verb; [`dispatch`] routes a parsed command to it.

mod attach;
mod checkpoint;
mod console;
mod create;
mod destroy;
mod exec;
mod list;
mod mcp;
mod org;
mod policy;
mod proxy;
mod quota;
pub(crate) mod services;
mod sessions;
mod sleep;
mod sync;
mod token;
mod url;
mod usage;
mod use_;

use anyhow::Result;

use crate::cli::{CheckpointCommand, Command, PolicyCommand, QuotaCommand, TokenCommand};
use crate::Context;

/// Runs a client verb; returns the exit code.
pub async fn dispatch(ctx: &Context, command: Command) -> Result<i32> {
    match command {
        Command::Create(a) => create::run(ctx, a).await,
        Command::List(a) => list::run(ctx, a).await,
        Command::Use(a) => use_::run(ctx, a).await,
        Command::Exec(a) => exec::run(ctx, a).await,
        Command::Console => console::run(ctx).await,
        Command::Sessions(a) => sessions::run(ctx, a).await,
        Command::Attach(a) => attach::run(ctx, a).await,
        Command::Destroy(a) => destroy::run(ctx, a).await,
        Command::Checkpoint(CheckpointCommand::Create(a)) => checkpoint::create(ctx, a).await,
        Command::Checkpoint(CheckpointCommand::List(a)) => checkpoint::list(ctx, a).await,
        Command::Checkpoint(CheckpointCommand::Info(a)) => checkpoint::info(ctx, a).await,
        Command::Checkpoint(CheckpointCommand::Delete(a)) => checkpoint::delete(ctx, a).await,
        Command::Restore(a) => checkpoint::restore(ctx, a).await,
        Command::Sync(_) => sync::run(ctx).await,
        Command::Drain => sync::drain(ctx).await,
        Command::Sleep(a) => sleep::sleep(ctx, &a).await,
        Command::Services(c) => services::run(ctx, c).await,
        Command::Task(c) => services::task(ctx, c).await,
        Command::Update(a) => sleep::update(ctx, &a).await,
        Command::Token(TokenCommand::Create(a)) => token::create(ctx, a).await,
        Command::Token(TokenCommand::List(a)) => token::list(ctx, a).await,
        Command::Token(TokenCommand::Revoke(a)) => token::revoke(ctx, a).await,
        Command::Url(a) => url::run(ctx, a).await,
        Command::Proxy(a) => proxy::run(ctx, a).await,
        Command::Org => org::run(ctx).await,
        Command::Usage => usage::run(ctx).await,
        Command::Mcp => mcp::run(ctx).await,
        Command::Skill => {
            print!("{}", include_str!("../skill.md"));
            Ok(0)
        }
        Command::Quota(QuotaCommand::Get(a)) => quota::get(ctx, a).await,
        Command::Quota(QuotaCommand::Set(a)) => quota::set(ctx, a).await,
        Command::Policy(PolicyCommand::Get) => policy::get(ctx).await,
        Command::Policy(PolicyCommand::Set(a)) => policy::set(ctx, a).await,
        Command::Daemon(_) | Command::StorageServer(_) | Command::Init | Command::Image(_) => {
            anyhow::bail!("this build of bothy cannot run the daemon, init or image verbs")
        }
    }
}
