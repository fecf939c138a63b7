//! One module per verb; [`dispatch`] routes a parsed command to it.

mod attach;
mod bench;
mod console;
mod create;
mod destroy;
mod exec;
mod list;
mod org;
mod sessions;
mod token;
mod use_;

use anyhow::Result;

use crate::cli::{BenchCommand, Command, TokenCommand};
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
        Command::Token(TokenCommand::Create(a)) => token::create(ctx, a).await,
        Command::Org => org::run(ctx).await,
        Command::Bench(BenchCommand::Create(a)) => bench::create(ctx, a.runs).await,
        Command::Bench(BenchCommand::Exec(a)) => bench::exec(ctx, a.runs).await,
        Command::Bench(BenchCommand::Unshare(a)) => bench::unshare(a.runs).await,
        Command::Daemon(_) | Command::Init | Command::Image(_) => {
            anyhow::bail!("this build of bothy cannot run the daemon, init or image verbs")
        }
    }
}
