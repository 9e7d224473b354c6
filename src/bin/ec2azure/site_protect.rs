//! The simulator's commands for machines and replication: the AWS estate as the site sees it,
//! machines (add, discover), check-machine, replication enable / status / disable.

use crate::site::{SiteOpt, WaitOpt, finish_job, print_json};
use anyhow::Result;
use clap::Subcommand;
use ec2azure::clock::format_time;
use ec2azure::site::checks::{Outcome, TargetFacts};
use ec2azure::site::protect::EnableRequest;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum AwsCommand {
    /// EC2 instances.
    Instances {
        /// Show one (id or Name tag) instead of listing.
        id: Option<String>,
    },
    /// EBS volumes.
    Volumes {
        /// Show one instead of listing.
        id: Option<String>,
    },
    /// Security groups and their ingress rules.
    SecurityGroups {
        /// Show one instead of listing.
        id: Option<String>,
    },
    /// Snapshots.
    Snapshots,
}

#[derive(Subcommand)]
pub(crate) enum MachineCommand {
    /// Add a machine by name, IP address and OS type (matched to the EC2 instance with that
    /// private IP).
    Add {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its IP address.
        #[arg(long)]
        ip: String,
        /// `Windows` or `Linux`.
        #[arg(long)]
        os_type: String,
        /// The configuration server (when there are several).
        #[arg(long)]
        config_server: Option<String>,
    },
    /// Add every EC2 instance (but the configuration server).
    Discover {
        /// The configuration server (when there are several).
        #[arg(long)]
        config_server: Option<String>,
    },
    /// List the machines.
    List,
}

#[derive(clap::Args)]
pub(crate) struct CheckMachineArgs {
    /// The machine.
    machine: String,
    /// The run-as account the push install would use.
    #[arg(long)]
    account: Option<String>,
    /// The target storage account.
    #[arg(long, default_value = "")]
    storage_account: String,
    /// The VM's name in Azure (default: the machine's).
    #[arg(long)]
    vm_name: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum ReplicationCommand {
    /// Enable replication: the Enable protection job, then Finalize protection.
    Enable(Box<EnableArgs>),
    /// The replicated items and their state, health and RPO (one with its details).
    Status {
        /// One item.
        item: Option<String>,
    },
    /// Disable replication.
    Disable {
        /// The item.
        item: String,
        /// Keep the replica's files.
        #[arg(long)]
        keep_replica: bool,
        #[command(flatten)]
        wait: WaitOpt,
    },
}

#[derive(clap::Args)]
pub(crate) struct EnableArgs {
    /// The machine.
    machine: String,
    /// The run-as account for the push install.
    #[arg(long)]
    account: String,
    /// The policy (default: the one associated with the configuration server).
    #[arg(long)]
    policy: Option<String>,
    /// The configuration server (when there are several).
    #[arg(long)]
    config_server: Option<String>,
    /// The target resource group.
    #[arg(long)]
    resource_group: String,
    /// The target storage account.
    #[arg(long)]
    storage_account: String,
    /// The target virtual network.
    #[arg(long)]
    network: String,
    /// The target subnet.
    #[arg(long, default_value = "default")]
    subnet: String,
    /// The VM's name in Azure (default: the machine's).
    #[arg(long)]
    vm_name: Option<String>,
    /// A multi-VM consistency group.
    #[arg(long)]
    multi_vm_group: Option<String>,
    /// Run the clock until both jobs end (Enable protection, then Finalize protection).
    #[arg(long)]
    wait: bool,
}

pub(crate) fn aws_cmd(c: AwsCommand, o: &SiteOpt) -> Result<ExitCode> {
    let mut site = o.open()?;
    let v = site.with_estate(|_, e| {
        let one = |x: Option<String>| x.into_iter().collect::<Vec<_>>();
        Ok(match c {
            AwsCommand::Instances { id } => {
                let all = e.ec2.describe_instances(&[])?;
                let sel: Vec<_> = match id {
                    Some(id) => all
                        .into_iter()
                        .filter(|i| i.id == id || i.name.as_deref() == Some(id.as_str()))
                        .collect(),
                    None => all,
                };
                serde_json::to_value(sel).unwrap_or_default()
            }
            AwsCommand::Volumes { id } => {
                serde_json::to_value(e.ec2.describe_volumes(&one(id))?).unwrap_or_default()
            }
            AwsCommand::SecurityGroups { id } => {
                serde_json::to_value(e.ec2.describe_security_groups(&one(id))?).unwrap_or_default()
            }
            AwsCommand::Snapshots => {
                serde_json::to_value(e.ec2.describe_snapshots(&[])?).unwrap_or_default()
            }
        })
    })?;
    if o.json {
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    for x in v.as_array().into_iter().flatten() {
        let s = |k: &str| x.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
        if x.get("instanceType").is_some() || x.get("instance_type").is_some() {
            println!(
                "{}  {:<16} {:<15} {:<8} {:<12} {}",
                s("id"),
                x.get("name").and_then(|v| v.as_str()).unwrap_or("-"),
                x.get("private_ip")
                    .or_else(|| x.get("privateIp"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("-"),
                x.get("platform").and_then(|v| v.as_str()).unwrap_or("-"),
                x.get("instance_type")
                    .or_else(|| x.get("instanceType"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("-"),
                x.get("state").and_then(|v| v.as_str()).unwrap_or("-"),
            );
        } else {
            println!("{x}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn machine_cmd(c: MachineCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    let list = match c {
        MachineCommand::Add {
            name,
            ip,
            os_type,
            config_server,
        } => vec![site.add_machine(&name, &ip, &os_type, config_server.as_deref())?],
        MachineCommand::Discover { config_server } => {
            site.discover_machines(config_server.as_deref())?
        }
        MachineCommand::List => site.machines()?,
    };
    if o.json {
        print_json(&list)?;
    } else if !quiet {
        for m in &list {
            let p = &m.properties;
            println!(
                "{:<16} {:<15} {:<8} {:<12} {}",
                p.friendly_name,
                p.ip_address,
                p.os_type,
                p.protection_status,
                if p.instance_id.is_empty() {
                    "(no EC2 instance has this IP)"
                } else {
                    &p.instance_id
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check_machine_cmd(a: CheckMachineArgs, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    let results = site.check_machine(
        &a.machine,
        a.account.as_deref(),
        &TargetFacts {
            storage_account: a.storage_account,
            vm_name: a.vm_name,
        },
    )?;
    let failed = results.iter().any(|r| r.outcome == Outcome::Failed);
    if o.json {
        print_json(&results)?;
    } else if !quiet {
        for r in &results {
            let id = r.error_id.map(|i| format!(" [{i}]")).unwrap_or_default();
            println!(
                "{:<8} {:<28}{id} {}",
                format!("{:?}", r.outcome),
                r.name,
                r.message
            );
            if r.outcome == Outcome::Failed {
                println!("         possible causes: {}", r.possible_causes);
                println!("         recommended action: {}", r.recommended_action);
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn replication_cmd(c: ReplicationCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    match c {
        ReplicationCommand::Enable(a) => {
            let req = EnableRequest {
                machine: a.machine,
                config_server: a.config_server,
                policy: a.policy,
                account: a.account,
                resource_group: a.resource_group,
                storage_account: a.storage_account,
                network: a.network,
                subnet: a.subnet,
                vm_name: a.vm_name,
                multi_vm_group: a.multi_vm_group,
            };
            let job = site.enable_replication(&req)?;
            if !a.wait {
                return finish_job(&mut site, job, false, o, quiet);
            }
            let item = job.properties.target_object_id.clone();
            let code = finish_job(&mut site, job, true, o, quiet)?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            // Finalize protection follows on its own.
            let it = site.item(&item)?;
            match it.properties.current_job_id {
                Some(j) => {
                    let fin = site.job(&j)?;
                    finish_job(&mut site, fin, true, o, quiet)
                }
                None => Ok(code),
            }
        }
        ReplicationCommand::Status { item } => {
            let vault = site.vault()?.id;
            let items = match item {
                Some(i) => vec![site.item(&i)?],
                None => site.items()?,
            };
            if o.json {
                let v: Vec<_> = items
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "id": i.id, "name": i.name, "properties": i.properties.view(&vault),
                        })
                    })
                    .collect();
                print_json(&v)?;
            } else {
                for i in &items {
                    let v = i.properties.view(&vault);
                    println!(
                        "{:<16} {:<32} health {:<8} RPO {:<8} last point {}  allowed: {}",
                        v.friendly_name,
                        v.protection_state_description,
                        v.replication_health,
                        v.provider_specific_details
                            .rpo_in_seconds
                            .map_or("-".into(), |s| format!("{s}s")),
                        i.properties
                            .last_recovery_point_received_ms
                            .map_or("-".into(), format_time),
                        v.allowed_operations
                            .iter()
                            .map(|o| o.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    for e in v.health_errors {
                        println!(
                            "    {} {}: {}",
                            e.error_level, e.error_code, e.error_message
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ReplicationCommand::Disable {
            item,
            keep_replica,
            wait,
        } => {
            let job = site.disable_replication(&item, keep_replica)?;
            finish_job(&mut site, job, !wait.no_wait, o, quiet)
        }
    }
}
