//! Site Recovery offline: a **site** is one folder holding the simulated AWS estate and Azure
//! subscription, Site Recovery's objects and their files (replicas, journals, blobs), with the
//! state in SQLite ([`store`]). Everything a user can do from the CLI is a call on a [`Site`].

pub mod azure;
pub mod jobs;
pub mod model;
pub mod states;
pub mod store;
