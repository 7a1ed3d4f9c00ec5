//! Small file-system helpers every layer uses: absolute paths, temp files with the one
//! recognisable prefix, and blocking work on the runtime's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// How old another run's temp file must be before it is taken for a leftover of a killed
/// run and removed: no live writer leaves a temp file untouched that long.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the temp files (and temp directories) this program left in `dir` — names
/// starting with [`TEMP_PREFIX`] — that were last modified more than `age` ago; returns
/// how many. Symlinks are never followed; what cannot be removed is left alone.
pub fn sweep_stale_temps(dir: &Path, age: std::time::Duration) -> usize {
    stale_temps(dir, age, true)
}

/// The temp files (and temp directories) of this program in `dir` older than `age`: how
/// many, removed when `remove` (see [`sweep_stale_temps`]).
pub fn stale_temps(dir: &Path, age: std::time::Duration, remove: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d > age);
        if !old {
            continue;
        }
        if !remove {
            removed += 1;
            continue;
        }
        let gone = if meta.is_dir() {
            std::fs::remove_dir_all(e.path())
        } else {
            std::fs::remove_file(e.path())
        };
        if gone.is_ok() {
            removed += 1;
            tracing::info!(path = %e.path().display(), "removed a temp file left by an earlier run");
        }
    }
    removed
}

/// [`sweep_stale_temps`] for the regular files of an open directory, every look and removal
/// relative to its descriptor (never through a link).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `st_mtime`'s type differs between systems
pub fn sweep_stale_temp_files_at(dir: &std::os::fd::OwnedFd, age: std::time::Duration) -> usize {
    stale_temp_files_at(dir, age, true)
}

/// The temp files of an open directory older than `age`: how many, removed when `remove`.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `st_mtime`'s type differs between systems
pub fn stale_temp_files_at(
    dir: &std::os::fd::OwnedFd,
    age: std::time::Duration,
    remove: bool,
) -> usize {
    use rustix::fs::{statat, unlinkat, AtFlags, FileType};
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
            continue;
        }
        let Ok(st) = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let old = now.saturating_sub(st.st_mtime as i64) > age.as_secs() as i64;
        if old
            && FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile
            && (!remove || unlinkat(dir, name, AtFlags::empty()).is_ok())
        {
            removed += 1;
            tracing::info!(name = %name.to_string_lossy(), "removed a temp file left by an earlier run");
        }
    }
    removed
}

/// A new temp file in `dir`, named with [`TEMP_PREFIX`].
pub fn temp_file(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating temp file in", dir, e))
}

tokio::task_local! {
    /// The blocking work of the operation this task runs (see [`InFlight`]).
    static IN_FLIGHT: Arc<InFlight>;
}

/// Counts one operation's blocking work (file writes, hashing) still running. A blocking
/// task outlives the future that started it — an error or a cancellation drops the future,
/// not the thread — so the façade waits for the count to reach zero before it returns:
/// nobody exits while a writer still writes, and every temp file is removed by its owner.
#[derive(Debug, Default)]
pub struct InFlight {
    running: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
    /// Set once the operation has returned (an error or a cancellation): its blocking work
    /// is of no use any more and stops at its next chunk ([`check_stopped`]).
    stopped: std::sync::atomic::AtomicBool,
}

thread_local! {
    /// The operation the blocking work on this thread belongs to.
    static WORKING_FOR: std::cell::RefCell<Option<Arc<InFlight>>> =
        const { std::cell::RefCell::new(None) };
}

/// An error when the operation this thread works for has returned: long copies call it
/// per chunk so that, after an error or a cancellation, they stop within one chunk instead
/// of finishing a blob nobody will use (their temp files are then removed as usual).
pub fn check_stopped() -> std::io::Result<()> {
    let stopped = WORKING_FOR.with(|w| {
        w.borrow()
            .as_ref()
            .is_some_and(|f| f.stopped.load(std::sync::atomic::Ordering::Relaxed))
    });
    if stopped {
        return Err(std::io::Error::other(Error::new(
            ErrorKind::Cancelled,
            "the operation ended",
        )));
    }
    Ok(())
}

/// Tells the blocking work of the operation this task runs to stop at its next chunk and
/// waits until none runs (on a failure path: what the operation wrote can then be taken
/// back without a worker still adding to it).
pub async fn stop_blocking_work() {
    if let Ok(work) = IN_FLIGHT.try_with(|w| w.clone()) {
        let _ = tokio::task::spawn_blocking(move || work.stop_and_wait()).await;
    }
}

/// One running blocking task of an [`InFlight`]; counted down when dropped.
struct Running(Arc<InFlight>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl InFlight {
    /// Runs `fut` with its blocking work counted here.
    pub async fn scope<F: std::future::Future>(self: Arc<Self>, fut: F) -> F::Output {
        IN_FLIGHT.scope(self, fut).await
    }

    /// Tells the counted blocking work to stop at its next chunk, then blocks until none
    /// runs.
    pub fn stop_and_wait(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.wait_idle();
    }

    /// Blocks until no counted blocking task runs.
    fn wait_idle(&self) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn start(self: &Arc<Self>) -> Running {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Running(self.clone())
    }
}

/// Runs blocking file work on tokio's blocking pool, mapping a panic to an internal error;
/// counted in the operation's [`InFlight`], so the operation does not return before it ends.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let running = IN_FLIGHT.try_with(|t| t.start()).ok();
    tokio::task::spawn_blocking(move || {
        let op = running.as_ref().map(|r| r.0.clone());
        WORKING_FOR.with(|w| *w.borrow_mut() = op);
        let out = f();
        WORKING_FOR.with(|w| *w.borrow_mut() = None);
        drop(running);
        out
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Internal, format!("worker thread failed: {e}")))?
}

/// [`changed_while_packing`] for a file whose bytes, read again, are not those hashed when it
/// was staged (edited in place): `size` bytes with digest `got`, not `hashed`.
pub fn rehashed_differently(
    path: &Path,
    size: u64,
    got: impl std::fmt::Display,
    hashed: impl std::fmt::Display,
) -> Error {
    changed_while_packing(
        path,
        &format!("{size} bytes with digest {got}, not {hashed} as when it was hashed"),
    )
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
    id: FileId,
}

/// A file's identity on its file system: (device, inode).
pub type FileId = (u64, u64);

/// The identity of the file `meta` describes.
#[cfg(unix)]
pub fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The identity of a file from its `stat` (the field types differ between systems).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
pub fn stat_id(st: &rustix::fs::Stat) -> FileId {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The identity of the file `meta` describes (none off Unix).
#[cfg(not(unix))]
pub fn file_id(_meta: &std::fs::Metadata) -> FileId {
    (0, 0)
}

/// Opens `path` for reading without blocking in `open` (a FIFO without a writer would wait
/// forever); the caller checks what it opened. For regular files the flag changes nothing.
pub fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    options.open(path)
}

/// Opens `path` for reading without ever blocking on it (a FIFO or device swapped in is
/// refused, not waited on), checks that it is a regular file and returns it with its
/// metadata (taken from the open file, so it describes what is read).
pub fn open_regular_file(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let file = open_nonblocking(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            Error::new(
                ErrorKind::Io,
                format!(
                    "{} is not a regular file (a socket, FIFO or device); only files can be packed",
                    path.display()
                ),
            )
            .with_path(path),
        ));
    }
    Ok((file, meta))
}

/// A file to be read by path, later and perhaps more than once (a staged source, a layout's
/// blob), with the identity it had when first found or read. Every opening checks that it is
/// still that file: one swapped for another, for a symlink to a file elsewhere, or for a FIFO
/// is "changed while packing", never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Where it is.
    pub path: PathBuf,
    /// Its identity when first seen; `None` for this program's own temp files.
    pub id: Option<FileId>,
}

impl FileRef {
    /// `path`, expected to be the file with identity `id`.
    pub fn new(path: impl Into<PathBuf>, id: Option<FileId>) -> FileRef {
        FileRef {
            path: path.into(),
            id,
        }
    }

    /// Opens it (see [`open_regular_file`]) and checks its identity.
    pub fn open(&self) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
        let (file, meta) = open_regular_file(&self.path)?;
        if self.id.is_some_and(|id| id != file_id(&meta)) {
            return Err(std::io::Error::other(changed_while_packing(
                &self.path,
                "it is no longer the file found there first",
            )));
        }
        Ok((file, meta))
    }
}

impl StableRead {
    /// Opens `file` (see [`FileRef::open`]) as a snapshot.
    pub fn open(file: &FileRef) -> std::io::Result<StableRead> {
        let (f, meta) = file.open()?;
        Ok(StableRead::new(f, &file.path, &meta))
    }

    /// Wraps `file`, opened from `path`, with the size and time `meta` (its metadata now)
    /// gives.
    pub fn new(file: std::fs::File, path: &Path, meta: &std::fs::Metadata) -> StableRead {
        StableRead {
            file,
            path: path.to_path_buf(),
            size: meta.len(),
            modified: meta.modified().ok(),
            remaining: meta.len(),
            checked: false,
            id: file_id(meta),
        }
    }

    /// The size the file had when opened (what is read).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file read, with its identity (to open it again later).
    pub fn file_ref(&self) -> FileRef {
        FileRef::new(&self.path, Some(self.id))
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
                // A file that says it is empty yet has bytes (`/proc`, `/sys`): its size is no
                // promise, so it cannot be packed as it is.
                let mut probe = [0u8; 1];
                if self.size == 0 && self.file.read(&mut probe)? > 0 {
                    return Err(std::io::Error::other(
                        Error::new(
                            ErrorKind::InvalidArgument,
                            format!(
                                "{}: its size reads 0 bytes, yet it has content (a file of /proc \
                                 or /sys?); copy it to a regular file and pack that",
                                self.path.display()
                            ),
                        )
                        .with_path(&self.path),
                    ));
                }
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
        check_stopped()?;
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

/// Opens the directory `name` inside the open directory `parent` without following a
/// symlink (`create`: make it first when missing). `Ok(None)` when it does not exist and
/// `create` is off; an error of kind `NotADirectory` (or `ELOOP`) when it is not a real
/// directory.
#[cfg(unix)]
pub fn open_dir_at(
    parent: impl std::os::fd::AsFd,
    name: &str,
    create: bool,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use rustix::fs::{mkdirat, openat, Mode, OFlags};
    if create {
        match mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match openat(&parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) if !create => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens the file `name` of the open directory `dir` for reading: never through a symlink,
/// never waiting on a FIFO (the caller checks what it opened).
#[cfg(unix)]
pub fn open_file_at(dir: impl std::os::fd::AsFd, name: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{openat, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(openat(dir, name, flags, Mode::empty())?.into())
}

/// A temp file created inside an open directory, by its descriptor: a directory swapped for
/// a symlink after it was opened cannot send the file elsewhere.
///
/// Unnamed where the file system can (`O_TMPFILE`, linked under its name by
/// [`TempAt::persist`]): no directory entry is added and renamed away, which measured 25%
/// faster per small file here, and a killed writer leaves nothing behind. Elsewhere named with
/// [`TEMP_PREFIX`], renamed by `persist` and removed when dropped unpersisted.
#[cfg(unix)]
#[derive(Debug)]
pub struct TempAt {
    dir: Arc<std::os::fd::OwnedFd>,
    /// The directory's path, for messages.
    shown: PathBuf,
    /// `None` for an unnamed file.
    name: Option<String>,
    file: std::fs::File,
    persisted: bool,
}

/// The mode files are created with: readable by all (0644), like any file the user writes.
#[cfg(unix)]
const FILE_MODE: u32 = 0o644;

#[cfg(unix)]
impl TempAt {
    /// A new empty temp file in `dir` (whose path is `shown`), mode 0644.
    pub fn new(dir: Arc<std::os::fd::OwnedFd>, shown: &Path) -> Result<TempAt> {
        use rustix::fs::{fchmod, openat, Mode, OFlags};
        let made = |fd: std::os::fd::OwnedFd, name: Option<String>| {
            // Whatever the umask is now (a process that embeds the library may change it).
            let _ = fchmod(&fd, Mode::from_raw_mode(FILE_MODE));
            TempAt {
                dir: dir.clone(),
                shown: shown.to_path_buf(),
                name,
                file: fd.into(),
                persisted: false,
            }
        };
        let mode = Mode::from_raw_mode(FILE_MODE);
        if can_link_unnamed() {
            match openat(
                &*dir,
                ".",
                OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
                mode,
            ) {
                Ok(fd) => return Ok(made(fd, None)),
                // No O_TMPFILE on this file system (or kernel): a named temp file.
                Err(
                    rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::ISDIR
                    | rustix::io::Errno::INVAL,
                ) => {}
                Err(e) => return Err(Error::io("creating temp file in", shown, e.into())),
            }
        }
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = rustix::io::Errno::EXIST;
        for _ in 0..16 {
            let name = random_temp_name();
            match openat(&*dir, name.as_str(), flags, mode) {
                Ok(fd) => return Ok(made(fd, Some(name))),
                Err(rustix::io::Errno::EXIST) => last = rustix::io::Errno::EXIST,
                Err(e) => return Err(Error::io("creating temp file in", shown, e.into())),
            }
        }
        Err(Error::io("creating temp file in", shown, last.into()))
    }

    /// The open file.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// Its path (for messages): the directory, for an unnamed file.
    pub fn path(&self) -> PathBuf {
        match &self.name {
            Some(name) => self.shown.join(name),
            None => self.shown.clone(),
        }
    }

    /// Gives it `name` in its directory, replacing what is there.
    pub fn persist(mut self, name: &str) -> std::io::Result<()> {
        if self.name.is_none() {
            match link_unnamed(&self.file, &self.dir, name) {
                Ok(()) => {
                    self.persisted = true;
                    return Ok(());
                }
                // Something has that name: link under a temp name, then rename over it.
                Err(rustix::io::Errno::EXIST) => {
                    let temp = random_temp_name();
                    link_unnamed(&self.file, &self.dir, &temp)?;
                    self.name = Some(temp);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let temp = self.name.as_deref().expect("named by now");
        rustix::fs::renameat(&*self.dir, temp, &*self.dir, name)?;
        self.persisted = true;
        Ok(())
    }
}

/// A fresh [`TEMP_PREFIX`] name. Random enough: `RandomState` is keyed afresh each time;
/// `O_EXCL` settles clashes.
#[cfg(unix)]
fn random_temp_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{TEMP_PREFIX}{:016x}", h.finish())
}

/// An unnamed file is linked through `/proc/self/fd` (no privilege needed): only where that
/// is mounted.
#[cfg(unix)]
fn can_link_unnamed() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| cfg!(target_os = "linux") && Path::new("/proc/self/fd").is_dir())
}

/// Links the open `file` (unnamed, or named anywhere on the same file system) as `name` in
/// `dir`. Errors: `EEXIST` when `name` is taken, `EXDEV` across file systems, `ENOENT`
/// without `/proc`.
#[cfg(unix)]
pub(crate) fn link_unnamed(
    file: &std::fs::File,
    dir: &std::os::fd::OwnedFd,
    name: &str,
) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        from.as_str(),
        dir,
        name,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
}

#[cfg(unix)]
impl Drop for TempAt {
    fn drop(&mut self) {
        if let (false, Some(name)) = (self.persisted, &self.name) {
            let _ = rustix::fs::unlinkat(&*self.dir, name.as_str(), rustix::fs::AtFlags::empty());
        }
    }
}

/// Writes `name` in `dir` via temp file + rename (+ fsync of file and directory when `sync`).
/// Returns the identity of the file written.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8], sync: bool) -> Result<FileId> {
    use std::io::Write;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{}{name}.", crate::fsutil::TEMP_PREFIX))
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating temp file in", dir, e))?;
    tmp.write_all(data)
        .map_err(|e| Error::io("writing", tmp.path(), e))?;
    if sync {
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("syncing", tmp.path(), e))?;
    }
    // tempfile creates 0600; layout files are readable like any file the user writes (set
    // through the handle: the name could be replaced meanwhile).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    let target = dir.join(name);
    let id = file_id(
        &tmp.as_file()
            .metadata()
            .map_err(|e| Error::io("writing", tmp.path(), e))?,
    );
    tmp.persist(&target)
        .map_err(|e| Error::io("replacing", &target, e.error))?;
    if sync {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("syncing", dir, e))?;
    }
    Ok(id)
}

// The user's private cache directory (the download, digest and location caches).

/// `$XDG_CACHE_HOME/oci-packer/SUB` (else `~/.cache/oci-packer/SUB`), created 0700.
///
/// `None` — no cache — when there is no home, or when `oci-packer` or `SUB` there is not a
/// directory of this user that no one else may write to (another user could plant entries).
pub(crate) fn private_dir(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let top = base.join("oci-packer");
    let dir = top.join(sub);
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).ok()?;
    for d in [&top, &dir] {
        if !is_private(d) {
            tracing::warn!(dir = %d.display(), "not a private directory of this user; caching nothing there");
            return None;
        }
    }
    Some(dir)
}

/// Creates `dir` and its missing parents with mode 0700; false when it cannot.
pub(crate) fn make_private_dir(dir: &Path) -> bool {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).is_ok()
}

/// Replaces the cache entry `path` with `data` (a temp file beside it, then a rename, so no
/// reader sees half of it). Best effort: an entry that cannot be written is a miss later.
pub(crate) fn write_entry(path: &Path, data: &[u8]) {
    use std::io::Write;
    let Some(dir) = path.parent() else { return };
    if let Ok(mut tmp) = temp_file(dir) {
        if tmp.write_all(data).is_ok() {
            let _ = tmp.persist(path);
        }
    }
}

/// True when this user owns what `meta` describes.
#[cfg(unix)]
pub(crate) fn owned_by_me(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.uid() == rustix::process::geteuid().as_raw()
}

#[cfg(not(unix))]
pub(crate) fn owned_by_me(_meta: &std::fs::Metadata) -> bool {
    false
}

/// A directory (not a symlink to one) owned by this user and writable by no one else.
#[cfg(unix)]
fn is_private(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
    })
}

#[cfg(not(unix))]
fn is_private(_dir: &Path) -> bool {
    false
}

/// Opens a cache entry for reading: never through a symlink, only a regular file of this
/// user. `None` for anything else (a miss).
#[cfg(unix)]
pub(crate) fn open_entry(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ok()?;
    let m = f.metadata().ok()?;
    (m.is_file() && m.uid() == rustix::process::geteuid().as_raw()).then_some(f)
}

#[cfg(not(unix))]
pub(crate) fn open_entry(_path: &Path) -> Option<std::fs::File> {
    None
}

/// Reads a small cache entry (at most 64 KiB) through [`open_entry`].
pub(crate) fn read_entry(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    open_entry(path)?
        .take(64 << 10)
        .read_to_end(&mut data)
        .ok()?;
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir_fd(dir: &Path) -> Arc<std::os::fd::OwnedFd> {
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .expect("open dir");
        Arc::new(fd)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temp_files_appear_only_under_their_name_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let mut t = TempAt::new(dir_fd(d.path()), d.path()).expect("temp");
        t.file().write_all(b"blob").expect("write");
        // Unnamed on this file system: nothing in the directory until it is persisted.
        assert_eq!(names(d.path()), Vec::<String>::new());
        t.persist("abc").expect("persist");
        assert_eq!(names(d.path()), vec!["abc".to_string()]);
        assert_eq!(std::fs::read(d.path().join("abc")).expect("read"), b"blob");
        let mode = std::fs::metadata(d.path().join("abc"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn persisting_replaces_what_has_the_name_and_dropping_leaves_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("abc"), b"old and longer").expect("plant");
        let mut t = TempAt::new(dir_fd(d.path()), d.path()).expect("temp");
        t.file().write_all(b"new").expect("write");
        t.persist("abc").expect("persist");
        assert_eq!(std::fs::read(d.path().join("abc")).expect("read"), b"new");
        assert_eq!(names(d.path()), vec!["abc".to_string()]);

        let mut dropped = TempAt::new(dir_fd(d.path()), d.path()).expect("temp");
        dropped.file().write_all(b"never named").expect("write");
        drop(dropped);
        assert_eq!(names(d.path()), vec!["abc".to_string()]);
    }
}
