//! `dir://PATH`: one layer per regular file, or with `archive:` one deterministic tar layer.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{descriptor, file::stage_path, with_title, Origin, StagedBlob, DIR_ANNOTATION};
use crate::archive;
use crate::archive::ArchiveFormat;
use crate::digest::PIPELINE_THRESHOLD;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{blocking, file_id, stat_id, FileId, FileRef};
use crate::mediatype;
use crate::progress::ProgressEvent;
use crate::source::StageContext;
use rustix::fs::readlinkat;

pub use crate::archive::{Entry, EntryKind};

fn err(uri: &str, path: &Path, what: &str) -> Error {
    Error::new(
        ErrorKind::SourceNotFound,
        format!("{uri}: {}: {what}", path.display()),
    )
    .with_path(path)
    .with_reference(uri)
}

/// Walks `root`, returning entries sorted by the bytes of their relative path.
///
/// `keep_links`: archive mode stores symlinks as links; otherwise they are followed. Either
/// way a link that resolves outside `root` is an error, and so are sockets, FIFOs and devices.
///
/// The walk holds each directory open and looks at its entries relative to it, never
/// following a link it did not decide to follow: a directory swapped for a symlink while the
/// walk runs cannot lead it outside `root`, and every file it records is one it saw inside.
pub fn walk(root: &Path, uri: &str, keep_links: bool) -> Result<Vec<Entry>> {
    use rustix::fs::{openat, Mode, OFlags, CWD};
    let fd = openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOTDIR => err(
            uri,
            root,
            "is not a directory (use file://… for a single file)",
        ),
        e => Error::io(&format!("{uri}: cannot read"), root, e.into()).with_reference(uri),
    })?;
    let id = stat_id(&fstat(&fd, root, uri)?);
    let canon_root = root
        .canonicalize()
        .map_err(|e| Error::io(&format!("{uri}: cannot resolve"), root, e))?;
    let mut out = Vec::new();
    let mut walk = Walk {
        canon_root: &canon_root,
        uri,
        keep_links,
        visited: HashMap::from([(id, root.to_path_buf())]),
        out: &mut out,
    };
    walk.dir(&fd, root, "")?;
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(out)
}

/// How deep a walk goes below its root (the walk recurses; real trees are a few dozen
/// levels at most).
pub const MAX_DIR_DEPTH: usize = 128;

/// Permission bits of a `stat`.
#[allow(clippy::unnecessary_cast)]
fn stat_mode(st: &rustix::fs::Stat) -> u32 {
    st.st_mode as u32 & 0o7777
}

fn stat_type(st: &rustix::fs::Stat) -> rustix::fs::FileType {
    rustix::fs::FileType::from_raw_mode(st.st_mode as _)
}

fn fstat(fd: &OwnedFd, path: &Path, uri: &str) -> Result<rustix::fs::Stat> {
    rustix::fs::fstat(fd).map_err(|e| Error::io(&format!("{uri}: cannot read"), path, e.into()))
}

/// Opens what a symlink resolves to without reading it: only its type and identity are
/// looked at (on Linux not even opened for reading, so a device is never touched).
#[cfg(target_os = "linux")]
const PROBE: rustix::fs::OFlags = rustix::fs::OFlags::PATH.union(rustix::fs::OFlags::CLOEXEC);
#[cfg(not(target_os = "linux"))]
const PROBE: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::NONBLOCK)
    .union(rustix::fs::OFlags::CLOEXEC);

/// One walk: every directory is entered at most once, by (device, inode), so symlinks to
/// directories can neither loop nor multiply the work (two links per level to the next
/// level would otherwise visit 2^depth directories).
struct Walk<'a> {
    canon_root: &'a Path,
    uri: &'a str,
    keep_links: bool,
    /// Directories entered so far, with the path they were first entered by.
    visited: HashMap<FileId, PathBuf>,
    out: &'a mut Vec<Entry>,
}

impl Walk<'_> {
    /// Enters the open directory `fd` (reached as `path`, identity `id`) unless this walk
    /// has been there already: a second visit is an error naming both paths.
    fn enter(&mut self, fd: &OwnedFd, path: &Path, rel: &str, id: FileId) -> Result<()> {
        if rel.matches('/').count() + 1 > MAX_DIR_DEPTH {
            return Err(err(
                self.uri,
                path,
                &format!(
                    "is more than {MAX_DIR_DEPTH} directories deep; pack a shallower directory"
                ),
            ));
        }
        if let Some(first) = self.visited.get(&id) {
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
        self.visited.insert(id, path.to_path_buf());
        self.dir(fd, path, rel)
    }

    /// The entries of the open directory `fd` (reached as `dir`), in byte order of their
    /// names, so which of two paths to one directory comes first does not depend on the
    /// file system's order.
    fn dir(&mut self, fd: &OwnedFd, dir: &Path, prefix: &str) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let uri = self.uri;
        let listing =
            |e: rustix::io::Errno| Error::io(&format!("{uri}: cannot list"), dir, e.into());
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(fd).map_err(listing)? {
            let name = entry.map_err(listing)?.file_name().to_owned();
            if !matches!(name.to_bytes(), b"." | b"..") {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            let Ok(text) = name.to_str() else {
                return Err(err(uri, &path, "file name is not valid UTF-8"));
            };
            let rel = if prefix.is_empty() {
                text.to_string()
            } else {
                format!("{prefix}/{text}")
            };
            self.entry(fd, &name, path, rel)?;
        }
        Ok(())
    }

    /// Records the entry `name` of the open directory `parent` (reached as `path`).
    fn entry(&mut self, parent: &OwnedFd, name: &CStr, path: PathBuf, rel: String) -> Result<()> {
        use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags};
        let uri = self.uri;
        let io = |what: &str, e: rustix::io::Errno| {
            Error::io(&format!("{uri}: {what}"), &path, e.into())
        };
        let st =
            statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io("cannot read", e))?;
        // For a symlink that is followed: what it resolves to, and that opened.
        let (st, link) = match stat_type(&st) {
            FileType::Symlink => {
                let target =
                    readlinkat(parent, name, Vec::new()).map_err(|e| io("cannot read link", e))?;
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                // Opened from the directory that holds the link.
                let resolved = openat(parent, name, PROBE, Mode::empty())
                    .ok()
                    .and_then(|fd| Some((rustix::fs::fstat(&fd).ok()?, fd)))
                    .filter(|(st, fd)| self.inside(&path, fd, st));
                let Some((st, fd)) = resolved else {
                    return Err(err(
                        uri,
                        &path,
                        &format!(
                            "symlink to {} resolves outside the directory or to nothing (copy \
                             the file in, or remove the link)",
                            target.display()
                        ),
                    ));
                };
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
                (st, Some(fd))
            }
            _ => (st, None),
        };
        match stat_type(&st) {
            FileType::Directory => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let dir = match &link {
                    Some(fd) => openat(fd, c".", flags, Mode::empty()),
                    None => openat(parent, name, flags | OFlags::NOFOLLOW, Mode::empty()),
                }
                .map_err(|e| io("cannot read", e))?;
                let id = stat_id(&fstat(&dir, &path, uri)?);
                if id != stat_id(&st) {
                    return Err(crate::fsutil::changed_while_packing(
                        &path,
                        "another directory was put in its place",
                    ));
                }
                if link.is_none() {
                    self.out.push(Entry {
                        rel: rel.clone(),
                        path: path.clone(),
                        kind: EntryKind::Dir,
                        mode: stat_mode(&st),
                        id: None,
                    });
                }
                self.enter(&dir, &path, &rel, id)
            }
            FileType::RegularFile => {
                self.out.push(Entry {
                    rel,
                    path,
                    kind: EntryKind::File,
                    mode: stat_mode(&st),
                    id: Some(stat_id(&st)),
                });
                Ok(())
            }
            _ => Err(err(
                uri,
                &path,
                match link {
                    Some(_) => "symlink to a special file (socket, FIFO or device)",
                    None => {
                        "is a socket, FIFO or device; only files, directories and symlinks \
                             can be packed"
                    }
                },
            )),
        }
    }

    /// Whether the file a symlink at `path` was opened as (`fd`, with `st`) lies inside the
    /// root. On Linux the kernel says where the open file is (`/proc/self/fd`): no path is
    /// resolved again, so nothing swapped meanwhile can change the answer. Elsewhere (or
    /// without /proc) the path must resolve, now, to a place inside the root that holds that
    /// very file.
    fn inside(&self, path: &Path, fd: &OwnedFd, st: &rustix::fs::Stat) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
                return real.starts_with(self.canon_root);
            }
        }
        let _ = fd;
        path.canonicalize()
            .ok()
            .filter(|c| c.starts_with(self.canon_root))
            .and_then(|c| std::fs::symlink_metadata(c).ok())
            .is_some_and(|m| file_id(&m) == stat_id(st))
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
        let files: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.kind == EntryKind::File)
            .collect();
        // Before any file is read.
        super::check_manifest_room(
            &uri,
            files.iter().map(|e| e.rel.as_str()),
            "files",
            "the directory",
            "its subdirectories as separate items",
        )?;
        let hashed = in_parallel(&files, |e| {
            stage_path(&FileRef::new(e.path.clone(), e.id), &uri, &ctx)
        })?;
        let mut staged = Vec::with_capacity(files.len());
        for (e, (digest, size, origin)) in files.into_iter().zip(hashed) {
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

/// Threads [`in_parallel`] uses at most.
const HASHING_THREADS: usize = 4;
/// Fewer items than this are done on the calling thread, in order (threads would not pay).
const PARALLEL_FROM: usize = 64;

/// `f` of every item, on up to one thread per core ([`HASHING_THREADS`] at most) once there
/// are [`PARALLEL_FROM`] items, results in the items' order. The first error in that order
/// is returned; after any error no new item is started.
fn in_parallel<T: Sync, R: Send + Sync>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(HASHING_THREADS)
        .min(items.len());
    if threads <= 1 || items.len() < PARALLEL_FROM {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<std::sync::OnceLock<Result<R>>> = (0..items.len())
        .map(|_| std::sync::OnceLock::new())
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    let _ = slots[i].set(r);
                }
            });
        }
    });
    // Items after a failure were never started; `collect` stops at the first error, which
    // comes before them.
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("every item before the first error was done")
        })
        .collect()
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
                Some(_) => Origin::Spooled(Arc::new(built.file), built.id, Arc::new(built.handle)),
                None => Origin::Temp(Arc::new(built.file), built.id),
            },
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_results_keep_the_order_and_the_first_error_wins() {
        let items: Vec<usize> = (0..1000).collect();
        let doubled = in_parallel(&items, |i| Ok(i * 2)).expect("all fine");
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let failing = |i: &usize| match *i {
            300 | 700 => Err(Error::new(ErrorKind::Io, format!("item {i}"))),
            i => Ok(i),
        };
        for _ in 0..20 {
            let e = in_parallel(&items, failing).expect_err("two fail");
            assert_eq!(e.to_string(), "item 300");
        }
        let few: Vec<usize> = (0..3).collect();
        assert_eq!(in_parallel(&few, |i| Ok(*i)).expect("fine"), few);
    }
}
