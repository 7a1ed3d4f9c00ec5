//! What the proxy reads from: a registry host or a layout, with the answers it may keep —
//! a tag's digest for the tag TTL, a manifest by digest for good (bounded) — and the files
//! (titled layers) of an artifact, chosen by platform as `copy --platform` chooses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::options::Options;
use crate::platform::Platform;
use crate::store::{fetch_small, Target, Targets};

/// Tags remembered at most (a client naming endless tags cannot grow this without bound).
const MAX_TAGS: usize = 4096;
/// Bytes of manifests and indexes kept by digest at most.
const MAX_MANIFEST_CACHE: u64 = 64 << 20;
/// Bytes of small files kept by digest at most (each at most the proxy's small size).
const MAX_SMALL_CACHE: u64 = 32 << 20;
/// Members of an index looked at at most (a fan-out bomb is an error, not a hang).
const MAX_MEMBERS: usize = 1024;

/// A root digest and the platform asked for.
type FilesKey = (String, Option<String>);

/// Where the proxy reads from.
#[derive(Debug)]
enum Kind {
    /// A registry host (`host[:port]`); repositories are opened per request.
    Registry(String),
    /// One layout; `/REPO/REF` names its entry `REPO:REF`.
    Layout(Arc<dyn Target>),
}

/// The upstream of a proxy, with its caches. One HTTP client and token cache serve every
/// request (the factory keeps one per host).
#[derive(Debug)]
pub(crate) struct Upstream {
    kind: Kind,
    targets: Targets,
    tag_ttl: Duration,
    tags: Mutex<HashMap<(String, String), (Descriptor, Instant)>>,
    manifests: Mutex<ByteCache>,
    /// Small files already served, verified, by digest.
    small: Mutex<ByteCache>,
    /// The files of an artifact by (root digest, platform asked for): content addressed,
    /// so never stale; bounded like the tags.
    files: Mutex<HashMap<FilesKey, Arc<Vec<File>>>>,
    /// Blobs read whole and found right, by digest (for ranges), one pass each.
    verified: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<()>>>>,
}

/// A file of an artifact: a layer with a title.
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub title: String,
    pub desc: Descriptor,
    /// The platform of the index member it is in, if any.
    pub platform: Option<String>,
}

/// An artifact found upstream.
pub(crate) struct Found {
    pub target: Arc<dyn Target>,
    pub root: Descriptor,
    /// Named by digest (cacheable for good) rather than by tag.
    pub by_digest: bool,
}

impl Upstream {
    /// `text` is `oci://DIR` or a registry host `host[:port]`.
    pub fn open(text: &str, tag_ttl: Duration, options: &Options) -> Result<Upstream> {
        let targets = Targets::new(&options.registry, false, None);
        let kind = if let Some(dir) = text.strip_prefix("oci://") {
            let layout = crate::store::layout::Layout::open_existing(std::path::Path::new(dir))?;
            Kind::Layout(Arc::new(layout))
        } else {
            let host = text.trim_end_matches('/');
            let valid = !host.is_empty()
                && !host.contains('/')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
            if !valid {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{text}: the upstream is a registry host (host[:port], e.g. \
                         registry.example.com or localhost:5000) or a layout (oci://DIR)"
                    ),
                ));
            }
            Kind::Registry(host.to_string())
        };
        Ok(Upstream {
            kind,
            targets,
            tag_ttl,
            tags: Mutex::default(),
            manifests: Mutex::new(ByteCache::new(MAX_MANIFEST_CACHE)),
            small: Mutex::new(ByteCache::new(MAX_SMALL_CACHE)),
            files: Mutex::default(),
            verified: Mutex::default(),
        })
    }

    /// What the upstream is, for messages.
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Registry(h) => h.clone(),
            Kind::Layout(t) => t.name(),
        }
    }

    /// The artifact `repo` / `reference` (a tag or `sha256:…`) names. A tag's answer is kept
    /// for the tag TTL; a digest needs no lookup beyond its descriptor.
    pub async fn find(&self, repo: &str, reference: &str) -> Result<Found> {
        let by_digest = reference.starts_with("sha256:");
        let target: Arc<dyn Target> = match &self.kind {
            Kind::Layout(t) => t.clone(),
            Kind::Registry(host) => {
                if repo.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "name a repository and a tag or digest: /REPO/REF",
                    ));
                }
                let sep = if by_digest { "@" } else { ":" };
                let text = format!("{host}/{repo}{sep}{reference}");
                self.targets.open_str(&text, false)?.target
            }
        };
        let name = match (&self.kind, repo.is_empty() || by_digest) {
            (Kind::Layout(_), false) => format!("{repo}:{reference}"),
            _ => reference.to_string(),
        };
        let key = (repo.to_string(), reference.to_string());
        let cached = self
            .tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|(_, at)| by_digest || at.elapsed() < self.tag_ttl)
            .map(|(d, _)| d.clone());
        let root = match cached {
            Some(d) => d,
            None => {
                let d = target.resolve(&name).await?;
                let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
                if tags.len() >= MAX_TAGS {
                    let ttl = self.tag_ttl;
                    tags.retain(|_, (_, at)| at.elapsed() < ttl);
                    if tags.len() >= MAX_TAGS {
                        tags.clear();
                    }
                }
                tags.insert(key, (d.clone(), Instant::now()));
                d
            }
        };
        Ok(Found {
            target,
            root,
            by_digest,
        })
    }

    /// A manifest or index by its descriptor: from the cache, or read (verified, capped)
    /// and kept.
    async fn manifest(&self, target: &dyn Target, desc: &Descriptor) -> Result<Bytes> {
        read_through(&self.manifests, target, desc).await
    }

    /// A small blob (read whole), from the cache or read (verified) from `target` and kept.
    pub async fn small_blob(&self, target: &dyn Target, desc: &Descriptor) -> Result<Bytes> {
        read_through(&self.small, target, desc).await
    }

    /// Reads the whole blob once and checks its size and digest (parallel callers wait for
    /// the same pass; a failure is not remembered, a success is, for this process).
    pub async fn verify_once(&self, target: &dyn Target, desc: &Descriptor) -> Result<()> {
        use futures::StreamExt;
        let cell = {
            let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_TAGS {
                map.clear();
            }
            map.entry(desc.digest().to_string()).or_default().clone()
        };
        let from = target.name();
        cell.get_or_try_init(|| async {
            let blob = target.fetch(desc).await?;
            let mut pieces = crate::store::blob_stream(blob, desc, &from).await?;
            while let Some(piece) = pieces.next().await {
                piece.map_err(|e| {
                    crate::store::verify::from_read_error(e, |e| {
                        Error::new(
                            ErrorKind::Network,
                            format!("reading {} from {from}: {e}", desc.digest()),
                        )
                    })
                })?;
            }
            Ok::<(), Error>(())
        })
        .await
        .map(|_| ())
    }

    /// The titled layers of the artifact: of a manifest, or of the index members chosen
    /// by `platform` (the best match, as `copy --platform` chooses, plus every member
    /// without a platform; all of them when no platform is asked for).
    pub async fn files(
        &self,
        found: &Found,
        platform: Option<&Platform>,
    ) -> Result<Arc<Vec<File>>> {
        let key = (
            found.root.digest().to_string(),
            platform.map(ToString::to_string),
        );
        if let Some(f) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        let files = Arc::new(self.read_files(found, platform).await?);
        let mut cache = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_TAGS {
            cache.clear();
        }
        cache.insert(key, files.clone());
        Ok(files)
    }

    async fn read_files(&self, found: &Found, platform: Option<&Platform>) -> Result<Vec<File>> {
        let target = found.target.as_ref();
        let root = &found.root;
        let mt = root.media_type().to_string();
        if !mediatype::is_index(&mt) {
            return self.layers(target, root, None).await;
        }
        let data = self.manifest(target, root).await?;
        let index: ImageIndex = crate::json::from_slice(&data).map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!("{}: not a valid index: {e}", root.digest()),
            )
        })?;
        let members: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|m| mediatype::is_manifest(m.media_type().as_ref()))
            .filter(|m| !mediatype::is_index(m.media_type().as_ref()))
            .collect();
        if members.len() > MAX_MEMBERS {
            return Err(Error::new(
                ErrorKind::Registry,
                format!(
                    "{}: an index of {} members, more than {MAX_MEMBERS}",
                    root.digest(),
                    members.len()
                ),
            ));
        }
        let chosen: Vec<&Descriptor> = match platform {
            None => members,
            Some(want) => {
                let with: Vec<&Descriptor> = members
                    .iter()
                    .copied()
                    .filter(|m| m.platform().is_some())
                    .collect();
                let candidates: Vec<Platform> = with
                    .iter()
                    .filter_map(|m| m.platform().as_ref().map(Platform::from_oci))
                    .collect();
                let best = want.best_match(&candidates).map(|i| with[i]);
                members
                    .into_iter()
                    .filter(|m| m.platform().is_none() || best == Some(*m))
                    .collect()
            }
        };
        let mut out = Vec::new();
        for m in chosen {
            let shown = m
                .platform()
                .as_ref()
                .map(|p| Platform::from_oci(p).to_string());
            out.extend(self.layers(target, m, shown).await?);
        }
        Ok(out)
    }

    /// The titled layers of one manifest.
    async fn layers(
        &self,
        target: &dyn Target,
        desc: &Descriptor,
        platform: Option<String>,
    ) -> Result<Vec<File>> {
        let data = self.manifest(target, desc).await?;
        let manifest: ImageManifest = crate::json::from_slice(&data).map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!("{}: not a valid manifest: {e}", desc.digest()),
            )
        })?;
        Ok(manifest
            .layers()
            .iter()
            .filter_map(|l| {
                let title = l.annotations().as_ref()?.get(mediatype::TITLE)?.clone();
                Some(File {
                    title,
                    desc: l.clone(),
                    platform: platform.clone(),
                })
            })
            .collect())
    }
}

/// `desc`'s bytes from `cache`, or read whole (verified, capped) from `target` and kept.
async fn read_through(
    cache: &Mutex<ByteCache>,
    target: &dyn Target,
    desc: &Descriptor,
) -> Result<Bytes> {
    let digest = desc.digest().to_string();
    if let Some(b) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
        return Ok(b);
    }
    let data = fetch_small(target, desc).await?;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .put(digest, data.clone());
    Ok(data)
}

/// Blobs by digest, least recently used out first, bounded in bytes. Content addressed, so
/// an entry never goes stale.
#[derive(Debug)]
struct ByteCache {
    entries: HashMap<String, (Bytes, u64)>,
    bytes: u64,
    budget: u64,
    tick: u64,
}

impl ByteCache {
    fn new(budget: u64) -> ByteCache {
        ByteCache {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            tick: 0,
        }
    }

    fn get(&mut self, digest: &str) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(digest).map(|(b, used)| {
            *used = tick;
            b.clone()
        })
    }

    fn put(&mut self, digest: String, data: Bytes) {
        self.tick += 1;
        let n = data.len() as u64;
        if n > self.budget {
            return;
        }
        while self.bytes + n > self.budget && !self.entries.is_empty() {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some((b, _)) = oldest.and_then(|k| self.entries.remove(&k)) {
                self.bytes -= b.len() as u64;
            }
        }
        if let Some((old, _)) = self.entries.insert(digest, (data, self.tick)) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += n;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_cache_stays_within_its_bytes() {
        let mut c = super::ByteCache::new(super::MAX_MANIFEST_CACHE);
        let big = bytes::Bytes::from(vec![0u8; 20 << 20]);
        for i in 0..5 {
            c.put(format!("d{i}"), big.clone());
            assert!(c.bytes <= super::MAX_MANIFEST_CACHE);
        }
        assert!(c.get("d0").is_none(), "the oldest went");
        assert!(c.get("d4").is_some());
    }
}
