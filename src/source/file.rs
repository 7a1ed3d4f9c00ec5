//! `file://PATH`: one layer, title = base name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::{descriptor, with_title, Origin, StageContext, StagedBlob};
use crate::digest::{copy_hashing, copy_hashing_pipelined, Digest, PIPELINE_THRESHOLD};
use crate::error::{from_read_error, Error, ErrorKind, Result};
use crate::fsutil::{blocking, temp_file, FileId, StableRead};
use crate::mediatype;
use crate::progress::ProgressEvent;

/// Checks that `path` is a readable regular file and returns it opened.
pub fn open_regular(path: &Path, uri: &str) -> Result<std::fs::File> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(&format!("{uri}: cannot read"), path, e).with_reference(uri))?;
    if meta.is_dir() {
        return Err(Error::new(
            ErrorKind::SourceNotFound,
            format!(
                "{uri}: {} is a directory (use dir://… for directories)",
                path.display()
            ),
        )
        .with_path(path)
        .with_reference(uri));
    }
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::SourceNotFound,
            format!("{uri}: {} is not a regular file", path.display()),
        )
        .with_path(path));
    }
    crate::fsutil::open_regular_file(path)
        .map_err(|e| from_read_error(e, |e| Error::io(&format!("{uri}: cannot open"), path, e)))
}

/// Hashes a file (`expected`: the identity a directory walk found for it); a large one is
/// also copied into the target's spool directory in the same
/// pass, with progress events.
///
/// Small files are only hashed: copying them later costs one more read of a file in the page
/// cache, while spooling would create (and, on a re-pack, throw away) one temp file each —
/// the expensive part on most file systems. Returns the digest, the size and where the staged
/// bytes are.
pub fn stage_path(
    path: &Path,
    expected: Option<FileId>,
    uri: &str,
    ctx: &StageContext,
) -> Result<(Digest, u64, Origin)> {
    let mut f = match expected {
        // A file a directory walk found: it must still be that file.
        Some(_) => StableRead::open(path, expected),
        None => StableRead::new(open_regular(path, uri)?, path),
    }
    .map_err(|e| from_read_error(e, |e| Error::io(&format!("{uri}: cannot read"), path, e)))?;
    let size = f.size();
    let big = size >= PIPELINE_THRESHOLD;
    let source = path.display().to_string();
    let progress = &ctx.progress;
    if big {
        progress.emit(ProgressEvent::StageStarted {
            source: source.clone(),
            size: Some(size),
        });
    }
    let mut report = |bytes| {
        if big {
            progress.emit(ProgressEvent::StageAdvanced {
                source: source.clone(),
                bytes,
            });
        }
    };
    let staged = match ctx.spool.as_deref().filter(|_| big) {
        None => {
            let (d, n) = copy_hashing(&mut f, None, &mut report).map_err(|e| {
                from_read_error(e, |e| Error::io(&format!("{uri}: reading"), path, e))
            })?;
            (d, n, Origin::File(path.to_path_buf()))
        }
        Some(dir) => {
            let (mut out, tmp) = temp_file(dir)?.into_parts();
            let (d, n) = copy_hashing_pipelined(&mut f, &mut out, &mut report).map_err(|e| {
                from_read_error(e, |e| Error::io(&format!("{uri}: copying to"), &tmp, e))
            })?;
            (d, n, Origin::Spooled(Arc::new(tmp)))
        }
    };
    if big {
        progress.emit(ProgressEvent::StageFinished { source });
    }
    Ok(staged)
}

/// Stages one file as one layer. A large file whose digest is cached is not read at all; one
/// that is not goes to a registry target while it is hashed ([`crate::store::Target::ingest`]),
/// or is hashed (and spooled into a layout) here.
pub async fn stage(
    path: PathBuf,
    uri: String,
    media_type: Option<String>,
    annotations: BTreeMap<String, String>,
    ctx: &StageContext,
) -> Result<StagedBlob> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mt = media_type.unwrap_or_else(|| mediatype::infer(&name).to_string());
    let describe = move |digest: &Digest, size: u64, origin: Origin| StagedBlob {
        descriptor: descriptor(&mt, digest, size, with_title(&annotations, &name)),
        origin,
    };
    let meta = std::fs::metadata(&path)
        .ok()
        .filter(|m| m.is_file() && m.len() >= PIPELINE_THRESHOLD);
    if let Some(meta) = &meta {
        if let Some(d) = ctx.cache.lookup(&path, meta) {
            return Ok(describe(&d, meta.len(), Origin::File(path)));
        }
        if let Some(taker) = &ctx.taker {
            let source = path.display().to_string();
            ctx.progress.emit(ProgressEvent::StageStarted {
                source: source.clone(),
                size: Some(meta.len()),
            });
            let ingested = taker
                .take(&path, meta.len(), &ctx.progress)
                .await
                .map_err(|e| e.context(&uri))?;
            ctx.progress.emit(ProgressEvent::StageFinished { source });
            if let Some(d) = ingested {
                ctx.cache.store(&path, meta, &d);
                return Ok(describe(&d, meta.len(), Origin::File(path)));
            }
        }
    }
    let ctx = ctx.clone();
    blocking(move || {
        let (digest, size, origin) = stage_path(&path, None, &uri, &ctx)?;
        if let Some(meta) = &meta {
            ctx.cache.store(&path, meta, &digest);
        }
        Ok(describe(&digest, size, origin))
    })
    .await
}
