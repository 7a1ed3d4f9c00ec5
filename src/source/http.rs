//! `http://` and `https://`: downloaded while hashing into the user's private download cache
//! (or, without one, a private temp dir under `--tmp-dir`), re-used when the server says the
//! content is unchanged (ETag / Last-Modified), retried by the transport's policy.
//!
//! A cache entry is `http/<32 hex of sha256(url)>/meta.json` plus `data-<hex of the
//! content's sha256>`: content-addressed files are written once (temp file, then rename) and
//! never changed, so two downloads of one URL — in one pack or in two processes — never see
//! each other's half files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{descriptor, file::stage_path, with_title, Origin, StageContext, StagedBlob};
use crate::digest::Hasher;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::FileRef;
use crate::mediatype;
use crate::transport::{self, Failure};

#[derive(Debug, Serialize, Deserialize)]
struct CacheMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    size: u64,
    /// Hex of the content's sha256: the entry's `data-<hex>` file.
    sha256: String,
}

/// Where downloads of `url` go: its entry in the private cache, or a new private temp dir.
enum Place {
    Cache(PathBuf),
    Temp(Arc<tempfile::TempDir>),
}

impl Place {
    fn dir(&self) -> &Path {
        match self {
            Place::Cache(d) => d,
            Place::Temp(t) => t.path(),
        }
    }
}

fn place(ctx: &StageContext, url: &str) -> Result<Place> {
    let tmp = &ctx.tmp_dir;
    if let Some(cache) = ctx.cache.sibling("http") {
        let dir = cache.join(&crate::digest::Digest::of(url.as_bytes()).hex()[..32]);
        if std::fs::create_dir(&dir).is_ok()
            || std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
        {
            // Downloads of killed runs: removed by the next download of the URL.
            crate::fsutil::sweep_stale_temps(&dir, crate::fsutil::STALE_TEMP_AGE);
            return Ok(Place::Cache(dir));
        }
    }
    let t = tempfile::Builder::new()
        .prefix(crate::fsutil::TEMP_PREFIX)
        .tempdir_in(tmp)
        .map_err(|e| Error::io("creating a download dir in", tmp, e))?;
    Ok(Place::Temp(Arc::new(t)))
}

/// The last path segment of the URL (query ignored), for the title and the media type.
pub fn url_basename(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "download".into())
}

/// Downloads (or re-uses) `url` and stages it as one layer.
pub async fn stage(
    url: String,
    ctx: &StageContext,
    media_type: Option<String>,
    annotations: BTreeMap<String, String>,
) -> Result<StagedBlob> {
    let name = url_basename(&url);
    let place = place(ctx, &url)?;
    let path = transport::retried(&url, || try_download(ctx, &url, &place)).await?;
    let uri = url.clone();
    let staging = ctx.clone();
    let (digest, size, origin) =
        crate::fsutil::blocking(move || stage_path(&FileRef::new(path, None), &uri, &staging))
            .await?;
    // A download outside the cache lives as long as the staged blob needs it. Downloads
    // are this program's own files (the cache is private): the cache may replace one with
    // the same bytes meanwhile, so no identity is pinned; the digest is checked on copy.
    let origin = match (origin, &place) {
        (Origin::File(file), Place::Temp(t)) => Origin::InTempDir {
            file: FileRef::new(file.path, None),
            _dir: t.clone(),
        },
        (Origin::File(file), _) => Origin::File(FileRef::new(file.path, None)),
        (o, _) => o,
    };
    let mt = media_type.unwrap_or_else(|| mediatype::infer(&name).to_string());
    Ok(StagedBlob {
        descriptor: descriptor(&mt, &digest, size, with_title(&annotations, &name)),
        origin,
    })
}

/// The cached download of `url` in `dir`, when its metadata and data file are intact.
fn read_meta(dir: &Path, url: &str) -> Option<(CacheMeta, PathBuf)> {
    let meta: CacheMeta =
        serde_json::from_slice(&super::cache::read_entry(&dir.join("meta.json"))?).ok()?;
    if meta.url != url
        || meta.sha256.len() != 64
        || !meta.sha256.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let data = dir.join(format!("data-{}", meta.sha256));
    let f = super::cache::open_entry(&data)?;
    (f.metadata().ok()?.len() == meta.size).then_some((meta, data))
}

async fn try_download(
    ctx: &StageContext,
    url: &str,
    place: &Place,
) -> std::result::Result<PathBuf, Failure> {
    let dir = place.dir();
    let cached = match place {
        Place::Cache(d) => read_meta(d, url),
        Place::Temp(_) => None,
    };
    let opts = &ctx.registry;
    let mut req = ctx.http.get(url);
    if let Some((m, _)) = &cached {
        if let Some(etag) = &m.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &m.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
    }
    let network = |e: reqwest::Error| Failure::network("GET", url, e);
    let headers_deadline = transport::deadline(opts, None);
    let resp = match tokio::time::timeout(headers_deadline, req.send()).await {
        Ok(r) => r.map_err(network)?,
        Err(_) => {
            return Err(Failure {
                error: Error::new(
                    ErrorKind::Network,
                    format!("GET {url}: no answer within {headers_deadline:?}"),
                ),
                transient: true,
            })
        }
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        if let Some((_, data)) = cached {
            tracing::debug!(url, "unchanged on the server, re-using the download");
            return Ok(data);
        }
    }
    if !status.is_success() {
        let kind = match status.as_u16() {
            404 | 410 => ErrorKind::SourceNotFound,
            401 | 403 => ErrorKind::Authentication,
            _ => ErrorKind::Registry,
        };
        let e = Error::new(kind, format!("GET {url}: HTTP {status}; check the URL"))
            .with_reference(url)
            .with_status(status.as_u16(), None);
        return Err(Failure {
            error: e,
            transient: transport::is_transient_status(status),
        });
    }
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let expected = resp.content_length();
    let tmp = tempfile::Builder::new()
        .prefix(crate::fsutil::TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Failure::fatal(Error::io("creating temp file in", dir, e)))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(std_file));
    let mut hasher = Hasher::new();
    let mut resp = resp;
    // With a known length the body has a deadline a trickling server cannot stretch; without
    // one, only the read timeout (a stalled body) applies.
    let until = expected.map(|n| tokio::time::Instant::now() + transport::deadline(opts, Some(n)));
    loop {
        let next = match until {
            Some(t) => tokio::time::timeout_at(t, resp.chunk())
                .await
                .map_err(|_| Failure {
                    error: Error::new(
                        ErrorKind::Network,
                        format!(
                            "GET {url}: the body is arriving too slowly ({} bytes so far)",
                            hasher.size()
                        ),
                    ),
                    transient: true,
                })?,
            None => resp.chunk().await,
        };
        match next.map_err(network)? {
            Some(chunk) => {
                hasher.update(&chunk);
                if expected.is_some_and(|n| hasher.size() > n) {
                    return Err(Failure {
                        error: Error::new(
                            ErrorKind::Network,
                            format!("GET {url}: the server sent more than its Content-Length"),
                        ),
                        transient: true,
                    });
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Failure::fatal(Error::io("writing download", &tmp_path, e)))?;
            }
            None => break,
        }
    }
    file.flush()
        .await
        .map_err(|e| Failure::fatal(Error::io("writing download", &tmp_path, e)))?;
    let (digest, size) = hasher.finish();
    if expected.is_some_and(|n| n != size) {
        return Err(Failure {
            error: Error::new(
                ErrorKind::Network,
                format!(
                    "GET {url}: connection closed after {size} of {} bytes",
                    expected.unwrap_or(0)
                ),
            ),
            transient: true,
        });
    }
    let data = dir.join(format!("data-{}", digest.hex()));
    tmp_path
        .persist(&data)
        .map_err(|e| Failure::fatal(Error::io("saving download", &data, e.error)))?;
    if let Place::Cache(dir) = place {
        let meta = CacheMeta {
            url: url.to_string(),
            etag,
            last_modified,
            size,
            sha256: digest.hex().to_string(),
        };
        save_meta(dir, &meta);
    }
    Ok(data)
}

/// Records the entry's metadata (best effort: a cache that cannot be written is a miss next
/// time), and removes data files of earlier versions that no run can still be using.
fn save_meta(dir: &Path, meta: &CacheMeta) {
    let Ok(body) = serde_json::to_vec(meta) else {
        return;
    };
    crate::fsutil::write_entry(&dir.join("meta.json"), &body);
    let current = format!("data-{}", meta.sha256);
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
        if (name.starts_with("data-") && name != current.as_str()
            || name.starts_with(crate::fsutil::TEMP_PREFIX))
            && old
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
