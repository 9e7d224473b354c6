//! An in-memory disk: a byte vector with an explicit extent map. It is the model disk of the
//! property tests and the backing of fuzz targets; bytes outside data extents must be zero.

use super::{DiskImage, ExtentMap, Format};
use crate::error::{Error, Result};

/// A disk held in memory.
#[derive(Debug, Clone)]
pub struct MemImage {
    data: Vec<u8>,
    extents: ExtentMap,
}

impl MemImage {
    /// A disk whose every byte is data.
    pub fn new(data: Vec<u8>) -> Self {
        let extents = ExtentMap::all_data(data.len() as u64);
        MemImage { data, extents }
    }

    /// A disk with the given extent map.
    ///
    /// # Errors
    /// The map does not cover the data exactly, or a byte outside the data extents is not zero
    /// (which would make the map lie).
    pub fn with_extents(data: Vec<u8>, extents: ExtentMap) -> Result<Self> {
        if extents.len() != data.len() as u64 {
            return Err(Error::argument(format!(
                "extent map covers {} bytes, data is {} bytes",
                extents.len(),
                data.len()
            )));
        }
        for e in extents.iter().filter(|e| !e.kind.is_data()) {
            let r = e.offset as usize..e.end() as usize;
            if let Some(p) = data[r.clone()].iter().position(|&b| b != 0) {
                return Err(Error::argument(format!(
                    "byte at {} is not zero but lies in a {:?} extent",
                    r.start + p,
                    e.kind
                )));
            }
        }
        Ok(MemImage { data, extents })
    }

    /// The disk's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl DiskImage for MemImage {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= self.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        Ok(self.extents.clone())
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }
}
