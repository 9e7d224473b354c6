//! The metadata region: file parameters, virtual size, sector sizes, the parent locator.

use super::*;

/// VHDX parent locator type B04AEFB7-D19E-4A81-B789-25B8E9445913.
pub(super) const VHDX_PARENT_LOCATOR_TYPE: [u8; 16] = guid(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);

/// Decodes a parent locator item into its key/value pairs (UTF-16LE strings).
pub(super) fn locator_entries(item: &[u8]) -> Result<Vec<(String, String)>> {
    if item.len() < 20 || item[..16] != VHDX_PARENT_LOCATOR_TYPE {
        return Err(Error::unsupported(
            "differencing VHDX: the parent locator is not of the VHDX type \
             (B04AEFB7-D19E-4A81-B789-25B8E9445913)",
        ));
    }
    let count = u16::from_le_bytes([item[18], item[19]]) as usize;
    let text = |off: u32, len: u16| -> Option<String> {
        let start = off as usize;
        let s = item.get(start..start.checked_add(len as usize)?)?;
        let units: Vec<u16> = s
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).ok()
    };
    let mut out = Vec::new();
    for i in 0..count {
        let e = item.get(20 + i * 12..32 + i * 12).ok_or_else(|| {
            Error::invalid(format!(
                "differencing VHDX: parent locator entry {i} lies outside the item"
            ))
        })?;
        let (ko, vo) = (le32(e, 0), le32(e, 4));
        let (kl, vl) = (
            u16::from_le_bytes([e[8], e[9]]),
            u16::from_le_bytes([e[10], e[11]]),
        );
        match (text(ko, kl), text(vo, vl)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => {
                return Err(Error::invalid(format!(
                    "differencing VHDX: parent locator entry {i} is not valid UTF-16 inside \
                     the item"
                )));
            }
        }
    }
    Ok(out)
}

pub(super) struct Metadata {
    pub(super) block_size: u32,
    pub(super) has_parent: bool,
    pub(super) parent_locator: Option<Vec<u8>>,
    pub(super) size: u64,
    pub(super) logical_sector_size: u32,
}

pub(super) fn parse_metadata(file: &dyn DiskImage, (at, length): (u64, u32)) -> Result<Metadata> {
    let length = u64::from(length);
    if !(64 * KIB..=MAX_METADATA_REGION).contains(&length) {
        return Err(Error::invalid(format!(
            "VHDX metadata region: {length} bytes, expected 64 KiB to {MAX_METADATA_REGION}"
        ))
        .with_offset(at));
    }
    let mut m = vec![0u8; length as usize];
    file.read_exact_at(&mut m, at)?;
    if &m[..8] != b"metadata" {
        return Err(Error::invalid(format!(
            "VHDX metadata table: expected signature \"metadata\", found {}",
            crate::image::vhd::show_bytes(&m[..8])
        ))
        .with_offset(at));
    }
    let count = u32::from(u16::from_le_bytes([m[10], m[11]]));
    if count > MAX_TABLE_ENTRIES {
        return Err(Error::invalid(format!(
            "VHDX metadata table: {count} entries, at most {MAX_TABLE_ENTRIES} allowed"
        ))
        .with_offset(at + 10));
    }
    let (mut params, mut size, mut lss, mut pss) = (None, None, None, None);
    let mut parent_locator = None;
    let mut seen = std::collections::HashSet::new();
    for i in 0..count as usize {
        let e = &m[32 + i * 32..32 + (i + 1) * 32];
        let entry_at = at + 32 + i as u64 * 32;
        let mut g = [0u8; 16];
        g.copy_from_slice(&e[..16]);
        // Two items with one id would make the file ambiguous.
        if !seen.insert(g) {
            return Err(Error::invalid(format!(
                "VHDX metadata item {} appears twice",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
        let (off, len, flags) = (le32(e, 16) as usize, le32(e, 20) as usize, le32(e, 24));
        let required = flags & 4 != 0;
        let Some(item) = off.checked_add(len).and_then(|end| m.get(off..end)) else {
            return Err(Error::invalid(format!(
                "VHDX metadata item {}: {len} bytes at {off} lie outside the {length}-byte region",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        };
        let need = |n: usize| -> Result<()> {
            if item.len() < n {
                return Err(Error::invalid(format!(
                    "VHDX metadata item {}: {} bytes, expected {n}",
                    show_guid(&g),
                    item.len()
                ))
                .with_offset(entry_at));
            }
            Ok(())
        };
        if g == FILE_PARAMETERS {
            need(8)?;
            params = Some((le32(item, 0), le32(item, 4)));
        } else if g == VIRTUAL_DISK_SIZE {
            need(8)?;
            size = Some(le64(item, 0));
        } else if g == LOGICAL_SECTOR_SIZE {
            need(4)?;
            lss = Some(le32(item, 0));
        } else if g == PHYSICAL_SECTOR_SIZE {
            need(4)?;
            pss = Some(le32(item, 0));
        } else if g == PARENT_LOCATOR {
            parent_locator = Some(item.to_vec());
        } else if g == VIRTUAL_DISK_ID {
            // Known; not needed for reading.
        } else if required {
            return Err(Error::unsupported(format!(
                "VHDX metadata item {} is marked required but is unknown to this tool",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
    }
    let missing = |what: &str| {
        Error::invalid(format!(
            "VHDX metadata: the required {what} item is missing"
        ))
        .with_offset(at)
    };
    let (block_size, flags) = params.ok_or_else(|| missing("file parameters"))?;
    let size = size.ok_or_else(|| missing("virtual disk size"))?;
    let lss = lss.ok_or_else(|| missing("logical sector size"))?;
    let pss = pss.ok_or_else(|| missing("physical sector size"))?;
    if !block_size.is_power_of_two() || !(MIB as u32..=256 * MIB as u32).contains(&block_size) {
        return Err(Error::invalid(format!(
            "VHDX block size: expected a power of two from 1 MiB to 256 MiB, found {block_size}"
        ))
        .with_offset(at));
    }
    if lss != 512 && lss != 4096 {
        return Err(Error::invalid(format!(
            "VHDX logical sector size: expected 512 or 4096, found {lss}"
        ))
        .with_offset(at));
    }
    if pss != 512 && pss != 4096 {
        return Err(Error::invalid(format!(
            "VHDX physical sector size: expected 512 or 4096, found {pss}"
        ))
        .with_offset(at));
    }
    if size == 0 || size % u64::from(lss) != 0 || size > 64 << 40 {
        return Err(Error::invalid(format!(
            "VHDX virtual disk size: expected a multiple of the {lss}-byte sector up to 64 TiB, \
             found {size}"
        ))
        .with_offset(at));
    }
    Ok(Metadata {
        block_size,
        has_parent: flags & 2 != 0,
        parent_locator,
        size,
        logical_sector_size: lss,
    })
}
