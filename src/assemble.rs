//! Assembly (SPEC §2.5): staged blobs + plan → config, member manifests and the root
//! manifest or index. Pure: no I/O, no clock; the same inputs give the same bytes.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndexBuilder, ImageManifestBuilder, MediaType};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::json::canonical_json;
use crate::mediatype;
use crate::packfile::Plan;
use crate::platform::Platform;
use crate::source::{Origin, StagedBlob};

/// `artifactType` when the pack gives no `type` and the config is empty: the OCI image spec
/// requires one in that case, and this is the value ORAS uses.
pub const UNKNOWN_ARTIFACT: &str = "application/vnd.unknown.artifact.v1";
/// Annotation with the creation time.
pub const CREATED: &str = "org.opencontainers.image.created";

/// An item after staging: its layers and (index mode) its member config, or an image.
#[derive(Debug, Clone, Default)]
pub struct StagedItem {
    /// Layers in order.
    pub layers: Vec<StagedBlob>,
    /// The item's own config.
    pub config: Option<StagedBlob>,
    /// An image item: its index entry (its graph stays in its source).
    pub image: Option<Descriptor>,
}

/// A member of the index being built, in order of first appearance.
enum Member {
    /// Content items of one platform: one built manifest.
    Group(Option<Platform>, Vec<StagedBlob>, Option<StagedBlob>),
    /// An image item: its own entry.
    Image(Descriptor),
}

/// The assembled artifact.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// Descriptor of the root manifest or index.
    pub root: Descriptor,
    /// Its canonical JSON.
    pub root_json: Bytes,
    /// Every blob of the graph, manifests included.
    pub blobs: Vec<StagedBlob>,
}

/// The OCI empty descriptor, with its `data` inlined, and its 2-byte blob `{}`.
pub fn empty_config() -> StagedBlob {
    let data = Bytes::from_static(b"{}");
    let mut d = Descriptor::new(mediatype::OCI_EMPTY.into(), 2, Digest::of(&data).to_oci());
    d.set_data(Some("e30=".to_string()));
    StagedBlob {
        descriptor: d,
        origin: Origin::Bytes(data),
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("cannot build the manifest: {e}"),
    )
}

fn to_map(a: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!a.is_empty()).then(|| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn json_blob(media_type: &str, json: Vec<u8>) -> StagedBlob {
    let bytes = Bytes::from(json);
    let d = Descriptor::new(
        media_type.into(),
        bytes.len() as u64,
        Digest::of(&bytes).to_oci(),
    );
    StagedBlob {
        descriptor: d,
        origin: Origin::Bytes(bytes),
    }
}

fn manifest(
    artifact_type: Option<&str>,
    config: &StagedBlob,
    layers: &[StagedBlob],
    annotations: &BTreeMap<String, String>,
) -> Result<StagedBlob> {
    let is_empty = config.descriptor.media_type().to_string() == mediatype::OCI_EMPTY;
    let artifact_type = artifact_type.or(is_empty.then_some(UNKNOWN_ARTIFACT));
    let mut b = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor.clone())
        .layers(
            layers
                .iter()
                .map(|l| l.descriptor.clone())
                .collect::<Vec<_>>(),
        );
    if let Some(t) = artifact_type {
        b = b.artifact_type(MediaType::from(t));
    }
    if let Some(a) = to_map(annotations) {
        b = b.annotations(a);
    }
    let m = b.build().map_err(internal)?;
    let bytes = canonical_json(&m)?;
    fits("manifest", bytes.len(), layers.len(), "layers")?;
    Ok(json_blob(mediatype::OCI_MANIFEST, bytes))
}

/// Registries (and every reader here) refuse manifests and indexes over 4 MiB: say so while
/// assembling, for a dry run too, rather than at the push.
fn fits(what: &str, bytes: usize, parts: usize, part_name: &str) -> Result<()> {
    if bytes as u64 > crate::store::MAX_MANIFEST_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the {what} would be {bytes} bytes with its {parts} {part_name}, more than the {} \
                 bytes (4 MiB) registries accept; pack large directories with archive:, or \
                 split the pack",
                crate::store::MAX_MANIFEST_BYTES
            ),
        ));
    }
    Ok(())
}

/// Builds the artifact. `created` is the value of the root's `created` annotation, if any.
pub fn assemble(
    plan: &Plan,
    top_config: Option<StagedBlob>,
    items: Vec<StagedItem>,
    created: Option<&str>,
) -> Result<Assembled> {
    let mut root_annotations = plan.annotations.clone();
    if let Some(c) = created {
        root_annotations.insert(CREATED.to_string(), c.to_string());
    }
    let default_config = top_config.unwrap_or_else(empty_config);
    let artifact_type = plan.artifact_type.as_deref();
    let mut blobs: Vec<StagedBlob> = Vec::new();

    let root = if !plan.index_mode {
        let layers: Vec<StagedBlob> = items.into_iter().flat_map(|i| i.layers).collect();
        let m = manifest(artifact_type, &default_config, &layers, &root_annotations)?;
        blobs.push(default_config);
        blobs.extend(layers);
        m
    } else {
        // Groups in order of first appearance; items without platform form one group too;
        // every image item is a member of its own.
        let mut members: Vec<Member> = Vec::new();
        let mut groups: std::collections::HashMap<Option<&Platform>, usize> =
            std::collections::HashMap::new();
        for (plan_item, staged) in plan.items.iter().zip(items) {
            if let Some(entry) = staged.image {
                members.push(Member::Image(entry));
                continue;
            }
            let pos = *groups
                .entry(plan_item.platform.as_deref())
                .or_insert_with(|| {
                    members.push(Member::Group(
                        plan_item.platform.as_deref().cloned(),
                        Vec::new(),
                        None,
                    ));
                    members.len() - 1
                });
            if let Member::Group(_, layers, config) = &mut members[pos] {
                layers.extend(staged.layers);
                if config.is_none() {
                    *config = staged.config;
                }
            }
        }
        let mut entries = Vec::with_capacity(members.len());
        for member in members {
            let (platform, layers, config) = match member {
                Member::Image(entry) => {
                    entries.push(entry);
                    continue;
                }
                Member::Group(p, l, c) => (p, l, c),
            };
            let config = config.unwrap_or_else(|| default_config.clone());
            let m = manifest(artifact_type, &config, &layers, &BTreeMap::new())?;
            let mut entry = m.descriptor.clone();
            let member_type = artifact_type.or((config.descriptor.media_type().to_string()
                == mediatype::OCI_EMPTY)
                .then_some(UNKNOWN_ARTIFACT));
            entry.set_artifact_type(member_type.map(MediaType::from));
            entry.set_platform(platform.as_ref().map(Platform::to_oci));
            entries.push(entry);
            blobs.push(config);
            blobs.extend(layers);
            blobs.push(m);
        }
        let mut b = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(entries);
        if let Some(t) = artifact_type {
            b = b.artifact_type(MediaType::from(t));
        }
        if let Some(a) = to_map(&root_annotations) {
            b = b.annotations(a);
        }
        let index = b.build().map_err(internal)?;
        let bytes = canonical_json(&index)?;
        fits("index", bytes.len(), index.manifests().len(), "members")?;
        json_blob(mediatype::OCI_INDEX, bytes)
    };
    let mut root_desc = root.descriptor.clone();
    root_desc.set_artifact_type(
        artifact_type
            .or((!plan.index_mode && plan.config.is_none()).then_some(UNKNOWN_ARTIFACT))
            .map(MediaType::from),
    );
    let root_json = match &root.origin {
        Origin::Bytes(b) => b.clone(),
        _ => return Err(internal("root is not in memory")),
    };
    blobs.push(root);
    Ok(Assembled {
        root: root_desc,
        root_json,
        blobs,
    })
}
