//! The edge: every box's URL. The daemon's listeners route by host: the
//! API for its own names, box `NAME` for `NAME.DOMAIN` (`NAME--ORG.DOMAIN`
//! for other organisations). A box's URL reaches the service that owns its
//! HTTP port (else port 8080) on the box's own loopback, through its
//! network namespace; nothing is published on the host. A private URL
//! (`url_settings.auth = "sprite"`) needs a token of the box's organisation,
//! as a bearer header or a browser session ([`session`]); a request to a
//! sleeping box wakes it and waits for its service.

pub mod forward;
pub mod host;
mod listen;
pub mod session;
pub mod tls;

pub use listen::{serve_connections, ConnInfo, Listener};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, SET_COOKIE, TRANSFER_ENCODING,
};
use axum::http::{HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use bothy_control::{Boxes, Control, SpriteRow};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::ApiError;
use forward::BoxClient;
use host::Target;
use session::Sessions;

/// How long the API's port answer is remembered per box (the agent is
/// asked again after it, so a new HTTP service is picked up).
const PORT_TTL: Duration = Duration::from_secs(2);
/// The largest login form the edge reads.
const MAX_LOGIN_FORM: usize = 8 * 1024;

/// How box URLs look, for the `url` field of a sprite.
#[derive(Debug, Clone)]
pub struct Urls {
    pub scheme: &'static str,
    pub domain: String,
    /// Left out of URLs when it is the scheme's default.
    pub port: u16,
}

impl Urls {
    pub fn of(&self, org: &str, name: &str) -> String {
        let host = host::sprite_host(org, name, &self.domain);
        match (self.scheme, self.port) {
            ("http", 80) | ("https", 443) => format!("{}://{host}/", self.scheme),
            (s, p) => format!("{s}://{host}:{p}/"),
        }
    }
}

/// What the edge is configured with.
#[derive(Clone)]
pub struct EdgeSettings {
    /// Box URLs are `NAME.DOMAIN`; lower case, no trailing dot.
    pub domain: String,
    /// Signs browser sessions.
    pub session_key: [u8; 32],
    /// How long a request waits for a box's service to accept.
    pub wait: Duration,
    pub urls: Urls,
}

impl EdgeSettings {
    /// Settings for a daemon on `api` with box URLs under `localhost` and a
    /// fresh session key (tests, and daemons that were given nothing).
    pub fn local(api: std::net::SocketAddr) -> Self {
        Self {
            domain: "localhost".into(),
            session_key: rand::random(),
            wait: Duration::from_secs(30),
            urls: Urls {
                scheme: "http",
                domain: "localhost".into(),
                port: api.port(),
            },
        }
    }
}

/// Serves box URLs.
pub struct Edge<B: Boxes> {
    control: Control<B>,
    settings: EdgeSettings,
    sessions: Sessions,
    client: BoxClient<B>,
    ports: Mutex<HashMap<String, (u16, Instant)>>,
}

impl<B: Boxes> Edge<B> {
    pub fn new(control: Control<B>, settings: EdgeSettings) -> Self {
        Self {
            client: forward::client(control.clone(), settings.wait),
            sessions: Sessions::new(settings.session_key),
            control,
            settings,
            ports: Mutex::new(HashMap::new()),
        }
    }

    /// Answers one request from any listener: to the API (`api` when this
    /// listener serves it) or to a box's URL.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        api: Option<axum::Router>,
    ) -> Response<Body> {
        // Both framings at once is the classic smuggling set-up: no guess.
        let headers = req.headers();
        if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
            return close(ApiError::bad_request(
                "the request has both Transfer-Encoding and Content-Length; send one",
            ));
        }
        let host = match host::request_host(req.uri(), req.headers()) {
            Ok(h) => h,
            Err(host::BadHost(why)) => {
                return close(ApiError::bad_request(format!("bad host: {why}")))
            }
        };
        match (host::classify(&host, &self.settings.domain), api) {
            (Target::Api, Some(router)) => {
                use tower::ServiceExt;
                match router.oneshot(req.map(Body::new)).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                }
            }
            (Target::Api, None) => ApiError::NotFound(format!(
                "this address serves sprite URLs only (NAME.{}); the API is on the daemon's API address",
                self.settings.domain
            ))
            .into_response(),
            (Target::NoSuchSprite, _) => ApiError::NotFound(format!(
                "no sprite answers at {host}; sprite URLs are NAME.{} or NAME--ORG.{}",
                self.settings.domain, self.settings.domain
            ))
            .into_response(),
            (Target::Sprite { org, name }, _) => match self.sprite(req, &org, &name, &conn).await {
                Ok(res) => res,
                Err(e) => e.into_response(),
            },
        }
    }

    async fn sprite(
        &self,
        mut req: Request<Incoming>,
        org: &str,
        name: &str,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, ApiError> {
        let row = self.control.url_target(org, name).await?;
        if row.url_auth != "public" {
            match req.uri().path() {
                session::LOGIN_PATH => return self.login(req, &row, conn).await,
                session::LOGOUT_PATH => return Ok(logout(conn)),
                _ => {}
            }
            if !self.authorized(&req, &row).await {
                return Ok(unauthorized(&req, &row));
            }
        }
        let awake = self.control.ensure_running(&row).await?;
        let port = self.port(&row).await?;
        let origin = forward::Origin {
            ip: conn.peer.ip(),
            https: conn.https,
            authority: authority(&req)?,
        };
        let upgrade = forward::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        forward::prepare(&mut req, &row.id, port, &origin)?;
        let mut res = self.client.request(req).await.map_err(forward::failure)?;
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client)) = (res.status(), client_upgrade) {
            let answer = forward::switching(&res);
            forward::splice(client, hyper::upgrade::on(&mut res), awake);
            return Ok(answer);
        }
        Ok(forward::respond(res, awake))
    }

    /// A bearer token of the box's organisation (or an admin's), or a
    /// browser session of this box.
    async fn authorized(&self, req: &Request<Incoming>, row: &SpriteRow) -> bool {
        if let Some(token) = crate::auth::bearer_in(req.headers()) {
            return match self.control.authenticate(token).await {
                Ok(caller) => opens(&caller, row),
                Err(_) => false,
            };
        }
        let cookies = req
            .headers()
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        session::cookie_values(cookies)
            .into_iter()
            .any(|v| self.sessions.verify(&row.id, v))
    }

    /// `GET` shows the login form; `POST` takes a token from it and sets
    /// the session cookie.
    async fn login(
        &self,
        req: Request<Incoming>,
        row: &SpriteRow,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, ApiError> {
        let query_next = req
            .uri()
            .query()
            .and_then(|q| form_value(q.as_bytes(), "next"));
        if req.method() != Method::POST {
            return Ok(html(
                StatusCode::OK,
                session::login_page(&row.name, &session::safe_next(query_next.as_deref()), None),
            ));
        }
        let body = http_body_util::Limited::new(req.into_body(), MAX_LOGIN_FORM)
            .collect()
            .await
            .map_err(|_| ApiError::PayloadTooLarge("the login form is too large".into()))?
            .to_bytes();
        let next = session::safe_next(form_value(&body, "next").as_deref());
        let token = form_value(&body, "token").unwrap_or_default();
        let ok = match self.control.authenticate(token.trim()).await {
            Ok(caller) => opens(&caller, row),
            Err(_) => false,
        };
        if !ok {
            return Ok(html(
                StatusCode::UNAUTHORIZED,
                session::login_page(
                    &row.name,
                    &next,
                    Some("That token is unknown, expired, or of another organization."),
                ),
            ));
        }
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::SEE_OTHER;
        let cookie = session::set_cookie(&self.sessions.issue(&row.id), conn.https);
        if let (Ok(loc), Ok(cookie)) =
            (HeaderValue::from_str(&next), HeaderValue::from_str(&cookie))
        {
            res.headers_mut().insert(LOCATION, loc);
            res.headers_mut().insert(SET_COOKIE, cookie);
        }
        Ok(res)
    }

    /// The port the box's URL goes to, remembered briefly.
    async fn port(&self, row: &SpriteRow) -> Result<u16, ApiError> {
        let now = Instant::now();
        if let Some((port, at)) = self
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&row.id)
        {
            if now.duration_since(*at) < PORT_TTL {
                return Ok(*port);
            }
        }
        let port = self.control.http_port(row).await?;
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        if ports.len() > 10_000 {
            ports.clear();
        }
        ports.insert(row.id.clone(), (port, now));
        Ok(port)
    }
}

/// Whether `caller`'s token opens box `row`'s private URL: an admin's, or
/// one of its organisation that sees it.
fn opens(caller: &bothy_control::Caller, row: &SpriteRow) -> bool {
    caller.is_admin() || (caller.org() == row.org && caller.sees(&row.name))
}

/// The host as the client sent it (port included), for the box's `Host`.
fn authority(req: &Request<Incoming>) -> Result<String, ApiError> {
    if let Some(a) = req.uri().authority() {
        return Ok(a.as_str().to_string());
    }
    req.headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("the request names no host"))
}

fn form_value(body: &[u8], key: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut res = Response::new(Body::from(page));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// 401: browsers get the login form, other clients the API's error shape.
fn unauthorized(req: &Request<Incoming>, row: &SpriteRow) -> Response<Body> {
    let browser = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        let next = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        return html(
            StatusCode::UNAUTHORIZED,
            session::login_page(&row.name, &session::safe_next(Some(next)), None),
        );
    }
    ApiError::Unauthorized(format!(
        "sprite {:?}'s URL is private: send `Authorization: Bearer <token>` with a token of its organization, or make it public (`bothy url update -s {} --auth public`)",
        row.name, row.name
    ))
    .into_response()
}

fn logout(conn: &ConnInfo) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    res.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(session::LOGIN_PATH));
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(conn.https)) {
        res.headers_mut().insert(SET_COOKIE, v);
    }
    res
}

/// An error after which the connection must not be reused (the request's
/// framing is in doubt).
fn close(e: ApiError) -> Response<Body> {
    let mut res = e.into_response();
    res.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    res
}
