//! Azure readiness: every rule Azure applies to a VHD uploaded as a page blob or a managed disk,
//! checked on the file as it is (a damaged footer is reported, not refused), each with the
//! message Azure would give.
//!
//! Rules on the VHD itself are always errors. The size limits depend on the target: a page blob
//! in a storage account (length a multiple of 512, at most 8 TiB) or a managed disk made by
//! direct upload (20 MiB + 512 bytes to 32 TiB + 512 bytes); the other target's limits are
//! reported as warnings.

use crate::error::Result;
use crate::export::{MAX_VHD_SIZE, MIB};
use crate::image::vhd::{
    COOKIE, DiskType, FEATURES_RESERVED, FIXED_DATA_OFFSET, FOOTER_SIZE, Footer, VERSION_1_0,
    checksum, show_bytes,
};
use crate::image::{DiskImage, RawImage};
use serde::Serialize;
use std::path::Path;

/// The largest page blob: 8 TiB.
pub const MAX_PAGE_BLOB: u64 = 8 << 40;
/// The smallest managed-disk upload: 20 MiB plus the footer.
pub const MIN_MANAGED_DISK_UPLOAD: u64 = 20 * MIB + FOOTER_SIZE;
/// The largest managed-disk upload: 32 TiB plus the footer.
pub const MAX_MANAGED_DISK_UPLOAD: u64 = MAX_VHD_SIZE + FOOTER_SIZE;

/// Where the VHD is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A managed disk created by direct upload (what Site Recovery migrations end as).
    #[default]
    ManagedDisk,
    /// A page blob in a storage account.
    PageBlob,
}

/// How much a failed rule matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Azure rejects the disk.
    Error,
    /// Azure accepts the disk, but something is off (or it concerns the other target).
    Warning,
}

/// The outcome of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    /// Short stable name.
    pub rule: &'static str,
    /// `Some(true)` passed, `Some(false)` failed, `None` not checked (an earlier rule failed).
    pub passed: Option<bool>,
    /// How much a failure matters.
    pub severity: Severity,
    /// What was found.
    pub detail: String,
    /// What Azure says when the rule fails (empty when it passed).
    pub azure_message: String,
}

/// The readiness of one file.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub path: String,
    /// The target the size limits were checked for.
    pub target: Target,
    /// `true` when no error-severity rule failed or was skipped.
    pub ready: bool,
    /// Every rule in order.
    pub rules: Vec<RuleResult>,
}

impl CheckReport {
    /// The rules that failed (errors and warnings).
    pub fn failed(&self) -> impl Iterator<Item = &RuleResult> + '_ {
        self.rules.iter().filter(|r| r.passed == Some(false))
    }
}

struct Rules {
    rules: Vec<RuleResult>,
}

impl Rules {
    fn add(&mut self, rule: &'static str, sev: Severity, ok: bool, detail: String, azure: String) {
        self.rules.push(RuleResult {
            rule,
            passed: Some(ok),
            severity: sev,
            detail,
            azure_message: if ok { String::new() } else { azure },
        });
    }
    fn skip(&mut self, rule: &'static str, sev: Severity, why: &str) {
        self.rules.push(RuleResult {
            rule,
            passed: None,
            severity: sev,
            detail: why.to_string(),
            azure_message: String::new(),
        });
    }
}

/// Checks the file at `path` against every Azure rule for `target`.
///
/// # Errors
/// Only when the file cannot be opened or read; a bad VHD is a report with `ready: false`.
pub fn check_file(path: &Path, target: Target) -> Result<CheckReport> {
    let file = RawImage::open(path)?;
    let tail = file.tail_sector()?;
    Ok(check_footer(path, file.len(), tail.as_ref(), target))
}

/// Checks a file of `len` bytes ending with `footer` (or too short to have one).
pub fn check_footer(
    path: &Path,
    len: u64,
    footer: Option<&[u8; 512]>,
    target: Target,
) -> CheckReport {
    use Severity::{Error as E, Warning as W};
    let blob = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut r = Rules { rules: Vec::new() };
    let footer_bytes = footer;
    let f = footer_bytes.map(Footer::decode);
    let cookie_ok = f.as_ref().is_some_and(|f| &f.cookie == COOKIE);
    r.add(
        "footer-cookie",
        E,
        cookie_ok,
        match &f {
            None => format!("the file is {len} bytes, too short for a 512-byte VHD footer"),
            Some(f) => format!("last 512 bytes start with cookie {}", show_bytes(&f.cookie)),
        },
        format!(
            "The specified cookie value in VHD footer indicates that disk with blob '{blob}' is \
             not a supported VHD. Disk is expected to have cookie value 'conectix'."
        ),
    );
    let (Some(f), Some(bytes), true) = (f, footer_bytes, cookie_ok) else {
        for (rule, sev) in [
            ("footer-checksum", E),
            ("disk-type", E),
            ("file-length", E),
            ("whole-mib", E),
            ("page-blob-size", E),
            ("managed-disk-size", E),
        ] {
            r.skip(rule, sev, "not checked: no VHD footer");
        }
        return finish(path, target, r);
    };
    let sum = checksum(bytes);
    r.add(
        "footer-checksum",
        E,
        sum == f.checksum,
        format!("stored 0x{:08x}, computed 0x{sum:08x}", f.checksum),
        format!("The VHD footer of blob '{blob}' is corrupt: its checksum does not match."),
    );
    r.add(
        "disk-type",
        E,
        f.disk_type == DiskType::Fixed,
        format!(
            "disk type {} ({})",
            f.disk_type.as_u32(),
            f.disk_type.name()
        ),
        format!(
            "The VHD '{blob}' is of type '{}'. Only fixed VHDs are supported; convert it with \
             `ec2azure convert`.",
            f.disk_type.name()
        ),
    );
    let expect_len = f.current_size.checked_add(FOOTER_SIZE);
    r.add(
        "file-length",
        E,
        expect_len == Some(len),
        format!("file is {len} bytes; current size {} + 512", f.current_size),
        format!(
            "The VHD '{blob}' is corrupt: a fixed VHD of virtual size {} bytes must be {} bytes \
             long, but it is {len} bytes.",
            f.current_size,
            f.current_size.saturating_add(FOOTER_SIZE)
        ),
    );
    r.add(
        "whole-mib",
        E,
        f.current_size % MIB == 0,
        format!(
            "virtual size {} bytes = {:.3} MiB",
            f.current_size,
            f.current_size as f64 / MIB as f64
        ),
        format!(
            "Disk with blob '{blob}' has unsupported virtual size of {} bytes. The size must be a \
             whole number (in MBs).",
            f.current_size
        ),
    );
    let (pb, md) = match target {
        Target::PageBlob => (E, W),
        Target::ManagedDisk => (W, E),
    };
    r.add(
        "page-blob-size",
        pb,
        len.is_multiple_of(512) && len <= MAX_PAGE_BLOB,
        format!("page blob of {len} bytes (a multiple of 512, at most 8 TiB)"),
        format!(
            "The value for one of the HTTP headers is not in the correct format: \
             x-ms-blob-content-length {len} must be a multiple of 512 and at most {MAX_PAGE_BLOB}."
        ),
    );
    r.add(
        "managed-disk-size",
        md,
        (MIN_MANAGED_DISK_UPLOAD..=MAX_MANAGED_DISK_UPLOAD).contains(&len),
        format!(
            "upload of {len} bytes (between {MIN_MANAGED_DISK_UPLOAD} and {MAX_MANAGED_DISK_UPLOAD})"
        ),
        format!(
            "The upload size {len} bytes is invalid: a managed disk upload must be between \
             {MIN_MANAGED_DISK_UPLOAD} (20 MiB + 512) and {MAX_MANAGED_DISK_UPLOAD} (32 TiB + 512) bytes."
        ),
    );
    // Warnings: Azure accepts these, but other readers may not.
    r.add(
        "features",
        W,
        f.features & FEATURES_RESERVED != 0,
        format!("features 0x{:08x}", f.features),
        "The reserved feature bit (0x2) should always be set.".into(),
    );
    r.add(
        "version",
        W,
        f.version == VERSION_1_0,
        format!("version 0x{:08x}", f.version),
        "The file format version should be 0x00010000.".into(),
    );
    r.add(
        "data-offset",
        W,
        f.disk_type != DiskType::Fixed || f.data_offset == FIXED_DATA_OFFSET,
        format!("data offset 0x{:016x}", f.data_offset),
        "A fixed VHD's data offset should be 0xFFFFFFFFFFFFFFFF.".into(),
    );
    r.add(
        "original-size",
        W,
        f.original_size == f.current_size,
        format!(
            "original size {}, current size {}",
            f.original_size, f.current_size
        ),
        "Original and current size differ; some tools read the original size.".into(),
    );
    let chs_size = f.geometry.size();
    r.add(
        "creator-geometry",
        W,
        !f.sized_by_chs() || chs_size == f.current_size,
        format!(
            "creator {} with CHS {}/{}/{} = {chs_size} bytes",
            show_bytes(&f.creator_app),
            f.geometry.cylinders,
            f.geometry.heads,
            f.geometry.sectors
        ),
        "Readers size disks from this creator by CHS geometry, which gives a different size \
         than the footer's current size."
            .into(),
    );
    r.add(
        "saved-state",
        W,
        f.saved_state == 0,
        format!("saved state {}", f.saved_state),
        "The VHD is in a saved state.".into(),
    );
    finish(path, target, r)
}

fn finish(path: &Path, target: Target, r: Rules) -> CheckReport {
    let ready = r
        .rules
        .iter()
        .all(|x| x.severity == Severity::Warning || x.passed == Some(true));
    CheckReport {
        path: path.display().to_string(),
        target,
        ready,
        rules: r.rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(size: u64, len: u64, edit: impl Fn(&mut [u8; 512])) -> CheckReport {
        let mut b = Footer::new_fixed(size, [0; 16], 0).encode();
        edit(&mut b);
        check_footer(Path::new("d.vhd"), len, Some(&b), Target::ManagedDisk)
    }

    fn failed(r: &CheckReport) -> Vec<&'static str> {
        r.rules
            .iter()
            .filter(|x| x.passed == Some(false))
            .map(|x| x.rule)
            .collect()
    }

    #[test]
    fn good_vhd_is_ready() {
        let r = report(64 * MIB, 64 * MIB + 512, |_| {});
        assert!(r.ready, "{r:?}");
        assert!(failed(&r).is_empty());
    }

    #[test]
    fn each_rule_fails_on_its_damage() {
        let r = report(64 * MIB, 64 * MIB + 512, |b| b[0] = b'x');
        assert_eq!(failed(&r), vec!["footer-cookie"]);
        assert!(!r.ready);
        assert!(r.rules[0].azure_message.contains("conectix"));
        let r = report(64 * MIB, 64 * MIB + 512, |b| b[64] ^= 1);
        assert_eq!(failed(&r), vec!["footer-checksum"]);
        let r = report(64 * MIB, 64 * MIB + 1024, |_| {});
        assert_eq!(failed(&r), vec!["file-length"]);
        let r = report(64 * MIB + 512, 64 * MIB + 1024, |_| {});
        assert_eq!(failed(&r), vec!["whole-mib"]);
        assert!(
            r.rules
                .iter()
                .any(|x| x.azure_message.contains("whole number (in MBs)"))
        );
        let r = report(MIB, MIB + 512, |_| {});
        assert_eq!(failed(&r), vec!["managed-disk-size"]);
        assert!(!r.ready);
        let pb = check_footer(
            Path::new("d.vhd"),
            MIB + 512,
            Some(&Footer::new_fixed(MIB, [0; 16], 0).encode()),
            Target::PageBlob,
        );
        assert!(pb.ready, "a 1 MiB page blob is fine");
    }

    #[test]
    fn no_footer_skips_the_rest() {
        let r = check_footer(Path::new("x"), 100, None, Target::ManagedDisk);
        assert!(!r.ready);
        assert_eq!(failed(&r), vec!["footer-cookie"]);
        assert!(r.rules[1..].iter().all(|x| x.passed.is_none()));
    }
}
