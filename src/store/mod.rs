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
pub mod staging;

/// Manifests and indexes are read into memory; anything larger than this is refused
/// (the cap oras-go and containerd use, 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// The bytes of a blob, as the source store can hand them over.
#[derive(Debug, Clone)]
pub enum Blob {
    /// Small content in memory.
    Bytes(Bytes),
    /// A file to read.
    File(PathBuf),
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The bytes were written.
    Stored,
    /// The store had the blob already; nothing was written.
    AlreadyExists,
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
}

/// Reads a whole (small) blob, refusing anything over [`MAX_MANIFEST_BYTES`].
pub async fn fetch_small(store: &dyn Store, desc: &Descriptor) -> Result<Bytes> {
    if desc.size() > MAX_MANIFEST_BYTES {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} in {}: a manifest of {} bytes is over the 4 MiB limit",
                desc.digest(),
                store.name(),
                desc.size()
            ),
        ));
    }
    match store.fetch(desc).await? {
        Blob::Bytes(b) => Ok(b),
        Blob::File(p) => {
            let data = tokio::fs::read(&p)
                .await
                .map_err(|e| Error::io("reading", &p, e))?;
            let got = crate::digest::Digest::of(&data);
            if got.as_str() != desc.digest().to_string() {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "{}: content of {} has digest {got}",
                        store.name(),
                        desc.digest()
                    ),
                )
                .with_digest(desc.digest().to_string()));
            }
            Ok(Bytes::from(data))
        }
    }
}
