//! `s3://BUCKET/KEY` (AWS), `s3+http://HOST:PORT/BUCKET/KEY` and `s3+https://…` (any
//! S3-compatible server, path style): an object is one layer; a prefix ending in `/` is one
//! layer per object below it, or one archive layer.
//!
//! Requests go through the one transport (the client of `--ca-file`/`--insecure`, its
//! deadlines and retry policy), signed with AWS Signature V4 by `object_store`, whose
//! credential providers (web identity, container and instance metadata) also fetch their
//! tokens through that transport ([`crate::transport::Connector`]). Keys in a URI are written
//! as they are (`s3://b/my file.txt`), never percent-encoded by the user.
//!
//! Staging an object: a HEAD gives its size and ETag; when the private digest cache knows
//! the digest of that ETag and size, the object is not read at all — the target is asked
//! whether it has the blob, and the object is read only if it does not. Otherwise the object
//! is read once, hashed on the way into the target (a layout's spool directory, or a registry
//! upload session unless a `digest:` pin must be checked first), or into memory when small.
//! Every read is checked against the size and ETag the HEAD or listing gave.
//!
//! Listings are bounded: [`MAX_OBJECTS`] objects, [`MAX_PAGES`] pages of at most
//! [`MAX_PAGE_BYTES`] each, keys strictly increasing and inside the prefix, continuation
//! tokens never repeated.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AwsAuthorizer, AwsCredential, AwsCredentialProvider};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, ETAG, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{descriptor, with_title, Hashable, Origin, Reopen, StageContext, StagedBlob};
use crate::archive::ArchiveFormat;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::progress::ProgressEvent;
use crate::store::ByteStream;
use crate::transport::{self, Failure, RegistryOptions};

/// Objects one prefix may list, at most.
pub const MAX_OBJECTS: usize = 100_000;
/// Listing pages one prefix may take, at most (a server that always answers "there is more"
/// never ends the walk otherwise).
pub const MAX_PAGES: usize = 10_000;
/// Cap of one listing page (S3 sends at most 1,000 keys of at most 1 KiB a page).
pub const MAX_PAGE_BYTES: u64 = 4 << 20;
/// Longest continuation token taken (S3's are a few hundred bytes).
const MAX_TOKEN: usize = 4096;
/// Pages in a row that list nothing yet say there is more, at most.
const MAX_EMPTY_PAGES: usize = 100;
/// Objects up to this size are read into memory when staged (while the pack's budget,
/// [`super::IN_MEMORY_BUDGET`], lasts); larger ones stream into files.
const IN_MEMORY: u64 = 256 << 10;
/// Objects of one prefix staged at the same time.
const PREFIX_CONCURRENCY: usize = 4;
/// Longest key S3 allows, in bytes.
const MAX_KEY: usize = 1024;

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
const KEY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// The same for query values (`/` encoded too).
const QUERY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str, set: &'static percent_encoding::AsciiSet) -> String {
    percent_encoding::utf8_percent_encode(s, set).to_string()
}

/// Where credentials come from, and the credentials' provider (refreshing ones included).
#[derive(Debug, Clone)]
struct Credentials {
    provider: Option<AwsCredentialProvider>,
    /// For messages: "AWS_ACCESS_KEY_ID", "profile \"x\" in FILE", ….
    from: String,
}

/// One bucket on one server, with its region and credentials.
#[derive(Debug)]
pub(crate) struct Bucket {
    uri: ObjectUri,
    http: reqwest::Client,
    opts: RegistryOptions,
    /// `http(s)://host[:port]` of a path-style server; `None`: AWS, virtual-hosted.
    endpoint: Option<String>,
    region: Mutex<String>,
    credentials: Credentials,
}

/// What a HEAD or a listing says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectMeta {
    size: u64,
    etag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", default)]
    code: String,
}

#[derive(Debug, Deserialize)]
struct ListPage {
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextContinuationToken", default)]
    next_token: Option<String>,
    #[serde(rename = "EncodingType", default)]
    encoding: Option<String>,
    #[serde(rename = "Contents", default)]
    contents: Vec<ListedObject>,
}

#[derive(Debug, Deserialize)]
struct ListedObject {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "ETag", default)]
    etag: Option<String>,
}

/// An object read only when a target needs it ([`Reopen`]).
#[derive(Debug)]
struct Object {
    bucket: Arc<Bucket>,
    key: String,
    meta: ObjectMeta,
}

#[async_trait::async_trait]
impl Reopen for Object {
    fn name(&self) -> String {
        self.bucket.uri.with_key(&self.key)
    }

    async fn open(&self) -> Result<ByteStream> {
        self.bucket.get(&self.key, &self.meta).await
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A profile of the shared config and credentials files.
#[derive(Debug, Default)]
struct Profile {
    key_id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    region: Option<String>,
    /// The files it was found in.
    found_in: Vec<PathBuf>,
    /// The files looked in.
    read: Vec<PathBuf>,
}

/// Reads profile `name` from the shared credentials file (`[name]`) and config file
/// (`[profile name]`, `[default]`), the credentials file winning.
fn read_profile(name: &str) -> Result<Profile> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let mut p = Profile::default();
    let sources = [
        (
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            name.to_string(),
        ),
        (
            file("AWS_CONFIG_FILE", "config"),
            if name == "default" {
                "default".to_string()
            } else {
                format!("profile {name}")
            },
        ),
    ];
    for (path, section) in sources {
        let Some(path) = path else { continue };
        p.read.push(path.clone());
        let text = match read_small_file(&path) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => return Err(e),
        };
        let ini = parse_ini(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{}: not a valid AWS config file ({e})", path.display()),
            )
            .with_path(&path)
        })?;
        let Some(props) = ini.section(Some(section.as_str())) else {
            continue;
        };
        p.found_in.push(path.clone());
        let get = |k: &str| {
            props
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if p.key_id.is_none() && p.secret.is_none() {
            p.key_id = get("aws_access_key_id");
            p.secret = get("aws_secret_access_key");
            p.token = get("aws_session_token");
        }
        if p.region.is_none() {
            p.region = get("region");
        }
    }
    Ok(p)
}

/// An AWS config or credentials file: values are taken literally, as the AWS CLI does (no
/// quotes, no escapes).
fn parse_ini(text: &str) -> std::result::Result<ini::Ini, ini::ParseError> {
    let literal = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ini::ParseOption::default()
    };
    ini::Ini::load_from_str_opt(text, literal)
}

/// The text of a small regular file of the user's (at most 1 MiB, else an error); `None`
/// when it does not exist. Never waits on a FIFO put in its place.
fn read_small_file(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let f = match crate::fsutil::open_nonblocking(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let meta = f.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() || meta.len() > MAX {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{}: not an AWS config or credentials file (not a regular file of at most 1 MiB)",
                path.display()
            ),
        )
        .with_path(path));
    }
    let mut text = String::new();
    f.take(MAX)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(Some(text))
}

/// The credential chain: environment variables, then the profile (`AWS_PROFILE`, else
/// `default`) of the shared credentials and config files, then web identity and container
/// credentials when their variables are set, then — for AWS only, unless
/// `AWS_EC2_METADATA_DISABLED=true` — the instance metadata. Without any, requests go
/// unsigned (public buckets).
fn credentials(
    uri: &ObjectUri,
    region: &str,
    http: &reqwest::Client,
    profile: &Profile,
    profile_name: &str,
) -> Result<Credentials> {
    let builder = || {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&uri.bucket)
            .with_region(region)
            .with_http_connector(transport::Connector(http.clone()))
            // The transport's retry policy retries the request that needed the credential.
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
    };
    let build = |b: object_store::aws::AmazonS3Builder, from: String| {
        let store = b.build().map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{uri}: cannot set up S3 credentials ({from}): {e}"),
            )
        })?;
        Ok(Credentials {
            provider: Some(store.credentials().clone()),
            from,
        })
    };
    let stat = |key_id: String, secret: String, token: Option<String>, from: String| {
        let mut b = builder()
            .with_access_key_id(key_id)
            .with_secret_access_key(secret);
        if let Some(t) = token {
            b = b.with_token(t);
        }
        build(b, from)
    };
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            return stat(
                id,
                secret,
                env("AWS_SESSION_TOKEN"),
                "AWS_ACCESS_KEY_ID".into(),
            )
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::new(
                ErrorKind::Authentication,
                format!("{uri}: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"),
            )
            .with_reference(uri.to_string()))
        }
        (None, None) => {}
    }
    let files = || {
        profile
            .found_in
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    };
    match (&profile.key_id, &profile.secret) {
        (Some(id), Some(secret)) => {
            return stat(
                id.clone(),
                secret.clone(),
                profile.token.clone(),
                format!("profile \"{profile_name}\" in {}", files()),
            )
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::new(
                ErrorKind::Authentication,
                format!(
                    "{uri}: profile \"{profile_name}\" in {} has only one of aws_access_key_id and aws_secret_access_key",
                    files()
                ),
            )
            .with_reference(uri.to_string()))
        }
        (None, None) => {}
    }
    let chosen = env("AWS_PROFILE").is_some() || env("AWS_DEFAULT_PROFILE").is_some();
    if chosen && profile.found_in.is_empty() {
        let read: Vec<String> = profile
            .read
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return Err(Error::new(
            ErrorKind::Authentication,
            format!(
                "{uri}: AWS_PROFILE names \"{profile_name}\", which is in neither {} (set AWS_SHARED_CREDENTIALS_FILE or AWS_CONFIG_FILE for other files)",
                read.join(" nor ")
            ),
        )
        .with_reference(uri.to_string()));
    }
    if let (Some(token), Some(role)) = (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
        let mut b = builder()
            .with_config(
                object_store::aws::AmazonS3ConfigKey::WebIdentityTokenFile,
                token,
            )
            .with_config(object_store::aws::AmazonS3ConfigKey::RoleArn, role);
        if let Some(name) = env("AWS_ROLE_SESSION_NAME") {
            b = b.with_config(object_store::aws::AmazonS3ConfigKey::RoleSessionName, name);
        }
        return build(b, "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)".into());
    }
    if let Some(rel) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        let b = builder().with_config(
            object_store::aws::AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
            rel,
        );
        return build(b, "container credentials".into());
    }
    if let (Some(full), Some(file)) = (
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    ) {
        let b = builder()
            .with_config(
                object_store::aws::AmazonS3ConfigKey::ContainerCredentialsFullUri,
                full,
            )
            .with_config(
                object_store::aws::AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
                file,
            );
        return build(b, "container credentials".into());
    }
    if chosen {
        return Err(Error::new(
            ErrorKind::Authentication,
            format!(
                "{uri}: profile \"{profile_name}\" in {} has no aws_access_key_id and aws_secret_access_key; oci-packer reads keys from profiles (not role_arn, sso_* or credential_process): export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead",
                files()
            ),
        )
        .with_reference(uri.to_string()));
    }
    let metadata_off =
        env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if uri.endpoint.is_none() && endpoint_override().is_none() && !metadata_off {
        return build(builder(), "the instance metadata".into());
    }
    Ok(Credentials {
        provider: None,
        from: "no credentials (unsigned requests)".into(),
    })
}

/// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`: another server for `s3://` URIs, with
/// the variable's name.
fn endpoint_variable() -> Option<(&'static str, String)> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .into_iter()
        .find_map(|name| env(name).map(|v| (name, v.trim_end_matches('/').to_string())))
}

fn endpoint_override() -> Option<String> {
    endpoint_variable().map(|(_, v)| v)
}

/// The endpoint variable, when set, must be an `http(s)://host[:port]` URL.
fn check_endpoint_variable() -> Result<()> {
    let Some((name, value)) = endpoint_variable() else {
        return Ok(());
    };
    let parsed = reqwest::Url::parse(&value);
    if parsed
        .as_ref()
        .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
    {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{name} holds credentials; they do not go into the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ));
    }
    let ok = parsed.is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.query().is_none()
            && u.path() == "/"
    });
    if ok {
        return Ok(());
    }
    // A value with `@` may hold a password: not repeated.
    let shown = if value.contains('@') {
        String::new()
    } else {
        format!("=\"{value}\"")
    };
    Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("{name}{shown} is not a server URL; write it like http://127.0.0.1:9000 or https://s3.example.com"),
    ))
}

impl Bucket {
    /// The bucket of `uri`, with the region and credentials of the environment.
    pub(crate) fn open(uri: &ObjectUri, ctx: &StageContext) -> Result<Bucket> {
        let profile_name = env("AWS_PROFILE")
            .or_else(|| env("AWS_DEFAULT_PROFILE"))
            .unwrap_or_else(|| "default".into());
        if uri.endpoint.is_none() {
            check_endpoint_variable()?;
        }
        let profile = read_profile(&profile_name)?;
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| profile.region.clone())
            .unwrap_or_else(|| "us-east-1".into());
        let credentials = credentials(uri, &region, &ctx.http, &profile, &profile_name)?;
        tracing::debug!(uri = %uri, region, credentials = %credentials.from, "S3 bucket");
        Ok(Bucket {
            uri: uri.clone(),
            http: transport::client_without_redirects(&ctx.registry)?,
            opts: ctx.registry.clone(),
            endpoint: uri.endpoint.clone().or_else(endpoint_override),
            region: Mutex::new(region),
            credentials,
        })
    }

    fn region(&self) -> String {
        self.region
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The URL of `key`, and of the bucket's listing with `query`.
    fn url(&self, key: Option<&str>, query: &str) -> String {
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
    async fn send(
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
    fn sign(
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
    async fn request(
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
    async fn refusal(
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

    fn error(&self, status: StatusCode, code: &str, key: Option<&str>) -> Error {
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
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
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
    async fn get(&self, key: &str, meta: &ObjectMeta) -> Result<ByteStream> {
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
    async fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>> {
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
fn usable_etag(etag: Option<String>) -> Option<String> {
    etag.filter(|e| e.len() <= 1024 && HeaderValue::from_str(e).is_ok())
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|v| !v.is_empty())
}

/// S3's error code from an error answer's body (at most 64 KiB read); empty when none.
async fn error_code(resp: reqwest::Response) -> String {
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
fn decode_key(key: &str, uri: &str) -> Result<String> {
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
fn exact(
    body: impl futures::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    size: u64,
    uri: String,
) -> ByteStream {
    let mut seen = 0u64;
    let name = uri.clone();
    let cut = move |what: String| {
        std::io::Error::other(Error::new(ErrorKind::Network, format!("{uri}: {what}")))
    };
    let (cut1, cut2) = (cut.clone(), cut);
    body.map(Some)
        .chain(futures::stream::once(async { None }))
        .filter_map(move |item| {
            let out = match item {
                Some(Ok(chunk)) => {
                    seen += chunk.len() as u64;
                    if seen > size {
                        Some(Err(cut1(format!(
                            "more than the object's {size} bytes arrived"
                        ))))
                    } else {
                        Some(Ok(chunk))
                    }
                }
                Some(Err(e)) => Some(Err(std::io::Error::other(transport::network_error(
                    "GET", &name, e,
                )))),
                None if seen < size => Some(Err(cut2(format!(
                    "the connection ended after {seen} of {size} bytes"
                )))),
                None => None,
            };
            futures::future::ready(out)
        })
        .boxed()
}

/// The library error inside an `io::Error` of a stream, or the `io::Error` as one.
fn stream_error(e: std::io::Error, uri: &str) -> Error {
    crate::error::from_read_error(e, |e| {
        Error::new(ErrorKind::Network, format!("{uri}: {e}")).with_reference(uri)
    })
}

/// What staging needs of an S3 item.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `type`.
    pub media_type: Option<String>,
    /// The item's annotations.
    pub annotations: BTreeMap<String, String>,
    /// `digest:`: a single object's pinned digest.
    pub pin: Option<Digest>,
}

/// The cache key of an object: its server, bucket and key.
fn cache_id(bucket: &Bucket, key: &str) -> String {
    format!(
        "s3 {} {} {key}",
        bucket.endpoint.as_deref().unwrap_or("aws"),
        bucket.uri.bucket
    )
}

/// What the cache stamps an object's version with.
fn cache_stamp(meta: &ObjectMeta) -> Option<String> {
    meta.etag
        .as_ref()
        .map(|e| format!("{} {}", e.replace(' ', "%20"), meta.size))
}

/// Stages the single object of `uri` as one layer.
pub async fn stage_object(uri: &ObjectUri, spec: &Spec, ctx: &StageContext) -> Result<StagedBlob> {
    let bucket = Arc::new(Bucket::open(uri, ctx)?);
    let meta = bucket.head(&uri.key).await?;
    let title = uri.base_name();
    let annotations = with_title(&spec.annotations, &title);
    let mt = spec
        .media_type
        .clone()
        .unwrap_or_else(|| mediatype::infer(&title).to_string());
    stage_listed(
        &bucket,
        &uri.key,
        meta,
        spec.pin.as_ref(),
        mt,
        annotations,
        ctx,
    )
    .await
}

/// Stages one object whose size and ETag are known.
async fn stage_listed(
    bucket: &Arc<Bucket>,
    key: &str,
    meta: ObjectMeta,
    pin: Option<&Digest>,
    media_type: String,
    annotations: BTreeMap<String, String>,
    ctx: &StageContext,
) -> Result<StagedBlob> {
    let uri = bucket.uri.with_key(key);
    let id = cache_id(bucket, key);
    let stamp = cache_stamp(&meta);
    let cached = stamp
        .as_ref()
        .and_then(|s| ctx.cache.lookup_stamped(&id, s));
    let size = meta.size;
    let object = Arc::new(Object {
        bucket: bucket.clone(),
        key: key.to_string(),
        meta,
    });
    let describe = |digest: &Digest, origin: Origin| StagedBlob {
        descriptor: descriptor(&media_type, digest, size, annotations.clone()),
        origin,
    };
    if let Some(d) = &cached {
        tracing::debug!(uri, digest = %d, "known digest: the object is read only if the target lacks it");
        return Ok(describe(d, Origin::Remote(object)));
    }
    // A pinned object is checked before anything reaches the target: never taken into a
    // registry upload while it is hashed.
    let (digest, origin) = read_now(&object, &uri, pin.is_none(), ctx).await?;
    if let Some(s) = &stamp {
        ctx.cache.store_stamped(&id, s, &digest);
    }
    Ok(describe(&digest, origin))
}

/// Reads an object whose digest is unknown once, hashing it: into memory when small, else
/// into the target while hashed (a layout's spool, a registry upload), else into a temp file.
async fn read_now(
    object: &Arc<Object>,
    uri: &str,
    may_take: bool,
    ctx: &StageContext,
) -> Result<(Digest, Origin)> {
    let size = object.meta.size;
    if size <= IN_MEMORY {
        let data = transport::retried(uri, || async {
            // Opening is retried inside; a body cut half-way is worth a new attempt.
            let mut stream = object.open().await.map_err(Failure::fatal)?;
            let mut data = Vec::with_capacity(size as usize);
            while let Some(chunk) = stream.next().await {
                data.extend_from_slice(&chunk.map_err(|e| classify(stream_error(e, uri)))?);
            }
            Ok(Bytes::from(data))
        })
        .await?;
        let digest = Digest::of(&data);
        // Kept in memory while the pack's budget lasts; past it, read again when copied.
        return Ok((
            digest,
            ctx.hold(data).unwrap_or(Origin::Remote(object.clone())),
        ));
    }
    if ctx.spool.is_none() && may_take {
        if let Some(taker) = &ctx.taker {
            ctx.progress.emit(ProgressEvent::StageStarted {
                source: uri.to_string(),
                size: Some(size),
            });
            let taken = taker
                .take(&Hashable::Remote(object.clone()), size, &ctx.progress)
                .await?;
            ctx.progress.emit(ProgressEvent::StageFinished {
                source: uri.to_string(),
            });
            if let Some(d) = taken {
                return Ok((d, Origin::Remote(object.clone())));
            }
        }
    }
    let dir = ctx.spool.clone().unwrap_or_else(|| ctx.tmp_dir.clone());
    ctx.progress.emit(ProgressEvent::StageStarted {
        source: uri.to_string(),
        size: Some(size),
    });
    let (digest, file, path) = transport::retried(uri, || download(object, uri, &dir, ctx)).await?;
    ctx.progress.emit(ProgressEvent::StageFinished {
        source: uri.to_string(),
    });
    let id = crate::fsutil::file_id(
        &file
            .metadata()
            .map_err(|e| Error::io("reading", &path, e))?,
    );
    // Only large objects keep their spool file open to be adopted by rename: an open file
    // each for thousands of smaller ones would run out of descriptors; those are copied.
    let origin = match ctx.spool {
        Some(_) if size >= crate::digest::PIPELINE_THRESHOLD => {
            Origin::Spooled(Arc::new(path), id, Arc::new(file))
        }
        _ => Origin::Temp(Arc::new(path), id),
    };
    Ok((digest, origin))
}

/// A failure while an object's body arrives: network faults are worth another attempt.
fn classify(e: Error) -> Failure {
    match e.kind() {
        ErrorKind::Network => Failure::transient(e),
        _ => Failure::fatal(e),
    }
}

/// One download of the object into a new temp file in `dir`, hashed on the way: the network
/// is read on the runtime, hashed on a blocking thread and written by another
/// ([`crate::digest::copy_hashing_pipelined`]), so the three overlap.
async fn download(
    object: &Arc<Object>,
    uri: &str,
    dir: &Path,
    ctx: &StageContext,
) -> std::result::Result<(Digest, std::fs::File, tempfile::TempPath), Failure> {
    let stream = object.open().await.map_err(Failure::fatal)?;
    let (file, path) = crate::fsutil::temp_file(dir)
        .map_err(Failure::fatal)?
        .into_parts();
    let held = file
        .try_clone()
        .map_err(|e| Failure::fatal(Error::io("opening", &path, e)))?;
    let mut reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let (progress, source, at) = (ctx.progress.clone(), uri.to_string(), path.to_path_buf());
    let copied = tokio::task::spawn_blocking(move || {
        let mut out = file;
        crate::digest::copy_hashing_pipelined(&mut reader, &mut out, &mut |bytes| {
            progress.emit(ProgressEvent::StageAdvanced {
                source: source.clone(),
                bytes,
            })
        })
    })
    .await
    .map_err(|e| Failure::fatal(Error::new(ErrorKind::Internal, e.to_string())))?;
    // Errors of the stream carry the library error (a network fault: another attempt);
    // anything else is the local write.
    let (digest, _) = copied.map_err(|e| {
        classify(crate::error::from_read_error(e, |e| {
            Error::io("writing", &at, e)
        }))
    })?;
    Ok((digest, held, path))
}

/// A relative key below a prefix that can be a file title: no empty, `.` or `..` segment.
fn clean_relative(rel: &str) -> bool {
    !rel.is_empty()
        && rel
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The objects below the prefix of `uri` that become files: directory markers (keys ending
/// in `/` with no bytes) are left out; a key that cannot be a relative path, or that is both
/// an object and a prefix of others, is an error naming it.
async fn files_below(
    bucket: &Bucket,
    uri: &ObjectUri,
) -> Result<Vec<(String, String, ObjectMeta)>> {
    let listed = bucket.list(&uri.key).await?;
    let mut files = Vec::new();
    let mut dirs = HashSet::new();
    for (key, meta) in listed {
        let rel = &key[uri.key.len()..];
        if rel.is_empty() || rel.ends_with('/') {
            if meta.size == 0 {
                continue;
            }
            return Err(Error::new(
                ErrorKind::SourceNotFound,
                format!(
                    "{}: an object whose key ends in / holds bytes; it cannot be a file",
                    uri.with_key(&key)
                ),
            )
            .with_reference(uri.with_key(&key)));
        }
        if !clean_relative(rel) {
            return Err(Error::new(
                ErrorKind::SourceNotFound,
                format!(
                    "{}: the key below the prefix has an empty, . or .. segment; it cannot be a file title",
                    uri.with_key(&key)
                ),
            )
            .with_reference(uri.with_key(&key)));
        }
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            dirs.insert(rel[..at + i].to_string());
            at += i + 1;
        }
        files.push((key.clone(), rel.to_string(), meta));
    }
    if let Some((key, _, _)) = files.iter().find(|(_, rel, _)| dirs.contains(rel)) {
        return Err(Error::new(
            ErrorKind::SourceNotFound,
            format!(
                "{}: an object and a prefix of other objects at once; one title cannot be a file and a directory",
                uri.with_key(key)
            ),
        )
        .with_reference(uri.with_key(key)));
    }
    if files.is_empty() {
        return Err(Error::new(
            ErrorKind::SourceNotFound,
            format!("{uri}: no objects below this prefix"),
        )
        .with_reference(uri.to_string()));
    }
    Ok(files)
}

/// Stages every object below the prefix of `uri` as a layer, in byte order of the relative
/// keys, titled by them, with the `io.arenadata.oci-packer.dir` annotation (as `dir://`).
pub async fn stage_prefix(
    uri: &ObjectUri,
    spec: &Spec,
    ctx: &StageContext,
) -> Result<Vec<StagedBlob>> {
    let bucket = Arc::new(Bucket::open(uri, ctx)?);
    let files = files_below(&bucket, uri).await?;
    // Before any object is read: a layer descriptor takes at least ~180 bytes of JSON.
    let least: u64 = files.iter().map(|(_, rel, _)| 180 + rel.len() as u64).sum();
    if least > crate::store::MAX_MANIFEST_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{uri}: {} objects would make a manifest larger than 4 MiB; pack the prefix with archive:, or narrower prefixes",
                files.len()
            ),
        )
        .with_reference(uri.to_string()));
    }
    let dir = uri.base_name();
    futures::stream::iter(files.into_iter().map(|(key, rel, meta)| {
        let mut annotations = with_title(&spec.annotations, &rel);
        annotations
            .entry(super::DIR_ANNOTATION.to_string())
            .or_insert_with(|| dir.clone());
        let mt = spec
            .media_type
            .clone()
            .unwrap_or_else(|| mediatype::infer(&rel).to_string());
        let bucket = bucket.clone();
        async move { stage_listed(&bucket, &key, meta, None, mt, annotations, ctx).await }
    }))
    .buffered(PREFIX_CONCURRENCY)
    .try_collect()
    .await
}

/// Stages the prefix of `uri` as one deterministic archive layer: its objects are downloaded
/// into a private temp dir named like the prefix, which is archived as `dir://` would be.
///
/// The archive's descriptor is remembered (in the private cache `s3-archives`) under a stamp
/// of everything it is made of — format, `SOURCE_DATE_EPOCH`, the item's type and
/// annotations, every object's relative key, ETag and size — so a later pack of an unchanged
/// prefix downloads nothing unless the target lacks the archive; then it is built again
/// (the same bytes: it is deterministic) and verified as it is copied.
pub async fn stage_prefix_archive(
    uri: &ObjectUri,
    format: ArchiveFormat,
    spec: &Spec,
    ctx: &StageContext,
) -> Result<StagedBlob> {
    let bucket = Arc::new(Bucket::open(uri, ctx)?);
    let archive = Arc::new(PrefixArchive {
        files: files_below(&bucket, uri).await?,
        bucket,
        uri: uri.clone(),
        format,
        spec: spec.clone(),
        ctx: ctx.clone(),
    });
    let stamp = archive.stamp();
    let entry = ctx.cache.sibling("s3-archives").map(|d| {
        let id = format!("{} archive", cache_id(&archive.bucket, &uri.key));
        d.join(&Digest::of(id.as_bytes()).hex()[..32])
    });
    if let (Some(stamp), Some(entry)) = (&stamp, &entry) {
        let known = super::cache::read_entry(entry)
            .and_then(|b| serde_json::from_slice::<ArchiveRecord>(&b).ok())
            .filter(|r| &r.stamp == stamp);
        if let Some(record) = known {
            tracing::debug!(uri = %uri, digest = %record.descriptor.digest(), "unchanged prefix: the archive is built only if the target lacks it");
            return Ok(StagedBlob {
                descriptor: record.descriptor,
                origin: Origin::Remote(archive),
            });
        }
    }
    let (staged, _dir) = archive.build().await?;
    if let (Some(stamp), Some(entry)) = (stamp, entry) {
        let record = ArchiveRecord {
            stamp,
            descriptor: staged.descriptor.clone(),
        };
        if let (Ok(body), Some(dir)) = (serde_json::to_vec(&record), entry.parent()) {
            if let Ok(mut tmp) = crate::fsutil::temp_file(dir) {
                use std::io::Write;
                if tmp.write_all(&body).is_ok() {
                    let _ = tmp.persist(&entry);
                }
            }
        }
    }
    Ok(staged)
}

/// What the cache keeps of a prefix's archive.
#[derive(Debug, serde::Serialize, Deserialize)]
struct ArchiveRecord {
    stamp: String,
    descriptor: oci_spec::image::Descriptor,
}

/// The archive of a prefix, built again when a target needs its bytes.
#[derive(Debug)]
struct PrefixArchive {
    bucket: Arc<Bucket>,
    uri: ObjectUri,
    files: Vec<(String, String, ObjectMeta)>,
    format: ArchiveFormat,
    spec: Spec,
    ctx: StageContext,
}

impl PrefixArchive {
    /// Everything the archive is made of, hashed; `None` when an object has no ETag.
    fn stamp(&self) -> Option<String> {
        let mut text = format!(
            "{:?} {:?} {:?} {:?}\n",
            self.format, self.ctx.source_date_epoch, self.spec.media_type, self.spec.annotations
        );
        for (_, rel, meta) in &self.files {
            text.push_str(&format!(
                "{rel:?} {:?} {}\n",
                meta.etag.as_ref()?,
                meta.size
            ));
        }
        Some(Digest::of(text.as_bytes()).to_string())
    }

    /// Downloads the objects into a private temp dir and archives it; returns the staged
    /// archive and the dir (removed when dropped).
    async fn build(&self) -> Result<(StagedBlob, tempfile::TempDir)> {
        let ctx = &self.ctx;
        let tmp = tempfile::Builder::new()
            .prefix(crate::fsutil::TEMP_PREFIX)
            .tempdir_in(&ctx.tmp_dir)
            .map_err(|e| Error::io("creating a download dir in", &ctx.tmp_dir, e))?;
        let root = tmp.path().join(self.uri.base_name());
        std::fs::create_dir(&root).map_err(|e| Error::io("creating", &root, e))?;
        futures::stream::iter(self.files.clone().into_iter().map(|(key, rel, meta)| {
            let (root, bucket, ctx) = (root.clone(), self.bucket.clone(), ctx.clone());
            async move {
                let ctx = &ctx;
                let object = Arc::new(Object { bucket, key, meta });
                let target = root.join(rel);
                let parent = target.parent().unwrap_or(&root).to_path_buf();
                std::fs::create_dir_all(&parent).map_err(|e| Error::io("creating", &parent, e))?;
                let u = object.name();
                let (_, file, path) =
                    transport::retried(&u, || download(&object, &u, &parent, ctx)).await?;
                drop(file);
                path.persist(&target)
                    .map_err(|e| Error::io("saving", &target, e.error))?;
                Ok::<_, Error>(())
            }
        }))
        .buffered(PREFIX_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        let staged = super::dir::stage_archive(
            root,
            self.uri.to_string(),
            self.format,
            self.spec.media_type.clone(),
            self.spec.annotations.clone(),
            ctx,
        )
        .await?;
        Ok((staged, tmp))
    }
}

#[async_trait::async_trait]
impl Reopen for PrefixArchive {
    fn name(&self) -> String {
        self.uri.to_string()
    }

    async fn open(&self) -> Result<ByteStream> {
        let (staged, _dir) = self.build().await?;
        let path = match &staged.origin {
            Origin::Spooled(t, ..) | Origin::Temp(t, _) => t.to_path_buf(),
            _ => {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!("{}: the archive was not built into a file", self.uri),
                ))
            }
        };
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io("reading", &path, e))?;
        // The staged blob (and so its temp file) lives as long as the stream.
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10);
        Ok(chunks
            .map(move |c| {
                let _keep = &staged;
                c
            })
            .boxed())
    }
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

    #[test]
    fn profile_values_are_literal() {
        let ini = parse_ini("[default]\naws_secret_access_key = ab\\cd\"e'\n").expect("ini");
        let secret = ini
            .section(Some("default"))
            .and_then(|s| s.get("aws_secret_access_key"));
        assert_eq!(secret, Some("ab\\cd\"e'"));
    }

    #[test]
    fn keys_below_a_prefix() {
        assert!(clean_relative("a/b c/é.txt"));
        for bad in ["", "a//b", "./a", "a/../b", "/a", "a/."] {
            assert!(!clean_relative(bad), "{bad}");
        }
        assert_eq!(decode_key("a+b%2Bc%C3%A9", "u").expect("decode"), "a b+cé");
        assert!(decode_key("%FF", "u").is_err());
        assert_eq!(encode("a b/é+", KEY_SET), "a%20b/%C3%A9%2B");
        assert_eq!(encode("p/q r", QUERY_SET), "p%2Fq%20r");
    }
}
