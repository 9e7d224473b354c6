//! Locks, in one place. A `std` mutex is "poisoned" when a thread panicked while holding it.
//! Nothing in this crate panics by design (a panic is a bug, and the fuzz targets and tests
//! look for them), and every value guarded here stays valid at every step of its updates — a
//! counter, a list of failures, per-block digests, a fake's state, a clock — so a poisoned lock
//! still holds a usable value: taking it is better than turning one bug into a second panic in
//! every other worker. These two functions are the only places that decide that.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the value even if another thread panicked while holding it (see the
/// module docs).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The value of `m`, consumed (see [`lock`]).
pub fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
