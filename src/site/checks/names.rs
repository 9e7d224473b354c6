//! The names Azure will give the machine's resources: the VM name (support matrix "Azure VM
//! requirements": 1 to 63 characters, letters, numbers and hyphens, starting and ending with
//! a letter or number), the computer name (Azure `OSProfile.ComputerName`: at most 15
//! characters on Windows, 64 on Linux) and the target storage account's (3 to 24 lower-case
//! letters and digits). Site Recovery has no error ids for these: the portal asks for the
//! value to be updated in the machine's properties.

use super::{CheckResult, MachineFacts, TargetFacts, and_list};
use crate::site::support::OsType;

/// The Azure VM name's rules.
pub const VM_NAME: &str = "vm-name";
/// The computer name's length.
pub const COMPUTER_NAME: &str = "computer-name";
/// The target storage account name's rules.
pub const STORAGE_ACCOUNT: &str = "storage-account-name";

/// The characters of `s` outside `allowed`, each once, quoted, for a message.
fn bad_chars(s: &str, allowed: impl Fn(char) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in s.chars().filter(|&c| !allowed(c)) {
        let q = format!("{c:?}");
        if !out.contains(&q) {
            out.push(q);
        }
    }
    out
}

pub(super) fn vm_name(f: &MachineFacts, t: &TargetFacts) -> CheckResult {
    let name = t.vm_name.as_deref().unwrap_or(&f.name);
    let len = name.chars().count();
    let mut wrong = Vec::new();
    if len == 0 {
        wrong.push("is empty".to_string());
    } else if len > 63 {
        wrong.push(format!("is {len} characters"));
    }
    let bad = bad_chars(name, |c| c.is_ascii_alphanumeric() || c == '-');
    if !bad.is_empty() {
        wrong.push(format!("has {}", and_list(&bad)));
    }
    if name.starts_with('-') {
        wrong.push("starts with a hyphen".into());
    }
    if len > 0 && name.ends_with('-') {
        wrong.push("ends with a hyphen".into());
    }
    if wrong.is_empty() {
        return CheckResult::passed(VM_NAME, format!("the Azure VM name {name:?} is valid"));
    }
    CheckResult::failed(
        VM_NAME,
        None,
        format!(
            "the Azure VM name {name:?} {}; VM names are 1 to 63 letters, digits and hyphens, \
             starting and ending with a letter or digit",
            and_list(&wrong)
        ),
        "VM name: from 1 to 63 characters, restricted to letters, numbers, and hyphens; the \
         machine name must start and end with a letter or number (support matrix).",
        "Update the value in the machine properties in Site Recovery (the target VM name).",
    )
}

pub(super) fn computer_name(f: &MachineFacts) -> CheckResult {
    let max = match f.os_type {
        OsType::Windows => 15,
        OsType::Linux => 64,
    };
    let os = f.os_type.as_str();
    let len = f.name.chars().count();
    if (1..=max).contains(&len) {
        return CheckResult::passed(
            COMPUTER_NAME,
            format!(
                "the computer name {:?} is {len} characters (at most {max} on {os})",
                f.name
            ),
        );
    }
    CheckResult::failed(
        COMPUTER_NAME,
        None,
        format!(
            "the computer name {:?} is {len} characters; {os} computer names are 1 to {max} \
             characters",
            f.name
        ),
        "Azure sets the VM's computer name from the machine's: at most 15 characters on \
         Windows (its NetBIOS name), 64 on Linux.",
        "Rename the machine (its host name) within the limit, and retry.",
    )
}

pub(super) fn storage_account(t: &TargetFacts) -> CheckResult {
    let name = &t.storage_account;
    let len = name.chars().count();
    let mut wrong = Vec::new();
    if !(3..=24).contains(&len) {
        wrong.push(format!("is {len} characters"));
    }
    let bad = bad_chars(name, |c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !bad.is_empty() {
        wrong.push(format!("has {}", and_list(&bad)));
    }
    if wrong.is_empty() {
        return CheckResult::passed(
            STORAGE_ACCOUNT,
            format!("the storage account name {name:?} is valid"),
        );
    }
    CheckResult::failed(
        STORAGE_ACCOUNT,
        None,
        format!(
            "the storage account name {name:?} {}; storage account names are 3 to 24 \
             lower-case letters and digits",
            and_list(&wrong)
        ),
        "Storage account names must be between 3 and 24 characters in length and use numbers \
         and lower-case letters only (and be unique in Azure).",
        "Choose (or create) a storage account with a valid name as the replication target.",
    )
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::super::fixtures::{rhel, site, windows};
    use super::*;

    #[test]
    fn vm_names_follow_azures_rules() {
        let f = windows();
        let mut t = site().target;
        for ok in ["a", "Win2012R2-1", &"x".repeat(63), "9lives"] {
            t.vm_name = Some(ok.into());
            assert_eq!(vm_name(&f, &t).outcome, Outcome::Passed, "{ok}");
        }
        for (bad, why) in [
            ("", "is empty"),
            (&"x".repeat(64) as &str, "is 64 characters"),
            ("my_vm.1", "has '_' and '.'"),
            ("-web", "starts with a hyphen"),
            ("web-", "ends with a hyphen"),
            ("wéb", "has 'é'"),
        ] {
            t.vm_name = Some(bad.into());
            let r = vm_name(&f, &t);
            assert_eq!((r.outcome, r.error_id), (Outcome::Failed, None));
            assert_eq!(
                r.message,
                format!(
                    "the Azure VM name {bad:?} {why}; VM names are 1 to 63 letters, digits and \
                     hyphens, starting and ending with a letter or digit"
                )
            );
        }
        // Without a target name, the machine's name is the VM's.
        t.vm_name = None;
        let mut f = windows();
        f.name = "web_1".into();
        assert!(vm_name(&f, &t).message.contains("\"web_1\" has '_'"));
    }

    #[test]
    fn computer_names_at_most_15_on_windows_64_on_linux() {
        let mut f = windows();
        f.name = "WIN-0123456789AB".into();
        let r = computer_name(&f);
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.message,
            "the computer name \"WIN-0123456789AB\" is 16 characters; Windows computer names are \
             1 to 15 characters"
        );
        let mut l = rhel();
        l.name = "WIN-0123456789AB".into();
        assert_eq!(computer_name(&l).outcome, Outcome::Passed);
        l.name = "x".repeat(65);
        assert!(
            computer_name(&l)
                .message
                .ends_with("is 65 characters; Linux computer names are 1 to 64 characters")
        );
    }

    #[test]
    fn storage_account_names_are_3_to_24_lower_case_letters_and_digits() {
        let mut t = site().target;
        assert_eq!(storage_account(&t).outcome, Outcome::Passed);
        for (bad, why) in [
            ("ab", "is 2 characters"),
            ("AwsMigrated2017", "has 'A' and 'M'"),
            ("aws-migrated", "has '-'"),
            ("a234567890123456789012345", "is 25 characters"),
        ] {
            t.storage_account = bad.into();
            let r = storage_account(&t);
            assert_eq!(r.outcome, Outcome::Failed);
            assert_eq!(
                r.message,
                format!(
                    "the storage account name {bad:?} {why}; storage account names are 3 to 24 \
                     lower-case letters and digits"
                )
            );
        }
    }
}
