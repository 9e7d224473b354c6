//! Site Recovery jobs: a row per job with its ordered tasks, each with its own state, times and
//! errors (asr-model.md §1.8, §5), and the table of modelled durations.
//!
//! A job runs in simulated time: its tasks start one after another, each taking its modelled
//! duration; a task's work (the real part: reading snapshots, building and uploading disks)
//! runs when the clock reaches the task's end, inside `clock advance` (or a command's `--wait`).
//! While a process does a task's work it holds a lock file named in the task; a task found
//! marked as running without its lock held belongs to a process that died, and the next open
//! of the site fails the job as "interrupted" (see `Site::open`).

use super::store::Kind;
use crate::clock::format_time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job's or a task's state (the service's, plus `Cancelling`, which it reports while a
/// cancel is under way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Not started yet.
    NotStarted,
    /// Running.
    InProgress,
    /// Done.
    Succeeded,
    /// Failed: see its errors.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Waiting to be resumed.
    Suspended,
    /// A cancel was asked for; it takes effect before the next task.
    Cancelling,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// An error a job or a task records: the service's `JobErrorDetails`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    /// The error id (`95108`, `interrupted`, …).
    pub error_code: String,
    /// What happened.
    pub error_message: String,
    /// Why it may have happened.
    pub possible_causes: String,
    /// What to do.
    pub recommended_action: String,
    /// When (RFC 3339).
    pub creation_time: String,
    /// The task it happened in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

/// One task of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Its id.
    pub task_id: String,
    /// Its name (the kind of work: what the runner dispatches on).
    pub name: String,
    /// Its name as the portal shows it.
    pub friendly_name: String,
    /// Its state.
    pub state: JobState,
    /// `Completed`, `Skipped`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_description: Option<String>,
    /// When it started (simulated ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// When it ended (simulated ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// How long it takes in simulated time.
    pub duration_ms: u64,
    /// Its errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<JobError>,
    /// The lock file of the process doing its work now, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_lock: Option<String>,
    /// What the work found, for the job's report (free-form).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output: BTreeMap<String, serde_json::Value>,
    /// Wall-clock time the real work took, ms.
    #[serde(default)]
    pub wall_ms: u64,
}

/// A Site Recovery job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The scenario (`EnableDr`, `TestFailover`, …).
    pub scenario_name: String,
    /// Its display name ("Enable protection").
    pub friendly_name: String,
    /// Its state.
    pub state: JobState,
    /// `Completed`, `InProgress`, `Cancelling`, …
    pub state_description: String,
    /// Its tasks, in order.
    pub tasks: Vec<Task>,
    /// Its errors.
    pub errors: Vec<JobError>,
    /// When it started (simulated ms).
    pub start_ms: u64,
    /// When it ended (simulated ms).
    pub end_ms: Option<u64>,
    /// The object it acts on.
    pub target_object_id: String,
    /// That object's name.
    pub target_object_name: String,
    /// `ProtectionEntity`, `Policy`, `Fabric`, …
    pub target_instance_type: String,
    /// The operation's inputs (what the tasks need).
    #[serde(default)]
    pub input: serde_json::Value,
    /// The job this one restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_from: Option<String>,
    /// Comments given when it was resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
}

impl Kind for Job {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults/replicationJobs";
}

impl Job {
    /// A new job whose tasks are `(name, friendly name)`, with durations from `d`.
    pub fn new(
        scenario: &str,
        friendly: &str,
        target: (&str, &str, &str),
        tasks: &[(&str, &str)],
        d: &Durations,
        now_ms: u64,
    ) -> Job {
        Job {
            scenario_name: scenario.to_string(),
            friendly_name: friendly.to_string(),
            state: JobState::InProgress,
            state_description: "InProgress".into(),
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, (name, fr))| Task {
                    task_id: format!("task-{}", i + 1),
                    name: (*name).to_string(),
                    friendly_name: (*fr).to_string(),
                    state: JobState::NotStarted,
                    state_description: None,
                    start_ms: (i == 0).then_some(now_ms),
                    end_ms: None,
                    duration_ms: d.get(name),
                    errors: Vec::new(),
                    running_lock: None,
                    output: BTreeMap::new(),
                    wall_ms: 0,
                })
                .collect(),
            errors: Vec::new(),
            start_ms: now_ms,
            end_ms: None,
            target_object_id: target.0.to_string(),
            target_object_name: target.1.to_string(),
            target_instance_type: target.2.to_string(),
            input: serde_json::Value::Null,
            restarted_from: None,
            comments: None,
        }
    }

    /// The task to run next and when its work is due (its start plus its duration).
    pub fn next_due(&self) -> Option<(usize, u64)> {
        if self.state.is_final() || self.state == JobState::Suspended {
            return None;
        }
        let i = self.tasks.iter().position(|t| !t.state.is_final())?;
        let t = &self.tasks[i];
        let start = t
            .start_ms
            .or_else(|| i.checked_sub(1).and_then(|p| self.tasks[p].end_ms))
            .unwrap_or(self.start_ms);
        Some((i, start.saturating_add(t.duration_ms)))
    }

    /// The actions a user may take (`allowedActions`).
    pub fn allowed_actions(&self) -> Vec<&'static str> {
        match self.state {
            JobState::InProgress | JobState::NotStarted => vec!["Cancel"],
            JobState::Suspended => vec!["Cancel", "Resume"],
            JobState::Failed | JobState::Cancelled => vec!["Restart"],
            JobState::Succeeded | JobState::Cancelling => vec![],
        }
    }

    /// Ends the job: the remaining tasks are skipped (their state `Cancelled`, or left not
    /// started) and the end time set.
    pub fn finish(&mut self, state: JobState, now_ms: u64) {
        for t in &mut self.tasks {
            if !t.state.is_final() {
                t.state = JobState::Cancelled;
                t.state_description = Some("Skipped".into());
                t.running_lock = None;
                t.end_ms.get_or_insert(now_ms);
            }
        }
        self.state = state;
        self.state_description = match state {
            JobState::Succeeded => "Completed",
            JobState::Failed => "Failed",
            JobState::Cancelled => "Cancelled",
            _ => "InProgress",
        }
        .into();
        self.end_ms = Some(now_ms);
    }

    /// Records `error` on task `i` and fails the job.
    pub fn fail_task(&mut self, i: usize, mut error: JobError, now_ms: u64) {
        error.task_id = Some(self.tasks[i].task_id.clone());
        error.creation_time = format_time(now_ms);
        let t = &mut self.tasks[i];
        t.state = JobState::Failed;
        t.end_ms = Some(now_ms);
        t.running_lock = None;
        t.errors.push(error.clone());
        self.errors.push(error);
        self.finish(JobState::Failed, now_ms);
    }

    /// Marks task `i` done at `now_ms` and starts the next.
    pub fn complete_task(&mut self, i: usize, now_ms: u64) {
        let t = &mut self.tasks[i];
        t.state = JobState::Succeeded;
        t.state_description = Some("Completed".into());
        t.end_ms = Some(now_ms);
        t.running_lock = None;
        if let Some(n) = self.tasks.get_mut(i + 1) {
            n.start_ms = Some(now_ms);
            n.state = JobState::InProgress;
        } else if self.state == JobState::Cancelling {
            self.finish(JobState::Cancelled, now_ms);
        } else {
            self.finish(JobState::Succeeded, now_ms);
        }
    }

    /// A printable view with times in RFC 3339 and the allowed actions.
    pub fn view(&self, id: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), id.into());
            o.insert("startTime".into(), format_time(self.start_ms).into());
            if let Some(e) = self.end_ms {
                o.insert("endTime".into(), format_time(e).into());
            }
            o.insert("allowedActions".into(), self.allowed_actions().into());
            o.remove("input");
            if let Some(tasks) = o.get_mut("tasks").and_then(|t| t.as_array_mut()) {
                for (t, task) in tasks.iter_mut().zip(&self.tasks) {
                    if let Some(t) = t.as_object_mut() {
                        if let Some(s) = task.start_ms {
                            t.insert("startTime".into(), format_time(s).into());
                        }
                        if let Some(e) = task.end_ms {
                            t.insert("endTime".into(), format_time(e).into());
                        }
                        t.remove("runningLock");
                    }
                }
            }
        }
        v
    }
}

/// An error for a job from its id and texts.
pub fn job_error(code: &str, message: &str, causes: &str, action: &str) -> JobError {
    JobError {
        error_code: code.to_string(),
        error_message: message.to_string(),
        possible_causes: causes.to_string(),
        recommended_action: action.to_string(),
        creation_time: String::new(),
        task_id: None,
    }
}

const MINUTE: u64 = 60_000;

/// The modelled durations of the service's steps, in simulated time: one table, each entry
/// overridable from a scenario (`[durations]`, by task name).
///
/// | task | default | why |
/// |---|---|---|
/// | `RegisterConfigurationServer` | 5 min | the configuration server's registration with the vault |
/// | `CreatePolicy`, `PolicyPrerequisites` | 30 s each | "Create replication policy" job |
/// | `AssociatePolicy` | 1 min | pairing the container with the policy and its failback policy |
/// | `EnablePrerequisites` | 1 min | prerequisites check for enabling protection |
/// | `InstallMobilityService` | 5 min | the push install of the Mobility service |
/// | `InitialReplication` | 2 min + the disks' size at 50 MB/s | the first copy |
/// | `FinalizePrerequisites`, `FinalizeProtection` | 1 min, 2 min | "Finalize protection" |
/// | `DisableProtection` | 2 min | removing the replication |
/// | `RestartJob` | 30 s | "Restarting job" |
/// | `ShutdownSource` | 2 min | "Shut down the virtual machine" (EC2 StopInstances) |
/// | `TestFailoverPrerequisites`, `FailoverPrerequisites`, `ChangePitPrerequisites` | 1 min | the prerequisites checks |
/// | `ProcessLatest` | 2 min | Latest: processing what was received into a point |
/// | `FailoverProcessing` | 3 min + the disks' size at 200 MB/s | building, verifying and uploading the point's disks |
/// | `CreateTestVm`, `CreateVm` | 2 min | the NIC and the VM |
/// | `PrepareVm` | 8 min + 0–120 s (from the seed) | the "eight to ten minutes" of extra processing a physical server's failover takes |
/// | `StartVm` | 1 min | "Start the virtual machine" |
/// | `ApplyRecoveryPoint` | 3 min | swapping a failed-over VM's disks for another point's |
/// | `DeleteTestVm` | 2 min | "Cleanup test failover" |
/// | `CommitFailover`, `CompleteMigration` | 2 min each | commit; complete migration |
///
/// The tutorial's "changes can take 15 minutes or more to show" is what these add up to for a
/// small machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Durations(pub BTreeMap<String, u64>);

/// The rate initial replication is modelled to copy at, bytes per second.
pub const INITIAL_REPLICATION_RATE: u64 = 50_000_000;

impl Default for Durations {
    fn default() -> Self {
        let t = [
            ("RegisterConfigurationServer", 5 * MINUTE),
            ("PolicyPrerequisites", MINUTE / 2),
            ("CreatePolicy", MINUTE / 2),
            ("AssociatePolicy", MINUTE),
            ("EnablePrerequisites", MINUTE),
            ("InstallMobilityService", 5 * MINUTE),
            ("InitialReplication", 2 * MINUTE),
            ("FinalizePrerequisites", MINUTE),
            ("FinalizeProtection", 2 * MINUTE),
            ("DisableProtection", 2 * MINUTE),
            ("RestartJob", MINUTE / 2),
            ("ShutdownSource", 2 * MINUTE),
            ("TestFailoverPrerequisites", MINUTE),
            ("FailoverPrerequisites", MINUTE),
            ("ChangePitPrerequisites", MINUTE),
            ("ProcessLatest", 2 * MINUTE),
            ("FailoverProcessing", 3 * MINUTE),
            ("CreateTestVm", 2 * MINUTE),
            ("CreateVm", 2 * MINUTE),
            ("PrepareVm", 8 * MINUTE),
            ("StartVm", MINUTE),
            ("ApplyRecoveryPoint", 3 * MINUTE),
            ("DeleteTestVm", 2 * MINUTE),
            ("CommitFailover", 2 * MINUTE),
            ("CompleteMigration", 2 * MINUTE),
        ];
        Durations(t.iter().map(|(k, v)| ((*k).to_string(), *v)).collect())
    }
}

impl Durations {
    /// A task's modelled duration (one minute for a task the table does not name).
    pub fn get(&self, task: &str) -> u64 {
        self.0.get(task).copied().unwrap_or(MINUTE)
    }
}
