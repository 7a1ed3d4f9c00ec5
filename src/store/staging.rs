//! The staging store of a pack: every blob stays where it already is (the user's file, a
//! finished download, a temp archive, the registry or layout of an image item) and the
//! assembled manifests live in memory.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec::image::Descriptor;

use super::{Blob, Location, MountSource, PushOutcome, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::FileRef;
use crate::progress::Progress;

/// Bytes that stay where they are (an object in S3) until a target needs them, and can be
/// read again from the start (a retry in a new upload session reads them again).
#[async_trait]
pub trait Reopen: Send + Sync + std::fmt::Debug {
    /// Where the bytes are, for messages (the source's URI).
    fn name(&self) -> String;

    /// All the bytes from the start: a stream that ends with an error unless it gives exactly
    /// the bytes staging saw (same size; the same version of the object).
    async fn open(&self) -> Result<super::ByteStream>;
}

/// Content whose digest is not known yet, for a target that computes it while it takes the
/// bytes ([`Target::push_hashing`]).
#[derive(Debug, Clone)]
pub enum Hashable {
    /// A file, which must still be the file it was.
    File(FileRef),
    /// Bytes read again from where they are.
    Remote(Arc<dyn Reopen>),
}

impl Hashable {
    /// What to name in messages and progress: the file's path or the source's URI.
    pub fn name(&self) -> String {
        match self {
            Hashable::File(f) => f.path.display().to_string(),
            Hashable::Remote(r) => r.name(),
        }
    }
}

/// Where a staged blob's bytes are.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A file the user owns (read, never moved), with the identity it had when hashed.
    File(FileRef),
    /// A temporary file this run made; deleted when the last handle goes.
    Temp(Arc<tempfile::TempPath>, crate::fsutil::FileId),
    /// A temporary file in the target's spool directory, adopted by the target on push
    /// (deleted when the last handle goes, if it was not adopted).
    Spooled(
        Arc<tempfile::TempPath>,
        crate::fsutil::FileId,
        Arc<std::fs::File>,
    ),
    /// Small content in memory (manifests, configs, the empty config).
    Bytes(Bytes),
    /// A file in a private temp dir of this run, removed when the last handle goes.
    InTempDir {
        /// The file.
        file: FileRef,
        /// Its directory, removed with the last handle.
        _dir: Arc<tempfile::TempDir>,
    },
    /// Bytes read only when a target needs them, verified against the descriptor then.
    Remote(Arc<dyn Reopen>),
}

/// A descriptor plus where its bytes are.
#[derive(Debug, Clone)]
pub struct StagedBlob {
    /// What the manifest will say about the blob.
    pub descriptor: Descriptor,
    /// Where its bytes are.
    pub origin: Origin,
}

/// A read-only store over staged blobs.
#[derive(Debug, Default)]
pub struct Staging {
    blobs: HashMap<String, Origin>,
    /// Digests of image items' graphs, and the store that has them.
    remote: HashMap<String, Arc<dyn Target>>,
}

impl Staging {
    /// A store serving `blobs` (later entries with the same digest are the same bytes).
    pub fn new(blobs: impl IntoIterator<Item = StagedBlob>) -> Staging {
        let mut s = Staging::default();
        for b in blobs {
            s.blobs
                .entry(b.descriptor.digest().to_string())
                .or_insert(b.origin);
        }
        s
    }

    /// Adds the graphs of image items, served from their own stores.
    /// `images` are the digests of each image item's graph with the store that has them.
    pub fn with_images(
        mut self,
        images: impl IntoIterator<Item = (Vec<String>, Arc<dyn Target>)>,
    ) -> Staging {
        for (digests, store) in images {
            for d in digests {
                self.remote.entry(d).or_insert_with(|| store.clone());
            }
        }
        self
    }
}

impl Staging {
    /// The target an image item's blob comes from.
    fn holder(&self, desc: &Descriptor) -> Option<&dyn Target> {
        self.remote
            .get(&desc.digest().to_string())
            .map(|s| s.as_ref())
    }
}

#[async_trait]
impl Target for Staging {
    fn name(&self) -> String {
        "the pack's sources".into()
    }

    async fn exists(&self, desc: &Descriptor) -> Result<bool> {
        let d = desc.digest().to_string();
        Ok(self.blobs.contains_key(&d) || self.remote.contains_key(&d))
    }

    fn location(&self) -> Location {
        Location::Other(self.name())
    }

    fn as_dyn(&self) -> &dyn Target {
        self
    }

    async fn resolve(&self, reference: &str) -> Result<Descriptor> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the pack's sources have no tags ({reference})"),
        ))
    }

    /// Blobs of image items mount from where they are.
    fn mount_source(&self, desc: &Descriptor) -> Option<MountSource> {
        self.holder(desc)?.mount_source(desc)
    }

    async fn fetch(&self, desc: &Descriptor) -> Result<Blob> {
        match self.blobs.get(&desc.digest().to_string()) {
            Some(Origin::Bytes(b)) => Ok(Blob::Bytes(b.clone())),
            Some(Origin::File(f) | Origin::InTempDir { file: f, .. }) => Ok(Blob::File(f.clone())),
            Some(Origin::Temp(t, id)) => Ok(Blob::File(FileRef::new(t.to_path_buf(), Some(*id)))),
            Some(Origin::Spooled(t, id, held)) => Ok(Blob::Spooled(
                FileRef::new(t.to_path_buf(), Some(*id)),
                held.clone(),
            )),
            Some(Origin::Remote(r)) => {
                let verified = super::verify::verified_stream(r.open().await?, desc, r.name());
                Ok(Blob::Stream(Box::new(tokio_util::io::StreamReader::new(
                    verified,
                ))))
            }
            None => match self.holder(desc) {
                Some(store) => store.fetch(desc).await,
                None => Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{} is not among the staged blobs", desc.digest()),
                )),
            },
        }
    }

    async fn push(
        &self,
        desc: &Descriptor,
        _blob: Blob,
        _progress: &Progress,
    ) -> Result<PushOutcome> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("cannot write {} into the staging area", desc.digest()),
        ))
    }
}
