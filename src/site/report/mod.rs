//! The rehearsal report: what a finished rehearsal left in a site (its jobs with their tasks,
//! each machine's RPO over time and its failovers, recovery plans' jobs), joined with what the
//! rehearsal runner knows that the site does not ([`RehearsalInfo`]: the steps, the faults
//! injected, the objectives), gathered into one plain [`Report`] and rendered three ways:
//!
//! - [`Report::text`]: the terminal table (steps, per machine RPO / RTO / data loss /
//!   verification, objectives) — [`text`];
//! - [`Report::html`]: one self-contained page (inline CSS, no script, nothing fetched) with the
//!   timeline drawn as inline SVG ([`svg`]) and a table per plan and per job ([`html`]); written
//!   as polyglot XHTML5, so it parses as XML as well as HTML;
//! - JSON: the [`Report`] itself, serialized (`report.json`).
//!
//! [`Report::write`] puts `report.html` and `report.json` in a folder, each written under a
//! temporary name and renamed into place.
//!
//! The report reads the site only ([`Report::gather`]); it never changes it. A machine's
//! figures come from its [`ItemHistory`](super::model::ItemHistory), which outlives the
//! replicated item, so a migrated machine is reported as fully as one still replicating.

mod gather;
pub mod html;
pub mod svg;
pub mod text;

#[cfg(test)]
mod tests;

use super::Site;
use super::jobs::{JobError, JobState};
use super::model::{FailoverRecord, RpoSample};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the rehearsal runner knows that the site does not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RehearsalInfo {
    /// The scenario's name.
    pub title: String,
    /// The scenario file's path.
    pub scenario: String,
    /// When the rehearsal started (simulated ms).
    pub started_ms: u64,
    /// When it ended (simulated ms).
    pub ended_ms: u64,
    /// Wall-clock ms the whole rehearsal took.
    pub wall_ms: u64,
    /// The scenario's steps, in order, as they went.
    pub steps: Vec<StepOutcome>,
    /// The faults injected, described.
    pub faults: Vec<String>,
    /// The scenario's objectives and whether each was met.
    pub objectives: Vec<ObjectiveOutcome>,
}

/// One step of a rehearsal (test failover of a plan, cleanup, failover, …) and how it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    /// The step as the scenario names it.
    pub name: String,
    /// When it started (simulated ms).
    pub start_ms: u64,
    /// When it ended (simulated ms).
    pub end_ms: u64,
    /// The jobs it ran (ids or names).
    pub job_ids: Vec<String>,
    /// `ok`, or the error.
    pub outcome: String,
    /// The step was expected to fail (a fault's consequence), so a failure is as planned.
    pub expected: bool,
}

impl StepOutcome {
    /// Whether the step went as planned: it succeeded, or it failed and was expected to.
    pub fn as_planned(&self) -> bool {
        (self.outcome == "ok") != self.expected
    }
}

/// One objective of a rehearsal and whether it was met.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveOutcome {
    /// `RPO`, `RTO` or `verified`.
    pub objective: String,
    /// The machine it is about (`None`: every machine).
    pub machine: Option<String>,
    /// The target (`≤ 15m`, …).
    pub target: String,
    /// What was measured.
    pub actual: String,
    /// Whether it was met.
    pub met: bool,
}

/// Everything the report renders, as plain data (the JSON is this, serialized).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The scenario's name.
    pub title: String,
    /// The scenario file's path.
    pub scenario: String,
    /// When the rehearsal started (simulated ms).
    pub started_ms: u64,
    /// When it ended (simulated ms).
    pub ended_ms: u64,
    /// Wall-clock ms the whole rehearsal took.
    pub wall_ms: u64,
    /// The timeline's span (simulated ms): the rehearsal's, widened to every job and sample.
    pub timeline: Span,
    /// Objectives met.
    pub objectives_met: usize,
    /// Objectives missed.
    pub objectives_missed: usize,
    /// The objectives.
    pub objectives: Vec<ObjectiveOutcome>,
    /// The steps.
    pub steps: Vec<StepOutcome>,
    /// The faults injected.
    pub faults: Vec<String>,
    /// Per machine: replication, RPO, failovers, points, jobs.
    pub machines: Vec<MachineReport>,
    /// Per recovery plan: its jobs.
    pub plans: Vec<PlanReport>,
    /// Every job, oldest first.
    pub jobs: Vec<JobReport>,
}

/// One machine: its replication, its RPO over time, its failovers and its jobs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineReport {
    /// The machine's name.
    pub name: String,
    /// Its replicated item's `protectionStateDescription` now (`None`: the item is gone, after
    /// complete migration or disable protection).
    pub state: Option<String>,
    /// Its replication: each span from an Enable protection's start to the failover that
    /// stopped it, the job that ended it (disable, complete migration, a failed enable), or
    /// the timeline's end.
    pub replication: Vec<Span>,
    /// The policy's RPO threshold, minutes (`None`: its policy is not known).
    pub rpo_threshold_minutes: Option<u64>,
    /// The RPO samples, oldest first.
    pub rpo: Vec<RpoSample>,
    /// The largest RPO sampled, seconds.
    pub max_rpo_seconds: Option<u64>,
    /// Simulated ms the sampled RPO was above the threshold (a sample's RPO holds until the
    /// next sample).
    pub ms_above_threshold: u64,
    /// Its test failovers, failovers and changes of recovery point.
    pub failovers: Vec<FailoverRecord>,
    /// Its recovery points in retention when the report was made (empty when the item is
    /// gone or commit deleted them).
    pub points: Vec<PointMark>,
    /// Why the points could not be listed, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_note: Option<String>,
    /// Its jobs' ids, oldest first.
    pub job_ids: Vec<String>,
}

/// A span of simulated time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// Its start (simulated ms).
    pub start_ms: u64,
    /// Its end (simulated ms).
    pub end_ms: u64,
}

/// A recovery point on the timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointMark {
    /// Its name (`rp-N`).
    pub name: String,
    /// Its time (simulated ms).
    pub time_ms: u64,
    /// `CrashConsistent` or `ApplicationConsistent`.
    pub kind: String,
}

/// One recovery plan: its jobs, and the machines its failovers moved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// The plan's name.
    pub name: String,
    /// Its jobs' ids, oldest first.
    pub job_ids: Vec<String>,
    /// The machines whose failovers ran in it.
    pub machines: Vec<String>,
}

/// One job, with its tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    /// Its ARM id.
    pub id: String,
    /// Its name (the id's last segment).
    pub name: String,
    /// `EnableDr`, `TestFailover`, …
    pub scenario_name: String,
    /// "Enable protection", …
    pub friendly_name: String,
    /// The object it acts on, by name.
    pub target_object_name: String,
    /// `ProtectionEntity`, `RecoveryPlan`, `Policy`, `Fabric`, …
    pub target_instance_type: String,
    /// Its state.
    pub state: JobState,
    /// When it started (simulated ms).
    pub start_ms: u64,
    /// When it ended (simulated ms), if it has.
    pub end_ms: Option<u64>,
    /// Wall-clock ms its tasks' real work took.
    pub wall_ms: u64,
    /// Its tasks, in order.
    pub tasks: Vec<TaskReport>,
    /// Its errors.
    pub errors: Vec<JobError>,
}

/// One task of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    /// Its id (`task-N`: what a job error's `taskId` names).
    pub task_id: String,
    /// Its name.
    pub name: String,
    /// Its name as the portal shows it.
    pub friendly_name: String,
    /// Its state.
    pub state: JobState,
    /// `Completed`, `Skipped`, …
    pub state_description: Option<String>,
    /// When it started (simulated ms).
    pub start_ms: Option<u64>,
    /// When it ended (simulated ms).
    pub end_ms: Option<u64>,
    /// Wall-clock ms its real work took.
    pub wall_ms: u64,
    /// Its errors.
    pub errors: Vec<JobError>,
}

impl TaskReport {
    /// Simulated ms from its start to its end, when it has both.
    pub fn duration_ms(&self) -> Option<u64> {
        Some(self.end_ms?.saturating_sub(self.start_ms?))
    }
}

impl JobReport {
    /// Simulated ms from its start to its end, when it has ended.
    pub fn duration_ms(&self) -> Option<u64> {
        Some(self.end_ms?.saturating_sub(self.start_ms))
    }
}

/// The files [`Report::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportFiles {
    /// `DIR/report.html`.
    pub html: PathBuf,
    /// `DIR/report.json`.
    pub json: PathBuf,
}

impl Report {
    /// Reads what a rehearsal left in `site` (every job, every machine's history, its item and
    /// points when it still exists, the policies' thresholds) and joins it with `info`.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn gather(site: &mut Site, info: &RehearsalInfo) -> Result<Report> {
        gather::gather(site, info)
    }

    /// The terminal table: the header and objectives, the steps, per machine its RPO, RTO,
    /// data loss and verification, and the faults.
    pub fn text(&self) -> String {
        text::render(self)
    }

    /// One self-contained HTML page (polyglot XHTML5) with the SVG timeline and the tables.
    pub fn html(&self) -> String {
        html::render(self)
    }

    /// The report as pretty JSON.
    ///
    /// # Errors
    /// It does not serialize (it always does: plain data).
    pub fn json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::invalid(format!("encoding the report as JSON: {e}")))
    }

    /// The job with this id or name.
    pub fn job(&self, id: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.id == id || j.name == id)
    }

    /// Writes `report.html` and `report.json` into `dir` (made when missing), each under a
    /// temporary name in `dir`, synced, then renamed into place.
    ///
    /// # Errors
    /// `dir` cannot be made or written.
    pub fn write(&self, dir: &Path) -> Result<ReportFiles> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("creating the report's folder", e).with_path(dir))?;
        let files = ReportFiles {
            html: dir.join("report.html"),
            json: dir.join("report.json"),
        };
        write_atomic(&files.html, self.html().as_bytes())?;
        write_atomic(&files.json, self.json()?.as_bytes())?;
        Ok(files)
    }
}

/// Writes `bytes` to `path` through a temporary file beside it, synced, then renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ec2azure-report.")
        .suffix(".partial")
        // Like any new file: 0666 less the umask (tempfile's default is 0600).
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating the report's temporary file", e).with_path(dir))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("writing the report", e).with_path(tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| Error::io("renaming the report into place", e.error).with_path(path))?;
    Ok(())
}

/// A duration for people: `850 ms` below a second, else `1h30m`, `4m12s`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        crate::clock::format_duration(ms)
    }
}

/// A size for people: `512 B`, `256 MiB`, `1.5 GiB` (binary units, one decimal above MiB).
pub fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if n < KIB {
        format!("{n} B")
    } else if n < MIB {
        format!("{} KiB", n / KIB)
    } else if n < GIB {
        format!("{} MiB", n / MIB)
    } else {
        format!("{}.{} GiB", n / GIB, n % GIB * 10 / GIB)
    }
}

/// Wall-clock ms for people: `850 ms`, `12.3 s`.
pub fn wall(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{}.{} s", ms / 1000, ms % 1000 / 100)
    }
}
