//! The terminal side of progress: an indicatif bar on stderr when stderr is a terminal, nothing
//! otherwise (or with --quiet / --json).

use ec2azure::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

/// A progress bar, or nothing.
pub struct TermProgress {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

/// A progress reporter for the terminal; silent when `quiet` or when stderr is not a terminal.
pub fn progress(quiet: bool) -> TermProgress {
    TermProgress {
        bar: Mutex::new(None),
        enabled: !quiet && std::io::stderr().is_terminal(),
    }
}

impl Progress for TermProgress {
    fn begin(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(b) = b.as_ref()
        {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(b) = b.take()
        {
            b.finish_and_clear();
        }
    }
}
