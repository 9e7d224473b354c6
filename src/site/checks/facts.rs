//! The facts the checks read: what is known of one EC2 machine ([`MachineFacts`]: its OS,
//! firmware, disks as read from the disks themselves, push-install account and network view)
//! and of the site around it ([`SiteFacts`]: the vault's key, the policy association, the
//! target). Plain data, so that the EC2 adapter, a scenario file and the tests all build them
//! the same way; [`azure_vm_generation`] is the one decision made from them here.

use crate::site::support::{OsType, SupportMatrix};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The processor architecture, as EC2's `Architecture` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// 64-bit x86.
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit Arm.
    #[serde(rename = "arm64")]
    Arm64,
    /// 32-bit x86.
    #[serde(rename = "i386")]
    I386,
}

impl Architecture {
    /// EC2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
            Architecture::I386 => "i386",
        }
    }
}

/// The virtualization type, as EC2's `VirtualizationType` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Virtualization {
    /// Hardware virtual machine.
    Hvm,
    /// Paravirtual.
    Paravirtual,
}

impl Virtualization {
    /// EC2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Virtualization::Hvm => "hvm",
            Virtualization::Paravirtual => "paravirtual",
        }
    }
}

/// The firmware the instance reports it booted with (EC2 `CurrentInstanceBootMode`, or
/// `BootMode`); moto reports neither, hence `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    /// BIOS.
    LegacyBios,
    /// UEFI.
    Uefi,
    /// Not reported.
    Unknown,
}

impl BootMode {
    /// EC2's spelling (`unknown` when not reported).
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::LegacyBios => "legacy-bios",
            BootMode::Uefi => "uefi",
            BootMode::Unknown => "unknown",
        }
    }
}

/// The boot layout read from a disk's first sectors (by the partition reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "layout",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum DiskBoot {
    /// A master boot record (a protective MBR in front of a GPT is reported as GPT).
    Mbr {
        /// Whether sector 0 ends with the boot signature 0x55 0xAA.
        boot_signature: bool,
    },
    /// A GUID partition table with an EFI system partition.
    GptWithEsp,
    /// A GUID partition table without an EFI system partition.
    GptWithoutEsp,
    /// No partition table.
    None,
}

impl DiskBoot {
    /// `MBR`, `GPT with an EFI system partition`, …: for messages.
    pub fn describe(self) -> &'static str {
        match self {
            DiskBoot::Mbr {
                boot_signature: true,
            } => "MBR",
            DiskBoot::Mbr {
                boot_signature: false,
            } => "MBR without the boot signature 0x55AA",
            DiskBoot::GptWithEsp => "GPT with an EFI system partition",
            DiskBoot::GptWithoutEsp => "GPT without an EFI system partition",
            DiskBoot::None => "no partition table",
        }
    }

    /// Whether it is a GPT layout.
    pub fn is_gpt(self) -> bool {
        matches!(self, DiskBoot::GptWithEsp | DiskBoot::GptWithoutEsp)
    }
}

/// One disk (EBS volume) of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskFacts {
    /// Its name for messages: the device (`/dev/sda1`) or the volume id.
    pub name: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// The logical sector size in bytes (512 for EBS).
    pub logical_sector_size: u32,
    /// The physical sector size in bytes.
    pub physical_sector_size: u32,
    /// Whether it is the OS (boot) disk.
    pub is_os_disk: bool,
    /// The boot layout read from the disk itself.
    pub boot: DiskBoot,
}

/// The account the process server pushes the Mobility service with (a run-as account of the
/// configuration server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum PushAccount {
    /// A Linux account (the push install connects with SSH/SFTP).
    Linux {
        /// The user name.
        user: String,
        /// Whether it is root (uid 0).
        is_root: bool,
    },
    /// A Windows account (the push install copies over SMB and runs through WMI).
    Windows {
        /// The user name.
        user: String,
        /// The domain of a domain account; `None` for a local account.
        domain: Option<String>,
        /// Whether the account has administrator rights on the machine.
        is_admin: bool,
        /// Whether `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System\
        /// LocalAccountTokenFilterPolicy` is 1 (remote UAC off: needed for a local account).
        local_account_token_filter_policy: bool,
    },
}

/// One security-group ingress rule that applies to the machine (EC2 `IpPermission`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// EC2's `IpProtocol`: `tcp`, `udp`, `icmp`, a protocol number (`6`), or `-1` for all.
    pub protocol: String,
    /// The first port (`FromPort`); `None` with protocol `-1`: every port.
    pub from_port: Option<i32>,
    /// The last port (`ToPort`).
    pub to_port: Option<i32>,
    /// The source ranges (`IpRanges[].CidrIp`, `Ipv6Ranges[].CidrIpv6`). A rule whose source
    /// is a security group is given here as the addresses of that group's members.
    pub sources: Vec<String>,
}

/// What the network lets through between the machine and the process server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFacts {
    /// The ingress rules of every security group on the machine's interfaces.
    pub ingress: Vec<IngressRule>,
    /// The process server's IP address (the push install and replication come from it).
    pub process_server_ip: IpAddr,
    /// Whether the machine reaches the process server on 443 (HTTPS orchestration).
    pub process_server_reachable_443: bool,
    /// Whether the machine reaches the process server on 9443 (replication data).
    pub process_server_reachable_9443: bool,
}

/// What is known of one machine to protect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineFacts {
    /// The machine's name: the VM name by default, and its computer name.
    pub name: String,
    /// Windows or Linux.
    pub os_type: OsType,
    /// The OS name and version as reported: `Windows Server 2012 R2 Datacenter`,
    /// `Red Hat Enterprise Linux 6.7`.
    pub os_name: String,
    /// The processor architecture.
    pub architecture: Architecture,
    /// HVM or paravirtual.
    pub virtualization_type: Virtualization,
    /// The paravirtual drivers installed in the guest: `Citrix PV`, `AWS PV`, `Red Hat PV`.
    pub pv_drivers: Vec<String>,
    /// The firmware the instance reports.
    pub boot_mode: BootMode,
    /// Every disk, the OS disk among them.
    pub disks: Vec<DiskFacts>,
    /// The run-as account for the push install; `None` when none was chosen.
    pub account: Option<PushAccount>,
    /// The network between the machine and the process server.
    pub network: NetworkFacts,
}

impl MachineFacts {
    /// The first disk marked as the OS disk.
    pub fn os_disk(&self) -> Option<&DiskFacts> {
        self.disks.iter().find(|d| d.is_os_disk)
    }
}

/// The target chosen for the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetFacts {
    /// The target storage account's name (the tutorial's `awsmigrated2017`).
    pub storage_account: String,
    /// The Azure VM's name; `None`: the machine's name.
    pub vm_name: Option<String>,
}

/// What is known of the site around the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteFacts {
    /// The simulated now, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// When the vault's registration key expires (issued + 5 days); `None`: no key issued.
    pub registration_key_expires_ms: Option<u64>,
    /// Whether a configuration server is registered with the vault (once it is, the key is
    /// no longer needed).
    pub configuration_server_registered: bool,
    /// Whether the replication policy is associated with the configuration server (a
    /// protection container mapping exists).
    pub policy_associated: bool,
    /// The target.
    pub target: TargetFacts,
    /// The support matrix to check against (the tutorial's by default).
    #[serde(default)]
    pub support: SupportMatrix,
}

/// The Azure VM generation a machine becomes, as Azure spells it (`hyperVGeneration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generation {
    /// Generation 1: BIOS, boots from an MBR disk.
    V1,
    /// Generation 2: UEFI, boots from the EFI system partition of a GPT disk.
    V2,
}

impl Generation {
    /// `Generation 1` or `Generation 2`.
    pub fn describe(self) -> &'static str {
        match self {
            Generation::V1 => "Generation 1",
            Generation::V2 => "Generation 2",
        }
    }
}

/// The generation of the Azure VM the machine becomes: Generation 2 when it boots by UEFI
/// from a GPT disk with an EFI system partition, else Generation 1. The instance's boot mode
/// decides when it is reported; when it is not (moto), the OS disk's layout does — a disk
/// with an EFI system partition is booted by UEFI.
pub fn azure_vm_generation(facts: &MachineFacts) -> Generation {
    match (facts.boot_mode, facts.os_disk().map(|d| d.boot)) {
        (BootMode::Uefi | BootMode::Unknown, Some(DiskBoot::GptWithEsp)) => Generation::V2,
        _ => Generation::V1,
    }
}
