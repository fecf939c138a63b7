//! The bothy command line: one module per verb under [`commands`].
//!
//! The binary parses [`Cli`], runs the admin verbs (`daemon`, `init`, `image`)
//! itself and hands every other verb to [`run`], which returns the process's
//! exit code: the remote command's code for `exec` and `attach`, 1 for errors
//! (printed as `error: ...`), and clap's 2 for usage errors. Verbs that live
//! in other crates (`bench`) get the same runtime and exit codes from
//! [`block_on`] and their client from [`Context`].

pub mod cli;
pub mod commands;
pub mod config;
pub mod duration;
pub mod env_tool;
pub mod envflag;
mod output;
pub mod progress;
pub mod selection;
pub mod session_io;
mod terminal;

use std::future::Future;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use bothy_client::Client;

pub use cli::{
    Cli, Command, DaemonArgs, GlobalArgs, ImageBuildArgs, ImageCommand, StorageServerArgs,
};

/// Runs a client verb and returns the exit code. Admin verbs belong to the
/// binary and are refused here.
pub fn run(cli: Cli) -> i32 {
    let ctx = Context { global: cli.global };
    block_on(commands::dispatch(&ctx, cli.command))
}

/// Runs a verb on a single-threaded runtime and turns its outcome into the
/// exit code: its own on success, 1 with `error: ...` on stderr otherwise.
pub fn block_on(verb: impl Future<Output = Result<i32>>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(verb);
    // A stdin reader may still be blocked in read(2); do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// What every verb needs: the global flags, and from them a client and a name.
pub struct Context {
    pub global: GlobalArgs,
}

impl Context {
    /// A client for the API the flags and environment point at.
    pub fn client(&self) -> Result<Client> {
        let url = config::resolve_api_url(self.global.api.as_deref());
        let token = config::resolve_token(self.global.token.as_deref(), &self.data_dir())
            .map_err(anyhow::Error::msg)?;
        Ok(Client::new(&url, token)?)
    }

    /// The local daemon's data dir (`BOTHY_DATA_DIR`, else the default).
    pub fn data_dir(&self) -> PathBuf {
        config::data_dir(std::env::var_os("BOTHY_DATA_DIR").map(PathBuf::from))
    }

    /// The bothy to act on: `-s`, else the nearest `.bothy`.
    pub fn sprite(&self) -> Result<String> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        selection::resolve_sprite(self.global.sprite.as_deref(), &cwd).map_err(anyhow::Error::msg)
    }

    /// The bothy named with `-s`, if one was (no directory default).
    pub fn explicit_sprite(&self) -> Option<&str> {
        self.global.sprite.as_deref()
    }

    pub fn json(&self) -> bool {
        self.global.json
    }
}
