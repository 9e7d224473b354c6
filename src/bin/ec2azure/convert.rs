//! `convert`: any input to a fixed VHD or raw image, in place or to a new file; the VHD
//! identity options shared with `points build` and `upload`.

use super::*;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OutFormat {
    Vhd,
    Raw,
}

#[derive(Args)]
pub(crate) struct ConvertArgs {
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

pub(crate) fn vhd_timestamp(unix: Option<u64>) -> Result<Option<u32>> {
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
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
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
pub(crate) fn check_manifest_path(manifest: &Path, input: &Path, output: &Path) -> Result<()> {
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

pub(crate) fn convert(a: ConvertArgs, quiet: bool) -> Result<ExitCode> {
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
pub(crate) fn readiness_line(md: &ec2azure::CheckReport, pb: &ec2azure::CheckReport) -> String {
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
