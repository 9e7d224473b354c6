//! A byte range of another image seen as an image of its own: a VMDK extent inside an OVA
//! (tar) archive, or a flat extent that starts at an offset into its file. Reads and lent slices
//! are forwarded with the range's start added, so errors name the container's file and the
//! offset in it; extents are the container's, clipped to the range.

use super::{DiskImage, ExtentMap, Format};
use crate::error::{Error, Result};
use std::sync::Arc;

/// `len` bytes of `inner` starting at `start`.
#[derive(Clone)]
pub struct Slice {
    inner: Arc<dyn DiskImage>,
    start: u64,
    len: u64,
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slice")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl Slice {
    /// The bytes `start..start + len` of `inner`.
    ///
    /// # Errors
    /// The range does not lie inside `inner`.
    pub fn new(inner: Arc<dyn DiskImage>, start: u64, len: u64) -> Result<Self> {
        if start.checked_add(len).is_none_or(|e| e > inner.len()) {
            return Err(Error::invalid(format!(
                "a range of {len} bytes at offset {start} goes past the end of its {}-byte file",
                inner.len()
            ))
            .with_offset(start));
        }
        Ok(Slice { inner, start, len })
    }

    /// Where the range starts in its container.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl DiskImage for Slice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = super::readable(self.len, offset, buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.inner
            .read_exact_at(&mut buf[..n], self.start + offset)?;
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        let inner = self.inner.extents()?;
        Ok(ExtentMap::from_ranges(
            self.len,
            inner
                .range(self.start, self.len)
                .map(|e| (e.offset - self.start, e.len, e.kind)),
        ))
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        if offset.checked_add(len as u64)? > self.len {
            return None;
        }
        self.inner.as_slice(self.start + offset, len)
    }

    fn release(&self, offset: u64, len: u64) {
        if offset < self.len {
            self.inner
                .release(self.start + offset, len.min(self.len - offset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemImage;

    #[test]
    fn reads_and_extents_are_shifted_and_clipped() {
        let data: Vec<u8> = (0..100u8).collect();
        let inner: Arc<dyn DiskImage> = Arc::new(MemImage::new(data));
        let s = Slice::new(inner.clone(), 10, 20).unwrap();
        let mut b = [0u8; 30];
        assert_eq!(s.read_at(&mut b, 15).unwrap(), 5);
        assert_eq!(&b[..5], &[25, 26, 27, 28, 29]);
        assert_eq!(s.read_at(&mut b, 20).unwrap(), 0);
        assert_eq!(s.extents().unwrap().len(), 20);
        assert_eq!(s.as_slice(0, 3), Some(&[10u8, 11, 12][..]));
        assert_eq!(s.as_slice(18, 3), None);
        assert!(Slice::new(inner, 90, 11).is_err());
    }
}
