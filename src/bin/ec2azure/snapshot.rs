//! `snapshot pull|push|diff`: EBS snapshots through the EBS direct APIs.

use super::*;

#[derive(Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Read a snapshot block by block (each block's SHA-256 checked) into a fixed VHD or raw image.
    Pull(PullArgs),
    /// Write an image as a new snapshot; only blocks holding data are sent.
    Push(PushArgs),
    /// List the 512 KiB blocks that differ between two snapshots of one lineage
    /// (ListChangedBlocks): the changes a journal would carry.
    Diff(DiffArgs),
}

#[derive(Args)]
pub(crate) struct DiffArgs {
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
pub(crate) struct AwsArgs {
    /// The EBS endpoint URL (for an emulator such as moto); AWS's by default.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The AWS region; from the usual AWS settings by default.
    #[arg(long)]
    region: Option<String>,
}

#[derive(Args)]
pub(crate) struct PullArgs {
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
pub(crate) struct PushArgs {
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

pub(crate) fn snapshot_pull(a: PullArgs, quiet: bool) -> Result<ExitCode> {
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

pub(crate) fn snapshot_push(a: PushArgs, quiet: bool) -> Result<ExitCode> {
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

pub(crate) fn snapshot_diff(a: DiffArgs, quiet: bool) -> Result<ExitCode> {
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
