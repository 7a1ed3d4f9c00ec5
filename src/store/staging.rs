//! The staging store of a pack: every blob stays where it already is (the user's file, a
//! finished download, a temp archive) and the assembled manifests live in memory.

use std::collections::HashMap;

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
}

#[async_trait]
impl Store for Staging {
    fn name(&self) -> String {
        "the pack's sources".into()
    }

    async fn exists(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.blobs.contains_key(&desc.digest().to_string()))
    }

    async fn fetch(&self, desc: &Descriptor) -> Result<Blob> {
        match self.blobs.get(&desc.digest().to_string()) {
            Some(Origin::Bytes(b)) => Ok(Blob::Bytes(b.clone())),
            Some(Origin::File(p)) => Ok(Blob::File(p.clone())),
            Some(Origin::Temp(t)) => Ok(Blob::File(t.to_path_buf())),
            Some(Origin::Spooled(t)) => Ok(Blob::Spooled(t.to_path_buf())),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("{} is not among the staged blobs", desc.digest()),
            )),
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
