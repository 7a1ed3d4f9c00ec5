//! `verify REF`: walks an artifact's graph in a layout or a registry and hashes every blob
//! again, reporting each one that is missing, has another size or digest, or cannot be read,
//! with its path in the graph.

use std::collections::HashSet;
use std::sync::Arc;

use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{check_path, child_refs};
use crate::store::{Blob, Target, MAX_MANIFEST_BYTES};

/// What `verify` found: the root, how many blobs and bytes were checked, and every problem
/// (none when the artifact is whole).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Verification {
    /// The reference as given.
    pub reference: String,
    /// The root's digest.
    pub digest: String,
    /// Distinct blobs checked (the root included).
    pub blobs: usize,
    /// Bytes read and hashed.
    pub bytes: u64,
    /// One entry per blob that is not what its descriptor says, in walk order.
    pub problems: Vec<BlobProblem>,
}

/// One blob of the graph that is not what its descriptor says.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct BlobProblem {
    /// `missing`, `size mismatch`, `digest mismatch` or `unreadable`.
    pub kind: String,
    /// The blob's digest.
    pub digest: String,
    /// The digests from the root down to the blob's parent (empty for the root).
    pub path: Vec<String>,
    /// What was found, for people.
    pub message: String,
}

impl Verification {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How one blob read went: its digest and size as read, and the bytes of a manifest.
struct Read {
    digest: Digest,
    size: u64,
    data: Option<Vec<u8>>,
}

/// Reads `blob` to its end, hashing and counting (at most one byte past `declared`), keeping
/// the bytes when `keep` (manifests, under the 4 MiB cap). An error is the read's own: a
/// store's verifying reader that fails at the end has still been counted.
async fn read_all(
    blob: Blob,
    declared: u64,
    keep: bool,
) -> std::result::Result<Read, (Read, Error)> {
    use tokio::io::AsyncReadExt;
    let mut hasher = Hasher::new();
    let mut data = keep.then(Vec::new);
    let done = |hasher: Hasher, data: Option<Vec<u8>>| {
        let (digest, size) = hasher.finish();
        Read { digest, size, data }
    };
    let mut reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match blob {
        Blob::Bytes(b) => Box::new(std::io::Cursor::new(b)),
        Blob::Stream(r) => r,
        blob @ (Blob::File(_) | Blob::Spooled(..)) => {
            let file = blob.into_file_ref().expect("a file");
            match file.open() {
                Ok((f, _)) => Box::new(tokio::fs::File::from_std(f)),
                Err(e) => {
                    let err =
                        crate::error::from_read_error(e, |e| Error::io("reading", &file.path, e));
                    return Err((done(hasher, data), err));
                }
            }
        }
    };
    let mut reader = (&mut reader).take(declared + 1);
    let mut buf = vec![0u8; crate::digest::COPY_BUFFER];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                if let Some(d) = data.as_mut() {
                    d.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) => {
                let err = crate::error::from_read_error(e, |e| {
                    Error::new(ErrorKind::Network, format!("reading: {e}"))
                });
                return Err((done(hasher, data), err));
            }
        }
    }
    Ok(done(hasher, data))
}

/// Verifies the graph under `root` in `store`.
pub(crate) async fn verify_graph(
    store: &dyn Target,
    reference: &str,
    root: &Descriptor,
) -> Result<Verification> {
    let mut out = Verification {
        reference: reference.to_string(),
        digest: root.digest().to_string(),
        blobs: 0,
        bytes: 0,
        problems: Vec::new(),
    };
    let mut seen = HashSet::new();
    // Each entry: a node and the digests above it (one shared list per parent).
    let mut todo: Vec<(Descriptor, Arc<Vec<String>>)> = vec![(root.clone(), Arc::default())];
    while let Some((desc, path)) = todo.pop() {
        let digest = desc.digest().to_string();
        check_path(&path, &digest, || store.name())?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        out.blobs += 1;
        let mut problem = |kind: &str, message: String| {
            out.problems.push(BlobProblem {
                kind: kind.to_string(),
                digest: digest.clone(),
                path: path.as_ref().clone(),
                message,
            })
        };
        let media_type = desc.media_type().to_string();
        let manifest = crate::mediatype::is_manifest(&media_type);
        if manifest && desc.size() > MAX_MANIFEST_BYTES {
            problem(
                "unreadable",
                format!(
                    "a manifest of {} bytes is over the 4 MiB limit",
                    desc.size()
                ),
            );
            continue;
        }
        let blob = match store.fetch(&desc).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                problem("missing", e.message().to_string());
                continue;
            }
            // A layout checks the file's size before handing it over.
            Err(e) if e.kind() == ErrorKind::DigestMismatch => {
                problem("size mismatch", e.message().to_string());
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => return Err(e),
            Err(e) if e.kind().is_usage() || e.kind() == ErrorKind::Authentication => {
                return Err(e)
            }
            Err(e) => {
                problem("unreadable", e.message().to_string());
                continue;
            }
        };
        let (read, failure) = match read_all(blob, desc.size(), manifest).await {
            Ok(r) => (r, None),
            Err((r, e)) => (r, Some(e)),
        };
        out.bytes += read.size;
        if failure
            .as_ref()
            .is_some_and(|e| e.kind() == ErrorKind::Cancelled)
        {
            return Err(failure.expect("checked"));
        }
        let expected = desc.digest().to_string();
        if read.size != desc.size() {
            problem(
                "size mismatch",
                format!("{} bytes, the descriptor says {}", read.size, desc.size()),
            );
            continue;
        }
        if read.digest.as_str() != expected {
            problem(
                "digest mismatch",
                format!("the content's digest is {}", read.digest),
            );
            continue;
        }
        if let Some(e) = failure {
            problem("unreadable", e.message().to_string());
            continue;
        }
        let Some(data) = read.data else { continue };
        match child_refs(&media_type, &data) {
            Ok(children) => {
                let mut below = path.as_ref().clone();
                below.push(digest.clone());
                let below = Arc::new(below);
                // Depth first, in document order.
                for c in children.into_iter().rev() {
                    let Ok(d) = Digest::parse(&c.digest) else {
                        out.problems.push(BlobProblem {
                            kind: "unreadable".into(),
                            digest: c.digest.clone(),
                            path: below.as_ref().clone(),
                            message: "a digest this program cannot check".into(),
                        });
                        continue;
                    };
                    todo.push((
                        Descriptor::new(c.media_type.as_str().into(), c.size, d.to_oci()),
                        below.clone(),
                    ));
                }
            }
            Err(e) => problem("unreadable", e.message().to_string()),
        }
    }
    Ok(out)
}

/// `verify REF`: resolves `reference` (a layout or registry reference) and verifies its graph.
pub(crate) async fn verify(
    reference: &str,
    registry: &crate::transport::RegistryOptions,
) -> Result<Verification> {
    let targets = crate::store::Targets::new(registry, false, None);
    let opened = targets.open_str(reference, false)?;
    let root = opened.resolve().await?;
    verify_graph(opened.target.as_ref(), reference, &root).await
}
