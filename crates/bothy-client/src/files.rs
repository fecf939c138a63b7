//! A box's files over the filesystem API (`/v1/sprites/{name}/fs/...`), in
//! the shape `sprites-py` sends: `path` in the query, raw bytes both ways,
//! listings as `{"entries": [{name, path, size, mode, modTime, isDir}]}`.

use bytes::Bytes;
use serde_json::Value;

use crate::{Client, Result};

impl Client {
    /// `GET /v1/sprites/{name}/fs/read?path=`: the whole file.
    pub async fn fs_read(&self, name: &str, path: &str) -> Result<Bytes> {
        let mut url = self.url(&["v1", "sprites", name, "fs", "read"]);
        url.query_pairs_mut().append_pair("path", path);
        self.bytes(self.http.get(url)).await
    }

    /// `PUT /v1/sprites/{name}/fs/write?path=&mode=&mkdirParents=`: replaces
    /// the file with `data`; `mode` is octal text such as `0644`.
    pub async fn fs_write(
        &self,
        name: &str,
        path: &str,
        data: Vec<u8>,
        mode: &str,
        mkdir_parents: bool,
    ) -> Result<()> {
        let mut url = self.url(&["v1", "sprites", name, "fs", "write"]);
        url.query_pairs_mut()
            .append_pair("path", path)
            .append_pair("mode", mode)
            .append_pair("mkdirParents", if mkdir_parents { "true" } else { "false" });
        let req = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data);
        self.empty(req).await
    }

    /// `GET /v1/sprites/{name}/fs/list?path=`: the daemon's listing as it is.
    pub async fn fs_list(&self, name: &str, path: &str) -> Result<Value> {
        let mut url = self.url(&["v1", "sprites", name, "fs", "list"]);
        url.query_pairs_mut().append_pair("path", path);
        self.json(self.http.get(url)).await
    }
}
