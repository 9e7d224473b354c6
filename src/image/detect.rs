//! Format detection from a file's first and last sectors: the formats we read, the formats we
//! know by their magic and refuse by name (never read as raw), and raw for everything else.
//!
//! | format            | where            | signature                                  |
//! |-------------------|------------------|--------------------------------------------|
//! | VHD (dynamic)     | 0                | footer copy, cookie `conectix`             |
//! | VHD (fixed)       | last 512 bytes   | footer (wins over any magic at the head)   |
//! | VHDX              | 0                | `vhdxfile` (or CRC-valid headers/regions)  |
//! | qcow2             | 0                | `QFI\xfb`, version 2 or 3                  |
//! | qcow v1 (refused) | 0                | `QFI\xfb`, version 1                       |
//! | VMDK sparse       | 0                | `KDMV`                                     |
//! | VMDK descriptor   | 0                | text: `# Disk DescriptorFile`, createType  |
//! | VMDK COWD (ref.)  | 0                | `COWD`                                     |
//! | OVA (tar)         | 257              | `ustar`                                    |
//! | VDI (refused)     | 64               | 0xbeda107f (little-endian)                 |
//! | QED (refused)     | 0                | `QED\0`                                    |
//! | LUKS (refused)    | 0                | `LUKS\xba\xbe`                             |
//! | Parallels (ref.)  | 0                | `WithoutFreeSpace` / `WithouFreSpacExt`    |
//! | bochs (refused)   | 0                | `Bochs Virtual HD Image`                   |
//! | cloop (refused)   | 0                | `#!/bin/sh\n#V2.0 Format\n` (or V3.0)      |
//! | DMG (refused)     | last 512 bytes   | `koly` (UDIF trailer)                      |

use super::{DiskImage, RawImage, vhd, vhdx};
use crate::error::Result;

/// Magic of a qcow2 header at offset 0: "QFI\xfb".
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Signature of a VHDX file identifier at offset 0.
const VHDX_MAGIC: &[u8; 8] = b"vhdxfile";
/// VDI's signature at offset 64.
const VDI_SIGNATURE: u32 = 0xbeda_107f;

/// The formats this crate reads, as the refusal message lists them.
pub const READABLE: &str = "raw, VHD, VHDX, qcow2 and VMDK (also inside an OVA)";

/// The signatures detection looks for, as a note for a file read as raw.
pub const SIGNATURES_CHECKED: &str = "VHD, VHDX, qcow2, VMDK, OVA, VDI, QED, LUKS, Parallels, \
                                      bochs, cloop, DMG";

/// What the first and last sectors of a file say it is.
#[derive(Debug)]
pub(crate) enum Detected {
    Raw,
    /// A VHD footer at the end (valid or damaged: the reader decides).
    VhdFooterAtEnd,
    /// A VHD footer copy at offset 0: a dynamic or differencing VHD.
    VhdFooterAtStart,
    /// A VHD footer cookie near the end but not at the last 512 bytes (a truncated VHD, or a
    /// pre-2004 511-byte footer): the offset where it starts.
    VhdCookieMisplaced(u64),
    Vhdx,
    Qcow2,
    Vmdk,
    Ova,
    /// A format known by its signature that this crate does not read: its name.
    Refused(&'static str),
}

impl Detected {
    /// The format this detection names: `None` for a format refused by name.
    pub(crate) fn format(&self) -> Option<super::Format> {
        use super::Format;
        Some(match self {
            Detected::Raw => Format::Raw,
            Detected::Refused(_) => return None,
            Detected::VhdFooterAtEnd
            | Detected::VhdFooterAtStart
            | Detected::VhdCookieMisplaced(_) => Format::Vhd,
            Detected::Vhdx => Format::Vhdx,
            Detected::Qcow2 => Format::Qcow2,
            Detected::Vmdk => Format::Vmdk,
            Detected::Ova => Format::Ova,
        })
    }
}

/// The format a head of a file names, among those refused by name.
fn refused_magic(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(QCOW2_MAGIC) && head.get(4..8) == Some(&1u32.to_be_bytes()[..]) {
        return Some("qcow (version 1)");
    }
    if head.starts_with(b"COWD") {
        return Some("VMDK COWD (ESX sparse)");
    }
    if head.starts_with(b"QED\0") {
        return Some("QED");
    }
    if head.starts_with(b"LUKS\xba\xbe") {
        return Some("LUKS (encrypted)");
    }
    if head.starts_with(b"WithoutFreeSpace") || head.starts_with(b"WithouFreSpacExt") {
        return Some("Parallels");
    }
    if head.starts_with(b"Bochs Virtual HD Image") {
        return Some("bochs");
    }
    if head.starts_with(b"#!/bin/sh\n#V2.0 Format\n")
        || head.starts_with(b"#!/bin/sh\n#V3.0 Format\n")
    {
        return Some("cloop");
    }
    if head
        .get(64..68)
        .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == VDI_SIGNATURE)
    {
        return Some("VDI");
    }
    None
}

/// Detects the format of `image` (opened as raw) from its first and last sectors.
pub(crate) fn detect(image: &RawImage) -> Result<Detected> {
    let len = image.len();
    let mut head = [0u8; 512];
    let n = image.read_at(&mut head, 0)?;
    let head = &head[..n];
    // A dynamic VHD's footer copy is at the head.
    if head.starts_with(vhd::COOKIE) {
        return Ok(Detected::VhdFooterAtStart);
    }
    // A fixed VHD is a raw disk plus a footer, and the disk may start with anything — even
    // another format's magic — so a VHD footer at the end wins over magics at the head.
    let tail = image.tail_sector()?;
    if let Some(tail) = &tail
        && vhd::looks_like_footer(tail)
    {
        return Ok(Detected::VhdFooterAtEnd);
    }
    if let Some(name) = refused_magic(head) {
        return Ok(Detected::Refused(name));
    }
    if head.starts_with(QCOW2_MAGIC) {
        return Ok(Detected::Qcow2);
    }
    if head.starts_with(VHDX_MAGIC) {
        return Ok(Detected::Vhdx);
    }
    if head.starts_with(super::vmdk::header::MAGIC) {
        return Ok(Detected::Vmdk);
    }
    if head.get(257..262) == Some(&b"ustar"[..]) {
        return Ok(Detected::Ova);
    }
    if len <= super::vmdk::descriptor::MAX_DESCRIPTOR as u64
        && super::vmdk::descriptor::looks_like_descriptor(head)
    {
        return Ok(Detected::Vmdk);
    }
    // A VHDX whose file identifier is damaged still has CRC-valid headers or region tables at
    // fixed offsets: a damaged VHDX, not a raw disk.
    for (at, sig, size) in [
        (64 << 10, b"head", 4096),
        (128 << 10, b"head", 4096),
        (192 << 10, b"regi", 64 << 10),
        (256 << 10, b"regi", 64 << 10),
    ] {
        let mut s = vec![0u8; size];
        if image.read_at(&mut s, at)? == size
            && &s[..4] == sig
            && u32::from_le_bytes([s[4], s[5], s[6], s[7]]) == vhdx::crc_with_zeroed_field(&s, 4)
        {
            return Ok(Detected::Vhdx);
        }
    }
    // A cookie elsewhere in the last KiB: a damaged VHD, not a raw disk.
    let start = len.saturating_sub(1024);
    let mut last = vec![0u8; (len - start) as usize];
    image.read_exact_at(&mut last, start)?;
    if let Some(i) = last.windows(8).position(|w| w == vhd::COOKIE) {
        return Ok(Detected::VhdCookieMisplaced(start + i as u64));
    }
    // A DMG keeps its "koly" trailer in the last sector.
    if tail.is_some_and(|t| t.starts_with(b"koly")) {
        return Ok(Detected::Refused("DMG (Apple disk image)"));
    }
    Ok(Detected::Raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_magic_is_named() {
        let mut vdi = vec![0u8; 512];
        vdi[64..68].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
        let mut qcow1 = b"QFI\xfb\0\0\0\x01".to_vec();
        qcow1.resize(512, 0);
        for (head, name) in [
            (vdi, "VDI"),
            (qcow1, "qcow (version 1)"),
            (b"COWD".to_vec(), "VMDK COWD (ESX sparse)"),
            (b"QED\0".to_vec(), "QED"),
            (b"LUKS\xba\xbe\0\x01".to_vec(), "LUKS (encrypted)"),
            (b"WithoutFreeSpace".to_vec(), "Parallels"),
            (b"WithouFreSpacExt".to_vec(), "Parallels"),
            (b"Bochs Virtual HD Image\0".to_vec(), "bochs"),
            (b"#!/bin/sh\n#V2.0 Format\nmodprobe".to_vec(), "cloop"),
        ] {
            assert_eq!(refused_magic(&head), Some(name));
        }
        let mut qcow2 = b"QFI\xfb\0\0\0\x03".to_vec();
        qcow2.resize(512, 0);
        assert_eq!(refused_magic(&qcow2), None);
        assert_eq!(refused_magic(&[0u8; 512]), None);
    }
}
