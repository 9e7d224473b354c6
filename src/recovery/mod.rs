//! Recovery points, as Site Recovery makes them: a base image plus a change journal
//! ([`crate::journal`]) give one point per marker; a replication [`Policy`] decides which are
//! kept; a [`Catalog`] resolves a failover's choice (latest, latest processed, latest
//! app-consistent, multi-VM, custom); a [`PointImage`] is a point as a [`DiskImage`] any writer
//! consumes; [`check_points`] proves every point's digest in one pass; a [`Replica`] is the
//! process server's state (base, received segments, processed horizon, compaction).
//!
//! Journals come from [`simulate`] (a seeded workload) and [`diff`] (two images' changed blocks).

mod catalog;
mod overlay;
mod replica;
mod sources;
#[cfg(test)]
mod tests;

pub use catalog::{Catalog, Gap, PointInfo, PointSpec, Policy, PolicyReport, resolve_multi_vm};
pub use overlay::{
    Overlay, PointCheck, PointImage, block_digests, check_base_size, check_points, root_of,
};
pub use replica::{ProcessReport, Replica, ReplicaState, ReplicaStatus};
pub use sources::{DiffReport, SimReport, SimSpec, diff, group_id, simulate};

use crate::digest::{Manifest, Sha256Digest};
use crate::error::{Error, Result};
use crate::export::{ConvertOptions, ConvertReport, convert};
use crate::image::DiskImage;
use crate::journal::{Journal, PointRecord};
use std::path::Path;

/// The base's per-block digests and root.
///
/// # Errors
/// The base cannot be read.
pub fn base_digests(base: &dyn DiskImage) -> Result<(Vec<Sha256Digest>, Sha256Digest)> {
    let m = Manifest::compute(base)?;
    let d = block_digests(&m)?;
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

/// What building a point did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The point's id.
    pub point: String,
    /// Its time.
    pub time: String,
    /// The writer's report.
    pub convert: ConvertReport,
    /// The root digest of the built disk (computed when the marker carries a digest to check,
    /// or a manifest was asked for).
    pub root: Option<String>,
    /// Whether it matches the marker's digest (`None`: the marker has none).
    pub verified: Option<bool>,
}

/// Builds point `seq` of `journal` over `base` into `output` with the writer's options; when
/// the marker carries a digest, the built disk's manifest is computed in the same pass and must
/// match it.
///
/// # Errors
/// The point is not available, a payload is corrupt, the output cannot be written, or the
/// marker's digest does not match (the output is removed then).
pub fn build_point(
    base: &dyn DiskImage,
    journal: &Journal,
    seq: u64,
    output: &Path,
    opts: &ConvertOptions,
) -> Result<BuildReport> {
    let p = point_record(journal, seq)?.clone();
    let img = PointImage::new(base, journal, seq)?;
    let mut o = *opts;
    // Hashing costs a SHA-256 pass over the data: done when there is a digest to check (or
    // the caller asks for the manifest), skipped otherwise.
    o.manifest = opts.manifest || p.marker.digest.is_some();
    let report = convert(&img, output, &o)?;
    if !o.manifest {
        return Ok(BuildReport {
            point: crate::journal::point_id(seq),
            time: crate::journal::format_time(p.time_ms),
            convert: report,
            root: None,
            verified: None,
        });
    }
    // The manifest covers the output's virtual size (a VHD is padded to a whole MiB): the
    // point's root is over the disk itself, so recompute it from the disk's blocks when padded.
    let manifest = report
        .manifest
        .clone()
        .ok_or_else(|| Error::argument("no manifest"))?;
    let root = if report.virtual_size == base.len() {
        manifest.root.clone()
    } else {
        let mut d = block_digests(&manifest)?;
        d.truncate(Manifest::block_count(base.len()) as usize);
        if let Some(last) = d.last_mut()
            && !base.len().is_multiple_of(crate::digest::BLOCK_SIZE)
        {
            // The padded last block hashed padding too: hash the disk's part again.
            let blk = base.len() / crate::digest::BLOCK_SIZE;
            let off = blk * crate::digest::BLOCK_SIZE;
            let mut buf = vec![0u8; (base.len() - off) as usize];
            img.read_exact_at(&mut buf, off)?;
            *last = crate::digest::sha256(&buf);
        }
        hex::encode(root_of(&d))
    };
    let verified = p.marker.digest.map(|d| hex::encode(d) == root);
    if verified == Some(false) {
        let _ = std::fs::remove_file(output);
        return Err(Error::invalid(format!(
            "point rp-{seq}: the built disk has root digest {root}, the marker records {}; \
             the output was removed",
            hex::encode(p.marker.digest.unwrap_or_default())
        ))
        .with_path(journal.dir()));
    }
    Ok(BuildReport {
        point: crate::journal::point_id(seq),
        time: crate::journal::format_time(p.time_ms),
        convert: report,
        root: Some(root),
        verified,
    })
}
