//! `list`: a layout's entries, or one artifact's tree.

use std::collections::HashSet;

use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::error::Result;
use crate::graph::successors;
use crate::mediatype;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{fetch_small, Location, Target};

/// One entry of a layout's `index.json` (JSON field names in camelCase, like every other
/// JSON this program writes).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
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
    /// Why its graph could not be read (a missing or damaged blob, a digest algorithm or
    /// manifest this program does not read, a tag that is not a valid name); then `size`
    /// and `platforms` say only what the listing itself gives. One entry's problem does not
    /// stop the listing of the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One node of an artifact's tree.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TreeNode {
    /// The node's descriptor.
    pub descriptor: crate::descriptor::Descriptor,
    /// Its children (config, layers, members, subject), in document order.
    pub children: Vec<TreeNode>,
}

/// What `list` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Listing {
    /// Every entry of a layout.
    Layout {
        /// The layout directory.
        layout: String,
        /// Its entries.
        entries: Vec<ListEntry>,
    },
    /// Every tag of a registry repository.
    Repository {
        /// `host/repository`.
        repository: String,
        /// Its tags.
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

/// Nodes one listing shows at most: a fan-out bomb (an index naming one manifest 10,000
/// times, nested) is an error, not hours of output.
const MAX_NODES: usize = 100_000;

/// What a tree walk has seen: manifests expanded once each, nodes counted.
#[derive(Default)]
struct Walk {
    expanded: HashSet<String>,
    nodes: usize,
}

async fn tree(store: &dyn Target, root: &Descriptor) -> Result<TreeNode> {
    tree_below(store, root, &mut Walk::default(), &[]).await
}

/// The tree under `d`; a manifest seen before in this walk is shown without its children
/// again. `path` holds the digests above `d`.
async fn tree_below(
    store: &dyn Target,
    d: &Descriptor,
    walk: &mut Walk,
    path: &[String],
) -> Result<TreeNode> {
    let mt = d.media_type().to_string();
    let digest = d.digest().to_string();
    crate::graph::check_path(path, &digest, || store.name())?;
    walk.nodes += 1;
    if walk.nodes > MAX_NODES {
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::Unsupported,
            format!(
                "{}: the graph has more than {MAX_NODES} nodes; refusing to list it",
                store.name()
            ),
        ));
    }
    let mut children = Vec::new();
    let mut descriptor = d.clone();
    if mediatype::is_manifest(&mt) && walk.expanded.insert(digest.clone()) {
        let data = fetch_small(store, d).await?;
        // A descriptor from a registry HEAD has no artifactType: show the manifest's own.
        if descriptor.artifact_type().is_none() {
            let own = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| {
                    v.get("artifactType")
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                });
            descriptor.set_artifact_type(own.map(|t| t.as_str().into()));
        }
        let mut below = path.to_vec();
        below.push(digest);
        for c in successors(&mt, &data)? {
            children.push(Box::pin(tree_below(store, &c, walk, &below)).await?);
        }
    }
    Ok(TreeNode {
        descriptor: crate::descriptor::Descriptor::from_oci(&descriptor)?,
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
        .filter_map(|c| c.descriptor.platform())
        .map(ToString::to_string)
        .collect()
}

/// Lists `reference`: `oci://DIR` gives the layout's entries, `oci://DIR:REF` one tree.
/// One row of a listing: a named entry and the size and platforms of its graph.
async fn entry(store: &dyn Target, name: String, e: &Descriptor) -> Result<ListEntry> {
    let t = tree(store, e).await?;
    Ok(ListEntry {
        reference: name,
        kind: kind_of(e).to_string(),
        digest: e.digest().to_string(),
        platforms: platforms(e, &t),
        artifact_type: t.descriptor.artifact_type().map(str::to_string),
        size: t.total_size(),
        problem: None,
    })
}

/// The row of an entry whose graph could not be read: what the index or tag list says,
/// and why.
fn entry_with_problem(
    name: String,
    e: Option<&Descriptor>,
    problem: &crate::error::Error,
) -> ListEntry {
    ListEntry {
        reference: name,
        kind: e.map_or("-", kind_of).to_string(),
        digest: e.map_or_else(|| "-".to_string(), |e| e.digest().to_string()),
        platforms: e
            .and_then(|e| e.platform().as_ref())
            .map(|p| vec![Platform::from_oci(p).to_string()])
            .unwrap_or_default(),
        artifact_type: e.and_then(|e| e.artifact_type().as_ref().map(|t| t.to_string())),
        size: e.map_or(0, |e| e.size()),
        problem: Some(problem.to_string()),
    }
}

/// Lists `reference`: `oci://DIR` gives the layout's entries and `host/repo` the repository's
/// tags; `oci://DIR:REF`, `host/repo:tag` and `…@sha256:…` give one artifact's tree.
pub(crate) async fn list(
    reference: &str,
    registry: &crate::transport::RegistryOptions,
) -> Result<Listing> {
    // A name after the last '/' (or after `oci://DIR`) selects one artifact.
    let tail = reference.trim_start_matches("oci://");
    let tail = tail.rsplit('/').next().unwrap_or(tail);
    let one = match Reference::parse(reference)? {
        Reference::Layout(_) => reference.trim_start_matches("oci://").contains([':', '@']),
        Reference::Registry(_) => tail.contains([':', '@']),
    };
    let targets = crate::store::Targets::new(registry, false, None);
    let opened = targets.open_str(reference, false)?;
    let target = opened.target.as_ref();
    if one {
        let root = opened.resolve().await?;
        return Ok(Listing::Artifact {
            reference: reference.to_string(),
            tree: Box::new(tree(target, &root).await?),
        });
    }
    let mut entries = Vec::new();
    for (name, e) in target.entries().await? {
        let row = match e {
            Ok(e) => match entry(target, name.clone(), &e).await {
                Err(err) if err.concerns_one_entry() => entry_with_problem(name, Some(&e), &err),
                row => row?,
            },
            Err(err) => entry_with_problem(name, None, &err),
        };
        entries.push(row);
    }
    match target.location() {
        Location::Layout(dir) => Ok(Listing::Layout {
            layout: dir.display().to_string(),
            entries,
        }),
        Location::Repository(repository) | Location::Other(repository) => Ok(Listing::Repository {
            repository,
            entries,
        }),
    }
}
