//! `http://` and `https://`: downloaded to `--tmp-dir` while hashing, re-used when the server
//! says the content is unchanged (ETag / Last-Modified), retried on 5xx and connection errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{descriptor, file::stage_path, with_title, StageContext, StagedBlob};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;

/// Attempts per download: the first try plus three retries.
const ATTEMPTS: u32 = 4;
/// First back-off delay; doubled per retry, with up to 50 % jitter.
const BACKOFF: Duration = Duration::from_millis(250);

/// The HTTP client used for downloads: rustls with `--ca-file`/`--insecure` as for
/// registries, bounded redirects that never go from https to http, connect and read
/// timeouts.
pub fn client(opts: &crate::RegistryOptions) -> Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|p| p.scheme() == "https")
            && attempt.url().scheme() == "http";
        if downgrade {
            let to = attempt.url().to_string();
            attempt.error(format!("refusing a redirect from https to http ({to})"))
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    });
    let builder = crate::store::registry::client::http_builder(opts)?;
    crate::store::registry::client::build_http(
        builder
            .redirect(policy)
            .read_timeout(Duration::from_secs(60)),
    )
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    size: u64,
}

fn cache_dir(tmp: &Path, url: &str) -> PathBuf {
    tmp.join("oci-packer-http")
        .join(&Digest::of(url.as_bytes()).hex()[..16])
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

enum Attempt {
    Done(PathBuf),
    Retry(Error),
}

/// Downloads (or re-uses) `url` and stages it as one layer.
pub async fn stage(
    url: String,
    ctx: &StageContext,
    media_type: Option<String>,
    annotations: BTreeMap<String, String>,
) -> Result<StagedBlob> {
    let name = url_basename(&url);
    let dir = cache_dir(&ctx.tmp_dir, &url);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::io("creating download dir", &dir, e))?;
    let data = dir.join("data");
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let base = BACKOFF * 2u32.pow(attempt - 1);
            let jitter = base.mul_f64(f64::from(std::process::id() % 50 + attempt) / 100.0);
            tokio::time::sleep(base + jitter).await;
        }
        match try_download(&ctx.http, &url, &dir, &data).await? {
            Attempt::Done(path) => {
                let uri = url.clone();
                let ctx = ctx.clone();
                let (digest, size, origin) =
                    super::blocking(move || stage_path(&path, &uri, &ctx)).await?;
                let mt = media_type.unwrap_or_else(|| mediatype::infer(&name).to_string());
                return Ok(StagedBlob {
                    descriptor: descriptor(&mt, &digest, size, with_title(&annotations, &name)),
                    origin,
                });
            }
            Attempt::Retry(e) => {
                tracing::warn!(url = %url, attempt = attempt + 1, error = %e, "download failed, retrying");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::new(ErrorKind::Network, format!("GET {url}: failed"))))
}

fn read_meta(dir: &Path, url: &str, data: &Path) -> Option<CacheMeta> {
    let meta: CacheMeta =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
    let size = std::fs::metadata(data).ok()?.len();
    (meta.url == url && meta.size == size).then_some(meta)
}

async fn try_download(
    client: &reqwest::Client,
    url: &str,
    dir: &Path,
    data: &Path,
) -> Result<Attempt> {
    let cached = read_meta(dir, url, data);
    let mut req = client.get(url);
    if let Some(m) = &cached {
        if let Some(etag) = &m.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &m.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
    }
    let network = |e: reqwest::Error| {
        Error::new(
            ErrorKind::Network,
            format!("GET {url}: {}", error_chain(&e)),
        )
        .with_reference(url)
        .with_source(e)
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_redirect() || e.is_builder() || error_chain(&e).contains("certificate") => {
            return Err(network(e))
        }
        Err(e) => return Ok(Attempt::Retry(network(e))),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED && cached.is_some() {
        tracing::debug!(url, "unchanged on the server, re-using the download");
        return Ok(Attempt::Done(data.to_path_buf()));
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
        let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        return if retry { Ok(Attempt::Retry(e)) } else { Err(e) };
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
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating temp file in", dir, e))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(std_file));
    let mut hasher = Hasher::new();
    let mut resp = resp;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io("writing download", &tmp_path, e))?;
            }
            Ok(None) => break,
            Err(e) => return Ok(Attempt::Retry(network(e))),
        }
    }
    file.flush()
        .await
        .map_err(|e| Error::io("writing download", &tmp_path, e))?;
    let size = hasher.size();
    if expected.is_some_and(|n| n != size) {
        return Ok(Attempt::Retry(Error::new(
            ErrorKind::Network,
            format!(
                "GET {url}: connection closed after {size} of {} bytes",
                expected.unwrap_or(0)
            ),
        )));
    }
    tmp_path
        .persist(data)
        .map_err(|e| Error::io("saving download", data, e.error))?;
    let meta = CacheMeta {
        url: url.to_string(),
        etag,
        last_modified,
        size,
    };
    let meta_tmp = dir.join(format!(".meta-{}.json", std::process::id()));
    let body =
        serde_json::to_vec(&meta).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
    std::fs::write(&meta_tmp, body)
        .and_then(|()| std::fs::rename(&meta_tmp, dir.join("meta.json")))
        .map_err(|e| Error::io("saving download metadata", &meta_tmp, e))?;
    Ok(Attempt::Done(data.to_path_buf()))
}

/// reqwest's Display hides the cause ("error sending request"); show the whole chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
