//! Gathering a [`Report`] from a site: one read transaction for the jobs, the histories, the
//! items and the policies, then each remaining item's recovery points.

use super::{
    JobReport, MachineReport, PlanReport, PointMark, RehearsalInfo, Report, Span, TaskReport,
};
use crate::error::Result;
use crate::site::Site;
use crate::site::jobs::{Job, JobState};
use crate::site::model::{FailoverRecord, ItemHistory, ReplicatedItem, ReplicationPolicy};
use crate::site::store::Resource;

/// A job's target type for a replicated item.
const ITEM_JOB: &str = "ProtectionEntity";
/// A job's target type for a recovery plan.
const PLAN_JOB: &str = "RecoveryPlan";

pub(super) fn gather(site: &mut Site, info: &RehearsalInfo) -> Result<Report> {
    let (jobs, histories, items, policies) = site.tx(|t| {
        Ok((
            t.list::<Job>(None)?,
            t.list::<ItemHistory>(None)?,
            t.list::<ReplicatedItem>(None)?,
            t.list::<ReplicationPolicy>(None)?,
        ))
    })?;

    // The machines, in the order they first appear: their jobs, then items, then histories.
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        if !n.is_empty() && !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    };
    for j in jobs
        .iter()
        .filter(|j| j.properties.target_instance_type == ITEM_JOB)
    {
        add(&j.properties.target_object_name);
    }
    for i in &items {
        add(&i.properties.friendly_name);
    }
    for h in &histories {
        add(&h.properties.friendly_name);
    }

    let job_reports: Vec<JobReport> = jobs.iter().map(job_report).collect();
    let mut machines: Vec<MachineReport> = names
        .iter()
        .map(|name| {
            let item = items.iter().find(|i| i.properties.friendly_name == *name);
            let history = histories
                .iter()
                .find(|h| h.properties.friendly_name == *name)
                .map(|h| &h.properties);
            let own: Vec<&Resource<Job>> = jobs
                .iter()
                .filter(|j| {
                    j.properties.target_instance_type == ITEM_JOB
                        && j.properties.target_object_name == *name
                })
                .collect();
            machine(name, item, history, &own, &policies)
        })
        .collect();

    let mut plans: Vec<PlanReport> = Vec::new();
    for j in jobs
        .iter()
        .filter(|j| j.properties.target_instance_type == PLAN_JOB)
    {
        let name = &j.properties.target_object_name;
        let i = match plans.iter().position(|p| p.name == *name) {
            Some(i) => i,
            None => {
                plans.push(PlanReport {
                    name: name.clone(),
                    ..PlanReport::default()
                });
                plans.len() - 1
            }
        };
        let plan = &mut plans[i];
        plan.job_ids.push(j.id.clone());
        for m in &machines {
            let ran_here = m.failovers.iter().any(|f| {
                f.recovery_plan.as_deref().is_some_and(|p| {
                    p == name
                        || p == j.properties.target_object_id
                        || p.ends_with(&format!("/{name}"))
                })
            });
            if ran_here && !plan.machines.contains(&m.name) {
                plan.machines.push(m.name.clone());
            }
        }
    }

    let timeline = span_of(info, &job_reports, &machines);
    for m in &mut machines {
        for s in &mut m.replication {
            if s.end_ms == u64::MAX {
                s.end_ms = timeline.end_ms.max(s.start_ms);
            }
        }
    }

    // The points of the items still there (read outside the transaction: it reads replicas).
    for m in &mut machines {
        if m.state.is_none() {
            continue;
        }
        match site.recovery_points(&m.name) {
            Ok(p) => {
                m.points = p
                    .points
                    .iter()
                    .filter_map(|v| {
                        Some(PointMark {
                            name: v.name.clone(),
                            time_ms: crate::clock::parse_time(&v.recovery_point_time).ok()?,
                            kind: v.recovery_point_type.to_string(),
                        })
                    })
                    .collect();
                if !p.defects.is_empty() {
                    m.points_note = Some(p.defects.join("; "));
                }
            }
            Err(e) => m.points_note = Some(format!("the recovery points cannot be listed: {e}")),
        }
    }

    let met = info.objectives.iter().filter(|o| o.met).count();
    Ok(Report {
        title: info.title.clone(),
        scenario: info.scenario.clone(),
        started_ms: info.started_ms,
        ended_ms: info.ended_ms,
        wall_ms: info.wall_ms,
        timeline,
        objectives_met: met,
        objectives_missed: info.objectives.len() - met,
        objectives: info.objectives.clone(),
        steps: info.steps.clone(),
        faults: info.faults.clone(),
        machines,
        plans,
        jobs: job_reports,
    })
}

fn job_report(j: &Resource<Job>) -> JobReport {
    let p = &j.properties;
    JobReport {
        id: j.id.clone(),
        name: j.name.clone(),
        scenario_name: p.scenario_name.clone(),
        friendly_name: p.friendly_name.clone(),
        target_object_name: p.target_object_name.clone(),
        target_instance_type: p.target_instance_type.clone(),
        state: p.state,
        start_ms: p.start_ms,
        end_ms: p.end_ms,
        wall_ms: p.tasks.iter().map(|t| t.wall_ms).sum(),
        tasks: p
            .tasks
            .iter()
            .map(|t| TaskReport {
                task_id: t.task_id.clone(),
                name: t.name.clone(),
                friendly_name: t.friendly_name.clone(),
                state: t.state,
                state_description: t.state_description.clone(),
                start_ms: t.start_ms,
                end_ms: t.end_ms,
                wall_ms: t.wall_ms,
                errors: t.errors.clone(),
            })
            .collect(),
        errors: p.errors.clone(),
    }
}

/// One machine's report; replication spans still open end at `u64::MAX` (the caller sets the
/// timeline's end).
fn machine(
    name: &str,
    item: Option<&Resource<ReplicatedItem>>,
    history: Option<&ItemHistory>,
    jobs: &[&Resource<Job>],
    policies: &[Resource<ReplicationPolicy>],
) -> MachineReport {
    let failovers: Vec<FailoverRecord> = history.map(|h| h.failovers.clone()).unwrap_or_default();
    let rpo = history.map(|h| h.rpo.clone()).unwrap_or_default();
    let threshold = threshold(item, jobs, policies);
    let max_rpo_seconds = rpo.iter().filter_map(|s| s.rpo_in_seconds).max();
    // The span before a sample is above the threshold when the sample is (the RPO a span
    // ends with is its largest: it only grows until a point arrives, which the sample sees).
    let ms_above_threshold = threshold.map_or(0, |th| {
        rpo.windows(2)
            .filter(|w| {
                w[1].rpo_in_seconds
                    .is_some_and(|r| r > th.saturating_mul(60))
            })
            .map(|w| w[1].time_ms.saturating_sub(w[0].time_ms))
            .sum()
    });
    MachineReport {
        name: name.to_string(),
        state: item.map(|i| i.properties.state.service().description.to_string()),
        replication: replication(jobs, &failovers),
        rpo_threshold_minutes: threshold,
        rpo,
        max_rpo_seconds,
        ms_above_threshold,
        failovers,
        points: Vec::new(),
        points_note: None,
        job_ids: jobs.iter().map(|j| j.id.clone()).collect(),
    }
}

/// The policy's RPO threshold: the item's policy; once the item is gone, the policy its
/// Enable protection named, or the vault's forward policy.
fn threshold(
    item: Option<&Resource<ReplicatedItem>>,
    jobs: &[&Resource<Job>],
    policies: &[Resource<ReplicationPolicy>],
) -> Option<u64> {
    let of = |p: &Resource<ReplicationPolicy>| {
        p.properties
            .provider_specific_details
            .recovery_point_threshold_in_minutes
    };
    if let Some(p) = item.and_then(|i| policies.iter().find(|p| p.id == i.properties.policy_id)) {
        return Some(of(p));
    }
    let named = jobs.iter().rev().find_map(|j| {
        (j.properties.scenario_name == "EnableDr")
            .then(|| j.properties.input["request"]["policy"].as_str())
            .flatten()
    });
    if let Some(n) = named
        && let Some(p) = policies
            .iter()
            .find(|p| p.name == n || p.properties.friendly_name == n)
    {
        return Some(of(p));
    }
    policies
        .iter()
        .find(|p| p.properties.instance_type == "InMageAzureV2")
        .map(of)
}

/// The spans a machine replicated: from each Enable protection's start to what ended it.
fn replication(jobs: &[&Resource<Job>], failovers: &[FailoverRecord]) -> Vec<Span> {
    // What ends replication, and when: a failover's start (replication stops before failover
    // starts), a failed enable's end, a disable's or complete migration's end.
    let mut stops: Vec<u64> = failovers
        .iter()
        .filter(|f| f.scenario_name.contains("UnplannedFailover"))
        .map(|f| f.start_ms)
        .collect();
    for j in jobs {
        let p = &j.properties;
        match p.scenario_name.as_str() {
            "UnplannedFailover" => stops.push(p.start_ms),
            "EnableDr" | "FinalizeProtection" if p.state == JobState::Failed => {
                stops.extend(p.end_ms);
            }
            "DisableDr" | "CompleteMigration" if p.state == JobState::Succeeded => {
                stops.extend(p.end_ms);
            }
            _ => {}
        }
    }
    stops.sort_unstable();
    let mut out: Vec<Span> = Vec::new();
    for j in jobs
        .iter()
        .filter(|j| j.properties.scenario_name == "EnableDr")
    {
        let start = j.properties.start_ms;
        if out.last().is_some_and(|s| s.end_ms > start) {
            // An enable while the last span is open (a restart of a failed enable's job).
            continue;
        }
        let end = stops
            .iter()
            .copied()
            .find(|&s| s >= start)
            .unwrap_or(u64::MAX);
        out.push(Span {
            start_ms: start,
            end_ms: end,
        });
    }
    out
}

/// The timeline's span: the rehearsal's, widened to every job, sample and failover.
fn span_of(info: &RehearsalInfo, jobs: &[JobReport], machines: &[MachineReport]) -> Span {
    let mut times: Vec<u64> = Vec::new();
    if info.started_ms > 0 {
        times.push(info.started_ms);
    }
    if info.ended_ms > 0 {
        times.push(info.ended_ms);
    }
    for j in jobs {
        times.push(j.start_ms);
        times.extend(j.end_ms);
    }
    for m in machines {
        times.extend(m.rpo.iter().map(|s| s.time_ms));
        for f in &m.failovers {
            times.extend([f.start_ms, f.vm_running_ms, f.recovery_point_time_ms]);
            times.extend(f.cleaned_up_ms);
        }
        for s in &m.replication {
            times.push(s.start_ms);
            if s.end_ms != u64::MAX {
                times.push(s.end_ms);
            }
        }
    }
    let t0 = times.iter().copied().min().unwrap_or(0);
    let t1 = times.iter().copied().max().unwrap_or(0);
    Span {
        start_ms: t0,
        end_ms: t1.max(t0.saturating_add(60_000)),
    }
}
