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

/// The error for a source file that changed while it was read (`what` says how).
pub fn changed_while_packing(path: &Path, what: &str) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "{} changed while packing ({what}); pack again when it no longer changes",
            path.display()
        ),
    )
    .with_path(path)
}

/// A regular file read as a snapshot of what it was when opened: exactly that many bytes,
/// and an error ([`ErrorKind::Io`], "changed while packing", carried inside the
/// `io::Error`; see [`crate::error::from_read_error`]) when it ends early, or when its size
/// or modification time differ once it has been read. A source that changes under us is
/// never published half old, half new, or padded.
#[derive(Debug)]
pub struct StableRead {
    file: std::fs::File,
    path: PathBuf,
    size: u64,
    modified: Option<std::time::SystemTime>,
    remaining: u64,
    checked: bool,
}

impl StableRead {
    /// Wraps `file`, opened from `path`, with the size and time it has now.
    pub fn new(file: std::fs::File, path: &Path) -> std::io::Result<StableRead> {
        let meta = file.metadata()?;
        Ok(StableRead {
            file,
            path: path.to_path_buf(),
            size: meta.len(),
            modified: meta.modified().ok(),
            remaining: meta.len(),
            checked: false,
        })
    }

    /// The size the file had when opened (what is read).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn changed(&self, what: String) -> std::io::Error {
        std::io::Error::other(changed_while_packing(&self.path, &what))
    }
}

impl std::io::Read for StableRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            if !self.checked {
                self.checked = true;
                let meta = self.file.metadata()?;
                if meta.len() != self.size {
                    return Err(self.changed(format!("{} bytes, then {}", self.size, meta.len())));
                }
                if meta.modified().ok() != self.modified {
                    return Err(self.changed("modified while it was read".into()));
                }
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            let got = self.size - self.remaining;
            return Err(self.changed(format!("{} bytes, then only {got} to read", self.size)));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
