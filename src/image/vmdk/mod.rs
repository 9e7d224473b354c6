//! VMDK, read-only: what EC2's instance export (`create-instance-export-task`) writes
//! (stream-optimized, often inside an OVA) and what VMware-born machines bring (monolithic
//! sparse, flat, split 2 GB extents, VMFS flat).
//!
//! ```text
//!   Vmdk::open(path) ─┬─ "KDMV" file ─────> one SparseExtent (its embedded descriptor gives
//!                     │                      CID, parentCID, parentFileNameHint)
//!                     ├─ descriptor text ──> extents in order: SPARSE (a KDMV file), FLAT/VMFS
//!                     │                      (a range of a file), ZERO; files resolved from the
//!                     │                      descriptor's folder (or the OVA's members)
//!                     └─ "COWD" ──────────> refused (ESX sparse)
//!   delta disk (parentCID ≠ ffffffff): the parent named by parentFileNameHint is opened too,
//!   its CID must equal the child's parentCID, at most MAX_CHAIN_DEPTH deep; an unallocated
//!   grain of the child reads the parent.
//! ```
//!
//! Extent lines are read as the specification says, every access kind and ZERO included; qemu
//! (10.0) skips RDONLY and ZERO lines, which makes such disks shorter there.
//!
//! Refused with the reason, never read as something else: COWD, SE sparse, vSAN sparse, raw
//! device mappings, NOACCESS and unknown extents, encrypted disks, create types this reader does
//! not know, a delta disk whose parent is missing or changed, extents whose sizes disagree with
//! their headers or files.
//!
//! The modules: [`header`] (on-disk header and markers), [`descriptor`] (the text), [`sparse`]
//! (grain directory, tables, grains, stream scan).

pub mod descriptor;
pub mod header;
pub mod sparse;

use crate::error::{Error, Result, ResultExt};
use crate::image::{DiskImage, ExtentKind, ExtentMap, Format, RawImage, readable};
use descriptor::{Access, Descriptor, ExtentType, NO_PARENT};
use sparse::{Grain, SparseExtent, TableSource};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many delta disks may stack before we refuse (a loop guard).
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Where the files a descriptor names are found: a folder, or an archive's members.
pub trait Resolver {
    /// Opens the file `name` (as the descriptor writes it) read-only.
    ///
    /// # Errors
    /// It does not exist, cannot be opened, or is not allowed (outside the folder when the
    /// format was only guessed).
    fn open(&self, name: &str) -> Result<(Arc<dyn DiskImage>, PathBuf)>;
}

/// Files beside the descriptor.
pub struct FolderResolver {
    /// The descriptor's folder.
    pub dir: PathBuf,
    /// Refuse files outside `dir` (when the format was guessed, not named with `-f vmdk`).
    pub confine: bool,
}

impl Resolver for FolderResolver {
    fn open(&self, name: &str) -> Result<(Arc<dyn DiskImage>, PathBuf)> {
        let path = self.dir.join(name);
        if self.confine {
            let real = std::fs::canonicalize(&path).map_err(|e| {
                Error::io("opening a file the VMDK descriptor names", e).with_path(&path)
            })?;
            let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
            if !real.starts_with(&dir) {
                return Err(Error::argument(format!(
                    "the VMDK names {}, outside its folder {}; the format was only guessed from \
                     the file's first bytes, so that is refused (give -f vmdk to allow it)",
                    path.display(),
                    dir.display()
                )));
            }
        }
        let img = RawImage::open(&path)?;
        Ok((Arc::new(img), path))
    }
}

/// What a piece of the disk is made of.
enum PieceKind {
    /// A range of a file: `file` holds exactly the piece's bytes.
    Flat(Arc<dyn DiskImage>),
    Zero,
    Sparse(Arc<SparseExtent>),
}

struct Piece {
    start: u64,
    len: u64,
    kind: PieceKind,
}

/// What kind of VMDK this is, for `info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmdkInfo {
    /// The descriptor's `createType` (or "monolithicSparse" / "streamOptimized" for a sparse
    /// file without a descriptor).
    pub create_type: String,
    /// Content id.
    pub cid: u32,
    /// The parent's content id (ffffffff: none).
    pub parent_cid: u32,
    /// Number of extents.
    pub extents: usize,
    /// Grain size in bytes of the first sparse extent.
    pub grain_size: Option<u64>,
    /// `true` when grains are compressed.
    pub compressed: bool,
    /// The parent's path, for a delta disk.
    pub parent: Option<PathBuf>,
}

/// An opened VMDK.
pub struct Vmdk {
    size: u64,
    pieces: Vec<Piece>,
    parent: Option<Box<Vmdk>>,
    info: VmdkInfo,
    notes: Vec<String>,
}

impl std::fmt::Debug for Vmdk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmdk")
            .field("size", &self.size)
            .field("info", &self.info)
            .finish()
    }
}

/// The create types this reader opens.
const KNOWN_CREATE_TYPES: &[&str] = &[
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
    "vmfs",
    "vmfsThin",
    "custom",
];

/// Create types refused by name, with the reason.
fn refused_create_type(t: &str) -> Option<&'static str> {
    Some(match t {
        "vmfsSparse" => "an ESX COWD sparse disk (vmfsSparse)",
        "seSparse" => "a space-efficient sparse disk (seSparse)",
        "vsanSparse" => "a vSAN sparse disk (vsanSparse)",
        "vmfsRaw" | "vmfsRawDeviceMap" | "vmfsPassthroughRawDeviceMap" => {
            "a raw device mapping, whose data is on a device, not in a file"
        }
        "fullDevice" | "partitionedDevice" => "a disk that maps a host device",
        _ => return None,
    })
}

impl Vmdk {
    /// Opens the VMDK at `path` (a descriptor file or a sparse extent) read-only. `confine`:
    /// refuse files outside its folder (the format was guessed, not named).
    ///
    /// # Errors
    /// What the module docs list, each with the file and offset.
    pub fn open(path: &Path, confine: bool) -> Result<Self> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let resolver = FolderResolver { dir, confine };
        let file: Arc<dyn DiskImage> = Arc::new(RawImage::open(path)?);
        Self::open_in(file, path, &resolver, 0)
    }

    /// Opens the VMDK held by `file` (shown as `path`), finding the files it names through
    /// `resolver`; `depth` counts the delta disks above it.
    ///
    /// # Errors
    /// As [`Vmdk::open`].
    pub fn open_in(
        file: Arc<dyn DiskImage>,
        path: &Path,
        resolver: &dyn Resolver,
        depth: usize,
    ) -> Result<Self> {
        let mut head = [0u8; 512];
        let n = file.read_at(&mut head, 0).path(path)?;
        let head = &head[..n];
        if head.starts_with(b"COWD") {
            return Err(Error::unsupported(
                "this is an ESX COWD sparse VMDK (vmfsSparse), which ec2azure does not read; \
                 convert it with VMware's vmkfstools first",
            )
            .with_path(path));
        }
        let mut vmdk = if head.starts_with(header::MAGIC) {
            Self::open_sparse_file(file, path)?
        } else {
            if file.len() > descriptor::MAX_DESCRIPTOR as u64 {
                return Err(Error::invalid(format!(
                    "not a VMDK: no \"KDMV\" header, and at {} bytes too long for a descriptor",
                    file.len()
                ))
                .with_path(path));
            }
            let mut text = vec![0u8; file.len() as usize];
            file.read_exact_at(&mut text, 0).path(path)?;
            let d = descriptor::parse(&text).path(path)?;
            Self::from_descriptor(&d, path, resolver)?
        };
        vmdk.open_parent(path, resolver, depth)?;
        Ok(vmdk)
    }

    /// A monolithic sparse or stream-optimized file: one sparse extent, described by its
    /// embedded descriptor when it has one.
    fn open_sparse_file(file: Arc<dyn DiskImage>, path: &Path) -> Result<Self> {
        let ext = SparseExtent::open(file.clone()).path(path)?;
        let h = *ext.header();
        let d = embedded_descriptor(&*file, &h, path)?;
        let default_type = if h.compressed {
            "streamOptimized"
        } else {
            "monolithicSparse"
        };
        let (create_type, cid, parent_cid, hint) = match &d {
            Some(d) => {
                check_descriptor_kind(d, path)?;
                // A monolithic file's own extent line must agree with its header.
                if let [only] = &d.extents[..]
                    && only.sectors != h.capacity
                {
                    return Err(Error::invalid(format!(
                        "VMDK: the embedded descriptor's extent has {} sectors, the header's \
                         capacity is {}",
                        only.sectors, h.capacity
                    ))
                    .with_path(path));
                }
                (
                    d.create_type.clone(),
                    d.cid,
                    d.parent_cid,
                    d.parent_file_name_hint.clone(),
                )
            }
            None => (default_type.to_string(), 0, NO_PARENT, None),
        };
        let mut notes = Vec::new();
        note_tables(&ext, path, &mut notes);
        let size = ext.len();
        let info = VmdkInfo {
            create_type,
            cid,
            parent_cid,
            extents: 1,
            grain_size: Some(ext.grain_bytes()),
            compressed: h.compressed,
            parent: hint.map(PathBuf::from),
        };
        Ok(Vmdk {
            size,
            pieces: vec![Piece {
                start: 0,
                len: size,
                kind: PieceKind::Sparse(Arc::new(ext)),
            }],
            parent: None,
            info,
            notes,
        })
    }

    fn from_descriptor(d: &Descriptor, path: &Path, resolver: &dyn Resolver) -> Result<Self> {
        check_descriptor_kind(d, path)?;
        let mut pieces = Vec::with_capacity(d.extents.len());
        let mut start = 0u64;
        let mut notes = Vec::new();
        let (mut grain_size, mut compressed) = (None, false);
        let mut opened: std::collections::HashMap<String, Arc<SparseExtent>> = Default::default();
        for e in &d.extents {
            let at_line = |m: String| {
                Error::invalid(format!("VMDK descriptor line {}: {m}", e.line)).with_path(path)
            };
            let Some(len) = e.sectors.checked_mul(512) else {
                return Err(at_line(format!("{} sectors is too large", e.sectors)));
            };
            if e.access == Access::NoAccess {
                return Err(Error::unsupported(format!(
                    "VMDK descriptor line {}: the extent is NOACCESS, so its data cannot be read",
                    e.line
                ))
                .with_path(path));
            }
            let kind = match e.kind {
                ExtentType::Unsupported(what) => {
                    return Err(Error::unsupported(format!(
                        "VMDK descriptor line {}: extent type {what}, which ec2azure does not read",
                        e.line
                    ))
                    .with_path(path));
                }
                ExtentType::Zero => PieceKind::Zero,
                ExtentType::Flat | ExtentType::Vmfs => {
                    let name = e.file.as_deref().unwrap_or_default();
                    let (f, fp) = resolver.open(name).path(path)?;
                    let from = e.offset.checked_mul(512);
                    if from
                        .and_then(|o| o.checked_add(len))
                        .is_none_or(|end| end > f.len())
                    {
                        return Err(at_line(format!(
                            "the flat extent needs {len} bytes from offset {} of {}, which is \
                             {} bytes long",
                            e.offset.saturating_mul(512),
                            fp.display(),
                            f.len()
                        )));
                    }
                    let from = e.offset * 512;
                    if from == 0 && len == f.len() {
                        PieceKind::Flat(f)
                    } else {
                        PieceKind::Flat(Arc::new(crate::image::slice::Slice::new(f, from, len)?))
                    }
                }
                ExtentType::Sparse => {
                    let name = e.file.as_deref().unwrap_or_default();
                    // The same file on several lines is opened once (its tables held once).
                    let ext = match opened.get(name) {
                        Some(ext) => ext.clone(),
                        None => {
                            let (f, fp) = resolver.open(name).path(path)?;
                            let mut magic = [0u8; 4];
                            let n = f.read_at(&mut magic, 0).path(&fp)?;
                            if &magic[..n] == b"COWD" {
                                return Err(Error::unsupported(
                                    "this extent is ESX COWD sparse, which ec2azure does not read",
                                )
                                .with_path(&fp));
                            }
                            let ext = Arc::new(SparseExtent::open(f).path(&fp)?);
                            grain_size.get_or_insert(ext.grain_bytes());
                            compressed |= ext.header().compressed;
                            note_tables(&ext, &fp, &mut notes);
                            opened.insert(name.to_string(), ext.clone());
                            ext
                        }
                    };
                    if ext.header().capacity != e.sectors {
                        return Err(at_line(format!(
                            "the extent is {} sectors, but {name} says its capacity is {}",
                            e.sectors,
                            ext.header().capacity
                        )));
                    }
                    PieceKind::Sparse(ext)
                }
            };
            if len > 0 {
                pieces.push(Piece { start, len, kind });
            }
            start = start
                .checked_add(len)
                .ok_or_else(|| at_line("the extents add up to more than 2^64 bytes".into()))?;
        }
        if start > sparse::MAX_CAPACITY {
            return Err(Error::unsupported(format!(
                "VMDK: {start} bytes is more than this reader opens ({} bytes)",
                sparse::MAX_CAPACITY
            ))
            .with_path(path));
        }
        Ok(Vmdk {
            size: start,
            pieces,
            parent: None,
            info: VmdkInfo {
                create_type: d.create_type.clone(),
                cid: d.cid,
                parent_cid: d.parent_cid,
                extents: d.extents.len(),
                grain_size,
                compressed,
                parent: d.parent_file_name_hint.as_ref().map(PathBuf::from),
            },
            notes,
        })
    }

    fn open_parent(&mut self, path: &Path, resolver: &dyn Resolver, depth: usize) -> Result<()> {
        if self.info.parent_cid == NO_PARENT {
            if let Some(hint) = &self.info.parent {
                // qemu refuses this too: reading it alone would give zeros for the parent's data.
                return Err(Error::invalid(format!(
                    "this VMDK names a parent ({}) but its parentCID is ffffffff (no parent): \
                     it is a delta disk whose link is damaged, and is never read without its \
                     parent",
                    hint.display()
                ))
                .with_path(path));
            }
            return Ok(());
        }
        let Some(hint) = self.info.parent.clone() else {
            return Err(Error::invalid(format!(
                "this VMDK is a delta disk (parentCID {:08x}) but names no parent \
                 (parentFileNameHint); it cannot be read without its parent",
                self.info.parent_cid
            ))
            .with_path(path));
        };
        if depth + 1 >= MAX_CHAIN_DEPTH {
            return Err(Error::unsupported(format!(
                "more than {MAX_CHAIN_DEPTH} VMDK delta disks stack here (a loop?)"
            ))
            .with_path(path));
        }
        let name = hint.to_string_lossy();
        let (pf, pp) = resolver.open(&name).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "this VMDK is a delta disk whose parent {name:?} cannot be opened ({e}); it \
                     is never read without its parent"
                ),
            )
            .with_path(path)
        })?;
        let parent = Vmdk::open_in(pf, &pp, resolver, depth + 1)?;
        if parent.info.cid != self.info.parent_cid {
            return Err(Error::invalid(format!(
                "the parent {} has CID {:08x}, but this delta disk expects parentCID {:08x}: \
                 the parent changed after the delta was made",
                pp.display(),
                parent.info.cid,
                self.info.parent_cid
            ))
            .with_path(path));
        }
        if parent.size != self.size {
            return Err(Error::invalid(format!(
                "the parent {} is {} bytes, this delta disk {}",
                pp.display(),
                parent.size,
                self.size
            ))
            .with_path(path));
        }
        self.info.parent = Some(pp);
        self.parent = Some(Box::new(parent));
        Ok(())
    }

    /// What kind of VMDK this is.
    pub fn info(&self) -> &VmdkInfo {
        &self.info
    }

    /// The piece holding `offset` (< size).
    fn piece(&self, offset: u64) -> Option<&Piece> {
        let i = self.pieces.partition_point(|p| p.start + p.len <= offset);
        self.pieces.get(i).filter(|p| p.start <= offset)
    }

    fn read_piece(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let Some(p) = self.piece(offset) else {
            buf.fill(0);
            return Ok(());
        };
        let within = offset - p.start;
        match &p.kind {
            PieceKind::Zero => buf.fill(0),
            PieceKind::Flat(f) => f.read_exact_at(buf, within)?,
            PieceKind::Sparse(ext) => {
                let gb = ext.grain_bytes();
                crate::image::for_each_block_piece(buf, within, gb, |piece, pos| {
                    let g = pos / gb;
                    match ext.grain(g) {
                        Grain::Zero => piece.fill(0),
                        Grain::Unallocated => match &self.parent {
                            Some(parent) => parent.read_exact_at(piece, p.start + pos)?,
                            None => piece.fill(0),
                        },
                        Grain::At(s) => ext.read_stored(g, s, pos % gb, piece)?,
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}

/// The descriptor embedded in a sparse extent, if it has one.
fn embedded_descriptor(
    file: &dyn DiskImage,
    h: &header::SparseHeader,
    path: &Path,
) -> Result<Option<Descriptor>> {
    if h.descriptor_offset == 0 || h.descriptor_size == 0 {
        return Ok(None);
    }
    let at = h.descriptor_offset.checked_mul(512);
    let len = h.descriptor_size.checked_mul(512);
    let (Some(at), Some(len)) = (at, len) else {
        return Err(
            Error::invalid("VMDK: the embedded descriptor's place overflows")
                .with_offset(28)
                .with_path(path),
        );
    };
    if len > descriptor::MAX_DESCRIPTOR as u64 || at.checked_add(len).is_none_or(|e| e > file.len())
    {
        return Err(Error::invalid(format!(
            "VMDK: the embedded descriptor ({} sectors at sector {}) is not inside the {}-byte \
             file",
            h.descriptor_size,
            h.descriptor_offset,
            file.len()
        ))
        .with_offset(28)
        .with_path(path));
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact_at(&mut text, at).path(path)?;
    // The extent files of a split sparse disk reserve the space but leave it empty: no
    // descriptor of their own.
    let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    if text[..end].iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    descriptor::parse(&text)
        .map(Some)
        .map_err(|e| e.with_offset(at).with_path(path))
}

/// Refuses descriptors this reader must not read: encrypted, or a create type refused or
/// unknown.
fn check_descriptor_kind(d: &Descriptor, path: &Path) -> Result<()> {
    if d.encrypted {
        return Err(Error::unsupported(
            "this VMDK is encrypted (its descriptor has an encryption section); ec2azure reads \
             only unencrypted disks",
        )
        .with_path(path));
    }
    if let Some(why) = refused_create_type(&d.create_type) {
        return Err(Error::unsupported(format!(
            "this VMDK is {why}, which ec2azure does not read"
        ))
        .with_path(path));
    }
    if !KNOWN_CREATE_TYPES.contains(&d.create_type.as_str()) {
        return Err(Error::unsupported(format!(
            "VMDK createType {:?} is unknown; ec2azure reads {}",
            d.create_type,
            KNOWN_CREATE_TYPES.join(", ")
        ))
        .with_path(path));
    }
    Ok(())
}

fn note_tables(ext: &SparseExtent, path: &Path, notes: &mut Vec<String>) {
    match ext.source() {
        TableSource::Header | TableSource::Footer => {}
        TableSource::Scan => notes.push(format!(
            "{}: the stream has no footer with its grain directory; its grains were found by \
             scanning the stream's markers",
            path.display()
        )),
    }
    if ext.redundant_tables() > 0 {
        notes.push(format!(
            "{}: {} grain table(s) were read through the redundant grain directory, the primary \
             one being damaged",
            path.display(),
            ext.redundant_tables()
        ));
    }
}

impl DiskImage for Vmdk {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = readable(self.size, offset, buf.len());
        let mut done = 0;
        while done < n {
            let at = offset + done as u64;
            let k = match self.piece(at) {
                Some(p) => ((p.start + p.len - at) as usize).min(n - done),
                None => n - done,
            };
            self.read_piece(&mut buf[done..done + k], at)?;
            done += k;
        }
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        let mut ranges: Vec<(u64, u64, ExtentKind)> = Vec::new();
        let parent = self.parent.as_ref().map(|p| p.extents()).transpose()?;
        for p in &self.pieces {
            match &p.kind {
                PieceKind::Zero => ranges.push((p.start, p.len, ExtentKind::Zero)),
                PieceKind::Flat(f) => ranges.extend(
                    f.extents()?
                        .iter()
                        .map(|e| (p.start + e.offset, e.len, e.kind)),
                ),
                PieceKind::Sparse(ext) => {
                    for (o, l, k) in ext.runs() {
                        let o = p.start + o;
                        match (&parent, k) {
                            (Some(pm), ExtentKind::Unallocated) => {
                                ranges.extend(pm.range(o, l).map(|e| (e.offset, e.len, e.kind)))
                            }
                            _ => ranges.push((o, l, k)),
                        }
                    }
                }
            }
        }
        Ok(ExtentMap::from_ranges(self.size, ranges))
    }

    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let p = self.piece(offset)?;
        match &p.kind {
            PieceKind::Flat(f) if offset + len as u64 <= p.start + p.len => {
                f.as_slice(offset - p.start, len)
            }
            _ => None,
        }
    }

    fn release(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size);
        let mut at = offset;
        while at < end {
            let Some(p) = self.piece(at) else { break };
            let stop = (p.start + p.len).min(end);
            match &p.kind {
                PieceKind::Flat(f) => f.release(at - p.start, stop - at),
                PieceKind::Sparse(ext) => ext.release(at - p.start, stop - at),
                PieceKind::Zero => {}
            }
            at = stop;
        }
    }

    fn notes(&self) -> Vec<String> {
        let mut n = self.notes.clone();
        if let Some(p) = &self.parent {
            n.extend(p.notes());
        }
        n
    }
}
