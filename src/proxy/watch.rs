//! The proxy's connection watchdog: a socket that notes when writes go through and when
//! they are refused for want of room, so a client that takes nothing is noticed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::CLIENT_STALL;

/// A connection's socket, noting when a write was last refused for want of room and when
/// one last went through.
pub(super) struct Watched {
    pub(super) inner: tokio::net::TcpStream,
    pub(super) progress: Arc<Progress>,
}

/// What [`Watched`] notes, shared with the connection's watchdog.
#[derive(Default)]
pub(super) struct Progress {
    /// Milliseconds since `epoch` of the last write that went through.
    pub(super) last: std::sync::atomic::AtomicU64,
    /// A write is waiting for room.
    pub(super) blocked: std::sync::atomic::AtomicBool,
    pub(super) epoch: std::sync::OnceLock<Instant>,
}

impl Progress {
    pub(super) fn now(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// Notes a write: refused for want of room (`blocked`), or through.
    pub(super) fn note(&self, blocked: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.blocked.store(blocked, Relaxed);
        if !blocked {
            self.last.store(self.now(), Relaxed);
        }
    }

    /// Resolves once output has waited for the client [`CLIENT_STALL`] without any of it
    /// going through.
    pub(super) async fn stalled(self: Arc<Self>) {
        use std::sync::atomic::Ordering::Relaxed;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let idle = self.now().saturating_sub(self.last.load(Relaxed));
            if self.blocked.load(Relaxed) && idle >= CLIENT_STALL.as_millis() as u64 {
                return;
            }
        }
    }
}

impl Watched {
    pub(super) fn new(inner: tokio::net::TcpStream) -> (Watched, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        progress
            .last
            .store(progress.now(), std::sync::atomic::Ordering::Relaxed);
        (
            Watched {
                inner,
                progress: progress.clone(),
            },
            progress,
        )
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress.note(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress.note(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
