//! Content stores: everything that holds blobs and tags — the staging area of a pack, OCI
//! image layouts, and (later) registries. The copy engine moves graphs between any two.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec::image::Descriptor;

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;

pub mod layout;
pub mod registry;
pub mod staging;
pub(crate) mod verify;

pub use verify::MAX_MANIFEST_BYTES;

/// The bytes of a blob, as the source store can hand them over.
pub enum Blob {
    /// Small content in memory.
    Bytes(Bytes),
    /// A file to read.
    File(PathBuf),
    /// A temp file made in this store's [`Store::spool_dir`] while staging; the store may
    /// adopt it by renaming instead of copying (its digest was computed as it was written).
    Spooled(PathBuf),
    /// A stream (a registry download), read once.
    Stream(Box<dyn tokio::io::AsyncRead + Send + Unpin>),
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blob::Bytes(b) => write!(f, "Blob::Bytes({} bytes)", b.len()),
            Blob::File(p) => write!(f, "Blob::File({})", p.display()),
            Blob::Spooled(p) => write!(f, "Blob::Spooled({})", p.display()),
            Blob::Stream(_) => f.write_str("Blob::Stream"),
        }
    }
}

/// Prefix of the temp files stores and spools create; never a digest name.
pub const SPOOL_PREFIX: &str = ".oci-packer-";

/// A new temp file in `dir` for a blob being written.
pub fn spool_file(dir: &std::path::Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(SPOOL_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating temp file in", dir, e))
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

/// A store of content-addressed blobs.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A name for messages (`oci://build/layout`).
    fn name(&self) -> String;

    /// True when the store has the blob with this digest and size.
    async fn exists(&self, desc: &Descriptor) -> Result<bool>;

    /// The blob's bytes.
    async fn fetch(&self, desc: &Descriptor) -> Result<Blob>;

    /// Stores a blob, verifying its digest and size while it is written.
    async fn push(&self, desc: &Descriptor, blob: Blob, progress: &Progress)
        -> Result<PushOutcome>;

    /// A directory on this store's file system where staging may write the blobs it hashes,
    /// so that pushing them is a rename, not a second copy and hash. `None` by default.
    async fn spool_dir(&self) -> Result<Option<PathBuf>> {
        Ok(None)
    }

    /// The store that really holds `desc`, when this one only passes it through (the
    /// staging store's image items); used to mount from the right repository.
    fn holder(&self, _desc: &Descriptor) -> Option<&dyn Store> {
        None
    }

    /// Stores a large file while computing its digest in the same pass (a registry streams it
    /// into an upload session); `None` when this store cannot, and staging hashes it first.
    async fn ingest(
        &self,
        _path: &std::path::Path,
        _size: u64,
        _progress: &Progress,
    ) -> Result<Option<crate::digest::Digest>> {
        Ok(None)
    }

    /// `(host, repository)` when this store is a registry repository.
    fn registry_repository(&self) -> Option<(&str, &str)> {
        None
    }

    /// Makes the blob appear without copying bytes (cross-repository mount), when this store
    /// and `source` allow it; `None` means "copy it".
    async fn mount_from(
        &self,
        _desc: &Descriptor,
        _source: &dyn Store,
    ) -> Result<Option<PushOutcome>> {
        Ok(None)
    }
}

/// Reads a whole (small) blob, refusing anything over [`MAX_MANIFEST_BYTES`] and anything
/// whose size or digest differs from `desc`.
pub async fn fetch_small(store: &dyn Store, desc: &Descriptor) -> Result<Bytes> {
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
        Blob::File(p) | Blob::Spooled(p) => {
            let (desc, from) = (desc.clone(), from.to_string());
            crate::source::blocking(move || {
                let mut f = verify::open_blob_file(&p, &desc, &from)?;
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
