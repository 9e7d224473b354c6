//! Site Recovery's support and prerequisite checks: pure functions from what is known of a
//! machine and its site ([`MachineFacts`], [`SiteFacts`]) to one named [`CheckResult`] per
//! check, in a fixed order ([`CHECK_NAMES`]), each failure with Site Recovery's error id where
//! it has one, a message naming what was found and what is expected, the possible causes and
//! the recommended action — the fields of the service's `HealthError`.
//!
//! The checks, by job: [`machine`] (OS on the support list, 64-bit, HVM, PV drivers), [`disks`]
//! (count, sizes, sectors, boot layout against the firmware, Generation 2 rules), [`names`]
//! (VM, computer and storage account names), [`push`] (the push-install account, the security
//! groups, the process server's ports), [`vault`] (registration key, policy association).
//! [`azure_vm_generation`] decides the Azure VM's generation for the checks and the failover.
//! `ec2azure check-machine` runs them without enabling anything; Enable protection runs them
//! as its prerequisites check.

mod disks;
mod facts;
mod machine;
mod names;
mod push;
mod vault;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

pub use crate::site::support::{OsType, SupportMatrix};
pub use vault::REGISTRATION_KEY_VALIDITY_MS;

pub use facts::{
    Architecture, BootMode, DiskBoot, DiskFacts, Generation, IngressRule, MachineFacts,
    NetworkFacts, PushAccount, SiteFacts, TargetFacts, Virtualization, azure_vm_generation,
};

use serde::{Deserialize, Serialize};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The requirement is met.
    Passed,
    /// The requirement is not met: Site Recovery would refuse the machine.
    Failed,
    /// Met, with something the user should know (a UEFI machine is migration only).
    Warning,
}

/// The result of one check, with the fields Site Recovery's `HealthError` names them by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// The check's stable name (one of [`CHECK_NAMES`]).
    pub name: String,
    /// Passed, failed or a warning.
    pub outcome: Outcome,
    /// Site Recovery's error id (`errorCode`, a string in the service's JSON), when the
    /// service has one for this failure.
    #[serde(rename = "errorCode", with = "error_code", default)]
    pub error_id: Option<u32>,
    /// What was found and, on failure, what was expected.
    #[serde(rename = "errorMessage")]
    pub message: String,
    /// Why it may have failed (empty when it passed).
    pub possible_causes: String,
    /// What to do about it (empty when it passed).
    pub recommended_action: String,
}

impl CheckResult {
    /// A check that passed: `message` says what was found.
    pub(crate) fn passed(name: &str, message: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            outcome: Outcome::Passed,
            error_id: None,
            message: message.into(),
            possible_causes: String::new(),
            recommended_action: String::new(),
        }
    }

    /// A check that failed.
    pub(crate) fn failed(
        name: &str,
        error_id: Option<u32>,
        message: impl Into<String>,
        possible_causes: impl Into<String>,
        recommended_action: impl Into<String>,
    ) -> Self {
        CheckResult {
            name: name.into(),
            outcome: Outcome::Failed,
            error_id,
            message: message.into(),
            possible_causes: possible_causes.into(),
            recommended_action: recommended_action.into(),
        }
    }

    /// A check that passed with a warning.
    pub(crate) fn warning(
        name: &str,
        message: impl Into<String>,
        possible_causes: impl Into<String>,
        recommended_action: impl Into<String>,
    ) -> Self {
        CheckResult {
            outcome: Outcome::Warning,
            ..Self::failed(name, None, message, possible_causes, recommended_action)
        }
    }

    /// Whether it failed.
    pub fn is_failed(&self) -> bool {
        self.outcome == Outcome::Failed
    }
}

/// Every check, in the order [`check_machine`] runs them.
pub const CHECK_NAMES: [&str; 21] = [
    machine::OS_SUPPORTED,
    machine::ARCHITECTURE,
    machine::VIRTUALIZATION,
    machine::PV_DRIVERS,
    disks::DISK_COUNT,
    disks::OS_DISK_SIZE,
    disks::DATA_DISK_SIZE,
    disks::DISK_MIN_SIZE,
    disks::SECTOR_SIZE,
    disks::BOOT_DISK,
    disks::BOOT_MODE,
    disks::LINUX_GPT,
    disks::UEFI,
    names::VM_NAME,
    names::COMPUTER_NAME,
    names::STORAGE_ACCOUNT,
    push::ACCOUNT,
    push::PORTS,
    push::PROCESS_SERVER,
    vault::REGISTRATION_KEY,
    vault::POLICY,
];

/// Runs every check on the machine, in the order of [`CHECK_NAMES`], each once.
pub fn check_machine(facts: &MachineFacts, site: &SiteFacts) -> Vec<CheckResult> {
    let support = &site.support;
    vec![
        machine::os_supported(facts, support),
        machine::architecture(facts),
        machine::virtualization(facts),
        machine::pv_drivers(facts),
        disks::disk_count(facts, &support.disk_limits),
        disks::os_disk_size(facts, &support.disk_limits),
        disks::data_disk_size(facts, &support.disk_limits),
        disks::disk_min_size(facts, &support.disk_limits),
        disks::sector_size(facts),
        disks::boot_disk(facts),
        disks::boot_mode(facts),
        disks::linux_gpt(facts, support),
        disks::uefi(facts, support),
        names::vm_name(facts, &site.target),
        names::computer_name(facts),
        names::storage_account(&site.target),
        push::account(facts),
        push::ports(facts),
        push::process_server(facts),
        vault::registration_key(site),
        vault::policy(site),
    ]
}

/// Whether no check failed (warnings pass).
pub fn all_passed(results: &[CheckResult]) -> bool {
    !results.iter().any(CheckResult::is_failed)
}

/// `n` with thousands separators: `3,072`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A size in GiB: `3,072 GiB`, or `2,048.5 GiB (2199560126464 bytes)` when not whole.
pub(crate) fn gib(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{} GiB", thousands(bytes / GIB))
    } else {
        let hundredths = (u128::from(bytes % GIB) * 100 / u128::from(GIB)) as u64;
        format!(
            "{}.{hundredths:02} GiB ({bytes} bytes)",
            thousands(bytes / GIB)
        )
    }
}

/// A size in MiB: `1,024 MiB`, or `1,023.5 MiB (1073217536 bytes)` when not whole.
pub(crate) fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", thousands(bytes / MIB))
    } else {
        let hundredths = (u128::from(bytes % MIB) * 100 / u128::from(MIB)) as u64;
        format!(
            "{}.{hundredths:02} MiB ({bytes} bytes)",
            thousands(bytes / MIB)
        )
    }
}

/// A list for a message: `a`, `a and b`, `a, b and c`.
pub(crate) fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `errorCode` as the service writes it: a string of digits (or absent).
mod error_code {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(&id.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Code {
            Text(String),
            Number(u32),
        }
        match Option::<Code>::deserialize(d)? {
            None => Ok(None),
            Some(Code::Number(n)) => Ok(Some(n)),
            Some(Code::Text(t)) => t
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("errorCode {t:?} is not a number"))),
        }
    }
}
