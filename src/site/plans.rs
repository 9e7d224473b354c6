//! Recovery plans: machines in boot groups, failed over group by group, with pre and post
//! actions (manual actions that pause the job until resumed, and local scripts given the
//! context a runbook gets), and multi-VM consistency across a replication group.
//!
//! A plan holds the groups the service makes (asr-model.md §1.9, §6): `Shutdown` and
//! `Failover` (empty, as the service returns them) and up to seven `Boot` groups ("Group 1" …).
//! A machine is in at most one group. A plan's job runs, in order: the preflight checks (every
//! machine allows the operation; multi-VM points resolved for the replication groups), then for
//! each boot group its pre-steps, the machines' own jobs — started together, so a group's
//! machines fail over in parallel — and its post-steps. Manual actions suspend the job
//! (`Suspended`, "WaitingForManualAction") until `jobs resume`; a script action runs a local
//! program with the runbook context as JSON (on its standard input and in the file named by
//! `RECOVERY_PLAN_CONTEXT`), its output kept on the task; a script that fails fails the task.

use super::failover::FailoverRequest;
use super::jobs::{Job, JobState, job_error};
use super::model::ReplicatedItem;
use super::protect::find_item;
use super::runner::{ItemEffect, TaskOutput, TaskResult, start_job};
use super::states::Operation;
use super::store::{Kind, Resource, Tx};
use super::vault::the_vault;
use super::{Site, now_ms};
use crate::error::{Error, Result};
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most boot groups a plan has.
pub const MAX_BOOT_GROUPS: usize = 7;

/// The tasks whose work is here.
pub const TASKS: &[&str] = &[
    "PlanPreflight",
    "ManualAction",
    "ScriptAction",
    "GroupStart",
    "GroupWait",
];

/// A recovery plan (`replicationRecoveryPlans`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPlan {
    /// Its name.
    pub friendly_name: String,
    /// The configuration server.
    pub primary_fabric_id: String,
    /// Its name.
    pub primary_fabric_friendly_name: String,
    /// `Microsoft Azure`.
    pub recovery_fabric_friendly_name: String,
    /// `ResourceManager`.
    pub failover_deployment_model: String,
    /// `InMageAzureV2`.
    pub replication_providers: Vec<String>,
    /// Shutdown, Failover, then the boot groups.
    pub groups: Vec<PlanGroup>,
    /// Where the plan is.
    pub state: PlanState,
    /// The last test failover (simulated ms).
    #[serde(default)]
    pub last_test_failover_ms: Option<u64>,
    /// The last failover (simulated ms).
    #[serde(default)]
    pub last_unplanned_failover_ms: Option<u64>,
    /// The job running on it.
    #[serde(default)]
    pub current_job_id: Option<String>,
}

impl Kind for RecoveryPlan {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults/replicationRecoveryPlans";
}

/// Where a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanState {
    /// Nothing failed over.
    Idle,
    /// Its test failover ran: only the cleanup is allowed.
    TestFailoverPending,
    /// Failed over, not committed.
    FailedOver,
    /// Committed.
    Committed,
}

impl PlanState {
    /// The operations the plan allows (`allowedOperations`; no planned failover for
    /// VMware/physical machines).
    pub fn allowed(self) -> &'static [Operation] {
        match self {
            PlanState::Idle => &[Operation::TestFailover, Operation::UnplannedFailover],
            PlanState::TestFailoverPending => &[Operation::TestFailoverCleanup],
            PlanState::FailedOver => &[Operation::Commit, Operation::UnplannedFailover],
            PlanState::Committed => &[],
        }
    }
}

/// `Shutdown`, `Failover` or `Boot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupType {
    /// Machines shut down first.
    Shutdown,
    /// Machines failed over before the boot groups.
    Failover,
    /// A boot group ("Group N").
    Boot,
}

/// A group of a plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanGroup {
    /// Its type.
    pub group_type: GroupType,
    /// Its machines (replicated item ids).
    pub replication_protected_items: Vec<String>,
    /// Actions before its machines.
    pub start_group_actions: Vec<PlanAction>,
    /// Actions after them.
    pub end_group_actions: Vec<PlanAction>,
}

/// A pre or post action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanAction {
    /// Its name.
    pub action_name: String,
    /// The failovers it runs for (`TestFailover`, `UnplannedFailover`).
    pub failover_types: Vec<Operation>,
    /// `PrimaryToRecovery`.
    pub failover_directions: Vec<String>,
    /// What it does.
    pub custom_details: ActionDetails,
}

/// A manual action or a script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "instanceType")]
pub enum ActionDetails {
    /// The job waits until a user resumes it.
    ManualActionDetails {
        /// What the user is to do.
        description: String,
    },
    /// A local script run with the runbook context.
    ScriptActionDetails {
        /// The program.
        path: String,
        /// Its time limit, seconds.
        timeout: u64,
        /// `Recovery` (where the service runs it).
        #[serde(rename = "fabricLocation")]
        fabric_location: String,
    },
}

/// A plan to make.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanSpec {
    /// Its name.
    pub name: String,
    /// The boot groups, each its machines' names (Group 1 first).
    pub groups: Vec<Vec<String>>,
    /// Actions: `(group number from 1, before (true) or after, action)`.
    #[serde(default)]
    pub actions: Vec<(usize, bool, PlanAction)>,
}

/// How a plan fails over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanFailover {
    /// The point type: `latest`, `latest-processed`, `latest-app-consistent`,
    /// `latest-crash-consistent`, `latest-multi-vm-processed`, `latest-multi-vm-app-consistent`.
    pub point: String,
    /// Test failover: the network (the items' target network when `None`).
    #[serde(default)]
    pub network: Option<String>,
    /// Test failover: the subnet.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Failover: shut the machines down first (`sourceSiteOperations: Required`).
    #[serde(default)]
    pub shutdown: bool,
}

fn plan_id(vault: &str, name: &str) -> String {
    format!("{vault}/replicationRecoveryPlans/{name}")
}

/// The plan `name`.
///
/// # Errors
/// There is none.
pub fn find_plan(t: &Tx<'_>, name: &str) -> Result<Resource<RecoveryPlan>> {
    t.list::<RecoveryPlan>(None)?
        .into_iter()
        .find(|p| p.id == name || p.name == name)
        .ok_or_else(|| Error::not_found(format!("no recovery plan {name}")))
}

impl Site {
    /// Makes a recovery plan (a `SaveRecoveryPlan` job's work is immediate here: the plan is
    /// usable at once).
    ///
    /// # Errors
    /// A bad name; no groups or more than seven; a machine that is not replicated, or in two
    /// groups, or on another configuration server; a plan of that name exists.
    pub fn create_plan(&mut self, spec: &PlanSpec) -> Result<Resource<RecoveryPlan>> {
        super::vault::check_name("recovery plan", &spec.name)?;
        if spec.groups.is_empty() || spec.groups.len() > MAX_BOOT_GROUPS {
            return Err(Error::argument(format!(
                "a recovery plan has 1 to {MAX_BOOT_GROUPS} boot groups, not {}",
                spec.groups.len()
            )));
        }
        self.tx(|t| {
            let v = the_vault(t)?;
            let id = plan_id(&v.id, &spec.name);
            if t.exists(&id)? {
                return Err(Error::conflict(format!(
                    "a recovery plan {} exists already",
                    spec.name
                )));
            }
            let mut seen = BTreeMap::new();
            let mut fabric: Option<String> = None;
            let mut groups = vec![
                PlanGroup {
                    group_type: GroupType::Shutdown,
                    replication_protected_items: Vec::new(),
                    start_group_actions: Vec::new(),
                    end_group_actions: Vec::new(),
                },
                PlanGroup {
                    group_type: GroupType::Failover,
                    replication_protected_items: Vec::new(),
                    start_group_actions: Vec::new(),
                    end_group_actions: Vec::new(),
                },
            ];
            for (g, machines) in spec.groups.iter().enumerate() {
                let mut ids = Vec::new();
                for m in machines {
                    let it = find_item(t, m)?;
                    if let Some(prev) = seen.insert(it.id.clone(), g + 1) {
                        return Err(Error::argument(format!(
                            "{m} is in group {prev} and group {}: a machine belongs to one \
                             group of a plan",
                            g + 1
                        )));
                    }
                    let f = fabric_of(&it);
                    match &fabric {
                        Some(x) if *x != f => {
                            return Err(Error::argument(format!(
                                "{m} is on another configuration server than the plan's \
                                 other machines"
                            )));
                        }
                        _ => fabric = Some(f),
                    }
                    ids.push(it.id);
                }
                groups.push(PlanGroup {
                    group_type: GroupType::Boot,
                    replication_protected_items: ids,
                    start_group_actions: Vec::new(),
                    end_group_actions: Vec::new(),
                });
            }
            for (g, before, a) in &spec.actions {
                let Some(grp) = groups.get_mut(g + 1).filter(|_| *g >= 1) else {
                    return Err(Error::argument(format!(
                        "action {}: the plan has no group {g}",
                        a.action_name
                    )));
                };
                if let ActionDetails::ScriptActionDetails { path, .. } = &a.custom_details
                    && path.is_empty()
                {
                    return Err(Error::argument(format!(
                        "script action {} names no script",
                        a.action_name
                    )));
                }
                if *before {
                    grp.start_group_actions.push(a.clone());
                } else {
                    grp.end_group_actions.push(a.clone());
                }
            }
            let fabric = fabric.unwrap_or_default();
            let fname = t
                .find::<super::model::Fabric>(&fabric)?
                .map(|f| f.properties.friendly_name)
                .unwrap_or_default();
            t.insert(
                &id,
                Some(&v.id),
                &RecoveryPlan {
                    friendly_name: spec.name.clone(),
                    primary_fabric_id: fabric,
                    primary_fabric_friendly_name: fname,
                    recovery_fabric_friendly_name: "Microsoft Azure".into(),
                    failover_deployment_model: "ResourceManager".into(),
                    replication_providers: vec!["InMageAzureV2".into()],
                    groups,
                    state: PlanState::Idle,
                    last_test_failover_ms: None,
                    last_unplanned_failover_ms: None,
                    current_job_id: None,
                },
            )
        })
    }

    /// The plans.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn plans(&mut self) -> Result<Vec<Resource<RecoveryPlan>>> {
        self.tx(|t| t.list::<RecoveryPlan>(None))
    }

    /// Starts a plan's test failover, failover, test failover cleanup or commit.
    ///
    /// # Errors
    /// The plan's state does not allow it (NotAllowed), or a job runs on it.
    pub fn plan_job(
        &mut self,
        plan: &str,
        op: Operation,
        how: &PlanFailover,
        comments: &str,
    ) -> Result<Resource<Job>> {
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        self.tx(|t| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            let mut p = find_plan(t, plan)?;
            if let Some(j) = &p.properties.current_job_id {
                return Err(Error::not_allowed(format!(
                    "recovery plan {} has job {j} running",
                    p.name
                )));
            }
            if !p.properties.state.allowed().contains(&op) {
                let ops: Vec<&str> = p
                    .properties
                    .state
                    .allowed()
                    .iter()
                    .map(|o| o.as_str())
                    .collect();
                return Err(Error::not_allowed(format!(
                    "recovery plan {} is {:?}: {op} is not allowed; allowed operations: {}",
                    p.name,
                    p.properties.state,
                    if ops.is_empty() {
                        "none".into()
                    } else {
                        ops.join(", ")
                    }
                )));
            }
            let (scenario, friendly) = match op {
                Operation::TestFailover => ("RecoveryPlanTestFailover", "Test failover"),
                Operation::UnplannedFailover => ("RecoveryPlanUnplannedFailover", "Failover"),
                Operation::TestFailoverCleanup => {
                    ("RecoveryPlanTestFailoverCleanup", "Cleanup test failover")
                }
                Operation::Commit => ("RecoveryPlanCommit", "Commit"),
                _ => {
                    return Err(Error::argument(format!(
                        "a recovery plan has no {op} operation"
                    )));
                }
            };
            let mut tasks: Vec<(String, String, serde_json::Value)> = vec![(
                "PlanPreflight".into(),
                "Recovery plan preflight checks".into(),
                serde_json::Value::Null,
            )];
            let mut g = 0;
            for grp in &p.properties.groups {
                if grp.group_type != GroupType::Boot {
                    continue;
                }
                g += 1;
                let failover = matches!(op, Operation::TestFailover | Operation::UnplannedFailover);
                let acts = |list: &[PlanAction], when: &str, tasks: &mut Vec<_>| {
                    for a in list
                        .iter()
                        .filter(|a| failover && a.failover_types.contains(&op))
                    {
                        let (name, kind) = match a.custom_details {
                            ActionDetails::ManualActionDetails { .. } => ("ManualAction", "manual"),
                            ActionDetails::ScriptActionDetails { .. } => ("ScriptAction", "script"),
                        };
                        tasks.push((
                            name.to_string(),
                            format!("Group {g}: {when}: {} ({kind})", a.action_name),
                            serde_json::json!({ "group": g, "action": a }),
                        ));
                    }
                };
                acts(&grp.start_group_actions, "Pre-steps", &mut tasks);
                tasks.push((
                    "GroupStart".into(),
                    format!("Group {g}: Start"),
                    serde_json::json!({ "group": g, "items": grp.replication_protected_items }),
                ));
                tasks.push((
                    "GroupWait".into(),
                    format!("Group {g}: the machines' jobs"),
                    serde_json::json!({ "group": g }),
                ));
                acts(&grp.end_group_actions, "Post-steps", &mut tasks);
            }
            let names: Vec<(&str, &str)> = tasks
                .iter()
                .map(|(n, f, _)| (n.as_str(), f.as_str()))
                .collect();
            let mut job = Job::new(
                scenario,
                friendly,
                (&p.id, &p.name, "RecoveryPlan"),
                &names,
                &d,
                now,
            );
            for (task, (_, _, input)) in job.tasks.iter_mut().zip(&tasks) {
                if !input.is_null() {
                    task.output.insert("input".into(), input.clone());
                }
                if matches!(task.name.as_str(), "GroupStart" | "GroupWait") {
                    task.duration_ms = 0;
                }
            }
            job.input = serde_json::json!({
                "operation": op,
                "how": how,
                "comments": comments,
                "plan": p.id,
            });
            let job = start_job(t, seed, &v.id, job, ItemEffect::default())?;
            p.properties.current_job_id = Some(job.id.clone());
            t.update(&mut p)?;
            Ok(job)
        })
    }
}

fn fabric_of(it: &Resource<ReplicatedItem>) -> String {
    // …/replicationFabrics/{f}/replicationProtectionContainers/…
    let id = &it.id;
    match id.find("/replicationProtectionContainers/") {
        Some(i) => id[..i].to_string(),
        None => String::new(),
    }
}

fn input_of(job: &Resource<Job>, i: usize) -> serde_json::Value {
    job.properties.tasks[i]
        .output
        .get("input")
        .cloned()
        .unwrap_or_default()
}

fn plan_of(job: &Resource<Job>) -> Result<(String, Operation, PlanFailover, String)> {
    let inp = &job.properties.input;
    let op: Operation = serde_json::from_value(inp.get("operation").cloned().unwrap_or_default())
        .map_err(|e| Error::invalid(format!("job {}: operation: {e}", job.name)))?;
    let how: PlanFailover = serde_json::from_value(inp.get("how").cloned().unwrap_or_default())
        .map_err(|e| Error::invalid(format!("job {}: how: {e}", job.name)))?;
    Ok((
        inp.get("plan")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        op,
        how,
        inp.get("comments")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
    ))
}

/// The work of a plan's tasks.
pub fn task_work(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    name: &str,
    progress: &dyn Progress,
) -> TaskResult {
    let (plan_id, op, how, comments) = plan_of(job)?;
    match name {
        "PlanPreflight" => preflight(site, &plan_id, op, &how, progress),
        "ManualAction" => {
            let t = &job.properties.tasks[i];
            if t.output.get("resumed").and_then(|v| v.as_bool()) == Some(true) {
                return Ok(Ok(TaskOutput::from([(
                    "comments".to_string(),
                    job.properties.comments.clone().unwrap_or_default().into(),
                )])));
            }
            Ok(Ok(TaskOutput::from([(SUSPEND.to_string(), true.into())])))
        }
        "ScriptAction" => script(site, job, i, &plan_id, op),
        "GroupStart" => group_start(site, job, i, &plan_id, op, &how, &comments),
        "GroupWait" => group_wait(site, job, i),
        _ => Err(Error::invalid(format!("no work is known for task {name}"))),
    }
}

/// Whether a machine is where `op` would take it already (skipped by the plan: a plan run again
/// after a partial failure goes on with the machines left).
fn done_already(s: super::states::ItemState, op: Operation) -> bool {
    use super::states::ItemState as S;
    match op {
        Operation::UnplannedFailover => {
            matches!(s, S::FailoverCommitPending | S::FailoverCommitted)
        }
        Operation::TestFailoverCleanup => s == S::Protected,
        Operation::Commit => s == S::FailoverCommitted,
        _ => false,
    }
}

/// The output key a task's work sets to suspend its job (a manual action).
pub const SUSPEND: &str = "suspend";

/// Checks every machine allows the operation; resolves the multi-VM points.
fn preflight(
    site: &mut Site,
    plan_id: &str,
    op: Operation,
    how: &PlanFailover,
    progress: &dyn Progress,
) -> TaskResult {
    let plan = site.tx(|t| t.get::<RecoveryPlan>(plan_id))?;
    let ids: Vec<String> = plan
        .properties
        .groups
        .iter()
        .flat_map(|g| g.replication_protected_items.clone())
        .collect();
    let mut items = Vec::new();
    for id in &ids {
        let Some(it) = site.tx(|t| t.find::<ReplicatedItem>(id))? else {
            return Ok(Err(job_error(
                "ProtectedItemNotFound",
                &format!("The plan's machine {id} is no longer replicated."),
                "Replication of the machine was disabled or its migration completed.",
                "Remove the machine from the plan.",
            )));
        };
        if done_already(it.properties.state, op) {
            continue;
        }
        if it.properties.state.transition(op).is_none() {
            let ops: Vec<&str> = it
                .properties
                .state
                .allowed()
                .iter()
                .map(|o| o.as_str())
                .collect();
            return Ok(Err(job_error(
                "OperationNotAllowed",
                &format!(
                    "{} is {} ({}): {op} is not allowed; allowed operations: {}",
                    it.properties.friendly_name,
                    it.properties.state.service().protection_state,
                    it.properties.state.service().description,
                    ops.join(", ")
                ),
                "A machine of the plan is in a state that does not allow the operation.",
                "Bring the machine to a state that allows it, or remove it from the plan.",
            )));
        }
        items.push(it);
    }
    let mut out = TaskOutput::new();
    let multi = matches!(
        how.point.as_str(),
        "latest-multi-vm-processed"
            | "LatestMultiVmProcessed"
            | "latest-multi-vm-app-consistent"
            | "LatestMultiVmApplicationConsistent"
    );
    if multi && matches!(op, Operation::TestFailover | Operation::UnplannedFailover) {
        let app = how.point.contains("app") || how.point.contains("App");
        let mut groups: BTreeMap<String, Vec<&Resource<ReplicatedItem>>> = BTreeMap::new();
        for it in &items {
            if let Some(g) = &it.properties.multi_vm_group_name {
                groups.entry(g.clone()).or_default().push(it);
            }
        }
        let mut pins = BTreeMap::new();
        let mut common = BTreeMap::new();
        for (g, members) in groups {
            match multi_vm_point(site, &members, app, progress)? {
                Some((tag, times)) => {
                    common.insert(g.clone(), tag);
                    pins.extend(times);
                }
                None => {
                    return Ok(Err(job_error(
                        "MultiVmSyncPointNotAvailable",
                        &format!(
                            "No {} multi-VM point is common to every machine of the \
                             replication group {g}.",
                            if app { "app-consistent" } else { "processed" }
                        ),
                        "The machines of the group have not all processed a common \
                         multi-VM point yet, or one of them has a defect in its data.",
                        "Wait for the next multi-VM point, or fail over to each machine's \
                         latest point.",
                    )));
                }
            }
        }
        out.insert(
            "pins".into(),
            serde_json::to_value(&pins).unwrap_or_default(),
        );
        out.insert(
            "multiVmPoints".into(),
            serde_json::to_value(&common).unwrap_or_default(),
        );
    }
    Ok(Ok(out))
}

/// The newest multi-VM point every machine of a group holds on every disk (processed; app-
/// consistent when `app`): its tag and each machine's point time.
#[allow(clippy::type_complexity)]
fn multi_vm_point(
    site: &mut Site,
    members: &[&Resource<ReplicatedItem>],
    app: bool,
    _progress: &dyn Progress,
) -> Result<Option<(String, BTreeMap<String, u64>)>> {
    // For each machine, tag → time of the points every disk holds processed.
    let mut per: Vec<BTreeMap<String, u64>> = Vec::new();
    for it in members {
        let pts = site.recovery_points(&it.id)?;
        let mut tags = BTreeMap::new();
        // The tags are read from the first disk's catalog, opened once.
        let it_now = site.tx(|t| t.get::<ReplicatedItem>(&it.id))?;
        let Some(d) = it_now.properties.replication.first() else {
            per.push(tags);
            continue;
        };
        let cat =
            crate::recovery::ProtectedDisk::from_replica(&site.dir().join(&d.replica_dir), false)?
                .catalog();
        for p in &pts.points {
            if !p.processed || p.is_multi_vm_sync_point != "True" {
                continue;
            }
            if app && p.recovery_point_type != "ApplicationConsistent" {
                continue;
            }
            if let Some(q) = cat.points.iter().find(|q| q.id.to_string() == p.name)
                && let Some(tag) = &q.multi_vm
            {
                tags.insert(tag.clone(), parse_ms(&p.recovery_point_time));
            }
        }
        per.push(tags);
    }
    let Some(first) = per.first() else {
        return Ok(None);
    };
    let best = first
        .iter()
        .filter(|(tag, _)| per.iter().all(|m| m.contains_key(*tag)))
        .max_by_key(|(_, t)| **t)
        .map(|(tag, _)| tag.clone());
    Ok(best.map(|tag| {
        let times = members
            .iter()
            .zip(&per)
            .map(|(it, m)| (it.id.clone(), m[&tag]))
            .collect();
        (tag, times)
    }))
}

fn parse_ms(s: &str) -> u64 {
    crate::journal::parse_time(s).unwrap_or(0)
}

/// Starts the group's machines' jobs together.
fn group_start(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    plan_id: &str,
    op: Operation,
    how: &PlanFailover,
    comments: &str,
) -> TaskResult {
    let input = input_of(job, i);
    let items: Vec<String> =
        serde_json::from_value(input.get("items").cloned().unwrap_or_default()).unwrap_or_default();
    let pins: BTreeMap<String, u64> = job.properties.tasks[..i]
        .iter()
        .find_map(|t| t.output.get("pins"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let plan_name = plan_id.rsplit('/').next().unwrap_or(plan_id).to_string();
    let mut children = Vec::new();
    let mut errors = Vec::new();
    for id in &items {
        let state = site
            .tx(|t| t.find::<ReplicatedItem>(id))?
            .map(|i| i.properties.state);
        if state.is_some_and(|s| done_already(s, op)) {
            continue;
        }
        let point = match how.point.as_str() {
            // The group's machines go to their common point (pinned below), labelled so.
            p if pins.contains_key(id) => p.to_string(),
            // Machines outside a replication group go to their own latest point.
            p if p.contains("multi-vm") || p.contains("MultiVm") => {
                if p.contains("app") || p.contains("App") {
                    "latest-app-consistent".to_string()
                } else {
                    "latest-processed".to_string()
                }
            }
            p => p.to_string(),
        };
        let req = FailoverRequest {
            item: id.clone(),
            point,
            network: how.network.clone(),
            subnet: how.subnet.clone(),
            shutdown: how.shutdown && op == Operation::UnplannedFailover,
            recovery_plan: Some(plan_name.clone()),
            pinned_time_ms: pins.get(id).copied(),
        };
        let r = match op {
            Operation::TestFailover => site.test_failover(&req).map(|s| s.job),
            Operation::UnplannedFailover => site.failover(&req).map(|s| s.job),
            Operation::TestFailoverCleanup => site.cleanup_test_failover(id, comments),
            Operation::Commit => site.commit_failover(id),
            _ => Err(Error::argument(format!("a recovery plan has no {op}"))),
        };
        match r {
            Ok(j) => children.push(j.id),
            Err(e) => errors.push(format!("{id}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Ok(Err(job_error(
            "ProtectedItemOperationFailed",
            &format!(
                "The group's machines could not all start: {}",
                errors.join("; ")
            ),
            "A machine's state does not allow the operation.",
            "Read the errors, fix the machines, and run the plan again.",
        )));
    }
    Ok(Ok(TaskOutput::from([(
        CHILDREN.to_string(),
        serde_json::to_value(&children).unwrap_or_default(),
    )])))
}

/// The output key of a task that started child jobs: the task after it waits for them.
pub const CHILDREN: &str = "children";

/// Runs when the group's jobs have all ended: fails when one of them did.
fn group_wait(site: &mut Site, job: &Resource<Job>, i: usize) -> TaskResult {
    let kids: Vec<String> = i
        .checked_sub(1)
        .and_then(|p| job.properties.tasks[p].output.get(CHILDREN))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut failed = Vec::new();
    let mut done = Vec::new();
    for k in &kids {
        let j = site.job(k)?;
        if j.properties.state != JobState::Succeeded {
            let why = j
                .properties
                .errors
                .first()
                .map(|e| format!("{} {}", e.error_code, e.error_message))
                .unwrap_or_else(|| format!("{:?}", j.properties.state));
            failed.push(format!(
                "{} ({}): {why}",
                j.properties.target_object_name, j.name
            ));
        } else {
            done.push(j.properties.target_object_name.clone());
        }
    }
    if !failed.is_empty() {
        return Ok(Err(job_error(
            "ProtectedItemOperationFailed",
            &format!("A machine's job failed: {}", failed.join("; ")),
            "The machine's own job failed; its error says why.",
            "Fix the cause and run the plan again for the machines left.",
        )));
    }
    Ok(Ok(TaskOutput::from([(
        "machines".to_string(),
        serde_json::to_value(&done).unwrap_or_default(),
    )])))
}

/// Runs a script action with the runbook's context.
fn script(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    plan_id: &str,
    op: Operation,
) -> TaskResult {
    let input = input_of(job, i);
    let action: PlanAction =
        serde_json::from_value(input.get("action").cloned().unwrap_or_default())
            .map_err(|e| Error::invalid(format!("job {}: the action: {e}", job.name)))?;
    let group = input.get("group").and_then(|v| v.as_u64()).unwrap_or(0);
    let ActionDetails::ScriptActionDetails { path, timeout, .. } = &action.custom_details else {
        return Err(Error::invalid("not a script action"));
    };
    // The VM map: every machine failed over so far, as a runbook sees it.
    let mut vm_map = serde_json::Map::new();
    let plan = site.tx(|t| t.get::<RecoveryPlan>(plan_id))?;
    let sub = site.config().subscription_id.clone();
    for id in plan
        .properties
        .groups
        .iter()
        .flat_map(|g| &g.replication_protected_items)
    {
        let Some(it) = site.tx(|t| t.find::<ReplicatedItem>(id))? else {
            continue;
        };
        let history = site.tx(|t| {
            let v = the_vault(t)?;
            t.find::<super::model::ItemHistory>(&super::model::ItemHistory::id(
                &v.id,
                &it.properties.friendly_name,
            ))
        })?;
        let last = history.and_then(|h| {
            h.properties
                .failovers
                .iter()
                .rev()
                .find(|f| f.recovery_plan.as_deref() == Some(plan.name.as_str()))
                .cloned()
        });
        let rg = it
            .properties
            .target
            .resource_group_id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        vm_map.insert(
            it.name.clone(),
            serde_json::json!({
                "SubscriptionId": sub,
                "ResourceGroupName": rg,
                "CloudServiceName": "",
                "RoleName": last.as_ref().map(|f| f.vm_id.rsplit('/').next().unwrap_or_default().to_string()).unwrap_or_default(),
                "RecoveryPointId": last.as_ref().map(|f| f.recovery_point_id.clone()).unwrap_or_default(),
            }),
        );
    }
    let context = serde_json::json!({
        "RecoveryPlanName": plan.name,
        "FailoverType": match op { Operation::TestFailover => "Test", _ => "Unplanned" },
        "FailoverDirection": "PrimaryToSecondary",
        "GroupId": format!("Group{group}"),
        "VmMap": vm_map,
    });
    let text = serde_json::to_string_pretty(&context).unwrap_or_default();
    let dir = site.dir().join("staging");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io("creating the staging folder", e).with_path(&dir))?;
    let ctx = dir.join(format!("{}-{}.context.json", job.name, i + 1));
    std::fs::write(&ctx, &text)
        .map_err(|e| Error::io("writing the runbook context", e).with_path(&ctx))?;
    let wall = std::time::Instant::now();
    let run = run_script(
        path,
        &ctx,
        &text,
        std::time::Duration::from_secs((*timeout).max(1)),
    );
    let _ = std::fs::remove_file(&ctx);
    let (status, out) = match run {
        Ok(x) => x,
        Err(e) => {
            return Ok(Err(job_error(
                "ScriptActionFailed",
                &format!("The script {path} could not be run: {e}"),
                "The script does not exist or is not executable.",
                "Fix the script's path or permissions and run the plan again.",
            )));
        }
    };
    let mut o = TaskOutput::from([
        ("script".to_string(), path.clone().into()),
        ("output".to_string(), out.clone().into()),
        ("context".to_string(), context),
        (
            "wallMs".to_string(),
            (wall.elapsed().as_millis() as u64).into(),
        ),
    ]);
    match status {
        Some(0) => Ok(Ok(o)),
        s => {
            o.insert(
                "exitCode".into(),
                s.map_or(serde_json::Value::Null, Into::into),
            );
            Ok(Err(job_error(
                "ScriptActionFailed",
                &format!(
                    "The script {path} {}; its output: {}",
                    match s {
                        Some(c) => format!("exited with code {c}"),
                        None => "was killed (or ran past its time limit)".into(),
                    },
                    out.trim()
                ),
                "The script failed.",
                "Read the script's output, fix it, and run the plan again.",
            )))
        }
    }
}

/// Runs `path` with the context on stdin and in `RECOVERY_PLAN_CONTEXT`; its exit code (None:
/// killed or timed out) and its output (stdout then stderr, at most 64 KiB kept).
fn run_script(
    path: &str,
    ctx: &std::path::Path,
    text: &str,
    limit: std::time::Duration,
) -> std::io::Result<(Option<i32>, String)> {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new(path)
        .env("RECOVERY_PLAN_CONTEXT", ctx)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(text.as_bytes());
    }
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.take(64 << 10).read_to_end(&mut o);
        }
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.take(64 << 10).read_to_end(&mut e);
        }
        o.extend_from_slice(&e);
        String::from_utf8_lossy(&o).into_owned()
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    Ok((status, out))
}

/// A plan job's end: the plan's state and its times.
///
/// # Errors
/// The store cannot be written.
pub fn plan_job_ended(t: &Tx<'_>, job: &Resource<Job>) -> Result<()> {
    if job.properties.target_instance_type != "RecoveryPlan" {
        return Ok(());
    }
    let Some(mut p) = t.find::<RecoveryPlan>(&job.properties.target_object_id)? else {
        return Ok(());
    };
    if p.properties.current_job_id.as_deref() == Some(job.id.as_str()) {
        p.properties.current_job_id = None;
    }
    let ok = job.properties.state == JobState::Succeeded;
    let now = now_ms(t)?;
    if ok {
        p.properties.state = match job.properties.scenario_name.as_str() {
            "RecoveryPlanTestFailover" => {
                p.properties.last_test_failover_ms = Some(now);
                PlanState::TestFailoverPending
            }
            "RecoveryPlanTestFailoverCleanup" => PlanState::Idle,
            "RecoveryPlanUnplannedFailover" => {
                p.properties.last_unplanned_failover_ms = Some(now);
                PlanState::FailedOver
            }
            "RecoveryPlanCommit" => PlanState::Committed,
            _ => p.properties.state,
        };
    } else if job.properties.scenario_name == "RecoveryPlanTestFailover" {
        // Machines whose test failover succeeded wait for their cleanup: so does the plan.
        p.properties.state = PlanState::TestFailoverPending;
    } else if job.properties.scenario_name == "RecoveryPlanUnplannedFailover" {
        p.properties.state = PlanState::FailedOver;
    }
    t.update(&mut p)
}
