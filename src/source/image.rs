//! `oci://`, `docker://`, `cr://` items: an image or artifact in a registry or a layout that
//! becomes a member of the index, its graph copied (or mounted) from where it is.

use std::collections::HashSet;
use std::sync::Arc;

use oci_spec::image::{Descriptor, MediaType};

use crate::error::Result;
use crate::graph::successors;
use crate::mediatype;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::open::select_platform;
use crate::store::Targets;
use crate::store::{fetch_small, Target};

/// An image item after staging.
#[derive(Clone)]
pub struct StagedImage {
    /// The index entry: the source's descriptor with the item's type, annotations, platform.
    pub entry: Descriptor,
    /// Where the graph is.
    pub store: Arc<dyn Target>,
    /// Every digest of the graph (so the staging store knows what to ask `store` for).
    pub digests: Vec<String>,
}

impl std::fmt::Debug for StagedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StagedImage({} from {})",
            self.entry.digest(),
            self.store.name()
        )
    }
}

/// Every node of the graph under `root`, manifests read (and verified) once each; iterative,
/// with a visited set and the copy engine's depth limit.
async fn walk(store: &dyn Target, root: &Descriptor) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut todo = vec![(root.clone(), Vec::<String>::new())];
    let mut out = Vec::new();
    while let Some((d, path)) = todo.pop() {
        let digest = d.digest().to_string();
        crate::graph::check_path(&path, &digest, || store.name())?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        out.push(digest.clone());
        let mt = d.media_type().to_string();
        if mediatype::is_manifest(&mt) {
            let data = fetch_small(store, &d).await?;
            let mut below = path;
            below.push(digest);
            todo.extend(
                successors(&mt, &data)?
                    .into_iter()
                    .map(|c| (c, below.clone())),
            );
        }
    }
    Ok(out)
}

/// Resolves an image item: the source's manifest (with `platform` and an index source, its
/// best member; without, the whole source), with the item's `type`, annotations and
/// platform set on the entry (normalised). `platform` is the item's platform as written, so
/// that an exact variant wins the selection.
pub async fn stage(
    reference: &Reference,
    uri: &str,
    item_type: Option<&str>,
    annotations: &std::collections::BTreeMap<String, String>,
    platform: Option<&Platform>,
    targets: &Targets,
) -> Result<StagedImage> {
    let opened = targets.open(reference.clone(), uri, false)?;
    let mut entry = opened.resolve().await?;
    if let Some(p) = platform {
        entry = select_platform(opened.target.as_ref(), &entry, p).await?;
    }
    let store = opened.target;
    let data = fetch_small(store.as_ref(), &entry).await?;
    let own_type = serde_json::from_slice::<serde_json::Value>(&data)
        .ok()
        .and_then(|v| {
            v.get("artifactType")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
    let digests = walk(store.as_ref(), &entry).await?;
    // The entry is built from scratch: a layout's ref.name must not leak into the index.
    let mut member = Descriptor::new(
        entry.media_type().clone(),
        entry.size(),
        entry.digest().clone(),
    );
    member.set_artifact_type(
        item_type
            .map(str::to_string)
            .or(own_type)
            .map(|t| MediaType::from(t.as_str())),
    );
    member.set_platform(
        platform
            .map(|p| p.normalized().to_oci())
            .or_else(|| entry.platform().clone()),
    );
    if !annotations.is_empty() {
        member.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    Ok(StagedImage {
        entry: member,
        store,
        digests,
    })
}
