//! The graph copy engine: moves a DAG of blobs from one store to another —
//! children before parents, each digest once, skipping what the destination has, with
//! bounded concurrency and the first error cancelling the rest. `pack` and `copy` both use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::Descriptor;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Error, ErrorKind, Result};
use crate::graph::{check_path, successors};
use crate::mediatype;
use crate::mediatype::TITLE;
use crate::progress::{Progress, ProgressEvent};
use crate::store::{fetch_small, PushOutcome, Target};

/// Whole-blob transfers tried before a network failure is final: a body cut off mid-stream
/// is fetched again from its start (each request inside has the transport's retries too).
const TRANSFER_RETRIES: usize = 2;

/// What a copy did, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyStats {
    /// Blobs written.
    pub stored: usize,
    /// Blobs the destination had.
    pub skipped: usize,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// The engine's capability for large files whose digest staging does not know yet: the
/// destination takes the file while computing its digest ([`Target::push_hashing`]), and
/// the blob counts as stored by the copy that follows (which finds it present).
#[derive(Debug)]
pub(crate) struct Taker {
    target: Arc<dyn Target>,
    taken: Mutex<HashMap<String, u64>>,
}

impl Taker {
    /// A taker into `target`.
    pub fn new(target: Arc<dyn Target>) -> Taker {
        Taker {
            target,
            taken: Mutex::default(),
        }
    }

    /// Records that this taker stored `digest` (`size` bytes).
    fn took(&self, digest: &crate::digest::Digest, size: u64) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.as_str().to_string(), size);
    }

    /// The size of `digest` when this taker stored it.
    fn taken(&self, digest: &str) -> Option<u64> {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .copied()
    }
}

#[async_trait::async_trait]
impl crate::source::TakeHashing for Taker {
    async fn take(
        &self,
        content: &crate::store::staging::Hashable,
        size: u64,
        progress: &Progress,
    ) -> Result<Option<crate::digest::Digest>> {
        let digest = self.target.push_hashing(content, size, progress).await?;
        if let Some(d) = &digest {
            self.took(d, size);
        }
        Ok(digest)
    }

    fn take_read(
        &self,
        read: &mut dyn std::io::Read,
        from: &std::path::Path,
    ) -> Result<Option<(crate::digest::Digest, u64)>> {
        let stored = self.target.store_hashing(read, from)?;
        if let Some((d, size)) = &stored {
            self.took(d, *size);
        }
        Ok(stored)
    }
}

impl CopyStats {
    /// `{"stored", "skipped", "mounted", "bytes"}`.
    pub(crate) fn to_json(self) -> serde_json::Value {
        serde_json::json!({"stored": self.stored, "skipped": self.skipped,
            "mounted": self.mounted, "bytes": self.bytes})
    }
}

/// Children of one manifest copied at the same time, at most (transfers are bounded by the
/// slots; this bounds the futures waiting for one).
const CHILDREN_IN_FLIGHT: usize = 64;

struct Engine<'a> {
    src: &'a dyn Target,
    dst: &'a dyn Target,
    taker: Option<&'a Taker>,
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
            PushOutcome::Mounted => s.mounted += 1,
        }
    }

    /// Copies `desc` once. `path` holds the digests from the root down to its parent: a
    /// node that names one of them is a cycle (checked before its cell is touched, which
    /// would wait on itself), and a path longer than [`MAX_DEPTH`] is refused.
    fn copy_node(&'a self, desc: Descriptor, path: Arc<Vec<String>>) -> BoxFuture<'a, Result<()>> {
        async move {
            let digest = desc.digest().to_string();
            check_path(&path, &digest, || self.src.name())?;
            let cell = self.cell(&digest);
            cell.get_or_try_init(|| self.copy_once(&desc, &path))
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
        let digest = desc.digest().to_string();
        if let Some(size) = self.taker.and_then(|t| t.taken(&digest)) {
            // Stored by this pack while it was hashed (see `Taker`): reported as moved now,
            // so that the byte events of every pack add up to what it stored.
            self.count(PushOutcome::Stored, size);
            self.progress.emit(ProgressEvent::Started {
                digest: digest.clone(),
                title: title(desc),
                size,
            });
            self.progress.emit(ProgressEvent::Advanced {
                digest: digest.clone(),
                bytes: size,
            });
            self.progress.emit(ProgressEvent::Finished { digest });
            return Ok(true);
        }
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

    async fn copy_once(&'a self, desc: &Descriptor, path: &[String]) -> Result<()> {
        let media_type = desc.media_type().to_string();
        if !mediatype::is_manifest(&media_type) {
            // The slot covers the existence check too, so thousands of small blobs never
            // mean thousands of requests (or blocking threads) at once.
            let _slot = self.slot().await?;
            if self.skip(desc).await? {
                return Ok(());
            }
            if let Some(outcome) = self.dst.mount_from(desc, self.src).await? {
                self.count(outcome, desc.size());
                let digest = desc.digest().to_string();
                self.progress.emit(match outcome {
                    PushOutcome::Mounted => ProgressEvent::Mounted {
                        digest,
                        size: desc.size(),
                    },
                    _ => ProgressEvent::Finished { digest },
                });
                return Ok(());
            }
            // A blob whose transfer broke off (a dropped connection mid-download) is fetched
            // again from the start: the source can always be re-read.
            use backon::Retryable;
            return (|| async { self.transfer(desc, self.src.fetch(desc).await?).await })
                .retry(crate::transport::backoff().with_max_times(TRANSFER_RETRIES))
                .sleep(tokio::time::sleep)
                .when(|e: &Error| e.kind() == ErrorKind::Network)
                .notify(|e: &Error, wait| {
                    tracing::warn!(digest = %desc.digest(), error = %e, ?wait, "transfer failed, retrying");
                })
                .await;
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
        let mut below = path.to_vec();
        below.push(desc.digest().to_string());
        let below = Arc::new(below);
        // No slot is held while waiting for children, so deep graphs cannot deadlock. The
        // children's futures are made as they start, a bounded number at a time: a manifest
        // of 10,000 layers must not hold 10,000 of them at once (their memory was most of a
        // pack's).
        futures::stream::iter(children)
            .map(|c| self.copy_node(c, below.clone()))
            .buffer_unordered(CHILDREN_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        let _slot = self.slot().await?;
        self.transfer(desc, crate::store::Blob::Bytes(data)).await
    }

    /// Pushes one blob; the caller holds a slot.
    async fn transfer(&self, desc: &Descriptor, blob: crate::store::Blob) -> Result<()> {
        let digest = desc.digest().to_string();
        self.progress.emit(ProgressEvent::Started {
            digest: digest.clone(),
            title: title(desc),
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
            PushOutcome::Mounted => ProgressEvent::Mounted {
                digest,
                size: desc.size(),
            },
        });
        Ok(())
    }
}

/// A blob's title annotation, for progress.
fn title(desc: &Descriptor) -> Option<String> {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(TITLE))
        .cloned()
}

/// Copies the graph rooted at `root` from `src` to `dst` with at most `concurrency` blob
/// transfers at once; blobs `taker` stored count as stored. Tagging is the caller's job,
/// after this returns `Ok`.
pub async fn copy_graph(
    src: &dyn Target,
    dst: &dyn Target,
    root: &Descriptor,
    concurrency: usize,
    progress: &Progress,
    taker: Option<&Taker>,
) -> Result<CopyStats> {
    let engine = Engine {
        src,
        dst,
        taker,
        slots: Semaphore::new(concurrency.max(1)),
        visited: Mutex::new(HashMap::new()),
        stats: Mutex::new(CopyStats::default()),
        progress: progress.clone(),
    };
    engine.copy_node(root.clone(), Arc::default()).await?;
    let stats = *engine.stats.lock().unwrap_or_else(|p| p.into_inner());
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;
    use oci_spec::image::Descriptor;

    use super::copy_graph;
    use crate::digest::Digest;
    use crate::error::{Error, ErrorKind, Result};
    use crate::json::canonical_json;
    use crate::progress::Progress;
    use crate::store::{Blob, PushOutcome, Target};

    /// An in-memory store that records pushes and can be slow or fail on purpose.
    #[derive(Debug, Default)]
    struct Mem {
        blobs: Mutex<HashMap<String, Bytes>>,
        pushed: Mutex<Vec<String>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        delay_ms: u64,
        fail: Option<String>,
    }

    impl Mem {
        fn add(&self, media_type: &str, data: &[u8]) -> Descriptor {
            let d = Descriptor::new(
                media_type.into(),
                data.len() as u64,
                Digest::of(data).to_oci(),
            );
            self.blobs
                .lock()
                .expect("lock")
                .insert(d.digest().to_string(), Bytes::copy_from_slice(data));
            d
        }

        fn has(&self, d: &Descriptor) -> bool {
            self.blobs
                .lock()
                .expect("lock")
                .contains_key(&d.digest().to_string())
        }
    }

    #[async_trait]
    impl Target for Mem {
        fn name(&self) -> String {
            "memory".into()
        }
        fn location(&self) -> crate::store::Location {
            crate::store::Location::Other(self.name())
        }
        fn as_dyn(&self) -> &dyn Target {
            self
        }
        async fn resolve(&self, reference: &str) -> Result<Descriptor> {
            Err(Error::new(ErrorKind::NotFound, reference.to_string()))
        }
        async fn exists(&self, desc: &Descriptor) -> Result<bool> {
            Ok(self.has(desc))
        }
        async fn fetch(&self, desc: &Descriptor) -> Result<Blob> {
            let b = self
                .blobs
                .lock()
                .expect("lock")
                .get(&desc.digest().to_string())
                .cloned();
            b.map(Blob::Bytes)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "missing"))
        }
        async fn push(&self, desc: &Descriptor, blob: Blob, _p: &Progress) -> Result<PushOutcome> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(self.delay_ms)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let digest = desc.digest().to_string();
            if self.fail.as_deref() == Some(digest.as_str()) {
                return Err(Error::new(ErrorKind::Io, "disk full"));
            }
            let Blob::Bytes(b) = blob else {
                panic!("memory source gives bytes")
            };
            self.blobs.lock().expect("lock").insert(digest.clone(), b);
            self.pushed.lock().expect("lock").push(digest);
            Ok(PushOutcome::Stored)
        }
    }

    struct Graph {
        root: Descriptor,
        manifests: Vec<(Descriptor, Vec<Descriptor>)>,
        layers: Vec<Descriptor>,
    }

    /// index → two manifests; layer 0 is shared by both and repeated inside the first.
    fn graph(src: &Mem) -> Graph {
        let config = src.add(crate::mediatype::OCI_EMPTY, b"{}");
        let layers: Vec<Descriptor> = (0..6)
            .map(|i| src.add("application/octet-stream", format!("layer {i}").as_bytes()))
            .collect();
        let mut manifests = Vec::new();
        for children in [vec![0, 1, 2, 0], vec![0, 3, 4, 5]] {
            let ls: Vec<Descriptor> = children.iter().map(|&i| layers[i].clone()).collect();
            let json = serde_json::json!({"schemaVersion": 2, "mediaType": crate::mediatype::OCI_MANIFEST,
                "config": config, "layers": ls});
            let m = src.add(
                crate::mediatype::OCI_MANIFEST,
                &canonical_json(&json).expect("json"),
            );
            let mut kids = vec![config.clone()];
            kids.extend(ls);
            manifests.push((m, kids));
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": crate::mediatype::OCI_INDEX,
            "manifests": manifests.iter().map(|m| m.0.clone()).collect::<Vec<_>>()});
        let root = src.add(
            crate::mediatype::OCI_INDEX,
            &canonical_json(&index).expect("json"),
        );
        Graph {
            root,
            manifests,
            layers,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn children_before_parents_each_digest_once() {
        let src = Mem::default();
        let g = graph(&src);
        let dst = Mem {
            delay_ms: 5,
            ..Mem::default()
        };
        let stats = copy_graph(&src, &dst, &g.root, 3, &Progress::default(), None)
            .await
            .expect("copy");
        let pushed = dst.pushed.lock().expect("lock").clone();
        let pos = |d: &Descriptor| {
            pushed
                .iter()
                .position(|p| *p == d.digest().to_string())
                .expect("pushed")
        };
        assert_eq!(
            pushed.len(),
            1 + 6 + 2 + 1,
            "config, six layers, two manifests, index: {pushed:?}"
        );
        assert_eq!(stats.stored, pushed.len());
        for (m, kids) in &g.manifests {
            for k in kids {
                assert!(pos(k) < pos(m), "child after parent");
            }
            assert!(pos(m) < pos(&g.root));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skips_what_the_destination_has() {
        let src = Mem::default();
        let g = graph(&src);
        let dst = Mem::default();
        copy_graph(&src, &dst, &g.manifests[0].0, 4, &Progress::default(), None)
            .await
            .expect("first");
        dst.pushed.lock().expect("lock").clear();
        let stats = copy_graph(&src, &dst, &g.root, 4, &Progress::default(), None)
            .await
            .expect("copy");
        let pushed = dst.pushed.lock().expect("lock").clone();
        assert_eq!(
            pushed.len(),
            3 + 1 + 1,
            "layers 3-5, the second manifest, the index: {pushed:?}"
        );
        assert_eq!(
            stats.skipped, 3,
            "the first manifest (whole sub-graph), and the config and layer 0 the second shares"
        );
        assert!(g.layers.iter().all(|l| dst.has(l)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrency_is_bounded() {
        for limit in [1, 2, 4] {
            let src = Mem::default();
            let g = graph(&src);
            let dst = Mem {
                delay_ms: 20,
                ..Mem::default()
            };
            copy_graph(&src, &dst, &g.root, limit, &Progress::default(), None)
                .await
                .expect("copy");
            let max = dst.max_in_flight.load(Ordering::SeqCst);
            assert_eq!(
                max, limit,
                "at most (and, with enough work, exactly) -j transfers at once"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_error_cancels_and_parents_are_never_pushed() {
        let src = Mem::default();
        let g = graph(&src);
        let dst = Mem {
            delay_ms: 30,
            fail: Some(g.layers[3].digest().to_string()),
            ..Mem::default()
        };
        let err = copy_graph(&src, &dst, &g.root, 2, &Progress::default(), None)
            .await
            .expect_err("fails");
        assert!(
            err.message().contains("disk full")
                && err.message().contains(&g.layers[3].digest().to_string())
        );
        assert!(!dst.has(&g.root));
        assert!(
            !dst.has(&g.manifests[1].0),
            "a manifest whose child failed is never pushed"
        );
    }
}
