//! `file://PATH`: one layer, title = base name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{blocking, descriptor, with_title, Origin, StagedBlob};
use crate::digest::copy_hashing;
use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;

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
    std::fs::File::open(path).map_err(|e| Error::io(&format!("{uri}: cannot open"), path, e))
}

/// Hashes a file where it is; returns its digest and size.
pub fn hash_file(path: &Path, uri: &str) -> Result<(crate::digest::Digest, u64)> {
    let mut f = open_regular(path, uri)?;
    copy_hashing(&mut f, None, &mut |_| {})
        .map_err(|e| Error::io(&format!("{uri}: reading"), path, e))
}

/// Stages one file as one layer.
pub async fn stage(
    path: PathBuf,
    uri: String,
    media_type: Option<String>,
    annotations: BTreeMap<String, String>,
) -> Result<StagedBlob> {
    blocking(move || {
        let (digest, size) = hash_file(&path, &uri)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mt = media_type.unwrap_or_else(|| mediatype::infer(&name).to_string());
        Ok(StagedBlob {
            descriptor: descriptor(&mt, &digest, size, with_title(&annotations, &name)),
            origin: Origin::File(path),
        })
    })
    .await
}
