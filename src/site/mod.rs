//! Site Recovery offline: the site and its replication.

pub mod replication;
