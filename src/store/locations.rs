//! Known blob locations: for each registry host, in which repositories a blob was last seen
//! (pushed, pulled or mounted there), so that a later push of the same blob to another
//! repository of that host can mount it from there instead of uploading every byte again
//! (skopeo's blob-info cache does the same).
//!
//! Entries live in the user's private cache (`$XDG_CACHE_HOME/oci-packer/locations`, else
//! `~/.cache/oci-packer/locations`, 0700, owner checked, read without following symlinks):
//! one small file per host and digest, `locations/<host key>/<digest hex>`, holding at most
//! [`MAX_REPOSITORIES`] repository names, most recent first. A file is replaced whole (temp
//! file, then rename), so two processes never see half of one; the last writer wins, which
//! loses at most a hint. Each host keeps at most [`MAX_BLOBS`] files: past that, the oldest
//! entries are removed (only entry files: 64 hex digits). A host directory that is not a
//! real directory of this user (a symlink, someone else's) is not used. Only blobs of at
//! least [`WORTH_MOUNTING`] bytes are recorded — below that, an upload costs no more than a
//! mount request.

use std::path::PathBuf;

use crate::fsutil::{private_dir, read_entry};

/// Repositories remembered per blob.
pub const MAX_REPOSITORIES: usize = 4;
/// Blobs remembered per registry host.
pub const MAX_BLOBS: usize = 20_000;
/// Smallest blob worth a mount.
pub const WORTH_MOUNTING: u64 = 1 << 20;

/// The known-locations cache of one operation (no cache: `--no-cache`, or no usable home).
#[derive(Debug, Default)]
pub struct BlobLocations {
    dir: Option<PathBuf>,
    /// Hosts whose directory was trimmed by this process already.
    trimmed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// (host, digest) → the repository this process last recorded first for it: a re-push
    /// of many blobs reads no entry twice.
    recorded: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

/// Recorded blobs one process remembers, at most (then it starts afresh).
const MAX_RECORDED: usize = 100_000;

/// A repository name as the distribution spec allows it — path components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` — so a damaged or planted entry can never make a
/// mount request name anything else.
fn is_repository(name: &str) -> bool {
    fn component(c: &str) -> bool {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        // Between alphanumerics: one `.`, one or two `_`, or any number of `-`.
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok {
                return false;
            }
        }
        true
    }
    !name.is_empty() && name.len() <= 255 && name.split('/').all(component)
}

/// The name of an entry: the 64 hex digits of a digest.
fn is_entry_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl BlobLocations {
    /// The user's cache, or none when `enabled` is false.
    pub fn for_user(enabled: bool) -> BlobLocations {
        BlobLocations {
            dir: if enabled {
                private_dir("locations")
            } else {
                None
            },
            trimmed: Default::default(),
            recorded: Default::default(),
        }
    }

    fn file(&self, host: &str, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        if !is_entry_name(hex) {
            return None;
        }
        let host_key = crate::digest::Digest::of(host.as_bytes()).hex()[..32].to_string();
        let host_dir = self.dir.as_ref()?.join(host_key);
        // Absent (made on the first record), or a real directory of this user: never a
        // symlink leading elsewhere.
        match std::fs::symlink_metadata(&host_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(m) if m.is_dir() && crate::fsutil::owned_by_me(&m) => {}
            _ => return None,
        }
        Some(host_dir.join(hex))
    }

    /// Repositories of `host` where `digest` was seen, most recent first.
    pub fn lookup(&self, host: &str, digest: &str) -> Vec<String> {
        let Some(file) = self.file(host, digest) else {
            return Vec::new();
        };
        let Some(text) = read_entry(&file).and_then(|b| String::from_utf8(b).ok()) else {
            return Vec::new();
        };
        text.lines()
            .filter(|l| is_repository(l))
            .take(MAX_REPOSITORIES)
            .map(str::to_string)
            .collect()
    }

    /// Records that `repository` of `host` has `digest` (of `size` bytes): it comes first.
    pub fn record(&self, host: &str, digest: &str, size: u64, repository: &str) {
        if size < WORTH_MOUNTING || !is_repository(repository) || self.dir.is_none() {
            return;
        }
        {
            let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            if recorded.len() >= MAX_RECORDED {
                recorded.clear();
            }
            let key = (host.to_string(), digest.to_string());
            if recorded.insert(key, repository.to_string()).as_deref() == Some(repository) {
                return;
            }
        }
        let mut repos = self.lookup(host, digest);
        if repos.first().map(String::as_str) == Some(repository) {
            return;
        }
        repos.retain(|r| r != repository);
        repos.insert(0, repository.to_string());
        repos.truncate(MAX_REPOSITORIES);
        self.write(host, digest, &repos);
    }

    /// Forgets that `repository` of `host` has `digest` (a mount from it failed).
    pub fn forget(&self, host: &str, digest: &str, repository: &str) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        let key = (host.to_string(), digest.to_string());
        if recorded.get(&key).map(String::as_str) == Some(repository) {
            recorded.remove(&key);
        }
        drop(recorded);
        let mut repos = self.lookup(host, digest);
        let before = repos.len();
        repos.retain(|r| r != repository);
        if repos.len() != before {
            self.write(host, digest, &repos);
        }
    }

    /// Replaces the entry (best effort: a cache that cannot be written is a miss later).
    fn write(&self, host: &str, digest: &str, repos: &[String]) {
        let Some(file) = self.file(host, digest) else {
            return;
        };
        let Some(dir) = file.parent() else { return };
        if !crate::fsutil::make_private_dir(dir) {
            return;
        }
        if repos.is_empty() {
            let _ = std::fs::remove_file(&file);
            return;
        }
        self.trim(host, dir);
        crate::fsutil::write_entry(&file, repos.join("\n").as_bytes());
    }

    /// Once per process and host: past [`MAX_BLOBS`] entries, the oldest tenth go.
    fn trim(&self, host: &str, dir: &std::path::Path) {
        if !self
            .trimmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string())
        {
            return;
        }
        crate::fsutil::sweep_stale_temps(dir, crate::fsutil::STALE_TEMP_AGE);
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = read
            .flatten()
            .filter(|e| is_entry_name(&e.file_name().to_string_lossy()))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if entries.len() <= MAX_BLOBS {
            return;
        }
        entries.sort();
        let excess = entries.len() - MAX_BLOBS * 9 / 10;
        for (_, path) in entries.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn most_recent_first_bounded_and_forgettable() {
        let dir = tempfile::tempdir().expect("tmp");
        let l = BlobLocations {
            dir: Some(dir.path().join("locations")),
            trimmed: Default::default(),
            recorded: Default::default(),
        };
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(l.lookup("r:5000", &d).is_empty());
        l.record("r:5000", &d, 10, "small/ignored");
        assert!(
            l.lookup("r:5000", &d).is_empty(),
            "small blobs are not worth it"
        );
        for r in ["one", "two", "three", "four", "five", "two"] {
            l.record("r:5000", &d, 2 << 20, r);
        }
        assert_eq!(l.lookup("r:5000", &d), ["two", "five", "four", "three"]);
        assert!(l.lookup("other:5000", &d).is_empty(), "per host");
        l.forget("r:5000", &d, "five");
        assert_eq!(l.lookup("r:5000", &d), ["two", "four", "three"]);
        l.record("r:5000", &d, 2 << 20, "Bad Name");
        for bad in ["..", "../x", ".", "-/_", "a__-b", "a..b", "x/", "A"] {
            assert!(!is_repository(bad), "{bad}");
        }
        for good in ["a", "team/one", "a.b", "a_b", "a__b", "a---b", "x9/y-z.w"] {
            assert!(is_repository(good), "{good}");
        }
        l.record("r:5000", "sha256:../../x", 2 << 20, "x");
        assert_eq!(l.lookup("r:5000", &d), ["two", "four", "three"]);
        // A host directory that is a symlink is not used, and its target is not touched.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::write(elsewhere.join("photo.jpg"), b"x").expect("write");
        let host_key = crate::digest::Digest::of(b"s:1").hex()[..32].to_string();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("locations").join(host_key))
            .expect("symlink");
        l.record("s:1", &d, 2 << 20, "one");
        assert!(l.lookup("s:1", &d).is_empty());
        let names: Vec<_> = std::fs::read_dir(&elsewhere)
            .expect("ls")
            .flatten()
            .collect();
        assert_eq!(names.len(), 1, "nothing written through the link");
        // Recorded once per process: the same record again reads and writes nothing.
        let e = format!("sha256:{}", "e".repeat(64));
        l.record("r:5000", &e, 2 << 20, "one");
        let host_key = crate::digest::Digest::of(b"r:5000").hex()[..32].to_string();
        let entry = dir
            .path()
            .join("locations")
            .join(host_key)
            .join("e".repeat(64));
        std::fs::remove_file(&entry).expect("recorded");
        l.record("r:5000", &e, 2 << 20, "one");
        assert!(!entry.exists());
        l.record("r:5000", &e, 2 << 20, "two");
        assert_eq!(l.lookup("r:5000", &e), ["two"]);
        let off = BlobLocations::for_user(false);
        off.record("r:5000", &d, 2 << 20, "x");
        assert!(off.lookup("r:5000", &d).is_empty());
    }
}
