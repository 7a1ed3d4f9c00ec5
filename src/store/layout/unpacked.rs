//! Unpacked layers (SPEC §7.4): every tar layer of a layout also extracted into
//! `DIR/unpacked/sha256/<hex>/`, beside the standard blobs (which stay, so skopeo and ORAS
//! still read the layout and copies out of it keep their digests). Extraction is safe
//! (`archive::unpack`), verified against the layer's digest, and atomic: a directory is
//! there complete or not at all. Collections remove a layer's directory with its blob, and
//! refuse while it is a lower directory of a live overlay mount.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;

use oci_spec::image::Descriptor;

use super::{layout_err, Layout};
use crate::archive::unpack::{self, Compression, UnpackOptions};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::store::Target;

/// The directory of unpacked layers in a layout, by algorithm: `unpacked/sha256`.
pub const UNPACKED_DIR: &str = "unpacked/sha256";

impl Layout {
    /// `DIR/unpacked/sha256`, checked to be real directories when they exist (a planted
    /// symlink would send extractions elsewhere); `create` makes them.
    fn unpacked_root(&self, create: bool) -> Result<Option<PathBuf>> {
        let mut path = self.dir.clone();
        for part in UNPACKED_DIR.split('/') {
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(layout_err(
                        &self.shown,
                        format!(
                            "{} is not a real directory (a symlink?); replace it with a directory",
                            path.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&path).map_err(|e| Error::io("creating", &path, e))?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("looking at", &path, e)),
            }
        }
        if create {
            // Unpacked layers keep their owners and setuid bits: only root may reach them
            // (a 4755 root file in a layer must not be a way up for a local user), as in
            // containerd's snapshot stores.
            use std::os::unix::fs::PermissionsExt;
            let top = self.dir.join("unpacked");
            std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("restricting", &top, e))?;
        }
        Ok(Some(path))
    }

    /// The unpacked directory of the layer with hex digest `hex`, when there is one.
    pub fn unpacked_dir(&self, hex: &str) -> Option<PathBuf> {
        let p = self.unpacked_root(false).ok()??.join(hex);
        std::fs::symlink_metadata(&p)
            .is_ok_and(|m| m.is_dir())
            .then_some(p)
    }

    /// Extracts every tar layer (OCI and Docker types) of the graph under `root` that is not
    /// unpacked yet; returns how many were. Whiteouts become overlayfs whiteouts when
    /// running as root. Holds the layout's shared operation lock (until the last clone of
    /// this handle goes), so a collection cannot remove the directories before their use.
    pub fn unpack_graph(&self, root: &Descriptor, limits: unpack::Limits) -> Result<usize> {
        if !self.hold_for_writing()? {
            return Err(self.taken_back());
        }
        let options = UnpackOptions {
            limits,
            whiteouts: unpack::Whiteouts::Overlay,
            ..UnpackOptions::default()
        };
        let mut seen = HashSet::new();
        let mut todo = vec![(root.clone(), Vec::<String>::new())];
        let mut done = 0;
        let mut skipped_devices = 0;
        while let Some((desc, path)) = todo.pop() {
            let digest = desc.digest().to_string();
            crate::graph::check_path(&path, &digest, || self.name())?;
            if !seen.insert(digest.clone()) {
                continue;
            }
            let mt = desc.media_type().to_string();
            if mediatype::is_manifest(&mt) {
                let hex = Digest::parse(&digest)?.hex().to_string();
                let data = self
                    .small_blob(&hex)
                    .filter(|d| Digest::of(d).as_str() == digest)
                    .ok_or_else(|| {
                        layout_err(&self.shown, format!("{digest} is missing or damaged"))
                            .with_digest(digest.clone())
                    })?;
                let mut below = path.clone();
                below.push(digest.clone());
                todo.extend(
                    crate::graph::successors(&mt, &data)?
                        .into_iter()
                        .map(|c| (c, below.clone())),
                );
                continue;
            }
            if let Some(compression) = Compression::of_media_type(&mt) {
                if let Some(u) = self.unpack_layer(&desc, compression, options)? {
                    done += 1;
                    skipped_devices += u.skipped_devices;
                }
            }
        }
        if skipped_devices > 0 {
            tracing::warn!(
                "{skipped_devices} device nodes not created in {}: only root can (run as root to keep them)",
                self.shown.display()
            );
        }
        Ok(done)
    }

    /// Extracts one layer into `unpacked/sha256/<hex>` unless it is there; `None` when it was.
    fn unpack_layer(
        &self,
        desc: &Descriptor,
        compression: Compression,
        options: UnpackOptions,
    ) -> Result<Option<unpack::Unpacked>> {
        let digest = Digest::parse(desc.digest().as_ref())?;
        let root = self.unpacked_root(true)?.expect("created");
        let target = root.join(digest.hex());
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Ok(None);
        }
        let (file, _) = self.open_blob(desc)?;
        let from = self.name();
        let title = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(mediatype::TITLE))
            .map_or(String::new(), |t| {
                format!(" ({})", crate::text::printable(t))
            });
        let done = unpack::unpack_new(&target, |tmp| {
            let mut raw = HashingReader::new(file.take(desc.size() + 1));
            let done = {
                let tar = compression
                    .decoder(&mut raw)
                    .map_err(|e| unpack::bad_archive(tmp, e))?;
                // A file typed as tar that is no tar (ORAS types every file so) has nothing
                // to unpack.
                let Some(mut tar) = unpack::tar_stream(tar, tmp)? else {
                    return Ok(None);
                };
                unpack::unpack_into(&mut tar, tmp, options)?
            };
            std::io::copy(&mut raw, &mut std::io::sink())
                .map_err(|e| Error::io("reading", &self.blobs_path().join(digest.hex()), e))?;
            let (got, size) = raw.finish();
            crate::store::verify::check(desc, &from, &got, size)?;
            Ok(Some(done))
        })
        .map_err(|e| {
            let e = e.context(format!("unpacking layer {}{title}", desc.digest()));
            match e.digest() {
                Some(_) => e,
                None => e.with_digest(desc.digest().to_string()),
            }
        })?;
        if done.is_none() {
            tracing::warn!(
                digest = %desc.digest(),
                "layer{title} is typed as a tar archive but is not one: not unpacked"
            );
        }
        Ok(done)
    }

    /// The hex names of the unpacked directories there are.
    pub(super) fn unpacked_layers(&self) -> Vec<String> {
        let Ok(Some(root)) = self.unpacked_root(false) else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .collect()
    }

    /// Refuses when one of `hexes` has an unpacked directory that a live mount uses: a
    /// lower directory of an overlay (the directory itself or anything below it, by any
    /// path: compared by device and inode, so binds and symlinks do not hide it), or a mount
    /// point below it (removing the directory would reach into that mount). A lower
    /// directory named `…/unpacked/sha256/<hex>` that no longer exists (its layout was
    /// moved or removed while mounted) counts for that layer too, and so does a relative
    /// one naming it.
    pub(super) fn check_not_mounted(&self, hexes: &[&str]) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Ok(Some(root)) = self.unpacked_root(false) else {
            return Ok(());
        };
        if hexes.is_empty() {
            return Ok(());
        }
        let ids: std::collections::HashMap<(u64, u64), &str> = hexes
            .iter()
            .filter_map(|h| {
                let m = std::fs::symlink_metadata(root.join(h)).ok()?;
                Some(((m.dev(), m.ino()), *h))
            })
            .collect();
        let by_id = |dir: &std::path::Path| {
            dir.ancestors().find_map(|p| {
                let m = std::fs::metadata(p).ok()?;
                ids.get(&(m.dev(), m.ino())).copied()
            })
        };
        // `…/unpacked/sha256/<hex>` in a path whose directory is gone.
        let by_name = |dir: &std::path::Path| {
            let parts: Vec<&str> = dir.iter().filter_map(|c| c.to_str()).collect();
            parts.windows(3).enumerate().find_map(|(i, w)| {
                let hex = hexes.iter().copied().find(|h| *h == w[2])?;
                let at: PathBuf = dir.iter().take(i + 3).collect();
                (w[0] == "unpacked" && w[1] == "sha256" && !at.exists()).then_some(hex)
            })
        };
        let mut busy: Vec<&str> = Vec::new();
        for dir in mounted_lower_dirs() {
            let hit = if dir.is_absolute() {
                by_id(&dir).or_else(|| by_name(&dir))
            } else {
                dir.components().find_map(|c| {
                    let name = c.as_os_str().to_str()?;
                    hexes.iter().copied().find(|h| *h == name)
                })
            };
            busy.extend(hit);
        }
        let root_id = std::fs::metadata(&root).ok().map(|m| (m.dev(), m.ino()));
        for m in mount_table().unwrap_or_default() {
            // At a layer's directory itself (its parent is ours), or anywhere below one.
            let at_layer = m.point.parent().and_then(|p| {
                let pm = std::fs::metadata(p).ok()?;
                let name = m.point.file_name()?.to_str()?;
                (Some((pm.dev(), pm.ino())) == root_id)
                    .then(|| hexes.iter().copied().find(|h| *h == name))
                    .flatten()
            });
            busy.extend(at_layer.or_else(|| by_id(&m.point)));
        }
        if busy.is_empty() {
            return Ok(());
        }
        busy.sort_unstable();
        busy.dedup();
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "layout {}: {} layer(s) that would be removed are in use by a mount \
                 (sha256:{}); unmount it first (umount the overlay that uses {}, or what is \
                 mounted inside it), then run this again; nothing was deleted",
                self.shown.display(),
                busy.len(),
                busy.join(", sha256:"),
                root.join(busy[0]).display()
            ),
        )
        .with_path(&self.shown))
    }

    /// Removes the unpacked directory of `hex`, if there is one.
    pub(super) fn remove_unpacked(&self, hex: &str) -> Result<()> {
        if let Some(dir) = self.unpacked_dir(hex) {
            unpack::remove_tree(&dir).map_err(|e| Error::io("removing", &dir, e))?;
        }
        Ok(())
    }

    /// This program's temp directories under `unpacked/sha256` older than `age` (an
    /// extraction that was killed); removed when `remove`. How many there were.
    pub(super) fn stale_unpack_temps(&self, age: std::time::Duration, remove: bool) -> usize {
        let Ok(Some(root)) = self.unpacked_root(false) else {
            return 0;
        };
        let Ok(rd) = std::fs::read_dir(&root) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .starts_with(crate::fsutil::TEMP_PREFIX)
            {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|el| el >= age);
            if old {
                n += 1;
                if remove {
                    let _ = unpack::remove_tree(&e.path());
                }
            }
        }
        n
    }
}

/// One line of `/proc/self/mountinfo`.
pub(crate) struct MountEntry {
    /// Where it is mounted (escapes undone).
    pub point: PathBuf,
    /// The file system type (`overlay`, `tmpfs`, …).
    pub fstype: String,
    /// The super block options (`lowerdir=…` for overlays), escapes kept.
    pub options: String,
}

/// The mounts of this process's namespace, in mount order. Read as bytes: one mount point
/// anywhere in another encoding must not hide the rest.
pub(crate) fn mount_table() -> Result<Vec<MountEntry>> {
    let path = std::path::Path::new("/proc/self/mountinfo");
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let point = head.split(' ').nth(4)?;
            let mut tail = tail.split(' ');
            let fstype = tail.next()?.to_string();
            let _source = tail.next();
            Some(MountEntry {
                point: PathBuf::from(unescape_mountinfo(point)),
                fstype,
                options: tail.next().unwrap_or_default().to_string(),
            })
        })
        .collect())
}

/// The directories every overlay mounted now uses (`lowerdir=`, `lowerdir+=`, `upperdir=`
/// and `workdir=` options, with mountinfo's octal escapes and overlayfs's `\:` undone).
pub(crate) fn mounted_lower_dirs() -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for m in mount_table().unwrap_or_default() {
        if m.fstype != "overlay" {
            continue;
        }
        for opt in split_unescaped(&m.options, ',') {
            // Upper and work directories count too: removing one breaks the mount as well.
            let value = ["lowerdir=", "lowerdir+=", "upperdir=", "workdir="]
                .iter()
                .find_map(|k| opt.strip_prefix(k));
            let Some(value) = value else { continue };
            for dir in split_unescaped(value, ':') {
                out.insert(PathBuf::from(unescape_mountinfo(&dir)));
            }
        }
    }
    out
}

/// Splits on `sep` not preceded by a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = out.last_mut().expect("one");
                last.push('\\');
                if let Some(n) = chars.next() {
                    last.push(n);
                }
            }
            c if c == sep => out.push(String::new()),
            c => out.last_mut().expect("one").push(c),
        }
    }
    out
}

/// Undoes mountinfo's `\040`-style octal escapes and a backslash before any other character.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else if b[i] == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes() {
        assert_eq!(super::unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(
            super::split_unescaped("lowerdir=/x\\:y:/z,upperdir=/u", ','),
            vec!["lowerdir=/x\\:y:/z".to_string(), "upperdir=/u".to_string()]
        );
        assert_eq!(
            super::split_unescaped("/x\\:y:/z", ':')
                .iter()
                .map(|s| super::unescape_mountinfo(s))
                .collect::<Vec<_>>(),
            vec!["/x:y".to_string(), "/z".to_string()]
        );
    }
}
