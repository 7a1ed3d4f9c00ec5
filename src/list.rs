//! `list`: a layout's entries, or one artifact's tree.

use std::collections::HashSet;

use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::copy::successors;
use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::platform::Platform;
use crate::reference::{LayoutRef, Reference};
use crate::store::layout::{ref_name, Layout};
use crate::store::{fetch_small, Store};

/// One entry of a layout's `index.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    /// Its `ref.name` (empty when untagged).
    pub reference: String,
    /// `index` or `manifest`.
    pub kind: String,
    /// Its digest.
    pub digest: String,
    /// Its platforms (a manifest's own, or the members' of an index).
    pub platforms: Vec<String>,
    /// Its `artifactType`.
    pub artifact_type: Option<String>,
    /// Bytes of every distinct blob of its graph.
    pub size: u64,
}

/// One node of an artifact's tree.
#[derive(Debug, Clone, Serialize)]
pub struct TreeNode {
    /// The node's descriptor.
    pub descriptor: Descriptor,
    /// Its children (config, layers, members, subject), in document order.
    pub children: Vec<TreeNode>,
}

/// What `list` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Listing {
    /// Every entry of a layout.
    Layout {
        /// The layout directory.
        layout: String,
        /// Its entries.
        entries: Vec<ListEntry>,
    },
    /// One artifact.
    Artifact {
        /// The reference listed.
        reference: String,
        /// Its graph.
        tree: Box<TreeNode>,
    },
}

fn kind_of(d: &Descriptor) -> &'static str {
    let mt = d.media_type().to_string();
    if mediatype::is_index(&mt) {
        "index"
    } else if mediatype::is_manifest(&mt) {
        "manifest"
    } else {
        "blob"
    }
}

async fn tree(store: &dyn Store, d: &Descriptor, depth: usize) -> Result<TreeNode> {
    let mt = d.media_type().to_string();
    let mut children = Vec::new();
    if mediatype::is_manifest(&mt) && depth < 16 {
        let data = fetch_small(store, d).await?;
        for c in successors(&mt, &data)? {
            children.push(Box::pin(tree(store, &c, depth + 1)).await?);
        }
    }
    Ok(TreeNode {
        descriptor: d.clone(),
        children,
    })
}

fn walk<'a>(n: &'a TreeNode, seen: &mut HashSet<String>, out: &mut Vec<&'a TreeNode>) {
    if seen.insert(n.descriptor.digest().to_string()) {
        out.push(n);
    }
    for c in &n.children {
        walk(c, seen, out);
    }
}

impl TreeNode {
    /// Size of every distinct blob in the tree.
    pub fn total_size(&self) -> u64 {
        let mut seen = HashSet::new();
        let mut nodes = Vec::new();
        walk(self, &mut seen, &mut nodes);
        nodes.iter().map(|n| n.descriptor.size()).sum()
    }
}

fn platforms(entry: &Descriptor, t: &TreeNode) -> Vec<String> {
    if let Some(p) = entry.platform() {
        return vec![Platform::from_oci(p).to_string()];
    }
    t.children
        .iter()
        .filter_map(|c| c.descriptor.platform().as_ref())
        .map(|p| Platform::from_oci(p).to_string())
        .collect()
}

/// Lists `reference`: `oci://DIR` gives the layout's entries, `oci://DIR:REF` one tree.
pub(crate) async fn list(reference: &str) -> Result<Listing> {
    let parsed = Reference::parse(reference)?;
    let Reference::Layout(LayoutRef { dir, selector }) = parsed else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("{reference}: listing registries is not available in this build yet"),
        ));
    };
    let layout = Layout::open_existing(&dir)?;
    let rest = reference.trim_start_matches("oci://");
    let whole_layout = !rest.contains([':', '@']);
    if whole_layout {
        let mut entries = Vec::new();
        for e in layout.entries()? {
            let t = tree(&layout, &e, 0).await?;
            entries.push(ListEntry {
                reference: ref_name(&e).unwrap_or_default().to_string(),
                kind: kind_of(&e).to_string(),
                digest: e.digest().to_string(),
                platforms: platforms(&e, &t),
                artifact_type: e.artifact_type().as_ref().map(ToString::to_string),
                size: t.total_size(),
            });
        }
        return Ok(Listing::Layout {
            layout: dir.display().to_string(),
            entries,
        });
    }
    let root = layout.resolve(&selector)?;
    Ok(Listing::Artifact {
        reference: reference.to_string(),
        tree: Box::new(tree(&layout, &root, 0).await?),
    })
}
