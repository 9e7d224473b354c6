//! The tutorial's second half on the fakes: test failover, its cleanup, failover with
//! shutdown, change of point, commit and complete migration; the refusals and faults around
//! them.

use super::Site;
use super::azure;
use super::failover::{FailoverRequest, QUOTAS, Quotas};
use super::jobs::JobState;
use super::model::ItemHistory;
use super::states::ItemState;
use super::tests::{enable, tutorial_site};
use crate::progress::NoProgress;

const HOUR: u64 = 3_600_000;

/// The tutorial site with machine `a` protected and an hour of replication.
fn protected(dir: &std::path::Path) -> Site {
    let mut site = tutorial_site(dir);
    let j = site.enable_replication(&enable("a")).unwrap();
    site.wait_for(&j.id, HOUR, &NoProgress).unwrap();
    site.advance(HOUR, &NoProgress).unwrap();
    assert_eq!(
        site.item("a").unwrap().properties.state,
        ItemState::Protected
    );
    site
}

fn req(point: &str) -> FailoverRequest {
    FailoverRequest {
        item: "a".into(),
        point: point.into(),
        ..FailoverRequest::default()
    }
}

fn run(site: &mut Site, job: &str) -> super::store::Resource<super::jobs::Job> {
    site.wait_for(job, 24 * HOUR, &NoProgress).unwrap();
    site.job(job).unwrap()
}

fn history(site: &mut Site) -> ItemHistory {
    site.tx(|t| {
        let v = super::vault::the_vault(t)?;
        Ok(t.get::<ItemHistory>(&ItemHistory::id(&v.id, "a"))?
            .properties)
    })
    .unwrap()
}

fn vms(site: &mut Site) -> Vec<String> {
    site.tx(|t| t.list::<azure::compute::VirtualMachine>(None))
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect()
}

#[test]
fn test_failover_cleanup_failover_commit_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = protected(dir.path());
    let points = site.recovery_points("a").unwrap().points;
    assert!(points.len() >= 10, "{}", points.len());

    // Test failover to the latest processed point.
    let s = site.test_failover(&req("latest-processed")).unwrap();
    assert!(!s.warnings.is_empty(), "production network while running");
    assert_eq!(
        site.item("a").unwrap().properties.state,
        ItemState::TestFailoverInProgress
    );
    let j = run(&mut site, &s.job.id);
    assert_eq!(
        j.properties.state,
        JobState::Succeeded,
        "{:?}",
        j.properties.errors
    );
    let names: Vec<&str> = j
        .properties
        .tasks
        .iter()
        .map(|t| t.friendly_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Prerequisites check for test failover",
            "Processing the data for failover",
            "Create test virtual machine",
            "Preparing the virtual machine",
            "Start the virtual machine"
        ]
    );
    let it = site.item("a").unwrap();
    assert_eq!(it.properties.state, ItemState::TestFailoverCleanupPending);
    assert_eq!(
        it.properties.allowed_operations(),
        [super::states::Operation::TestFailoverCleanup]
    );
    let h = history(&mut site);
    let r = h.failovers.last().unwrap().clone();
    assert!(r.verified(), "{:?}", r.verification);
    assert_eq!(
        r.ip_address, "10.0.0.20",
        "the source's IP, free in the subnet"
    );
    assert!(r.rto_ms >= 15 * 60_000, "RTO {}", r.rto_ms);
    assert_eq!(
        r.data_loss_ms,
        r.last_source_write_ms - r.recovery_point_time_ms
    );
    assert!(r.verification.iter().any(|v| v.check == "disk" && v.passed));
    assert_eq!(vms(&mut site), ["a-test"]);
    // Replication goes on meanwhile.
    let before = site.recovery_points("a").unwrap().points.len();
    site.advance(HOUR, &NoProgress).unwrap();
    assert!(site.recovery_points("a").unwrap().points.len() > before);

    // Failover is refused until the cleanup; the cleanup removes the VM, its NIC, disks, blobs.
    let e = site.failover(&req("latest")).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::NotAllowed, "{e}");
    let j = site
        .cleanup_test_failover("a", "size and network fine")
        .unwrap();
    let j = run(&mut site, &j.id);
    assert_eq!(
        j.properties.state,
        JobState::Succeeded,
        "{:?}",
        j.properties.errors
    );
    assert!(vms(&mut site).is_empty());
    let left = site
        .tx(|t| {
            Ok((
                t.list::<azure::compute::ManagedDisk>(None)?.len(),
                t.list::<azure::NetworkInterface>(None)?.len(),
            ))
        })
        .unwrap();
    assert_eq!(left, (0, 0));
    let it = site.item("a").unwrap();
    assert_eq!(it.properties.state, ItemState::Protected);
    assert_eq!(
        it.properties.last_successful_test_failover_ms,
        Some(r.vm_running_ms)
    );
    assert_eq!(
        history(&mut site).failovers[0].cleanup_notes.as_deref(),
        Some("size and network fine")
    );

    // Failover to Latest with shutdown: replication stops first.
    let s = site
        .failover(&FailoverRequest {
            shutdown: true,
            ..req("latest")
        })
        .unwrap();
    let it = site.item("a").unwrap();
    assert_eq!(it.properties.state, ItemState::FailoverInProgress);
    assert!(!it.properties.state.replicates());
    let j = run(&mut site, &s.job.id);
    assert_eq!(
        j.properties.state,
        JobState::Succeeded,
        "{:?}",
        j.properties.errors
    );
    assert_eq!(
        j.properties.tasks[0].friendly_name,
        "Shut down the virtual machine"
    );
    assert!(j.properties.tasks.iter().any(|t| t.name == "ProcessLatest"));
    let it = site.item("a").unwrap();
    assert_eq!(it.properties.state, ItemState::FailoverCommitPending);
    let vm = it.properties.target_vm_id.clone().unwrap();
    assert!(vm.ends_with("/virtualMachines/a"), "{vm}");
    let f = history(&mut site).failovers.last().unwrap().clone();
    assert_eq!(f.source_shut_down, Some(true));
    assert!(f.verified(), "{:?}", f.verification);
    let inst = site.instance("a").unwrap();
    assert_eq!(inst.state, crate::cloud::ec2::InstanceState::Stopped);

    // Change the point to an older one, then commit: the other points are gone.
    let older = site.recovery_points("a").unwrap().points[2].name.clone();
    let j = site.change_recovery_point("a", &older).unwrap();
    let j = run(&mut site, &j.id);
    assert_eq!(
        j.properties.state,
        JobState::Succeeded,
        "{:?}",
        j.properties.errors
    );
    let c = history(&mut site).failovers.last().unwrap().clone();
    assert_eq!(c.scenario_name, "ChangePit");
    assert!(
        c.recovery_point_id.ends_with(&older),
        "{}",
        c.recovery_point_id
    );
    assert!(c.verified(), "{:?}", c.verification);
    assert_eq!(c.vm_id, vm);
    let disks = site
        .tx(|t| t.list::<azure::compute::ManagedDisk>(None))
        .unwrap();
    assert_eq!(disks.len(), 1, "the old point's disk was replaced");
    let j = site.commit_failover("a").unwrap();
    let j = run(&mut site, &j.id);
    assert_eq!(j.properties.state, JobState::Succeeded);
    assert!(site.recovery_points("a").unwrap().points.is_empty());
    assert!(site.change_recovery_point("a", "latest").is_err());
    assert!(!site.dir().join("replicas/a").exists());

    // Complete migration: the item goes, the VM stays.
    let j = site.complete_migration("a").unwrap();
    let j = run(&mut site, &j.id);
    assert_eq!(j.properties.state, JobState::Succeeded);
    assert!(site.item("a").is_err());
    assert!(!site.dir().join("source/a").exists());
    assert_eq!(vms(&mut site), ["a"]);
    assert_eq!(history(&mut site).failovers.len(), 3);
}

#[test]
fn quota_faults_fail_the_job_with_the_service_ids_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = protected(dir.path());
    for (q, code) in [
        (
            Quotas {
                cores: Some(0),
                network_interfaces: None,
            },
            "28031",
        ),
        (
            Quotas {
                cores: None,
                network_interfaces: Some(0),
            },
            "28092",
        ),
    ] {
        site.tx(|t| t.set_setting(QUOTAS, &q)).unwrap();
        let s = site.test_failover(&req("latest-processed")).unwrap();
        let j = run(&mut site, &s.job.id);
        assert_eq!(j.properties.state, JobState::Failed);
        assert_eq!(j.properties.errors[0].error_code, code);
        assert_eq!(
            site.item("a").unwrap().properties.state,
            ItemState::Protected
        );
        let disks = site
            .tx(|t| t.list::<azure::compute::ManagedDisk>(None))
            .unwrap();
        assert!(disks.is_empty(), "the failed creation's disks are removed");
        let blobs = azure::storage::account_blobs(&site.dir().join("blobs"), "store1")
            .list(super::failover::CONTAINER)
            .unwrap();
        assert!(blobs.is_empty(), "{blobs:?}");
    }
}

#[test]
fn a_cancelled_failover_leaves_an_item_that_no_longer_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = protected(dir.path());
    let s = site.failover(&req("latest-processed")).unwrap();
    site.advance(60_000, &NoProgress).unwrap();
    site.cancel_job(&s.job.id).unwrap();
    let j = run(&mut site, &s.job.id);
    assert_eq!(j.properties.state, JobState::Cancelled);
    let it = site.item("a").unwrap();
    assert_eq!(it.properties.state, ItemState::FailoverFailed);
    let generated = it.properties.replication[0].generated_to_ms;
    site.advance(HOUR, &NoProgress).unwrap();
    let it = site.item("a").unwrap();
    assert_eq!(
        it.properties.replication[0].generated_to_ms, generated,
        "no replication"
    );
}

#[test]
fn a_test_vm_left_behind_makes_the_failover_fail_with_the_replica_ip_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = protected(dir.path());
    // A test failover cancelled after its VM was made leaves the VM (and its address).
    let s = site.test_failover(&req("latest-processed")).unwrap();
    let until_made: u64 = s
        .job
        .properties
        .tasks
        .iter()
        .take_while(|t| t.name != "PrepareVm")
        .map(|t| t.duration_ms)
        .sum();
    site.advance(until_made, &NoProgress).unwrap();
    let j = site.job(&s.job.id).unwrap();
    assert!(
        j.properties
            .tasks
            .iter()
            .any(|t| t.name == "CreateTestVm" && t.state == JobState::Succeeded)
    );
    site.cancel_job(&s.job.id).unwrap();
    let j = run(&mut site, &s.job.id);
    assert_eq!(j.properties.state, JobState::Cancelled);
    assert_eq!(
        site.item("a").unwrap().properties.state,
        ItemState::Protected
    );
    assert_eq!(vms(&mut site), ["a-test"]);
    let s = site.failover(&req("latest-processed")).unwrap();
    let j = run(&mut site, &s.job.id);
    assert_eq!(j.properties.state, JobState::Failed);
    let e = &j.properties.errors[0];
    assert_eq!(e.error_code, "ReplicaIpAddressInvalid");
    assert!(
        e.error_message.contains("replica IP addresses"),
        "{}",
        e.error_message
    );
    // Fixed (the test VM deleted), the failover can be tried again.
    site.tx(|t| {
        let vm = t.list::<azure::compute::VirtualMachine>(None)?.remove(0);
        azure::compute::delete_virtual_machine(t, &vm.id, true).map(|_| ())
    })
    .unwrap();
    assert_eq!(
        site.item("a").unwrap().properties.state,
        ItemState::FailoverFailed
    );
    let s = site.failover(&req("latest-processed")).unwrap();
    let j = run(&mut site, &s.job.id);
    assert_eq!(
        j.properties.state,
        JobState::Succeeded,
        "{:?}",
        j.properties.errors
    );
}

#[test]
fn a_point_outside_retention_is_refused_by_the_prerequisites() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = protected(dir.path());
    let s = site.test_failover(&req("rp-999999")).unwrap();
    let j = run(&mut site, &s.job.id);
    assert_eq!(j.properties.state, JobState::Failed);
    assert_eq!(
        j.properties.errors[0].error_code,
        "RecoveryPointNotAvailable"
    );
    assert_eq!(
        site.item("a").unwrap().properties.state,
        ItemState::Protected
    );
    assert!(
        site.test_failover(&req("latest-multi-vm-processed"))
            .is_err()
    );
}
