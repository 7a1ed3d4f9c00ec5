//! Small file-system helpers every layer uses: absolute paths, temp files with the one
//! recognisable prefix, and blocking work on the runtime's blocking pool.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Prefix of every temp file and directory this program creates (in layouts, spools, the
/// download cache, `--tmp-dir`); never a digest name. A collector may remove such files
/// when they are old.
pub const TEMP_PREFIX: &str = ".oci-packer-";

/// `dir` made absolute against the working directory (unchanged when that is unknown).
pub fn absolute(dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf())
    }
}

/// A new temp file in `dir`, named with [`TEMP_PREFIX`].
pub fn temp_file(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating temp file in", dir, e))
}

/// Runs blocking file work on tokio's blocking pool, mapping a panic to an internal error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("worker thread failed: {e}")))?
}
