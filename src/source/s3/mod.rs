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
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

mod bucket;
mod credentials;
mod uri;

use bucket::{stream_error, Bucket, ObjectMeta};
use credentials::Credentials;
pub use uri::ObjectUri;

/// What the S3 items of one pack share: one HTTP client (it follows no redirects: signed
/// requests must not be replayed elsewhere) and, for AWS and for other servers, the region
/// and credentials of the environment — files read and providers built once, not per item.
#[derive(Debug, Default, Clone)]
pub struct Clients(Arc<ClientsInner>);

#[derive(Debug, Default)]
struct ClientsInner {
    http: std::sync::OnceLock<reqwest::Client>,
    /// Keyed by "AWS" (`s3://`: instance metadata may be asked) or not.
    access: std::sync::Mutex<std::collections::HashMap<bool, (String, Credentials)>>,
}

use super::{descriptor, with_title, Hashable, Origin, Reopen, StageContext, StagedBlob};
use crate::archive::ArchiveFormat;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::progress::ProgressEvent;
use crate::store::ByteStream;
use crate::transport::{self, Failure};

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
    // Before any object is read.
    super::check_manifest_room(
        &uri.to_string(),
        files.iter().map(|(_, rel, _)| rel.as_str()),
        "objects",
        "the prefix",
        "narrower prefixes",
    )?;
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
        if let Ok(body) = serde_json::to_vec(&record) {
            crate::fsutil::write_entry(&entry, &body);
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
    fn keys_below_a_prefix() {
        assert!(clean_relative("a/b c/é.txt"));
        for bad in ["", "a//b", "./a", "a/../b", "/a", "a/."] {
            assert!(!clean_relative(bad), "{bad}");
        }
        assert_eq!(
            bucket::decode_key("a+b%2Bc%C3%A9", "u").expect("decode"),
            "a b+cé"
        );
        assert!(bucket::decode_key("%FF", "u").is_err());
        assert_eq!(uri::encode("a b/é+", uri::KEY_SET), "a%20b/%C3%A9%2B");
        assert_eq!(uri::encode("p/q r", uri::QUERY_SET), "p%2Fq%20r");
    }
}
