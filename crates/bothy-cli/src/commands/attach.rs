//! `bothy attach ID`: re-attach to a running session.

use anyhow::Result;

use crate::cli::AttachArgs;
use crate::session_io;
use crate::{terminal, Context};

pub async fn run(ctx: &Context, args: AttachArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let conn = ctx.client()?.attach(&name, &args.id).await?;
    // A terminal session can be left again with Ctrl-\; a pipe session has no
    // keyboard to detach from.
    let tty = conn.tty();
    let opts = session_io::Options {
        raw: tty,
        detach_key: tty && terminal::stdin_is_terminal(),
        eof_without_input: false,
    };
    super::exec::finish(session_io::run(conn, opts).await?, &name)
}
