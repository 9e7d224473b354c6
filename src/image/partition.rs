//! Partition tables as a firmware sees them: the MBR in sector 0 (boot code, the four primary
//! entries, the 0x55AA boot signature, a protective MBR's 0xEE entry) and the GUID partition
//! table (its header at LBA 1, CRC-32 protected, its entry array with its own CRC-32, and the
//! backup header in the disk's last sector, used when the primary is damaged). Read over any
//! [`DiskImage`], so a VHD, a VHDX or a recovery point is read the same way.
//!
//! [`boot_layout`] sums the table up as the one question a boot check asks: which firmware could
//! boot this disk ([`BootLayout`]). The boot check (`crate::boot`) and the readiness checks
//! consume it.
//!
//! ```text
//!   LBA 0      MBR: 440 bytes of boot code, disk signature, 4 × 16-byte entries at 446, 55 AA at 510
//!   LBA 1      GPT header: "EFI PART", revision, header size (92), header CRC-32 (field zeroed),
//!              my LBA, alternate LBA, first/last usable LBA, disk GUID, entry array LBA,
//!              number of entries, entry size (128 × 2^n), entry array CRC-32
//!   LBA 2..    entries: type GUID, unique GUID, first LBA, last LBA (inclusive), attributes,
//!              name (36 UTF-16LE code units)
//!   last LBA   backup header (its entry array just before it)
//! ```

use crate::error::{Error, Result};
use crate::image::DiskImage;
use serde::Serialize;

/// A sector as partition tables count them.
pub const SECTOR: u64 = 512;

/// The EFI system partition's type GUID, C12A7328-F81F-11D2-BA4B-00A0C93EC93B: the FAT
/// partition UEFI firmware loads `\EFI\BOOT\BOOTX64.EFI` (or its boot entries) from.
pub const ESP_TYPE: Guid = Guid::from_fields(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    *b"\xBA\x4B\x00\xA0\xC9\x3E\xC9\x3B",
);

/// The BIOS boot partition's type GUID, 21686148-6449-6E6F-744E-656564454649 ("Hah!IdontNeedEFI"):
/// where GRUB keeps its core image on a GPT disk booted by a BIOS (as many EC2 Linux AMIs are).
pub const BIOS_BOOT_TYPE: Guid = Guid::from_fields(
    0x2168_6148,
    0x6449,
    0x6E6F,
    *b"\x74\x4E\x65\x65\x64\x45\x46\x49",
);

/// The MBR partition type of a protective MBR's entry (the GPT covers the disk).
pub const MBR_TYPE_PROTECTIVE: u8 = 0xEE;
/// The MBR partition type of an EFI system partition on an MBR disk.
pub const MBR_TYPE_ESP: u8 = 0xEF;

/// The GPT header's signature.
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// The smallest header (UEFI 2.x: 92 bytes) and the largest we read (one sector).
const GPT_HEADER_MIN: u32 = 92;
/// Entry arrays larger than this are refused as damaged (the spec's minimum is 16 KiB; 128
/// entries of 128 bytes is what every tool writes).
const GPT_ARRAY_MAX: u64 = 1 << 20;

/// A GUID as GPT stores it: the first three fields little-endian, the last eight bytes as they
/// are.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID `d1-d2-d3-d4` as written in the specification.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// `true` for the all-zero GUID (an unused entry).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One used primary entry of an MBR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MbrEntry {
    /// Its slot, 1 to 4.
    pub slot: u8,
    /// The active flag (0x80): the partition a classic MBR boot code starts.
    pub bootable: bool,
    /// The partition type byte (0x83 Linux, 0x07 NTFS, 0x0C FAT32 LBA, 0xEE protective, ...).
    pub kind: u8,
    /// The first sector.
    pub first_lba: u32,
    /// The number of sectors.
    pub sectors: u32,
}

/// Sector 0 as an MBR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mbr {
    /// Bytes 510–511 are 55 AA: a BIOS will run this sector's code.
    pub boot_signature: bool,
    /// The 440 bytes of boot code are not all zero.
    pub has_boot_code: bool,
    /// The used entries (type byte non-zero), in slot order.
    pub entries: Vec<MbrEntry>,
}

impl Mbr {
    /// Decodes sector 0.
    pub fn decode(sector: &[u8; 512]) -> Mbr {
        let entries = (0..4u8)
            .filter_map(|i| {
                let e = &sector[446 + 16 * i as usize..446 + 16 * (i as usize + 1)];
                let kind = e[4];
                (kind != 0).then(|| MbrEntry {
                    slot: i + 1,
                    bootable: e[0] & 0x80 != 0,
                    kind,
                    first_lba: u32::from_le_bytes([e[8], e[9], e[10], e[11]]),
                    sectors: u32::from_le_bytes([e[12], e[13], e[14], e[15]]),
                })
            })
            .collect();
        Mbr {
            boot_signature: sector[510] == 0x55 && sector[511] == 0xAA,
            has_boot_code: sector[..440].iter().any(|&b| b != 0),
            entries,
        }
    }

    /// `true` when an entry has type 0xEE: the MBR only protects a GPT.
    pub fn is_protective(&self) -> bool {
        self.entries.iter().any(|e| e.kind == MBR_TYPE_PROTECTIVE)
    }
}

/// One used GPT entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GptEntry {
    /// Its index in the array, from 1 (as Linux numbers partitions).
    pub index: u32,
    /// The partition type.
    pub type_guid: Guid,
    /// The partition's own GUID.
    pub unique_guid: Guid,
    /// The first sector.
    pub first_lba: u64,
    /// The last sector (inclusive).
    pub last_lba: u64,
    /// The attribute bits.
    pub attributes: u64,
    /// The name (UTF-16LE up to the first NUL; invalid units replaced).
    pub name: String,
}

impl GptEntry {
    /// `true` for an EFI system partition.
    pub fn is_esp(&self) -> bool {
        self.type_guid == ESP_TYPE
    }

    /// `true` for a BIOS boot partition.
    pub fn is_bios_boot(&self) -> bool {
        self.type_guid == BIOS_BOOT_TYPE
    }
}

/// A GUID partition table that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpt {
    /// The disk's GUID.
    pub disk_guid: Guid,
    /// The first and last sector partitions may use.
    pub first_usable: u64,
    /// The last sector partitions may use (inclusive).
    pub last_usable: u64,
    /// The used entries (type GUID non-zero), in array order.
    pub entries: Vec<GptEntry>,
    /// `true` when the primary header or its array was damaged and the backup was read.
    pub from_backup: bool,
}

/// What sector 0 and the GPT hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionTable {
    /// Sector 0 as an MBR (`None` for a disk shorter than a sector).
    pub mbr: Option<Mbr>,
    /// The GPT, when a valid primary or backup was found.
    pub gpt: Option<Gpt>,
    /// What was wrong on the way (a damaged primary GPT, a backup that disagrees, entries out
    /// of the disk): each names the sector and the expected and found values.
    pub problems: Vec<String>,
}

/// Which firmware could boot a disk, from its partition table alone. Kept to four cases so
/// every consumer can match all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootLayout {
    /// Sector 0 carries the 55 AA boot signature and no GPT was found: a BIOS (Azure
    /// Generation 1) runs its boot code.
    Mbr,
    /// A valid GPT (primary or backup) with an EFI system partition: UEFI firmware (Azure
    /// Generation 2) boots from the ESP.
    GptWithEsp,
    /// A valid GPT without an EFI system partition: UEFI has nothing to load. (A BIOS may still
    /// boot it through the protective MBR's code when there is a BIOS boot partition, GRUB's
    /// layout: see [`PartitionTable::bios_bootable`].)
    GptWithoutEsp,
    /// Neither: no boot signature and no GPT (a zeroed or never-partitioned disk).
    None,
}

impl BootLayout {
    /// The name as JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            BootLayout::Mbr => "mbr",
            BootLayout::GptWithEsp => "gpt-with-esp",
            BootLayout::GptWithoutEsp => "gpt-without-esp",
            BootLayout::None => "none",
        }
    }
}

impl std::fmt::Display for BootLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartitionTable {
    /// The disk's [`BootLayout`].
    pub fn boot_layout(&self) -> BootLayout {
        match (&self.gpt, &self.mbr) {
            (Some(g), _) if g.entries.iter().any(GptEntry::is_esp) => BootLayout::GptWithEsp,
            (Some(_), _) => BootLayout::GptWithoutEsp,
            (None, Some(m)) if m.boot_signature => BootLayout::Mbr,
            _ => BootLayout::None,
        }
    }

    /// `true` when a BIOS would run sector 0's code with a chance of success: an MBR layout, or
    /// a GPT with a BIOS boot partition behind a protective MBR that carries boot code and the
    /// boot signature.
    pub fn bios_bootable(&self) -> bool {
        let mbr_ok = self
            .mbr
            .as_ref()
            .is_some_and(|m| m.boot_signature && m.has_boot_code);
        match &self.gpt {
            None => self.mbr.as_ref().is_some_and(|m| m.boot_signature),
            Some(g) => mbr_ok && g.entries.iter().any(GptEntry::is_bios_boot),
        }
    }

    /// One line for people: "GPT (3 partitions, EFI system partition 1)", "MBR (2 partitions,
    /// boot signature)", "none".
    pub fn summary(&self) -> String {
        if let Some(g) = &self.gpt {
            let esp = g
                .entries
                .iter()
                .find(|e| e.is_esp())
                .map(|e| format!(", EFI system partition {}", e.index))
                .unwrap_or_else(|| ", no EFI system partition".into());
            let bios = g
                .entries
                .iter()
                .find(|e| e.is_bios_boot())
                .map(|e| format!(", BIOS boot partition {}", e.index))
                .unwrap_or_default();
            let backup = if g.from_backup {
                ", read from the backup header"
            } else {
                ""
            };
            return format!("GPT ({} partitions{esp}{bios}{backup})", g.entries.len());
        }
        match &self.mbr {
            Some(m) if m.boot_signature => format!(
                "MBR ({} partitions, boot signature{}{})",
                m.entries.len(),
                if m.has_boot_code {
                    ", boot code"
                } else {
                    ", no boot code"
                },
                m.entries
                    .iter()
                    .find(|e| e.bootable)
                    .map(|e| format!(", active partition {}", e.slot))
                    .unwrap_or_default()
            ),
            Some(_) => "none (no 55 AA boot signature in sector 0, no GPT)".into(),
            None => "none (the disk is shorter than a sector)".into(),
        }
    }
}

/// The CRC-32 of IEEE 802.3 (reflected, polynomial 0xEDB88320), as GPT and PNG use it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// Continues a CRC-32 over more bytes (`crc` is a previous result, 0 to start).
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !crc;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn guid(b: &[u8], at: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[at..at + 16]);
    Guid(g)
}

/// A GPT header's fields (after its signature and CRC checked out).
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    array_crc: u32,
}

/// Checks and decodes the header in `sector`, read at `lba` of a disk of `sectors` sectors.
fn decode_header(
    sector: &[u8; 512],
    lba: u64,
    sectors: u64,
) -> std::result::Result<Header, String> {
    if &sector[..8] != GPT_SIGNATURE {
        return Err(format!(
            "LBA {lba}: no GPT header (signature \"EFI PART\" not found)"
        ));
    }
    let size = le32(sector, 12);
    if !(GPT_HEADER_MIN..=512).contains(&size) {
        return Err(format!(
            "LBA {lba}: GPT header size {size}, expected 92 to 512 bytes"
        ));
    }
    let want = le32(sector, 16);
    let mut h = sector[..size as usize].to_vec();
    h[16..20].fill(0);
    let got = crc32(&h);
    if got != want {
        return Err(format!(
            "LBA {lba}: GPT header CRC-32 is {got:08x}, the header records {want:08x}"
        ));
    }
    let hd = Header {
        my_lba: le64(sector, 24),
        alternate_lba: le64(sector, 32),
        first_usable: le64(sector, 40),
        last_usable: le64(sector, 48),
        disk_guid: guid(sector, 56),
        entries_lba: le64(sector, 72),
        count: le32(sector, 80),
        entry_size: le32(sector, 84),
        array_crc: le32(sector, 88),
    };
    if hd.my_lba != lba {
        return Err(format!(
            "LBA {lba}: GPT header says it lies at LBA {}",
            hd.my_lba
        ));
    }
    if hd.entry_size < 128 || !hd.entry_size.is_power_of_two() {
        return Err(format!(
            "LBA {lba}: GPT entry size {}, expected 128 times a power of two",
            hd.entry_size
        ));
    }
    let array = u64::from(hd.count) * u64::from(hd.entry_size);
    if array > GPT_ARRAY_MAX {
        return Err(format!(
            "LBA {lba}: GPT entry array of {} entries × {} bytes is larger than {GPT_ARRAY_MAX} bytes",
            hd.count, hd.entry_size
        ));
    }
    let array_sectors = array.div_ceil(SECTOR);
    if hd.entries_lba < 1
        || hd
            .entries_lba
            .checked_add(array_sectors)
            .is_none_or(|end| end > sectors)
    {
        return Err(format!(
            "LBA {lba}: GPT entry array at LBA {} ({array_sectors} sectors) lies outside the disk \
             ({sectors} sectors)",
            hd.entries_lba
        ));
    }
    if hd.first_usable > hd.last_usable || hd.last_usable >= sectors {
        return Err(format!(
            "LBA {lba}: GPT usable range {}..={} does not fit the disk ({sectors} sectors)",
            hd.first_usable, hd.last_usable
        ));
    }
    Ok(hd)
}

/// Reads and checks the entry array `hd` names.
fn read_entries(
    disk: &dyn DiskImage,
    hd: &Header,
    problems: &mut Vec<String>,
) -> Result<std::result::Result<Vec<GptEntry>, String>> {
    let size = hd.count as usize * hd.entry_size as usize;
    let mut array = vec![0u8; size];
    disk.read_exact_at(&mut array, hd.entries_lba * SECTOR)?;
    let got = crc32(&array);
    if got != hd.array_crc {
        return Ok(Err(format!(
            "LBA {}: GPT entry array CRC-32 is {got:08x}, the header records {:08x}",
            hd.entries_lba, hd.array_crc
        )));
    }
    let mut out = Vec::new();
    for (i, e) in array.chunks_exact(hd.entry_size as usize).enumerate() {
        let type_guid = guid(e, 0);
        if type_guid.is_zero() {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let entry = GptEntry {
            index: i as u32 + 1,
            type_guid,
            unique_guid: guid(e, 16),
            first_lba: le64(e, 32),
            last_lba: le64(e, 40),
            attributes: le64(e, 48),
            name: String::from_utf16_lossy(&units),
        };
        if entry.first_lba > entry.last_lba
            || entry.first_lba < hd.first_usable
            || entry.last_lba > hd.last_usable
        {
            problems.push(format!(
                "GPT entry {}: sectors {}..={} lie outside the usable range {}..={}",
                entry.index, entry.first_lba, entry.last_lba, hd.first_usable, hd.last_usable
            ));
        }
        out.push(entry);
    }
    Ok(Ok(out))
}

/// Reads the header at `lba` and its array: the table, or why not.
fn read_gpt_at(
    disk: &dyn DiskImage,
    lba: u64,
    sectors: u64,
    problems: &mut Vec<String>,
) -> Result<std::result::Result<(Header, Vec<GptEntry>), String>> {
    let mut sector = [0u8; 512];
    disk.read_exact_at(&mut sector, lba * SECTOR)?;
    let hd = match decode_header(&sector, lba, sectors) {
        Ok(h) => h,
        Err(why) => return Ok(Err(why)),
    };
    Ok(read_entries(disk, &hd, problems)?.map(|e| (hd, e)))
}

/// Reads the MBR and the GPT of `disk`.
///
/// Never fails on what the sectors hold (damage is reported in
/// [`PartitionTable::problems`]); only on read errors of the image.
///
/// # Errors
/// Reading the image fails.
pub fn read(disk: &dyn DiskImage) -> Result<PartitionTable> {
    let sectors = disk.len() / SECTOR;
    let mut problems = Vec::new();
    if sectors == 0 {
        return Ok(PartitionTable {
            mbr: None,
            gpt: None,
            problems,
        });
    }
    let mut s0 = [0u8; 512];
    disk.read_exact_at(&mut s0, 0)?;
    let mbr = Mbr::decode(&s0);
    let mut gpt = None;
    if sectors >= 3 {
        let primary = read_gpt_at(disk, 1, sectors, &mut problems)?;
        let primary_failed = primary.as_ref().err().cloned();
        let backup_lba = match &primary {
            Ok((h, _)) => h.alternate_lba,
            Err(_) => sectors - 1,
        };
        let backup = if backup_lba > 1 && backup_lba < sectors {
            let mut p = Vec::new();
            let b = read_gpt_at(disk, backup_lba, sectors, &mut p)?;
            if b.is_ok() && primary.is_err() {
                problems.extend(p);
            }
            Some(b)
        } else {
            None
        };
        match (primary, backup) {
            (Ok((h, entries)), b) => {
                match b {
                    Some(Ok((bh, be))) if be != entries || bh.disk_guid != h.disk_guid => {
                        problems.push(format!(
                            "the backup GPT at LBA {backup_lba} differs from the primary at LBA 1"
                        ));
                    }
                    Some(Err(why)) if mbr.is_protective() => {
                        problems.push(format!("backup GPT damaged: {why}"))
                    }
                    _ => {}
                }
                gpt = Some(Gpt {
                    disk_guid: h.disk_guid,
                    first_usable: h.first_usable,
                    last_usable: h.last_usable,
                    entries,
                    from_backup: false,
                });
            }
            (Err(_), Some(Ok((h, entries)))) => {
                if let Some(why) = primary_failed {
                    problems.push(format!("primary GPT damaged ({why}): the backup was read"));
                }
                gpt = Some(Gpt {
                    disk_guid: h.disk_guid,
                    first_usable: h.first_usable,
                    last_usable: h.last_usable,
                    entries,
                    from_backup: true,
                });
            }
            (Err(why), _) => {
                if mbr.is_protective() {
                    problems.push(format!(
                        "the MBR protects a GPT but neither header is valid: {why}"
                    ));
                }
            }
        }
    }
    if gpt.is_some() && !mbr.is_protective() {
        problems.push(
            "a GPT without a protective MBR (no 0xEE entry in sector 0): some firmware ignores it"
                .into(),
        );
    }
    Ok(PartitionTable {
        mbr: Some(mbr),
        gpt,
        problems,
    })
}

/// The disk's [`BootLayout`]: `read(disk)?.boot_layout()`.
///
/// # Errors
/// Reading the image fails.
pub fn boot_layout(disk: &dyn DiskImage) -> Result<BootLayout> {
    Ok(read(disk)?.boot_layout())
}

/// What a new partition of [`build_gpt`] is.
#[derive(Debug, Clone)]
pub struct NewGptPartition {
    /// Its type.
    pub type_guid: Guid,
    /// Its own GUID.
    pub unique_guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Its name (at most 36 UTF-16 units kept).
    pub name: String,
}

/// The sectors of a GPT for a disk of `sectors` sectors: the protective MBR (sector 0, with
/// `boot_code` in its first 440 bytes), the primary header and array (sectors 1–33) and the
/// backup array and header (the last 33 sectors), as `(byte offset, bytes)` pieces. 128 entries
/// of 128 bytes, as every tool writes.
///
/// # Errors
/// A partition outside the usable range, more than 128 partitions, or a disk under 68 sectors.
pub fn build_gpt(
    sectors: u64,
    disk_guid: Guid,
    parts: &[NewGptPartition],
    boot_code: &[u8],
) -> Result<Vec<(u64, Vec<u8>)>> {
    if sectors < 68 || parts.len() > 128 || boot_code.len() > 440 {
        return Err(Error::argument(format!(
            "a GPT needs at least 68 sectors (got {sectors}), at most 128 partitions (got {}) and \
             at most 440 bytes of boot code (got {})",
            parts.len(),
            boot_code.len()
        )));
    }
    let first_usable = 34;
    let last_usable = sectors - 34;
    let mut array = vec![0u8; 128 * 128];
    for (i, p) in parts.iter().enumerate() {
        if p.first_lba < first_usable || p.last_lba > last_usable || p.first_lba > p.last_lba {
            return Err(Error::argument(format!(
                "partition {}: sectors {}..={} outside the usable {first_usable}..={last_usable}",
                i + 1,
                p.first_lba,
                p.last_lba
            )));
        }
        let e = &mut array[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.unique_guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        for (j, u) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let array_crc = crc32(&array);
    let header = |my: u64, alt: u64, entries: u64| {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&GPT_HEADER_MIN.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.0);
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let c = crc32(&h[..GPT_HEADER_MIN as usize]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    };
    let mut mbr = vec![0u8; 512];
    mbr[..boot_code.len()].copy_from_slice(boot_code);
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = MBR_TYPE_PROTECTIVE;
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let covered = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    e[12..16].copy_from_slice(&covered.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    Ok(vec![
        (0, mbr),
        (SECTOR, header(1, sectors - 1, 2)),
        (2 * SECTOR, array.clone()),
        ((sectors - 33) * SECTOR, array),
        ((sectors - 1) * SECTOR, header(sectors - 1, 1, sectors - 33)),
    ])
}

/// Sector 0 of an MBR disk: `boot_code` (at most 440 bytes), the given primary entries (LBA
/// only; CHS fields set to the "use LBA" values) and the boot signature.
///
/// # Errors
/// More than four entries or more than 440 bytes of code.
pub fn build_mbr(boot_code: &[u8], entries: &[MbrEntry]) -> Result<[u8; 512]> {
    if entries.len() > 4 || boot_code.len() > 440 {
        return Err(Error::argument(format!(
            "an MBR holds 4 entries (got {}) and 440 bytes of code (got {})",
            entries.len(),
            boot_code.len()
        )));
    }
    let mut s = [0u8; 512];
    s[..boot_code.len()].copy_from_slice(boot_code);
    for (i, e) in entries.iter().enumerate() {
        let b = &mut s[446 + 16 * i..462 + 16 * i];
        b[0] = if e.bootable { 0x80 } else { 0 };
        b[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        b[4] = e.kind;
        b[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        b[8..12].copy_from_slice(&e.first_lba.to_le_bytes());
        b[12..16].copy_from_slice(&e.sectors.to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xAA;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemImage;
    use proptest::prelude::*;
    use std::path::Path;

    fn disk_with(sectors: u64, pieces: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut d = vec![0u8; (sectors * SECTOR) as usize];
        for (off, b) in pieces {
            d[*off as usize..*off as usize + b.len()].copy_from_slice(b);
        }
        d
    }

    fn esp(first: u64, last: u64) -> NewGptPartition {
        NewGptPartition {
            type_guid: ESP_TYPE,
            unique_guid: Guid([7; 16]),
            first_lba: first,
            last_lba: last,
            name: "EFI system partition".into(),
        }
    }

    #[test]
    fn guids_print_as_the_spec_writes_them() {
        assert_eq!(ESP_TYPE.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            BIOS_BOOT_TYPE.to_string(),
            "21686148-6449-6E6F-744E-656564454649"
        );
        // On disk: the first three fields little-endian.
        assert_eq!(&ESP_TYPE.0[..4], &[0x28, 0x73, 0x2A, 0xC1]);
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_update(crc32(b"1234"), b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn a_zeroed_disk_has_no_layout() {
        let t = read(&MemImage::new(vec![0; 1 << 16])).unwrap();
        assert_eq!(t.boot_layout(), BootLayout::None);
        assert!(t.problems.is_empty());
        let tiny = read(&MemImage::new(vec![0; 100])).unwrap();
        assert_eq!(tiny.boot_layout(), BootLayout::None);
    }

    #[test]
    fn an_mbr_with_signature_boots_by_bios() {
        let s = build_mbr(
            &[0xEB, 0xFE],
            &[MbrEntry {
                slot: 1,
                bootable: true,
                kind: 0x0C,
                first_lba: 2048,
                sectors: 100,
            }],
        )
        .unwrap();
        let d = disk_with(4096, &[(0, s.to_vec())]);
        let t = read(&MemImage::new(d)).unwrap();
        assert_eq!(t.boot_layout(), BootLayout::Mbr);
        let m = t.mbr.unwrap();
        assert!(m.boot_signature && m.has_boot_code && !m.is_protective());
        assert_eq!(m.entries[0].first_lba, 2048);
        assert!(m.entries[0].bootable);
    }

    #[test]
    fn gpt_with_and_without_esp() {
        let n = 8192;
        let with = build_gpt(n, Guid([1; 16]), &[esp(2048, 4095)], &[]).unwrap();
        let t = read(&MemImage::new(disk_with(n, &with))).unwrap();
        assert_eq!(t.boot_layout(), BootLayout::GptWithEsp, "{:?}", t.problems);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let g = t.gpt.as_ref().unwrap();
        assert_eq!(g.entries[0].name, "EFI system partition");
        assert!(t.summary().contains("EFI system partition 1"));

        let linux = NewGptPartition {
            type_guid: Guid::from_fields(
                0x0FC6_3DAF,
                0x8483,
                0x4772,
                *b"\x8E\x79\x3D\x69\xD8\x47\x7D\xE4",
            ),
            ..esp(2048, 4095)
        };
        let without = build_gpt(n, Guid([1; 16]), &[linux], &[]).unwrap();
        let t = read(&MemImage::new(disk_with(n, &without))).unwrap();
        assert_eq!(t.boot_layout(), BootLayout::GptWithoutEsp);
        assert!(!t.bios_bootable());
    }

    #[test]
    fn a_damaged_primary_falls_back_to_the_backup() {
        let n = 8192;
        let pieces = build_gpt(n, Guid([1; 16]), &[esp(2048, 4095)], &[]).unwrap();
        let mut d = disk_with(n, &pieces);
        d[512 + 40] ^= 1; // first usable LBA: the header CRC no longer matches
        let t = read(&MemImage::new(d.clone())).unwrap();
        assert_eq!(t.boot_layout(), BootLayout::GptWithEsp);
        assert!(t.gpt.as_ref().unwrap().from_backup);
        assert!(
            t.problems[0].contains("primary GPT damaged"),
            "{:?}",
            t.problems
        );
        assert!(t.problems[0].contains("CRC-32"), "{:?}", t.problems);
        // The entry array damaged instead.
        let mut d = disk_with(n, &pieces);
        d[1024] ^= 0xFF;
        let t = read(&MemImage::new(d)).unwrap();
        assert!(t.gpt.as_ref().unwrap().from_backup);
        assert!(
            t.problems[0].contains("entry array CRC-32"),
            "{:?}",
            t.problems
        );
        // Both gone: no GPT, and the protective MBR says one was meant to be there.
        let mut d = disk_with(n, &pieces);
        d[512] = 0;
        d[(n as usize - 1) * 512] = 0;
        let t = read(&MemImage::new(d)).unwrap();
        assert!(t.gpt.is_none());
        assert!(t.problems[0].contains("neither header"), "{:?}", t.problems);
        // A protective MBR alone still carries 55 AA: the layout is MBR (a BIOS would run it).
        assert_eq!(t.boot_layout(), BootLayout::Mbr);
    }

    #[test]
    fn bios_boot_partitions_make_a_gpt_bios_bootable() {
        let n = 8192;
        let bios = NewGptPartition {
            type_guid: BIOS_BOOT_TYPE,
            ..esp(2048, 4095)
        };
        let pieces = build_gpt(n, Guid([1; 16]), &[bios], &[0xEB, 0xFE]).unwrap();
        let t = read(&MemImage::new(disk_with(n, &pieces))).unwrap();
        assert_eq!(t.boot_layout(), BootLayout::GptWithoutEsp);
        assert!(t.bios_bootable());
    }

    #[test]
    fn the_fuzz_seeds_reach_the_gpt_paths() {
        let seed = |n: &str| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/seeds/partition_table")
                .join(n);
            read(&MemImage::new(std::fs::read(p).unwrap())).unwrap()
        };
        let t = seed("gpt-esp.img");
        assert_eq!(t.boot_layout(), BootLayout::GptWithEsp, "{:?}", t.problems);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let t = seed("gpt-primary-damaged.img");
        assert!(t.gpt.unwrap().from_backup);
        assert_eq!(seed("mbr-active.img").boot_layout(), BootLayout::Mbr);
    }

    /// The model: a list of partitions; what build_gpt writes, read gives back, in order.
    fn parts_strategy() -> impl Strategy<Value = (u64, Vec<(bool, u64, u64, String)>)> {
        (200u64..100_000).prop_flat_map(|n| {
            let part = (any::<bool>(), 34u64..n - 34, 0u64..1000, "[a-z]{0,40}");
            (Just(n), proptest::collection::vec(part, 0..6))
        })
    }

    proptest! {
        #[test]
        fn gpt_round_trips((n, parts) in parts_strategy()) {
            let ps: Vec<NewGptPartition> = parts
                .iter()
                .enumerate()
                .map(|(i, (is_esp, first, len, name))| NewGptPartition {
                    type_guid: if *is_esp { ESP_TYPE } else { Guid([0x11; 16]) },
                    unique_guid: Guid([i as u8 + 1; 16]),
                    first_lba: *first,
                    last_lba: (*first + len).min(n - 34),
                    name: name.clone(),
                })
                .collect();
            let pieces = build_gpt(n, Guid([9; 16]), &ps, &[]).unwrap();
            let t = read(&MemImage::new(disk_with(n, &pieces))).unwrap();
            let g = t.gpt.clone().unwrap();
            prop_assert!(!g.from_backup);
            prop_assert_eq!(g.entries.len(), ps.len());
            for (e, p) in g.entries.iter().zip(&ps) {
                prop_assert_eq!(e.first_lba, p.first_lba);
                prop_assert_eq!(e.last_lba, p.last_lba);
                let want: String = p.name.chars().take(36).collect();
                prop_assert_eq!(&e.name, &want);
            }
            let any_esp = parts.iter().any(|p| p.0);
            prop_assert_eq!(
                t.boot_layout(),
                if any_esp { BootLayout::GptWithEsp } else { BootLayout::GptWithoutEsp }
            );
        }

        #[test]
        fn any_sectors_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = read(&MemImage::new(bytes));
        }
    }
}
