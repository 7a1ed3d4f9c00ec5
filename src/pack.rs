//! `pack`: plan → stage every source → assemble → copy the graph into the target → tag.

use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};

use crate::assemble::{assemble, StagedItem};
use crate::engine::{copy_graph, CopyStats};
use crate::error::{Error, ErrorKind, Result};
use crate::options::Options;
use crate::packfile::{BlobPlan, ItemPlan, Plan};
use crate::source::image::{self, StagedImage};
use crate::source::{self, dir, file, http, s3, Source, StageContext, StagedBlob};
use crate::store::staging::Staging;
use crate::store::{Opened, Targets};

/// The result of a pack.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Packed {
    /// Descriptor of the root manifest or index.
    pub descriptor: crate::descriptor::Descriptor,
    /// The target as written.
    pub reference: String,
    /// The root manifest or index JSON.
    pub manifest: Vec<u8>,
    /// What moved (all zeros for a dry run).
    pub stats: CopyStats,
}

impl Packed {
    /// The result as JSON text, the same for every binding: the root descriptor's fields
    /// plus `reference` and `stats` (numbers: `stored`, `skipped`, `mounted`, `bytes`).
    pub fn to_json(&self) -> Result<String> {
        result_json(&self.descriptor, &self.reference, self.stats.to_json())
    }
}

/// A descriptor's JSON with `reference` and `stats` added (the bindings' result shape).
pub(crate) fn result_json(
    descriptor: &crate::descriptor::Descriptor,
    reference: &str,
    stats: serde_json::Value,
) -> Result<String> {
    let mut v = crate::json::to_value(descriptor)?;
    if let Some(m) = v.as_object_mut() {
        m.insert("reference".into(), reference.into());
        m.insert("stats".into(), stats);
    }
    Ok(v.to_string())
}

fn tmp_dir(options: &Options) -> PathBuf {
    options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir)
}

fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("SOURCE_DATE_EPOCH=\"{v}\" is not a number of seconds"),
            )
        }),
        _ => Ok(None),
    }
}

/// The `created` annotation: `--created` wins, then `SOURCE_DATE_EPOCH`, else none.
fn created(options: &Options, epoch: Option<u64>) -> Result<Option<String>> {
    match options.created.as_deref() {
        None => Ok(epoch.map(crate::time::rfc3339)),
        Some("now") => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Ok(Some(crate::time::rfc3339(now)))
        }
        Some(t) if crate::time::looks_like_rfc3339(t) => Ok(Some(t.to_string())),
        Some(t) => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "--created \"{t}\": give \"now\" or an RFC 3339 time such as 2024-01-02T03:04:05Z"
            ),
        )),
    }
}

async fn stage_single(
    uri: &str,
    src: &Source,
    ctx: &StageContext,
    media_type: Option<String>,
    annotations: std::collections::BTreeMap<String, String>,
    pin: Option<&crate::digest::Digest>,
) -> Result<StagedBlob> {
    match src {
        Source::File { path } => {
            file::stage(path.clone(), uri.to_string(), media_type, annotations, ctx).await
        }
        Source::Http { url } => http::stage(url.clone(), ctx, media_type, annotations).await,
        Source::S3 { object } if !object.is_prefix() => {
            let spec = s3::Spec {
                media_type,
                annotations,
                pin: pin.cloned(),
            };
            s3::stage_object(object, &spec, ctx).await
        }
        Source::S3 { .. } | Source::Dir { .. } | Source::Image { .. } => Err(Error::new(
            ErrorKind::Internal,
            format!("{uri}: not a single blob"),
        )),
    }
}

fn check_pin(
    field: &str,
    uri: &str,
    pin: Option<&crate::digest::Digest>,
    staged: &StagedBlob,
) -> Result<()> {
    let Some(pin) = pin else { return Ok(()) };
    let got = staged.descriptor.digest().to_string();
    if got != pin.as_str() {
        return Err(Error::new(
            ErrorKind::DigestMismatch,
            format!("content has digest {got}, but {field}.digest pins {pin}; update the pin or the source"),
        )
        .with_digest(pin.as_str())
        .with_reference(uri));
    }
    Ok(())
}

async fn stage_config(c: &BlobPlan, ctx: &StageContext) -> Result<StagedBlob> {
    let mut staged = stage_single(
        &c.uri,
        &c.source,
        ctx,
        c.media_type.clone(),
        c.annotations.clone(),
        c.digest.as_ref(),
    )
    .await
    .map_err(|e| e.context(&c.field))?;
    // A config carries no title: it is not a file a user pulls.
    if let Some(a) = staged.descriptor.annotations().clone() {
        let mut a = a;
        if !c.annotations.contains_key(crate::mediatype::TITLE) {
            a.remove(crate::mediatype::TITLE);
        }
        staged
            .descriptor
            .set_annotations((!a.is_empty()).then_some(a));
    }
    check_pin(&c.field, &c.uri, c.digest.as_ref(), &staged)?;
    Ok(staged)
}

async fn stage_item(
    item: &ItemPlan,
    ctx: &StageContext,
) -> Result<(StagedItem, Option<StagedImage>)> {
    if let Source::Image { reference } = &item.source {
        let image = image::stage(
            reference,
            &item.uri,
            item.media_type.as_deref(),
            &item.annotations,
            item.platform_as_written.as_deref(),
            &ctx.targets,
        )
        .await?;
        let staged = StagedItem {
            image: Some(image.entry.clone()),
            ..StagedItem::default()
        };
        return Ok((staged, Some(image)));
    }
    let layers = match (&item.source, item.archive) {
        (Source::Dir { path, .. }, Some(format)) => vec![
            dir::stage_archive(
                path.clone(),
                item.uri.clone(),
                format,
                item.media_type.clone(),
                item.annotations.clone(),
                ctx,
            )
            .await?,
        ],
        (Source::Dir { path, written }, None) => {
            dir::stage_files(
                path.clone(),
                written.clone(),
                item.uri.clone(),
                item.media_type.clone(),
                item.annotations.clone(),
                ctx,
            )
            .await?
        }
        (Source::S3 { object }, Some(format)) if object.is_prefix() => {
            let spec = s3::Spec {
                media_type: item.media_type.clone(),
                annotations: item.annotations.clone(),
                pin: None,
            };
            vec![s3::stage_prefix_archive(object, format, &spec, ctx).await?]
        }
        (Source::S3 { object }, None) if object.is_prefix() => {
            let spec = s3::Spec {
                media_type: item.media_type.clone(),
                annotations: item.annotations.clone(),
                pin: None,
            };
            s3::stage_prefix(object, &spec, ctx).await?
        }
        (src, _) => vec![
            stage_single(
                &item.uri,
                src,
                ctx,
                item.media_type.clone(),
                item.annotations.clone(),
                item.digest.as_ref(),
            )
            .await?,
        ],
    };
    if let Some(l) = layers.first() {
        check_pin(&item.field, &item.uri, item.digest.as_ref(), l)?;
    }
    let config = match &item.config {
        Some(c) => Some(stage_config(c, ctx).await?),
        None => None,
    };
    Ok((
        StagedItem {
            layers,
            config,
            image: None,
        },
        None,
    ))
}

async fn stage_labeled(
    item: &ItemPlan,
    ctx: &StageContext,
) -> Result<(StagedItem, Option<StagedImage>)> {
    stage_item(item, ctx)
        .await
        .map_err(|e| e.context(format!("{} ({})", item.field, item.uri)))
}

/// Stages and assembles a plan: everything but writing to the target.
pub(crate) async fn build(
    plan: &Plan,
    options: &Options,
    spool: Option<PathBuf>,
    targets: std::sync::Arc<Targets>,
    taker: Option<std::sync::Arc<dyn source::TakeHashing>>,
) -> Result<(crate::assemble::Assembled, Vec<StagedImage>)> {
    let epoch = source_date_epoch()?;
    let created = created(options, epoch)?;
    let ctx = StageContext {
        tmp_dir: tmp_dir(options),
        spool,
        source_date_epoch: epoch,
        http: crate::transport::client(&options.registry)?,
        progress: options.progress.clone(),
        registry: options.registry.clone(),
        targets,
        taker,
        cache: source::cache::DigestCache::for_user(!options.registry.no_cache),
        held: Default::default(),
        s3: Default::default(),
    };
    let top = match &plan.config {
        Some(c) => Some(stage_config(c, &ctx).await?),
        None => None,
    };
    let staging: Vec<_> = plan
        .items
        .iter()
        .map(|item| stage_labeled(item, &ctx))
        .collect();
    let staged: Vec<(StagedItem, Option<StagedImage>)> = futures::stream::iter(staging)
        .buffered(options.concurrency.max(1))
        .try_collect()
        .await?;
    let (items, images): (Vec<StagedItem>, Vec<Option<StagedImage>>) = staged.into_iter().unzip();
    Ok((
        assemble(plan, top, items, created.as_deref())?,
        images.into_iter().flatten().collect(),
    ))
}

/// Packs `plan` into `target` (or only builds it, for a dry run).
pub(crate) async fn pack(plan: &Plan, target: &str, options: &Options) -> Result<Packed> {
    let targets = std::sync::Arc::new(Targets::new(
        &options.registry,
        options.fsync,
        options.tmp_dir.clone(),
    ));
    let opened: Option<Opened> = if options.dry_run {
        None
    } else {
        Some(targets.open_str(target, true)?)
    };
    if let Some(t) = opened.as_ref().filter(|_| options.unpack) {
        crate::store::require_layout_for_unpack(t.target.as_ref())?;
    }
    let spool = match &opened {
        Some(t) => t.target.spool_dir().await?,
        None => None,
    };
    // Blobs the target takes while staging hashes them count as stored by this pack.
    let taker = opened
        .as_ref()
        .map(|t| std::sync::Arc::new(crate::engine::Taker::new(t.target.clone())));
    let written = write(
        plan,
        target,
        options,
        spool,
        targets,
        opened.as_ref(),
        taker,
    )
    .await;
    if let (Err(_), Some(t)) = (&written, &opened) {
        // Staging threads may still be writing into a new layout: stopped first.
        crate::fsutil::stop_blocking_work().await;
        t.target.abandon().await;
    }
    written
}

/// Stages and assembles `plan`, then (unless a dry run) writes it into `opened`.
async fn write(
    plan: &Plan,
    target: &str,
    options: &Options,
    spool: Option<PathBuf>,
    targets: std::sync::Arc<Targets>,
    opened: Option<&Opened>,
    taker: Option<std::sync::Arc<crate::engine::Taker>>,
) -> Result<Packed> {
    let as_source = taker
        .clone()
        .map(|t| t as std::sync::Arc<dyn source::TakeHashing>);
    let (built, images) = build(plan, options, spool, targets, as_source).await?;
    let mut stats = CopyStats::default();
    if let Some(t) = opened {
        let staging = Staging::new(built.blobs.iter().cloned())
            .with_images(images.into_iter().map(|i| (i.digests, i.store)));
        stats = copy_graph(
            &staging,
            t.target.as_ref(),
            &built.root,
            options.concurrency,
            &options.progress,
            taker.as_deref(),
        )
        .await?;
        if options.unpack {
            t.target.unpack_layers(&built.root, options.into()).await?;
        }
        t.tag(&built.root, Some(built.root_json.clone())).await?;
        tracing::info!(target, digest = %built.root.digest(), stored = stats.stored, skipped = stats.skipped, "packed");
    }
    Ok(Packed {
        descriptor: crate::descriptor::Descriptor::from_oci(&built.root)?,
        reference: target.to_string(),
        manifest: built.root_json.to_vec(),
        stats,
    })
}
