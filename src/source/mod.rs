//! Sources: each scheme of SPEC §2.2 turns an item into staged blobs, i.e. descriptors whose
//! bytes can be (re)opened where they already are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;

pub mod cache;
pub mod dir;
pub mod file;
pub mod http;
pub mod image;

/// Annotation naming a layer's file (OCI).
pub const TITLE: &str = "org.opencontainers.image.title";
/// Annotation recording the `dir://` directory a layer came from (the Go tool's `extract`).
pub const DIR_ANNOTATION: &str = "io.arenadata.oci-packer.dir";

/// A parsed source URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `file://PATH`: one layer.
    File {
        /// Resolved path.
        path: PathBuf,
    },
    /// `dir://PATH`: one layer per file, or one archive layer.
    Dir {
        /// Resolved path.
        path: PathBuf,
        /// The directory as written, cleaned (`./data/` → `data`).
        written: String,
    },
    /// `http://` or `https://`: one layer.
    Http {
        /// The URL.
        url: String,
    },
    /// `oci://`, `docker://`, `cr://`: an image or artifact in a registry or a layout, which
    /// becomes a member of the index (layout paths resolved against the pack's directory).
    Image {
        /// The parsed reference.
        reference: crate::reference::Reference,
    },
}

/// How `archive:` packs a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// Plain tar.
    Tar,
    /// Gzip-compressed tar.
    TarGzip,
    /// Zstd-compressed tar.
    TarZstd,
}

impl ArchiveFormat {
    /// Parses `tar`, `tar+gzip`, `tar+zstd`.
    pub fn parse(s: &str) -> Option<ArchiveFormat> {
        match s {
            "tar" => Some(ArchiveFormat::Tar),
            "tar+gzip" => Some(ArchiveFormat::TarGzip),
            "tar+zstd" => Some(ArchiveFormat::TarZstd),
            _ => None,
        }
    }
}

const IMAGE_SCHEMES: &[&str] = &["oci://", "docker://", "cr://"];
const S3_SCHEMES: &[&str] = &["s3://", "s3+http://"];

impl Source {
    /// Parses a source URI; relative paths resolve against `base`.
    ///
    /// The error text says what is wrong and what to write instead.
    pub fn parse(uri: &str, base: &Path) -> std::result::Result<Source, String> {
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        if let Some(p) = uri.strip_prefix("file://") {
            if p.is_empty() {
                return Err("file:// needs a path, e.g. file://bin/tool".into());
            }
            return Ok(Source::File { path: resolve(p) });
        }
        if let Some(p) = uri.strip_prefix("dir://") {
            if p.is_empty() {
                return Err("dir:// needs a path, e.g. dir://templates/".into());
            }
            return Ok(Source::Dir {
                path: resolve(p),
                written: clean_path(p),
            });
        }
        if uri.starts_with("http://") || uri.starts_with("https://") {
            let url =
                reqwest::Url::parse(uri).map_err(|e| format!("invalid URL \"{uri}\": {e}"))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("invalid URL \"{uri}\": no host"));
            }
            return Ok(Source::Http {
                url: uri.to_string(),
            });
        }
        if IMAGE_SCHEMES.iter().any(|s| uri.starts_with(s)) {
            let mut reference =
                crate::reference::Reference::parse(uri).map_err(|e| e.message().to_string())?;
            if let crate::reference::Reference::Layout(l) = &mut reference {
                l.dir = resolve(&l.dir.to_string_lossy());
            }
            return Ok(Source::Image { reference });
        }
        if S3_SCHEMES.iter().any(|s| uri.starts_with(s)) {
            return Err(
                "S3 sources (s3://, s3+http://) are not available in this build yet".into(),
            );
        }
        let scheme = uri.split_once("://").map(|(s, _)| s);
        Err(match scheme {
            Some(s) => format!(
                "unknown scheme \"{s}://\" in \"{uri}\" (use file://, dir://, http://, https://, \
                 s3://, oci://, docker:// or cr://)"
            ),
            None => format!("\"{uri}\" has no scheme (write file://{uri} for a file or dir://{uri} for a directory)"),
        })
    }

    /// True for sources that give exactly one blob (valid for `config` and `digest:`).
    pub fn is_single_blob(&self) -> bool {
        matches!(self, Source::File { .. } | Source::Http { .. })
    }
}

/// Lexically cleans a slash path like Go's `path.Clean`, without a trailing `/`.
pub fn clean_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Where a staged blob's bytes are.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A file the user owns (read, never moved).
    File(PathBuf),
    /// A temporary file this run made; deleted when the last handle goes.
    Temp(Arc<tempfile::TempPath>),
    /// A temporary file in the target's spool directory, adopted by the target on push
    /// (deleted when the last handle goes, if it was not adopted).
    Spooled(Arc<tempfile::TempPath>),
    /// Small content in memory (manifests, configs, the empty config).
    Bytes(Bytes),
    /// A file in a private temp dir of this run, removed when the last handle goes.
    InTempDir(PathBuf, Arc<tempfile::TempDir>),
}

impl Origin {
    /// The path to read, for file-backed origins.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Origin::File(p) | Origin::InTempDir(p, _) => Some(p),
            Origin::Temp(t) | Origin::Spooled(t) => Some(t),
            Origin::Bytes(_) => None,
        }
    }
}

/// A descriptor plus where its bytes are.
#[derive(Debug, Clone)]
pub struct StagedBlob {
    /// What the manifest will say about the blob.
    pub descriptor: Descriptor,
    /// Where its bytes are.
    pub origin: Origin,
}

/// What every source needs while staging.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// Where downloads and archives go (`--tmp-dir`).
    pub tmp_dir: PathBuf,
    /// The target's spool directory, when it has one: staged files are copied there while
    /// they are hashed, and archives are built there.
    pub spool: Option<PathBuf>,
    /// `SOURCE_DATE_EPOCH`, used as archive mtime.
    pub source_date_epoch: Option<u64>,
    /// Shared HTTP client for `http(s)://` sources.
    pub http: reqwest::Client,
    /// Progress observer.
    pub progress: Progress,
    /// Registry access for image items.
    pub registry: crate::RegistryOptions,
    /// The target, for stores that can take a large file while hashing it
    /// ([`crate::store::Store::ingest`]).
    pub ingest: Option<Arc<dyn crate::store::Store>>,
    /// Digests of large files that did not change.
    pub cache: cache::DigestCache,
}

/// Builds a descriptor with the given annotations; empty maps are left out.
pub fn descriptor(
    media_type: &str,
    digest: &Digest,
    size: u64,
    annotations: BTreeMap<String, String>,
) -> Descriptor {
    let mut d = Descriptor::new(media_type.into(), size, digest.to_oci());
    if !annotations.is_empty() {
        d.set_annotations(Some(annotations.into_iter().collect()));
    }
    d
}

/// The item's annotations plus a title, unless the user gave one (SPEC §2.2 title rule).
pub fn with_title(user: &BTreeMap<String, String>, title: &str) -> BTreeMap<String, String> {
    let mut a = user.clone();
    a.entry(TITLE.to_string())
        .or_insert_with(|| title.to_string());
    a
}

/// Runs blocking file work on tokio's blocking pool, mapping a panic to an internal error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("worker thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean() {
        assert_eq!(clean_path("./data/"), "data");
        assert_eq!(clean_path("a//b/./c/../d/"), "a/b/d");
        assert_eq!(clean_path("../x"), "../x");
        assert_eq!(clean_path("/abs/dir/"), "/abs/dir");
        assert_eq!(clean_path("./"), ".");
    }

    #[test]
    fn schemes() {
        let base = Path::new("/base");
        assert_eq!(
            Source::parse("file://a/b", base),
            Ok(Source::File {
                path: "/base/a/b".into()
            })
        );
        assert_eq!(
            Source::parse("file:///abs/x", base),
            Ok(Source::File {
                path: "/abs/x".into()
            })
        );
        assert_eq!(
            Source::parse("dir://./data/", base),
            Ok(Source::Dir {
                path: "/base/./data/".into(),
                written: "data".into()
            })
        );
        assert!(Source::parse("ftp://x", base)
            .unwrap_err()
            .contains("unknown scheme \"ftp://\""));
        assert!(Source::parse("data/x", base)
            .unwrap_err()
            .contains("no scheme"));
        assert!(matches!(
            Source::parse("oci://localhost:5000/a:b", base),
            Ok(Source::Image {
                reference: crate::reference::Reference::Registry(_)
            })
        ));
        match Source::parse("oci://./layouts/base:v1", base) {
            Ok(Source::Image {
                reference: crate::reference::Reference::Layout(l),
            }) => {
                assert_eq!(l.dir, Path::new("/base/./layouts/base"))
            }
            other => panic!("{other:?}"),
        }
        assert!(Source::parse("s3://b/k", base)
            .unwrap_err()
            .contains("not available in this build"));
        assert!(Source::parse("http://", base).is_err());
    }
}
