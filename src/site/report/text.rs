//! The report as the terminal shows it: the verdict, the objectives, the steps, per machine its
//! replication and RPO, its failovers (point, data loss, RTO, the real work's wall time, the VM,
//! the verification), the errors of failed jobs, and the faults. Names come from user files:
//! control characters are shown escaped, never sent to the terminal.

use super::{Report, human_ms, wall};
use crate::clock::format_time;

/// `s` with control characters (C0, DEL, C1: terminal escape sequences among them) escaped as
/// `\u{1b}`.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `1 machine`, `2 machines`.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Columns padded to their widest cell, two spaces apart, indented by two.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from(" ");
        for (i, c) in cells.enumerate() {
            l.push(' ');
            l.push_str(c);
            let pad = w
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            l.push_str(&" ".repeat(pad + 1));
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut head.iter().copied());
    let rule: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// The terminal table.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Rehearsal {} ({})\nsimulated {} to {} ({}), wall {}; {}, {}\n",
        clean(&r.title),
        clean(&r.scenario),
        format_time(r.started_ms),
        format_time(r.ended_ms),
        human_ms(r.ended_ms.saturating_sub(r.started_ms)),
        wall(r.wall_ms),
        count(r.machines.len(), "machine"),
        count(r.jobs.len(), "job")
    ));
    let total = r.objectives.len();
    s.push_str(&if total == 0 {
        "OBJECTIVES: none set\n".to_string()
    } else if r.objectives_missed == 0 {
        format!("OBJECTIVES: all {total} met\n")
    } else {
        format!("OBJECTIVES: {} of {total} MISSED\n", r.objectives_missed)
    });

    if total > 0 {
        s.push_str("\nObjectives\n");
        let rows: Vec<Vec<String>> = r
            .objectives
            .iter()
            .map(|o| {
                vec![
                    clean(&o.objective),
                    clean(o.machine.as_deref().unwrap_or("every machine")),
                    clean(&o.target),
                    clean(&o.actual),
                    if o.met { "met" } else { "MISSED" }.into(),
                ]
            })
            .collect();
        s.push_str(&table(
            &["objective", "machine", "target", "actual", "result"],
            &rows,
        ));
    }

    if !r.steps.is_empty() {
        s.push_str("\nSteps\n");
        let rows: Vec<Vec<String>> = r
            .steps
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let jobs: Vec<String> = st
                    .job_ids
                    .iter()
                    .map(|id| match r.job(id) {
                        Some(j) => format!("{} {:?}", clean(&j.friendly_name), j.state),
                        None => clean(id),
                    })
                    .collect();
                vec![
                    (i + 1).to_string(),
                    clean(&st.name),
                    format_time(st.start_ms),
                    human_ms(st.end_ms.saturating_sub(st.start_ms)),
                    if st.outcome == "ok" {
                        "ok".into()
                    } else {
                        format!(
                            "{}{}",
                            clean(&st.outcome),
                            if st.expected { " (expected)" } else { "" }
                        )
                    },
                    if st.as_planned() { "yes" } else { "NO" }.into(),
                    jobs.join(", "),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "#",
                "step",
                "start",
                "took",
                "outcome",
                "as planned",
                "jobs",
            ],
            &rows,
        ));
    }

    if !r.machines.is_empty() {
        s.push_str("\nReplication\n");
        let rows: Vec<Vec<String>> = r
            .machines
            .iter()
            .map(|m| {
                vec![
                    clean(&m.name),
                    clean(m.state.as_deref().unwrap_or("replication removed")),
                    m.rpo_threshold_minutes
                        .map_or_else(|| "-".into(), |t| human_ms(t.saturating_mul(60_000))),
                    m.max_rpo_seconds
                        .map_or_else(|| "-".into(), |x| human_ms(x.saturating_mul(1000))),
                    m.rpo_threshold_minutes
                        .map_or_else(|| "-".into(), |_| human_ms(m.ms_above_threshold)),
                    m.points.len().to_string(),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "machine",
                "state",
                "RPO threshold",
                "largest RPO",
                "above threshold",
                "points",
            ],
            &rows,
        ));

        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for m in &r.machines {
            for f in &m.failovers {
                rows.push(vec![
                    clean(&m.name),
                    format!("{} ({})", clean(&f.scenario_name), clean(&f.choice)),
                    clean(f.recovery_point_id.rsplit('/').next().unwrap_or_default()),
                    format_time(f.recovery_point_time_ms),
                    human_ms(f.data_loss_ms),
                    human_ms(f.rto_ms),
                    wall(f.build_wall_ms),
                    wall(f.upload_wall_ms),
                    clean(f.vm_id.rsplit('/').next().unwrap_or_default()),
                    clean(&f.vm_size),
                    clean(&f.ip_address),
                    if f.verified() { "yes" } else { "NO" }.into(),
                ]);
                for v in f.verification.iter().filter(|v| !v.passed) {
                    failed.push(format!(
                        "  {} {}: {} failed: {}\n",
                        clean(&m.name),
                        clean(&f.scenario_name),
                        clean(&v.check),
                        clean(&v.detail)
                    ));
                }
            }
        }
        if !rows.is_empty() {
            s.push_str("\nFailovers\n");
            s.push_str(&table(
                &[
                    "machine",
                    "operation",
                    "point",
                    "point time",
                    "data loss",
                    "RTO",
                    "build",
                    "upload",
                    "VM",
                    "size",
                    "IP",
                    "verified",
                ],
                &rows,
            ));
            for f in failed {
                s.push_str(&f);
            }
        }
    }

    let mut errs: Vec<Vec<String>> = Vec::new();
    for j in &r.jobs {
        for e in &j.errors {
            let task = e
                .task_id
                .as_deref()
                .and_then(|id| j.tasks.iter().find(|t| t.task_id == id))
                .map(|t| clean(&t.friendly_name))
                .unwrap_or_else(|| "-".into());
            errs.push(vec![
                format!(
                    "{} {}",
                    clean(&j.friendly_name),
                    clean(&j.target_object_name)
                ),
                task,
                clean(&e.error_code),
                clean(&e.error_message),
            ]);
        }
    }
    if !errs.is_empty() {
        s.push_str("\nJob errors\n");
        s.push_str(&table(&["job", "task", "code", "message"], &errs));
    }

    if !r.faults.is_empty() {
        s.push_str("\nFaults injected\n");
        for f in &r.faults {
            s.push_str(&format!("  - {}\n", clean(f)));
        }
    }
    s
}
