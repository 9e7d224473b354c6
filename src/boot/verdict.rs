//! Reading what a booting VM said: the firmware's messages (SeaBIOS on its debug port, OVMF on
//! the serial console), the boot loader's errors, the kernel's banner and panics, a login prompt,
//! and the user's `--expect` pattern. Pure functions over the captured text, so every rule is
//! tested without starting a VM.

/// What the firmware said about the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareVerdict {
    /// It started the disk's boot code or boot loader ("Booting from Hard Disk", OVMF's
    /// "BdsDxe: starting Boot…").
    BootingFromDisk,
    /// It found nothing to start ("No bootable device", "not a bootable disk", OVMF's "No
    /// bootable option or device was found", or it fell back to its own shell).
    NoBootableDevice,
    /// Nothing recognisable yet.
    Unknown,
}

/// Phrases of SeaBIOS and OVMF, and what they mean.
const FIRMWARE_NO_BOOT: &[&str] = &[
    "No bootable device",
    "not a bootable disk",
    "No bootable option or device was found",
    "UEFI Interactive Shell",
    "Shell> ",
];
const FIRMWARE_BOOTING: &[&str] = &["Booting from Hard Disk", "BdsDxe: starting Boot"];

/// Boot loaders' own failures (syslinux, systemd-boot, GRUB, Windows Boot Manager's text).
const LOADER_ERRORS: &[&str] = &[
    "Could not find kernel image",
    "Invalid or corrupt kernel image",
    "Boot failed",
    "Failed to load image",
    "Failed to start image",
    "Error loading",
    "Error preparing initrd",
    "grub rescue>",
    "error: unknown filesystem",
    "error: file",
    "Minimal BASH-like line editing",
    "Windows failed to start",
    "BOOTMGR is missing",
    "Missing operating system",
    "Operating system not found",
];

/// The firmware's verdict from its debug port output and the serial console.
pub fn firmware_verdict(debug: &str, serial: &str) -> FirmwareVerdict {
    let has = |list: &[&str]| list.iter().any(|p| debug.contains(p) || serial.contains(p));
    if has(FIRMWARE_BOOTING) {
        // SeaBIOS tries each device in turn: a later "No bootable device" overrides.
        let last_boot = FIRMWARE_BOOTING
            .iter()
            .filter_map(|p| debug.rfind(p).or_else(|| serial.rfind(p)))
            .max();
        let last_fail = ["No bootable device"]
            .iter()
            .filter_map(|p| debug.rfind(p))
            .max();
        if last_fail > last_boot {
            return FirmwareVerdict::NoBootableDevice;
        }
        return FirmwareVerdict::BootingFromDisk;
    }
    if has(FIRMWARE_NO_BOOT) {
        return FirmwareVerdict::NoBootableDevice;
    }
    FirmwareVerdict::Unknown
}

/// The firmware's own line saying so, for the report.
pub fn firmware_line(debug: &str, serial: &str) -> Option<String> {
    // The last such line of the debug port, else of the console.
    [debug, serial].iter().find_map(|text| {
        text.lines()
            .rev()
            .find(|l| {
                FIRMWARE_NO_BOOT
                    .iter()
                    .chain(FIRMWARE_BOOTING)
                    .any(|p| l.contains(p))
            })
            .map(clean)
    })
}

/// The first boot-loader error line on the console.
pub fn loader_error(serial: &str) -> Option<String> {
    serial
        .lines()
        .find(|l| LOADER_ERRORS.iter().any(|p| l.contains(p)))
        .map(clean)
}

/// The kernel's "Linux version …" banner.
pub fn kernel_banner(serial: &str) -> Option<String> {
    serial
        .lines()
        .find(|l| l.contains("Linux version "))
        .map(|l| {
            let l = clean(l);
            match l.find("Linux version ") {
                Some(i) => l[i..].to_string(),
                None => l,
            }
        })
}

/// A kernel panic line ("Kernel panic - not syncing: …").
pub fn kernel_panic(serial: &str) -> Option<String> {
    serial
        .lines()
        .find(|l| l.contains("Kernel panic"))
        .map(|l| {
            clean(l)
                .trim_start_matches(|c: char| {
                    c == '[' || c == ' ' || c == '.' || c == ']' || c.is_ascii_digit()
                })
                .to_string()
        })
}

/// A getty's login prompt ("host login:").
pub fn login_prompt(serial: &str) -> Option<String> {
    serial
        .lines()
        .map(clean)
        .find(|l| l.trim_end().ends_with("login:"))
}

/// A line without terminal escapes and control characters.
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; other escapes: ESC and one more character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out.trim_end().to_string()
}

/// The last `n` lines of `text`, cleaned, empty ones dropped.
pub fn tail_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .map(clean)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seabios_verdicts() {
        let ok =
            "Searching bootorder for: HALT\nBooting from Hard Disk...\nBooting from 0000:7c00\n";
        assert_eq!(firmware_verdict(ok, ""), FirmwareVerdict::BootingFromDisk);
        let bad =
            "Booting from Hard Disk...\nBoot failed: not a bootable disk\n\nNo bootable device.\n";
        assert_eq!(firmware_verdict(bad, ""), FirmwareVerdict::NoBootableDevice);
        assert_eq!(
            firmware_line(bad, "").as_deref(),
            Some("No bootable device.")
        );
        assert_eq!(firmware_verdict("", ""), FirmwareVerdict::Unknown);
    }

    #[test]
    fn ovmf_verdicts() {
        let ok = "\u{1b}[2J\u{1b}[01;01HBdsDxe: loading Boot0002 \"UEFI QEMU HARDDISK\"\r\nBdsDxe: starting Boot0002 \"UEFI QEMU HARDDISK QM00001 \"\r\n";
        assert_eq!(firmware_verdict("", ok), FirmwareVerdict::BootingFromDisk);
        let shell = "BdsDxe: failed to load Boot0001\nUEFI Interactive Shell v2.2\nShell> ";
        assert_eq!(
            firmware_verdict("", shell),
            FirmwareVerdict::NoBootableDevice
        );
    }

    #[test]
    fn kernel_lines() {
        let s = "[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)\n\
                 [    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        assert!(
            kernel_banner(s)
                .unwrap()
                .starts_with("Linux version 6.1.0-57-amd64")
        );
        assert_eq!(
            kernel_panic(s).unwrap(),
            "Kernel panic - not syncing: VFS: Unable to mount root fs"
        );
        assert_eq!(
            login_prompt("Debian GNU/Linux 12 host ttyS0\n\nhost login: ").unwrap(),
            "host login:"
        );
        assert!(login_prompt("no prompt here\n").is_none());
    }

    #[test]
    fn escapes_are_dropped() {
        assert_eq!(clean("\u{1b}[2J\u{1b}[01;01Hhello\r"), "hello");
        assert_eq!(tail_lines("a\n\nb\nc\n", 2), ["b", "c"]);
    }

    #[test]
    fn loader_errors_are_found() {
        assert!(
            loader_error("Loading /vmlinuz... ok\nInvalid or corrupt kernel image.\nboot: ")
                .is_some()
        );
        assert!(loader_error("all fine\n").is_none());
    }
}
