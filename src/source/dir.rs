//! `dir://PATH`: one layer per regular file, or with `archive:` one deterministic tar layer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{descriptor, file::stage_path, with_title, Origin, StagedBlob, DIR_ANNOTATION};
use crate::archive;
use crate::archive::ArchiveFormat;
use crate::digest::PIPELINE_THRESHOLD;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{blocking, file_id};
use crate::mediatype;
use crate::progress::ProgressEvent;
use crate::source::StageContext;

pub use crate::archive::{Entry, EntryKind};

fn err(uri: &str, path: &Path, what: &str) -> Error {
    Error::new(
        ErrorKind::SourceNotFound,
        format!("{uri}: {}: {what}", path.display()),
    )
    .with_path(path)
    .with_reference(uri)
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    if meta.is_dir() {
        0o755
    } else {
        0o644
    }
}

/// Walks `root`, returning entries sorted by the bytes of their relative path.
///
/// `keep_links`: archive mode stores symlinks as links; otherwise they are followed. Either
/// way a link that resolves outside `root` is an error, and so are sockets, FIFOs and devices.
pub fn walk(root: &Path, uri: &str, keep_links: bool) -> Result<Vec<Entry>> {
    let meta = std::fs::metadata(root)
        .map_err(|e| Error::io(&format!("{uri}: cannot read"), root, e).with_reference(uri))?;
    if !meta.is_dir() {
        return Err(err(
            uri,
            root,
            "is not a directory (use file://… for a single file)",
        ));
    }
    let canon_root = root
        .canonicalize()
        .map_err(|e| Error::io(&format!("{uri}: cannot resolve"), root, e))?;
    let mut out = Vec::new();
    let mut walk = Walk {
        canon_root: &canon_root,
        uri,
        keep_links,
        visited: HashMap::from([(file_id(&meta), root.to_path_buf())]),
        out: &mut out,
    };
    walk.dir(root, "")?;
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(out)
}

/// How deep a walk goes below its root (the walk recurses; real trees are a few dozen
/// levels at most).
pub const MAX_DIR_DEPTH: usize = 128;

/// One walk: every directory is entered at most once, by (device, inode), so symlinks to
/// directories can neither loop nor multiply the work (two links per level to the next
/// level would otherwise visit 2^depth directories).
struct Walk<'a> {
    canon_root: &'a Path,
    uri: &'a str,
    keep_links: bool,
    /// Directories entered so far, with the path they were first entered by.
    visited: HashMap<(u64, u64), PathBuf>,
    out: &'a mut Vec<Entry>,
}

impl Walk<'_> {
    /// Enters `dir` (reached as `path`) unless this walk has been there already: a second
    /// visit is an error naming both paths.
    fn enter(&mut self, path: &Path, rel: &str, meta: &std::fs::Metadata) -> Result<()> {
        if rel.matches('/').count() + 1 > MAX_DIR_DEPTH {
            return Err(err(
                self.uri,
                path,
                &format!(
                    "is more than {MAX_DIR_DEPTH} directories deep; pack a shallower directory"
                ),
            ));
        }
        if let Some(first) = self.visited.get(&file_id(meta)) {
            return Err(err(
                self.uri,
                path,
                &format!(
                    "leads to the directory already packed as {} (a symlink loop or a second \
                     link to one directory; remove the link, or pack with archive: to keep \
                     links as links)",
                    first.display()
                ),
            ));
        }
        self.visited.insert(file_id(meta), path.to_path_buf());
        self.dir(path, rel)
    }

    fn dir(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        let uri = self.uri;
        let rd = std::fs::read_dir(dir)
            .map_err(|e| Error::io(&format!("{uri}: cannot list"), dir, e))?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&format!("{uri}: cannot list"), dir, e))?;
            names.push((entry.file_name(), entry.path()));
        }
        // Sorted, so which of two paths to one directory comes first does not depend on the
        // file system's order.
        names.sort();
        for (name, path) in names {
            let Some(name) = name.to_str() else {
                return Err(err(uri, &path, "file name is not valid UTF-8"));
            };
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            self.entry(path, rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: PathBuf, rel: String) -> Result<()> {
        let uri = self.uri;
        let lmeta = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::io(&format!("{uri}: cannot read"), &path, e))?;
        let ft = lmeta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(|e| Error::io(&format!("{uri}: cannot read link"), &path, e))?;
            let inside = path
                .canonicalize()
                .is_ok_and(|r| r.starts_with(self.canon_root));
            if !inside {
                return Err(err(
                    uri,
                    &path,
                    &format!(
                        "symlink to {} resolves outside the directory (copy the file in, or remove the link)",
                        target.display()
                    ),
                ));
            }
            if self.keep_links {
                self.out.push(Entry {
                    rel,
                    path,
                    kind: EntryKind::Symlink(target),
                    mode: 0o777,
                    id: None,
                });
                return Ok(());
            }
            let meta = std::fs::metadata(&path)
                .map_err(|e| Error::io(&format!("{uri}: cannot read"), &path, e))?;
            if meta.is_dir() {
                self.enter(&path, &rel, &meta)?;
            } else if meta.is_file() {
                self.out.push(Entry {
                    rel,
                    path,
                    kind: EntryKind::File,
                    mode: mode_of(&meta),
                    id: Some(file_id(&meta)),
                });
            } else {
                return Err(err(
                    uri,
                    &path,
                    "symlink to a special file (socket, FIFO or device)",
                ));
            }
        } else if ft.is_dir() {
            self.out.push(Entry {
                rel: rel.clone(),
                path: path.clone(),
                kind: EntryKind::Dir,
                mode: mode_of(&lmeta),
                id: None,
            });
            self.enter(&path, &rel, &lmeta)?;
        } else if ft.is_file() {
            self.out.push(Entry {
                rel,
                path,
                kind: EntryKind::File,
                mode: mode_of(&lmeta),
                id: Some(file_id(&lmeta)),
            });
        } else {
            return Err(err(
                uri,
                &path,
                "is a socket, FIFO or device; only files, directories and symlinks can be packed",
            ));
        }
        Ok(())
    }
}

/// Stages a directory as one layer per regular file, in byte order of the relative path.
pub async fn stage_files(
    path: PathBuf,
    written: String,
    uri: String,
    media_type: Option<String>,
    annotations: BTreeMap<String, String>,
    ctx: &StageContext,
) -> Result<Vec<StagedBlob>> {
    let ctx = ctx.clone();
    blocking(move || {
        let entries = walk(&path, &uri, false)?;
        let mut staged = Vec::new();
        for e in entries.into_iter().filter(|e| e.kind == EntryKind::File) {
            let (digest, size, origin) = stage_path(&e.path, e.id, &uri, &ctx)?;
            let mut ann = with_title(&annotations, &e.rel);
            ann.insert(DIR_ANNOTATION.to_string(), written.clone());
            let mt = media_type
                .clone()
                .unwrap_or_else(|| mediatype::infer(&e.rel).to_string());
            staged.push(StagedBlob {
                descriptor: descriptor(&mt, &digest, size, ann),
                origin,
            });
        }
        Ok(staged)
    })
    .await
}

/// Annotation ORAS uses to unpack a directory layer on pull (it gunzips, then untars).
pub const ORAS_UNPACK: &str = "io.deis.oras.content.unpack";
/// Annotation ORAS uses for the digest of the uncompressed tar.
pub const ORAS_DIGEST: &str = "io.deis.oras.content.digest";

/// The bytes of the regular files among `entries` (what archiving them reads).
fn total_size(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| std::fs::metadata(&e.path).ok())
        .map(|m| m.len())
        .sum()
}

/// Stages a directory as one deterministic archive layer, built in the target's `spool`
/// directory when it has one, else in `tmp_dir`.
pub async fn stage_archive(
    path: PathBuf,
    uri: String,
    format: ArchiveFormat,
    media_type: Option<String>,
    annotations: BTreeMap<String, String>,
    ctx: &StageContext,
) -> Result<StagedBlob> {
    let (tmp_dir, spool) = (ctx.tmp_dir.clone(), ctx.spool.clone());
    let mtime = ctx.source_date_epoch.unwrap_or(0);
    let progress = ctx.progress.clone();
    blocking(move || {
        let entries = walk(&path, &uri, true)?;
        let source = path.display().to_string();
        // Progress for large archives only, as for files.
        let total = total_size(&entries);
        let big = total >= PIPELINE_THRESHOLD;
        if big {
            progress.emit(ProgressEvent::StageStarted {
                source: source.clone(),
                size: Some(total),
            });
        }
        let mut report = |bytes| {
            if big {
                progress.emit(ProgressEvent::StageAdvanced {
                    source: source.clone(),
                    bytes,
                })
            }
        };
        let base = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "dir".into());
        let dir = spool.as_deref().unwrap_or(&tmp_dir);
        let built = archive::write_temp(&entries, &base, format, mtime, dir, &mut report)?;
        if big {
            progress.emit(ProgressEvent::StageFinished { source });
        }
        let mut ann = with_title(&annotations, &base);
        // `oras pull` gunzips every layer marked for unpacking: mark only gzip layers, so
        // it unpacks those and saves plain and zstd archives as files.
        if format == ArchiveFormat::TarGzip {
            ann.insert(ORAS_UNPACK.into(), "true".into());
        }
        ann.insert(ORAS_DIGEST.into(), built.tar_digest.to_string());
        let mt = media_type.unwrap_or_else(|| {
            match format {
                ArchiveFormat::Tar => mediatype::LAYER_TAR,
                ArchiveFormat::TarGzip => mediatype::LAYER_TAR_GZIP,
                ArchiveFormat::TarZstd => mediatype::LAYER_TAR_ZSTD,
            }
            .to_string()
        });
        Ok(StagedBlob {
            descriptor: descriptor(&mt, &built.digest, built.size, ann),
            origin: match spool {
                Some(_) => Origin::Spooled(Arc::new(built.file)),
                None => Origin::Temp(Arc::new(built.file)),
            },
        })
    })
    .await
}
