//! Validation: a [`PackFile`] becomes a [`Plan`] — sources parsed, paths resolved, platforms
//! normalised, mode decided — or every problem is reported at once, before any I/O.

use std::collections::BTreeMap;
use std::path::Path;

use super::raw::{ConfigSpec, PackFile, Positions};
use crate::digest::Digest;
use crate::error::{Problem, Problems};
use crate::platform::Platform;
use crate::source::{ArchiveFormat, Source};

/// A validated pack: what the program builds.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Root `artifactType`.
    pub artifact_type: Option<String>,
    /// Root annotations.
    pub annotations: BTreeMap<String, String>,
    /// Top-level config.
    pub config: Option<BlobPlan>,
    /// Items in pack order.
    pub items: Vec<ItemPlan>,
    /// True when the result is an image index (some item has a platform).
    pub index_mode: bool,
}

/// A single-blob source used as a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPlan {
    /// Field path for messages (`config`, `items[1].config`).
    pub field: String,
    /// The URI as written.
    pub uri: String,
    /// Parsed source.
    pub source: Source,
    /// `type`.
    pub media_type: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Pinned digest.
    pub digest: Option<Digest>,
}

/// One validated item.
#[derive(Debug, Clone)]
pub struct ItemPlan {
    /// Field path for messages (`items[2]`).
    pub field: String,
    /// The URI as written.
    pub uri: String,
    /// Parsed source.
    pub source: Source,
    /// Layer media type override.
    pub media_type: Option<String>,
    /// Normalised platform (what groups items and what is written). Boxed, like the other
    /// rare parts, so that a pack file of 100,000 items stays small.
    pub platform: Option<Box<Platform>>,
    /// The platform as written (parsed, not normalised): selects an image item's member, so
    /// that an exact variant wins.
    pub platform_as_written: Option<Box<Platform>>,
    /// Layer annotations.
    pub annotations: BTreeMap<String, String>,
    /// Member config (index mode).
    pub config: Option<Box<BlobPlan>>,
    /// Pinned digest.
    pub digest: Option<Digest>,
    /// Archive mode for `dir://`.
    pub archive: Option<ArchiveFormat>,
}

/// Reports annotations that can never fit in the manifest they land in: the bytes of its
/// annotation keys and values alone (each layer's counted once, a lower bound) pass the
/// 4 MiB a manifest may have. The problem names the largest contributor.
fn manifests_fit(c: &mut Checker<'_>, pack: &PackFile, items: &[ItemPlan], index_mode: bool) {
    use crate::store::MAX_MANIFEST_BYTES;
    type Manifest<'m> = (u64, Option<(u64, String)>);
    fn add<'m>(m: &mut Manifest<'m>, field: String, annotations: &BTreeMap<String, String>) {
        let bytes: u64 = annotations
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        m.0 += bytes;
        if m.1.as_ref().is_none_or(|(b, _)| bytes > *b) {
            m.1 = Some((bytes, field));
        }
    }
    let mut root: Manifest = (0, None);
    add(&mut root, "annotations".into(), &pack.annotations);
    let mut groups: std::collections::HashMap<Option<&Platform>, Manifest> =
        std::collections::HashMap::new();
    for it in items {
        // Image items' annotations go to their index entry (the root), like everything in
        // manifest mode.
        let m = if !index_mode || matches!(it.source, Source::Image { .. }) {
            &mut root
        } else {
            groups.entry(it.platform.as_deref()).or_insert((0, None))
        };
        add(m, format!("{}.annotations", it.field), &it.annotations);
        if let Some(cfg) = &it.config {
            add(m, format!("{}.annotations", cfg.field), &cfg.annotations);
        }
    }
    for (total, largest) in std::iter::once(root).chain(groups.into_values()) {
        if total > MAX_MANIFEST_BYTES {
            let field = largest.map(|(_, f)| f).unwrap_or_default();
            c.report(
                &field,
                format!(
                    "the annotations of one manifest add up to {total} bytes, more than the \
                     {MAX_MANIFEST_BYTES} bytes (4 MiB) a manifest may have, so it could never \
                     be pushed; this field holds the most"
                ),
            );
        }
    }
}

struct Checker<'a> {
    file: Option<&'a Path>,
    positions: &'a Positions,
    problems: Problems,
}

impl Checker<'_> {
    fn report(&mut self, field: &str, message: impl Into<String>) {
        let (line, column) = self.positions.get(field).copied().unwrap_or((0, 0));
        self.problems.push(Problem {
            file: self.file.map(Path::to_path_buf),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn media_type(&mut self, field: &str, mt: &Option<String>) -> Option<String> {
        let mt = mt.as_ref()?;
        let valid = mt.split_once('/').is_some_and(|(a, b)| {
            // RFC 6838: each part at most 127 characters.
            let ok = |s: &str| {
                !s.is_empty()
                    && s.len() <= 127
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
            };
            ok(a) && ok(b)
        });
        if !valid {
            self.report(field, format!("invalid media type \"{mt}\" (expected type/subtype of at most 127 characters each, e.g. application/vnd.example+json)"));
        }
        Some(mt.clone())
    }

    fn digest(&mut self, field: &str, d: &Option<String>) -> Option<Digest> {
        let d = d.as_ref()?;
        match Digest::parse(d) {
            Ok(d) => Some(d),
            Err(e) => {
                self.report(field, e.message().to_string());
                None
            }
        }
    }

    fn source(&mut self, field: &str, uri: &str, base: &Path) -> Option<Source> {
        if uri.is_empty() {
            return None; // reported while reading
        }
        match Source::parse(uri, base) {
            Ok(s) => Some(s),
            Err(msg) => {
                self.report(field, msg);
                None
            }
        }
    }

    fn config(&mut self, field: &str, c: &ConfigSpec, base: &Path) -> Option<BlobPlan> {
        let from_field = format!("{field}.from");
        let source = self.source(&from_field, &c.from, base);
        if source.as_ref().is_some_and(|s| !s.is_single_blob()) {
            self.report(
                &from_field,
                "a config must be a single blob (file://, http(s):// or an S3 object), not a directory, a prefix or an image",
            );
        }
        let media_type = self.media_type(&format!("{field}.type"), &c.media_type);
        let digest = self.digest(&format!("{field}.digest"), &c.digest);
        Some(BlobPlan {
            field: field.to_string(),
            uri: c.from.clone(),
            source: source?,
            media_type,
            annotations: c.annotations.clone(),
            digest,
        })
    }
}

/// Validates `pack`; `raw` are the problems found while reading it, reported together.
pub(crate) fn plan(
    pack: &PackFile,
    positions: &Positions,
    mut raw: Problems,
    file: Option<&Path>,
    base_dir: &Path,
) -> Result<Plan, Vec<Problem>> {
    for p in raw.kept() {
        p.file = file.map(Path::to_path_buf);
    }
    let mut c = Checker {
        file,
        positions,
        problems: raw,
    };
    if pack.items.is_empty()
        && !c
            .problems
            .kept()
            .iter()
            .any(|p| p.field.starts_with("items"))
    {
        c.report("items", "the pack file must contain at least one item");
    }
    let artifact_type = c.media_type("type", &pack.artifact_type);
    let config = pack
        .config
        .as_ref()
        .and_then(|cfg| c.config("config", cfg, base_dir));
    let mut items = Vec::with_capacity(pack.items.len());
    for (i, it) in pack.items.iter().enumerate() {
        let field = format!("items[{i}]");
        let source = c.source(&format!("{field}.from"), &it.from, base_dir);
        let platform_as_written = it.platform.as_ref().and_then(|p| match Platform::parse(p) {
            Ok(p) => Some(p),
            Err(msg) => {
                c.report(&format!("{field}.platform"), msg);
                None
            }
        });
        let platform = platform_as_written.as_ref().map(Platform::normalized);
        if let Some(unknown) = platform.as_ref().and_then(Platform::unknown_part) {
            tracing::warn!("{field}.platform: {unknown}; written as given");
        }
        let archive = it
            .archive
            .as_ref()
            .and_then(|a| match ArchiveFormat::parse(a) {
                Some(f) => Some(f),
                None => {
                    c.report(
                        &format!("{field}.archive"),
                        format!("unknown archive \"{a}\" (use tar, tar+gzip or tar+zstd)"),
                    );
                    None
                }
            });
        let is_dir = source.as_ref().is_some_and(Source::is_tree);
        if matches!(source, Some(Source::Image { .. })) {
            if it.config.is_some() {
                c.report(
                    &format!("{field}.config"),
                    "an image item is the member itself and cannot carry a config",
                );
            }
            if it.digest.is_some() {
                c.report(
                    &format!("{field}.digest"),
                    "pin an image by its reference instead (…@sha256:…)",
                );
            }
        }
        if it.archive.is_some() && source.is_some() && !is_dir {
            c.report(
                &format!("{field}.archive"),
                "archive applies only to dir:// sources and S3 prefixes (ending in /)",
            );
        }
        if it.digest.is_some() && is_dir && it.archive.is_none() {
            c.report(
                &format!("{field}.digest"),
                "digest pins one blob; a dir:// or S3 prefix item gives one layer per file (add archive: to pin the archive)",
            );
        }
        let media_type = c.media_type(&format!("{field}.type"), &it.media_type);
        let digest = c.digest(&format!("{field}.digest"), &it.digest);
        let item_config = it
            .config
            .as_ref()
            .and_then(|cfg| c.config(&format!("{field}.config"), cfg, base_dir));
        if let Some(source) = source {
            items.push(ItemPlan {
                field,
                uri: it.from.clone(),
                source,
                media_type,
                platform: platform.map(Box::new),
                platform_as_written: platform_as_written.map(Box::new),
                annotations: it.annotations.clone(),
                config: item_config.map(Box::new),
                digest,
                archive,
            });
        }
    }
    let index_mode = pack.items.iter().any(|i| i.platform.is_some())
        || items
            .iter()
            .any(|i| matches!(i.source, Source::Image { .. }));
    if !index_mode {
        for (i, it) in pack.items.iter().enumerate() {
            if it.config.is_some() {
                c.report(
                    &format!("items[{i}].config"),
                    "an item config applies only in index mode (when some item has a platform); \
                     use the top-level config instead",
                );
            }
        }
    } else {
        // Items of one platform group share one member manifest, hence one config.
        let mut seen: std::collections::HashMap<Option<&Platform>, (&BlobPlan, &str)> =
            std::collections::HashMap::new();
        for it in &items {
            let Some(cfg) = &it.config else { continue };
            match seen.get(&it.platform.as_deref()) {
                Some((other, first)) if *other != &**cfg => {
                    let group = it
                        .platform
                        .as_ref()
                        .map_or("items without platform".to_string(), ToString::to_string);
                    c.report(
                        &format!("{}.config", it.field),
                        format!(
                            "{first} and {} land in one member manifest ({group}) but give different \
                             configs; give the config on one item only, or the same config on both",
                            it.field
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    seen.insert(it.platform.as_deref(), (cfg, &it.field));
                }
            }
        }
    }
    manifests_fit(&mut c, pack, &items, index_mode);
    if !c.problems.is_empty() {
        c.problems
            .kept()
            .sort_by_key(|p| (p.line == 0, p.line, p.column));
        return Err(c.problems.into_vec());
    }
    Ok(Plan {
        artifact_type,
        annotations: pack.annotations.clone(),
        config,
        items,
        index_mode,
    })
}
