//! A reference opened as a store: what `pack` writes to and `copy` reads from and writes to.

use bytes::Bytes;
use oci_spec::image::Descriptor;

use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::reference::{LayoutSelector, Reference};
use crate::store::layout::Layout;
use crate::store::registry::Registry;
use crate::store::{fetch_small, Store};
use crate::{mediatype, Options};

/// A layout entry or a registry repository, with the name it was opened with.
#[derive(Debug)]
pub(crate) enum Endpoint {
    Layout {
        layout: Layout,
        selector: LayoutSelector,
    },
    Registry(Registry),
}

impl Endpoint {
    /// Opens `text` for reading, or for writing (a new layout is created on first write).
    pub fn open(text: &str, options: &Options, write: bool) -> Result<Endpoint> {
        let endpoint = Endpoint::from_reference(
            Reference::parse(text)?,
            text,
            &options.registry,
            options.fsync,
            write,
        )?;
        Ok(match endpoint {
            Endpoint::Registry(r) => Endpoint::Registry(r.with_spool_dir(options.tmp_dir.clone())),
            other => other,
        })
    }

    /// Opens a parsed reference (`text` is how it was written, for messages).
    pub fn from_reference(
        reference: Reference,
        text: &str,
        registry: &crate::RegistryOptions,
        fsync: bool,
        write: bool,
    ) -> Result<Endpoint> {
        match reference {
            Reference::Layout(l) => {
                if write && matches!(l.selector, LayoutSelector::Digest(_)) {
                    return Err(Error::new(
                        ErrorKind::InvalidReference,
                        format!(
                            "{text}: a layout target needs a name (oci://DIR:REF), not a digest"
                        ),
                    )
                    .with_reference(text));
                }
                let layout = if write {
                    Layout::open(&l.dir, fsync)?
                } else {
                    Layout::open_existing(&l.dir)?
                };
                Ok(Endpoint::Layout {
                    layout,
                    selector: l.selector,
                })
            }
            Reference::Registry(r) => Ok(Endpoint::Registry(Registry::new(&r, registry)?)),
        }
    }

    pub fn store(&self) -> &dyn Store {
        match self {
            Endpoint::Layout { layout, .. } => layout,
            Endpoint::Registry(r) => r,
        }
    }

    /// The store, shared (a clone: registries share their client and tokens).
    pub fn shared_store(&self) -> std::sync::Arc<dyn Store> {
        match self {
            Endpoint::Layout { layout, .. } => std::sync::Arc::new(layout.clone()),
            Endpoint::Registry(r) => std::sync::Arc::new(r.clone()),
        }
    }

    /// The store, shared.
    pub fn into_store(self) -> std::sync::Arc<dyn Store> {
        match self {
            Endpoint::Layout { layout, .. } => std::sync::Arc::new(layout),
            Endpoint::Registry(r) => std::sync::Arc::new(r),
        }
    }

    /// The descriptor the reference names.
    pub async fn resolve(&self) -> Result<Descriptor> {
        match self {
            Endpoint::Layout { layout, selector } => layout.resolve(selector),
            Endpoint::Registry(r) => r.resolve().await,
        }
    }

    /// Names `desc` with the reference's tag (layouts: its ref name). A registry reference
    /// by digest only needs no tag, but must name this very content.
    /// `bytes` are the manifest's when the caller has them.
    pub async fn tag(&self, desc: &Descriptor, bytes: Option<Bytes>) -> Result<()> {
        match self {
            Endpoint::Layout {
                layout,
                selector: LayoutSelector::Name(name),
            } => layout.tag(desc, name).await,
            Endpoint::Layout { .. } => Ok(()),
            Endpoint::Registry(r) => {
                let reference = r.reference();
                if let Some(d) = &reference.digest {
                    if d.as_str() != desc.digest().to_string() {
                        return Err(Error::new(
                            ErrorKind::DigestMismatch,
                            format!("{reference}: the artifact has digest {}, not the one in the reference", desc.digest()),
                        ));
                    }
                }
                match &reference.tag {
                    Some(t) if reference.digest.is_none() => r.tag(desc, t, bytes).await,
                    _ => Ok(()),
                }
            }
        }
    }
}

/// When `root` is an index, the member that best matches `wanted` (SPEC §4 `--platform`);
/// a manifest is returned as it is.
pub(crate) async fn select_platform(
    store: &dyn Store,
    root: &Descriptor,
    wanted: &Platform,
) -> Result<Descriptor> {
    if !mediatype::is_index(root.media_type().as_ref()) {
        return Ok(root.clone());
    }
    let data: Bytes = fetch_small(store, root).await?;
    let index: oci_spec::image::ImageIndex = crate::json::from_slice(&data).map_err(|e| {
        Error::new(
            ErrorKind::Registry,
            format!("{}: invalid index: {e}", root.digest()),
        )
    })?;
    let members = index.manifests();
    let candidates: Vec<Platform> = members
        .iter()
        .filter_map(|m| m.platform().as_ref().map(Platform::from_oci))
        .collect();
    let with_platform: Vec<&Descriptor> =
        members.iter().filter(|m| m.platform().is_some()).collect();
    match wanted.best_match(&candidates) {
        Some(i) => Ok(with_platform[i].clone()),
        None => {
            let available: Vec<String> = candidates.iter().map(ToString::to_string).collect();
            Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no member of {} matches platform {wanted} (available: {})",
                    root.digest(),
                    if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join(", ")
                    }
                ),
            ))
        }
    }
}

/// The result of a copy.
#[derive(Debug, Clone)]
pub struct Copied {
    /// What was copied (the selected member with `--platform`).
    pub descriptor: Descriptor,
    /// The destination as written.
    pub reference: String,
    /// What moved.
    pub stats: crate::copy::CopyStats,
}

/// `copy SRC DST`: resolve, optionally pick a platform, copy the graph, then tag.
pub(crate) async fn copy(src: &str, dst: &str, options: &Options) -> Result<Copied> {
    let wanted = options
        .platform
        .as_deref()
        .map(|p| {
            Platform::parse(p)
                .map_err(|m| Error::new(ErrorKind::InvalidArgument, format!("--platform {m}")))
        })
        .transpose()?;
    let from = Endpoint::open(src, options, false)?;
    let to = Endpoint::open(dst, options, true)?;
    let mut root = from.resolve().await?;
    if let Some(p) = &wanted {
        root = select_platform(from.store(), &root, p).await?;
    }
    let stats = crate::copy::copy_graph(
        from.store(),
        to.store(),
        &root,
        options.concurrency,
        &options.progress,
    )
    .await
    .map_err(|e| e.context(format!("copying {src} to {dst}")))?;
    to.tag(&root, None).await?;
    tracing::info!(src, dst, digest = %root.digest(), stored = stats.stored, mounted = stats.mounted, "copied");
    Ok(Copied {
        descriptor: root,
        reference: dst.to_string(),
        stats,
    })
}
