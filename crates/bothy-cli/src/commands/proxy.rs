//! `bothy proxy [-s NAME] LOCAL[:REMOTE]...`: local ports forwarded to
//! ports on the bothy's loopback, each accepted connection over its own
//! `/proxy` WebSocket (as `sprite proxy` does).

use anyhow::{Context as _, Result};
use bothy_client::Client;
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{PortForward, ProxyArgs};
use crate::Context;

/// The host asked of the server: the bothy's own loopback.
const REMOTE_HOST: &str = "localhost";

pub async fn run(ctx: &Context, args: ProxyArgs) -> Result<i32> {
    let name = ctx.sprite()?;
    let client = ctx.client()?;
    // A misspelt name or a refused token fails now, not at the first
    // connection.
    client
        .get_sprite(&name)
        .await
        .with_context(|| format!("cannot forward to {name}"))?;
    let mut listeners = Vec::new();
    for forward in &args.ports {
        let listener = TcpListener::bind(("127.0.0.1", forward.local))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{}", forward.local))?;
        listeners.push((listener, *forward));
    }
    for (_, f) in &listeners {
        if ctx.json() {
            // One line per listener, so a program can read them as they come.
            let line = serde_json::json!({
                "local": format!("127.0.0.1:{}", f.local),
                "sprite": name,
                "remote_port": f.remote,
            });
            println!("{line}");
        } else {
            println!("forwarding 127.0.0.1:{} -> {name}:{}", f.local, f.remote);
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, forward) in listeners {
        tasks.spawn(serve(listener, forward, client.clone(), name.clone()));
    }
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C")?,
        Some(r) = tasks.join_next() => r.context("a forward stopped")??,
    }
    Ok(0)
}

/// Accepts connections until accepting fails for good.
async fn serve(
    listener: TcpListener,
    forward: PortForward,
    client: Client,
    name: String,
) -> Result<()> {
    loop {
        let (local, peer) = match listener.accept().await {
            Ok(c) => c,
            // Out of file descriptors and the like: the next accept may work.
            Err(e) if is_transient(&e) => {
                eprintln!("accepting on 127.0.0.1:{}: {e}", forward.local);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("accepting on 127.0.0.1:{}", forward.local))
            }
        };
        let client = client.clone();
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = carry(&client, &name, forward.remote, local).await {
                eprintln!("{peer} -> {name}:{}: {e:#}", forward.remote);
            }
        });
    }
}

async fn carry(client: &Client, name: &str, remote: u16, local: TcpStream) -> Result<()> {
    let _ = local.set_nodelay(true);
    let conn = client
        .proxy(name, REMOTE_HOST, remote)
        .await
        .context("cannot open the forward")?;
    conn.pump(local).await.context("the forward broke")?;
    Ok(())
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use crate::cli::{parse_forward, PortForward};

    #[test]
    fn specs_are_local_and_optional_remote() {
        assert_eq!(
            parse_forward("8000:8080"),
            Ok(PortForward {
                local: 8000,
                remote: 8080
            })
        );
        assert_eq!(
            parse_forward("3000"),
            Ok(PortForward {
                local: 3000,
                remote: 3000
            })
        );
        assert_eq!(
            parse_forward("65535:1"),
            Ok(PortForward {
                local: 65535,
                remote: 1
            })
        );
    }

    #[test]
    fn bad_specs_say_why() {
        for bad in [
            "abc", "0", "70000", "1:2:3", "", ":", "8000:", ":8080", "-1", "80:0",
        ] {
            let e = parse_forward(bad).expect_err(bad);
            assert!(e.contains("port") || e.contains("LOCAL"), "{bad}: {e}");
        }
    }
}
