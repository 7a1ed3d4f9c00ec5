//! `proxy UPSTREAM` (SPEC §8): a read-only HTTP/1.1 file server of artifact layers by
//! title, for plain HTTP clients (curl, package managers, installers), from a registry or a
//! layout. hyper serves; the stores read, verified as they stream: a body whose digest does
//! not match is cut before its last byte, never completed.
//!
//! Bounded everywhere: at most [`UPSTREAM_SLOTS`] upstream reads at once (others wait, then
//! 504), a client that stops reading for [`CLIENT_STALL`] loses its response (so it cannot
//! pin an upstream connection), request headers must arrive within [`HEADER_TIMEOUT`], and
//! a response holds at most a few chunks in memory.

mod headers;
mod upstream;
mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, ErrorKind, Result};
use crate::options::Options;
use crate::platform::Platform;
use crate::store::ByteStream;
use headers::{byte_range, etag_matches, file_headers};
use upstream::{File, Upstream};
use watch::Watched;

/// Connections at once; more wait to be accepted. With [`CONNECTION_BUFFER`] this bounds
/// what slow clients can make the proxy hold.
pub const MAX_CONNECTIONS: usize = 512;
/// The most a connection buffers for its client (hyper's buffer limit).
const CONNECTION_BUFFER: usize = 256 << 10;
/// Upstream reads (resolutions and blob transfers) at once; more wait.
pub const UPSTREAM_SLOTS: usize = 64;
/// How long a request waits for an upstream slot before it is answered 504.
const SLOT_WAIT: Duration = Duration::from_secs(30);
/// A client that reads nothing of its response for this long loses it.
pub const CLIENT_STALL: Duration = Duration::from_secs(60);
/// Request headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// In-flight responses get this long to finish after a stop is asked for.
pub const DRAIN: Duration = Duration::from_secs(10);
/// Files up to this size are read whole (verified), sent in one piece, and kept in a
/// bounded cache by digest.
const SMALL: u64 = 256 << 10;
/// Streamed bodies go out in pieces of at least this much (fewer writes and wake-ups).
const PIECE: usize = 128 << 10;
/// `Cache-Control` max-age of a digest reference (a year: content addressed).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// How to serve (the flags of `proxy`). As JSON (the Python binding passes it so): the
/// same names in camelCase, every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeSpec {
    /// `host:port` to listen on (`--addr`, default `127.0.0.1:8080`; port 0 picks one).
    pub addr: String,
    /// Seconds a tag's answer is kept (`--tag-ttl`, default 30); digests are kept for good.
    pub tag_ttl: u64,
}

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            addr: "127.0.0.1:8080".into(),
            tag_ttl: 30,
        }
    }
}

/// A proxy bound to its address, not serving yet ([`Proxy::run`] serves).
#[derive(Debug)]
pub struct Proxy {
    listener: std::net::TcpListener,
    state: Arc<State>,
    cancel: Option<crate::runtime::Cancel>,
}

#[derive(Debug)]
struct State {
    upstream: Upstream,
    /// How long upstream work before a response may take (see [`deadline`]).
    deadline: Duration,
    slots: Arc<Semaphore>,
    tag_ttl: Duration,
}

impl Proxy {
    /// Opens the upstream (`oci://DIR` or `host[:port]`) and binds `spec.addr`. Errors:
    /// `InvalidArgument` for a bad upstream or address, `Io` when the address cannot be
    /// bound (in use, not allowed), `NotFound` for a layout that is not there.
    pub fn bind(upstream: &str, spec: &ServeSpec, options: &Options) -> Result<Proxy> {
        let tag_ttl = Duration::from_secs(spec.tag_ttl);
        let upstream = Upstream::open(upstream, tag_ttl, options)?;
        let addr: SocketAddr = spec.addr.parse().map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "--addr {}: write HOST:PORT with an IP address, e.g. 127.0.0.1:8080",
                    spec.addr
                ),
            )
        })?;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot listen on {addr}: {e} (another server there? choose --addr)"),
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::new(ErrorKind::Io, format!("listening on {addr}: {e}")))?;
        Ok(Proxy {
            listener,
            state: Arc::new(State {
                upstream,
                deadline: options
                    .registry
                    .timeout
                    .unwrap_or(crate::transport::DEFAULT_TIMEOUT),
                slots: Arc::new(Semaphore::new(UPSTREAM_SLOTS)),
                tag_ttl,
            }),
            cancel: options.cancel.clone(),
        })
    }

    /// The address it listens on (the port chosen, when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Io, format!("the listening address: {e}")))
    }

    /// Serves until the options' cancel handle fires (Ctrl-C, SIGTERM in the CLI): then it
    /// stops accepting, lets responses in flight finish for at most [`DRAIN`], and returns
    /// `Ok`.
    pub fn run(self) -> Result<()> {
        crate::runtime::block_on(serve(self))?
    }
}

async fn serve(proxy: Proxy) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(proxy.listener)
        .map_err(|e| Error::new(ErrorKind::Io, format!("listening: {e}")))?;
    let stop = proxy.cancel.map(|c| c.token().clone()).unwrap_or_default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(
        "serving {} on http://{}",
        proxy.state.upstream.name(),
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    loop {
        tokio::select! {
            accepted = accept(&listener, &connections) => {
                let Some((stream, seat)) = accepted else { continue };
                // Headers and body go out as separate writes: without this, Nagle's
                // algorithm and delayed ACKs hold small responses back ~40 ms.
                let _ = stream.set_nodelay(true);
                let state = proxy.state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let (io, progress) = Watched::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(CONNECTION_BUFFER)
                    .serve_connection(hyper_util::rt::TokioIo::new(io), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _seat = seat;
                    // A client that takes nothing of what is waiting for it for
                    // CLIENT_STALL loses its connection (and what was buffered for it).
                    tokio::select! {
                        _ = conn => {}
                        () = progress.stalled() => {
                            tracing::info!("a client read nothing for {}s: connection closed", CLIENT_STALL.as_secs());
                        }
                    }
                });
            }
            () = stop.cancelled() => break,
        }
    }
    // New connections are refused from here; those in flight finish (bounded).
    drop(listener);
    tracing::info!("stopping: letting responses in flight finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("responses still in flight after {}s were cut", DRAIN.as_secs());
        }
    }
    Ok(())
}

/// The next connection, once one of [`MAX_CONNECTIONS`] seats is free (connections wait in
/// the kernel's backlog meanwhile); `None` for a failed accept.
async fn accept(
    listener: &tokio::net::TcpListener,
    seats: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, OwnedSemaphorePermit)> {
    let seat = seats.clone().acquire_owned().await.ok()?;
    let (stream, _peer) = listener.accept().await.ok()?;
    Some((stream, seat))
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// One request, logged when its response ends.
async fn handle(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let response = match answer(&state, &req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    logged(response, method, path, started)
}

/// A response ready but for its body's bytes.
struct Answer {
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: Option<ByteStream>,
    length: u64,
}

/// An error answer: a status and our own words (never an upstream's text or credentials).
struct Refusal {
    status: StatusCode,
    message: String,
    headers: Vec<(header::HeaderName, String)>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// What the client is told about an upstream error: its kind decides.
    fn upstream(e: &Error, what: &str) -> Refusal {
        tracing::debug!(kind = %e.kind(), "{what}: the upstream failed");
        match e.kind() {
            ErrorKind::NotFound | ErrorKind::SourceNotFound => {
                Refusal::new(StatusCode::NOT_FOUND, format!("{what}: not found"))
            }
            ErrorKind::InvalidReference | ErrorKind::InvalidArgument => Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("{what}: not a valid repository, tag or digest"),
            ),
            ErrorKind::Authentication => Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("{what}: the upstream refused access"),
            ),
            ErrorKind::DigestMismatch => Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("{what}: the upstream sent content that does not match its digest"),
            ),
            ErrorKind::Network => Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("{what}: the upstream could not be reached"),
            ),
            _ => Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("{what}: the upstream failed"),
            ),
        }
    }

    fn response(self) -> Answer {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut answer = json_answer(self.status, body);
        answer.headers.extend(self.headers);
        answer
    }
}

fn json_answer(status: StatusCode, body: String) -> Answer {
    let length = body.len() as u64;
    Answer {
        status,
        headers: vec![(header::CONTENT_TYPE, "application/json".into())],
        body: Some(futures::stream::once(async move { Ok(Bytes::from(body)) }).boxed()),
        length,
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq)]
struct Route {
    repo: String,
    reference: String,
    /// `Some(title)` for one file, `None` for the listing.
    title: Option<String>,
    platform: Option<String>,
}

fn decode(s: &str) -> std::result::Result<String, Refusal> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the path is not UTF-8"))
}

/// `/REPO/REF?title=T[&platform=P]`, `/REPO/REF/files/TITLE`, `/REPO/REF/files/`; REPO may
/// be empty for a layout (`/REF`), REF is a tag or `sha256:…` (or `REPO@sha256:…`). A
/// repository may have a `files` segment and a title a `/files/` in it: every reading is
/// returned — the whole path first when `?title=` is given, then the splits at each
/// `/files/` from the first — and the first that names an artifact wins.
fn routes(path: &str, query: Option<&str>) -> std::result::Result<Vec<Route>, Refusal> {
    let bad = |m: &str| Refusal::new(StatusCode::BAD_REQUEST, m.to_string());
    let mut title = None;
    let mut platform = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "title" => &mut title,
            "platform" => &mut platform,
            _ => continue,
        };
        if slot.is_some() {
            return Err(bad(&format!("{k} is given twice; give it once")));
        }
        *slot = Some(decode(&v.replace('+', " "))?);
    }
    // With `?title=`, the whole path first (a repository may be `…/files/…`).
    let mut splits: Vec<(&str, Option<&str>)> = Vec::new();
    if title.is_some() || !path.contains("/files/") {
        splits.push((path, None));
    }
    splits.extend(
        path.match_indices("/files/")
            .take(MAX_READINGS)
            .map(|(i, m)| (&path[..i], Some(&path[i + m.len()..]))),
    );
    let mut out = Vec::new();
    for (left, files) in splits {
        let left = decode(left.trim_start_matches('/'))?;
        let (repo, reference) = match left.rsplit_once('@') {
            Some((r, d)) if d.starts_with("sha256:") => (r.to_string(), d.to_string()),
            _ => match left.rsplit_once('/') {
                Some((r, t)) => (r.to_string(), t.to_string()),
                None => (String::new(), left.clone()),
            },
        };
        if reference.is_empty() {
            continue;
        }
        let title = match files {
            Some("") => None,
            Some(t) => Some(decode(t)?),
            None => Some(title.clone().ok_or_else(|| {
                bad("say which file: ?title=TITLE, or /REPO/REF/files/TITLE (/REPO/REF/files/ lists them)")
            })?),
        };
        if title.as_deref() == Some("") {
            return Err(bad("the title is empty"));
        }
        out.push(Route {
            repo,
            reference,
            title,
            platform: platform.clone(),
        });
    }
    if out.is_empty() {
        return Err(bad("write /REPO/REF?title=TITLE or /REPO/REF/files/TITLE"));
    }
    Ok(out)
}

/// Readings of one path tried at most (see [`routes`]).
const MAX_READINGS: usize = 4;

async fn answer(
    state: &State,
    req: &Request<hyper::body::Incoming>,
) -> std::result::Result<Answer, Refusal> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut r = Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD: this server is read-only",
        );
        r.headers.push((header::ALLOW, "GET, HEAD".into()));
        return Err(r);
    }
    let path = req.uri().path();
    if path == "/healthz" {
        return Ok(json_answer(StatusCode::OK, "{\"status\":\"ok\"}".into()));
    }
    let readings = routes(path, req.uri().query())?;
    let platform = match &readings[0].platform {
        Some(p) => Some(
            Platform::parse(p)
                .map_err(|m| Refusal::new(StatusCode::BAD_REQUEST, format!("platform {p}: {m}")))?,
        ),
        None => None,
    };
    let slot = upstream_slot(state).await?;
    let mut first_error = None;
    let mut hit = None;
    for route in readings {
        let what = match route.repo.is_empty() {
            true => route.reference.clone(),
            false => format!("{}:{}", route.repo, route.reference),
        };
        match deadline(
            state.deadline,
            state.upstream.find(&route.repo, &route.reference),
        )
        .await?
        {
            Ok(found) => {
                hit = Some((route, what, found));
                break;
            }
            Err(e) => {
                let missing = matches!(
                    e.kind(),
                    ErrorKind::NotFound | ErrorKind::InvalidReference | ErrorKind::InvalidArgument
                );
                let refusal = Refusal::upstream(&e, &what);
                if !missing {
                    return Err(refusal);
                }
                first_error.get_or_insert(refusal);
            }
        }
    }
    let Some((route, what, found)) = hit else {
        return Err(first_error.expect("one reading at least"));
    };
    let files = deadline(
        state.deadline,
        state.upstream.files(&found, platform.as_ref()),
    )
    .await?
    .map_err(|e| Refusal::upstream(&e, &what))?;
    drop(slot);
    let Some(title) = route.title else {
        return Ok(listing(&files));
    };
    let file = choose(&files, &title, &what)?;
    let mut headers = file_headers(&file, &found, state.tag_ttl);
    let etag = format!("\"{}\"", file.desc.digest());
    if let Some(inm) = req.headers().get(header::IF_NONE_MATCH) {
        if etag_matches(inm, &etag) {
            return Ok(Answer {
                status: StatusCode::NOT_MODIFIED,
                headers,
                body: None,
                length: 0,
            });
        }
    }
    let size = file.desc.size();
    // `If-Range` with another validator (a date, or the ETag of other content): the whole.
    let if_range_ok = req
        .headers()
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|t| t.trim() == etag));
    let range = match req.headers().get(header::RANGE) {
        Some(r) if if_range_ok => byte_range(r, size)?,
        _ => None,
    };
    let (status, start, length) = match range {
        Some((start, end)) => {
            headers.push((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, size),
    };
    let name = format!("{what} {title}");
    let failed = |e: Error| Refusal::upstream(&e, &name);
    let slot = upstream_slot(state).await?;
    let target = found.target.clone();
    // Small: read whole and verified (or from the cache) before answering, so HEAD answers
    // as GET would; a range is cut from those verified bytes.
    let small = match size <= SMALL {
        true => Some(
            deadline(
                state.deadline,
                state.upstream.small_blob(target.as_ref(), &file.desc),
            )
            .await?
            .map_err(failed)?,
        ),
        false => None,
    };
    if method == Method::HEAD {
        return Ok(Answer {
            status,
            headers,
            body: None,
            length,
        });
    }
    if let Some(data) = small {
        let data = data.slice(start as usize..(start + length) as usize);
        let body = futures::stream::once(async move {
            let _slot = slot;
            Ok(data)
        })
        .boxed();
        return Ok(Answer {
            status,
            headers,
            body: Some(body),
            length,
        });
    }
    let whole = start == 0 && length == size;
    let stream = if whole {
        // The whole file (also as a range): verified as it streams, the last piece held
        // back until the digest matched.
        let blob = deadline(state.deadline, target.fetch(&file.desc))
            .await?
            .map_err(failed)?;
        crate::store::blob_stream(blob, &file.desc, &target.name())
            .await
            .map_err(failed)?
    } else {
        // A part cannot be checked against the digest: the whole blob is verified once
        // first (one pass per blob and process; parallel ranges wait for the same pass).
        state
            .upstream
            .verify_once(target.as_ref(), &file.desc)
            .await
            .map_err(failed)?;
        deadline(
            state.deadline,
            target.fetch_range(&file.desc, start, length),
        )
        .await?
        .map_err(failed)?
    };
    let desc = file.desc.clone();
    Ok(Answer {
        status,
        headers,
        body: Some(paced(stream, desc.digest().to_string(), slot)),
        length,
    })
}

/// Each piece of upstream work before a response starts gets the network timeout
/// (`--timeout`, 30 s by default) once, retries included; then 504.
async fn deadline<T>(
    limit: Duration,
    work: impl std::future::Future<Output = T>,
) -> std::result::Result<T, Refusal> {
    tokio::time::timeout(limit, work).await.map_err(|_| {
        Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the upstream did not answer within {}s", limit.as_secs()),
        )
    })
}

/// An upstream slot, waited for at most [`SLOT_WAIT`].
async fn upstream_slot(state: &State) -> std::result::Result<OwnedSemaphorePermit, Refusal> {
    tokio::time::timeout(SLOT_WAIT, state.slots.clone().acquire_owned())
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream is busy; try again",
            )
        })?
        .map_err(|_| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "stopping"))
}

/// The one file titled `title`: 404 when none, 409 when members of the index hold
/// different files under it.
fn choose(files: &[File], title: &str, what: &str) -> std::result::Result<File, Refusal> {
    let hits: Vec<&File> = files.iter().filter(|f| f.title == title).collect();
    let Some(first) = hits.first() else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("{what}: no file titled {title} (GET …/files/ lists them)"),
        ));
    };
    if hits.iter().any(|f| f.desc.digest() != first.desc.digest()) {
        let platforms: Vec<String> = hits
            .iter()
            .map(|f| f.platform.clone().unwrap_or_else(|| "no platform".into()))
            .collect();
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "{what}: {} different files are titled {title} (platforms: {}); choose one \
                 with ?platform=OS/ARCH",
                hits.len(),
                platforms.join(", ")
            ),
        ));
    }
    Ok((*first).clone())
}

fn listing(files: &[File]) -> Answer {
    let list: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            serde_json::json!({
                "title": f.title,
                "digest": f.desc.digest().to_string(),
                "size": f.desc.size(),
                "mediaType": f.desc.media_type().to_string(),
                "platform": f.platform,
            })
        })
        .collect();
    json_answer(StatusCode::OK, serde_json::Value::Array(list).to_string())
}

/// The body, handed over through a small channel by a task that reads upstream; the body
/// holds the upstream slot until it ends, so memory is bounded by the slots. A client that
/// takes nothing for [`CLIENT_STALL`] loses its connection (the watchdog of [`Watched`]),
/// which ends the task and frees the slot; an upstream error cuts the response.
fn paced(mut stream: ByteStream, digest: String, slot: OwnedSemaphorePermit) -> ByteStream {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    tokio::spawn(async move {
        let mut piece = bytes::BytesMut::new();
        loop {
            let item = stream.next().await;
            // Small network chunks are gathered into pieces; an error or the end sends
            // what was gathered first (an error then cuts the response).
            let (send, end) = match item {
                Some(Ok(chunk)) if piece.is_empty() && chunk.len() >= PIECE => {
                    (Some(Ok(chunk)), None)
                }
                Some(Ok(chunk)) if piece.len() + chunk.len() < PIECE => {
                    piece.extend_from_slice(&chunk);
                    continue;
                }
                Some(Ok(chunk)) => {
                    piece.extend_from_slice(&chunk);
                    (Some(Ok(piece.split().freeze())), None)
                }
                Some(Err(e)) => {
                    tracing::warn!(%digest, "the response was cut: {e}");
                    (None, Some(Err(e)))
                }
                None => (None, None),
            };
            let rest = (!piece.is_empty()).then(|| Ok(piece.split().freeze()));
            let finished = send.is_none();
            for item in send.into_iter().chain(rest).chain(end) {
                if tx.send_timeout(item, CLIENT_STALL).await.is_err() {
                    return;
                }
            }
            if finished {
                return;
            }
        }
    });
    // The slot goes with the body: what is buffered for a client counts until it is sent.
    futures::stream::poll_fn(move |cx| {
        let _slot = &slot;
        rx.poll_recv(cx)
    })
    .boxed()
}

/// The HTTP response of an answer; its access-log line is written when the body ends.
fn logged(answer: Answer, method: Method, path: String, started: Instant) -> Response<Body> {
    let status = answer.status;
    let mut builder = Response::builder().status(status);
    for (name, value) in &answer.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            builder = builder.header(name, v);
        }
    }
    if status != StatusCode::NOT_MODIFIED {
        builder = builder.header(header::CONTENT_LENGTH, answer.length);
    }
    let line = AccessLine {
        method,
        path,
        status: status.as_u16(),
        bytes: 0,
        started,
    };
    let body: Body = match answer.body {
        None => {
            drop(line);
            Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed_unsync()
        }
        Some(stream) => {
            let mut line = line;
            let counted = stream.map(move |item| {
                if let Ok(chunk) = &item {
                    line.count(chunk.len());
                }
                item.map(Frame::data)
            });
            StreamBody::new(counted).boxed_unsync()
        }
    };
    builder.body(body).unwrap_or_else(|_| {
        Response::new(
            Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
    })
}

/// One access-log line (method, path, status, bytes, ms), written when dropped — when the
/// response's body ended, completed or cut.
struct AccessLine {
    method: Method,
    path: String,
    status: u16,
    bytes: u64,
    started: Instant,
}

impl AccessLine {
    /// Counts bytes sent (a method, so that a closure holds the whole line, not one field).
    fn count(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        tracing::info!(
            target: "oci_packer::proxy::access",
            "{} {} {} {} {}ms",
            self.method,
            self.path,
            self.status,
            self.bytes,
            self.started.elapsed().as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::headers::disposition;
    use super::*;

    #[test]
    fn readings() {
        let route = |p: &str, q: Option<&str>| routes(p, q).map(|mut r| r.remove(0));
        let r = route(
            "/example/service/v1",
            Some("title=a%20b.txt&platform=linux/arm64"),
        )
        .ok()
        .expect("route");
        assert_eq!(r.repo, "example/service");
        assert_eq!(r.reference, "v1");
        assert_eq!(r.title.as_deref(), Some("a b.txt"));
        assert_eq!(r.platform.as_deref(), Some("linux/arm64"));
        let r = route("/repo/v1/files/dir/x%2By.txt", None)
            .ok()
            .expect("route");
        assert_eq!(r.title.as_deref(), Some("dir/x+y.txt"));
        let r = route("/repo/v1/files/", None).ok().expect("route");
        assert_eq!(r.title, None);
        let r = route("/v1", Some("title=t")).ok().expect("route");
        assert_eq!((r.repo.as_str(), r.reference.as_str()), ("", "v1"));
        let r = route("/repo@sha256:ab", Some("title=t"))
            .ok()
            .expect("route");
        assert_eq!(
            (r.repo.as_str(), r.reference.as_str()),
            ("repo", "sha256:ab")
        );
        assert!(route("/repo/v1", None).is_err());
        assert!(route("/", Some("title=t")).is_err());
        // A repository with a `files` segment: both readings, the first split first.
        let r = route("/example/files/v1", Some("title=a.txt"))
            .ok()
            .expect("route");
        assert_eq!(
            (r.repo.as_str(), r.title.as_deref()),
            ("example/files", Some("a.txt"))
        );
        let r = routes("/example/files/v1/files/a.txt", None)
            .ok()
            .expect("routes");
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].repo.as_str(), r[0].reference.as_str()),
            ("", "example")
        );
        assert_eq!(
            (r[1].repo.as_str(), r[1].reference.as_str()),
            ("example/files", "v1")
        );
        assert_eq!(r[1].title.as_deref(), Some("a.txt"));
    }

    #[test]
    fn dispositions() {
        assert_eq!(disposition("dir/a.txt"), "attachment; filename=\"a.txt\"");
        assert_eq!(
            disposition("ü \"x\".txt"),
            "attachment; filename=\"_ _x_.txt\"; filename*=UTF-8''%C3%BC%20%22x%22.txt"
        );
    }

    #[test]
    fn ranges_and_etags() {
        let v = |s: &str| HeaderValue::from_str(s).expect("header");
        for (header, want) in [
            ("bytes=100-199", Some((100, 199))),
            ("bytes=-10", Some((990, 999))),
            ("bytes=0-1,5-6", None),
            ("bytes=0-10,5-15", None),
            ("bytes=-99999", Some((0, 999))),
            ("bytes=5-4", None),
            ("BYTES=0-1", Some((0, 1))),
            ("bytes=990-5000", Some((990, 999))),
        ] {
            assert_eq!(
                byte_range(&v(header), 1000).ok().flatten(),
                want,
                "{header}"
            );
        }
        assert!(byte_range(&v("bytes=-0"), 1000).is_err());
        assert!(byte_range(&v("bytes=2000-"), 1000).is_err());
        assert_eq!(byte_range(&v("lines=1-2"), 1000).ok().flatten(), None);
        assert!(etag_matches(&v("\"a\", W/\"sha256:x\""), "\"sha256:x\""));
        assert!(etag_matches(&v("*"), "\"sha256:x\""));
        assert!(!etag_matches(&v("\"sha256:y\""), "\"sha256:x\""));
    }
}
