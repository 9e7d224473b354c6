//! Raw disk images: regular files (any size, not only multiples of 512) and block devices,
//! opened read-only. Reads are positional (`pread`); extents come from `SEEK_DATA`/`SEEK_HOLE`,
//! so a sparse file's holes are never read. File systems or devices without hole support report
//! the whole disk as data.
//!
//! A regular file is also memory-mapped (read-only, on first use) so converters can look at its
//! bytes without copying them out of the page cache: this halves the CPU cost of a conversion
//! (measured: `pread` copies were half of all cycles). The mapping assumes nobody truncates the
//! input while it is being read, as every other reader of a disk image does.

use super::{DiskImage, ExtentKind, ExtentMap, Format};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

static MMAP_ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns memory-mapping of raw inputs on or off for the whole process (on by default). Off,
/// every read is a `pread`: slower, but an I/O error on the input (a failing disk, a network
/// file system, a file truncated meanwhile) is an error naming the offset instead of a SIGBUS.
pub fn set_mmap_enabled(on: bool) {
    MMAP_ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A raw image: a regular file or a block device, read-only.
#[derive(Debug)]
pub struct RawImage {
    file: File,
    path: PathBuf,
    len: u64,
    is_file: bool,
    map: std::sync::OnceLock<Option<memmap2::Mmap>>,
    notes: Vec<String>,
}

impl RawImage {
    /// Opens `path` read-only.
    ///
    /// # Errors
    /// The file cannot be opened or is neither a regular file nor a block device.
    pub fn open(path: &Path) -> Result<Self> {
        // Look before opening: opening a FIFO for reading would block forever.
        let ft = std::fs::metadata(path)
            .map_err(|e| Error::io("opening the image for reading", e).with_path(path))?
            .file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(Error::argument(
                "not a regular file or block device: expected a disk image",
            )
            .with_path(path));
        }
        let mut file = File::open(path)
            .map_err(|e| Error::io("opening the image for reading", e).with_path(path))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("reading file metadata", e).with_path(path))?;
        let ft = meta.file_type();
        let len = if ft.is_file() {
            meta.len()
        } else if ft.is_block_device() {
            file.seek(SeekFrom::End(0))
                .map_err(|e| Error::io("finding the size of the block device", e).with_path(path))?
        } else {
            return Err(Error::argument(
                "not a regular file or block device: expected a disk image",
            )
            .with_path(path));
        };
        Ok(RawImage {
            file,
            path: path.to_path_buf(),
            len,
            is_file: ft.is_file(),
            map: std::sync::OnceLock::new(),
            notes: Vec::new(),
        })
    }

    /// Adds a note for [`DiskImage::notes`] (why the file is read as raw).
    pub fn add_note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The last 512 bytes of the file (where a VHD keeps its footer), if it is that long.
    ///
    /// # Errors
    /// Read errors.
    pub fn tail_sector(&self) -> Result<Option<[u8; 512]>> {
        if self.len < 512 {
            return Ok(None);
        }
        let mut b = [0u8; 512];
        self.read_exact_at(&mut b, self.len - 512)?;
        Ok(Some(b))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Data ranges of the file between `start` and `end` from `SEEK_DATA`/`SEEK_HOLE`, or `None`
    /// when the file system does not support them.
    fn data_ranges(&self, end: u64) -> Result<Option<Vec<(u64, u64, ExtentKind)>>> {
        let fd = self.file.as_raw_fd();
        let mut ranges = Vec::new();
        let mut pos: u64 = 0;
        while pos < end {
            let Ok(at) = libc::off_t::try_from(pos) else {
                break;
            };
            // SAFETY: lseek on a file descriptor we own; it does not touch memory. The file offset
            // it moves is never used, since every read is positional.
            let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
            if data < 0 {
                let err = std::io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(libc::ENXIO) => Ok(Some(ranges)), // no data after pos
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(None),
                    _ => Err(Error::io("finding data extents (SEEK_DATA)", err)
                        .with_offset(pos)
                        .with_path(&self.path)),
                };
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < 0 {
                let err = std::io::Error::last_os_error();
                return Err(Error::io("finding holes (SEEK_HOLE)", err)
                    .with_offset(data as u64)
                    .with_path(&self.path));
            }
            let (d, h) = (data as u64, (hole as u64).min(end));
            if h <= d {
                break;
            }
            ranges.push((d, h - d, ExtentKind::Data));
            pos = h;
        }
        Ok(Some(ranges))
    }

    /// The extent map of the first `end` bytes of the file.
    pub(crate) fn extents_up_to(&self, end: u64) -> Result<ExtentMap> {
        Ok(match self.data_ranges(end)? {
            Some(r) => ExtentMap::from_ranges(end, r),
            None => ExtentMap::all_data(end),
        })
    }

    /// Reads at `offset`, stopping at `limit` (the end of the disk region of the file).
    pub(crate) fn read_at_limited(&self, buf: &mut [u8], offset: u64, limit: u64) -> Result<usize> {
        if offset >= limit {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(limit - offset).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < want {
            let at = offset + done as u64;
            match self.file.read_at(&mut buf[done..want], at) {
                Ok(0) => {
                    return Err(Error::invalid(format!(
                        "the file ended early: expected {limit} bytes of disk data"
                    ))
                    .with_offset(at)
                    .with_path(&self.path));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io("reading", e)
                        .with_offset(at)
                        .with_path(&self.path));
                }
            }
        }
        Ok(done)
    }
}

impl DiskImage for RawImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.read_at_limited(buf, offset, self.len)
    }

    fn extents(&self) -> Result<ExtentMap> {
        self.extents_up_to(self.len)
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn release(&self, offset: u64, len: u64) {
        let Some(Some(map)) = self.map.get() else {
            return;
        };
        // Whole pages inside the range only: a page shared with a neighbouring range may still
        // be in use there.
        const PAGE: u64 = 4096;
        let start = offset.div_ceil(PAGE) * PAGE;
        let end = offset.saturating_add(len).min(self.len) / PAGE * PAGE;
        if end <= start {
            return;
        }
        let (Ok(s), Ok(n)) = (usize::try_from(start), usize::try_from(end - start)) else {
            return;
        };
        // SAFETY: the range lies inside our read-only, file-backed mapping; dropping its pages
        // only makes a later access fault them in again from the file (the page cache), so no
        // reader can see different bytes. The caller promises no lent slice of the range is in
        // use; even if one were, it would read the same bytes again.
        unsafe {
            let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, s, n);
        }
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let map = self.map.get_or_init(|| {
            if !self.is_file
                || self.len == 0
                || usize::try_from(self.len).is_err()
                || !MMAP_ENABLED.load(std::sync::atomic::Ordering::Relaxed)
            {
                return None;
            }
            // SAFETY: the map is read-only and lives as long as `self`. The bytes may change
            // if another process writes the file meanwhile (then we read what it wrote, as with
            // pread); a truncation by another process would fault, which disk-image readers
            // assume does not happen.
            let map = unsafe { memmap2::Mmap::map(&self.file) }.ok()?;
            let _ = map.advise(memmap2::Advice::Sequential);
            Some(map)
        });
        let start = usize::try_from(offset).ok()?;
        map.as_ref()?.get(start..start.checked_add(len)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sparse_file_extents_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.raw");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_at(&[7u8; 4096], 4 << 20).unwrap();
        drop(f);
        let img = RawImage::open(&p).unwrap();
        assert_eq!(img.len(), 8 << 20);
        let m = img.extents().unwrap();
        let (data, _, _) = m.totals();
        // The file system may round the data extent to its block size, but not to the whole file.
        assert!((4096..8 << 20).contains(&data), "data bytes {data}");
        assert!(m.has_data_in(4 << 20, 4096));
        let mut buf = vec![0u8; 8192];
        assert_eq!(img.read_at(&mut buf, (4 << 20) - 4096).unwrap(), 8192);
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..].iter().all(|&b| b == 7));
        assert_eq!(img.read_at(&mut buf, (8 << 20) - 100).unwrap(), 100);
        assert_eq!(img.read_at(&mut buf, 8 << 20).unwrap(), 0);
    }

    #[test]
    fn odd_size_and_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.raw");
        File::create(&p).unwrap().write_all(&[1u8; 1001]).unwrap();
        let img = RawImage::open(&p).unwrap();
        assert_eq!(img.len(), 1001);
        assert_eq!(img.extents().unwrap().totals().0, 1001);
        let e = RawImage::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
