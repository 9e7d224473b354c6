//! The replicated item's state machine, in one table: for each state, the operations a user may
//! ask for (`allowedOperations`, spelled as Site Recovery's `ReplicationProtectedItemOperation`)
//! and, for each operation and for each job outcome, the state that follows.
//!
//! The states are Site Recovery's `protectionState` strings with their descriptions (see
//! asr-model.md §2.2 and §3): enabling (`UnprotectedStatesBegin`), initial replication
//! (`InitialReplicationInProgress`), `Protected`, a test failover waiting for its cleanup
//! (`Protected` with `testFailoverState` `WaitingForCompletion`: "Cleanup test failover
//! pending"), a failover in progress and its commit-pending state
//! (`UnplannedFailoverCommitPendingStatesBegin`: "Failover completed"), committed, and the
//! failed states. VMware/physical items have no planned failover (PowerShell refuses it for
//! InMageAzureV2), so `PlannedFailover` is never allowed.

use serde::{Deserialize, Serialize};

/// What a user can ask of a replicated item (Site Recovery's operation names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Operation {
    /// Test failover into an isolated network.
    TestFailover,
    /// Remove what a test failover made.
    TestFailoverCleanup,
    /// Fail over to Azure (for EC2 machines there is no planned failover).
    UnplannedFailover,
    /// Choose another recovery point for a failed-over item, before commit.
    ChangePit,
    /// Commit the failover: the other recovery points are deleted.
    Commit,
    /// Stop replication and billing; the Azure VM stays.
    CompleteMigration,
    /// Disable replication.
    DisableProtection,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 7] = [
        Operation::TestFailover,
        Operation::TestFailoverCleanup,
        Operation::UnplannedFailover,
        Operation::ChangePit,
        Operation::Commit,
        Operation::CompleteMigration,
        Operation::DisableProtection,
    ];

    /// The service's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::TestFailover => "TestFailover",
            Operation::TestFailoverCleanup => "TestFailoverCleanup",
            Operation::UnplannedFailover => "UnplannedFailover",
            Operation::ChangePit => "ChangePit",
            Operation::Commit => "Commit",
            Operation::CompleteMigration => "CompleteMigration",
            Operation::DisableProtection => "DisableProtection",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A replicated item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ItemState {
    /// The Enable protection job is running.
    EnablingProtection,
    /// Enable protection failed (prerequisites or the push install).
    EnablingFailed,
    /// The first copy of the disks is being made.
    InitialReplicationInProgress,
    /// Initial replication failed.
    InitialReplicationFailed,
    /// Replicating, with recovery points.
    Protected,
    /// A test failover job is running.
    TestFailoverInProgress,
    /// A test VM exists: only its cleanup is allowed.
    TestFailoverCleanupPending,
    /// The test failover cleanup job is running.
    TestFailoverCleanupInProgress,
    /// A failover job is running (replication has stopped).
    FailoverInProgress,
    /// A failover failed or was cancelled: the item no longer replicates.
    FailoverFailed,
    /// Failed over, not committed: the point can still be changed.
    FailoverCommitPending,
    /// A change of recovery point or a commit is running.
    FailoverChanging,
    /// Committed: the other recovery points are gone.
    FailoverCommitted,
    /// Complete migration or disable protection is running.
    Disabling,
}

/// Site Recovery's `protectionState`, `protectionStateDescription`, `testFailoverState` and
/// `activeLocation` for a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceState {
    /// `protectionState`.
    pub protection_state: &'static str,
    /// `protectionStateDescription`.
    pub description: &'static str,
    /// `testFailoverState`.
    pub test_failover_state: &'static str,
    /// `activeLocation`.
    pub active_location: &'static str,
}

/// What follows an operation's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// While the job runs.
    pub running: ItemState,
    /// When it succeeds (`None`: the item is removed).
    pub succeeded: Option<ItemState>,
    /// When it fails or is cancelled.
    pub failed: ItemState,
}

use ItemState as S;
use Operation as O;

/// The table: each state, what the service reports for it, and its allowed operations.
const STATES: &[(ItemState, ServiceState, &[Operation])] = &[
    (
        S::EnablingProtection,
        svc(
            "UnprotectedStatesBegin",
            "Enabling protection",
            "None",
            "Primary",
        ),
        &[],
    ),
    (
        S::EnablingFailed,
        svc(
            "EnablingFailed",
            "Enabling protection failed",
            "None",
            "Primary",
        ),
        &[O::DisableProtection],
    ),
    (
        S::InitialReplicationInProgress,
        svc(
            "InitialReplicationInProgress",
            "Initial replication in progress",
            "None",
            "Primary",
        ),
        &[O::DisableProtection],
    ),
    (
        S::InitialReplicationFailed,
        svc(
            "InitialReplicationFailed",
            "Initial replication failed",
            "None",
            "Primary",
        ),
        &[O::DisableProtection],
    ),
    (
        S::Protected,
        svc("Protected", "Protected", "None", "Primary"),
        &[O::TestFailover, O::UnplannedFailover, O::DisableProtection],
    ),
    (
        S::TestFailoverInProgress,
        svc(
            "Protected",
            "Test failover in progress",
            "TestFailoverInitiated",
            "Primary",
        ),
        &[],
    ),
    (
        S::TestFailoverCleanupPending,
        svc(
            "Protected",
            "Cleanup test failover pending",
            "WaitingForCompletion",
            "Primary",
        ),
        &[O::TestFailoverCleanup],
    ),
    (
        S::TestFailoverCleanupInProgress,
        svc(
            "Protected",
            "Cleaning up test environment",
            "MarkedForDeletion",
            "Primary",
        ),
        &[],
    ),
    (
        S::FailoverInProgress,
        svc(
            "UnplannedFailoverInitiated",
            "Failover in progress",
            "None",
            "Primary",
        ),
        &[],
    ),
    (
        S::FailoverFailed,
        svc(
            "UnplannedFailoverFailed",
            "Failover failed; the machine no longer replicates",
            "None",
            "Primary",
        ),
        &[O::UnplannedFailover, O::DisableProtection],
    ),
    (
        S::FailoverCommitPending,
        svc(
            "UnplannedFailoverCommitPendingStatesBegin",
            "Failover completed",
            "None",
            "Recovery",
        ),
        &[
            O::CompleteMigration,
            O::Commit,
            O::DisableProtection,
            O::ChangePit,
        ],
    ),
    (
        S::FailoverChanging,
        svc(
            "ChangeRecoveryPointInitiated",
            "Changing the recovery point",
            "None",
            "Recovery",
        ),
        &[],
    ),
    (
        S::FailoverCommitted,
        svc(
            "UnplannedFailoverCommitted",
            "Failover committed",
            "None",
            "Recovery",
        ),
        &[O::CompleteMigration, O::DisableProtection],
    ),
    (
        S::Disabling,
        svc(
            "DisablingProtection",
            "Disabling protection",
            "None",
            "Recovery",
        ),
        &[],
    ),
];

const fn svc(
    protection_state: &'static str,
    description: &'static str,
    test_failover_state: &'static str,
    active_location: &'static str,
) -> ServiceState {
    ServiceState {
        protection_state,
        description,
        test_failover_state,
        active_location,
    }
}

/// The table of transitions: (from, operation) → the job's states.
const TRANSITIONS: &[(ItemState, Operation, Transition)] = &[
    (
        S::Protected,
        O::TestFailover,
        t(
            S::TestFailoverInProgress,
            Some(S::TestFailoverCleanupPending),
            S::Protected,
        ),
    ),
    (
        S::TestFailoverCleanupPending,
        O::TestFailoverCleanup,
        t(
            S::TestFailoverCleanupInProgress,
            Some(S::Protected),
            S::TestFailoverCleanupPending,
        ),
    ),
    // Replication stops before the failover starts: a failed or cancelled one does not go back.
    (
        S::Protected,
        O::UnplannedFailover,
        t(
            S::FailoverInProgress,
            Some(S::FailoverCommitPending),
            S::FailoverFailed,
        ),
    ),
    // A failed failover can be tried again once its cause is fixed (the replica is intact).
    (
        S::FailoverFailed,
        O::UnplannedFailover,
        t(
            S::FailoverInProgress,
            Some(S::FailoverCommitPending),
            S::FailoverFailed,
        ),
    ),
    (
        S::FailoverCommitPending,
        O::ChangePit,
        t(
            S::FailoverChanging,
            Some(S::FailoverCommitPending),
            S::FailoverCommitPending,
        ),
    ),
    (
        S::FailoverCommitPending,
        O::Commit,
        t(
            S::FailoverChanging,
            Some(S::FailoverCommitted),
            S::FailoverCommitPending,
        ),
    ),
    (
        S::FailoverCommitPending,
        O::CompleteMigration,
        t(S::Disabling, None, S::FailoverCommitPending),
    ),
    (
        S::FailoverCommitted,
        O::CompleteMigration,
        t(S::Disabling, None, S::FailoverCommitted),
    ),
    (
        S::EnablingFailed,
        O::DisableProtection,
        t(S::Disabling, None, S::EnablingFailed),
    ),
    (
        S::InitialReplicationInProgress,
        O::DisableProtection,
        t(S::Disabling, None, S::InitialReplicationInProgress),
    ),
    (
        S::InitialReplicationFailed,
        O::DisableProtection,
        t(S::Disabling, None, S::InitialReplicationFailed),
    ),
    (
        S::Protected,
        O::DisableProtection,
        t(S::Disabling, None, S::Protected),
    ),
    (
        S::FailoverFailed,
        O::DisableProtection,
        t(S::Disabling, None, S::FailoverFailed),
    ),
    (
        S::FailoverCommitPending,
        O::DisableProtection,
        t(S::Disabling, None, S::FailoverCommitPending),
    ),
    (
        S::FailoverCommitted,
        O::DisableProtection,
        t(S::Disabling, None, S::FailoverCommitted),
    ),
];

const fn t(running: ItemState, succeeded: Option<ItemState>, failed: ItemState) -> Transition {
    Transition {
        running,
        succeeded,
        failed,
    }
}

impl ItemState {
    /// Every state.
    pub fn all() -> impl Iterator<Item = ItemState> {
        STATES.iter().map(|(s, _, _)| *s)
    }

    fn row(self) -> &'static (ItemState, ServiceState, &'static [Operation]) {
        // Every state has a row: the exhaustive test below checks it.
        STATES
            .iter()
            .find(|(s, _, _)| *s == self)
            .unwrap_or(&STATES[0])
    }

    /// What the service reports for this state.
    pub fn service(self) -> ServiceState {
        self.row().1
    }

    /// The operations a user may ask for (`allowedOperations`).
    pub fn allowed(self) -> &'static [Operation] {
        self.row().2
    }

    /// What `op` does from this state, or `None` when it is not allowed.
    pub fn transition(self, op: Operation) -> Option<Transition> {
        if !self.allowed().contains(&op) {
            return None;
        }
        TRANSITIONS
            .iter()
            .find(|(from, o, _)| *from == self && *o == op)
            .map(|(_, _, t)| *t)
    }

    /// Whether a job is running on the item in this state.
    pub fn busy(self) -> bool {
        self.allowed().is_empty()
    }

    /// Whether the item replicates in this state (receives data, makes recovery points).
    pub fn replicates(self) -> bool {
        matches!(
            self,
            S::Protected
                | S::TestFailoverInProgress
                | S::TestFailoverCleanupPending
                | S::TestFailoverCleanupInProgress
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_state_has_one_row_and_every_allowed_operation_a_transition() {
        let mut seen = HashSet::new();
        for (s, _, ops) in STATES {
            assert!(seen.insert(*s), "{s:?} twice");
            for op in *ops {
                let n = TRANSITIONS
                    .iter()
                    .filter(|(f, o, _)| f == s && o == op)
                    .count();
                assert_eq!(n, 1, "{s:?} allows {op} with {n} transitions");
            }
        }
        // Every state in the enum is in the table (the match forces a new one to be listed).
        for s in [
            S::EnablingProtection,
            S::EnablingFailed,
            S::InitialReplicationInProgress,
            S::InitialReplicationFailed,
            S::Protected,
            S::TestFailoverInProgress,
            S::TestFailoverCleanupPending,
            S::TestFailoverCleanupInProgress,
            S::FailoverInProgress,
            S::FailoverFailed,
            S::FailoverCommitPending,
            S::FailoverChanging,
            S::FailoverCommitted,
            S::Disabling,
        ] {
            match s {
                S::EnablingProtection
                | S::EnablingFailed
                | S::InitialReplicationInProgress
                | S::InitialReplicationFailed
                | S::Protected
                | S::TestFailoverInProgress
                | S::TestFailoverCleanupPending
                | S::TestFailoverCleanupInProgress
                | S::FailoverInProgress
                | S::FailoverFailed
                | S::FailoverCommitPending
                | S::FailoverChanging
                | S::FailoverCommitted
                | S::Disabling => assert!(seen.contains(&s), "{s:?} has no row"),
            }
        }
        // Every transition starts from a state that allows it and runs in a busy state.
        for (from, op, tr) in TRANSITIONS {
            assert!(from.allowed().contains(op), "{from:?} lists no {op}");
            assert!(
                tr.running.busy(),
                "{op} runs in {:?}, which allows operations",
                tr.running
            );
            assert!(!tr.failed.busy(), "{op} fails into busy {:?}", tr.failed);
            if let Some(s) = tr.succeeded {
                assert!(!s.busy(), "{op} ends in busy {s:?}");
            }
        }
    }

    #[test]
    fn the_service_names_of_the_known_states() {
        let p = S::Protected.service();
        assert_eq!(
            (p.protection_state, p.description),
            ("Protected", "Protected")
        );
        let c = S::TestFailoverCleanupPending.service();
        assert_eq!(c.description, "Cleanup test failover pending");
        assert_eq!(c.test_failover_state, "WaitingForCompletion");
        assert_eq!(
            S::TestFailoverCleanupPending.allowed(),
            [O::TestFailoverCleanup]
        );
        let f = S::FailoverCommitPending.service();
        assert_eq!(
            f.protection_state,
            "UnplannedFailoverCommitPendingStatesBegin"
        );
        assert_eq!(f.description, "Failover completed");
        assert_eq!(f.active_location, "Recovery");
        assert_eq!(
            S::FailoverCommitPending.allowed(),
            [
                O::CompleteMigration,
                O::Commit,
                O::DisableProtection,
                O::ChangePit
            ]
        );
        // No planned failover for VMware/physical machines, in any state.
        assert!(S::all().all(|s| s.transition(O::TestFailover).is_none() || s == S::Protected));
        assert_eq!(S::Protected.transition(O::Commit), None);
    }
}
