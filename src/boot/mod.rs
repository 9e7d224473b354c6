//! The boot check: prove a disk boots before it is uploaded, as Azure's boot diagnostics would
//! show after the fact. The disk is started under `qemu-system-x86_64` (KVM when `/dev/kvm` is
//! usable, TCG otherwise), read-only (a temporary overlay: the input is never written), with
//! SeaBIOS for a Generation 1 disk and OVMF for a Generation 2 one; what the firmware, the boot
//! loader and the kernel said, how much of the disk the guest read over time, and a screenshot
//! of the screen at the end come back as a [`BootReport`] of named [`Finding`]s.
//!
//! ```text
//!   BootDisk ─> partition::read ─> BootLayout ─> firmware (auto: MBR → BIOS, GPT+ESP → UEFI,
//!      │                                                   neither → not bootable, no VM)
//!      ├─ File (raw, VHD, VHDX, qcow2, VMDK): qemu reads it itself, snapshot=on
//!      └─ Image (ebs://, recovery points, OVA, …): exported to a sparse raw file in the work
//!         folder first (holes stay holes: a 10 GiB disk costs what its data costs)
//!   qemu ─ serial.log, debug.log (SeaBIOS 0x402), QMP: query-blockstats, query-status, events,
//!          screendump ─> verdict (verdict.rs) ─> BootReport; qemu killed, the folder removed
//! ```
//!
//! [`check`] is the one entry point; the CLI (`ec2azure boot-check`) and the simulator's test
//! failover both call it. [`sample`] builds small bootable disks (BIOS and UEFI) for tests and
//! demos.

pub mod png;
pub mod qemu;
pub mod qmp;
pub mod sample;
pub mod verdict;

use crate::error::{Error, ErrorKind, Result};
use crate::export::{ConvertOptions, OutputFormat};
use crate::image::partition::{self, BootLayout, PartitionTable};
use crate::image::{DiskImage, Format};
use crate::progress::Progress;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use verdict::FirmwareVerdict;

/// Which firmware to boot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Decide from the partition table: MBR with a boot signature → BIOS, GPT with an EFI
    /// system partition → UEFI, neither → not bootable (no VM started).
    #[default]
    Auto,
    /// SeaBIOS (an Azure Generation 1 VM).
    Bios,
    /// OVMF (an Azure Generation 2 VM).
    Uefi,
}

impl std::str::FromStr for Firmware {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Firmware::Auto),
            "bios" | "gen1" => Ok(Firmware::Bios),
            "uefi" | "gen2" => Ok(Firmware::Uefi),
            other => Err(Error::argument(format!(
                "unknown firmware {other:?}: expected auto, bios or uefi"
            ))),
        }
    }
}

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when `/dev/kvm` is usable, TCG otherwise.
    #[default]
    Auto,
    /// Always TCG (software emulation: slower, the same everywhere).
    Tcg,
    /// KVM (an error when `/dev/kvm` is not usable).
    Kvm,
}

/// The disk to boot.
#[derive(Clone, Copy)]
pub enum BootDisk<'a> {
    /// An image file qemu reads itself (raw, fixed or dynamic VHD, VHDX, qcow2, VMDK), given
    /// with the format it was detected as; served with a temporary overlay.
    File {
        /// The file.
        path: &'a Path,
        /// Its format.
        format: Format,
    },
    /// Any [`DiskImage`] (an `ebs://` snapshot, a recovery point, an OVA's disk): written to a
    /// sparse raw file in the work folder first.
    Image(&'a dyn DiskImage),
}

/// How to run the check.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The firmware.
    pub firmware: Firmware,
    /// How long the guest may take to boot (time to verdict; the VM is stopped then).
    pub timeout: Duration,
    /// A regular expression (regex-lite syntax) the serial console must print for the disk to
    /// count as booted; without one, signs of a running OS count (see [`Verdict::Booted`]).
    pub expect: Option<String>,
    /// Where to write the screenshot (PNG); `None`: no screenshot file kept.
    pub screenshot: Option<PathBuf>,
    /// The accelerator.
    pub accel: Accel,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Where the temporary folder (socket, logs, overlay, exported disk) goes; the system's
    /// temporary folder when `None`.
    pub work_dir: Option<PathBuf>,
    /// How often the guest is looked at (block statistics, logs, status).
    pub poll: Duration,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            firmware: Firmware::Auto,
            timeout: Duration::from_secs(120),
            expect: None,
            screenshot: None,
            accel: Accel::Auto,
            memory_mib: 512,
            work_dir: None,
            poll: Duration::from_millis(250),
        }
    }
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The disk booted: `--expect` matched; or, without one, the OS showed it runs (a login
    /// prompt; a kernel that started and then powered the VM off cleanly or was still running
    /// at the timeout without panicking; or, with no serial console, at least 64 MiB read from
    /// the disk — more than any boot loader reads).
    Booted,
    /// The partition table has no boot path for the firmware (no VM was started).
    NotBootable,
    /// The firmware found nothing to boot on the disk.
    NoBootableDevice,
    /// The boot loader ran and failed (kernel missing or corrupt, GRUB rescue, ...).
    BootLoaderError,
    /// The kernel started and panicked.
    KernelPanic,
    /// The guest reset itself before an OS ran (a triple fault, a boot loader's reboot).
    GuestReset,
    /// `--expect` did not match before the guest stopped or the timeout.
    ExpectNotMatched,
    /// The timeout passed with no sign of an OS.
    Timeout,
    /// The guest powered off with no sign of an OS.
    StoppedWithoutOs,
}

impl Verdict {
    /// The name as JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Booted => "booted",
            Verdict::NotBootable => "not-bootable",
            Verdict::NoBootableDevice => "no-bootable-device",
            Verdict::BootLoaderError => "boot-loader-error",
            Verdict::KernelPanic => "kernel-panic",
            Verdict::GuestReset => "guest-reset",
            Verdict::ExpectNotMatched => "expect-not-matched",
            Verdict::Timeout => "timeout",
            Verdict::StoppedWithoutOs => "stopped-without-os",
        }
    }
}

/// How a finding came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Good for booting.
    Pass,
    /// Stops the disk from booting, or shows it did not.
    Fail,
    /// Information.
    Info,
}

/// One named observation.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was looked at: `partition-table`, `boot-type`, `firmware`, `disk-reads`, `serial`,
    /// `boot-loader`, `kernel`, `login-prompt`, `expect`, `guest-state`, `screenshot`.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was seen.
    pub detail: String,
}

/// The bytes the guest had read from the disk at a moment (QMP `query-blockstats`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DiskReads {
    /// Milliseconds since qemu started.
    pub at_ms: u64,
    /// Bytes read so far.
    pub bytes: u64,
    /// Read operations so far.
    pub operations: u64,
}

/// Everything the check found.
#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    /// `true` when the disk booted ([`Verdict::Booted`]).
    pub booted: bool,
    /// The outcome.
    pub verdict: Verdict,
    /// Why, in one sentence (also for a boot).
    pub reason: String,
    /// The partition table's boot layout.
    pub layout: BootLayout,
    /// The partition table.
    pub partitions: PartitionTable,
    /// The firmware used (`auto` resolved), `None` when no VM was started.
    pub firmware: Option<Firmware>,
    /// `kvm` or `tcg`, when a VM was started.
    pub accel: Option<&'static str>,
    /// qemu's version, when a VM was started.
    pub qemu_version: Option<String>,
    /// How the disk was served: "qcow2 read by qemu through a temporary overlay", "exported
    /// to a temporary sparse raw file".
    pub served_as: Option<String>,
    /// Every finding, in the order they were made.
    pub findings: Vec<Finding>,
    /// The screenshot written, when asked for and taken.
    pub screenshot: Option<PathBuf>,
    /// The screenshot's width and height in pixels.
    pub screenshot_size: Option<(u32, u32)>,
    /// The last lines of the serial console (escapes removed), at most 40.
    pub serial_excerpt: Vec<String>,
    /// The kernel's "Linux version" line, when one was printed.
    pub kernel: Option<String>,
    /// Block statistics over time (one sample a second, and the last).
    pub disk_reads: Vec<DiskReads>,
    /// Milliseconds from starting qemu to the verdict.
    pub time_to_verdict_ms: u64,
    /// Milliseconds for the whole check (export, boot, screenshot, clean-up).
    pub elapsed_ms: u64,
}

/// Boots `disk` as `opts` say and reports what happened. A disk whose partition table has no
/// boot path for the chosen firmware is reported [`Verdict::NotBootable`] without starting a
/// VM. The VM is always stopped and the work folder removed before this returns, also on error
/// and when `progress` asks to stop (then the error is [`ErrorKind::Interrupted`]).
///
/// # Errors
/// qemu or OVMF missing ([`ErrorKind::NotFound`]), the input unreadable, qemu failing to start
/// or dying, an invalid `expect` pattern, the screenshot not writable, an interruption.
pub fn check(disk: BootDisk, opts: &BootOptions, progress: &dyn Progress) -> Result<BootReport> {
    let started = Instant::now();
    let expect = opts
        .expect
        .as_deref()
        .map(|e| {
            regex_lite::Regex::new(e)
                .map_err(|x| Error::argument(format!("--expect {e:?} is not a valid pattern: {x}")))
        })
        .transpose()?;
    let opened;
    let image: &dyn DiskImage = match disk {
        BootDisk::Image(i) => i,
        BootDisk::File { path, format } => {
            opened = crate::image::open(path, Some(format))?;
            &*opened
        }
    };
    let table = partition::read(image)?;
    let layout = table.boot_layout();
    let mut findings = vec![Finding {
        name: "partition-table",
        status: if table.problems.is_empty() {
            Status::Info
        } else {
            Status::Fail
        },
        detail: if table.problems.is_empty() {
            table.summary()
        } else {
            format!("{}; {}", table.summary(), table.problems.join("; "))
        },
    }];
    let firmware = match opts.firmware {
        Firmware::Auto => match layout {
            BootLayout::Mbr => Some(Firmware::Bios),
            BootLayout::GptWithEsp => Some(Firmware::Uefi),
            BootLayout::GptWithoutEsp if table.bios_bootable() => Some(Firmware::Bios),
            BootLayout::GptWithoutEsp | BootLayout::None => None,
        },
        f => Some(f),
    };
    let report = |verdict, reason: String, findings, firmware| BootReport {
        booted: verdict == Verdict::Booted,
        verdict,
        reason,
        layout,
        partitions: table.clone(),
        firmware,
        accel: None,
        qemu_version: None,
        served_as: None,
        findings,
        screenshot: None,
        screenshot_size: None,
        serial_excerpt: Vec::new(),
        kernel: None,
        disk_reads: Vec::new(),
        time_to_verdict_ms: 0,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let Some(firmware) = firmware else {
        let why = match layout {
            BootLayout::GptWithoutEsp => {
                "the disk has a GPT but no EFI system partition (UEFI has nothing to load) and no \
                 BIOS boot partition with boot code (a BIOS has nothing to run)"
            }
            _ => {
                "sector 0 has no 55 AA boot signature and there is no GPT: no firmware boots this disk"
            }
        };
        findings.push(Finding {
            name: "boot-type",
            status: Status::Fail,
            detail: format!("not bootable: {why}"),
        });
        return Ok(report(
            Verdict::NotBootable,
            format!("not bootable: {why}"),
            findings,
            None,
        ));
    };
    findings.push(Finding {
        name: "boot-type",
        status: Status::Pass,
        detail: match firmware {
            Firmware::Uefi => "UEFI (Azure Generation 2): OVMF".into(),
            _ => "BIOS (Azure Generation 1): SeaBIOS".into(),
        },
    });
    if progress.cancelled() {
        return Err(Error::cancelled());
    }
    let qemu_bin = qemu::find_qemu()?;
    let ovmf = match firmware {
        Firmware::Uefi => Some(qemu::find_ovmf()?),
        _ => None,
    };
    let kvm = match opts.accel {
        Accel::Tcg => false,
        Accel::Auto => qemu::kvm_usable(),
        Accel::Kvm => {
            if !qemu::kvm_usable() {
                return Err(Error::new(
                    ErrorKind::Denied,
                    "--accel kvm: /dev/kvm cannot be opened for reading and writing",
                ));
            }
            true
        }
    };
    let work = match &opts.work_dir {
        Some(d) => tempfile::Builder::new()
            .prefix("ec2azure-boot-")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("ec2azure-boot-").tempdir(),
    }
    .map_err(|e| Error::io("creating the boot check's work folder", e))?;
    let dir = work.path().to_path_buf();
    let direct = match disk {
        BootDisk::File { path, format } => qemu_reads(path, format, image.len())?,
        BootDisk::Image(_) => None,
    };
    let (disk_path, disk_format, snapshot, served_as) = match (disk, direct) {
        (BootDisk::File { path, format }, Some((f, how))) => {
            let abs = std::fs::canonicalize(path)
                .map_err(|e| Error::io("resolving the input's path", e).with_path(path))?;
            (
                abs,
                f,
                true,
                format!(
                    "{} read by qemu {how}through a temporary overlay",
                    format.name()
                ),
            )
        }
        _ => {
            let out = dir.join("disk.raw");
            crate::export::convert(
                image,
                &out,
                &ConvertOptions {
                    format: OutputFormat::Raw,
                    sync: false,
                    progress,
                    ..ConvertOptions::default()
                },
            )?;
            (
                out,
                "format=raw".to_string(),
                false,
                "exported to a temporary sparse raw file".to_string(),
            )
        }
    };
    let ovmf_vars = ovmf.as_ref().map(|(_, v)| v.clone());
    let ovmf = match ovmf {
        Some((code, vars)) => {
            let mine = dir.join("vars.fd");
            std::fs::copy(&vars, &mine)
                .map_err(|e| Error::io("copying OVMF's variable store", e).with_path(&vars))?;
            Some((code, mine))
        }
        None => None,
    };
    let spec = qemu::VmSpec {
        qemu: qemu_bin,
        ovmf,
        kvm,
        memory_mib: opts.memory_mib,
        disk: disk_path,
        disk_format,
        snapshot,
        dir: dir.clone(),
    };
    let mut out = report(Verdict::Timeout, String::new(), findings, Some(firmware));
    out.accel = Some(if kvm { "kvm" } else { "tcg" });
    out.served_as = Some(served_as);
    let mut r = run_vm(&spec, opts, expect.as_ref(), progress, &mut out);
    if kvm
        && opts.accel == Accel::Auto
        && let Err(e) = &r
        && e.kind() != ErrorKind::Interrupted
    {
        // Nested or restricted KVM fails in ways only a run shows (MSRs refused, emulation
        // failures): say so, and boot again under TCG.
        let why = e.to_string();
        let mut again = report(
            Verdict::Timeout,
            String::new(),
            out.findings.clone(),
            Some(firmware),
        );
        again.findings.push(Finding {
            name: "accel",
            status: Status::Info,
            detail: format!("KVM failed ({why}); booted again under TCG"),
        });
        again.served_as = out.served_as.take();
        again.accel = Some("tcg");
        out = again;
        let mut tcg = spec.clone();
        tcg.kvm = false;
        if let Some((code, mine)) = &tcg.ovmf
            && let Some(src) = ovmf_vars.as_ref()
        {
            let _ = code;
            std::fs::copy(src, mine)
                .map_err(|e| Error::io("copying OVMF's variable store", e).with_path(src))?;
        }
        r = run_vm(&tcg, opts, expect.as_ref(), progress, &mut out);
    }
    drop(work);
    r?;
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

/// Why a boot check with `firmware` cannot start a VM here (qemu, or OVMF for UEFI, missing),
/// or `None` when it can. A caller that must say "not checked" rather than fail asks this
/// first; [`check`] itself still reports a disk with no boot path as [`Verdict::NotBootable`]
/// without needing either.
pub fn missing_tools(firmware: Firmware) -> Option<String> {
    let qemu = qemu::find_qemu().err().map(|e| e.to_string());
    let ovmf = match firmware {
        Firmware::Bios => None,
        Firmware::Uefi | Firmware::Auto => qemu::find_ovmf().err().map(|e| e.to_string()),
    };
    match (qemu, ovmf) {
        (None, None) => None,
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// How qemu reads a file of `format` itself, or `None` when it is better exported: qemu's
/// driver options and a note. A fixed VHD is read as raw limited to the virtual size (the same
/// bytes ec2azure reads, whatever qemu's vpc driver makes of the creator and CHS fields); a
/// dynamic one with qemu's vpc driver; a differencing VHD (qemu has no parent support) and an
/// OVA are exported.
fn qemu_reads(path: &Path, format: Format, size: u64) -> Result<Option<(String, &'static str)>> {
    Ok(match format {
        Format::Raw => Some(("format=raw".into(), "")),
        Format::Vhdx => Some(("format=vhdx".into(), "")),
        Format::Qcow2 => Some(("format=qcow2".into(), "")),
        Format::Vmdk => Some(("format=vmdk".into(), "")),
        Format::Ova => None,
        Format::Vhd => {
            let raw = crate::image::RawImage::open(path)?;
            let tail = raw.tail_sector()?;
            match tail.map(|t| crate::image::vhd::Footer::decode(&t).disk_type) {
                Some(crate::image::vhd::DiskType::Fixed) => Some((
                    format!("format=raw,size={size}"),
                    "(fixed: its data as raw) ",
                )),
                Some(crate::image::vhd::DiskType::Dynamic) => Some(("format=vpc".into(), "")),
                _ => None,
            }
        }
    })
}

/// The part of a file from `from` on, as text (lossy).
fn read_from(path: &Path, from: usize) -> String {
    match std::fs::read(path) {
        Ok(b) if b.len() > from => String::from_utf8_lossy(&b[from..]).into_owned(),
        _ => String::new(),
    }
}

/// How the guest ended, from qemu's status and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    Running,
    PoweredOff,
    Reset,
    Other,
}

/// Starts the VM and watches it until a verdict, then takes the screenshot and stops it.
fn run_vm(
    spec: &qemu::VmSpec,
    opts: &BootOptions,
    expect: Option<&regex_lite::Regex>,
    progress: &dyn Progress,
    out: &mut BootReport,
) -> Result<()> {
    let t0 = Instant::now();
    let mut vm = qemu::Vm::start(spec)?;
    let qemu_failed = |vm_status: String| {
        let log = read_from(&spec.stderr_log(), 0);
        Error::unsupported(format!(
            "qemu stopped before the boot check finished ({vm_status}): {}",
            log.trim()
        ))
    };
    let deadline = t0 + opts.timeout;
    let mut alive = || true;
    let mut q =
        match qmp::Qmp::connect(&spec.qmp_socket(), t0 + Duration::from_secs(30), &mut alive) {
            Ok(q) => q,
            Err(e) => {
                // The socket may close a moment before the process is gone.
                return Err(vm
                    .exited_within(Duration::from_secs(1))
                    .map(qemu_failed)
                    .unwrap_or(e));
            }
        };
    out.qemu_version = Some(format!("{}.{}.{}", q.version.0, q.version.1, q.version.2));
    let mut last_sample = None::<Instant>;
    let mut latest;
    let mut ended: Option<(Verdict, String)> = None;
    let mut stopped = Stopped::Running;
    let mut bytes_at_kernel: Option<u64> = None;
    let mut serial;
    let mut debug;
    loop {
        if progress.cancelled() {
            vm.stop(Duration::ZERO);
            return Err(Error::cancelled());
        }
        if let Some(s) = vm.exited() {
            return Err(qemu_failed(s));
        }
        serial = read_from(&spec.serial_log(), 0);
        debug = read_from(&spec.debug_log(), 0);
        let stats = match q.execute("query-blockstats", json!({})) {
            Ok(v) => v,
            Err(e) => {
                return Err(vm
                    .exited_within(Duration::from_secs(1))
                    .map(qemu_failed)
                    .unwrap_or(e));
            }
        };
        let (bytes, ops) = stats
            .as_array()
            .and_then(|a| a.iter().find(|d| d["device"] == "disk0"))
            .map(|d| {
                (
                    d["stats"]["rd_bytes"].as_u64().unwrap_or(0),
                    d["stats"]["rd_operations"].as_u64().unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        let now = Instant::now();
        let sample = DiskReads {
            at_ms: now.duration_since(t0).as_millis() as u64,
            bytes,
            operations: ops,
        };
        if last_sample.is_none_or(|l| now.duration_since(l) >= Duration::from_secs(1)) {
            out.disk_reads.push(sample);
            last_sample = Some(now);
        }
        latest = sample;
        let status = match q.execute("query-status", json!({})) {
            Ok(v) => v,
            Err(e) => {
                return Err(vm
                    .exited_within(Duration::from_secs(1))
                    .map(qemu_failed)
                    .unwrap_or(e));
            }
        };
        let state = status["status"].as_str().unwrap_or("").to_string();
        for ev in &q.events {
            if ev.event == "SHUTDOWN" {
                let reason = ev.data["reason"].as_str().unwrap_or("");
                stopped = if reason.contains("reset") {
                    Stopped::Reset
                } else if reason.contains("shutdown") {
                    Stopped::PoweredOff
                } else {
                    Stopped::Other
                };
            }
        }
        if state == "internal-error" {
            return Err(Error::unsupported(
                "the VM stopped with an internal error (qemu could not run the guest's code)",
            ));
        }
        if stopped == Stopped::Running
            && matches!(state.as_str(), "shutdown" | "guest-panicked" | "io-error")
        {
            stopped = Stopped::Other;
        }
        let kernel = verdict::kernel_banner(&serial);
        if kernel.is_some() && bytes_at_kernel.is_none() {
            bytes_at_kernel = Some(bytes);
        }
        // The verdict, most specific first.
        if let Some(re) = expect
            && let Some(m) = re.find(&serial)
        {
            ended = Some((
                Verdict::Booted,
                format!(
                    "the serial console printed {:?}, which --expect asked for",
                    verdict::clean(m.as_str())
                ),
            ));
        } else if let Some(p) = verdict::kernel_panic(&serial) {
            ended = Some((Verdict::KernelPanic, format!("the kernel panicked: {p}")));
        } else if let Some(l) = verdict::loader_error(&serial) {
            ended = Some((
                Verdict::BootLoaderError,
                format!("the boot loader failed: {l}"),
            ));
        } else if verdict::firmware_verdict(&debug, &serial) == FirmwareVerdict::NoBootableDevice {
            ended = Some((
                Verdict::NoBootableDevice,
                format!(
                    "the firmware found nothing to boot: {}",
                    verdict::firmware_line(&debug, &serial).unwrap_or_default()
                ),
            ));
        } else if expect.is_none()
            && let Some(l) = verdict::login_prompt(&serial)
        {
            ended = Some((
                Verdict::Booted,
                format!("the OS is up: its console shows a login prompt ({l:?})"),
            ));
        } else if stopped != Stopped::Running {
            ended = Some(match (stopped, kernel.is_some(), expect) {
                (Stopped::Reset, false, _) => (
                    Verdict::GuestReset,
                    format!(
                        "the guest reset itself before an OS started{}",
                        last_line(&serial)
                    ),
                ),
                (_, _, Some(re)) => (
                    Verdict::ExpectNotMatched,
                    format!(
                        "the guest stopped ({}) before the console printed anything matching {:?}",
                        stopped_name(stopped),
                        re.as_str()
                    ),
                ),
                (Stopped::PoweredOff, true, None) => (
                    Verdict::Booted,
                    "the kernel started and powered the VM off cleanly".into(),
                ),
                (Stopped::Reset, _, None) => (
                    Verdict::GuestReset,
                    format!(
                        "the guest reset itself before an OS showed it was running{}",
                        last_line(&serial)
                    ),
                ),
                _ => (
                    Verdict::StoppedWithoutOs,
                    format!(
                        "the guest stopped ({}) with no sign of an OS{}",
                        stopped_name(stopped),
                        last_line(&serial)
                    ),
                ),
            });
        } else if now >= deadline {
            let os_reads = bytes >= 64 << 20;
            ended = Some(match (kernel.is_some(), expect) {
                (_, Some(re)) => (
                    Verdict::ExpectNotMatched,
                    format!(
                        "nothing matching {:?} on the serial console within {}s",
                        re.as_str(),
                        opts.timeout.as_secs()
                    ),
                ),
                (true, None) => (
                    Verdict::Booted,
                    format!(
                        "the kernel started and was still running at the timeout ({}s)",
                        opts.timeout.as_secs()
                    ),
                ),
                (false, None) if os_reads => (
                    Verdict::Booted,
                    format!(
                        "no serial console output, but the guest read {} MiB from the disk: an OS is loading",
                        bytes >> 20
                    ),
                ),
                _ => (
                    Verdict::Timeout,
                    format!(
                        "no sign of an operating system within {}s ({}; {} bytes read from the disk; {})",
                        opts.timeout.as_secs(),
                        match verdict::firmware_verdict(&debug, &serial) {
                            FirmwareVerdict::BootingFromDisk =>
                                "the firmware started the disk's boot code",
                            _ => "the firmware did not say it booted from the disk",
                        },
                        bytes,
                        if serial.trim().is_empty() {
                            "nothing on the serial console".to_string()
                        } else {
                            format!(
                                "the serial console's last line: {:?}",
                                verdict::tail_lines(&serial, 1).join("")
                            )
                        }
                    ),
                ),
            });
        }
        if ended.is_some() {
            break;
        }
        std::thread::sleep(opts.poll);
    }
    out.time_to_verdict_ms = t0.elapsed().as_millis() as u64;
    if out
        .disk_reads
        .last()
        .is_none_or(|l| l.at_ms != latest.at_ms)
    {
        out.disk_reads.push(latest);
    }
    // The screen as it is now.
    let shot = take_screenshot(&mut q, spec, opts);
    let _ = q.execute("quit", json!({}));
    vm.stop(Duration::from_secs(3));
    let (verdict_, reason) = ended.unwrap_or((Verdict::Timeout, String::new()));
    out.verdict = verdict_;
    out.booted = verdict_ == Verdict::Booted;
    out.reason = reason;
    let fw = verdict::firmware_verdict(&debug, &serial);
    out.findings.push(Finding {
        name: "firmware",
        status: match fw {
            FirmwareVerdict::BootingFromDisk => Status::Pass,
            FirmwareVerdict::NoBootableDevice => Status::Fail,
            FirmwareVerdict::Unknown => Status::Info,
        },
        detail: verdict::firmware_line(&debug, &serial)
            .unwrap_or_else(|| "the firmware said nothing recognisable".into()),
    });
    let total = out.disk_reads.last().map(|d| d.bytes).unwrap_or(0);
    out.findings.push(Finding {
        name: "disk-reads",
        status: if total > 0 {
            Status::Pass
        } else {
            Status::Fail
        },
        detail: format!(
            "{} bytes read in {} operations{}",
            total,
            out.disk_reads.last().map(|d| d.operations).unwrap_or(0),
            bytes_at_kernel
                .map(|b| format!("; {b} bytes by the time the kernel printed its banner"))
                .unwrap_or_default()
        ),
    });
    let lines = serial
        .lines()
        .filter(|l| !verdict::clean(l).trim().is_empty())
        .count();
    out.findings.push(Finding {
        name: "serial",
        status: Status::Info,
        detail: format!("{lines} lines on the serial console"),
    });
    if let Some(l) = verdict::loader_error(&serial) {
        out.findings.push(Finding {
            name: "boot-loader",
            status: Status::Fail,
            detail: l,
        });
    }
    out.kernel = verdict::kernel_banner(&serial);
    out.findings.push(Finding {
        name: "kernel",
        status: if out.kernel.is_some() {
            Status::Pass
        } else {
            Status::Info
        },
        detail: match (&out.kernel, verdict::kernel_panic(&serial)) {
            (_, Some(p)) => p,
            (Some(k), None) => k.clone(),
            (None, None) => "no Linux kernel banner on the serial console".into(),
        },
    });
    if let Some(l) = verdict::login_prompt(&serial) {
        out.findings.push(Finding {
            name: "login-prompt",
            status: Status::Pass,
            detail: l,
        });
    }
    if let Some(re) = expect {
        let m = re.find(&serial).map(|m| m.as_str().to_string());
        out.findings.push(Finding {
            name: "expect",
            status: if m.is_some() {
                Status::Pass
            } else {
                Status::Fail
            },
            detail: match m {
                Some(m) => format!("{:?} matched: {:?}", re.as_str(), verdict::clean(&m)),
                None => format!("{:?} did not match", re.as_str()),
            },
        });
    }
    out.findings.push(Finding {
        name: "guest-state",
        status: Status::Info,
        detail: format!(
            "{} after {} ms",
            stopped_name(stopped),
            out.time_to_verdict_ms
        ),
    });
    match shot {
        Ok(Some((path, size))) => {
            out.findings.push(Finding {
                name: "screenshot",
                status: Status::Info,
                detail: format!("{}×{} PNG at {}", size.0, size.1, path.display()),
            });
            out.screenshot = Some(path);
            out.screenshot_size = Some(size);
        }
        Ok(None) => {}
        Err(e) => out.findings.push(Finding {
            name: "screenshot",
            status: Status::Fail,
            detail: format!("no screenshot: {e}"),
        }),
    }
    out.serial_excerpt = verdict::tail_lines(&serial, 40);
    Ok(())
}

/// "; the console's last line: …" or nothing.
fn last_line(serial: &str) -> String {
    verdict::tail_lines(serial, 1)
        .first()
        .map(|l| format!("; the console's last line: {l:?}"))
        .unwrap_or_default()
}

fn stopped_name(s: Stopped) -> &'static str {
    match s {
        Stopped::Running => "running",
        Stopped::PoweredOff => "powered off by the guest",
        Stopped::Reset => "reset by the guest",
        Stopped::Other => "stopped",
    }
}

/// The screen as a PNG at `opts.screenshot` (written under a temporary name, then renamed).
fn take_screenshot(
    q: &mut qmp::Qmp,
    spec: &qemu::VmSpec,
    opts: &BootOptions,
) -> Result<Option<(PathBuf, (u32, u32))>> {
    let Some(target) = &opts.screenshot else {
        return Ok(None);
    };
    let png = if q.at_least(7, 1) {
        let f = spec.dir.join("screen.png");
        q.execute("screendump", json!({ "filename": f, "format": "png" }))?;
        std::fs::read(&f).map_err(|e| Error::io("reading qemu's screendump", e).with_path(&f))?
    } else {
        let f = spec.dir.join("screen.ppm");
        q.execute("screendump", json!({ "filename": f }))?;
        let ppm = std::fs::read(&f)
            .map_err(|e| Error::io("reading qemu's screendump", e).with_path(&f))?;
        png::ppm_to_png(&ppm)?
    };
    let size = png::png_size(&png)?;
    crate::export::write_file_atomic(target, &png, false)?;
    Ok(Some((target.clone(), size)))
}
