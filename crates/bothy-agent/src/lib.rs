//! In-box init (pid 1) of a bothy, and the client the daemon uses to talk to it.
//!
//! The agent runs inside the box as pid 1 (`bothy init`, the bothy binary
//! bind-mounted read-only into the box). It inherits a *listening* unix socket as
//! fd 3: the daemon bound it on the host, in a directory the box cannot see, so a
//! hostile box can never make the daemon connect somewhere else. The agent reaps
//! every zombie, runs exec sessions (pipes or a PTY), keeps them alive while no
//! client is attached (TTY: forever by default; non-TTY: 10 s by default, or
//! `max_run_after_disconnect`), buffers their output meanwhile, and lets a client
//! re-attach. Sessions live in the agent, so they survive a daemon restart.
//!
//! The protocol (module `proto`) is one request per connection: a JSON request
//! frame; for `spawn`/`attach` the connection then carries session frames both
//! ways until exit or detach.
//!
//! Public surface used by the daemon (bothy-server):
//! - [`client::AgentClient`]: `new(socket_path)`, `ping`, `spawn(SpawnRequest)`,
//!   `attach(id)`, `list()`, `kill(id, signal)`.
//! - [`client::AgentSession`]: `info()`, `split()` into a reader yielding
//!   [`proto::Output`] (stdout, stderr, exit) and a writer taking [`proto::Input`]
//!   (stdin, stdin EOF, resize, signal). Dropping both detaches without killing.
//! - [`init::run`]: entry point of `bothy init`; [`init::serve`] runs the same
//!   agent on any listener (tests).
//!
//! A command that cannot be started (not in PATH, missing working directory,
//! bad environment entry) is refused before anything runs: `spawn` returns
//! [`client::AgentError::Spawn`] with a message meant for the user.

pub mod client;
mod fdio;
pub mod fs;
mod fswatch;
pub mod init;
mod outbuf;
pub mod proto;
mod pty;
mod reaper;
mod server;
pub mod services;
mod session;
mod spawn;
