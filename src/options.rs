//! The options every operation takes, checked once here for every caller (CLI, Python, C).

use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::runtime::Cancel;
use crate::transport::RegistryOptions;

/// Options shared by the operations, with the CLI's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// Blob transfers at once (`-j`, default [`DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// Where downloads and archives are staged (`--tmp-dir`, default the system temp dir).
    pub tmp_dir: Option<PathBuf>,
    /// Make layout blobs durable before `index.json` names them (`--fsync`).
    pub fsync: bool,
    /// `org.opencontainers.image.created` on the root: `"now"` or an RFC 3339 time
    /// (`--created`); without it `SOURCE_DATE_EPOCH` is used when set, else nothing.
    pub created: Option<String>,
    /// Build and print, write nothing (`--dry-run`).
    pub dry_run: bool,
    /// Observer of per-blob progress.
    pub progress: Progress,
    /// Registry connection and credentials (`--plain-http`, `-u`, …).
    pub registry: RegistryOptions,
    /// `copy`: the member of an index to copy (`--platform`).
    pub platform: Option<String>,
    /// `delete` from a registry: deleting the manifest deletes every tag on it, so it must
    /// be asked for (`--force`).
    pub force: bool,
    /// `extract`: foreign archive layers are extracted into directories instead of written as
    /// archive files (`--unpack`); `copy`/`pack` into a layout: tar layers are also
    /// extracted into `DIR/unpacked/sha256/<hex>/`.
    pub unpack: bool,
    /// `extract`: image members are copied into `OUTDIR/images/` so the pack file packs
    /// offline (`--images`).
    pub images: bool,
    /// Most bytes one archive may extract to (`--max-bytes`, default 64 GiB).
    pub max_bytes: u64,
    /// Most entries one archive may hold (`--max-entries`, default 1,000,000).
    pub max_entries: u64,
    /// Stops the operation when fired (from another thread, e.g. on Ctrl-C). What was
    /// written stays valid: blobs are complete or absent, no tag is moved.
    pub cancel: Option<Cancel>,
}

impl Options {
    /// [`Options::platform`] parsed (`--platform`), or `None`.
    pub(crate) fn wanted_platform(&self) -> Result<Option<crate::platform::Platform>> {
        self.platform
            .as_deref()
            .map(|p| {
                crate::platform::Platform::parse(p)
                    .map_err(|m| Error::new(ErrorKind::InvalidArgument, format!("--platform {m}")))
            })
            .transpose()
    }
}

/// Default of [`Options::max_bytes`]: 64 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
/// Default of [`Options::max_entries`]: 1,000,000.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// Blob transfers at once unless asked otherwise. Eight: writing 10,000 small blobs into a
/// layout took 0.78-0.84 s with 8 and 0.90-0.95 s with 4 on this project's 2-core machine
/// (each write is a hand-off to a blocking thread; more in flight hide its latency), and 8
/// uploads at once are well within what registries take.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The most blob transfers at once that `concurrency` may ask for.
pub const MAX_CONCURRENCY: usize = 256;

impl Options {
    /// Checks the options that every operation takes.
    ///
    /// Errors: [`ErrorKind::InvalidArgument`] when `concurrency` is 0 or over
    /// [`MAX_CONCURRENCY`], or `registry.timeout` is zero.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "concurrency must be between 1 and {MAX_CONCURRENCY}, not {}",
                    self.concurrency
                ),
            ));
        }
        if self.registry.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "timeout must be at least one second",
            ));
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: DEFAULT_CONCURRENCY,
            tmp_dir: None,
            fsync: false,
            created: None,
            dry_run: false,
            progress: Progress::default(),
            registry: RegistryOptions::default(),
            platform: None,
            force: false,
            unpack: false,
            images: false,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            cancel: None,
        }
    }
}
