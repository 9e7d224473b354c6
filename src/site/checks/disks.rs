//! The disks: how many, how large, their sectors, and the boot layout read from the OS disk
//! itself against the firmware the instance reports — which decides the Azure VM's
//! generation (UEFI from a GPT disk with an EFI system partition → Generation 2, migration
//! only, Windows Server 2012 or later; a Linux boot disk on GPT is refused).
//!
//! Limits come from the support matrix ([`DiskLimits`]); error ids 95310 ("The boot disk is
//! not available") and 95311 ("Multiple Boot disks present on the source machine") from
//! `vmware-azure-troubleshoot-push-install.md` (2019). The matrix has no ids for sizes and
//! sectors: its prerequisites check fails with the requirement.

use super::{
    BootMode, CheckResult, DiskBoot, DiskFacts, Generation, MachineFacts, and_list,
    azure_vm_generation, gib, mib, thousands,
};
use crate::site::support::{DiskLimits, OsType, SupportLookup, SupportMatrix};

/// One OS disk, at most 64 data disks.
pub const DISK_COUNT: &str = "disk-count";
/// The OS disk within the generation's limit.
pub const OS_DISK_SIZE: &str = "os-disk-size";
/// Every data disk within the managed-disk limit.
pub const DATA_DISK_SIZE: &str = "data-disk-size";
/// Every disk larger than 1,024 MiB.
pub const DISK_MIN_SIZE: &str = "disk-minimum-size";
/// 512-byte sectors, logical and physical.
pub const SECTOR_SIZE: &str = "disk-sector-size";
/// The OS disk has a bootable layout.
pub const BOOT_DISK: &str = "boot-disk";
/// The OS disk's layout agrees with the instance's boot mode.
pub const BOOT_MODE: &str = "boot-mode";
/// A Linux boot disk is not GPT.
pub const LINUX_GPT: &str = "linux-boot-disk-gpt";
/// A UEFI machine becomes Generation 2: migration only, Windows Server 2012 or later.
pub const UEFI: &str = "uefi-generation-2";

/// Error 95310, "The boot disk is not available" (push-install troubleshooting, 2019).
const BOOT_DISK_NOT_AVAILABLE: u32 = 95310;
/// Error 95311, "Multiple Boot disks present on the source machine" (same page).
const MULTIPLE_BOOT_DISKS: u32 = 95311;

const NO_BOOT_DISK_CAUSE: &str = "A virtual machine without a boot disk cannot be protected: \
    it would fail to boot after failover.";
const NO_BOOT_DISK_ACTION: &str =
    "Ensure that the virtual machine contains a boot disk and retry the operation.";

/// The failure every check that reads the OS disk gives when there is none.
fn no_os_disk(name: &str) -> CheckResult {
    CheckResult::failed(
        name,
        Some(BOOT_DISK_NOT_AVAILABLE),
        "the machine has no OS disk; Site Recovery protects a machine with exactly one",
        NO_BOOT_DISK_CAUSE,
        NO_BOOT_DISK_ACTION,
    )
}

fn disk_names<'a>(disks: impl Iterator<Item = &'a DiskFacts>) -> Vec<String> {
    disks.map(|d| format!("{:?}", d.name)).collect()
}

pub(super) fn disk_count(f: &MachineFacts, l: &DiskLimits) -> CheckResult {
    let os: Vec<&DiskFacts> = f.disks.iter().filter(|d| d.is_os_disk).collect();
    let data = f.disks.len() - os.len();
    let mut wrong = Vec::new();
    let mut id = None;
    match os.len() {
        0 => {
            wrong.push("no OS disk".to_string());
            id = Some(BOOT_DISK_NOT_AVAILABLE);
        }
        1 => {}
        n => {
            wrong.push(format!(
                "{n} OS disks ({})",
                and_list(&disk_names(os.iter().copied()))
            ));
            id = Some(MULTIPLE_BOOT_DISKS);
        }
    }
    if data > l.max_data_disks {
        wrong.push(format!("{data} data disks"));
    }
    if wrong.is_empty() {
        return CheckResult::passed(
            DISK_COUNT,
            format!(
                "one OS disk and {data} data disk{} (at most {})",
                if data == 1 { "" } else { "s" },
                l.max_data_disks
            ),
        );
    }
    CheckResult::failed(
        DISK_COUNT,
        id,
        format!(
            "the machine has {}; Site Recovery protects one OS disk and at most {} data disks",
            and_list(&wrong),
            l.max_data_disks
        ),
        "Operating system disk count: 1; data disk count: 64 or less (support matrix). Multiple \
         boot disks on a machine are not supported; a machine without a boot disk can't be \
         replicated.",
        "Detach the extra disks (or mark the one OS disk) and retry; exclude data disks that \
         need not be replicated.",
    )
}

pub(super) fn os_disk_size(f: &MachineFacts, l: &DiskLimits) -> CheckResult {
    let Some(d) = f.os_disk() else {
        return no_os_disk(OS_DISK_SIZE);
    };
    let g = azure_vm_generation(f);
    let max_gib = match g {
        Generation::V1 => l.os_disk_max_gib_gen1,
        Generation::V2 => l.os_disk_max_gib_gen2,
    };
    let max = max_gib.saturating_mul(1 << 30);
    if d.size_bytes <= max {
        return CheckResult::passed(
            OS_DISK_SIZE,
            format!(
                "the OS disk {:?} is {} (at most {} GiB for {} VMs)",
                d.name,
                gib(d.size_bytes),
                thousands(max_gib),
                g.describe()
            ),
        );
    }
    CheckResult::failed(
        OS_DISK_SIZE,
        None,
        format!(
            "the OS disk {:?} is {}; Site Recovery protects OS disks up to {} GiB for {} VMs",
            d.name,
            gib(d.size_bytes),
            thousands(max_gib),
            g.describe()
        ),
        "Operating system disk size: up to 2,048 GB (Generation 1) or 4 TB (Generation 2); \
         check fails if unsupported.",
        "Shrink the OS volume and disk below the limit (move data to a data disk) and retry.",
    )
}

pub(super) fn data_disk_size(f: &MachineFacts, l: &DiskLimits) -> CheckResult {
    let max = l.data_disk_max_gib.saturating_mul(1 << 30);
    let big: Vec<String> = f
        .disks
        .iter()
        .filter(|d| !d.is_os_disk && d.size_bytes > max)
        .map(|d| format!("the data disk {:?} is {}", d.name, gib(d.size_bytes)))
        .collect();
    if big.is_empty() {
        let n = f.disks.iter().filter(|d| !d.is_os_disk).count();
        return CheckResult::passed(
            DATA_DISK_SIZE,
            format!(
                "{n} data disk{}, each at most {} GiB",
                if n == 1 { "" } else { "s" },
                thousands(l.data_disk_max_gib)
            ),
        );
    }
    CheckResult::failed(
        DATA_DISK_SIZE,
        None,
        format!(
            "{}; Site Recovery protects data disks up to {} GiB (replicating to managed disks)",
            and_list(&big),
            thousands(l.data_disk_max_gib)
        ),
        "Data disk size: up to 8,192 GB when replicating to managed disks; check fails if \
         unsupported.",
        "Split the data across disks within the limit, or exclude the disk from replication.",
    )
}

pub(super) fn disk_min_size(f: &MachineFacts, l: &DiskLimits) -> CheckResult {
    let min = l.disk_min_exclusive_mib.saturating_mul(1 << 20);
    let small: Vec<String> = f
        .disks
        .iter()
        .filter(|d| d.size_bytes <= min)
        .map(|d| format!("the disk {:?} is {}", d.name, mib(d.size_bytes)))
        .collect();
    if small.is_empty() {
        return CheckResult::passed(
            DISK_MIN_SIZE,
            format!(
                "every disk is larger than {} MiB",
                thousands(l.disk_min_exclusive_mib)
            ),
        );
    }
    CheckResult::failed(
        DISK_MIN_SIZE,
        None,
        format!(
            "{}; Site Recovery protects disks larger than {} MiB",
            and_list(&small),
            thousands(l.disk_min_exclusive_mib)
        ),
        "Guest/server disk: the disk must be larger than 1024 MB (support matrix).",
        "Grow the disk above the limit, or exclude it from replication.",
    )
}

pub(super) fn sector_size(f: &MachineFacts) -> CheckResult {
    let odd: Vec<String> = f
        .disks
        .iter()
        .filter(|d| d.logical_sector_size != 512 || d.physical_sector_size != 512)
        .map(|d| {
            format!(
                "the disk {:?} has {}-byte logical and {}-byte physical sectors",
                d.name,
                thousands(u64::from(d.logical_sector_size)),
                thousands(u64::from(d.physical_sector_size))
            )
        })
        .collect();
    if odd.is_empty() {
        return CheckResult::passed(
            SECTOR_SIZE,
            "every disk has 512-byte logical and physical sectors",
        );
    }
    CheckResult::failed(
        SECTOR_SIZE,
        None,
        format!(
            "{}; Site Recovery supports disks with 512-byte logical and physical sectors",
            and_list(&odd)
        ),
        "Guest/server disks with 4K logical and 4K physical, or 4K logical and 512-byte \
         physical, sector sizes are not supported; UEFI machines need 512-byte physical sectors.",
        "Move the data to a disk with 512-byte sectors, or exclude the disk from replication.",
    )
}

pub(super) fn boot_disk(f: &MachineFacts) -> CheckResult {
    let Some(d) = f.os_disk() else {
        return no_os_disk(BOOT_DISK);
    };
    match d.boot {
        DiskBoot::Mbr {
            boot_signature: true,
        }
        | DiskBoot::GptWithEsp => CheckResult::passed(
            BOOT_DISK,
            format!(
                "the OS disk {:?} has a bootable layout: {}",
                d.name,
                d.boot.describe()
            ),
        ),
        layout => CheckResult::failed(
            BOOT_DISK,
            Some(BOOT_DISK_NOT_AVAILABLE),
            format!(
                "the OS disk {:?} has {}; a boot disk has an MBR with the boot signature \
                 (Generation 1) or a GPT with an EFI system partition (Generation 2)",
                d.name,
                layout.describe()
            ),
            format!(
                "The disk marked as the OS disk is not bootable. {NO_BOOT_DISK_CAUSE} The wrong \
                 volume may be marked as the OS disk, or its first sectors are damaged."
            ),
            NO_BOOT_DISK_ACTION,
        ),
    }
}

pub(super) fn boot_mode(f: &MachineFacts) -> CheckResult {
    let Some(d) = f.os_disk() else {
        return no_os_disk(BOOT_MODE);
    };
    let layout = d.boot.describe();
    let mismatch = |expected: &str| {
        CheckResult::failed(
            BOOT_MODE,
            None,
            format!(
                "the instance boots by {} but its OS disk {:?} has {layout}; {expected}",
                f.boot_mode.as_str(),
                d.name
            ),
            "The OS disk's partition style does not match the instance's firmware: the disk \
             read may not be the one the instance boots from, or the instance's boot mode was \
             changed.",
            "Check which volume is the boot volume and the instance's boot mode (EC2 \
             CurrentInstanceBootMode), and retry.",
        )
    };
    match (f.boot_mode, d.boot) {
        (BootMode::Uefi, DiskBoot::Mbr { .. }) => {
            mismatch("a UEFI machine boots from a GPT disk with an EFI system partition")
        }
        (BootMode::LegacyBios, DiskBoot::GptWithEsp) => {
            mismatch("a legacy-BIOS machine boots from an MBR disk")
        }
        (BootMode::Unknown, _) => CheckResult::passed(
            BOOT_MODE,
            format!(
                "the instance does not report its boot mode; its OS disk {:?} has {layout}, \
                 so it becomes a {} VM",
                d.name,
                azure_vm_generation(f).describe()
            ),
        ),
        (mode, _) => CheckResult::passed(
            BOOT_MODE,
            format!(
                "the instance boots by {}; its OS disk {:?} has {layout}",
                mode.as_str(),
                d.name
            ),
        ),
    }
}

pub(super) fn linux_gpt(f: &MachineFacts, m: &SupportMatrix) -> CheckResult {
    if f.os_type != OsType::Linux {
        return CheckResult::passed(LINUX_GPT, "not a Linux machine");
    }
    let Some(d) = f.os_disk() else {
        return no_os_disk(LINUX_GPT);
    };
    if !d.boot.is_gpt() {
        return CheckResult::passed(
            LINUX_GPT,
            format!("the Linux boot disk {:?} has {}", d.name, d.boot.describe()),
        );
    }
    // A scenario's matrix may list a distribution as supported on UEFI (the 2019 matrix
    // names SLES 12 SP4 and RHEL 8.0 with Mobility 9.30): then it may boot from GPT + ESP.
    let uefi_listed =
        matches!(m.lookup(f.os_type, &f.os_name), SupportLookup::Supported(e) if e.uefi);
    if uefi_listed && d.boot == DiskBoot::GptWithEsp {
        return CheckResult::passed(
            LINUX_GPT,
            format!(
                "the Linux boot disk {:?} has {}: {:?} is listed as supported on UEFI",
                d.name,
                d.boot.describe(),
                f.os_name
            ),
        );
    }
    CheckResult::failed(
        LINUX_GPT,
        None,
        format!(
            "the Linux boot disk {:?} has {}; Boot disks mustn't be in GPT partition format",
            d.name,
            d.boot.describe()
        ),
        "This is an Azure architecture limitation. GPT disks are supported as data disks \
         (support matrix, Linux file systems/guest storage).",
        "Convert the boot disk to MBR (or move /boot to an MBR disk) and retry.",
    )
}

pub(super) fn uefi(f: &MachineFacts, m: &SupportMatrix) -> CheckResult {
    if azure_vm_generation(f) == Generation::V1 {
        return CheckResult::passed(
            UEFI,
            "the machine boots by BIOS: it becomes a Generation 1 VM",
        );
    }
    let uefi_list: Vec<String> = m
        .operating_systems
        .iter()
        .filter(|e| e.uefi)
        .map(|e| e.label())
        .collect();
    match m.lookup(f.os_type, &f.os_name) {
        SupportLookup::Supported(e) if e.uefi => CheckResult::warning(
            UEFI,
            format!(
                "the machine boots by UEFI: it becomes a Generation 2 VM; Site Recovery \
                 supports UEFI machines ({}) for migration only",
                e.label()
            ),
            "UEFI/EFI boot is supported for migration to Azure only: there is no failback.",
            "Use this machine's replication to migrate, not for disaster recovery; Secure UEFI \
             boot is not supported.",
        ),
        _ => CheckResult::failed(
            UEFI,
            None,
            format!(
                "the machine boots by UEFI and runs {:?}; Site Recovery supports UEFI machines \
                 running {}",
                f.os_name,
                if uefi_list.is_empty() {
                    "no operating system on this support list".to_string()
                } else {
                    and_list(&uefi_list)
                }
            ),
            "Guest/server EFI/UEFI boot: supported for Windows Server 2012 or later (support \
             matrix).",
            "Upgrade the operating system to Windows Server 2012 or later, or convert the \
             machine to BIOS boot from an MBR disk, and retry.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{disk, rhel, windows};
    use super::super::{BootMode, Outcome};
    use super::*;

    const GIB: u64 = 1 << 30;

    fn l() -> DiskLimits {
        DiskLimits::default()
    }

    #[test]
    fn one_os_disk_and_at_most_64_data_disks() {
        let mut f = windows();
        f.disks
            .extend((0..64).map(|i| disk(&format!("xvd{i}"), 10 * GIB, false)));
        assert_eq!(disk_count(&f, &l()).outcome, Outcome::Passed);
        f.disks.push(disk("xvdz", 10 * GIB, false));
        let r = disk_count(&f, &l());
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, None));
        assert_eq!(
            r.message,
            "the machine has 65 data disks; Site Recovery protects one OS disk and at most 64 \
             data disks"
        );
        let mut f = windows();
        f.disks.push(disk("/dev/sdb", 30 * GIB, true));
        let r = disk_count(&f, &l());
        assert_eq!(r.error_id, Some(95311));
        assert!(
            r.message
                .starts_with("the machine has 2 OS disks (\"/dev/sda1\" and \"/dev/sdb\");"),
            "{}",
            r.message
        );
        f.disks.clear();
        let r = disk_count(&f, &l());
        assert_eq!(r.error_id, Some(95310));
        assert!(
            r.message.starts_with("the machine has no OS disk;"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_os_disk_limit_depends_on_the_generation() {
        let mut f = windows();
        f.disks[0].size_bytes = 3072 * GIB;
        let r = os_disk_size(&f, &l());
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, None));
        assert_eq!(
            r.message,
            "the OS disk \"/dev/sda1\" is 3,072 GiB; Site Recovery protects OS disks up to 2,048 \
             GiB for Generation 1 VMs"
        );
        f.disks[0].size_bytes = 2048 * GIB;
        assert_eq!(
            os_disk_size(&f, &l()).outcome,
            Outcome::Passed,
            "2,048 GiB is the limit"
        );
        f.disks[0].size_bytes = 2048 * GIB + 512;
        assert!(
            os_disk_size(&f, &l())
                .message
                .contains("2,048.00 GiB (2199023256064 bytes)")
        );
        // A UEFI machine becomes Generation 2: 4 TB.
        f.boot_mode = BootMode::Uefi;
        f.disks[0].boot = DiskBoot::GptWithEsp;
        f.disks[0].size_bytes = 3072 * GIB;
        assert_eq!(os_disk_size(&f, &l()).outcome, Outcome::Passed);
        f.disks[0].size_bytes = 4097 * GIB;
        assert_eq!(
            os_disk_size(&f, &l()).message,
            "the OS disk \"/dev/sda1\" is 4,097 GiB; Site Recovery protects OS disks up to 4,096 \
             GiB for Generation 2 VMs"
        );
    }

    #[test]
    fn data_disks_up_to_8_tib() {
        let mut f = windows();
        f.disks.push(disk("xvdf", 8192 * GIB, false));
        assert_eq!(data_disk_size(&f, &l()).outcome, Outcome::Passed);
        f.disks.push(disk("xvdg", 9216 * GIB, false));
        let r = data_disk_size(&f, &l());
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the data disk \"xvdg\" is 9,216 GiB; Site Recovery protects data disks up to 8,192 \
             GiB (replicating to managed disks)"
        );
    }

    #[test]
    fn every_disk_larger_than_1024_mib() {
        let mut f = windows();
        f.disks.push(disk("xvdb", GIB, false));
        let r = disk_min_size(&f, &l());
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the disk \"xvdb\" is 1,024 MiB; Site Recovery protects disks larger than 1,024 MiB"
        );
        f.disks[1].size_bytes = GIB + (1 << 20);
        assert_eq!(disk_min_size(&f, &l()).outcome, Outcome::Passed);
    }

    #[test]
    fn four_k_sectors_are_refused() {
        for (logical, physical) in [(4096, 4096), (4096, 512), (512, 4096)] {
            let mut f = windows();
            f.disks.push(DiskFacts {
                logical_sector_size: logical,
                physical_sector_size: physical,
                ..disk("xvdb", 10 * GIB, false)
            });
            let r = sector_size(&f);
            assert_eq!(r.outcome, Outcome::Failed);
            assert_eq!(
                r.message,
                format!(
                    "the disk \"xvdb\" has {}-byte logical and {}-byte physical sectors; Site \
                     Recovery supports disks with 512-byte logical and physical sectors",
                    thousands(u64::from(logical)),
                    thousands(u64::from(physical))
                )
            );
        }
    }

    #[test]
    fn a_boot_disk_without_signature_or_esp_is_not_bootable() {
        for layout in [
            DiskBoot::Mbr {
                boot_signature: false,
            },
            DiskBoot::GptWithoutEsp,
            DiskBoot::None,
        ] {
            let mut f = windows();
            f.disks[0].boot = layout;
            let r = boot_disk(&f);
            assert_eq!((r.outcome, r.error_id), (Outcome::Failed, Some(95310)));
            assert_eq!(
                r.message,
                format!(
                    "the OS disk \"/dev/sda1\" has {}; a boot disk has an MBR with the boot \
                     signature (Generation 1) or a GPT with an EFI system partition \
                     (Generation 2)",
                    layout.describe()
                )
            );
        }
    }

    #[test]
    fn the_disk_must_match_the_firmware() {
        let mut f = windows();
        f.boot_mode = BootMode::Uefi;
        let r = boot_mode(&f);
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the instance boots by uefi but its OS disk \"/dev/sda1\" has MBR; a UEFI machine \
             boots from a GPT disk with an EFI system partition"
        );
        f.boot_mode = BootMode::LegacyBios;
        f.disks[0].boot = DiskBoot::GptWithEsp;
        assert!(boot_mode(&f).message.ends_with(
            "has GPT with an EFI system partition; a legacy-BIOS machine boots from an MBR disk"
        ));
        // Not reported (moto): the disk decides.
        f.boot_mode = BootMode::Unknown;
        let r = boot_mode(&f);
        assert_eq!(r.outcome, Outcome::Passed);
        assert!(
            r.message.ends_with("so it becomes a Generation 2 VM"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_linux_boot_disk_on_gpt_is_refused() {
        for layout in [DiskBoot::GptWithEsp, DiskBoot::GptWithoutEsp] {
            let mut f = rhel();
            f.disks[0].boot = layout;
            let r = linux_gpt(&f, &SupportMatrix::default());
            assert_eq!(r.outcome, Outcome::Failed);
            assert_eq!(
                r.message,
                format!(
                    "the Linux boot disk \"/dev/xvda\" has {}; Boot disks mustn't be in GPT \
                     partition format",
                    layout.describe()
                )
            );
        }
        let mut w = windows();
        w.disks[0].boot = DiskBoot::GptWithEsp;
        assert_eq!(
            linux_gpt(&w, &SupportMatrix::default()).outcome,
            Outcome::Passed
        );
    }

    #[test]
    fn uefi_needs_windows_server_2012_or_later_and_is_migration_only() {
        let mut f = windows();
        f.boot_mode = BootMode::Uefi;
        f.disks[0].boot = DiskBoot::GptWithEsp;
        let r = uefi(&f, &SupportMatrix::default());
        assert_eq!(r.outcome, Outcome::Warning);
        assert!(r.message.ends_with("for migration only"), "{}", r.message);
        f.os_name = "Windows Server 2008 R2 SP1 Datacenter".into();
        let r = uefi(&f, &SupportMatrix::default());
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the machine boots by UEFI and runs \"Windows Server 2008 R2 SP1 Datacenter\"; Site \
             Recovery supports UEFI machines running Windows Server 2012 and Windows Server \
             2012 R2"
        );
        let mut l = rhel();
        l.boot_mode = BootMode::Uefi;
        l.disks[0].boot = DiskBoot::GptWithEsp;
        assert_eq!(uefi(&l, &SupportMatrix::default()).outcome, Outcome::Failed);
    }
}
