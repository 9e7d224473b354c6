//! Site Recovery offline: support and prerequisite checks and the support matrix they read.

pub mod checks;
pub mod support;
