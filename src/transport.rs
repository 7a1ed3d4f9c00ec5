//! The one HTTP transport: every client (registries, `http(s)://` downloads) is built here,
//! with one TLS setup, one redirect policy, one retry policy and one set of bounds.
//!
//! - Redirects: at most 10, never from https to http (reqwest drops credentials on a redirect
//!   to another host or port; refusing the downgrade covers the same host over plain HTTP).
//! - Retries ([`backoff`]): exponential with jitter, decided by the error's *type* — a refused
//!   or reset connection, a timeout, a cut body, HTTP 408/429/5xx — never for a certificate
//!   or a redirect error, and only for requests that can be replayed (the caller decides).
//! - Deadlines ([`deadline`]): a body that stalls for the read timeout fails, and every
//!   request has an overall deadline a trickling server cannot stretch.
//! - Bodies ([`read_body`]): every answer the program reads into memory has a cap.

use std::path::PathBuf;
use std::time::Duration;

use backon::ExponentialBuilder;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use crate::error::{Error, ErrorKind, Result};

/// Connection and credential options for registries (the CLI's global flags).
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Talk plain HTTP (`--plain-http`).
    pub plain_http: bool,
    /// Skip TLS certificate verification (`--insecure`).
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// User name (`-u`).
    pub username: Option<String>,
    /// Password (`-p`, `--password-stdin`).
    pub password: Option<String>,
    /// Docker config file (`--registry-config`).
    pub config: Option<PathBuf>,
    /// Use no cache at all (`--no-cache`): downloads, digests of files and objects, and
    /// known blob locations are neither read nor written.
    pub no_cache: bool,
    /// Read timeout (`--timeout`, default 30 s): a server that sends nothing for this long
    /// fails the request; small requests also end after twice this, blob transfers after
    /// that plus the time their bytes take at 64 KiB/s.
    pub timeout: Option<Duration>,
}

/// The default read timeout: a body that sends nothing for this long fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `Retry-After` we honour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The slowest average rate a blob transfer may have before its deadline ends it (64 KiB/s).
const MIN_RATE: u64 = 64 << 10;
/// Cap of error bodies and other small answers (tokens, pings).
pub const SMALL_BODY: u64 = 1 << 20;

/// Retries after the first attempt.
const RETRIES: usize = 4;

/// The read timeout in force.
pub fn timeout(opts: &RegistryOptions) -> Duration {
    opts.timeout.unwrap_or(DEFAULT_TIMEOUT)
}

/// The overall deadline of one request attempt that moves `size` bytes (`None`: a small
/// request — a manifest, a token, a HEAD): twice the read timeout, plus the time the bytes
/// take at [`MIN_RATE`].
pub fn deadline(opts: &RegistryOptions, size: Option<u64>) -> Duration {
    timeout(opts) * 2 + Duration::from_secs(size.unwrap_or(0) / MIN_RATE)
}

/// The retry schedule: 4 retries, 200 ms doubling to at most 10 s, with jitter.
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(RETRIES)
        .with_jitter()
}

/// Why one attempt of a request failed: the error, and whether another attempt may help.
#[derive(Debug)]
pub struct Failure {
    /// The error to report when there are no more attempts.
    pub error: Error,
    /// Worth another attempt (a network fault, a 408/429/5xx answer).
    pub transient: bool,
}

impl Failure {
    /// A failure another attempt cannot mend.
    pub fn fatal(error: Error) -> Failure {
        Failure {
            error,
            transient: false,
        }
    }

    /// A failure another attempt may mend.
    pub fn transient(error: Error) -> Failure {
        Failure {
            error,
            transient: true,
        }
    }

    /// A network error of `method url`, transient by its type.
    pub fn network(method: &str, url: &str, e: reqwest::Error) -> Failure {
        Failure {
            transient: is_transient(&e),
            error: network_error(method, url, e),
        }
    }
}

/// Runs `attempt` again under the retry policy ([`backoff`]) while it fails transiently;
/// `what` names it in the warning logged before each new attempt.
pub async fn retried<T, Fut>(what: &str, attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
{
    use backon::Retryable;
    attempt
        .retry(backoff())
        .sleep(tokio::time::sleep)
        .when(|f: &Failure| f.transient)
        .notify(|f: &Failure, wait| {
            tracing::warn!(what, error = %f.error, ?wait, "failed, retrying");
        })
        .await
        .map_err(|f| f.error)
}

/// Builds the HTTP client for `opts`: rustls with the system roots plus `--ca-file`,
/// `--insecure`, the redirect policy, connect and read timeouts.
pub fn client(opts: &RegistryOptions) -> Result<reqwest::Client> {
    build_client(opts, true)
}

/// The same client that follows no redirect: for signed S3 requests, whose security token
/// header reqwest would carry to any host a redirect names (S3 itself redirects only with
/// a region header, which the S3 source follows by signing again).
pub fn client_without_redirects(opts: &RegistryOptions) -> Result<reqwest::Client> {
    build_client(opts, false)
}

fn build_client(opts: &RegistryOptions, redirects: bool) -> Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|p| p.scheme() == "https")
            && attempt.url().scheme() == "http";
        if downgrade {
            let to = attempt.url().to_string();
            attempt.error(format!("refusing a redirect from https to http ({to})"))
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    });
    let policy = if redirects {
        policy
    } else {
        reqwest::redirect::Policy::none()
    };
    let read = timeout(opts);
    let mut builder = reqwest::Client::builder()
        .connect_timeout(read.min(Duration::from_secs(30)))
        .read_timeout(read)
        .redirect(policy)
        .user_agent(concat!("oci-packer/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(opts.insecure);
    if let Some(ca) = &opts.ca_file {
        let pem = std::fs::read(ca).map_err(|e| Error::io("reading --ca-file", ca, e))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("--ca-file {}: not a PEM certificate ({e})", ca.display()),
            )
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot build the HTTP client: {e}"),
        )
        .with_source(e)
    })
}

/// Every error in `e`'s chain, including those that `std::io::Error` wraps without
/// reporting them as its source.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(c) = cur {
        out.push(c);
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        cur = c.source();
    }
    out
}

fn tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    chain(e)
        .into_iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>())
}

/// The server's certificate was refused: asking again will not help.
pub fn is_certificate(e: &reqwest::Error) -> bool {
    matches!(
        tls_error(e),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}

/// A failure that may go away when the request is sent again: a refused, reset or timed-out
/// connection, or a body cut off — not a certificate, redirect or request-building error.
pub fn is_transient(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() || tls_error(e).is_some() {
        return false;
    }
    // A body cut off mid-stream is reported as a decode or body error.
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

/// Statuses worth another try: 408, 429 and every 5xx.
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || status.is_server_error()
}

/// A `Retry-After` in seconds, when present and not longer than we are willing to wait.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .filter(|d| *d <= MAX_RETRY_AFTER)
}

/// reqwest's Display hides the cause ("error sending request"); show the whole chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = String::new();
    for c in chain(e) {
        let t = c.to_string();
        if !s.contains(&t) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&t);
        }
    }
    s
}

/// The library error a request body's stream failed with (a file that changed while it was
/// sent), when that is why the request failed: not a network fault, and not worth a retry.
pub fn body_error(e: &reqwest::Error) -> Option<Error> {
    chain(e).into_iter().find_map(|c| {
        let carried = c.downcast_ref::<Error>()?;
        let mut err = Error::new(carried.kind(), carried.message());
        if let Some(p) = carried.path() {
            err = err.with_path(p);
        }
        Some(err)
    })
}

/// A network error for `method url`, classified by type, with what to do.
pub fn network_error(method: &str, url: &str, e: reqwest::Error) -> Error {
    let hint = if is_certificate(&e) {
        "; trust the server's CA with --ca-file FILE, or skip verification with --insecure"
    } else if matches!(tls_error(&e), Some(rustls::Error::InvalidMessage(_))) {
        "; is it a plain-HTTP server? pass --plain-http"
    } else if e.is_timeout() {
        "; the server stopped answering (raise --timeout for very slow links)"
    } else {
        ""
    };
    Error::new(
        ErrorKind::Network,
        format!("{method} {url}: {}{hint}", error_chain(&e)),
    )
    .with_reference(url)
    .with_source(e)
}

/// Reads a response body into memory, at most `cap` bytes; a longer body is an error and the
/// connection is dropped without reading the rest.
pub async fn read_body(resp: reqwest::Response, cap: u64, what: &str) -> Result<Bytes> {
    let url = resp.url().to_string();
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_long(what, cap));
    }
    let mut stream = resp.bytes_stream();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| network_error("GET", &url, e))?;
        if (data.len() + chunk.len()) as u64 > cap {
            return Err(too_long(what, cap));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(data))
}

fn too_long(what: &str, cap: u64) -> Error {
    Error::new(
        ErrorKind::Registry,
        format!("{what}: the server's answer is longer than {cap} bytes; refusing to read it"),
    )
}

/// The transport as `object_store`'s HTTP connector, for the S3 credential providers (web
/// identity, container and instance metadata): their token requests go through the same
/// client, TLS setup and deadlines; their answers are small and read whole, up to
/// [`SMALL_BODY`]. Object requests never go through it.
#[derive(Debug, Clone)]
pub struct Connector(pub reqwest::Client);

#[derive(Debug)]
struct TokenService(reqwest::Client);

impl object_store::client::HttpConnector for Connector {
    fn connect(
        &self,
        _options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(TokenService(
            self.0.clone(),
        )))
    }
}

#[async_trait::async_trait]
impl object_store::client::HttpService for TokenService {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> std::result::Result<object_store::client::HttpResponse, object_store::client::HttpError>
    {
        use object_store::client::{HttpError, HttpErrorKind};
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        *request.timeout_mut() = Some(DEFAULT_TIMEOUT);
        if !body.is_empty() {
            let bytes = body.as_bytes().cloned().ok_or_else(|| {
                HttpError::new(
                    HttpErrorKind::Request,
                    Error::new(ErrorKind::Internal, "a token request of several parts"),
                )
            })?;
            *request.body_mut() = Some(reqwest::Body::from(bytes));
        }
        let resp = self.0.execute(request).await.map_err(|e| {
            let kind = if e.is_connect() {
                HttpErrorKind::Connect
            } else if e.is_timeout() {
                HttpErrorKind::Timeout
            } else {
                HttpErrorKind::Request
            };
            HttpError::new(kind, e)
        })?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        let data = read_body(resp, SMALL_BODY, "credentials answer")
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Decode, e))?;
        let mut out = object_store::client::HttpResponse::new(data.into());
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_grow_with_size() {
        let opts = RegistryOptions {
            timeout: Some(Duration::from_secs(2)),
            ..RegistryOptions::default()
        };
        assert_eq!(deadline(&opts, None), Duration::from_secs(4));
        assert_eq!(
            deadline(&opts, Some(1 << 30)),
            Duration::from_secs(4 + 16384)
        );
    }

    #[test]
    fn retry_after_is_bounded() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().expect("value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, "3600".parse().expect("value"));
        assert_eq!(retry_after(&h), None);
    }
}
