//! `bothy mcp`: the MCP tools on stdin/stdout, for an agent that starts
//! bothy as an MCP server. Every tool call is an API call with this CLI's
//! token (`--token`, `BOTHY_TOKEN`), so the token's limits hold.

use anyhow::Result;

use crate::Context;

pub async fn run(ctx: &Context) -> Result<i32> {
    let client = ctx.client()?;
    bothy_mcp::serve_stdio(client)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(0)
}
