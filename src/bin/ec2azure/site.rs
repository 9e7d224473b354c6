//! The Site Recovery simulator's commands, in the service's vocabulary: the site, its clock,
//! the vault, the configuration server, policies and jobs. Each parses, calls one library
//! function on a `Site`, and prints (text, or the service-shaped JSON with `--json`).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use ec2azure::NoProgress;
use ec2azure::clock::{format_duration, format_time, parse_duration};
use ec2azure::cloud::aws_ebs::AwsEbs;
use ec2azure::cloud::aws_ec2::AwsEc2;
use ec2azure::site::estate::AwsMode;
use ec2azure::site::jobs::{Job, JobState};
use ec2azure::site::model::{MultiVmSync, PolicyDetails};
use ec2azure::site::scenario::{Scenario, init_site};
use ec2azure::site::store::Resource;
use ec2azure::site::{DEFAULT_DIR, Site};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the site is: `--site DIR`, else `EC2AZURE_SITE`, else `./ec2azure-site`.
#[derive(Args, Clone)]
pub(crate) struct SiteOpt {
    /// The site folder.
    #[arg(long, global = true, env = "EC2AZURE_SITE", default_value = DEFAULT_DIR)]
    pub site: PathBuf,
    /// Print the service-shaped JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl SiteOpt {
    pub fn open(&self) -> Result<Site> {
        let s = Site::open(&self.site)?;
        for j in s.recovered() {
            eprintln!("note: job {j} was interrupted (its process stopped) and is marked Failed");
        }
        Ok(s)
    }
}

#[derive(Subcommand)]
pub(crate) enum SiteCommand {
    /// Make a new site (optionally from a scenario file).
    Init {
        /// The scenario (TOML): clock, seed, durations, the AWS estate.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Use this EC2/EBS endpoint (AWS's, or an emulator such as moto) instead of the
        /// in-process fake; the scenario's `[aws]` estate is loaded onto it.
        #[arg(long)]
        aws_endpoint: Option<String>,
        /// The AWS region (with --aws-endpoint).
        #[arg(long)]
        aws_region: Option<String>,
    },
    /// Show the site: its clock, settings and what it holds.
    Show,
}

#[derive(Subcommand)]
pub(crate) enum ClockCommand {
    /// The simulated time.
    Show,
    /// Run the site forward: jobs, replication, points, health.
    Advance {
        /// How long (`90s`, `15m`, `2h`, `1d`).
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum VaultCommand {
    /// Create the Recovery Services vault.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// The resource group it goes in.
        #[arg(long)]
        resource_group: String,
        /// The Azure region.
        #[arg(long)]
        location: String,
    },
    /// Download the vault registration key (valid five days) into a file.
    Key {
        /// The file (default: VAULT.VaultCredentials in the site).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the vault.
    Show,
}

#[derive(Args)]
pub(crate) struct WaitOpt {
    /// Return as soon as the job is created, without running the clock until it ends.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Subcommand)]
pub(crate) enum ConfigServerCommand {
    /// Register a configuration server (the EC2 instance running it) with the vault.
    Register {
        /// The vault credentials file (`vault key`).
        #[arg(long)]
        key: PathBuf,
        /// Its name.
        #[arg(long, default_value = "ConfigurationServer")]
        name: String,
        /// The EC2 instance it runs on (id or Name tag).
        #[arg(long)]
        instance: String,
        /// Its private IP (default: the instance's).
        #[arg(long)]
        ip: Option<String>,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Add a run-as account the push install uses.
    AddAccount {
        /// The account's friendly name (`LinuxAccount`).
        #[arg(long)]
        name: String,
        /// The user it logs in as (`root`, `Administrator`, `CONTOSO\admin`).
        #[arg(long)]
        user: String,
        /// A domain account.
        #[arg(long)]
        domain: bool,
        /// The configuration server (when there are several).
        #[arg(long)]
        config_server: Option<String>,
    },
    /// Stop the process server (an outage) or start it again.
    ProcessServer {
        /// `stop` or `start`.
        action: String,
        /// The configuration server (when there are several).
        #[arg(long)]
        config_server: Option<String>,
    },
    /// List the configuration servers.
    List,
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create a replication policy (the tutorial's defaults unless given).
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Recovery point retention (0 to 15d).
        #[arg(long, default_value = "24h")]
        retention: String,
        /// App-consistent snapshot frequency (0, or 1h to 12h).
        #[arg(long, default_value = "60m")]
        app_frequency: String,
        /// RPO threshold that raises an alert.
        #[arg(long, default_value = "15m")]
        rpo_threshold: String,
        /// Multi-VM consistency.
        #[arg(long)]
        multi_vm: bool,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Associate a policy with a configuration server.
    Associate {
        /// The policy.
        #[arg(long)]
        policy: String,
        /// The configuration server (when there are several).
        #[arg(long)]
        config_server: Option<String>,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// List the policies.
    List,
}

#[derive(Subcommand)]
pub(crate) enum JobsCommand {
    /// List jobs.
    List {
        /// Only jobs in this state.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show a job with its tasks and errors.
    Show {
        /// Its id or name.
        job: String,
    },
    /// Cancel a running job.
    Cancel {
        /// Its id or name.
        job: String,
    },
    /// Restart a failed or cancelled job.
    Restart {
        /// Its id or name.
        job: String,
    },
    /// Resume a suspended job.
    Resume {
        /// Its id or name.
        job: String,
        /// Comments.
        #[arg(long)]
        comments: Option<String>,
    },
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The longest a command's wait runs the clock for a job.
const WAIT_LIMIT_MS: u64 = 30 * 24 * 3_600_000;

/// Runs the clock until `job` ends unless told not to; prints it; exit 1 when it failed.
pub(crate) fn finish_job(
    site: &mut Site,
    job: Resource<Job>,
    wait: bool,
    o: &SiteOpt,
    quiet: bool,
) -> Result<ExitCode> {
    let job = if wait {
        site.wait_for(&job.id, WAIT_LIMIT_MS, &NoProgress)?;
        site.job(&job.id)?
    } else {
        job
    };
    if o.json {
        print_json(&job.properties.view(&job.id))?;
    } else if !quiet {
        print_job_line(&job);
        for e in &job.properties.errors {
            println!("  error {}: {}", e.error_code, e.error_message);
            println!("    possible causes: {}", e.possible_causes);
            println!("    recommended action: {}", e.recommended_action);
        }
    }
    Ok(match job.properties.state {
        JobState::Failed | JobState::Cancelled => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

fn print_job_line(j: &Resource<Job>) {
    let p = &j.properties;
    let took = p
        .end_ms
        .map(|e| format!(", {}", format_duration(e.saturating_sub(p.start_ms))))
        .unwrap_or_default();
    println!(
        "{}  {:<28} {:<12} {} ({}{took})",
        j.name,
        p.friendly_name,
        format!("{:?}", p.state),
        p.target_object_name,
        format_time(p.start_ms),
    );
}

pub(crate) fn site_cmd(c: SiteCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    match c {
        SiteCommand::Init {
            scenario,
            aws_endpoint,
            aws_region,
        } => {
            let sc = match &scenario {
                Some(p) => Scenario::load(p)?,
                None => Scenario::default(),
            };
            let base = scenario
                .as_deref()
                .and_then(|p| p.parent())
                .map(PathBuf::from)
                .unwrap_or_default();
            let mode = match &aws_endpoint {
                None => AwsMode::Fake,
                Some(e) => {
                    if let Some(a) = sc.aws()? {
                        let ec2 = AwsEc2::new(Some(e), aws_region.as_deref())?;
                        let ebs = AwsEbs::new(Some(e), aws_region.as_deref())?;
                        ec2.load_scenario(&a, &base, &ebs)?;
                    }
                    AwsMode::Endpoint {
                        endpoint: Some(e.clone()),
                        region: aws_region.clone(),
                    }
                }
            };
            let site = init_site(&o.site, &sc, &base, mode)?;
            if o.json {
                print_json(site.config())?;
            } else if !quiet {
                println!(
                    "Made site {} (clock {}, seed {})",
                    o.site.display(),
                    format_time(site.config().start_ms),
                    site.config().seed
                );
            }
        }
        SiteCommand::Show => {
            let mut site = o.open()?;
            let now = site.now_ms()?;
            let jobs = site.jobs()?;
            if o.json {
                print_json(&serde_json::json!({
                    "site": o.site, "clock": format_time(now), "config": site.config(),
                    "jobs": jobs.len(),
                }))?;
            } else {
                println!("site:  {}", o.site.display());
                println!("clock: {}", format_time(now));
                println!("seed:  {}", site.config().seed);
                println!("jobs:  {}", jobs.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn clock_cmd(c: ClockCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    match c {
        ClockCommand::Show => {
            let now = site.now_ms()?;
            if o.json {
                print_json(&serde_json::json!({ "now": format_time(now) }))?;
            } else {
                println!("{}", format_time(now));
            }
        }
        ClockCommand::Advance { by } => {
            let ms = parse_duration(&by)?;
            let r = site.advance(ms, &NoProgress)?;
            if o.json {
                print_json(&r)?;
            } else if !quiet {
                println!("{} -> {} (real work {} ms)", r.from, r.to, r.wall_ms);
                for t in &r.tasks_run {
                    println!("  ran {t}");
                }
                for (j, s) in &r.jobs_ended {
                    println!("  job {j} ended {s:?}");
                }
                let rep = &r.replication;
                if rep.items > 0 {
                    println!(
                        "  replication: {} items, {} written, {} points, {} pruned",
                        rep.items,
                        crate::human(rep.bytes_written),
                        rep.points,
                        rep.pruned
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn vault_cmd(c: VaultCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    match c {
        VaultCommand::Create {
            name,
            resource_group,
            location,
        } => {
            let v = site.create_vault(&resource_group, &name, &location)?;
            if o.json {
                print_json(&v)?;
            } else if !quiet {
                println!("Created vault {} in {}", v.name, resource_group);
            }
        }
        VaultCommand::Key { out } => {
            let v = site.vault()?;
            let out =
                out.unwrap_or_else(|| site.dir().join(format!("{}.VaultCredentials", v.name)));
            let k = site.issue_key(&out)?;
            if o.json {
                print_json(&serde_json::json!({
                    "file": out, "validTo": format_time(k.expires_ms),
                }))?;
            } else if !quiet {
                println!(
                    "Wrote the vault registration key to {} (valid until {})",
                    out.display(),
                    format_time(k.expires_ms)
                );
            }
        }
        VaultCommand::Show => {
            let v = site.vault()?;
            if o.json {
                print_json(&v)?;
            } else {
                println!("{}  {} ({})", v.name, v.id, v.properties.location);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn config_server_cmd(
    c: ConfigServerCommand,
    o: &SiteOpt,
    quiet: bool,
) -> Result<ExitCode> {
    let mut site = o.open()?;
    match c {
        ConfigServerCommand::Register {
            key,
            name,
            instance,
            ip,
            wait,
        } => {
            let inst = site.instance(&instance)?;
            let ip = match ip.or_else(|| inst.private_ip.clone()) {
                Some(ip) => ip,
                None => bail!("instance {} has no private IP: give --ip", inst.id),
            };
            let job = site.register_config_server(&key, &name, &inst.id, &ip)?;
            finish_job(&mut site, job, !wait.no_wait, o, quiet)
        }
        ConfigServerCommand::AddAccount {
            name,
            user,
            domain,
            config_server,
        } => {
            let fabric = fabric_name(&mut site, config_server.as_deref())?;
            let f = site.add_account(&fabric, &name, &user, domain)?;
            if o.json {
                print_json(&f)?;
            } else if !quiet {
                println!("Added run-as account {name} ({user}) to {}", f.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigServerCommand::ProcessServer {
            action,
            config_server,
        } => {
            let running = match action.as_str() {
                "start" => true,
                "stop" => false,
                other => bail!("process-server {other:?}: expected start or stop"),
            };
            let fabric = fabric_name(&mut site, config_server.as_deref())?;
            let f = site.set_process_server(&fabric, running)?;
            if o.json {
                print_json(&f)?;
            } else if !quiet {
                println!(
                    "Process server of {} {}",
                    f.name,
                    if running { "started" } else { "stopped" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigServerCommand::List => {
            let all = site.tx(|t| t.list::<ec2azure::site::model::Fabric>(None))?;
            if o.json {
                print_json(&all)?;
            } else {
                for f in all {
                    let p = &f.properties;
                    println!(
                        "{}  {} ({}), {} run-as accounts, process server {}",
                        f.name,
                        p.ip_address,
                        p.instance_id,
                        p.run_as_accounts.len(),
                        p.process_servers
                            .first()
                            .map_or("none", |s| s.ps_service_status.as_str())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fabric_name(site: &mut Site, name: Option<&str>) -> Result<String> {
    Ok(site
        .tx(|t| ec2azure::site::vault::pick_fabric(t, name))?
        .name)
}

fn minutes(s: &str) -> Result<u64> {
    if s == "0" {
        return Ok(0);
    }
    let ms = parse_duration(s)?;
    if ms % 60_000 != 0 {
        bail!("{s:?}: expected whole minutes");
    }
    Ok(ms / 60_000)
}

pub(crate) fn policy_cmd(c: PolicyCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    match c {
        PolicyCommand::Create {
            name,
            retention,
            app_frequency,
            rpo_threshold,
            multi_vm,
            wait,
        } => {
            let p = PolicyDetails {
                recovery_point_history: minutes(&retention)?,
                app_consistent_frequency_in_minutes: minutes(&app_frequency)?,
                recovery_point_threshold_in_minutes: minutes(&rpo_threshold)?,
                multi_vm_sync_status: if multi_vm {
                    MultiVmSync::Enable
                } else {
                    MultiVmSync::Disable
                },
                ..PolicyDetails::default()
            };
            let job = site.create_policy(&name, p)?;
            finish_job(&mut site, job, !wait.no_wait, o, quiet)
        }
        PolicyCommand::Associate {
            policy,
            config_server,
            wait,
        } => {
            let fabric = fabric_name(&mut site, config_server.as_deref())?;
            let job = site.associate_policy(&policy, &fabric)?;
            finish_job(&mut site, job, !wait.no_wait, o, quiet)
        }
        PolicyCommand::List => {
            let all = site.tx(|t| t.list::<ec2azure::site::model::ReplicationPolicy>(None))?;
            if o.json {
                print_json(&all)?;
            } else {
                for p in all {
                    let d = &p.properties.provider_specific_details;
                    println!(
                        "{}  {}: retention {}m, app-consistent every {}m, RPO threshold {}m, multi-VM {:?}",
                        p.name,
                        p.properties.instance_type,
                        d.recovery_point_history,
                        d.app_consistent_frequency_in_minutes,
                        d.recovery_point_threshold_in_minutes,
                        d.multi_vm_sync_status
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn jobs_cmd(c: JobsCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    let show = |j: &Resource<Job>| -> Result<()> {
        if o.json {
            print_json(&j.properties.view(&j.id))
        } else {
            print_job_line(j);
            Ok(())
        }
    };
    match c {
        JobsCommand::List { state } => {
            let jobs: Vec<_> = site
                .jobs()?
                .into_iter()
                .filter(|j| {
                    state
                        .as_deref()
                        .is_none_or(|s| format!("{:?}", j.properties.state).eq_ignore_ascii_case(s))
                })
                .collect();
            if o.json {
                let v: Vec<_> = jobs.iter().map(|j| j.properties.view(&j.id)).collect();
                print_json(&v)?;
            } else {
                for j in &jobs {
                    print_job_line(j);
                }
            }
        }
        JobsCommand::Show { job } => {
            let j = site.job(&job)?;
            if o.json {
                print_json(&j.properties.view(&j.id))?;
            } else {
                print_job_line(&j);
                for t in &j.properties.tasks {
                    println!(
                        "  {:<52} {:?}{}",
                        t.friendly_name,
                        t.state,
                        t.end_ms
                            .zip(t.start_ms)
                            .map(|(e, s)| format!(" ({})", format_duration(e.saturating_sub(s))))
                            .unwrap_or_default()
                    );
                    for e in &t.errors {
                        println!("    error {}: {}", e.error_code, e.error_message);
                        println!("      possible causes: {}", e.possible_causes);
                        println!("      recommended action: {}", e.recommended_action);
                    }
                }
                println!(
                    "  allowed actions: {}",
                    j.properties.allowed_actions().join(", ")
                );
            }
        }
        JobsCommand::Cancel { job } => {
            let j = site.cancel_job(&job)?;
            if !quiet {
                show(&j)?;
            }
        }
        JobsCommand::Restart { job } => {
            let j = site.restart_job(&job)?;
            if !quiet {
                show(&j)?;
            }
        }
        JobsCommand::Resume { job, comments } => {
            let j = site.resume_job(&job, comments.as_deref())?;
            if !quiet {
                show(&j)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
