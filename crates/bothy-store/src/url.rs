//! `--object-store` URLs.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, RetryConfig};

use crate::StoreError;

/// Where chunks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:///absolute/path`: a directory on this host (created if missing).
    File(PathBuf),
    /// `s3://bucket?endpoint=http://127.0.0.1:9000&region=us-east-1`; both
    /// parameters optional. Credentials come from the usual `AWS_*` variables.
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: Option<String>,
    },
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::BadUrl {
            url: s.to_string(),
            why: why.to_string(),
        };
        let url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad("file URLs take no host; write file:///path"));
                }
                if url.query().is_some() {
                    return Err(bad("file URLs take no parameters"));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute path"))?;
                if path == std::path::Path::new("/") {
                    return Err(bad("refusing to use / as the store"));
                }
                Ok(StoreUrl::File(path))
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("missing bucket"))?;
                if !url.path().is_empty() && url.path() != "/" {
                    return Err(bad("prefixes inside the bucket are not supported yet"));
                }
                let mut endpoint = None;
                let mut region = None;
                for (k, v) in url.query_pairs() {
                    match &*k {
                        "endpoint" => {
                            let e =
                                url::Url::parse(&v).map_err(|e| bad(&format!("endpoint: {e}")))?;
                            if !matches!(e.scheme(), "http" | "https") {
                                return Err(bad("endpoint must be http:// or https://"));
                            }
                            endpoint = Some(v.into_owned());
                        }
                        "region" => region = Some(v.into_owned()),
                        other => {
                            return Err(bad(&format!(
                                "unknown parameter {other:?} (known: endpoint, region)"
                            )))
                        }
                    }
                }
                Ok(StoreUrl::S3 {
                    bucket: bucket.to_string(),
                    endpoint,
                    region,
                })
            }
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

impl StoreUrl {
    /// Opens the store. A file store's directory is created if missing.
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>, StoreError> {
        match self {
            StoreUrl::File(path) => {
                std::fs::create_dir_all(path).map_err(|e| {
                    StoreError::Permanent(format!(
                        "cannot create object store directory {}: {e}",
                        path.display()
                    ))
                })?;
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| StoreError::Permanent(format!("{}: {e}", path.display())))?;
                Ok(Arc::new(fs))
            }
            StoreUrl::S3 {
                bucket,
                endpoint,
                region,
            } => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(client_retry());
                if let Some(region) = region {
                    b = b.with_region(region);
                }
                if let Some(endpoint) = endpoint {
                    // Plain HTTP only where it cannot leave the host: an S3
                    // server on loopback in tests and small installs.
                    let loopback = url::Url::parse(endpoint)
                        .ok()
                        .and_then(|u| u.host_str().map(is_loopback))
                        .unwrap_or(false);
                    b = b
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(loopback);
                }
                let s3 = b.build().map_err(|e| {
                    StoreError::Permanent(format!(
                        "S3 store {bucket}: {e} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                    ))
                })?;
                Ok(Arc::new(s3))
            }
        }
    }
}

/// No retries inside the S3 client: [`crate::RetryPolicy`] retries every
/// store call already, and retries in both layers multiply: with the
/// client's default 10 retries, a put to a stopped server took 34 s instead
/// of the policy's 11 s, and up to minutes when the client's backoff grows.
pub(crate) fn client_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_s3() {
        assert_eq!(
            "file:///var/lib/bothy/objects".parse::<StoreUrl>().unwrap(),
            StoreUrl::File("/var/lib/bothy/objects".into())
        );
        assert_eq!(
            "s3://bkt?endpoint=http://127.0.0.1:9000&region=us-east-1"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::S3 {
                bucket: "bkt".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into())
            }
        );
        assert_eq!(
            "s3://bkt".parse::<StoreUrl>().unwrap(),
            StoreUrl::S3 {
                bucket: "bkt".into(),
                endpoint: None,
                region: None
            }
        );
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        for bad in [
            "",
            "/plain/path",
            "file://host/path",
            "file:///",
            "file:///x?y=1",
            "http://example.com/x",
            "s3://",
            "s3://bkt/prefix",
            "s3://bkt?endpoint=ftp://x",
            "s3://bkt?colour=blue",
            "gs://bkt",
        ] {
            let err = bad.parse::<StoreUrl>().expect_err(bad);
            assert!(
                err.to_string().contains("file:///"),
                "error should say what to use: {err}"
            );
        }
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(!is_loopback("s3.amazonaws.com"));
    }

    #[test]
    fn opens_a_file_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::File(dir.path().join("objs"));
        url.open().unwrap();
        assert!(dir.path().join("objs").is_dir());
    }

    #[test]
    fn opens_an_s3_store_without_contacting_it() {
        let url: StoreUrl = "s3://bkt?endpoint=http://127.0.0.1:1&region=us-east-1"
            .parse()
            .unwrap();
        url.open().unwrap();
    }
}
