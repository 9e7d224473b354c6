//! Site Recovery's objects as the site keeps them, named and spelled as the service's REST API
//! (`Microsoft.RecoveryServices/vaults/…`, asr-model.md §1): the vault, the configuration
//! server (a fabric with its process server and run-as accounts), its protection container,
//! replication policies and their container mappings, protectable and replicated items. Jobs are
//! in [`super::jobs`]; the Azure side's resources in [`super::azure`].
//!
//! Field names are camelCase as the service's JSON, so a user can hold `--json` output beside
//! the service's.

use super::states::{ItemState, Operation};
use super::store::Kind;
use serde::{Deserialize, Serialize};

/// A Recovery Services vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    /// Azure region.
    pub location: String,
    /// `Standard`.
    pub sku: String,
    /// The registration key issued last, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_key: Option<RegistrationKey>,
}

impl Kind for Vault {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults";
}

/// What the vault remembers of the registration key it issued (never the key itself: its
/// SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationKey {
    /// When it was issued (simulated time, ms).
    pub issued_ms: u64,
    /// When it stops being accepted: five days later.
    pub expires_ms: u64,
    /// SHA-256 of the key, hex.
    pub key_sha256: String,
}

/// A process server (on the configuration server, or scaled out).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessServer {
    /// Its name.
    pub friendly_name: String,
    /// Its id.
    pub id: String,
    /// Its IP address (the push install and the data come from here).
    pub ip_address: String,
    /// `Running` or `Stopped` (an outage).
    pub ps_service_status: String,
    /// `Normal`, `Warning` or `Critical`.
    pub health: String,
    /// The last heartbeat (simulated ms).
    pub last_heartbeat_ms: u64,
    /// Whether the source machines reach it on 443 (control) and 9443 (data).
    pub reachable_ports: Vec<u16>,
}

/// A run-as account the push install uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunAsAccount {
    /// Its id.
    pub account_id: String,
    /// Its friendly name (`LinuxAccount`, `WindowsAccount`).
    pub account_name: String,
    /// The user name it logs in as (`root`, `Administrator`, `DOMAIN\user`).
    pub user_name: String,
    /// A domain account (Windows).
    #[serde(default)]
    pub domain: bool,
}

/// A configuration server: Site Recovery's fabric for VMware and physical machines.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fabric {
    /// Its name.
    pub friendly_name: String,
    /// `VMware` (the fabric type of configuration servers).
    pub fabric_type: String,
    /// The EC2 instance it runs on.
    pub instance_id: String,
    /// Its host name.
    pub host_name: String,
    /// Its IP address.
    pub ip_address: String,
    /// The Mobility/agent version.
    pub agent_version: String,
    /// Its process servers.
    pub process_servers: Vec<ProcessServer>,
    /// Its run-as accounts.
    pub run_as_accounts: Vec<RunAsAccount>,
    /// When it registered (simulated ms).
    pub registered_ms: u64,
    /// `Normal`.
    pub health: String,
}

impl Kind for Fabric {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults/replicationFabrics";
}

/// A protection container (one per configuration server).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionContainer {
    /// Its name.
    pub friendly_name: String,
    /// The fabric's name.
    pub fabric_friendly_name: String,
    /// `VMware`.
    pub fabric_type: String,
    /// `Paired` once a policy is associated, else `NotPaired`.
    pub pairing_status: String,
    /// `Primary`.
    pub role: String,
}

impl Kind for ProtectionContainer {
    const TYPE: &'static str =
        "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers";
}

/// A replication policy's InMageAzureV2 settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDetails {
    /// Retention of recovery points, minutes (0 to 21,600: 15 days).
    pub recovery_point_history: u64,
    /// App-consistent snapshot frequency, minutes (0, or 60 to 720).
    pub app_consistent_frequency_in_minutes: u64,
    /// The RPO threshold that raises an alert, minutes.
    pub recovery_point_threshold_in_minutes: u64,
    /// Crash-consistent frequency, minutes: 5.
    pub crash_consistent_frequency_in_minutes: u64,
    /// Multi-VM consistency (`Enable`/`Disable`).
    pub multi_vm_sync_status: MultiVmSync,
}

/// Multi-VM consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiVmSync {
    /// On.
    Enable,
    /// Off.
    Disable,
}

/// A replication policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPolicy {
    /// Its name.
    pub friendly_name: String,
    /// `InMageAzureV2` (forward) or `InMage` (the failback policy made with it).
    pub instance_type: String,
    /// Its settings.
    pub provider_specific_details: PolicyDetails,
}

impl Kind for ReplicationPolicy {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults/replicationPolicies";
}

/// A policy associated with a protection container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerMapping {
    /// The policy.
    pub policy_id: String,
    /// The policy's name.
    pub policy_friendly_name: String,
    /// `Microsoft Azure`.
    pub target_protection_container_id: String,
    /// `Paired`.
    pub state: String,
    /// `Normal`.
    pub health: String,
}

impl Kind for ContainerMapping {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectionContainerMappings";
}

/// A machine Site Recovery can protect (discovered, or added by name, IP and OS type).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectableItem {
    /// Its name.
    pub friendly_name: String,
    /// Its IP address.
    pub ip_address: String,
    /// `Windows` or `Linux`.
    pub os_type: String,
    /// `Unprotected` or `Protected`.
    pub protection_status: String,
    /// The EC2 instance it is (matched by private IP).
    pub instance_id: String,
    /// `InMageAzureV2`.
    pub supported_replication_providers: Vec<String>,
}

impl Kind for ProtectableItem {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectableItems";
}

/// A health error (asr-model.md §1.10), as replication computes it.
pub use super::replication::HealthError;

/// One replicated disk of an item.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedDiskDetails {
    /// The EBS volume.
    pub disk_id: String,
    /// Its device name on the instance.
    pub disk_name: String,
    /// Its size.
    pub disk_capacity_in_bytes: u64,
    /// The OS disk.
    pub is_os_disk: bool,
    /// `Protected`, `InitialReplicationPending`, …
    pub protection_stage: String,
    /// Its RPO.
    pub rpo_in_seconds: Option<u64>,
    /// The replica's directory, relative to the site.
    pub replica: String,
}

/// A replicated (protected) item: `replicationProtectedItems`, with the InMageAzureV2 details.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedItem {
    /// The machine's name.
    pub friendly_name: String,
    /// The protectable item it was enabled from.
    pub protectable_item_id: String,
    /// The EC2 instance.
    pub instance_id: String,
    /// The state (the service's fields are derived from it).
    pub state: ItemState,
    /// The policy.
    pub policy_id: String,
    /// The policy's name.
    pub policy_friendly_name: String,
    /// The process server.
    pub process_server_id: String,
    /// The run-as account.
    pub run_as_account_id: String,
    /// Target storage account, resource group, network and subnet.
    pub target: ReplicationTarget,
    /// `Normal`, `Warning` or `Critical`.
    pub replication_health: String,
    /// Its health errors.
    pub health_errors: Vec<HealthError>,
    /// The RPO, seconds.
    pub rpo_in_seconds: Option<u64>,
    /// When the RPO was last computed (simulated ms).
    pub last_rpo_calculated_ms: Option<u64>,
    /// When the last recovery point was received (simulated ms).
    pub last_recovery_point_received_ms: Option<u64>,
    /// The job running on it (`None` when idle).
    pub current_job_id: Option<String>,
    /// The scenario of that job.
    pub current_scenario: Option<String>,
    /// When that job started.
    pub current_scenario_start_ms: Option<u64>,
    /// The disks.
    pub protected_disks: Vec<ProtectedDiskDetails>,
    /// `BIOS` or `UEFI`, read from the disk.
    pub firmware_type: String,
    /// `1` or `2`.
    pub azure_vm_generation: String,
    /// `Windows` or `Linux`.
    pub os_type: String,
    /// The source's IP.
    pub ip_address: String,
    /// The source's vCPUs.
    pub source_vm_cpu_count: u32,
    /// The source's memory.
    pub source_vm_ram_size_in_mb: u64,
    /// The multi-VM group, when multi-VM consistency is on.
    pub multi_vm_group_name: Option<String>,
    /// The last successful test failover (simulated ms).
    pub last_successful_test_failover_ms: Option<u64>,
    /// The last successful failover (simulated ms).
    pub last_successful_failover_ms: Option<u64>,
    /// The point the item failed over to.
    pub failover_recovery_point_id: Option<String>,
    /// The Azure VM a failover made.
    pub target_vm_id: Option<String>,
    /// The replication state of each disk (replica, source-side journal, workload).
    #[serde(default)]
    pub replication: Vec<super::replication::DiskReplication>,
}

/// Where an item fails over to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationTarget {
    /// The resource group VMs are made in.
    pub resource_group_id: String,
    /// The storage account (cache and target).
    pub storage_account_id: String,
    /// The network.
    pub network_id: String,
    /// The subnet's name.
    pub subnet_name: String,
    /// The VM's name in Azure.
    pub vm_name: String,
}

impl Kind for ReplicatedItem {
    const TYPE: &'static str = "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectedItems";
}

impl ReplicatedItem {
    /// The operations the item allows now.
    pub fn allowed_operations(&self) -> &'static [Operation] {
        self.state.allowed()
    }
}

/// The service's view of an item (what `replication status --json` prints).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemView<'a> {
    /// The machine.
    pub friendly_name: &'a str,
    /// `protectionState`.
    pub protection_state: &'static str,
    /// `protectionStateDescription`.
    pub protection_state_description: &'static str,
    /// `testFailoverState`.
    pub test_failover_state: &'static str,
    /// `activeLocation`.
    pub active_location: &'static str,
    /// `allowedOperations`.
    pub allowed_operations: &'static [Operation],
    /// `replicationHealth`.
    pub replication_health: &'a str,
    /// `healthErrors`.
    pub health_errors: &'a [HealthError],
    /// `currentScenario`.
    pub current_scenario: CurrentScenario,
    /// `policyFriendlyName`.
    pub policy_friendly_name: &'a str,
    /// `lastSuccessfulTestFailoverTime`.
    pub last_successful_test_failover_time: String,
    /// `lastSuccessfulFailoverTime`.
    pub last_successful_failover_time: String,
    /// `failoverRecoveryPointId`.
    pub failover_recovery_point_id: Option<&'a str>,
    /// The InMageAzureV2 details.
    pub provider_specific_details: ProviderView<'a>,
}

/// `currentScenario`: idle is `None`, job `…/replicationJobs/None`, 1753-01-01T01:01:01Z.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentScenario {
    /// The scenario.
    pub scenario_name: String,
    /// The job.
    pub job_id: String,
    /// When it started.
    pub start_time: String,
}

/// `providerSpecificDetails` (InMageAzureV2ReplicationDetails).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView<'a> {
    /// `InMageAzureV2`.
    pub instance_type: &'static str,
    /// `rpoInSeconds`.
    pub rpo_in_seconds: Option<u64>,
    /// `lastRpoCalculatedTime`.
    pub last_rpo_calculated_time: Option<String>,
    /// `lastRecoveryPointReceived`.
    pub last_recovery_point_received: Option<String>,
    /// `ipAddress`.
    pub ip_address: &'a str,
    /// `osType`.
    pub os_type: &'a str,
    /// `firmwareType`.
    pub firmware_type: &'a str,
    /// `azureVmGeneration`.
    pub azure_vm_generation: &'a str,
    /// `sourceVmCpuCount`.
    pub source_vm_cpu_count: u32,
    /// `sourceVmRamSizeInMB`.
    pub source_vm_ram_size_in_mb: u64,
    /// `multiVmGroupName`.
    pub multi_vm_group_name: Option<&'a str>,
    /// `discoveryType`.
    pub discovery_type: &'static str,
    /// `protectedDisks`.
    pub protected_disks: &'a [ProtectedDiskDetails],
    /// `targetVmId`.
    pub target_vm_id: Option<&'a str>,
    /// `recoveryAzureVMName`.
    #[serde(rename = "recoveryAzureVMName")]
    pub recovery_azure_vm_name: &'a str,
}

/// The service's "never" time.
pub const NEVER: &str = "1601-01-01T00:00:00.0000000Z";

fn time_or(ms: Option<u64>, never: &str) -> String {
    ms.map_or_else(|| never.to_string(), crate::clock::format_time)
}

impl ReplicatedItem {
    /// The service's view.
    pub fn view(&self, vault_id: &str) -> ItemView<'_> {
        let s = self.state.service();
        ItemView {
            friendly_name: &self.friendly_name,
            protection_state: s.protection_state,
            protection_state_description: s.description,
            test_failover_state: s.test_failover_state,
            active_location: s.active_location,
            allowed_operations: self.allowed_operations(),
            replication_health: &self.replication_health,
            health_errors: &self.health_errors,
            current_scenario: match (&self.current_scenario, &self.current_job_id) {
                (Some(sc), Some(j)) => CurrentScenario {
                    scenario_name: sc.clone(),
                    job_id: j.clone(),
                    start_time: time_or(self.current_scenario_start_ms, NEVER),
                },
                _ => CurrentScenario {
                    scenario_name: "None".into(),
                    job_id: format!("{vault_id}/replicationJobs/None"),
                    start_time: "1753-01-01T01:01:01Z".into(),
                },
            },
            policy_friendly_name: &self.policy_friendly_name,
            last_successful_test_failover_time: time_or(
                self.last_successful_test_failover_ms,
                NEVER,
            ),
            last_successful_failover_time: time_or(self.last_successful_failover_ms, NEVER),
            failover_recovery_point_id: self.failover_recovery_point_id.as_deref(),
            provider_specific_details: ProviderView {
                instance_type: "InMageAzureV2",
                rpo_in_seconds: self.rpo_in_seconds,
                last_rpo_calculated_time: self
                    .last_rpo_calculated_ms
                    .map(crate::clock::format_time),
                last_recovery_point_received: self
                    .last_recovery_point_received_ms
                    .map(crate::clock::format_time),
                ip_address: &self.ip_address,
                os_type: &self.os_type,
                firmware_type: &self.firmware_type,
                azure_vm_generation: &self.azure_vm_generation,
                source_vm_cpu_count: self.source_vm_cpu_count,
                source_vm_ram_size_in_mb: self.source_vm_ram_size_in_mb,
                multi_vm_group_name: self.multi_vm_group_name.as_deref(),
                discovery_type: "physical",
                protected_disks: &self.protected_disks,
                target_vm_id: self.target_vm_id.as_deref(),
                recovery_azure_vm_name: &self.target.vm_name,
            },
        }
    }
}

/// What a site keeps of a machine beyond its replicated item (which complete migration
/// removes): its RPO over time and its failovers, for reports. One per machine, at
/// `{vault}/ec2azureHistory/{machine}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemHistory {
    /// The machine.
    pub friendly_name: String,
    /// The RPO at the end of each replication span, oldest first (thinned to at most
    /// [`ItemHistory::MAX_SAMPLES`] by dropping every other sample when full).
    pub rpo: Vec<RpoSample>,
    /// Its test failovers, failovers and changes of recovery point, oldest first.
    pub failovers: Vec<FailoverRecord>,
}

impl Kind for ItemHistory {
    const TYPE: &'static str = "ec2azure/history";
}

impl ItemHistory {
    /// The most RPO samples kept.
    pub const MAX_SAMPLES: usize = 4096;

    /// The history's id for `machine` in vault `vault_id`.
    pub fn id(vault_id: &str, machine: &str) -> String {
        format!("{vault_id}/ec2azureHistory/{machine}")
    }

    /// Adds a sample (a later one at the same time replaces it).
    pub fn push_rpo(&mut self, s: RpoSample) {
        if let Some(last) = self.rpo.last_mut()
            && last.time_ms == s.time_ms
        {
            *last = s;
            return;
        }
        self.rpo.push(s);
        if self.rpo.len() > Self::MAX_SAMPLES {
            let mut i = 0;
            self.rpo.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
    }
}

/// The RPO at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpoSample {
    /// When (simulated ms).
    pub time_ms: u64,
    /// `rpoInSeconds` then (`None`: no point yet).
    pub rpo_in_seconds: Option<u64>,
    /// `replicationHealth` then.
    pub replication_health: String,
}

/// One test failover, failover or change of recovery point, as measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// The job.
    pub job_id: String,
    /// `TestFailover`, `UnplannedFailover` or `ChangePit`.
    pub scenario_name: String,
    /// The recovery plan it ran in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_plan: Option<String>,
    /// The point choice (`Latest`, `LatestProcessed`, `Custom`, …).
    pub choice: String,
    /// The point (`…/recoveryPoints/rp-N`).
    pub recovery_point_id: String,
    /// Its time (simulated ms).
    pub recovery_point_time_ms: u64,
    /// `CrashConsistent` or `ApplicationConsistent`.
    pub recovery_point_type: String,
    /// When the failover started (simulated ms).
    pub start_ms: u64,
    /// The source's last write before the failover (or its shutdown), simulated ms.
    pub last_source_write_ms: u64,
    /// Data lost: `last_source_write_ms` − the point's time.
    pub data_loss_ms: u64,
    /// When the VM was running (simulated ms).
    pub vm_running_ms: u64,
    /// RTO: from the failover's start to the VM running, processing included.
    pub rto_ms: u64,
    /// Wall-clock ms spent building the point's disks (and verifying them).
    pub build_wall_ms: u64,
    /// Wall-clock ms spent uploading them.
    pub upload_wall_ms: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// The VM.
    pub vm_id: String,
    /// Its size.
    pub vm_size: String,
    /// Its private IP.
    pub ip_address: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Whether the source was shut down first (`None`: not asked; `Some(false)`: it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_shut_down: Option<bool>,
    /// The verification: each check's name, whether it passed, and what was found.
    pub verification: Vec<Verification>,
    /// When cleaned up (test failovers), with the notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_up_ms: Option<u64>,
    /// The cleanup's notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_notes: Option<String>,
}

/// One verification of a failed-over VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// `size`, `network`, `running`, `disk` or `booted`.
    pub check: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was expected and found.
    pub detail: String,
}

impl FailoverRecord {
    /// Whether every verification passed.
    pub fn verified(&self) -> bool {
        !self.verification.is_empty() && self.verification.iter().all(|v| v.passed)
    }
}
