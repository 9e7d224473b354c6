//! Bounded retries with exponential backoff, shared by every cloud client: a call is attempted
//! until it succeeds, fails in a way not worth retrying, or runs out of attempts.

use crate::error::{CloudError, Error, Result};
use std::time::Duration;

/// A failure that may or may not be worth another attempt.
pub trait Transient: std::error::Error + Send + Sync + 'static {
    /// `true` when the same call may succeed later (throttling, 5xx, timeouts, dropped
    /// connections).
    fn retryable(&self) -> bool;

    /// What the service answered, as data (status, code); by default only whether it is
    /// transient.
    fn cloud(&self) -> CloudError {
        CloudError {
            service: "cloud",
            status: None,
            code: None,
            transient: self.retryable(),
        }
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts from 100 ms doubling to at most 10 s: about 22 s of waiting in the worst case,
    /// enough for a throttled account or a snapshot that is still becoming visible.
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Runs `call` under this policy; errors say `what` failed and why.
    pub(crate) fn run<T, E: Transient>(
        &self,
        what: &str,
        call: impl FnMut() -> Result<T, E>,
    ) -> Result<T> {
        self.run_with(what, &|| false, &|| {}, call)
    }

    /// As [`RetryPolicy::run`], and before each retry: stops with a cancellation when
    /// `cancelled()` says so, and calls `on_retry()` (a counter, say).
    pub(crate) fn run_with<T, E: Transient>(
        &self,
        what: &str,
        cancelled: &dyn Fn() -> bool,
        on_retry: &dyn Fn(),
        mut call: impl FnMut() -> Result<T, E>,
    ) -> Result<T> {
        let attempts = self.attempts.max(1);
        let mut delay = self.base_delay;
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                if cancelled() {
                    return Err(Error::cancelled());
                }
                on_retry();
                std::thread::sleep(delay);
                delay = (delay * 2).min(self.max_delay);
            }
            match call() {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => last = Some(e),
                Err(e) => return Err(Error::from_cloud(format!("{what}: {e}"), e.cloud(), e)),
            }
        }
        match last {
            Some(e) => Err(Error::from_cloud(
                format!("{what}: still failing after {attempts} attempts: {e}"),
                e.cloud(),
                e,
            )),
            None => Err(Error::new(
                crate::ErrorKind::Cloud,
                format!("{what}: no attempt was made"),
            )),
        }
    }
}

/// One error for a job of many calls of which some failed: `message` lists them all; the kind,
/// the cloud answer and the source are those of `first`, so a caller can still tell a 403 from
/// a 503.
pub(crate) fn many_failed(message: String, first: Error) -> Error {
    match first.cloud().cloned() {
        Some(cloud) => Error::from_cloud(message, cloud, first),
        None => Error::new(first.kind(), message).with_source(first),
    }
}
