//! The VMDK descriptor: the text that says what a disk is made of, either a file of its own
//! (`disk.vmdk` beside `disk-flat.vmdk`) or embedded in a monolithic sparse extent.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=b57ed0dd                       content id, 32-bit hex; a child names its parent's
//! parentCID=ffffffff                 ffffffff: no parent
//! createType="monolithicSparse"
//! parentFileNameHint="base.vmdk"     delta disks only
//! RW 20480 SPARSE "disk.vmdk"        access, sectors, type, file (relative), [start sector]
//! RDONLY 2048 FLAT "disk-flat.vmdk" 0
//! RW 4096 ZERO
//! ddb.adapterType = "ide"            the disk database: informative, except encryption
//! ```
//!
//! The parser is strict where a mistake changes the bytes read (extent sizes, offsets, types,
//! the parent's identity) and lenient elsewhere (unknown keys and `ddb.` entries are kept and
//! ignored).

use crate::error::{Error, Result};

/// The largest descriptor we read (VMware writes a few hundred bytes; a 2 TB disk cut into
/// 2 GB extents needs about a thousand extent lines).
pub const MAX_DESCRIPTOR: usize = 1 << 20;
/// The most extents a descriptor may list.
pub const MAX_EXTENTS: usize = 65_536;
/// `parentCID` of a disk without a parent.
pub const NO_PARENT: u32 = 0xffff_ffff;

/// Extent access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-write.
    Rw,
    /// Read-only.
    RdOnly,
    /// No access: its data cannot be read.
    NoAccess,
}

/// Extent types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    /// A raw range of a file.
    Flat,
    /// A hosted sparse extent (`KDMV`), stream-optimized too.
    Sparse,
    /// Zeros, no file.
    Zero,
    /// A flat extent on VMFS (vmfs, vmfsThin): read as flat.
    Vmfs,
    /// Types named so they are refused by name: ESX COWD sparse, raw device mappings, SE
    /// sparse, vSAN sparse.
    Unsupported(&'static str),
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: Access,
    /// Size in sectors.
    pub sectors: u64,
    pub kind: ExtentType,
    /// The file, relative to the descriptor's folder (none for ZERO).
    pub file: Option<String>,
    /// The first sector used in the file (FLAT and VMFS).
    pub offset: u64,
    /// The descriptor line it came from (1-based), for errors.
    pub line: usize,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub version: u32,
    pub cid: u32,
    pub parent_cid: u32,
    pub create_type: String,
    pub parent_file_name_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    /// `true` when the disk database names an encryption key or the descriptor an encryption
    /// section (an encrypted VMware disk).
    pub encrypted: bool,
}

impl Descriptor {
    /// The sum of the extents' sizes in bytes.
    pub fn capacity_bytes(&self) -> Option<u64> {
        self.extents
            .iter()
            .try_fold(0u64, |a, e| a.checked_add(e.sectors.checked_mul(512)?))
    }
}

/// `true` when `b` looks like the start of a descriptor file (text, and a `# Disk
/// DescriptorFile` line or a `createType=` key among its first lines).
pub fn looks_like_descriptor(b: &[u8]) -> bool {
    let head = &b[..b.len().min(4096)];
    let end = head.iter().position(|&c| c == 0).unwrap_or(head.len());
    let Ok(text) = std::str::from_utf8(&head[..end]) else {
        return false;
    };
    let t = text.trim_start();
    // Bytes, not a str slice: byte 21 may fall inside a character.
    if t.as_bytes()
        .get(..21)
        .is_some_and(|h| h.eq_ignore_ascii_case(b"# disk descriptorfile"))
    {
        return true;
    }
    // Without the comment: every non-empty line up to createType is a comment or key=value.
    let mut saw_version = false;
    for line in t.lines().take(20) {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, _)) = l.split_once('=') else {
            return false;
        };
        match k.trim() {
            "version" => saw_version = true,
            "createType" => return saw_version,
            _ => {}
        }
    }
    false
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Parses a descriptor's text (cut at the first NUL, as embedded descriptors are padded).
///
/// # Errors
/// Not UTF-8, too long, a required key missing (version, CID, parentCID, createType), an
/// unparsable value, an extent line that is not `ACCESS SECTORS TYPE "FILE" [OFFSET]`, or too
/// many extents. Each error names the line.
pub fn parse(bytes: &[u8]) -> Result<Descriptor> {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    if end > MAX_DESCRIPTOR {
        return Err(Error::invalid(format!(
            "VMDK descriptor: {end} bytes, more than the {MAX_DESCRIPTOR} this reader accepts"
        )));
    }
    let text = std::str::from_utf8(&bytes[..end]).map_err(|e| {
        Error::invalid(format!(
            "VMDK descriptor: not UTF-8 text (byte {} is invalid)",
            e.valid_up_to()
        ))
    })?;
    let mut version = None;
    let mut cid = None;
    let mut parent_cid = None;
    let mut create_type = None;
    let mut hint = None;
    let mut encrypted = false;
    let mut extents = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            |what: &str| Error::invalid(format!("VMDK descriptor line {n}: {what}: {line:?}"));
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if extents.len() == MAX_EXTENTS {
                return Err(bad(&format!("more than {MAX_EXTENTS} extents")));
            }
            extents.push(parse_extent(line, n)?);
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad("expected key=value or an extent line"));
        };
        let (k, v) = (k.trim(), unquote(v));
        let hex = |v: &str| {
            u32::from_str_radix(v, 16).map_err(|_| bad("expected a 32-bit hexadecimal number"))
        };
        match k {
            "version" => {
                version = Some(v.parse::<u32>().map_err(|_| bad("expected a number"))?);
            }
            "CID" => cid = Some(hex(v)?),
            "parentCID" => parent_cid = Some(hex(v)?),
            "createType" => create_type = Some(v.to_string()),
            "parentFileNameHint" => hint = Some(v.to_string()),
            k if k.starts_with("encryption.") || k.starts_with("ddb.encryption") => {
                encrypted = true
            }
            _ => {}
        }
    }
    let missing = |k: &str| Error::invalid(format!("VMDK descriptor: no {k} line"));
    let version = version.ok_or_else(|| missing("version"))?;
    if !(1..=3).contains(&version) {
        return Err(Error::unsupported(format!(
            "VMDK descriptor: version {version}; this reader knows versions 1 to 3"
        )));
    }
    let create_type = create_type.ok_or_else(|| missing("createType"))?;
    if extents.is_empty() {
        return Err(missing("extent"));
    }
    Ok(Descriptor {
        version,
        cid: cid.ok_or_else(|| missing("CID"))?,
        parent_cid: parent_cid.ok_or_else(|| missing("parentCID"))?,
        create_type,
        parent_file_name_hint: hint,
        extents,
        encrypted,
    })
}

fn parse_extent(line: &str, n: usize) -> Result<ExtentLine> {
    let bad = |what: &str| Error::invalid(format!("VMDK descriptor line {n}: {what}: {line:?}"));
    // ACCESS SECTORS TYPE ["FILE" [OFFSET]] — the file name is quoted and may hold spaces.
    let mut rest = line;
    let mut word = || {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (w, r) = rest.split_at(end);
        rest = r;
        w
    };
    let access = match word() {
        "RW" => Access::Rw,
        "RDONLY" => Access::RdOnly,
        _ => Access::NoAccess,
    };
    let sectors: u64 = word()
        .parse()
        .map_err(|_| bad("expected the extent's size in sectors"))?;
    let kind = match word() {
        "FLAT" => ExtentType::Flat,
        "SPARSE" => ExtentType::Sparse,
        "ZERO" => ExtentType::Zero,
        "VMFS" => ExtentType::Vmfs,
        "VMFSSPARSE" => ExtentType::Unsupported("VMFSSPARSE (ESX COWD sparse)"),
        "VMFSRDM" => ExtentType::Unsupported("VMFSRDM (a raw device mapping)"),
        "VMFSRAW" => ExtentType::Unsupported("VMFSRAW (a raw device)"),
        "SESPARSE" => ExtentType::Unsupported("SESPARSE (space-efficient sparse)"),
        "VSANSPARSE" => ExtentType::Unsupported("VSANSPARSE (vSAN sparse)"),
        other => {
            return Err(Error::unsupported(format!(
                "VMDK descriptor line {n}: unknown extent type {other:?}; this reader knows \
                 FLAT, SPARSE, ZERO and VMFS"
            )));
        }
    };
    let rest_t = rest.trim_start();
    let (file, after) = if let Some(r) = rest_t.strip_prefix('"') {
        let Some(close) = r.find('"') else {
            return Err(bad("the file name's closing quote is missing"));
        };
        (Some(r[..close].to_string()), &r[close + 1..])
    } else if rest_t.is_empty() {
        (None, "")
    } else {
        return Err(bad("expected a quoted file name"));
    };
    let after = after.trim();
    let offset = if after.is_empty() {
        0
    } else {
        after
            .parse::<u64>()
            .map_err(|_| bad("expected the start sector after the file name"))?
    };
    match (kind, &file) {
        (ExtentType::Zero, Some(_)) => return Err(bad("a ZERO extent names no file")),
        (ExtentType::Zero, None) => {}
        (_, None) => return Err(bad("the extent names no file")),
        (_, Some(f)) if f.is_empty() || f.contains('\0') => {
            return Err(bad("empty file name"));
        }
        _ => {}
    }
    if offset != 0 && !matches!(kind, ExtentType::Flat | ExtentType::Vmfs) {
        return Err(bad("only FLAT and VMFS extents take a start sector"));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
        line: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &str = "# Disk DescriptorFile\nversion=1\nCID=b57ed0dd\nparentCID=ffffffff\n\
        createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\n\
        RW 4192256 FLAT \"d-f001.vmdk\" 0\nRDONLY 2048 FLAT \"my disk-f002.vmdk\" 16\n\
        RW 100 ZERO\nNOACCESS 8 SPARSE \"s.vmdk\"\n\n#DDB\nddb.adapterType = \"ide\"\n";

    #[test]
    fn parses_what_qemu_and_vmware_write() {
        let d = parse(QEMU.as_bytes()).unwrap();
        assert_eq!(d.cid, 0xb57ed0dd);
        assert_eq!(d.parent_cid, NO_PARENT);
        assert_eq!(d.create_type, "twoGbMaxExtentFlat");
        assert_eq!(d.extents.len(), 4);
        assert_eq!(d.extents[1].file.as_deref(), Some("my disk-f002.vmdk"));
        assert_eq!(d.extents[1].offset, 16);
        assert_eq!(d.extents[1].access, Access::RdOnly);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert_eq!(d.extents[3].access, Access::NoAccess);
        assert_eq!(d.capacity_bytes(), Some((4192256 + 2048 + 100 + 8) * 512));
        assert!(!d.encrypted);
        assert!(looks_like_descriptor(QEMU.as_bytes()));
        assert!(looks_like_descriptor(b"version=1\ncreateType=\"vmfs\"\n"));
        assert!(!looks_like_descriptor(b"hello world\n"));
    }

    #[test]
    fn refusals_name_the_line() {
        for (text, want) in [
            (
                "version=1\ncreateType=\"x\"\nRW 10 COWD \"a\"\n",
                "unknown extent type",
            ),
            ("version=1\ncreateType=\"x\"\nRW ten FLAT \"a\"\n", "line 3"),
            ("version=1\ncreateType=\"x\"\nRW 10 FLAT a\n", "quoted"),
            (
                "version=1\ncreateType=\"x\"\nRW 10 ZERO \"a\"\n",
                "names no file",
            ),
            ("version=1\ncreateType=\"x\"\n", "no extent"),
            ("createType=\"x\"\nRW 1 ZERO\n", "no version"),
            (
                "version=1\nCID=zz\ncreateType=\"x\"\nRW 1 ZERO\n",
                "hexadecimal",
            ),
        ] {
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let d = parse(
            b"version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"x\"\nencryption.keySafe = \"k\"\nRW 1 ZERO\n",
        );
        assert!(d.unwrap().encrypted);
        // CID and parentCID are required: without them a delta disk could pass for a base.
        let e = parse(b"version=1\nCID=1\ncreateType=\"x\"\nRW 1 ZERO\n").unwrap_err();
        assert!(e.to_string().contains("no parentCID line"), "{e}");
    }
}
