//! Dynamic and differencing VHDs.
//!
//! ```text
//! offset 0            footer copy (512 bytes, as the footer at the end)
//! footer.data_offset  dynamic header (1024 bytes, big-endian):
//!      0    8 cookie                "cxsparse"
//!      8    8 data offset           0xFFFFFFFFFFFFFFFF (unused)
//!     16    8 table offset          absolute offset of the block allocation table (BAT)
//!     24    4 header version        0x00010000
//!     28    4 max table entries     number of BAT entries
//!     32    4 block size            bytes per block (2 MiB by default), a power of two
//!     36    4 checksum              one's complement of the byte sum, this field zeroed
//!     40   16 parent unique id      differencing: the parent footer's unique id
//!     56    4 parent timestamp
//!     60    4 reserved
//!     64  512 parent unicode name   UTF-16BE
//!    576  192 parent locators       8 × 24 bytes: code, data space, data length, reserved, offset
//!    768  256 reserved
//! table offset        BAT: one big-endian u32 per block, the block's sector number,
//!                     0xFFFFFFFF = not allocated
//! sector × 512        a block: its sector bitmap (one bit per sector, MSB first, padded to a
//!                     whole sector), then the block's data
//! end                 footer
//! ```
//!
//! A dynamic disk reads unallocated blocks as zeros and allocated blocks from the file (the sector
//! bitmap is ignored, as qemu does). A differencing disk reads an unallocated block, and every
//! sector whose bitmap bit is clear, from its parent — found through the parent locators (relative
//! then absolute, resolved from the child's folder), checked against the parent's unique id,
//! opened read-only, at most [`MAX_CHAIN_DEPTH`] deep. A missing or mismatched parent is an error,
//! never zeros.

use super::{COOKIE, DiskType, FOOTER_SIZE, Footer, format_uuid};
use crate::error::{Error, Result, ResultExt};
use crate::image::{
    DiskImage, ExtentKind, ExtentMap, Format, RawImage, for_each_block_piece, readable,
};
use std::path::{Path, PathBuf};
use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The dynamic header's cookie.
pub const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// Size of the dynamic header.
pub const HEADER_SIZE: usize = 1024;
/// A BAT entry for a block that is not allocated.
pub const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// How many differencing disks may stack on each other before we refuse (a loop guard).
pub const MAX_CHAIN_DEPTH: usize = 16;
/// Largest block size we accept: 256 MiB (Hyper-V uses 2 MiB; anything bigger is suspect).
const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Most BAT entries we hold in memory (64 MiB of table): 32 TiB in 2 MiB blocks, the largest
/// disk Azure takes. The table comes from the file, so it must not size our memory unchecked.
const MAX_BAT_ENTRIES: u64 = 16 << 20;

/// A parent locator entry as it lies on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct RawLocator {
    /// Platform code: "W2ru" (relative, UTF-16LE), "W2ku" (absolute, UTF-16LE), "Wi2r"/"Wi2k"
    /// (deprecated, ASCII), "Mac "/"MacX" (Mac OS alias / file URL, UTF-8), or zero.
    pub code: [u8; 4],
    /// Space reserved for the locator, in sectors (or bytes, by some writers).
    pub data_space: U32,
    /// Length of the locator in bytes.
    pub data_length: U32,
    /// Reserved.
    pub reserved: U32,
    /// Absolute file offset of the locator.
    pub data_offset: U64,
}

/// The dynamic header as it lies on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
pub struct RawHeader {
    cookie: [u8; 8],
    data_offset: U64,
    table_offset: U64,
    version: U32,
    max_table_entries: U32,
    block_size: U32,
    checksum: U32,
    parent_unique_id: [u8; 16],
    parent_timestamp: U32,
    reserved1: U32,
    parent_name: [u8; 512],
    locators: [RawLocator; 8],
    reserved2: [u8; 256],
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_SIZE);

/// One's complement of the byte sum of a dynamic header, the checksum field counted as zero.
pub fn header_checksum(bytes: &[u8; HEADER_SIZE]) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(36..40).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

/// The decoded dynamic header.
#[derive(Debug, Clone)]
pub struct DynamicHeader {
    /// Offset of the BAT.
    pub table_offset: u64,
    /// Header version.
    pub version: u32,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Block size in bytes.
    pub block_size: u32,
    /// The parent's unique id (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// The parent's name, decoded from UTF-16BE.
    pub parent_name: String,
    /// The parent locators in use.
    pub locators: Vec<RawLocator>,
}

impl DynamicHeader {
    /// Decodes and validates a dynamic header read at `at` from a file of `file_len` bytes.
    ///
    /// # Errors
    /// Bad cookie, checksum, version, block size, or a table outside the file.
    pub fn parse(bytes: &[u8; HEADER_SIZE], at: u64, file_len: u64) -> Result<Self> {
        let raw = RawHeader::read_from_bytes(bytes.as_slice()).unwrap_or_else(|_| unreachable!());
        if &raw.cookie != HEADER_COOKIE {
            return Err(Error::invalid(format!(
                "VHD dynamic header cookie: expected \"cxsparse\", found {}",
                super::show_bytes(&raw.cookie)
            ))
            .with_offset(at));
        }
        let sum = header_checksum(bytes);
        if sum != raw.checksum.get() {
            return Err(Error::invalid(format!(
                "VHD dynamic header checksum: expected 0x{sum:08x} (computed), found 0x{:08x}",
                raw.checksum.get()
            ))
            .with_offset(at + 36));
        }
        let version = raw.version.get();
        if version >> 16 != 1 {
            return Err(Error::unsupported(format!(
                "VHD dynamic header version: expected 1.x (0x00010000), found 0x{version:08x}"
            ))
            .with_offset(at + 24));
        }
        let block_size = raw.block_size.get();
        if !block_size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(Error::invalid(format!(
                "VHD block size: expected a power of two from 512 to {MAX_BLOCK_SIZE}, found \
                 {block_size}"
            ))
            .with_offset(at + 32));
        }
        let table_offset = raw.table_offset.get();
        let table_len = u64::from(raw.max_table_entries.get()) * 4;
        if table_offset
            .checked_add(table_len)
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::invalid(format!(
                "VHD block allocation table: {} entries at offset {table_offset} reach past the \
                 end of the {file_len}-byte file",
                raw.max_table_entries.get()
            ))
            .with_offset(at + 16));
        }
        let name: Vec<u16> = raw
            .parent_name
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        Ok(DynamicHeader {
            table_offset,
            version,
            max_table_entries: raw.max_table_entries.get(),
            block_size,
            parent_unique_id: raw.parent_unique_id,
            parent_name: String::from_utf16_lossy(&name),
            locators: raw
                .locators
                .iter()
                .filter(|l| l.code != [0; 4] && l.data_length.get() > 0)
                .copied()
                .collect(),
        })
    }
}

/// A dynamic or differencing VHD.
pub struct DynamicVhd {
    file: Box<dyn DiskImage>,
    path: Option<PathBuf>,
    footer: Footer,
    header: DynamicHeader,
    bat: Vec<u32>,
    size: u64,
    block_size: u64,
    /// Bytes of sector bitmap before each block's data (whole sectors).
    bitmap_size: u64,
    parent: Option<Box<dyn DiskImage>>,
    parent_path: Option<PathBuf>,
}

impl std::fmt::Debug for DynamicVhd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicVhd")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("parent", &self.parent_path)
            .finish()
    }
}

/// Reads the footer copy at 0 (or, if that is damaged, the footer at the end).
fn read_footer(file: &dyn DiskImage) -> Result<Footer> {
    let len = file.len();
    if len < FOOTER_SIZE * 2 + HEADER_SIZE as u64 {
        return Err(Error::invalid(format!(
            "dynamic VHD: the file is {len} bytes, too short for two footers and a header"
        )));
    }
    let mut head = [0u8; 512];
    file.read_exact_at(&mut head, 0)?;
    let mut tail = [0u8; 512];
    file.read_exact_at(&mut tail, len - FOOTER_SIZE)?;
    let check = |bytes: &[u8; 512], at: u64| -> Result<Footer> {
        let f = Footer::decode(bytes);
        if &f.cookie != COOKIE {
            return Err(Error::invalid(format!(
                "VHD footer cookie: expected \"conectix\", found {}",
                super::show_bytes(&f.cookie)
            ))
            .with_offset(at));
        }
        let sum = super::checksum(bytes);
        if sum != f.checksum {
            return Err(Error::invalid(format!(
                "VHD footer checksum: expected 0x{sum:08x} (computed), found 0x{:08x}",
                f.checksum
            ))
            .with_offset(at + 64));
        }
        match f.disk_type {
            DiskType::Dynamic | DiskType::Differencing => Ok(f),
            other => Err(Error::invalid(format!(
                "VHD disk type: a footer copy at offset 0 means a dynamic (3) or differencing \
                 (4) disk, found {}",
                other.as_u32()
            ))
            .with_offset(at + 60)),
        }
    };
    // The copy at 0 first, as qemu reads it; the end copy when the head is damaged. Two valid
    // copies that disagree leave no way to know which is right.
    match (check(&head, 0), check(&tail, len - FOOTER_SIZE)) {
        (Ok(h), Ok(t)) => {
            if (h.current_size, h.disk_type, h.unique_id, h.data_offset)
                != (t.current_size, t.disk_type, t.unique_id, t.data_offset)
            {
                return Err(Error::invalid(
                    "dynamic VHD: the footer copy at offset 0 and the footer at the end are both \
                     valid but disagree (size, type, id or data offset)",
                )
                .with_offset(len - FOOTER_SIZE));
            }
            Ok(h)
        }
        (Ok(h), Err(_)) => Ok(h),
        (Err(_), Ok(t)) => Ok(t),
        (Err(head_err), Err(tail_err)) => Err(Error::invalid(format!(
            "dynamic VHD: neither footer copy is valid: {head_err}; {tail_err}"
        ))
        .with_offset(head_err.offset().unwrap_or(0))),
    }
}

/// Decodes a parent locator's bytes into a path, resolved against `dir`.
fn locator_path(code: &[u8; 4], data: &[u8], dir: &Path) -> Option<PathBuf> {
    let text = match code {
        b"W2ru" | b"W2ku" => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            String::from_utf16(&units).ok()?
        }
        b"Wi2r" | b"Wi2k" => {
            String::from_utf8(data.iter().copied().take_while(|&b| b != 0).collect()).ok()?
        }
        b"Mac " | b"MacX" => {
            let s =
                String::from_utf8(data.iter().copied().take_while(|&b| b != 0).collect()).ok()?;
            s.strip_prefix("file://").map(str::to_string).unwrap_or(s)
        }
        _ => return None,
    };
    // Windows paths: "\" separators, ".\" prefixes, and drive letters we cannot resolve here.
    let text = text.replace('\\', "/");
    let p = Path::new(&text);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    })
}

impl DynamicVhd {
    /// Opens the dynamic or differencing VHD at `path` (read-only), and its parents.
    ///
    /// # Errors
    /// Any damaged structure; a differencing disk whose parent cannot be found, is not the
    /// parent it names, or nests more than [`MAX_CHAIN_DEPTH`] deep.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at_depth(path, 0).path(path)
    }

    fn open_at_depth(path: &Path, depth: usize) -> Result<Self> {
        Self::parse(Box::new(RawImage::open(path)?), Some(path), depth)
    }

    /// Reads a dynamic or differencing VHD from `file`. A differencing disk's parent is looked
    /// for beside `path`; without a path it cannot be found, which is an error.
    ///
    /// # Errors
    /// As [`DynamicVhd::open`].
    pub fn parse(file: Box<dyn DiskImage>, path: Option<&Path>, depth: usize) -> Result<Self> {
        let len = file.len();
        let footer = read_footer(&*file)?;
        footer.check_chs_size(0)?;
        let hdr_at = footer.data_offset;
        if hdr_at
            .checked_add(HEADER_SIZE as u64)
            .is_none_or(|e| e > len)
        {
            return Err(Error::invalid(format!(
                "dynamic VHD: footer data offset {hdr_at}: the dynamic header would lie past the end of \
                 the {len}-byte file"
            ))
            .with_offset(16));
        }
        let mut hb = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut hb, hdr_at)?;
        let header = DynamicHeader::parse(&hb, hdr_at, len)?;
        let size = footer.virtual_size();
        let block_size = u64::from(header.block_size);
        let blocks = size.div_ceil(block_size);
        if blocks > u64::from(header.max_table_entries) {
            return Err(Error::invalid(format!(
                "VHD block allocation table: a {size}-byte disk needs {blocks} entries of \
                 {block_size} bytes, the table has {}",
                header.max_table_entries
            ))
            .with_offset(hdr_at + 28));
        }
        if blocks > MAX_BAT_ENTRIES {
            return Err(Error::limit(format!(
                "dynamic VHD: {blocks} blocks of {block_size} bytes is more than the \
                 {MAX_BAT_ENTRIES} this tool holds in memory (a {size}-byte disk)"
            )));
        }
        let bitmap_size = (block_size / 512).div_ceil(8).div_ceil(512) * 512;
        // Only the entries the disk uses: the table may be longer.
        let mut raw_bat = vec![0u8; blocks as usize * 4];
        file.read_exact_at(&mut raw_bat, header.table_offset)?;
        let bat: Vec<u32> = raw_bat
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (i, &e) in bat.iter().enumerate() {
            if e == UNALLOCATED {
                continue;
            }
            let start = u64::from(e) * 512;
            let end = start + bitmap_size + block_size;
            if end > len - FOOTER_SIZE {
                return Err(Error::invalid(format!(
                    "VHD block {i}: the table places it at sector {e}, so it ends at byte {end}, \
                     past the end of the data area of the {len}-byte file (the footer is its last 512 bytes)"
                ))
                .with_offset(header.table_offset + i as u64 * 4));
            }
            // A block must not overlap the footer copy, the header or the table: those bytes
            // would be read as disk data.
            let table_end = header.table_offset + blocks * 4;
            for (what, s, e2) in [
                ("footer copy", 0, FOOTER_SIZE),
                ("dynamic header", hdr_at, hdr_at + HEADER_SIZE as u64),
                ("block allocation table", header.table_offset, table_end),
            ] {
                if start < e2 && end > s {
                    return Err(Error::invalid(format!(
                        "VHD block {i}: the table places it at sector {e}, over the {what}"
                    ))
                    .with_offset(header.table_offset + i as u64 * 4));
                }
            }
        }
        let mut vhd = DynamicVhd {
            file,
            path: path.map(Path::to_path_buf),
            footer,
            header,
            bat,
            size,
            block_size,
            bitmap_size,
            parent: None,
            parent_path: None,
        };
        if vhd.footer.disk_type == DiskType::Differencing {
            let Some(path) = path else {
                return Err(Error::unsupported(
                    "differencing VHD without a file path: its parent cannot be looked for",
                ));
            };
            vhd.open_parent(path, depth)?;
        }
        Ok(vhd)
    }

    fn open_parent(&mut self, path: &Path, depth: usize) -> Result<()> {
        if depth + 1 >= MAX_CHAIN_DEPTH {
            return Err(Error::unsupported(format!(
                "differencing VHD chain deeper than {MAX_CHAIN_DEPTH}: refusing (a loop?)"
            )));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tried: Vec<String> = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        // Relative locators first: they survive moving the whole chain.
        let mut locs = self.header.locators.clone();
        locs.sort_by_key(|l| match &l.code {
            b"W2ru" | b"Wi2r" => 0,
            _ => 1,
        });
        for l in &locs {
            let n = l.data_length.get() as usize;
            let at = l.data_offset.get();
            if n > 64 * 1024 || at.checked_add(n as u64).is_none_or(|e| e > self.file.len()) {
                continue;
            }
            let mut data = vec![0u8; n];
            self.file.read_exact_at(&mut data, at)?;
            if let Some(p) = locator_path(&l.code, &data, dir) {
                candidates.push(p);
            }
        }
        if !self.header.parent_name.is_empty() {
            candidates.push(dir.join(self.header.parent_name.replace('\\', "/")));
        }
        // Every candidate is tried; a wrong file at one locator does not hide the right one at
        // another, and every failure is reported.
        let mut found_any = false;
        for p in candidates {
            if tried
                .iter()
                .any(|t: &String| t.starts_with(&p.display().to_string()))
            {
                continue;
            }
            if !p.exists() {
                tried.push(format!("{} (missing)", p.display()));
                continue;
            }
            found_any = true;
            match self.attach_parent(&p, depth) {
                Ok(()) => return Ok(()),
                // A loop or an over-deep chain stops here, whichever locator led to it.
                Err(e) if e.kind() == crate::ErrorKind::Unsupported => return Err(e),
                Err(e) => tried.push(format!("{} ({})", p.display(), e.message())),
            }
        }
        Err(Error::invalid(format!(
            "differencing VHD: parent {:?} (unique id {}) {}; tried {}",
            self.header.parent_name,
            format_uuid(&self.header.parent_unique_id),
            if found_any { "not usable" } else { "not found" },
            if tried.is_empty() {
                "no usable parent locator".to_string()
            } else {
                tried.join(", ")
            }
        )))
    }

    fn attach_parent(&mut self, p: &Path, depth: usize) -> Result<()> {
        let (parent, id): (Box<dyn DiskImage>, [u8; 16]) = {
            let raw = RawImage::open(p)?;
            let mut head = [0u8; 8];
            let n = raw.read_at(&mut head, 0)?;
            if n == 8 && &head == COOKIE {
                let d = DynamicVhd::open_at_depth(p, depth + 1).path(p)?;
                let id = d.footer.unique_id;
                (Box::new(d), id)
            } else {
                let f = super::FixedVhd::new(raw).path(p)?;
                let id = f.footer().unique_id;
                (Box::new(f), id)
            }
        };
        if id != self.header.parent_unique_id {
            return Err(Error::invalid(format!(
                "differencing VHD: {} has unique id {}, but the child expects its parent to be {}",
                p.display(),
                format_uuid(&id),
                format_uuid(&self.header.parent_unique_id)
            )));
        }
        if parent.len() != self.size {
            return Err(Error::invalid(format!(
                "differencing VHD: parent {} is {} bytes, the child {} bytes; they must match",
                p.display(),
                parent.len(),
                self.size
            )));
        }
        self.parent = Some(parent);
        self.parent_path = Some(p.to_path_buf());
        Ok(())
    }

    /// The footer (copy at offset 0).
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header.
    pub fn header(&self) -> &DynamicHeader {
        &self.header
    }

    /// The parent's path, for a differencing disk.
    pub fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }

    /// Reads `buf.len()` bytes at `offset` within one block, `entry` being its BAT entry.
    fn read_in_block(&self, buf: &mut [u8], offset: u64, entry: u32) -> Result<()> {
        let in_block = offset % self.block_size;
        if entry == UNALLOCATED {
            return match &self.parent {
                Some(p) => p.read_exact_at(buf, offset),
                None => {
                    buf.fill(0);
                    Ok(())
                }
            };
        }
        let block_at = u64::from(entry) * 512;
        let data_at = block_at + self.bitmap_size + in_block;
        let Some(parent) = &self.parent else {
            return self.file.read_exact_at(buf, data_at);
        };
        // Differencing: sectors whose bitmap bit is set come from this file, the rest from the
        // parent. Read the bitmap bytes covering the range, then copy run by run.
        let first_sector = in_block / 512;
        let last_sector = (in_block + buf.len() as u64 - 1) / 512;
        let b0 = first_sector / 8;
        let b1 = last_sector / 8;
        let mut bitmap = vec![0u8; (b1 - b0 + 1) as usize];
        self.file.read_exact_at(&mut bitmap, block_at + b0)?;
        let present = |sector: u64| {
            let bit = sector - b0 * 8;
            bitmap[(bit / 8) as usize] & (0x80 >> (bit % 8)) != 0
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = in_block + done as u64;
            let sector = pos / 512;
            let here = present(sector);
            let mut end_sector = sector + 1;
            while end_sector <= last_sector && present(end_sector) == here {
                end_sector += 1;
            }
            let run_end = (end_sector * 512).min(in_block + buf.len() as u64);
            let n = (run_end - pos) as usize;
            let piece = &mut buf[done..done + n];
            if here {
                self.file
                    .read_exact_at(piece, block_at + self.bitmap_size + pos)?;
            } else {
                parent.read_exact_at(piece, offset + done as u64)?;
            }
            done += n;
        }
        Ok(())
    }
}

impl DiskImage for DynamicVhd {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = readable(self.size, offset, buf.len());
        for_each_block_piece(&mut buf[..n], offset, self.block_size, |piece, pos| {
            let entry = self.bat.get((pos / self.block_size) as usize).copied();
            self.read_in_block(piece, pos, entry.unwrap_or(UNALLOCATED))
        })
        .map_err(|e| match &self.path {
            Some(p) => e.with_path(p),
            None => e,
        })?;
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        let parent = self.parent.as_ref().map(|p| p.extents()).transpose()?;
        let mut ranges: Vec<(u64, u64, ExtentKind)> = Vec::new();
        if let Some(pm) = &parent {
            ranges.extend(pm.iter().map(|e| (e.offset, e.len, e.kind)));
        }
        // Allocated blocks of this file are data; later ranges win over the parent's.
        for (i, &e) in self.bat.iter().enumerate() {
            if e != UNALLOCATED {
                crate::image::push_run(
                    &mut ranges,
                    i as u64 * self.block_size,
                    self.block_size,
                    ExtentKind::Data,
                );
            }
        }
        Ok(ExtentMap::from_ranges(self.size, ranges))
    }

    fn format(&self) -> Format {
        Format::Vhd
    }
}
