//! A cache of the digests of large files, keyed by what the file system says about them
//! (device, inode, size, mtime and ctime in nanoseconds), so an unchanged multi-gigabyte file
//! is not read again on every pack: the target is asked whether it has the blob instead.
//!
//! ctime changes on every write to a file and cannot be set from user space, so a file whose
//! content changed never matches its old stamp. Entries are small files under
//! `--tmp-dir/oci-packer-digests/`, written atomically; a damaged entry is a miss.

use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Digests of large files by file identity.
#[derive(Debug, Clone)]
pub struct DigestCache {
    dir: PathBuf,
}

#[cfg(unix)]
fn stamp(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{} {} {} {}.{} {}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

#[cfg(not(unix))]
fn stamp(_meta: &std::fs::Metadata) -> String {
    // Without ctime there is no safe stamp: never hit.
    String::from("-")
}

impl DigestCache {
    /// A cache under `tmp_dir`.
    pub fn new(tmp_dir: &Path) -> DigestCache {
        DigestCache {
            dir: tmp_dir.join("oci-packer-digests"),
        }
    }

    fn entry(&self, path: &Path) -> Option<PathBuf> {
        let canonical = path.canonicalize().ok()?;
        let key = Digest::of(canonical.to_string_lossy().as_bytes());
        Some(self.dir.join(&key.hex()[..32]))
    }

    /// The digest recorded for `path` when the file is unchanged since.
    pub fn lookup(&self, path: &Path, meta: &std::fs::Metadata) -> Option<Digest> {
        if cfg!(not(unix)) {
            return None;
        }
        let text = std::fs::read_to_string(self.entry(path)?).ok()?;
        let (recorded, digest) = text.trim().rsplit_once(' ')?;
        (recorded == stamp(meta))
            .then(|| Digest::parse(digest).ok())
            .flatten()
    }

    /// Records the digest of `path` (best effort: a cache that cannot be written is skipped).
    pub fn store(&self, path: &Path, meta: &std::fs::Metadata, digest: &Digest) {
        let Some(entry) = self.entry(path) else {
            return;
        };
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(&self.dir) {
            use std::io::Write;
            if writeln!(tmp, "{} {digest}", stamp(meta)).is_ok() {
                let _ = tmp.persist(entry);
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn hits_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = DigestCache::new(dir.path());
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"one").expect("write");
        let meta = std::fs::metadata(&file).expect("meta");
        assert_eq!(cache.lookup(&file, &meta), None);
        let d = Digest::of(b"one");
        cache.store(&file, &meta, &d);
        assert_eq!(
            cache.lookup(&file, &std::fs::metadata(&file).expect("meta")),
            Some(d)
        );
        // Same size, content rewritten: ctime moves, the entry no longer matches.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, b"two").expect("write");
        assert_eq!(
            cache.lookup(&file, &std::fs::metadata(&file).expect("meta")),
            None
        );
    }
}
