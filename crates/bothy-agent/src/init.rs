//! `bothy init`: pid 1 of a box. (Stub.)

/// Runs the agent with the listening socket inherited as fd 3. Never returns
/// while the box lives.
pub fn run() -> std::io::Result<()> {
    todo!()
}
