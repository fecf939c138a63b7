//! `bothy exec -- CMD...`: run a command, stdio byte-exact, exit code passed on.

use anyhow::Result;
use bothy_client::ExecParams;

use crate::cli::ExecArgs;
use crate::session_io::{self, Ending};
use crate::{envflag, terminal, Context};

pub async fn run(ctx: &Context, args: ExecArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let env = envflag::parse_env_flags(&args.env).map_err(anyhow::Error::msg)?;
    let client = ctx.client()?;
    let mut params = ExecParams::new(args.cmd);
    params.env = env;
    params.dir = args.dir;
    params.tty = args.tty;
    params.max_run_after_disconnect = args
        .max_run_after_disconnect
        .map(|d| d.as_secs().to_string());
    if args.tty {
        (params.cols, params.rows) = terminal::size();
    }
    let conn = client.exec(&name, &params).await?;
    let opts = session_io::Options {
        raw: args.tty,
        detach_key: false,
        eof_without_input: true,
    };
    finish(session_io::run(conn, opts).await?, &name)
}

/// Exit code and message for how a session ended.
pub(crate) fn finish(ending: Ending, name: &str) -> Result<i32> {
    match ending {
        Ending::Exited(code) => Ok(session_io::local_exit_code(code)),
        Ending::Detached { session_id } => {
            match session_id {
                Some(id) => eprintln!(
                    "\ndetached; the session keeps running. Re-attach with: bothy attach {id} -s {name}"
                ),
                None => eprintln!("\ndetached; `bothy sessions -s {name}` lists the session"),
            }
            Ok(0)
        }
        Ending::Interrupted { signal } => {
            eprintln!("\ninterrupted; the session may keep running: `bothy sessions -s {name}`");
            Ok(128 + signal)
        }
    }
}
