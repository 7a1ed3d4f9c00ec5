//! Progress bars on a terminal (stderr): one per large source being read while staging, one
//! per blob in flight, and a total of the bytes written to the target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{Progress, ProgressEvent};

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    style: ProgressStyle,
    /// Keyed by digest (copying) or by source (staging).
    active: HashMap<String, ProgressBar>,
}

impl Bars {
    fn start(&mut self, key: &str, prefix: String, message: String, size: Option<u64>) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size.unwrap_or(0)));
        bar.set_style(self.style.clone());
        bar.set_prefix(prefix);
        bar.set_message(message);
        self.active.insert(key.to_string(), bar);
    }

    fn advance(&self, key: &str, bytes: u64) {
        if let Some(bar) = self.active.get(key) {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self, key: &str) {
        if let Some(bar) = self.active.remove(key) {
            bar.finish_and_clear();
        }
    }
}

fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex[..hex.len().min(12)].to_string()
}

/// Clears the bars when dropped (the work is done or failed).
pub struct BarsGuard(ProgressBar);

impl Drop for BarsGuard {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A progress observer drawing bars on stderr, and the guard that clears them.
pub fn progress() -> (Progress, BarsGuard) {
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let total = multi.add(ProgressBar::new(0));
    total.set_style(style.clone());
    total.set_prefix("written");
    let guard = BarsGuard(total.clone());
    let state = Arc::new(Mutex::new(Bars {
        multi,
        total,
        style,
        active: HashMap::new(),
    }));
    let progress = Progress::new(move |ev| {
        let mut b = state.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            ProgressEvent::StageStarted { source, size } => {
                let name = source.rsplit('/').next().unwrap_or(source).to_string();
                b.start(source, "reading".into(), name, *size)
            }
            ProgressEvent::StageAdvanced { source, bytes } => b.advance(source, *bytes),
            ProgressEvent::StageFinished { source } => b.finish(source),
            ProgressEvent::Started {
                digest,
                title,
                size,
            } => {
                b.total.inc_length(*size);
                b.start(
                    digest,
                    short(digest),
                    title.clone().unwrap_or_default(),
                    Some(*size),
                );
            }
            ProgressEvent::Advanced { digest, bytes } => {
                b.advance(digest, *bytes);
                b.total.inc(*bytes);
            }
            ProgressEvent::Finished { digest }
            | ProgressEvent::Skipped { digest, .. }
            | ProgressEvent::Mounted { digest, .. } => b.finish(digest),
        }
    });
    (progress, guard)
}
