//! A hosted sparse extent (`KDMV`): the header, the grain directory (GD) and grain tables (GT)
//! that map each grain of the extent to a sector of the file, and the grains themselves — plain,
//! or deflate-compressed behind a marker in a stream-optimized extent.
//!
//! Where the tables come from:
//! - the header's `gdOffset`, or the redundant directory (`rgdOffset`, flag bit 1) for every
//!   table the primary one does not give validly (a directory or table outside the file, an
//!   entry that points outside it); the notes say when the redundant copy was used;
//! - `GD_AT_END` (stream-optimized, as VMware and EC2 exports write it): the footer in the
//!   file's last three sectors (footer marker, footer = header with the real `gdOffset`, end of
//!   stream marker), read without touching the grains;
//! - no valid footer: the stream is scanned marker by marker (grain markers give each grain's
//!   disk sector); a stream that ends without its end-of-stream marker is truncated and refused.
//!
//! Every table entry is checked when the extent is opened: 0 is unallocated, 1 a zero grain (only
//! with flag bit 2; without it the entry would point into the header, and is refused), anything
//! else must leave the grain inside the file. A compressed grain must inflate (zlib) to exactly
//! the grain size (the last grain: at least what the capacity still needs); its marker must name
//! the grain the table says. Grains are inflated by whichever thread reads them, so a converter's
//! parallel workers inflate in parallel; each thread keeps the last grain it inflated, so reads
//! smaller than a grain do not inflate it again.

use super::header::{
    GD_AT_END, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, Marker, SECTOR, SparseHeader,
};
use crate::error::{Error, Result};
use crate::image::{DiskImage, ExtentKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The most grain-directory entries this reader reads.
pub const MAX_TABLES: u64 = 1 << 21;

/// The largest extent capacity this reader opens (64 TiB; Azure takes 32 TiB).
pub const MAX_CAPACITY: u64 = 64 << 40;

/// What one grain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Not allocated: zeros, or the parent's bytes in a delta disk.
    Unallocated,
    /// A zero grain (GTE 1).
    Zero,
    /// Stored at this file sector (plain, or the marker of a compressed grain).
    At(u64),
}

/// Where the grain tables were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSource {
    /// The header's grain directory.
    Header,
    /// The footer's grain directory (`GD_AT_END`).
    Footer,
    /// No directory: the grain markers of the stream.
    Scan,
}

/// A hosted sparse extent, opened and checked.
pub struct SparseExtent {
    file: Arc<dyn DiskImage>,
    header: SparseHeader,
    /// The tables that exist, by directory index (a directory entry of 0 has none). Only
    /// present tables take memory, so a header that claims a huge capacity costs nothing
    /// until the file holds the tables.
    tables: BTreeMap<u64, Box<[u32]>>,
    /// A stream without a directory: the file sector of each grain its markers name, by grain
    /// index (a few bytes per grain found, so never more than a fraction of the file, where
    /// one table per grain marker could cost up to 32 times the file).
    scanned: BTreeMap<u64, u32>,
    source: TableSource,
    /// How many tables came from the redundant directory.
    redundant_tables: usize,
    uid: u64,
}

impl std::fmt::Debug for SparseExtent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseExtent")
            .field("header", &self.header)
            .field("source", &self.source)
            .finish()
    }
}

/// One grain table as a directory gives it: the table (`None`: no table), or why it is bad.
type TableSlot = std::result::Result<Option<Box<[u32]>>, String>;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The last grain this thread inflated: (extent uid, grain index, bytes).
    static LAST_GRAIN: RefCell<(u64, u64, Vec<u8>)> = const { RefCell::new((0, 0, Vec::new())) };
    /// Compressed bytes read from files that cannot lend them, and the inflater.
    static SCRATCH: RefCell<(Vec<u8>, Option<flate2::Decompress>)> =
        const { RefCell::new((Vec::new(), None)) };
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl SparseExtent {
    /// Opens the sparse extent held by `file`.
    ///
    /// # Errors
    /// A bad header or footer, tables outside the file, entries that point outside it, a
    /// truncated stream; each with its offset.
    pub fn open(file: Arc<dyn DiskImage>) -> Result<Self> {
        let len = file.len();
        if len < SECTOR {
            return Err(Error::invalid(format!(
                "VMDK sparse extent: the file is {len} bytes, shorter than its 512-byte header"
            )));
        }
        let mut b = [0u8; 512];
        file.read_exact_at(&mut b, 0)?;
        let mut header = SparseHeader::parse(&b)?;
        let mut source = TableSource::Header;
        if header.gd_offset == GD_AT_END {
            match read_footer(&*file, &header)? {
                Some(f) => {
                    header = f;
                    source = TableSource::Footer;
                }
                None => source = TableSource::Scan,
            }
        }
        if header.capacity_bytes() > MAX_CAPACITY {
            return Err(Error::unsupported(format!(
                "VMDK sparse extent: capacity {} bytes is more than this reader opens ({} bytes)",
                header.capacity_bytes(),
                MAX_CAPACITY
            ))
            .with_offset(12));
        }
        // Each directory entry costs a few dozen bytes while the tables are read: bound them
        // (2M entries cover 64 TiB with the usual 512 entries of 64 KiB grains).
        if header.tables() > MAX_TABLES {
            return Err(Error::unsupported(format!(
                "VMDK sparse extent: a grain directory of {} entries ({} grains of {} bytes, {} \
                 per table) is more than this reader holds ({MAX_TABLES})",
                header.tables(),
                header.grains(),
                header.grain_bytes(),
                header.num_gtes_per_gt
            ))
            .with_offset(20));
        }
        let mut ext = SparseExtent {
            file,
            header,
            tables: BTreeMap::new(),
            scanned: BTreeMap::new(),
            source,
            redundant_tables: 0,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
        };
        match source {
            TableSource::Scan => ext.scan()?,
            _ => ext.load_tables()?,
        }
        Ok(ext)
    }

    /// The checked header (the footer's, when the directory is at the end).
    pub fn header(&self) -> &SparseHeader {
        &self.header
    }

    /// Where the tables came from.
    pub fn source(&self) -> TableSource {
        self.source
    }

    /// How many grain tables were taken from the redundant directory.
    pub fn redundant_tables(&self) -> usize {
        self.redundant_tables
    }

    /// The extent's size in bytes.
    pub fn len(&self) -> u64 {
        self.header.capacity_bytes()
    }

    /// `true` for an extent of no sectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.header.grain_bytes()
    }

    /// Bytes of grain `g` that lie inside the capacity.
    fn needed(&self, g: u64) -> u64 {
        let gb = self.grain_bytes();
        (self.len() - g * gb).min(gb)
    }

    /// What grain `g` is.
    pub fn grain(&self, g: u64) -> Grain {
        if self.source == TableSource::Scan {
            return self
                .scanned
                .get(&g)
                .map_or(Grain::Unallocated, |&s| Grain::At(u64::from(s)));
        }
        let per = u64::from(self.header.num_gtes_per_gt);
        let e = self
            .tables
            .get(&(g / per))
            .map_or(0, |t| t[(g % per) as usize]);
        match e {
            0 => Grain::Unallocated,
            1 if self.header.zero_grains() => Grain::Zero,
            s => Grain::At(u64::from(s)),
        }
    }

    /// Runs of `(offset, len, kind)` over the extent, one per run of grains of one kind; the
    /// space of absent tables is one unallocated run each, without a loop over its grains.
    pub fn runs(&self) -> Vec<(u64, u64, ExtentKind)> {
        let mut out = Vec::new();
        let gb = self.grain_bytes();
        let per = u64::from(self.header.num_gtes_per_gt);
        let grains = self.header.grains();
        let mut next = 0u64; // the first grain not yet mapped
        for &g in self.scanned.keys() {
            if g > next {
                crate::image::push_run(
                    &mut out,
                    next * gb,
                    g * gb - next * gb,
                    ExtentKind::Unallocated,
                );
            }
            crate::image::push_run(&mut out, g * gb, self.needed(g), ExtentKind::Data);
            next = g + 1;
        }
        for (&t, table) in &self.tables {
            let first = t * per;
            if first > next {
                crate::image::push_run(
                    &mut out,
                    next * gb,
                    (first * gb).min(self.len()) - next * gb,
                    ExtentKind::Unallocated,
                );
            }
            for (i, &e) in table.iter().enumerate() {
                let g = first + i as u64;
                if g >= grains {
                    break;
                }
                let kind = match e {
                    0 => ExtentKind::Unallocated,
                    1 if self.header.zero_grains() => ExtentKind::Zero,
                    _ => ExtentKind::Data,
                };
                crate::image::push_run(&mut out, g * gb, self.needed(g), kind);
            }
            next = (first + per).min(grains);
        }
        if next < grains {
            crate::image::push_run(
                &mut out,
                next * gb,
                self.len() - next * gb,
                ExtentKind::Unallocated,
            );
        }
        out
    }

    /// Checks one table entry; `Err` says what is wrong with it.
    fn check_entry(&self, g: u64, e: u32) -> std::result::Result<(), String> {
        if e == 0 {
            return Ok(());
        }
        if e == 1 {
            return if self.header.zero_grains() {
                Ok(())
            } else {
                Err("entry 1 (a zero grain) in an extent without the zeroed-grain flag".into())
            };
        }
        let at = u64::from(e) * SECTOR;
        let need = if self.header.compressed {
            12
        } else {
            self.needed(g)
        };
        if at.checked_add(need).is_none_or(|end| end > self.file.len()) {
            return Err(format!(
                "grain {g} at file offset {at} ({need} bytes) lies past the end of the \
                 {}-byte file",
                self.file.len()
            ));
        }
        Ok(())
    }

    /// Reads and checks the directory at `sector` and the tables it names; `Err` = why it
    /// cannot be used. Tables that are bad individually come back as `Err` in their slot.
    fn read_directory(&self, sector: u64) -> Result<Vec<TableSlot>> {
        let n = self.header.tables();
        let gd_len = n * 4;
        let at = sector.checked_mul(SECTOR);
        if sector == 0
            || at
                .and_then(|a| a.checked_add(gd_len))
                .is_none_or(|e| e > self.file.len())
        {
            return Err(Error::invalid(format!(
                "the grain directory at sector {sector} ({gd_len} bytes) is not inside the \
                 {}-byte file",
                self.file.len()
            )));
        }
        let at = sector * SECTOR;
        let mut gd = vec![0u8; gd_len as usize];
        self.file.read_exact_at(&mut gd, at)?;
        let per = u64::from(self.header.num_gtes_per_gt);
        let gt_len = per * 4;
        // The tables of one directory are distinct ranges of the file (VMware and qemu write
        // them so). Two entries naming the same or overlapping tables would make a small file
        // cost a table's memory and checks per entry (thousands of entries naming one table:
        // gigabytes): such a directory is refused whole, so the tables kept never hold more
        // than the file's own bytes.
        let mut placed: Vec<(u64, u64)> = (0..n)
            .filter_map(|t| {
                let s = u32_at(&gd, (t * 4) as usize);
                (s != 0).then_some((u64::from(s) * SECTOR, t))
            })
            .collect();
        placed.sort_unstable();
        if let Some(w) = placed.windows(2).find(|w| w[0].0 + gt_len > w[1].0) {
            return Err(Error::invalid(format!(
                "the grain directory at sector {sector} names overlapping grain tables: \
                 table {} at file offset {} and table {} at file offset {} ({gt_len} bytes each)",
                w[0].1, w[0].0, w[1].1, w[1].0
            )));
        }
        drop(placed);
        let mut out = Vec::with_capacity(n as usize);
        let mut gt = vec![0u8; gt_len as usize];
        for t in 0..n {
            let s = u32_at(&gd, (t * 4) as usize);
            if s == 0 {
                out.push(Ok(None));
                continue;
            }
            let gt_at = u64::from(s) * SECTOR;
            if gt_at + gt_len > self.file.len() {
                out.push(Err(format!(
                    "grain table {t} at file offset {gt_at} lies past the end of the file"
                )));
                continue;
            }
            self.file.read_exact_at(&mut gt, gt_at)?;
            let entries: Box<[u32]> = (0..per as usize).map(|i| u32_at(&gt, i * 4)).collect();
            let first = t * per;
            let bad = entries.iter().enumerate().find_map(|(i, &e)| {
                let g = first + i as u64;
                if g >= self.header.grains() {
                    return None; // entries past the capacity are never used
                }
                self.check_entry(g, e)
                    .err()
                    .map(|w| format!("grain table {t} (file offset {gt_at}), entry {i}: {w}"))
            });
            out.push(match bad {
                Some(w) => Err(w),
                None => Ok(Some(entries)),
            });
        }
        Ok(out)
    }

    fn load_tables(&mut self) -> Result<()> {
        let h = self.header;
        let primary = self.read_directory(h.gd_offset);
        let redundant = (h.flags & super::header::FLAG_REDUNDANT_GD != 0 && h.rgd_offset != 0)
            .then(|| self.read_directory(h.rgd_offset));
        // Whole directories unusable: say so at once (never one message per table).
        let (primary, redundant) = match (primary, redundant) {
            (Err(e), None) => {
                return Err(Error::invalid(format!(
                    "VMDK sparse extent: {e}, and the extent has no redundant grain directory"
                )));
            }
            (Err(e), Some(Err(re))) => {
                return Err(Error::invalid(format!(
                    "VMDK sparse extent: {e}; the redundant directory is bad too: {re}"
                )));
            }
            (Err(e), Some(Ok(r))) => (Err(e.to_string()), Ok(r)),
            (Ok(p), Some(Err(re))) => (Ok(p), Err(re.to_string())),
            (Ok(p), Some(Ok(r))) => (Ok(p), Ok(r)),
            (Ok(p), None) => (
                Ok(p),
                Err("the extent has no redundant grain directory".into()),
            ),
        };
        let n = h.tables() as usize;
        let mut primary_it = primary.map(|v| v.into_iter());
        let (mut redundant_it, redundant_bad) = match redundant {
            Ok(v) => (Some(v.into_iter()), String::new()),
            Err(why) => (None, why),
        };
        for t in 0..n {
            let p = match &mut primary_it {
                Ok(it) => it.next().unwrap_or(Ok(None)),
                Err(why) => Err(why.clone()),
            };
            let r = redundant_it.as_mut().and_then(|it| it.next());
            let chosen = match (p, r) {
                (Ok(x), _) => x,
                (Err(_), Some(Ok(x))) => {
                    if x.is_some() {
                        self.redundant_tables += 1;
                    }
                    x
                }
                (Err(why), Some(Err(rwhy))) => {
                    return Err(Error::invalid(format!(
                        "VMDK sparse extent: {why}; the redundant copy is bad too: {rwhy}"
                    )));
                }
                (Err(why), None) => {
                    return Err(Error::invalid(format!(
                        "VMDK sparse extent: {why}; and {redundant_bad}"
                    )));
                }
            };
            if let Some(table) = chosen {
                self.tables.insert(t as u64, table);
            }
        }
        Ok(())
    }

    /// Finds every grain of a stream without a directory by walking its markers.
    fn scan(&mut self) -> Result<()> {
        let h = self.header;
        if !h.has_markers() || !h.compressed {
            return Err(Error::invalid(
                "VMDK sparse extent: the grain directory is at the end (GD_AT_END) but there is \
                 no valid footer, and only a stream of compressed grains behind markers can be \
                 read without one",
            ));
        }
        let len = self.file.len();
        let mut scanned: BTreeMap<u64, u32> = BTreeMap::new();
        // Grains start after the metadata the header counts (at least the header itself).
        let mut pos = h.overhead.max(1).saturating_mul(SECTOR);
        loop {
            if pos.checked_add(SECTOR).is_none_or(|e| e > len) {
                return Err(Error::invalid(format!(
                    "VMDK stream: no end-of-stream marker before the end of the {len}-byte file \
                     (the stream is truncated)"
                ))
                .with_offset(pos));
            }
            let mut m = [0u8; 16];
            self.file.read_exact_at(&mut m, pos)?;
            let m = Marker::parse(&m);
            if m.size > 0 {
                let bad = |w: String| {
                    Error::invalid(format!("VMDK stream: grain marker: {w}")).with_offset(pos)
                };
                if !m.val.is_multiple_of(h.grain_size) || m.val >= h.capacity {
                    return Err(bad(format!(
                        "sector {} is not the start of a grain inside the {}-sector capacity",
                        m.val, h.capacity
                    )));
                }
                let Ok(sector) = u32::try_from(pos / SECTOR) else {
                    return Err(bad("the grain lies beyond 2 TiB into the file".into()));
                };
                let end = pos + 12 + u64::from(m.size);
                if end > len || u64::from(m.size) > max_compressed(h.grain_bytes()) {
                    return Err(bad(format!(
                        "{} compressed bytes: more than a {}-byte grain can deflate to, or past \
                         the end of the file",
                        m.size,
                        h.grain_bytes()
                    )));
                }
                if scanned.insert(m.val / h.grain_size, sector).is_some() {
                    return Err(bad(format!(
                        "a second marker for the grain at sector {}: the stream is ambiguous",
                        m.val
                    )));
                }
                pos = end.div_ceil(SECTOR) * SECTOR;
                continue;
            }
            match m.kind {
                MARKER_EOS => break,
                MARKER_GT | MARKER_GD | MARKER_FOOTER => {
                    pos = m
                        .val
                        .checked_add(1)
                        .and_then(|s| s.checked_mul(SECTOR))
                        .and_then(|s| pos.checked_add(s))
                        .ok_or_else(|| {
                            Error::invalid(format!("VMDK stream: marker of {} sectors", m.val))
                                .with_offset(pos)
                        })?;
                }
                other => {
                    return Err(Error::invalid(format!(
                        "VMDK stream: unknown marker type {other} (expected 0 end of stream, 1 \
                         grain table, 2 grain directory, 3 footer, or a grain)"
                    ))
                    .with_offset(pos));
                }
            }
        }
        self.scanned = scanned;
        Ok(())
    }

    /// Reads `piece.len()` bytes at `within` of the stored grain `g` (file sector `sector`).
    pub fn read_stored(&self, g: u64, sector: u64, within: u64, piece: &mut [u8]) -> Result<()> {
        let at = sector * SECTOR;
        if !self.header.compressed {
            return self.file.read_exact_at(piece, at + within);
        }
        let needed = self.needed(g) as usize;
        let gb = self.grain_bytes() as usize;
        if within == 0 && piece.len() == needed && needed == gb {
            return self.inflate(g, at, piece, needed);
        }
        LAST_GRAIN.with_borrow_mut(|(uid, idx, buf)| {
            if *uid != self.uid || *idx != g {
                buf.resize(gb, 0);
                *uid = 0;
                self.inflate(g, at, &mut buf[..], needed)?;
                *uid = self.uid;
                *idx = g;
            }
            let w = within as usize;
            piece.copy_from_slice(&buf[w..w + piece.len()]);
            Ok(())
        })
    }

    /// Drops from memory the stored bytes of the plain grains in `offset..offset + len` of the
    /// extent (see [`DiskImage::release`]). Compressed grains release their bytes as soon as
    /// they are inflated.
    pub fn release(&self, offset: u64, len: u64) {
        let gb = self.grain_bytes();
        if len == 0 || self.header.compressed {
            return;
        }
        let first = offset / gb;
        let last = (offset.saturating_add(len) - 1) / gb;
        let mut run: Option<(u64, u64)> = None; // adjacent stored grains in the file
        for g in first..=last.min(self.header.grains().saturating_sub(1)) {
            let Grain::At(s) = self.grain(g) else {
                continue;
            };
            let at = s * SECTOR;
            run = match run {
                Some((a, e)) if e == at => Some((a, e + gb)),
                Some((a, e)) => {
                    self.file.release(a, e - a);
                    Some((at, at + gb))
                }
                None => Some((at, at + gb)),
            };
        }
        if let Some((a, e)) = run {
            self.file.release(a, e - a);
        }
    }

    /// Inflates the compressed grain `g` stored at `at` into `out` (grain-sized), checking that
    /// it inflates to the grain size (at least `needed` bytes for the last grain).
    fn inflate(&self, g: u64, at: u64, out: &mut [u8], needed: usize) -> Result<()> {
        let file_len = self.file.len();
        let (data_at, data_len) = if self.header.has_markers() {
            let mut m = [0u8; 12];
            self.file.read_exact_at(&mut m, at)?;
            let lba = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]);
            let size = u64::from(u32_at(&m, 8));
            if lba != g * self.header.grain_size {
                return Err(Error::invalid(format!(
                    "VMDK grain marker: says sector {lba}, but the grain table puts grain {g} \
                     (sector {}) here",
                    g * self.header.grain_size
                ))
                .with_offset(at));
            }
            if size == 0 || at + 12 + size > file_len || size > max_compressed(self.grain_bytes()) {
                return Err(Error::invalid(format!(
                    "VMDK grain marker: {size} compressed bytes; expected 1 to {} (the rest of \
                     the file)",
                    file_len.saturating_sub(at + 12)
                ))
                .with_offset(at));
            }
            (at + 12, size)
        } else {
            // No marker: the zlib stream's length is not stored; it cannot be longer than a
            // little more than the grain.
            (at, (file_len - at).min(max_compressed(self.grain_bytes())))
        };
        let data_len = data_len as usize;
        SCRATCH.with_borrow_mut(|(scratch, dec)| {
            let lent = self.file.as_slice(data_at, data_len);
            let input: &[u8] = match lent {
                Some(s) => s,
                None => {
                    scratch.resize(data_len, 0);
                    self.file.read_exact_at(&mut scratch[..], data_at)?;
                    &scratch[..]
                }
            };
            let d = dec.get_or_insert_with(|| flate2::Decompress::new(true));
            d.reset(true);
            let bad = |w: String| {
                Error::invalid(format!("VMDK compressed grain {g}: {w}")).with_offset(data_at)
            };
            let status = d.decompress(input, out, flate2::FlushDecompress::Finish);
            // The compressed bytes are not needed again, however inflating ended.
            if lent.is_some() {
                self.file.release(data_at, data_len as u64);
            }
            let status = status.map_err(|e| bad(format!("does not inflate: {e}")))?;
            let got = d.total_out() as usize;
            match status {
                flate2::Status::StreamEnd
                    if got == out.len() || (needed < out.len() && got >= needed) =>
                {
                    out[got..].fill(0);
                    Ok(())
                }
                flate2::Status::StreamEnd => Err(bad(format!(
                    "inflates to {got} bytes, expected the grain size, {}",
                    out.len()
                ))),
                _ if got == out.len() => Err(bad(format!(
                    "inflates to more than the grain size, {} bytes",
                    out.len()
                ))),
                _ => Err(bad(format!(
                    "the compressed data ends after {} of {data_len} bytes without the end of \
                     its zlib stream ({got} bytes inflated)",
                    d.total_in()
                ))),
            }
        })
    }
}

/// The most bytes a grain of `grain` bytes may take compressed: twice the grain and a sector,
/// as qemu allows (zlib's worst case is a few bytes per 16 KiB over the input).
fn max_compressed(grain: u64) -> u64 {
    grain * 2 + SECTOR
}

/// The footer of a stream whose header says `GD_AT_END`, when the last three sectors are a
/// footer marker, a footer (a valid header with the same geometry and a real directory offset)
/// and an end-of-stream marker; `None` when they are not.
fn read_footer(file: &dyn DiskImage, head: &SparseHeader) -> Result<Option<SparseHeader>> {
    let len = file.len();
    if len < 4 * SECTOR {
        return Ok(None);
    }
    let mut b = vec![0u8; 1536];
    file.read_exact_at(&mut b, len - 1536)?;
    let marker = |i: usize| Marker::parse(b[i..i + 16].try_into().unwrap_or(&[0; 16]));
    let (fm, eos) = (marker(0), marker(1024));
    if fm.size != 0
        || fm.kind != MARKER_FOOTER
        || eos
            != (Marker {
                val: 0,
                size: 0,
                kind: MARKER_EOS,
            })
    {
        return Ok(None);
    }
    let mut h = [0u8; 512];
    h.copy_from_slice(&b[512..1024]);
    let Ok(f) = SparseHeader::parse(&h) else {
        return Ok(None);
    };
    if f.gd_offset == GD_AT_END
        || f.capacity != head.capacity
        || f.grain_size != head.grain_size
        || f.num_gtes_per_gt != head.num_gtes_per_gt
        || f.compressed != head.compressed
    {
        return Ok(None);
    }
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::super::header::tests::header_bytes;
    use super::super::header::{FLAG_COMPRESSED, FLAG_MARKERS, FLAG_ZERO_GRAIN};
    use super::*;
    use crate::image::MemImage;

    /// A 2-table extent (128-sector grains, 512 entries a table) with its directory at
    /// sector 1 naming tables at `gts`.
    fn two_tables(gts: [u32; 2]) -> Vec<u8> {
        let mut f = header_bytes(2 * 512 * 128, 1, 0, 0).to_vec();
        f.extend_from_slice(&gts[0].to_le_bytes());
        f.extend_from_slice(&gts[1].to_le_bytes());
        let end = (gts[0].max(gts[1]) as usize + 4) * 512;
        f.resize(end, 0);
        f
    }

    #[test]
    fn directory_entries_naming_one_table_are_refused() {
        let open = |f: Vec<u8>| SparseExtent::open(Arc::new(MemImage::new(f)));
        let e = open(two_tables([2, 2])).unwrap_err().to_string();
        assert!(e.contains("overlapping grain tables"), "{e}");
        let e = open(two_tables([2, 4])).unwrap_err().to_string();
        assert!(e.contains("overlapping grain tables"), "{e}");
        let ext = open(two_tables([2, 6])).unwrap();
        assert_eq!(ext.tables.len(), 2);
        assert_eq!(ext.runs(), vec![(0, ext.len(), ExtentKind::Unallocated)]);
    }

    #[test]
    fn a_scanned_grain_at_sector_1_is_data_not_a_zero_grain() {
        use std::io::Write;
        let flags = FLAG_MARKERS | FLAG_COMPRESSED | FLAG_ZERO_GRAIN;
        let mut f = header_bytes(256, GD_AT_END, 0, flags).to_vec();
        f[64..72].copy_from_slice(&1u64.to_le_bytes()); // overhead: the header
        f[77] = 1; // deflate
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&[7u8; 128 * 512]).unwrap();
        let z = z.finish().unwrap();
        f.extend_from_slice(&0u64.to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&z);
        f.resize(f.len().div_ceil(512) * 512 + 512, 0); // then the end-of-stream marker
        let ext = SparseExtent::open(Arc::new(MemImage::new(f))).unwrap();
        assert_eq!(ext.source(), TableSource::Scan);
        assert_eq!(ext.grain(0), Grain::At(1));
        assert_eq!(ext.grain(1), Grain::Unallocated);
        let mut b = [0u8; 512];
        ext.read_stored(0, 1, 512, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        assert_eq!(
            ext.runs(),
            vec![
                (0, 65536, ExtentKind::Data),
                (65536, 65536, ExtentKind::Unallocated)
            ]
        );
    }

    /// A directory-less stream of `grains` (each its sector on the disk and its bytes),
    /// compressed when `deflate`.
    fn scanned_stream(grains: &[(u64, Vec<u8>)], deflate: bool) -> Vec<u8> {
        use std::io::Write;
        let flags = FLAG_MARKERS | if deflate { FLAG_COMPRESSED } else { 0 };
        let mut f = header_bytes(1024, GD_AT_END, 0, flags).to_vec();
        f[64..72].copy_from_slice(&1u64.to_le_bytes());
        f[77] = u8::from(deflate);
        for (lba, data) in grains {
            let body = if deflate {
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(data).unwrap();
                z.finish().unwrap()
            } else {
                data.clone()
            };
            f.extend_from_slice(&lba.to_le_bytes());
            f.extend_from_slice(&(body.len() as u32).to_le_bytes());
            f.extend_from_slice(&body);
            f.resize(f.len().div_ceil(512) * 512, 0);
        }
        f.resize(f.len() + 512, 0); // end of stream
        f
    }

    #[test]
    fn scans_refuse_plain_grains_duplicates_and_oversized_markers() {
        let open = |f: Vec<u8>| SparseExtent::open(Arc::new(MemImage::new(f)));
        let grain = vec![9u8; 128 * 512];
        // Plain grains behind markers would read the marker as data.
        let e = open(scanned_stream(&[(0, grain.clone())], false)).unwrap_err();
        assert!(
            e.to_string().contains("compressed grains behind markers"),
            "{e}"
        );
        // Two markers for one grain: ambiguous.
        let e = open(scanned_stream(
            &[(128, grain.clone()), (128, grain.clone())],
            true,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("a second marker"), "{e}");
        // A marker claiming more than a grain can deflate to.
        let mut f = scanned_stream(&[(0, grain.clone())], true);
        f[512 + 8..512 + 12].copy_from_slice(&(1u32 << 30).to_le_bytes());
        f.resize(f.len() + (1 << 20), 0);
        let e = open(f).unwrap_err();
        assert!(
            e.to_string().contains("more than a 65536-byte grain"),
            "{e}"
        );
        // The good one still reads.
        let ext = open(scanned_stream(&[(128, grain.clone())], true)).unwrap();
        assert_eq!(ext.grain(1), Grain::At(1));
    }

    #[test]
    fn a_directory_too_large_to_hold_is_refused_before_it_is_read() {
        let mut h = header_bytes(1 << 34, 1, 0, 0);
        h[20..28].copy_from_slice(&1u64.to_le_bytes()); // 1-sector grains
        h[44..48].copy_from_slice(&1u32.to_le_bytes()); // 1 entry per table
        let e = SparseExtent::open(Arc::new(MemImage::new(h.to_vec()))).unwrap_err();
        assert!(e.to_string().contains("more than this reader holds"), "{e}");
    }
}
