//! `copy SRC DST`: resolve, optionally pick a platform, copy the graph, then tag.

use crate::engine::CopyStats;
use crate::error::Result;
use crate::options::Options;
use crate::store::open::select_wanted_platform;
use crate::store::Targets;

/// The result of a copy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Copied {
    /// What was copied (the selected member with `--platform`).
    pub descriptor: crate::descriptor::Descriptor,
    /// The destination as written.
    pub reference: String,
    /// What moved.
    pub stats: CopyStats,
}

impl Copied {
    /// The result as JSON text, the same for every binding: the copied descriptor's fields
    /// plus `reference` and `stats` (`stored`, `skipped`, `mounted`, `bytes`).
    pub fn to_json(&self) -> Result<String> {
        crate::pack::result_json(&self.descriptor, &self.reference, self.stats.to_json())
    }
}

/// `copy SRC DST`: resolve, optionally pick a platform, copy the graph, then tag.
pub(crate) async fn copy(src: &str, dst: &str, options: &Options) -> Result<Copied> {
    let wanted = options.wanted_platform()?;
    let targets = Targets::new(&options.registry, options.fsync, options.tmp_dir.clone());
    let from = targets.open_str(src, false)?;
    let to = targets.open_str(dst, true)?;
    if options.unpack {
        crate::store::require_layout_for_unpack(to.target.as_ref())?;
    }
    let mut root = from.resolve().await?;
    if let Some(p) = &wanted {
        root = select_wanted_platform(from.target.as_ref(), &root, p, src).await?;
    }
    let stats = crate::engine::copy_graph(
        from.target.as_ref(),
        to.target.as_ref(),
        &root,
        options.concurrency,
        &options.progress,
        None,
    )
    .await
    .map_err(|e| e.context(format!("copying {src} to {dst}")))?;
    if options.unpack {
        to.target.unpack_layers(&root, options.into()).await?;
    }
    to.tag(&root, None).await?;
    tracing::info!(src, dst, digest = %root.digest(), stored = stats.stored, mounted = stats.mounted, "copied");
    // The source's entry name (a layout's ref.name) is not the copy's: the result is the
    // content's descriptor, as a registry source gives it.
    let mut descriptor = root.clone();
    if let Some(mut a) = descriptor.annotations().clone() {
        a.remove(crate::store::layout::REF_NAME);
        descriptor.set_annotations((!a.is_empty()).then_some(a));
    }
    Ok(Copied {
        descriptor: crate::descriptor::Descriptor::from_oci(&descriptor)?,
        reference: dst.to_string(),
        stats,
    })
}
