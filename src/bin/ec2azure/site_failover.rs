//! The simulator's failover commands: test failover and its cleanup, failover, change of
//! recovery point, commit and complete migration.

use crate::site::{SiteOpt, WaitOpt, finish_job};
use anyhow::Result;
use clap::Subcommand;
use ec2azure::site::failover::FailoverRequest;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct PointArgs {
    /// The recovery point: latest (process everything received first), latest-processed,
    /// latest-app-consistent, latest-crash-consistent, a point id (rp-N) or a time.
    #[arg(long, default_value = "latest-processed")]
    point: String,
}

#[derive(Subcommand)]
pub(crate) enum FailoverCommand {
    /// Test failover: a VM NAME-test from a recovery point, in the network you choose; then
    /// only its cleanup is allowed.
    Test {
        /// The replicated item.
        item: String,
        #[command(flatten)]
        point: PointArgs,
        /// The virtual network (its name in the item's target resource group), default the
        /// item's target network.
        #[arg(long)]
        network: Option<String>,
        /// The subnet (default: the item's target subnet).
        #[arg(long)]
        subnet: Option<String>,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Cleanup test failover: delete the test VM, its NIC, disks and blobs.
    Cleanup {
        /// The replicated item.
        item: String,
        /// Notes on the test (up to 1,024 characters).
        #[arg(long, default_value = "")]
        notes: String,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Failover: replication stops, the VM is made in the target network from a point.
    Run {
        /// The replicated item.
        item: String,
        #[command(flatten)]
        point: PointArgs,
        /// Shut down the machine before beginning failover (the failover goes on if that
        /// fails).
        #[arg(long)]
        shutdown: bool,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Change the recovery point of a failed-over item (before commit).
    ChangePoint {
        /// The replicated item.
        item: String,
        #[command(flatten)]
        point: PointArgs,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Commit the failover: the other recovery points are deleted.
    Commit {
        /// The replicated item.
        item: String,
        #[command(flatten)]
        wait: WaitOpt,
    },
    /// Complete migration: stop replication and billing, remove the replica; the VM stays.
    CompleteMigration {
        /// The replicated item.
        item: String,
        #[command(flatten)]
        wait: WaitOpt,
    },
}

pub(crate) fn failover_cmd(c: FailoverCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    let (job, wait) = match c {
        FailoverCommand::Test {
            item,
            point,
            network,
            subnet,
            wait,
        } => {
            let s = site.test_failover(&FailoverRequest {
                item,
                point: point.point,
                network,
                subnet,
                ..FailoverRequest::default()
            })?;
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
            (s.job, wait)
        }
        FailoverCommand::Cleanup { item, notes, wait } => {
            (site.cleanup_test_failover(&item, &notes)?, wait)
        }
        FailoverCommand::Run {
            item,
            point,
            shutdown,
            wait,
        } => {
            let s = site.failover(&FailoverRequest {
                item,
                point: point.point,
                shutdown,
                ..FailoverRequest::default()
            })?;
            (s.job, wait)
        }
        FailoverCommand::ChangePoint { item, point, wait } => {
            (site.change_recovery_point(&item, &point.point)?, wait)
        }
        FailoverCommand::Commit { item, wait } => (site.commit_failover(&item)?, wait),
        FailoverCommand::CompleteMigration { item, wait } => {
            (site.complete_migration(&item)?, wait)
        }
    };
    finish_job(&mut site, job, !wait.no_wait, o, quiet)
}
