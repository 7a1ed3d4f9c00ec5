//! OCI image layout store (OCI Image Layout 1.0): blobs hashed while written to a temp file
//! inside the layout and renamed into place; `index.json` rewritten atomically under an
//! exclusive `index.lock`, only after every blob it names is in place.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use oci_spec::image::{Descriptor, ImageIndex};

use super::{verify, Blob, Location, PushOutcome, Target};
use crate::digest::{copy_hashing, copy_hashing_pipelined, Digest, PIPELINE_THRESHOLD};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::blocking;
use crate::fsutil::{FileRef, TempAt};
use crate::json::canonical_json;
use crate::mediatype;
use crate::progress::{Progress, ProgressEvent};
use crate::reference::LayoutSelector;

/// The annotation that names an entry of `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The file that marks a directory as an OCI image layout.
pub const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const LOCK_FILE: &str = "index.lock";
/// The operation lock of the GC-safe protocol: every writer holds it shared from its first
/// look at an existing layout (its first write to a new one) to its end; a collector takes it exclusively, so it never sees a writer's blobs
/// before the tag that names them. (Not a temp file, though it shares their prefix's start.)
pub(crate) const GC_LOCK_FILE: &str = ".oci-packer.lock";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

mod unpacked;
pub(crate) use unpacked::mount_table;
pub use unpacked::UNPACKED_DIR;

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Absolute, for I/O (temp files get absolute names; adoption compares parents).
    dir: PathBuf,
    /// As the user wrote it, for messages.
    shown: PathBuf,
    fsync: bool,
    /// Set once the skeleton exists, so per-blob writes skip `ensure`.
    ensured: Arc<OnceLock<()>>,
    /// This writer's shared hold of [`GC_LOCK_FILE`], taken on the first write and released
    /// when the last clone of this handle goes.
    writing: Arc<OnceLock<File>>,
    /// Set when staging created the directory for its spool: removed again when the last
    /// clone goes, if no layout was written into it (a failed pack leaves nothing).
    created: Arc<OnceLock<CreatedDir>>,
    /// `blobs/sha256`, opened once (never through a symlink): every blob is read, checked
    /// and written relative to it, so a directory swapped for a link meanwhile cannot send
    /// reads or writes elsewhere.
    blobs: Arc<OnceLock<Arc<OwnedFd>>>,
    /// The layout's directory as this handle made or found it when it first wrote: a
    /// failed pack takes back only this directory, by this descriptor (see `abandon`).
    root: Arc<OnceLock<OwnedFd>>,
    /// What this handle made in a new layout, by identity: all a failed pack takes back.
    made: Arc<std::sync::Mutex<Made>>,
    /// No layout was there when this handle opened the directory for writing: every blob
    /// it is asked about is written without a look first (another writer's copy of the
    /// same blob is simply replaced by the same verified bytes).
    fresh: bool,
}

/// The files a handle writing a new layout made there, each with the identity it had when
/// made: a failed pack removes a file only while it is still the one it made.
#[derive(Debug, Default)]
struct Made {
    /// Blob files of `blobs/sha256`, by hex digest.
    blobs: Vec<(String, crate::fsutil::FileId)>,
    /// `oci-layout` and `index.json`, when this handle wrote them.
    files: Vec<(&'static str, crate::fsutil::FileId)>,
}

/// A directory this handle created, with its identity; removed on drop when it is still
/// that directory, and empty.
#[derive(Debug)]
struct CreatedDir(PathBuf, crate::fsutil::FileId);

impl Drop for CreatedDir {
    fn drop(&mut self) {
        let same =
            fs::symlink_metadata(&self.0).is_ok_and(|m| crate::fsutil::file_id(&m) == self.1);
        if same && !self.0.join(LAYOUT_FILE).exists() {
            // Only when empty: another run's files are never removed here.
            let _ = fs::remove_dir(&self.0);
        }
    }
}

/// A file-system error while writing the layout: an I/O error, even when the OS says "not
/// found" (a parent that cannot hold a directory), which for a source means it is missing.
fn target_io(what: &str, path: &Path, e: io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what} {}: {e}", path.display())).with_path(path)
}

fn layout_err(dir: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("layout {}: {msg}", dir.display()),
    )
    .with_path(dir)
}

impl Layout {
    fn new(dir: &Path, fsync: bool) -> Layout {
        Layout {
            dir: crate::fsutil::absolute(dir),
            shown: dir.to_path_buf(),
            fsync,
            ensured: Arc::default(),
            writing: Arc::default(),
            created: Arc::default(),
            blobs: Arc::default(),
            root: Arc::default(),
            made: Arc::default(),
            fresh: false,
        }
    }

    /// Opens a layout for writing: an existing one is checked (its `oci-layout` and
    /// `index.json` must be valid, else nothing is touched); a missing one is created on the
    /// first write. `fsync` makes blobs durable before `index.json` names them.
    pub fn open(dir: &Path, fsync: bool) -> Result<Layout> {
        let mut layout = Layout::new(dir, fsync);
        let mut is_layout = dir.join(LAYOUT_FILE).exists();
        if !is_layout {
            if dir.is_file() {
                return Err(layout_err(dir, "is a file, not a directory"));
            }
            if let (Ok(target), Err(e)) = (fs::read_link(dir), fs::metadata(dir)) {
                let what = match e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    true => "a loop of symlinks; replace it with a directory".to_string(),
                    false => format!(
                        "a symlink to {}, which does not exist; create that directory or \
                         remove the link",
                        target.display()
                    ),
                };
                return Err(layout_err(dir, format!("is {what}")));
            }
            // A temp `oci-layout` means another process is creating this layout right now.
            // So does our lock or a temp file of ours.
            let foreign = fs::read_dir(dir).is_ok_and(|d| {
                d.flatten()
                    .any(|e| !e.file_name().to_string_lossy().starts_with(".oci-packer"))
            });
            // Another writer creates `oci-layout` before anything else: one that did since
            // the first look made this a layout.
            is_layout = foreign && dir.join(LAYOUT_FILE).exists();
            if foreign && !is_layout {
                return Err(layout_err(
                    dir,
                    "exists but is not an OCI image layout (no oci-layout file); use a new or empty directory",
                ));
            }
        }
        layout.fresh = !is_layout;
        if is_layout {
            layout.check()?;
            // A writer holds the operation lock from the start — before it decides which
            // blobs are already there — so a collection never removes a blob it skipped.
            // One taken back meanwhile by a failed pack that created it is new again.
            if !layout.hold_for_writing()? {
                layout.fresh = true;
            }
        }
        Ok(layout)
    }

    /// Opens a layout that must exist already (reading).
    pub fn open_existing(dir: &Path) -> Result<Layout> {
        if !dir.join(LAYOUT_FILE).exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "layout {}: no OCI image layout there (no oci-layout file)",
                    dir.display()
                ),
            )
            .with_path(dir));
        }
        let layout = Layout::new(dir, false);
        layout.check()?;
        Ok(layout)
    }

    fn check(&self) -> Result<()> {
        let text = read_regular(&self.dir.join(LAYOUT_FILE), 64 << 10)?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| layout_err(&self.shown, format!("oci-layout is not valid JSON ({e})")))?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(layout_err(
                &self.shown,
                "unsupported imageLayoutVersion in oci-layout (expected 1.0.0)",
            ));
        }
        self.read_index().map(|_| ())
    }

    /// Reads `index.json` (an empty index when it does not exist yet).
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.dir.join(INDEX_FILE);
        if !path.exists() {
            return Ok(empty_index());
        }
        let text = read_regular(&path, MAX_INDEX_BYTES)?;
        crate::json::from_slice(&text).map_err(|e| {
            layout_err(
                &self.shown,
                format!("index.json is not a valid OCI index ({e}); fix or remove it — it was left unchanged"),
            )
        })
    }

    /// The entries of `index.json`.
    pub fn entries(&self) -> Result<Vec<Descriptor>> {
        Ok(self.read_index()?.manifests().clone())
    }

    /// Creates the layout's skeleton if it is missing (idempotent, safe across processes).
    fn ensure(&self) -> Result<()> {
        if self.ensured.get().is_some() {
            return Ok(());
        }
        // `oci-layout` first: another process opening the directory meanwhile must see
        // either nothing of ours or a layout (see `open`).
        // A new layout that a failed pack took back while this waited is made again.
        let mut held = false;
        for _ in 0..4 {
            fs::create_dir_all(&self.dir).map_err(|e| target_io("creating", &self.dir, e))?;
            held = self.hold_for_writing()?;
            if held {
                break;
            }
        }
        if !held {
            return Err(self.taken_back());
        }
        if let Ok(root) = File::open(&self.dir) {
            let _ = self.root.set(root.into());
        }
        if !self.dir.join(LAYOUT_FILE).exists() {
            let id = crate::fsutil::write_atomic(&self.dir, LAYOUT_FILE, LAYOUT_JSON, true)?;
            self.made_file(LAYOUT_FILE, id);
        }
        let blobs = self.blobs_fd(true)?.expect("created");
        // Leftovers of runs that were killed (their own temp files are removed on every
        // error path): whoever writes next removes those older than an hour (in the blobs
        // directory through its descriptor, like every other access there).
        crate::fsutil::sweep_stale_temps(&self.dir, crate::fsutil::STALE_TEMP_AGE);
        crate::fsutil::sweep_stale_temp_files_at(&blobs, crate::fsutil::STALE_TEMP_AGE);
        if !self.dir.join(INDEX_FILE).exists() {
            let _lock = self.lock()?;
            if !self.dir.join(INDEX_FILE).exists() {
                let id = crate::fsutil::write_atomic(
                    &self.dir,
                    INDEX_FILE,
                    &canonical_json(&empty_index())?,
                    true,
                )?;
                self.made_file(INDEX_FILE, id);
            }
        }
        let _ = self.ensured.set(());
        Ok(())
    }

    /// Finds an entry by name or digest.
    pub fn resolve_selector(&self, selector: &LayoutSelector) -> Result<Descriptor> {
        let entries = self.entries()?;
        let found = match selector {
            LayoutSelector::Name(n) => entries
                .into_iter()
                .find(|d| ref_name(d) == Some(n.as_str())),
            LayoutSelector::Digest(dg) | LayoutSelector::NameAndDigest(_, dg) => entries
                .into_iter()
                .find(|d| d.digest().to_string() == dg.as_str())
                .or_else(|| self.describe_blob(dg)),
        };
        found.ok_or_else(|| {
            let what = match selector {
                LayoutSelector::Name(n) => format!("no entry named \"{n}\""),
                LayoutSelector::Digest(d) | LayoutSelector::NameAndDigest(_, d) => {
                    format!("no manifest {d}")
                }
            };
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "layout {}: {what} (see `oci-packer list oci://{}`)",
                    self.shown.display(),
                    self.shown.display()
                ),
            )
            .with_path(&self.shown)
        })
    }

    /// A descriptor for a manifest blob that is not in `index.json` (child of an index):
    /// only a regular file under the manifest cap whose content has that digest.
    fn describe_blob(&self, digest: &Digest) -> Option<Descriptor> {
        let data = self.small_blob(digest.hex())?;
        if Digest::of(&data) != *digest {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
        let mt = v.get("mediaType")?.as_str()?;
        mediatype::is_manifest(mt)
            .then(|| Descriptor::new(mt.into(), data.len() as u64, digest.to_oci()))
    }

    /// Names `desc` as `name` in `index.json`, replacing an older entry of that name.
    ///
    /// Refuses unless the whole graph is in the layout, so a tag never points at missing
    /// content.
    fn tag_blocking(&self, desc: &Descriptor, name: &str) -> Result<()> {
        // The operation lock first: no collection may remove what is checked below before
        // the tag names it.
        self.ensure()?;
        self.check_graph(desc).map_err(|e| {
            e.context(format!(
                "refusing to tag {name} in layout {}",
                self.shown.display()
            ))
        })?;
        self.ensure()?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut entry = desc.clone();
        let mut ann = entry.annotations().clone().unwrap_or_default();
        ann.insert(REF_NAME.to_string(), name.to_string());
        entry.set_annotations(Some(ann));
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(name))
            .cloned()
            .collect();
        manifests.push(entry);
        manifests.sort_by(|a, b| {
            (ref_name(a), a.digest().to_string()).cmp(&(ref_name(b), b.digest().to_string()))
        });
        index.set_manifests(manifests);
        crate::fsutil::write_atomic(&self.dir, INDEX_FILE, &canonical_json(&index)?, true)?;
        Ok(())
    }

    /// Takes back a new layout this handle created after the operation writing it failed:
    /// when no other writer holds it and it names nothing, the files this handle made there
    /// ([`Made`], each only while its name still holds that file) go, then the emptied
    /// directories, the lock files, and (once the last clone of a handle that created it
    /// goes) the directory — so a failed pack into a new layout leaves nothing. Anything
    /// else there (another writer's blob, unpacked layers, a file put there) keeps the
    /// layout, a valid one naming nothing, for `gc`; an existing layout is never touched.
    /// Best effort: the operation's own error is what is reported.
    ///
    /// Only the directory this handle wrote into is touched, by the descriptor it opened
    /// then: when the path leads elsewhere now (moved away, a symlink put in its place),
    /// nothing is removed.
    fn abandon(&self) {
        use rustix::fs::{statat, unlinkat, AtFlags};
        let Some(held) = self.writing.get().filter(|_| self.fresh) else {
            return;
        };
        let Some(root) = self.root.get() else { return };
        use crate::fsutil::stat_id;
        let same = File::open(&self.dir)
            .ok()
            .and_then(|now| rustix::fs::fstat(now).ok())
            .zip(rustix::fs::fstat(root).ok())
            .is_some_and(|(now, was)| stat_id(&now) == stat_id(&was));
        // Shared to exclusive: only when no other writer holds the layout.
        if !same || !fs4::fs_std::FileExt::try_lock_exclusive(held).unwrap_or(false) {
            return;
        }
        let Ok(index_lock) = self.lock() else { return };
        if !self.read_index().is_ok_and(|i| i.manifests().is_empty()) {
            return;
        }
        // Whether `name` in `dir` is still the file with the identity `id`.
        let is = |dir: &OwnedFd, name: &str, id: crate::fsutil::FileId| {
            statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| stat_id(&st) == id)
        };
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|p| p.into_inner()));
        if let Ok(Some(blobs)) = self.blobs_fd(false) {
            for (hex, id) in &made.blobs {
                if is(&blobs, hex, *id) {
                    let _ = unlinkat(&*blobs, hex.as_str(), AtFlags::empty());
                }
            }
        }
        // Anything left that this handle did not make (another writer's blob, unpacked
        // layers, a file put there) keeps the layout: a valid one, naming nothing.
        let gone = |parent: &OwnedFd, name: &str| {
            matches!(
                unlinkat(parent, name, AtFlags::REMOVEDIR),
                Ok(()) | Err(rustix::io::Errno::NOENT)
            )
        };
        let blobs_dir = crate::fsutil::open_dir_at(root, "blobs", false);
        let emptied = match &blobs_dir {
            Ok(Some(dir)) => gone(dir, "sha256") && gone(root, "blobs"),
            Ok(None) => true,
            Err(_) => false,
        };
        let unpacked = UNPACKED_DIR.split('/').next().unwrap_or(UNPACKED_DIR);
        let skeleton_ours = [LAYOUT_FILE, INDEX_FILE].iter().all(|name| {
            made.files
                .iter()
                .any(|(n, id)| n == name && is(root, name, *id))
        });
        let locks = [(LOCK_FILE, &index_lock), (GC_LOCK_FILE, held)].map(|(name, file)| {
            let id = file.metadata().map(|m| crate::fsutil::file_id(&m)).ok();
            (name, id.is_some_and(|id| is(root, name, id)))
        });
        if !emptied || !gone(root, unpacked) || !skeleton_ours || locks.iter().any(|l| !l.1) {
            return;
        }
        let _ = unlinkat(root, INDEX_FILE, AtFlags::empty());
        let _ = unlinkat(root, LOCK_FILE, AtFlags::empty());
        // Last the layout's mark, then the lock (see `lock_operation`).
        let _ = unlinkat(root, LAYOUT_FILE, AtFlags::empty());
        let _ = unlinkat(root, GC_LOCK_FILE, AtFlags::empty());
    }

    /// Records a file this handle made in a new layout (see [`Made`]).
    fn made_file(&self, name: &'static str, id: crate::fsutil::FileId) {
        if self.fresh {
            let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
            made.files.push((name, id));
        }
    }

    /// Records a blob this handle made in a new layout (see [`Made`]).
    fn made_blob(&self, hex: &str, file: &File) {
        if self.fresh {
            if let Ok(meta) = file.metadata() {
                let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
                made.blobs
                    .push((hex.to_string(), crate::fsutil::file_id(&meta)));
            }
        }
    }

    /// Takes this writer's shared hold of the operation lock (once; kept until the handle
    /// goes), waiting while a collector holds it exclusively.
    /// `false` when the layout was taken back while this waited (see [`Layout::abandon`]):
    /// nothing is held then, and the directory holds no layout.
    fn hold_for_writing(&self) -> Result<bool> {
        if self.writing.get().is_some() {
            return Ok(true);
        }
        let Some(f) = self.lock_operation(false)? else {
            return Ok(false);
        };
        let _ = self.writing.set(f);
        Ok(true)
    }

    /// The error of an operation whose layout was taken back while it waited for it.
    fn taken_back(&self) -> Error {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "layout {}: was removed while this operation waited for it (a pack that \
                 created it failed and took it back); run the operation again",
                self.shown.display()
            ),
        )
        .with_path(&self.shown)
    }

    /// Takes the operation lock ([`GC_LOCK_FILE`]): shared for a writer, exclusive for a
    /// collector. The lock file is removed only with a new layout that a failed pack takes
    /// back (see [`Layout::abandon`]); whoever waited on the removed file finds out here, so
    /// every holder holds the one file that is at the name: one replaced meanwhile is
    /// locked again; `None` when it is gone, with the layout.
    fn lock_operation(&self, exclusive: bool) -> Result<Option<File>> {
        let path = self.dir.join(GC_LOCK_FILE);
        for _ in 0..16 {
            if !self.dir.is_dir() {
                return Ok(None);
            }
            let f = self.open_lock_file(GC_LOCK_FILE)?;
            match exclusive {
                true => fs4::fs_std::FileExt::lock_exclusive(&f),
                false => fs4::fs_std::FileExt::lock_shared(&f),
            }
            .map_err(|e| Error::io("locking", &path, e))?;
            let held = f.metadata().map_err(|e| Error::io("locking", &path, e))?;
            match fs::symlink_metadata(&path) {
                Ok(m) if crate::fsutil::file_id(&m) == crate::fsutil::file_id(&held) => {
                    return Ok(Some(f))
                }
                Ok(_) => continue,
                Err(_) => return Ok(None),
            }
        }
        Err(self.taken_back())
    }

    /// Opens (creating) a lock file of the layout, never through a symlink: a planted link
    /// would make us create or lock a file outside the layout.
    fn open_lock_file(&self, name: &str) -> Result<File> {
        let path = self.dir.join(name);
        let mut options = fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Never follow a link, never wait on a FIFO planted there.
            options.custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            );
        }
        let not_regular = || {
            layout_err(
                &self.shown,
                format!("{name} is not a regular file; a layout's lock files must be (remove it)"),
            )
        };
        let file = options.open(&path).map_err(|e| {
            match path.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() => layout_err(
                    &self.shown,
                    format!("{name} is a symlink; a layout's lock files must be regular files (remove the link)"),
                ),
                // A FIFO without a reader (ENXIO), a socket, a device.
                Ok(m) if !m.is_file() => not_regular(),
                _ => Error::io("opening", &path, e),
            }
        })?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(not_regular());
        }
        Ok(file)
    }

    /// Every node of the graph under `root` is a blob of this layout (regular file, declared
    /// size; manifests verified): what a tag may name.
    fn check_graph(&self, root: &Descriptor) -> Result<()> {
        use crate::graph::{check_path, child_refs, ChildRef};
        let from = self.name();
        let root = ChildRef {
            media_type: root.media_type().to_string(),
            digest: root.digest().to_string(),
            size: root.size(),
        };
        let mut seen = std::collections::HashSet::new();
        // Each entry: a node and the digests above it (one shared list per parent).
        let mut todo: Vec<(ChildRef, Arc<Vec<String>>)> = vec![(root, Arc::default())];
        while let Some((d, path)) = todo.pop() {
            check_path(&path, &d.digest, || from.clone())?;
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            let desc = Descriptor::new(
                d.media_type.as_str().into(),
                d.size,
                Digest::parse(&d.digest)?.to_oci(),
            );
            if !mediatype::is_manifest(&d.media_type) {
                // A stat is enough for a layer: a regular file of the declared size.
                if self.stat_blob(&desc).is_none() {
                    self.open_blob(&desc)?;
                }
                continue;
            }
            let (mut f, _) = self.open_blob(&desc)?;
            let data = verify::read_capped(&mut f, &desc, &from)?;
            let mut below = path.as_ref().clone();
            below.push(d.digest);
            let below = Arc::new(below);
            todo.extend(
                child_refs(&d.media_type, &data)?
                    .into_iter()
                    .map(|c| (c, below.clone())),
            );
        }
        Ok(())
    }

    /// The exclusive lock of `index.json` updates.
    fn lock(&self) -> Result<File> {
        let f = self.open_lock_file(LOCK_FILE)?;
        fs4::fs_std::FileExt::lock_exclusive(&f)
            .map_err(|e| Error::io("locking", &self.dir.join(LOCK_FILE), e))?;
        Ok(f)
    }

    fn write_blob(
        &self,
        desc: &Descriptor,
        blob: Blob,
        progress: &Progress,
    ) -> Result<PushOutcome> {
        // No look for the blob first: the copy engine asked `exists` just before. One that
        // appeared meanwhile is replaced by the same bytes, verified.
        let digest = desc.digest().to_string();
        if !digest.starts_with("sha256:") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("cannot verify {digest}: only sha256 blobs can be written"),
            ));
        }
        self.ensure()?;
        let blobs = self.blobs_fd(true)?.expect("created");
        let hex = desc.digest().digest().to_string();
        let mut report = |n: u64| {
            if !progress.is_silent() {
                progress.emit(ProgressEvent::Advanced {
                    digest: digest.clone(),
                    bytes: n,
                });
            }
        };
        // Staging wrote and hashed this file as it copied it: adopt it, no copy.
        if let Blob::Spooled(file, held) = &blob {
            if self.adopt(file, held, desc, &blobs, &hex)? {
                report(desc.size());
                return Ok(PushOutcome::Stored);
            }
        }
        let mut tmp = TempAt::new(blobs.clone(), &self.blobs_path())?;
        let downloading = matches!(blob, Blob::Stream(_));
        let source = match &blob {
            Blob::File(f) | Blob::Spooled(f, _) => Some(f.path.clone()),
            _ => None,
        };
        let from = match (&source, &blob) {
            (Some(path), _) => path.display().to_string(),
            (None, Blob::Bytes(_)) => "memory".to_string(),
            (None, _) => "the download".to_string(),
        };
        let big = desc.size() >= PIPELINE_THRESHOLD;
        let out = tmp.file();
        let copied = match blob {
            Blob::Bytes(b) => copy_hashing(&mut &b[..], Some(out), &mut report),
            blob @ (Blob::File(_) | Blob::Spooled(..)) => {
                // At most one byte more than declared: a source that is longer is refused
                // below without filling the disk.
                let file = blob.into_file_ref().expect("a file");
                let (f, _) = file.open().map_err(|e| {
                    verify::from_read_error(e, |e| Error::io("reading", &file.path, e))
                })?;
                let mut f = f.take(desc.size() + 1);
                if big {
                    copy_hashing_pipelined(&mut f, out, &mut report)
                } else {
                    copy_hashing(&mut f, Some(out), &mut report)
                }
            }
            // We run on a blocking thread of the runtime: bridge the async download.
            Blob::Stream(r) => {
                let mut r = tokio_util::io::SyncIoBridge::new(r).take(desc.size() + 1);
                copy_hashing_pipelined(&mut r, out, &mut report)
            }
        };
        let (got, size) = copied.map_err(|e| {
            verify::from_read_error(e, |e| {
                // A broken download is a network failure (the copy engine retries those).
                if downloading {
                    Error::new(ErrorKind::Network, format!("downloading {digest}: {e}"))
                } else {
                    Error::io(&format!("writing blob ({from}) to"), &tmp.path(), e)
                }
            })
        })?;
        verify::check(desc, &from, &got, size).map_err(|e| match &source {
            // A file staged (hashed) earlier and edited in place since.
            Some(path) => crate::fsutil::rehashed_differently(path, size, &got, desc.digest()),
            None => e,
        })?;
        self.keep(tmp, &hex, &blobs)?;
        Ok(PushOutcome::Stored)
    }

    /// Gives the verified temp file `tmp` its digest name `hex` in the blobs directory
    /// (durably, when asked) and records it as made by this handle.
    fn keep(&self, mut tmp: TempAt, hex: &str, blobs: &OwnedFd) -> Result<()> {
        if self.fsync {
            tmp.file()
                .sync_all()
                .map_err(|e| Error::io("syncing", &tmp.path(), e))?;
        }
        self.made_blob(hex, tmp.file());
        tmp.persist(hex)
            .map_err(|e| Error::io("storing blob as", &self.blobs_path().join(hex), e))?;
        self.sync_blobs(blobs)
    }

    /// Stores what `read` gives (a small source file, read once) as a new blob, hashing it
    /// as it is written, when this handle writes without looking first — a layout this
    /// operation creates. The digest and size, or `None` (before anything is read) for an
    /// existing layout, where staging must leave everything unchanged until the copy.
    fn store_hashing(&self, read: &mut dyn Read, from: &Path) -> Result<Option<(Digest, u64)>> {
        if !self.fresh {
            return Ok(None);
        }
        self.ensure()?;
        let blobs = self.blobs_fd(true)?.expect("created");
        let mut tmp = TempAt::new(blobs.clone(), &self.blobs_path())?;
        let (digest, size) = copy_hashing(read, Some(tmp.file()), &mut |_| {}).map_err(|e| {
            verify::from_read_error(e, |e| {
                Error::io(
                    &format!("writing blob ({}) to", from.display()),
                    &tmp.path(),
                    e,
                )
            })
        })?;
        self.keep(tmp, digest.hex(), &blobs)?;
        Ok(Some((digest, size)))
    }

    /// Makes a spooled file (written and hashed by staging) the blob `hex` without copying
    /// it. Staging kept the file open (`held`): it is made readable and synced through that
    /// descriptor and linked into the blobs directory from it (`linkat` of
    /// `/proc/self/fd/N`), so whatever was put under its name meanwhile is never what lands
    /// under the digest, and nothing outside the layout is touched. `Ok(false)` when it
    /// cannot be linked so (another file system, no /proc, the name taken): the caller copies
    /// it, verified.
    fn adopt(
        &self,
        file: &FileRef,
        held: &File,
        desc: &Descriptor,
        blobs: &OwnedFd,
        hex: &str,
    ) -> Result<bool> {
        use std::os::fd::AsFd;
        let path = &file.path;
        let meta = held.metadata().map_err(|e| Error::io("reading", path, e))?;
        if meta.len() != desc.size() {
            return Ok(false);
        }
        let _ = rustix::fs::fchmod(held.as_fd(), rustix::fs::Mode::from_raw_mode(0o644));
        if self.fsync {
            held.sync_all().map_err(|e| Error::io("syncing", path, e))?;
        }
        match crate::fsutil::link_unnamed(held, blobs, hex) {
            Ok(()) => self.made_blob(hex, held),
            // Written meanwhile (by another writer): that one is as good.
            Err(rustix::io::Errno::EXIST) if self.stat_blob(desc).is_some() => return Ok(true),
            Err(_) => return Ok(false),
        }
        self.sync_blobs(blobs)?;
        Ok(true)
    }

    /// Makes the blobs directory's new entries durable, when asked to.
    fn sync_blobs(&self, blobs: &OwnedFd) -> Result<()> {
        if self.fsync {
            rustix::fs::fsync(blobs)
                .map_err(|e| Error::io("syncing", &self.blobs_path(), e.into()))?;
        }
        Ok(())
    }

    /// `blobs/sha256` (for messages and sweeping).
    fn blobs_path(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    /// The open `blobs/sha256` (`create`: made when missing; otherwise `None` when it does
    /// not exist). It and `blobs` must be real directories: a planted symlink would send
    /// every blob below it elsewhere.
    fn blobs_fd(&self, create: bool) -> Result<Option<Arc<OwnedFd>>> {
        if let Some(fd) = self.blobs.get() {
            return Ok(Some(fd.clone()));
        }
        let open = |parent: std::os::fd::BorrowedFd<'_>, name: &str, shown: &Path| {
            crate::fsutil::open_dir_at(parent, name, create).map_err(|e| {
                match rustix::io::Errno::from_io_error(&e) {
                    Some(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => layout_err(
                        &self.shown,
                        format!(
                            "{} is not a real directory (a symlink?); a layout's blob \
                             directories must be directories (replace the link)",
                            shown.display()
                        ),
                    ),
                    _ => Error::io("opening", shown, e),
                }
            })
        };
        use std::os::fd::AsFd;
        let root = File::open(&self.dir).map_err(|e| Error::io("opening", &self.dir, e))?;
        let Some(blobs) = open(root.as_fd(), "blobs", &self.dir.join("blobs"))? else {
            return Ok(None);
        };
        let Some(sha) = open(blobs.as_fd(), "sha256", &self.blobs_path())? else {
            return Ok(None);
        };
        let fd = Arc::new(sha);
        Ok(Some(self.blobs.get_or_init(|| fd).clone()))
    }

    /// The blob file `hex`, opened relative to the blobs directory (never through a
    /// symlink, never waiting on a FIFO).
    fn open_blob_at(&self, hex: &str) -> io::Result<File> {
        match self.blobs_fd(false) {
            Ok(Some(fd)) => crate::fsutil::open_file_at(&*fd, hex),
            Ok(None) => Err(io::ErrorKind::NotFound.into()),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// The blob of `desc`, checked (a regular file of the declared size; see
    /// [`verify::blob_file`]), with the file it is for readers that open it again.
    fn open_blob(&self, desc: &Descriptor) -> Result<(File, FileRef)> {
        let hex = desc.digest().digest();
        let mut file = FileRef::new(self.blobs_path().join(hex), None);
        let f = verify::blob_file(self.open_blob_at(hex), &file, desc, &self.name())?;
        let meta = f
            .metadata()
            .map_err(|e| Error::io("reading", &file.path, e))?;
        file.id = Some(crate::fsutil::file_id(&meta));
        Ok((f, file))
    }

    /// The blob of `desc` when it is there as a regular file of the declared size (a
    /// stat, relative to the blobs directory).
    fn stat_blob(&self, desc: &Descriptor) -> Option<()> {
        let fd = self.blobs_fd(false).ok()??;
        let st = rustix::fs::statat(
            &*fd,
            desc.digest().digest(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .ok()?;
        let regular =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        (regular && st.st_size as u64 == desc.size()).then_some(())
    }

    /// Where staging may write blobs it hashes (see [`Target::spool_dir`]): the layout's
    /// own directory (for a new layout created empty, and removed again if no layout is
    /// written into it), so that a pack that fails leaves nothing behind, a killed one
    /// leaves its temp files where the next writer sweeps them, and a rename still adopts
    /// the file.
    fn spool_path(&self) -> Option<PathBuf> {
        if self.dir.join(LAYOUT_FILE).exists() {
            return Some(self.dir.clone());
        }
        let existed = self.dir.is_dir();
        fs::create_dir_all(&self.dir).ok()?;
        // Made here, so never a symlink: one found now was put in its place.
        if let (false, Ok(m)) = (existed, fs::symlink_metadata(&self.dir)) {
            if m.is_dir() {
                let id = crate::fsutil::file_id(&m);
                let _ = self.created.set(CreatedDir(self.dir.clone(), id));
            }
        }
        Some(self.dir.clone())
    }
}

/// `index.json` holds one descriptor per tag, so it may be far larger than a manifest; still,
/// a layout file is never read without a bound.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Reads a layout file that must be a regular file (not a symlink) of at most `cap` bytes.
fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = crate::fsutil::open_file_at(rustix::fs::CWD, &path.to_string_lossy()).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return Error::new(
                ErrorKind::InvalidReference,
                format!(
                    "{} is a symlink; a layout's files must be regular files (replace the link \
                     with the file)",
                    path.display()
                ),
            )
            .with_path(path);
        }
        Error::io("reading", path, e)
    })?;
    let meta = f.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidReference,
            format!(
                "{} is not a regular file; this is not a usable OCI layout",
                path.display()
            ),
        )
        .with_path(path));
    }
    let mut data = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("reading", path, e))?;
    if data.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::InvalidReference,
            format!(
                "{} is larger than {cap} bytes; refusing to read it",
                path.display()
            ),
        )
        .with_path(path));
    }
    Ok(data)
}

fn empty_index() -> ImageIndex {
    let mut i = ImageIndex::default();
    i.set_media_type(Some(oci_spec::image::MediaType::ImageIndex));
    i.set_manifests(Vec::new());
    i
}

/// The `ref.name` annotation of an entry.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

#[async_trait]
impl Target for Layout {
    fn name(&self) -> String {
        format!("oci://{}", self.shown.display())
    }

    fn location(&self) -> Location {
        Location::Layout(self.dir.clone())
    }

    fn as_dyn(&self) -> &dyn Target {
        self
    }

    async fn resolve(&self, reference: &str) -> Result<Descriptor> {
        let selector = if reference.starts_with("sha256:") {
            LayoutSelector::Digest(Digest::parse(reference)?)
        } else {
            LayoutSelector::Name(reference.to_string())
        };
        let this = self.clone();
        blocking(move || this.resolve_selector(&selector)).await
    }

    async fn tag(
        &self,
        desc: &Descriptor,
        reference: &str,
        _manifest: Option<bytes::Bytes>,
    ) -> Result<()> {
        let (this, desc, name) = (self.clone(), desc.clone(), reference.to_string());
        blocking(move || this.tag_blocking(&desc, &name)).await
    }

    async fn entries(&self) -> Result<Vec<(String, Result<Descriptor>)>> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|e| (ref_name(&e).unwrap_or_default().to_string(), Ok(e)))
            .collect())
    }

    async fn exists(&self, desc: &Descriptor) -> Result<bool> {
        if self.fresh {
            return Ok(false);
        }
        // A writer that skips a blob because it is there must keep it there until its tag:
        // from its first look at a layout, it holds the operation lock.
        if self.writing.get().is_none() && self.dir.join(LAYOUT_FILE).exists() {
            let this = self.clone();
            // A layout taken back meanwhile has no blob: the answer below is no.
            blocking(move || this.hold_for_writing()).await?;
        }
        Ok(self.stat_blob(desc).is_some())
    }

    async fn fetch(&self, desc: &Descriptor) -> Result<Blob> {
        let (this, desc) = (self.clone(), desc.clone());
        // Checked here (regular file, declared size) so that no reader of a layout blob is
        // ever pointed at a device or a FIFO, and every reader opens this very file again;
        // every reader also stops at the declared size.
        let (_, file) = blocking(move || this.open_blob(&desc)).await?;
        Ok(Blob::File(file))
    }

    async fn fetch_range(
        &self,
        desc: &Descriptor,
        start: u64,
        len: u64,
    ) -> Result<crate::store::ByteStream> {
        use futures::StreamExt;
        use std::io::Seek;
        let (this, d) = (self.clone(), desc.clone());
        let (mut file, fref) = blocking(move || this.open_blob(&d)).await?;
        file.seek(io::SeekFrom::Start(start))
            .map_err(|e| Error::io("reading", &fref.path, e))?;
        let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
        Ok(tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).boxed())
    }

    async fn push(
        &self,
        desc: &Descriptor,
        blob: Blob,
        progress: &Progress,
    ) -> Result<PushOutcome> {
        let this = self.clone();
        let desc = desc.clone();
        let progress = progress.clone();
        blocking(move || this.write_blob(&desc, blob, &progress)).await
    }

    async fn abandon(&self) {
        // Not as the operation's blocking work, which has been told to stop.
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.abandon()).await;
    }

    fn store_hashing(&self, read: &mut dyn Read, from: &Path) -> Result<Option<(Digest, u64)>> {
        Layout::store_hashing(self, read, from)
    }

    async fn spool_dir(&self) -> Result<Option<PathBuf>> {
        let this = self.clone();
        blocking(move || Ok(this.spool_path())).await
    }

    async fn unpack_layers(
        &self,
        root: &Descriptor,
        limits: crate::archive::unpack::Limits,
    ) -> Result<usize> {
        let (this, root) = (self.clone(), root.clone());
        blocking(move || this.unpack_graph(&root, limits)).await
    }
}

/// What a collection (`delete`, `gc`) removed from a layout — or, in a dry run, would remove.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    /// The names (or digests, for unnamed entries) of the entries taken out of `index.json`.
    pub untagged: Vec<String>,
    /// The blobs no remaining entry reaches, with their sizes, in digest order.
    pub removed: Vec<(String, u64)>,
    /// Temp files of earlier runs removed (older than an hour; `gc` only).
    pub temp_files: usize,
    /// Unpacked layer directories removed (of the blobs removed, or whose blob is gone).
    pub unpacked: Vec<String>,
}

impl Layout {
    /// `delete` (with `untag`) and `gc` (without): under the exclusive operation lock — so no
    /// writer is between its first blob and its tag — takes the entries `untag` names out of
    /// `index.json`, then removes every blob that no remaining entry reaches: indexes,
    /// manifests, configs, layers, subjects, and the artifacts whose `subject` is kept (their
    /// referrers) with their own graphs. With `dry_run` nothing changes; the result says what
    /// would go. `sweep_temps` also removes this program's temp files older than an hour.
    pub fn collect(
        &self,
        untag: Option<&LayoutSelector>,
        dry_run: bool,
        sweep_temps: bool,
    ) -> Result<Collected> {
        if !self.dir.join(INDEX_FILE).exists() {
            return Err(layout_err(
                &self.shown,
                "has no index.json, so nothing says which blobs are in use; refusing to collect",
            ));
        }
        // A dry run changes nothing, lock files included: it reports the layout as it is.
        let _locks = match dry_run {
            true => None,
            false => {
                let held = self.lock_operation(true)?;
                Some((held.ok_or_else(|| self.taken_back())?, self.lock()?))
            }
        };
        let mut index = self.read_index()?;
        let (gone, kept): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests()
            .iter()
            .cloned()
            .partition(|d| match untag {
                Some(LayoutSelector::Name(n)) => ref_name(d) == Some(n.as_str()),
                Some(LayoutSelector::Digest(g)) => d.digest().to_string() == g.as_str(),
                Some(LayoutSelector::NameAndDigest(n, g)) => {
                    ref_name(d) == Some(n.as_str()) && d.digest().to_string() == g.as_str()
                }
                None => false,
            });
        if let (Some(selector), true) = (untag, gone.is_empty()) {
            let what = match selector {
                LayoutSelector::Name(n) => format!("no entry named \"{n}\""),
                LayoutSelector::Digest(d) => format!("no entry with digest {d}"),
                LayoutSelector::NameAndDigest(n, d) => {
                    format!("no entry named \"{n}\" with digest {d}")
                }
            };
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "layout {}: {what} (see `oci-packer list oci://{}`)",
                    self.shown.display(),
                    self.shown.display()
                ),
            )
            .with_path(&self.shown));
        }
        let reachable = self.reachable(&kept)?;
        let mut out = Collected {
            untagged: gone
                .iter()
                .map(|d| ref_name(d).map_or_else(|| d.digest().to_string(), str::to_string))
                .collect(),
            ..Collected::default()
        };
        let Some(blobs) = self.blobs_fd(false)? else {
            return Ok(out);
        };
        for (hex, size) in blob_files(&blobs) {
            if !reachable.contains(&hex) {
                out.removed.push((format!("sha256:{hex}"), size));
            }
        }
        out.removed.sort();
        // Unpacked layers go with their blobs (and those whose blob is gone already).
        let unpacked: Vec<String> = self
            .unpacked_layers()
            .into_iter()
            .filter(|h| !reachable.contains(h))
            .collect();
        self.check_not_mounted(&unpacked.iter().map(String::as_str).collect::<Vec<_>>())?;
        out.unpacked = unpacked.iter().map(|h| format!("sha256:{h}")).collect();
        out.unpacked.sort();
        let age = crate::fsutil::STALE_TEMP_AGE;
        if dry_run {
            if sweep_temps {
                out.temp_files = crate::fsutil::stale_temps(&self.dir, age, false)
                    + crate::fsutil::stale_temp_files_at(&blobs, age, false)
                    + self.stale_unpack_temps(age, false);
            }
            return Ok(out);
        }
        // Stopped (Ctrl-C) before anything changed: nothing is.
        crate::fsutil::check_stopped().map_err(|e| {
            crate::error::from_read_error(e, |e| Error::new(ErrorKind::Cancelled, e.to_string()))
        })?;
        if untag.is_some() {
            index.set_manifests(kept);
            crate::fsutil::write_atomic(&self.dir, INDEX_FILE, &canonical_json(&index)?, true)?;
        }
        for (digest, _) in &out.removed {
            let hex = digest.trim_start_matches("sha256:");
            rustix::fs::unlinkat(&*blobs, hex, rustix::fs::AtFlags::empty())
                .map_err(|e| Error::io("removing", &self.blobs_path().join(hex), e.into()))?;
        }
        for hex in &unpacked {
            self.remove_unpacked(hex)?;
        }
        if sweep_temps {
            out.temp_files = crate::fsutil::stale_temps(&self.dir, age, true)
                + crate::fsutil::stale_temp_files_at(&blobs, age, true)
                + self.stale_unpack_temps(age, true);
        }
        self.sync_blobs(&blobs)?;
        Ok(out)
    }

    /// The hex digests of every blob the entries `roots` reach, and of the artifacts that
    /// name a reached manifest as their `subject` (referrers, found in one scan), with their
    /// graphs. A manifest reached and not readable as what its descriptor says is an error:
    /// what it points to cannot be known, so nothing is collected. Only `sha256:` digests of
    /// 64 hex digits are followed; walks obey the graph limits.
    fn reachable(&self, roots: &[Descriptor]) -> Result<std::collections::HashSet<String>> {
        use crate::graph::{check_path, child_refs};
        use std::collections::HashSet;
        let referrers = self.referrers()?;
        let mut seen = HashSet::new();
        let mut expanded = HashSet::new();
        type Node = (String, String, u64, Arc<Vec<String>>);
        let mut todo: Vec<Node> = roots
            .iter()
            .map(|d| {
                let (mt, dg) = (d.media_type().to_string(), d.digest().to_string());
                (mt, dg, d.size(), Arc::default())
            })
            .collect();
        while let Some((media_type, digest, size, path)) = todo.pop() {
            check_path(&path, &digest, || self.name())?;
            // Only digests this layout can hold: never a path out of it.
            if Digest::parse(&digest).is_err() {
                continue;
            }
            let hex = digest["sha256:".len()..].to_string();
            if seen.insert(hex.clone()) {
                for (mt, r) in referrers.get(&hex).into_iter().flatten() {
                    todo.push((mt.clone(), format!("sha256:{r}"), 0, Arc::default()));
                }
            }
            // A blob reached first as a layer may be reached again as a manifest.
            if !mediatype::is_manifest(&media_type) || !expanded.insert(hex.clone()) {
                continue;
            }
            let data = self.small_blob(&hex).filter(|d| {
                Digest::of(d).as_str() == digest && (size == 0 || d.len() as u64 == size)
            });
            let children = data.as_deref().map(|d| child_refs(&media_type, d));
            let Some(Ok(children)) = children else {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "layout {}: {digest} ({media_type}) is in use but missing or damaged, \
                         so what it points to cannot be known; refusing to collect (copy it \
                         into the layout again, or delete the entry that uses it first)",
                        self.shown.display()
                    ),
                )
                .with_path(&self.shown)
                .with_digest(digest.clone()));
            };
            let mut below = path.as_ref().clone();
            below.push(digest.clone());
            let below = Arc::new(below);
            todo.extend(
                children
                    .into_iter()
                    .map(|c| (c.media_type, c.digest, c.size, below.clone())),
            );
        }
        Ok(seen)
    }

    /// Every manifest of the layout that has a `subject`, by the hex digest of that subject:
    /// (its media type, its own hex digest). One scan of the blobs of at most 4 MiB.
    fn referrers(&self) -> Result<std::collections::HashMap<String, Vec<(String, String)>>> {
        let mut out: std::collections::HashMap<String, Vec<(String, String)>> =
            std::collections::HashMap::new();
        let Some(blobs) = self.blobs_fd(false)? else {
            return Ok(out);
        };
        for (hex, size) in blob_files(&blobs) {
            if !(2..=verify::MAX_MANIFEST_BYTES).contains(&size) {
                continue;
            }
            let Some(data) = self.small_blob(&hex) else {
                continue;
            };
            if data.first() != Some(&b'{') {
                continue;
            }
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&data) else {
                continue;
            };
            let Some(subject) = doc["subject"]["digest"].as_str() else {
                continue;
            };
            let Some(subject) = subject.strip_prefix("sha256:") else {
                continue;
            };
            // `mediaType` is only recommended in a manifest: a document with `manifests`
            // is an index, else a manifest.
            let media_type = match doc["mediaType"].as_str() {
                Some(m) => m.to_string(),
                None if doc.get("manifests").is_some() => mediatype::OCI_INDEX.to_string(),
                None => mediatype::OCI_MANIFEST.to_string(),
            };
            out.entry(subject.to_string())
                .or_default()
                .push((media_type, hex));
        }
        Ok(out)
    }

    /// A blob of at most the manifest cap, read relative to the blobs directory (`None`
    /// when missing, not a regular file, larger, or unreadable).
    fn small_blob(&self, hex: &str) -> Option<Vec<u8>> {
        let f = self.open_blob_at(hex).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut data = Vec::new();
        f.take(verify::MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut data)
            .ok()?;
        (data.len() as u64 <= verify::MAX_MANIFEST_BYTES).then_some(data)
    }
}

/// The blobs of an open `blobs/sha256`: (hex name, size) of every regular file named by 64
/// lower-case hex digits (temp files and anything else are not blobs).
fn blob_files(blobs: &OwnedFd) -> Vec<(String, u64)> {
    let Ok(dir) = rustix::fs::Dir::read_from(blobs) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            continue;
        }
        let Ok(st) = rustix::fs::statat(blobs, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile {
            out.push((name.to_string(), st.st_size as u64));
        }
    }
    out
}
