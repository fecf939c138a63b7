//! The messages of `WSS /v1/sprites/{name}/proxy` (a port forward) and
//! `WSS /v1/sprites/{name}/ports/watch`, as `@fly/sprites` speaks them.

use serde::{Deserialize, Serialize};

/// Largest first message of a forward: it is a host and a port.
pub const MAX_PROXY_INIT: usize = 4 * 1024;
/// How long the server waits for that first message.
pub const PROXY_INIT_TIMEOUT_SECS: u64 = 10;

/// The client's first message on `/proxy`. An absent host is the box's
/// loopback. The port stays a JSON number here so that the server can say
/// what is wrong with a bad one rather than fail to parse it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyInit {
    #[serde(default)]
    pub host: String,
    pub port: serde_json::Number,
}

/// The server's answer to [`ProxyInit`]: `connected` (raw bytes follow as
/// binary frames both ways) or `error` (the server closes next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub const PROXY_CONNECTED: &str = "connected";
pub const PROXY_ERROR: &str = "error";

/// A listening port of the box. `pid` is the owner's pid in the box, 0
/// when it could not be found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortNotification {
    #[serde(rename = "type")]
    pub kind: String,
    pub port: u16,
    pub address: String,
    pub pid: u32,
}

/// The first message of a port watch: every port listening now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortList {
    #[serde(rename = "type")]
    pub kind: String,
    pub ports: Vec<PortNotification>,
}

pub const PORT_LIST: &str = "port_list";
pub const PORT_OPENED: &str = "port_opened";
pub const PORT_CLOSED: &str = "port_closed";
