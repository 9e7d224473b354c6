//! Moving the site through simulated time: [`Site::advance`] runs, in time order, replication
//! for each span between events and the work of every task whose modelled end falls inside
//! the advance; a job's end moves its item to the state the state machine gives.
//!
//! A task's work runs outside any transaction (it may read a snapshot for minutes), under a
//! lock file recorded in the task, then its result is recorded in one transaction. One process
//! advances a site at a time (the `clock` lock); other commands go on meanwhile.

use super::jobs::{Job, JobError, JobState, job_error};
use super::lock::FileLock;
use super::model::ReplicatedItem;
use super::states::ItemState;
use super::store::{Resource, Tx};
use super::{Site, now_ms};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// What a job does to its item when it ends, kept in the job's input.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ItemEffect {
    /// The replicated item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Its state when the job succeeds (`None`: the item is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_succeeded: Option<ItemState>,
    /// Its state while the job runs (what a restart puts it back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_running: Option<ItemState>,
    /// Whether success removes the item.
    #[serde(default)]
    pub remove_on_success: bool,
    /// Its state when the job fails or is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failed: Option<ItemState>,
}

/// What a task's work produced.
pub type TaskOutput = BTreeMap<String, serde_json::Value>;

/// A task's work: `Ok(Ok(output))` done, `Ok(Err(error))` the task failed as the service
/// would report it, `Err` something broke (recorded as a failure too).
pub type TaskResult = Result<std::result::Result<TaskOutput, JobError>>;

/// What an advance did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvanceReport {
    /// The clock before (RFC 3339).
    pub from: String,
    /// The clock after.
    pub to: String,
    /// Tasks whose work ran, as `job: task`.
    pub tasks_run: Vec<String>,
    /// Jobs that ended, with their state.
    pub jobs_ended: Vec<(String, JobState)>,
    /// Wall-clock time of the real work, ms.
    pub wall_ms: u64,
    /// Replication over the span.
    pub replication: super::protect::SpanSummary,
}

impl Site {
    /// Advances the clock by `by_ms`, running what falls due.
    ///
    /// # Errors
    /// The store or a job's files cannot be written (a job's own failure is recorded in it).
    pub fn advance(&mut self, by_ms: u64, progress: &dyn Progress) -> Result<AdvanceReport> {
        let lock = FileLock::acquire(&self.lock_path("clock"))?;
        let start = self.now_ms()?;
        let r = self.run_until(start.saturating_add(by_ms), None, progress);
        drop(lock);
        r
    }

    /// Advances the clock until job `id` ends (at most `limit_ms`).
    ///
    /// # Errors
    /// As [`Site::advance`]; the job does not end within the limit.
    pub fn wait_for(
        &mut self,
        id: &str,
        limit_ms: u64,
        progress: &dyn Progress,
    ) -> Result<AdvanceReport> {
        let lock = FileLock::acquire(&self.lock_path("clock"))?;
        let start = self.now_ms()?;
        let r = self.run_until(start.saturating_add(limit_ms), Some(id), progress);
        drop(lock);
        let r = r?;
        let j = self.job(id)?;
        if !j.properties.state.is_final() && j.properties.state != JobState::Suspended {
            return Err(Error::conflict(format!(
                "job {} ({}) had not ended after {}",
                j.name,
                j.properties.friendly_name,
                crate::clock::format_duration(limit_ms)
            )));
        }
        Ok(r)
    }

    fn run_until(
        &mut self,
        target: u64,
        until_job: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<AdvanceReport> {
        let wall = Instant::now();
        let mut report = AdvanceReport {
            from: crate::clock::format_time(self.now_ms()?),
            ..AdvanceReport::default()
        };
        loop {
            let now = self.now_ms()?;
            let jobs = self.jobs()?;
            // A job waited for stops the advance when it ends, or when it waits for a user
            // (suspended: only `jobs resume` moves it on).
            if let Some(id) = until_job
                && jobs.iter().any(|j| {
                    (j.id == id || j.name == id)
                        && (j.properties.state.is_final()
                            || j.properties.state == JobState::Suspended)
                })
            {
                break;
            }
            // Cancelling jobs stop before their next task.
            let mut cancelled = false;
            for j in jobs
                .iter()
                .filter(|j| j.properties.state == JobState::Cancelling)
            {
                let id = j.id.clone();
                cancelled |= self.tx(|t| {
                    let mut j = t.get::<Job>(&id)?;
                    if j.properties.state == JobState::Cancelling
                        && j.properties.tasks.iter().all(|t| t.running_lock.is_none())
                    {
                        j.properties.finish(JobState::Cancelled, now);
                        t.update(&mut j)?;
                        job_ended(t, &j)?;
                        return Ok(true);
                    }
                    Ok(false)
                })?;
            }
            if cancelled {
                // A job waited for may have ended: look again before the clock moves.
                continue;
            }
            let next = jobs
                .iter()
                .filter(|j| j.properties.state == JobState::InProgress)
                .filter_map(|j| {
                    let (i, due) = j.properties.next_due()?;
                    children_done(&jobs, j, i, due).map(|due| (due, j.id.clone(), i))
                })
                .min_by_key(|(due, _, _)| *due);
            let stop = next
                .as_ref()
                .map_or(target, |(d, _, _)| (*d).clamp(now, target));
            if stop > now {
                let span = self.replicate(now, stop, progress)?;
                report.replication.add(&span);
                self.tx(|t| t.set_setting("clock", &stop))?;
            }
            match next {
                Some((due, id, i)) if due <= target => {
                    let name = self.run_task(&id, i, progress)?;
                    report.tasks_run.push(name);
                    let j = self.job(&id)?;
                    if j.properties.state.is_final() {
                        report.jobs_ended.push((j.name.clone(), j.properties.state));
                    }
                }
                _ => break,
            }
        }
        report.to = crate::clock::format_time(self.now_ms()?);
        report.wall_ms = wall.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Runs the work of task `i` of job `id` and records it; returns `job: task`.
    fn run_task(&mut self, id: &str, i: usize, progress: &dyn Progress) -> Result<String> {
        let lock_name = format!("job-{}-{}", id.rsplit('/').next().unwrap_or(id), i + 1);
        let lock = FileLock::acquire(&self.dir.join("locks").join(format!("{lock_name}.lock")))?;
        let job = self.tx(|t| {
            let mut j = t.get::<Job>(id)?;
            let now = now_ms(t)?;
            let task = &mut j.properties.tasks[i];
            task.state = JobState::InProgress;
            task.start_ms.get_or_insert(now);
            task.running_lock = Some(format!("{lock_name}.lock"));
            t.update(&mut j)?;
            Ok(j)
        })?;
        let label = format!(
            "{}: {}",
            job.properties.friendly_name, job.properties.tasks[i].friendly_name
        );
        let wall = Instant::now();
        let result = match self.task_work(&job, i, progress) {
            Ok(r) => r,
            Err(e) => Err(error_of(&e)),
        };
        let wall_ms = wall.elapsed().as_millis() as u64;
        self.tx(|t| {
            let mut j = t.get::<Job>(id)?;
            let now = now_ms(t)?;
            j.properties.tasks[i].wall_ms = wall_ms;
            match result {
                Ok(output) if output.contains_key(super::plans::SUSPEND) => {
                    // A manual action: the job waits for a user to resume it.
                    let task = &mut j.properties.tasks[i];
                    task.output.extend(
                        output
                            .into_iter()
                            .filter(|(k, _)| k != super::plans::SUSPEND),
                    );
                    task.running_lock = None;
                    task.state_description = Some("WaitingForManualAction".into());
                    j.properties.state = JobState::Suspended;
                    j.properties.state_description = "WaitingForManualAction".into();
                }
                Ok(output) => {
                    let task = &mut j.properties.tasks[i];
                    let input = task.output.remove("input");
                    task.output = output;
                    if let Some(input) = input {
                        task.output.insert("input".into(), input);
                    }
                    j.properties.complete_task(i, now);
                }
                Err(e) => j.properties.fail_task(i, e, now),
            }
            t.update(&mut j)?;
            if j.properties.state.is_final() {
                job_ended(t, &j)?;
            }
            Ok(())
        })?;
        lock.release();
        Ok(label)
    }

    fn task_work(&mut self, job: &Resource<Job>, i: usize, progress: &dyn Progress) -> TaskResult {
        let name = job.properties.tasks[i].name.clone();
        if super::plans::TASKS.contains(&name.as_str()) {
            return super::plans::task_work(self, job, i, &name, progress);
        }
        super::vault::task_work(self, job, i, &name, progress)
    }
}

/// When task `i` of `job`, due at `due`, may run: a task after one that started child jobs
/// (a recovery plan's group) waits until they have all ended (`None` until then).
fn children_done(jobs: &[Resource<Job>], job: &Resource<Job>, i: usize, due: u64) -> Option<u64> {
    let Some(kids) = i
        .checked_sub(1)
        .and_then(|p| job.properties.tasks[p].output.get(super::plans::CHILDREN))
        .and_then(|v| v.as_array())
    else {
        return Some(due);
    };
    let mut end = due;
    for k in kids.iter().filter_map(|k| k.as_str()) {
        let j = jobs.iter().find(|j| j.id == k)?;
        if !j.properties.state.is_final() {
            return None;
        }
        end = end.max(j.properties.end_ms.unwrap_or(due));
    }
    Some(end)
}

/// A job error from a library error.
pub fn error_of(e: &Error) -> JobError {
    let code = match e.kind() {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Checksum => "ChecksumMismatch",
        ErrorKind::Interrupted => "interrupted",
        ErrorKind::Cloud => "CloudError",
        ErrorKind::Denied => "AccessDenied",
        _ => "InternalError",
    };
    job_error(
        code,
        &e.to_string(),
        "The work of the task failed.",
        "Fix the cause named in the message, then restart the job.",
    )
}

/// Applies a job's end to its item (its state, or its removal) and starts what follows it.
///
/// # Errors
/// The store cannot be written.
pub fn job_ended(t: &Tx<'_>, job: &Resource<Job>) -> Result<()> {
    let effect: ItemEffect = serde_json::from_value(
        job.properties
            .input
            .get("effect")
            .cloned()
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    super::plans::plan_job_ended(t, job)?;
    let Some(item_id) = effect.item else {
        return Ok(());
    };
    let Some(mut item) = t.find::<ReplicatedItem>(&item_id)? else {
        return Ok(());
    };
    let ok = job.properties.state == JobState::Succeeded;
    if item.properties.current_job_id.as_deref() == Some(job.id.as_str()) {
        item.properties.current_job_id = None;
        item.properties.current_scenario = None;
        item.properties.current_scenario_start_ms = None;
    }
    if ok && effect.remove_on_success {
        t.delete(&item_id)?;
        return super::protect::item_removed(t, &item);
    }
    let next = if ok {
        effect.on_succeeded
    } else {
        effect.on_failed
    };
    if let Some(s) = next {
        item.properties.state = s;
    }
    t.update(&mut item)?;
    super::protect::after_job(t, job, &mut item)
}

/// Makes a job in the vault and, when it acts on an item, marks the item busy with it.
///
/// # Errors
/// The store cannot be written.
pub fn start_job(
    t: &Tx<'_>,
    seed: u64,
    vault_id: &str,
    mut job: Job,
    effect: ItemEffect,
) -> Result<Resource<Job>> {
    let guid = Site::guid(t, seed)?;
    let id = format!("{vault_id}/replicationJobs/{guid}");
    if let Some(item_id) = &effect.item {
        let mut item = t.get::<ReplicatedItem>(item_id)?;
        item.properties.current_job_id = Some(id.clone());
        item.properties.current_scenario = Some(job.scenario_name.clone());
        item.properties.current_scenario_start_ms = Some(job.start_ms);
        t.update(&mut item)?;
    }
    let mut input = match std::mem::take(&mut job.input) {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    input.insert(
        "effect".into(),
        serde_json::to_value(&effect).unwrap_or_default(),
    );
    job.input = serde_json::Value::Object(input);
    if let Some(first) = job.tasks.first_mut() {
        first.state = JobState::InProgress;
    }
    t.insert(&id, Some(vault_id), &job)
}
