//! Progress events, shared by the CLI's bars and the bindings' callbacks.

use std::fmt;
use std::sync::Arc;

/// One thing that happened to one source while it was staged, or to one blob while it moved
/// to the target.
///
/// Serialises as a flat JSON object named by `event` (`{"event": "advanced", "digest": …,
/// "bytes": …}`), the shape every binding hands its callbacks; see also [`ProgressEvent::fields`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
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

/// A [`ProgressEvent`] as flat fields (absent ones `None` or 0), for callers without sum
/// types (the C ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressFields<'a> {
    /// `stage_started`, `stage_advanced`, `stage_finished`, `started`, `advanced`,
    /// `finished`, `skipped` or `mounted`.
    pub event: &'static str,
    /// The blob's digest (blob events).
    pub digest: Option<&'a str>,
    /// The blob's title annotation (`started`).
    pub title: Option<&'a str>,
    /// The source, a path or URL (stage events).
    pub source: Option<&'a str>,
    /// Size in bytes (`stage_started` when known, `started`, `skipped`, `mounted`), else 0.
    pub size: u64,
    /// Bytes moved since the last event of this blob or source (`*advanced`), else 0.
    pub bytes: u64,
}

impl ProgressEvent {
    /// The event as flat fields.
    pub fn fields(&self) -> ProgressFields<'_> {
        let mut f = ProgressFields {
            event: "",
            digest: None,
            title: None,
            source: None,
            size: 0,
            bytes: 0,
        };
        match self {
            ProgressEvent::StageStarted { source, size } => {
                (f.event, f.source, f.size) =
                    ("stage_started", Some(source.as_str()), size.unwrap_or(0))
            }
            ProgressEvent::StageAdvanced { source, bytes } => {
                (f.event, f.source, f.bytes) = ("stage_advanced", Some(source.as_str()), *bytes)
            }
            ProgressEvent::StageFinished { source } => {
                (f.event, f.source) = ("stage_finished", Some(source.as_str()))
            }
            ProgressEvent::Started {
                digest,
                title,
                size,
            } => {
                (f.event, f.digest, f.title, f.size) =
                    ("started", Some(digest.as_str()), title.as_deref(), *size)
            }
            ProgressEvent::Advanced { digest, bytes } => {
                (f.event, f.digest, f.bytes) = ("advanced", Some(digest.as_str()), *bytes)
            }
            ProgressEvent::Finished { digest } => {
                (f.event, f.digest) = ("finished", Some(digest.as_str()))
            }
            ProgressEvent::Skipped { digest, size } => {
                (f.event, f.digest, f.size) = ("skipped", Some(digest.as_str()), *size)
            }
            ProgressEvent::Mounted { digest, size } => {
                (f.event, f.digest, f.size) = ("mounted", Some(digest.as_str()), *size)
            }
        }
        f
    }
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

    /// This observer for one operation: events reach it until the returned guard is
    /// dropped, never after — the guard waits for a call in progress to end — so a caller
    /// (a C or Go callback with its own data) is never called once the operation returned,
    /// whatever task of it is still winding down.
    pub(crate) fn for_operation(&self) -> (Progress, ProgressScope) {
        let Some(f) = self.0.clone() else {
            return (Progress(None), ProgressScope(None));
        };
        let open = Arc::new(std::sync::RwLock::new(true));
        let gate = open.clone();
        let scoped = Progress::new(move |e| {
            let open = gate.read().unwrap_or_else(|p| p.into_inner());
            if *open {
                f(e);
            }
        });
        (scoped, ProgressScope(Some(open)))
    }
}

/// Ends the delivery of a [`Progress::for_operation`] observer when dropped.
pub(crate) struct ProgressScope(Option<Arc<std::sync::RwLock<bool>>>);

impl Drop for ProgressScope {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            *open.write().unwrap_or_else(|p| p.into_inner()) = false;
        }
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
