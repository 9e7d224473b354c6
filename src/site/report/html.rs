//! The report as one self-contained page: polyglot XHTML5 (every element closed, attributes
//! quoted, text escaped, so it parses as XML as well as HTML), inline CSS, no script, no font,
//! style or image from elsewhere. The header says the verdict (objectives met or missed) big;
//! then the SVG timeline ([`super::svg`]), the steps, each machine's figures with its
//! verifications, a table per recovery plan, a table per job (its tasks, their times and
//! errors), and the faults injected.

use super::{JobReport, MachineReport, Report, human_bytes, human_ms, svg, wall};
use crate::clock::format_time;
use std::fmt::Write;

/// `s` escaped for XML text and attribute values (tab, newline and carriage return as
/// character references, so they read back as themselves even in attributes); characters XML
/// cannot hold (the other C0 controls, U+FFFE, U+FFFF) become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // As references: XML turns a literal tab or newline in an attribute into a space.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// An element id from a name: letters, digits, `-` and `_` kept, anything else `-`.
pub fn anchor(prefix: &str, name: &str) -> String {
    let body: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{body}")
}

const CSS: &str = "
body { font-family: sans-serif; margin: 16px 24px; color: #263238; background: #ffffff; }
h1 { font-size: 26px; margin: 0 0 4px 0; }
h2 { font-size: 19px; margin: 28px 0 8px 0; border-bottom: 2px solid #cfd8dc; }
h3 { font-size: 15px; margin: 18px 0 6px 0; }
.verdict { font-size: 24px; font-weight: bold; padding: 8px 14px; display: inline-block; border-radius: 6px; margin: 6px 0; }
.verdict.met { background: #e8f5e9; color: #1b5e20; border: 2px solid #2e7d32; }
.verdict.missed { background: #ffebee; color: #b71c1c; border: 2px solid #c62828; }
.verdict.none { background: #eceff1; color: #37474f; border: 2px solid #90a4ae; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 8px 0; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: 4px 0 10px 0; font-size: 13px; }
th, td { border: 1px solid #cfd8dc; padding: 3px 7px; text-align: left; vertical-align: top; }
td.long { max-width: 34em; min-width: 18em; overflow-wrap: anywhere; }
th { background: #eceff1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.yes { color: #1b5e20; font-weight: bold; }
.no { color: #b71c1c; font-weight: bold; }
.s-Succeeded { color: #2e7d32; }
.s-Failed { color: #c62828; font-weight: bold; }
.s-InProgress { color: #1565c0; }
.s-Cancelled { color: #757575; }
.s-Suspended { color: #f57f17; }
.s-Cancelling { color: #ef6c00; }
.s-NotStarted { color: #90a4ae; }
.err { color: #b71c1c; }
.note { color: #546e7a; font-size: 13px; }
svg.timeline { display: block; max-width: 100%; height: auto; border: 1px solid #cfd8dc; }
svg text { font-family: sans-serif; }
svg .rowname { font-size: 13px; font-weight: bold; fill: #263238; }
svg .rowsub { font-size: 11px; fill: #546e7a; }
svg .axis { font-size: 10px; fill: #455a64; }
svg .barlabel { font-size: 9px; fill: #263238; }
svg .mark { font-size: 10px; font-weight: bold; }
svg .rowbg { fill: #eceff1; fill-opacity: 0.35; stroke: #cfd8dc; stroke-width: 0.5; }
svg .rpobg { fill: #ffffff; fill-opacity: 0.6; stroke: #cfd8dc; stroke-width: 0.5; }
svg .grid { stroke: #b0bec5; stroke-width: 0.5; stroke-dasharray: 2 3; }
";

/// `yes` / `no` with its class.
fn yes_no(b: bool) -> String {
    if b {
        r#"<span class="yes">✔ yes</span>"#.into()
    } else {
        r#"<span class="no">✘ no</span>"#.into()
    }
}

fn opt_time(t: Option<u64>) -> String {
    t.map(format_time).unwrap_or_else(|| "—".into())
}

/// The page.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n");
    s.push_str(r#"<html xmlns="http://www.w3.org/1999/xhtml" lang="en" xml:lang="en">"#);
    let _ = write!(
        s,
        "<head><meta charset=\"UTF-8\"/><title>Rehearsal: {}</title><style>{CSS}</style></head>\n<body>\n",
        esc(&r.title)
    );
    header(&mut s, r);
    s.push_str("<h2 id=\"timeline\">Timeline</h2>\n");
    s.push_str(&svg::render(r));
    s.push('\n');
    steps(&mut s, r);
    machines(&mut s, r);
    plans(&mut s, r);
    jobs(&mut s, r);
    s.push_str("<h2 id=\"faults\">Faults injected</h2>\n");
    if r.faults.is_empty() {
        s.push_str("<p class=\"note\">None.</p>\n");
    } else {
        s.push_str("<ul class=\"faults\">");
        for f in &r.faults {
            let _ = write!(s, "<li>{}</li>", esc(f));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</body>\n</html>\n");
    s
}

fn header(s: &mut String, r: &Report) {
    let _ = writeln!(s, "<h1>{}</h1>", esc(&r.title));
    let total = r.objectives.len();
    let (class, verdict) = if total == 0 {
        ("none", "No objectives set".to_string())
    } else if total == 1 {
        if r.objectives_missed == 0 {
            ("met", "✔ The objective was met".to_string())
        } else {
            ("missed", "✘ The objective was missed".to_string())
        }
    } else if r.objectives_missed == 0 {
        ("met", format!("✔ All {total} objectives met"))
    } else {
        (
            "missed",
            format!("✘ {} of {total} objectives missed", r.objectives_missed),
        )
    };
    let _ = writeln!(s, "<p class=\"verdict {class}\">{verdict}</p>");
    let _ = writeln!(
        s,
        "<dl class=\"facts\"><dt>Scenario</dt><dd>{}</dd><dt>Simulated start</dt><dd>{}</dd>\
         <dt>Simulated end</dt><dd>{}</dd><dt>Simulated duration</dt><dd>{}</dd>\
         <dt>Wall time</dt><dd>{}</dd><dt>Machines</dt><dd>{}</dd><dt>Jobs</dt><dd>{}</dd></dl>",
        esc(&r.scenario),
        format_time(r.started_ms),
        format_time(r.ended_ms),
        human_ms(r.ended_ms.saturating_sub(r.started_ms)),
        wall(r.wall_ms),
        r.machines.len(),
        r.jobs.len()
    );
    if total > 0 {
        s.push_str(
            "<table class=\"objectives\"><tr><th>Objective</th><th>Machine</th><th>Target</th>\
             <th>Actual</th><th>Met</th></tr>",
        );
        for o in &r.objectives {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&o.objective),
                esc(o.machine.as_deref().unwrap_or("every machine")),
                esc(&o.target),
                esc(&o.actual),
                yes_no(o.met)
            );
        }
        s.push_str("</table>\n");
    }
}

/// A link to a job's table, by id or name.
fn job_link(r: &Report, id: &str) -> String {
    match r.job(id) {
        Some(j) => format!(
            "<a href=\"#{}\" class=\"s-{:?}\">{} ({:?})</a>",
            anchor("job", &j.name),
            j.state,
            esc(&j.friendly_name),
            j.state
        ),
        None => esc(id),
    }
}

fn steps(s: &mut String, r: &Report) {
    s.push_str("<h2 id=\"steps\">Steps</h2>\n");
    if r.steps.is_empty() {
        s.push_str("<p class=\"note\">No steps recorded.</p>\n");
        return;
    }
    s.push_str(
        "<table class=\"steps\"><tr><th>#</th><th>Step</th><th>Start</th><th>End</th>\
         <th>Duration</th><th>Outcome</th><th>As planned</th><th>Jobs</th></tr>",
    );
    for (i, st) in r.steps.iter().enumerate() {
        let jobs: Vec<String> = st.job_ids.iter().map(|id| job_link(r, id)).collect();
        let outcome = if st.outcome == "ok" {
            "ok".to_string()
        } else {
            format!(
                "<span class=\"err\">{}</span>{}",
                esc(&st.outcome),
                if st.expected { " (expected)" } else { "" }
            )
        };
        let _ = write!(
            s,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td>{outcome}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            esc(&st.name),
            format_time(st.start_ms),
            format_time(st.end_ms),
            human_ms(st.end_ms.saturating_sub(st.start_ms)),
            yes_no(st.as_planned()),
            jobs.join("<br/>")
        );
    }
    s.push_str("</table>\n");
}

fn machines(s: &mut String, r: &Report) {
    s.push_str("<h2 id=\"machines\">Machines</h2>\n");
    if r.machines.is_empty() {
        s.push_str("<p class=\"note\">No machines.</p>\n");
        return;
    }
    s.push_str(
        "<table class=\"replication\"><tr><th>Machine</th><th>State</th><th>Replicated</th>\
         <th>RPO threshold</th><th>Largest RPO</th><th>Above threshold</th><th>RPO samples</th>\
         <th>Points in retention</th></tr>",
    );
    for m in &r.machines {
        let replicated: u64 = m
            .replication
            .iter()
            .map(|sp| sp.end_ms.saturating_sub(sp.start_ms))
            .sum();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}{}</td></tr>",
            esc(&m.name),
            esc(m.state.as_deref().unwrap_or("replication removed")),
            human_ms(replicated),
            m.rpo_threshold_minutes
                .map_or_else(|| "—".into(), |t| human_ms(t.saturating_mul(60_000))),
            m.max_rpo_seconds
                .map_or_else(|| "—".into(), |x| human_ms(x.saturating_mul(1000))),
            m.rpo_threshold_minutes
                .map_or_else(|| "—".into(), |_| human_ms(m.ms_above_threshold)),
            m.rpo.len(),
            m.points.len(),
            m.points_note
                .as_deref()
                .map(|n| format!(" <span class=\"note\">({})</span>", esc(n)))
                .unwrap_or_default()
        );
    }
    s.push_str("</table>\n");
    s.push_str(
        "<table class=\"failovers\"><tr><th>Machine</th><th>Operation</th><th>Point</th>\
         <th>Point time</th><th>Data loss</th><th>RTO</th><th>Build (wall)</th>\
         <th>Upload (wall)</th><th>VM</th><th>Size</th><th>IP</th><th>Source shut down</th>\
         <th>Verified</th></tr>",
    );
    let mut any = false;
    for m in &r.machines {
        for f in &m.failovers {
            any = true;
            failover_row(s, r, m, f);
        }
    }
    if !any {
        s.push_str("<tr><td colspan=\"13\" class=\"note\">No failovers.</td></tr>");
    }
    s.push_str("</table>\n");
}

fn failover_row(
    s: &mut String,
    r: &Report,
    m: &MachineReport,
    f: &crate::site::model::FailoverRecord,
) {
    let checks: Vec<String> = f
        .verification
        .iter()
        .map(|v| {
            format!(
                "{} {}: {}",
                if v.passed {
                    "<span class=\"yes\">✔</span>"
                } else {
                    "<span class=\"no\">✘</span>"
                },
                esc(&v.check),
                esc(&v.detail)
            )
        })
        .collect();
    let op = format!(
        "{} ({}){}{}",
        esc(&f.scenario_name),
        esc(&f.choice),
        f.recovery_plan
            .as_deref()
            .map(|p| format!("<br/>plan {}", esc(p)))
            .unwrap_or_default(),
        f.cleaned_up_ms
            .map(|c| format!(
                "<br/>cleaned up {}{}",
                format_time(c),
                f.cleanup_notes
                    .as_deref()
                    .map(|n| format!(": {}", esc(n)))
                    .unwrap_or_default()
            ))
            .unwrap_or_default()
    );
    let job = job_link(r, &f.job_id);
    let _ = write!(
        s,
        "<tr><td>{}</td><td>{op}<br/>{job}</td><td>{} ({})</td><td>{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} ({})</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td class=\"long\">{}<br/>{}</td></tr>",
        esc(&m.name),
        esc(f.recovery_point_id.rsplit('/').next().unwrap_or_default()),
        esc(&f.recovery_point_type),
        format_time(f.recovery_point_time_ms),
        human_ms(f.data_loss_ms),
        human_ms(f.rto_ms),
        wall(f.build_wall_ms),
        wall(f.upload_wall_ms),
        human_bytes(f.uploaded_bytes),
        esc(f.vm_id.rsplit('/').next().unwrap_or_default()),
        esc(&f.vm_size),
        esc(&f.ip_address),
        match f.source_shut_down {
            None => "not asked".to_string(),
            Some(b) => yes_no(b),
        },
        yes_no(f.verified()),
        checks.join("<br/>")
    );
}

fn plans(s: &mut String, r: &Report) {
    if r.plans.is_empty() {
        return;
    }
    s.push_str("<h2 id=\"plans\">Recovery plans</h2>\n");
    for p in &r.plans {
        let _ = write!(
            s,
            "<h3 id=\"{}\">Plan {}</h3>",
            anchor("plan", &p.name),
            esc(&p.name)
        );
        if !p.machines.is_empty() {
            let names: Vec<String> = p.machines.iter().map(|m| esc(m)).collect();
            let _ = write!(s, "<p>Machines: {}</p>", names.join(", "));
        }
        s.push_str(
            "<table class=\"plan\"><tr><th>Job</th><th>Scenario</th><th>State</th><th>Start</th>\
             <th>End</th><th>Duration</th><th>Wall</th><th>Errors</th></tr>",
        );
        for j in p.job_ids.iter().filter_map(|id| r.job(id)) {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td class=\"s-{:?}\">{:?}</td><td>{}</td><td>{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                job_link(r, &j.id),
                esc(&j.scenario_name),
                j.state,
                j.state,
                format_time(j.start_ms),
                opt_time(j.end_ms),
                j.duration_ms().map(human_ms).unwrap_or_default(),
                wall(j.wall_ms),
                errors(&j.errors)
            );
        }
        s.push_str("</table>\n");
    }
}

/// Errors as `code: message` lines.
fn errors(errs: &[crate::site::jobs::JobError]) -> String {
    let lines: Vec<String> = errs
        .iter()
        .map(|e| {
            format!(
                "<span class=\"err\">{}: {}</span>",
                esc(&e.error_code),
                esc(&e.error_message)
            )
        })
        .collect();
    lines.join("<br/>")
}

fn jobs(s: &mut String, r: &Report) {
    s.push_str("<h2 id=\"jobs\">Jobs</h2>\n");
    if r.jobs.is_empty() {
        s.push_str("<p class=\"note\">No jobs.</p>\n");
        return;
    }
    for j in &r.jobs {
        job(s, j);
    }
}

fn job(s: &mut String, j: &JobReport) {
    let _ = write!(
        s,
        "<h3 id=\"{}\">{} — {} <span class=\"s-{:?}\">{:?}</span></h3>\
         <p class=\"note\">{} ({}) on {} {}: {} to {}{}, wall {}</p>",
        anchor("job", &j.name),
        esc(&j.friendly_name),
        esc(&j.target_object_name),
        j.state,
        j.state,
        esc(&j.name),
        esc(&j.scenario_name),
        esc(&j.target_instance_type),
        esc(&j.target_object_name),
        format_time(j.start_ms),
        opt_time(j.end_ms),
        j.duration_ms()
            .map(|d| format!(" ({})", human_ms(d)))
            .unwrap_or_default(),
        wall(j.wall_ms)
    );
    s.push_str(
        "<table class=\"tasks\"><tr><th>Task</th><th>State</th><th>Start</th><th>End</th>\
         <th>Duration</th><th>Wall (ms)</th><th>Errors</th></tr>",
    );
    for t in &j.tasks {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"s-{:?}\">{:?}{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&t.friendly_name),
            t.state,
            t.state,
            t.state_description
                .as_deref()
                .map(|d| format!(" ({})", esc(d)))
                .unwrap_or_default(),
            opt_time(t.start_ms),
            opt_time(t.end_ms),
            t.duration_ms().map(human_ms).unwrap_or_default(),
            t.wall_ms,
            errors(&t.errors)
        );
    }
    s.push_str("</table>\n");
    let own: Vec<_> = j
        .errors
        .iter()
        .filter(|e| e.task_id.is_none())
        .cloned()
        .collect();
    if !own.is_empty() {
        let _ = writeln!(s, "<p>Job errors: {}</p>", errors(&own));
    }
}
