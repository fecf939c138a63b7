//! Box URLs and port forwards: which box a URL names, and connections to
//! ports on the box's own loopback, waking the box first.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::{ControlError, ControlResult};
use crate::exec::agent_call;
use crate::sleep::AwakeHold;
use crate::state::SpriteRow;
use crate::{pool, Boxes, Control};

/// Where a box's URL goes when no service owns the HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// How often a connect refused by a box whose service is still starting
/// is tried again, until the caller's deadline.
const CONNECT_RETRY: Duration = Duration::from_millis(25);
/// How long one connect may hang before the box counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl<B: Boxes> Control<B> {
    /// The box a URL names: sprite `name` of organisation `org`. Pooled
    /// boxes and boxes being created or destroyed have no URL.
    pub async fn url_target(&self, org: &str, name: &str) -> ControlResult<SpriteRow> {
        let not_found =
            || ControlError::NotFound(format!("no sprite answers at this URL ({name})"));
        let row = self
            .store()
            .sprite(org.to_string(), name.to_string())
            .await?
            .ok_or_else(not_found)?;
        if pool::is_pooled(&row) {
            return Err(not_found());
        }
        self.ensure_ready(&row)?;
        Ok(row)
    }

    /// The port the box's URL goes to: the one its HTTP service owns, else
    /// [`DEFAULT_HTTP_PORT`]. Asks the box's agent, so the box must run.
    pub async fn http_port(&self, row: &SpriteRow) -> ControlResult<u16> {
        let services = agent_call(self.boxes().services(&row.id)).await?;
        Ok(services
            .iter()
            .find_map(|s| s.def.http_port)
            .unwrap_or(DEFAULT_HTTP_PORT))
    }

    /// A connection to `port` on the box's loopback (the URL's port when
    /// `None`), waking the box first. A refused connect is retried until
    /// `wait` has passed (a woken box's services are still starting); then
    /// the answer is 502, or 504 if a connect itself hangs. The hold keeps
    /// the box awake while the caller uses the connection.
    pub async fn connect_box(
        &self,
        row: &SpriteRow,
        port: Option<u16>,
        wait: Duration,
    ) -> ControlResult<(TcpStream, AwakeHold)> {
        let deadline = tokio::time::Instant::now() + wait;
        let awake = self.ensure_running(row).await?;
        let port = match port {
            Some(p) => p,
            None => self.http_port(row).await?,
        };
        loop {
            // One attempt is bounded on its own: a refusal is retried until
            // the deadline (502 after it), a connect that hangs is a 504.
            let attempt =
                tokio::time::timeout(CONNECT_TIMEOUT, self.boxes().connect(&row.id, port));
            let last = match attempt.await {
                Err(_) => {
                    return Err(ControlError::Timeout(format!(
                        "port {port} in sprite {:?} did not accept a connection within {CONNECT_TIMEOUT:?}",
                        row.name
                    )))
                }
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(Ok(stream))) => return Ok((stream, awake)),
                Ok(Ok(Err(e))) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::BadGateway(format!(
                    "nothing in sprite {:?} accepts connections on port {port} ({last}); start the web service (`bothy services create ... --http-port {port}`) or listen on port {DEFAULT_HTTP_PORT}",
                    row.name
                )));
            }
            tokio::time::sleep(CONNECT_RETRY).await;
        }
    }
}
