//! `ec2azure rehearse` from the CLI: the tutorial end to end (exit 0, the report's figures equal
//! the site's), the scenario that must fail its checks (exit 1, each failing check named), and
//! the faults with what must follow them.

use crate::util::ec2azure;
use ec2azure::site::Site;
use ec2azure::site::model::ItemHistory;
use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// The tutorial's scenario with its replication shortened, and `extra` appended.
fn tutorial(dir: &Path, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(example("aws-tutorial.toml"))
        .unwrap()
        .replace("replicate_for = \"3h\"", "replicate_for = \"1h\"");
    let p = dir.join("scenario.toml");
    std::fs::write(&p, format!("{text}\n{extra}")).unwrap();
    p
}

fn histories(site: &Path) -> Vec<ItemHistory> {
    let mut s = Site::open(site).unwrap();
    s.tx(|t| t.list::<ItemHistory>(None))
        .unwrap()
        .into_iter()
        .map(|h| h.properties)
        .collect()
}

#[test]
fn the_tutorial_rehearses_to_complete_migration_and_the_report_is_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = ec2azure([
        "rehearse".as_ref(),
        example("aws-tutorial.toml").as_os_str(),
        "--report".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    o.ok();
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["objectivesMissed"], 0, "{report:#}");
    assert_eq!(report["objectivesMet"], 3);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert!(steps.iter().all(|s| *s == "ok"), "{steps:?}");
    // The report's figures are the store's.
    let h = histories(&out.join("site"));
    assert_eq!(h.len(), 1);
    let m = &report["machines"][0];
    assert_eq!(m["name"], "My-AWS-VM");
    let recs = m["failovers"].as_array().unwrap();
    assert_eq!(recs.len(), h[0].failovers.len());
    for (r, f) in recs.iter().zip(&h[0].failovers) {
        assert_eq!(r["dataLossMs"], f.data_loss_ms);
        assert_eq!(r["rtoMs"], f.rto_ms);
        assert_eq!(r["recoveryPointId"], f.recovery_point_id.as_str());
        assert!(f.verified(), "{:?}", f.verification);
    }
    let kinds: Vec<&str> = h[0]
        .failovers
        .iter()
        .map(|f| f.scenario_name.as_str())
        .collect();
    assert_eq!(kinds, ["TestFailover", "UnplannedFailover"]);
    assert_eq!(h[0].failovers[1].source_shut_down, Some(true));
    assert!(h[0].failovers[0].cleaned_up_ms.is_some());
    // The source's IP is kept in the target subnet that covers it.
    assert_eq!(h[0].failovers[1].ip_address, "172.31.20.20");
    // Complete migration removed the replica; the VM stays.
    let site = out.join("site");
    assert!(!site.join("replicas/My-AWS-VM").exists());
    assert!(!site.join("source/My-AWS-VM").exists());
    let mut s = Site::open(&site).unwrap();
    let vms = s
        .tx(|t| t.list::<ec2azure::site::azure::compute::VirtualMachine>(None))
        .unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].name, "My-AWS-VM");
    // The page is written and self-contained.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));
}

#[test]
fn the_failing_checks_example_exits_1_and_names_every_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let o = ec2azure([
        "rehearse".as_ref(),
        example("failing-checks.toml").as_os_str(),
        "--site".as_ref(),
        dir.path().join("site").as_os_str(),
    ]);
    assert_eq!(o.code, 1, "{o}");
    for needle in ["virtualization-type", "pv-drivers", "AccountNameInvalid"] {
        assert!(o.stdout.contains(needle), "{needle} missing\n{o}");
    }
}

#[test]
fn faults_stop_fails_throttling_and_an_outage_leave_a_verified_migration() {
    let dir = tempfile::tempdir().unwrap();
    let scn = tutorial(
        dir.path(),
        r#"
[faults]
ec2_stop_fails = true
blob_throttle = 4
blob_server_errors = 2
process_server_outage = { after = "20m", minutes = 25 }
"#,
    );
    let site = dir.path().join("site");
    let o = ec2azure([
        "rehearse".as_ref(),
        scn.as_os_str(),
        "--site".as_ref(),
        site.as_os_str(),
        "--json".as_ref(),
    ]);
    o.ok();
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["faults"].as_array().unwrap().len(), 3, "{report:#}");
    let h = histories(&site);
    let f = &h[0].failovers[1];
    // The shutdown failed, the failover went on.
    assert_eq!(f.source_shut_down, Some(false));
    assert!(f.verified());
    // The outage shows in the RPO history: above the 15-minute threshold for a while.
    assert!(
        h[0].rpo
            .iter()
            .any(|s| s.rpo_in_seconds.is_some_and(|r| r > 15 * 60)),
        "{:?}",
        h[0].rpo
    );
    // Every upload was retried past the injected 503s and 500s.
    let jobs = report["jobs"].as_array().unwrap();
    assert!(!jobs.is_empty());
    let mut s = Site::open(&site).unwrap();
    let retried: Vec<u64> = s
        .jobs()
        .unwrap()
        .iter()
        .flat_map(|j| j.properties.tasks.clone())
        .filter(|t| t.name == "FailoverProcessing")
        .flat_map(|t| {
            t.output["disks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|d| d["retries"].as_u64().unwrap_or(0))
        })
        .collect();
    assert_eq!(retried.len(), 2);
    assert!(retried.iter().all(|&r| r >= 6), "{retried:?}");
}

#[test]
fn a_test_failover_left_behind_fails_the_failover_with_the_replica_ip_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("aws-tutorial.toml"))
        .unwrap()
        .replace("replicate_for = \"3h\"", "replicate_for = \"1h\"");
    // Only the failover step, expected to fail; the quota fault on a second try.
    let head = text.split("# Test failover into").next().unwrap();
    let scn = dir.path().join("left.toml");
    std::fs::write(
        &scn,
        format!(
            r#"{head}
[[steps]]
action = "failover"
machine = "My-AWS-VM"
network = "myMigrationNetwork"
expect = "fail"

[faults]
test_failover_left = ["My-AWS-VM"]
"#
        ),
    )
    .unwrap();
    let site = dir.path().join("site");
    let o = ec2azure([
        "rehearse".as_ref(),
        scn.as_os_str(),
        "--site".as_ref(),
        site.as_os_str(),
        "--json".as_ref(),
    ]);
    o.ok();
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let last = report["steps"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["outcome"]
            .as_str()
            .unwrap()
            .contains("ReplicaIpAddressInvalid"),
        "{last}"
    );
    assert_eq!(last["expected"], true);
    let mut s = Site::open(&site).unwrap();
    let it = s.item("My-AWS-VM").unwrap();
    assert_eq!(
        it.properties.state,
        ec2azure::site::states::ItemState::FailoverFailed
    );
}
