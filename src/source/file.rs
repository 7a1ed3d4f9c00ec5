//! `file://PATH`: one layer, title = base name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::{descriptor, with_title, Origin, StageContext, StagedBlob};
use crate::digest::{copy_hashing, copy_hashing_pipelined, Digest, PIPELINE_THRESHOLD};
use crate::error::{from_read_error, Error, ErrorKind, Result};
use crate::fsutil::{blocking, file_id, temp_file, FileRef, StableRead};
use crate::mediatype;
use crate::progress::ProgressEvent;

/// Opens `path`, which must be a regular file (a directory gets a hint to use `dir://`),
/// with its metadata.
pub fn open_regular(path: &Path, uri: &str) -> Result<(std::fs::File, std::fs::Metadata)> {
    let cannot = |e| Error::io(&format!("{uri}: cannot read"), path, e).with_reference(uri);
    let file = crate::fsutil::open_nonblocking(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if meta.is_file() {
        return Ok((file, meta));
    }
    let what = match meta.is_dir() {
        true => "is a directory (use dir://… for directories)",
        false => "is not a regular file (a socket, FIFO or device)",
    };
    Err(Error::new(
        ErrorKind::SourceNotFound,
        format!("{uri}: {} {what}", path.display()),
    )
    .with_path(path)
    .with_reference(uri))
}

/// Hashes a file (with an identity when a directory walk found it: it must still be that
/// file); a large one is also copied into the target's spool directory in the same pass,
/// with progress events.
///
/// Small files are only hashed: copying them later costs one more read of a file in the page
/// cache, while spooling would create (and, on a re-pack, throw away) one temp file each —
/// the expensive part on most file systems. Returns the digest, the size and where the staged
/// bytes are.
pub fn stage_path(file: &FileRef, uri: &str, ctx: &StageContext) -> Result<(Digest, u64, Origin)> {
    let path = &file.path;
    let mut f = match file.id {
        Some(_) => StableRead::open(file).map_err(|e| {
            from_read_error(e, |e| Error::io(&format!("{uri}: cannot read"), path, e))
        })?,
        None => {
            let (f, meta) = open_regular(path, uri)?;
            StableRead::new(f, path, &meta)
        }
    };
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
            // A small file into a layout this pack creates: written as it is hashed.
            let taken = match ctx.taker.as_ref().filter(|_| !big) {
                Some(taker) => taker.take_read(&mut f, path)?,
                None => None,
            };
            let (d, n) = match taken {
                Some(stored) => stored,
                None => copy_hashing(&mut f, None, &mut report).map_err(|e| {
                    from_read_error(e, |e| Error::io(&format!("{uri}: reading"), path, e))
                })?,
            };
            (d, n, Origin::File(f.file_ref()))
        }
        Some(dir) => {
            let (mut out, tmp) = temp_file(dir)?.into_parts();
            let (d, n) = copy_hashing_pipelined(&mut f, &mut out, &mut report).map_err(|e| {
                from_read_error(e, |e| Error::io(&format!("{uri}: copying to"), &tmp, e))
            })?;
            let id = file_id(&out.metadata().map_err(|e| Error::io("reading", &tmp, e))?);
            (d, n, Origin::Spooled(Arc::new(tmp), id, Arc::new(out)))
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
        // What is sent or copied later must be the file this digest is of.
        let file = FileRef::new(&path, Some(file_id(meta)));
        if let Some(d) = ctx.cache.lookup(&path, meta) {
            return Ok(describe(&d, meta.len(), Origin::File(file)));
        }
        if let Some(taker) = &ctx.taker {
            let source = path.display().to_string();
            ctx.progress.emit(ProgressEvent::StageStarted {
                source: source.clone(),
                size: Some(meta.len()),
            });
            let ingested = taker
                .take(
                    &super::Hashable::File(file.clone()),
                    meta.len(),
                    &ctx.progress,
                )
                .await
                .map_err(|e| e.context(&uri))?;
            ctx.progress.emit(ProgressEvent::StageFinished { source });
            if let Some(d) = ingested {
                ctx.cache.store(&path, meta, &d);
                return Ok(describe(&d, meta.len(), Origin::File(file)));
            }
        }
    }
    let ctx = ctx.clone();
    blocking(move || {
        let (digest, size, origin) = stage_path(&FileRef::new(&path, None), &uri, &ctx)?;
        if let Some(meta) = &meta {
            ctx.cache.store(&path, meta, &digest);
        }
        Ok(describe(&digest, size, origin))
    })
    .await
}
