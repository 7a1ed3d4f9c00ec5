//! Requests to one bucket: HEAD, GET and ListObjectsV2 on the one transport, signed with
//! Signature V4, each error status turned into the error it means.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, ETAG, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::credentials::{
    check_endpoint_variable, credentials, endpoint_override, env, read_profile, Credentials,
};
use super::uri::{encode, ObjectUri, KEY_SET, QUERY_SET};
use super::{MAX_EMPTY_PAGES, MAX_KEY, MAX_OBJECTS, MAX_PAGES, MAX_PAGE_BYTES, MAX_TOKEN};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::source::StageContext;
use crate::store::ByteStream;
use crate::transport::{self, Failure, RegistryOptions};

/// One bucket on one server, with its region and credentials.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(super) uri: ObjectUri,
    pub(super) http: reqwest::Client,
    pub(super) opts: RegistryOptions,
    /// `http(s)://host[:port]` of a path-style server; `None`: AWS, virtual-hosted.
    pub(super) endpoint: Option<String>,
    pub(super) region: Mutex<String>,
    pub(super) credentials: Credentials,
}

/// What a HEAD or a listing says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ObjectMeta {
    pub(super) size: u64,
    pub(super) etag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(rename = "Code", default)]
    pub(super) code: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ListPage {
    #[serde(rename = "IsTruncated", default)]
    pub(super) is_truncated: bool,
    #[serde(rename = "NextContinuationToken", default)]
    pub(super) next_token: Option<String>,
    #[serde(rename = "EncodingType", default)]
    pub(super) encoding: Option<String>,
    #[serde(rename = "Contents", default)]
    pub(super) contents: Vec<ListedObject>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ListedObject {
    #[serde(rename = "Key")]
    pub(super) key: String,
    #[serde(rename = "Size")]
    pub(super) size: u64,
    #[serde(rename = "ETag", default)]
    pub(super) etag: Option<String>,
}

impl Bucket {
    /// The bucket of `uri`, with the region and credentials of the environment (read once
    /// per pack: see [`super::Clients`]).
    pub(crate) fn open(uri: &ObjectUri, ctx: &StageContext) -> Result<Bucket> {
        let shared = &ctx.s3.0;
        let http = match shared.http.get() {
            Some(c) => c.clone(),
            None => {
                let c = transport::client_without_redirects(&ctx.registry)?;
                shared.http.get_or_init(|| c).clone()
            }
        };
        let aws = uri.endpoint.is_none();
        if aws {
            check_endpoint_variable()?;
        }
        let known = shared
            .access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&aws)
            .cloned();
        let (region, credentials) = match known {
            Some(access) => access,
            None => {
                let profile_name = env("AWS_PROFILE")
                    .or_else(|| env("AWS_DEFAULT_PROFILE"))
                    .unwrap_or_else(|| "default".into());
                let profile = read_profile(&profile_name)?;
                let region = env("AWS_REGION")
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .or_else(|| profile.region.clone())
                    .unwrap_or_else(|| "us-east-1".into());
                let credentials = credentials(uri, &region, &ctx.http, &profile, &profile_name)?;
                tracing::debug!(uri = %uri, region, credentials = %credentials.from, "S3 access");
                shared
                    .access
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(aws, (region.clone(), credentials.clone()));
                (region, credentials)
            }
        };
        Ok(Bucket {
            uri: uri.clone(),
            http,
            opts: ctx.registry.clone(),
            endpoint: uri.endpoint.clone().or_else(endpoint_override),
            region: Mutex::new(region),
            credentials,
        })
    }

    pub(super) fn region(&self) -> String {
        self.region
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The URL of `key`, and of the bucket's listing with `query`.
    pub(super) fn url(&self, key: Option<&str>, query: &str) -> String {
        let b = &self.uri.bucket;
        let path = key.map(|k| encode(k, KEY_SET)).unwrap_or_default();
        let base = match &self.endpoint {
            Some(e) => format!("{e}/{b}"),
            // Virtual-hosted unless the name has a dot (which breaks the wildcard certificate).
            None if !b.contains('.') => format!("https://{b}.s3.{}.amazonaws.com", self.region()),
            None => format!("https://s3.{}.amazonaws.com/{b}", self.region()),
        };
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        match key {
            Some(_) => format!("{base}/{path}{q}"),
            None if self.endpoint.is_none() && !b.contains('.') => format!("{base}/{q}"),
            None => format!("{base}{q}"),
        }
    }

    /// One signed request (no retries); `size` moves the deadline for object bodies.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        size: Option<u64>,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            Failure::fatal(Error::new(
                ErrorKind::InvalidArgument,
                format!("{}: \"{url}\" is not a URL ({e})", self.uri),
            ))
        })?;
        let mut request = reqwest::Request::new(method.clone(), parsed);
        *request.headers_mut() = headers;
        if let Some(provider) = &self.credentials.provider {
            let credential = provider.get_credential().await.map_err(|e| {
                Failure::transient(
                    Error::new(
                        ErrorKind::Authentication,
                        format!(
                            "{}: cannot get credentials from {}: {e}",
                            self.uri, self.credentials.from
                        ),
                    )
                    .with_reference(self.uri.to_string()),
                )
            })?;
            self.sign(&mut request, &credential)?;
        }
        *request.timeout_mut() = Some(transport::deadline(&self.opts, size));
        self.http
            .execute(request)
            .await
            .map_err(|e| Failure::network(method.as_str(), url, e))
    }

    /// Adds the Signature V4 headers to `request`.
    pub(super) fn sign(
        &self,
        request: &mut reqwest::Request,
        credential: &AwsCredential,
    ) -> std::result::Result<(), Failure> {
        let mut signed = http::Request::builder()
            .method(request.method().clone())
            .uri(request.url().as_str())
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| Failure::fatal(Error::new(ErrorKind::Internal, e.to_string())))?;
        *signed.headers_mut() = request.headers().clone();
        let region = self.region();
        AwsAuthorizer::new(credential, "s3", &region)
            .try_authorize(&mut signed, None)
            .map_err(|e| {
                Failure::fatal(Error::new(
                    ErrorKind::Internal,
                    format!("{}: cannot sign the request: {e}", self.uri),
                ))
            })?;
        *request.headers_mut() = signed.headers().clone();
        Ok(())
    }

    /// A request with the transport's retries, and one more try in the region an AWS
    /// answer names; an error status becomes the error it means for `key` (`None`: the
    /// listing of `prefix`).
    pub(super) async fn request(
        &self,
        method: Method,
        key: Option<&str>,
        query: &str,
        headers: HeaderMap,
        size: Option<u64>,
    ) -> Result<reqwest::Response> {
        let what = self.uri.with_key(key.unwrap_or(&self.uri.key));
        let mut moved = false;
        loop {
            let attempt = || async {
                let url = self.url(key, query);
                let resp = self
                    .send(method.clone(), &url, headers.clone(), size)
                    .await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(Ok(resp));
                }
                if transport::is_transient_status(status) {
                    let code = error_code(resp).await;
                    return Err(Failure::transient(self.error(status, &code, key)));
                }
                let region = resp
                    .headers()
                    .get("x-amz-bucket-region")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(Err((resp, region)))
            };
            match transport::retried(&what, attempt).await? {
                Ok(resp) => return Ok(resp),
                Err((resp, Some(region)))
                    if !moved && self.endpoint.is_none() && region != self.region() =>
                {
                    tracing::debug!(bucket = %self.uri.bucket, region, "the bucket is in another region");
                    *self.region.lock().unwrap_or_else(|p| p.into_inner()) = region;
                    drop(resp);
                    moved = true;
                }
                Err((resp, _)) => return Err(self.refusal(resp, &method, key, query).await),
            }
        }
    }

    /// The error an answer that is not a success means: S3's error code read from its
    /// (capped) body — a HEAD has none, so the same request is asked again as a GET.
    pub(super) async fn refusal(
        &self,
        resp: reqwest::Response,
        method: &Method,
        key: Option<&str>,
        query: &str,
    ) -> Error {
        let status = resp.status();
        let mut code = String::new();
        if *method == Method::HEAD {
            if let Ok(again) = self
                .send(Method::GET, &self.url(key, query), HeaderMap::new(), None)
                .await
            {
                if !again.status().is_success() {
                    code = error_code(again).await;
                }
            }
        } else {
            code = error_code(resp).await;
        }
        self.error(status, &code, key)
    }

    pub(super) fn error(&self, status: StatusCode, code: &str, key: Option<&str>) -> Error {
        let uri = self.uri.with_key(key.unwrap_or(&self.uri.key));
        let server = self
            .endpoint
            .clone()
            .unwrap_or_else(|| "AWS S3".to_string());
        let who = &self.credentials.from;
        let (kind, message) = match (status.as_u16(), code) {
            (_, "NoSuchBucket") => (
                ErrorKind::SourceNotFound,
                format!("{uri}: {server} has no bucket \"{}\"", self.uri.bucket),
            ),
            (404, _) if key.is_some() => (
                ErrorKind::SourceNotFound,
                format!("{uri}: no such object (keys are case-sensitive; a prefix ends in /)"),
            ),
            (404, _) => (ErrorKind::SourceNotFound, format!("{uri}: not found on {server}")),
            (_, "InvalidAccessKeyId") => (
                ErrorKind::Authentication,
                format!("{uri}: {server} does not know the access key id (credentials from {who}); check AWS_ACCESS_KEY_ID or the profile"),
            ),
            (_, "SignatureDoesNotMatch") => (
                ErrorKind::Authentication,
                format!("{uri}: the secret access key does not match the access key id (credentials from {who}); check the secret"),
            ),
            (401 | 403, _) if self.credentials.provider.is_none() => (
                ErrorKind::Authentication,
                format!("{uri}: access denied to an unsigned request; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"),
            ),
            (401 | 403, c) => (
                ErrorKind::Authentication,
                format!(
                    "{uri}: access denied{} (credentials from {who}); check the key's permissions and the bucket policy",
                    if c.is_empty() { String::new() } else { format!(" ({c})") }
                ),
            ),
            (412, _) => (
                ErrorKind::SourceNotFound,
                format!("{uri}: the object changed while it was being packed; pack again"),
            ),
            (s, c) => (
                ErrorKind::Registry,
                format!(
                    "{uri}: {server} answered HTTP {s}{}",
                    if c.is_empty() { String::new() } else { format!(" ({c})") }
                ),
            ),
        };
        Error::new(kind, message)
            .with_reference(uri)
            .with_status(status.as_u16(), None)
    }

    /// Size and ETag of `key`.
    pub(super) async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let resp = self
            .request(Method::HEAD, Some(key), "", HeaderMap::new(), None)
            .await?;
        let size = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Registry,
                    format!(
                        "{}: the server did not say the object's size",
                        self.uri.with_key(key)
                    ),
                )
            })?;
        Ok(ObjectMeta {
            size,
            etag: usable_etag(header_text(resp.headers(), ETAG)),
        })
    }

    /// The object's bytes, checked against `meta`: the same version (`If-Match` its ETag)
    /// and exactly its size; a stall or a cut is a network error.
    pub(super) async fn get(&self, key: &str, meta: &ObjectMeta) -> Result<ByteStream> {
        let mut headers = HeaderMap::new();
        if let Some(v) = meta
            .etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(IF_MATCH, v);
        }
        let resp = self
            .request(Method::GET, Some(key), "", headers, Some(meta.size))
            .await?;
        let uri = self.uri.with_key(key);
        let etag = header_text(resp.headers(), ETAG);
        if let (Some(want), Some(got)) = (&meta.etag, &etag) {
            if want != got {
                return Err(Error::new(
                    ErrorKind::SourceNotFound,
                    format!("{uri}: the object changed while it was being packed (another ETag); pack again"),
                )
                .with_reference(&uri));
            }
        }
        if let Some(n) = resp.content_length().filter(|n| *n != meta.size) {
            return Err(Error::new(
                ErrorKind::Network,
                format!(
                    "{uri}: the server sends {n} bytes of an object of {}",
                    meta.size
                ),
            ));
        }
        Ok(exact(resp.bytes_stream(), meta.size, uri))
    }

    /// The objects below `prefix`, in byte order of their keys (bounded; see the module).
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let uri = self.uri.with_key(prefix);
        let mut out: Vec<(String, ObjectMeta)> = Vec::new();
        let mut token: Option<String> = None;
        let mut tokens = HashSet::new();
        let mut empty = 0;
        for _ in 0..MAX_PAGES {
            let mut query = format!(
                "list-type=2&encoding-type=url&prefix={}",
                encode(prefix, QUERY_SET)
            );
            if let Some(t) = &token {
                query.push_str(&format!("&continuation-token={}", encode(t, QUERY_SET)));
            }
            let resp = self
                .request(Method::GET, None, &query, HeaderMap::new(), None)
                .await?;
            let body =
                transport::read_body(resp, MAX_PAGE_BYTES, &format!("listing of {uri}")).await?;
            let page: ListPage = quick_xml::de::from_reader(body.as_ref()).map_err(|e| {
                Error::new(
                    ErrorKind::Registry,
                    format!("{uri}: the server's listing is not S3 XML ({e})"),
                )
            })?;
            empty = if page.contents.is_empty() {
                empty + 1
            } else {
                0
            };
            if page.is_truncated && empty > MAX_EMPTY_PAGES {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!("{uri}: the server's listing gave {MAX_EMPTY_PAGES} empty pages in a row, each saying there is more"),
                ));
            }
            let next = match (page.is_truncated, page.next_token.filter(|t| !t.is_empty())) {
                (false, _) => None,
                (true, Some(t)) if t.len() > MAX_TOKEN => {
                    return Err(Error::new(
                        ErrorKind::Registry,
                        format!("{uri}: the server's continuation token is longer than {MAX_TOKEN} bytes"),
                    ))
                }
                (true, Some(t)) if tokens.insert(Digest::of(t.as_bytes())) => Some(t),
                (true, Some(_)) => {
                    return Err(Error::new(
                        ErrorKind::Registry,
                        format!("{uri}: the server's listing repeats a continuation token"),
                    ))
                }
                (true, None) => {
                    return Err(Error::new(
                        ErrorKind::Registry,
                        format!("{uri}: the server's listing says there is more but gives no continuation token"),
                    ))
                }
            };
            let url_encoded = page.encoding.as_deref() == Some("url");
            for o in page.contents {
                let key = if url_encoded {
                    decode_key(&o.key, &uri)?
                } else {
                    o.key
                };
                let bad = |what: &str| {
                    Error::new(
                        ErrorKind::Registry,
                        format!(
                            "{uri}: the server's listing {what} (\"{}\")",
                            key.escape_debug()
                        ),
                    )
                };
                if key.len() > MAX_KEY {
                    return Err(Error::new(
                        ErrorKind::Registry,
                        format!(
                            "{uri}: the server's listing names a key longer than {MAX_KEY} bytes"
                        ),
                    ));
                }
                if !key.starts_with(prefix) {
                    return Err(bad("names a key outside the prefix"));
                }
                if out
                    .last()
                    .is_some_and(|(last, _)| last.as_bytes() >= key.as_bytes())
                {
                    return Err(bad("is out of order or names a key twice"));
                }
                if out.len() >= MAX_OBJECTS {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("{uri}: more than {MAX_OBJECTS} objects; pack a narrower prefix"),
                    ));
                }
                out.push((
                    key,
                    ObjectMeta {
                        size: o.size,
                        etag: usable_etag(o.etag),
                    },
                ));
            }
            match next {
                None => return Ok(out),
                Some(t) => token = Some(t),
            }
        }
        Err(Error::new(
            ErrorKind::Registry,
            format!("{uri}: the listing did not end after {MAX_PAGES} pages"),
        ))
    }
}

/// An ETag usable as a header value and a cache stamp, or none.
pub(super) fn usable_etag(etag: Option<String>) -> Option<String> {
    etag.filter(|e| e.len() <= 1024 && HeaderValue::from_str(e).is_ok())
}

pub(super) fn header_text(
    headers: &HeaderMap,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|v| !v.is_empty())
}

/// S3's error code from an error answer's body (at most 64 KiB read); empty when none.
pub(super) async fn error_code(resp: reqwest::Response) -> String {
    match transport::read_body(resp, 64 << 10, "S3 error").await {
        Ok(body) => quick_xml::de::from_reader::<_, ErrorBody>(body.as_ref())
            .map(|b| b.code)
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect(),
        Err(_) => String::new(),
    }
}

/// A key of a listing with `encoding-type=url`: `+` is a space, `%XX` a byte.
pub(super) fn decode_key(key: &str, uri: &str) -> Result<String> {
    let plus = key.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| {
            Error::new(
                ErrorKind::Registry,
                format!("{uri}: the server's listing holds a key that is not UTF-8"),
            )
        })
}

/// `body` as a stream of exactly `size` bytes: more, or an end before, is a network error
/// (carried inside the `io::Error`).
pub(super) fn exact(
    body: impl futures::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    size: u64,
    uri: String,
) -> ByteStream {
    use crate::store::verify::{exactly, SizeFault};
    let name = uri.clone();
    let body = body.map(move |r| {
        r.map_err(|e| std::io::Error::other(transport::network_error("GET", &name, e)))
    });
    exactly(body, size, move |fault| {
        let what = match fault {
            SizeFault::Longer => format!("more than the object's {size} bytes arrived"),
            SizeFault::Shorter(seen) => {
                format!("the connection ended after {seen} of {size} bytes")
            }
        };
        std::io::Error::other(Error::new(ErrorKind::Network, format!("{uri}: {what}")))
    })
}

/// The library error inside an `io::Error` of a stream, or the `io::Error` as one.
pub(super) fn stream_error(e: std::io::Error, uri: &str) -> Error {
    crate::error::from_read_error(e, |e| {
        Error::new(ErrorKind::Network, format!("{uri}: {e}")).with_reference(uri)
    })
}
