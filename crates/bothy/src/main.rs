//! The one bothy binary: the CLI verbs, `bothy bench`, `bothy daemon`,
//! `bothy init` (pid 1 in every box) and `bothy image build`.

mod admin;
mod grammar;
#[cfg(target_env = "gnu")]
mod memory;

use bothy_bench::BenchCommand;
use bothy_cli::{Command, GlobalArgs};

use crate::grammar::Parsed;

fn main() {
    // pid 1 of a box goes straight to the agent: no argument parsing beyond
    // this, no async runtime (the agent forks and manages its own threads).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 2 && args[1] == "init" {
        std::process::exit(admin::init());
    }
    // Inside a box the binary is also mounted as `bothy-env`.
    let called = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n == bothy_api::inbox::ENV_TOOL_NAME)
        .unwrap_or(false);
    if called {
        std::process::exit(bothy_cli::env_tool::main(args));
    }

    // Usage errors exit 2 and --help/--version exit 0, both inside clap.
    let code = match grammar::parse(args) {
        Parsed::Bench(global, command) => bench(global, command),
        Parsed::Cli(cli) => match cli.command {
            Command::Daemon(args) => admin::daemon(*args),
            Command::StorageServer(args) => admin::storage_server(args),
            Command::Init => admin::init(),
            Command::Image(bothy_cli::ImageCommand::Build(args)) => admin::image_build(args),
            _ => bothy_cli::run(cli),
        },
    };
    std::process::exit(code);
}

/// `bothy bench`: the daemon named by the CLI's flags, and the CLI's runtime
/// and exit codes.
fn bench(global: GlobalArgs, command: BenchCommand) -> i32 {
    let ctx = bothy_cli::Context { global };
    let connect = || ctx.client();
    let daemon = bothy_bench::Daemon {
        connect: &connect,
        data_dir: ctx.data_dir(),
    };
    bothy_cli::block_on(bothy_bench::run(command, &daemon))
}
