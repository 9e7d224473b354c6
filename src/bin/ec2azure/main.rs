//! The `ec2azure` command line: a thin layer over the library's public API.
//!
//! Exit codes: 0 success (for `check`: ready; for `compare`: identical); 1 a negative answer
//! (`check`: not ready; `compare`: different); 2 an error (bad input, I/O failure, bad usage).

mod bench;
mod bench_points;
mod bench_rehearse;
mod bench_replication;
mod boot;
mod convert;
mod demo;
mod inspect;
mod recovery;
mod rehearse;
mod site;
mod site_azure;
mod site_failover;
mod site_plans;
mod site_protect;
mod snapshot;
mod term;
mod upload;

pub(crate) use convert::*;
pub(crate) use inspect::*;
pub(crate) use snapshot::*;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ec2azure::DiskImage;
use ec2azure::check::{Severity, Target};
use ec2azure::image::vhd::{Footer, parse_uuid};
use ec2azure::{ConvertOptions, Format, OutputFormat, Progress};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ec2azure",
    version,
    about = "Offline EC2-to-Azure disk migration: EC2 snapshots to Azure-ready fixed VHDs",
    long_about = "Converts EC2 volume snapshots (raw images) into fixed VHDs that Azure accepts as page \
                  blobs and managed disks, and inspects, checks and compares disk images.\n\n\
                  Exit codes: 0 success; 1 not ready (check) or different (compare); 2 error."
)]
struct Cli {
    /// Print nothing but errors (and JSON when asked for).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Read inputs with pread instead of memory-mapping them: slower, but a failing input
    /// (bad sector, network file system, file truncated meanwhile) is reported as an error with
    /// its offset instead of killing the process with SIGBUS.
    #[arg(long, global = true)]
    no_mmap: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a disk image to an Azure-ready fixed VHD (or to raw).
    Convert(ConvertArgs),
    /// Show an image's format, size, allocation, VHD footer and Azure readiness.
    Info(InfoArgs),
    /// Check a VHD against every rule Azure applies (exit 0 ready, 1 not ready, 2 error).
    Check(CheckArgs),
    /// Compare the contents of two images (exit 0 identical, 1 different, 2 error).
    Compare(CompareArgs),
    /// Write a seeded sample disk (a sparse raw snapshot) for tests, demos and benchmarks.
    Sample(SampleArgs),
    /// EBS snapshots over the EBS direct APIs (region, credentials from the usual AWS settings).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Run the main job on built-in sample data: make a snapshot, convert, check, compare.
    Demo(demo::DemoArgs),
    /// Rehearse a migration from one scenario file: estate, vault, replication, test failover,
    /// failover, commit, complete migration, faults; a report, and exit 1 when an objective is
    /// missed.
    Rehearse(rehearse::RehearseArgs),
    /// Benchmarks against qemu-img and cp on the same input in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Change journals: diff two images, simulate a workload, inspect, verify.
    #[command(subcommand)]
    Journal(recovery::JournalCommand),
    /// A replica as the process server holds it: init, receive, process, status.
    #[command(subcommand)]
    Replica(recovery::ReplicaCommand),
    /// Recovery points: list, check the policy, build, verify every point's digest.
    #[command(subcommand)]
    Points(recovery::PointsCommand),
    /// Upload a disk to an Azure page blob: only pages with data, resumable, optionally verified
    /// (any input format is converted to a fixed VHD on the fly).
    Upload(Box<upload::UploadArgs>),
    /// Download a page blob into a sparse local file (only its page ranges are fetched).
    Download(upload::DownloadArgs),
    /// Boot a disk or recovery point read-only under qemu: firmware verdict, serial console,
    /// screenshot (exit 0 booted, 1 did not boot, 2 error).
    BootCheck(Box<boot::BootCheckArgs>),
    /// Site Recovery offline: make a site (its clouds and vault in one folder), show it.
    Site(SiteCmd<site::SiteCommand>),
    /// The site's simulated clock: show it, advance it (jobs and replication run).
    Clock(SiteCmd<site::ClockCommand>),
    /// The site's Azure subscription: resource groups, storage accounts, networks, disks, VMs.
    Azure(SiteCmd<site_azure::AzureCommand>),
    /// The Recovery Services vault: create it, download its registration key.
    Vault(SiteCmd<site::VaultCommand>),
    /// The configuration server (with its process server): register it, add run-as accounts.
    ConfigServer(SiteCmd<site::ConfigServerCommand>),
    /// Replication policies: create, associate with a configuration server, list.
    Policy(SiteCmd<site::PolicyCommand>),
    /// Site Recovery jobs: list, show, cancel, restart, resume.
    Jobs(SiteCmd<site::JobsCommand>),
    /// The site's AWS estate: instances, volumes, security groups, snapshots.
    Aws(SiteCmd<site_protect::AwsCommand>),
    /// Machines to protect: add by name, IP and OS type, or discover; list.
    Machine(SiteCmd<site_protect::MachineCommand>),
    /// Run Site Recovery's support and prerequisite checks on a machine (exit 1 when one fails).
    CheckMachine(SiteArgs<site_protect::CheckMachineArgs>),
    /// Replication: enable (Enable protection, Finalize protection), status, disable.
    Replication(SiteCmd<site_protect::ReplicationCommand>),
    /// Test failover and its cleanup, failover, change of recovery point, commit, complete
    /// migration.
    Failover(SiteCmd<site_failover::FailoverCommand>),
    /// Recovery plans: create, list, show; test failover, cleanup, failover, commit.
    Plan(SiteCmd<site_plans::PlanCommand>),
}

/// A site command taking arguments directly.
#[derive(Args)]
struct SiteArgs<A: Args> {
    #[command(flatten)]
    site: site::SiteOpt,
    #[command(flatten)]
    args: A,
}

/// A site command: where the site is, and what to do.
#[derive(Args)]
struct SiteCmd<C: Subcommand> {
    #[command(flatten)]
    site: site::SiteOpt,
    #[command(subcommand)]
    command: C,
}

#[derive(Args)]
struct SampleArgs {
    /// The file to write.
    output: PathBuf,
    /// Disk size (bytes, or with K, M, G, T suffix: powers of 1024).
    #[arg(long, value_parser = parse_size, required_unless_present = "bootable")]
    size: Option<u64>,
    /// Instead: a small disk that really boots (bios: MBR and syslinux; uefi: GPT, an EFI
    /// system partition and systemd-boot), a Linux kernel and a busybox /init that prints a
    /// marker on ttyS0 and powers off; built from Debian's packages without root.
    #[arg(long, value_name = "bios|uefi", value_parser = ["bios", "uefi"], conflicts_with = "size")]
    bootable: Option<String>,
    /// Fraction of the disk that is allocated.
    #[arg(long, default_value_t = 0.3)]
    data_fraction: f64,
    /// Fraction of the allocated part that is zeros.
    #[arg(long, default_value_t = 0.2)]
    zero_fraction: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Parses "4G", "100MiB", "512", "1.5T" (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}: use K, M, G or T"
            ));
        }
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("size {s:?} is too large"));
    }
    let f: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: expected a number"))?;
    let v = f * mult as f64;
    if !(0.0..1.8e19).contains(&v) {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(v.round() as u64)
}

/// A size for humans: "4.00 GiB (4294967296 bytes)".
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.2} {} ({n} bytes)", UNITS[u])
    }
}

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`ec2azure info x | head`), as Unix
    // tools do, instead of panicking on the write error.
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    ec2azure::image::raw::set_mmap_enabled(!cli.no_mmap);
    let result = run(cli);
    ec2azure::export::wait_for_replaced_outputs();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            exit_code(&e)
        }
    }
}

/// The one place error kinds become exit codes: 130 for an interrupted run (as shells report
/// Ctrl-C), 2 for every other error (1 is kept for negative answers: not ready, different,
/// points lost, and an operation the object's state does not allow).
fn exit_code(e: &anyhow::Error) -> ExitCode {
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<ec2azure::Error>())
        .map(ec2azure::Error::kind);
    match kind {
        Some(ec2azure::ErrorKind::Interrupted) => ExitCode::from(130),
        Some(ec2azure::ErrorKind::NotAllowed) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Convert(a) => convert(a, quiet),
        Command::Info(a) => info(a),
        Command::Check(a) => check(a, quiet),
        Command::Compare(a) => compare(a, quiet),
        Command::Sample(a) => sample(a, quiet),
        Command::Snapshot(SnapshotCommand::Pull(a)) => snapshot_pull(a, quiet),
        Command::Snapshot(SnapshotCommand::Push(a)) => snapshot_push(a, quiet),
        Command::Snapshot(SnapshotCommand::Diff(a)) => snapshot_diff(a, quiet),
        Command::Demo(a) => demo::run(a, quiet),
        Command::Rehearse(a) => rehearse::run(a, quiet),
        Command::Bench(b) => bench::run(b, quiet),
        Command::Journal(c) => recovery::journal(c, quiet),
        Command::Replica(c) => recovery::replica(c, quiet),
        Command::Points(c) => recovery::points(c, quiet),
        Command::Upload(a) => upload::upload_cmd(*a, quiet),
        Command::Download(a) => upload::download_cmd(a, quiet),
        Command::BootCheck(a) => boot::boot_check(*a, quiet),
        Command::Site(c) => site::site_cmd(c.command, &c.site, quiet),
        Command::Clock(c) => site::clock_cmd(c.command, &c.site, quiet),
        Command::Azure(c) => site_azure::azure_cmd(c.command, &c.site, quiet),
        Command::Vault(c) => site::vault_cmd(c.command, &c.site, quiet),
        Command::ConfigServer(c) => site::config_server_cmd(c.command, &c.site, quiet),
        Command::Policy(c) => site::policy_cmd(c.command, &c.site, quiet),
        Command::Jobs(c) => site::jobs_cmd(c.command, &c.site, quiet),
        Command::Aws(c) => site_protect::aws_cmd(c.command, &c.site),
        Command::Machine(c) => site_protect::machine_cmd(c.command, &c.site, quiet),
        Command::CheckMachine(c) => site_protect::check_machine_cmd(c.args, &c.site, quiet),
        Command::Replication(c) => site_protect::replication_cmd(c.command, &c.site, quiet),
        Command::Failover(c) => site_failover::failover_cmd(c.command, &c.site, quiet),
        Command::Plan(c) => site_plans::plan_cmd(c.command, &c.site, quiet),
    }
}

fn sample(a: SampleArgs, quiet: bool) -> Result<ExitCode> {
    if let Some(kind) = &a.bootable {
        return boot::sample_bootable(kind, &a.output, quiet);
    }
    let size = a.size.context("--size is required")?;
    let spec = ec2azure::sample::SampleSpec {
        size,
        data_fraction: a.data_fraction,
        zero_fraction: a.zero_fraction,
        seed: a.seed,
    };
    let s = ec2azure::sample::make_sample(&a.output, &spec)?;
    if !quiet {
        println!(
            "Wrote {}: {} disk, {} data, {} allocated zeros, the rest holes (seed {})",
            a.output.display(),
            human(size),
            human(s.data_bytes),
            human(s.zero_bytes),
            a.seed
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert!(parse_size("3X").is_err());
        assert!(parse_size("").is_err());
    }
}
