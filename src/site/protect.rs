//! Protecting machines: protectable items (machines added by name, IP and OS type, or
//! discovered, matched to EC2 instances by private IP), the support and prerequisite checks
//! run against what EC2, the guest and the disk itself say, Enable protection and Finalize
//! protection (initial replication reads every volume's snapshot through the EBS direct APIs
//! into the replica's base), replication over simulated time, and disabling it.
//!
//! Jobs (scenario names inferred where asr-model.md §2.4 found none): `EnableDr` "Enable
//! protection" = prerequisites check, Mobility service push install; then `FinalizeProtection`
//! "Finalize protection" = initial replication, prerequisites check, finalize — the item is
//! Protected once it ends with the first recovery point made; `DisableDr` "Disable protection".

use super::checks::{
    self, Architecture as CArch, BootMode as CBoot, CheckResult, DiskBoot, DiskFacts,
    IngressRule as CIngress, MachineFacts, NetworkFacts, Outcome, PushAccount, SiteFacts,
    TargetFacts, Virtualization as CVirt,
};
use super::estate::{Estate, GuestSpec, find_instance, guest_of};
use super::jobs::{Job, job_error};
use super::model::{
    ContainerMapping, Fabric, ItemHistory, MultiVmSync, ProtectableItem, ProtectedDiskDetails,
    ReplicatedItem, ReplicationPolicy, ReplicationTarget, RpoSample,
};
use super::replication::{self as repl, SpanEnv, Window};
use super::runner::{ItemEffect, TaskOutput, TaskResult, start_job};
use super::states::{ItemState, Operation};
use super::store::{Resource, Tx};
use super::support::OsType;
use super::vault::{container_of, mapped_policy, pick_fabric, the_vault};
use super::{Site, now_ms};
use crate::cloud::ebs::{EbsSnapshot, RetryPolicy};
use crate::cloud::ec2::{
    self, Platform, Protocol, effective_boot_mode, instance_type_size, readable_snapshot,
};
use crate::error::{Error, Result};
use crate::image::DiskImage;
use crate::progress::Progress;
use crate::recovery::Policy;
use serde::Serialize;
use std::path::{Path, PathBuf};

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
    /// Points folded into the base by retention.
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

/// What `replication enable` asks for.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnableRequest {
    /// The machine (protectable item name).
    pub machine: String,
    /// The configuration server (default: the only one).
    pub config_server: Option<String>,
    /// The policy (default: the one associated with the configuration server).
    pub policy: Option<String>,
    /// The run-as account's name.
    pub account: String,
    /// The target resource group.
    pub resource_group: String,
    /// The target storage account.
    pub storage_account: String,
    /// The target network and subnet.
    pub network: String,
    /// The subnet (default `default`).
    pub subnet: String,
    /// The VM's name in Azure (default: the machine's name).
    pub vm_name: Option<String>,
    /// A multi-VM consistency group (needs a policy with multi-VM sync on).
    pub multi_vm_group: Option<String>,
}

impl Site {
    /// Adds a machine by name, IP and OS type (the tutorial's physical machine), matched to the
    /// EC2 instance with that private IP.
    ///
    /// # Errors
    /// No configuration server, a machine of that name exists, or EC2 fails.
    pub fn add_machine(
        &mut self,
        name: &str,
        ip: &str,
        os_type: &str,
        config_server: Option<&str>,
    ) -> Result<Resource<ProtectableItem>> {
        let os_type = match os_type.to_ascii_lowercase().as_str() {
            "windows" => "Windows",
            "linux" => "Linux",
            other => {
                return Err(Error::argument(format!(
                    "OS type {other:?}: expected Windows or Linux"
                )));
            }
        };
        ip.parse::<std::net::Ipv4Addr>()
            .map_err(|_| Error::argument(format!("IP address {ip:?}: expected a.b.c.d")))?;
        self.with_estate(|t, e| {
            let f = pick_fabric(t, config_server)?;
            let c = container_of(t, &f)?;
            let instance = e
                .ec2
                .describe_instances(&[])?
                .into_iter()
                .find(|i| i.private_ip.as_deref() == Some(ip));
            add_protectable(t, &c.id, name, ip, os_type, instance.map(|i| i.id))
        })
    }

    /// Adds every EC2 instance (but the configuration server's) as a protectable item, named
    /// by its Name tag (or id).
    ///
    /// # Errors
    /// No configuration server, or EC2 fails.
    pub fn discover_machines(
        &mut self,
        config_server: Option<&str>,
    ) -> Result<Vec<Resource<ProtectableItem>>> {
        self.with_estate(|t, e| {
            let f = pick_fabric(t, config_server)?;
            let c = container_of(t, &f)?;
            let known = t.list::<ProtectableItem>(Some(&c.id))?;
            let mut out = Vec::new();
            for i in e.ec2.describe_instances(&[])? {
                if i.id == f.properties.instance_id
                    || known.iter().any(|k| k.properties.instance_id == i.id)
                {
                    continue;
                }
                let Some(ip) = i.private_ip.clone() else {
                    continue;
                };
                let name = i.name.clone().unwrap_or_else(|| i.id.clone());
                let os = match i.platform {
                    Platform::Windows => "Windows",
                    Platform::Linux => "Linux",
                };
                out.push(add_protectable(
                    t,
                    &c.id,
                    &name,
                    &ip,
                    os,
                    Some(i.id.clone()),
                )?);
            }
            Ok(out)
        })
    }

    /// The protectable items.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn machines(&mut self) -> Result<Vec<Resource<ProtectableItem>>> {
        self.tx(|t| t.list::<ProtectableItem>(None))
    }

    /// The replicated items.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn items(&mut self) -> Result<Vec<Resource<ReplicatedItem>>> {
        self.tx(|t| t.list::<ReplicatedItem>(None))
    }

    /// A replicated item by its name (the machine's) or id.
    ///
    /// # Errors
    /// There is none.
    pub fn item(&mut self, name: &str) -> Result<Resource<ReplicatedItem>> {
        self.tx(|t| find_item(t, name))
    }

    /// Runs the support and prerequisite checks for a machine, without enabling anything. The
    /// boot layout is read from the OS disk's latest snapshot (one is taken when none exists).
    ///
    /// # Errors
    /// No such machine, or EC2 or the snapshot cannot be read.
    pub fn check_machine(
        &mut self,
        machine: &str,
        account: Option<&str>,
        target: &TargetFacts,
    ) -> Result<Vec<CheckResult>> {
        let guests = self.guests()?;
        let support = self.support()?;
        let (facts, site) = self.with_estate(|t, e| {
            let p = find_machine(t, machine)?;
            let facts = machine_facts(t, e, &p, account, &guests)?;
            let site = site_facts(t, &p, target, support.clone())?;
            Ok((facts, site))
        })?;
        Ok(checks::check_machine(&facts, &site))
    }

    fn support(&mut self) -> Result<super::support::SupportMatrix> {
        self.tx(|t| Ok(t.setting("support")?.unwrap_or_default()))
    }

    /// Enables replication of a machine: an `EnableDr` job, then `FinalizeProtection`.
    ///
    /// # Errors
    /// The machine is protected already or unknown, or a target does not exist.
    pub fn enable_replication(&mut self, req: &EnableRequest) -> Result<Resource<Job>> {
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        let sub = self.subscription();
        self.with_estate(|t, e| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            let mut p = find_machine(t, &req.machine)?;
            if p.properties.protection_status == "Protected" {
                return Err(Error::conflict(format!(
                    "{} is protected already",
                    p.properties.friendly_name
                )));
            }
            let f = pick_fabric(t, req.config_server.as_deref())?;
            let c = container_of(t, &f)?;
            if p.parent.as_deref() != Some(c.id.as_str()) {
                return Err(Error::argument(format!(
                    "{} was added to another configuration server",
                    p.properties.friendly_name
                )));
            }
            let account = f
                .properties
                .run_as_accounts
                .iter()
                .find(|a| a.account_name == req.account)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "{} has no run-as account {} (add it with `ec2azure config-server \
                         add-account`)",
                        f.name, req.account
                    ))
                })?;
            let policy = match &req.policy {
                Some(n) => Some(super::vault::find_policy(t, &v.id, n)?),
                None => match mapped_policy(t, &c.id)? {
                    Some(m) => Some(t.get::<ReplicationPolicy>(&m.properties.policy_id)?),
                    None => None,
                },
            };
            if req.multi_vm_group.is_some()
                && policy.as_ref().is_some_and(|p| {
                    p.properties.provider_specific_details.multi_vm_sync_status
                        == MultiVmSync::Disable
                })
            {
                return Err(Error::argument(
                    "a multi-VM group needs a policy with multi-VM consistency on (policy \
                     create --multi-vm)",
                ));
            }
            let sub_id = sub.trim_start_matches("/subscriptions/");
            let rg = super::azure::resource_group(t, sub_id, &req.resource_group)?.id;
            super::azure::check_storage_account_name(&req.storage_account)?;
            let storage = super::azure::storage_account(
                t,
                sub_id,
                &req.resource_group,
                &req.storage_account,
            )?
            .id;
            let vnet = super::azure::virtual_network(t, sub_id, &req.resource_group, &req.network)?;
            super::azure::subnet(t, &vnet.id, &req.subnet)?;
            let network = vnet.id;
            let instance = match &p.properties.instance_id {
                id if !id.is_empty() => e.ec2.describe_instances(std::slice::from_ref(id))?.pop(),
                _ => None,
            };
            let size = instance
                .as_ref()
                .and_then(|i| instance_type_size(&i.instance_type));
            let item_id = format!("{}/replicationProtectedItems/{}", c.id, p.name);
            if t.exists(&item_id)? {
                return Err(Error::conflict(format!(
                    "{} is being protected already",
                    p.properties.friendly_name
                )));
            }
            let vm_name = req
                .vm_name
                .clone()
                .unwrap_or_else(|| p.properties.friendly_name.clone());
            let item = ReplicatedItem {
                friendly_name: p.properties.friendly_name.clone(),
                protectable_item_id: p.id.clone(),
                instance_id: p.properties.instance_id.clone(),
                state: ItemState::EnablingProtection,
                policy_id: policy.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
                policy_friendly_name: policy.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                process_server_id: f
                    .properties
                    .process_servers
                    .first()
                    .map(|s| s.id.clone())
                    .unwrap_or_default(),
                run_as_account_id: account.account_id.clone(),
                target: ReplicationTarget {
                    resource_group_id: rg,
                    storage_account_id: storage,
                    network_id: network,
                    subnet_name: req.subnet.clone(),
                    vm_name,
                },
                replication_health: "None".into(),
                health_errors: Vec::new(),
                rpo_in_seconds: None,
                last_rpo_calculated_ms: None,
                last_recovery_point_received_ms: None,
                current_job_id: None,
                current_scenario: None,
                current_scenario_start_ms: None,
                protected_disks: Vec::new(),
                firmware_type: String::new(),
                azure_vm_generation: String::new(),
                os_type: p.properties.os_type.clone(),
                ip_address: p.properties.ip_address.clone(),
                source_vm_cpu_count: size.map_or(0, |s| s.vcpus),
                source_vm_ram_size_in_mb: size.map_or(0, |s| s.memory_mib),
                multi_vm_group_name: req.multi_vm_group.clone(),
                last_successful_test_failover_ms: None,
                last_successful_failover_ms: None,
                failover_recovery_point_id: None,
                target_vm_id: None,
                replication: Vec::new(),
            };
            t.insert(&item_id, Some(&c.id), &item)?;
            p.properties.protection_status = "Protected".into();
            t.update(&mut p)?;
            let mut job = Job::new(
                "EnableDr",
                "Enable protection",
                (&item_id, &item.friendly_name, "ProtectionEntity"),
                &[
                    (
                        "EnablePrerequisites",
                        "Prerequisites check for enabling protection",
                    ),
                    ("InstallMobilityService", "Install Mobility Service"),
                ],
                &d,
                now,
            );
            job.input = serde_json::json!({ "request": req });
            start_job(
                t,
                seed,
                &v.id,
                job,
                ItemEffect {
                    item: Some(item_id),
                    on_running: Some(ItemState::EnablingProtection),
                    on_succeeded: Some(ItemState::InitialReplicationInProgress),
                    remove_on_success: false,
                    on_failed: Some(ItemState::EnablingFailed),
                },
            )
        })
    }

    /// Disables replication of an item (a `DisableDr` job); the replica is removed unless
    /// `keep_replica`.
    ///
    /// # Errors
    /// The item's state does not allow it (NotAllowed).
    pub fn disable_replication(&mut self, item: &str, keep_replica: bool) -> Result<Resource<Job>> {
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        self.tx(|t| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            let it = find_item(t, item)?;
            let tr = allowed(&it, Operation::DisableProtection)?;
            // A job still under way on the item (Finalize protection during initial
            // replication) is cancelled: the item is going away.
            for mut other in t.list::<Job>(None)? {
                if other.properties.state.is_final() || other.properties.target_object_id != it.id {
                    continue;
                }
                if other
                    .properties
                    .tasks
                    .iter()
                    .any(|t| t.running_lock.is_some())
                {
                    return Err(Error::conflict(format!(
                        "job {} ({}) is doing its work now; try again when it has",
                        other.name, other.properties.friendly_name
                    )));
                }
                other
                    .properties
                    .finish(super::jobs::JobState::Cancelled, now);
                t.update(&mut other)?;
            }
            let mut job = Job::new(
                "DisableDr",
                "Disable protection",
                (&it.id, &it.properties.friendly_name, "ProtectionEntity"),
                &[("DisableProtection", "Disabling protection")],
                &d,
                now,
            );
            job.input = serde_json::json!({ "keepReplica": keep_replica });
            let mut it = it;
            it.properties.state = tr.running;
            t.update(&mut it)?;
            start_job(
                t,
                seed,
                &v.id,
                job,
                ItemEffect {
                    item: Some(it.id.clone()),
                    on_running: None,
                    on_succeeded: tr.succeeded,
                    remove_on_success: tr.succeeded.is_none(),
                    on_failed: Some(tr.failed),
                },
            )
        })
    }

    /// Runs replication for every replicating item over `[from, to)`: the workloads' writes,
    /// their receipt and processing by the process server, points, pruning and health.
    ///
    /// # Errors
    /// A replica cannot be written.
    pub fn replicate(
        &mut self,
        from: u64,
        to: u64,
        progress: &dyn Progress,
    ) -> Result<SpanSummary> {
        let mut sum = SpanSummary::default();
        let items = self.items()?;
        let fabrics = self.tx(|t| t.list::<Fabric>(None))?;
        let mut ps_bytes: std::collections::BTreeMap<String, u64> = Default::default();
        let mut ps_items: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for it in items {
            // The workload runs from initial replication on: what it writes while Finalize
            // protection runs is shipped as soon as the item replicates.
            let state = it.properties.state;
            if it.properties.replication.is_empty()
                || !(state.replicates() || state == ItemState::InitialReplicationInProgress)
            {
                continue;
            }
            let policy = self.item_policy(&it)?;
            let ps_down = fabrics
                .iter()
                .flat_map(|f| &f.properties.process_servers)
                .find(|s| s.id == it.properties.process_server_id)
                .is_some_and(|s| s.ps_service_status != "Running");
            let env = SpanEnv {
                policy,
                process_server_down: if ps_down {
                    vec![Window {
                        from_ms: from,
                        to_ms: to,
                    }]
                } else {
                    Vec::new()
                },
                source_down: Vec::new(),
                progress,
            };
            let mut disks = it.properties.replication.clone();
            let mut reports = Vec::new();
            for d in &mut disks {
                let (rel_r, rel_s) = (d.replica_dir.clone(), d.source_dir.clone());
                d.replica_dir = self.dir.join(&rel_r);
                d.source_dir = self.dir.join(&rel_s);
                // Each disk goes on from where its journal ends (a span it sat out is
                // caught up).
                let start = d.generated_to_ms.min(from);
                let r = if to > d.generated_to_ms {
                    repl::advance(d, start, to, &env)
                } else {
                    repl::advance(d, d.generated_to_ms, d.generated_to_ms, &env)
                };
                d.replica_dir = rel_r;
                d.source_dir = rel_s;
                reports.push(r?);
            }
            let dh: Vec<repl::DiskHealth> = reports.iter().map(|r| r.health.clone()).collect();
            let churn: Vec<&[crate::recovery::IntervalChurn]> =
                reports.iter().map(|r| r.written.churn.as_slice()).collect();
            let health = repl::machine_health(&dh, &churn, to);
            let received = dh
                .iter()
                .map(|d| d.last_recovery_point_received_ms)
                .try_fold(u64::MAX, |a, r| r.map(|r| a.min(r)))
                .filter(|&t| t != u64::MAX);
            sum.items += 1;
            for r in &reports {
                sum.bytes_written += r.written.data_bytes;
                sum.points += r.new_points;
                sum.pruned += r.folded_points;
                sum.wall_ms += r.wall.total_ms;
            }
            let written: u64 = reports.iter().map(|r| r.written.data_bytes).sum();
            ps_items
                .entry(it.properties.process_server_id.clone())
                .or_default()
                .push(it.id.clone());
            *ps_bytes
                .entry(it.properties.process_server_id.clone())
                .or_default() += written;
            let id = it.id.clone();
            self.tx(|t| {
                let mut cur = t.get::<ReplicatedItem>(&id)?;
                cur.properties.replication = disks;
                let p = &mut cur.properties;
                p.replication_health = format!("{:?}", health.replication_health);
                p.health_errors = health.health_errors.clone();
                p.rpo_in_seconds = health.rpo_in_seconds;
                p.last_rpo_calculated_ms = Some(to);
                p.last_recovery_point_received_ms = received;
                for (pd, d) in p.protected_disks.iter_mut().zip(&dh) {
                    pd.rpo_in_seconds = d.rpo_in_seconds;
                }
                let sample = RpoSample {
                    time_ms: to,
                    rpo_in_seconds: p.rpo_in_seconds,
                    replication_health: p.replication_health.clone(),
                };
                let name = p.friendly_name.clone();
                t.update(&mut cur)?;
                history_mut(t, &name, |h| h.push_rpo(sample))
            })?;
        }
        // The process server's own limit: 2 TB a day over its machines.
        for (ps, bytes) in ps_bytes {
            let Some(err) = repl::process_server_churn(bytes, to.saturating_sub(from), to) else {
                continue;
            };
            for id in ps_items.remove(&ps).unwrap_or_default() {
                self.tx(|t| {
                    let mut cur = t.get::<ReplicatedItem>(&id)?;
                    cur.properties.health_errors.push(err.clone());
                    cur.properties.replication_health = "Critical".into();
                    t.update(&mut cur)
                })?;
            }
        }
        Ok(sum)
    }

    fn item_policy(&mut self, it: &Resource<ReplicatedItem>) -> Result<Policy> {
        let p = self.tx(|t| t.find::<ReplicationPolicy>(&it.properties.policy_id))?;
        Ok(p.map(|p| policy_of(&p.properties)).unwrap_or_default())
    }
}

/// A recovery point as the service lists it (`replicationProtectedItems/…/recoveryPoints`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointView {
    /// Its id.
    pub id: String,
    /// Its name (`rp-SEQ` of the first disk).
    pub name: String,
    /// `recoveryPointTime`.
    pub recovery_point_time: String,
    /// `CrashConsistent` or `ApplicationConsistent`.
    pub recovery_point_type: &'static str,
    /// `isMultiVmSyncPoint`, as the service spells it (`"True"`/`"False"`).
    pub is_multi_vm_sync_point: &'static str,
    /// Whether every disk's point is processed (Latest processed can pick it).
    pub processed: bool,
    /// Whether every disk's point carries its digest (the build is verified against it).
    pub verifiable: bool,
}

/// What `points list --item` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemPoints {
    /// The item.
    pub item: String,
    /// The points in retention, oldest first: those every disk holds.
    pub points: Vec<RecoveryPointView>,
    /// Why later points are unavailable (a defect), if they are.
    pub defects: Vec<String>,
    /// Points pruned by retention (on the first disk).
    pub pruned: usize,
}

impl Site {
    /// The recovery points of an item: crash-consistent every 5 minutes, app-consistent at the
    /// policy's frequency, within retention; a point of a machine with several disks is one
    /// every disk holds.
    ///
    /// # Errors
    /// No such item, or a replica cannot be read.
    pub fn recovery_points(&mut self, item: &str) -> Result<ItemPoints> {
        let it = self.item(item)?;
        let policy = self.item_policy(&it)?;
        let mut cats = Vec::new();
        for d in &it.properties.replication {
            let disk = crate::recovery::ProtectedDisk::from_replica(
                &self.dir.join(&d.replica_dir),
                false,
            )?
            .with_policy(policy)?;
            cats.push(disk.catalog());
        }
        let mut out = ItemPoints {
            item: it.properties.friendly_name.clone(),
            points: Vec::new(),
            defects: cats.iter().filter_map(|c| c.defect.clone()).collect(),
            pruned: cats.first().map_or(0, |c| c.pruned.len()),
        };
        let Some(first) = cats.first() else {
            return Ok(out);
        };
        for p in &first.points {
            let same: Vec<_> = cats
                .iter()
                .filter_map(|c| c.points.iter().find(|q| q.time_ms == p.time_ms))
                .collect();
            if same.len() != cats.len() {
                continue;
            }
            out.points.push(RecoveryPointView {
                id: format!("{}/recoveryPoints/{}", it.id, p.id),
                name: p.id.to_string(),
                recovery_point_time: p.time.clone(),
                recovery_point_type: match p.consistency {
                    crate::journal::Consistency::App => "ApplicationConsistent",
                    crate::journal::Consistency::Crash => "CrashConsistent",
                },
                is_multi_vm_sync_point: if p.multi_vm.is_some() {
                    "True"
                } else {
                    "False"
                },
                processed: same.iter().all(|q| q.processed),
                verifiable: same.iter().all(|q| q.digest.is_some()),
            });
        }
        Ok(out)
    }
}

/// The recovery library's policy for a Site Recovery policy.
pub fn policy_of(p: &ReplicationPolicy) -> Policy {
    let d = &p.provider_specific_details;
    Policy {
        retention_ms: d.recovery_point_history.max(60) * 60_000,
        app_frequency_ms: d.app_consistent_frequency_in_minutes * 60_000,
        crash_interval_ms: 5 * 60_000,
        rpo_threshold_ms: d.recovery_point_threshold_in_minutes * 60_000,
    }
}

fn add_protectable(
    t: &Tx<'_>,
    container: &str,
    name: &str,
    ip: &str,
    os_type: &str,
    instance: Option<String>,
) -> Result<Resource<ProtectableItem>> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::argument(format!("machine name {name:?}")));
    }
    let id = format!("{container}/replicationProtectableItems/{name}");
    if t.exists(&id)? {
        return Err(Error::conflict(format!("machine {name} was added already")));
    }
    if t.list::<ProtectableItem>(Some(container))?
        .iter()
        .any(|p| p.properties.ip_address == ip)
    {
        return Err(Error::conflict(format!(
            "a machine with IP address {ip} was added already"
        )));
    }
    t.insert(
        &id,
        Some(container),
        &ProtectableItem {
            friendly_name: name.to_string(),
            ip_address: ip.to_string(),
            os_type: os_type.to_string(),
            protection_status: "Unprotected".into(),
            instance_id: instance.unwrap_or_default(),
            supported_replication_providers: vec!["InMageAzureV2".into()],
        },
    )
}

fn find_machine(t: &Tx<'_>, name: &str) -> Result<Resource<ProtectableItem>> {
    t.list::<ProtectableItem>(None)?
        .into_iter()
        .find(|p| p.id == name || p.name == name || p.properties.friendly_name == name)
        .ok_or_else(|| {
            Error::not_found(format!(
                "no machine {name} (add it with `ec2azure machine add` or `machine discover`)"
            ))
        })
}

/// A replicated item by name or id.
///
/// # Errors
/// There is none.
pub fn find_item(t: &Tx<'_>, name: &str) -> Result<Resource<ReplicatedItem>> {
    t.list::<ReplicatedItem>(None)?
        .into_iter()
        .find(|p| p.id == name || p.name == name || p.properties.friendly_name == name)
        .ok_or_else(|| Error::not_found(format!("no replicated item {name}")))
}

/// The transition `op` takes from the item's state, or the refusal naming the state and what
/// it allows.
///
/// # Errors
/// The state does not allow `op` (NotAllowed).
pub fn allowed(it: &Resource<ReplicatedItem>, op: Operation) -> Result<super::states::Transition> {
    let s = it.properties.state;
    s.transition(op).ok_or_else(|| {
        let ops: Vec<&str> = s.allowed().iter().map(|o| o.as_str()).collect();
        Error::not_allowed(format!(
            "{} is {} ({}): {op} is not allowed; allowed operations: {}",
            it.properties.friendly_name,
            s.service().protection_state,
            s.service().description,
            if ops.is_empty() {
                "none (a job is running)".to_string()
            } else {
                ops.join(", ")
            }
        ))
    })
}

/// The facts of a machine for the checks. The OS disk's boot layout is read from its volume's
/// newest completed snapshot, else a new one.
fn machine_facts(
    t: &Tx<'_>,
    e: &Estate,
    p: &Resource<ProtectableItem>,
    account: Option<&str>,
    guests: &[GuestSpec],
) -> Result<MachineFacts> {
    let f = t.get::<Fabric>(
        p.parent
            .as_deref()
            .and_then(|c| c.split("/replicationProtectionContainers/").next())
            .unwrap_or(""),
    )?;
    let ps = f.properties.process_servers.first();
    let ps_ip = ps
        .map(|s| s.ip_address.as_str())
        .unwrap_or("0.0.0.0")
        .parse()
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let ps_up = ps.is_some_and(|s| s.ps_service_status == "Running");
    let reach = |port: u16| ps_up && ps.is_some_and(|s| s.reachable_ports.contains(&port));
    let os_type = if p.properties.os_type == "Windows" {
        OsType::Windows
    } else {
        OsType::Linux
    };
    let instance = if p.properties.instance_id.is_empty() {
        None
    } else {
        Some(find_instance(e.ec2.as_ref(), &p.properties.instance_id)?)
    };
    let guest = instance.as_ref().and_then(|i| guest_of(guests, i));
    let account = account.and_then(|a| {
        f.properties
            .run_as_accounts
            .iter()
            .find(|r| r.account_name == a)
    });
    let push = account.map(|a| match os_type {
        OsType::Linux => PushAccount::Linux {
            user: a.user_name.clone(),
            is_root: a.user_name == "root",
        },
        OsType::Windows => {
            let (domain, user) = match a.user_name.split_once('\\') {
                Some((d, u)) => (Some(d.to_string()), u.to_string()),
                None => (None, a.user_name.clone()),
            };
            let admins = guest
                .and_then(|g| g.admin_users.clone())
                .unwrap_or_else(|| vec!["Administrator".into()]);
            PushAccount::Windows {
                is_admin: a.domain || admins.iter().any(|x| x.eq_ignore_ascii_case(&user)),
                user,
                domain,
                local_account_token_filter_policy: guest
                    .is_some_and(|g| g.local_account_token_filter_policy),
            }
        }
    });
    let mut facts = MachineFacts {
        name: p.properties.friendly_name.clone(),
        os_type,
        os_name: guest
            .and_then(|g| g.os_name.clone())
            .or_else(|| instance.as_ref().and_then(|i| i.platform_details.clone()))
            .unwrap_or_default(),
        architecture: CArch::X86_64,
        virtualization_type: CVirt::Hvm,
        pv_drivers: guest.map(|g| g.pv_drivers.clone()).unwrap_or_default(),
        boot_mode: CBoot::Unknown,
        disks: Vec::new(),
        account: push,
        network: NetworkFacts {
            ingress: Vec::new(),
            process_server_ip: ps_ip,
            process_server_reachable_443: reach(443),
            process_server_reachable_9443: reach(9443),
        },
    };
    let Some(i) = instance else {
        return Ok(facts);
    };
    let image = e
        .ec2
        .describe_images(std::slice::from_ref(&i.image_id))
        .ok()
        .and_then(|mut v| v.pop());
    facts.architecture = match i.architecture.as_str() {
        "arm64" => CArch::Arm64,
        "i386" => CArch::I386,
        _ => CArch::X86_64,
    };
    facts.virtualization_type = match i
        .virtualization
        .or_else(|| image.as_ref().and_then(|m| m.virtualization))
    {
        Some(ec2::Virtualization::Paravirtual) => CVirt::Paravirtual,
        _ => CVirt::Hvm,
    };
    facts.boot_mode = match effective_boot_mode(&i, image.as_ref()) {
        ec2::BootMode::LegacyBios => CBoot::LegacyBios,
        ec2::BootMode::Uefi | ec2::BootMode::UefiPreferred => CBoot::Uefi,
        ec2::BootMode::Unknown => CBoot::Unknown,
    };
    if !i.security_group_ids.is_empty() {
        for g in e.ec2.describe_security_groups(&i.security_group_ids)? {
            for r in g.ingress {
                facts.network.ingress.push(CIngress {
                    protocol: match r.protocol {
                        Protocol::All => "-1".into(),
                        ref p => p.as_ec2().to_string(),
                    },
                    from_port: r.from_port,
                    to_port: r.to_port,
                    sources: r.cidrs.clone(),
                });
            }
        }
    }
    let ids: Vec<String> = i
        .block_devices
        .iter()
        .map(|b| b.volume_id.clone())
        .collect();
    let volumes = if ids.is_empty() {
        Vec::new()
    } else {
        e.ec2.describe_volumes(&ids)?
    };
    let root = i.root_device_name.clone();
    for b in &i.block_devices {
        let Some(v) = volumes.iter().find(|v| v.id == b.volume_id) else {
            continue;
        };
        let is_os = root.as_deref() == Some(b.device.as_str())
            || (root.is_none() && b == &i.block_devices[0]);
        let boot = if is_os {
            read_boot(e, &os_snapshot(e, v)?)?
        } else {
            DiskBoot::None
        };
        let four_k = guest.is_some_and(|g| g.sector_4k.contains(&b.device));
        facts.disks.push(DiskFacts {
            name: b.device.clone(),
            size_bytes: v.size_gib << 30,
            logical_sector_size: if four_k { 4096 } else { 512 },
            physical_sector_size: if four_k { 4096 } else { 512 },
            is_os_disk: is_os,
            boot,
        });
    }
    Ok(facts)
}

/// A readable snapshot of `v`: its newest completed one, else a new one.
fn os_snapshot(e: &Estate, v: &ec2::Volume) -> Result<String> {
    let newest = e
        .ec2
        .describe_snapshots(&[])?
        .into_iter()
        .filter(|s| s.volume_id.as_deref() == Some(v.id.as_str()))
        .filter(|s| s.state == Some(ec2::SnapshotState::Completed))
        .max_by_key(|s| s.start_time_ms);
    let created = match newest {
        Some(s) => s.id,
        None => {
            e.ec2
                .create_snapshot(&v.id, "ec2azure: boot layout check")?
                .id
        }
    };
    Ok(readable_snapshot(e.ebs.as_ref(), v, &created))
}

fn read_boot(e: &Estate, snapshot: &str) -> Result<DiskBoot> {
    let disk = EbsSnapshot::open(e.ebs.clone(), snapshot, RetryPolicy::default())?;
    disk_boot(&disk)
}

/// The boot layout of a disk, as the checks see it.
///
/// # Errors
/// The disk cannot be read.
pub fn disk_boot(disk: &dyn DiskImage) -> Result<DiskBoot> {
    use crate::image::partition::BootLayout;
    let table = crate::image::partition::read(disk)?;
    Ok(match table.boot_layout() {
        BootLayout::Mbr => DiskBoot::Mbr {
            boot_signature: true,
        },
        BootLayout::GptWithEsp => DiskBoot::GptWithEsp,
        BootLayout::GptWithoutEsp => DiskBoot::GptWithoutEsp,
        BootLayout::None => match table.mbr {
            Some(m) if m.entries.iter().any(|p| p.kind != 0) => DiskBoot::Mbr {
                boot_signature: false,
            },
            _ => DiskBoot::None,
        },
    })
}

fn site_facts(
    t: &Tx<'_>,
    p: &Resource<ProtectableItem>,
    target: &TargetFacts,
    support: super::support::SupportMatrix,
) -> Result<SiteFacts> {
    let v = the_vault(t)?;
    let container = p.parent.clone().unwrap_or_default();
    Ok(SiteFacts {
        now_ms: now_ms(t)?,
        registration_key_expires_ms: v.properties.registration_key.map(|k| k.expires_ms),
        configuration_server_registered: true,
        policy_associated: t
            .list::<ContainerMapping>(Some(&container))?
            .iter()
            .any(|m| !m.name.ends_with("-failback-mapping")),
        target: target.clone(),
        support,
    })
}

/// The checks a task runs (the Enable protection prerequisites, or the push install's).
const PUSH_CHECKS: [&str; 3] = [
    "push-install-account",
    "push-install-ports",
    "process-server-ports",
];

/// The first failed check as a job error.
/// The first failed check of the step as the job's error; its message names the others that
/// failed too.
fn first_failure(results: &[CheckResult], push: bool) -> Option<super::jobs::JobError> {
    let failed: Vec<&CheckResult> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .filter(|r| PUSH_CHECKS.contains(&r.name.as_str()) == push)
        .collect();
    let r = failed.first()?;
    let others: Vec<String> = failed[1..]
        .iter()
        .map(|o| format!("{} ({})", o.name, o.message))
        .collect();
    let message = if others.is_empty() {
        r.message.clone()
    } else {
        format!("{}; also failed: {}", r.message, others.join("; "))
    };
    Some(job_error(
        &r.error_id.map_or_else(|| r.name.clone(), |i| i.to_string()),
        &message,
        &r.possible_causes,
        &r.recommended_action,
    ))
}

fn replica_rel(item: &str, n: usize) -> (PathBuf, PathBuf) {
    let name = item.rsplit('/').next().unwrap_or(item);
    (
        Path::new("replicas").join(name).join(n.to_string()),
        Path::new("source").join(name).join(n.to_string()),
    )
}

/// A disk's workload seed: its item and index, hashed (the site's seed is mixed in).
fn disk_seed(item: &str, n: usize) -> u64 {
    let d = crate::digest::sha256(format!("{item}/{n}").as_bytes());
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The work of protection tasks.
pub fn task_work(
    site: &mut Site,
    job: &Resource<Job>,
    _i: usize,
    name: &str,
    progress: &dyn Progress,
) -> TaskResult {
    let item_id = job.properties.target_object_id.clone();
    match name {
        "EnablePrerequisites" | "InstallMobilityService" => {
            let req: EnableRequest = serde_json::from_value(
                job.properties
                    .input
                    .get("request")
                    .cloned()
                    .unwrap_or_default(),
            )
            .map_err(|e| Error::invalid(format!("the job's request: {e}")))?;
            let guests = site.guests()?;
            let support = site.support()?;
            let target = TargetFacts {
                storage_account: req.storage_account.clone(),
                vm_name: req.vm_name.clone(),
            };
            let results = site.with_estate(|t, e| {
                let it = t.get::<ReplicatedItem>(&item_id)?;
                let p = t.get::<ProtectableItem>(&it.properties.protectable_item_id)?;
                if name == "EnablePrerequisites" && !p.properties.instance_id.is_empty() {
                    // The machine must exist before anything else is checked.
                    find_instance(e.ec2.as_ref(), &p.properties.instance_id)?;
                }
                let facts = machine_facts(t, e, &p, Some(&req.account), &guests)?;
                let sf = site_facts(t, &p, &target, support.clone())?;
                Ok((checks::check_machine(&facts, &sf), facts))
            })?;
            let (results, facts) = results;
            let push = name == "InstallMobilityService";
            if !push && facts.disks.is_empty() {
                return Ok(Err(job_error(
                    "95117",
                    &format!(
                        "No EC2 instance has the IP address {}: the machine cannot be reached.",
                        facts.network.process_server_ip
                    ),
                    "The IP address given for the machine is wrong, or the machine is off.",
                    "Add the machine with its private IP address.",
                )));
            }
            if let Some(e) = first_failure(&results, push) {
                return Ok(Err(e));
            }
            let mut out = TaskOutput::new();
            out.insert(
                "checks".into(),
                serde_json::to_value(&results).unwrap_or_default(),
            );
            if !push {
                out.insert(
                    "diskBytes".into(),
                    facts.disks.iter().map(|d| d.size_bytes).sum::<u64>().into(),
                );
                let generation = checks::azure_vm_generation(&facts);
                site.tx(|t| {
                    let mut it = t.get::<ReplicatedItem>(&item_id)?;
                    it.properties.azure_vm_generation = if generation == checks::Generation::V2 {
                        "2"
                    } else {
                        "1"
                    }
                    .into();
                    it.properties.firmware_type = if generation == checks::Generation::V2 {
                        "UEFI"
                    } else {
                        "BIOS"
                    }
                    .into();
                    t.update(&mut it)
                })?;
            }
            Ok(Ok(out))
        }
        "InitialReplication" => initial_replication(site, &item_id, progress),
        "FinalizePrerequisites" | "FinalizeProtection" => Ok(Ok(TaskOutput::new())),
        "DisableProtection" => {
            let keep = job
                .properties
                .input
                .get("keepReplica")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if !keep {
                let name = item_id.rsplit('/').next().unwrap_or(&item_id).to_string();
                for d in ["replicas", "source"] {
                    let p = site.dir().join(d).join(&name);
                    if p.exists() {
                        std::fs::remove_dir_all(&p)
                            .map_err(|e| Error::io("removing the replica", e).with_path(&p))?;
                    }
                }
            }
            Ok(Ok(TaskOutput::new()))
        }
        name if super::failover::TASKS.contains(&name) => {
            super::failover::task_work(site, job, _i, name, progress)
        }
        _ => Err(Error::invalid(format!("no work is known for task {name}"))),
    }
}

fn initial_replication(site: &mut Site, item_id: &str, progress: &dyn Progress) -> TaskResult {
    let it = site.tx(|t| t.get::<ReplicatedItem>(item_id))?;
    let policy = site.item_policy(&it)?;
    let seed = site.config.seed;
    let guests = site.guests()?;
    // Snapshot every volume at one point in time.
    let (instance, snaps) = site.with_estate(|_, e| {
        let i = find_instance(e.ec2.as_ref(), &it.properties.instance_id)?;
        let created = e
            .ec2
            .create_snapshots(&i.id, "ec2azure: Site Recovery initial replication")?;
        let ids: Vec<String> = i
            .block_devices
            .iter()
            .map(|b| b.volume_id.clone())
            .collect();
        let volumes = e.ec2.describe_volumes(&ids)?;
        let mut snaps = Vec::new();
        for b in &i.block_devices {
            let Some(v) = volumes.iter().find(|v| v.id == b.volume_id) else {
                continue;
            };
            let Some(s) = created
                .iter()
                .find(|s| s.volume_id.as_deref() == Some(v.id.as_str()))
            else {
                continue;
            };
            snaps.push((
                b.device.clone(),
                v.id.clone(),
                v.size_gib,
                readable_snapshot(e.ebs.as_ref(), v, &s.id),
            ));
        }
        Ok((i, snaps))
    })?;
    let guest = guest_of(&guests, &instance).cloned().unwrap_or_default();
    let ebs = site.with_estate(|_, e| Ok(e.ebs.clone()))?;
    let now = site.now_ms()?;
    let mut disks = Vec::new();
    let mut details = Vec::new();
    let mut out = TaskOutput::new();
    let mut read_ms = 0u64;
    let mut bytes = 0u64;
    // The machines of a multi-VM group take their points together: their workloads' points
    // follow one grid (the crash-consistent interval from the epoch), so a group's machines
    // share each multi-VM point's time as well as its tag.
    let origin = if it.properties.multi_vm_group_name.is_some() && policy.crash_interval_ms > 0 {
        now - now % policy.crash_interval_ms
    } else {
        now
    };
    for (n, (device, volume, size_gib, snap)) in snaps.iter().enumerate() {
        let image = EbsSnapshot::open(ebs.clone(), snap, RetryPolicy::default())?;
        let (replica_rel, source_rel) = replica_rel(item_id, n);
        let spec = repl::WorkloadSpec {
            seed: seed ^ disk_seed(item_id, n),
            write_rate: guest.workload.write_rate,
            hot_fraction: guest.workload.hot_fraction,
            zero_fraction: guest.workload.zero_fraction,
            max_write: guest.workload.max_write,
            multi_vm_group: it.properties.multi_vm_group_name.clone(),
            ..repl::WorkloadSpec::default()
        };
        let (state, report) = repl::initial_replication(
            &image,
            volume,
            &site.dir().join(&replica_rel),
            &site.dir().join(&source_rel),
            policy,
            Some(spec),
            origin,
            progress,
        )?;
        read_ms += report.wall.snapshot_read_ms;
        bytes += report.replica_bytes;
        let mut state = state;
        state.replica_dir = replica_rel.clone();
        state.source_dir = source_rel;
        disks.push(state);
        details.push(ProtectedDiskDetails {
            disk_id: volume.clone(),
            disk_name: device.clone(),
            disk_capacity_in_bytes: size_gib << 30,
            is_os_disk: instance.root_device_name.as_deref() == Some(device.as_str())
                || (instance.root_device_name.is_none() && n == 0),
            protection_stage: "Protected".into(),
            rpo_in_seconds: Some(0),
            replica: replica_rel.display().to_string(),
        });
    }
    out.insert(
        "snapshots".into(),
        serde_json::to_value(&snaps).unwrap_or_default(),
    );
    out.insert("replicaBytes".into(), bytes.into());
    out.insert("snapshotReadWallMs".into(), read_ms.into());
    site.tx(|t| {
        let mut it = t.get::<ReplicatedItem>(item_id)?;
        it.properties.replication = disks;
        it.properties.protected_disks = details;
        it.properties.last_recovery_point_received_ms = Some(now);
        it.properties.rpo_in_seconds = Some(0);
        it.properties.last_rpo_calculated_ms = Some(now);
        it.properties.replication_health = "Normal".into();
        t.update(&mut it)
    })?;
    Ok(Ok(out))
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
    let scenario = job
        .properties
        .input
        .get("restartedScenario")
        .and_then(|s| s.as_str())
        .unwrap_or(&job.properties.scenario_name)
        .to_string();
    if scenario == "EnableDr" && item.properties.state == ItemState::InitialReplicationInProgress {
        let v = the_vault(t)?;
        let now = now_ms(t)?;
        let cfg: super::SiteConfig = t
            .setting("site")?
            .ok_or_else(|| Error::invalid("the site has no settings"))?;
        // Initial replication is modelled to copy the disks at a fixed rate: their sizes
        // come from the prerequisites check's facts.
        let sizes: u64 = job
            .properties
            .tasks
            .iter()
            .filter_map(|t| t.output.get("diskBytes"))
            .filter_map(|v| v.as_u64())
            .sum();
        let mut fin = Job::new(
            "FinalizeProtection",
            "Finalize protection",
            (&item.id, &item.properties.friendly_name, "ProtectionEntity"),
            &[
                ("InitialReplication", "Initial replication"),
                (
                    "FinalizePrerequisites",
                    "Prerequisites check for finalizing protection",
                ),
                ("FinalizeProtection", "Finalizing protection"),
            ],
            &cfg.durations,
            now,
        );
        fin.tasks[0].duration_ms += sizes * 1000 / super::jobs::INITIAL_REPLICATION_RATE;
        start_job(
            t,
            cfg.seed,
            &v.id,
            fin,
            ItemEffect {
                item: Some(item.id.clone()),
                on_running: Some(ItemState::InitialReplicationInProgress),
                on_succeeded: Some(ItemState::Protected),
                remove_on_success: false,
                on_failed: Some(ItemState::InitialReplicationFailed),
            },
        )?;
    }
    Ok(())
}

/// Changes machine `name`'s history (made when missing).
///
/// # Errors
/// The store cannot be written.
pub fn history_mut(t: &Tx<'_>, name: &str, f: impl FnOnce(&mut ItemHistory)) -> Result<()> {
    let v = the_vault(t)?;
    let id = ItemHistory::id(&v.id, name);
    match t.find::<ItemHistory>(&id)? {
        Some(mut h) => {
            f(&mut h.properties);
            t.update(&mut h)
        }
        None => {
            let mut h = ItemHistory {
                friendly_name: name.to_string(),
                ..ItemHistory::default()
            };
            f(&mut h);
            t.insert(&id, Some(&v.id), &h).map(|_| ())
        }
    }
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

/// Removes what a killed process left of task `i`: a half-made initial replication's files;
/// a failover's processing: its staged VHDs, the page blobs and managed disks made from them
/// (every one named after the job, `…-{job}` and `{job}-N.vhd`).
///
/// # Errors
/// Files, blobs or disks cannot be removed.
pub fn cleanup_task(site: &mut Site, job: &Resource<Job>, i: usize) -> Result<()> {
    if job.properties.tasks[i].name == "FailoverProcessing" {
        let short = job.name.split('-').next().unwrap_or(&job.name).to_string();
        let staging = site.dir().join("staging");
        if let Ok(rd) = std::fs::read_dir(&staging) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!("{short}-")) {
                    std::fs::remove_file(e.path()).map_err(|err| {
                        Error::io("removing a staged failover disk", err).with_path(e.path())
                    })?;
                }
            }
        }
        let item = site.tx(|t| t.find::<ReplicatedItem>(&job.properties.target_object_id))?;
        if let Some(it) = item {
            let account = it
                .properties
                .target
                .storage_account_id
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let store = super::azure::storage::account_blobs(&site.dir().join("blobs"), &account);
            let ours = |n: &str| n.ends_with(&format!("-{short}.vhd"));
            for b in store
                .list(super::failover::CONTAINER)
                .unwrap_or_default()
                .into_iter()
                .filter(|b| ours(b))
            {
                let name = crate::cloud::pageblob::BlobName::new(super::failover::CONTAINER, &b);
                store.delete(&name).map_err(|e| {
                    Error::io(
                        format!("removing the half-made failover blob {b}"),
                        std::io::Error::other(e.to_string()),
                    )
                })?;
            }
            site.tx(|t| {
                for d in t.list::<super::azure::compute::ManagedDisk>(None)? {
                    if d.name.ends_with(&format!("-{short}")) {
                        t.delete(&d.id)?;
                    }
                }
                Ok(())
            })?;
        }
    }
    if job.properties.tasks[i].name == "InitialReplication" {
        let id = &job.properties.target_object_id;
        let name = id.rsplit('/').next().unwrap_or(id);
        for d in ["replicas", "source"] {
            let p = site.dir().join(d).join(name);
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .map_err(|e| Error::io("removing a partial replica", e).with_path(&p))?;
            }
        }
    }
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
        return Err(Error::not_allowed(format!(
            "{} is {}; job {} cannot be restarted from there",
            it.properties.friendly_name,
            it.properties.state.service().protection_state,
            old.name
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_push_checks_are_checks() {
        for c in super::PUSH_CHECKS {
            assert!(super::checks::CHECK_NAMES.contains(&c), "{c}");
        }
    }
}
