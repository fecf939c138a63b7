//! What tools hand back: bounded text, and API errors as tool errors.

use bothy_client::ClientError;
use rmcp::model::{CallToolResult, ContentBlock as Content};

/// The most text a tool returns in one piece (file contents, logs): an
/// agent's context is the scarce thing, and the rest can be read in parts
/// (`exec` with `tail`, `head`, `sed -n`).
pub const MAX_TEXT: usize = 64 * 1024;

/// Keeps the first `head` and the last `tail` bytes of a stream of any
/// length, counting what it dropped: a command's start says what ran, its
/// end says how it ended, and the middle is what an agent can spare.
#[derive(Debug)]
pub struct Capped {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    head_max: usize,
    tail_max: usize,
    total: u64,
}

impl Capped {
    pub fn new(head_max: usize, tail_max: usize) -> Self {
        Self {
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            head_max,
            tail_max,
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_max.saturating_sub(self.head.len());
        let take = room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.len() >= self.tail_max {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_max..]);
            return;
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_max);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    /// Bytes pushed in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes dropped from the middle.
    pub fn omitted(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// The kept text (invalid UTF-8 replaced), with a marker where bytes
    /// were dropped that says how many.
    pub fn text(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail = String::from_utf8_lossy(&tail);
        match self.omitted() {
            0 => format!("{head}{tail}"),
            n => format!(
                "{head}\n[... {n} bytes omitted of {} ...]\n{tail}",
                self.total
            ),
        }
    }
}

/// `text` cut to `max` bytes (at a character boundary) with a note saying
/// how much was left out and how to get it.
pub fn truncate(text: &str, max: usize, how_to_get_more: &str) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[truncated: {} of {} bytes shown; {how_to_get_more}]",
        &text[..end],
        end,
        text.len()
    )
}

/// A successful result: `value` as JSON text (and as structured content,
/// for clients that read it).
pub fn json(value: serde_json::Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    let mut result = CallToolResult::success(vec![Content::text(text)]);
    if value.is_object() {
        result.structured_content = Some(value);
    }
    result
}

pub fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![Content::text(text.into())])
}

/// A failed call as the agent should see it: the daemon's own message
/// (it says what to do) and its error code, as a tool error rather than a
/// protocol error, which clients do not show to the model.
pub fn api_error(e: &ClientError) -> CallToolResult {
    let text = match (e.status(), e.code()) {
        (Some(status), Some(code)) => format!("{e} (HTTP {status} {code})"),
        _ => e.to_string(),
    };
    CallToolResult::error(vec![Content::text(text)])
}

/// A tool error for input the tool itself refuses before calling the API.
pub fn refused(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![Content::text(text.into())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = Capped::new(4, 4);
        c.push(b"abc");
        c.push(b"de");
        assert_eq!(c.text(), "abcde");
        assert_eq!(c.omitted(), 0);
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_says_how_much_went() {
        let mut c = Capped::new(3, 4);
        for chunk in [&b"012"[..], b"3456", b"789", b"abcdef"] {
            c.push(chunk);
        }
        assert_eq!(c.omitted(), 16 - 7);
        let t = c.text();
        assert!(
            t.starts_with("012\n[... 9 bytes omitted of 16 ...]\n"),
            "{t}"
        );
        assert!(t.ends_with("cdef"), "{t}");
    }

    #[test]
    fn one_huge_push_keeps_its_end() {
        let mut c = Capped::new(2, 3);
        c.push(&[b'x'; 100]);
        c.push(b"yz");
        assert_eq!(c.omitted(), 102 - 5);
        assert!(c.text().ends_with("xyz"));
    }

    #[test]
    fn truncation_respects_characters_and_says_so() {
        let s = "héllo wörld";
        let t = truncate(s, 2, "read less");
        assert!(t.starts_with("h\n[truncated: 1 of"), "{t}");
        assert!(t.contains("read less"));
        assert_eq!(truncate("short", 10, "x"), "short");
    }

    #[test]
    fn api_errors_keep_the_daemons_message() {
        let e = bothy_client::ClientError::Api {
            status: 403,
            code: "quota_exceeded".into(),
            message: "this token may create at most 1 sprite".into(),
        };
        let r = api_error(&e);
        assert_eq!(r.is_error, Some(true));
        let body = serde_json::to_string(&r.content).expect("serialises");
        assert!(body.contains("at most 1 sprite"), "{body}");
        assert!(body.contains("quota_exceeded"), "{body}");
    }
}
