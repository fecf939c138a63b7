//! Forwarding a request to a box's web service: pooled HTTP/1.1
//! connections made inside the box's network namespace, hop-by-hop and
//! credential headers removed, `X-Forwarded-*` set by the edge alone, and
//! WebSocket (or any) upgrades spliced through.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, HOST, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use bothy_control::sleep::AwakeHold;
use bothy_control::{Boxes, Control, ControlError};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::session;
use crate::error::ApiError;

/// Idle pooled connections to boxes close after this long (and when the
/// box goes cold, its side closes them).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Headers that describe one hop, not the request: never forwarded.
const HOP_BY_HOP: [&str; 4] = ["keep-alive", "proxy-connection", "te", "trailer"];
/// Headers about the client that only the edge may set.
const FORWARDING: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Opens connections to `http://BOX_ID:PORT`: the URI's host is a box id,
/// never a name a client chose.
pub struct BoxConnector<B> {
    control: Control<B>,
    wait: Duration,
}

impl<B> Clone for BoxConnector<B> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
            wait: self.wait,
        }
    }
}

/// Why a connection to a box could not be made, kept whole so the answer
/// to the client says it.
#[derive(Debug)]
pub struct ConnectFailed(pub ControlError);

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for ConnectFailed {}

impl<B: Boxes> tower_service::Service<Uri> for BoxConnector<B> {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = ConnectFailed;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let control = self.control.clone();
        let wait = self.wait;
        Box::pin(async move {
            let (Some(id), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(ConnectFailed(ControlError::Internal(format!(
                    "edge connector given {uri}"
                ))));
            };
            let row = control.sprite_by_id(id).await.map_err(ConnectFailed)?;
            // The request being forwarded holds the box awake; an idle
            // pooled connection must not.
            let (stream, _awake) = control
                .connect_box(&row, Some(port), wait)
                .await
                .map_err(ConnectFailed)?;
            Ok(TokioIo::new(stream))
        })
    }
}

pub type BoxClient<B> = Client<BoxConnector<B>, Incoming>;

pub fn client<B: Boxes>(control: Control<B>, wait: Duration) -> BoxClient<B> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(BoxConnector { control, wait })
}

/// Whether the request asks to switch protocols (a WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the headers of one hop (and those `Connection` names); an
/// upgrade keeps `Upgrade` and a `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let upgrade_to = headers.get(UPGRADE).cloned();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
    ] {
        headers.remove(name);
    }
    if let (true, Some(to)) = (upgrade, upgrade_to) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, to);
    }
}

/// Removes bothy's credentials (a bothy bearer token, the session cookie)
/// so the box never sees them.
pub fn strip_credentials(headers: &mut HeaderMap) {
    let bothy_bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .any(|v| v.to_str().is_ok_and(is_bothy_bearer));
    if bothy_bearer {
        headers.remove(AUTHORIZATION);
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| match v.to_str() {
            Ok(s) => {
                session::without_session_cookie(s).and_then(|c| HeaderValue::from_str(&c).ok())
            }
            // Not text: cannot hold our cookie in a form we parse; keep it.
            Err(_) => Some(v.clone()),
        })
        .collect();
    headers.remove(COOKIE);
    for c in cookies {
        headers.append(COOKIE, c);
    }
}

fn is_bothy_bearer(value: &str) -> bool {
    value.split_once(' ').is_some_and(|(scheme, token)| {
        scheme.eq_ignore_ascii_case("bearer") && token.trim().starts_with(bothy_api::TOKEN_PREFIX)
    })
}

/// What the edge knows of the client, for the `X-Forwarded-*` headers.
pub struct Origin {
    pub ip: std::net::IpAddr,
    pub https: bool,
    /// The host the client asked for, as it sent it (port included).
    pub authority: String,
}

/// Turns the client's request into the one the box gets.
pub fn prepare(
    req: &mut Request<Incoming>,
    box_id: &str,
    port: u16,
    from: &Origin,
) -> Result<(), ApiError> {
    let upgrade = is_upgrade(req.headers());
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    strip_credentials(headers);
    for name in FORWARDING {
        headers.remove(name);
    }
    let value = |s: &str| {
        HeaderValue::from_str(s)
            .map_err(|_| ApiError::bad_request("the host is not a valid header value"))
    };
    headers.insert(HOST, value(&from.authority)?);
    headers.insert("x-forwarded-for", value(&from.ip.to_string())?);
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if from.https { "https" } else { "http" }),
    );
    headers.insert("x-forwarded-host", value(&from.authority)?);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    *req.uri_mut() = format!("http://{box_id}:{port}{path}")
        .parse()
        .map_err(|_| ApiError::bad_request("malformed request target"))?;
    *req.version_mut() = Version::HTTP_11;
    Ok(())
}

/// The client's error as the answer: the box's own failure to connect
/// keeps its kind (502, 504, 503), anything after is a 502.
pub fn failure(e: hyper_util::client::legacy::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(ConnectFailed(c)) = s.downcast_ref::<ConnectFailed>() {
            return c.clone().into();
        }
        source = s.source();
    }
    ApiError::BadGateway(format!(
        "the sprite's web service did not answer properly ({e}); check its logs"
    ))
}

/// The box's answer as the client gets it; the hold keeps the box awake
/// until the body has been sent.
pub fn respond(mut res: Response<Incoming>, awake: AwakeHold) -> Response<Body> {
    strip_hop_by_hop(res.headers_mut(), false);
    res.map(|body| {
        Body::new(Held {
            body,
            _awake: awake,
        })
    })
}

/// Splices an upgraded connection (after a 101) until either side closes.
pub fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    awake: AwakeHold,
) {
    tokio::spawn(async move {
        let (c, u) = tokio::join!(client, upstream);
        if let (Ok(c), Ok(u)) = (c, u) {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
        }
        drop(awake);
    });
}

/// A response body that keeps something alive while it streams.
struct Held {
    body: Incoming,
    _awake: AwakeHold,
}

impl HttpBody for Held {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A 101 answer to hand back while the splice runs.
pub fn switching(res: &Response<Incoming>) -> Response<Body> {
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = res.headers().clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-app"));
    }

    #[test]
    fn an_upgrade_keeps_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn bothy_credentials_never_reach_the_box() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer bothy_0123"));
        h.insert(COOKIE, HeaderValue::from_static("a=1; bothy_session=s"));
        strip_credentials(&mut h);
        assert!(!h.contains_key(AUTHORIZATION));
        assert_eq!(h.get(COOKIE).map(|v| v.as_bytes()), Some(&b"a=1"[..]));
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic YWxhZGRpbjpvcGVu"),
        );
        strip_credentials(&mut h);
        assert!(
            h.contains_key(AUTHORIZATION),
            "the app's own credentials pass"
        );
    }
}
