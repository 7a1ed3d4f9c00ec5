//! Verified, bounded reads: every byte a store hands over is counted and hashed, and a blob
//! that is longer or shorter than its descriptor says, or whose digest differs, is an error
//! before anything is committed (oras-go's `VerifyReader`). Manifests and indexes are read
//! through a hard cap whatever the server or the file system claims about their length.

use std::io::{self, Read};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use oci_spec::image::Descriptor;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::FileRef;

/// Manifests and indexes are read into memory; anything larger than this is refused
/// (the cap oras-go and containerd use, 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// The error for content that is not what its descriptor says.
pub(crate) fn mismatch(desc: &Descriptor, from: &str, detail: String) -> Error {
    Error::new(
        ErrorKind::DigestMismatch,
        format!(
            "{} ({} bytes) from {from}: {detail}; the content is not what its descriptor says",
            desc.digest(),
            desc.size()
        ),
    )
    .with_digest(desc.digest().to_string())
}

/// Checks a finished read of `desc`: `got` bytes with digest `digest`.
pub(crate) fn check(desc: &Descriptor, from: &str, digest: &Digest, got: u64) -> Result<()> {
    if got != desc.size() {
        return Err(mismatch(desc, from, format!("got {got} bytes")));
    }
    if digest.as_str() != desc.digest().as_ref() {
        return Err(mismatch(
            desc,
            from,
            format!("got content with digest {digest}"),
        ));
    }
    Ok(())
}

pub(crate) use crate::error::from_read_error;

fn as_io(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// How a stream that must carry exactly its declared size went wrong (see [`exactly`]).
pub(crate) enum SizeFault {
    /// A chunk went past the size.
    Longer,
    /// It ended after this many bytes, fewer than the size.
    Shorter(u64),
}

/// `inner` as a stream of exactly `size` bytes: a chunk that goes past `size` is replaced by
/// `fault(SizeFault::Longer)`, an end before it by `fault(SizeFault::Shorter(seen))`; the
/// stream ends after either, or after an error of `inner` (handed on as it is).
pub(crate) fn exactly(
    inner: impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static,
    size: u64,
    fault: impl Fn(SizeFault) -> io::Error + Send + 'static,
) -> BoxStream<'static, io::Result<Bytes>> {
    // `None` once the stream has ended with an error.
    let state = Some((inner.boxed(), 0u64, fault));
    futures::stream::unfold(state, move |state| async move {
        let (mut inner, seen, fault) = state?;
        match inner.next().await {
            Some(Ok(chunk)) => {
                let seen = seen + chunk.len() as u64;
                if seen > size {
                    return Some((Err(fault(SizeFault::Longer)), None));
                }
                Some((Ok(chunk), Some((inner, seen, fault))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None if seen < size => Some((Err(fault(SizeFault::Shorter(seen))), None)),
            None => None,
        }
    })
    .boxed()
}

/// Wraps a byte stream of `desc`: it ends with an error as soon as it passes the declared
/// size, and at its end unless size and digest match. `from` names the source for messages.
pub(crate) fn verified_stream(
    inner: BoxStream<'static, io::Result<Bytes>>,
    desc: &Descriptor,
    from: String,
) -> BoxStream<'static, io::Result<Bytes>> {
    struct State {
        inner: BoxStream<'static, io::Result<Bytes>>,
        hasher: Option<Hasher>,
        desc: Descriptor,
        from: String,
    }
    let state = State {
        inner,
        hasher: Some(Hasher::new()),
        desc: desc.clone(),
        from,
    };
    futures::stream::unfold(state, |mut s| async move {
        let hasher = s.hasher.as_mut()?;
        match s.inner.next().await {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                if hasher.size() > s.desc.size() {
                    let e = mismatch(
                        &s.desc,
                        &s.from,
                        format!("more than {} bytes arrived", s.desc.size()),
                    );
                    s.hasher = None;
                    return Some((Err(as_io(e)), s));
                }
                Some((Ok(chunk), s))
            }
            Some(Err(e)) => {
                s.hasher = None;
                Some((Err(e), s))
            }
            None => {
                let (digest, got) = s.hasher.take()?.finish();
                match check(&s.desc, &s.from, &digest, got) {
                    Ok(()) => None,
                    Err(e) => Some((Err(as_io(e)), s)),
                }
            }
        }
    })
    .boxed()
}

/// The chunks of a blob read from `reader`, verified: the chunk that completes the declared
/// size is handed on only after the size and the digest are checked (and nothing more can
/// be read). A blocking iterator.
pub(crate) struct VerifiedChunks<R> {
    reader: R,
    hasher: Option<Hasher>,
    desc: Descriptor,
    from: String,
    chunk: usize,
}

impl<R: Read> VerifiedChunks<R> {
    pub(crate) fn new(reader: R, desc: Descriptor, from: String, chunk: usize) -> Self {
        VerifiedChunks {
            reader,
            hasher: Some(Hasher::new()),
            desc,
            from,
            chunk,
        }
    }

    /// The end: nothing more to read, and the digest right.
    fn finish(&mut self) -> io::Result<()> {
        let mut probe = [0u8; 1];
        loop {
            match self.reader.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    self.hasher = None;
                    return Err(as_io(mismatch(
                        &self.desc,
                        &self.from,
                        format!("more than {} bytes are there", self.desc.size()),
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (digest, got) = self.hasher.take().unwrap_or_default().finish();
        check(&self.desc, &self.from, &digest, got).map_err(as_io)
    }
}

impl<R: Read> Iterator for VerifiedChunks<R> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        let left = self.desc.size() - self.hasher.as_ref()?.size();
        if left == 0 {
            // An empty blob: no chunk, only the check.
            return self.finish().err().map(Err);
        }
        let mut buf = vec![0u8; left.min(self.chunk as u64) as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.hasher = None;
                    return Some(Err(e));
                }
            }
        }
        buf.truncate(filled);
        let hasher = self.hasher.as_mut()?;
        hasher.update(&buf);
        if filled == 0 || hasher.size() == self.desc.size() {
            // The last chunk (or the file ended early): checked before it goes on.
            if let Err(e) = self.finish() {
                return Some(Err(e));
            }
        }
        Some(Ok(Bytes::from(buf)))
    }
}

/// Opens a blob file for reading (see [`blob_file`]).
pub(crate) fn open_blob_file(
    file: &FileRef,
    desc: &Descriptor,
    from: &str,
) -> Result<std::fs::File> {
    blob_file(
        crate::fsutil::open_nonblocking(&file.path),
        file,
        desc,
        from,
    )
}

/// Checks a blob file just opened (`opened`, from `file`'s path or a layout's blobs
/// directory): it must have opened, be a regular file (not a device, a FIFO, a directory or
/// a symlink where links are not followed) of exactly the descriptor's size, and be the file
/// `file` names when it records an identity.
pub(crate) fn blob_file(
    opened: io::Result<std::fs::File>,
    file: &FileRef,
    desc: &Descriptor,
    from: &str,
) -> Result<std::fs::File> {
    let path = &file.path;
    let digest = desc.digest().to_string();
    let f = opened.map_err(|e| {
        let what = match e.kind() {
            io::ErrorKind::NotFound => "is missing",
            _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                "is a symlink; a layout's blobs must be regular files (remove the link and copy \
                 the content again)"
            }
            _ => return Error::io("reading blob", path, e).with_digest(digest.clone()),
        };
        Error::new(ErrorKind::NotFound, format!("{from}: blob {digest} {what}"))
            .with_path(path)
            .with_digest(digest.clone())
    })?;
    let meta = f.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::DigestMismatch,
            format!(
                "{from}: blob {digest} is not a regular file ({}); remove it and copy the content again",
                path.display()
            ),
        )
        .with_path(path)
        .with_digest(digest));
    }
    if meta.len() != desc.size() {
        return Err(mismatch(
            desc,
            from,
            format!("the file {} has {} bytes", path.display(), meta.len()),
        )
        .with_path(path));
    }
    if file
        .id
        .is_some_and(|id| id != crate::fsutil::file_id(&meta))
    {
        return Err(crate::fsutil::changed_while_packing(
            path,
            "it is no longer the file found there first",
        )
        .with_digest(digest));
    }
    Ok(f)
}

/// Reads a small blob (a manifest, an index, a config) of `desc` from `reader`, at most
/// [`MAX_MANIFEST_BYTES`] whatever it claims, and verifies size and digest.
pub(crate) fn read_capped(reader: &mut dyn Read, desc: &Descriptor, from: &str) -> Result<Bytes> {
    refuse_large(desc, from)?;
    let mut data = Vec::new();
    reader
        .take(desc.size() + 1)
        .read_to_end(&mut data)
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("reading {} from {from}: {e}", desc.digest()),
            )
        })?;
    verify_bytes(Bytes::from(data), desc, from)
}

/// Checks bytes already in memory against `desc`.
pub(crate) fn verify_bytes(data: Bytes, desc: &Descriptor, from: &str) -> Result<Bytes> {
    check(desc, from, &Digest::of(&data), data.len() as u64)?;
    Ok(data)
}

/// Refuses to read a manifest over the cap.
pub(crate) fn refuse_large(desc: &Descriptor, from: &str) -> Result<()> {
    if desc.size() > MAX_MANIFEST_BYTES {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} in {from}: a manifest of {} bytes is over the 4 MiB limit",
                desc.digest(),
                desc.size()
            ),
        )
        .with_digest(desc.digest().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exactly_sized_streams_end_at_the_first_fault() {
        let chunks = |parts: &[&'static [u8]]| {
            futures::stream::iter(
                parts
                    .iter()
                    .map(|p| Ok(Bytes::from_static(p)))
                    .collect::<Vec<_>>(),
            )
        };
        let fault = |f: SizeFault| match f {
            SizeFault::Longer => io::Error::other("longer"),
            SizeFault::Shorter(n) => io::Error::other(format!("shorter after {n}")),
        };
        let collect = |s: BoxStream<'static, io::Result<Bytes>>| async move {
            s.map(|r| r.map(|b| b.len()).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
                .await
        };
        let ok = collect(exactly(chunks(&[b"abc", b"de"]), 5, fault)).await;
        assert_eq!(ok, vec![Ok(3), Ok(2)]);
        let long = collect(exactly(chunks(&[b"abc", b"def", b"g"]), 5, fault)).await;
        assert_eq!(long, vec![Ok(3), Err("longer".to_string())]);
        let short = collect(exactly(chunks(&[b"abc"]), 5, fault)).await;
        assert_eq!(short, vec![Ok(3), Err("shorter after 3".to_string())]);
    }

    fn desc(data: &[u8]) -> Descriptor {
        Descriptor::new(
            "application/octet-stream".into(),
            data.len() as u64,
            Digest::of(data).to_oci(),
        )
    }

    async fn drain(chunks: Vec<&'static [u8]>, d: &Descriptor) -> Result<Bytes> {
        let s = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let mut v = verified_stream(s.boxed(), d, "test".into());
        let mut data = Vec::new();
        while let Some(chunk) = v.next().await {
            data.extend_from_slice(
                &chunk.map_err(|e| {
                    from_read_error(e, |e| Error::new(ErrorKind::Io, e.to_string()))
                })?,
            );
        }
        Ok(Bytes::from(data))
    }

    #[tokio::test]
    async fn streams_are_counted_and_hashed() {
        let d = desc(b"hello world");
        assert!(drain(vec![b"hello", b" world"], &d).await.is_ok());
        let short = drain(vec![b"hello"], &d).await.expect_err("short");
        assert_eq!(short.kind(), ErrorKind::DigestMismatch);
        assert!(short.message().contains("got 5 bytes"), "{short}");
        let long = drain(vec![b"hello world", b"!"], &d)
            .await
            .expect_err("long");
        assert!(long.message().contains("more than 11 bytes"), "{long}");
        let wrong = drain(vec![b"hello World"], &d).await.expect_err("wrong");
        assert!(wrong.message().contains("digest"), "{wrong}");
    }

    #[test]
    fn small_reads_stop_at_the_declared_size() {
        let d = desc(b"{}");
        let mut endless = std::io::repeat(b'x');
        let e = read_capped(&mut endless, &d, "test").expect_err("endless");
        assert!(e.message().contains("got 3 bytes"), "{e}");
        assert!(read_capped(&mut &b"{}"[..], &d, "test").is_ok());
    }
}
