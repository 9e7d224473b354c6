//! `boot-check`: boot any input (or a recovery point) read-only under qemu and report what the
//! firmware, the boot loader and the kernel said, with a screenshot; and `sample --bootable`.
//! Exit codes: 0 booted, 1 did not boot (the reason printed), 2 error.

use super::*;
use ec2azure::boot::{self, BootDisk, BootOptions, BootReport, Status};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FirmwareArg {
    Auto,
    Bios,
    Uefi,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum AccelArg {
    Auto,
    Tcg,
    Kvm,
}

#[derive(Args)]
pub(crate) struct BootCheckArgs {
    /// The disk: raw, VHD, VHDX, qcow2, VMDK, an OVA or ebs://snap-… (never written: qemu
    /// writes to a throw-away overlay).
    #[arg(required_unless_present = "point")]
    input: Option<PathBuf>,
    /// Boot a recovery point instead of INPUT: latest, latest-processed, latest-app-consistent,
    /// rp-N or a time, of one disk's --replica (or --base and --journal).
    #[arg(long, value_name = "P", conflicts_with = "input")]
    point: Option<String>,
    #[command(flatten)]
    point_source: crate::recovery::SourceArgs,
    /// Input format; detected when not given.
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// The disk of an OVA: N (from 1), its OVF disk id, or its file name.
    #[arg(long, value_name = "N|NAME")]
    disk: Option<String>,
    /// Firmware: auto decides from the partition table (MBR with a boot signature: BIOS; GPT
    /// with an EFI system partition: UEFI; neither: not bootable, no VM started).
    #[arg(long, value_enum, default_value = "auto")]
    firmware: FirmwareArg,
    /// How long the guest may take to show it booted (e.g. 120s, 2m).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// A regular expression the serial console must print for the disk to count as booted.
    #[arg(long, value_name = "REGEX")]
    expect: Option<String>,
    /// Write the VM's screen at the end to FILE (PNG), as Azure's boot diagnostics show it.
    #[arg(long, value_name = "FILE.png")]
    screenshot: Option<PathBuf>,
    /// Accelerator: auto uses KVM when /dev/kvm is usable, TCG otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// Guest memory.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Print every finding as JSON.
    #[arg(long)]
    json: bool,
}

/// "120s", "2m", "1h", "90" (seconds), "500ms".
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a number with s, m, h or ms"))?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .ok_or_else(|| format!("duration {s:?} is too long"))
    };
    Ok(match unit {
        "" | "s" => std::time::Duration::from_secs(n),
        "ms" => std::time::Duration::from_millis(n),
        "m" | "min" => std::time::Duration::from_secs(secs(60)?),
        "h" => std::time::Duration::from_secs(secs(3600)?),
        other => {
            return Err(format!(
                "duration {s:?}: unknown unit {other:?} (s, m, h, ms)"
            ));
        }
    })
}

pub(crate) fn boot_check(a: BootCheckArgs, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    let progress = term::progress(quiet || a.json);
    let opts = BootOptions {
        firmware: match a.firmware {
            FirmwareArg::Auto => boot::Firmware::Auto,
            FirmwareArg::Bios => boot::Firmware::Bios,
            FirmwareArg::Uefi => boot::Firmware::Uefi,
        },
        timeout: a.timeout,
        expect: a.expect.clone(),
        screenshot: a.screenshot.clone(),
        accel: match a.accel {
            AccelArg::Auto => boot::Accel::Auto,
            AccelArg::Tcg => boot::Accel::Tcg,
            AccelArg::Kvm => boot::Accel::Kvm,
        },
        memory_mib: u32::try_from(a.memory >> 20).context("--memory is too large")?,
        ..BootOptions::default()
    };
    let (report, label) = if let Some(spec) = a.point.clone() {
        crate::recovery::with_point(&a.point_source, &spec, quiet || a.json, |img, p| {
            let r = boot::check(BootDisk::Image(img), &opts, &progress)?;
            Ok((r, format!("{} ({})", p.id, p.time)))
        })?
    } else {
        let input = a.input.clone().unwrap_or_default();
        let label = input.display().to_string();
        let is_file = ec2azure::source::parse(&input)
            .is_ok_and(|s| matches!(s, ec2azure::source::SourceRef::File(_)));
        let format = if is_file {
            match a.format {
                Some(f) => Some(f),
                None => ec2azure::image::detect_format(&input)?,
            }
        } else {
            None
        };
        let r = match format {
            // qemu reads these itself; one disk of an OVA goes through the library.
            Some(f) if f != Format::Ova && a.disk.is_none() => boot::check(
                BootDisk::File {
                    path: &input,
                    format: f,
                },
                &opts,
                &progress,
            )?,
            _ => {
                let src = ec2azure::open_with(
                    &input,
                    &ec2azure::OpenOptions {
                        format: a.format,
                        disk: a.disk.clone(),
                    },
                )?;
                boot::check(BootDisk::Image(&*src), &opts, &progress)?
            }
        };
        (r, label)
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["input"] = label.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !quiet {
        print_report(&label, &report);
    }
    Ok(if report.booted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(label: &str, r: &BootReport) {
    let head = if r.booted { "BOOTED" } else { "DID NOT BOOT" };
    println!("{label}: {head} ({}): {}", r.verdict.name(), r.reason);
    for f in &r.findings {
        let mark = match f.status {
            Status::Pass => "ok  ",
            Status::Fail => "FAIL",
            Status::Info => "    ",
        };
        println!("  {mark} {:<16} {}", f.name, f.detail);
    }
    if let (Some(a), Some(v)) = (r.accel, &r.qemu_version) {
        println!(
            "  qemu {v} ({a}), {}; verdict after {:.1} s, {:.1} s in all",
            r.served_as.as_deref().unwrap_or(""),
            r.time_to_verdict_ms as f64 / 1000.0,
            r.elapsed_ms as f64 / 1000.0
        );
    }
    if !r.serial_excerpt.is_empty() {
        println!("  serial console (last lines):");
        for l in r.serial_excerpt.iter().rev().take(10).rev() {
            println!("    | {l}");
        }
    }
}

/// `sample --bootable bios|uefi OUT`: the tools come from $EC2AZURE_BOOT_TOOLS (folders, colon
/// separated), ./.test-tools/boot, then the system.
pub(crate) fn sample_bootable(kind: &str, output: &Path, quiet: bool) -> Result<ExitCode> {
    let boot: boot::sample::SampleBoot = kind.parse()?;
    let mut roots: Vec<PathBuf> = std::env::var_os("EC2AZURE_BOOT_TOOLS")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    roots.push(PathBuf::from(".test-tools/boot"));
    let tools = boot::sample::SampleTools::discover(&roots, boot)?;
    let s = boot::sample::make_bootable(output, boot, &tools)?;
    if !quiet {
        println!(
            "Wrote {}: a {} bootable {kind} disk (kernel {}); its /init prints {} on ttyS0 and \
             powers off",
            output.display(),
            human(s.size),
            s.kernel.display(),
            s.marker
        );
    }
    Ok(ExitCode::SUCCESS)
}
