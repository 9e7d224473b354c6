//! Small disks with a real boot path, for the boot check's tests and the demo, built without
//! root, loop devices or mounts from Debian's packages:
//!
//! ```text
//!   BIOS  MBR: syslinux's mbr.bin, one active FAT partition (type 0x0E) at 1 MiB
//!         FAT (mtools' mformat, hidden sectors 2048): ldlinux.sys/.c32 (syslinux --install
//!         --offset), syslinux.cfg, vmlinuz (linux-image-amd64), initrd.img
//!   UEFI  GPT (protective MBR, primary and backup headers): one EFI system partition at 1 MiB
//!         FAT: EFI/BOOT/BOOTX64.EFI = systemd-boot (systemd-boot-efi), loader/loader.conf,
//!         loader/entries/sample.conf (linux, initrd, options), vmlinuz, initrd.img
//!   both  initrd.img: a newc cpio written here: /dev/console, /bin/busybox (busybox-static),
//!         /init, a busybox shell script that prints MARKER on the console (ttyS0) and powers off
//! ```
//!
//! The kernel boots with `console=ttyS0`, so its banner and the marker reach the serial log the
//! boot check reads. [`SampleTools::discover`] finds the pieces in a folder laid out as the
//! packages' own trees (what `scripts/install-test-deps.sh` extracts into
//! `.test-tools/boot/`) and then in the system's usual places.

use crate::error::{Error, Result};
use crate::image::partition::{self, MbrEntry, NewGptPartition};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the sample's /init prints on the serial console once the kernel has started it.
pub const MARKER: &str = "EC2AZURE-SAMPLE-BOOTED";

/// The disk's size: room for a Debian kernel (about 8 MiB), the initramfs (2 MiB) and FAT's
/// overhead, small enough to build in a second.
pub const SAMPLE_SIZE: u64 = 48 << 20;
/// The partition starts at 1 MiB, as every partitioning tool aligns it.
const PART_START_LBA: u64 = 2048;

/// Which firmware the sample is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleBoot {
    /// MBR, syslinux (Azure Generation 1).
    Bios,
    /// GPT, EFI system partition, systemd-boot (Azure Generation 2).
    Uefi,
}

impl std::str::FromStr for SampleBoot {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bios" => Ok(SampleBoot::Bios),
            "uefi" => Ok(SampleBoot::Uefi),
            other => Err(Error::argument(format!(
                "unknown boot type {other:?}: expected bios or uefi"
            ))),
        }
    }
}

/// Where the pieces come from.
#[derive(Debug, Clone)]
pub struct SampleTools {
    /// A Linux kernel with an EFI stub (Debian's /boot/vmlinuz-*-amd64).
    pub kernel: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
    /// syslinux's MBR boot code (mbr.bin, 440 bytes); BIOS only.
    pub mbr_bin: Option<PathBuf>,
    /// The `syslinux` installer (the mtools flavour); BIOS only.
    pub syslinux: Option<PathBuf>,
    /// systemd-boot's EFI binary (systemd-bootx64.efi); UEFI only.
    pub systemd_boot: Option<PathBuf>,
    /// mtools' `mformat`, `mmd` and `mcopy` (from PATH).
    pub mtools: PathBuf,
}

fn first_file(cands: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    cands.into_iter().find(|p| p.is_file())
}

/// The newest `vmlinuz-*` in `dir`.
fn newest_kernel(dir: &Path) -> Option<PathBuf> {
    let mut ks: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort();
    ks.pop()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl SampleTools {
    /// Finds every piece, first under each of `roots` (laid out as the packages install, e.g.
    /// `ROOT/boot/vmlinuz-*`, `ROOT/bin/busybox`), then in the system.
    ///
    /// # Errors
    /// A piece `boot` needs is found nowhere; the message names the Debian package.
    pub fn discover(roots: &[PathBuf], boot: SampleBoot) -> Result<SampleTools> {
        let mut rs: Vec<PathBuf> = roots.to_vec();
        rs.push(PathBuf::from("/"));
        let missing = |what: &str, pkg: &str| {
            Error::not_found(format!(
                "the bootable sample needs {what} (Debian package {pkg}; scripts/install-test-deps.sh \
                 extracts it into .test-tools/boot), looked in {}",
                rs.iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        let kernel = rs
            .iter()
            .find_map(|r| newest_kernel(&r.join("boot")))
            .ok_or_else(|| missing("a Linux kernel (boot/vmlinuz-*)", "linux-image-amd64"))?;
        let busybox = first_file(
            rs.iter()
                .flat_map(|r| [r.join("bin/busybox"), r.join("usr/bin/busybox")]),
        )
        .filter(|p| is_static_elf(p))
        .ok_or_else(|| missing("a static busybox (bin/busybox)", "busybox-static"))?;
        let mtools = on_path("mformat")
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| missing("mformat, mmd and mcopy on PATH", "mtools"))?;
        let (mut mbr_bin, mut syslinux, mut systemd_boot) = (None, None, None);
        match boot {
            SampleBoot::Bios => {
                mbr_bin = Some(
                    first_file(rs.iter().flat_map(|r| {
                        [
                            r.join("usr/lib/syslinux/mbr/mbr.bin"),
                            r.join("usr/share/syslinux/mbr.bin"),
                        ]
                    }))
                    .ok_or_else(|| missing("syslinux's mbr.bin", "syslinux-common"))?,
                );
                syslinux = Some(
                    first_file(rs.iter().map(|r| r.join("usr/bin/syslinux")))
                        .or_else(|| on_path("syslinux"))
                        .ok_or_else(|| missing("the syslinux installer", "syslinux"))?,
                );
            }
            SampleBoot::Uefi => {
                systemd_boot = Some(
                    first_file(
                        rs.iter()
                            .map(|r| r.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi")),
                    )
                    .ok_or_else(|| missing("systemd-bootx64.efi", "systemd-boot-efi"))?,
                );
            }
        }
        Ok(SampleTools {
            kernel,
            busybox,
            mbr_bin,
            syslinux,
            systemd_boot,
            mtools,
        })
    }
}

/// `true` for an ELF file without a program interpreter (statically linked).
fn is_static_elf(p: &Path) -> bool {
    let Ok(b) = std::fs::read(p) else {
        return false;
    };
    if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&2) {
        return false;
    }
    let rd = |at: usize, n: usize| -> Option<u64> {
        let s = b.get(at..at + n)?;
        let mut x = [0u8; 8];
        x[..n].copy_from_slice(s);
        Some(u64::from_le_bytes(x))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd(32, 8), rd(54, 2), rd(56, 2)) else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        usize::try_from(at).ok().and_then(|a| rd(a, 4)) != Some(3) // PT_INTERP
    })
}

/// One member of a newc cpio archive.
fn cpio_member(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let n = name.len() + 1;
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        n as u32,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().div_ceil(4) * 4, 0);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

/// The initramfs: a newc cpio with /dev/console (so /init has a console without devtmpfs),
/// busybox and an /init that prints [`MARKER`] and powers off.
pub fn initramfs(busybox: &[u8]) -> Vec<u8> {
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox echo\n\
         /bin/busybox echo \"{MARKER}\"\n\
         /bin/busybox sync\n\
         /bin/busybox poweroff -f\n"
    );
    let mut o = Vec::with_capacity(busybox.len() + 4096);
    let dir = 0o040755;
    cpio_member(&mut o, 1, "dev", dir, (0, 0), &[]);
    cpio_member(&mut o, 2, "dev/console", 0o020600, (5, 1), &[]);
    cpio_member(&mut o, 3, "bin", dir, (0, 0), &[]);
    cpio_member(&mut o, 4, "bin/busybox", 0o100755, (0, 0), busybox);
    cpio_member(&mut o, 5, "bin/sh", 0o120777, (0, 0), b"busybox");
    cpio_member(&mut o, 6, "proc", dir, (0, 0), &[]);
    cpio_member(&mut o, 7, "init", 0o100755, (0, 0), init.as_bytes());
    cpio_member(&mut o, 8, "TRAILER!!!", 0, (0, 0), &[]);
    o
}

fn run(tool: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running {}", tool.display()), e).with_path(tool))?;
    if !out.status.success() {
        return Err(Error::unsupported(format!(
            "{} {} failed ({}): {}",
            tool.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// What was built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootableSample {
    /// The firmware it boots with.
    pub boot: SampleBoot,
    /// The disk's size.
    pub size: u64,
    /// The kernel used.
    pub kernel: PathBuf,
    /// The marker /init prints.
    pub marker: &'static str,
}

/// Builds the bootable sample at `output` (under a temporary name beside it, renamed when
/// complete).
///
/// # Errors
/// A tool fails, or the output cannot be written.
pub fn make_bootable(
    output: &Path,
    boot: SampleBoot,
    tools: &SampleTools,
) -> Result<BootableSample> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".ec2azure-sample.")
        .suffix(".partial")
        // Like any new file: 0666 less the umask (tempfile's default is 0600).
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating the sample's temporary file", e).with_path(dir))?;
    let f = tmp.as_file();
    f.set_len(SAMPLE_SIZE)
        .map_err(|e| Error::io("sizing the sample", e).with_path(tmp.path()))?;
    let sectors = SAMPLE_SIZE / partition::SECTOR;
    let write = |off: u64, b: &[u8]| {
        f.write_all_at(b, off).map_err(|e| {
            Error::io("writing the sample", e)
                .with_offset(off)
                .with_path(tmp.path())
        })
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io("reading", e).with_path(p));
    let part_sectors = match boot {
        SampleBoot::Bios => sectors - PART_START_LBA,
        SampleBoot::Uefi => sectors - 34 - PART_START_LBA + 1,
    };
    match boot {
        SampleBoot::Bios => {
            let code = read(tools.mbr_bin.as_deref().unwrap_or(Path::new("mbr.bin")))?;
            let code = code.get(..440).unwrap_or(&code);
            let mbr = partition::build_mbr(
                code,
                &[MbrEntry {
                    slot: 1,
                    bootable: true,
                    kind: 0x0E, // FAT16 with LBA addressing
                    first_lba: PART_START_LBA as u32,
                    sectors: part_sectors as u32,
                }],
            )?;
            write(0, &mbr)?;
        }
        SampleBoot::Uefi => {
            // Fixed GUIDs: the same sample every time.
            let g = |n: u8| {
                partition::Guid([
                    0xEC, 0x2A, 0x2E, 0x00, 0xB0, 0x07, 0x40, n, 0x80, 0, 0, 0, 0, 0, 0, n,
                ])
            };
            let pieces = partition::build_gpt(
                sectors,
                g(1),
                &[NewGptPartition {
                    type_guid: partition::ESP_TYPE,
                    unique_guid: g(2),
                    first_lba: PART_START_LBA,
                    last_lba: PART_START_LBA + part_sectors - 1,
                    name: "EFI system partition".into(),
                }],
                &[],
            )?;
            for (off, b) in pieces {
                write(off, &b)?;
            }
        }
    }
    let img = format!(
        "{}@@{}",
        tmp.path().display(),
        PART_START_LBA * partition::SECTOR
    );
    let mt = |name: &str| tools.mtools.join(name);
    let total = part_sectors.to_string();
    run(
        &mt("mformat"),
        &[
            "-i",
            &img,
            "-T",
            &total,
            "-h",
            "64",
            "-s",
            "32",
            "-H",
            &PART_START_LBA.to_string(),
            "-v",
            "EC2AZURE",
            "::",
        ],
    )?;
    let work = tempfile::tempdir().map_err(|e| Error::io("creating a temporary folder", e))?;
    let put = |name: &str, data: &[u8]| -> Result<()> {
        let p = work.path().join(name.replace('/', "_"));
        let mut file =
            std::fs::File::create(&p).map_err(|e| Error::io("writing", e).with_path(&p))?;
        file.write_all(data)
            .map_err(|e| Error::io("writing", e).with_path(&p))?;
        let dst = format!("::/{name}");
        run(
            &mt("mcopy"),
            &["-o", "-i", &img, &p.display().to_string(), &dst],
        )
    };
    let initrd = initramfs(&read(&tools.busybox)?);
    match boot {
        SampleBoot::Bios => {
            let syslinux = tools.syslinux.as_deref().unwrap_or(Path::new("syslinux"));
            let offset = (PART_START_LBA * partition::SECTOR).to_string();
            run(
                syslinux,
                &[
                    "--install",
                    "--offset",
                    &offset,
                    &tmp.path().display().to_string(),
                ],
            )?;
            put(
                "syslinux.cfg",
                b"SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND console=ttyS0 panic=0\n",
            )?;
        }
        SampleBoot::Uefi => {
            run(
                &mt("mmd"),
                &[
                    "-i",
                    &img,
                    "::/EFI",
                    "::/EFI/BOOT",
                    "::/loader",
                    "::/loader/entries",
                ],
            )?;
            let sdboot = read(
                tools
                    .systemd_boot
                    .as_deref()
                    .unwrap_or(Path::new("systemd-bootx64.efi")),
            )?;
            put("EFI/BOOT/BOOTX64.EFI", &sdboot)?;
            put("loader/loader.conf", b"timeout 0\ndefault sample.conf\n")?;
            put(
                "loader/entries/sample.conf",
                b"title ec2azure bootable sample\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0 panic=0\n",
            )?;
        }
    }
    put("vmlinuz", &read(&tools.kernel)?)?;
    put("initrd.img", &initrd)?;
    tmp.persist(output)
        .map_err(|e| Error::io("renaming the sample into place", e.error).with_path(output))?;
    Ok(BootableSample {
        boot,
        size: SAMPLE_SIZE,
        kernel: tools.kernel.clone(),
        marker: MARKER,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_is_a_newc_archive() {
        let a = initramfs(b"BUSYBOX");
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        for name in ["dev/console", "bin/busybox", "init", "TRAILER!!!"] {
            assert!(text.contains(name), "{name}");
        }
        assert!(text.contains(MARKER));
        // /dev/console is char device 5:1.
        let at = text.find("dev/console").unwrap() - 110;
        assert_eq!(&a[at + 14..at + 22], b"00002180");
        assert_eq!(&a[at + 78..at + 94], b"0000000500000001");
    }

    #[test]
    fn static_elves_are_told_apart() {
        assert!(!is_static_elf(Path::new("/nonexistent")));
        if let Ok(sh) = std::fs::canonicalize("/bin/sh") {
            assert!(!is_static_elf(&sh), "a dynamic /bin/sh");
        }
    }
}
