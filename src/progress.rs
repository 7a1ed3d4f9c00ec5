//! Progress events, shared by the CLI's bars and the bindings' callbacks.

use std::fmt;
use std::sync::Arc;

/// One thing that happened to one source while it was staged, or to one blob while it moved
/// to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A large source started being read (hashed, copied or downloaded) while staging.
    StageStarted {
        /// The source: a path or URL.
        source: String,
        /// Its size, when known.
        size: Option<u64>,
    },
    /// More bytes of a source were read.
    StageAdvanced {
        /// The source.
        source: String,
        /// Bytes read since the last event for this source.
        bytes: u64,
    },
    /// A source was read completely.
    StageFinished {
        /// The source.
        source: String,
    },
    /// A blob started moving.
    Started {
        /// Its digest.
        digest: String,
        /// Its title annotation, if any.
        title: Option<String>,
        /// Its size in bytes.
        size: u64,
    },
    /// More bytes of a blob moved.
    Advanced {
        /// Its digest.
        digest: String,
        /// Bytes moved since the last event for this blob.
        bytes: u64,
    },
    /// A blob is in the target.
    Finished {
        /// Its digest.
        digest: String,
    },
    /// The registry linked the blob from another repository; no bytes moved.
    Mounted {
        /// Its digest.
        digest: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The target had the blob already; nothing moved.
    Skipped {
        /// Its digest.
        digest: String,
        /// Its size in bytes.
        size: u64,
    },
}

type Observer = dyn Fn(&ProgressEvent) + Send + Sync;

/// An optional observer of [`ProgressEvent`]s; cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Observer>>);

impl Progress {
    /// Reports to `f`, which may be called from several threads at once.
    pub fn new(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Progress {
        Progress(Some(Arc::new(f)))
    }

    /// Reports an event, if anyone listens.
    pub fn emit(&self, event: ProgressEvent) {
        if let Some(f) = &self.0 {
            f(&event);
        }
    }

    /// True when nobody listens (lets hot loops skip building events).
    pub fn is_silent(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(observer)"
        } else {
            "Progress(none)"
        })
    }
}
