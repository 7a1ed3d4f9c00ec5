//! oci-packer turns a declarative YAML *pack file* into an OCI artifact — an image manifest,
//! or an image index with platform variants — and writes it to any OCI registry or an OCI
//! image layout. Same inputs, same digest, on any machine.
//!
//! The public API is a blocking façade: [`pack`], [`validate`], [`list`], [`copy`],
//! [`extract`], [`verify`], [`delete`], [`gc`], [`mount`], [`umount`], [`login`], [`logout`]. It owns one tokio runtime and may be called from inside another runtime.
//!
//! ```no_run
//! let packed = oci_packer::pack("examples/pack.yaml", "oci://build/layout:v1", &Default::default())?;
//! println!("{}", packed.descriptor.digest());
//! # Ok::<(), oci_packer::Error>(())
//! ```
#![deny(missing_docs)]

use std::path::PathBuf;

mod archive;
mod assemble;
mod copy;
mod delete;
mod descriptor;
mod digest;
mod engine;
mod error;
mod extract;
mod fsutil;
mod graph;
#[doc(hidden)]
pub mod json;
mod list;
pub mod mediatype;
mod mount;
mod options;
mod pack;
pub mod packfile;
mod platform;
mod progress;
mod proxy;
mod reference;
mod runtime;
mod source;
mod store;
mod text;
mod time;
mod transport;
mod verify;

#[doc(hidden)]
pub mod cli;

pub use copy::Copied;
pub use delete::{Deleted, RemovedBlob};
pub use descriptor::{Descriptor, Platform};
pub use engine::CopyStats;
pub use error::{Error, ErrorKind, Problem, Result};
pub use extract::Extracted;
pub use list::{ListEntry, Listing, TreeNode};
pub use mount::{MountSpec, Mounted, Unmounted};
pub use options::{
    Options, DEFAULT_CONCURRENCY, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MAX_CONCURRENCY,
};
pub use pack::Packed;
pub use packfile::{ConfigSpec, ItemSpec, PackFile, PackInput};
pub use progress::{Progress, ProgressEvent, ProgressFields};
pub use proxy::{Proxy, ServeSpec};
pub use runtime::Cancel;

/// This library's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub use transport::RegistryOptions;
pub use verify::{BlobProblem, Verification};

/// Builds the pack and writes it to `target` (`oci://DIR[:REF]`); returns the root.
///
/// Nothing is written when the pack file is invalid; a failure never leaves `REF` pointing
/// at missing content.
pub fn pack(input: impl Into<PackInput>, target: &str, options: &Options) -> Result<Packed> {
    options.check()?;
    let plan = packfile::load_plan(&input.into())?;
    let (options, _scope) = for_operation(options);
    runtime::block_on_cancellable(pack::pack(&plan, target, &options), options.cancel.as_ref())
}

/// `options` with its progress observer scoped to one operation (see
/// [`Progress::for_operation`]): no event after the call returns.
fn for_operation(options: &Options) -> (Options, progress::ProgressScope) {
    let (progress, scope) = options.progress.for_operation();
    (
        Options {
            progress,
            ..options.clone()
        },
        scope,
    )
}

/// Checks a pack without reading any source; returns every problem (empty when valid).
///
/// Fails only when the pack file itself cannot be read.
pub fn validate(input: impl Into<PackInput>) -> Result<Vec<Problem>> {
    Ok(packfile::load(&input.into())?.err().unwrap_or_default())
}

/// Lists a layout's entries (`oci://DIR`), a repository's tags (`host/repo`), or one
/// artifact's tree (`oci://DIR:REF`, `host/repo:tag`, `…@sha256:…`).
pub fn list(reference: &str, options: &Options) -> Result<Listing> {
    options.check()?;
    runtime::block_on_cancellable(
        list::list(reference, &options.registry),
        options.cancel.as_ref(),
    )
}

/// Copies an artifact between registries and layouts, in any direction (`copy SRC DST`):
/// the whole graph, or with [`Options::platform`] one member of an index. Digests are kept
/// byte for byte; the destination is tagged only after everything arrived.
pub fn copy(src: &str, dst: &str, options: &Options) -> Result<Copied> {
    options.check()?;
    let (options, _scope) = for_operation(options);
    runtime::block_on_cancellable(copy::copy(src, dst, &options), options.cancel.as_ref())
}

/// Hashes every blob of an artifact's graph again (`verify REF`: a layout `oci://DIR:REF` or
/// a registry `host/repo:tag`, `…@sha256:…`). Problems — a blob missing, of another size or
/// digest, unreadable — are listed in the result, not returned as errors; an error means the
/// artifact itself could not be found or read (its reference, the registry, the login).
pub fn verify(reference: &str, options: &Options) -> Result<Verification> {
    options.check()?;
    runtime::block_on_cancellable(
        verify::verify(reference, &options.registry),
        options.cancel.as_ref(),
    )
}

/// Deletes an entry of a layout (`oci://DIR:REF`, `oci://DIR@sha256:…`) and every blob no
/// remaining entry reaches, under the layout's exclusive lock; or, with [`Options::force`],
/// the manifest a registry reference resolves to (and so every tag on it). With
/// [`Options::dry_run`] nothing changes and the result says what would go.
pub fn delete(reference: &str, options: &Options) -> Result<Deleted> {
    options.check()?;
    runtime::block_on_cancellable(delete::delete(reference, options), options.cancel.as_ref())
}

/// Collects a layout (`oci://DIR`): removes every blob no entry reaches, and this program's
/// temp files older than an hour; [`Options::dry_run`] as for [`delete`].
pub fn gc(reference: &str, options: &Options) -> Result<Deleted> {
    options.check()?;
    runtime::block_on_cancellable(delete::gc(reference, options), options.cancel.as_ref())
}

/// Extracts an artifact (`extract REF OUTDIR`; a layout or registry reference) into files
/// and a `pack.yaml` that packs them again to the same root digest (SPEC §7.1). `OUTDIR`
/// must be missing or empty unless [`Options::force`]; [`Options::platform`] picks one
/// member, [`Options::unpack`] extracts foreign archive layers, [`Options::images`] copies
/// image members into `OUTDIR/images`. Titles that would land outside `OUTDIR` or collide
/// are refused ([`ErrorKind::UnsafeContent`]) before anything is written; on any error
/// nothing extract wrote is left.
pub fn extract(
    reference: &str,
    out_dir: impl AsRef<std::path::Path>,
    options: &Options,
) -> Result<Extracted> {
    options.check()?;
    let (options, _scope) = for_operation(options);
    let out_dir = out_dir.as_ref();
    let work = extract::WorkDir::new(out_dir, options.force)?;
    // Returns once every blocking task of the extraction has ended (cancelled or not), so
    // the work directory is cleaned up after the last write.
    let result = runtime::block_on_cancellable(
        extract::extract(reference, out_dir, work.temp(), &options),
        options.cancel.as_ref(),
    );
    work.finish(result)
}

/// Mounts an image of a layout (`mount oci://DIR:REF MOUNTPOINT`, Linux, root) as one
/// read-only overlayfs — an index's member for this machine's platform, or
/// [`Options::platform`] — its layers unpacked on demand, `nosuid,nodev` unless
/// [`MountSpec::suid`]/[`MountSpec::dev`], with the tmpfs and bind mounts of `spec` inside;
/// or, with [`MountSpec::persistent`], writes systemd `.mount` units instead (SPEC §7.5).
/// Nothing is mounted unless all of it can be. Errors: not root or not Linux
/// ([`ErrorKind::Unsupported`]), not an image, a mount point not empty, a target that
/// leaves the image ([`ErrorKind::UnsafeContent`]).
pub fn mount(
    reference: &str,
    dir: impl AsRef<std::path::Path>,
    spec: &MountSpec,
    options: &Options,
) -> Result<Mounted> {
    options.check()?;
    runtime::block_on_cancellable(
        mount::mount(reference, dir.as_ref(), spec, options),
        options.cancel.as_ref(),
    )
}

/// Unmounts everything mounted at and below `dir`, deepest first (`umount DIR`; `lazy`:
/// detach busy mounts). Errors list every mount that could not be unmounted.
pub fn umount(dir: impl AsRef<std::path::Path>, lazy: bool) -> Result<Unmounted> {
    mount::umount(dir.as_ref(), lazy)
}

/// Serves the files (titled layers) of the artifacts of `upstream` — a registry host
/// (`host[:port]`, with the options' credentials and TLS settings) or a layout
/// (`oci://DIR`) — over HTTP on `spec.addr` (`proxy`, SPEC §8), until the options' cancel
/// handle fires; then in-flight responses finish (at most 10 s) and it returns `Ok`. Use
/// [`Proxy::bind`] to learn the address before serving. Errors: a bad upstream or address
/// ([`ErrorKind::InvalidArgument`]), an address that cannot be bound ([`ErrorKind::Io`]).
pub fn serve(upstream: &str, spec: &ServeSpec, options: &Options) -> Result<()> {
    options.check()?;
    Proxy::bind(upstream, spec, options)?.run()
}

/// Checks credentials against `host` and stores them in the Docker config (`login`);
/// returns the config file written.
pub fn login(host: &str, options: &RegistryOptions) -> Result<PathBuf> {
    let (Some(username), Some(password)) = (&options.username, &options.password) else {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "login needs a user name (-u) and a password (-p or --password-stdin)",
        ));
    };
    let reference = reference::RegistryRef::for_host(host)?;
    let registry = store::registry::Registry::new(&reference, options)?;
    runtime::block_on(registry.ping())??;
    let cred = store::registry::credentials::Credential {
        username: username.clone(),
        password: password.clone(),
    };
    store::registry::credentials::store(&reference.host, &cred, options.config.as_deref())
}

/// Removes stored credentials for `host` from the Docker config (`logout`); false when there
/// were none.
pub fn logout(host: &str, options: &RegistryOptions) -> Result<bool> {
    let reference = reference::RegistryRef::for_host(host)?;
    store::registry::credentials::remove(&reference.host, options.config.as_deref())
}
