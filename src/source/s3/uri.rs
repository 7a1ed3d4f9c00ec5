//! S3 source URIs: `s3://BUCKET/KEY`, `s3+http://HOST:PORT/BUCKET/KEY`, `s3+https://…`.

use super::MAX_KEY;

/// A parsed S3 source URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUri {
    /// `None` for `s3://` (AWS); else the server, `http://host[:port]` or `https://…`.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The key as written, or a prefix ending in `/` (empty: the whole bucket).
    pub key: String,
}

impl ObjectUri {
    /// Parses `s3://BUCKET/KEY`, `s3+http://HOST[:PORT]/BUCKET/KEY` or `s3+https://…`.
    ///
    /// The error text says what is wrong and what to write instead.
    pub fn parse(uri: &str) -> std::result::Result<ObjectUri, String> {
        let (endpoint, rest) = if let Some(rest) = uri.strip_prefix("s3://") {
            (None, rest)
        } else {
            let (scheme, rest) = if let Some(r) = uri.strip_prefix("s3+http://") {
                ("http", r)
            } else if let Some(r) = uri.strip_prefix("s3+https://") {
                ("https", r)
            } else {
                return Err(format!(
                    "\"{uri}\" is not an s3://, s3+http:// or s3+https:// URI"
                ));
            };
            let (host, rest) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(format!(
                    "{uri}: no server; write {scheme}://HOST:PORT/BUCKET/KEY, e.g. s3+http://127.0.0.1:9000/bucket/key"
                ));
            }
            if host.contains('@') {
                return Err(format!(
                    "{uri}: credentials do not go into the URI; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                ));
            }
            let url = reqwest::Url::parse(&format!("{scheme}://{host}/"))
                .map_err(|e| format!("{uri}: \"{host}\" is not a server address ({e})"))?;
            if url.path() != "/" || url.query().is_some() {
                return Err(format!("{uri}: \"{host}\" is not a server address"));
            }
            (Some(format!("{scheme}://{host}")), rest)
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!(
                "{uri}: no bucket; write …/BUCKET/KEY, or …/BUCKET/PREFIX/ for every object below a prefix"
            ));
        }
        let Some((bucket, key)) = rest.split_once('/') else {
            return Err(format!(
                "{uri}: add the key after the bucket (…/{rest}/key), or a prefix ending in / (…/{rest}/dir/)"
            ));
        };
        let bucket_ok = !bucket.is_empty()
            && bucket.len() <= 255
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && bucket.as_bytes()[0].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(format!(
                "{uri}: \"{bucket}\" is not a bucket name (letters, digits, '.', '-' and '_', starting with a letter or digit)"
            ));
        }
        if key.len() > MAX_KEY {
            return Err(format!("{uri}: the key is longer than {MAX_KEY} bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(format!("{uri}: the key holds a control character"));
        }
        if key.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "{uri}: the key has a . or .. segment, which URLs resolve away; such an object cannot be named here"
            ));
        }
        Ok(ObjectUri {
            endpoint,
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// True for a prefix (a key ending in `/`, or the whole bucket).
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// The URI of `key` in the same bucket, as a user writes it.
    pub fn with_key(&self, key: &str) -> String {
        match &self.endpoint {
            None => format!("s3://{}/{key}", self.bucket),
            Some(e) => format!("s3+{e}/{}/{key}", self.bucket),
        }
    }

    /// The last segment of the key or prefix (the bucket for the whole bucket): an object's
    /// title, a prefix's `io.arenadata.oci-packer.dir` annotation and archive title.
    pub fn base_name(&self) -> String {
        self.key
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.bucket)
            .to_string()
    }
}

impl std::fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.with_key(&self.key))
    }
}

/// Bytes of a key in a URL path: everything but unreserved characters and `/` percent-encoded
/// (what Signature V4 signs for S3).
pub(super) const KEY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// The same for query values (`/` encoded too).
pub(super) const QUERY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub(super) fn encode(s: &str, set: &'static percent_encoding::AsciiSet) -> String {
    percent_encoding::utf8_percent_encode(s, set).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = ObjectUri::parse("s3://bkt/a/b c.txt").expect("parse");
        assert_eq!(
            u,
            ObjectUri {
                endpoint: None,
                bucket: "bkt".into(),
                key: "a/b c.txt".into()
            }
        );
        assert!(!u.is_prefix());
        assert_eq!(u.base_name(), "b c.txt");
        assert_eq!(u.to_string(), "s3://bkt/a/b c.txt");
        let p = ObjectUri::parse("s3+http://127.0.0.1:9000/bkt/data/").expect("parse");
        assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(p.is_prefix());
        assert_eq!(p.base_name(), "data");
        assert_eq!(p.to_string(), "s3+http://127.0.0.1:9000/bkt/data/");
        let whole = ObjectUri::parse("s3+https://minio.local/bkt/").expect("parse");
        assert!(whole.is_prefix());
        assert_eq!(whole.base_name(), "bkt");
        for (bad, says) in [
            ("s3://bkt", "add the key"),
            ("s3:///key", "no bucket"),
            ("s3://", "no bucket"),
            ("s3+http:///bkt/k", "no server"),
            (
                "s3+http://user:pw@host/bkt/k",
                "credentials do not go into the URI",
            ),
            ("s3://b*d/k", "not a bucket name"),
            ("s3://bkt/a\nb", "control character"),
            ("s3://bkt/x/../f.txt", ". or .. segment"),
            ("s3+http://h:1/bkt/../other/k", ". or .. segment"),
            ("s3://bkt/x/..", ". or .. segment"),
        ] {
            let e = ObjectUri::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
