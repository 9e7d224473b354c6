//! Machines the tests start from: the tutorial's Windows Server 2012 R2 HVM instance with one
//! 30 GiB MBR disk, a Red Hat Enterprise Linux 6.7 one, and a site where everything is set up;
//! each test breaks one fact.

use super::{
    Architecture, BootMode, DiskBoot, DiskFacts, IngressRule, MachineFacts, NetworkFacts,
    PushAccount, SiteFacts, TargetFacts, Virtualization,
};
use crate::site::support::{OsType, SupportMatrix};

const GIB: u64 = 1 << 30;

/// 2026-11-22T06:00:00Z.
pub const NOW_MS: u64 = 1_795_327_200_000;

/// A disk with 512-byte sectors; an OS disk has a bootable MBR, a data disk no partitions.
pub fn disk(name: &str, size_bytes: u64, is_os_disk: bool) -> DiskFacts {
    DiskFacts {
        name: name.into(),
        size_bytes,
        logical_sector_size: 512,
        physical_sector_size: 512,
        is_os_disk,
        boot: if is_os_disk {
            DiskBoot::Mbr {
                boot_signature: true,
            }
        } else {
            DiskBoot::None
        },
    }
}

fn rule(port: i32, cidr: &str) -> IngressRule {
    IngressRule {
        protocol: "tcp".into(),
        from_port: Some(port),
        to_port: Some(port),
        sources: vec![cidr.into()],
    }
}

fn network(ingress: Vec<IngressRule>) -> NetworkFacts {
    NetworkFacts {
        ingress,
        process_server_ip: "172.31.0.10".parse().expect("a literal address"),
        process_server_reachable_443: true,
        process_server_reachable_9443: true,
    }
}

/// The tutorial's Windows Server 2012 R2 Datacenter HVM instance, one 30 GiB MBR disk, the
/// local Administrator with LocalAccountTokenFilterPolicy = 1, SMB and WMI open to the VPC.
pub fn windows() -> MachineFacts {
    MachineFacts {
        name: "win2012r2-web".into(),
        os_type: OsType::Windows,
        os_name: "Windows Server 2012 R2 Datacenter".into(),
        architecture: Architecture::X86_64,
        virtualization_type: Virtualization::Hvm,
        pv_drivers: vec!["AWS PV".into()],
        boot_mode: BootMode::LegacyBios,
        disks: vec![disk("/dev/sda1", 30 * GIB, true)],
        account: Some(PushAccount::Windows {
            user: "Administrator".into(),
            domain: None,
            is_admin: true,
            local_account_token_filter_policy: true,
        }),
        network: network(vec![
            rule(3389, "0.0.0.0/0"),
            rule(445, "172.31.0.0/16"),
            rule(135, "172.31.0.0/16"),
        ]),
    }
}

/// A Red Hat Enterprise Linux 6.7 HVM instance, a 30 GiB MBR boot disk and a 100 GiB data
/// disk, root for the push install, SSH open to the process server.
pub fn rhel() -> MachineFacts {
    MachineFacts {
        name: "rhel67-db".into(),
        os_type: OsType::Linux,
        os_name: "Red Hat Enterprise Linux 6.7".into(),
        architecture: Architecture::X86_64,
        virtualization_type: Virtualization::Hvm,
        pv_drivers: Vec::new(),
        boot_mode: BootMode::Unknown,
        disks: vec![
            disk("/dev/xvda", 30 * GIB, true),
            disk("/dev/xvdf", 100 * GIB, false),
        ],
        account: Some(PushAccount::Linux {
            user: "root".into(),
            is_root: true,
        }),
        network: network(vec![rule(22, "172.31.0.10/32")]),
    }
}

/// A site set up as the tutorial leaves it: a registered configuration server, the policy
/// associated, the target storage account `awsmigrated2017`.
pub fn site() -> SiteFacts {
    SiteFacts {
        now_ms: NOW_MS,
        registration_key_expires_ms: Some(NOW_MS + 3 * 24 * 3_600_000),
        configuration_server_registered: true,
        policy_associated: true,
        target: TargetFacts {
            storage_account: "awsmigrated2017".into(),
            vm_name: None,
        },
        support: SupportMatrix::default(),
    }
}
