//! Test failover, its cleanup, failover, change of recovery point, commit and complete
//! migration of a replicated item: the tutorial's second half.
//!
//! Every VM these make is built from real bytes. The failover's processing task builds the
//! chosen recovery point of each disk into a fixed VHD (verified against the point's marker
//! digest before it takes its name), uploads it to a page blob in the item's target storage
//! account, and imports a managed disk from the blob; the VM is made from those disks, in the
//! chosen subnet, with a size chosen from the source's vCPUs and memory and the generation of
//! its boot type. The last task starts it and verifies it as the tutorial asks (its size, its
//! network, that it runs) and reads the disks back from the blobs: their root digest must be
//! the point's.
//!
//! Jobs and their tasks (names as the service's where it has them, asr-model.md §5):
//!
//! | job (`scenarioName`) | tasks |
//! |---|---|
//! | `TestFailover` "Test failover" | Prerequisites check for test failover; [Latest: processing the data received]; Processing the data for failover; Create test virtual machine; Preparing the virtual machine; Start the virtual machine |
//! | `UnplannedFailover` "Failover" | [Shut down the virtual machine]; Prerequisites check for failover; [Latest …]; Processing …; Create the virtual machine; Preparing …; Start … |
//! | `TestFailoverCleanup` "Cleanup test failover" | Delete the test virtual machine |
//! | `ChangePit` "Change recovery point" | Prerequisites check for changing the recovery point; [Latest …]; Processing …; Apply the recovery point |
//! | `Commit` "Commit" | Commit the failover |
//! | `CompleteMigration` "Complete migration" | Complete the migration |
//!
//! "Preparing the virtual machine" is the extra processing of eight to ten minutes the tutorial
//! warns of: EC2 machines are protected as physical servers, for which it always applies.

use super::azure::{
    self, HyperVGeneration, IpRequest, PowerState, Tags,
    compute::{DiskImport, VmSpec},
    storage,
};
use super::jobs::{Job, JobError, job_error};
use super::model::{FailoverRecord, ItemHistory, ReplicatedItem, Verification};
use super::protect::{allowed, find_item, history_mut, policy_of};
use super::runner::{ItemEffect, TaskOutput, TaskResult, start_job};
use super::states::Operation;
use super::store::{Resource, Tx};
use super::vault::the_vault;
use super::{Site, now_ms};
use crate::cloud::fake::file_pageblob::FileBlobs;
use crate::cloud::pageblob::{BlobName, PageBlobStore};
use crate::error::{Error, Result};
use crate::image::DiskImage;
use crate::progress::Progress;
use crate::recovery::{PointChoice, ProtectedDisk};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// The tasks whose work is here.
pub const TASKS: &[&str] = &[
    "ShutdownSource",
    "TestFailoverPrerequisites",
    "FailoverPrerequisites",
    "ChangePitPrerequisites",
    "ProcessLatest",
    "FailoverProcessing",
    "CreateTestVm",
    "CreateVm",
    "PrepareVm",
    "StartVm",
    "ApplyRecoveryPoint",
    "DeleteTestVm",
    "CommitFailover",
    "CompleteMigration",
];

/// A request for a test failover or a failover of one item.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRequest {
    /// The replicated item (its machine's name).
    pub item: String,
    /// The recovery point: `latest`, `latest-processed`, `latest-app-consistent`,
    /// `latest-crash-consistent`, a point id (`rp-N`) or a time within retention.
    pub point: String,
    /// The virtual network (its name in the item's target resource group, or its id); the
    /// item's target network when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The subnet; the item's target subnet when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Failover only: try to shut the source down first (`sourceSiteOperations: Required`).
    #[serde(default)]
    pub shutdown: bool,
    /// The recovery plan the failover runs in (plans set it; a machine in a multi-VM group
    /// fails over only through one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_plan: Option<String>,
    /// A point time the plan chose for the machines of a multi-VM group (their common point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_time_ms: Option<u64>,
}

/// A failover job started, with what the user should know.
#[derive(Debug, Clone)]
pub struct Started {
    /// The job.
    pub job: Resource<Job>,
    /// Warnings (a test failover into the production network while the source runs, …).
    pub warnings: Vec<String>,
}

/// Limits of the simulated subscription a scenario can set (the faults 28031 and 28092).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// Total regional vCPUs; `None`: no limit.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Network interfaces; `None`: no limit.
    #[serde(default)]
    pub network_interfaces: Option<u32>,
}

/// The setting holding the [`Quotas`].
pub const QUOTAS: &str = "azure.quotas";

/// Page-blob faults a scenario can inject into failover uploads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlobFaults {
    /// Put Page calls answered 503 ServerBusy (throttled) before the store answers.
    #[serde(default)]
    pub throttle: u32,
    /// Put Page calls answered 500 InternalError before the store answers.
    #[serde(default)]
    pub server_errors: u32,
}

/// The setting holding the [`BlobFaults`] still to inject.
pub const BLOB_FAULTS: &str = "azure.blobFaults";

/// The blob container failover disks are uploaded to.
pub const CONTAINER: &str = "asrfailover";

/// One recovery point of an item: a point every disk holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ItemPick {
    /// The choice it answers.
    pub choice: String,
    /// `rp-N` (the first disk's).
    pub point: String,
    /// Its time.
    pub time_ms: u64,
    /// `CrashConsistent` or `ApplicationConsistent`.
    pub point_type: String,
    /// Each disk's point: its sequence number and marker digest (hex).
    pub disks: Vec<(u64, Option<String>)>,
}

/// A disk a failover's processing made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BuiltDisk {
    /// The managed disk.
    pub disk_id: String,
    /// Its blob's URL.
    pub blob_uri: String,
    /// The disk's size (the source's).
    pub disk_size: u64,
    /// The root digest the built disk has (hex).
    pub root: String,
    /// The root the point's marker records (hex), if it records one.
    pub marker_root: Option<String>,
    /// Wall-clock ms of the build (with its verification).
    pub build_wall_ms: u64,
    /// Wall-clock ms of the upload.
    pub upload_wall_ms: u64,
    /// Bytes sent.
    pub uploaded_bytes: u64,
    /// Put Page calls retried (throttling, 5xx).
    pub retries: u64,
}

/// The VM a failover's create task made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MadeVm {
    /// The VM.
    pub vm_id: String,
    /// Its NIC.
    pub nic_id: String,
    /// Its address.
    pub ip: String,
    /// Its size.
    pub size: String,
    /// The subnet asked for.
    pub subnet_id: String,
}

const MINUTE: u64 = 60_000;

impl Site {
    /// Starts a test failover of an item (`TestFailover`).
    ///
    /// # Errors
    /// The item's state does not allow it (NotAllowed); no such network or subnet; a bad
    /// point choice.
    pub fn test_failover(&mut self, req: &FailoverRequest) -> Result<Started> {
        self.start_failover(req, Operation::TestFailover)
    }

    /// Starts a failover of an item (`UnplannedFailover`): replication stops now.
    ///
    /// # Errors
    /// As [`Site::test_failover`]; a machine of a multi-VM group outside a recovery plan.
    pub fn failover(&mut self, req: &FailoverRequest) -> Result<Started> {
        self.start_failover(req, Operation::UnplannedFailover)
    }

    fn start_failover(&mut self, req: &FailoverRequest, op: Operation) -> Result<Started> {
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        let test = op == Operation::TestFailover;
        let latest = parse_choice(&req.point, req.pinned_time_ms)? == Choice::Latest;
        if test && req.shutdown {
            return Err(Error::argument(
                "a test failover does not shut the source down (that is a failover's option)",
            ));
        }
        let running = self.source_running(&req.item)?;
        self.tx(|t| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            let mut it = find_item(t, &req.item)?;
            let tr = allowed(&it, op)?;
            if op == Operation::UnplannedFailover
                && req.recovery_plan.is_none()
                && let Some(g) = &it.properties.multi_vm_group_name
            {
                return Err(Error::not_allowed(format!(
                    "UnsupportedReplicationProtectionActionForUnplannedFailover: {} is in the \
                     multi-VM replication group {g}: a machine of a replication group fails \
                     over only with its group, through a recovery plan",
                    it.properties.friendly_name
                )));
            }
            let (vnet, subnet) = target_subnet(t, &it, req)?;
            let mut warnings = Vec::new();
            if test && vnet == it.properties.target.network_id && running {
                warnings.push(format!(
                    "{} is the production network and the source machine {} is running: a \
                     test VM there can clash with it; use an isolated network for test \
                     failover",
                    vnet.rsplit('/').next().unwrap_or(&vnet),
                    it.properties.friendly_name
                ));
            }
            let mut tasks: Vec<(&str, &str)> = Vec::new();
            if !test && req.shutdown {
                tasks.push(("ShutdownSource", "Shut down the virtual machine"));
            }
            tasks.push(if test {
                (
                    "TestFailoverPrerequisites",
                    "Prerequisites check for test failover",
                )
            } else {
                ("FailoverPrerequisites", "Prerequisites check for failover")
            });
            if latest {
                tasks.push(("ProcessLatest", "Latest: processing the data received"));
            }
            tasks.push(("FailoverProcessing", "Processing the data for failover"));
            tasks.push(if test {
                ("CreateTestVm", "Create test virtual machine")
            } else {
                ("CreateVm", "Create the virtual machine")
            });
            tasks.push(("PrepareVm", "Preparing the virtual machine"));
            tasks.push(("StartVm", "Start the virtual machine"));
            let (scenario, friendly) = if test {
                ("TestFailover", "Test failover")
            } else {
                ("UnplannedFailover", "Failover")
            };
            let mut job = Job::new(
                scenario,
                friendly,
                (&it.id, &it.properties.friendly_name, "ProtectionEntity"),
                &tasks,
                &d,
                now,
            );
            model_durations(&mut job, &it.properties, seed);
            job.input = serde_json::json!({
                "request": req,
                "networkId": vnet,
                "subnetId": subnet,
                "warnings": warnings,
            });
            let job = start_transition(t, seed, &v.id, &mut it, tr, job)?;
            Ok(Started { job, warnings })
        })
    }

    /// Starts the cleanup of an item's test failover (`TestFailoverCleanup`): the test VM, its
    /// NIC, disks and blobs are deleted; `comments` (up to 1,024 characters) are kept.
    ///
    /// # Errors
    /// The item's state does not allow it; the comments are too long.
    pub fn cleanup_test_failover(&mut self, item: &str, comments: &str) -> Result<Resource<Job>> {
        if comments.chars().count() > 1024 {
            return Err(Error::argument(format!(
                "the cleanup's notes are {} characters; at most 1,024 are kept",
                comments.chars().count()
            )));
        }
        self.item_job(
            item,
            Operation::TestFailoverCleanup,
            ("TestFailoverCleanup", "Cleanup test failover"),
            &[("DeleteTestVm", "Delete the test virtual machine")],
            serde_json::json!({ "comments": comments }),
        )
    }

    /// Starts a change of a failed-over item's recovery point (`ChangePit`, before commit):
    /// the VM's disks are rebuilt from `point`.
    ///
    /// # Errors
    /// The item's state does not allow it; a bad point choice.
    pub fn change_recovery_point(&mut self, item: &str, point: &str) -> Result<Resource<Job>> {
        let latest = parse_choice(point, None)? == Choice::Latest;
        let mut tasks = vec![(
            "ChangePitPrerequisites",
            "Prerequisites check for changing the recovery point",
        )];
        if latest {
            tasks.push(("ProcessLatest", "Latest: processing the data received"));
        }
        tasks.push(("FailoverProcessing", "Processing the data for failover"));
        tasks.push(("ApplyRecoveryPoint", "Apply the recovery point"));
        let req = FailoverRequest {
            item: item.to_string(),
            point: point.to_string(),
            ..FailoverRequest::default()
        };
        self.item_job(
            item,
            Operation::ChangePit,
            ("ChangePit", "Change recovery point"),
            &tasks,
            serde_json::json!({ "request": req }),
        )
    }

    /// Commits an item's failover (`Commit`): every other recovery point is deleted and the
    /// replica's space freed; the point can no longer change.
    ///
    /// # Errors
    /// The item's state does not allow it.
    pub fn commit_failover(&mut self, item: &str) -> Result<Resource<Job>> {
        self.item_job(
            item,
            Operation::Commit,
            ("Commit", "Commit"),
            &[("CommitFailover", "Commit the failover")],
            serde_json::Value::Null,
        )
    }

    /// Completes an item's migration (`CompleteMigration`): replication and billing stop, the
    /// replica, its journals and the seed disk are removed, the item goes; the VM stays.
    ///
    /// # Errors
    /// The item's state does not allow it.
    pub fn complete_migration(&mut self, item: &str) -> Result<Resource<Job>> {
        self.item_job(
            item,
            Operation::CompleteMigration,
            ("CompleteMigration", "Complete migration"),
            &[("CompleteMigration", "Complete the migration")],
            serde_json::Value::Null,
        )
    }

    fn item_job(
        &mut self,
        item: &str,
        op: Operation,
        (scenario, friendly): (&str, &str),
        tasks: &[(&str, &str)],
        input: serde_json::Value,
    ) -> Result<Resource<Job>> {
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        self.tx(|t| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            let mut it = find_item(t, item)?;
            let tr = allowed(&it, op)?;
            let mut job = Job::new(
                scenario,
                friendly,
                (&it.id, &it.properties.friendly_name, "ProtectionEntity"),
                tasks,
                &d,
                now,
            );
            model_durations(&mut job, &it.properties, seed);
            job.input = input;
            start_transition(t, seed, &v.id, &mut it, tr, job)
        })
    }

    /// Whether an item's source instance is running (unknown counts as running).
    fn source_running(&mut self, item: &str) -> Result<bool> {
        self.with_estate(|t, e| {
            let it = find_item(t, item)?;
            if it.properties.instance_id.is_empty() {
                return Ok(true);
            }
            Ok(e.ec2
                .describe_instances(std::slice::from_ref(&it.properties.instance_id))
                .ok()
                .and_then(|mut v| v.pop())
                .is_none_or(|i| i.state == crate::cloud::ec2::InstanceState::Running))
        })
    }

    /// The page-blob store of a storage account of the site, with the faults a scenario set.
    fn blob_store(&mut self, account: &str) -> Result<FaultyBlobs> {
        let faults: BlobFaults = self.tx(|t| Ok(t.setting(BLOB_FAULTS)?.unwrap_or_default()))?;
        Ok(FaultyBlobs {
            inner: storage::account_blobs(&self.dir.join("blobs"), account),
            throttle: std::sync::atomic::AtomicU32::new(faults.throttle),
            server: std::sync::atomic::AtomicU32::new(faults.server_errors),
        })
    }
}

/// Moves the item to `tr`'s running state and starts `job` with `tr`'s outcomes (success
/// removes the item when `tr` has no succeeded state).
fn start_transition(
    t: &Tx<'_>,
    seed: u64,
    vault_id: &str,
    it: &mut Resource<ReplicatedItem>,
    tr: super::states::Transition,
    job: Job,
) -> Result<Resource<Job>> {
    it.properties.state = tr.running;
    t.update(it)?;
    start_job(
        t,
        seed,
        vault_id,
        job,
        ItemEffect {
            item: Some(it.id.clone()),
            on_running: Some(tr.running),
            on_succeeded: tr.succeeded,
            remove_on_success: tr.succeeded.is_none(),
            on_failed: Some(tr.failed),
        },
    )
}

/// The modelled durations of a failover's tasks: processing grows with the disks (at the
/// initial replication's rate), Latest with what is received but not processed, and
/// preparing the VM takes eight to ten minutes (drawn from the seed and the item).
fn model_durations(job: &mut Job, it: &ReplicatedItem, seed: u64) {
    let bytes: u64 = it.replication.iter().map(|d| d.disk_size).sum();
    let rate = super::jobs::INITIAL_REPLICATION_RATE * 4;
    let h =
        crate::digest::sha256(format!("{seed}/{}/{}", it.friendly_name, job.start_ms).as_bytes());
    for t in &mut job.tasks {
        match t.name.as_str() {
            "FailoverProcessing" => t.duration_ms += bytes * 1000 / rate,
            "PrepareVm" => {
                t.duration_ms = (8 * MINUTE).max(t.duration_ms) + (h[0] as u64 % 121) * 1000
            }
            _ => {}
        }
    }
}

/// A point choice for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Latest,
    LatestProcessed,
    LatestApp,
    LatestCrash,
    Custom(u64),
    CustomTime(u64),
    Pinned(u64),
}

fn parse_choice(s: &str, pinned: Option<u64>) -> Result<Choice> {
    if let Some(t) = pinned {
        return Ok(Choice::Pinned(t));
    }
    if matches!(s, "latest-crash-consistent" | "LatestCrashConsistent") {
        return Ok(Choice::LatestCrash);
    }
    Ok(match s.parse::<PointChoice>()? {
        PointChoice::Latest => Choice::Latest,
        PointChoice::LatestProcessed => Choice::LatestProcessed,
        PointChoice::LatestApplicationConsistent => Choice::LatestApp,
        PointChoice::Custom(id) => Choice::Custom(id.0),
        PointChoice::CustomTime(t) => Choice::CustomTime(t),
        PointChoice::LatestMultiVmProcessed | PointChoice::LatestMultiVmApplicationConsistent => {
            return Err(Error::argument(
                "multi-VM points are chosen for the machines of a replication group together: \
                 fail them over through a recovery plan",
            ));
        }
    })
}

/// The network and subnet ids a request names (the item's target by default).
fn target_subnet(
    t: &Tx<'_>,
    it: &Resource<ReplicatedItem>,
    req: &FailoverRequest,
) -> Result<(String, String)> {
    let target = &it.properties.target;
    let vnet_id = match &req.network {
        None => target.network_id.clone(),
        Some(n) if n.starts_with("/subscriptions/") => n.clone(),
        Some(n) => {
            let (sub, rg) = sub_and_group(&target.resource_group_id);
            azure::virtual_network(t, &sub, &rg, n)?.id
        }
    };
    let vnet = azure::get_by_id::<azure::VirtualNetwork>(t, &vnet_id, "virtual network")?;
    let subnet = req.subnet.as_deref().unwrap_or(&target.subnet_name);
    let s = azure::subnet(t, &vnet.id, subnet)?;
    Ok((vnet.id, s.id))
}

/// The subscription id and the group's name of a resource group's id.
fn sub_and_group(rg_id: &str) -> (String, String) {
    let mut parts = rg_id.split('/').filter(|p| !p.is_empty());
    let mut sub = String::new();
    let mut rg = String::new();
    while let Some(p) = parts.next() {
        match p {
            "subscriptions" => sub = parts.next().unwrap_or_default().to_string(),
            "resourceGroups" => rg = parts.next().unwrap_or_default().to_string(),
            _ => {}
        }
    }
    (sub, rg)
}

fn request_of(job: &Resource<Job>) -> Result<FailoverRequest> {
    serde_json::from_value(
        job.properties
            .input
            .get("request")
            .cloned()
            .unwrap_or_default(),
    )
    .map_err(|e| Error::invalid(format!("job {}: its request: {e}", job.name)))
}

/// The newest value a task of `job` before `i` put under `key`.
fn earlier<T: serde::de::DeserializeOwned>(job: &Resource<Job>, i: usize, key: &str) -> Result<T> {
    job.properties.tasks[..i]
        .iter()
        .rev()
        .find_map(|t| t.output.get(key))
        .cloned()
        .ok_or_else(|| Error::invalid(format!("job {}: no earlier task recorded {key}", job.name)))
        .and_then(|v| {
            serde_json::from_value(v)
                .map_err(|e| Error::invalid(format!("job {}: {key}: {e}", job.name)))
        })
}

fn output(pairs: &[(&str, serde_json::Value)]) -> TaskOutput {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The work of the failover tasks.
pub fn task_work(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    name: &str,
    progress: &dyn Progress,
) -> TaskResult {
    let item_id = job.properties.target_object_id.clone();
    match name {
        "ShutdownSource" => shutdown_source(site, &item_id),
        "TestFailoverPrerequisites" | "FailoverPrerequisites" | "ChangePitPrerequisites" => {
            let req = request_of(job)?;
            let choice = parse_choice(&req.point, req.pinned_time_ms)?;
            if choice == Choice::Latest {
                return Ok(Ok(TaskOutput::new()));
            }
            Ok(pick(site, &item_id, &req.point, choice, false, progress)?
                .map(|p| output(&[("pick", to_json(&p))])))
        }
        "ProcessLatest" => {
            let req = request_of(job)?;
            Ok(
                pick(site, &item_id, &req.point, Choice::Latest, true, progress)?
                    .map(|p| output(&[("pick", to_json(&p))])),
            )
        }
        "FailoverProcessing" => {
            let p: ItemPick = earlier(job, i, "pick")?;
            processing(site, job, &item_id, &p, progress)
        }
        "CreateTestVm" | "CreateVm" => {
            let r = create_vm(site, job, i, &item_id, name == "CreateTestVm");
            if !matches!(r, Ok(Ok(_))) {
                // Nothing of a failed creation is left: its disks and their blobs go.
                let disks: Vec<BuiltDisk> = earlier(job, i, "disks").unwrap_or_default();
                remove_disks(site, &disks)?;
            }
            r
        }
        "PrepareVm" => Ok(Ok(output(&[(
            "note",
            "the extra processing a physical server's failover needs (8-10 minutes)".into(),
        )]))),
        "StartVm" | "ApplyRecoveryPoint" => start_and_verify(site, job, i, &item_id, name),
        "DeleteTestVm" => delete_test_vm(site, job, &item_id),
        "CommitFailover" => {
            let freed = remove_item_dirs(site, &item_id, &["replicas"])?;
            site.tx(|t| {
                let mut it = t.get::<ReplicatedItem>(&item_id)?;
                it.properties.replication.clear();
                t.update(&mut it)
            })?;
            Ok(Ok(output(&[("replicaBytesFreed", freed.into())])))
        }
        "CompleteMigration" => {
            let freed = remove_item_dirs(site, &item_id, &["replicas", "source"])?;
            Ok(Ok(output(&[
                ("replicaBytesFreed", freed.into()),
                (
                    "billing",
                    "stopped: the machine is no longer protected by Site Recovery".into(),
                ),
            ])))
        }
        _ => Err(Error::invalid(format!("no work is known for task {name}"))),
    }
}

fn shutdown_source(site: &mut Site, item_id: &str) -> TaskResult {
    let now = site.now_ms()?;
    let r = site.with_estate(|t, e| {
        let it = t.get::<ReplicatedItem>(item_id)?;
        Ok(e.ec2
            .stop_instances(std::slice::from_ref(&it.properties.instance_id), false))
    })?;
    // The failover goes on when the shutdown fails: the failure is recorded.
    Ok(Ok(match r {
        Ok(changes) => output(&[
            ("shutDown", true.into()),
            ("stateChanges", to_json(&changes)),
            ("shutdownMs", now.into()),
        ]),
        Err(e) => output(&[
            ("shutDown", false.into()),
            (
                "warning",
                format!("the source could not be shut down (the failover goes on): {e}").into(),
            ),
        ]),
    }))
}

/// Resolves a choice to a point every disk of the item holds (processing everything received
/// first when `process`).
fn pick(
    site: &mut Site,
    item_id: &str,
    label: &str,
    choice: Choice,
    process: bool,
    progress: &dyn Progress,
) -> Result<std::result::Result<ItemPick, JobError>> {
    let it = site.tx(|t| t.get::<ReplicatedItem>(item_id))?;
    let policy = site.tx(|t| {
        Ok(
            t.find::<super::model::ReplicationPolicy>(&it.properties.policy_id)?
                .map(|p| policy_of(&p.properties))
                .unwrap_or_default(),
        )
    })?;
    let mut cats = Vec::new();
    for d in &it.properties.replication {
        let mut disk = ProtectedDisk::from_replica(&site.dir().join(&d.replica_dir), false)?
            .with_policy(policy)?;
        if process {
            disk.process(progress)?;
        }
        cats.push(disk.catalog());
    }
    let Some(first) = cats.first() else {
        return Ok(Err(no_point(&it, label, "the item has no replica")));
    };
    // Points every disk holds, newest last.
    let common: Vec<Vec<&crate::recovery::PointInfo>> = first
        .points
        .iter()
        .filter_map(|p| {
            let same: Vec<_> = cats
                .iter()
                .filter_map(|c| c.points.iter().find(|q| q.time_ms == p.time_ms))
                .collect();
            (same.len() == cats.len()).then_some(same)
        })
        .collect();
    let processed = |s: &&Vec<&crate::recovery::PointInfo>| s.iter().all(|q| q.processed);
    let app = |s: &&Vec<&crate::recovery::PointInfo>| {
        s.iter()
            .all(|q| q.consistency == crate::journal::Consistency::App)
    };
    let found = match choice {
        Choice::Latest => common.iter().rfind(processed),
        Choice::LatestProcessed | Choice::LatestCrash => common.iter().rfind(processed),
        Choice::LatestApp => common.iter().filter(processed).rfind(app),
        Choice::Custom(seq) => common.iter().find(|s| s[0].seq == seq),
        Choice::CustomTime(t) => common.iter().filter(processed).rfind(|s| s[0].time_ms <= t),
        Choice::Pinned(t) => common.iter().find(|s| s[0].time_ms == t),
    };
    let Some(s) = found else {
        let why = match choice {
            Choice::Custom(seq) => format!(
                "{} is not a point every disk holds within retention",
                crate::journal::point_id(seq)
            ),
            Choice::CustomTime(t) => format!(
                "no processed point at or before {}",
                crate::clock::format_time(t)
            ),
            Choice::Pinned(t) => format!(
                "the replication group's common point of {} is not on this machine",
                crate::clock::format_time(t)
            ),
            _ => format!("no point matches {label}"),
        };
        let defects: Vec<String> = cats.iter().filter_map(|c| c.defect.clone()).collect();
        let why = if defects.is_empty() {
            why
        } else {
            format!(
                "{why}; points after a defect are unavailable: {}",
                defects.join("; ")
            )
        };
        return Ok(Err(no_point(&it, label, &why)));
    };
    if matches!(choice, Choice::Custom(_)) && !processed(&s) {
        return Ok(Err(no_point(
            &it,
            label,
            "the point is received but not processed yet: choose it later, or choose Latest",
        )));
    }
    Ok(Ok(ItemPick {
        choice: label.to_string(),
        point: s[0].id.to_string(),
        time_ms: s[0].time_ms,
        point_type: if app(&s) {
            "ApplicationConsistent"
        } else {
            "CrashConsistent"
        }
        .into(),
        disks: s
            .iter()
            .map(|q| (q.seq, q.digest.map(|d| d.to_string())))
            .collect(),
    }))
}

fn no_point(it: &Resource<ReplicatedItem>, label: &str, why: &str) -> JobError {
    job_error(
        "RecoveryPointNotAvailable",
        &format!(
            "No recovery point of {} matches {label}: {why}.",
            it.properties.friendly_name
        ),
        "The point chosen is outside the retention window, after a defect in the replicated \
         data, or not yet processed.",
        "Choose another recovery point (points list --item shows them).",
    )
}

/// Builds each disk's point into a fixed VHD (verified against the marker), uploads it to a
/// page blob in the item's storage account and imports a managed disk from it.
fn processing(
    site: &mut Site,
    job: &Resource<Job>,
    item_id: &str,
    p: &ItemPick,
    progress: &dyn Progress,
) -> TaskResult {
    let it = site.tx(|t| t.get::<ReplicatedItem>(item_id))?;
    let account = site.tx(|t| {
        azure::get_by_id::<storage::StorageAccount>(
            t,
            &it.properties.target.storage_account_id,
            "storage account",
        )
    })?;
    let store = site.blob_store(&account.name)?;
    store
        .create_container(CONTAINER)
        .map_err(|e| blob_error("creating the failover container", &e))?;
    let staging = site.dir().join("staging");
    std::fs::create_dir_all(&staging)
        .map_err(|e| Error::io("creating the staging folder", e).with_path(&staging))?;
    let short = job.name.split('-').next().unwrap_or(&job.name).to_string();
    let vm = vm_name(
        &it.properties,
        job.properties.scenario_name == "TestFailover",
    );
    let mut built: Vec<BuiltDisk> = Vec::new();
    let r = (|| -> Result<()> {
        for (n, (d, (seq, marker))) in it.properties.replication.iter().zip(&p.disks).enumerate() {
            let disk = ProtectedDisk::from_replica(&site.dir().join(&d.replica_dir), false)?;
            let vhd = staging.join(format!("{short}-{n}.vhd"));
            let wall = Instant::now();
            let report = crate::recovery::build_point(
                disk.base(),
                disk.journal(),
                *seq,
                &vhd,
                &crate::export::ConvertOptions {
                    manifest: true,
                    sync: false,
                    progress,
                    ..crate::export::ConvertOptions::default()
                },
            )?;
            let build_wall_ms = wall.elapsed().as_millis() as u64;
            let root = report.root.map(|r| r.to_string()).unwrap_or_default();
            let wall = Instant::now();
            let blob = BlobName::new(CONTAINER, format!("{vm}-disk{n}-{short}.vhd"));
            let up = (|| {
                let src =
                    crate::transfer::open_source(&vhd, None, crate::check::Target::ManagedDisk)?;
                crate::transfer::upload(
                    src.source(),
                    &store,
                    &blob,
                    &crate::transfer::UploadOptions {
                        // Each failover's blob has its own name: no overwrite (which would
                        // hash every byte, holes too, for the MD5).
                        overwrite: false,
                        verify: true,
                        parallel: 2,
                        progress,
                        ..crate::transfer::UploadOptions::default()
                    },
                )
            })();
            let _ = std::fs::remove_file(&vhd);
            let up = up?;
            let upload_wall_ms = wall.elapsed().as_millis() as u64;
            let uri = storage::blob_uri(&account.properties, &blob);
            let (sub, rg) = sub_and_group(&it.properties.target.resource_group_id);
            let gen2 = it.properties.azure_vm_generation == "2";
            let md = site.tx(|t| {
                azure::compute::import_disk(
                    t,
                    &sub,
                    &rg,
                    &DiskImport {
                        name: format!("{vm}-disk{n}-{short}"),
                        sku: "Standard_LRS".into(),
                        source_uri: uri.clone(),
                        storage_account_id: account.id.clone(),
                        blob_len: up.blob_len,
                        source_root: root.clone(),
                        hyper_v_generation: if gen2 {
                            HyperVGeneration::V2
                        } else {
                            HyperVGeneration::V1
                        },
                        os_type: (n == 0).then(|| it.properties.os_type.clone()),
                    },
                )
            })?;
            built.push(BuiltDisk {
                disk_id: md.id,
                blob_uri: uri,
                disk_size: d.disk_size,
                root,
                marker_root: marker.clone(),
                build_wall_ms,
                upload_wall_ms,
                uploaded_bytes: up.bytes_sent,
                retries: up.retries,
            });
        }
        Ok(())
    })();
    if let Err(e) = r {
        remove_disks(site, &built)?;
        return Ok(Err(super::runner::error_of(&e)));
    }
    Ok(Ok(output(&[("disks", to_json(&built))])))
}

fn blob_error(what: &str, e: &crate::cloud::pageblob::BlobError) -> Error {
    Error::new(crate::error::ErrorKind::Io, format!("{what}: {e}"))
}

fn vm_name(it: &ReplicatedItem, test: bool) -> String {
    if test {
        format!("{}-test", it.target.vm_name)
    } else {
        it.target.vm_name.clone()
    }
}

/// Deletes managed disks a failover made, with their blobs.
fn remove_disks(site: &mut Site, disks: &[BuiltDisk]) -> Result<()> {
    for d in disks {
        site.tx(|t| {
            if t.exists(&d.disk_id)? {
                t.delete(&d.disk_id)?;
            }
            Ok(())
        })?;
        delete_blob(site, &d.blob_uri)?;
    }
    Ok(())
}

fn delete_blob(site: &mut Site, uri: &str) -> Result<()> {
    let (account, blob) = storage::parse_blob_uri(uri)?;
    storage::account_blobs(&site.dir().join("blobs"), &account)
        .delete(&blob)
        .map_err(|e| blob_error("deleting a failover blob", &e))?;
    Ok(())
}

fn create_vm(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    item_id: &str,
    test: bool,
) -> TaskResult {
    let disks: Vec<BuiltDisk> = earlier(job, i, "disks")?;
    let subnet_id = job
        .properties
        .input
        .get("subnetId")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let short = job.name.split('-').next().unwrap_or(&job.name).to_string();
    site.tx(|t| {
        let it = t.get::<ReplicatedItem>(item_id)?;
        let p = &it.properties;
        let (sub, rg) = sub_and_group(&p.target.resource_group_id);
        let generation = if p.azure_vm_generation == "2" { 2 } else { 1 };
        let size = azure::sizes::choose_size(
            p.source_vm_cpu_count.max(1),
            p.source_vm_ram_size_in_mb.max(1024),
            generation,
        )?;
        let quotas: Quotas = t.setting(QUOTAS)?.unwrap_or_default();
        let vms = t.list::<azure::compute::VirtualMachine>(None)?;
        if let Some(limit) = quotas.cores {
            let used: u32 = vms
                .iter()
                .filter_map(|v| azure::sizes::vm_size(&v.properties.hardware_profile.vm_size).ok())
                .map(|s| s.vcpus)
                .sum();
            if used + size.vcpus > limit {
                return Ok(Err(job_error(
                    "28031",
                    &format!(
                        "Couldn't create the virtual machine {}: the operation needs {} more \
                         regional vCPUs; {used} of the subscription's {limit} are in use.",
                        vm_name(p, test),
                        size.vcpus
                    ),
                    "The subscription's vCPU quota in the region is used up (or the size \
                     cannot be placed, or a policy forbids it).",
                    "Ask for a higher vCPU quota in the region, or choose a smaller size, then \
                     retry the failover.",
                )));
            }
        }
        if let Some(limit) = quotas.network_interfaces {
            let used = t.list::<azure::NetworkInterface>(None)?.len() as u32;
            if used + 1 > limit {
                return Ok(Err(job_error(
                    "28092",
                    &format!(
                        "Couldn't create a network interface for {}: {used} of the \
                         subscription's {limit} network interfaces are in use.",
                        vm_name(p, test)
                    ),
                    "The subscription's network interface quota is used up.",
                    "Delete unused network interfaces or ask for a higher quota, then retry \
                     the failover.",
                )));
            }
        }
        let ip: std::net::Ipv4Addr = p
            .ip_address
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let s = azure::get_by_id::<azure::Subnet>(t, &subnet_id, "subnet")?;
        let in_subnet = s.properties.cidr()?.is_usable(ip);
        let req = match (test, in_subnet) {
            (true, _) => IpRequest::Preferred(ip),
            (false, true) => IpRequest::Static(ip),
            (false, false) => IpRequest::Dynamic,
        };
        let nic_name = format!("{}-nic-{short}", vm_name(p, test));
        let nic =
            match azure::network::create_network_interface(t, &sub, &rg, &nic_name, &s.id, req) {
                Ok(n) => n,
                Err(e) if !test && in_subnet => {
                    return Ok(Err(job_error(
                        "ReplicaIpAddressInvalid",
                        &format!(
                            "One or more replica IP addresses for the network adapter of virtual \
                         machine {} is invalid: {ip} is in use in {} ({})",
                            vm_name(p, test),
                            s.name,
                            e
                        ),
                        "A previous test failover was not cleaned up, and its VM holds the \
                     address; or another machine in the subnet uses it.",
                        "Clean up the test failover (or free the address), then retry the \
                     failover.",
                    )));
                }
                Err(e) => return Err(e),
            };
        let mut tags = Tags::new();
        tags.insert("ec2azure.item".into(), p.friendly_name.clone());
        tags.insert(
            "ec2azure.failover".into(),
            if test { "test" } else { "failover" }.into(),
        );
        let vm = azure::compute::create_virtual_machine(
            t,
            &sub,
            &rg,
            &VmSpec {
                name: vm_name(p, test),
                size: size.name.into(),
                nic_ids: vec![nic.id.clone()],
                os_disk_id: disks.first().map(|d| d.disk_id.clone()).unwrap_or_default(),
                data_disk_ids: disks.iter().skip(1).map(|d| d.disk_id.clone()).collect(),
                tags,
                delete_with_vm: test,
            },
        );
        let vm = match vm {
            Ok(vm) => vm,
            Err(e) => {
                t.delete(&nic.id)?;
                return Err(e);
            }
        };
        // Created, not started: the start is its own task.
        azure::compute::set_power_state(t, &vm.id, PowerState::Stopped)?;
        let made = MadeVm {
            vm_id: vm.id.clone(),
            nic_id: nic.id.clone(),
            ip: nic
                .properties
                .private_ip()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            size: size.name.into(),
            subnet_id: s.id.clone(),
        };
        Ok(Ok(output(&[("vm", to_json(&made))])))
    })
}

/// Reads a disk back from its blob: its root digest over the disk's own bytes.
fn blob_root(site: &mut Site, d: &BuiltDisk) -> Result<String> {
    let (account, blob) = storage::parse_blob_uri(&d.blob_uri)?;
    let store = storage::account_blobs(&site.dir().join("blobs"), &account);
    let img = BlobDisk {
        store,
        blob,
        len: d.disk_size,
    };
    Ok(crate::recovery::base_digests(&img)?.1.to_string())
}

/// A page blob read as a disk of `len` bytes.
struct BlobDisk {
    store: FileBlobs,
    blob: BlobName,
    len: u64,
}

impl DiskImage for BlobDisk {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - offset) as usize);
        self.store
            .read(&self.blob, offset, &mut buf[..n])
            .map_err(|e| blob_error(&format!("reading {}", self.blob), &e))?;
        Ok(n)
    }
    fn extents(&self) -> Result<crate::image::ExtentMap> {
        // Pages never written read as zeros: Get Page Ranges says which were.
        let ranges = self
            .store
            .page_ranges(&self.blob)
            .map_err(|e| blob_error(&format!("listing the pages of {}", self.blob), &e))?;
        Ok(crate::image::ExtentMap::from_ranges(
            self.len,
            ranges
                .into_iter()
                .map(|(o, l)| (o, l, crate::image::ExtentKind::Data)),
        ))
    }
    fn format(&self) -> crate::image::Format {
        crate::image::Format::Raw
    }
}

/// Starts the VM (a failover's last task) or swaps in the new point's disks (a change of
/// point), verifies it, and records the failover in the machine's history.
fn start_and_verify(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    item_id: &str,
    name: &str,
) -> TaskResult {
    let disks: Vec<BuiltDisk> = earlier(job, i, "disks")?;
    let p: ItemPick = earlier(job, i, "pick")?;
    let change = name == "ApplyRecoveryPoint";
    let test = job.properties.scenario_name == "TestFailover";
    let made: MadeVm = if change {
        // The VM of the failover, its disks replaced.
        let old = site.tx(|t| {
            let it = t.get::<ReplicatedItem>(item_id)?;
            let vm_id = it
                .properties
                .target_vm_id
                .clone()
                .ok_or_else(|| Error::invalid("the item has no failed-over VM"))?;
            let mut vm = azure::compute::virtual_machine(t, &vm_id)?;
            let old: Vec<String> = std::iter::once(&vm.properties.storage_profile.os_disk)
                .chain(&vm.properties.storage_profile.data_disks)
                .map(|d| d.managed_disk.id.clone())
                .collect();
            let mut old_uris = Vec::new();
            for id in &old {
                if let Some(md) = t.find::<azure::compute::ManagedDisk>(id)? {
                    old_uris.push(md.properties.creation_data.source_uri.clone());
                    t.delete(id)?;
                }
            }
            let sp = &mut vm.properties.storage_profile;
            for (n, d) in disks.iter().enumerate() {
                let mut md = azure::compute::disk(t, &d.disk_id)?;
                md.properties.managed_by = Some(vm_id.clone());
                md.properties.disk_state = "Attached".into();
                t.update(&mut md)?;
                let target = if n == 0 {
                    &mut sp.os_disk
                } else {
                    match sp.data_disks.get_mut(n - 1) {
                        Some(x) => x,
                        None => continue,
                    }
                };
                target.name = md.name.clone();
                target.managed_disk.id = md.id.clone();
            }
            vm.properties.power_state = PowerState::Stopped;
            t.update(&mut vm)?;
            let nic = vm
                .properties
                .network_profile
                .network_interfaces
                .first()
                .map(|n| n.id.clone())
                .unwrap_or_default();
            let n = azure::network::network_interface(t, &nic)?;
            Ok((
                MadeVm {
                    vm_id: vm_id.clone(),
                    nic_id: nic,
                    ip: n
                        .properties
                        .private_ip()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    size: vm.properties.hardware_profile.vm_size.clone(),
                    subnet_id: n.properties.subnet_id().unwrap_or_default().to_string(),
                },
                old_uris,
            ))
        })?;
        for uri in &old.1 {
            delete_blob(site, uri)?;
        }
        old.0
    } else {
        earlier(job, i, "vm")?
    };
    // Start it, then verify as the tutorial asks.
    let (vm, nic, expected_size, it) = site.tx(|t| {
        let vm = azure::compute::set_power_state(t, &made.vm_id, PowerState::Running)?;
        let nic = azure::network::network_interface(t, &made.nic_id)?;
        let it = t.get::<ReplicatedItem>(item_id)?;
        let generation = if it.properties.azure_vm_generation == "2" {
            2
        } else {
            1
        };
        let expected = azure::sizes::choose_size(
            it.properties.source_vm_cpu_count.max(1),
            it.properties.source_vm_ram_size_in_mb.max(1024),
            generation,
        )?;
        Ok((vm, nic, expected.name.to_string(), it))
    })?;
    let mut verification = vec![
        Verification {
            check: "size".into(),
            passed: vm.properties.hardware_profile.vm_size == expected_size,
            detail: format!(
                "{} for {} vCPUs and {} MiB (expected {expected_size})",
                vm.properties.hardware_profile.vm_size,
                it.properties.source_vm_cpu_count,
                it.properties.source_vm_ram_size_in_mb
            ),
        },
        Verification {
            check: "network".into(),
            passed: nic.properties.subnet_id() == Some(made.subnet_id.as_str()),
            detail: format!(
                "{} in {}",
                made.ip,
                nic.properties.subnet_id().unwrap_or("no subnet")
            ),
        },
        Verification {
            check: "running".into(),
            passed: vm.properties.power_state == PowerState::Running,
            detail: vm.properties.power_state.display_status().into(),
        },
    ];
    for (n, d) in disks.iter().enumerate() {
        let got = blob_root(site, d)?;
        let want = d.marker_root.clone().unwrap_or_else(|| d.root.clone());
        verification.push(Verification {
            check: "disk".into(),
            passed: got == want,
            detail: format!(
                "disk {n}: the blob's root digest {got}, the point's {}{want}",
                if d.marker_root.is_some() {
                    "marker "
                } else {
                    "built disk (no marker digest) "
                }
            ),
        });
    }
    let now = site.now_ms()?;
    let shutdown: Option<bool> = job.properties.tasks[..i]
        .iter()
        .find(|t| t.name == "ShutdownSource")
        .and_then(|t| t.output.get("shutDown"))
        .and_then(|v| v.as_bool());
    // The source's last write: when replication stopped (the failover's start) or, for a test
    // failover, the job's start; the workload writes continuously up to then.
    let generated = it
        .properties
        .replication
        .iter()
        .map(|d| d.generated_to_ms)
        .max()
        .unwrap_or(job.properties.start_ms);
    let last_write = generated.min(job.properties.start_ms).max(p.time_ms);
    let req = request_of(job).unwrap_or_default();
    let record = FailoverRecord {
        job_id: job.id.clone(),
        scenario_name: job.properties.scenario_name.clone(),
        recovery_plan: req.recovery_plan.clone(),
        choice: p.choice.clone(),
        recovery_point_id: format!("{item_id}/recoveryPoints/{}", p.point),
        recovery_point_time_ms: p.time_ms,
        recovery_point_type: p.point_type.clone(),
        start_ms: job.properties.start_ms,
        last_source_write_ms: last_write,
        data_loss_ms: last_write.saturating_sub(p.time_ms),
        vm_running_ms: now,
        rto_ms: now.saturating_sub(job.properties.start_ms),
        build_wall_ms: disks.iter().map(|d| d.build_wall_ms).sum(),
        upload_wall_ms: disks.iter().map(|d| d.upload_wall_ms).sum(),
        uploaded_bytes: disks.iter().map(|d| d.uploaded_bytes).sum(),
        vm_id: made.vm_id.clone(),
        vm_size: made.size.clone(),
        ip_address: made.ip.clone(),
        subnet_id: made.subnet_id.clone(),
        source_shut_down: shutdown,
        verification: verification.clone(),
        cleaned_up_ms: None,
        cleanup_notes: None,
    };
    let ok = record.verified();
    site.tx(|t| {
        let mut it = t.get::<ReplicatedItem>(item_id)?;
        if !test {
            it.properties.target_vm_id = Some(made.vm_id.clone());
            it.properties.failover_recovery_point_id = Some(record.recovery_point_id.clone());
            it.properties.last_successful_failover_ms = Some(now);
        }
        let name = it.properties.friendly_name.clone();
        t.update(&mut it)?;
        history_mut(t, &name, |h| h.failovers.push(record.clone()))
    })?;
    let out = output(&[
        ("verification", to_json(&verification)),
        ("failover", to_json(&record)),
    ]);
    if !ok {
        let failed: Vec<String> = verification
            .iter()
            .filter(|v| !v.passed)
            .map(|v| format!("{}: {}", v.check, v.detail))
            .collect();
        return Ok(Err(job_error(
            "FailoverVerificationFailed",
            &format!("The failed-over VM did not verify: {}", failed.join("; ")),
            "The VM's size, network, power state or disk bytes are not what the failover \
             asked for.",
            "Read the verification in the job's output.",
        )));
    }
    Ok(Ok(out))
}

fn delete_test_vm(site: &mut Site, job: &Resource<Job>, item_id: &str) -> TaskResult {
    let comments = job
        .properties
        .input
        .get("comments")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let now = site.now_ms()?;
    let (deleted, uris) = site.tx(|t| {
        let mut it = t.get::<ReplicatedItem>(item_id)?;
        let v = the_vault(t)?;
        let name = it.properties.friendly_name.clone();
        let h = t
            .find::<ItemHistory>(&ItemHistory::id(&v.id, &name))?
            .map(|h| h.properties)
            .unwrap_or_default();
        let Some(rec) = h
            .failovers
            .iter()
            .rev()
            .find(|r| r.scenario_name == "TestFailover" && r.cleaned_up_ms.is_none())
            .cloned()
        else {
            return Ok((None, Vec::new()));
        };
        let mut uris = Vec::new();
        let mut deleted = None;
        if let Some(vm) = t.find::<azure::compute::VirtualMachine>(&rec.vm_id)? {
            for d in std::iter::once(&vm.properties.storage_profile.os_disk)
                .chain(&vm.properties.storage_profile.data_disks)
            {
                if let Some(md) = t.find::<azure::compute::ManagedDisk>(&d.managed_disk.id)? {
                    uris.push(md.properties.creation_data.source_uri.clone());
                }
            }
            deleted = Some(azure::compute::delete_virtual_machine(t, &vm.id, true)?);
        }
        it.properties.last_successful_test_failover_ms = Some(rec.vm_running_ms);
        t.update(&mut it)?;
        history_mut(t, &name, |h| {
            if let Some(r) = h
                .failovers
                .iter_mut()
                .rev()
                .find(|r| r.job_id == rec.job_id)
            {
                r.cleaned_up_ms = Some(now);
                r.cleanup_notes = Some(comments.clone());
            }
        })?;
        Ok((deleted, uris))
    })?;
    for u in &uris {
        delete_blob(site, u)?;
    }
    Ok(Ok(output(&[
        ("deleted", to_json(&deleted)),
        ("blobsDeleted", to_json(&uris)),
        ("comments", comments.into()),
    ])))
}

/// Removes an item's folders under `kinds` (`replicas`, `source`); returns the bytes freed.
fn remove_item_dirs(site: &mut Site, item_id: &str, kinds: &[&str]) -> Result<u64> {
    let name = item_id.rsplit('/').next().unwrap_or(item_id).to_string();
    let mut freed = 0;
    for k in kinds {
        let p: PathBuf = site.dir().join(k).join(&name);
        if p.exists() {
            freed += super::replication::allocated_bytes(&p);
            std::fs::remove_dir_all(&p)
                .map_err(|e| Error::io("removing the replica", e).with_path(&p))?;
        }
    }
    Ok(freed)
}

/// A page-blob store that answers the first Put Page calls with the faults a scenario set
/// (503 ServerBusy, 500 InternalError), as a throttled or failing service would; the upload
/// engine retries them.
struct FaultyBlobs {
    inner: FileBlobs,
    throttle: std::sync::atomic::AtomicU32,
    server: std::sync::atomic::AtomicU32,
}

impl FaultyBlobs {
    fn take(n: &std::sync::atomic::AtomicU32) -> bool {
        n.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |v| v.checked_sub(1),
        )
        .is_ok()
    }
}

impl PageBlobStore for FaultyBlobs {
    fn create_container(
        &self,
        c: &str,
    ) -> std::result::Result<(), crate::cloud::pageblob::BlobError> {
        self.inner.create_container(c)
    }
    fn create(
        &self,
        b: &BlobName,
        len: u64,
    ) -> std::result::Result<(), crate::cloud::pageblob::BlobError> {
        self.inner.create(b, len)
    }
    fn put_pages(
        &self,
        b: &BlobName,
        offset: u64,
        data: &[u8],
    ) -> std::result::Result<(), crate::cloud::pageblob::BlobError> {
        use crate::cloud::pageblob::BlobError;
        if Self::take(&self.throttle) {
            return Err(BlobError::status(
                503,
                "ServerBusy",
                "The server is busy (injected throttling).",
            ));
        }
        if Self::take(&self.server) {
            return Err(BlobError::status(
                500,
                "InternalError",
                "The server encountered an internal error (injected).",
            ));
        }
        self.inner.put_pages(b, offset, data)
    }
    fn clear_pages(
        &self,
        b: &BlobName,
        offset: u64,
        len: u64,
    ) -> std::result::Result<(), crate::cloud::pageblob::BlobError> {
        self.inner.clear_pages(b, offset, len)
    }
    fn page_ranges(
        &self,
        b: &BlobName,
    ) -> std::result::Result<Vec<(u64, u64)>, crate::cloud::pageblob::BlobError> {
        self.inner.page_ranges(b)
    }
    fn read(
        &self,
        b: &BlobName,
        offset: u64,
        buf: &mut [u8],
    ) -> std::result::Result<(), crate::cloud::pageblob::BlobError> {
        self.inner.read(b, offset, buf)
    }
    fn properties(
        &self,
        b: &BlobName,
    ) -> std::result::Result<
        Option<crate::cloud::pageblob::BlobProperties>,
        crate::cloud::pageblob::BlobError,
    > {
        self.inner.properties(b)
    }
    fn set_metadata(
        &self,
        b: &BlobName,
        m: &std::collections::BTreeMap<String, String>,
    ) -> std::result::Result<(), crate::cloud::pageblob::BlobError> {
        self.inner.set_metadata(b, m)
    }
    fn set_content_md5(
        &self,
        b: &BlobName,
        md5: &[u8; 16],
    ) -> std::result::Result<(), crate::cloud::pageblob::BlobError> {
        self.inner.set_content_md5(b, md5)
    }
}
