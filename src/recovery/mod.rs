//! Recovery points, as Site Recovery makes them: a base image plus a change journal
//! ([`crate::journal`]) give one point per marker; a replication [`Policy`] decides which are
//! kept; a [`Catalog`] resolves a failover's choice (latest, latest processed, latest
//! app-consistent, multi-VM, custom); a [`PointImage`] is a point as a [`DiskImage`] any writer
//! consumes; [`check_points`] proves every point's digest in one pass; a [`Replica`] is the
//! process server's state (base, received segments, processed horizon, compaction).
//!
//! Journals come from [`simulate`] (a seeded workload) and [`diff`] (two images' changed blocks).

mod build;
mod catalog;
mod group;
mod overlay;
mod replica;
mod sources;
#[cfg(test)]
mod tests;

pub use build::{BuildReport, build_point, convert_verified};
pub use catalog::{Catalog, Gap, PointChoice, PointInfo, Policy, PolicyReport, resolve_multi_vm};
pub use group::{
    DiskProcessing, GroupReport, LostPoints, Pick, ProtectedDisk, ReplicationGroup, Resolution,
};
pub use overlay::{
    Overlay, PointCheck, PointImage, block_digests, check_base_size, check_points, root_of,
};
pub use replica::{ProcessReport, Replica, ReplicaState, ReplicaStatus};
pub use sources::{
    DiffReport, IntervalChurn, SimReport, SimSpec, SpanSim, diff, diff_changed, diff_changed_into,
    group_id, simulate, simulate_span,
};

use crate::digest::{Digest, Manifest};
use crate::error::{Error, Result};
use crate::image::DiskImage;
use crate::journal::{Journal, PointRecord};

/// The base's per-block digests and root.
///
/// # Errors
/// The base cannot be read.
pub fn base_digests(base: &dyn DiskImage) -> Result<(Vec<Digest>, Digest)> {
    let m = Manifest::compute(base)?;
    let d = block_digests(&m);
    let root = root_of(&d);
    Ok((d, root))
}

/// The point with marker sequence number `seq`.
///
/// # Errors
/// The journal has no available point with that id.
pub fn point_record(journal: &Journal, seq: u64) -> Result<&PointRecord> {
    journal
        .points()
        .iter()
        .find(|p| p.seq == seq)
        .ok_or_else(|| Error::argument(format!("no available point rp-{seq}")))
}
