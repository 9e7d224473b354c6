//! Progress reporting as a trait, so the library knows nothing of terminals: long operations call
//! [`Progress::begin`] with a total, [`Progress::advance`] from any thread, and
//! [`Progress::finish`], and ask [`Progress::cancelled`] whether to stop. The CLI supplies a terminal progress bar; library callers that do not
//! care pass [`NoProgress`].

/// Receives progress of a long operation. Methods may be called from several threads.
pub trait Progress: Send + Sync {
    /// A new phase `what` starts, of `total` units (bytes unless said otherwise).
    fn begin(&self, what: &str, total: u64) {
        let _ = (what, total);
    }
    /// `n` more units are done.
    fn advance(&self, n: u64) {
        let _ = n;
    }
    /// The phase is over.
    fn finish(&self) {}
    /// `true` when the caller wants the operation stopped (Ctrl-C, say). Long operations check
    /// between pieces of work and stop with an [`ErrorKind::Interrupted`](crate::ErrorKind) error,
    /// cleaning up as after any error.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Ignores all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
