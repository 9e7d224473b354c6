//! Recovery plans on the fakes: groups in order, a manual action that suspends the job until
//! resumed, a script given the runbook context, multi-VM points common to the replication
//! group, and the refusal of a single machine of a group.

use super::Site;
use super::failover::FailoverRequest;
use super::jobs::JobState;
use super::model::{ItemHistory, MultiVmSync, PolicyDetails};
use super::plans::{ActionDetails, PlanAction, PlanFailover, PlanSpec, PlanState};
use super::states::{ItemState, Operation};
use super::tests::{enable, tutorial_site};
use crate::progress::NoProgress;

const HOUR: u64 = 3_600_000;

fn history(site: &mut Site, m: &str) -> ItemHistory {
    site.tx(|t| {
        let v = super::vault::the_vault(t)?;
        Ok(t.get::<ItemHistory>(&ItemHistory::id(&v.id, m))?.properties)
    })
    .unwrap()
}

/// `a` and `b` protected in one multi-VM group, two hours replicated.
fn grouped(dir: &std::path::Path) -> Site {
    let mut site = tutorial_site(dir);
    let j = site
        .create_policy(
            "mvm",
            PolicyDetails {
                multi_vm_sync_status: MultiVmSync::Enable,
                ..PolicyDetails::default()
            },
        )
        .unwrap();
    site.wait_for(&j.id, HOUR, &NoProgress).unwrap();
    for m in ["a", "b"] {
        let mut r = enable(m);
        r.policy = Some("mvm".into());
        r.multi_vm_group = Some("g1".into());
        let j = site.enable_replication(&r).unwrap();
        site.wait_for(&j.id, HOUR, &NoProgress).unwrap();
    }
    site.advance(2 * HOUR, &NoProgress).unwrap();
    for m in ["a", "b"] {
        assert_eq!(site.item(m).unwrap().properties.state, ItemState::Protected);
    }
    site
}

fn action(name: &str, d: ActionDetails) -> PlanAction {
    PlanAction {
        action_name: name.into(),
        failover_types: vec![Operation::TestFailover, Operation::UnplannedFailover],
        failover_directions: vec!["PrimaryToRecovery".into()],
        custom_details: d,
    }
}

#[test]
fn a_plan_fails_over_a_replication_group_to_its_common_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = grouped(dir.path());
    let log = dir.path().join("context.json");
    let script = dir.path().join("post.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {}\necho group done: $RECOVERY_PLAN_CONTEXT\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = PlanSpec {
        name: "wave1".into(),
        groups: vec![vec!["a".into()], vec!["b".into()]],
        actions: vec![
            (
                1,
                true,
                action(
                    "Stop the app",
                    ActionDetails::ManualActionDetails {
                        description: "stop the app tier".into(),
                    },
                ),
            ),
            (
                2,
                false,
                action(
                    "Smoke test",
                    ActionDetails::ScriptActionDetails {
                        path: script.display().to_string(),
                        timeout: 60,
                        fabric_location: "Recovery".into(),
                    },
                ),
            ),
        ],
    };
    let plan = site.create_plan(&spec).unwrap();
    let types: Vec<_> = plan
        .properties
        .groups
        .iter()
        .map(|g| g.group_type)
        .collect();
    use super::plans::GroupType::*;
    assert_eq!(types, [Shutdown, Failover, Boot, Boot]);
    // A machine in two groups is refused.
    let mut bad = spec.clone();
    bad.name = "bad".into();
    bad.groups = vec![vec!["a".into()], vec!["a".into()]];
    assert!(site.create_plan(&bad).is_err());
    // A machine of a replication group does not fail over alone.
    let e = site
        .failover(&FailoverRequest {
            item: "a".into(),
            point: "latest-processed".into(),
            ..FailoverRequest::default()
        })
        .unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::NotAllowed);
    assert!(e.to_string().contains("recovery plan"), "{e}");

    let how = PlanFailover {
        point: "latest-multi-vm-processed".into(),
        ..PlanFailover::default()
    };
    let j = site
        .plan_job("wave1", Operation::TestFailover, &how, "")
        .unwrap();
    site.wait_for(&j.id, 24 * HOUR, &NoProgress).unwrap();
    let job = site.job(&j.id).unwrap();
    assert_eq!(
        job.properties.state,
        JobState::Suspended,
        "the manual action waits"
    );
    assert_eq!(job.properties.state_description, "WaitingForManualAction");
    site.resume_job(&j.id, Some("app stopped")).unwrap();
    site.wait_for(&j.id, 24 * HOUR, &NoProgress).unwrap();
    let job = site.job(&j.id).unwrap();
    assert_eq!(
        job.properties.state,
        JobState::Succeeded,
        "{:?}",
        job.properties.errors
    );
    let names: Vec<&str> = job
        .properties
        .tasks
        .iter()
        .map(|t| t.friendly_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Recovery plan preflight checks",
            "Group 1: Pre-steps: Stop the app (manual)",
            "Group 1: Start",
            "Group 1: the machines' jobs",
            "Group 2: Start",
            "Group 2: the machines' jobs",
            "Group 2: Post-steps: Smoke test (script)",
        ]
    );
    // Groups in order: b's job starts after a's ended.
    let (ha, hb) = (history(&mut site, "a"), history(&mut site, "b"));
    let (fa, fb) = (ha.failovers.last().unwrap(), hb.failovers.last().unwrap());
    assert!(
        fb.start_ms >= fa.vm_running_ms,
        "{} {}",
        fb.start_ms,
        fa.vm_running_ms
    );
    // The common multi-VM point.
    assert_eq!(fa.recovery_point_time_ms, fb.recovery_point_time_ms);
    assert!(fa.verified() && fb.verified());
    assert_eq!(fa.recovery_plan.as_deref(), Some("wave1"));
    // The script saw the runbook context.
    let ctx: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert_eq!(ctx["RecoveryPlanName"], "wave1");
    assert_eq!(ctx["FailoverType"], "Test");
    assert_eq!(ctx["GroupId"], "Group2");
    assert!(ctx["VmMap"]["b"]["RoleName"] == "b-test", "{ctx}");
    let script_task = job.properties.tasks.last().unwrap();
    assert!(
        script_task.output["output"]
            .as_str()
            .unwrap()
            .contains("group done"),
        "{:?}",
        script_task.output
    );
    let manual = &job.properties.tasks[1];
    assert_eq!(manual.output["comments"], "app stopped");

    let plan = site.plans().unwrap().remove(0);
    assert_eq!(plan.properties.state, PlanState::TestFailoverPending);
    assert!(
        site.plan_job("wave1", Operation::UnplannedFailover, &how, "")
            .is_err()
    );
    let j = site
        .plan_job("wave1", Operation::TestFailoverCleanup, &how, "fine")
        .unwrap();
    site.wait_for(&j.id, 24 * HOUR, &NoProgress).unwrap();
    assert_eq!(
        site.job(&j.id).unwrap().properties.state,
        JobState::Succeeded
    );
    for m in ["a", "b"] {
        assert_eq!(site.item(m).unwrap().properties.state, ItemState::Protected);
    }

    // A failing script fails the plan's job with its output.
    std::fs::write(
        &script,
        "#!/bin/sh\necho database not reachable >&2\nexit 3\n",
    )
    .unwrap();
    let fo = PlanFailover {
        point: "latest-multi-vm-processed".into(),
        shutdown: true,
        ..PlanFailover::default()
    };
    let j = site
        .plan_job("wave1", Operation::UnplannedFailover, &fo, "")
        .unwrap();
    site.wait_for(&j.id, 24 * HOUR, &NoProgress).unwrap();
    site.resume_job(&j.id, None).unwrap();
    site.wait_for(&j.id, 24 * HOUR, &NoProgress).unwrap();
    let job = site.job(&j.id).unwrap();
    assert_eq!(job.properties.state, JobState::Failed);
    let e = &job.properties.errors[0];
    assert_eq!(e.error_code, "ScriptActionFailed");
    assert!(
        e.error_message.contains("database not reachable"),
        "{}",
        e.error_message
    );
    // The machines failed over all the same; the plan can be committed.
    for m in ["a", "b"] {
        assert_eq!(
            site.item(m).unwrap().properties.state,
            ItemState::FailoverCommitPending
        );
    }
    let j = site
        .plan_job("wave1", Operation::Commit, &PlanFailover::default(), "")
        .unwrap();
    site.wait_for(&j.id, 24 * HOUR, &NoProgress).unwrap();
    assert_eq!(
        site.job(&j.id).unwrap().properties.state,
        JobState::Succeeded
    );
    for m in ["a", "b"] {
        assert_eq!(
            site.item(m).unwrap().properties.state,
            ItemState::FailoverCommitted
        );
    }
}
