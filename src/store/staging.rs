//! The staging store of a pack: every blob stays where it already is (the user's file, a
//! finished download, a temp archive, the registry or layout of an image item) and the
//! assembled manifests live in memory.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use oci_spec::image::Descriptor;

use super::{Blob, PushOutcome, Store};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::source::{Origin, StagedBlob};

/// A read-only store over staged blobs.
#[derive(Debug, Default)]
pub struct Staging {
    blobs: HashMap<String, Origin>,
    /// Digests of image items' graphs, and the store that has them.
    remote: HashMap<String, Arc<dyn Store>>,
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
    pub fn with_images(
        mut self,
        images: impl IntoIterator<Item = crate::source::image::StagedImage>,
    ) -> Staging {
        for image in images {
            for d in image.digests {
                self.remote.entry(d).or_insert_with(|| image.store.clone());
            }
        }
        self
    }
}

#[async_trait]
impl Store for Staging {
    fn name(&self) -> String {
        "the pack's sources".into()
    }

    async fn exists(&self, desc: &Descriptor) -> Result<bool> {
        let d = desc.digest().to_string();
        Ok(self.blobs.contains_key(&d) || self.remote.contains_key(&d))
    }

    fn holder(&self, desc: &Descriptor) -> Option<&dyn Store> {
        self.remote
            .get(&desc.digest().to_string())
            .map(|s| s.as_ref())
    }

    async fn fetch(&self, desc: &Descriptor) -> Result<Blob> {
        match self.blobs.get(&desc.digest().to_string()) {
            Some(Origin::Bytes(b)) => Ok(Blob::Bytes(b.clone())),
            Some(Origin::File(p) | Origin::InTempDir(p, _)) => Ok(Blob::File(p.clone())),
            Some(Origin::Temp(t)) => Ok(Blob::File(t.to_path_buf())),
            Some(Origin::Spooled(t)) => Ok(Blob::Spooled(t.to_path_buf())),
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
