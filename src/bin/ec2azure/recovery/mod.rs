//! `journal`, `replica` and `points`: change journals, the process server's replica, and
//! recovery points.

use crate::{human, parse_size, term};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ec2azure::clock::Clock;
use ec2azure::journal::{
    Journal, ScanOptions, format_duration, format_time, parse_duration, parse_time, point_id,
};
use ec2azure::recovery::{
    self, PointChoice, PointInfo, Policy, ProtectedDisk, Replica, ReplicationGroup, Resolution,
    SimSpec, check_points,
};
use ec2azure::{ConvertOptions, DiskImage, OutputFormat, Progress};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod journal;
mod points;
mod replica;

pub use journal::*;
pub use points::*;
pub use replica::*;

pub(crate) fn print_damage(torn: Option<&str>, defect: Option<&str>) {
    if let Some(t) = torn {
        println!("warning: {t}");
    }
    if let Some(d) = defect {
        println!("DEFECT: {d}");
        println!("        every point after it is unavailable");
    }
}
