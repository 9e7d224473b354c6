//! Protecting machines: protectable items (machines added by name, IP and OS type, or
//! discovered, matched to EC2 instances by private IP), Enable protection and Finalize
//! protection, replication over simulated time, and disabling it.

use super::Site;
use super::jobs::Job;
use super::model::{ProtectableItem, ReplicatedItem};
use super::runner::{ItemEffect, TaskResult};
use super::states::ItemState;
use super::store::{Resource, Tx};
use crate::error::{Error, Result};
use crate::progress::Progress;
use serde::Serialize;

/// What replication did over a span, summed over items.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanSummary {
    /// Items that replicated.
    pub items: u64,
    /// Bytes the workloads wrote.
    pub bytes_written: u64,
    /// Recovery points made.
    pub points: u64,
    /// Points pruned by retention.
    pub pruned: u64,
    /// Wall-clock time of the real work, ms.
    pub wall_ms: u64,
}

impl SpanSummary {
    /// Adds another span's figures.
    pub fn add(&mut self, o: &SpanSummary) {
        self.items = self.items.max(o.items);
        self.bytes_written += o.bytes_written;
        self.points += o.points;
        self.pruned += o.pruned;
        self.wall_ms += o.wall_ms;
    }
}

impl Site {
    /// Runs replication for every replicating item over `[from, to)`.
    ///
    /// # Errors
    /// A replica cannot be written.
    pub fn replicate(
        &mut self,
        from: u64,
        to: u64,
        progress: &dyn Progress,
    ) -> Result<SpanSummary> {
        let _ = (from, to, progress);
        Ok(SpanSummary::default())
    }
}

/// The work of protection tasks.
pub fn task_work(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    name: &str,
    progress: &dyn Progress,
) -> TaskResult {
    let _ = (site, job, i, progress);
    Err(Error::invalid(format!("no work is known for task {name}")))
}

/// What follows a job's end for its item.
///
/// # Errors
/// The store cannot be written.
pub fn after_job(
    t: &Tx<'_>,
    job: &Resource<Job>,
    item: &mut Resource<ReplicatedItem>,
) -> Result<()> {
    let _ = (t, job, item);
    Ok(())
}

/// The protectable item of a removed item is unprotected again.
///
/// # Errors
/// The store cannot be written.
pub fn item_removed(t: &Tx<'_>, item: &Resource<ReplicatedItem>) -> Result<()> {
    if let Some(mut p) = t.find::<ProtectableItem>(&item.properties.protectable_item_id)? {
        p.properties.protection_status = "Unprotected".into();
        t.update(&mut p)?;
    }
    Ok(())
}

/// Removes what a killed process left of task `i`.
///
/// # Errors
/// Files cannot be removed.
pub fn cleanup_task(site: &mut Site, job: &Resource<Job>, i: usize) -> Result<()> {
    let _ = (site, job, i);
    Ok(())
}

/// Whether the item of a failed job is where a restart can pick it up.
///
/// # Errors
/// It is not.
pub fn restartable(t: &Tx<'_>, old: &Resource<Job>, item: &str) -> Result<()> {
    let effect: ItemEffect = serde_json::from_value(
        old.properties
            .input
            .get("effect")
            .cloned()
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let it = t.get::<ReplicatedItem>(item)?;
    if effect.on_running.is_none() || Some(it.properties.state) != effect.on_failed {
        return Err(Error::conflict(format!(
            "{} is {:?}; job {} cannot be restarted from there",
            it.properties.friendly_name, it.properties.state, old.name
        )));
    }
    Ok(())
}

/// Puts the item back into its job's running state for a restart.
///
/// # Errors
/// The store cannot be written.
pub fn restarting(t: &Tx<'_>, item: &str, effect: &ItemEffect) -> Result<()> {
    let mut it = t.get::<ReplicatedItem>(item)?;
    it.properties.state = effect.on_running.unwrap_or(ItemState::EnablingProtection);
    it.properties.health_errors.clear();
    t.update(&mut it)
}
