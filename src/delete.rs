//! `delete REF` and `gc oci://DIR`: untag and collect what no entry reaches in a layout
//! (under its exclusive lock), or delete a manifest from a registry.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::blocking;
use crate::options::Options;
use crate::reference::{LayoutSelector, Reference};
use crate::store::layout::Layout;

/// What `delete` or `gc` did (with `dry_run`: would do).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Deleted {
    /// The reference as given.
    pub reference: String,
    /// Nothing was changed: this is what a real run would do.
    pub dry_run: bool,
    /// Layouts: the entries taken out of `index.json` (names, or digests of unnamed ones).
    pub untagged: Vec<String>,
    /// Registries: the manifest deleted (every tag on it went with it).
    pub manifest: Option<String>,
    /// Layouts: the blobs removed, each `{digest, size}`, in digest order.
    pub removed: Vec<RemovedBlob>,
    /// Bytes of the blobs removed.
    pub bytes: u64,
    /// `gc`: temp files of earlier runs removed (older than an hour).
    pub temp_files: usize,
    /// Layouts: the unpacked layer directories removed (by layer digest).
    pub unpacked: Vec<String>,
}

/// One blob a collection removed.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RemovedBlob {
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

fn deleted(reference: &str, dry_run: bool, c: crate::store::layout::Collected) -> Deleted {
    let removed: Vec<RemovedBlob> = c
        .removed
        .into_iter()
        .map(|(digest, size)| RemovedBlob { digest, size })
        .collect();
    Deleted {
        reference: reference.to_string(),
        dry_run,
        untagged: c.untagged,
        manifest: None,
        bytes: removed.iter().map(|b| b.size).sum(),
        removed,
        temp_files: c.temp_files,
        unpacked: c.unpacked,
    }
}

/// `delete REF`.
pub(crate) async fn delete(reference: &str, options: &Options) -> Result<Deleted> {
    match Reference::parse(reference)? {
        Reference::Layout(l) => {
            let selector = match &l.selector {
                LayoutSelector::Name(n) if n.is_empty() => None,
                s => Some(s.clone()),
            };
            // `oci://DIR` alone parses with the default name; only an explicit one deletes.
            let named = reference.trim_start_matches("oci://").contains([':', '@']);
            let Some(selector) = selector.filter(|_| named) else {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "delete needs an entry: oci://DIR:REF or oci://DIR@sha256:…; to remove \
                         only what no entry uses, run `oci-packer gc {reference}`"
                    ),
                ));
            };
            let layout = Layout::open_existing(&l.dir)?;
            let dry_run = options.dry_run;
            let c = blocking(move || layout.collect(Some(&selector), dry_run, false)).await?;
            Ok(deleted(reference, dry_run, c))
        }
        Reference::Registry(_) => {
            if !options.force && !options.dry_run {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "deleting {reference} deletes its manifest, and with it every tag on \
                         that manifest (a registry cannot delete one tag): pass --force"
                    ),
                ));
            }
            let targets = crate::store::Targets::new(&options.registry, false, None);
            let opened = targets.open_str(reference, false)?;
            let root = opened.resolve().await?;
            if !options.dry_run {
                opened.target.delete_manifest(&root).await?;
            }
            Ok(Deleted {
                reference: reference.to_string(),
                dry_run: options.dry_run,
                untagged: Vec::new(),
                manifest: Some(root.digest().to_string()),
                removed: Vec::new(),
                bytes: 0,
                temp_files: 0,
                unpacked: Vec::new(),
            })
        }
    }
}

/// `gc oci://DIR`.
pub(crate) async fn gc(reference: &str, options: &Options) -> Result<Deleted> {
    let Reference::Layout(l) = Reference::parse(reference)? else {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("gc works on layouts (oci://DIR); a registry collects its own garbage ({reference})"),
        ));
    };
    if reference.trim_start_matches("oci://").contains([':', '@']) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "gc collects a whole layout: give oci://DIR (to delete one entry, run \
                 `oci-packer delete {reference}`)"
            ),
        ));
    }
    let layout = Layout::open_existing(&l.dir)?;
    let dry_run = options.dry_run;
    let c = blocking(move || layout.collect(None, dry_run, true)).await?;
    Ok(deleted(reference, dry_run, c))
}
