//! `info`, `check` and `compare`: what an image is, whether Azure takes it, and whether two
//! images hold the same disk.

use super::*;

#[derive(Args)]
pub(crate) struct InfoArgs {
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
pub(crate) enum TargetArg {
    ManagedDisk,
    PageBlob,
}

#[derive(Args)]
pub(crate) struct CheckArgs {
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
pub(crate) struct CompareArgs {
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

pub(crate) fn info(a: InfoArgs) -> Result<ExitCode> {
    let local = !a.image.to_string_lossy().starts_with("ebs://");
    let format = match a.format {
        Some(f) => Some(f),
        None if local => ec2azure::image::detect_format(&a.image)?,
        None => None,
    };
    let is_ova = format == Some(Format::Ova);
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
    // A VMDK (alone or in the OVA) is opened once, as itself, so its details can be shown.
    let mut vmdk_info = None;
    let img: Box<dyn DiskImage> = match &ova {
        Some(o) => {
            let vm = o.open_disk(a.disk.as_deref())?;
            vmdk_info = Some(vm.info().clone());
            Box::new(vm)
        }
        None if format == Some(Format::Vmdk) && a.disk.is_none() => {
            let vm = ec2azure::image::vmdk::Vmdk::open(&a.image, a.format.is_none())?;
            vmdk_info = Some(vm.info().clone());
            Box::new(vm)
        }
        None => ec2azure::open_with(
            &a.image,
            &ec2azure::OpenOptions {
                format: a.format,
                disk: a.disk.clone(),
            },
        )?,
    };
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
    if let Some(info) = &vmdk_info {
        v["vmdk"] = serde_json::to_value(info)?;
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

pub(crate) fn print_ova_disks(o: &ec2azure::image::ova::Ova) {
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

pub(crate) fn check(a: CheckArgs, quiet: bool) -> Result<ExitCode> {
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

pub(crate) fn compare(a: CompareArgs, quiet: bool) -> Result<ExitCode> {
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
