//! `mount REF DIR` and `umount DIR` (SPEC §7.5): an image of a layout as one read-only
//! overlayfs, its layers unpacked on demand, with tmpfs and bind mounts inside it, or as
//! systemd `.mount` units; and everything at and below a directory unmounted again.
//!
//! The overlay is built with the new mount API (`fsopen`, one `lowerdir+` per layer,
//! `fsmount`), so the number of layers has no option-length limit, and the mount exists
//! detached before it is attached: every `--bind`/`--tmpfs` target is resolved inside it
//! first (symlinks followed within it, an escape refused), so nothing is mounted unless all
//! of it can be.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageManifest;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::options::Options;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{fetch_small, Targets};

/// What to mount besides the image, and how (the flags of `mount`). As JSON (the C and
/// Python bindings pass it so): the same names in camelCase, every field optional.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MountSpec {
    /// Allow setuid/setgid programs (`--suid`; default `nosuid`).
    pub suid: bool,
    /// Allow device nodes (`--dev`; default `nodev`).
    pub dev: bool,
    /// `HOST:PATH` bind mounts, PATH inside the image (`--bind`).
    pub binds: Vec<String>,
    /// `PATH[:SIZE]` tmpfs mounts inside the image (`--tmpfs`); `/tmp`, `/run` and
    /// `/var/tmp` get one by default when the image has them.
    pub tmpfs: Vec<String>,
    /// No default tmpfs mounts (`--no-tmpfs`).
    pub no_tmpfs: bool,
    /// Hash the layer blobs again before mounting (`--verify`).
    pub verify: bool,
    /// Write systemd `.mount` units instead of mounting (`--persistent`).
    pub persistent: bool,
    /// Where the units go (`--unit-dir`, default `/etc/systemd/system`).
    pub unit_dir: Option<PathBuf>,
    /// Also `systemctl daemon-reload` and `systemctl enable --now` them (`--enable`).
    pub enable: bool,
}

/// What `mount` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Mounted {
    /// The reference as given.
    pub reference: String,
    /// The image manifest mounted (the member chosen from an index).
    pub digest: String,
    /// The overlay's mount point.
    pub dir: PathBuf,
    /// The layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// Every mount point, in the order mounted (the overlay first).
    pub mounts: Vec<PathBuf>,
    /// With `persistent`: the unit files written, in order.
    pub units: Vec<PathBuf>,
}

/// What `umount` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Unmounted {
    /// The directory given.
    pub dir: PathBuf,
    /// The mount points unmounted, deepest first.
    pub unmounted: Vec<PathBuf>,
}

fn needs_root() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "mount and umount need root (overlayfs mounts need CAP_SYS_ADMIN): run as root, e.g. \
         with sudo",
    )
}

/// The platform of this machine, as `--platform` would name it.
fn host_platform() -> Result<Platform> {
    Platform::parse(&format!(
        "{}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    ))
    .map(|p| p.normalized())
    .map_err(|m| Error::new(ErrorKind::Internal, format!("the host platform: {m}")))
}

/// `HOST:PATH` of `--bind`, split at the first `:`.
fn parse_bind(text: &str) -> Result<(PathBuf, String)> {
    match text.split_once(':') {
        Some((host, path)) if !host.is_empty() && !path.is_empty() => {
            Ok((PathBuf::from(host), path.to_string()))
        }
        _ => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("--bind \"{text}\": write HOST:PATH, e.g. /srv/data:/data"),
        )),
    }
}

/// `PATH[:SIZE]` of `--tmpfs`, split at the last `:`.
fn parse_tmpfs(text: &str) -> Result<(String, Option<String>)> {
    let (path, size) = match text.rsplit_once(':') {
        Some((p, s)) => (p, Some(s)),
        None => (text, None),
    };
    let size_ok = size.is_none_or(|s| {
        let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    if path.is_empty() || !size_ok {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("--tmpfs \"{text}\": write PATH or PATH:SIZE, e.g. /tmp:64m"),
        ));
    }
    Ok((path.to_string(), size.map(str::to_string)))
}

/// The image to mount: its manifest in the layout, and the layers' directories.
struct Image {
    digest: String,
    layers: Vec<PathBuf>,
}

/// Resolves REF to an image manifest, checks it, unpacks its layers.
async fn image(reference: &str, spec: &MountSpec, options: &Options) -> Result<Image> {
    let parsed = Reference::parse(reference)?;
    let Reference::Layout(layout) = &parsed else {
        return Err(Error::new(
            ErrorKind::InvalidReference,
            format!(
                "{reference}: mount reads images from layouts (oci://DIR:REF); copy it into one \
                 first (oci-packer copy {reference} oci://DIR:REF)"
            ),
        )
        .with_reference(reference));
    };
    let targets = Targets::new(&options.registry, false, None);
    let opened = targets.open_str(reference, false)?;
    let store = opened.target.clone();
    let mut root = opened.resolve().await?;
    if mediatype::is_index(root.media_type().as_ref()) {
        let wanted = match options.wanted_platform()? {
            Some(p) => p,
            None => host_platform()?,
        };
        root = crate::store::open::select_platform(store.as_ref(), &root, &wanted)
            .await
            .map_err(|e| e.context(reference))?;
    }
    let mt = root.media_type().to_string();
    if mediatype::is_index(&mt) || !mediatype::is_manifest(&mt) {
        return Err(not_an_image(reference, &format!("its member is a {mt}")));
    }
    let data = fetch_small(store.as_ref(), &root).await?;
    let manifest: ImageManifest = crate::json::from_slice(&data).map_err(|e| {
        Error::new(
            ErrorKind::Registry,
            format!("{}: not a valid manifest: {e}", root.digest()),
        )
    })?;
    let config_type = manifest.config().media_type().to_string();
    if !matches!(
        config_type.as_str(),
        mediatype::OCI_CONFIG | "application/vnd.docker.container.image.v1+json"
    ) {
        return Err(not_an_image(
            reference,
            &format!("its config is {config_type}, not an image config"),
        ));
    }
    if spec.verify {
        let v = crate::verify::verify_graph(store.as_ref(), reference, &root).await?;
        if let Some(p) = v.problems.first() {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{reference}: {} of its blobs are damaged ({} {}: {}); nothing was mounted \
                     (copy the image into the layout again)",
                    v.problems.len(),
                    p.kind,
                    p.digest,
                    p.message
                ),
            )
            .with_digest(p.digest.clone()));
        }
    }
    let mut layers = Vec::new();
    for l in manifest.layers() {
        if crate::archive::unpack::Compression::of_media_type(l.media_type().as_ref()).is_none() {
            return Err(not_an_image(
                reference,
                &format!(
                    "its layer {} is a {}, not a tar layer",
                    l.digest(),
                    l.media_type()
                ),
            ));
        }
        let hex = crate::digest::Digest::parse(l.digest().as_ref())?
            .hex()
            .to_string();
        layers.push(
            crate::fsutil::absolute(&layout.dir)
                .join(crate::store::layout::UNPACKED_DIR)
                .join(hex),
        );
    }
    if layers.is_empty() {
        return Err(not_an_image(reference, "it has no layers"));
    }
    // Layers are unpacked on demand (verified as they are).
    store
        .unpack_layers(&root, options.into())
        .await
        .map_err(|e| e.context(format!("unpacking {reference}")))?;
    Ok(Image {
        digest: root.digest().to_string(),
        layers,
    })
}

fn not_an_image(reference: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("{reference} is not a container image ({why}); only images can be mounted"),
    )
    .with_reference(reference)
}

/// DIR must be missing (it is made) or an empty directory.
fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir).map(|mut rd| rd.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{} is not empty; mount onto an empty directory (a mount would hide what is there)",
                dir.display()
            ),
        )
        .with_path(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))
        }
        Err(e) => Err(Error::io("reading", dir, e)),
    }
}

/// `mount REF DIR`.
pub(crate) async fn mount(
    reference: &str,
    dir: &Path,
    spec: &MountSpec,
    options: &Options,
) -> Result<Mounted> {
    if !cfg!(target_os = "linux") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "mount is available on Linux only",
        ));
    }
    if !rustix::process::geteuid().is_root() {
        return Err(needs_root());
    }
    if spec.enable && !spec.persistent {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "--enable enables the units of --persistent: add --persistent",
        ));
    }
    let binds = spec
        .binds
        .iter()
        .map(|b| parse_bind(b))
        .collect::<Result<Vec<_>>>()?;
    let mut tmpfs = spec
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t))
        .collect::<Result<Vec<_>>>()?;
    let image = image(reference, spec, options).await?;
    let dir = crate::fsutil::absolute(dir);
    if !spec.persistent {
        check_dir(&dir)?;
    }
    let explicit: Vec<String> = tmpfs.iter().map(|(p, _)| p.clone()).collect();
    if !spec.no_tmpfs {
        for p in ["/tmp", "/run", "/var/tmp"] {
            if !explicit.iter().any(|e| e.trim_end_matches('/') == p) {
                tmpfs.push((p.to_string(), None));
            }
        }
    }
    let plan = linux::Plan {
        dir: dir.clone(),
        layers: image.layers.clone(),
        suid: spec.suid,
        dev: spec.dev,
        binds,
        tmpfs,
        explicit,
    };
    let (mounts, units) = if spec.persistent {
        let unit_dir = spec
            .unit_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/systemd/system"));
        let units = linux::write_units(&plan, reference, &unit_dir, spec.enable)?;
        (Vec::new(), units)
    } else {
        (linux::mount_now(&plan)?, Vec::new())
    };
    Ok(Mounted {
        reference: reference.to_string(),
        digest: image.digest,
        dir,
        layers: image.layers,
        mounts,
        units,
    })
}

/// `umount DIR`: everything mounted at and below DIR, deepest first (`lazy`: detached).
pub(crate) fn umount(dir: &Path, lazy: bool) -> Result<Unmounted> {
    if !rustix::process::geteuid().is_root() {
        return Err(needs_root());
    }
    let dir = crate::fsutil::absolute(dir);
    let dir = dir.canonicalize().unwrap_or(dir);
    let unmounted = linux::unmount_below(&dir, lazy)?;
    Ok(Unmounted { dir, unmounted })
}

/// The systemd name of a path (`systemd-escape --path`): `/mnt/my-dir` → `mnt-my\x2ddir`.
pub fn systemd_escape_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let parts: Vec<&str> = text.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return "-".into();
    }
    let joined = parts.join("/");
    let mut out = String::new();
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

mod linux {
    //! The mount system calls (rustix), in this one place.

    use super::*;
    use rustix::fs::{openat, readlinkat, statat, AtFlags, FileType, Mode, OFlags, CWD};
    use rustix::io::Errno;
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, unmount,
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
    };

    /// Everything one `mount` sets up.
    pub(super) struct Plan {
        pub dir: PathBuf,
        /// Bottom first.
        pub layers: Vec<PathBuf>,
        pub suid: bool,
        pub dev: bool,
        pub binds: Vec<(PathBuf, String)>,
        pub tmpfs: Vec<(String, Option<String>)>,
        /// The tmpfs paths the user asked for (others are defaults, skipped when absent).
        pub explicit: Vec<String>,
    }

    fn sys(what: &str, path: &Path, e: Errno) -> Error {
        match e {
            Errno::PERM | Errno::ACCESS => needs_root(),
            e => Error::io(what, path, e.into()),
        }
    }

    /// The overlay, detached: lower directories top first, one `lowerdir+` each.
    fn overlay(plan: &Plan) -> Result<OwnedFd> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
            Errno::NODEV => Error::new(
                ErrorKind::Unsupported,
                "this kernel has no overlayfs: load it (modprobe overlay) and try again",
            ),
            e => sys("opening overlayfs for", &plan.dir, e),
        })?;
        let mut lowers: Vec<PathBuf> = plan.layers.iter().rev().cloned().collect();
        // A read-only overlay needs two lower directories: an empty one under a single
        // layer.
        if lowers.len() == 1 {
            let empty = plan.layers[0]
                .parent()
                .map(|p| p.join(".empty"))
                .unwrap_or_default();
            std::fs::create_dir_all(&empty).map_err(|e| Error::io("creating", &empty, e))?;
            lowers.push(empty);
        }
        for l in &lowers {
            fsconfig_set_string(&fs, "lowerdir+", l).map_err(|e| match e {
                Errno::INVAL => Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "this kernel's overlayfs does not take layers one by one (lowerdir+, \
                         Linux 6.8 and later); it refused {}",
                        l.display()
                    ),
                ),
                e => sys("adding the layer", l, e),
            })?;
        }
        fsconfig_create(&fs).map_err(|e| sys("creating the overlay for", &plan.dir, e))?;
        let mut attrs = MountAttrFlags::MOUNT_ATTR_RDONLY;
        if !plan.suid {
            attrs |= MountAttrFlags::MOUNT_ATTR_NOSUID;
        }
        if !plan.dev {
            attrs |= MountAttrFlags::MOUNT_ATTR_NODEV;
        }
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| sys("mounting the overlay for", &plan.dir, e))
    }

    /// Resolves `path` inside the tree of `root` (a mount of the image): symlinks are
    /// followed as inside the image (an absolute one from its root), and a `..` that would
    /// leave it is an escape. `Ok(None)` when the path does not exist.
    fn resolve(root: &OwnedFd, path: &str, what: &str) -> Result<Option<(OwnedFd, String)>> {
        let escape = || {
            Error::new(
                ErrorKind::UnsafeContent,
                format!(
                    "{what} {path}: it leads outside the image through a symlink (..); nothing \
                     was mounted"
                ),
            )
        };
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .rev()
            .map(str::to_string)
            .collect();
        let mut at: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop() {
            if part == ".." {
                if at.pop().is_none() {
                    return Err(escape());
                }
                continue;
            }
            let parent = open_at_path(root, &at)?;
            let st = match statat(&parent, part.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(Error::io("looking at", Path::new(path), e.into())),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    links += 1;
                    if links > 40 {
                        return Err(escape());
                    }
                    let target = readlinkat(&parent, part.as_str(), Vec::new())
                        .map_err(|e| Error::io("reading the link", Path::new(path), e.into()))?;
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        at.clear();
                    }
                    todo.extend(
                        target
                            .split('/')
                            .filter(|p| !p.is_empty() && *p != ".")
                            .rev()
                            .map(str::to_string),
                    );
                }
                FileType::Directory => at.push(part),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("{what} {path}: not a directory in the image"),
                    ))
                }
            }
        }
        let fd = open_at_path(root, &at)?;
        Ok(Some((fd, format!("/{}", at.join("/")))))
    }

    /// The directory `parts` below `root`, opened one component at a time, never through a
    /// symlink.
    fn open_at_path(root: &OwnedFd, parts: &[String]) -> Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut fd = openat(root, ".", flags, Mode::empty())
            .map_err(|e| Error::io("opening", Path::new("/"), e.into()))?;
        for p in parts {
            fd = openat(&fd, p.as_str(), flags, Mode::empty())
                .map_err(|e| Error::io("opening", Path::new(p), e.into()))?;
        }
        Ok(fd)
    }

    /// A place inside the image for a tmpfs or bind mount.
    struct Spot {
        fd: OwnedFd,
        /// Its path inside the image (`/tmp`).
        inside: String,
    }

    /// Resolves every tmpfs and bind target in the detached overlay; explicit ones must
    /// exist, defaults are skipped when absent or escaping.
    #[allow(clippy::type_complexity)]
    fn targets(
        overlay: &OwnedFd,
        plan: &Plan,
    ) -> Result<(Vec<(Spot, Option<String>)>, Vec<(Spot, PathBuf)>)> {
        let mut tmpfs = Vec::new();
        for (path, size) in &plan.tmpfs {
            let explicit = plan.explicit.contains(path);
            match resolve(overlay, path, "--tmpfs") {
                Ok(Some((fd, inside))) => tmpfs.push((Spot { fd, inside }, size.clone())),
                Ok(None) if !explicit => {}
                Err(e) if !explicit => {
                    tracing::warn!("no tmpfs on {path}: {}", e.message());
                }
                Ok(None) => {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "--tmpfs {path}: the image has no such directory (the image is \
                             read-only, so it cannot be made); nothing was mounted"
                        ),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        let mut binds = Vec::new();
        for (host, path) in &plan.binds {
            if !host.exists() {
                return Err(Error::new(
                    ErrorKind::SourceNotFound,
                    format!(
                        "--bind {}:{path}: {} does not exist",
                        host.display(),
                        host.display()
                    ),
                )
                .with_path(host));
            }
            match resolve(overlay, path, "--bind")? {
                Some((fd, inside)) => binds.push((Spot { fd, inside }, host.clone())),
                None => {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "--bind {}:{path}: the image has no directory {path} (the image is \
                             read-only, so it cannot be made); nothing was mounted",
                            host.display()
                        ),
                    ))
                }
            }
        }
        Ok((tmpfs, binds))
    }

    /// Mounts the overlay at DIR, then the tmpfs and bind mounts inside it; on any error
    /// what was mounted is unmounted again.
    pub(super) fn mount_now(plan: &Plan) -> Result<Vec<PathBuf>> {
        let overlay = overlay(plan)?;
        let (tmpfs, binds) = targets(&overlay, plan)?;
        let both =
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
        move_mount(
            &overlay,
            "",
            CWD,
            &plan.dir,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| sys("mounting the image at", &plan.dir, e))?;
        let mut done = vec![plan.dir.clone()];
        let result = (|| -> Result<()> {
            for (t, size) in &tmpfs {
                let at = plan.dir.join(t.inside.trim_start_matches('/'));
                let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)
                    .map_err(|e| sys("opening tmpfs for", &at, e))?;
                if let Some(s) = size {
                    fsconfig_set_string(&fs, "size", s.as_str()).map_err(|e| {
                        Error::new(
                            ErrorKind::InvalidArgument,
                            format!("--tmpfs {}:{s}: tmpfs refused the size ({e})", t.inside),
                        )
                    })?;
                }
                fsconfig_create(&fs).map_err(|e| sys("creating a tmpfs for", &at, e))?;
                let m = fsmount(
                    &fs,
                    FsMountFlags::FSMOUNT_CLOEXEC,
                    MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
                )
                .map_err(|e| sys("mounting a tmpfs on", &at, e))?;
                move_mount(&m, "", &t.fd, "", both)
                    .map_err(|e| sys("mounting a tmpfs on", &at, e))?;
                done.push(at);
            }
            for (t, host) in &binds {
                let at = plan.dir.join(t.inside.trim_start_matches('/'));
                let tree = open_tree(
                    CWD,
                    host,
                    OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
                )
                .map_err(|e| sys("binding", host, e))?;
                move_mount(&tree, "", &t.fd, "", both).map_err(|e| sys("binding onto", &at, e))?;
                done.push(at);
            }
            Ok(())
        })();
        if let Err(e) = result {
            for m in done.iter().rev() {
                let _ = unmount(m, UnmountFlags::DETACH);
            }
            return Err(e);
        }
        Ok(done)
    }

    /// The `lowerdir=` option of the overlay unit (top first), checked against the one-page
    /// limit of mount(2), which systemd uses.
    fn lowerdir_option(plan: &Plan) -> Result<String> {
        let escape = |p: &Path| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
                .replace(',', "\\,")
        };
        let mut lowers: Vec<String> = plan.layers.iter().rev().map(|p| escape(p)).collect();
        if lowers.len() == 1 {
            let empty = plan.layers[0]
                .parent()
                .map(|p| p.join(".empty"))
                .unwrap_or_default();
            std::fs::create_dir_all(&empty).map_err(|e| Error::io("creating", &empty, e))?;
            lowers.push(escape(&empty));
        }
        let mut option = String::from("ro");
        if !plan.suid {
            option.push_str(",nosuid");
        }
        if !plan.dev {
            option.push_str(",nodev");
        }
        option.push_str(&format!(",lowerdir={}", lowers.join(":")));
        if option.len() > 4095 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the overlay's options would be {} bytes, more than the 4095 a mount unit \
                     can pass (systemd uses mount(2)); mount without --persistent, which has \
                     no such limit; no unit was written",
                    option.len()
                ),
            ));
        }
        Ok(option)
    }

    /// Writes the `.mount` units (overlay, then tmpfs, then binds), each after the overlay.
    pub(super) fn write_units(
        plan: &Plan,
        reference: &str,
        unit_dir: &Path,
        enable: bool,
    ) -> Result<Vec<PathBuf>> {
        let option = lowerdir_option(plan)?;
        // A unit file is lines of `Key=value` where `%` starts a specifier: a path with a
        // line break or a `%` could not be written faithfully (or would add settings).
        let unit_safe = |p: &Path, what: &str| -> Result<()> {
            let text = p.to_string_lossy();
            if text.contains('%') || text.chars().any(char::is_control) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{what} {:?} has a % or a control character, which a systemd unit \
                         cannot hold; no unit was written",
                        text
                    ),
                ));
            }
            Ok(())
        };
        unit_safe(&plan.dir, "the mount point")?;
        for l in &plan.layers {
            unit_safe(l, "the layer directory")?;
        }
        for (host, path) in &plan.binds {
            unit_safe(host, "--bind")?;
            unit_safe(Path::new(path), "--bind")?;
        }
        for (path, _) in &plan.tmpfs {
            unit_safe(Path::new(path), "--tmpfs")?;
        }
        // Targets are resolved in the image itself, mounted detached for the purpose.
        let overlay = overlay(plan)?;
        let (tmpfs, binds) = targets(&overlay, plan)?;
        drop(overlay);
        let unit_name = |p: &Path| format!("{}.mount", systemd_escape_path(p));
        let top = unit_name(&plan.dir);
        let one_line = |s: &str| {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
                .replace('%', "%%")
        };
        let mut units = vec![(
            top.clone(),
            format!(
                "[Unit]\nDescription=oci-packer: {} at {}\n\n[Mount]\nWhat=overlay\nWhere={}\nType=overlay\nOptions={option}\n\n[Install]\nWantedBy=multi-user.target\n",
                one_line(reference),
                plan.dir.display(),
                plan.dir.display()
            ),
        )];
        let after = format!("Requires={top}\nAfter={top}\n");
        for (t, size) in &tmpfs {
            let at = plan.dir.join(t.inside.trim_start_matches('/'));
            let options = match size {
                Some(s) => format!("nosuid,nodev,size={s}"),
                None => "nosuid,nodev".to_string(),
            };
            units.push((
                unit_name(&at),
                format!(
                    "[Unit]\nDescription=oci-packer: tmpfs at {}\n{after}\n[Mount]\nWhat=tmpfs\nWhere={}\nType=tmpfs\nOptions={options}\n\n[Install]\nWantedBy=multi-user.target\n",
                    at.display(),
                    at.display()
                ),
            ));
        }
        for (t, host) in &binds {
            let at = plan.dir.join(t.inside.trim_start_matches('/'));
            units.push((
                unit_name(&at),
                format!(
                    "[Unit]\nDescription=oci-packer: {} at {}\n{after}\n[Mount]\nWhat={}\nWhere={}\nType=none\nOptions=bind\n\n[Install]\nWantedBy=multi-user.target\n",
                    host.display(),
                    at.display(),
                    host.display(),
                    at.display()
                ),
            ));
        }
        std::fs::create_dir_all(unit_dir).map_err(|e| Error::io("creating", unit_dir, e))?;
        let mut written = Vec::new();
        for (name, text) in &units {
            crate::fsutil::write_atomic(unit_dir, name, text.as_bytes(), true)?;
            written.push(unit_dir.join(name));
        }
        if enable {
            let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
            for args in [
                vec!["daemon-reload"],
                [vec!["enable", "--now"], names].concat(),
            ] {
                let status = std::process::Command::new("systemctl")
                    .args(&args)
                    .status()
                    .map_err(|e| Error::io("running", Path::new("systemctl"), e))?;
                if !status.success() {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("systemctl {} failed ({status})", args.join(" ")),
                    ));
                }
            }
        }
        Ok(written)
    }

    /// Every mount point at or below `dir` (from `/proc/self/mountinfo`, escapes undone),
    /// unmounted deepest first; each failure is reported after trying them all.
    pub(super) fn unmount_below(dir: &Path, lazy: bool) -> Result<Vec<PathBuf>> {
        // Bytes: a mount point elsewhere that is not UTF-8 must not stop this one.
        let bytes = std::fs::read("/proc/self/mountinfo")
            .map_err(|e| Error::io("reading", Path::new("/proc/self/mountinfo"), e))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut points: Vec<(usize, PathBuf)> = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let p = PathBuf::from(crate::store::layout::unescape_mountinfo(
                    l.split(' ').nth(4)?,
                ));
                (p == dir || p.starts_with(dir)).then_some((i, p))
            })
            .collect();
        // Deepest first; of one depth, the latest mounted first (it is on top).
        points.sort_by(|(ia, a), (ib, b)| {
            b.components()
                .count()
                .cmp(&a.components().count())
                .then(ib.cmp(ia))
        });
        let flags = if lazy {
            UnmountFlags::DETACH
        } else {
            UnmountFlags::empty()
        };
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (_, p) in points {
            match unmount(&p, flags) {
                Ok(()) => done.push(p),
                Err(Errno::INVAL) if done.contains(&p) => {}
                Err(e) => failed.push(format!("{}: {e}", p.display())),
            }
        }
        if !failed.is_empty() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} of {} mount(s) at or below {} could not be unmounted: {} (busy? stop \
                     what uses them, or use --lazy)",
                    failed.len(),
                    failed.len() + done.len(),
                    dir.display(),
                    failed.join("; ")
                ),
            ));
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn systemd_names() {
        use std::path::Path;
        assert_eq!(super::systemd_escape_path(Path::new("/mnt/app")), "mnt-app");
        assert_eq!(
            super::systemd_escape_path(Path::new("/mnt/my-dir")),
            "mnt-my\\x2ddir"
        );
        assert_eq!(super::systemd_escape_path(Path::new("/")), "-");
        assert_eq!(super::systemd_escape_path(Path::new("/a/.b")), "a-.b");
        assert_eq!(super::systemd_escape_path(Path::new("/.a")), "\\x2ea");
    }

    #[test]
    fn flags() {
        assert!(super::parse_bind("/srv:/data").is_ok());
        assert!(super::parse_bind("/srv").is_err());
        assert_eq!(
            super::parse_tmpfs("/tmp:64m").expect("ok"),
            ("/tmp".to_string(), Some("64m".to_string()))
        );
        assert!(super::parse_tmpfs("/tmp:lots").is_err());
    }
}
