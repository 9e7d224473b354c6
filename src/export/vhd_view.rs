//! A disk seen as the bytes of its fixed VHD, without writing it: the disk's bytes, zeros up to
//! the virtual size, then the footer — a [`DiskImage`] over the whole VHD file's length. The
//! page-blob upload sends it; anything that needs "the VHD of this disk" reads it.

use crate::error::Result;
use crate::image::vhd::FOOTER_SIZE;
use crate::image::{DiskImage, ExtentKind, ExtentMap, Format};

/// A disk seen as the bytes of its fixed VHD: the disk, zeros up to the virtual size, then the
/// footer. Implements [`DiskImage`] over the whole VHD file's length.
pub struct VhdView<'a> {
    disk: &'a dyn DiskImage,
    pub(crate) vsize: u64,
    footer: [u8; 512],
    pub(crate) extents: ExtentMap,
}

impl<'a> VhdView<'a> {
    /// `disk`'s first `vsize` bytes (zeros past its end) followed by `footer`.
    ///
    /// # Errors
    /// The disk's extent map cannot be read.
    pub fn new(disk: &'a dyn DiskImage, vsize: u64, footer: [u8; 512]) -> Result<Self> {
        let inner = disk.extents()?.with_len(vsize);
        let extents = ExtentMap::from_ranges(
            vsize + FOOTER_SIZE,
            inner.iter().map(|e| (e.offset, e.len, e.kind)).chain([(
                vsize,
                FOOTER_SIZE,
                ExtentKind::Data,
            )]),
        );
        Ok(VhdView {
            disk,
            vsize,
            footer,
            extents,
        })
    }

    /// The virtual size (the file's length less the footer).
    pub fn virtual_size(&self) -> u64 {
        self.vsize
    }
}

impl DiskImage for VhdView<'_> {
    fn len(&self) -> u64 {
        self.vsize + FOOTER_SIZE
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let len = self.len();
        if offset >= len {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(len - offset).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            if pos >= self.vsize {
                let at = (pos - self.vsize) as usize;
                let k = (512 - at).min(n - done);
                buf[done..done + k].copy_from_slice(&self.footer[at..at + k]);
                done += k;
            } else {
                let k = (n - done).min(usize::try_from(self.vsize - pos).unwrap_or(usize::MAX));
                let piece = &mut buf[done..done + k];
                if pos < self.disk.len() {
                    let avail = piece
                        .len()
                        .min(usize::try_from(self.disk.len() - pos).unwrap_or(usize::MAX));
                    self.disk.read_exact_at(&mut piece[..avail], pos)?;
                    piece[avail..].fill(0);
                } else {
                    piece.fill(0);
                }
                done += k;
            }
        }
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        Ok(self.extents.clone())
    }

    fn format(&self) -> Format {
        Format::Vhd
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        if offset.checked_add(len as u64)? <= self.vsize.min(self.disk.len()) {
            self.disk.as_slice(offset, len)
        } else {
            None
        }
    }

    fn release(&self, offset: u64, len: u64) {
        let end = self.disk.len();
        if offset < end {
            self.disk.release(offset, len.min(end - offset));
        }
    }
}
