//! The graph copy engine (DESIGN §1): moves a DAG of blobs from one store to another —
//! children before parents, each digest once, skipping what the destination has, with
//! bounded concurrency and the first error cancelling the rest. `pack` and `copy` both use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{try_join_all, BoxFuture, FutureExt};
use oci_spec::image::Descriptor;
use serde::Deserialize;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::progress::{Progress, ProgressEvent};
use crate::source::TITLE;
use crate::store::{fetch_small, PushOutcome, Store};

/// What a copy did, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Blobs written.
    pub stored: usize,
    /// Blobs the destination had.
    pub skipped: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// The children of a manifest or index, in document order.
#[derive(Debug, Deserialize)]
struct Children {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
}

/// The descriptors a manifest or index points to.
pub fn successors(media_type: &str, data: &[u8]) -> Result<Vec<Descriptor>> {
    if !mediatype::is_manifest(media_type) {
        return Ok(Vec::new());
    }
    let c: Children = crate::json::from_slice(data)
        .map_err(|e| Error::new(ErrorKind::Registry, format!("invalid {media_type}: {e}")))?;
    Ok(c.config
        .into_iter()
        .chain(c.layers)
        .chain(c.manifests)
        .chain(c.subject)
        .collect())
}

struct Engine<'a> {
    src: &'a dyn Store,
    dst: &'a dyn Store,
    slots: Semaphore,
    visited: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
    stats: Mutex<CopyStats>,
    progress: Progress,
}

impl<'a> Engine<'a> {
    fn cell(&self, digest: &str) -> Arc<OnceCell<()>> {
        let mut v = self.visited.lock().unwrap_or_else(|p| p.into_inner());
        v.entry(digest.to_string()).or_default().clone()
    }

    fn count(&self, outcome: PushOutcome, size: u64) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            PushOutcome::Stored => {
                s.stored += 1;
                s.bytes += size;
            }
            PushOutcome::AlreadyExists => s.skipped += 1,
        }
    }

    fn copy_node(&'a self, desc: Descriptor) -> BoxFuture<'a, Result<()>> {
        async move {
            let digest = desc.digest().to_string();
            let cell = self.cell(&digest);
            cell.get_or_try_init(|| self.copy_once(&desc))
                .await
                .map(|_| ())
        }
        .boxed()
    }

    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.slots
            .acquire()
            .await
            .map_err(|_| Error::new(ErrorKind::Cancelled, "copy cancelled"))
    }

    /// True (and reported) when the destination has the blob already.
    async fn skip(&self, desc: &Descriptor) -> Result<bool> {
        if !self.dst.exists(desc).await? {
            return Ok(false);
        }
        self.count(PushOutcome::AlreadyExists, desc.size());
        self.progress.emit(ProgressEvent::Skipped {
            digest: desc.digest().to_string(),
            size: desc.size(),
        });
        Ok(true)
    }

    async fn copy_once(&'a self, desc: &Descriptor) -> Result<()> {
        let media_type = desc.media_type().to_string();
        if !mediatype::is_manifest(&media_type) {
            // The slot covers the existence check too, so thousands of small blobs never
            // mean thousands of requests (or blocking threads) at once.
            let _slot = self.slot().await?;
            if self.skip(desc).await? {
                return Ok(());
            }
            let blob = self.src.fetch(desc).await?;
            return self.transfer(desc, blob).await;
        }
        // A manifest in the destination means its whole sub-graph is there: we and every
        // well-behaved store write children before parents.
        let present = {
            let _slot = self.slot().await?;
            self.skip(desc).await?
        };
        if present {
            return Ok(());
        }
        let data = fetch_small(self.src, desc).await?;
        let children = successors(&media_type, &data)?;
        // No slot is held while waiting for children, so deep graphs cannot deadlock.
        try_join_all(children.into_iter().map(|c| self.copy_node(c))).await?;
        let _slot = self.slot().await?;
        self.transfer(desc, crate::store::Blob::Bytes(data)).await
    }

    /// Pushes one blob; the caller holds a slot.
    async fn transfer(&self, desc: &Descriptor, blob: crate::store::Blob) -> Result<()> {
        let digest = desc.digest().to_string();
        let title = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(TITLE))
            .cloned();
        self.progress.emit(ProgressEvent::Started {
            digest: digest.clone(),
            title,
            size: desc.size(),
        });
        let outcome = self
            .dst
            .push(desc, blob, &self.progress)
            .await
            .map_err(|e| e.context(format!("copying {digest} to {}", self.dst.name())))?;
        self.count(outcome, desc.size());
        self.progress.emit(match outcome {
            PushOutcome::Stored => ProgressEvent::Finished { digest },
            PushOutcome::AlreadyExists => ProgressEvent::Skipped {
                digest,
                size: desc.size(),
            },
        });
        Ok(())
    }
}

/// Copies the graph rooted at `root` from `src` to `dst` with at most `concurrency` blob
/// transfers at once. Tagging is the caller's job, after this returns `Ok`.
pub async fn copy_graph(
    src: &dyn Store,
    dst: &dyn Store,
    root: &Descriptor,
    concurrency: usize,
    progress: &Progress,
) -> Result<CopyStats> {
    let engine = Engine {
        src,
        dst,
        slots: Semaphore::new(concurrency.max(1)),
        visited: Mutex::new(HashMap::new()),
        stats: Mutex::new(CopyStats::default()),
        progress: progress.clone(),
    };
    engine.copy_node(root.clone()).await?;
    let stats = *engine.stats.lock().unwrap_or_else(|p| p.into_inner());
    Ok(stats)
}
