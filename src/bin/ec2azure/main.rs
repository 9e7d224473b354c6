//! The `ec2azure` command line: a thin layer over the library's public API.
//!
//! Exit codes: 0 success (for `check`: ready; for `compare`: identical); 1 a negative answer
//! (`check`: not ready; `compare`: different); 2 an error (bad input, I/O failure, bad usage).

mod bench;
mod bench_points;
mod demo;
mod recovery;
mod term;
mod upload;

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
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    Vhd,
    Raw,
}

#[derive(Args)]
struct ConvertArgs {
    /// The input image: raw file or block device, VHD (fixed, dynamic, differencing), VHDX,
    /// qcow2, VMDK (sparse, stream-optimized, flat, split), an OVA, or ebs://snap-….
    input: PathBuf,
    /// The output file (written under a temporary name, renamed when complete).
    #[arg(required_unless_present = "in_place")]
    output: Option<PathBuf>,
    /// Input format (raw, vhd, vhdx, qcow2, vmdk, ova); detected when not given. Other formats
    /// (VDI, QED, ...) are refused by name; `-f raw` reads any file as a raw disk.
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// The disk of an OVA to convert: N (from 1), its OVF disk id, or its file name; needed when
    /// the OVA holds several.
    #[arg(long, value_name = "N|NAME")]
    disk: Option<String>,
    /// Output format.
    #[arg(short = 'O', long = "output-format", value_enum, default_value = "vhd")]
    output_format: OutFormat,
    /// Turn the raw INPUT into a fixed VHD where it lies (append the footer; no data copied).
    #[arg(long, conflicts_with = "output")]
    in_place: bool,
    /// Write the per-512-KiB-block SHA-256 manifest of the output disk to FILE (JSON).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    id: VhdIdArgs,
    /// Hole granularity, as qemu-img's -S: aligned all-zero pieces of this size are not written.
    /// A power of two from 512 to 512K; larger values leave fewer, larger holes.
    #[arg(short = 'S', long, value_name = "SIZE", default_value = "4K", value_parser = parse_size)]
    sparse_size: u64,
    /// Skip the final sync to stable storage (faster; the output may be lost on a crash).
    #[arg(long)]
    no_sync: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// The image.
    image: PathBuf,
    /// Image format; detected when not given.
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// The disk of an OVA to describe (N from 1, disk id or file name); an OVA's disks are
    /// listed either way.
    #[arg(long, value_name = "N|NAME")]
    disk: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    ManagedDisk,
    PageBlob,
}

#[derive(Args)]
struct CheckArgs {
    /// The VHD to check.
    image: PathBuf,
    /// Where the VHD is going: its size limits are errors, the other target's are warnings.
    #[arg(long, value_enum, default_value = "managed-disk")]
    target: TargetArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// First image.
    a: PathBuf,
    /// Second image.
    b: PathBuf,
    /// Format of the first image.
    #[arg(short = 'f', long = "format-a")]
    format_a: Option<Format>,
    /// Format of the second image.
    #[arg(short = 'F', long = "format-b")]
    format_b: Option<Format>,
    /// Images of different sizes are different, even if the larger one's tail is zeros.
    #[arg(short = 's', long)]
    strict: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Read a snapshot block by block (each block's SHA-256 checked) into a fixed VHD or raw image.
    Pull(PullArgs),
    /// Write an image as a new snapshot; only blocks holding data are sent.
    Push(PushArgs),
    /// List the 512 KiB blocks that differ between two snapshots of one lineage
    /// (ListChangedBlocks): the changes a journal would carry.
    Diff(DiffArgs),
}

#[derive(Args)]
struct DiffArgs {
    /// The older snapshot.
    first: String,
    /// The newer snapshot.
    second: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    aws: AwsArgs,
}

#[derive(Args)]
struct AwsArgs {
    /// The EBS endpoint URL (for an emulator such as moto); AWS's by default.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The AWS region; from the usual AWS settings by default.
    #[arg(long)]
    region: Option<String>,
}

#[derive(Args)]
struct PullArgs {
    /// The snapshot id (snap-...).
    snapshot: String,
    /// The output file.
    output: PathBuf,
    /// Output format.
    #[arg(short = 'O', long = "output-format", value_enum, default_value = "vhd")]
    output_format: OutFormat,
    /// Write the block manifest of the output disk to FILE.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Skip the final sync.
    #[arg(long)]
    no_sync: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    aws: AwsArgs,
}

#[derive(Args)]
struct PushArgs {
    /// The image to upload (any format ec2azure reads).
    image: PathBuf,
    /// Image format; detected when not given.
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// A description for the snapshot.
    #[arg(long)]
    description: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    aws: AwsArgs,
}

#[derive(Args)]
struct SampleArgs {
    /// The file to write.
    output: PathBuf,
    /// Disk size (bytes, or with K, M, G, T suffix: powers of 1024).
    #[arg(long, value_parser = parse_size)]
    size: u64,
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
/// points lost).
fn exit_code(e: &anyhow::Error) -> ExitCode {
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<ec2azure::Error>())
        .map(ec2azure::Error::kind);
    match kind {
        Some(ec2azure::ErrorKind::Interrupted) => ExitCode::from(130),
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
        Command::Bench(b) => bench::run(b, quiet),
        Command::Journal(c) => recovery::journal(c, quiet),
        Command::Replica(c) => recovery::replica(c, quiet),
        Command::Points(c) => recovery::points(c, quiet),
        Command::Upload(a) => upload::upload_cmd(*a, quiet),
        Command::Download(a) => upload::download_cmd(a, quiet),
    }
}

/// A new VHD's identity, settable for reproducible output (convert, points build, upload).
#[derive(Args)]
pub(crate) struct VhdIdArgs {
    /// The VHD's unique id (8-4-4-4-12 hex), for reproducible output; random by default.
    #[arg(long, value_name = "UUID")]
    uuid: Option<String>,
    /// The VHD's timestamp in seconds since the Unix epoch (not before 2000-01-01), for
    /// reproducible output; defaults to $SOURCE_DATE_EPOCH, then to now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    timestamp: Option<u64>,
}

impl VhdIdArgs {
    /// The unique id and the VHD timestamp asked for (`None`: fresh / now).
    pub(crate) fn resolve(&self) -> Result<(Option<[u8; 16]>, Option<u32>)> {
        Ok((
            self.uuid.as_deref().map(parse_uuid).transpose()?,
            vhd_timestamp(self.timestamp)?,
        ))
    }
}

fn vhd_timestamp(unix: Option<u64>) -> Result<Option<u32>> {
    let unix = match unix {
        Some(t) => Some(t),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => Some(
                v.trim()
                    .parse()
                    .context("SOURCE_DATE_EPOCH is not a whole number")?,
            ),
            Err(_) => None,
        },
    };
    unix.map(|t| {
        let vhd = t
            .checked_sub(ec2azure::image::vhd::VHD_EPOCH_UNIX)
            .ok_or_else(|| anyhow!("timestamp {t} is before 2000-01-01, the VHD epoch"))?;
        u32::try_from(vhd).map_err(|_| anyhow!("timestamp {t} is past what a VHD can hold (2136)"))
    })
    .transpose()
}

/// `true` when `a` and `b` name the same file, existing or not (same inode, or same folder and
/// name).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return x.dev() == y.dev() && x.ino() == y.ino();
    }
    let place = |p: &Path| {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (
            std::fs::canonicalize(dir).ok(),
            p.file_name().map(|n| n.to_owned()),
        )
    };
    place(a) == place(b)
}

/// Refuses a manifest path that would overwrite an input or output, or whose folder is missing
/// (found before converting, not after).
fn check_manifest_path(manifest: &Path, input: &Path, output: &Path) -> Result<()> {
    for (other, what) in [(input, "the input"), (output, "the output")] {
        if same_file(manifest, other) {
            bail!(
                "--manifest {}: that is {what}; choose another file",
                manifest.display()
            );
        }
    }
    let dir = manifest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "--manifest {}: the folder {} does not exist",
            manifest.display(),
            dir.display()
        );
    }
    Ok(())
}

fn convert(a: ConvertArgs, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    let progress = term::progress(quiet || a.json);
    let (unique_id, timestamp) = a.id.resolve()?;
    let opts = ConvertOptions {
        format: match a.output_format {
            OutFormat::Vhd => OutputFormat::Vhd,
            OutFormat::Raw => OutputFormat::Raw,
        },
        unique_id,
        timestamp,
        sync: !a.no_sync,
        manifest: a.manifest.is_some(),
        sparse_size: usize::try_from(a.sparse_size).context("--sparse-size is too large")?,
        progress: &progress as &dyn Progress,
    };
    if let Some(m) = &a.manifest {
        check_manifest_path(m, &a.input, a.output.as_deref().unwrap_or(&a.input))?;
    }
    let mut notes = Vec::new();
    let (report, output) = if a.in_place {
        if matches!(a.output_format, OutFormat::Raw) {
            bail!("--in-place makes a VHD; it cannot be combined with -O raw");
        }
        if a.format.is_some_and(|f| f != Format::Raw) {
            bail!("--in-place works on raw files only");
        }
        (
            ec2azure::convert_in_place(&a.input, &opts)?,
            a.input.clone(),
        )
    } else {
        let output = a
            .output
            .clone()
            .context("OUTPUT is required without --in-place")?;
        if same_file(&a.input, &output) {
            bail!(
                "{}: the output is the input file; use --in-place to turn a raw file into a VHD \
                 where it lies",
                output.display()
            );
        }
        let src = ec2azure::open_with(
            &a.input,
            &ec2azure::OpenOptions {
                format: a.format,
                disk: a.disk.clone(),
            },
        )?;
        notes = src.notes();
        if !quiet && !a.json {
            for n in &notes {
                eprintln!("note: {n}");
            }
        }
        let report = ec2azure::convert(&*src, &output, &opts)
            .with_context(|| format!("converting {} to {}", a.input.display(), output.display()))?;
        (report, output)
    };
    if let (Some(path), Some(m)) = (&a.manifest, &report.manifest) {
        let text = serde_json::to_string_pretty(m)?;
        ec2azure::export::write_file_atomic(path, text.as_bytes(), opts.sync)?;
    }
    let readiness = match report.format {
        OutputFormat::Vhd => Some((
            ec2azure::check_file(&output, Target::ManagedDisk)?,
            ec2azure::check_file(&output, Target::PageBlob)?,
        )),
        OutputFormat::Raw => None,
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["output"] = output.display().to_string().into();
        if let Some((md, pb)) = &readiness {
            v["azure_ready"] =
                serde_json::json!({ "managed_disk": md.ready, "page_blob": pb.ready });
        }
        v["in_place"] = a.in_place.into();
        v["notes"] = notes.into();
        if let Some(m) = &report.manifest {
            v["manifest_root"] = m.root.clone().into();
            v["manifest_path"] = a.manifest.as_ref().map(|p| p.display().to_string()).into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !quiet {
        let what = match report.format {
            OutputFormat::Vhd => "fixed VHD",
            OutputFormat::Raw => "raw image",
        };
        if a.in_place {
            println!(
                "Turned {} into a {what} in place (footer appended, no data copied)",
                output.display()
            );
        } else {
            println!(
                "Converted {} to {what} {}",
                a.input.display(),
                output.display()
            );
        }
        println!("  virtual size  {}", human(report.virtual_size));
        if report.padding > 0 {
            println!(
                "  padding       {} zero bytes added: the input ({} bytes) is not a whole MiB, \
                 which Azure requires",
                report.padding, report.input_size
            );
        }
        println!("  file length   {}", report.file_len);
        if !a.in_place {
            println!("  read          {}", human(report.bytes_read));
            println!(
                "  written       {} (zeros left as holes)",
                human(report.bytes_written)
            );
        }
        if let Some(id) = &report.unique_id {
            println!("  unique id     {id}");
        }
        if let (Some(m), Some(p)) = (&report.manifest, &a.manifest) {
            println!("  manifest      {} (root {})", p.display(), m.root);
        }
        if !opts.sync {
            println!("  not synced to disk (--no-sync)");
        }
        if let Some((md, pb)) = &readiness {
            println!("  azure         {}", readiness_line(md, pb));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line on where a VHD can go, naming what stops it.
fn readiness_line(md: &ec2azure::CheckReport, pb: &ec2azure::CheckReport) -> String {
    let why = |c: &ec2azure::CheckReport| {
        c.failed()
            .filter(|r| r.severity == Severity::Error)
            .map(|r| r.rule)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (md.ready, pb.ready) {
        (true, true) => "ready for a managed-disk upload and as a page blob".into(),
        (false, true) => format!(
            "ready as a page blob; NOT for a managed-disk upload ({})",
            why(md)
        ),
        (true, false) => format!(
            "ready for a managed-disk upload; NOT as a page blob ({})",
            why(pb)
        ),
        (false, false) => format!("NOT ready ({})", why(md)),
    }
}

fn info(a: InfoArgs) -> Result<ExitCode> {
    let local = !a.image.to_string_lossy().starts_with("ebs://");
    let is_ova = a.format == Some(Format::Ova)
        || (a.format.is_none()
            && local
            && ec2azure::image::detect_format(&a.image)? == Some(Format::Ova));
    // An OVA: its disks, and the chosen (or only) one described below.
    let ova = if is_ova {
        Some(ec2azure::image::ova::Ova::open(&a.image)?)
    } else {
        None
    };
    if let Some(o) = &ova
        && a.disk.is_none()
        && o.disks.len() != 1
    {
        let v = serde_json::json!({
            "path": a.image.display().to_string(),
            "format": Format::Ova,
            "ovf": o.ovf,
            "disks": o.disks,
        });
        if a.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("image:          {}", a.image.display());
            println!("format:         ova (OVF descriptor {})", o.ovf);
            print_ova_disks(o);
            println!("(give --disk N|NAME to describe one disk)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let img = ec2azure::open_with(
        &a.image,
        &ec2azure::OpenOptions {
            format: a.format,
            disk: a.disk.clone(),
        },
    )?;
    let extents = img.extents()?;
    let (data, zero, unalloc) = extents.totals();
    let count = |k: ec2azure::ExtentKind| extents.iter().filter(|e| e.kind == k).count();
    // The container's length (a block device's too), not the disk's; an ebs:// snapshot has no
    // local container.
    let container = if a.image.to_string_lossy().starts_with("ebs://") {
        None
    } else {
        Some(ec2azure::image::RawImage::open(&a.image)?)
    };
    let file_len = container.as_ref().map_or(img.len(), |c| c.len());
    let mut v = serde_json::json!({
        "path": a.image.display().to_string(),
        "format": img.format(),
        "virtual_size": img.len(),
        "file_size": file_len,
        "allocated_bytes": data,
        "extents": {
            "data": { "count": count(ec2azure::ExtentKind::Data), "bytes": data },
            "zero": { "count": count(ec2azure::ExtentKind::Zero), "bytes": zero },
            "unallocated": { "count": count(ec2azure::ExtentKind::Unallocated), "bytes": unalloc },
        },
    });
    let notes = img.notes();
    v["notes"] = notes.clone().into();
    if let Some(o) = &ova {
        v["format"] = "ova".into();
        v["ovf"] = o.ovf.clone().into();
        v["disks"] = serde_json::to_value(&o.disks)?;
        v["disk"] = serde_json::to_value(o.choose(a.disk.as_deref())?)?;
    }
    if img.format() == Format::Vmdk && ova.is_none() {
        let vm = ec2azure::image::vmdk::Vmdk::open(&a.image, a.format.is_none())?;
        v["vmdk"] = serde_json::to_value(vm.info())?;
    }
    let check = if img.format() == Format::Vhd {
        if let Some(b) = container
            .as_ref()
            .map(|c| c.tail_sector())
            .transpose()?
            .flatten()
        {
            let f = Footer::decode(&b);
            v["footer"] = f.to_json(&b);
            v["sized_by"] = if f.sized_by_chs() {
                "chs"
            } else {
                "current_size"
            }
            .into();
        }
        Some((
            ec2azure::check_file(&a.image, Target::ManagedDisk)?,
            ec2azure::check_file(&a.image, Target::PageBlob)?,
        ))
    } else {
        None
    };
    v["azure_ready"] = check.as_ref().is_some_and(|(md, _)| md.ready).into();
    if let Some((md, pb)) = &check {
        v["azure_ready_page_blob"] = pb.ready.into();
        v["azure_check"] = serde_json::to_value(md)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("image:          {}", a.image.display());
    match &ova {
        Some(o) => {
            println!("format:         ova (OVF descriptor {})", o.ovf);
            print_ova_disks(o);
            let d = o.choose(a.disk.as_deref())?;
            println!(
                "disk:           {} ({}), read inside the archive",
                d.id, d.file
            );
        }
        None => println!("format:         {}", img.format()),
    }
    if let Some(vm) = v.get("vmdk") {
        let s = |k: &str| vm[k].as_str().unwrap_or_default().to_string();
        println!(
            "vmdk:           createType {}, {} extent(s){}{}",
            s("create_type"),
            vm["extents"],
            vm["grain_size"]
                .as_u64()
                .map(|g| format!(", {g}-byte grains"))
                .unwrap_or_default(),
            if vm["compressed"] == true {
                ", compressed (deflate)"
            } else {
                ""
            }
        );
        if let Some(p) = vm["parent"].as_str() {
            println!("parent:         {p} (a delta disk; its CID checked)");
        }
    }
    println!("virtual size:   {}", human(img.len()));
    println!("file size:      {}", human(file_len));
    println!("allocated:      {}", human(data));
    println!(
        "extents:        {} data, {} zero ({} bytes), {} unallocated ({} bytes)",
        count(ec2azure::ExtentKind::Data),
        count(ec2azure::ExtentKind::Zero),
        zero,
        count(ec2azure::ExtentKind::Unallocated),
        unalloc
    );
    if let Some(f) = v.get("footer").and_then(|f| f.as_object()) {
        println!("footer:");
        for (k, val) in f {
            match val.as_str() {
                Some(text) => println!("  {k:<20} {text}"),
                None => println!("  {k:<20} {val}"),
            }
        }
    }
    if v["sized_by"] == "chs" {
        println!(
            "note:           sized by CHS geometry (creator {}), as qemu reads it",
            v["footer"]["creator_application"]
        );
    }
    for n in &notes {
        println!("note:           {n}");
    }
    match &check {
        Some((md, pb)) => {
            println!("azure:          {}", readiness_line(md, pb));
            for r in md.failed().filter(|r| r.severity == Severity::Error) {
                println!("  {}: {}", r.rule, r.azure_message);
            }
        }
        None => println!(
            "azure:          not a VHD; `ec2azure convert {} disk.vhd` makes one",
            a.image.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_ova_disks(o: &ec2azure::image::ova::Ova) {
    println!("disks:          {}", o.disks.len());
    for (i, d) in o.disks.iter().enumerate() {
        println!(
            "  {}: {:<12} {}  {}  {}",
            i + 1,
            d.id,
            d.file,
            human(d.capacity),
            d.format.rsplit('#').next().unwrap_or(&d.format)
        );
    }
}

fn check(a: CheckArgs, quiet: bool) -> Result<ExitCode> {
    let target = match a.target {
        TargetArg::ManagedDisk => Target::ManagedDisk,
        TargetArg::PageBlob => Target::PageBlob,
    };
    let r = ec2azure::check_file(&a.image, target)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !quiet {
        let t = match target {
            Target::ManagedDisk => "managed disk upload",
            Target::PageBlob => "page blob",
        };
        println!(
            "{}: {} for Azure ({t})",
            a.image.display(),
            if r.ready { "ready" } else { "NOT ready" }
        );
        for rule in &r.rules {
            let mark = match (rule.passed, rule.severity) {
                (Some(true), _) => "pass",
                (Some(false), Severity::Error) => "FAIL",
                (Some(false), Severity::Warning) => "warn",
                (None, _) => "skip",
            };
            println!("  {mark}  {:<18} {}", rule.rule, rule.detail);
            if rule.passed == Some(false) {
                println!("        Azure: {}", rule.azure_message);
            }
        }
    }
    Ok(if r.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn compare(a: CompareArgs, quiet: bool) -> Result<ExitCode> {
    let x = ec2azure::open(&a.a, a.format_a)?;
    let y = ec2azure::open(&a.b, a.format_b)?;
    term::install_interrupt_handler();
    let progress = term::progress(quiet || a.json);
    let r = ec2azure::compare(&*x, &*y, a.strict, &progress)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !quiet {
        if r.sizes_differ {
            println!(
                "Image sizes differ: {} is {} bytes, {} is {} bytes{}",
                a.a.display(),
                r.size_a,
                a.b.display(),
                r.size_b,
                if a.strict {
                    ""
                } else {
                    " (the larger one's tail is compared with zeros)"
                }
            );
        }
        match r.first_difference {
            None => println!("Images are identical."),
            Some(o) => println!("Content mismatch at offset {o} (0x{o:x})!"),
        }
    }
    Ok(if r.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn snapshot_pull(a: PullArgs, quiet: bool) -> Result<ExitCode> {
    use ec2azure::cloud::{aws_ebs::AwsEbs, ebs::EbsSnapshot, ebs::RetryPolicy};
    term::install_interrupt_handler();
    if let Some(m) = &a.manifest {
        check_manifest_path(m, &a.output, &a.output)?;
    }
    let api = AwsEbs::new(a.aws.endpoint.as_deref(), a.aws.region.as_deref())?;
    let snap = EbsSnapshot::open(api, &a.snapshot, RetryPolicy::default())?;
    let progress = term::progress(quiet || a.json);
    let opts = ConvertOptions {
        format: match a.output_format {
            OutFormat::Vhd => OutputFormat::Vhd,
            OutFormat::Raw => OutputFormat::Raw,
        },
        sync: !a.no_sync,
        manifest: a.manifest.is_some(),
        progress: &progress as &dyn Progress,
        ..ConvertOptions::default()
    };
    let report = ec2azure::convert(&snap, &a.output, &opts)
        .with_context(|| format!("pulling snapshot {} to {}", a.snapshot, a.output.display()))?;
    if let (Some(path), Some(m)) = (&a.manifest, &report.manifest) {
        ec2azure::export::write_file_atomic(
            path,
            serde_json::to_string_pretty(m)?.as_bytes(),
            opts.sync,
        )?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["snapshot_id"] = a.snapshot.clone().into();
        v["listed_blocks"] = snap.listed_blocks().into();
        v["output"] = a.output.display().to_string().into();
        if let Some(m) = &report.manifest {
            v["manifest_root"] = m.root.clone().into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !quiet {
        println!(
            "Pulled {} ({} listed blocks, every checksum verified) to {}",
            a.snapshot,
            snap.listed_blocks(),
            a.output.display()
        );
        println!("  virtual size  {}", human(report.virtual_size));
        println!("  read          {}", human(report.bytes_read));
        println!(
            "  written       {} (zeros left as holes)",
            human(report.bytes_written)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_push(a: PushArgs, quiet: bool) -> Result<ExitCode> {
    use ec2azure::cloud::{aws_ebs::AwsEbs, ebs::RetryPolicy};
    let img = ec2azure::open(&a.image, a.format)?;
    let api = AwsEbs::new(a.aws.endpoint.as_deref(), a.aws.region.as_deref())?;
    let r = api
        .push(&*img, a.description.as_deref(), RetryPolicy::default())
        .with_context(|| format!("pushing {}", a.image.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !quiet {
        println!(
            "Created snapshot {} ({} GiB, {} blocks written)",
            r.snapshot_id, r.volume_size_gib, r.blocks_written
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_diff(a: DiffArgs, quiet: bool) -> Result<ExitCode> {
    use ec2azure::cloud::{aws_ebs::AwsEbs, ebs};
    let api = AwsEbs::new(a.aws.endpoint.as_deref(), a.aws.region.as_deref())?;
    let blocks = ebs::changed_blocks(&api, &a.first, &a.second, ebs::RetryPolicy::default())?;
    if a.json {
        let v = serde_json::json!({
            "first": a.first,
            "second": a.second,
            "block_size": ebs::BLOCK_SIZE,
            "changed_blocks": blocks,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !quiet {
        println!(
            "{} block(s) of 512 KiB differ between {} and {} ({})",
            blocks.len(),
            a.first,
            a.second,
            human(blocks.len() as u64 * ebs::BLOCK_SIZE)
        );
        for chunk in blocks.chunks(16) {
            let line: Vec<String> = chunk.iter().map(u64::to_string).collect();
            println!("  {}", line.join(" "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sample(a: SampleArgs, quiet: bool) -> Result<ExitCode> {
    let spec = ec2azure::sample::SampleSpec {
        size: a.size,
        data_fraction: a.data_fraction,
        zero_fraction: a.zero_fraction,
        seed: a.seed,
    };
    let s = ec2azure::sample::make_sample(&a.output, &spec)?;
    if !quiet {
        println!(
            "Wrote {}: {} disk, {} data, {} allocated zeros, the rest holes (seed {})",
            a.output.display(),
            human(a.size),
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
