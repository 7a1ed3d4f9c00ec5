//! A repository in a registry as a [`Target`]: our own Distribution-API client on reqwest and
//! oci-spec types (see DESIGN and `docs/design.md` for why not `oci-client`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, MediaType};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::{Blob, Location, MountSource, PushOutcome, Target, MAX_MANIFEST_BYTES};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::FileRef;
use crate::mediatype;
use crate::progress::Progress;
use crate::reference::RegistryRef;
use crate::store::staging::Hashable;

pub mod client;
pub mod credentials;

pub use client::RegistryOptions;
use client::{header, Body, Client};

/// Chunk size when a registry wants chunked uploads and names no minimum: the largest that
/// GHCR and others accept.
const DEFAULT_CHUNK: u64 = 4 << 20;

/// True when the registry turned down the way we uploaded (not the content, not the auth).
fn refused(e: &Error) -> bool {
    matches!(e.http_status(), Some(400 | 405 | 411 | 413 | 416 | 501))
        && e.code() != Some("DIGEST_INVALID")
}

/// An open upload session: where to send the next request, and the registry's minimum
/// chunk size (`OCI-Chunk-Min-Length`).
#[derive(Debug)]
struct Session {
    location: reqwest::Url,
    min_chunk: Option<u64>,
}

/// Runs an upload until it succeeds or fails for good: after a transient failure it starts
/// over (in a new session) on the transport's back-off, honouring `Retry-After`.
async fn in_new_sessions<T, Fut>(what: &str, attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    use backon::Retryable;
    attempt
        .retry(crate::transport::backoff())
        .sleep(tokio::time::sleep)
        .when(transient)
        .adjust(|e: &Error, d| e.retry_after().or(d))
        .notify(|e: &Error, wait| {
            tracing::warn!(upload = what, error = %e, ?wait, "upload failed, starting a new session");
        })
        .await
}

/// The media type of a response, without parameters (`; charset=…`).
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default()
}

/// Every manifest type we read, for `Accept`.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// One repository of one registry.
#[derive(Debug, Clone)]
pub struct Registry {
    client: Arc<Client>,
    reference: RegistryRef,
    /// Where blobs streamed from another registry are spooled before upload (`--tmp-dir`).
    spool: Option<std::path::PathBuf>,
}

/// Pages of a tag list we follow before giving up (1,000 tags a page).
const MAX_TAG_PAGES: usize = 1000;

/// A failure that another try may not repeat: the network, or a transient status.
fn transient(e: &Error) -> bool {
    e.kind() == ErrorKind::Network
        || e.http_status()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .is_some_and(crate::transport::is_transient_status)
}

impl Registry {
    /// A store for the repository of `reference` (credentials are looked up now).
    pub fn new(reference: &RegistryRef, opts: &RegistryOptions) -> Result<Registry> {
        Ok(Registry {
            client: Arc::new(Client::new(&reference.host, opts)?),
            reference: reference.clone(),
            spool: None,
        })
    }

    /// A store for the repository of `reference` over a client shared with other
    /// repositories of its host; streamed blobs are spooled under `spool` (`--tmp-dir`).
    pub(crate) fn with_client(
        client: Arc<Client>,
        reference: &RegistryRef,
        spool: Option<std::path::PathBuf>,
    ) -> Registry {
        Registry {
            client,
            reference: reference.clone(),
            spool,
        }
    }

    fn repo(&self) -> &str {
        &self.reference.repository
    }

    /// Remembers that this repository has the blob `desc` (for mounts into others later).
    fn seen(&self, desc: &Descriptor) {
        if !mediatype::is_manifest(desc.media_type().as_ref()) {
            self.client.locations.record(
                &self.reference.host,
                desc.digest().as_ref(),
                desc.size(),
                self.repo(),
            );
        }
    }

    /// One cross-repository mount of `desc` from `from` on this host: `Some(Mounted)`, or
    /// the upload session the registry opened instead (it could not mount).
    async fn mount_once(
        &self,
        desc: &Descriptor,
        from: &str,
    ) -> Result<std::result::Result<PushOutcome, reqwest::Url>> {
        let digest = desc.digest().to_string();
        let mut url = reqwest::Url::parse(&format!(
            "{}/v2/{}/blobs/uploads/",
            self.client.base,
            self.repo()
        ))
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("mount", &digest)
            .append_pair("from", from);
        // The token must allow pulling from the source repository too.
        let scope = format!("{} repository:{from}:pull", self.push_scope());
        let resp = self
            .client
            .send(
                Method::POST,
                url.as_str(),
                &scope,
                HeaderMap::new(),
                &Body::Empty,
            )
            .await?;
        match resp.status() {
            // A registry that names another digest did not mount this blob.
            StatusCode::CREATED
                if resp
                    .headers()
                    .get("docker-content-digest")
                    .is_some_and(|v| v.as_bytes() != digest.as_bytes()) =>
            {
                Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "mount of {digest} from {from}: the registry answered for another digest"
                    ),
                ))
            }
            StatusCode::CREATED => Ok(Ok(PushOutcome::Mounted)),
            StatusCode::ACCEPTED => Ok(Err(self.location(&resp, url.as_str())?)),
            _ => Err(self
                .client
                .error(
                    &Method::POST,
                    url.as_str(),
                    &format!("mount of {digest} from {from}"),
                    resp,
                )
                .await),
        }
    }

    /// Mounts `desc` from a repository of this host where it was seen before, most recent
    /// first, at most [`crate::store::locations::MAX_REPOSITORIES`] tries. A repository the
    /// registry says lacks it (a 202 with an upload session, or a 404) is forgotten; other
    /// refusals keep it (an outage says nothing of where blobs are); a network fault ends the
    /// tries. `None`: no known repository could.
    async fn mount_known(&self, desc: &Descriptor) -> Result<Option<PushOutcome>> {
        let host = &self.reference.host;
        let digest = desc.digest().to_string();
        for from in self.client.locations.lookup(host, &digest) {
            if from == self.repo() {
                continue;
            }
            match self.mount_once(desc, &from).await {
                Ok(Ok(outcome)) => {
                    tracing::debug!(%digest, from, "mounted from a known repository");
                    self.seen(desc);
                    return Ok(Some(outcome));
                }
                Ok(Err(session)) => {
                    // Not there any more (or not ours to read): forget it, close the session.
                    self.client.locations.forget(host, &digest, &from);
                    self.cancel_upload(&session).await;
                }
                // A refusal by status says nothing of where the blob is: kept. A network
                // fault would repeat for every other repository of this host: no more tries.
                Err(e) => {
                    tracing::debug!(%digest, from, error = %e, "mount refused");
                    if e.kind() == ErrorKind::Network {
                        break;
                    }
                    if e.http_status() == Some(404) {
                        self.client.locations.forget(host, &digest, &from);
                    }
                }
            }
        }
        Ok(None)
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.client.base, self.repo())
    }

    /// A request that only reads (pull scope, no body), checked for success.
    async fn read(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<reqwest::Response> {
        self.client
            .expect(method, url, &self.pull_scope(), headers, &Body::Empty, what)
            .await
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repo())
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repo())
    }

    /// Checks that the registry answers and accepts the credentials (if any), as `docker
    /// login` does: `GET /v2/` with a token for no scope, or — when the token service
    /// demands one — for `registry:catalog:*`. No repository is named or asked for.
    pub async fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.client.base);
        let what = format!("registry {}", self.client.host);
        let get = async |scope: &str| {
            self.client
                .expect(
                    Method::GET,
                    &url,
                    scope,
                    HeaderMap::new(),
                    &Body::Empty,
                    &what,
                )
                .await
                .map(drop)
        };
        match get("").await {
            // Not a refusal of the credentials: a token service that wants a scope.
            Err(e) if e.kind() == ErrorKind::Registry => get("registry:catalog:*").await,
            other => other,
        }
    }

    /// Every tag of the repository, following `Link` pagination.
    pub async fn tags(&self) -> Result<Vec<String>> {
        let mut tags = Vec::new();
        let mut next = Some(format!(
            "{}/v2/{}/tags/list?n=1000",
            self.client.base,
            self.repo()
        ));
        let mut pages = 0;
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_TAG_PAGES || !seen.insert(url.clone()) {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "repository {}: the tag list goes on for more than {MAX_TAG_PAGES} pages or loops; giving up",
                        self.name()
                    ),
                ));
            }
            let resp = self
                .read(
                    Method::GET,
                    &url,
                    HeaderMap::new(),
                    &format!("repository {}", self.name()),
                )
                .await?;
            // Link: </v2/repo/tags/list?last=x&n=1000>; rel="next"
            next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| {
                    l.split_once('<')
                        .and_then(|(_, r)| r.split_once('>'))
                        .map(|(u, _)| u.to_string())
                })
                .map(|u| {
                    if u.starts_with('/') {
                        format!("{}{u}", self.client.base)
                    } else {
                        u
                    }
                });
            let body = crate::transport::read_body(
                resp,
                MAX_MANIFEST_BYTES,
                &format!("tag list of {}", self.name()),
            )
            .await?;
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                Error::new(
                    ErrorKind::Registry,
                    format!("GET {url}: invalid tag list ({e})"),
                )
            })?;
            tags.extend(
                v["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string)),
            );
        }
        tags.sort();
        Ok(tags)
    }

    /// `GET` of the blob of `desc` with `headers` (a range), sized for `expect` bytes (the
    /// transfer's timeout); an answer that is not a success is the error it means.
    async fn get_blob(
        &self,
        desc: &Descriptor,
        headers: HeaderMap,
        expect: u64,
    ) -> Result<reqwest::Response> {
        let digest = desc.digest().to_string();
        let url = self.url("blobs", &digest);
        let resp = self
            .client
            .send_sized(
                Method::GET,
                &url,
                &self.pull_scope(),
                headers,
                &Body::Empty,
                Some(expect),
            )
            .await?;
        if !resp.status().is_success() {
            let what = format!("blob {digest}");
            return Err(self.client.error(&Method::GET, &url, &what, resp).await);
        }
        Ok(resp)
    }

    /// The descriptor of a tag or digest of this repository.
    pub async fn resolve_ref(&self, reference: &str) -> Result<Descriptor> {
        let reference = reference.to_string();
        let url = self.url("manifests", &reference);
        let resp = self
            .read(
                Method::HEAD,
                &url,
                header(ACCEPT, MANIFEST_ACCEPT),
                &format!("{} {reference}", self.name()),
            )
            .await?;
        let h = resp.headers();
        let media_type = content_type(h);
        let digest = h
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let size = h
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match (digest, size, mediatype::is_manifest(&media_type)) {
            (Some(d), Some(size), true) => {
                let d = Digest::parse(&d)?;
                Ok(Descriptor::new(
                    media_type.as_str().into(),
                    size,
                    d.to_oci(),
                ))
            }
            // Some registries leave out the digest on HEAD: read the manifest and hash it.
            _ => {
                let (bytes, media_type) = self.get_manifest(&reference).await?;
                let d = Digest::of(&bytes);
                if let Some(want) = &self.reference.digest {
                    if *want != d {
                        return Err(Error::new(
                            ErrorKind::DigestMismatch,
                            format!(
                                "{}: the registry sent content with digest {d}",
                                self.reference
                            ),
                        ));
                    }
                }
                Ok(Descriptor::new(
                    media_type.as_str().into(),
                    bytes.len() as u64,
                    d.to_oci(),
                ))
            }
        }
    }

    async fn get_manifest(&self, reference: &str) -> Result<(Bytes, String)> {
        let url = self.url("manifests", reference);
        let resp = self
            .read(
                Method::GET,
                &url,
                header(ACCEPT, MANIFEST_ACCEPT),
                &format!("manifest {reference}"),
            )
            .await?;
        let media_type = content_type(resp.headers());
        // Whatever Content-Length says (or does not say), at most 4 MiB are read.
        let bytes = crate::transport::read_body(
            resp,
            MAX_MANIFEST_BYTES,
            &format!("manifest {reference} in {}", self.name()),
        )
        .await
        .map_err(|e| {
            if e.kind() == ErrorKind::Registry {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("{url}: manifest over the 4 MiB limit; refusing to read it"),
                )
                .with_reference(url.as_str())
            } else {
                e
            }
        })?;
        Ok((bytes, media_type))
    }

    async fn put_manifest(&self, media_type: &str, bytes: Bytes, reference: &str) -> Result<()> {
        let url = self.url("manifests", reference);
        let (headers, body) = (header(CONTENT_TYPE, media_type), Body::Bytes(bytes));
        let what = format!("manifest {reference}");
        self.client
            .expect(Method::PUT, &url, &self.push_scope(), headers, &body, &what)
            .await
            .map(|_| ())
    }

    /// Points `tag` at the manifest `desc` (which must be in the repository already).
    /// `bytes` are the manifest's, when the caller has them (else they are fetched). A tag
    /// that already points there is left alone: a re-push costs HEADs only.
    async fn put_tag(&self, desc: &Descriptor, tag: &str, bytes: Option<Bytes>) -> Result<()> {
        let url = self.url("manifests", tag);
        let resp = self
            .client
            .send(
                Method::HEAD,
                &url,
                &self.pull_scope(),
                header(ACCEPT, MANIFEST_ACCEPT),
                &Body::Empty,
            )
            .await?;
        let current = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        if resp.status().is_success() && current == Some(desc.digest().as_ref()) {
            return Ok(());
        }
        let bytes = match bytes {
            Some(b) => b,
            None => crate::store::verify::verify_bytes(
                self.get_manifest(desc.digest().as_ref()).await?.0,
                desc,
                &self.name(),
            )?,
        };
        self.put_manifest(desc.media_type().as_ref(), bytes, tag)
            .await
    }

    /// Resolves an upload `Location` against our base URL; refuses another host or a
    /// downgrade from https to http.
    fn location(&self, resp: &reqwest::Response, what: &str) -> Result<reqwest::Url> {
        let base = reqwest::Url::parse(&self.client.base)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("bad base URL: {e}")))?;
        let raw = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Registry,
                    format!("{what}: the registry sent no upload Location"),
                )
            })?;
        let url = base.join(raw).map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!("{what}: bad upload Location {raw}: {e}"),
            )
        })?;
        if url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(Error::new(
                ErrorKind::Registry,
                format!("{what}: upload Location {url} points to another host"),
            ));
        }
        if base.scheme() == "https" && url.scheme() != "https" {
            return Err(Error::new(
                ErrorKind::Registry,
                format!("{what}: upload Location {url} downgrades to http"),
            ));
        }
        Ok(url)
    }

    /// Finishes an upload session at `location` with the whole blob (monolithic PUT).
    async fn finish_upload(
        &self,
        location: reqwest::Url,
        desc: &Descriptor,
        body: Body,
    ) -> Result<PushOutcome> {
        let digest = desc.digest().to_string();
        let mut url = location;
        url.query_pairs_mut().append_pair("digest", &digest);
        let resp = self
            .client
            .send(
                Method::PUT,
                url.as_str(),
                &self.push_scope(),
                header(CONTENT_TYPE, "application/octet-stream"),
                &body,
            )
            .await;
        match resp? {
            r if r.status().is_success() => Ok(PushOutcome::Stored),
            r => Err(self
                .client
                .error(&Method::PUT, url.as_str(), &format!("blob {digest}"), r)
                .await),
        }
    }

    /// Cancels an upload session (DELETE at its latest location), so the registry does not
    /// keep a partial upload; a failure to cancel is only logged (the registry expires it).
    async fn cancel_upload(&self, location: &reqwest::Url) {
        let answer = self
            .client
            .send(
                Method::DELETE,
                location.as_str(),
                &self.push_scope(),
                HeaderMap::new(),
                &Body::Empty,
            )
            .await;
        if let Err(e) = answer {
            tracing::debug!(error = %e, "could not cancel an upload session");
        }
    }

    /// Runs `f` in a new upload session: it gets the session and moves `session.location`
    /// along as the registry answers. When `f` fails, whatever the reason (a refused PUT, a
    /// file that changed, a digest the registry rejects, a broken connection), the session is
    /// cancelled before the error is returned.
    async fn in_session<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let (location, min_chunk) = self.start_upload(what).await?;
        let mut session = Session {
            location,
            min_chunk,
        };
        let result = f(&mut session).await;
        if result.is_err() {
            self.cancel_upload(&session.location).await;
        }
        result
    }

    /// Opens an upload session; returns its location and the registry's minimum chunk size.
    async fn start_upload(&self, what: &str) -> Result<(reqwest::Url, Option<u64>)> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.client.base, self.repo());
        let resp = self
            .client
            .expect(
                Method::POST,
                &url,
                &self.push_scope(),
                HeaderMap::new(),
                &Body::Empty,
                what,
            )
            .await?;
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((self.location(&resp, &url)?, min_chunk))
    }

    /// Uploads a blob: one streamed monolithic PUT (two round trips); when the registry
    /// refuses that, one streamed PATCH; when it refuses that too, chunked PATCHes of at
    /// least its `OCI-Chunk-Min-Length`. A transient failure starts over in a new session
    /// (the body is re-opened from its start); nothing is re-sent into a session.
    async fn upload(&self, desc: &Descriptor, body: Body) -> Result<PushOutcome> {
        let what = desc.digest().to_string();
        in_new_sessions(&what, || self.upload_once(desc, body.clone())).await
    }

    /// One upload in new sessions (see [`Registry::upload`]); a failed session is cancelled.
    async fn upload_once(&self, desc: &Descriptor, body: Body) -> Result<PushOutcome> {
        let what = format!("upload of {}", desc.digest());
        let monolithic = self
            .in_session(&what, async |s| {
                self.finish_upload(s.location.clone(), desc, body.clone())
                    .await
            })
            .await;
        match monolithic {
            Err(e) if refused(&e) => {
                tracing::info!(digest = %desc.digest(), error = %e, "monolithic upload refused, trying a PATCH session");
            }
            other => return other,
        }
        let mut min_chunk = None;
        let streamed = self
            .in_session(&what, async |s| {
                min_chunk = s.min_chunk;
                self.patch_chunks(s, desc, &body, body.len().max(1)).await
            })
            .await;
        match streamed {
            Err(e) if refused(&e) => {
                tracing::info!(digest = %desc.digest(), error = %e, "streamed PATCH refused, uploading in chunks");
            }
            other => return other,
        }
        self.in_session(&what, async |s| {
            let chunk = min_chunk.or(s.min_chunk).unwrap_or(0).max(DEFAULT_CHUNK);
            self.patch_chunks(s, desc, &body, chunk).await
        })
        .await
    }

    /// Sends `body` as PATCHes of `chunk` bytes (one PATCH when `chunk` covers it), following
    /// the `Location` of each answer, then closes the session with the digest.
    async fn patch_chunks(
        &self,
        session: &mut Session,
        desc: &Descriptor,
        body: &Body,
        chunk: u64,
    ) -> Result<PushOutcome> {
        let total = body.len();
        let mut offset = 0;
        while offset < total {
            let len = chunk.min(total - offset);
            let mut headers = header(CONTENT_TYPE, "application/octet-stream");
            if len < total {
                let range = format!("{}-{}", offset, offset + len - 1);
                if let Ok(v) = reqwest::header::HeaderValue::from_str(&range) {
                    headers.insert(reqwest::header::CONTENT_RANGE, v);
                }
            }
            let part = body.slice(offset, len);
            session.location = self
                .patch(
                    &session.location,
                    headers,
                    &part,
                    &format!("blob {}", desc.digest()),
                )
                .await?;
            offset += len;
        }
        self.finish_upload(session.location.clone(), desc, Body::Empty)
            .await
    }

    /// One PATCH into an upload session; returns the session's next location.
    async fn patch(
        &self,
        location: &reqwest::Url,
        headers: HeaderMap,
        body: &Body,
        what: &str,
    ) -> Result<reqwest::Url> {
        let resp = self
            .client
            .send(
                Method::PATCH,
                location.as_str(),
                &self.push_scope(),
                headers,
                body,
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self
                .client
                .error(&Method::PATCH, location.as_str(), what, resp)
                .await);
        }
        self.location(&resp, location.as_str())
    }

    /// One streamed upload of a file or object while hashing it, in a new session (cancelled
    /// when anything fails, content that changed size included).
    async fn ingest_once(
        &self,
        content: &Hashable,
        size: u64,
        progress: &Progress,
    ) -> Result<Option<Digest>> {
        let what = format!("upload of {}", content.name());
        let ingested = self
            .in_session(&what, async |s| {
                let hasher = Arc::new(std::sync::Mutex::new(crate::digest::Hasher::new()));
                let body = Body::Hashing {
                    content: content.clone(),
                    len: size,
                    hasher: hasher.clone(),
                    progress: progress.clone(),
                };
                let headers = header(CONTENT_TYPE, "application/octet-stream");
                s.location = self.patch(&s.location, headers, &body, &what).await?;
                let (digest, sent) = hasher
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .finish();
                if sent != size {
                    let detail = format!("{size} bytes, then {sent} uploaded");
                    return Err(match content {
                        Hashable::File(f) => crate::fsutil::changed_while_packing(&f.path, &detail),
                        Hashable::Remote(r) => Error::new(
                            ErrorKind::Network,
                            format!("{}: {detail}; pack again", r.name()),
                        ),
                    });
                }
                let desc = Descriptor::new(
                    MediaType::Other("application/octet-stream".into()),
                    size,
                    digest.to_oci(),
                );
                self.finish_upload(s.location.clone(), &desc, Body::Empty)
                    .await?;
                Ok(digest)
            })
            .await;
        match ingested {
            Ok(d) => Ok(Some(d)),
            // A registry that takes no streamed PATCH still takes the file the other way.
            Err(e) if refused(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes of `blob` as a re-sendable body (streams are read into a temp file first, so a
    /// retry can send them again without holding them in memory).
    async fn body_of(
        &self,
        desc: &Descriptor,
        blob: Blob,
    ) -> Result<(Body, Option<tempfile::TempPath>)> {
        Ok(match blob {
            Blob::Bytes(b) => (Body::Bytes(b), None),
            Blob::File(file) => (Body::source_file(file, desc), None),
            // Written and hashed by staging, in a temp file of its own.
            blob @ Blob::Spooled(..) => {
                let file = blob.into_file_ref().expect("a file");
                (Body::file(file, desc.size()), None)
            }
            Blob::Stream(reader) => {
                use tokio::io::AsyncReadExt;
                let dir = self.spool.clone().unwrap_or_else(std::env::temp_dir);
                let (file, path) = tempfile::Builder::new()
                    .prefix(crate::fsutil::TEMP_PREFIX)
                    .tempfile_in(&dir)
                    .map_err(|e| Error::io("creating temp file in", &dir, e))?
                    .into_parts();
                // Sent again on a retry by name: only if it is still this file.
                let id = crate::fsutil::file_id(
                    &file
                        .metadata()
                        .map_err(|e| Error::io("reading", &path, e))?,
                );
                let mut out = tokio::fs::File::from_std(file);
                // The source's reader is verified; the bound holds for any other, too.
                let n = tokio::io::copy(&mut reader.take(desc.size() + 1), &mut out)
                    .await
                    .map_err(|e| {
                        crate::store::verify::from_read_error(e, |e| {
                            Error::new(
                                ErrorKind::Network,
                                format!("downloading {}: {e}", desc.digest()),
                            )
                        })
                    })?;
                if n != desc.size() {
                    return Err(crate::store::verify::mismatch(
                        desc,
                        "the source",
                        format!("got {n} bytes"),
                    ));
                }
                (
                    Body::file(FileRef::new(path.to_path_buf(), Some(id)), desc.size()),
                    Some(path),
                )
            }
        })
    }
}

#[async_trait]
impl Target for Registry {
    fn name(&self) -> String {
        format!("{}/{}", self.reference.host, self.reference.repository)
    }

    fn location(&self) -> Location {
        Location::Repository(self.name())
    }

    fn as_dyn(&self) -> &dyn Target {
        self
    }

    async fn resolve(&self, reference: &str) -> Result<Descriptor> {
        self.resolve_ref(reference).await
    }

    async fn tag(&self, desc: &Descriptor, reference: &str, manifest: Option<Bytes>) -> Result<()> {
        self.put_tag(desc, reference, manifest).await
    }

    async fn entries(&self) -> Result<Vec<(String, Result<Descriptor>)>> {
        let mut out = Vec::new();
        for tag in self.tags().await? {
            if !crate::reference::valid_tag(&tag) {
                let e = Error::new(
                    ErrorKind::Registry,
                    "the registry lists this tag, but it is not a valid tag name; not read",
                );
                out.push((tag, Err(e)));
                continue;
            }
            match self.resolve_ref(&tag).await {
                // One tag that cannot be read (deleted meanwhile, an unsupported manifest)
                // is that entry's problem; a failing registry or login is everyone's.
                Err(e) if e.concerns_one_entry() => out.push((tag, Err(e))),
                d => out.push((tag, Ok(d?))),
            }
        }
        Ok(out)
    }

    fn mount_source(&self, _desc: &Descriptor) -> Option<MountSource> {
        Some(MountSource {
            host: self.reference.host.clone(),
            repository: self.reference.repository.clone(),
        })
    }

    async fn exists(&self, desc: &Descriptor) -> Result<bool> {
        let digest = desc.digest().to_string();
        let is_manifest = mediatype::is_manifest(desc.media_type().as_ref());
        let url = self.url(if is_manifest { "manifests" } else { "blobs" }, &digest);
        let headers = if is_manifest {
            header(ACCEPT, MANIFEST_ACCEPT)
        } else {
            HeaderMap::new()
        };
        let resp = self
            .client
            .send(
                Method::HEAD,
                &url,
                &self.pull_scope(),
                headers,
                &Body::Empty,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => {
                self.seen(desc);
                Ok(true)
            }
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.client.error(&Method::HEAD, &url, &digest, resp).await),
        }
    }

    async fn fetch(&self, desc: &Descriptor) -> Result<Blob> {
        let digest = desc.digest().to_string();
        if mediatype::is_manifest(desc.media_type().as_ref()) {
            return Ok(Blob::Bytes(self.get_manifest(&digest).await?.0));
        }
        let resp = self.get_blob(desc, HeaderMap::new(), desc.size()).await?;
        self.seen(desc);
        if resp.content_length().is_some_and(|n| n != desc.size()) {
            return Err(crate::store::verify::mismatch(
                desc,
                &self.name(),
                format!(
                    "the registry announces {} bytes",
                    resp.content_length().unwrap_or(0)
                ),
            ));
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
        let stream = crate::store::verify::verified_stream(stream, desc, self.name());
        Ok(Blob::Stream(Box::new(tokio_util::io::StreamReader::new(
            stream,
        ))))
    }

    async fn fetch_range(
        &self,
        desc: &Descriptor,
        start: u64,
        len: u64,
    ) -> Result<crate::store::ByteStream> {
        let mut headers = HeaderMap::new();
        let range = format!("bytes={start}-{}", start + len.max(1) - 1);
        headers.insert(
            reqwest::header::RANGE,
            range.parse().map_err(|_| {
                Error::new(ErrorKind::Internal, format!("a bad range header: {range}"))
            })?,
        );
        let resp = self.get_blob(desc, headers, len).await?;
        let status = resp.status();
        if status == StatusCode::PARTIAL_CONTENT {
            let want = format!("bytes {start}-{}/", start + len.max(1) - 1);
            let got = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !got.starts_with(&want) {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "blob {}: the registry answered another range than asked for",
                        desc.digest()
                    ),
                )
                .with_digest(desc.digest().to_string()));
            }
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
        Ok(if status == StatusCode::PARTIAL_CONTENT {
            crate::store::slice_stream(stream, 0, len)
        } else {
            // The whole blob (the registry ignored the range): the part is cut out here.
            crate::store::slice_stream(stream, start, len)
        })
    }

    async fn push(
        &self,
        desc: &Descriptor,
        blob: Blob,
        progress: &Progress,
    ) -> Result<PushOutcome> {
        let media_type = desc.media_type().to_string();
        if mediatype::is_manifest(&media_type) {
            // Child manifests go to /manifests/<digest>, never through the blob API (Go §9.15).
            let bytes = match blob {
                Blob::Bytes(b) => b,
                other => crate::store::read_small(other, desc, &self.name()).await?,
            };
            self.put_manifest(&media_type, bytes, desc.digest().as_ref())
                .await?;
            return Ok(PushOutcome::Stored);
        }
        let (body, _tmp) = self.body_of(desc, blob).await?;
        let outcome = self.upload(desc, body).await?;
        self.seen(desc);
        if !progress.is_silent() {
            progress.emit(crate::progress::ProgressEvent::Advanced {
                digest: desc.digest().to_string(),
                bytes: desc.size(),
            });
        }
        Ok(outcome)
    }

    async fn push_hashing(
        &self,
        content: &Hashable,
        size: u64,
        progress: &Progress,
    ) -> Result<Option<Digest>> {
        let what = content.name();
        let digest = in_new_sessions(&what, || self.ingest_once(content, size, progress)).await?;
        if let Some(d) = &digest {
            self.client
                .locations
                .record(&self.reference.host, d.as_str(), size, self.repo());
        }
        Ok(digest)
    }

    async fn delete_manifest(&self, desc: &Descriptor) -> Result<()> {
        let digest = desc.digest().to_string();
        let url = self.url("manifests", &digest);
        let resp = self
            .client
            .send(
                Method::DELETE,
                &url,
                &self.push_scope(),
                HeaderMap::new(),
                &Body::Empty,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: this registry does not allow deleting manifests (unsupported by this \
                     registry; Distribution needs storage.delete.enabled)",
                    self.name()
                ),
            )
            .with_status(405, Some("UNSUPPORTED".into()))
            .with_reference(self.name())),
            _ => Err(self
                .client
                .error(&Method::DELETE, &url, &digest, resp)
                .await),
        }
    }

    async fn mount_from(
        &self,
        desc: &Descriptor,
        source: &dyn Target,
    ) -> Result<Option<PushOutcome>> {
        if mediatype::is_manifest(desc.media_type().as_ref()) {
            return Ok(None);
        }
        let from = match source.mount_source(desc) {
            Some(MountSource { host, repository })
                if host == self.reference.host && repository != self.repo() =>
            {
                repository
            }
            // Not from this registry: perhaps it has the blob in another repository.
            _ if desc.size() >= crate::store::locations::WORTH_MOUNTING => {
                return self.mount_known(desc).await
            }
            _ => return Ok(None),
        };
        let outcome = match self.mount_once(desc, &from).await? {
            Ok(outcome) => outcome,
            // The registry would not mount: it opened an upload session instead; use it.
            Err(location) => {
                let blob = source.fetch(desc).await?;
                let (body, _tmp) = self.body_of(desc, blob).await?;
                self.finish_upload(location, desc, body).await?
            }
        };
        self.seen(desc);
        Ok(Some(outcome))
    }
}
