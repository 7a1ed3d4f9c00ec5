//! Targets: everything that holds blobs and tags — OCI image layouts, registry
//! repositories, the staging area of a pack — behind one trait family, and the one factory
//! that opens them from references. The copy engine moves graphs between any two.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec::image::Descriptor;

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;

pub mod layout;
pub mod locations;
pub(crate) mod open;
pub mod registry;
pub mod staging;
pub(crate) mod verify;

pub(crate) use open::{Opened, Targets};

pub use verify::MAX_MANIFEST_BYTES;

/// The bytes of a blob, as the source store can hand them over.
pub enum Blob {
    /// Small content in memory.
    Bytes(Bytes),
    /// A file to read (which must still be the file it was when staged or found).
    File(crate::fsutil::FileRef),
    /// A temp file made in this store's [`Target::spool_dir`] while staging; the store may
    /// adopt it by renaming instead of copying (its digest was computed as it was written).
    /// It stays open (the second part) until the blob is stored, so that no other file can
    /// take its identity.
    Spooled(crate::fsutil::FileRef, std::sync::Arc<std::fs::File>),
    /// A stream (a registry download), read once.
    Stream(Box<dyn tokio::io::AsyncRead + Send + Unpin>),
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blob::Bytes(b) => write!(f, "Blob::Bytes({} bytes)", b.len()),
            Blob::File(p) => write!(f, "Blob::File({})", p.path.display()),
            Blob::Spooled(p, _) => write!(f, "Blob::Spooled({})", p.path.display()),
            Blob::Stream(_) => f.write_str("Blob::Stream"),
        }
    }
}

impl Blob {
    /// The file of a [`Blob::File`] or [`Blob::Spooled`].
    pub fn into_file_ref(self) -> Option<crate::fsutil::FileRef> {
        match self {
            Blob::File(f) => Some(f),
            Blob::Spooled(f, _) => Some(f),
            Blob::Bytes(_) | Blob::Stream(_) => None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The bytes were written.
    Stored,
    /// The store had the blob already; nothing was written.
    AlreadyExists,
    /// The registry linked the blob from another repository; no bytes moved.
    Mounted,
}

/// What a target is, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An OCI image layout directory (absolute).
    Layout(PathBuf),
    /// A registry repository, `host/repository`.
    Repository(String),
    /// Anything else (the staging area of a pack), by name.
    Other(String),
}

/// Where a blob can be mounted from: a repository of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSource {
    /// `host[:port]`.
    pub host: String,
    /// The repository that has the blob.
    pub repository: String,
}

fn unsupported(target: &dyn Target, what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("{}: cannot {what} here", target.name()),
    )
}

/// A store of content-addressed blobs with tags — an OCI layout, a registry repository, the
/// staging area of a pack (the oras-go target family: fetch, push, exists, resolve, tag).
///
/// Optional capabilities have defaults that say "unsupported" (or "no"), which callers
/// probe: listing tags, mounting, preparing blobs on the target's file system, taking a
/// file whose digest is computed on the way.
#[async_trait]
pub trait Target: Send + Sync + fmt::Debug {
    /// A name for messages (`oci://build/layout`, `host/repo`).
    fn name(&self) -> String;

    /// What this target is, for listings.
    fn location(&self) -> Location;

    /// True when the target has the blob with this digest and size.
    async fn exists(&self, desc: &Descriptor) -> Result<bool>;

    /// The blob's bytes. Every reader stops one byte past the declared size, and a
    /// [`Blob::Stream`] is verified (size and digest) as it is read.
    async fn fetch(&self, desc: &Descriptor) -> Result<Blob>;

    /// Stores a blob, verifying its digest and size while it is written.
    async fn push(&self, desc: &Descriptor, blob: Blob, progress: &Progress)
        -> Result<PushOutcome>;

    /// The descriptor a tag, layout name or digest (`sha256:…`) of this target names.
    async fn resolve(&self, reference: &str) -> Result<Descriptor>;

    /// Names `desc` (whose whole graph must be here) as `reference`. `manifest` is its
    /// bytes when the caller has them.
    async fn tag(
        &self,
        _desc: &Descriptor,
        _reference: &str,
        _manifest: Option<Bytes>,
    ) -> Result<()> {
        Err(unsupported(self.as_dyn(), "tag"))
    }

    /// Deletes the manifest `desc` (and so every tag on it) — what a registry's API offers
    /// in place of deleting a tag. Layouts delete by collection instead
    /// ([`layout::Layout::collect`]).
    async fn delete_manifest(&self, _desc: &Descriptor) -> Result<()> {
        Err(unsupported(self.as_dyn(), "delete manifests"))
    }

    /// Every tag (layouts: every entry, named or not) with what it names, or why that
    /// could not be found out for this one entry (a tag that is not a valid name, a tag
    /// deleted meanwhile); an error when the list itself cannot be read.
    async fn entries(&self) -> Result<Vec<(String, Result<Descriptor>)>> {
        Err(unsupported(self.as_dyn(), "list tags"))
    }

    /// Where `desc` could be mounted from without moving bytes.
    fn mount_source(&self, _desc: &Descriptor) -> Option<MountSource> {
        None
    }

    /// Makes the blob appear without copying bytes (cross-repository mount), when this
    /// target and `source` allow it; `None` means "copy it".
    async fn mount_from(
        &self,
        _desc: &Descriptor,
        _source: &dyn Target,
    ) -> Result<Option<PushOutcome>> {
        Ok(None)
    }

    /// A directory on this target's file system where new blobs may be prepared (large
    /// files copied while hashed, archives built), so that pushing them is a rename, not a
    /// second copy and hash. `None` by default.
    async fn spool_dir(&self) -> Result<Option<PathBuf>> {
        Ok(None)
    }

    /// The operation writing into this target failed (and its blocking work has stopped):
    /// take back what it wrote where nothing else can be using it (a new layout it created
    /// and nobody else holds), so that a failed pack leaves nothing. Nothing by default;
    /// never fails (the operation's own error is the one to report).
    async fn abandon(&self) {}

    /// Stores content read on a blocking thread (`from` names it in messages) as a new blob,
    /// hashing it as it is written, when this target writes blobs without a look first (a
    /// layout this operation creates): its digest and size. `None`, before anything is read,
    /// when it cannot; the caller hashes the content and the copy writes it later.
    fn store_hashing(
        &self,
        _read: &mut dyn std::io::Read,
        _from: &std::path::Path,
    ) -> Result<Option<(crate::digest::Digest, u64)>> {
        Ok(None)
    }

    /// Takes content whose digest is not known yet (a file, or a remote object read again
    /// on each attempt), computing the digest on the way (a registry streams it into an
    /// upload session); `None` when this target cannot, and the caller hashes it first. The
    /// copy engine's taker calls it for large files and objects.
    async fn push_hashing(
        &self,
        _content: &staging::Hashable,
        _size: u64,
        _progress: &Progress,
    ) -> Result<Option<crate::digest::Digest>> {
        Ok(None)
    }

    /// Also extracts every tar layer of the graph under `root` (which must be here) into
    /// a directory beside its blob (a layout's `unpacked/sha256/<hex>/`); returns how many
    /// were extracted now. Only layouts can.
    async fn unpack_layers(
        &self,
        _root: &Descriptor,
        _limits: crate::archive::unpack::Limits,
    ) -> Result<usize> {
        Err(unsupported(
            self.as_dyn(),
            "unpack layers (--unpack needs a layout, oci://DIR:REF)",
        ))
    }

    /// Bytes `start .. start + len` of the blob (an HTTP `Range`), which must lie within
    /// it. Not verified: a part of a blob cannot be checked against its digest (registries
    /// serve ranges so too). The default reads the blob from its start and keeps the part.
    async fn fetch_range(&self, desc: &Descriptor, start: u64, len: u64) -> Result<ByteStream> {
        let whole = blob_stream(self.fetch(desc).await?, desc, &self.name()).await?;
        Ok(slice_stream(whole, start, len))
    }

    /// `self` as a trait object (for the defaults' messages).
    fn as_dyn(&self) -> &dyn Target;
}

/// Bytes as they stream from a store; an error ends the stream.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// The whole blob as a stream of chunks, verified: it ends with an error when the size or
/// the digest differs from `desc`, and the chunk that completes it is handed on only after
/// the check. `from` names the store for messages.
pub(crate) async fn blob_stream(blob: Blob, desc: &Descriptor, from: &str) -> Result<ByteStream> {
    use futures::StreamExt;
    Ok(match blob {
        Blob::Bytes(b) => {
            let b = verify::verify_bytes(b, desc, from)?;
            futures::stream::once(async move { Ok(b) }).boxed()
        }
        Blob::File(_) | Blob::Spooled(..) => {
            // One blocking thread reads and hashes (large reads, no hop through the
            // blocking pool per chunk); one 256 KiB chunk waits at most: memory stays small.
            let file = blob.into_file_ref().expect("a file");
            let (d, f) = (desc.clone(), from.to_string());
            let opened =
                crate::fsutil::blocking(move || verify::open_blob_file(&file, &d, &f)).await?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
            let (d, f) = (desc.clone(), from.to_string());
            tokio::task::spawn_blocking(move || {
                for chunk in verify::VerifiedChunks::new(opened, d, f, 256 << 10) {
                    let failed = chunk.is_err();
                    if tx.blocking_send(chunk).is_err() || failed {
                        return;
                    }
                }
            });
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
        }
        // Verified as it is read (see [`Blob::Stream`]), which ends it with an error after
        // its last piece: that piece is held back until the end is known to be good.
        Blob::Stream(r) => {
            hold_last(tokio_util::io::ReaderStream::with_capacity(r, 256 << 10).boxed())
        }
    })
}

/// `inner` one piece behind: each piece goes on when the next arrives, the last only when
/// the stream ended without an error (an error drops it).
fn hold_last(inner: ByteStream) -> ByteStream {
    use futures::StreamExt;
    futures::stream::unfold(Some((inner, None::<Bytes>)), |state| async move {
        let (mut inner, mut held) = state?;
        loop {
            match inner.next().await {
                Some(Ok(piece)) => {
                    if let Some(previous) = held.replace(piece) {
                        return Some((Ok(previous), Some((inner, held))));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => return held.map(|last| (Ok(last), None)),
            }
        }
    })
    .boxed()
}

/// The part `start .. start + len` of a stream that begins at byte 0; ends early with an
/// error when the stream is shorter.
pub(crate) fn slice_stream(inner: ByteStream, start: u64, len: u64) -> ByteStream {
    use futures::StreamExt;
    let state = (inner, start, len);
    futures::stream::unfold(state, |(mut inner, mut skip, mut left)| async move {
        while left > 0 {
            match inner.next().await {
                Some(Ok(mut chunk)) => {
                    let n = chunk.len() as u64;
                    if skip >= n {
                        skip -= n;
                        continue;
                    }
                    let _ = chunk.split_to(skip as usize);
                    skip = 0;
                    if chunk.len() as u64 > left {
                        chunk.truncate(left as usize);
                    }
                    left -= chunk.len() as u64;
                    return Some((Ok(chunk), (inner, skip, left)));
                }
                Some(Err(e)) => return Some((Err(e), (inner, 0, 0))),
                None => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the blob ended before the range",
                    );
                    return Some((Err(e), (inner, 0, 0)));
                }
            }
        }
        None
    })
    .boxed()
}

/// Refuses `--unpack` for a target that is not a layout, before anything is written.
pub(crate) fn require_layout_for_unpack(target: &dyn Target) -> Result<()> {
    match target.location() {
        Location::Layout(_) => Ok(()),
        _ => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "--unpack extracts layers into a layout; {} is not one (write to oci://DIR:REF)",
                target.name()
            ),
        )),
    }
}

/// Reads a whole (small) blob, refusing anything over [`MAX_MANIFEST_BYTES`] and anything
/// whose size or digest differs from `desc`.
pub async fn fetch_small(store: &dyn Target, desc: &Descriptor) -> Result<Bytes> {
    let from = store.name();
    verify::refuse_large(desc, &from)?;
    let blob = store.fetch(desc).await?;
    read_small(blob, desc, &from).await
}

/// Reads a small blob into memory (at most its declared size plus one byte), verifying its
/// size and digest; `from` names the store for messages.
pub async fn read_small(blob: Blob, desc: &Descriptor, from: &str) -> Result<Bytes> {
    use tokio::io::AsyncReadExt;
    verify::refuse_large(desc, from)?;
    match blob {
        Blob::Bytes(b) => verify::verify_bytes(b, desc, from),
        Blob::File(_) | Blob::Spooled(..) => {
            let file = blob.into_file_ref().expect("a file");
            let (desc, from) = (desc.clone(), from.to_string());
            crate::fsutil::blocking(move || {
                let mut f = verify::open_blob_file(&file, &desc, &from)?;
                verify::read_capped(&mut f, &desc, &from)
            })
            .await
        }
        Blob::Stream(r) => {
            let mut data = Vec::new();
            r.take(desc.size() + 1)
                .read_to_end(&mut data)
                .await
                .map_err(|e| {
                    verify::from_read_error(e, |e| {
                        Error::new(
                            ErrorKind::Network,
                            format!("reading {} from {from}: {e}", desc.digest()),
                        )
                    })
                })?;
            verify::verify_bytes(Bytes::from(data), desc, from)
        }
    }
}
