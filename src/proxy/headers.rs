//! Response headers of a file, and the request headers the proxy reads (`Range`,
//! `If-None-Match`).

use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

use std::time::Duration;

use super::upstream::{File, Found};
use super::{Refusal, IMMUTABLE};

/// The headers of a file's response (SPEC §8).
pub(super) fn file_headers(
    file: &File,
    found: &Found,
    tag_ttl: Duration,
) -> Vec<(header::HeaderName, String)> {
    let digest = file.desc.digest().to_string();
    let cache = if found.by_digest {
        IMMUTABLE.to_string()
    } else {
        format!("public, max-age={}", tag_ttl.as_secs())
    };
    vec![
        (
            header::CONTENT_TYPE,
            content_type(file.desc.media_type().as_ref()),
        ),
        (header::ETAG, format!("\"{digest}\"")),
        (
            header::HeaderName::from_static("docker-content-digest"),
            digest,
        ),
        (header::ACCEPT_RANGES, "bytes".into()),
        (header::CONTENT_DISPOSITION, disposition(&file.title)),
        (header::CACHE_CONTROL, cache),
    ]
}

/// The layer's media type, or `application/octet-stream` when it cannot be a header value.
pub(super) fn content_type(media_type: &str) -> String {
    match HeaderValue::from_str(media_type) {
        Ok(_) if !media_type.is_empty() => media_type.to_string(),
        _ => "application/octet-stream".to_string(),
    }
}

/// `attachment; filename="NAME"` with the title's last segment, and `filename*` (RFC 6266,
/// RFC 8187) when it is not plain ASCII.
pub(super) fn disposition(title: &str) -> String {
    let name = match title.rsplit('/').next().unwrap_or(title) {
        "" | "." | ".." => "download",
        n => n,
    };
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    if ascii == name {
        return format!("attachment; filename=\"{ascii}\"");
    }
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// True when an `If-None-Match` value names `etag` (or is `*`); weak tags compare too.
pub(super) fn etag_matches(value: &HeaderValue, etag: &str) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    text.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The one range of a `Range` header within `size` bytes, inclusive (RFC 9110 §14.1.2):
/// `bytes=A-B`, `bytes=A-` or `bytes=-N` (the unit in any case; a suffix longer than the
/// file is the whole file). `None` to send the whole: no `bytes` range, an invalid one
/// (`5-4`), or several (a whole body is a valid answer to those). 416 when the one range
/// starts past the end, or is the empty suffix `-0`.
pub(super) fn byte_range(
    value: &HeaderValue,
    size: u64,
) -> std::result::Result<Option<(u64, u64)>, Refusal> {
    let unsatisfiable = || {
        let mut r = Refusal::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("the range is outside the file's {size} bytes"),
        );
        r.headers
            .push((header::CONTENT_RANGE, format!("bytes */{size}")));
        r
    };
    let Ok(text) = value.to_str() else {
        return Ok(None);
    };
    let Some((unit, spec)) = text.split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ok(None);
    }
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-N`: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            Ok(Some((size.saturating_sub(n), size - 1)))
        }
        (false, Some(a), None) if last.trim().is_empty() => {
            if a >= size {
                return Err(unsatisfiable());
            }
            Ok(Some((a, size - 1)))
        }
        (false, Some(a), Some(b)) if a <= b => {
            if a >= size {
                return Err(unsatisfiable());
            }
            Ok(Some((a, b.min(size - 1))))
        }
        _ => Ok(None),
    }
}
