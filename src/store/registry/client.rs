//! HTTP for one registry host: the auth challenge (anonymous, Basic, Bearer tokens cached
//! per scope and renewed on 401), the transport's retries for requests that can be replayed,
//! and errors that keep method, URL, status and the registry's error code.

use std::collections::HashMap;
use std::time::Duration;

use backon::Retryable;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Mutex;

use super::credentials::{basic_header, Credential};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::FileRef;
use crate::store::staging::Hashable;
use crate::transport;

pub use crate::transport::RegistryOptions;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, String>,
}

/// A request body that can be produced again for a retry.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`, streamed (re-opened on every attempt, and
    /// refused when it is no longer the file it was: see [`FileRef::open`]).
    File {
        /// The file.
        file: FileRef,
        /// First byte.
        offset: u64,
        /// Bytes to send.
        len: u64,
        /// For a whole file: the digest its bytes must have. They are hashed as they are
        /// read and the last chunk is held back until the digest matches, so a file edited
        /// in place since it was hashed never completes an upload under the old digest.
        expect: Option<Digest>,
    },
    /// A whole file or remote object, hashed as it is sent (the hasher is reset on every
    /// attempt, which reads the content again from its start) and reported to `progress` as
    /// staging of its name.
    Hashing {
        /// The content.
        content: crate::store::staging::Hashable,
        /// Its size.
        len: u64,
        /// Receives every byte sent.
        hasher: std::sync::Arc<std::sync::Mutex<crate::digest::Hasher>>,
        /// Progress observer.
        progress: crate::progress::Progress,
    },
}

impl Body {
    /// A whole file of `len` bytes that this process wrote and hashed itself (a spooled
    /// copy): sent as it is.
    pub fn file(file: FileRef, len: u64) -> Body {
        Body::File {
            file,
            offset: 0,
            len,
            expect: None,
        }
    }

    /// The whole source file of the blob `desc`, which the user may edit meanwhile: its
    /// digest is checked as it is read (when it is one this build can compute).
    pub fn source_file(file: FileRef, desc: &oci_spec::image::Descriptor) -> Body {
        Body::File {
            file,
            offset: 0,
            len: desc.size(),
            expect: Digest::parse(desc.digest().as_ref()).ok(),
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } | Body::Hashing { len, .. } => *len,
        }
    }

    /// True when it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `offset` of this body (a chunk).
    pub fn slice(&self, offset: u64, len: u64) -> Body {
        match self {
            Body::Empty => Body::Empty,
            Body::Bytes(b) => Body::Bytes(b.slice(offset as usize..(offset + len) as usize)),
            // A part of a file cannot be checked against the whole's digest: the registry
            // checks the digest when the session is closed.
            Body::File {
                file,
                offset: base,
                len: whole,
                expect,
            } => Body::File {
                file: file.clone(),
                offset: base + offset,
                len,
                expect: expect.clone().filter(|_| offset == 0 && len == *whole),
            },
            Body::Hashing {
                content: Hashable::File(file),
                ..
            } => Body::File {
                file: file.clone(),
                offset,
                len,
                expect: None,
            },
            // Ingestion sends a hashing body whole, in one PATCH; only uploads of a known
            // digest are cut into chunks.
            Body::Hashing {
                content: Hashable::Remote(r),
                ..
            } => unreachable!("a remote hashing body ({}) is never cut", r.name()),
        }
    }
}

/// The next `len` bytes of `file` as a body stream that fails — with the library error
/// "changed while packing" inside the `io::Error` — when the file ends before `len` bytes
/// or, for a `whole` file, goes on past them, instead of sending a short or long body the
/// server would cut. Read ahead on a blocking thread (see [`read_ahead`]), hashed there for
/// `check`.
fn exact_stream(
    file: std::fs::File,
    path: &std::path::Path,
    len: u64,
    whole: bool,
    check: Option<Check>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use crate::store::verify::{exactly, SizeFault};
    // One byte more than `len` of a whole file, to see a file that grew.
    let chunks = read_ahead(file, path, len + u64::from(whole), check);
    let path = path.to_path_buf();
    exactly(chunks, len, move |fault| {
        let what = match fault {
            SizeFault::Longer => format!("{len} bytes, then more"),
            SizeFault::Shorter(sent) => format!("{len} bytes, then only {sent} to send"),
        };
        std::io::Error::other(crate::fsutil::changed_while_packing(&path, &what))
    })
}

/// What the thread of [`read_ahead`] does with the hash of what it reads.
#[derive(Debug, Clone)]
enum Check {
    /// Keeps the hash of every chunk handed on so far in the shared hasher.
    Publish(std::sync::Arc<std::sync::Mutex<crate::digest::Hasher>>),
    /// Holds the last chunk back until the whole content has this digest; otherwise ends
    /// with "changed while packing" instead.
    Expect(Digest),
}

/// Chunks read from `file`'s position on (`path` for messages), `limit` bytes at most: read
/// on a blocking thread that stays a few chunks ahead of the sender and hashes each chunk for
/// `check` while it is still in that core's cache, so reading, hashing and sending overlap.
/// The thread stops when the stream is dropped.
fn read_ahead(
    mut file: std::fs::File,
    path: &std::path::Path,
    limit: u64,
    check: Option<Check>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use std::io::Read;
    /// Chunk size: a quarter of a core's L2 cache here; 4 chunks ahead.
    const CHUNK: u64 = 256 << 10;
    const AHEAD: usize = 4;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(AHEAD);
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        // This attempt's own hasher. Published (copied out) before each chunk is handed on
        // (a sender may end the request as soon as the last byte went, without asking for
        // more): a thread of an attempt that was given up replaces the state at most once,
        // right away, and never mixes its bytes into the next attempt's.
        let mut own = check.as_ref().map(|_| crate::digest::Hasher::new());
        // With an expected digest, each chunk is handed on only once the next was read: the
        // last one goes only when the digest is right.
        let mut held: Option<Bytes> = None;
        let send = |chunk| tx.blocking_send(chunk).is_ok();
        let mut left = limit;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left) as usize];
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    send(Err(e));
                    return;
                }
            };
            buf.truncate(n);
            left -= n as u64;
            if let Some(h) = own.as_mut() {
                h.update(&buf);
            }
            let chunk = Bytes::from(buf);
            let ready = match &check {
                Some(Check::Publish(shared)) => {
                    let h = own.as_ref().expect("a hasher with a check").clone();
                    *shared.lock().unwrap_or_else(|p| p.into_inner()) = h;
                    Some(chunk)
                }
                Some(Check::Expect(_)) => held.replace(chunk),
                None => Some(chunk),
            };
            if let Some(c) = ready {
                if !send(Ok(c)) {
                    return; // the request ended
                }
            }
        }
        if let (Some(Check::Expect(expected)), Some(h)) = (&check, own) {
            let (got, n) = h.finish();
            if got != *expected {
                let changed = crate::fsutil::rehashed_differently(&path, n, got, expected);
                send(Err(std::io::Error::other(changed)));
                return;
            }
            if let Some(c) = held {
                send(Ok(c));
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// Opens the file of a body: never waiting on a FIFO swapped in, never another file than
/// the one staged (a symlink to a file elsewhere would send that file's bytes).
fn open_body_file(file: &FileRef) -> Result<std::fs::File> {
    let opened = file
        .open()
        .map_err(|e| crate::error::from_read_error(e, |e| Error::io("reading", &file.path, e)))?;
    Ok(opened.0)
}

/// HTTP client for one registry host.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `https://host[:port]` or `http://…`.
    pub base: String,
    /// `host[:port]`.
    pub host: String,
    credential: Option<Credential>,
    auth: Mutex<AuthState>,
    options: RegistryOptions,
    /// Where blobs of this host were seen (repositories to mount them from).
    pub locations: crate::store::locations::BlobLocations,
}

/// Why one attempt of a request did not give an answer to hand back.
struct Failure {
    /// The error to report when there are no more retries.
    error: Error,
    /// The answer of a transient failure status, handed to the caller when retries run out.
    response: Option<Response>,
    /// Worth another try.
    transient: bool,
    /// What the server asked us to wait.
    wait: Option<Duration>,
}

/// Requests that may be sent again after a failure: reads, and manifest PUTs (their body is
/// in memory and the PUT replaces). A POST opens a session and a PATCH or upload PUT appends
/// to one: those are never re-sent; an upload restarts in a new session instead.
fn replayable(method: &Method, url: &str) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || (*method == Method::PUT && url.contains("/manifests/"))
}

fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    // key="value" pairs; values may contain commas inside quotes (scope="a:b:pull,push").
    let mut rest = params;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(val.to_string()),
            "service" => service = Some(val.to_string()),
            _ => {}
        }
        rest = next;
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

impl Client {
    /// A client for `host` with the given options (credentials looked up in SPEC §4 order).
    pub fn new(host: &str, opts: &RegistryOptions) -> Result<Client> {
        let http = transport::client(opts)?;
        let credential = match (&opts.username, &opts.password) {
            (Some(u), Some(p)) => Some(Credential {
                username: u.clone(),
                password: p.clone(),
            }),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "give both a user name (-u) and a password (-p or --password-stdin)",
                ))
            }
            (None, None) => super::credentials::lookup(host, opts.config.as_deref())?,
        };
        let scheme = if opts.plain_http { "http" } else { "https" };
        Ok(Client {
            http,
            base: format!("{scheme}://{host}"),
            host: host.to_string(),
            credential,
            auth: Mutex::new(AuthState::default()),
            options: opts.clone(),
            locations: crate::store::locations::BlobLocations::for_user(!opts.no_cache),
        })
    }

    /// The `Authorization` header for `scope`, fetching a token when the registry wants one.
    async fn authorization(&self, scope: &str) -> Result<Option<String>> {
        let mut state = self.auth.lock().await;
        match state.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credential.as_ref().map(basic_header)),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(t) = state.tokens.get(scope) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let token = self.fetch_token(&realm, service.as_deref(), scope).await?;
                state.tokens.insert(scope.to_string(), token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let url = reqwest::Url::parse(realm).map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!(
                    "{}: the registry names an invalid token service \"{realm}\" ({e})",
                    self.host
                ),
            )
        })?;
        let mut req = self
            .http
            .get(url.clone())
            .timeout(transport::deadline(&self.options, None));
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s));
        }
        req = req.query(&query);
        if let Some(c) = &self.credential {
            // Credentials travel to a token service only over TLS, or over plain HTTP to the
            // registry's own host when the user chose plain HTTP for that registry
            // (`--plain-http`): they go there in clear anyway.
            let own_host =
                reqwest::Url::parse(&self.base).is_ok_and(|b| b.host_str() == url.host_str());
            if url.scheme() != "https" && !(own_host && self.base.starts_with("http://")) {
                return Err(Error::new(
                    ErrorKind::Authentication,
                    format!(
                        "{}: the registry sends credentials to the token service {realm} over plain HTTP; refusing (the registry must name an https:// token service)",
                        self.host
                    ),
                )
                .with_reference(realm));
            }
            req = req.header(AUTHORIZATION, basic_header(c));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport::network_error("GET", realm, e))?;
        let status = resp.status();
        if !status.is_success() {
            let kind = if matches!(status.as_u16(), 401 | 403) {
                ErrorKind::Authentication
            } else {
                ErrorKind::Registry
            };
            return Err(Error::new(
                kind,
                format!(
                    "{}: the token service {realm} refused access ({status}){}",
                    self.host,
                    self.login_hint()
                ),
            )
            .with_status(status.as_u16(), None));
        }
        let body =
            transport::read_body(resp, transport::SMALL_BODY, &format!("token from {realm}"))
                .await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!("token from {realm}: invalid JSON ({e})"),
            )
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Registry,
                    format!("token from {realm}: no token in the answer"),
                )
            })
    }

    fn login_hint(&self) -> String {
        if self.credential.is_some() {
            "; check the user name and password".into()
        } else {
            format!(
                "; log in with `oci-packer login {}` or pass -u/-p",
                self.host
            )
        }
    }

    async fn body(&self, body: &Body) -> Result<(reqwest::Body, Option<u64>)> {
        Ok(match body {
            Body::Empty => (reqwest::Body::from(Vec::new()), Some(0)),
            Body::Bytes(b) => (reqwest::Body::from(b.clone()), Some(b.len() as u64)),
            Body::Hashing {
                content,
                len,
                hasher,
                progress,
            } => {
                use futures::{StreamExt, TryStreamExt};
                *hasher.lock().unwrap_or_else(|p| p.into_inner()) = crate::digest::Hasher::new();
                let chunks = match content {
                    // Hashed on the thread that reads it ahead.
                    Hashable::File(file) => {
                        let f = open_body_file(file)?;
                        let check = Some(Check::Publish(hasher.clone()));
                        exact_stream(f, &file.path, *len, true, check).boxed()
                    }
                    Hashable::Remote(r) => {
                        let hasher = hasher.clone();
                        r.open()
                            .await?
                            .inspect_ok(move |chunk| {
                                hasher
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .update(chunk)
                            })
                            .boxed()
                    }
                };
                let (progress, source) = (progress.clone(), content.name());
                let stream = chunks.inspect_ok(move |chunk| {
                    progress.emit(crate::progress::ProgressEvent::StageAdvanced {
                        source: source.clone(),
                        bytes: chunk.len() as u64,
                    });
                });
                (reqwest::Body::wrap_stream(stream), Some(*len))
            }
            Body::File {
                file,
                offset,
                len,
                expect,
            } => {
                use std::io::Seek;
                let path = &file.path;
                let mut f = open_body_file(file)?;
                f.seek(std::io::SeekFrom::Start(*offset))
                    .map_err(|e| Error::io("reading", path, e))?;
                // A body with an expected digest is a whole file (see `Body::slice`).
                let check = expect.clone().map(Check::Expect);
                let stream = exact_stream(f, path, *len, expect.is_some(), check);
                (reqwest::Body::wrap_stream(stream), Some(*len))
            }
        })
    }

    /// Sends a request with auth, and with the transport's retries when it can be replayed;
    /// returns any response that is not a 401 or a transient failure (the caller maps other
    /// statuses). `size` is what the request moves, for its deadline (bodies' own length by
    /// default).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        body: &Body,
    ) -> Result<Response> {
        let size = (!body.is_empty()).then(|| body.len());
        self.send_sized(method, url, scope, headers, body, size)
            .await
    }

    /// [`Client::send`] for a request that moves `size` bytes either way.
    pub async fn send_sized(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        body: &Body,
        size: Option<u64>,
    ) -> Result<Response> {
        let replay = replayable(&method, url);
        let attempt = || self.attempt(&method, url, scope, &headers, body, size);
        let outcome = attempt
            .retry(transport::backoff())
            .sleep(tokio::time::sleep)
            .when(|f: &Failure| replay && f.transient)
            .adjust(|f: &Failure, d| f.wait.or(d))
            .notify(|f: &Failure, d| {
                tracing::debug!(%url, error = %f.error, wait = ?d, "retrying");
            })
            .await;
        match outcome {
            Ok(r) => Ok(r),
            Err(Failure {
                response: Some(r), ..
            }) => Ok(r),
            Err(f) => Err(f.error),
        }
    }

    /// One attempt, with one renewal of the credentials on a 401.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        scope: &str,
        headers: &HeaderMap,
        body: &Body,
        size: Option<u64>,
    ) -> std::result::Result<Response, Failure> {
        let fail = |error: Error| Failure {
            error,
            response: None,
            transient: false,
            wait: None,
        };
        let mut reauthed = false;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone())
                .timeout(transport::deadline(&self.options, size));
            if let Some(h) = self.authorization(scope).await.map_err(fail)? {
                req = req.header(AUTHORIZATION, h);
            }
            let (b, len) = self.body(body).await.map_err(fail)?;
            if let Some(n) = len {
                req = req.header(CONTENT_LENGTH, n);
            }
            let resp = match req.body(b).send().await {
                Ok(r) => r,
                Err(e) => {
                    if let Some(error) = transport::body_error(&e) {
                        return Err(Failure {
                            error,
                            response: None,
                            transient: false,
                            wait: None,
                        });
                    }
                    let transient = transport::is_transient(&e);
                    return Err(Failure {
                        error: transport::network_error(method.as_str(), url, e),
                        response: None,
                        transient,
                        wait: None,
                    });
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !reauthed {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                let mut state = self.auth.lock().await;
                state.tokens.remove(scope); // expired, or not enough scope
                state.challenge = challenge;
                drop(state);
                if self.authorization(scope).await.map_err(fail)?.is_some() {
                    reauthed = true;
                    continue;
                }
            }
            if transport::is_transient_status(status) {
                return Err(Failure {
                    error: Error::new(ErrorKind::Registry, format!("{method} {url}: {status}"))
                        .with_status(status.as_u16(), None),
                    wait: transport::retry_after(resp.headers()),
                    response: Some(resp),
                    transient: true,
                });
            }
            return Ok(resp);
        }
    }

    /// Sends a request and returns a successful (2xx) response; any other is turned into an
    /// [`Error`] about `what`.
    pub async fn expect(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        body: &Body,
        what: &str,
    ) -> Result<Response> {
        let resp = self.send(method.clone(), url, scope, headers, body).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.error(&method, url, what, resp).await)
        }
    }

    /// An error for an unexpected response: method, URL, status, the registry's error code
    /// and message, and what to do.
    pub async fn error(&self, method: &Method, url: &str, what: &str, resp: Response) -> Error {
        let status = resp.status();
        let wait = transport::retry_after(resp.headers());
        // An error body is for the message only: read a bounded prefix, never all of it.
        let text = transport::read_body(resp, 64 << 10, "error")
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let (code, message) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("errors")?.get(0).cloned())
            .map(|e| {
                (
                    e.get("code").and_then(|c| c.as_str()).map(str::to_string),
                    e.get("message")
                        .and_then(|c| c.as_str())
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .unwrap_or((None, text.chars().take(200).collect()));
        // A HEAD answer has no body to carry a code: the one the Distribution spec gives
        // that status for that kind of URL stands in for it.
        let code = code.or_else(|| {
            let blob = url.contains("/blobs/");
            let known = match status.as_u16() {
                401 => "UNAUTHORIZED",
                403 => "DENIED",
                404 if blob => "BLOB_UNKNOWN",
                404 if url.contains("/manifests/") => "MANIFEST_UNKNOWN",
                _ => return None,
            };
            (*method == Method::HEAD).then(|| known.to_string())
        });
        let (kind, hint) = match status.as_u16() {
            401 | 403 => (ErrorKind::Authentication, self.login_hint()),
            404 => (ErrorKind::NotFound, format!("; check that {what} exists")),
            _ => (ErrorKind::Registry, String::new()),
        };
        // The registry's words reach terminals and logs: no control characters.
        let code = code.map(|c| crate::text::printable(&c).into_owned());
        let message = crate::text::printable(&message).into_owned();
        let detail = match (&code, message.is_empty()) {
            (Some(c), false) => format!(" {c}: {message}"),
            (Some(c), true) => format!(" {c}"),
            (None, false) => format!(" {message}"),
            (None, true) => String::new(),
        };
        Error::new(
            kind,
            format!("{method} {url}: {status}{detail} ({what}){hint}"),
        )
        .with_status(status.as_u16(), code)
        .with_reference(url)
        .with_retry_after(wait)
    }
}

/// Headers with one entry.
pub fn header(name: reqwest::header::HeaderName, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
