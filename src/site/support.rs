//! The support matrix Site Recovery checks a machine against: the operating systems it protects
//! (the AWS tutorial's list by default) and the disk limits, as data that a scenario file can
//! replace ([`SupportMatrix::from_json`]). The checks in [`super::checks`] read it; nothing
//! here decides an outcome.
//!
//! Sources: the tutorial "Migrate AWS VMs to Azure with Site Recovery" (64-bit Windows Server
//! 2008 R2 SP1 or later, 2012, 2012 R2, Red Hat Enterprise Linux 6.7) and the VMware/physical
//! support matrix of its era (`vmware-physical-azure-support-matrix.md`, 2019: OS disk up to
//! 2,048 GB, up to 64 data disks of up to 8,192 GB to managed disks, every disk larger than
//! 1,024 MB; UEFI for Windows Server 2012 or later), with the Generation 2 OS disk limit of
//! 4 TB from ../shared/DESIGN.md §3.
//!
//! An OS name is matched by words, case-insensitively: an entry's `product` (or one of its
//! `aliases`) must appear in the name, and the first word after it that starts with a digit,
//! with an `R2` after it, is the version (`Windows Server 2012 R2 Datacenter` → `2012 R2`;
//! `Red Hat Enterprise Linux Server release 6.7 (Santiago)` → `6.7`). A service pack is
//! `SP1`, `SP 1` or `Service Pack 1` anywhere after the product.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The guest operating system's family, as Site Recovery's `osType` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OsType {
    /// Windows.
    Windows,
    /// Linux.
    Linux,
}

impl OsType {
    /// `Windows` or `Linux`.
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Windows => "Windows",
            OsType::Linux => "Linux",
        }
    }
}

/// One operating system on the support list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SupportedOs {
    /// Windows or Linux.
    pub os_type: OsType,
    /// The product's name as it opens the OS name: `Windows Server`, `Red Hat Enterprise Linux`.
    pub product: String,
    /// Other names the product goes by (`RHEL`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The version, matched whole: `2012 R2` is not `2012`; `6.7` is not `6.10`.
    pub version: String,
    /// The lowest service pack supported (0: any).
    #[serde(default)]
    pub min_service_pack: u32,
    /// Whether Site Recovery protects it booted by UEFI (it becomes a Generation 2 VM): the
    /// matrix supports UEFI for Windows Server 2012 or later.
    #[serde(default)]
    pub uefi: bool,
}

impl SupportedOs {
    /// The entry as a person reads it: `Windows Server 2008 R2 SP1`.
    pub fn label(&self) -> String {
        if self.min_service_pack > 0 {
            format!(
                "{} {} SP{}",
                self.product, self.version, self.min_service_pack
            )
        } else {
            format!("{} {}", self.product, self.version)
        }
    }
}

/// The disk limits (sizes in whole units, so a scenario file reads plainly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DiskLimits {
    /// The largest OS disk of a Generation 1 VM, GiB ("Operating system disk size: Up to
    /// 2,048 GB", support matrix).
    pub os_disk_max_gib_gen1: u64,
    /// The largest OS disk of a Generation 2 VM, GiB (4 TB, DESIGN.md §3).
    pub os_disk_max_gib_gen2: u64,
    /// The largest data disk, GiB ("Up to 8,192 GB when replicating to managed disk").
    pub data_disk_max_gib: u64,
    /// Every disk must be larger than this, MiB ("disk must be larger than 1024 MB").
    pub disk_min_exclusive_mib: u64,
    /// The most data disks ("Data disk count: 64 or less").
    pub max_data_disks: usize,
}

impl Default for DiskLimits {
    fn default() -> Self {
        DiskLimits {
            os_disk_max_gib_gen1: 2048,
            os_disk_max_gib_gen2: 4096,
            data_disk_max_gib: 8192,
            disk_min_exclusive_mib: 1024,
            max_data_disks: 64,
        }
    }
}

/// What Site Recovery supports: the OS list and the disk limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SupportMatrix {
    /// The operating systems, in the order they are listed to the user.
    pub operating_systems: Vec<SupportedOs>,
    /// The disk limits.
    #[serde(default)]
    pub disk_limits: DiskLimits,
}

impl Default for SupportMatrix {
    /// The tutorial's list: 64-bit Windows Server 2008 R2 SP1 or later, 2012, 2012 R2, and
    /// Red Hat Enterprise Linux 6.7.
    fn default() -> Self {
        let windows = |version: &str, sp: u32, uefi: bool| SupportedOs {
            os_type: OsType::Windows,
            product: "Windows Server".into(),
            aliases: Vec::new(),
            version: version.into(),
            min_service_pack: sp,
            uefi,
        };
        SupportMatrix {
            operating_systems: vec![
                windows("2008 R2", 1, false),
                windows("2012", 0, true),
                windows("2012 R2", 0, true),
                SupportedOs {
                    os_type: OsType::Linux,
                    product: "Red Hat Enterprise Linux".into(),
                    aliases: vec!["RHEL".into()],
                    version: "6.7".into(),
                    min_service_pack: 0,
                    uefi: false,
                },
            ],
            disk_limits: DiskLimits::default(),
        }
    }
}

/// Where an OS name stands against the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupportLookup<'a> {
    /// On the list.
    Supported(&'a SupportedOs),
    /// The product and version are listed, but with a later service pack than `found`.
    ServicePackTooOld {
        /// The entry that needs a later service pack.
        entry: &'a SupportedOs,
        /// The service pack found in the name (0: none).
        found: u32,
    },
    /// Not on the list.
    NotListed,
}

impl SupportMatrix {
    /// Reads a matrix from JSON (the shape [`Serialize`] writes, camelCase), checking it.
    ///
    /// # Errors
    /// Not JSON of this shape; an entry with an empty product or version; limits that admit
    /// no disk (the minimum at or above a maximum).
    pub fn from_json(text: &str) -> Result<Self> {
        let m: SupportMatrix = serde_json::from_str(text)
            .map_err(|e| Error::argument(format!("support matrix: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the matrix is usable.
    ///
    /// # Errors
    /// As [`SupportMatrix::from_json`].
    pub fn validate(&self) -> Result<()> {
        for (i, os) in self.operating_systems.iter().enumerate() {
            if words(&os.product).is_empty() || words(&os.version).is_empty() {
                return Err(Error::argument(format!(
                    "support matrix: operating system {i} ({:?} {:?}): product and version \
                     must not be empty",
                    os.product, os.version
                )));
            }
        }
        let l = &self.disk_limits;
        for (what, max) in [
            ("osDiskMaxGibGen1", l.os_disk_max_gib_gen1),
            ("osDiskMaxGibGen2", l.os_disk_max_gib_gen2),
            ("dataDiskMaxGib", l.data_disk_max_gib),
        ] {
            if max.saturating_mul(1024) <= l.disk_min_exclusive_mib {
                return Err(Error::argument(format!(
                    "support matrix: {what} is {max} GiB, not above diskMinExclusiveMib ({} MiB): \
                     no disk could pass",
                    l.disk_min_exclusive_mib
                )));
            }
        }
        Ok(())
    }

    /// Finds `os_name` (of family `os_type`) on the list.
    pub fn lookup(&self, os_type: OsType, os_name: &str) -> SupportLookup<'_> {
        let name = words(os_name);
        let mut too_old = None;
        for entry in self
            .operating_systems
            .iter()
            .filter(|e| e.os_type == os_type)
        {
            let Some(parsed) = std::iter::once(&entry.product)
                .chain(&entry.aliases)
                .find_map(|p| parse_after(&name, &words(p)))
            else {
                continue;
            };
            if parsed.version != words(&entry.version) {
                continue;
            }
            if parsed.service_pack >= entry.min_service_pack {
                return SupportLookup::Supported(entry);
            }
            too_old.get_or_insert(SupportLookup::ServicePackTooOld {
                entry,
                found: parsed.service_pack,
            });
        }
        too_old.unwrap_or(SupportLookup::NotListed)
    }

    /// The list as a person reads it: `Windows Server 2008 R2 SP1 or later, …`.
    pub fn describe(&self, os_type: Option<OsType>) -> String {
        let list: Vec<String> = self
            .operating_systems
            .iter()
            .filter(|e| os_type.is_none_or(|t| e.os_type == t))
            .map(|e| {
                if e.min_service_pack > 0 {
                    format!("{} or later", e.label())
                } else {
                    e.label()
                }
            })
            .collect();
        if list.is_empty() {
            "none".into()
        } else {
            list.join(", ")
        }
    }
}

/// A name's version and service pack, read after its product.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    version: Vec<String>,
    service_pack: u32,
}

/// The lower-case words of `s`: letters, digits and dots; `®`, `™`, `(R)` and `(TM)` dropped.
fn words(s: &str) -> Vec<String> {
    let lower = s.to_lowercase().replace("(r)", " ").replace("(tm)", " ");
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '.'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads the version and service pack after the words `product` in `name`, or `None` when the
/// product is not there.
fn parse_after(name: &[String], product: &[String]) -> Option<Parsed> {
    if product.is_empty() || name.len() < product.len() {
        return None;
    }
    let start =
        (0..=name.len() - product.len()).find(|&i| name[i..i + product.len()] == *product)?;
    let rest = &name[start + product.len()..];
    let mut version = Vec::new();
    let mut service_pack = 0;
    let mut i = 0;
    while i < rest.len() {
        let w = rest[i].as_str();
        let next = rest.get(i + 1).map(String::as_str);
        if let Some(n) = w.strip_prefix("sp").and_then(|n| n.parse::<u32>().ok()) {
            service_pack = service_pack.max(n);
        } else if w == "sp" || (w == "service" && next == Some("pack")) {
            let at = if w == "sp" { i + 1 } else { i + 2 };
            if let Some(n) = rest.get(at).and_then(|n| n.parse::<u32>().ok()) {
                service_pack = service_pack.max(n);
                i = at;
            }
        } else if version.is_empty() && w.starts_with(|c: char| c.is_ascii_digit()) {
            version.push(w.to_string());
            if next == Some("r2") {
                version.push("r2".into());
                i += 1;
            }
        }
        i += 1;
    }
    Some(Parsed {
        version,
        service_pack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(t: OsType, name: &str) -> Option<String> {
        match SupportMatrix::default().lookup(t, name) {
            SupportLookup::Supported(e) => Some(e.label()),
            SupportLookup::ServicePackTooOld { entry, found } => {
                Some(format!("old {} (found SP{found})", entry.label()))
            }
            SupportLookup::NotListed => None,
        }
    }

    #[test]
    fn the_tutorials_list_matches_the_names_instances_report() {
        use OsType::{Linux, Windows};
        let cases = [
            (
                Windows,
                "Windows Server 2012 R2 Datacenter",
                Some("Windows Server 2012 R2"),
            ),
            (
                Windows,
                "Microsoft Windows Server 2012 R2 Standard",
                Some("Windows Server 2012 R2"),
            ),
            (
                Windows,
                "Windows Server 2012 Datacenter",
                Some("Windows Server 2012"),
            ),
            (
                Windows,
                "Windows Server® 2012 Standard",
                Some("Windows Server 2012"),
            ),
            (
                Windows,
                "Windows Server 2008 R2 SP1 Enterprise",
                Some("Windows Server 2008 R2 SP1"),
            ),
            (
                Windows,
                "Microsoft Windows Server 2008 R2 Datacenter Service Pack 1",
                Some("Windows Server 2008 R2 SP1"),
            ),
            (
                Windows,
                "Windows Server 2008 R2 Datacenter",
                Some("old Windows Server 2008 R2 SP1 (found SP0)"),
            ),
            (Windows, "Windows Server 2008 Datacenter", None),
            (Windows, "Windows Server 2016 Datacenter", None),
            (Windows, "Windows 10 Pro", None),
            (
                Linux,
                "Red Hat Enterprise Linux 6.7",
                Some("Red Hat Enterprise Linux 6.7"),
            ),
            (
                Linux,
                "Red Hat Enterprise Linux Server release 6.7 (Santiago)",
                Some("Red Hat Enterprise Linux 6.7"),
            ),
            (Linux, "RHEL 6.7", Some("Red Hat Enterprise Linux 6.7")),
            (Linux, "Red Hat Enterprise Linux 6.10", None),
            (Linux, "Red Hat Enterprise Linux 7.2", None),
            (Linux, "Ubuntu 16.04 LTS", None),
            // The family must agree with the name.
            (Linux, "Windows Server 2012 R2 Datacenter", None),
            (Windows, "Red Hat Enterprise Linux 6.7", None),
            (Windows, "", None),
        ];
        for (t, name, want) in cases {
            assert_eq!(look(t, name).as_deref(), want, "{t:?} {name:?}");
        }
    }

    #[test]
    fn a_scenario_replaces_the_table() {
        let json = r#"{
            "operatingSystems": [
                {"osType": "Linux", "product": "SUSE Linux Enterprise Server", "version": "12",
                 "minServicePack": 3},
                {"osType": "Windows", "product": "Windows Server", "version": "2016", "uefi": true}
            ],
            "diskLimits": {"dataDiskMaxGib": 32767}
        }"#;
        let m = SupportMatrix::from_json(json).unwrap();
        assert_eq!(m.disk_limits.data_disk_max_gib, 32767);
        assert_eq!(
            m.disk_limits.os_disk_max_gib_gen1, 2048,
            "unset limits keep defaults"
        );
        assert!(matches!(
            m.lookup(OsType::Linux, "SUSE Linux Enterprise Server 12 SP4"),
            SupportLookup::Supported(_)
        ));
        assert!(matches!(
            m.lookup(OsType::Linux, "SUSE Linux Enterprise Server 12 SP2"),
            SupportLookup::ServicePackTooOld { found: 2, .. }
        ));
        assert_eq!(
            m.lookup(OsType::Windows, "Windows Server 2012 R2 Datacenter"),
            SupportLookup::NotListed
        );
        assert_eq!(
            m.describe(None),
            "SUSE Linux Enterprise Server 12 SP3 or later, Windows Server 2016"
        );
        // Round trip.
        let back = SupportMatrix::from_json(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_bad_table_is_refused_with_what_is_wrong() {
        for (json, want) in [
            (
                r#"{"operatingSystems": [{"osType": "Windows", "product": "", "version": "1"}]}"#,
                "must not be empty",
            ),
            (
                r#"{"operatingSystems": [], "diskLimits": {"osDiskMaxGibGen1": 1}}"#,
                "osDiskMaxGibGen1 is 1 GiB",
            ),
            (
                r#"{"operatingSystems": [{"osType": "BeOS", "product": "x", "version": "1"}]}"#,
                "unknown variant",
            ),
            (r#"{"operatingSystems": [], "colour": 1}"#, "unknown field"),
        ] {
            let e = SupportMatrix::from_json(json).unwrap_err();
            assert!(e.to_string().contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn the_default_describes_itself() {
        let m = SupportMatrix::default();
        m.validate().unwrap();
        assert_eq!(
            m.describe(None),
            "Windows Server 2008 R2 SP1 or later, Windows Server 2012, Windows Server 2012 R2, \
             Red Hat Enterprise Linux 6.7"
        );
        assert_eq!(
            m.describe(Some(OsType::Linux)),
            "Red Hat Enterprise Linux 6.7"
        );
    }
}
