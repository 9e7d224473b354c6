//! The vault and its configuration: the Recovery Services vault, its registration key, the
//! configuration server (fabric, process server, run-as accounts, protection container), and
//! replication policies with their association (container mappings) — the tutorial's "Prepare
//! infrastructure" steps. Each change is a job with the service's scenario and task names
//! where they are known (asr-model.md §2.4: `AddProtectionProfile` "Create replication
//! policy", `RegisterDra`); the others are named as the portal shows them.

use super::jobs::{Durations, Job, JobState, job_error};
use super::model::{
    ContainerMapping, Fabric, MultiVmSync, PolicyDetails, ProcessServer, ProtectionContainer,
    RegistrationKey, ReplicationPolicy, RunAsAccount, Vault,
};
use super::runner::{ItemEffect, TaskOutput, TaskResult, start_job};
use super::store::{Resource, Tx};
use super::{Site, now_ms};
use crate::digest::sha256;
use crate::error::{Error, Result};
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::Path;

const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;
/// How long a registration key is accepted: five days.
pub const KEY_VALIDITY_MS: u64 = 5 * DAY;

/// The ARM id of a vault.
pub fn vault_id(sub: &str, rg: &str, name: &str) -> String {
    format!("{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name}")
}

/// Checks a name the service takes for a vault, fabric, policy or plan: 2–50 characters,
/// letters, digits and hyphens, starting with a letter.
///
/// # Errors
/// The name breaks the rule (said how).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = (2..=50).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::argument(format!(
            "{what} name {name:?}: expected 2 to 50 letters, digits and hyphens, starting with a \
             letter"
        )))
    }
}

impl Site {
    /// Creates a Recovery Services vault in an existing resource group.
    ///
    /// # Errors
    /// The name is invalid, the resource group does not exist, or the vault exists.
    pub fn create_vault(
        &mut self,
        resource_group: &str,
        name: &str,
        location: &str,
    ) -> Result<Resource<Vault>> {
        check_name("vault", name)?;
        let sub = self.subscription();
        let sub_id = self.config.subscription_id.clone();
        self.tx(|t| {
            let rg = super::azure::resource_group(t, &sub_id, resource_group)?;
            let location = super::azure::location(location)?.name.to_string();
            let id = vault_id(&sub, &rg.name, name);
            let rg = rg.id;
            if !t.list::<Vault>(None)?.is_empty() {
                return Err(Error::conflict(
                    "the site has a vault already (one vault per site)",
                ));
            }
            t.insert(
                &id,
                Some(&rg),
                &Vault {
                    location,
                    sku: "Standard".into(),
                    registration_key: None,
                },
            )
        })
    }

    /// The site's vault.
    ///
    /// # Errors
    /// No vault has been created.
    pub fn vault(&mut self) -> Result<Resource<Vault>> {
        self.tx(the_vault)
    }

    /// Issues the vault's registration key into `out` (a `.VaultCredentials` file, valid five
    /// days). The key is written only there; the vault keeps its SHA-256.
    ///
    /// # Errors
    /// No vault, or the file cannot be written.
    pub fn issue_key(&mut self, out: &Path) -> Result<RegistrationKey> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| Error::invalid(format!("no random numbers for the key: {e}")))?;
        let key_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        let (vault, rk) = self.tx(|t| {
            let mut v = the_vault(t)?;
            let now = now_ms(t)?;
            let rk = RegistrationKey {
                issued_ms: now,
                expires_ms: now + KEY_VALIDITY_MS,
                key_sha256: hex::encode(sha256(key_b64.as_bytes())),
            };
            v.properties.registration_key = Some(rk.clone());
            t.update(&mut v)?;
            Ok((v, rk))
        })?;
        let file = KeyFile {
            vault_id: vault.id,
            vault_name: vault.name,
            key: key_b64,
            valid_to: crate::clock::format_time(rk.expires_ms),
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::invalid(format!("encoding the key file: {e}")))?;
        crate::export::write_file_atomic(out, text.as_bytes(), true)?;
        Ok(rk)
    }

    /// Registers the configuration server running on EC2 instance `instance_id` (private IP
    /// `ip`) with the vault, using the key in `key_file`: a `RegisterDra` job. The key is
    /// checked now (it must be the vault's latest and not expired).
    ///
    /// # Errors
    /// The key is not the vault's, has expired, or a fabric of that name exists.
    pub fn register_config_server(
        &mut self,
        key_file: &Path,
        name: &str,
        instance_id: &str,
        ip: &str,
    ) -> Result<Resource<Job>> {
        check_name("configuration server", name)?;
        let text = std::fs::read_to_string(key_file)
            .map_err(|e| Error::io("reading the registration key", e).with_path(key_file))?;
        let kf: KeyFile = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!("not a vault credentials file: {e}")).with_path(key_file)
        })?;
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        self.tx(|t| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            check_key(&v, &kf, now).map_err(|e| e.with_path(key_file))?;
            let fabric = format!("{}/replicationFabrics/{name}", v.id);
            if t.exists(&fabric)? {
                return Err(Error::conflict(format!(
                    "configuration server {name} is registered already"
                )));
            }
            let mut job = Job::new(
                "RegisterDra",
                "Register the Azure Site Recovery Provider",
                (&fabric, name, "Fabric"),
                &[(
                    "RegisterConfigurationServer",
                    "Registering the configuration server with the vault",
                )],
                &d,
                now,
            );
            job.input = serde_json::json!({
                "fabric": fabric, "name": name, "instanceId": instance_id, "ip": ip,
                "keySha256": hex::encode(sha256(kf.key.as_bytes())),
            });
            start_job(t, seed, &v.id, job, ItemEffect::default())
        })
    }

    /// Adds a run-as account to a configuration server.
    ///
    /// # Errors
    /// No such server, or the account exists.
    pub fn add_account(
        &mut self,
        fabric: &str,
        name: &str,
        user: &str,
        domain: bool,
    ) -> Result<Resource<Fabric>> {
        self.tx(|t| {
            let mut f = find_fabric(t, fabric)?;
            if f.properties
                .run_as_accounts
                .iter()
                .any(|a| a.account_name == name)
            {
                return Err(Error::conflict(format!(
                    "{} has an account {name} already",
                    f.name
                )));
            }
            let n = f.properties.run_as_accounts.len() + 1;
            f.properties.run_as_accounts.push(RunAsAccount {
                account_id: n.to_string(),
                account_name: name.to_string(),
                user_name: user.to_string(),
                domain,
            });
            t.update(&mut f)?;
            Ok(f)
        })
    }

    /// Starts or stops a process server (an outage: replication through it stops).
    ///
    /// # Errors
    /// No such server.
    pub fn set_process_server(&mut self, fabric: &str, running: bool) -> Result<Resource<Fabric>> {
        self.tx(|t| {
            let mut f = find_fabric(t, fabric)?;
            let now = now_ms(t)?;
            for ps in &mut f.properties.process_servers {
                ps.ps_service_status = if running { "Running" } else { "Stopped" }.into();
                ps.health = if running { "Normal" } else { "Critical" }.into();
                if running {
                    ps.last_heartbeat_ms = now;
                }
            }
            t.update(&mut f)?;
            Ok(f)
        })
    }

    /// Creates a replication policy (an `AddProtectionProfile` job).
    ///
    /// # Errors
    /// A value is outside what the service accepts, or the policy exists.
    pub fn create_policy(&mut self, name: &str, p: PolicyDetails) -> Result<Resource<Job>> {
        check_name("policy", name)?;
        validate_policy(&p)?;
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        self.tx(|t| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            let id = format!("{}/replicationPolicies/{name}", v.id);
            if t.exists(&id)? {
                return Err(Error::conflict(format!("policy {name} exists already")));
            }
            let mut job = Job::new(
                "AddProtectionProfile",
                "Create replication policy",
                (&id, name, "ProtectionProfile"),
                &[
                    (
                        "PolicyPrerequisites",
                        "Prerequisites check for creating the replication policy",
                    ),
                    ("CreatePolicy", "Creating the replication policy"),
                ],
                &d,
                now,
            );
            job.input = serde_json::json!({ "policy": id, "name": name, "details": p });
            start_job(t, seed, &v.id, job, ItemEffect::default())
        })
    }

    /// Associates a policy with a configuration server's protection container (and the
    /// failback policy made with it).
    ///
    /// # Errors
    /// No such policy or server, or they are associated already.
    pub fn associate_policy(&mut self, policy: &str, fabric: &str) -> Result<Resource<Job>> {
        let seed = self.config.seed;
        let d = self.config.durations.clone();
        self.tx(|t| {
            let v = the_vault(t)?;
            let now = now_ms(t)?;
            let p = find_policy(t, &v.id, policy)?;
            let f = find_fabric(t, fabric)?;
            let container = container_of(t, &f)?;
            let mapping = format!(
                "{}/replicationProtectionContainerMappings/{}-{}",
                container.id, p.name, "mapping"
            );
            if t.exists(&mapping)? {
                return Err(Error::conflict(format!(
                    "policy {} is associated with {} already",
                    p.name, f.name
                )));
            }
            let mut job = Job::new(
                "ConfigureProtection",
                "Associate replication policy",
                (&container.id, &container.name, "ProtectionContainer"),
                &[("AssociatePolicy", "Associating the replication policy")],
                &d,
                now,
            );
            job.input = serde_json::json!({
                "policy": p.id, "container": container.id, "mapping": mapping,
            });
            start_job(t, seed, &v.id, job, ItemEffect::default())
        })
    }
}

/// The vault credentials file `vault key` writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    vault_id: String,
    vault_name: String,
    key: String,
    valid_to: String,
}

fn check_key(v: &Resource<Vault>, kf: &KeyFile, now: u64) -> Result<()> {
    if kf.vault_id != v.id {
        return Err(Error::denied(format!(
            "the registration key is for vault {}, not {}",
            kf.vault_name, v.name
        )));
    }
    let Some(rk) = &v.properties.registration_key else {
        return Err(Error::denied("the vault has issued no registration key"));
    };
    if hex::encode(sha256(kf.key.as_bytes())) != rk.key_sha256 {
        return Err(Error::denied(
            "the registration key is not the vault's latest (a newer one was issued)",
        ));
    }
    if now >= rk.expires_ms {
        return Err(Error::denied(format!(
            "the vault registration key expired at {} (keys are valid five days): download a \
             new one with `ec2azure vault key`",
            crate::clock::format_time(rk.expires_ms)
        )));
    }
    Ok(())
}

fn validate_policy(p: &PolicyDetails) -> Result<()> {
    let retention = p.recovery_point_history;
    let app = p.app_consistent_frequency_in_minutes;
    if retention > 15 * 24 * 60 {
        return Err(Error::argument(format!(
            "retention {retention} minutes: Site Recovery keeps recovery points up to 15 days \
             (21,600 minutes)"
        )));
    }
    if app != 0 && !(60..=720).contains(&app) {
        return Err(Error::argument(format!(
            "app-consistent frequency {app} minutes: expected 0 (off) or 1 to 12 hours (below 60 \
             minutes is not accepted)"
        )));
    }
    if app > retention {
        return Err(Error::argument(format!(
            "app-consistent frequency {app} minutes is above the retention of {retention} \
             minutes"
        )));
    }
    if p.recovery_point_threshold_in_minutes == 0 {
        return Err(Error::argument("RPO threshold: expected at least 1 minute"));
    }
    if p.crash_consistent_frequency_in_minutes != 5 {
        return Err(Error::argument(
            "crash-consistent frequency: Site Recovery takes one every 5 minutes",
        ));
    }
    Ok(())
}

impl Default for PolicyDetails {
    /// The tutorial's defaults: 24 hours of retention, app-consistent points every 60 minutes,
    /// an RPO threshold of 15 minutes, multi-VM consistency off.
    fn default() -> Self {
        PolicyDetails {
            recovery_point_history: 24 * 60,
            app_consistent_frequency_in_minutes: 60,
            recovery_point_threshold_in_minutes: 15,
            crash_consistent_frequency_in_minutes: 5,
            multi_vm_sync_status: MultiVmSync::Disable,
        }
    }
}

/// The site's vault.
///
/// # Errors
/// There is none.
pub fn the_vault(t: &Tx<'_>) -> Result<Resource<Vault>> {
    t.list::<Vault>(None)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("no vault (create one with `ec2azure vault create`)"))
}

/// A configuration server by name or id.
///
/// # Errors
/// There is none.
pub fn find_fabric(t: &Tx<'_>, name: &str) -> Result<Resource<Fabric>> {
    t.list::<Fabric>(None)?
        .into_iter()
        .find(|f| f.id == name || f.name == name)
        .ok_or_else(|| {
            Error::not_found(format!(
                "no configuration server {name} (register one with `ec2azure config-server \
                 register`)"
            ))
        })
}

/// The only configuration server, when `name` is not given.
///
/// # Errors
/// None, or several and no name.
pub fn pick_fabric(t: &Tx<'_>, name: Option<&str>) -> Result<Resource<Fabric>> {
    if let Some(n) = name {
        return find_fabric(t, n);
    }
    let mut all = t.list::<Fabric>(None)?;
    match all.len() {
        0 => Err(Error::not_found(
            "no configuration server (register one with `ec2azure config-server register`)",
        )),
        1 => Ok(all.remove(0)),
        _ => Err(Error::argument(
            "several configuration servers: name one with --config-server",
        )),
    }
}

/// A policy by name or id.
///
/// # Errors
/// There is none.
pub fn find_policy(t: &Tx<'_>, vault: &str, name: &str) -> Result<Resource<ReplicationPolicy>> {
    t.list::<ReplicationPolicy>(Some(vault))?
        .into_iter()
        .find(|p| p.id == name || p.name == name)
        .ok_or_else(|| Error::not_found(format!("no replication policy {name}")))
}

/// A fabric's protection container.
///
/// # Errors
/// It has none (the registration has not finished).
pub fn container_of(t: &Tx<'_>, f: &Resource<Fabric>) -> Result<Resource<ProtectionContainer>> {
    t.list::<ProtectionContainer>(Some(&f.id))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(format!("{} has no protection container", f.name)))
}

/// The policy associated with a container, if any.
///
/// # Errors
/// The store cannot be read.
pub fn mapped_policy(t: &Tx<'_>, container: &str) -> Result<Option<Resource<ContainerMapping>>> {
    Ok(t.list::<ContainerMapping>(Some(container))?
        .into_iter()
        .find(|m| !m.name.ends_with("-failback-mapping")))
}

/// The work of the vault's tasks; the others go to [`super::protect`].
pub fn task_work(
    site: &mut Site,
    job: &Resource<Job>,
    i: usize,
    name: &str,
    progress: &dyn Progress,
) -> TaskResult {
    let input = &job.properties.input;
    let s = |k: &str| {
        input
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    match name {
        "RegisterConfigurationServer" => {
            let (fabric, fname, instance, ip) = (s("fabric"), s("name"), s("instanceId"), s("ip"));
            let key = s("keySha256");
            site.tx(|t| {
                let v = the_vault(t)?;
                let now = now_ms(t)?;
                if v.properties
                    .registration_key
                    .as_ref()
                    .map(|k| &k.key_sha256)
                    != Some(&key)
                {
                    return Ok(Err(job_error(
                        "RegistrationKeyInvalid",
                        "The vault registration key is no longer the vault's.",
                        "A newer key was issued after registration started.",
                        "Download the vault registration key again and register again.",
                    )));
                }
                if t.exists(&fabric)? {
                    return Ok(Ok(TaskOutput::new()));
                }
                t.insert(
                    &fabric,
                    Some(&v.id),
                    &Fabric {
                        friendly_name: fname.clone(),
                        fabric_type: "VMware".into(),
                        instance_id: instance.clone(),
                        host_name: fname.clone(),
                        ip_address: ip.clone(),
                        agent_version: "9.41.0.0".into(),
                        process_servers: vec![ProcessServer {
                            friendly_name: fname.clone(),
                            id: format!("{fabric}/processServers/1"),
                            ip_address: ip.clone(),
                            ps_service_status: "Running".into(),
                            health: "Normal".into(),
                            last_heartbeat_ms: now,
                            reachable_ports: vec![443, 9443],
                        }],
                        run_as_accounts: Vec::new(),
                        registered_ms: now,
                        health: "Normal".into(),
                    },
                )?;
                let cname = format!("cloud_{}", Site::guid(t, 0)?);
                t.insert(
                    &format!("{fabric}/replicationProtectionContainers/{cname}"),
                    Some(&fabric),
                    &ProtectionContainer {
                        friendly_name: cname.clone(),
                        fabric_friendly_name: fname.clone(),
                        fabric_type: "VMware".into(),
                        pairing_status: "NotPaired".into(),
                        role: "Primary".into(),
                    },
                )?;
                Ok(Ok(TaskOutput::new()))
            })
        }
        // "Restarting job": the restarted tasks that follow do the work again.
        "PolicyPrerequisites" | "RestartJob" => Ok(Ok(TaskOutput::new())),
        "CreatePolicy" => {
            let (id, pname) = (s("policy"), s("name"));
            let details: PolicyDetails =
                serde_json::from_value(input.get("details").cloned().unwrap_or_default())
                    .map_err(|e| Error::invalid(format!("the job's policy: {e}")))?;
            site.tx(|t| {
                let v = the_vault(t)?;
                for (id, name, instance) in [
                    (id.clone(), pname.clone(), "InMageAzureV2"),
                    (
                        format!("{id}-failback"),
                        format!("{pname}-failback"),
                        "InMage",
                    ),
                ] {
                    if !t.exists(&id)? {
                        t.insert(
                            &id,
                            Some(&v.id),
                            &ReplicationPolicy {
                                friendly_name: name,
                                instance_type: instance.into(),
                                provider_specific_details: details,
                            },
                        )?;
                    }
                }
                Ok(Ok(TaskOutput::new()))
            })
        }
        "AssociatePolicy" => {
            let (policy, container, mapping) = (s("policy"), s("container"), s("mapping"));
            site.tx(|t| {
                let p = t.get::<ReplicationPolicy>(&policy)?;
                let mut c = t.get::<ProtectionContainer>(&container)?;
                for (id, pid, pname) in [
                    (mapping.clone(), p.id.clone(), p.name.clone()),
                    (
                        format!("{container}/replicationProtectionContainerMappings/{}-failback-mapping", p.name),
                        format!("{}-failback", p.id),
                        format!("{}-failback", p.name),
                    ),
                ] {
                    if !t.exists(&id)? {
                        t.insert(
                            &id,
                            Some(&container),
                            &ContainerMapping {
                                policy_id: pid,
                                policy_friendly_name: pname,
                                target_protection_container_id: "Microsoft Azure".into(),
                                state: "Paired".into(),
                                health: "Normal".into(),
                            },
                        )?;
                    }
                }
                c.properties.pairing_status = "Paired".into();
                t.update(&mut c)?;
                Ok(Ok(TaskOutput::new()))
            })
        }
        _ => super::protect::task_work(site, job, i, name, progress),
    }
}

/// A `RestartJob` for `old`.
///
/// # Errors
/// The job cannot be restarted.
pub fn restart(t: &Tx<'_>, seed: u64, d: &Durations, old: &Resource<Job>) -> Result<Resource<Job>> {
    let v = the_vault(t)?;
    let now = now_ms(t)?;
    let effect: ItemEffect = serde_json::from_value(
        old.properties
            .input
            .get("effect")
            .cloned()
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    if let Some(item) = &effect.item {
        super::protect::restartable(t, old, item)?;
    }
    let first = old
        .properties
        .tasks
        .iter()
        .position(|t| t.state != JobState::Succeeded)
        .unwrap_or(0);
    let mut tasks: Vec<(&str, &str)> = vec![("RestartJob", "Restarting job")];
    tasks.extend(
        old.properties.tasks[first..]
            .iter()
            .map(|t| (t.name.as_str(), t.friendly_name.as_str())),
    );
    let mut job = Job::new(
        "RestartJob",
        "Restart job",
        (
            &old.properties.target_object_id,
            &old.properties.target_object_name,
            &old.properties.target_instance_type,
        ),
        &tasks,
        d,
        now,
    );
    // The restarted tasks keep their modelled durations (initial replication's depends on
    // the data).
    for (n, t) in job
        .tasks
        .iter_mut()
        .skip(1)
        .zip(&old.properties.tasks[first..])
    {
        n.duration_ms = t.duration_ms;
    }
    job.restarted_from = Some(old.id.clone());
    let mut input = old.properties.input.clone();
    if let Some(o) = input.as_object_mut() {
        o.remove("effect");
        o.insert(
            "restartedScenario".into(),
            old.properties.scenario_name.clone().into(),
        );
    }
    job.input = input;
    if let Some(item) = &effect.item {
        super::protect::restarting(t, item, &effect)?;
    }
    start_job(t, seed, &v.id, job, effect)
}
