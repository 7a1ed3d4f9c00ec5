//! Safe extraction of tar layers (SPEC §7.4): nothing lands outside the destination, whatever
//! the names, symlinks, hard links or symlinked parents in the archive.
//!
//! Every entry's parent directory is opened with `openat2(RESOLVE_BENEATH)` from the
//! destination's descriptor, so the kernel refuses any path that leaves it (through `..`, an
//! absolute symlink or a chain of them); names with `..`, absolute names and relative symlink
//! targets that climb above the destination are refused before anything is created. Sizes
//! and entry counts are capped, device nodes, ownership and setuid/setgid bits are restored
//! only for a privileged caller, and a failed extraction into a new directory leaves nothing.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    fchmod, fchown, futimens, linkat, mkdirat, mknodat, openat, openat2, readlinkat, renameat,
    statat, symlinkat, unlinkat, utimensat, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags,
    Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, ErrorKind, Result};

pub use crate::options::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};

/// What one extraction may create at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of the entries (as their headers declare), uncompressed.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

impl From<&crate::options::Options> for Limits {
    fn from(o: &crate::options::Options) -> Limits {
        Limits {
            max_bytes: o.max_bytes,
            max_entries: o.max_entries,
        }
    }
}

/// What `.wh.NAME` and `.wh..wh..opq` entries become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Ordinary files, as `tar -x` writes them.
    AsFiles,
    /// overlayfs whiteouts (a 0/0 character device, `trusted.overlay.opaque=y`) when the
    /// caller is privileged; ordinary files otherwise.
    Overlay,
}

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Caps.
    pub limits: Limits,
    /// Whiteout handling.
    pub whiteouts: Whiteouts,
    /// Restore owners, device nodes and setuid/setgid bits (only root can).
    pub privileged: bool,
    /// Compute [`Unpacked::tar_digest`] (one more SHA-256 pass over the tar stream).
    pub hash_tar: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            limits: Limits::default(),
            whiteouts: Whiteouts::AsFiles,
            privileged: rustix::process::geteuid().is_root(),
            hash_tar: false,
        }
    }
}

/// What an extraction did.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// Entries created.
    pub entries: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Device nodes not created because the caller is not privileged.
    pub skipped_devices: u64,
    /// Digest of the whole (uncompressed) tar stream, with [`UnpackOptions::hash_tar`].
    pub tar_digest: Option<Digest>,
    /// Size of the tar stream.
    pub tar_size: u64,
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of a tar layer media type (OCI and Docker), `None` for anything that
    /// is not a tar layer.
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        use crate::mediatype::*;
        match media_type {
            LAYER_TAR
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            LAYER_TAR_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            LAYER_TAR_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The compression the first bytes of a stream show (gzip and zstd magic numbers).
    pub fn sniff(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// A reader of the uncompressed stream.
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            // One member, as layers are; trailing bytes are read (and so verified) by the
            // caller's drain of the raw stream.
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

/// A reader that counts (and, when asked, hashes) what passes through it, failing past `cap`
/// bytes.
struct Capped<R> {
    inner: R,
    hasher: Option<Hasher>,
    count: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        if self.count > self.cap {
            return Err(io::Error::other(limit_error(format!(
                "the archive is larger than the limit of {} bytes",
                self.cap
            ))));
        }
        Ok(n)
    }
}

/// Largest tar extension header read (PAX records, GNU long names and links): the `tar`
/// crate reads each whole into memory, so a hostile one could be gigabytes.
pub const MAX_EXTENSION_HEADER: u64 = 1 << 20;

/// Watches the tar stream's headers as they pass, before the `tar` crate reads them: an
/// extension header (`x`, `g`, `L`, `K`) larger than [`MAX_EXTENSION_HEADER`] is an error
/// instead of an allocation of its declared size.
struct HeaderGuard<R> {
    inner: R,
    /// Bytes handed out so far.
    pos: u64,
    /// Where the next header block starts.
    next: u64,
    /// The header block being collected, and how much of it arrived.
    block: [u8; 512],
    filled: usize,
    /// The size of the entry whose GNU sparse extension blocks follow.
    sparse_size: Option<u64>,
    /// A PAX header's records being collected (they may set the next entry's size).
    pax: Option<(Vec<u8>, u64)>,
    /// The size a PAX header set for the next entry.
    pax_size: Option<u64>,
}

impl<R> HeaderGuard<R> {
    fn new(inner: R) -> Self {
        HeaderGuard {
            inner,
            pos: 0,
            next: 0,
            block: [0; 512],
            filled: 0,
            sparse_size: None,
            pax: None,
            pax_size: None,
        }
    }

    /// A complete header block at `self.next`: checks it, and finds the next one.
    fn header(&mut self) -> io::Result<()> {
        let b = &self.block;
        let at = self.next;
        if let Some(size) = self.sparse_size {
            // A GNU sparse extension block: another follows while byte 504 says so.
            self.next = at + 512;
            if b[504] == 0 {
                self.sparse_size = None;
                self.next += size.div_ceil(512) * 512;
            }
            return Ok(());
        }
        if b.iter().all(|&x| x == 0) {
            self.next = at + 512;
            return Ok(());
        }
        let size = header_size(&b[124..136]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a tar header with an invalid size",
            )
        })?;
        let kind = b[156];
        if matches!(kind, b'x' | b'g' | b'L' | b'K') && size > MAX_EXTENSION_HEADER {
            return Err(io::Error::other(limit_error(format!(
                "the archive has an extension header (type {}) of {size} bytes, more than the \
                 {MAX_EXTENSION_HEADER} bytes any real name or PAX record needs",
                kind as char
            ))));
        }
        let extension = matches!(kind, b'x' | b'g' | b'L' | b'K');
        let size = match (extension, self.pax_size.take()) {
            (false, Some(s)) => s,
            (true, pending) => {
                self.pax_size = pending;
                size
            }
            (false, None) => size,
        };
        if kind == b'x' {
            self.pax = Some((Vec::with_capacity(size as usize), size));
        }
        if kind == b'S' && b[482] != 0 {
            self.sparse_size = Some(size);
            self.next = at + 512;
        } else {
            self.next = at + 512 + size.div_ceil(512) * 512;
        }
        Ok(())
    }

    /// Data of a PAX header: collected, and its `size` record remembered when complete.
    fn pax_data(&mut self, data: &[u8]) {
        let Some((buf, size)) = self.pax.as_mut() else {
            return;
        };
        let want = (*size as usize).saturating_sub(buf.len()).min(data.len());
        buf.extend_from_slice(&data[..want]);
        if buf.len() as u64 == *size {
            let (buf, _) = self.pax.take().expect("collecting");
            self.pax_size = pax_size_record(&buf);
        }
    }
}

/// The `size` record of PAX extended header data (`LEN size=N\n` records).
fn pax_size_record(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return found;
        }
        let record = &rest[space + 1..len];
        if let Some(v) = record.strip_prefix(b"size=") {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            found = std::str::from_utf8(v).ok().and_then(|t| t.parse().ok());
        }
        rest = &rest[len..];
    }
    found
}

/// A tar size field: octal text, or base-256 (high bit set).
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut i = 0;
        while i < n {
            let here = self.pos + i as u64;
            if here < self.next {
                // Inside an entry's data: skip to the next header (or the end of this read).
                let skip = (self.next - here).min((n - i) as u64) as usize;
                if self.pax.is_some() {
                    let data = buf[i..i + skip].to_vec();
                    self.pax_data(&data);
                }
                i += skip;
                continue;
            }
            let take = (512 - self.filled).min(n - i);
            self.block[self.filled..self.filled + take].copy_from_slice(&buf[i..i + take]);
            self.filled += take;
            i += take;
            if self.filled == 512 {
                self.filled = 0;
                self.header()?;
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn limit_error(what: String) -> Error {
    Error::new(
        ErrorKind::UnsafeContent,
        format!("{what}; raise the limit (--max-bytes, --max-entries) if the archive is trusted"),
    )
}

/// An error about one archive entry.
fn refused(dest: &Path, name: &[u8], why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::UnsafeContent,
        format!(
            "archive entry \"{}\" {why}; nothing was extracted into {}",
            shown(name),
            dest.display()
        ),
    )
    .with_path(dest)
}

/// A name from an archive for a message: escaped, and cut after 200 bytes.
fn shown(name: &[u8]) -> String {
    let cut = name.len().min(200);
    let mut text = crate::text::printable(&String::from_utf8_lossy(&name[..cut])).into_owned();
    if cut < name.len() {
        text.push_str(&format!("… ({} bytes)", name.len()));
    }
    text
}

fn io_at(dest: &Path, name: &[u8], what: &str, e: impl Into<io::Error>) -> Error {
    let path = dest.join(OsStr::from_bytes(name));
    Error::io(what, &path, e.into())
}

/// The components of an entry's name: `./` and empty parts dropped; an absolute name, a
/// `..` part or a NUL byte refused.
fn components<'a>(dest: &Path, name: &'a [u8]) -> Result<Vec<&'a [u8]>> {
    if name.contains(&0) {
        return Err(refused(dest, name, "contains a NUL byte"));
    }
    if name.first() == Some(&b'/') {
        return Err(refused(dest, name, "is an absolute path"));
    }
    let mut parts = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(refused(dest, name, "climbs out of the destination with ..")),
            p => parts.push(p),
        }
    }
    if parts.len() > 512 {
        return Err(refused(dest, name, "is nested deeper than 512 directories"));
    }
    Ok(parts)
}

/// True when the relative symlink target `target`, placed in a directory `depth` levels
/// below the destination, stays inside the destination when resolved lexically. Absolute
/// targets mean the destination's root (as inside an image) and always stay.
fn link_stays_inside(depth: usize, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    // `..` only before any name: after one (`a/../x`) it would climb from wherever `a`
    // leads (a link to `.` makes `a/..` the destination's parent).
    let mut depth = depth as i64;
    let mut named = false;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if named => return false,
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => named = true,
        }
    }
    true
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

/// A directory opened once, in which paths are only ever resolved beneath it
/// (`openat2(RESOLVE_BENEATH)`): no `..`, absolute symlink or symlinked parent can lead a
/// write outside it. Missing parents are created (0700 until the caller sets their mode).
#[derive(Debug)]
pub struct Beneath<'a> {
    root: OwnedFd,
    dest: &'a Path,
    /// The last parent opened, by its path below the root (most entries share one).
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Mode of the directories created for missing parents.
    dir_mode: u32,
}

impl<'a> Beneath<'a> {
    /// Opens `dest` (never through a symlink).
    pub fn open(dest: &'a Path) -> Result<Beneath<'a>> {
        let root = rustix::fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("opening", dest, e.into()))?;
        Ok(Beneath {
            root,
            dest,
            cache: None,
            dir_mode: 0o700,
        })
    }

    /// Missing parents are created with `mode` (0700 by default).
    pub fn with_dir_mode(mut self, mode: u32) -> Self {
        self.dir_mode = mode;
        self
    }

    /// Forgets the cached parent (after anything that may have replaced a directory).
    fn forget(&mut self) {
        self.cache = None;
    }

    fn root(&self, name: &[u8]) -> Result<OwnedFd> {
        self.root
            .try_clone()
            .map_err(|e| io_at(self.dest, name, "opening", e))
    }

    /// Opens (creating when missing) the directory `parts` below the root, for the entry
    /// `name` (messages).
    pub fn dir(&mut self, parts: &[&[u8]], name: &[u8]) -> Result<OwnedFd> {
        let path = join(parts);
        if let Some((p, fd)) = &self.cache {
            if *p == path {
                return fd
                    .try_clone()
                    .map_err(|e| io_at(self.dest, name, "opening", e));
            }
        }
        let fd = if parts.is_empty() {
            self.root(name)?
        } else {
            match self.open_beneath(&path) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    // Create what is missing, one level at a time, each opened beneath root.
                    let mut fd = self.root(name)?;
                    for i in 1..=parts.len() {
                        let sub = join(&parts[..i]);
                        match self.open_beneath(&sub) {
                            Ok(next) => fd = next,
                            Err(Errno::NOENT) => {
                                let last = OsStr::from_bytes(parts[i - 1]);
                                match mkdirat(&fd, last, Mode::from_raw_mode(self.dir_mode)) {
                                    Ok(()) | Err(Errno::EXIST) => {}
                                    Err(e) => {
                                        return Err(io_at(self.dest, &sub, "creating directory", e))
                                    }
                                }
                                fd = self
                                    .open_beneath(&sub)
                                    .map_err(|e| self.parent_error(&sub, name, e))?;
                            }
                            Err(e) => return Err(self.parent_error(&sub, name, e)),
                        }
                    }
                    fd
                }
                Err(e) => return Err(self.parent_error(&path, name, e)),
            }
        };
        let copy = fd
            .try_clone()
            .map_err(|e| io_at(self.dest, name, "opening", e))?;
        self.cache = Some((path, copy));
        Ok(fd)
    }

    fn open_beneath(&self, path: &[u8]) -> std::result::Result<OwnedFd, Errno> {
        openat2(
            &self.root,
            OsStr::from_bytes(path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
    }

    fn parent_error(&self, parent: &[u8], name: &[u8], e: Errno) -> Error {
        let parent = String::from_utf8_lossy(parent);
        match e {
            Errno::XDEV => refused(
                self.dest,
                name,
                format!("would be written through \"{parent}\", a symlink that leads outside the destination"),
            ),
            Errno::LOOP => refused(
                self.dest,
                name,
                format!("would be written through \"{parent}\", a chain of symlinks too long to follow"),
            ),
            Errno::NOTDIR => refused(
                self.dest,
                name,
                format!("needs \"{parent}\" to be a directory, but it is something else"),
            ),
            e => io_at(self.dest, name, "opening the directory of", e),
        }
    }

    /// Where `dir` (opened beneath the root) really is, as components below the root —
    /// through whatever symlinks led there. For messages, `name` is the entry.
    pub fn real_parts(&self, dir: &OwnedFd, name: &[u8]) -> Result<Vec<Vec<u8>>> {
        use std::os::fd::AsRawFd;
        let real = |fd: &OwnedFd| {
            rustix::fs::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()), Vec::new())
                .map(|p| p.into_bytes())
                .map_err(|e| io_at(self.dest, name, "finding the directory of", e))
        };
        let (root, at) = (real(&self.root)?, real(dir)?);
        let below = at
            .strip_prefix(root.as_slice())
            .ok_or_else(|| refused(self.dest, name, "would be written outside the destination"))?;
        Ok(below
            .split(|b| *b == b'/')
            .filter(|p| !p.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Creates the new file `rel` (a `/`-separated relative path without `..`), with mode
    /// 0600 until the caller sets it; an existing file is an error.
    pub fn create_file(&mut self, rel: &str) -> Result<std::fs::File> {
        let parts = components(self.dest, rel.as_bytes())?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(refused(self.dest, rel.as_bytes(), "names no file"));
        };
        let dir = self.dir(parents, rel.as_bytes())?;
        let fd = openat(
            &dir,
            OsStr::from_bytes(last),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_at(self.dest, rel.as_bytes(), "creating", e))?;
        Ok(fd.into())
    }
}

/// A directory whose metadata is set once everything below it is written.
struct DirMeta {
    path: Vec<u8>,
    mode: u32,
    mtime: i64,
    owner: Option<(u32, u32)>,
}

/// The extraction of one archive into one open directory.
struct Extraction<'a> {
    at: Beneath<'a>,
    dest: &'a Path,
    options: UnpackOptions,
    dirs: HashMap<Vec<u8>, DirMeta>,
    done: Unpacked,
    declared: u64,
}

impl Extraction<'_> {
    fn parent(&mut self, parts: &[&[u8]], name: &[u8]) -> Result<OwnedFd> {
        self.at.dir(parts, name)
    }

    /// Removes what is at `name` in `dir` unless it is a directory and `keep_dir`; true
    /// when a directory is there (and kept).
    fn clear(&mut self, dir: &OwnedFd, last: &[u8], full: &[u8], keep_dir: bool) -> Result<bool> {
        match statat(dir, OsStr::from_bytes(last), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if keep_dir {
                    return Ok(true);
                }
                Err(refused(
                    self.dest,
                    full,
                    "would replace a directory the archive made earlier",
                ))
            }
            Ok(_) => {
                unlinkat(dir, OsStr::from_bytes(last), AtFlags::empty())
                    .map_err(|e| io_at(self.dest, full, "replacing", e))?;
                // A name replaced may have been a symlink a cached parent went through.
                self.at.forget();
                Ok(false)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_at(self.dest, full, "looking at", e)),
        }
    }

    fn mode(&self, header_mode: u32) -> u32 {
        let m = header_mode & 0o7777;
        if self.options.privileged {
            m
        } else {
            m & !0o6000
        }
    }

    fn owner(&self, h: &tar::Header) -> Option<(u32, u32)> {
        if !self.options.privileged {
            return None;
        }
        let uid = h.uid().ok().and_then(|u| u32::try_from(u).ok())?;
        let gid = h.gid().ok().and_then(|g| u32::try_from(g).ok())?;
        (uid != u32::MAX && gid != u32::MAX).then_some((uid, gid))
    }

    fn entry(&mut self, mut entry: tar::Entry<'_, impl Read>) -> Result<()> {
        let name = entry.path_bytes().into_owned();
        let header = entry.header().clone();
        let kind = header.entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        self.done.entries += 1;
        if self.done.entries > self.options.limits.max_entries {
            return Err(limit_error(format!(
                "the archive has more than {} entries",
                self.options.limits.max_entries
            ))
            .with_path(self.dest));
        }
        let size = entry.size();
        self.declared = self.declared.saturating_add(size);
        if self.declared > self.options.limits.max_bytes {
            return Err(limit_error(format!(
                "the archive unpacks to more than {} bytes",
                self.options.limits.max_bytes
            ))
            .with_path(self.dest));
        }
        let parts = components(self.dest, &name)?;
        let mtime = header
            .mtime()
            .map(|t| t.min(i64::MAX as u64) as i64)
            .unwrap_or(0);
        let owner = self.owner(&header);
        let mode = self.mode(header.mode().unwrap_or(0o644));
        let Some((last, parents)) = parts.split_last() else {
            // The destination itself (`./`): its metadata, when it is a directory entry.
            if kind == tar::EntryType::Directory {
                self.dirs.insert(
                    Vec::new(),
                    DirMeta {
                        path: Vec::new(),
                        mode,
                        mtime,
                        owner,
                    },
                );
            }
            return Ok(());
        };
        let full = join(&parts);
        let last = *last;
        // Whiteouts.
        if self.options.whiteouts == Whiteouts::Overlay && self.options.privileged {
            if let Some(hidden) = last.strip_prefix(b".wh.") {
                let dir = self.parent(parents, &name)?;
                if hidden == b".wh..opq" {
                    return rustix::fs::fsetxattr(
                        &dir,
                        "trusted.overlay.opaque",
                        b"y",
                        XattrFlags::empty(),
                    )
                    .map_err(|e| io_at(self.dest, &full, "marking opaque", e));
                }
                if hidden.starts_with(b".wh.") {
                    // Other aufs metadata (`.wh..wh.plnk`, …) has no overlayfs meaning.
                    return Ok(());
                }
                if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/')
                {
                    return Err(refused(
                        self.dest,
                        &name,
                        "is a whiteout of nothing (or of a parent)",
                    ));
                }
                self.clear(&dir, hidden, &full, false)?;
                return mknodat(
                    &dir,
                    OsStr::from_bytes(hidden),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| io_at(self.dest, &full, "creating whiteout", e));
            }
        }
        match kind {
            tar::EntryType::Directory => {
                let dir = self.parent(parents, &name)?;
                if !self.clear(&dir, last, &full, true)? {
                    mkdirat(&dir, OsStr::from_bytes(last), Mode::from_raw_mode(0o700))
                        .map_err(|e| io_at(self.dest, &full, "creating directory", e))?;
                }
                self.dirs.insert(
                    full.clone(),
                    DirMeta {
                        path: full,
                        mode,
                        mtime,
                        owner,
                    },
                );
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let dir = self.parent(parents, &name)?;
                self.clear(&dir, last, &full, false)?;
                let fd = openat(
                    &dir,
                    OsStr::from_bytes(last),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_at(self.dest, &full, "creating", e))?;
                let mut file = std::fs::File::from(fd);
                let n = io::copy(&mut entry, &mut file)
                    .map_err(|e| read_or_write(e, self.dest, &full))?;
                self.done.bytes += n;
                if let Some((u, g)) = owner {
                    fchown(&file, Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))
                        .map_err(|e| io_at(self.dest, &full, "setting the owner of", e))?;
                }
                fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| io_at(self.dest, &full, "setting the mode of", e))?;
                futimens(&file, &times(mtime))
                    .map_err(|e| io_at(self.dest, &full, "setting the time of", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(self.dest, &name, "is a symlink without a target"))?
                    .into_owned();
                if target.is_empty() || target.contains(&0) {
                    return Err(refused(
                        self.dest,
                        &name,
                        "is a symlink with an empty or NUL target",
                    ));
                }
                // Checked from where the link really lands: a parent reached through a
                // symlink (`a -> .`, then `a/a/a/x`) is not as deep as its name says.
                let dir = self.parent(parents, &name)?;
                if !link_stays_inside(self.at.real_parts(&dir, &name)?.len(), &target) {
                    return Err(refused(
                        self.dest,
                        &name,
                        format!(
                            "is a symlink to \"{}\", outside the destination",
                            shown(&target)
                        ),
                    ));
                }
                self.clear(&dir, last, &full, false)?;
                symlinkat(OsStr::from_bytes(&target), &dir, OsStr::from_bytes(last))
                    .map_err(|e| io_at(self.dest, &full, "creating symlink", e))?;
                self.at.forget();
                self.set_metadata_at(&dir, last, &full, owner, None, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(self.dest, &name, "is a hard link without a target"))?
                    .into_owned();
                let target_parts = components(self.dest, &target).map_err(|_| {
                    refused(
                        self.dest,
                        &name,
                        format!(
                            "is a hard link to \"{}\", outside the destination",
                            shown(&target)
                        ),
                    )
                })?;
                let Some((tlast, tparents)) = target_parts.split_last() else {
                    return Err(refused(
                        self.dest,
                        &name,
                        "is a hard link to the destination itself",
                    ));
                };
                let tdir = self.parent(tparents, &target)?;
                let linked =
                    match statat(&tdir, OsStr::from_bytes(tlast), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                            return Err(refused(self.dest, &name, "is a hard link to a directory"))
                        }
                        Ok(st) => FileType::from_raw_mode(st.st_mode),
                        Err(_) => return Err(refused(
                            self.dest,
                            &name,
                            "is a hard link to an entry the archive has not created (before it)",
                        )),
                    };
                let dir = self.parent(parents, &name)?;
                if linked == FileType::Symlink {
                    // A second name of a symlink: its relative target now counts from here.
                    let text = readlinkat(&tdir, OsStr::from_bytes(tlast), Vec::new())
                        .map_err(|e| io_at(self.dest, &target, "reading the link", e))?;
                    if !link_stays_inside(self.at.real_parts(&dir, &name)?.len(), text.as_bytes()) {
                        return Err(refused(
                            self.dest,
                            &name,
                            format!(
                                "is a hard link to a symlink to \"{}\", which leads outside the \
                                 destination from here",
                                shown(text.as_bytes())
                            ),
                        ));
                    }
                }
                let tdir = self.parent(tparents, &target)?;
                if join(tparents) == join(parents) && *tlast == last {
                    return Ok(());
                }
                self.clear(&dir, last, &full, false)?;
                linkat(
                    &tdir,
                    OsStr::from_bytes(tlast),
                    &dir,
                    OsStr::from_bytes(last),
                    AtFlags::empty(),
                )
                .map_err(|e| io_at(self.dest, &full, "creating hard link", e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if file_type != FileType::Fifo && !self.options.privileged {
                    self.done.skipped_devices += 1;
                    return Ok(());
                }
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                let dir = self.parent(parents, &name)?;
                self.clear(&dir, last, &full, false)?;
                mknodat(
                    &dir,
                    OsStr::from_bytes(last),
                    file_type,
                    Mode::from_raw_mode(mode),
                    dev,
                )
                .map_err(|e| io_at(self.dest, &full, "creating", e))?;
                self.set_metadata_at(&dir, last, &full, owner, Some(mode), mtime)?;
            }
            other => {
                return Err(refused(
                    self.dest,
                    &name,
                    format!(
                        "has an entry type this program does not extract ('{}')",
                        (other.as_byte() as char).escape_default()
                    ),
                ))
            }
        }
        Ok(())
    }

    /// Owner (then `mode` again, which a chown clears of setuid bits) and time of the entry
    /// `last` just created in `dir`, never through a symlink.
    fn set_metadata_at(
        &self,
        dir: &OwnedFd,
        last: &[u8],
        full: &[u8],
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: i64,
    ) -> Result<()> {
        let name = OsStr::from_bytes(last);
        if let Some((u, g)) = owner {
            let (u, g) = (Some(Uid::from_raw(u)), Some(Gid::from_raw(g)));
            rustix::fs::chownat(dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_at(self.dest, full, "setting the owner of", e))?;
            if let Some(m) = mode {
                rustix::fs::chmodat(dir, name, Mode::from_raw_mode(m), AtFlags::empty())
                    .map_err(|e| io_at(self.dest, full, "setting the mode of", e))?;
            }
        }
        utimensat(dir, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_at(self.dest, full, "setting the time of", e))
    }

    /// Directory metadata, deepest first (a read-only directory is made so last).
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs: Vec<DirMeta> = self.dirs.drain().map(|(_, d)| d).collect();
        dirs.sort_by(|a, b| {
            let depth = |d: &DirMeta| {
                d.path.iter().filter(|&&c| c == b'/').count() + usize::from(!d.path.is_empty())
            };
            depth(b).cmp(&depth(a)).then_with(|| a.path.cmp(&b.path))
        });
        for d in dirs {
            let fd = if d.path.is_empty() {
                self.at.root(b"")?
            } else {
                self.at
                    .open_beneath(&d.path)
                    .map_err(|e| self.at.parent_error(&d.path, &d.path, e))?
            };
            if let Some((u, g)) = d.owner {
                fchown(&fd, Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))
                    .map_err(|e| io_at(self.dest, &d.path, "setting the owner of", e))?;
            }
            fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|e| io_at(self.dest, &d.path, "setting the mode of", e))?;
            futimens(&fd, &times(d.mtime))
                .map_err(|e| io_at(self.dest, &d.path, "setting the time of", e))?;
        }
        Ok(())
    }
}

fn read_or_write(e: io::Error, dest: &Path, name: &[u8]) -> Error {
    crate::error::from_read_error(e, |e| io_at(dest, name, "writing", e))
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Extracts the tar stream `tar` into the existing directory `dest` (which should be empty:
/// entries replace what is there). On error, what was written stays; see [`unpack_new`].
pub fn unpack_into(tar: &mut dyn Read, dest: &Path, options: UnpackOptions) -> Result<Unpacked> {
    // Parents the archive does not list are made as GNU tar and container runtimes make
    // them (0755): 0700 would hide a lower layer's files from everyone but root.
    let at = Beneath::open(dest)?.with_dir_mode(0o755);
    let mut stream = Capped {
        inner: HeaderGuard::new(tar),
        hasher: options.hash_tar.then(Hasher::new),
        count: 0,
        // Headers and padding on top of the declared bytes: one block per entry at most
        // twice (long names), plus the end blocks.
        cap: options
            .limits
            .max_bytes
            .saturating_add(options.limits.max_entries.saturating_mul(3 * 512))
            .saturating_add(1 << 20),
    };
    let mut x = Extraction {
        at,
        dest,
        options,
        dirs: HashMap::new(),
        done: Unpacked {
            entries: 0,
            bytes: 0,
            skipped_devices: 0,
            tar_digest: None,
            tar_size: 0,
        },
        declared: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut stream);
        let entries = archive.entries().map_err(|e| bad_archive(dest, e))?;
        for entry in entries {
            crate::fsutil::check_stopped().map_err(|e| {
                crate::error::from_read_error(e, |e| Error::io("extracting into", dest, e))
            })?;
            let entry = entry.map_err(|e| bad_archive(dest, e))?;
            x.entry(entry)?;
        }
    }
    // The rest of the stream (end blocks, padding), so the digest covers all of it.
    io::copy(&mut stream, &mut io::sink()).map_err(|e| bad_archive(dest, e))?;
    x.finish_dirs()?;
    x.done.tar_digest = stream.hasher.map(|h| h.finish().0);
    x.done.tar_size = stream.count;
    Ok(x.done)
}

/// True when `block` (the first 512 bytes of a stream, or fewer at its end) is a tar header
/// with a valid checksum, or the zero block that ends an empty archive.
pub fn looks_like_tar(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

/// The uncompressed stream `tar`, when its first block is a tar header (or the end of an
/// empty archive); `None` when it is no tar at all (ORAS types every file it pushes as a tar
/// layer). `dest` names the destination in errors.
pub fn tar_stream<'a>(
    mut tar: Box<dyn Read + 'a>,
    dest: &Path,
) -> Result<Option<Box<dyn Read + 'a>>> {
    let mut first = vec![0u8; 512];
    let mut got = 0;
    while got < first.len() {
        match tar.read(&mut first[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(bad_archive(dest, e)),
        }
    }
    first.truncate(got);
    if !looks_like_tar(&first) {
        return Ok(None);
    }
    Ok(Some(Box::new(io::Cursor::new(first).chain(tar))))
}

/// The error for a stream that is not a readable archive.
pub fn bad_archive(dest: &Path, e: io::Error) -> Error {
    crate::error::from_read_error(e, |e| {
        Error::new(
            ErrorKind::UnsafeContent,
            format!(
                "the archive cannot be read ({e}); nothing was extracted into {}",
                dest.display()
            ),
        )
        .with_path(dest)
    })
}

/// Makes the new directory `dest` (which must not exist, or be an empty directory) with
/// `fill`: it fills a temp directory beside `dest` (its argument), which is renamed into place
/// only when `fill` returns something; on `None` or any error nothing is left. Error messages
/// name `dest`.
pub fn unpack_new<T>(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(crate::fsutil::TEMP_PREFIX)
        .tempdir_in(parent)
        .map_err(|e| Error::io("creating a directory in", parent, e))?;
    let done = match fill(temp.path()) {
        Ok(Some(done)) => done,
        Ok(None) => {
            let _ = remove_tree(temp.path());
            return Ok(None);
        }
        Err(e) => {
            let e = rename_paths(e, temp.path(), dest);
            let _ = remove_tree(temp.path());
            return Err(e);
        }
    };
    let temp = temp.keep();
    // An empty directory at `dest` is replaced by the rename; anything else stays and fails.
    match renameat(rustix::fs::CWD, &temp, rustix::fs::CWD, dest) {
        Ok(()) => Ok(Some(done)),
        Err(e) => {
            let _ = remove_tree(&temp);
            Err(Error::io("moving the extracted files to", dest, e.into()))
        }
    }
}

/// `e` with the temp directory `temp` named as `dest` (where its files were to go).
pub fn rename_paths(e: Error, temp: &Path, dest: &Path) -> Error {
    let message = e
        .message()
        .replace(&temp.display().to_string(), &dest.display().to_string());
    let path = e.path().map(|p| match p.strip_prefix(temp) {
        Ok(rel) => dest.join(rel),
        Err(_) => p.to_path_buf(),
    });
    let mut out = Error::new(e.kind(), message);
    if let Some(p) = path {
        out = out.with_path(p);
    }
    if let Some(d) = e.digest() {
        out = out.with_digest(d.to_string());
    }
    out
}

/// Refuses (with an error naming it) when something is mounted on a directory below `path`:
/// removing the tree would delete the files of that mount (a bind of a host directory).
/// Compared by mount id, so a bind from the same file system counts too.
fn check_no_mount_below(path: &Path) -> io::Result<()> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let mnt_id = |p: &Path| {
        statx(CWD, p, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID)
            .map(|s| s.stx_mnt_id)
            .map_err(io::Error::from)
    };
    let top = match mnt_id(path) {
        Ok(id) => id,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut todo = vec![path.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if mnt_id(&p).is_ok_and(|id| id != top) {
                return Err(io::Error::other(format!(
                    "{} is a mount point; unmount it first (nothing was removed)",
                    p.display()
                )));
            }
            todo.push(p);
        }
    }
    Ok(())
}

/// Removes a directory tree that may hold read-only directories (made so by an archive);
/// refuses, removing nothing, when a directory below it is a mount point.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    fn writable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        writable(&e.path());
                    }
                }
            }
        }
    }
    check_no_mount_below(path)?;
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            writable(path);
            std::fs::remove_dir_all(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        let p: Vec<&[u8]> = vec![b"a", b"b"];
        assert!(link_stays_inside(p.len(), b"../x"));
        assert!(link_stays_inside(p.len(), b"../../x"));
        assert!(!link_stays_inside(p.len(), b"../../../x"));
        assert!(link_stays_inside(p.len(), b"/etc/passwd"));
        assert!(!link_stays_inside(0, b"x/../../y"));
        assert!(!link_stays_inside(p.len(), b"a/../victim"));
    }

    #[test]
    fn pax_size() {
        assert_eq!(
            pax_size_record(b"12 size=100\n20 path=a/long/name\n"),
            Some(100)
        );
        assert_eq!(pax_size_record(b"20 path=a/long/name\n"), None);
    }

    #[test]
    fn names() {
        let d = Path::new("/d");
        assert!(components(d, b"/etc/passwd").is_err());
        assert!(components(d, b"a/../../x").is_err());
        assert!(components(d, b"a\0b").is_err());
        assert_eq!(
            components(d, b"./a//b/").expect("ok"),
            vec![&b"a"[..], b"b"]
        );
    }

    /// A mount below a tree (a bind of a host directory, here a tmpfs) stops its removal:
    /// the files of the mount stay, and so does the tree. Needs root, as the tests run.
    #[test]
    fn removal_never_crosses_into_a_mount() {
        let d = tempfile::tempdir().expect("tempdir");
        let inner = d.path().join("tree/a/mounted");
        std::fs::create_dir_all(&inner).expect("mkdir");
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&inner)
            .output()
            .expect("mount");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(inner.join("precious"), "keep").expect("write");
        let err = remove_tree(&d.path().join("tree")).expect_err("refused");
        let kept = std::fs::read_to_string(inner.join("precious"));
        let _ = std::process::Command::new("umount").arg(&inner).status();
        assert!(err.to_string().contains("is a mount point"), "{err}");
        assert_eq!(kept.expect("kept"), "keep");
        remove_tree(&d.path().join("tree")).expect("removed once unmounted");
        assert!(!d.path().join("tree").exists());
    }
}
