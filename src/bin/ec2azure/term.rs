//! The terminal side of progress: an indicatif bar on stderr when stderr is a terminal, nothing
//! otherwise (or with --quiet / --json).

use ec2azure::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGINT or SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// For commands whose work checks [`Progress::cancelled`]: the first Ctrl-C (or SIGTERM) asks
/// running work to stop, which then cleans up its temporary
/// files as after any error; a second one kills at once (the handler resets itself).
pub fn install_interrupt_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which is
        // async-signal-safe; SA_RESETHAND restores the default after the first delivery.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

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
        // Phases that count things rather than bytes say so in their name.
        let counted = ["points", "simulating", "blocks"]
            .iter()
            .any(|w| what.contains(w));
        let style = ProgressStyle::with_template(if counted {
            "{msg:>12} [{bar:40}] {pos}/{len} eta {eta}"
        } else {
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
        })
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

    fn cancelled(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed)
    }
}
