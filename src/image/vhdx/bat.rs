//! The block allocation table: payload entries interleaved with sector-bitmap entries.

use super::*;

/// The sector-bitmap BAT entry of the chunk holding payload `block`, from the raw table.
pub(super) fn sector_bitmaps_entry(raw: &[u8], block: u64, chunk_ratio: u64) -> u64 {
    let chunk = block / chunk_ratio;
    let i = (chunk * (chunk_ratio + 1) + chunk_ratio) as usize * 8;
    raw.get(i..i + 8).map_or(0, |b| le64(b, 0))
}

/// Reads and checks the BAT: one entry per payload block (state, file offset) and, after every
/// `chunk_ratio` of them, a sector-bitmap entry (kept for differencing disks only). Every
/// payload block must lie inside the file and off the headers, BAT, metadata and log.
pub(super) fn read_bat(
    file: &dyn DiskImage,
    header: &Header,
    bat_region: (u64, u32),
    meta_region: (u64, u32),
    meta: &Metadata,
    chunk_ratio: u64,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let len = file.len();
    let differencing = meta.has_parent;
    let block_size = u64::from(meta.block_size);
    let blocks = meta.size.div_ceil(block_size);
    // A differencing disk has a sector-bitmap entry after every chunk, the last one too.
    let entries = if blocks == 0 {
        0
    } else if differencing {
        blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else {
        blocks + (blocks - 1) / chunk_ratio
    };
    if entries > MAX_BAT_ENTRIES {
        return Err(Error::limit(format!(
            "VHDX: {entries} BAT entries is more than the {MAX_BAT_ENTRIES} this tool holds \
             in memory"
        )));
    }
    if entries * 8 > u64::from(bat_region.1) {
        return Err(Error::invalid(format!(
            "VHDX BAT region: {} bytes, but a {}-byte disk in {block_size}-byte blocks needs \
             {entries} entries ({} bytes)",
            bat_region.1,
            meta.size,
            entries * 8
        ))
        .with_offset(bat_region.0));
    }
    let mut raw = vec![0u8; (entries * 8) as usize];
    file.read_exact_at(&mut raw, bat_region.0)?;
    // Structures a payload or bitmap block must not overlap: their bytes are not disk data.
    let reserved = [
        ("headers and region tables", 0, MIB),
        (
            "block allocation table",
            bat_region.0,
            u64::from(bat_region.1),
        ),
        ("metadata region", meta_region.0, u64::from(meta_region.1)),
        ("log", header.log_offset, u64::from(header.log_length)),
    ];
    let overlaps = |off: u64, n: u64| {
        reserved
            .iter()
            .find(|(_, s, l)| off < s.saturating_add(*l) && off.saturating_add(n) > *s)
            .map(|(what, _, _)| *what)
    };
    let mut bat = Vec::with_capacity(blocks as usize);
    let mut sector_bitmaps = Vec::new();
    for (i, e) in raw.chunks_exact(8).map(|c| le64(c, 0)).enumerate() {
        let i = i as u64;
        let at = bat_region.0 + i * 8;
        if (i + 1).is_multiple_of(chunk_ratio + 1) {
            // A sector-bitmap entry: only differencing disks use them.
            if differencing {
                let off = (e >> 20) * MIB;
                if e & 7 == SB_BLOCK_PRESENT
                    && (off < MIB
                        || off.checked_add(MIB).is_none_or(|end| end > len)
                        || overlaps(off, MIB).is_some())
                {
                    return Err(Error::invalid(format!(
                        "VHDX sector bitmap {}: the BAT places it at offset {off}, outside \
                         the {len}-byte file",
                        sector_bitmaps.len()
                    ))
                    .with_offset(at));
                }
                sector_bitmaps.push(e);
            }
            continue;
        }
        if bat.len() as u64 == blocks {
            continue; // padding entries of the last chunk
        }
        let block = bat.len() as u64;
        let state = e & 7;
        // Bits 3–19 are reserved and zero: anything else is a damaged table.
        if e & 0xF_FFF8 != 0 {
            return Err(Error::invalid(format!(
                "VHDX block {block}: BAT entry 0x{e:016x} has reserved bits set"
            ))
            .with_offset(at));
        }
        match state {
            PAYLOAD_NOT_PRESENT | PAYLOAD_ZERO => {}
            PAYLOAD_UNDEFINED | PAYLOAD_UNMAPPED if !differencing => {}
            PAYLOAD_UNDEFINED | PAYLOAD_UNMAPPED => {
                // The specification leaves open whether these read as zeros or as the
                // parent's data in a differencing disk: refuse rather than guess.
                return Err(Error::unsupported(format!(
                    "VHDX block {block}: state {} in a differencing disk, whose contents \
                     (zeros or the parent's) the specification leaves open; refusing rather \
                     than guessing",
                    if state == PAYLOAD_UNDEFINED {
                        "UNDEFINED (1)"
                    } else {
                        "UNMAPPED (3)"
                    }
                ))
                .with_offset(at));
            }
            PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT
                if differencing || state == PAYLOAD_FULLY_PRESENT =>
            {
                let off = (e >> 20) * MIB;
                if off < MIB || off.checked_add(block_size).is_none_or(|end| end > len) {
                    return Err(Error::invalid(format!(
                        "VHDX block {block}: the BAT places it at offset {off}, outside the \
                         {len}-byte file"
                    ))
                    .with_offset(at));
                }
                if let Some(what) = overlaps(off, block_size) {
                    return Err(Error::invalid(format!(
                        "VHDX block {block}: the BAT places it at offset {off}, over the {what}"
                    ))
                    .with_offset(at));
                }
            }
            PAYLOAD_PARTIALLY_PRESENT => {
                return Err(Error::invalid(format!(
                    "VHDX block {block}: state PARTIALLY PRESENT (7) in a disk without a \
                     parent"
                ))
                .with_offset(at));
            }
            other => {
                return Err(Error::invalid(format!(
                    "VHDX block {block}: unknown payload block state {other}"
                ))
                .with_offset(at));
            }
        }
        if state == PAYLOAD_PARTIALLY_PRESENT {
            let sb = sector_bitmaps_entry(&raw, block, chunk_ratio);
            if sb & 7 != SB_BLOCK_PRESENT {
                return Err(Error::invalid(format!(
                    "VHDX block {block}: PARTIALLY PRESENT, but the sector bitmap of its \
                     chunk is not present"
                ))
                .with_offset(at));
            }
        }
        bat.push(e);
    }
    Ok((bat, sector_bitmaps))
}
