//! The report against the store: a site with real replication (two machines, an outage that
//! pushes the RPO over the threshold) plus the failover records, jobs and a plan a rehearsal
//! leaves (inserted here as the failover code will write them); the report's figures equal the
//! store's, the page parses as XML with one SVG (a row per machine, an RPO line, the threshold),
//! nothing is fetched or run, and names from user files are escaped everywhere.

use super::html::esc;
use super::*;
use crate::progress::NoProgress;
use crate::site::jobs::{Job, JobState, job_error};
use crate::site::model::{
    FailoverRecord, ItemHistory, ReplicatedItem, ReplicationPolicy, Verification,
};
use crate::site::tests::{enable, tutorial_site};
use crate::site::vault::the_vault;
use crate::site::{DEFAULT_START_MS, SiteConfig};
use proptest::prelude::*;

const MIN: u64 = 60_000;

/// A failover record as the failover code writes one.
pub(crate) fn record(job_id: &str, scenario: &str, start: u64, point: u64) -> FailoverRecord {
    FailoverRecord {
        job_id: job_id.into(),
        scenario_name: scenario.into(),
        recovery_plan: None,
        choice: "LatestProcessed".into(),
        recovery_point_id: format!("{job_id}/recoveryPoints/rp-7"),
        recovery_point_time_ms: point,
        recovery_point_type: "CrashConsistent".into(),
        start_ms: start,
        last_source_write_ms: start - 20_000,
        data_loss_ms: start - 20_000 - point,
        vm_running_ms: start + 9 * MIN,
        rto_ms: 9 * MIN,
        build_wall_ms: 1234,
        upload_wall_ms: 567,
        uploaded_bytes: 268_435_456,
        vm_id:
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a-test"
                .into(),
        vm_size: "Standard_D2s_v3".into(),
        ip_address: "10.0.0.20".into(),
        subnet_id: "/subscriptions/s/.../subnets/default".into(),
        source_shut_down: None,
        verification: vec![
            Verification {
                check: "size".into(),
                passed: true,
                detail: "Standard_D2s_v3".into(),
            },
            Verification {
                check: "disk".into(),
                passed: true,
                detail: "digest matches".into(),
            },
        ],
        cleaned_up_ms: None,
        cleanup_notes: None,
    }
}

/// A job as the failover code starts one, its tasks back to back from `start`, each `each`
/// long; the task at `fail` (if any) failed with 28031.
pub(crate) fn job(
    scenario: &str,
    friendly: &str,
    target: (&str, &str, &str),
    start: u64,
    each: u64,
    fail: Option<usize>,
) -> Job {
    let tasks = [
        ("FailoverPrerequisites", "Prerequisites check for failover"),
        ("CreateVm", "Create the virtual machine"),
        ("StartVm", "Start the virtual machine"),
    ];
    let mut j = Job::new(
        scenario,
        friendly,
        target,
        &tasks,
        &crate::site::jobs::Durations::default(),
        start,
    );
    let mut now = start;
    for i in 0..tasks.len() {
        now += each;
        j.tasks[i].wall_ms = 100 * (i as u64 + 1);
        if fail == Some(i) {
            j.fail_task(
                i,
                job_error(
                    "28031",
                    "Couldn't create the virtual machine: the VM quota is reached.",
                    "quota",
                    "raise it",
                ),
                now,
            );
            break;
        }
        j.complete_task(i, now);
    }
    j
}

/// The site a rehearsal leaves: a and b replicated for two hours (the process server down for
/// 40 minutes in the middle), a test failover of a (cleaned up), a failover of both through
/// plan `wave1`, a failed failover attempt of b before it, and b migrated (its item gone).
fn rehearsed(dir: &std::path::Path) -> (Site, RehearsalInfo) {
    let mut site = tutorial_site(dir);
    let started = site.now_ms().unwrap();
    for m in ["a", "b"] {
        site.enable_replication(&enable(m)).unwrap();
    }
    for i in 0..12 {
        if i == 5 {
            site.set_process_server("cs", false).unwrap();
        }
        if i == 9 {
            site.set_process_server("cs", true).unwrap();
        }
        site.advance(10 * MIN, &NoProgress).unwrap();
    }
    let now = site.now_ms().unwrap();
    site.tx(|t| {
        let v = the_vault(t)?;
        let items = t.list::<ReplicatedItem>(None)?;
        let id_of = |n: &str| {
            items
                .iter()
                .find(|i| i.properties.friendly_name == n)
                .map(|i| i.id.clone())
                .unwrap_or_default()
        };
        let jid = |n: &str| format!("{}/replicationJobs/{n}", v.id);
        let (a, b) = (id_of("a"), id_of("b"));
        let tfo = job(
            "TestFailover",
            "Test failover",
            (&a, "a", "ProtectionEntity"),
            now,
            MIN,
            None,
        );
        t.insert(&jid("tfo-a"), Some(&v.id), &tfo)?;
        let cleanup = job(
            "TestFailoverCleanup",
            "Cleanup test failover",
            (&a, "a", "ProtectionEntity"),
            now + 20 * MIN,
            MIN,
            None,
        );
        t.insert(&jid("tfoc-a"), Some(&v.id), &cleanup)?;
        let bad = job(
            "UnplannedFailover",
            "Failover",
            (&b, "b", "ProtectionEntity"),
            now + 25 * MIN,
            MIN,
            Some(1),
        );
        t.insert(&jid("fo-b-1"), Some(&v.id), &bad)?;
        let plan = job(
            "RecoveryPlanUnplannedFailover",
            "Failover",
            ("planid/wave1", "wave1", "RecoveryPlan"),
            now + 40 * MIN,
            3 * MIN,
            None,
        );
        t.insert(&jid("fo-wave1"), Some(&v.id), &plan)?;
        let migrate = job(
            "CompleteMigration",
            "Complete migration",
            (&b, "b", "ProtectionEntity"),
            now + 60 * MIN,
            MIN,
            None,
        );
        t.insert(&jid("cm-b"), Some(&v.id), &migrate)?;
        let mut tf = record(&jid("tfo-a"), "TestFailover", now + MIN, now - 4 * MIN);
        tf.cleaned_up_ms = Some(now + 22 * MIN);
        tf.cleanup_notes = Some("all good".into());
        let mut fa = record(
            &jid("fo-wave1"),
            "UnplannedFailover",
            now + 40 * MIN,
            now - 2 * MIN,
        );
        fa.recovery_plan = Some("wave1".into());
        fa.source_shut_down = Some(false);
        let mut fb = record(
            &jid("fo-wave1"),
            "UnplannedFailover",
            now + 40 * MIN,
            now - 7 * MIN,
        );
        fb.recovery_plan = Some("wave1".into());
        fb.verification[1].passed = false;
        fb.verification[1].detail = "digest differs".into();
        crate::site::protect::history_mut(t, "a", |h| h.failovers.extend([tf, fa]))?;
        crate::site::protect::history_mut(t, "b", |h| h.failovers.push(fb))?;
        // Complete migration removed b's item.
        t.delete(&b)
    })
    .unwrap();
    let info = RehearsalInfo {
        title: "tutorial".into(),
        scenario: "examples/aws-tutorial.toml".into(),
        started_ms: started,
        ended_ms: now + 62 * MIN,
        wall_ms: 4321,
        steps: vec![
            StepOutcome {
                name: "test failover a".into(),
                start_ms: now,
                end_ms: now + 3 * MIN,
                job_ids: vec!["tfo-a".into()],
                outcome: "ok".into(),
                expected: false,
            },
            StepOutcome {
                name: "failover b with no VM quota".into(),
                start_ms: now + 25 * MIN,
                end_ms: now + 27 * MIN,
                job_ids: vec!["fo-b-1".into()],
                outcome: "28031: the VM quota is reached".into(),
                expected: true,
            },
        ],
        faults: vec!["VM quota 28031 at the first failover of b".into()],
        objectives: vec![
            ObjectiveOutcome {
                objective: "RPO".into(),
                machine: Some("a".into()),
                target: "≤ 15m".into(),
                actual: "2m".into(),
                met: true,
            },
            ObjectiveOutcome {
                objective: "verified".into(),
                machine: None,
                target: "every VM".into(),
                actual: "b: disk digest differs".into(),
                met: false,
            },
        ],
    };
    (site, info)
}

/// The page parsed as XML (its `<!DOCTYPE html>` allowed: it has no internal subset).
fn xml(html: &str) -> roxmltree::Document<'_> {
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(html, opt).unwrap_or_else(|e| panic!("not XML: {e}"))
}

/// Every element of the document named `name` (in any namespace).
fn elements<'a>(doc: &'a roxmltree::Document<'a>, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == name)
        .collect()
}

fn has_class(n: &roxmltree::Node<'_, '_>, class: &str) -> bool {
    n.attribute("class")
        .is_some_and(|c| c.split(' ').any(|x| x == class))
}

/// The page's only external references are the XHTML and SVG namespaces; no script.
fn self_contained(html: &str) {
    assert!(!html.to_ascii_lowercase().contains("<script"), "a script");
    let rest = html
        .replace("http://www.w3.org/1999/xhtml", "")
        .replace("http://www.w3.org/2000/svg", "");
    assert!(!rest.contains("http://"), "an http reference");
    assert!(!rest.contains("https://"), "an https reference");
    for attr in ["src=", "@import", "url("] {
        assert!(!rest.contains(attr), "{attr} in the page");
    }
}

#[test]
fn the_reports_figures_equal_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (mut site, info) = rehearsed(dir.path());
    let report = Report::gather(&mut site, &info).unwrap();
    let (jobs, histories, policies) = site
        .tx(|t| {
            Ok((
                t.list::<Job>(None)?,
                t.list::<ItemHistory>(None)?,
                t.list::<ReplicationPolicy>(None)?,
            ))
        })
        .unwrap();

    // Every job, with its tasks' times and states.
    assert_eq!(report.jobs.len(), jobs.len());
    for (r, j) in report.jobs.iter().zip(&jobs) {
        assert_eq!(r.id, j.id);
        assert_eq!(r.state, j.properties.state);
        assert_eq!(r.start_ms, j.properties.start_ms);
        assert_eq!(r.end_ms, j.properties.end_ms);
        assert_eq!(r.tasks.len(), j.properties.tasks.len());
        for (rt, t) in r.tasks.iter().zip(&j.properties.tasks) {
            assert_eq!(
                (rt.start_ms, rt.end_ms),
                (t.start_ms, t.end_ms),
                "{}",
                t.name
            );
            assert_eq!(rt.state, t.state);
            assert_eq!(rt.errors, t.errors);
        }
        let wall: u64 = j.properties.tasks.iter().map(|t| t.wall_ms).sum();
        assert_eq!(r.wall_ms, wall);
    }
    let failed = report.job("fo-b-1").unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.tasks[1].errors[0].error_code, "28031");
    assert_eq!(
        failed.tasks[2].state,
        JobState::Cancelled,
        "the rest skipped"
    );

    // Machines: both, b's item gone but its history reported.
    let names: Vec<&str> = report.machines.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let threshold = policies[0]
        .properties
        .provider_specific_details
        .recovery_point_threshold_in_minutes;
    for m in &report.machines {
        let h = &histories
            .iter()
            .find(|h| h.properties.friendly_name == m.name)
            .unwrap()
            .properties;
        assert_eq!(m.rpo, h.rpo, "{}", m.name);
        assert!(m.rpo.len() >= 12, "{}: {} samples", m.name, m.rpo.len());
        assert_eq!(m.failovers, h.failovers);
        assert_eq!(m.rpo_threshold_minutes, Some(threshold), "{}", m.name);
        assert_eq!(
            m.max_rpo_seconds,
            h.rpo.iter().filter_map(|s| s.rpo_in_seconds).max()
        );
        // The outage (40 minutes) pushed the RPO past 15 minutes.
        assert!(m.max_rpo_seconds.unwrap() > threshold * 60, "{m:?}");
        assert!(m.ms_above_threshold >= 10 * MIN, "{}", m.ms_above_threshold);
        let own: Vec<&str> = jobs
            .iter()
            .filter(|j| j.properties.target_object_name == m.name)
            .map(|j| j.id.as_str())
            .collect();
        assert_eq!(m.job_ids, own);
        // Replication from Enable protection's start.
        let enable = jobs
            .iter()
            .find(|j| {
                j.properties.target_object_name == m.name
                    && j.properties.scenario_name == "EnableDr"
            })
            .unwrap();
        assert_eq!(m.replication[0].start_ms, enable.properties.start_ms);
    }
    let (a, b) = (&report.machines[0], &report.machines[1]);
    assert_eq!(a.state.as_deref(), Some("Protected"));
    assert!(b.state.is_none(), "b was migrated");
    assert!(a.points.len() >= 10, "{} points", a.points.len());
    assert!(b.points.is_empty());
    // b stopped replicating at its first failover attempt (the failed one), a at the plan's.
    let bad = report.job("fo-b-1").unwrap().start_ms;
    assert_eq!(b.replication.len(), 1);
    assert_eq!(b.replication[0].end_ms, bad);
    assert_eq!(a.replication[0].end_ms, a.failovers[1].start_ms);
    assert_eq!(a.failovers[0].data_loss_ms, 5 * MIN - 20_000);
    assert_eq!(a.failovers[1].rto_ms, 9 * MIN);

    // The plan, its job and machines.
    assert_eq!(report.plans.len(), 1);
    assert_eq!(report.plans[0].name, "wave1");
    assert_eq!(report.plans[0].machines, ["a", "b"]);
    assert_eq!(report.plans[0].job_ids.len(), 1);

    assert_eq!((report.objectives_met, report.objectives_missed), (1, 1));
    assert!(report.timeline.start_ms <= info.started_ms && report.timeline.end_ms >= info.ended_ms);

    // The terminal table shows the same figures.
    let text = report.text();
    assert!(text.contains("OBJECTIVES: 1 of 2 MISSED"), "{text}");
    assert!(
        text.contains("4m40s"),
        "a's test failover lost 4m40s:\n{text}"
    );
    assert!(text.contains("28031"), "{text}");
    assert!(
        text.contains("b UnplannedFailover: disk failed: digest differs"),
        "{text}"
    );
    assert!(text.contains("replication removed"), "{text}");
}

/// The tutorial through the real failover code: a and b protected, a tested (cleaned up with
/// notes), failed over with shutdown, committed and migrated; b still replicating. The
/// report's figures are the ones the failover measured and stored.
#[test]
fn a_real_migration_is_reported_as_the_failover_measured_it() {
    use crate::site::failover::FailoverRequest;
    const HOUR: u64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let mut site = tutorial_site(dir.path());
    let started = site.now_ms().unwrap();
    for m in ["a", "b"] {
        let j = site.enable_replication(&enable(m)).unwrap();
        site.wait_for(&j.id, HOUR, &NoProgress).unwrap();
    }
    site.advance(HOUR, &NoProgress).unwrap();
    let req = |point: &str, shutdown| FailoverRequest {
        item: "a".into(),
        point: point.into(),
        shutdown,
        ..FailoverRequest::default()
    };
    let run = |site: &mut Site, id: &str| {
        site.wait_for(id, 24 * HOUR, &NoProgress).unwrap();
        let j = site.job(id).unwrap();
        assert_eq!(
            j.properties.state,
            JobState::Succeeded,
            "{:?}",
            j.properties.errors
        );
    };
    let tfo = site
        .test_failover(&req("latest-processed", false))
        .unwrap()
        .job;
    run(&mut site, &tfo.id);
    let c = site
        .cleanup_test_failover("a", "size, network and disk <checked> & fine")
        .unwrap();
    run(&mut site, &c.id);
    site.advance(30 * MIN, &NoProgress).unwrap();
    let fo = site.failover(&req("latest", true)).unwrap().job;
    run(&mut site, &fo.id);
    let c = site.commit_failover("a").unwrap();
    run(&mut site, &c.id);
    let c = site.complete_migration("a").unwrap();
    run(&mut site, &c.id);
    let ended = site.now_ms().unwrap();
    let info = RehearsalInfo {
        title: "tutorial".into(),
        started_ms: started,
        ended_ms: ended,
        ..RehearsalInfo::default()
    };
    let report = Report::gather(&mut site, &info).unwrap();
    let (jobs, histories) = site
        .tx(|t| Ok((t.list::<Job>(None)?, t.list::<ItemHistory>(None)?)))
        .unwrap();
    assert_eq!(report.jobs.len(), jobs.len());
    let a = &report.machines[0];
    let stored = &histories
        .iter()
        .find(|h| h.properties.friendly_name == "a")
        .unwrap()
        .properties;
    assert_eq!(a.name, "a");
    assert!(a.state.is_none(), "migrated: the item is gone");
    assert_eq!(a.failovers, stored.failovers);
    let scenarios: Vec<&str> = a
        .failovers
        .iter()
        .map(|f| f.scenario_name.as_str())
        .collect();
    assert_eq!(scenarios, ["TestFailover", "UnplannedFailover"]);
    let (t, f) = (&a.failovers[0], &a.failovers[1]);
    assert!(t.cleaned_up_ms.is_some() && f.verified(), "{f:?}");
    assert!(
        f.rto_ms > 0 && f.build_wall_ms + f.upload_wall_ms > 0,
        "{f:?}"
    );
    // Replication stopped when the failover started; the threshold is still known.
    assert_eq!(a.replication.len(), 1);
    assert_eq!(
        a.replication[0].end_ms,
        report.job(&fo.id).unwrap().start_ms
    );
    assert_eq!(a.rpo_threshold_minutes, Some(15));
    let own = jobs
        .iter()
        .filter(|j| j.properties.target_object_name == "a")
        .count();
    assert_eq!(a.job_ids.len(), own);
    assert!(
        own >= 7,
        "enable, finalize, test failover, cleanup, failover, commit, complete"
    );
    let b = &report.machines[1];
    assert_eq!(b.state.as_deref(), Some("Protected"));
    assert!(!b.points.is_empty() && b.failovers.is_empty());

    let html = report.html();
    self_contained(&html);
    let doc = xml(&html);
    let rows: Vec<&str> = doc
        .descendants()
        .filter(|n| has_class(n, "machine"))
        .filter_map(|n| n.attribute("data-machine"))
        .collect();
    assert_eq!(rows, ["a", "b"]);
    assert!(
        html.contains("size, network and disk &lt;checked&gt; &amp; fine"),
        "the cleanup's notes, escaped"
    );
    let text = report.text();
    assert!(text.contains(&human_ms(f.data_loss_ms)), "{text}");
    assert!(text.contains(&human_ms(f.rto_ms)), "{text}");
}

#[test]
fn the_page_parses_as_xml_with_one_svg_a_row_per_machine_and_rpo_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (mut site, info) = rehearsed(dir.path());
    let report = Report::gather(&mut site, &info).unwrap();
    let html = report.html();
    self_contained(&html);
    let doc = xml(&html);
    assert_eq!(doc.root_element().tag_name().name(), "html");
    let svgs = elements(&doc, "svg");
    assert_eq!(svgs.len(), 1);
    assert_eq!(
        svgs[0].tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let rows: Vec<&str> = svgs[0]
        .descendants()
        .filter(|n| n.is_element() && has_class(n, "machine"))
        .filter_map(|n| n.attribute("data-machine"))
        .collect();
    assert_eq!(rows, ["a", "b"]);
    for row in svgs[0].descendants().filter(|n| has_class(n, "machine")) {
        let lines: Vec<_> = row
            .descendants()
            .filter(|n| has_class(n, "rpoline"))
            .collect();
        assert!(!lines.is_empty(), "no RPO line");
        let points: usize = lines
            .iter()
            .map(|l| l.attribute("points").unwrap().split(' ').count())
            .sum();
        let samples = report
            .machines
            .iter()
            .find(|m| Some(m.name.as_str()) == row.attribute("data-machine"))
            .unwrap()
            .rpo
            .iter()
            .filter(|s| s.rpo_in_seconds.is_some())
            .count();
        assert_eq!(points, samples, "a vertex per sample with an RPO");
        let th: Vec<_> = row
            .descendants()
            .filter(|n| has_class(n, "threshold"))
            .collect();
        assert_eq!(th.len(), 1);
        assert!(th[0].attribute("stroke-dasharray").is_some(), "dashed");
        assert!(row.descendants().any(|n| has_class(&n, "replication")));
        assert!(row.descendants().any(|n| has_class(&n, "failover")));
    }
    // Jobs as bars with their tasks; the failed task red.
    let bars = svgs[0]
        .descendants()
        .filter(|n| has_class(n, "job"))
        .count();
    assert_eq!(bars, report.jobs.len(), "every job on the timeline");
    let failed_bar = svgs[0]
        .descendants()
        .find(|n| n.attribute("data-job") == Some("fo-b-1"))
        .unwrap();
    let fills: Vec<&str> = failed_bar
        .children()
        .filter(|n| has_class(n, "task"))
        .filter_map(|n| n.attribute("fill"))
        .collect();
    assert_eq!(fills[1], svg::state_colour(JobState::Failed));
    // A plan row, and the axis labelled in time.
    assert!(svgs[0].descendants().any(|n| has_class(&n, "plan")));
    let ticks = svgs[0]
        .descendants()
        .filter(|n| has_class(n, "tick"))
        .count();
    assert!(ticks >= 8, "{ticks} ticks");
    // A table per job with each task, and the header's verdict.
    let tables = elements(&doc, "table")
        .into_iter()
        .filter(|t| has_class(t, "tasks"))
        .count();
    assert_eq!(tables, report.jobs.len());
    let verdict = elements(&doc, "p")
        .into_iter()
        .find(|p| has_class(p, "verdict"))
        .unwrap();
    assert!(has_class(&verdict, "missed"));
    assert!(verdict.text().unwrap().contains("1 of 2 objectives missed"));
}

#[test]
fn names_from_user_files_are_escaped_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "a<b&\"c";
    let mut site = Site::init(
        &dir.path().join("site"),
        SiteConfig {
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            seed: 1,
            start_ms: DEFAULT_START_MS,
            durations: Default::default(),
        },
    )
    .unwrap();
    let t0 = DEFAULT_START_MS;
    site.tx(|t| {
        let j = job(
            "TestFailover",
            "Test <failover> & 'more'",
            ("items/x", evil, "ProtectionEntity"),
            t0,
            MIN,
            Some(0),
        );
        t.insert("jobs/j1", None, &j)?;
        let mut r = record("jobs/j1", "TestFailover", t0 + MIN, t0 - 3 * MIN);
        r.verification[0].detail = "</td><script>alert(1)</script>".into();
        t.insert(
            "hist/x",
            None,
            &ItemHistory {
                friendly_name: evil.into(),
                rpo: vec![crate::site::model::RpoSample {
                    time_ms: t0,
                    rpo_in_seconds: Some(30),
                    replication_health: "Normal".into(),
                }],
                failovers: vec![r],
            },
        )?;
        Ok(())
    })
    .unwrap();
    let info = RehearsalInfo {
        title: "<script>alert('t')</script> ]]> \u{1b}[31mred".into(),
        scenario: "x&y.toml".into(),
        started_ms: t0,
        ended_ms: t0 + 10 * MIN,
        faults: vec!["fault <b>bold</b>\u{0}".into()],
        ..RehearsalInfo::default()
    };
    let report = Report::gather(&mut site, &info).unwrap();
    let html = report.html();
    self_contained(&html);
    assert!(!html.contains(evil));
    let doc = xml(&html);
    // The name reads back exactly, as text and as an attribute.
    let row = doc.descendants().find(|n| has_class(n, "machine")).unwrap();
    assert_eq!(row.attribute("data-machine"), Some(evil));
    assert!(
        row.descendants()
            .any(|n| n.is_text() && n.text() == Some(evil))
    );
    let title = elements(&doc, "h1")[0].text().unwrap().to_string();
    assert_eq!(
        title,
        "<script>alert('t')</script> ]]> \u{1b}[31mred".replace('\u{1b}', "\u{FFFD}")
    );
    // A single RPO sample still draws (a point).
    assert!(doc.descendants().any(|n| has_class(&n, "rpoline")));
    // The terminal never gets a control character.
    let text = report.text();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{0}'),
        "{text:?}"
    );
    assert!(text.contains(evil), "plain text keeps the name as it is");
    assert!(text.contains("\\u{1b}[31mred"));
}

#[test]
fn write_puts_the_page_and_the_json_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (mut site, info) = rehearsed(dir.path());
    let report = Report::gather(&mut site, &info).unwrap();
    let out = dir.path().join("report");
    let files = report.write(&out).unwrap();
    assert_eq!(files.html, out.join("report.html"));
    assert_eq!(std::fs::read_to_string(&files.html).unwrap(), report.html());
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    assert_eq!(
        back.json().unwrap(),
        report.json().unwrap(),
        "the JSON round-trips"
    );
    assert_eq!(back.machines[1].failovers, report.machines[1].failovers);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
    // Written again over the old ones.
    report.write(&out).unwrap();
    // Gathering does not change the site.
    let again = Report::gather(&mut site, &info).unwrap();
    assert_eq!(again.json().unwrap(), report.json().unwrap());
}

#[test]
fn ticks_fall_on_whole_steps_and_name_the_day_where_it_changes() {
    let t0 = DEFAULT_START_MS + 23 * 3_600_000 + 7 * MIN; // 23:07
    let t = svg::ticks(t0, t0 + 6 * 3_600_000);
    assert_eq!(t.len(), 6);
    assert!(t.iter().all(|(ms, _)| ms % 3_600_000 == 0));
    assert_eq!(t[0].1, "01-02 00:00");
    assert_eq!(t[1].1, "01:00");
    let short = svg::ticks(t0, t0 + 9 * MIN);
    assert!(short.iter().all(|(ms, _)| ms % MIN == 0));
    assert!(short.len() >= 4 && short.len() <= 10, "{short:?}");
    let long = svg::ticks(t0, t0 + 20 * 86_400_000);
    assert!(long.len() <= 10);
    assert!(long[0].1.len() == 5, "days only: {long:?}");
}

#[test]
fn a_step_is_as_planned_when_its_outcome_is_what_was_expected() {
    let s = |outcome: &str, expected| StepOutcome {
        outcome: outcome.into(),
        expected,
        ..StepOutcome::default()
    };
    assert!(s("ok", false).as_planned());
    assert!(s("28031: quota", true).as_planned());
    assert!(!s("28031: quota", false).as_planned());
    assert!(!s("ok", true).as_planned());
}

/// What XML reads back from `esc(s)`: `s`, with the characters XML cannot hold as U+FFFD.
fn model(s: &str) -> String {
    s.chars()
        .map(|c| {
            if ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
                || c == '\u{FFFE}'
                || c == '\u{FFFF}'
            {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn escaped_text_reads_back_as_itself(s in any::<String>()) {
        let e = esc(&s);
        let doc = format!("<t a=\"{e}\" b='{e}'>{e}</t>");
        let d = roxmltree::Document::parse(&doc).unwrap();
        let root = d.root_element();
        let want = model(&s);
        prop_assert_eq!(root.attribute("a"), Some(want.as_str()));
        prop_assert_eq!(root.attribute("b"), Some(want.as_str()));
        prop_assert_eq!(root.text().unwrap_or(""), want.as_str());
    }
}

fn any_name() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..10).prop_map(String::from_iter)
}

fn any_time() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => DEFAULT_START_MS..DEFAULT_START_MS + 2 * 86_400_000,
        1 => any::<u64>(),
        1 => Just(0u64),
    ]
}

fn any_state() -> impl Strategy<Value = JobState> {
    prop_oneof![
        Just(JobState::NotStarted),
        Just(JobState::InProgress),
        Just(JobState::Succeeded),
        Just(JobState::Failed),
        Just(JobState::Cancelled),
        Just(JobState::Suspended),
        Just(JobState::Cancelling),
    ]
}

type AnyTask = (JobState, Option<u64>, Option<u64>);
type AnyJob = (String, JobState, u64, Option<u64>, Vec<AnyTask>);
type AnyMachine = (
    String,
    Vec<(u64, Option<u64>)>,
    Vec<(u64, u64, u64)>,
    Option<u64>,
    Option<String>,
);

/// A report of any shape, with any names and times (ends before starts, u64::MAX, zero).
fn any_report() -> impl Strategy<Value = Report> {
    let machine = (
        any_name(),
        prop::collection::vec((any_time(), prop::option::of(any::<u64>())), 0..6),
        prop::collection::vec((any_time(), any_time(), any_time()), 0..3),
        prop::option::of(any::<u64>()),
        prop::option::of(any_name()),
    );
    let task = (
        any_state(),
        prop::option::of(any_time()),
        prop::option::of(any_time()),
    );
    let job = (
        any_name(),
        any_state(),
        any_time(),
        prop::option::of(any_time()),
        prop::collection::vec(task, 0..4),
    );
    (
        any_name(),
        prop::collection::vec(machine, 0..4),
        prop::collection::vec(job, 0..7),
        (any_time(), any_time()),
        prop::collection::vec(any_name(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(title, machines, jobs, (t0, t1), faults, met)| {
            build_report(title, machines, jobs, (t0, t1), faults, met)
        })
}

fn build_report(
    title: String,
    machines: Vec<AnyMachine>,
    jobs: Vec<AnyJob>,
    (t0, t1): (u64, u64),
    faults: Vec<String>,
    met: bool,
) -> Report {
    let jobs: Vec<JobReport> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, (name, state, start, end, tasks))| JobReport {
            id: format!("j{i}"),
            name: format!("j{i}"),
            scenario_name: "TestFailover".into(),
            friendly_name: name.clone(),
            target_object_name: name,
            target_instance_type: "ProtectionEntity".into(),
            state,
            start_ms: start,
            end_ms: end,
            wall_ms: 1,
            tasks: tasks
                .into_iter()
                .enumerate()
                .map(|(k, (state, s, e))| TaskReport {
                    task_id: format!("task-{}", k + 1),
                    name: "T".into(),
                    friendly_name: format!("task {k}"),
                    state,
                    state_description: None,
                    start_ms: s,
                    end_ms: e,
                    wall_ms: 0,
                    errors: vec![job_error("28031", "quota <&>", "", "")],
                })
                .collect(),
            errors: Vec::new(),
        })
        .collect();
    let n_machines = machines.len().max(1);
    let machines: Vec<MachineReport> = machines
        .into_iter()
        .enumerate()
        .map(|(i, (name, rpo, fos, threshold, state))| MachineReport {
            name,
            state,
            replication: vec![Span {
                start_ms: t0,
                end_ms: t1,
            }],
            rpo_threshold_minutes: threshold,
            max_rpo_seconds: rpo.iter().filter_map(|s| s.1).max(),
            rpo: rpo
                .into_iter()
                .map(|(t, r)| crate::site::model::RpoSample {
                    time_ms: t,
                    rpo_in_seconds: r,
                    replication_health: "Normal".into(),
                })
                .collect(),
            ms_above_threshold: 0,
            failovers: fos
                .into_iter()
                .map(|(start, point, last)| {
                    let mut f = record("j0", "UnplannedFailover", DEFAULT_START_MS, 0);
                    f.start_ms = start;
                    f.recovery_point_time_ms = point;
                    f.last_source_write_ms = last;
                    f
                })
                .collect(),
            points: vec![PointMark {
                name: "rp-1".into(),
                time_ms: t0,
                kind: "ApplicationConsistent".into(),
            }],
            points_note: None,
            job_ids: jobs
                .iter()
                .enumerate()
                .filter(|(k, _)| k % n_machines == i)
                .map(|(_, j)| j.id.clone())
                .collect(),
        })
        .collect();
    Report {
        title,
        timeline: Span {
            start_ms: t0,
            end_ms: t1,
        },
        objectives_met: usize::from(met),
        objectives_missed: usize::from(!met),
        objectives: vec![ObjectiveOutcome {
            met,
            ..ObjectiveOutcome::default()
        }],
        steps: vec![StepOutcome {
            job_ids: vec!["j0".into(), "nope".into()],
            ..StepOutcome::default()
        }],
        plans: vec![PlanReport {
            name: "p".into(),
            job_ids: jobs.iter().map(|j| j.id.clone()).collect(),
            machines: Vec::new(),
        }],
        faults,
        machines,
        jobs,
        ..Report::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever a report holds, it renders without panicking: a page that parses as XML with
    /// one SVG and a row per machine, a terminal table with no control character, JSON that
    /// reads back.
    #[test]
    fn any_report_renders(r in any_report()) {
        let html = r.html();
        let doc = xml(&html);
        prop_assert_eq!(elements(&doc, "svg").len(), 1);
        let rows = doc.descendants().filter(|n| has_class(n, "machine")).count();
        prop_assert_eq!(rows, r.machines.len());
        let text = r.text();
        prop_assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{:?}", text);
        let back: Report = serde_json::from_str(&r.json().unwrap()).unwrap();
        prop_assert_eq!(back.json().unwrap(), r.json().unwrap());
    }
}
