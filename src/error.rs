//! The one error type of the library: [`Error`] with a stable [`ErrorKind`] and typed context.
//!
//! Kinds map 1:1 to Python exception classes and C status codes (SPEC §6), so a kind is never
//! reused for a different meaning and new kinds are only appended.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, stable across versions; bindings map each kind to their own error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The pack file is not valid: YAML syntax, unknown key, wrong type, bad value.
    PackFile,
    /// A reference (target or image source) cannot be parsed.
    InvalidReference,
    /// A source (file, directory, URL) does not exist or cannot be read.
    SourceNotFound,
    /// Authentication is required or was refused.
    Authentication,
    /// A tag, digest or blob is not in the registry or layout.
    NotFound,
    /// Content does not match its expected digest or size.
    DigestMismatch,
    /// A registry (or HTTP server) answered with an error status.
    Registry,
    /// A connection failed or timed out.
    Network,
    /// A local file system operation failed.
    Io,
    /// A feature is not available (in this build, or on this registry/layout).
    Unsupported,
    /// The operation was cancelled.
    Cancelled,
    /// An argument or option has an invalid value.
    InvalidArgument,
    /// A bug: an invariant of the library did not hold.
    Internal,
    /// Content that would be unsafe to write: an archive entry or title that leads outside
    /// the destination, or an archive past a size or entry limit.
    UnsafeContent,
}

impl ErrorKind {
    /// A short, stable, snake_case name (used by `--format json` and the bindings).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::PackFile => "pack_file",
            ErrorKind::InvalidReference => "invalid_reference",
            ErrorKind::SourceNotFound => "source_not_found",
            ErrorKind::Authentication => "authentication",
            ErrorKind::NotFound => "not_found",
            ErrorKind::DigestMismatch => "digest_mismatch",
            ErrorKind::Registry => "registry",
            ErrorKind::Network => "network",
            ErrorKind::Io => "io",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Internal => "internal",
            ErrorKind::UnsafeContent => "unsafe_content",
        }
    }

    /// True for errors in what the user gave (exit status 2 in the CLI: nothing was written).
    pub fn is_usage(self) -> bool {
        matches!(
            self,
            ErrorKind::PackFile | ErrorKind::InvalidReference | ErrorKind::InvalidArgument
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a pack file, with its position and field path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The pack file, when the pack came from a file.
    pub file: Option<PathBuf>,
    /// 1-based line, 0 when unknown (a pack given as a dict has no lines).
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// Field path such as `items[2].platform` (empty for the document itself).
    pub field: String,
    /// What is wrong and, where known, what to do.
    pub message: String,
}

/// Most problems one validation reports; the rest are counted in a last one.
pub const MAX_PROBLEMS: usize = 1000;

/// Longest problem message kept (a value echoed in it is cut), in bytes.
const MAX_PROBLEM_MESSAGE: usize = 1000;

/// Cuts `text` to at most `max` bytes (on a character boundary), marking the cut.
fn clip(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
}

/// Problems found so far, at most [`MAX_PROBLEMS`] kept (memory and output stay bounded
/// whatever the pack file), messages cut to a readable length.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<Problem>,
    dropped: usize,
}

impl Problems {
    /// Records `p` (or only counts it, past the cap); true when it was kept.
    pub(crate) fn push(&mut self, mut p: Problem) -> bool {
        if self.list.len() >= MAX_PROBLEMS {
            self.dropped += 1;
            return false;
        }
        clip(&mut p.message, MAX_PROBLEM_MESSAGE);
        // A field path holds the keys written in the pack file, which may be huge.
        clip(&mut p.field, MAX_PROBLEM_MESSAGE / 4);
        self.list.push(p);
        true
    }

    /// True when nothing was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The kept problems in place (to sort them).
    pub(crate) fn kept(&mut self) -> &mut Vec<Problem> {
        &mut self.list
    }

    /// The problems, with a last one saying how many more there were.
    pub(crate) fn into_vec(mut self) -> Vec<Problem> {
        if self.dropped > 0 {
            let file = self.list.first().and_then(|p| p.file.clone());
            self.list.push(Problem {
                file,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!(
                    "… and {} more problem(s) not shown; fix these first",
                    self.dropped
                ),
            });
        }
        self.list
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            wrote = true;
        }
        if self.line > 0 {
            if wrote {
                f.write_str(":")?;
            }
            write!(f, "{}:{}", self.line, self.column)?;
            wrote = true;
        }
        if wrote {
            f.write_str(": ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// The library's error: a kind, a message that names the thing, and typed context.
///
/// Boxed, so that `Result<T, Error>` stays one pointer wide on the happy path.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    problems: Vec<Problem>,
    path: Option<PathBuf>,
    reference: Option<String>,
    digest: Option<String>,
    status: Option<u16>,
    code: Option<String>,
    /// How long the server asked us to wait before trying again (`Retry-After`).
    retry_after: Option<std::time::Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message that names the thing and says what to do.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            problems: Vec::new(),
            path: None,
            reference: None,
            digest: None,
            status: None,
            code: None,
            retry_after: None,
            source: None,
        }))
    }

    /// An invalid pack file with every problem that was found.
    pub fn pack_file(problems: Vec<Problem>) -> Self {
        let message = match problems.len() {
            0 => "invalid pack file".to_string(),
            1 => problems[0].to_string(),
            n => {
                let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                format!("invalid pack file ({n} problems):\n{}", lines.join("\n"))
            }
        };
        let mut err = Error::new(ErrorKind::PackFile, message);
        err.0.path = problems.iter().find_map(|p| p.file.clone());
        err.0.problems = problems;
        err
    }

    /// An I/O error on `path`, described by `what` ("reading", "creating" …).
    pub fn io(what: &str, path: &Path, source: std::io::Error) -> Self {
        let kind = match source.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::SourceNotFound,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{what} {}: {source}", path.display()))
            .with_path(path)
            .with_source(source)
    }

    /// Sets the path this error is about.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.path = Some(path.into());
        self
    }

    /// Sets the reference (target, source URI) this error is about.
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.0.reference = Some(reference.into());
        self
    }

    /// Sets the digest this error is about.
    pub fn with_digest(mut self, digest: impl Into<String>) -> Self {
        self.0.digest = Some(digest.into());
        self
    }

    /// Sets the HTTP status and, when the server sent one, its error code.
    pub fn with_status(mut self, status: u16, code: Option<String>) -> Self {
        self.0.status = Some(status);
        self.0.code = code;
        self
    }

    /// Records the server's `Retry-After`.
    pub(crate) fn with_retry_after(mut self, wait: Option<std::time::Duration>) -> Self {
        self.0.retry_after = wait;
        self
    }

    /// The server's `Retry-After`, for whoever retries.
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        self.0.retry_after
    }

    /// Keeps the underlying error as `source()`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with context (`"items[1] (file://a): "` …).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.0.message = format!("{prefix}: {}", self.0.message);
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Whether this error, met reading one entry of a listing (one tag, one layout entry),
    /// is that entry's problem — shown in its row — rather than a failure of the whole
    /// listing (network, login, cancellation).
    pub(crate) fn concerns_one_entry(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::NotFound
                | ErrorKind::DigestMismatch
                | ErrorKind::Unsupported
                | ErrorKind::InvalidReference
                | ErrorKind::Registry
                | ErrorKind::Io
        )
    }

    /// Every problem of an invalid pack file (empty for other kinds).
    pub fn problems(&self) -> &[Problem] {
        &self.0.problems
    }

    /// The file or directory this error is about.
    pub fn path(&self) -> Option<&Path> {
        self.0.path.as_deref()
    }

    /// The reference or URI this error is about.
    pub fn reference(&self) -> Option<&str> {
        self.0.reference.as_deref()
    }

    /// The digest this error is about.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest.as_deref()
    }

    /// The HTTP status of a registry or HTTP error.
    pub fn http_status(&self) -> Option<u16> {
        self.0.status
    }

    /// The registry's error code (`MANIFEST_UNKNOWN` …).
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("message", &self.0.message)
            .field("source", &self.0.source)
            .finish()
    }
}

/// Turns an I/O error of a verified or checked read back into the library error it carries
/// (a digest or size mismatch, a file that changed while it was read), or into `fallback(e)`
/// for a real I/O failure.
pub(crate) fn from_read_error(
    e: std::io::Error,
    fallback: impl FnOnce(std::io::Error) -> Error,
) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
        }
        return Error::new(ErrorKind::Internal, "lost a verification error");
    }
    fallback(e)
}
