//! `bothy console`: a root login shell under a PTY; Ctrl-\ detaches.

use anyhow::Result;
use bothy_client::{Client, ExecParams};

use crate::session_io;
use crate::{terminal, Context};

/// bash if the image has it (Debian does), else the POSIX shell.
const SHELL_SCRIPT: &str = "command -v bash >/dev/null && exec bash -l; exec sh -l";

pub async fn run(ctx: &Context) -> Result<i32> {
    let name = ctx.sprite()?;
    open(&ctx.client()?, &name).await
}

/// Opens a console in `name` and runs it until exit or detach.
pub(crate) async fn open(client: &Client, name: &str) -> Result<i32> {
    let mut params = ExecParams::new(vec!["sh".into(), "-c".into(), SHELL_SCRIPT.into()]);
    params.tty = true;
    (params.cols, params.rows) = terminal::size();
    let term = std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "xterm-256color".into());
    params.env.push(("TERM".into(), term));
    let conn = client.exec(name, &params).await?;
    if terminal::stdin_is_terminal() {
        eprintln!("connected to {name}; Ctrl-\\ detaches");
    }
    // Piped input is passed through byte-exact: Ctrl-\ only detaches a keyboard.
    let opts = session_io::Options {
        raw: true,
        detach_key: terminal::stdin_is_terminal(),
        eof_without_input: true,
    };
    super::exec::finish(session_io::run(conn, opts).await?, name)
}
