//! The simulator's recovery-plan commands: create a plan of boot groups with manual and script
//! actions, list and show plans, and run a plan's test failover, its cleanup, its failover and
//! its commit, each a job waited for like the other site commands.

use crate::site::{SiteOpt, WaitOpt, finish_job, print_json};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ec2azure::site::jobs::JobState;
use ec2azure::site::plans::{
    ActionDetails, GroupType, PlanAction, PlanFailover, PlanSpec, RecoveryPlan,
};
use ec2azure::site::states::Operation;
use ec2azure::site::store::Resource;
use std::process::ExitCode;

/// A script action's time limit when none is given (seconds).
const SCRIPT_TIMEOUT_S: u64 = 600;

#[derive(clap::Args)]
pub(crate) struct PlanPointArgs {
    /// The recovery point: latest, latest-processed, latest-app-consistent,
    /// latest-crash-consistent, latest-multi-vm-processed or latest-multi-vm-app-consistent
    /// (the machines of a replication group to their latest common point, the others to their
    /// own latest).
    #[arg(long, default_value = "latest-processed")]
    point: String,
}

#[derive(Subcommand)]
pub(crate) enum PlanCommand {
    /// Create a recovery plan: boot groups in order, machines of a group in parallel.
    Create {
        /// The plan's name.
        name: String,
        /// A boot group: its machines, comma-separated (repeat: Group 1 first, up to seven).
        #[arg(long = "group", value_delimiter = ',', num_args = 1, action = clap::ArgAction::Append)]
        groups: Vec<String>,
        /// A manual action: `GROUP:before|after:NAME:DESCRIPTION` (repeat).
        #[arg(long)]
        manual: Vec<String>,
        /// A script action: `GROUP:before|after:NAME:PATH` (repeat); the program gets the
        /// runbook context as JSON on its standard input.
        #[arg(long)]
        script: Vec<String>,
        /// A script action's time limit, seconds.
        #[arg(long, default_value_t = SCRIPT_TIMEOUT_S)]
        script_timeout: u64,
        /// The failover types the actions run for: test, failover (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "test,failover")]
        types: Vec<String>,
    },
    /// List the recovery plans.
    List,
    /// Show a plan: its groups, actions, state and allowed operations.
    Show {
        /// The plan.
        name: String,
    },
    /// Test failover of every machine of the plan, group by group.
    TestFailover {
        /// The plan.
        name: String,
        #[command(flatten)]
        point: PlanPointArgs,
        /// The virtual network (default: each machine's target network).
        #[arg(long)]
        network: Option<String>,
        /// The subnet.
        #[arg(long)]
        subnet: Option<String>,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Cleanup test failover of the plan's machines.
    Cleanup {
        /// The plan.
        name: String,
        /// Notes on the test (up to 1,024 characters).
        #[arg(long, default_value = "")]
        notes: String,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Failover of the plan's machines (replication stops first).
    Failover {
        /// The plan.
        name: String,
        #[command(flatten)]
        point: PlanPointArgs,
        /// Shut the machines down before beginning failover.
        #[arg(long)]
        shutdown: bool,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Commit the failover of the plan's machines.
    Commit {
        /// The plan.
        name: String,
        #[command(flatten)]
        wait: WaitOpt,
    },
}

/// `test` or `failover` as the operation an action is scoped to.
fn failover_type(s: &str) -> Result<Operation> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "test" | "testfailover" => Operation::TestFailover,
        "failover" | "unplannedfailover" => Operation::UnplannedFailover,
        other => bail!("--types: {other:?} is not a failover type (test, failover)"),
    })
}

/// `GROUP:before|after:NAME:REST` into the group number, before, the name and the rest.
fn action_spec<'a>(flag: &str, s: &'a str) -> Result<(usize, bool, &'a str, &'a str)> {
    let parts: Vec<&str> = s.splitn(4, ':').collect();
    let [g, when, name, rest] = parts[..] else {
        bail!(
            "--{flag} {s:?}: expected GROUP:before|after:NAME:{}",
            flag_rest(flag)
        );
    };
    let g: usize = g
        .trim()
        .parse()
        .with_context(|| format!("--{flag} {s:?}: the group {g:?} is not a number"))?;
    let before = match when.trim() {
        "before" | "pre" => true,
        "after" | "post" => false,
        w => bail!("--{flag} {s:?}: {w:?} is neither before nor after"),
    };
    if name.trim().is_empty() {
        bail!("--{flag} {s:?}: the action has no name");
    }
    Ok((g, before, name.trim(), rest))
}

fn flag_rest(flag: &str) -> &'static str {
    if flag == "script" {
        "PATH"
    } else {
        "DESCRIPTION"
    }
}

/// The item's name from its id (`…/replicationProtectedItems/NAME`).
fn item_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn ops(list: &[Operation]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_plan_line(p: &Resource<RecoveryPlan>) {
    let machines: usize = p
        .properties
        .groups
        .iter()
        .map(|g| g.replication_protected_items.len())
        .sum();
    println!(
        "{:<24} {:<20} {} machine(s), allowed: {}",
        p.name,
        format!("{:?}", p.properties.state),
        machines,
        ops(p.properties.state.allowed())
    );
}

fn print_action(when: &str, a: &PlanAction) {
    let what = match &a.custom_details {
        ActionDetails::ManualActionDetails { description } => format!("manual: {description}"),
        ActionDetails::ScriptActionDetails { path, timeout, .. } => {
            format!("script: {path} (limit {timeout} s)")
        }
    };
    println!(
        "    {when}: {} [{}] {what}",
        a.action_name,
        ops(&a.failover_types)
    );
}

fn print_plan(p: &Resource<RecoveryPlan>) {
    let r = &p.properties;
    println!("{}  {:?}", p.name, r.state);
    println!(
        "  source: {}  target: {} ({})",
        r.primary_fabric_friendly_name,
        r.recovery_fabric_friendly_name,
        r.failover_deployment_model
    );
    let mut boot = 0;
    for g in &r.groups {
        let title = match g.group_type {
            GroupType::Shutdown => "Shutdown".to_string(),
            GroupType::Failover => "Failover".to_string(),
            GroupType::Boot => {
                boot += 1;
                format!("Group {boot}")
            }
        };
        let names: Vec<&str> = g
            .replication_protected_items
            .iter()
            .map(|i| item_name(i))
            .collect();
        println!(
            "  {title}: {}",
            if names.is_empty() {
                "-".to_string()
            } else {
                names.join(", ")
            }
        );
        for a in &g.start_group_actions {
            print_action("before", a);
        }
        for a in &g.end_group_actions {
            print_action("after", a);
        }
    }
    println!("  allowed operations: {}", ops(r.state.allowed()));
    if let Some(j) = &r.current_job_id {
        println!("  current job: {}", item_name(j));
    }
}

pub(crate) fn plan_cmd(c: PlanCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    let (name, op, how, comments, wait) = match c {
        PlanCommand::Create {
            name,
            groups,
            manual,
            script,
            script_timeout,
            types,
        } => {
            let failover_types = types
                .iter()
                .map(|t| failover_type(t))
                .collect::<Result<Vec<_>>>()?;
            let action = |action_name: &str, custom_details| PlanAction {
                action_name: action_name.to_string(),
                failover_types: failover_types.clone(),
                failover_directions: vec!["PrimaryToRecovery".into()],
                custom_details,
            };
            let mut actions = Vec::new();
            for m in &manual {
                let (g, before, n, description) = action_spec("manual", m)?;
                actions.push((
                    g,
                    before,
                    action(
                        n,
                        ActionDetails::ManualActionDetails {
                            description: description.to_string(),
                        },
                    ),
                ));
            }
            for s in &script {
                let (g, before, n, path) = action_spec("script", s)?;
                actions.push((
                    g,
                    before,
                    action(
                        n,
                        ActionDetails::ScriptActionDetails {
                            path: path.to_string(),
                            timeout: script_timeout,
                            fabric_location: "Recovery".into(),
                        },
                    ),
                ));
            }
            let spec = PlanSpec {
                name,
                groups: groups
                    .iter()
                    .map(|g| {
                        g.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .collect(),
                actions,
            };
            let p = site.create_plan(&spec)?;
            if o.json {
                print_json(&p)?;
            } else if !quiet {
                print_plan(&p);
            }
            return Ok(ExitCode::SUCCESS);
        }
        PlanCommand::List => {
            let plans = site.plans()?;
            if o.json {
                print_json(&plans)?;
            } else {
                for p in &plans {
                    print_plan_line(p);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        PlanCommand::Show { name } => {
            let p = site
                .plans()?
                .into_iter()
                .find(|p| p.name == name || p.id == name)
                .with_context(|| format!("no recovery plan {name}"))?;
            if o.json {
                print_json(&p)?;
            } else {
                print_plan(&p);
            }
            return Ok(ExitCode::SUCCESS);
        }
        PlanCommand::TestFailover {
            name,
            point,
            network,
            subnet,
            wait,
        } => (
            name,
            Operation::TestFailover,
            PlanFailover {
                point: point.point,
                network,
                subnet,
                shutdown: false,
            },
            String::new(),
            wait,
        ),
        PlanCommand::Cleanup { name, notes, wait } => (
            name,
            Operation::TestFailoverCleanup,
            PlanFailover::default(),
            notes,
            wait,
        ),
        PlanCommand::Failover {
            name,
            point,
            shutdown,
            wait,
        } => (
            name,
            Operation::UnplannedFailover,
            PlanFailover {
                point: point.point,
                network: None,
                subnet: None,
                shutdown,
            },
            String::new(),
            wait,
        ),
        PlanCommand::Commit { name, wait } => (
            name,
            Operation::Commit,
            PlanFailover::default(),
            String::new(),
            wait,
        ),
    };
    let job = site.plan_job(&name, op, &how, &comments)?;
    let id = job.id.clone();
    let code = finish_job(&mut site, job, !wait.no_wait, o, quiet)?;
    let job = site.job(&id)?;
    if job.properties.state == JobState::Suspended && !o.json && !quiet {
        // The manual action the job waits for: the task in progress, and what to do.
        let waiting = job
            .properties
            .tasks
            .iter()
            .find(|t| t.name == "ManualAction" && !t.state.is_final());
        if let Some(t) = waiting {
            let what = t
                .output
                .get("input")
                .and_then(|i| i.pointer("/action/customDetails/description"))
                .and_then(|d| d.as_str())
                .unwrap_or_default();
            println!("  waiting for manual action: {} ({what})", t.friendly_name);
        } else {
            println!("  waiting for manual action");
        }
        println!(
            "  when it is done: ec2azure jobs resume {} --comments \"...\"",
            job.name
        );
    }
    Ok(code)
}
