//! A rehearsal from one scenario file: the estate, the Azure side, the vault, configuration
//! server and policy, replication, simulated time with the workloads running, then the
//! scenario's steps (test failover, cleanup, failover, change of point, commit, complete
//! migration, of machines or recovery plans) with the faults it names; the objectives it sets
//! (RPO, RTO, every VM verified) decide the outcome, and the report shows it all.
//!
//! The scenario is the site's scenario file (see [`super::scenario`]) with these sections:
//!
//! ```toml
//! [rehearsal]
//! name = "AWS to Azure tutorial"
//! replicate_for = "2h"         # simulated time between Protected and the first step
//! step = "15m"                 # the clock advances in steps this long (RPO is sampled at each)
//! manual_action_delay = "10m"  # how long a manual action takes before it is resumed
//!
//! [[samples]]                  # disk images made for the volumes (a sparse MBR disk, seeded data)
//! file = "web.raw"
//! size_gib = 2
//! seed = 1
//!
//! [azure]
//! resource_groups = [{ name = "migrationRG", location = "westeurope" }]
//! storage_accounts = [{ name = "awsmigrated2017", resource_group = "migrationRG" }]
//! networks = [{ name = "myMigrationNetwork", resource_group = "migrationRG",
//!               address_space = ["10.0.0.0/16"], subnets = [["default", "10.0.0.0/24"]] }]
//!
//! [vault]
//! name = "myVault"
//! resource_group = "migrationRG"
//! location = "westeurope"
//!
//! [config_server]
//! instance = "cs"
//! accounts = [{ name = "WindowsAccount", user = "Administrator" }]
//!
//! [policy]
//! name = "myReplicationPolicy"
//! retention_hours = 24
//! app_frequency_minutes = 60
//! rpo_threshold_minutes = 15
//! multi_vm = false
//!
//! [[replicate]]                # each machine to protect (default: every machine found)
//! machine = "web"
//! account = "WindowsAccount"
//! resource_group = "migrationRG"
//! storage_account = "awsmigrated2017"
//! network = "myMigrationNetwork"
//! subnet = "default"
//! multi_vm_group = "tier"      # optional
//!
//! [[plans]]
//! name = "wave1"
//! groups = [["db", "app"], ["web"]]
//! actions = [{ group = 1, when = "after", name = "Check the database", manual = "..." },
//!            { group = 2, when = "after", name = "Smoke test", script = "smoke.sh" }]
//!
//! [[steps]]                    # in order; `machine` or `plan`
//! action = "test-failover"     # test-failover, cleanup, failover, change-point, commit,
//! machine = "web"              # complete-migration, advance
//! point = "latest-processed"
//! network = "testNetwork"
//! notes = "checked size and network"
//! shutdown = true
//! wait = "30m"                 # advance this long before the step
//! expect = "fail"              # the step is meant to fail (a fault's check)
//!
//! [faults]
//! ec2_stop_fails = true
//! vm_quota_cores = 2           # 28031 when a VM would need more
//! nic_quota = 1                # 28092
//! blob_throttle = 10           # Put Page calls answered 503, then
//! blob_server_errors = 3       # 500, per upload (the engine retries them)
//! corrupt_segment = { machine = "db", after = "1h" }
//! process_server_outage = { after = "30m", minutes = 45 }
//! test_failover_left = ["web"] # a test failover cancelled after its VM was made, not cleaned up
//!
//! [objectives]
//! rpo = "15m"                  # data lost at failover, per machine
//! rto = "2h"                   # failover start to VM running
//! verified = true              # every VM verified (size, network, running, disk digest)
//! ```

use super::Site;
use super::estate::AwsMode;
use super::failover::{BLOB_FAULTS, BlobFaults, FailoverRequest, QUOTAS, Quotas};
use super::jobs::{Job, JobState};
use super::model::{ItemHistory, MultiVmSync, PolicyDetails};
use super::plans::{ActionDetails, PlanAction, PlanFailover, PlanSpec};
use super::report::{ObjectiveOutcome, RehearsalInfo, Report, StepOutcome};
use super::scenario::{Scenario, init_site};
use super::states::Operation;
use super::store::Resource;
use crate::clock::{format_duration, parse_duration};
use crate::error::{Error, Result};
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const MINUTE: u64 = 60_000;

/// `[rehearsal]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The rehearsal's name.
    #[serde(default)]
    pub name: String,
    /// Simulated replication time before the steps (default 2h).
    #[serde(default)]
    pub replicate_for: Option<String>,
    /// The clock's step (default 15m).
    #[serde(default)]
    pub step: Option<String>,
    /// How long a manual action takes (default 10m).
    #[serde(default)]
    pub manual_action_delay: Option<String>,
}

/// `[[samples]]`: a disk image to make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleDisk {
    /// Its file name (what a volume's `data` names).
    pub file: String,
    /// Its size, GiB.
    pub size_gib: u64,
    /// The seed of its data.
    #[serde(default)]
    pub seed: u64,
}

/// `[vault]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSpec {
    /// Its name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its region.
    #[serde(default = "west_europe")]
    pub location: String,
}

fn west_europe() -> String {
    "westeurope".into()
}

/// A run-as account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// Its friendly name.
    pub name: String,
    /// The user.
    pub user: String,
    /// A domain account.
    #[serde(default)]
    pub domain: bool,
}

/// `[config_server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigServerSpec {
    /// The EC2 instance (Name tag) running it.
    pub instance: String,
    /// Its run-as accounts.
    #[serde(default)]
    pub accounts: Vec<AccountSpec>,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Its name.
    pub name: String,
    /// Recovery point retention, hours (24).
    #[serde(default)]
    pub retention_hours: Option<u64>,
    /// App-consistent snapshot frequency, minutes (60).
    #[serde(default)]
    pub app_frequency_minutes: Option<u64>,
    /// RPO threshold, minutes (15).
    #[serde(default)]
    pub rpo_threshold_minutes: Option<u64>,
    /// Multi-VM consistency.
    #[serde(default)]
    pub multi_vm: bool,
}

/// `[[replicate]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateSpec {
    /// The machine.
    pub machine: String,
    /// The run-as account.
    pub account: String,
    /// Target resource group.
    pub resource_group: String,
    /// Target storage account.
    pub storage_account: String,
    /// Target network.
    pub network: String,
    /// Target subnet.
    #[serde(default = "default_subnet")]
    pub subnet: String,
    /// Multi-VM group.
    #[serde(default)]
    pub multi_vm_group: Option<String>,
    /// The VM's name in Azure.
    #[serde(default)]
    pub vm_name: Option<String>,
}

fn default_subnet() -> String {
    "default".into()
}

/// An action of a plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Its group (from 1).
    pub group: usize,
    /// `before` or `after` the group's machines.
    #[serde(default = "after")]
    pub when: String,
    /// Its name.
    pub name: String,
    /// A manual action's description.
    #[serde(default)]
    pub manual: Option<String>,
    /// A script (relative to the scenario's folder).
    #[serde(default)]
    pub script: Option<String>,
    /// `test`, `failover` (default both).
    #[serde(default)]
    pub types: Vec<String>,
}

fn after() -> String {
    "after".into()
}

/// `[[plans]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    /// Its name.
    pub name: String,
    /// Its boot groups.
    pub groups: Vec<Vec<String>>,
    /// Its actions.
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

/// `[[steps]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// What to do.
    pub action: String,
    /// The machine.
    #[serde(default)]
    pub machine: Option<String>,
    /// The plan.
    #[serde(default)]
    pub plan: Option<String>,
    /// The point.
    #[serde(default)]
    pub point: Option<String>,
    /// Test failover's network.
    #[serde(default)]
    pub network: Option<String>,
    /// Test failover's subnet.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Failover: shut the source down first.
    #[serde(default)]
    pub shutdown: bool,
    /// Cleanup's notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Advance this long first (`advance`: how long).
    #[serde(default)]
    pub wait: Option<String>,
    /// `fail` when the step is meant to fail.
    #[serde(default)]
    pub expect: Option<String>,
}

/// `corrupt_segment`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptSpec {
    /// The machine.
    pub machine: String,
    /// When, after replication starts.
    pub after: String,
}

/// `process_server_outage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageSpec {
    /// When, after replication starts.
    pub after: String,
    /// How long, minutes.
    pub minutes: u64,
}

/// `[faults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// StopInstances fails.
    #[serde(default)]
    pub ec2_stop_fails: bool,
    /// Regional vCPU quota.
    #[serde(default)]
    pub vm_quota_cores: Option<u32>,
    /// NIC quota.
    #[serde(default)]
    pub nic_quota: Option<u32>,
    /// Put Page calls throttled per upload.
    #[serde(default)]
    pub blob_throttle: u32,
    /// Put Page calls answered 500 per upload.
    #[serde(default)]
    pub blob_server_errors: u32,
    /// A damaged journal segment.
    #[serde(default)]
    pub corrupt_segment: Option<CorruptSpec>,
    /// A process-server outage.
    #[serde(default)]
    pub process_server_outage: Option<OutageSpec>,
    /// Machines whose test failover is left behind.
    #[serde(default)]
    pub test_failover_left: Vec<String>,
}

/// `[objectives]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Data lost at most.
    #[serde(default)]
    pub rpo: Option<String>,
    /// Failover start to VM running at most.
    #[serde(default)]
    pub rto: Option<String>,
    /// Every VM verified.
    #[serde(default)]
    pub verified: bool,
}

/// The rehearsal's sections of a scenario.
#[derive(Debug, Clone, Default)]
pub struct RehearsalSpec {
    /// `[rehearsal]`.
    pub header: Header,
    /// `[[samples]]`.
    pub samples: Vec<SampleDisk>,
    /// `[vault]`.
    pub vault: Option<VaultSpec>,
    /// `[config_server]`.
    pub config_server: Option<ConfigServerSpec>,
    /// `[policy]`.
    pub policy: Option<PolicySpec>,
    /// `[[replicate]]`.
    pub replicate: Vec<ReplicateSpec>,
    /// `[[plans]]`.
    pub plans: Vec<PlanEntry>,
    /// `[[steps]]`.
    pub steps: Vec<StepSpec>,
    /// `[faults]`.
    pub faults: Faults,
    /// `[objectives]`.
    pub objectives: Objectives,
}

fn section<T: serde::de::DeserializeOwned>(s: &Scenario, key: &str) -> Result<Option<T>> {
    s.section(key)
}

impl RehearsalSpec {
    /// The rehearsal sections of `s`.
    ///
    /// # Errors
    /// A section is not valid.
    pub fn of(s: &Scenario) -> Result<RehearsalSpec> {
        Ok(RehearsalSpec {
            header: section(s, "rehearsal")?.unwrap_or_default(),
            samples: section(s, "samples")?.unwrap_or_default(),
            vault: section(s, "vault")?,
            config_server: section(s, "config_server")?,
            policy: section(s, "policy")?,
            replicate: section(s, "replicate")?.unwrap_or_default(),
            plans: section(s, "plans")?.unwrap_or_default(),
            steps: section(s, "steps")?.unwrap_or_default(),
            faults: section(s, "faults")?.unwrap_or_default(),
            objectives: section(s, "objectives")?.unwrap_or_default(),
        })
    }
}

/// How to run a rehearsal.
#[derive(Debug, Clone, Default)]
pub struct RehearseOptions {
    /// The site folder to make (must not hold a site).
    pub site_dir: PathBuf,
    /// EC2 and EBS at this endpoint (moto) instead of the in-process fake.
    pub aws_endpoint: Option<String>,
    /// Its region.
    pub aws_region: Option<String>,
}

/// What a rehearsal did.
#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
    /// The report.
    pub report: Report,
    /// Whether every objective was met and every step went as expected.
    pub met: bool,
    /// Wall-clock ms the replication engine took over every span (writes, receipt,
    /// processing, pruning, health).
    pub replication_wall_ms: u64,
    /// Wall-clock ms the jobs' tasks took (initial replication, failover processing, …).
    pub task_wall_ms: u64,
}

/// A disk image for a sample: sparse, an MBR with one NTFS partition from 1 MiB, and 256 KiB
/// of seeded data at 1 MiB.
fn make_sample(path: &Path, d: &SampleDisk) -> Result<()> {
    use std::os::unix::fs::FileExt;
    if d.size_gib == 0 {
        return Err(Error::argument(format!(
            "sample {}: size_gib must be at least 1",
            d.file
        )));
    }
    let f = std::fs::File::create(path)
        .map_err(|e| Error::io("creating a sample disk", e).with_path(path))?;
    let io = |e| Error::io("writing a sample disk", e).with_path(path);
    f.set_len(d.size_gib << 30).map_err(io)?;
    let mut mbr = vec![0u8; 512];
    mbr[446] = 0x80;
    mbr[450] = 0x07;
    mbr[454..458].copy_from_slice(&2048u32.to_le_bytes());
    let sectors = ((d.size_gib << 30) / 512 - 2048).min(u32::MAX as u64) as u32;
    mbr[458..462].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.write_all_at(&mbr, 0).map_err(io)?;
    let mut data = vec![0u8; 256 << 10];
    let mut x = d.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    f.write_all_at(&data, 1 << 20).map_err(io)?;
    Ok(())
}

/// Runs the rehearsal of `scenario_path` in a new site.
///
/// # Errors
/// The scenario is invalid, or the site cannot be made or written (a step's own failure, and a
/// missed objective, are in the report instead).
pub fn rehearse(
    scenario_path: &Path,
    opts: &RehearseOptions,
    progress: &dyn Progress,
) -> Result<Rehearsal> {
    let wall = std::time::Instant::now();
    let mut sc = Scenario::load(scenario_path)?;
    let spec = RehearsalSpec::of(&sc).map_err(|e| e.with_path(scenario_path))?;
    let scenario_dir = scenario_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Samples are made beside the site; the other volumes' files stay where the scenario is.
    let samples_dir = opts.site_dir.with_extension("samples");
    std::fs::create_dir_all(&samples_dir)
        .map_err(|e| Error::io("creating the samples folder", e).with_path(&samples_dir))?;
    for s in &spec.samples {
        make_sample(&samples_dir.join(&s.file), s)?;
    }
    absolutise_volumes(&mut sc, &scenario_dir, &spec.samples);
    let mode = match &opts.aws_endpoint {
        None => AwsMode::Fake,
        Some(e) => {
            if let Some(a) = sc.aws()? {
                let ec2 = crate::cloud::aws_ec2::AwsEc2::new(Some(e), opts.aws_region.as_deref())?;
                let ebs = crate::cloud::aws_ebs::AwsEbs::new(Some(e), opts.aws_region.as_deref())?;
                ec2.load_scenario(&a, &samples_dir, &ebs)?;
            }
            AwsMode::Endpoint {
                endpoint: Some(e.clone()),
                region: opts.aws_region.clone(),
            }
        }
    };
    let mut site = init_site(&opts.site_dir, &sc, &samples_dir, mode)?;
    let started = site.now_ms()?;
    let mut r = Runner {
        site: &mut site,
        spec: &spec,
        scenario_dir: &scenario_dir,
        steps: Vec::new(),
        faults: Vec::new(),
        progress,
        replication_start: 0,
        corrupted: false,
        outage_done: false,
        replication_wall_ms: 0,
    };
    r.setup(&sc)?;
    r.replicate()?;
    r.plans()?;
    r.apply_faults()?;
    r.run_steps()?;
    let (objectives, objectives_met) = r.objectives()?;
    let steps_ok = r.steps.iter().all(|s| (s.outcome == "ok") != s.expected);
    let info = RehearsalInfo {
        title: if spec.header.name.is_empty() {
            scenario_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            spec.header.name.clone()
        },
        scenario: scenario_path.display().to_string(),
        started_ms: started,
        ended_ms: r.site.now_ms()?,
        wall_ms: wall.elapsed().as_millis() as u64,
        steps: r.steps.clone(),
        faults: r.faults.clone(),
        objectives,
    };
    let replication_wall_ms = r.replication_wall_ms;
    let report = Report::gather(&mut site, &info)?;
    let task_wall_ms = site
        .jobs()?
        .iter()
        .flat_map(|j| &j.properties.tasks)
        .map(|t| t.wall_ms)
        .sum();
    Ok(Rehearsal {
        report,
        met: objectives_met && steps_ok,
        replication_wall_ms,
        task_wall_ms,
    })
}

/// Volumes whose data is not a sample are read from the scenario's folder.
fn absolutise_volumes(sc: &mut Scenario, dir: &Path, samples: &[SampleDisk]) {
    let Some(toml::Value::Table(aws)) = sc.rest.get_mut("aws") else {
        return;
    };
    let Some(toml::Value::Array(instances)) = aws.get_mut("instances") else {
        return;
    };
    for i in instances {
        let Some(toml::Value::Array(vols)) = i.get_mut("volumes") else {
            continue;
        };
        for v in vols {
            let Some(toml::Value::String(d)) = v.get_mut("data") else {
                continue;
            };
            if !samples.iter().any(|s| s.file == *d) {
                *d = dir.join(&*d).display().to_string();
            }
        }
    }
}

struct Runner<'a> {
    site: &'a mut Site,
    spec: &'a RehearsalSpec,
    scenario_dir: &'a Path,
    steps: Vec<StepOutcome>,
    faults: Vec<String>,
    progress: &'a dyn Progress,
    replication_start: u64,
    corrupted: bool,
    outage_done: bool,
    replication_wall_ms: u64,
}

fn dur(s: &Option<String>, default: u64) -> Result<u64> {
    s.as_deref().map_or(Ok(default), parse_duration)
}

impl Runner<'_> {
    fn wait(&mut self, job: &Resource<Job>) -> Result<Resource<Job>> {
        self.site
            .wait_for(&job.id, 30 * 24 * 60 * MINUTE, self.progress)?;
        self.site.job(&job.id)
    }

    /// Makes the Azure side, the vault, registers the configuration server, the policy.
    fn setup(&mut self, sc: &Scenario) -> Result<()> {
        let azure: super::scenario::AzureSection = section(sc, "azure")?.unwrap_or_default();
        let sub = self.site.config().subscription_id.clone();
        self.site.tx(|t| {
            for g in &azure.resource_groups {
                super::azure::create_resource_group(t, &sub, &g.name, &g.location)?;
            }
            for s in &azure.storage_accounts {
                super::azure::create_storage_account(
                    t,
                    &sub,
                    &s.resource_group,
                    &s.name,
                    None,
                    None,
                )?;
            }
            for n in &azure.networks {
                super::azure::create_virtual_network(
                    t,
                    &sub,
                    &n.resource_group,
                    &n.name,
                    &super::azure::VnetSpec {
                        location: None,
                        address_prefixes: n.address_space.clone(),
                        subnets: n.subnets.clone(),
                    },
                )?;
            }
            Ok(())
        })?;
        let v = self
            .spec
            .vault
            .clone()
            .ok_or_else(|| Error::argument("the scenario has no [vault]"))?;
        self.site
            .create_vault(&v.resource_group, &v.name, &v.location)?;
        let key = self.site.dir().join("vault.VaultCredentials");
        self.site.issue_key(&key)?;
        let cs = self
            .spec
            .config_server
            .clone()
            .ok_or_else(|| Error::argument("the scenario has no [config_server]"))?;
        let ip = self.site.instance_ip(&cs.instance)?;
        let id = self.site.instance(&cs.instance)?.id;
        let j = self
            .site
            .register_config_server(&key, &cs.instance, &id, &ip)?;
        self.expect_ok(j, "register the configuration server")?;
        for a in &cs.accounts {
            self.site
                .add_account(&cs.instance, &a.name, &a.user, a.domain)?;
        }
        let p = self
            .spec
            .policy
            .clone()
            .ok_or_else(|| Error::argument("the scenario has no [policy]"))?;
        let mut d = PolicyDetails::default();
        if let Some(h) = p.retention_hours {
            d.recovery_point_history = h * 60;
        }
        if let Some(m) = p.app_frequency_minutes {
            d.app_consistent_frequency_in_minutes = m;
        }
        if let Some(m) = p.rpo_threshold_minutes {
            d.recovery_point_threshold_in_minutes = m;
        }
        if p.multi_vm {
            d.multi_vm_sync_status = MultiVmSync::Enable;
        }
        let j = self.site.create_policy(&p.name, d)?;
        self.expect_ok(j, "create the replication policy")?;
        let j = self.site.associate_policy(&p.name, &cs.instance)?;
        self.expect_ok(j, "associate the policy")?;
        self.site.discover_machines(None)?;
        Ok(())
    }

    fn expect_ok(&mut self, j: Resource<Job>, what: &str) -> Result<()> {
        let j = self.wait(&j)?;
        if j.properties.state != JobState::Succeeded {
            let e = j
                .properties
                .errors
                .first()
                .map(|e| format!("{} {}", e.error_code, e.error_message))
                .unwrap_or_default();
            return Err(Error::conflict(format!(
                "the rehearsal could not {what}: job {} ({}) {:?}: {e}",
                j.name, j.properties.friendly_name, j.properties.state
            )));
        }
        Ok(())
    }

    /// Enables replication and lets the workloads run for `replicate_for`.
    fn replicate(&mut self) -> Result<()> {
        let t0 = self.site.now_ms()?;
        let mut enables = Vec::new();
        for r in &self.spec.replicate {
            let req = super::protect::EnableRequest {
                machine: r.machine.clone(),
                config_server: None,
                policy: None,
                account: r.account.clone(),
                resource_group: r.resource_group.clone(),
                storage_account: r.storage_account.clone(),
                network: r.network.clone(),
                subnet: r.subnet.clone(),
                vm_name: r.vm_name.clone(),
                multi_vm_group: r.multi_vm_group.clone(),
            };
            match self.site.enable_replication(&req) {
                Ok(j) => enables.push((r.machine.clone(), j)),
                // Refused (no such storage account, a bad name…): the report says why.
                Err(e) => self.steps.push(StepOutcome {
                    name: format!("enable replication of {}", r.machine),
                    start_ms: t0,
                    end_ms: t0,
                    job_ids: Vec::new(),
                    outcome: format!("refused: {e}"),
                    expected: false,
                }),
            }
        }
        for (m, j) in enables {
            let j = self.wait(&j)?;
            let name = format!("enable replication of {m}");
            let ok = j.properties.state == JobState::Succeeded;
            let mut jobs = vec![j.id.clone()];
            let mut outcome = outcome_of(&j);
            if ok && let Some(fin) = self.site.item(&m)?.properties.current_job_id {
                let f = self.site.job(&fin)?;
                let f = self.wait(&f)?;
                jobs.push(f.id.clone());
                outcome = outcome_of(&f);
            }
            let end = self.site.now_ms()?;
            self.steps.push(StepOutcome {
                name,
                start_ms: t0,
                end_ms: end,
                job_ids: jobs,
                outcome,
                expected: false,
            });
        }
        self.replication_start = self.site.now_ms()?;
        let span = dur(&self.spec.header.replicate_for, 120 * MINUTE)?;
        self.advance(span)
    }

    /// Advances in steps, injecting the timed faults when their time comes.
    fn advance(&mut self, by: u64) -> Result<()> {
        let step = dur(&self.spec.header.step, 15 * MINUTE)?.max(MINUTE);
        let end = self.site.now_ms()? + by;
        loop {
            let now = self.site.now_ms()?;
            if now >= end {
                return Ok(());
            }
            self.timed_faults(now)?;
            let mut next = (now + step).min(end);
            for at in self.fault_times()? {
                if at > now && at < next {
                    next = at;
                }
            }
            let r = self.site.advance(next - now, self.progress)?;
            self.replication_wall_ms += r.replication.wall_ms;
        }
    }

    fn fault_times(&self) -> Result<Vec<u64>> {
        let f = &self.spec.faults;
        let mut v = Vec::new();
        if let Some(o) = &f.process_server_outage {
            let at = self.replication_start + parse_duration(&o.after)?;
            v.push(at);
            v.push(at + o.minutes * MINUTE);
        }
        if let Some(c) = &f.corrupt_segment {
            let at = self.replication_start + parse_duration(&c.after)?;
            v.push(at);
            v.push(at + 30 * MINUTE);
        }
        Ok(v)
    }

    fn timed_faults(&mut self, now: u64) -> Result<()> {
        let f = self.spec.faults.clone();
        let fabric = self
            .spec
            .config_server
            .as_ref()
            .map(|c| c.instance.clone())
            .unwrap_or_default();
        if let Some(o) = &f.process_server_outage {
            let at = self.replication_start + parse_duration(&o.after)?;
            if now == at {
                self.site.set_process_server(&fabric, false)?;
                self.faults.push(format!(
                    "process server outage: down at {} for {} min",
                    crate::clock::format_time(now),
                    o.minutes
                ));
            } else if now == at + o.minutes * MINUTE && !self.outage_done {
                self.site.set_process_server(&fabric, true)?;
                self.outage_done = true;
            }
        }
        if let Some(c) = &f.corrupt_segment {
            let at = self.replication_start + parse_duration(&c.after)?;
            if now == at {
                // What piles up at the source while the process server is away is damaged
                // before it is shipped.
                self.site.set_process_server(&fabric, false)?;
            } else if now == at + 30 * MINUTE && !self.corrupted {
                let what = corrupt_unshipped(self.site, &c.machine)?;
                self.site.set_process_server(&fabric, true)?;
                self.corrupted = true;
                self.faults.push(format!(
                    "corrupt journal segment on {} at {}: {what}",
                    c.machine,
                    crate::clock::format_time(now)
                ));
            }
        }
        Ok(())
    }

    fn plans(&mut self) -> Result<()> {
        for p in &self.spec.plans {
            let mut actions = Vec::new();
            for a in &p.actions {
                let types: Vec<Operation> = if a.types.is_empty() {
                    vec![Operation::TestFailover, Operation::UnplannedFailover]
                } else {
                    a.types
                        .iter()
                        .map(|t| match t.as_str() {
                            "test" | "TestFailover" => Ok(Operation::TestFailover),
                            "failover" | "UnplannedFailover" => Ok(Operation::UnplannedFailover),
                            o => Err(Error::argument(format!(
                                "plan {} action {}: failover type {o:?}: expected test or failover",
                                p.name, a.name
                            ))),
                        })
                        .collect::<Result<_>>()?
                };
                let details = match (&a.manual, &a.script) {
                    (Some(d), None) => ActionDetails::ManualActionDetails {
                        description: d.clone(),
                    },
                    (None, Some(s)) => ActionDetails::ScriptActionDetails {
                        path: self.scenario_dir.join(s).display().to_string(),
                        timeout: 600,
                        fabric_location: "Recovery".into(),
                    },
                    _ => {
                        return Err(Error::argument(format!(
                            "plan {} action {}: give one of manual or script",
                            p.name, a.name
                        )));
                    }
                };
                let before = match a.when.as_str() {
                    "before" => true,
                    "after" => false,
                    w => {
                        return Err(Error::argument(format!(
                            "plan {} action {}: when {w:?}: expected before or after",
                            p.name, a.name
                        )));
                    }
                };
                actions.push((
                    a.group,
                    before,
                    PlanAction {
                        action_name: a.name.clone(),
                        failover_types: types,
                        failover_directions: vec!["PrimaryToRecovery".into()],
                        custom_details: details,
                    },
                ));
            }
            self.site.create_plan(&PlanSpec {
                name: p.name.clone(),
                groups: p.groups.clone(),
                actions,
            })?;
        }
        Ok(())
    }

    /// The faults set before the steps.
    fn apply_faults(&mut self) -> Result<()> {
        let f = self.spec.faults.clone();
        if f.ec2_stop_fails {
            self.site.with_estate(|_, e| {
                if let Some(fake) = &e.fake {
                    fake.inject_times(
                        crate::cloud::fake::ec2::Operation::StopInstances,
                        crate::cloud::fake::ec2::FaultKind::Code {
                            status: 400,
                            code: "UnauthorizedOperation".into(),
                            message: "You are not authorized to perform this operation \
                                      (injected)."
                                .into(),
                        },
                        None,
                    );
                    Ok(())
                } else {
                    Err(Error::argument(
                        "the fault ec2_stop_fails needs the in-process EC2 fake",
                    ))
                }
            })?;
            self.faults
                .push("EC2 StopInstances fails (UnauthorizedOperation)".into());
        }
        if f.vm_quota_cores.is_some() || f.nic_quota.is_some() {
            let q = Quotas {
                cores: f.vm_quota_cores,
                network_interfaces: f.nic_quota,
            };
            self.site.tx(|t| t.set_setting(QUOTAS, &q))?;
            if let Some(c) = f.vm_quota_cores {
                self.faults.push(format!("regional vCPU quota {c} (28031)"));
            }
            if let Some(n) = f.nic_quota {
                self.faults
                    .push(format!("network interface quota {n} (28092)"));
            }
        }
        if f.blob_throttle > 0 || f.blob_server_errors > 0 {
            let b = BlobFaults {
                throttle: f.blob_throttle,
                server_errors: f.blob_server_errors,
            };
            self.site.tx(|t| t.set_setting(BLOB_FAULTS, &b))?;
            self.faults.push(format!(
                "page blobs: {} Put Page calls throttled (503) and {} failed (500) per upload",
                f.blob_throttle, f.blob_server_errors
            ));
        }
        for m in &f.test_failover_left {
            let t0 = self.site.now_ms()?;
            let s = self.site.test_failover(&FailoverRequest {
                item: m.clone(),
                point: "latest-processed".into(),
                ..FailoverRequest::default()
            })?;
            let until_made: u64 = s
                .job
                .properties
                .tasks
                .iter()
                .take_while(|t| t.name != "PrepareVm")
                .map(|t| t.duration_ms)
                .sum();
            let r = self.site.advance(until_made, self.progress)?;
            self.replication_wall_ms += r.replication.wall_ms;
            self.site.cancel_job(&s.job.id)?;
            let j = self.wait(&s.job)?;
            self.faults.push(format!(
                "a test failover of {m} cancelled after its VM was made, not cleaned up"
            ));
            self.steps.push(StepOutcome {
                name: format!("test failover of {m}, abandoned (fault)"),
                start_ms: t0,
                end_ms: self.site.now_ms()?,
                job_ids: vec![j.id.clone()],
                outcome: outcome_of(&j),
                expected: true,
            });
        }
        Ok(())
    }

    fn run_steps(&mut self) -> Result<()> {
        let delay = dur(&self.spec.header.manual_action_delay, 10 * MINUTE)?;
        for s in self.spec.steps.clone() {
            if s.action == "advance" {
                let by = dur(&s.wait, 0)?;
                let t0 = self.site.now_ms()?;
                self.advance(by)?;
                self.steps.push(StepOutcome {
                    name: format!("advance {}", format_duration(by)),
                    start_ms: t0,
                    end_ms: self.site.now_ms()?,
                    job_ids: Vec::new(),
                    outcome: "ok".into(),
                    expected: false,
                });
                continue;
            }
            if let Some(w) = &s.wait {
                self.advance(parse_duration(w)?)?;
            }
            let t0 = self.site.now_ms()?;
            let expected = s.expect.as_deref() == Some("fail");
            let name = format!(
                "{} {}",
                s.action,
                s.plan
                    .as_ref()
                    .map(|p| format!("of plan {p}"))
                    .or(s.machine.clone())
                    .unwrap_or_default()
            );
            let started = self.start_step(&s);
            let (outcome, jobs) = match started {
                Err(e) => (format!("refused: {e}"), Vec::new()),
                Ok(j) => {
                    let mut j = self.wait(&j)?;
                    // A manual action: the job waits for someone to do it.
                    while j.properties.state == JobState::Suspended {
                        self.advance(delay)?;
                        self.site
                            .resume_job(&j.id, Some("done during the rehearsal"))?;
                        j = self.wait(&j)?;
                    }
                    (outcome_of(&j), vec![j.id.clone()])
                }
            };
            self.steps.push(StepOutcome {
                name,
                start_ms: t0,
                end_ms: self.site.now_ms()?,
                job_ids: jobs,
                outcome,
                expected,
            });
        }
        Ok(())
    }

    fn start_step(&mut self, s: &StepSpec) -> Result<Resource<Job>> {
        let point = s.point.clone().unwrap_or_else(|| "latest-processed".into());
        if let Some(p) = &s.plan {
            let op = match s.action.as_str() {
                "test-failover" => Operation::TestFailover,
                "cleanup" => Operation::TestFailoverCleanup,
                "failover" => Operation::UnplannedFailover,
                "commit" => Operation::Commit,
                a => {
                    return Err(Error::argument(format!(
                        "step {a} of plan {p}: a plan has test-failover, cleanup, failover and \
                         commit"
                    )));
                }
            };
            let how = PlanFailover {
                point,
                network: s.network.clone(),
                subnet: s.subnet.clone(),
                shutdown: s.shutdown,
            };
            return self
                .site
                .plan_job(p, op, &how, s.notes.as_deref().unwrap_or_default());
        }
        let m = s
            .machine
            .clone()
            .ok_or_else(|| Error::argument(format!("step {}: no machine or plan", s.action)))?;
        let req = FailoverRequest {
            item: m.clone(),
            point: point.clone(),
            network: s.network.clone(),
            subnet: s.subnet.clone(),
            shutdown: s.shutdown,
            ..FailoverRequest::default()
        };
        match s.action.as_str() {
            "test-failover" => self.site.test_failover(&req).map(|x| x.job),
            "failover" => self.site.failover(&req).map(|x| x.job),
            "cleanup" => self
                .site
                .cleanup_test_failover(&m, s.notes.as_deref().unwrap_or_default()),
            "change-point" => self.site.change_recovery_point(&m, &point),
            "commit" => self.site.commit_failover(&m),
            "complete-migration" => self.site.complete_migration(&m),
            a => Err(Error::argument(format!(
                "step {a}: expected test-failover, cleanup, failover, change-point, commit, \
                 complete-migration or advance"
            ))),
        }
    }

    /// Each objective for each machine with a failover (else its last test failover).
    fn objectives(&mut self) -> Result<(Vec<ObjectiveOutcome>, bool)> {
        let o = &self.spec.objectives;
        let rpo = o.rpo.as_deref().map(parse_duration).transpose()?;
        let rto = o.rto.as_deref().map(parse_duration).transpose()?;
        let histories = self.site.tx(|t| t.list::<ItemHistory>(None))?;
        let mut out = Vec::new();
        for h in &histories {
            let recs = &h.properties.failovers;
            let Some(last) = recs
                .iter()
                .rev()
                .find(|r| r.scenario_name == "UnplannedFailover")
                .or_else(|| {
                    recs.iter()
                        .rev()
                        .find(|r| r.scenario_name == "TestFailover")
                })
            else {
                continue;
            };
            let m = Some(h.properties.friendly_name.clone());
            if let Some(t) = rpo {
                out.push(ObjectiveOutcome {
                    objective: "RPO".into(),
                    machine: m.clone(),
                    target: format!("≤ {}", format_duration(t)),
                    actual: format_duration(last.data_loss_ms),
                    met: last.data_loss_ms <= t,
                });
            }
            if let Some(t) = rto {
                out.push(ObjectiveOutcome {
                    objective: "RTO".into(),
                    machine: m.clone(),
                    target: format!("≤ {}", format_duration(t)),
                    actual: format_duration(last.rto_ms),
                    met: last.rto_ms <= t,
                });
            }
            if o.verified {
                let bad: Vec<String> = recs
                    .iter()
                    .flat_map(|r| &r.verification)
                    .filter(|v| !v.passed)
                    .map(|v| format!("{}: {}", v.check, v.detail))
                    .collect();
                out.push(ObjectiveOutcome {
                    objective: "verified".into(),
                    machine: m,
                    target: "every VM: size, network, running, disk digest".into(),
                    actual: if bad.is_empty() {
                        format!("{} VM(s) verified", recs.len())
                    } else {
                        bad.join("; ")
                    },
                    met: bad.is_empty(),
                });
            }
        }
        let met = out.iter().all(|o| o.met);
        Ok((out, met))
    }
}

fn outcome_of(j: &Resource<Job>) -> String {
    match j.properties.state {
        JobState::Succeeded => "ok".into(),
        s => {
            let e = j
                .properties
                .errors
                .first()
                .map(|e| format!(": {} {}", e.error_code, e.error_message))
                .unwrap_or_default();
            format!("{s:?}{e}")
        }
    }
}

/// Damages one byte of what `machine`'s first disk holds at the source but has not shipped.
fn corrupt_unshipped(site: &mut Site, machine: &str) -> Result<String> {
    let it = site.item(machine)?;
    let Some(d) = it.properties.replication.first() else {
        return Ok("nothing replicates".into());
    };
    let journal = site.dir().join(&d.source_dir).join("journal");
    let replica = site.dir().join(&d.replica_dir).join("segments");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&journal)
        .map_err(|e| Error::io("listing the source journal", e).with_path(&journal))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "e2j"))
        .collect();
    segs.sort();
    for seg in segs.iter().rev() {
        let name = seg.file_name().unwrap_or_default();
        let held = std::fs::metadata(replica.join(name)).map_or(0, |m| m.len());
        let mut bytes =
            std::fs::read(seg).map_err(|e| Error::io("reading a segment", e).with_path(seg))?;
        if bytes.len() as u64 > held + 64 {
            let at = (held as usize + bytes.len()) / 2;
            bytes[at] ^= 0x40;
            std::fs::write(seg, &bytes)
                .map_err(|e| Error::io("writing a segment", e).with_path(seg))?;
            return Ok(format!(
                "{} byte {at} flipped (not shipped yet)",
                seg.display()
            ));
        }
    }
    Ok("nothing unshipped to damage".into())
}
