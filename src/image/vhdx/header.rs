//! The two VHDX headers: signature, CRC-32C, sequence number, GUIDs, log placement.

use super::*;

/// The current header's fields we use.
#[derive(Debug, Clone)]
pub struct Header {
    /// Which copy (1 or 2) is current.
    pub copy: u8,
    /// Sequence number.
    pub sequence: u64,
    /// Data write GUID: a differencing child names its parent by it.
    pub data_write_guid: [u8; 16],
    /// Log GUID: all zero when the log is empty.
    pub log_guid: [u8; 16],
    /// Log length and offset.
    pub log_length: u32,
    /// Log offset.
    pub log_offset: u64,
}

pub(super) fn parse_header(b: &[u8], at: u64, copy: u8) -> Result<Header> {
    if &b[..4] != b"head" {
        return Err(Error::invalid(format!(
            "VHDX header {copy}: expected signature \"head\", found {}",
            crate::image::vhd::show_bytes(&b[..4])
        ))
        .with_offset(at));
    }
    let stored = le32(b, 4);
    let computed = crc_with_zeroed_field(b, 4);
    if stored != computed {
        return Err(Error::invalid(format!(
            "VHDX header {copy} checksum: expected 0x{computed:08x} (CRC-32C), found 0x{stored:08x}"
        ))
        .with_offset(at + 4));
    }
    let version = u16::from_le_bytes([b[66], b[67]]);
    if version != 1 {
        return Err(Error::unsupported(format!(
            "VHDX header {copy} version: expected 1, found {version}"
        ))
        .with_offset(at + 66));
    }
    let mut log_guid = [0u8; 16];
    log_guid.copy_from_slice(&b[48..64]);
    let mut data_write_guid = [0u8; 16];
    data_write_guid.copy_from_slice(&b[32..48]);
    Ok(Header {
        copy,
        sequence: le64(b, 8),
        data_write_guid,
        log_guid,
        log_length: le32(b, 68),
        log_offset: le64(b, 72),
    })
}

/// The current header: the valid one of the two with the higher sequence number.
pub(super) fn read_headers(file: &dyn DiskImage) -> Result<Header> {
    let mut headers = Vec::new();
    let mut errors = Vec::new();
    for (i, &at) in HEADER_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; HEADER_SIZE];
        file.read_exact_at(&mut b, at)?;
        match parse_header(&b, at, i as u8 + 1) {
            Ok(h) => headers.push(h),
            Err(e) => errors.push(e),
        }
    }
    let Some(header) = headers.into_iter().max_by_key(|h| h.sequence) else {
        let e = errors.remove(0);
        return Err(Error::invalid(format!(
            "VHDX: neither header is valid ({}; {})",
            e,
            errors.first().map(|e| e.to_string()).unwrap_or_default()
        ))
        .with_offset(e.offset().unwrap_or(HEADER_OFFSETS[0])));
    };
    Ok(header)
}
