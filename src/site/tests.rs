//! The site as a state machine under random operations: every item's `allowedOperations` match
//! its state's row, an operation outside them is refused and changes nothing, every job ends in
//! a final state, an item is busy exactly while a job runs on it, and a crash injected at any
//! step (a task left running by a process that died, with half-written files) is found on the
//! next open and leaves everything legal.

use super::Site;
use super::estate::AwsMode;
use super::jobs::{Job, JobState};
use super::model::ReplicatedItem;
use super::protect::EnableRequest;
use super::scenario::{Scenario, init_site};
use super::states::{ItemState, Operation};
use crate::error::ErrorKind;
use crate::progress::NoProgress;
use proptest::prelude::*;
use std::path::Path;

const GIB: u64 = 1 << 30;

/// A 2 GiB sparse disk with an MBR (boot signature) and a little data.
fn disk(path: &Path, seed: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(2 * GIB).unwrap();
    let mut mbr = vec![0u8; 512];
    mbr[446] = 0x80;
    mbr[450] = 0x07;
    mbr[454..458].copy_from_slice(&2048u32.to_le_bytes());
    mbr[458..462].copy_from_slice(&1_000_000u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.write_all_at(&mbr, 0).unwrap();
    f.write_all_at(&vec![seed | 1; 256 << 10], 1 << 20).unwrap();
}

/// A site with the tutorial's estate: a configuration server and two machines, the vault, the
/// key, the registration, a policy associated, the target resources — everything up to
/// enabling replication.
pub(crate) fn tutorial_site(dir: &Path) -> Site {
    disk(&dir.join("a.raw"), 1);
    disk(&dir.join("b.raw"), 2);
    let text = r#"
[site]
seed = 5
[aws]
[[aws.images]]
id = "ami-00000000000000001"
name = "Windows_Server-2012-R2_RTM-English-64Bit-Base"
platform = "windows"
[[aws.security_groups]]
name = "push"
ingress = [
  { protocol = "tcp", from_port = 135, to_port = 135, cidrs = ["10.0.0.0/16"] },
  { protocol = "tcp", from_port = 445, to_port = 445, cidrs = ["10.0.0.0/16"] },
]
[[aws.instances]]
name = "cs"
image = "ami-00000000000000001"
private_ip = "10.0.0.10"
[[aws.instances]]
name = "a"
image = "ami-00000000000000001"
private_ip = "10.0.0.20"
security_groups = ["push"]
volumes = [{ device = "/dev/sda1", size_gib = 2, data = "a.raw" }]
[[aws.instances]]
name = "b"
image = "ami-00000000000000001"
private_ip = "10.0.0.21"
security_groups = ["push"]
volumes = [{ device = "/dev/sda1", size_gib = 2, data = "b.raw" }]
[[guests]]
instance = "a"
os_name = "Windows Server 2012 R2 Datacenter"
local_account_token_filter_policy = true
workload = { write_rate = 512 }
[[guests]]
instance = "b"
os_name = "Windows Server 2012 R2 Datacenter"
local_account_token_filter_policy = true
workload = { write_rate = 512 }
"#;
    let sc = Scenario::parse(text).unwrap();
    let mut site = init_site(&dir.join("site"), &sc, dir, AwsMode::Fake).unwrap();
    let sub = site.config().subscription_id.clone();
    site.tx(|t| {
        super::azure::create_resource_group(t, &sub, "rg", "westeurope")?;
        super::azure::create_storage_account(t, &sub, "rg", "store1", None, None)?;
        super::azure::create_virtual_network(
            t,
            &sub,
            "rg",
            "net",
            &super::azure::VnetSpec::default(),
        )?;
        Ok(())
    })
    .unwrap();
    site.create_vault("rg", "myVault", "westeurope").unwrap();
    let key = dir.join("key");
    site.issue_key(&key).unwrap();
    let ip = site.instance_ip("cs").unwrap();
    let cs = site.instance("cs").unwrap().id;
    let j = site.register_config_server(&key, "cs", &cs, &ip).unwrap();
    site.wait_for(&j.id, 3_600_000, &NoProgress).unwrap();
    site.add_account("cs", "WindowsAccount", "Administrator", false)
        .unwrap();
    let j = site
        .create_policy("pol", super::model::PolicyDetails::default())
        .unwrap();
    site.wait_for(&j.id, 3_600_000, &NoProgress).unwrap();
    let j = site.associate_policy("pol", "cs").unwrap();
    site.wait_for(&j.id, 3_600_000, &NoProgress).unwrap();
    site.discover_machines(None).unwrap();
    site
}

pub(crate) fn enable(machine: &str) -> EnableRequest {
    EnableRequest {
        machine: machine.into(),
        config_server: None,
        policy: None,
        account: "WindowsAccount".into(),
        resource_group: "rg".into(),
        storage_account: "store1".into(),
        network: "net".into(),
        subnet: "default".into(),
        vm_name: None,
        multi_vm_group: None,
    }
}

#[derive(Debug, Clone)]
enum Step {
    Enable(usize),
    Disable(usize, bool),
    Advance(u64),
    CancelLatest,
    RestartLatest,
    ProcessServer(bool),
    /// A process dies in the middle of the next task's work.
    Crash,
    /// Test failover to a point choice.
    TestFailover(usize, usize),
    /// Cleanup test failover.
    Cleanup(usize),
    /// Failover, with or without the source's shutdown.
    Failover(usize, bool),
    /// Change the recovery point.
    ChangePit(usize),
    /// Commit the failover.
    Commit(usize),
    /// Complete migration.
    CompleteMigration(usize),
    /// Run the clock until the newest running job ends (or suspends).
    Wait,
}

/// The point choices a step picks from.
const POINTS: [&str; 3] = ["latest-processed", "latest", "latest-app-consistent"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..2usize).prop_map(Step::Enable),
        2 => (0..2usize, any::<bool>()).prop_map(|(i, k)| Step::Disable(i, k)),
        4 => (1..40u64).prop_map(|m| Step::Advance(m * 60_000)),
        1 => Just(Step::CancelLatest),
        1 => Just(Step::RestartLatest),
        1 => any::<bool>().prop_map(Step::ProcessServer),
        2 => Just(Step::Crash),
        3 => (0..2usize, 0..POINTS.len()).prop_map(|(i, p)| Step::TestFailover(i, p)),
        2 => (0..2usize).prop_map(Step::Cleanup),
        4 => (0..2usize, any::<bool>()).prop_map(|(i, k)| Step::Failover(i, k)),
        1 => (0..2usize).prop_map(Step::ChangePit),
        3 => (0..2usize).prop_map(Step::Commit),
        3 => (0..2usize).prop_map(Step::CompleteMigration),
        6 => Just(Step::Wait),
    ]
}

/// Everything the store holds, to compare before and after a refused operation.
fn snapshot(site: &mut Site) -> String {
    let items = site.items().unwrap();
    let jobs = site.jobs().unwrap();
    let now = site.now_ms().unwrap();
    format!(
        "{now} {} {}",
        serde_json::to_string(&items).unwrap(),
        serde_json::to_string(&jobs).unwrap()
    )
}

fn check_invariants(site: &mut Site) {
    let jobs = site.jobs().unwrap();
    for it in site.items().unwrap() {
        let p: &ReplicatedItem = &it.properties;
        let running = jobs
            .iter()
            .find(|j| !j.properties.state.is_final() && j.properties.target_object_id == it.id);
        // Busy states have their job; the one job that runs on an idle-looking state is
        // Finalize protection during initial replication (which can be disabled).
        assert!(
            (p.state.busy() && running.is_some())
                || (!p.state.busy()
                    && (running.is_none() || p.state == ItemState::InitialReplicationInProgress)),
            "{} is {:?} with running job {:?}",
            p.friendly_name,
            p.state,
            running.map(|j| &j.properties.friendly_name)
        );
        assert_eq!(p.allowed_operations(), p.state.allowed());
        if p.state.replicates() {
            assert!(
                !p.replication.is_empty(),
                "{} replicates nothing",
                p.friendly_name
            );
        }
        // Replication stops before a failover starts: a cancelled or failed one leaves an item
        // that no longer replicates.
        if matches!(
            p.state,
            ItemState::FailoverInProgress
                | ItemState::FailoverFailed
                | ItemState::FailoverCommitPending
                | ItemState::FailoverChanging
                | ItemState::FailoverCommitted
        ) {
            assert!(!p.state.replicates(), "{} {:?}", p.friendly_name, p.state);
        }
    }
    // What the failovers made: a test VM only while its item awaits the cleanup (or is being
    // tested), or when a cancelled test failover left it (as the service does); a VM only for a
    // failed-over or migrated item, or a cancelled failover's. No NIC or disk without its VM,
    // but for the one job running.
    let items = site.items().unwrap();
    let state_of = |name: &str| {
        items
            .iter()
            .find(|i| i.properties.target.vm_name == name || i.name == name)
            .map(|i| i.properties.state)
    };
    let cancelled = |item: &str, scenario: &str| {
        jobs.iter().any(|j| {
            j.properties.state == JobState::Cancelled
                && j.properties.scenario_name == scenario
                && j.properties.target_object_name == item
        })
    };
    // A failed-over machine's VM stays when its item goes (complete migration, or protection
    // disabled after the failover).
    let failed_over = |item: &str| {
        jobs.iter().any(|j| {
            j.properties.state == JobState::Succeeded
                && j.properties.scenario_name == "UnplannedFailover"
                && j.properties.target_object_name == item
        })
    };
    let running = jobs.iter().any(|j| !j.properties.state.is_final());
    let (vms, nics, disks) = site
        .tx(|t| {
            Ok((
                t.list::<super::azure::compute::VirtualMachine>(None)?,
                t.list::<super::azure::NetworkInterface>(None)?,
                t.list::<super::azure::compute::ManagedDisk>(None)?,
            ))
        })
        .unwrap();
    for vm in &vms {
        if let Some(item) = vm.name.strip_suffix("-test") {
            let ok = matches!(
                state_of(item),
                Some(ItemState::TestFailoverInProgress)
                    | Some(ItemState::TestFailoverCleanupPending)
                    | Some(ItemState::TestFailoverCleanupInProgress)
            ) || cancelled(item, "TestFailover");
            assert!(ok, "test VM {} left ({:?})", vm.name, state_of(item));
        } else {
            let s = state_of(&vm.name);
            let ok = matches!(
                s,
                Some(ItemState::FailoverInProgress)
                    | Some(ItemState::FailoverCommitPending)
                    | Some(ItemState::FailoverChanging)
                    | Some(ItemState::FailoverCommitted)
                    | Some(ItemState::Disabling)
            ) || failed_over(&vm.name)
                || cancelled(&vm.name, "UnplannedFailover")
                || cancelled(&vm.name, "ChangePit");
            assert!(ok, "VM {} left ({s:?})", vm.name);
        }
    }
    if !running {
        let vm_ids: Vec<&str> = vms.iter().map(|v| v.id.as_str()).collect();
        for n in &nics {
            let owner = n.properties.virtual_machine.as_ref().map(|v| v.id.as_str());
            assert!(
                owner.is_some_and(|o| vm_ids.contains(&o)),
                "NIC {} without its VM",
                n.name
            );
        }
        for d in &disks {
            let used = vms.iter().any(|v| {
                let sp = &v.properties.storage_profile;
                sp.os_disk.managed_disk.id == d.id
                    || sp.data_disks.iter().any(|x| x.managed_disk.id == d.id)
            });
            assert!(used, "disk {} without its VM", d.name);
        }
    }
}

/// Runs one failover operation; a refusal must change nothing and name a state that does
/// not allow it.
fn failover_step(
    site: &mut Site,
    name: &str,
    op: Operation,
    f: impl FnOnce(&mut Site) -> crate::error::Result<()>,
) {
    let before = snapshot(site);
    let state = site.item(name).ok().map(|it| it.properties.state);
    match f(site) {
        Ok(()) => {
            let s = state.unwrap();
            assert!(s.allowed().contains(&op), "{op} started from {s:?}");
            if std::env::var_os("EC2AZURE_PROPTEST_TRACE").is_some() {
                eprintln!("started {op} from {s:?}");
            }
        }
        Err(e) => {
            match state {
                Some(s) if !s.allowed().contains(&op) => {
                    assert_eq!(e.kind(), ErrorKind::NotAllowed, "{e}")
                }
                Some(s) => {
                    // Allowed by the state, refused by a rule of the operation: a multi-VM
                    // point, or a point that is not there yet.
                    assert!(
                        matches!(e.kind(), ErrorKind::NotAllowed | ErrorKind::NotFound),
                        "{op} from {s:?}: {e}"
                    );
                }
                None => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
            }
            assert_eq!(
                before,
                snapshot(site),
                "a refused {op} changed the site: {e}"
            );
        }
    }
}

fn run(protect_first: bool, steps: &[Step]) {
    let dir = tempfile::tempdir().unwrap();
    let mut site = tutorial_site(dir.path());
    let names = ["a", "b"];
    if protect_first {
        // Most runs start from two protected machines, so that the failover steps find
        // items in every state of the second half.
        for m in names {
            site.enable_replication(&enable(m)).unwrap();
        }
        site.advance(40 * 60_000, &NoProgress).unwrap();
    }
    for s in steps {
        match s {
            Step::Enable(i) => {
                let before = snapshot(&mut site);
                if let Err(e) = site.enable_replication(&enable(names[*i])) {
                    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
                    assert_eq!(
                        before,
                        snapshot(&mut site),
                        "a refused enable changed the site"
                    );
                }
            }
            Step::Disable(i, keep) => {
                let before = snapshot(&mut site);
                let state = site.item(names[*i]).ok().map(|it| it.properties.state);
                match site.disable_replication(names[*i], *keep) {
                    Ok(_) => {
                        let s = state.unwrap();
                        assert!(s.allowed().contains(&Operation::DisableProtection), "{s:?}");
                    }
                    Err(e) => {
                        if let Some(s) = state {
                            assert_eq!(e.kind(), ErrorKind::NotAllowed, "{e}");
                            assert!(!s.allowed().contains(&Operation::DisableProtection));
                        } else {
                            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
                        }
                        assert_eq!(
                            before,
                            snapshot(&mut site),
                            "a refused disable changed the site"
                        );
                    }
                }
            }
            Step::Advance(ms) => {
                site.advance(*ms, &NoProgress).unwrap();
            }
            Step::CancelLatest => {
                if let Some(j) = site
                    .jobs()
                    .unwrap()
                    .into_iter()
                    .rev()
                    .find(|j| !j.properties.state.is_final())
                {
                    match site.cancel_job(&j.id) {
                        Ok(_) => {}
                        // Asked twice: the first cancel is still under way.
                        Err(e) => assert_eq!(j.properties.state, JobState::Cancelling, "{e}"),
                    }
                }
            }
            Step::RestartLatest => {
                if let Some(j) =
                    site.jobs().unwrap().into_iter().rev().find(|j| {
                        matches!(j.properties.state, JobState::Failed | JobState::Cancelled)
                    })
                {
                    let before = snapshot(&mut site);
                    if let Err(e) = site.restart_job(&j.id) {
                        assert_eq!(before, snapshot(&mut site), "{e}");
                    }
                }
            }
            Step::TestFailover(i, p) => {
                failover_step(&mut site, names[*i], Operation::TestFailover, |s| {
                    s.test_failover(&super::failover::FailoverRequest {
                        item: names[*i].into(),
                        point: POINTS[*p].into(),
                        ..super::failover::FailoverRequest::default()
                    })
                    .map(|_| ())
                })
            }
            Step::Cleanup(i) => {
                failover_step(&mut site, names[*i], Operation::TestFailoverCleanup, |s| {
                    s.cleanup_test_failover(names[*i], "checked").map(|_| ())
                })
            }
            Step::Failover(i, shutdown) => {
                failover_step(&mut site, names[*i], Operation::UnplannedFailover, |s| {
                    s.failover(&super::failover::FailoverRequest {
                        item: names[*i].into(),
                        point: "latest".into(),
                        shutdown: *shutdown,
                        ..super::failover::FailoverRequest::default()
                    })
                    .map(|_| ())
                })
            }
            Step::ChangePit(i) => failover_step(&mut site, names[*i], Operation::ChangePit, |s| {
                let older = s
                    .recovery_points(names[*i])
                    .ok()
                    .and_then(|p| p.points.first().map(|p| p.name.clone()))
                    .unwrap_or_else(|| "latest-processed".into());
                s.change_recovery_point(names[*i], &older).map(|_| ())
            }),
            Step::Commit(i) => failover_step(&mut site, names[*i], Operation::Commit, |s| {
                s.commit_failover(names[*i]).map(|_| ())
            }),
            Step::CompleteMigration(i) => {
                failover_step(&mut site, names[*i], Operation::CompleteMigration, |s| {
                    s.complete_migration(names[*i]).map(|_| ())
                })
            }
            Step::Wait => {
                if let Some(j) = site
                    .jobs()
                    .unwrap()
                    .into_iter()
                    .rev()
                    .find(|j| !j.properties.state.is_final())
                {
                    site.wait_for(&j.id, 24 * 3_600_000, &NoProgress).unwrap();
                }
            }
            Step::ProcessServer(up) => {
                site.set_process_server("cs", *up).unwrap();
            }
            Step::Crash => {
                // What a process killed in a task's work leaves: the task marked running under
                // a lock nobody holds, and the work's files half written.
                let Some(j) = site
                    .jobs()
                    .unwrap()
                    .into_iter()
                    .find(|j| j.properties.state == JobState::InProgress)
                else {
                    continue;
                };
                let Some((i, _)) = j.properties.next_due() else {
                    continue;
                };
                let id = j.id.clone();
                site.tx(|t| {
                    let mut j = t.get::<Job>(&id)?;
                    j.properties.tasks[i].state = JobState::InProgress;
                    j.properties.tasks[i].running_lock = Some("dead.lock".into());
                    t.update(&mut j)
                })
                .unwrap();
                let item = j
                    .properties
                    .target_object_id
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string();
                let partial = site.dir().join("replicas").join(&item).join("0");
                if j.properties.tasks[i].name == "InitialReplication" {
                    std::fs::create_dir_all(&partial).unwrap();
                    std::fs::write(partial.join("base-1.raw.partial"), b"half").unwrap();
                }
                // A failover's processing killed half-way: a staged VHD and a blob begun.
                let short = j.name.split('-').next().unwrap().to_string();
                let staged = site.dir().join("staging").join(format!("{short}-0.vhd"));
                let blobs =
                    super::azure::storage::account_blobs(&site.dir().join("blobs"), "store1");
                let blob = crate::cloud::pageblob::BlobName::new(
                    super::failover::CONTAINER,
                    format!("{item}-disk0-{short}.vhd"),
                );
                let processing = j.properties.tasks[i].name == "FailoverProcessing";
                if processing {
                    use crate::cloud::pageblob::PageBlobStore;
                    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
                    std::fs::write(&staged, b"half").unwrap();
                    blobs.create_container(super::failover::CONTAINER).unwrap();
                    blobs.create(&blob, 1 << 20).unwrap();
                }
                let dir = site.dir().to_path_buf();
                drop(site);
                site = Site::open(&dir).unwrap();
                assert_eq!(site.recovered(), std::slice::from_ref(&id));
                let j = site.job(&id).unwrap();
                assert_eq!(j.properties.state, JobState::Failed);
                assert_eq!(j.properties.errors[0].error_code, "interrupted");
                if j.properties.tasks[i].name == "InitialReplication" {
                    assert!(!partial.exists(), "the partial replica was left behind");
                }
                if processing {
                    assert!(!staged.exists(), "the staged VHD was left behind");
                    let left = blobs.list(super::failover::CONTAINER).unwrap();
                    assert!(
                        !left.iter().any(|b| b.ends_with(&format!("-{short}.vhd"))),
                        "the half-made blob was left behind: {left:?}"
                    );
                }
            }
        }
        check_invariants(&mut site);
    }
    // Every job ends: no step leaves one running for ever.
    site.advance(3_600_000, &NoProgress).unwrap();
    for j in site.jobs().unwrap() {
        assert!(
            j.properties.state.is_final(),
            "{} is still {:?}",
            j.properties.friendly_name,
            j.properties.state
        );
    }
    check_invariants(&mut site);
    // After complete migration the item is gone and its VM remains.
    let vms: Vec<String> = site
        .tx(|t| t.list::<super::azure::compute::VirtualMachine>(None))
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    for j in site.jobs().unwrap() {
        if j.properties.scenario_name == "CompleteMigration"
            && j.properties.state == JobState::Succeeded
        {
            let m = &j.properties.target_object_name;
            assert!(site.item(m).is_err(), "{m} stays after complete migration");
            assert!(
                vms.contains(m),
                "{m}'s VM went with complete migration: {vms:?}"
            );
        }
    }
    for it in site.items().unwrap() {
        assert!(
            !it.properties.state.busy(),
            "{} stays {:?}",
            it.properties.friendly_name,
            it.properties.state
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_site_legal(
        protect_first in proptest::bool::weighted(0.75),
        steps in proptest::collection::vec(step(), 1..14),
    ) {
        run(protect_first, &steps);
    }
}

#[test]
fn the_tutorial_protects_both_machines() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = tutorial_site(dir.path());
    for m in ["a", "b"] {
        site.enable_replication(&enable(m)).unwrap();
    }
    site.advance(40 * 60_000, &NoProgress).unwrap();
    for m in ["a", "b"] {
        let it = site.item(m).unwrap();
        assert_eq!(it.properties.state, ItemState::Protected, "{m}");
        assert!(!site.recovery_points(m).unwrap().points.is_empty());
    }
}

#[test]
fn a_corrupt_segment_keeps_exactly_the_points_before_it_and_health_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = tutorial_site(dir.path());
    site.enable_replication(&enable("a")).unwrap();
    site.advance(3_600_000, &NoProgress).unwrap();
    let before = site.recovery_points("a").unwrap().points.len();
    assert!(before >= 8, "{before} points after an hour");
    // The process server goes down: two hours pile up at the source, and a byte of what was
    // not shipped yet is damaged before it is.
    site.set_process_server("cs", false).unwrap();
    site.advance(2 * 3_600_000, &NoProgress).unwrap();
    let down = site.item("a").unwrap();
    assert!(
        down.properties
            .health_errors
            .iter()
            .any(|e| e.error_code == "806"),
        "{:?}",
        down.properties.health_errors
    );
    let seg = site.dir().join("source/a/0/journal/seg-00000001.e2j");
    let held = std::fs::metadata(site.dir().join("replicas/a/0/segments/seg-00000001.e2j"))
        .unwrap()
        .len();
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.len() as u64 > held + 1000, "nothing piled up");
    let at = (held as usize + bytes.len()) / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    site.set_process_server("cs", true).unwrap();
    site.advance(30 * 60_000, &NoProgress).unwrap();
    let it = site.item("a").unwrap();
    assert!(
        it.properties
            .health_errors
            .iter()
            .any(|e| e.error_code == "CorruptReplicationData"),
        "{:?}",
        it.properties.health_errors
    );
    assert_eq!(it.properties.replication_health, "Critical");
    let after = site.recovery_points("a").unwrap();
    assert!(!after.defects.is_empty());
    // The points kept are every point before the damage: none lost before it, none after.
    assert!(
        after.points.len() > before,
        "the outage's points before the damage are lost"
    );
    assert!(
        after.points.len() < before + 24,
        "points after the damage are offered"
    );
    for w in after.points.windows(2) {
        let t = |p: &super::protect::RecoveryPointView| {
            crate::clock::parse_time(&p.recovery_point_time).unwrap()
        };
        assert_eq!(t(&w[1]) - t(&w[0]), 5 * 60_000, "a gap before the defect");
    }
    assert!(after.points.iter().all(|p| p.processed && p.verifiable));
}
