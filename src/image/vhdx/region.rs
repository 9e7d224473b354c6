//! The region tables: where the BAT and the metadata region lie.

use super::*;

/// Parses a region table; returns the (offset, length) of the BAT and metadata regions.
pub(super) fn parse_region_table(
    b: &[u8],
    at: u64,
    copy: usize,
    file_len: u64,
) -> Result<((u64, u32), (u64, u32))> {
    if &b[..4] != b"regi" {
        return Err(Error::invalid(format!(
            "VHDX region table {copy}: expected signature \"regi\", found {}",
            crate::image::vhd::show_bytes(&b[..4])
        ))
        .with_offset(at));
    }
    let stored = le32(b, 4);
    let computed = crc_with_zeroed_field(b, 4);
    if stored != computed {
        return Err(Error::invalid(format!(
            "VHDX region table {copy} checksum: expected 0x{computed:08x} (CRC-32C), found \
             0x{stored:08x}"
        ))
        .with_offset(at + 4));
    }
    let count = le32(b, 8);
    if count > MAX_TABLE_ENTRIES {
        return Err(Error::invalid(format!(
            "VHDX region table {copy}: {count} entries, at most {MAX_TABLE_ENTRIES} allowed"
        ))
        .with_offset(at + 8));
    }
    let (mut bat, mut meta) = (None, None);
    for i in 0..count as usize {
        let e = &b[16 + i * 32..16 + (i + 1) * 32];
        let mut g = [0u8; 16];
        g.copy_from_slice(&e[..16]);
        let (off, length, required) = (le64(e, 16), le32(e, 24), le32(e, 28) & 1 != 0);
        let entry_at = at + 16 + i as u64 * 32;
        if off
            .checked_add(u64::from(length))
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::invalid(format!(
                "VHDX region {}: {length} bytes at offset {off} reach past the end of the \
                 {file_len}-byte file",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
        if (g == BAT_REGION && bat.is_some()) || (g == METADATA_REGION && meta.is_some()) {
            return Err(Error::invalid(format!(
                "VHDX region table {copy}: region {} appears twice",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
        if g == BAT_REGION {
            bat = Some((off, length));
        } else if g == METADATA_REGION {
            meta = Some((off, length));
        } else if required {
            return Err(Error::unsupported(format!(
                "VHDX region {} is marked required but is unknown to this tool",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
    }
    match (bat, meta) {
        (Some(b), Some(m)) => Ok((b, m)),
        _ => Err(Error::invalid(format!(
            "VHDX region table {copy}: the BAT and metadata regions are required, found {}",
            match (bat, meta) {
                (None, None) => "neither",
                (None, _) => "no BAT",
                _ => "no metadata",
            }
        ))
        .with_offset(at)),
    }
}

/// The BAT and metadata regions, from the first valid region table; two valid tables must
/// agree.
pub(super) fn read_region_tables(file: &dyn DiskImage) -> Result<((u64, u32), (u64, u32))> {
    let len = file.len();
    let mut regions = None;
    let mut region_errors = Vec::new();
    for (i, &at) in REGION_TABLE_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        file.read_exact_at(&mut b, at)?;
        match parse_region_table(&b, at, i + 1, len) {
            Ok(r) => match regions {
                Some(first) if first != r => {
                    return Err(Error::invalid(
                        "VHDX: both region tables are valid but place the BAT or metadata \
                         differently; refusing rather than guessing which is right",
                    )
                    .with_offset(at));
                }
                _ => regions = Some(r),
            },
            Err(e) => region_errors.push(e),
        }
    }
    let Some((bat_region, meta_region)) = regions else {
        let e = region_errors.remove(0);
        let off = e.offset().unwrap_or(REGION_TABLE_OFFSETS[0]);
        return Err(
            Error::invalid(format!("VHDX: neither region table is valid ({e})")).with_offset(off),
        );
    };

    Ok((bat_region, meta_region))
}
