//! A deliberately tiny HTTP/1.1 client over `TcpStream`: the tests must be able to
//! send bodies no well-behaved client library would (malformed JSON, oversized
//! bodies, wrong headers) and see the daemon's exact answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a 2xx answer.
    pub fn assert_ok(&self, context: &str) -> &Self {
        assert!(
            (200..300).contains(&self.status),
            "{context}: HTTP {} with body {:?}",
            self.status,
            self.text()
        );
        self
    }

    /// Asserts the status and that the body is the API's error shape
    /// `{"error": code, "message": text}` with a non-empty message; returns the code.
    pub fn assert_error(&self, status: u16, context: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "{context}: wanted HTTP {status}, got {} with body {:?}",
            self.status,
            self.text()
        );
        let body = self.json();
        let code = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: error body has no string \"error\": {body}"));
        let message = body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: error body has no string \"message\": {body}"));
        assert!(
            !message.trim().is_empty(),
            "{context}: empty error message in {body}"
        );
        code.to_string()
    }
}

/// One request on a fresh connection (`Connection: close`).
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Vec<u8>,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            token: None,
            content_type: None,
            body: Vec::new(),
        }
    }

    pub fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.content_type = Some("application/json");
        self.body = value.to_string().into_bytes();
        self
    }

    pub fn raw_body(mut self, content_type: &'a str, body: Vec<u8>) -> Self {
        self.content_type = Some(content_type);
        self.body = body;
        self
    }

    pub fn send(self, addr: SocketAddr) -> Response {
        let what = format!("{} {}", self.method, self.path);
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: cannot connect to {addr}: {e}"));
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));

        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        if let Some(t) = self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(ct) = self.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");

        // Write from another thread: a server may answer (413) and stop reading
        // before a large body is fully sent; the answer must still be read.
        let mut writer = stream
            .try_clone()
            .unwrap_or_else(|e| panic!("{what}: cannot clone socket: {e}"));
        let body = self.body;
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.write_all(&body);
        });

        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        let _ = sender.join();
        if let Err(e) = read {
            // A reset after the answer arrived still leaves the answer in `raw`.
            if raw.is_empty() {
                panic!("{what}: reading the answer failed: {e}");
            }
        }
        parse_response(&raw).unwrap_or_else(|e| {
            panic!(
                "{what}: bad HTTP answer ({e}): {:?}",
                String::from_utf8_lossy(&raw)
            )
        })
    }
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty answer")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|e| e.to_string())?;
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("bad chunk size {size_hex:?}: {e}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}
