//! Progress bars on a terminal (stderr): one per blob in flight and a total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{Progress, ProgressEvent};

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    blobs: HashMap<String, ProgressBar>,
}

fn short(digest: &str) -> &str {
    digest
        .split_once(':')
        .map_or(digest, |(_, h)| &h[..h.len().min(12)])
}

/// Clears the bars when dropped (the work is done or failed).
pub struct BarsGuard(Option<ProgressBar>);

impl Drop for BarsGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.finish_and_clear();
        }
    }
}

/// A progress observer drawing bars on stderr, and the guard that clears them.
pub fn progress() -> (Progress, BarsGuard) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let total = multi.add(ProgressBar::new(0));
    total.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    total.set_prefix("total");
    let guard = BarsGuard(Some(total.clone()));
    let state = Arc::new(Mutex::new(Bars {
        multi,
        total,
        blobs: HashMap::new(),
    }));
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let progress = Progress::new(move |ev| {
        let mut b = state.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            ProgressEvent::Started {
                digest,
                title,
                size,
            } => {
                b.total.inc_length(*size);
                let bar = b.multi.insert_before(&b.total, ProgressBar::new(*size));
                bar.set_style(style.clone());
                bar.set_prefix(short(digest).to_string());
                bar.set_message(title.clone().unwrap_or_default());
                b.blobs.insert(digest.clone(), bar);
            }
            ProgressEvent::Advanced { digest, bytes } => {
                if let Some(bar) = b.blobs.get(digest) {
                    bar.inc(*bytes);
                }
                b.total.inc(*bytes);
            }
            ProgressEvent::Finished { digest } => {
                if let Some(bar) = b.blobs.remove(digest) {
                    bar.finish_and_clear();
                }
            }
            ProgressEvent::Skipped { digest, .. } => {
                if let Some(bar) = b.blobs.remove(digest) {
                    bar.finish_and_clear();
                }
            }
        }
    });
    (progress, guard)
}
