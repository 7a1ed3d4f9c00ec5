//! The shape of an artifact graph: the children of a manifest or index, and the limits
//! every walk of a graph obeys (no node that names an ancestor, no path deeper than
//! [`MAX_DEPTH`]).

use oci_spec::image::Descriptor;
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;

/// How deep a graph may nest (index → index → manifest → subject …). Real artifacts are a
/// handful of levels deep; the limit turns a hostile 20,000-deep chain into an error.
pub const MAX_DEPTH: usize = 32;

/// The children of a manifest or index, in document order.
#[derive(Debug, Deserialize)]
struct Children<T> {
    config: Option<T>,
    #[serde(default = "Vec::new")]
    layers: Vec<T>,
    #[serde(default = "Vec::new")]
    manifests: Vec<T>,
    subject: Option<T>,
}

impl<T> Children<T> {
    fn flatten(self) -> Vec<T> {
        self.config
            .into_iter()
            .chain(self.layers)
            .chain(self.manifests)
            .chain(self.subject)
            .collect()
    }
}

/// The descriptors a manifest or index points to.
pub fn successors(media_type: &str, data: &[u8]) -> Result<Vec<Descriptor>> {
    if !mediatype::is_manifest(media_type) {
        return Ok(Vec::new());
    }
    let c: Children<Descriptor> = crate::json::from_slice(data)
        .map_err(|e| Error::new(ErrorKind::Registry, format!("invalid {media_type}: {e}")))?;
    Ok(c.flatten())
}

/// What a manifest or index says about one child: enough to find and check it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChildRef {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The children of a manifest or index like [`successors`], but parsed straight into
/// media type, digest and size (no annotations, no intermediate JSON tree): a manifest of
/// 10,000 layers costs a few MB less.
pub(crate) fn child_refs(media_type: &str, data: &[u8]) -> Result<Vec<ChildRef>> {
    if !mediatype::is_manifest(media_type) {
        return Ok(Vec::new());
    }
    let c: Children<ChildRef> = serde_json::from_slice(data)
        .map_err(|e| Error::new(ErrorKind::Registry, format!("invalid {media_type}: {e}")))?;
    Ok(c.flatten())
}

/// Refuses `digest` under `path` (root first) when it closes a cycle or nests too deep.
/// `store` names the store for the message; it is only called on an error, so a walk of many
/// nodes builds no name per node.
pub(crate) fn check_path(
    path: &[String],
    digest: &str,
    store: impl FnOnce() -> String,
) -> Result<()> {
    if path.iter().any(|p| p == digest) {
        let store = store();
        return Err(Error::new(
            ErrorKind::DigestMismatch,
            format!(
                "{store}: {digest} refers to itself (through {}); the graph is corrupt",
                path.join(" → ")
            ),
        )
        .with_digest(digest));
    }
    if path.len() >= MAX_DEPTH {
        let store = store();
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{store}: {digest} is nested more than {MAX_DEPTH} levels below {}; refusing to follow",
                path.first().map_or("the root", String::as_str)
            ),
        )
        .with_digest(digest));
    }
    Ok(())
}
