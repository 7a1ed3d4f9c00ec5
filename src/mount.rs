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

/// A path inside the image as given must not climb above its root by its own `..`s
/// (symlinks in the image are followed later, inside it).
fn check_inside(flag: &str, text: &str, path: &str) -> Result<()> {
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{flag} \"{text}\": the path climbs above the image's root; write it \
                         from the root, e.g. /tmp"
                    ),
                ))
            }
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    Ok(())
}

/// `HOST:PATH` of `--bind`, split at the first `:`.
fn parse_bind(text: &str) -> Result<(PathBuf, String)> {
    match text.split_once(':') {
        Some((host, path)) if !host.is_empty() && !path.is_empty() => {
            check_inside("--bind", text, path)?;
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
    if path.is_empty() || !size.is_none_or(tmpfs_size_ok) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "--tmpfs \"{text}\": write PATH or PATH:SIZE, SIZE in bytes with k, m or g (more \
                 than 0, which tmpfs takes for no limit, and at most 1 EiB) or 1% to 100% of \
                 memory, e.g. /tmp:64m"
            ),
        ));
    }
    check_inside("--tmpfs", text, path)?;
    Ok((path.to_string(), size.map(str::to_string)))
}

/// A tmpfs `size=`: a positive number with an optional `k`/`m`/`g`, or 1% to 100%.
fn tmpfs_size_ok(size: &str) -> bool {
    let (digits, unit) = match size.char_indices().last() {
        Some((i, c)) if !c.is_ascii_digit() => (&size[..i], Some(c)),
        _ => (size, None),
    };
    let Some(n) = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u64>().ok())
        .flatten()
    else {
        return false;
    };
    // Past 1 EiB the kernel's arithmetic wraps (to 0, no limit): refused.
    let bytes = |unit: u64| n > 0 && n.checked_mul(unit).is_some_and(|b| b <= 1 << 60);
    match unit {
        None => bytes(1),
        Some('k' | 'K') => bytes(1 << 10),
        Some('m' | 'M') => bytes(1 << 20),
        Some('g' | 'G') => bytes(1 << 30),
        Some('%') => (1..=100).contains(&n),
        Some(_) => false,
    }
}

/// `HOST` of `--bind`: an existing directory, as its real absolute path (a unit file and
/// the mount need one that does not depend on the working directory or on symlinks).
fn bind_source(host: &Path, path: &str) -> Result<PathBuf> {
    let shown = format!("--bind {}:{path}", host.display());
    let real = host.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(
            ErrorKind::SourceNotFound,
            format!("{shown}: {} does not exist", host.display()),
        )
        .with_path(host),
        _ => Error::io("looking at", host, e),
    })?;
    if !real.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{shown}: {} is not a directory; --bind mounts a directory onto a directory of \
                 the image (bind its parent directory instead)",
                host.display()
            ),
        )
        .with_path(host));
    }
    Ok(real)
}

/// `path` without `.` and `..` components (`..` of the root stays at the root).
fn lexically_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The mount point: DIR absolute, without symlinks (its real path, when it exists), never
/// `/`, never inside a layout (a collection of that layout would reach into the mount).
fn mount_point(dir: &Path) -> Result<PathBuf> {
    let clean = lexically_clean(&crate::fsutil::absolute(dir));
    let real = clean.canonicalize().unwrap_or(clean);
    let refuse = |why: String| {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{}: {why}; nothing was mounted", dir.display()),
        )
        .with_path(dir))
    };
    if real.parent().is_none() {
        return refuse(
            "mounting onto / would hide the whole system; choose an empty directory".into(),
        );
    }
    if real.exists() && !real.is_dir() {
        return refuse("is not a directory; mount onto an empty directory".into());
    }
    if let Some(layout) = real
        .ancestors()
        .find(|a| a.join(crate::store::layout::LAYOUT_FILE).is_file())
    {
        return refuse(format!(
            "it is inside the layout {}; mount outside it (delete and gc there would reach \
             into the mount)",
            layout.display()
        ));
    }
    Ok(real)
}

/// The image to mount: its manifest in the layout, and the layers' directories.
struct Image {
    digest: String,
    layers: Vec<PathBuf>,
    /// The layout, holding its shared operation lock from unpacking until the mount is
    /// attached: a `delete` or `gc` meanwhile waits rather than removing a layer under us.
    layout: std::sync::Arc<dyn crate::store::Target>,
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
        layout: store,
    })
}

fn not_an_image(reference: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("{reference} is not a container image ({why}); only images can be mounted"),
    )
    .with_reference(reference)
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
        .map(|b| {
            let (host, path) = parse_bind(b)?;
            Ok((bind_source(&host, &path)?, path))
        })
        .collect::<Result<Vec<_>>>()?;
    let tmpfs = spec
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t))
        .collect::<Result<Vec<_>>>()?;
    let dir = mount_point(dir)?;
    let image = image(reference, spec, options).await?;
    let plan = linux::Plan {
        dir: dir.clone(),
        layers: image.layers.clone(),
        suid: spec.suid,
        dev: spec.dev,
        binds,
        tmpfs,
        default_tmpfs: !spec.no_tmpfs,
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
    drop(image.layout);
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
    let dir = lexically_clean(&crate::fsutil::absolute(dir));
    let dir = dir.canonicalize().unwrap_or(dir);
    if dir.parent().is_none() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "umount /: that would unmount the whole system; name the directory of the image",
        ));
    }
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
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, mount_remount, move_mount,
        open_tree, unmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags,
        OpenTreeFlags, UnmountFlags,
    };
    use std::collections::HashSet;
    use std::os::fd::AsRawFd;

    /// The tmpfs mounts made by default, where the image has these directories.
    const DEFAULT_TMPFS: [&str; 3] = ["/tmp", "/run", "/var/tmp"];

    /// Everything one `mount` sets up.
    pub(super) struct Plan {
        /// The mount point: absolute, its real path.
        pub dir: PathBuf,
        /// Bottom first.
        pub layers: Vec<PathBuf>,
        pub suid: bool,
        pub dev: bool,
        /// (real host directory, path in the image).
        pub binds: Vec<(PathBuf, String)>,
        /// The tmpfs mounts asked for: (path in the image, size).
        pub tmpfs: Vec<(String, Option<String>)>,
        /// Also [`DEFAULT_TMPFS`] where the image has them and nothing else is mounted there.
        pub default_tmpfs: bool,
    }

    fn sys(what: &str, path: &Path, e: Errno) -> Error {
        match e {
            Errno::PERM | Errno::ACCESS => needs_root(),
            e => Error::io(what, path, e.into()),
        }
    }

    /// The overlay's lower directories, top first. A layer that comes again higher up is
    /// left out below (overlayfs refuses a directory twice, and the higher copy shows
    /// everything the lower one would: the merge is the same); a single directory gets an
    /// empty one under it (a read-only overlay needs two).
    fn lowers(plan: &Plan) -> Result<Vec<PathBuf>> {
        let mut seen = HashSet::new();
        let mut lowers: Vec<PathBuf> = Vec::new();
        for l in plan.layers.iter().rev() {
            if !seen.insert(l) {
                continue;
            }
            lowers.push(l.clone());
            // A layer whose root is opaque (`.wh..wh..opq` at its top) hides everything
            // below it; overlayfs ignores the mark on a layer's root, so those layers are
            // left out instead.
            if opaque_root(l) {
                break;
            }
        }
        if lowers.len() > MAX_LOWERS {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the image has {} distinct layers; overlayfs stacks at most {MAX_LOWERS} \
                     (flatten the image, e.g. by packing its files into fewer layers); nothing \
                     was mounted",
                    lowers.len()
                ),
            ));
        }
        if lowers.len() == 1 {
            let empty = plan.layers[0]
                .parent()
                .map(|p| p.join(".empty"))
                .unwrap_or_default();
            std::fs::create_dir_all(&empty).map_err(|e| Error::io("creating", &empty, e))?;
            lowers.push(empty);
        }
        Ok(lowers)
    }

    /// The most lower directories one overlayfs takes (the kernel's `OVL_MAX_STACK`).
    const MAX_LOWERS: usize = 500;

    /// True when the unpacked layer `dir` had an opaque marker at its root (the extractor
    /// records it as the `trusted.overlay.opaque` attribute of the directory).
    fn opaque_root(dir: &Path) -> bool {
        let mut value = [0u8; 8];
        rustix::fs::getxattr(dir, "trusted.overlay.opaque", &mut value[..])
            .is_ok_and(|n| value[..n] == *b"y")
    }

    /// The overlay, detached: one `lowerdir+` per lower directory.
    fn overlay(plan: &Plan) -> Result<OwnedFd> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
            Errno::NODEV => Error::new(
                ErrorKind::Unsupported,
                "this kernel has no overlayfs: load it (modprobe overlay) and try again",
            ),
            e => sys("opening overlayfs for", &plan.dir, e),
        })?;
        for l in &lowers(plan)? {
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
                format!("{what} {path}: it leads outside the image through a symlink (..)"),
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
                        return Err(Error::new(
                            ErrorKind::UnsafeContent,
                            format!(
                                "{what} {path}: more than 40 symlinks on the way in the image \
                                 (a loop?)"
                            ),
                        ));
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
        /// Its path inside the image, resolved (`/tmp`).
        inside: String,
    }

    /// True when one of the two image paths is the other or below it.
    fn overlap(a: &str, b: &str) -> bool {
        let (a, b) = (Path::new(a), Path::new(b));
        a.starts_with(b) || b.starts_with(a)
    }

    /// What is mounted inside the image: tmpfs mounts, then binds.
    struct Targets {
        tmpfs: Vec<(Spot, Option<String>)>,
        binds: Vec<(Spot, PathBuf)>,
    }

    /// Resolves every tmpfs and bind target in the detached overlay. The ones asked for must
    /// exist, must not be the image's root, and must not overlap (one would hide the other);
    /// a default tmpfs is left out where the image lacks the directory, where it resolves to
    /// the root, and where it would cover or repeat another target.
    fn targets(overlay: &OwnedFd, plan: &Plan) -> Result<Targets> {
        let missing = |what: String, path: &str| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{what}: the image has no directory {path} (the image is read-only, so it \
                     cannot be made); nothing was mounted"
                ),
            )
        };
        let mut taken: Vec<(String, String)> = Vec::new();
        let mut claim = |inside: &str, what: String| -> Result<()> {
            if inside == "/" {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{what}: it is the image's root (through a symlink?), and a mount there \
                         would hide the whole image; nothing was mounted"
                    ),
                ));
            }
            if let Some((other, by)) = taken.iter().find(|(t, _)| overlap(t, inside)) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{what} and {by} overlap in the image ({inside} and {other}): one would \
                         hide the other; nothing was mounted"
                    ),
                ));
            }
            taken.push((inside.to_string(), what));
            Ok(())
        };
        let mut out = Targets {
            tmpfs: Vec::new(),
            binds: Vec::new(),
        };
        let nothing =
            |e: Error| Error::new(e.kind(), format!("{}; nothing was mounted", e.message()));
        for (path, size) in &plan.tmpfs {
            let what = format!("--tmpfs {path}");
            let (fd, inside) = resolve(overlay, path, "--tmpfs")
                .map_err(nothing)?
                .ok_or_else(|| missing(what.clone(), path))?;
            claim(&inside, what)?;
            out.tmpfs.push((Spot { fd, inside }, size.clone()));
        }
        for (host, path) in &plan.binds {
            let what = format!("--bind {}:{path}", host.display());
            let (fd, inside) = resolve(overlay, path, "--bind")
                .map_err(nothing)?
                .ok_or_else(|| missing(what.clone(), path))?;
            claim(&inside, what)?;
            out.binds.push((Spot { fd, inside }, host.clone()));
        }
        if plan.default_tmpfs {
            for path in DEFAULT_TMPFS {
                match resolve(overlay, path, "the default tmpfs on") {
                    Ok(Some((fd, inside))) => {
                        if inside == "/" || taken.iter().any(|(t, _)| overlap(t, &inside)) {
                            tracing::info!(
                                "no default tmpfs on {path}: it is {inside} in the image, where \
                                 something else is mounted"
                            );
                            continue;
                        }
                        taken.push((inside.clone(), format!("the tmpfs on {path}")));
                        out.tmpfs.push((Spot { fd, inside }, None));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("no tmpfs on {path}: {}", e.message()),
                }
            }
        }
        Ok(out)
    }

    /// The per-mount flags of `fd`'s mount as [`MountFlags`], for a bind remount that keeps
    /// them (`noexec`, `ro`, … of the host directory's mount stay).
    fn mount_flags_of(fd: &OwnedFd, path: &Path) -> Result<MountFlags> {
        use rustix::fs::StatVfsMountFlags as V;
        let flags = rustix::fs::fstatvfs(fd)
            .map_err(|e| sys("looking at", path, e))?
            .f_flag;
        let mut out = MountFlags::empty();
        for (v, m) in [
            (V::RDONLY, MountFlags::RDONLY),
            (V::NOSUID, MountFlags::NOSUID),
            (V::NODEV, MountFlags::NODEV),
            (V::NOEXEC, MountFlags::NOEXEC),
            (V::NOATIME, MountFlags::NOATIME),
            (V::NODIRATIME, MountFlags::NODIRATIME),
            (V::RELATIME, MountFlags::RELATIME),
        ] {
            if flags.contains(v) {
                out |= m;
            }
        }
        Ok(out)
    }

    /// Mounts the overlay at DIR, then the tmpfs and bind mounts inside it; on any error
    /// what was mounted is unmounted again, and DIR removed if this made it. DIR is locked
    /// (`flock`) meanwhile, so two mounts cannot both find it empty and stack.
    pub(super) fn mount_now(plan: &Plan) -> Result<Vec<PathBuf>> {
        let created = make_dir(&plan.dir)?;
        let result = lock_and_mount(plan);
        if result.is_err() {
            for d in created.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
        result
    }

    /// DIR must be an empty directory that nothing is mounted on (a mount there would hide
    /// what it holds, or stack on the other mount); `done` ends the message.
    fn check_free(dir: &Path, done: &str) -> Result<()> {
        let refuse = |why: &str| {
            Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("{} {why}; {done}", dir.display()),
            )
            .with_path(dir))
        };
        let mounted_here = crate::store::layout::mount_table()?
            .iter()
            .any(|m| m.point == dir);
        if mounted_here {
            return refuse("is a mount point already (umount it first)");
        }
        match std::fs::read_dir(dir).map(|mut rd| rd.next().is_none()) {
            Ok(true) => Ok(()),
            Ok(false) => refuse(
                "is not empty; mount onto an empty directory (a mount would hide what is there)",
            ),
            Err(e) => Err(Error::io("reading", dir, e)),
        }
    }

    /// Creates DIR and missing parents; returns those it made, outermost first.
    fn make_dir(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut made: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| std::fs::symlink_metadata(a).is_err())
            .map(Path::to_path_buf)
            .collect();
        made.reverse();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        Ok(made)
    }

    fn lock_and_mount(plan: &Plan) -> Result<Vec<PathBuf>> {
        let dir = &plan.dir;
        let handle = std::fs::File::open(dir).map_err(|e| Error::io("opening", dir, e))?;
        fs4::fs_std::FileExt::lock_exclusive(&handle).map_err(|e| Error::io("locking", dir, e))?;
        check_free(dir, "nothing was mounted")?;
        let overlay = overlay(plan)?;
        let targets = targets(&overlay, plan)?;
        let both =
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
        move_mount(&overlay, "", &handle, "", both)
            .map_err(|e| sys("mounting the image at", dir, e))?;
        let mut done = vec![dir.clone()];
        let result = (|| -> Result<()> {
            for (t, size) in &targets.tmpfs {
                let at = dir.join(t.inside.trim_start_matches('/'));
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
            for (t, host) in &targets.binds {
                let at = dir.join(t.inside.trim_start_matches('/'));
                let tree = open_tree(
                    CWD,
                    host,
                    OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
                )
                .map_err(|e| match e {
                    Errno::INVAL => Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "--bind {}: it cannot be bound (an unbindable mount, or inside one: \
                             see findmnt -o TARGET,PROPAGATION); nothing was mounted",
                            host.display()
                        ),
                    ),
                    e => sys("binding", host, e),
                })?;
                let mut flags = mount_flags_of(&tree, host)?;
                move_mount(&tree, "", &t.fd, "", both).map_err(|e| sys("binding onto", &at, e))?;
                done.push(at.clone());
                // The bind now attached: `nosuid,nodev` added to the host mount's own flags
                // (a bind remount sets them all, so those are kept).
                if !plan.suid {
                    flags |= MountFlags::NOSUID;
                }
                if !plan.dev {
                    flags |= MountFlags::NODEV;
                }
                let attached = format!("/proc/self/fd/{}", tree.as_raw_fd());
                mount_remount(attached.as_str(), MountFlags::BIND | flags, "")
                    .map_err(|e| sys("restricting the bind on", &at, e))?;
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
        let lowers: Vec<String> = lowers(plan)?.iter().map(|p| escape(p)).collect();
        let mut option = String::from("ro");
        option.push_str(&restrictions(plan));
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

    /// `,nosuid,nodev` as the plan asks.
    fn restrictions(plan: &Plan) -> String {
        let mut out = String::new();
        if !plan.suid {
            out.push_str(",nosuid");
        }
        if !plan.dev {
            out.push_str(",nodev");
        }
        out
    }

    /// A path as a unit file's value. A unit file is lines of `Key=value` where `%` starts a
    /// specifier, a backslash at the end joins the next line and white space around a value
    /// is dropped: a path with a line break, another control character, a `%`, a backslash
    /// or white space at either end could not be written faithfully (or would add
    /// settings), so it is refused.
    fn unit_path(p: &Path, what: &str) -> Result<String> {
        let text = p.to_string_lossy();
        let padded = text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace);
        if padded || text.contains(['%', '\\']) || text.chars().any(crate::text::is_unsafe) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{what} {:?} has a %, a backslash, a control character or white space at an \
                     end, which a systemd unit cannot hold; no unit was written",
                    text
                ),
            ));
        }
        Ok(text.into_owned())
    }

    /// Writes the `.mount` units (overlay, then tmpfs, then binds), each after the overlay.
    pub(super) fn write_units(
        plan: &Plan,
        reference: &str,
        unit_dir: &Path,
        enable: bool,
    ) -> Result<Vec<PathBuf>> {
        let option = lowerdir_option(plan)?;
        let dir = unit_path(&plan.dir, "the mount point")?;
        // systemd makes a missing mount point; one that exists is checked as for a mount now.
        if plan.dir.exists() {
            check_free(&plan.dir, "no unit was written")?;
        }
        if unit_dir.exists() && !unit_dir.is_dir() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "--unit-dir {} is not a directory; no unit was written",
                    unit_dir.display()
                ),
            )
            .with_path(unit_dir));
        }
        for l in &plan.layers {
            unit_path(l, "the layer directory")?;
        }
        // Targets are resolved in the image itself, mounted detached for the purpose; every
        // path a unit names is checked as it will be written.
        let overlay = overlay(plan)?;
        let targets = targets(&overlay, plan)?;
        drop(overlay);
        let unit_name = |p: &Path| format!("{}.mount", systemd_escape_path(p));
        let top = unit_name(&plan.dir);
        let description = crate::text::printable(reference).replace('%', "%%");
        let mut units = vec![(
            top.clone(),
            format!(
                "[Unit]\nDescription=oci-packer: {description} at {dir}\n\n[Mount]\nWhat=overlay\nWhere={dir}\nType=overlay\nOptions={option}\n\n[Install]\nWantedBy=multi-user.target\n",
            ),
        )];
        let after = format!("Requires={top}\nAfter={top}\n");
        for (t, size) in &targets.tmpfs {
            let at = plan.dir.join(t.inside.trim_start_matches('/'));
            let shown = unit_path(&at, "the tmpfs mount point")?;
            let options = match size {
                // `%` is a specifier in a unit file: written `%%`.
                Some(s) => format!("nosuid,nodev,size={}", s.replace('%', "%%")),
                None => "nosuid,nodev".to_string(),
            };
            units.push((
                unit_name(&at),
                format!(
                    "[Unit]\nDescription=oci-packer: tmpfs at {shown}\n{after}\n[Mount]\nWhat=tmpfs\nWhere={shown}\nType=tmpfs\nOptions={options}\n\n[Install]\nWantedBy=multi-user.target\n",
                ),
            ));
        }
        for (t, host) in &targets.binds {
            let at = plan.dir.join(t.inside.trim_start_matches('/'));
            let shown = unit_path(&at, "the bind mount point")?;
            let what = unit_path(host, "--bind")?;
            let options = format!("bind{}", restrictions(plan));
            units.push((
                unit_name(&at),
                format!(
                    "[Unit]\nDescription=oci-packer: {what} at {shown}\n{after}\n[Mount]\nWhat={what}\nWhere={shown}\nType=none\nOptions={options}\n\n[Install]\nWantedBy=multi-user.target\n",
                ),
            ));
        }
        std::fs::create_dir_all(unit_dir).map_err(|e| Error::io("creating", unit_dir, e))?;
        // Units of other programs are never replaced (ours are, by a new --persistent).
        for (name, _) in &units {
            let path = unit_dir.join(name);
            if let Ok(old) = std::fs::read(&path) {
                if !old.starts_with(b"[Unit]\nDescription=oci-packer: ") {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "{} exists and was not written by oci-packer; remove it or choose \
                             another directory; no unit was written",
                            path.display()
                        ),
                    )
                    .with_path(&path));
                }
            }
        }
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
        let mut points: Vec<(usize, PathBuf)> = crate::store::layout::mount_table()?
            .into_iter()
            .enumerate()
            .filter(|(_, m)| m.point.starts_with(dir))
            .map(|(i, m)| (i, m.point))
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
        if points.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("nothing is mounted at or below {}", dir.display()),
            )
            .with_path(dir));
        }
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
