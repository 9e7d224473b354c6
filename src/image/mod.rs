//! Disk images as the rest of the crate sees them: [`DiskImage`] is a virtual size, positional
//! reads on `&self` (no shared cursor, so rayon workers can share one image) and an [`ExtentMap`]
//! saying which ranges hold data, which are known zero and which are unallocated.
//!
//! Every input format opens as a `DiskImage` through [`open`], which detects the format from
//! magic numbers and checksums (never falling back to raw for a file that looks like a damaged
//! known format) unless the caller names it. Converters walk the extents, not the bytes: holes are
//! never read.
//!
//! ```text
//!   open(path, format?) ──> detect ──> RawImage            (regular file or block device)
//!                                  ├─> FixedVhd<RawImage>  (footer checked, data = the file's head)
//!                                  ├─> DynamicVhd          (footer copy, header, BAT; parents)
//!                                  ├─> Vhdx, Qcow2Image
//!                                  ├─> Vmdk                (sparse, stream-optimized, descriptor)
//!                                  ├─> Ova ──> Vmdk        (one disk of the OVF, read in the tar)
//!                                  └─> refused by name     (VDI, QED, LUKS, Parallels, bochs,
//!                                                           cloop, DMG, qcow v1, VMDK COWD)
//! ```
//!
//! A file that carries no known signature is read as raw, and says so in its
//! [`DiskImage::notes`].

mod detect;
mod extent;
pub mod mem;
pub mod ova;
pub mod partition;
pub mod qcow2;
pub mod raw;
pub mod slice;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub(crate) use extent::push_run;
pub use extent::{Extent, ExtentKind, ExtentMap};
pub use mem::MemImage;
pub use raw::RawImage;
pub use vhd::{DynamicVhd, FixedVhd, Footer};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use std::path::Path;

/// A virtual disk: size, positional reads and an extent map.
///
/// Implementations must be safe to read from several threads at once.
pub trait DiskImage: Send + Sync {
    /// The virtual size of the disk in bytes.
    fn len(&self) -> u64;

    /// `true` for a disk of size 0.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads into `buf` from virtual `offset`. Returns the number of bytes read, which is less than
    /// `buf.len()` only when the read reaches the end of the disk (0 at or past the end).
    ///
    /// # Errors
    /// I/O errors of the underlying file, with the offset; format errors met while reading.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;

    /// Which ranges of the disk hold data, are known to be zero, or are unallocated.
    /// The map covers `0..len()` exactly.
    ///
    /// # Errors
    /// I/O errors while asking the file system or reading allocation tables.
    fn extents(&self) -> Result<ExtentMap>;

    /// The format this image was opened as.
    fn format(&self) -> Format;

    /// The bytes at `offset..offset + len` without copying, when the image can lend them (a
    /// memory-mapped raw file, an in-memory disk); `None` otherwise, and then callers use
    /// [`DiskImage::read_at`]. Returns `None` for any range not wholly inside the disk.
    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }

    /// A hint that the bytes at `offset..offset + len` will not be read again soon: an image
    /// that maps its file drops those pages from this process's memory (they stay in the page
    /// cache), so resident memory does not grow with the input. Lent slices of the range must
    /// no longer be in use; reading the range again later is still correct. No-op by default.
    fn release(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// What the reader did or decided that a user should hear about (a VHDX log replayed in
    /// memory, a VMDK read through its redundant grain directory, a file read as raw for want of
    /// any signature); empty by default.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// As [`DiskImage::read_at`], and an error when the range goes past the end of the disk.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let n = self.read_at(&mut buf[done..], at)?;
            if n == 0 {
                return Err(Error::argument(format!(
                    "read of {} bytes goes past the end of the disk ({} bytes)",
                    buf.len(),
                    self.len()
                ))
                .with_offset(at));
            }
            done += n;
        }
        Ok(())
    }
}

impl<T: DiskImage + ?Sized> DiskImage for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn extents(&self) -> Result<ExtentMap> {
        (**self).extents()
    }
    fn format(&self) -> Format {
        (**self).format()
    }
    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).as_slice(offset, len)
    }
    fn notes(&self) -> Vec<String> {
        (**self).notes()
    }
    fn release(&self, offset: u64, len: u64) {
        (**self).release(offset, len)
    }
}

/// How many of `want` bytes at `offset` lie inside a disk of `size` bytes (0 at or past the end).
pub(crate) fn readable(size: u64, offset: u64, want: usize) -> usize {
    if offset >= size {
        return 0;
    }
    want.min(usize::try_from(size - offset).unwrap_or(usize::MAX))
}

/// Calls `f(piece, disk_offset)` for each piece of `buf` (read at `offset`) that lies in one
/// block of `block_size` bytes, in order.
///
/// # Errors
/// The first error `f` returns.
pub(crate) fn for_each_block_piece(
    buf: &mut [u8],
    offset: u64,
    block_size: u64,
    mut f: impl FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let pos = offset + done as u64;
        let k = ((block_size - pos % block_size) as usize).min(buf.len() - done);
        f(&mut buf[done..done + k], pos)?;
        done += k;
    }
    Ok(())
}

/// The disk's bytes at `start..start + buf.len()`: lent in place when the image can
/// ([`DiskImage::as_slice`]), otherwise read into `buf` — data extents read, every other extent
/// (and anything past the disk's end) zero-filled, so holes are never read.
///
/// # Errors
/// Read errors of the image.
pub fn bytes_at<'a>(
    img: &'a dyn DiskImage,
    extents: &ExtentMap,
    start: u64,
    buf: &'a mut [u8],
) -> Result<&'a [u8]> {
    let len = buf.len();
    if start.saturating_add(len as u64) <= img.len()
        && let Some(lent) = img.as_slice(start, len)
    {
        return Ok(lent);
    }
    buf.fill(0);
    for e in extents
        .range(start, len as u64)
        .filter(|e| e.kind.is_data())
    {
        let piece = &mut buf[(e.offset - start) as usize..(e.end() - start) as usize];
        img.read_exact_at(piece, e.offset)?;
    }
    Ok(buf)
}

/// The image formats this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A raw disk: the bytes of the disk, nothing else.
    Raw,
    /// A VHD: fixed, dynamic or differencing.
    Vhd,
    /// A VHDX image.
    Vhdx,
    /// A qcow2 image (through imago).
    Qcow2,
    /// A VMDK: sparse, stream-optimized, flat or split, through its descriptor.
    Vmdk,
    /// An OVA: a tar archive with an OVF descriptor and its disks (VMDK).
    Ova,
}

impl Format {
    /// The format's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Ova => "ova",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raw" | "img" => Ok(Format::Raw),
            "vhd" | "vpc" => Ok(Format::Vhd),
            "vhdx" => Ok(Format::Vhdx),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            "ova" => Ok(Format::Ova),
            other => Err(Error::argument(format!(
                "unknown image format {other:?}: expected raw, vhd, vhdx, qcow2, vmdk or ova"
            ))),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) use detect::{Detected, detect};

/// How to open an image: its format (detected when `None`) and, for an OVA holding several
/// disks, which one (`N` counting from 1, or the OVF disk id or file name).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The format, or `None` to detect it.
    pub format: Option<Format>,
    /// The disk of an OVA.
    pub disk: Option<String>,
}

/// Opens the image file at `path` read-only, detecting its format unless `format` names it.
/// (URIs such as `ebs://snap-…` are opened by [`crate::source::open`], above the cloud layer.)
///
/// # Errors
/// The file cannot be opened; it looks like a known format but is damaged; or its format is one
/// this version cannot read (a dirty VHDX log, zstd qcow2, VDI...), which is refused rather than
/// read as raw.
pub fn open(path: &Path, format: Option<Format>) -> Result<Box<dyn DiskImage>> {
    open_with(path, &OpenOptions { format, disk: None })
}

/// The format detection finds for the file at `path` (raw when no signature is found), without
/// opening it as that format.
///
/// # Errors
/// The file cannot be read.
pub fn detect_format(path: &Path) -> Result<Option<Format>> {
    let raw = RawImage::open(path)?;
    Ok(detect(&raw).path(path)?.format())
}

/// [`open`] with every option.
///
/// # Errors
/// As [`open`]; and `disk` given for anything but an OVA, or naming no disk of it.
pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    let format = opts.format;
    let mut raw = RawImage::open(path)?;
    let detected = detect(&raw).path(path)?;
    let explicit = format.is_some();
    let format = match format {
        Some(f) => f,
        None => match &detected {
            Detected::Raw => {
                raw.add_note(format!(
                    "no image signature found (checked {}): read as a raw disk",
                    detect::SIGNATURES_CHECKED
                ));
                Format::Raw
            }
            Detected::Refused(name) => {
                return Err(Error::unsupported(format!(
                    "this is a {name} image; ec2azure reads {}; give -f raw to read the file as \
                     a raw disk anyway",
                    detect::READABLE
                ))
                .with_path(path));
            }
            // Every other case names a format we read.
            other => other.format().unwrap_or(Format::Raw),
        },
    };
    if opts.disk.is_some() && format != Format::Ova {
        return Err(Error::argument(format!(
            "--disk chooses a disk of an OVA, but this is a {format} image"
        ))
        .with_path(path));
    }
    match format {
        Format::Raw => {
            if explicit {
                raw.add_note("read as a raw disk, as -f raw asks".to_string());
            }
            Ok(Box::new(raw))
        }
        Format::Vhd => {
            // A footer copy at 0 means dynamic or differencing; a footer only at the end means
            // fixed — unless that footer says otherwise (the head copy may be damaged).
            if let Detected::VhdCookieMisplaced(at) = detected {
                return Err(Error::invalid(format!(
                    "a VHD footer cookie \"conectix\" starts {} bytes before the end instead of \
                     512: the VHD is truncated or has an old 511-byte footer; use -f raw to read \
                     the file as a raw disk anyway",
                    raw.len() - at
                ))
                .with_offset(at)
                .with_path(path));
            }
            // A disk whose data happens to start with "conectix" is still a fixed VHD when its
            // last sector is a valid fixed footer.
            let tail_is_fixed = raw.tail_sector()?.is_some_and(|t| {
                let f = Footer::decode(&t);
                &f.cookie == vhd::COOKIE
                    && vhd::checksum(&t) == f.checksum
                    && f.disk_type == vhd::DiskType::Fixed
            });
            if matches!(detected, Detected::VhdFooterAtStart) && !tail_is_fixed {
                return Ok(Box::new(DynamicVhd::open(path)?));
            }
            match FixedVhd::new(raw) {
                Ok(v) => Ok(Box::new(v)),
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    Ok(Box::new(DynamicVhd::open(path)?))
                }
                Err(e) => Err(e.with_path(path)),
            }
        }
        Format::Vhdx => Ok(Box::new(vhdx::Vhdx::open(path)?)),
        Format::Qcow2 => Ok(Box::new(qcow2::Qcow2Image::open_with(path, explicit)?)),
        Format::Vmdk => Ok(Box::new(vmdk::Vmdk::open(path, !explicit)?)),
        Format::Ova => {
            let ova = ova::Ova::open(path)?;
            Ok(Box::new(ova.open_disk(opts.disk.as_deref())?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in [
            Format::Raw,
            Format::Vhd,
            Format::Vhdx,
            Format::Qcow2,
            Format::Vmdk,
            Format::Ova,
        ] {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
        }
        assert_eq!("vpc".parse::<Format>().unwrap(), Format::Vhd);
        assert!("vdi".parse::<Format>().is_err());
    }
}
