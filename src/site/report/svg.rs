//! The report's timeline as inline SVG: x is simulated time (ticks labelled in UTC, a faint
//! grid across every row); a row per machine with its replication (a band from Enable
//! protection's start to the failover or the end, its recovery points as ticks on it), its jobs
//! as bars with their tasks as segments coloured by state (failed red), its failovers and test
//! failovers as markers (with the point they used as a diamond and the data lost as a red span
//! on the band), and its RPO over time as a line against the policy's threshold (dashed); then
//! a row per recovery plan (its jobs), and one for the site's other jobs. Every shape carries
//! a `<title>` (the browser's tooltip): no script is needed.

use super::html::esc;
use super::{JobReport, MachineReport, Report, human_ms};
use crate::clock::format_time;
use crate::site::jobs::JobState;
use std::fmt::Write;

/// The drawing's width (px): fits a 1400 px window with the page's margins.
pub const WIDTH: f64 = 1340.0;
/// The label column's width.
const LABEL: f64 = 180.0;
/// The right margin.
const RIGHT: f64 = 24.0;
/// The axis band's height (top and bottom).
const AXIS: f64 = 34.0;
/// The legend's height.
const LEGEND: f64 = 26.0;
/// A job lane's height, and its bar's.
const LANE: f64 = 16.0;
const BAR: f64 = 12.0;
/// The replication band's height.
const BAND: f64 = 10.0;
/// The RPO chart's height.
const RPO_H: f64 = 60.0;
/// Padding above and below a row's content.
const PAD: f64 = 8.0;
/// The narrowest bar drawn (px), so a 30-second task on a day-long timeline stays visible.
const MIN_W: f64 = 2.0;

/// The RPO threshold's colour: a red apart from a failed task's, so the two stay distinct.
pub const THRESHOLD: &str = "#d84315";

/// A state's colour.
pub fn state_colour(s: JobState) -> &'static str {
    match s {
        JobState::Succeeded => "#2e7d32",
        JobState::Failed => "#c62828",
        JobState::InProgress => "#1565c0",
        JobState::Cancelled => "#9e9e9e",
        JobState::Cancelling => "#ef6c00",
        JobState::Suspended => "#f9a825",
        JobState::NotStarted => "#cfd8dc",
    }
}

/// The marker colour and short label of a failover record's scenario.
fn failover_mark(scenario: &str) -> (&'static str, &'static str) {
    if scenario.contains("TestFailover") {
        ("#6a1b9a", "TFO")
    } else if scenario.contains("ChangePit") {
        ("#ef6c00", "PIT")
    } else {
        ("#b71c1c", "FO")
    }
}

/// Maps simulated time to x.
struct Scale {
    t0: u64,
    t1: u64,
}

impl Scale {
    fn x(&self, t: u64) -> f64 {
        let t = t.clamp(self.t0, self.t1);
        let span = (self.t1 - self.t0).max(1) as f64;
        LABEL + (t - self.t0) as f64 / span * (WIDTH - LABEL - RIGHT)
    }
}

/// A number for an SVG attribute: one decimal.
fn n(v: f64) -> String {
    format!("{v:.1}")
}

/// The tick step (ms) for a span: the smallest of the usual steps giving at most 10 ticks.
fn tick_step(span_ms: u64) -> u64 {
    const S: u64 = 1000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    let steps = [
        10 * S,
        30 * S,
        M,
        2 * M,
        5 * M,
        10 * M,
        15 * M,
        30 * M,
        H,
        2 * H,
        3 * H,
        6 * H,
        12 * H,
        D,
        2 * D,
        7 * D,
        30 * D,
    ];
    steps
        .iter()
        .copied()
        .find(|s| span_ms / s <= 10)
        .unwrap_or_else(|| span_ms.div_ceil(10).max(1))
}

/// The ticks between `t0` and `t1`: (time, label). Whole multiples of the step in UTC; a
/// label shows the date where the day changes (and on the first tick).
pub fn ticks(t0: u64, t1: u64) -> Vec<(u64, String)> {
    let step = tick_step(t1.saturating_sub(t0));
    let mut out = Vec::new();
    let mut t = t0.div_ceil(step).saturating_mul(step);
    let mut last_day = None;
    while t <= t1 && out.len() < 64 {
        let full = format_time(t); // 2026-01-01T06:30:00Z
        let day = full.get(..10).map(str::to_string);
        let hm = full.get(11..16).unwrap_or("");
        let hms = full.get(11..19).unwrap_or("");
        let time = if step.is_multiple_of(60_000) { hm } else { hms };
        let label = if step >= 86_400_000 {
            full.get(5..10).unwrap_or("").to_string()
        } else if day != last_day {
            format!("{} {time}", full.get(5..10).unwrap_or(""))
        } else {
            time.to_string()
        };
        last_day = day;
        out.push((t, label));
        t = match t.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    out
}

/// Jobs packed into lanes so bars never overlap: `(lane, job)` and the number of lanes.
fn lanes<'a>(jobs: &[&'a JobReport], sc: &Scale) -> (Vec<(usize, &'a JobReport)>, usize) {
    let mut ends: Vec<f64> = Vec::new();
    let mut sorted: Vec<&JobReport> = jobs.to_vec();
    sorted.sort_by_key(|j| j.start_ms);
    let mut out = Vec::new();
    for j in sorted {
        let x0 = sc.x(j.start_ms);
        let x1 = sc.x(j.end_ms.unwrap_or(sc.t1)).max(x0 + MIN_W);
        let lane = match ends.iter().position(|&e| e + 1.0 <= x0) {
            Some(l) => l,
            None => {
                ends.push(0.0);
                ends.len() - 1
            }
        };
        ends[lane] = x1;
        out.push((lane, j));
    }
    let n = ends.len();
    (out, n)
}

/// Draws one job as a bar at `y`, its tasks as segments.
fn job_bar(s: &mut String, j: &JobReport, y: f64, sc: &Scale) {
    let x0 = sc.x(j.start_ms);
    let x1 = sc.x(j.end_ms.unwrap_or(sc.t1)).max(x0 + MIN_W);
    let end = j.end_ms.map_or_else(|| "running".to_string(), format_time);
    let dur = j.duration_ms().map(human_ms).unwrap_or_default();
    let _ = write!(
        s,
        r##"<g class="job" data-job="{}"><rect x="{}" y="{}" width="{}" height="{}" fill="#ffffff" stroke="{}" stroke-width="1"><title>{} ({}): {:?}, {} to {} {}</title></rect>"##,
        esc(&j.name),
        n(x0),
        n(y),
        n(x1 - x0),
        n(BAR),
        state_colour(j.state),
        esc(&j.friendly_name),
        esc(&j.name),
        j.state,
        format_time(j.start_ms),
        esc(&end),
        dur
    );
    for t in &j.tasks {
        let Some(start) = t.start_ms else { continue };
        let tx0 = sc.x(start).min(x1);
        let tx1 = sc.x(t.end_ms.unwrap_or(sc.t1)).clamp(tx0, x1);
        let w = (tx1 - tx0).max(1.0);
        let _ = write!(
            s,
            r#"<rect class="task" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {:?}{}</title></rect>"#,
            n(tx0),
            n(y + 1.0),
            n(w),
            n(BAR - 2.0),
            state_colour(t.state),
            esc(&t.friendly_name),
            t.state,
            t.duration_ms()
                .map(|d| format!(", {}", human_ms(d)))
                .unwrap_or_default()
        );
    }
    if x1 - x0 > 90.0 {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="barlabel">{}</text>"#,
            n(x0 + 3.0),
            n(y + BAR - 3.0),
            esc(&j.friendly_name)
        );
    }
    s.push_str("</g>");
}

/// The label column of a row.
fn label(s: &mut String, y: f64, name: &str, sub: &str) {
    let _ = write!(
        s,
        r#"<text x="8" y="{}" class="rowname">{}</text><text x="8" y="{}" class="rowsub">{}</text>"#,
        n(y + 16.0),
        esc(name),
        n(y + 30.0),
        esc(sub)
    );
}

/// A machine's row at `y`; returns its height.
fn machine_row(s: &mut String, r: &Report, m: &MachineReport, y: f64, sc: &Scale) -> f64 {
    let jobs: Vec<&JobReport> = m.job_ids.iter().filter_map(|id| r.job(id)).collect();
    let (placed, n_lanes) = lanes(&jobs, sc);
    let has_rpo = !m.rpo.is_empty();
    let band_y = y + PAD;
    let lanes_y = band_y + BAND + 6.0;
    let rpo_y = lanes_y + n_lanes as f64 * LANE + 6.0;
    let height = (rpo_y + if has_rpo { RPO_H + 6.0 } else { 0.0 } + PAD - y).max(48.0);
    let _ = write!(
        s,
        r#"<g class="row machine" data-machine="{}"><rect class="rowbg" x="0" y="{}" width="{}" height="{}"/>"#,
        esc(&m.name),
        n(y),
        n(WIDTH),
        n(height)
    );
    label(
        s,
        y,
        &m.name,
        m.state.as_deref().unwrap_or("replication removed"),
    );

    // Replication, points, data lost.
    for sp in &m.replication {
        let x0 = sc.x(sp.start_ms);
        let x1 = sc.x(sp.end_ms).max(x0 + MIN_W);
        let _ = write!(
            s,
            r##"<rect class="replication" x="{}" y="{}" width="{}" height="{}" fill="#80cbc4"><title>replicating {} to {}</title></rect>"##,
            n(x0),
            n(band_y),
            n(x1 - x0),
            n(BAND),
            format_time(sp.start_ms),
            format_time(sp.end_ms)
        );
    }
    for p in &m.points {
        let x = sc.x(p.time_ms);
        let (h, c) = if p.kind == "ApplicationConsistent" {
            (BAND, "#00695c")
        } else {
            (BAND / 2.0, "#26a69a")
        };
        let _ = write!(
            s,
            r#"<line class="point" x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{c}" stroke-width="1"><title>{} {} {}</title></line>"#,
            n(band_y + BAND - h),
            n(band_y + BAND),
            esc(&p.name),
            esc(&p.kind),
            format_time(p.time_ms),
            x = n(x)
        );
    }
    let bottom = y + height;
    for f in &m.failovers {
        let (colour, short) = failover_mark(&f.scenario_name);
        let lost0 = sc.x(f.recovery_point_time_ms);
        let lost1 = sc.x(f.last_source_write_ms).max(lost0);
        if lost1 > lost0 {
            let _ = write!(
                s,
                r##"<rect class="dataloss" x="{}" y="{}" width="{}" height="{}" fill="#e53935" fill-opacity="0.45"><title>{short}: data lost {} (point {} to last write {})</title></rect>"##,
                n(lost0),
                n(band_y),
                n(lost1 - lost0),
                n(BAND),
                human_ms(f.data_loss_ms),
                format_time(f.recovery_point_time_ms),
                format_time(f.last_source_write_ms)
            );
        }
        let px = sc.x(f.recovery_point_time_ms);
        let cy = band_y + BAND / 2.0;
        let _ = write!(
            s,
            r##"<path class="failover-point" d="M{} {}l5 -6l5 6l-5 6z" fill="{colour}" stroke="#ffffff" stroke-width="1"><title>{short} point {} ({}) at {}</title></path>"##,
            n(px - 5.0),
            n(cy),
            esc(&f.recovery_point_id),
            esc(&f.recovery_point_type),
            format_time(f.recovery_point_time_ms)
        );
        let fx = sc.x(f.start_ms);
        let _ = write!(
            s,
            r#"<g class="failover"><title>{} ({}) at {}: RTO {}, data lost {}, VM {}</title><line x1="{fx}" y1="{}" x2="{fx}" y2="{}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}" class="mark" fill="{colour}">{short}</text></g>"#,
            esc(&f.scenario_name),
            esc(&f.choice),
            format_time(f.start_ms),
            human_ms(f.rto_ms),
            human_ms(f.data_loss_ms),
            esc(f.vm_id.rsplit('/').next().unwrap_or_default()),
            n(y + 2.0),
            n(bottom - 2.0),
            n(fx + 3.0),
            n(bottom - 4.0),
            fx = n(fx)
        );
    }

    for (lane, j) in placed {
        job_bar(s, j, lanes_y + lane as f64 * LANE, sc);
    }

    if has_rpo {
        rpo_chart(s, m, rpo_y, sc);
    }
    s.push_str("</g>");
    height
}

/// The RPO line of a machine in a band at `y`, against its threshold.
fn rpo_chart(s: &mut String, m: &MachineReport, y: f64, sc: &Scale) {
    let th = m.rpo_threshold_minutes.map(|t| t.saturating_mul(60));
    let top = m
        .max_rpo_seconds
        .unwrap_or(0)
        .max(th.map_or(0, |t| t.saturating_add(t / 4)))
        .max(60);
    let yv = |secs: u64| y + RPO_H - (secs.min(top) as f64 / top as f64) * RPO_H;
    let _ = write!(
        s,
        r#"<g class="rpo"><rect class="rpobg" x="{}" y="{}" width="{}" height="{}"/><text x="{}" y="{}" class="axis" text-anchor="end">RPO {}</text><text x="{}" y="{}" class="axis" text-anchor="end">0</text>"#,
        n(LABEL),
        n(y),
        n(WIDTH - LABEL - RIGHT),
        n(RPO_H),
        n(LABEL - 4.0),
        n(y + 9.0),
        human_ms(top.saturating_mul(1000)),
        n(LABEL - 4.0),
        n(y + RPO_H)
    );
    if let Some(t) = th {
        let ty = yv(t);
        let _ = write!(
            s,
            r##"<line class="threshold" x1="{}" y1="{}" x2="{}" y2="{}" stroke="{THRESHOLD}" stroke-width="1" stroke-dasharray="6 4"><title>RPO threshold {}</title></line><text x="{}" y="{}" class="axis" fill="{THRESHOLD}" text-anchor="end">threshold {}</text>"##,
            n(LABEL),
            n(ty),
            n(WIDTH - RIGHT),
            n(ty),
            human_ms(t.saturating_mul(1000)),
            n(WIDTH - RIGHT - 2.0),
            n(ty - 3.0),
            human_ms(t.saturating_mul(1000))
        );
    }
    // One polyline per run of samples that have an RPO (a sample without one, before the
    // first point, breaks the line).
    let mut runs: Vec<Vec<(u64, u64)>> = vec![Vec::new()];
    for sample in &m.rpo {
        match sample.rpo_in_seconds {
            Some(r) => runs
                .last_mut()
                .map_or((), |run| run.push((sample.time_ms, r))),
            None => runs.push(Vec::new()),
        }
    }
    for run in runs.iter().filter(|r| !r.is_empty()) {
        let pts: Vec<String> = run
            .iter()
            .map(|&(t, r)| format!("{},{}", n(sc.x(t)), n(yv(r))))
            .collect();
        let (first, last) = (run[0], run[run.len() - 1]);
        let _ = write!(
            s,
            r##"<polyline class="rpoline" points="{}" fill="none" stroke="#1565c0" stroke-width="1.5"><title>RPO from {} to {}, {} samples</title></polyline>"##,
            pts.join(" "),
            format_time(first.0),
            format_time(last.0),
            run.len()
        );
        if run.len() == 1 {
            let _ = write!(
                s,
                r##"<circle cx="{}" cy="{}" r="2" fill="#1565c0"/>"##,
                n(sc.x(first.0)),
                n(yv(first.1))
            );
        }
    }
    s.push_str("</g>");
}

/// A row of jobs only: a recovery plan's, or the site's others.
struct JobsRow<'a> {
    /// The row's class (`plan`, `site`).
    class: &'a str,
    /// Its label.
    name: &'a str,
    /// The label's second line.
    sub: &'a str,
    /// Its jobs.
    ids: &'a [String],
}

/// Draws a [`JobsRow`] at `y`; returns its height.
fn jobs_row(s: &mut String, r: &Report, row: &JobsRow<'_>, y: f64, sc: &Scale) -> f64 {
    let JobsRow {
        class,
        name,
        sub,
        ids,
    } = *row;
    let jobs: Vec<&JobReport> = ids.iter().filter_map(|id| r.job(id)).collect();
    let (placed, n_lanes) = lanes(&jobs, sc);
    let height = (PAD * 2.0 + n_lanes as f64 * LANE).max(44.0);
    let _ = write!(
        s,
        r#"<g class="row {class}" data-name="{}"><rect class="rowbg" x="0" y="{}" width="{}" height="{}"/>"#,
        esc(name),
        n(y),
        n(WIDTH),
        n(height)
    );
    label(s, y, name, sub);
    for (lane, j) in placed {
        job_bar(s, j, y + PAD + lane as f64 * LANE, sc);
    }
    s.push_str("</g>");
    height
}

/// The time axis (labels and ticks) at `y`; `below` puts the labels under the line.
fn axis(s: &mut String, ticks: &[(u64, String)], y: f64, below: bool, sc: &Scale) {
    let _ = write!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#455a64" stroke-width="1"/>"##,
        n(LABEL),
        n(y),
        n(WIDTH - RIGHT),
        n(y)
    );
    for (t, l) in ticks {
        let x = sc.x(*t);
        let (ty, y2) = if below {
            (y + 15.0, y + 5.0)
        } else {
            (y - 8.0, y - 5.0)
        };
        let _ = write!(
            s,
            r##"<line class="tick" x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#455a64" stroke-width="1"/><text class="axis" x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            n(y),
            n(y2),
            n(ty),
            esc(l),
            x = n(x)
        );
    }
}

/// The legend: states' colours and the markers.
fn legend(s: &mut String, y: f64) {
    let mut x = LABEL;
    let items: [(&str, &str); 10] = [
        ("#80cbc4", "replicating"),
        (state_colour(JobState::Succeeded), "succeeded"),
        (state_colour(JobState::InProgress), "in progress"),
        (state_colour(JobState::Suspended), "suspended"),
        (state_colour(JobState::Failed), "failed"),
        (state_colour(JobState::Cancelled), "cancelled / skipped"),
        ("#e53935", "data lost"),
        ("#6a1b9a", "test failover"),
        ("#b71c1c", "failover"),
        ("#1565c0", "RPO"),
    ];
    for (c, l) in items {
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="10" fill="{c}"/><text x="{}" y="{}" class="axis">{l}</text>"#,
            n(x),
            n(y),
            n(x + 16.0),
            n(y + 9.0)
        );
        x += 20.0 + 6.5 * l.len() as f64 + 10.0;
    }
    let _ = write!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{THRESHOLD}" stroke-dasharray="6 4"/><text x="{}" y="{}" class="axis">RPO threshold</text>"##,
        n(x),
        n(y + 5.0),
        n(x + 24.0),
        n(y + 5.0),
        n(x + 28.0),
        n(y + 9.0)
    );
}

/// The whole timeline as one `<svg>` element.
pub fn render(r: &Report) -> String {
    let sc = Scale {
        t0: r.timeline.start_ms,
        t1: r.timeline.end_ms.max(r.timeline.start_ms.saturating_add(1)),
    };
    let ticks = ticks(sc.t0, sc.t1);
    let mut body = String::new();
    let mut y = LEGEND + AXIS;
    for m in &r.machines {
        y += machine_row(&mut body, r, m, y, &sc);
    }
    for p in &r.plans {
        let n = p.job_ids.len();
        let sub = format!("recovery plan, {n} job{}", if n == 1 { "" } else { "s" });
        let row = JobsRow {
            class: "plan",
            name: &p.name,
            sub: &sub,
            ids: &p.job_ids,
        };
        y += jobs_row(&mut body, r, &row, y, &sc);
    }
    let others: Vec<String> = r
        .jobs
        .iter()
        .filter(|j| {
            !r.machines.iter().any(|m| m.job_ids.contains(&j.id))
                && !r.plans.iter().any(|p| p.job_ids.contains(&j.id))
        })
        .map(|j| j.id.clone())
        .collect();
    if !others.is_empty() {
        let row = JobsRow {
            class: "site",
            name: "site",
            sub: "vault, fabric, policy jobs",
            ids: &others,
        };
        y += jobs_row(&mut body, r, &row, y, &sc);
    }
    let height = y + AXIS;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="timeline">"#,
        w = n(WIDTH),
        h = n(height)
    );
    legend(&mut s, 6.0);
    // The grid first, under the rows' contents.
    let rows_top = LEGEND + AXIS;
    for (t, _) in &ticks {
        let x = sc.x(*t);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{x}" y1="{}" x2="{x}" y2="{}"/>"#,
            n(rows_top),
            n(y),
            x = n(x)
        );
    }
    // Rows' backgrounds are translucent: the grid shows through.
    s.push_str(&body);
    axis(&mut s, &ticks, rows_top, false, &sc);
    axis(&mut s, &ticks, y, true, &sc);
    s.push_str("</svg>");
    s
}
