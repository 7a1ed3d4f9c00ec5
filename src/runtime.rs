//! The one tokio runtime behind the blocking façade.
//!
//! Built lazily; rebuilt in a child after `fork()` (a runtime's threads do not survive a
//! fork); when the caller is already inside a runtime, work runs on a scoped thread instead
//! of nesting `block_on` (which would panic).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::InFlight;

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

fn runtime() -> Result<Arc<Runtime>> {
    let mut guard = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, rt)) = guard.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    if let Some((_, stale)) = guard.take() {
        // Inherited from the parent across fork(): its threads are gone here, so dropping it
        // could wait forever. Leak it.
        std::mem::forget(stale);
    }
    let rt = Arc::new(
        Builder::new_multi_thread()
            .enable_all()
            .thread_name("oci-packer")
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot start the async runtime: {e}"),
                )
            })?,
    );
    *guard = Some((pid, rt.clone()));
    Ok(rt)
}

/// A handle that cancels an operation from another thread.
#[derive(Debug, Clone, Default)]
pub struct Cancel(tokio_util::sync::CancellationToken);

impl Cancel {
    /// A new, unfired handle.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Fires: the operation stops as soon as it can and returns [`ErrorKind::Cancelled`].
    pub fn cancel(&self) {
        self.0.cancel();
    }

    /// True once fired.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// The token under it, for work that stops on its own terms (the proxy drains).
    pub(crate) fn token(&self) -> &tokio_util::sync::CancellationToken {
        &self.0
    }
}

/// The exit status a signal asked for (130 for SIGINT, 143 for SIGTERM), once one came.
static SIGNALLED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// For the command line: the first SIGINT or SIGTERM fires `cancel` (the operation stops
/// within a chunk, removes its temp files and writes no tag); a second one ends the process
/// at once. Returns at once; the watch runs on the library's runtime.
pub fn cancel_on_signals(cancel: &Cancel) -> Result<()> {
    let token = cancel.clone();
    runtime()?.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let status = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        SIGNALLED.store(status, std::sync::atomic::Ordering::SeqCst);
        token.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(status);
    });
    Ok(())
}

/// The exit status of the signal that cancelled the operation, if one did.
pub fn signalled() -> Option<i32> {
    match SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Runs `fut` on the library's runtime; stops it (dropping it, which cancels every transfer
/// in flight) as soon as `cancel` fires.
pub fn block_on_cancellable<F, T>(fut: F, cancel: Option<&Cancel>) -> Result<T>
where
    F: Future<Output = Result<T>> + Send,
    T: Send,
{
    let Some(cancel) = cancel else {
        return block_on(fut)?;
    };
    let token = cancel.0.clone();
    block_on(async move {
        tokio::select! {
            r = fut => r,
            _ = token.cancelled() => Err(Error::new(ErrorKind::Cancelled, "cancelled")),
        }
    })?
}

/// Runs `fut` to completion on the library's runtime and returns its output, once every
/// blocking task it started has ended too (even when `fut` was dropped early by a
/// cancellation or an error): they are told to stop at their next chunk, and waited for.
/// See [`InFlight`].
pub fn block_on<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let in_flight = Arc::new(InFlight::default());
    let fut = in_flight.clone().scope(fut);
    let out = if Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut))
                .join()
                .map_err(|_| Error::new(ErrorKind::Internal, "the worker thread panicked"))
        })
    } else {
        Ok(rt.block_on(fut))
    };
    in_flight.stop_and_wait();
    out
}
