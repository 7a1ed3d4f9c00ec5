//! Deterministic tar archives (SPEC §2.3): sorted entries, fixed times and owners, modes
//! reduced to 0644/0755, and compressor headers without names or times.

pub mod unpack;

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::{from_read_error, Error, Result};
use crate::fsutil::{FileId, FileRef, StableRead};

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

/// What a directory entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a followed symlink to one).
    File,
    /// A directory.
    Dir,
    /// A symlink kept as a link (archive mode), with its target text.
    Symlink(PathBuf),
}

/// One entry of a walked directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the root, `/`-separated.
    pub rel: String,
    /// Where to read it.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// For files, the identity of the file the walk found (what is read must be it).
    pub id: Option<FileId>,
}

/// zstd level 3 is zstd's own default: ~2.4× on mixed data at well over 100 MB/s per core.
const ZSTD_LEVEL: i32 = 3;

/// An archive written to a temporary file.
#[derive(Debug)]
pub struct Built {
    /// The archive (compressed when asked).
    pub file: tempfile::TempPath,
    /// Its identity (what must be there when it is read again or adopted).
    pub id: crate::fsutil::FileId,
    /// The file, still open: while it is, its identity cannot pass to another file.
    pub handle: std::fs::File,
    /// Digest of the file.
    pub digest: Digest,
    /// Size of the file.
    pub size: u64,
    /// Digest of the uncompressed tar stream.
    pub tar_digest: Digest,
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Only "executable or not" survives, so checkouts with different umasks give one digest.
fn normal_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// How often [`write_tar`] reports progress, in bytes read.
pub const REPORT_EVERY: u64 = 1 << 20;

/// A reader that reports what it read, in batches of [`REPORT_EVERY`] bytes.
struct Reporting<'a, R> {
    inner: R,
    unreported: u64,
    report: &'a mut dyn FnMut(u64),
}

impl<R: io::Read> io::Read for Reporting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.unreported += n as u64;
        if self.unreported >= REPORT_EVERY {
            (self.report)(std::mem::take(&mut self.unreported));
        }
        Ok(n)
    }
}

/// Writes the tar stream of `entries` (prefixed by `base/`) into `w`. A file that changes
/// while it is read fails with an `io::Error` carrying the library error (see
/// [`from_read_error`]).
///
/// `report` is called with the file bytes read since its last call, about every
/// [`REPORT_EVERY`] bytes and at the end of each file, on this thread.
pub fn write_tar<W: Write>(
    w: W,
    entries: &[Entry],
    base: &str,
    mtime: u64,
    report: &mut dyn FnMut(u64),
) -> io::Result<W> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    let mut root = header(tar::EntryType::Directory, 0o755, 0, mtime);
    b.append_data(&mut root, format!("{base}/"), io::empty())?;
    for e in entries {
        let name = format!("{base}/{}", e.rel);
        match &e.kind {
            EntryKind::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
                b.append_data(&mut h, format!("{name}/"), io::empty())?;
            }
            EntryKind::File => {
                // Exactly the size in the header, or an error: a file that shrinks, grows or
                // is rewritten while it is archived never gives a padded or torn entry.
                let f = StableRead::open(&FileRef::new(&e.path, e.id)).map_err(|err| {
                    // Name the source, not the archive being written.
                    match err.get_ref().is_some_and(|i| i.is::<Error>()) {
                        true => err,
                        false => io::Error::other(Error::io("reading", &e.path, err)),
                    }
                })?;
                let mut h = header(
                    tar::EntryType::Regular,
                    normal_mode(e.mode),
                    f.size(),
                    mtime,
                );
                let mut counted = Reporting {
                    inner: f,
                    unreported: 0,
                    report: &mut *report,
                };
                b.append_data(&mut h, &name, &mut counted)?;
                if counted.unreported > 0 {
                    (counted.report)(counted.unreported);
                }
            }
            EntryKind::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                b.append_link(&mut h, &name, target)?;
            }
        }
    }
    b.into_inner()
}

/// Writes the archive of `entries` into a new temp file in `tmp_dir`, hashing as it goes;
/// `report` as for [`write_tar`]. On any error the temp file is removed.
pub fn write_temp(
    entries: &[Entry],
    base: &str,
    format: ArchiveFormat,
    mtime: u64,
    tmp_dir: &Path,
    report: &mut dyn FnMut(u64),
) -> Result<Built> {
    std::fs::create_dir_all(tmp_dir).map_err(|e| Error::io("creating temp dir", tmp_dir, e))?;
    let tmp = crate::fsutil::temp_file(tmp_dir)?;
    let (file, path) = tmp.into_parts();
    let io_err = |e: io::Error| from_read_error(e, |e| Error::io("writing archive", &path, e));
    let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let (out, tar_digest) = match format {
        ArchiveFormat::Tar => (
            write_tar(out, entries, base, mtime, report).map_err(io_err)?,
            None,
        ),
        ArchiveFormat::TarGzip => {
            // GzEncoder writes no file name and mtime 0 unless told otherwise.
            let enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            let (enc, d, _) = write_tar(HashingWriter::new(enc), entries, base, mtime, report)
                .map_err(io_err)?
                .finish();
            (enc.finish().map_err(io_err)?, Some(d))
        }
        ArchiveFormat::TarZstd => {
            let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(io_err)?;
            // zstd's multi-threaded output depends on its parameters, not on the worker
            // count (tested below), so the digest does not depend on the machine's cores.
            let workers = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            enc.multithread(workers).map_err(io_err)?;
            let (enc, d, _) = write_tar(HashingWriter::new(enc), entries, base, mtime, report)
                .map_err(io_err)?
                .finish();
            (enc.finish().map_err(io_err)?, Some(d))
        }
    };
    let (buf, digest, size) = out.finish();
    let file = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_data().ok();
    Ok(Built {
        id: crate::fsutil::file_id(&file.metadata().map_err(io_err)?),
        handle: file,
        file: path,
        tar_digest: tar_digest.unwrap_or_else(|| digest.clone()),
        digest,
        size,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn zstd_output_does_not_depend_on_worker_count() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let compress = |workers: u32| {
            let mut enc = zstd::Encoder::new(Vec::new(), super::ZSTD_LEVEL).expect("encoder");
            enc.multithread(workers).expect("mt");
            enc.write_all(&data).expect("write");
            enc.finish().expect("finish")
        };
        assert_eq!(compress(1), compress(2));
        assert_eq!(compress(1), compress(4));
    }
}
