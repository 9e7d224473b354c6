//! The VHDX reader (MS-VHDX), in-house: the `vhdx` crate returns wrong data above 4 GiB.
//!
//! ```text
//! offset    size     structure (all little-endian; GUIDs in Windows byte order)
//!      0    64 KiB   file type identifier: "vhdxfile", creator (UTF-16)
//!  64 KiB    4 KiB   header 1: "head", CRC-32C, sequence number, file/data write GUIDs,
//! 128 KiB    4 KiB   header 2   log GUID, log version, version (1), log length, log offset
//! 192 KiB   64 KiB   region table 1: "regi", CRC-32C, entry count, entries of
//! 256 KiB   64 KiB   region table 2   (GUID, file offset, length, required)
//! regions            BAT and metadata (anywhere, 1 MiB aligned); the log
//! ```
//!
//! - The valid header (signature, CRC-32C with its checksum field zeroed, version 1) with the
//!   higher sequence number is current. A non-empty log (log GUID not zero) is replayed in memory
//!   before anything else is read (see `log`); the file is never written.
//! - Region tables: the first valid one is used; the BAT and metadata regions are required; an
//!   unknown region marked required is refused. Regions must lie inside the file; unlike qemu we
//!   do not insist on their 1 MiB alignment, which does not change which bytes are read.
//! - Metadata: file parameters (block size 1–256 MiB, has-parent flag), virtual disk size,
//!   logical sector size (512 or 4096), physical sector size, disk id; an unknown item marked
//!   required is refused.
//! - A differencing VHDX (has-parent flag) finds its parent through the parent locator item
//!   (`relative_path` from the child's folder, then `absolute_win32_path`), checks the parent's
//!   data write GUID against `parent_linkage`, and stacks at most [`MAX_CHAIN_DEPTH`] deep.
//! - The BAT holds one 64-bit entry per payload block (state in bits 0–2, file offset in MiB in
//!   bits 20–63) and, after every `chunk ratio` = 2^23 × logical sector size / block size payload
//!   entries, one sector-bitmap entry. Payload states NOT PRESENT (0), UNDEFINED (1), ZERO (2)
//!   and UNMAPPED (3) read as zeros; FULLY PRESENT (6) reads from the file; PARTIALLY PRESENT (7)
//!   belongs to differencing disks only, where each logical sector comes from this file when its
//!   bit in the chunk's sector bitmap is set (bit n = bit n % 8 of byte n / 8) and from the parent
//!   otherwise. In a differencing disk NOT PRESENT reads the parent, and UNDEFINED and UNMAPPED,
//!   whose meaning there the specification leaves open, are refused.

use crate::error::{Error, Result, ResultExt};
use crate::image::{
    DiskImage, ExtentKind, ExtentMap, Format, RawImage, for_each_block_piece, readable,
};
use std::path::{Path, PathBuf};

mod bat;
mod format;
mod header;
pub(crate) mod log;
mod metadata;
mod parent;
mod region;

use bat::*;
use format::*;
pub use format::{SIGNATURE, crc_with_zeroed_field};
pub use header::Header;
use header::*;
use metadata::*;
use parent::*;
use region::*;

/// A VHDX image.
pub struct Vhdx {
    file: Box<dyn DiskImage>,
    path: Option<PathBuf>,
    header: Header,
    size: u64,
    block_size: u64,
    logical_sector_size: u32,
    chunk_ratio: u64,
    bat: Vec<u64>,
    /// Sector-bitmap BAT entries, one per chunk (differencing disks only).
    sector_bitmaps: Vec<u64>,
    parent: Option<Box<Vhdx>>,
    log_entries: usize,
    log_bytes: u64,
}

/// How many differencing VHDX may stack before we refuse (a loop guard).
pub const MAX_CHAIN_DEPTH: usize = 16;
/// Sector-bitmap block state: present.
const SB_BLOCK_PRESENT: u64 = 6;

impl std::fmt::Debug for Vhdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhdx")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("logical_sector_size", &self.logical_sector_size)
            .finish()
    }
}

impl Vhdx {
    /// Opens the VHDX at `path` read-only.
    ///
    /// # Errors
    /// Any damaged structure (each named with its offset), an unknown required region or
    /// metadata item, a log that cannot be replayed, or a differencing VHDX.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at_depth(path, 0).path(path)
    }

    fn open_at_depth(path: &Path, depth: usize) -> Result<Self> {
        Self::parse_at_depth(Box::new(RawImage::open(path)?), Some(path), depth)
    }

    /// Reads a VHDX from `file`.
    ///
    /// # Errors
    /// As [`Vhdx::open`].
    pub fn parse(file: Box<dyn DiskImage>, path: Option<&Path>) -> Result<Self> {
        Self::parse_at_depth(file, path, 0)
    }

    fn parse_at_depth(file: Box<dyn DiskImage>, path: Option<&Path>, depth: usize) -> Result<Self> {
        let len = file.len();
        if len < 320 * KIB {
            return Err(Error::invalid(format!(
                "VHDX: the file is {len} bytes, too short for the headers and region tables \
                 (320 KiB)"
            )));
        }
        let mut sig = [0u8; 8];
        file.read_exact_at(&mut sig, 0)?;
        if &sig != SIGNATURE {
            return Err(Error::invalid(format!(
                "VHDX file identifier: expected \"vhdxfile\", found {}",
                crate::image::vhd::show_bytes(&sig)
            ))
            .with_offset(0));
        }

        let header = read_headers(&*file)?;
        // A non-empty log: replay it in memory, and read everything after the headers
        // through the replayed view. The file itself is never written.
        let (file, log_entries, log_bytes): (Box<dyn DiskImage>, usize, u64) =
            if header.log_guid != [0; 16] {
                let r = log::Replayed::new(
                    file,
                    header.log_offset,
                    u64::from(header.log_length),
                    &header.log_guid,
                )
                .map_err(|e| {
                    Error::invalid(format!(
                        "VHDX log (header {}): {}",
                        header.copy,
                        e.message()
                    ))
                    .with_offset(e.offset().unwrap_or(header.log_offset))
                })?;
                let (n, b) = (r.entries, r.bytes_replayed());
                (Box::new(r), n, b)
            } else {
                (file, 0, 0)
            };
        let (bat_region, meta_region) = read_region_tables(&*file)?;

        let meta = parse_metadata(&*file, meta_region)?;
        let differencing = meta.has_parent;
        let block_size = u64::from(meta.block_size);
        let chunk_ratio = ((1u64 << 23) * u64::from(meta.logical_sector_size)) / block_size;
        let (bat, sector_bitmaps) =
            read_bat(&*file, &header, bat_region, meta_region, &meta, chunk_ratio)?;
        let parent = if differencing {
            let Some(path) = path else {
                return Err(Error::unsupported(
                    "differencing VHDX without a file path: its parent cannot be looked for",
                ));
            };
            let loc = meta.parent_locator.as_deref().ok_or_else(|| {
                Error::invalid("differencing VHDX without a parent locator metadata item")
            })?;
            let parent = open_parent(path, loc, depth)?;
            if parent.size != meta.size || parent.logical_sector_size != meta.logical_sector_size {
                return Err(Error::invalid(format!(
                    "differencing VHDX: the parent is {} bytes in {}-byte sectors, the child {} \
                     bytes in {}-byte sectors; they must match",
                    parent.size, parent.logical_sector_size, meta.size, meta.logical_sector_size
                )));
            }
            Some(Box::new(parent))
        } else {
            None
        };
        Ok(Vhdx {
            file,
            path: path.map(Path::to_path_buf),
            header,
            size: meta.size,
            block_size,
            logical_sector_size: meta.logical_sector_size,
            chunk_ratio,
            bat,
            sector_bitmaps,
            parent,
            log_entries,
            log_bytes,
        })
    }

    /// The parent's path, for a differencing disk.
    pub fn parent_path(&self) -> Option<&Path> {
        self.parent.as_ref().and_then(|p| p.path.as_deref())
    }

    /// Reads `buf` at `offset` from a PARTIALLY PRESENT block at file offset `data_at`: each
    /// logical sector from this file when its bitmap bit is set, from the parent otherwise.
    fn read_partial(&self, buf: &mut [u8], offset: u64, data_at: u64) -> Result<()> {
        let parent = self
            .parent
            .as_ref()
            .ok_or_else(|| Error::invalid("no parent"))?;
        let lss = u64::from(self.logical_sector_size);
        let block = offset / self.block_size;
        let chunk = block / self.chunk_ratio;
        let sb = self
            .sector_bitmaps
            .get(chunk as usize)
            .copied()
            .unwrap_or(0);
        let bitmap_at = (sb >> 20) * MIB;
        // Sector index within the chunk; bit n is bit n % 8 of byte n / 8 (LSB first).
        let first = (offset - chunk * self.chunk_ratio * self.block_size) / lss;
        let last =
            (offset + buf.len() as u64 - 1 - chunk * self.chunk_ratio * self.block_size) / lss;
        let mut bits = vec![0u8; (last / 8 - first / 8 + 1) as usize];
        self.file.read_exact_at(&mut bits, bitmap_at + first / 8)?;
        let present = |s: u64| bits[(s / 8 - first / 8) as usize] & (1 << (s % 8)) != 0;
        let in_block = offset % self.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let s = first + (done as u64 + offset % lss) / lss;
            let here = present(s);
            let mut e = s + 1;
            while e <= last && present(e) == here {
                e += 1;
            }
            let run_end = ((e - first) * lss - offset % lss).min(buf.len() as u64) as usize;
            let piece = &mut buf[done..run_end];
            if here {
                self.file
                    .read_exact_at(piece, data_at + in_block + done as u64)?;
            } else {
                parent.read_exact_at(piece, offset + done as u64)?;
            }
            done = run_end;
        }
        Ok(())
    }

    /// How many log entries were replayed (in memory) when the file was opened.
    pub fn log_entries_replayed(&self) -> usize {
        self.log_entries
    }

    /// How many bytes of the file the replayed log entries changed (in memory).
    pub fn log_bytes_replayed(&self) -> u64 {
        self.log_bytes
    }

    /// The current header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Logical sector size (512 or 4096).
    pub fn logical_sector_size(&self) -> u32 {
        self.logical_sector_size
    }

    /// Payload blocks per sector-bitmap block.
    pub fn chunk_ratio(&self) -> u64 {
        self.chunk_ratio
    }
}

impl DiskImage for Vhdx {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = readable(self.size, offset, buf.len());
        for_each_block_piece(&mut buf[..n], offset, self.block_size, |piece, pos| {
            let e = self
                .bat
                .get((pos / self.block_size) as usize)
                .copied()
                .unwrap_or(0);
            let data_at = (e >> 20) * MIB;
            match (e & 7, &self.parent) {
                (PAYLOAD_FULLY_PRESENT, _) => self
                    .file
                    .read_exact_at(piece, data_at + pos % self.block_size),
                (PAYLOAD_PARTIALLY_PRESENT, Some(_)) => self.read_partial(piece, pos, data_at),
                (PAYLOAD_NOT_PRESENT, Some(p)) => p.read_exact_at(piece, pos),
                _ => {
                    piece.fill(0);
                    Ok(())
                }
            }
        })
        .map_err(|err| match &self.path {
            Some(p) => err.with_path(p),
            None => err,
        })?;
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        // A child's blocks paint over its parent's map; NOT PRESENT blocks keep the parent's.
        let mut ranges: Vec<(u64, u64, ExtentKind)> = match &self.parent {
            Some(p) => p
                .extents()?
                .iter()
                .map(|e| (e.offset, e.len, e.kind))
                .collect(),
            None => Vec::new(),
        };
        for (i, &e) in self.bat.iter().enumerate() {
            let kind = match e & 7 {
                PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT => ExtentKind::Data,
                PAYLOAD_ZERO => ExtentKind::Zero,
                PAYLOAD_NOT_PRESENT if self.parent.is_some() => continue,
                _ => ExtentKind::Unallocated,
            };
            crate::image::push_run(
                &mut ranges,
                i as u64 * self.block_size,
                self.block_size,
                kind,
            );
        }
        Ok(ExtentMap::from_ranges(self.size, ranges))
    }

    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.log_entries > 0 {
            n.push(format!(
                "a pending VHDX log was replayed in memory (the file is unchanged): {} log \
                 entries, {} bytes",
                self.log_entries, self.log_bytes
            ));
        }
        if let Some(p) = &self.parent {
            n.extend(p.notes());
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_in_windows_byte_order() {
        assert_eq!(
            hex::encode(BAT_REGION),
            "6677c22d23f600429d64115e9bfd4a08",
            "2DC27766-F623-4200-9D64-115E9BFD4A08"
        );
        assert_eq!(
            show_guid(&METADATA_REGION),
            "8B7CA206-4790-4B9A-B8FE-575F050F886E"
        );
    }

    #[test]
    fn crc_skips_the_checksum_field() {
        let mut b = vec![7u8; 4096];
        let c = crc_with_zeroed_field(&b, 4);
        b[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(crc_with_zeroed_field(&b, 4), c);
        b[4..8].fill(0);
        assert_eq!(crc32c::crc32c(&b), c);
    }
}
