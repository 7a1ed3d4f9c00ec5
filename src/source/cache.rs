//! The user's private cache directory, and in it a cache of the digests of large files, keyed by what the file system says about them
//! (device, inode, size, mtime and ctime in nanoseconds), so an unchanged multi-gigabyte file
//! is not read again on every pack: the target is asked whether it has the blob instead.
//!
//! ctime changes on every write to a file and cannot be set from user space, so a file whose
//! content changed never matches its old stamp. Entries are small files in the user's own
//! cache directory (`$XDG_CACHE_HOME/oci-packer/digests`, else `~/.cache/oci-packer/digests`,
//! created 0700), never in a shared temp dir where another user could plant entries; written
//! atomically; a damaged entry is a miss. Without a home there is no cache.

use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Digests of large files by file identity.
#[derive(Debug, Clone)]
pub struct DigestCache {
    dir: Option<PathBuf>,
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

pub(crate) use crate::fsutil::{open_entry, private_dir, read_entry};

impl DigestCache {
    /// The user's cache (see the module documentation), or none (`--no-cache`).
    pub fn for_user(enabled: bool) -> DigestCache {
        DigestCache {
            dir: if enabled {
                private_dir("digests")
            } else {
                None
            },
        }
    }

    /// Another directory of the user's private cache (downloads, archives of S3 prefixes),
    /// when caching is on.
    pub fn sibling(&self, sub: &str) -> Option<PathBuf> {
        self.dir.as_ref().and_then(|_| private_dir(sub))
    }

    /// A cache in `dir` (tests).
    #[cfg(test)]
    pub fn in_dir(dir: &Path) -> DigestCache {
        DigestCache {
            dir: Some(dir.to_path_buf()),
        }
    }

    fn entry(&self, id: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(&Digest::of(id.as_bytes()).hex()[..32]))
    }

    /// The file's key: its canonical path (never `s3…`, the keys of objects).
    fn file_id(path: &Path) -> Option<String> {
        Some(path.canonicalize().ok()?.to_string_lossy().into_owned())
    }

    /// The digest recorded for `path` when the file is unchanged since.
    pub fn lookup(&self, path: &Path, meta: &std::fs::Metadata) -> Option<Digest> {
        if cfg!(not(unix)) {
            return None;
        }
        self.lookup_stamped(&Self::file_id(path)?, &stamp(meta))
    }

    /// Records the digest of `path` (best effort: a cache that cannot be written is skipped).
    pub fn store(&self, path: &Path, meta: &std::fs::Metadata, digest: &Digest) {
        if let Some(id) = Self::file_id(path) {
            self.store_stamped(&id, &stamp(meta), digest);
        }
    }

    /// The digest recorded for the content named `id` (a file's path, an object's URL) when
    /// what describes its version, `stamp` (file system times, an ETag and size), is unchanged.
    pub fn lookup_stamped(&self, id: &str, stamp: &str) -> Option<Digest> {
        let text = String::from_utf8(read_entry(&self.entry(id)?)?).ok()?;
        let (recorded, digest) = text.trim().rsplit_once(' ')?;
        (recorded == stamp.trim())
            .then(|| Digest::parse(digest).ok())
            .flatten()
    }

    /// Records the digest of `id` at version `stamp` (best effort).
    pub fn store_stamped(&self, id: &str, stamp: &str, digest: &Digest) {
        let (Some(entry), Some(dir)) = (self.entry(id), self.dir.as_ref()) else {
            return;
        };
        if !dir.is_dir() && !crate::fsutil::make_private_dir(dir) {
            return;
        }
        crate::fsutil::write_entry(&entry, format!("{} {digest}\n", stamp.trim()).as_bytes());
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn hits_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = DigestCache::in_dir(&dir.path().join("digests"));
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"one").expect("write");
        let meta = std::fs::metadata(&file).expect("meta");
        assert_eq!(cache.lookup(&file, &meta), None);
        let d = Digest::of(b"one");
        cache.store(&file, &meta, &d);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("digests"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the cache is private to its user");
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
