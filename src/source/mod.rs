//! Sources: each scheme of SPEC §2.2 turns an item into staged blobs, i.e. descriptors whose
//! bytes can be (re)opened where they already are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;

pub mod cache;
pub mod dir;
pub mod file;
pub mod http;
pub mod image;
pub mod s3;

pub use crate::mediatype::{DIR_ANNOTATION, TITLE};

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
        /// What `io.arenadata.oci-packer.dir` says: the directory as written, cleaned
        /// (`./data/` → `data`); never `..` or an absolute path (see [`dir_annotation`]).
        written: String,
    },
    /// `http://` or `https://`: one layer.
    Http {
        /// The URL.
        url: String,
    },
    /// `s3://`, `s3+http://`, `s3+https://`: one object, or every object below a prefix
    /// ending in `/` (one layer each, or one archive layer).
    S3 {
        /// The parsed URI.
        object: s3::ObjectUri,
    },
    /// `oci://`, `docker://`, `cr://`: an image or artifact in a registry or a layout, which
    /// becomes a member of the index (layout paths resolved against the pack's directory).
    Image {
        /// The parsed reference.
        reference: crate::reference::Reference,
    },
}

pub use crate::archive::ArchiveFormat;

const IMAGE_SCHEMES: &[&str] = &["oci://", "docker://", "cr://"];
const S3_SCHEMES: &[&str] = &["s3://", "s3+http://", "s3+https://"];

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
                written: dir_annotation(p, base),
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
            return Ok(Source::S3 {
                object: s3::ObjectUri::parse(uri)?,
            });
        }
        let scheme = uri.split_once("://").map(|(s, _)| s);
        Err(match scheme {
            Some(s) => format!(
                "unknown scheme \"{s}://\" in \"{uri}\" (use file://, dir://, http://, https://, \
                 s3://, s3+http://, s3+https://, oci://, docker:// or cr://)"
            ),
            None => format!("\"{uri}\" has no scheme (write file://{uri} for a file or dir://{uri} for a directory)"),
        })
    }

    /// True for sources that give exactly one blob (valid for `config` and `digest:`).
    pub fn is_single_blob(&self) -> bool {
        match self {
            Source::File { .. } | Source::Http { .. } => true,
            Source::S3 { object } => !object.is_prefix(),
            Source::Dir { .. } | Source::Image { .. } => false,
        }
    }

    /// True for sources that give one layer per file, or one archive with `archive:` (a
    /// directory, an S3 prefix).
    pub fn is_tree(&self) -> bool {
        match self {
            Source::Dir { .. } => true,
            Source::S3 { object } => object.is_prefix(),
            _ => false,
        }
    }
}

/// The `io.arenadata.oci-packer.dir` value of `dir://P` in a pack file in `base`: the cleaned
/// path relative to `base` when it lies inside it, else the directory's base name. It never
/// holds `..` or an absolute path, so a reader that trusts it (`extract`) stays inside its
/// output, and no local path of the packing machine is published.
pub fn dir_annotation(p: &str, base: &Path) -> String {
    let cleaned = clean_path(p);
    if !cleaned.starts_with('/') && cleaned != ".." && !cleaned.starts_with("../") {
        return cleaned;
    }
    let full = clean_path(&base.join(&cleaned).to_string_lossy());
    let base = clean_path(&base.to_string_lossy());
    if full == base {
        return ".".into();
    }
    let inside = if base == "/" {
        full.strip_prefix('/')
    } else {
        full.strip_prefix(&base).and_then(|r| r.strip_prefix('/'))
    };
    if let Some(rel) = inside {
        return rel.into();
    }
    match full.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != ".." => name.to_string(),
        _ => "dir".into(),
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

pub use crate::store::staging::{Hashable, Origin, Reopen, StagedBlob};

/// Takes a large file or object whose digest is not known yet into the target, computing it
/// on the way (the copy engine implements it over the target's
/// [`crate::store::Target::push_hashing`]).
#[async_trait::async_trait]
pub trait TakeHashing: Send + Sync + std::fmt::Debug {
    /// The content's digest once the target has it; `None` when the target cannot take it so.
    async fn take(
        &self,
        content: &crate::store::staging::Hashable,
        size: u64,
        progress: &Progress,
    ) -> Result<Option<Digest>>;

    /// Takes small content read on a blocking thread into the target while it is hashed,
    /// when the target can (see [`crate::store::Target::store_hashing`]): its digest and
    /// size, or `None` before anything is read.
    fn take_read(
        &self,
        read: &mut dyn std::io::Read,
        from: &std::path::Path,
    ) -> Result<Option<(Digest, u64)>>;
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
    pub registry: crate::transport::RegistryOptions,
    /// Opens image items' sources (sharing registry clients with the target).
    pub targets: Arc<crate::store::Targets>,
    /// Takes large files into the target while their digest is computed, when the target
    /// can (a registry).
    pub taker: Option<Arc<dyn TakeHashing>>,
    /// Digests of large files that did not change.
    pub cache: cache::DigestCache,
    /// Bytes of staged blobs this pack keeps in memory (small downloaded objects), which
    /// [`StageContext::hold`] keeps under [`IN_MEMORY_BUDGET`].
    pub held: Arc<std::sync::atomic::AtomicU64>,
    /// The S3 client and credentials the pack's S3 items share.
    pub s3: s3::Clients,
}

/// Refuses, before anything is read, a directory or prefix with so many entries (named by
/// their relative paths `names`) that their layers cannot fit one manifest: a layer's
/// descriptor takes at least ~180 bytes of JSON plus its title. `what` names the entries
/// ("files"), `whole` the source ("the directory"), `split` how to cut it.
pub(crate) fn check_manifest_room<'a>(
    uri: &str,
    names: impl Iterator<Item = &'a str>,
    what: &str,
    whole: &str,
    split: &str,
) -> Result<()> {
    let (mut count, mut least) = (0u64, 0u64);
    for name in names {
        count += 1;
        least += 180 + name.len() as u64;
    }
    if least > crate::store::MAX_MANIFEST_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{uri}: {count} {what} would make a manifest larger than 4 MiB; pack {whole} with archive:, or {split}"
            ),
        )
        .with_reference(uri));
    }
    Ok(())
}

/// The most bytes of staged blobs one pack keeps in memory.
pub const IN_MEMORY_BUDGET: u64 = 16 << 20;

impl StageContext {
    /// `data` as an in-memory origin while the pack's budget allows, else `None` (the
    /// caller leaves the bytes where they came from).
    pub fn hold(&self, data: bytes::Bytes) -> Option<Origin> {
        use std::sync::atomic::Ordering;
        let n = data.len() as u64;
        let before = self.held.fetch_add(n, Ordering::Relaxed);
        if before + n <= IN_MEMORY_BUDGET {
            return Some(Origin::Bytes(data));
        }
        self.held.fetch_sub(n, Ordering::Relaxed);
        None
    }
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
        for (written, annotation) in [
            ("../../x", "x"),
            ("../base/sub/", "sub"),
            ("/abs/elsewhere/tools", "tools"),
            ("/base/inside/d", "inside/d"),
            ("/base", "."),
            ("/", "dir"),
            ("a/../../b", "b"),
            ("./a/b/", "a/b"),
        ] {
            assert_eq!(
                super::dir_annotation(written, base),
                annotation,
                "{written}"
            );
        }
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
        assert!(matches!(
            Source::parse("s3://bkt/k", base),
            Ok(Source::S3 { object }) if object.key == "k"
        ));
        assert!(Source::parse("s3://bkt", base)
            .unwrap_err()
            .contains("add the key"));
        assert!(Source::parse("http://", base).is_err());
    }
}
