//! The machine itself: its OS on the support list, 64-bit, HVM, and its paravirtual drivers
//! (support matrix "Azure VM requirements" and the AWS tutorial's "Prepare EC2 instances").
//! Site Recovery has no error ids for these: its prerequisites check fails with the
//! requirement's text.

use super::{CheckResult, MachineFacts, Virtualization, and_list};
use crate::site::support::{SupportLookup, SupportMatrix};

/// The OS is on the support list.
pub const OS_SUPPORTED: &str = "os-supported";
/// The OS is 64-bit.
pub const ARCHITECTURE: &str = "os-architecture";
/// The instance is HVM.
pub const VIRTUALIZATION: &str = "virtualization-type";
/// At most one Citrix PV or AWS PV driver, none from Red Hat.
pub const PV_DRIVERS: &str = "pv-drivers";

const MATRIX_ACTION: &str =
    "Protect a machine running an operating system on the support matrix, or upgrade it first.";

pub(super) fn os_supported(f: &MachineFacts, m: &SupportMatrix) -> CheckResult {
    let os = f.os_type.as_str();
    match m.lookup(f.os_type, &f.os_name) {
        SupportLookup::Supported(e) => CheckResult::passed(
            OS_SUPPORTED,
            format!(
                "{:?} ({os}) is {} on the support list",
                f.os_name,
                e.label()
            ),
        ),
        SupportLookup::ServicePackTooOld { entry, found } => CheckResult::failed(
            OS_SUPPORTED,
            None,
            format!(
                "the machine runs {:?}, {}; Site Recovery supports {} or later",
                f.os_name,
                if found == 0 {
                    "with no service pack".to_string()
                } else {
                    format!("service pack {found}")
                },
                entry.label()
            ),
            format!(
                "{} is supported from service pack {} on.",
                entry.product, entry.min_service_pack
            ),
            format!(
                "Install service pack {} or later and retry.",
                entry.min_service_pack
            ),
        ),
        SupportLookup::NotListed => CheckResult::failed(
            OS_SUPPORTED,
            None,
            format!(
                "the machine runs {:?} ({os}); Site Recovery supports {}",
                f.os_name,
                m.describe(Some(f.os_type))
            ),
            "The guest operating system is not on the support matrix for replicated machines \
             (or its OS type does not match its name).",
            MATRIX_ACTION,
        ),
    }
}

pub(super) fn architecture(f: &MachineFacts) -> CheckResult {
    use super::Architecture::{Arm64, I386, X86_64};
    match f.architecture {
        X86_64 => CheckResult::passed(ARCHITECTURE, "the machine is 64-bit (x86_64)"),
        a @ (I386 | Arm64) => CheckResult::failed(
            ARCHITECTURE,
            None,
            format!(
                "the machine's architecture is {} ({}); Site Recovery protects 64-bit x86 \
                 (x86_64) machines only",
                a.as_str(),
                if a == I386 { "32-bit" } else { "64-bit Arm" }
            ),
            "Guest operating system architecture: 64-bit only; check fails if unsupported.",
            "Migrate the machine by rebuilding it on a 64-bit x86 instance; Site Recovery \
             cannot replicate it.",
        ),
    }
}

pub(super) fn virtualization(f: &MachineFacts) -> CheckResult {
    match f.virtualization_type {
        Virtualization::Hvm => CheckResult::passed(VIRTUALIZATION, "the instance is HVM"),
        Virtualization::Paravirtual => CheckResult::failed(
            VIRTUALIZATION,
            None,
            "the instance's virtualization type is paravirtual; Site Recovery migrates HVM \
             instances only",
            "Paravirtual (PV) EC2 instances are not supported: Azure VMs are hardware-virtualized.",
            "Convert the instance to HVM (launch an HVM instance from its volumes) and protect \
             that one.",
        ),
    }
}

/// Which paravirtual driver a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pv {
    Citrix,
    Aws,
    RedHat,
    Other,
}

fn classify(name: &str) -> Pv {
    let n: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    if n.contains("redhat") {
        Pv::RedHat
    } else if n.contains("citrix") {
        Pv::Citrix
    } else if n.contains("awspv") {
        Pv::Aws
    } else {
        Pv::Other
    }
}

pub(super) fn pv_drivers(f: &MachineFacts) -> CheckResult {
    let of = |k: Pv| -> Vec<String> {
        f.pv_drivers
            .iter()
            .filter(|d| classify(d) == k)
            .map(|d| format!("{d:?}"))
            .collect()
    };
    let red_hat = of(Pv::RedHat);
    let mut xen = of(Pv::Citrix);
    xen.extend(of(Pv::Aws));
    let mut wrong = Vec::new();
    if !red_hat.is_empty() {
        wrong.push(format!("the Red Hat PV driver {}", and_list(&red_hat)));
    }
    if xen.len() > 1 {
        wrong.push(format!(
            "{} Citrix PV / AWS PV drivers ({})",
            xen.len(),
            and_list(&xen)
        ));
    }
    if wrong.is_empty() {
        let found = if f.pv_drivers.is_empty() {
            "no PV drivers".to_string()
        } else {
            let all: Vec<String> = f.pv_drivers.iter().map(|d| format!("{d:?}")).collect();
            and_list(&all)
        };
        return CheckResult::passed(
            PV_DRIVERS,
            format!(
                "the machine has {found}: at most one Citrix PV or AWS PV driver, none from Red Hat"
            ),
        );
    }
    CheckResult::failed(
        PV_DRIVERS,
        None,
        format!(
            "the machine has {}; Site Recovery allows at most one Citrix PV or AWS PV driver \
             and none from Red Hat",
            and_list(&wrong)
        ),
        "More than one paravirtual driver stack, or Red Hat's PV drivers, keep the machine \
         from booting in Azure after failover.",
        "Uninstall the Red Hat PV drivers and all but one Citrix PV or AWS PV driver, reboot, \
         and retry.",
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{rhel, windows};
    use super::super::{Architecture, Outcome};
    use super::*;

    #[test]
    fn an_unsupported_os_fails_naming_the_list() {
        let mut f = windows();
        f.os_name = "Windows Server 2016 Datacenter".into();
        let r = os_supported(&f, &SupportMatrix::default());
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, None));
        assert_eq!(
            r.message,
            "the machine runs \"Windows Server 2016 Datacenter\" (Windows); Site Recovery \
             supports Windows Server 2008 R2 SP1 or later, Windows Server 2012, Windows Server \
             2012 R2"
        );
        f.os_name = "Windows Server 2008 R2 Datacenter".into();
        let r = os_supported(&f, &SupportMatrix::default());
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the machine runs \"Windows Server 2008 R2 Datacenter\", with no service pack; \
             Site Recovery supports Windows Server 2008 R2 SP1 or later"
        );
        let mut l = rhel();
        l.os_name = "Red Hat Enterprise Linux 7.2".into();
        let r = os_supported(&l, &SupportMatrix::default());
        assert!(
            r.message
                .ends_with("Site Recovery supports Red Hat Enterprise Linux 6.7"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_32_bit_or_arm_machine_fails() {
        let mut f = windows();
        f.architecture = Architecture::I386;
        let r = architecture(&f);
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the machine's architecture is i386 (32-bit); Site Recovery protects 64-bit x86 \
             (x86_64) machines only"
        );
        f.architecture = Architecture::Arm64;
        assert!(architecture(&f).message.contains("arm64 (64-bit Arm)"));
    }

    #[test]
    fn a_paravirtual_instance_fails() {
        let mut f = rhel();
        f.virtualization_type = Virtualization::Paravirtual;
        let r = virtualization(&f);
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, None));
        assert!(
            r.message
                .starts_with("the instance's virtualization type is paravirtual;")
        );
    }

    #[test]
    fn pv_drivers_at_most_one_xen_none_from_red_hat() {
        let mut f = windows();
        for ok in [
            vec![],
            vec!["AWS PV"],
            vec!["Citrix PV"],
            vec!["AWS PV", "AWS ENA"],
        ] {
            f.pv_drivers = ok.iter().map(|s| s.to_string()).collect();
            assert_eq!(pv_drivers(&f).outcome, Outcome::Passed, "{ok:?}");
        }
        f.pv_drivers = vec!["Citrix PV".into(), "AWS PV".into()];
        let r = pv_drivers(&f);
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the machine has 2 Citrix PV / AWS PV drivers (\"Citrix PV\" and \"AWS PV\"); Site \
             Recovery allows at most one Citrix PV or AWS PV driver and none from Red Hat"
        );
        f.pv_drivers = vec!["Red Hat PV".into()];
        let r = pv_drivers(&f);
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.message
                .starts_with("the machine has the Red Hat PV driver \"Red Hat PV\";"),
            "{}",
            r.message
        );
    }
}
