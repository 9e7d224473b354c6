//! [`FileBlobs`]: page blobs kept in files, the store a site's simulated storage accounts use.
//! It implements [`PageBlobStore`] with the same rules and error codes as the in-process fake
//! ([`FakePageBlobs`](super::pageblob::FakePageBlobs)), so the upload engine
//! ([`transfer`](crate::transfer)) writes into it unchanged, and the blobs outlive the process.
//!
//! ```text
//!  DIR/                         one storage account
//!    <container>/               a container: a folder (Azure's naming rule is enforced)
//!      <blob>                   the blob's bytes, a sparse file of the blob's length
//!      .<blob>.json             its sidecar: length, metadata, Content-MD5, page ranges
//! ```
//!
//! Blob names are escaped into one file name (`%XX` for every byte that is not an ASCII letter,
//! digit, `-` or `_`), so `a/b.vhd` is the file `a%2Fb%2Evhd`: no name climbs out of its
//! folder, a data file's name never starts with `.`, a sidecar's always does.
//!
//! **The sidecar is the truth**: a read returns the data file's bytes inside the recorded page
//! ranges and zeros everywhere else. Every change keeps it honest across a crash at any point:
//! - Put Page writes the bytes first (and syncs them), then writes the sidecar with the range
//!   added, atomically (a temporary file renamed over the old one). A crash before the rename
//!   leaves the old ranges: pages that held no data still read as zeros. (Pages that already
//!   held data may hold the new bytes or the old ones, 4 KiB by 4 KiB, as after a torn write to
//!   a disk; the upload engine rewrites them on resume.)
//! - Clear Page removes the range from the sidecar first, then punches a hole in the file.
//! - Create writes a sidecar with the new length and no ranges, then empties the file.
//!
//! Operations within one process are serialised on the sidecar (page writes themselves run in
//! parallel); two processes writing the same blob at once are not supported (a site runs one
//! upload per disk).

use crate::cloud::pageblob::{
    BlobError, BlobName, BlobProperties, MAX_PAGE_BLOB, MAX_PUT, PAGE, PageBlobStore,
    check_page_range,
};
use crate::cloud::range_set::RangeSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the sidecar of a blob holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Sidecar {
    /// The blob's length in bytes.
    len: u64,
    /// User metadata.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Content-MD5, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_md5: Option<String>,
    /// The page ranges holding data: `[start, end)` pairs, ascending, disjoint.
    #[serde(default)]
    ranges: Vec<(u64, u64)>,
}

/// Where a test stops an operation, as a crash would.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashAt {
    /// Put Page: after the data is written, before the sidecar.
    PutAfterData,
    /// Clear Page: after the sidecar is written, before the hole is punched.
    ClearAfterSidecar,
    /// Create: after the sidecar is written, before the file is emptied.
    CreateAfterSidecar,
}

/// Page blobs of one storage account, in files under a folder. See the module documentation.
#[derive(Debug)]
pub struct FileBlobs {
    dir: PathBuf,
    sync: bool,
    managed_disk: bool,
    /// Serialises sidecar read-modify-writes within the process.
    sidecars: Mutex<()>,
    #[cfg(test)]
    crash: Mutex<Option<CrashAt>>,
}

fn internal(what: &str, path: &Path, e: impl std::fmt::Display) -> BlobError {
    BlobError::status(
        500,
        "InternalError",
        format!("{what} {}: {e}", path.display()),
    )
}

fn container_not_found() -> BlobError {
    BlobError::status(
        404,
        "ContainerNotFound",
        "The specified container does not exist.",
    )
}

fn blob_not_found() -> BlobError {
    BlobError::status(404, "BlobNotFound", "The specified blob does not exist.")
}

/// Azure's container naming rule: 3–63 characters, lower-case letters, digits and hyphens,
/// starting with a letter or digit, no two hyphens in a row, not ending with a hyphen.
pub fn check_container_name(name: &str) -> Result<(), BlobError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(BlobError::status(
            400,
            "InvalidResourceName",
            format!(
                "The specified resource name {name:?} contains invalid characters or length: a \
                 container name has 3-63 lower-case letters, digits and single hyphens, starting \
                 and ending with a letter or digit."
            ),
        ))
    }
}

/// The file name a blob's bytes are kept under (see the module documentation).
fn escape(blob: &str) -> String {
    let mut out = String::with_capacity(blob.len());
    for b in blob.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl FileBlobs {
    /// The store of blobs under `dir` (created when the first container is), syncing every
    /// write to the disk before it is recorded (durable across a power loss).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileBlobs {
            dir: dir.into(),
            sync: true,
            managed_disk: false,
            sidecars: Mutex::new(()),
            #[cfg(test)]
            crash: Mutex::new(None),
        }
    }

    /// Writes are not synced (still safe across a crash of the process, not of the machine):
    /// for tests and benchmarks.
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// Also applies the managed-disk direct-upload size rule on creation (20 MiB + 512 bytes
    /// to 32 TiB + 512 bytes), as [`FakePageBlobs::managed_disk`](super::pageblob::FakePageBlobs::managed_disk).
    pub fn managed_disk(mut self) -> Self {
        self.managed_disk = true;
        self
    }

    /// The folder this store keeps its blobs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(test)]
    pub(crate) fn crash_at(&self, at: Option<CrashAt>) {
        *crate::sync::lock(&self.crash) = at;
    }

    #[cfg(test)]
    fn crashes(&self, at: CrashAt) -> bool {
        let mut c = crate::sync::lock(&self.crash);
        if *c == Some(at) {
            *c = None;
            return true;
        }
        false
    }

    fn container_dir(&self, container: &str) -> Result<PathBuf, BlobError> {
        check_container_name(container)?;
        Ok(self.dir.join(container))
    }

    /// The data file and the sidecar of `blob`; the container must exist.
    fn paths(&self, blob: &BlobName) -> Result<(PathBuf, PathBuf), BlobError> {
        let dir = self.container_dir(&blob.container)?;
        if !dir.is_dir() {
            return Err(container_not_found());
        }
        if blob.blob.is_empty() || blob.blob.len() > 1024 {
            return Err(BlobError::status(
                400,
                "InvalidResourceName",
                format!("a blob name has 1-1024 characters, not {}", blob.blob.len()),
            ));
        }
        let name = escape(&blob.blob);
        Ok((dir.join(&name), dir.join(format!(".{name}.json"))))
    }

    fn load(&self, side: &Path) -> Result<Option<Sidecar>, BlobError> {
        match std::fs::read(side) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| internal("the blob's sidecar does not decode:", side, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal("reading", side, e)),
        }
    }

    fn existing(&self, blob: &BlobName) -> Result<(PathBuf, PathBuf, Sidecar), BlobError> {
        let (data, side) = self.paths(blob)?;
        let s = self.load(&side)?.ok_or_else(blob_not_found)?;
        Ok((data, side, s))
    }

    fn store(&self, side: &Path, s: &Sidecar) -> Result<(), BlobError> {
        let text =
            serde_json::to_vec(s).map_err(|e| internal("encoding the sidecar of", side, e))?;
        crate::export::write_file_atomic(side, &text, self.sync)
            .map_err(|e| internal("writing", side, e))
    }

    /// Runs `f` on the sidecar of an existing blob under the sidecar lock, storing what it
    /// returns when it changed.
    fn update(
        &self,
        blob: &BlobName,
        f: impl FnOnce(&Path, &mut Sidecar) -> Result<(), BlobError>,
    ) -> Result<(), BlobError> {
        let _g = crate::sync::lock(&self.sidecars);
        let (data, side, mut s) = self.existing(blob)?;
        let before = s.clone();
        f(&data, &mut s)?;
        if s != before {
            self.store(&side, &s)?;
        }
        Ok(())
    }

    /// Removes a blob (Delete Blob); `false` when it did not exist.
    ///
    /// # Errors
    /// The container does not exist, or the files cannot be removed.
    pub fn delete(&self, blob: &BlobName) -> Result<bool, BlobError> {
        let _g = crate::sync::lock(&self.sidecars);
        let (data, side) = self.paths(blob)?;
        // The sidecar goes first: without it the blob does not exist, whatever the data file.
        let existed = match std::fs::remove_file(&side) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(internal("removing", &side, e)),
        };
        match std::fs::remove_file(&data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal("removing", &data, e)),
        }
        Ok(existed)
    }

    /// The names of the blobs in `container`, sorted.
    ///
    /// # Errors
    /// The container does not exist or cannot be read.
    pub fn list(&self, container: &str) -> Result<Vec<String>, BlobError> {
        let dir = self.container_dir(container)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(container_not_found());
            }
            Err(e) => return Err(internal("listing", &dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| internal("listing", &dir, e))?;
            let f = e.file_name();
            let Some(f) = f.to_str() else { continue };
            if let Some(name) = f.strip_prefix('.').and_then(|n| n.strip_suffix(".json"))
                && !name.starts_with('.')
                && let Some(blob) = unescape(name)
            {
                out.push(blob);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The containers of this account, sorted.
    ///
    /// # Errors
    /// The folder cannot be read.
    pub fn containers(&self) -> Result<Vec<String>, BlobError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(internal("listing", &self.dir, e)),
        };
        let mut out: Vec<String> = rd
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| check_container_name(n).is_ok())
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Frees `offset..offset+len` of `file`'s storage (it then reads as zeros).
fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::other("range beyond off_t"));
    };
    // SAFETY: fallocate on a descriptor this File owns for the call's duration; it reads no
    // memory of ours.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            o,
            l,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // A file system without holes: write zeros instead.
    let zeros = vec![0u8; 1 << 20];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = (end - pos).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Reads `buf.len()` bytes at `offset` of `file`; bytes past its end are zeros.
fn read_padded(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
macro_rules! crash_point {
    ($self:ident, $at:expr) => {
        if $self.crashes($at) {
            return Err(BlobError::Connection("simulated crash".into()));
        }
    };
}
#[cfg(not(test))]
macro_rules! crash_point {
    ($self:ident, $at:expr) => {};
}

impl PageBlobStore for FileBlobs {
    fn create_container(&self, container: &str) -> Result<(), BlobError> {
        let dir = self.container_dir(container)?;
        std::fs::create_dir_all(&dir).map_err(|e| internal("creating", &dir, e))
    }

    fn create(&self, blob: &BlobName, len: u64) -> Result<(), BlobError> {
        let max = if self.managed_disk {
            crate::check::MAX_MANAGED_DISK_UPLOAD
        } else {
            MAX_PAGE_BLOB
        };
        if !len.is_multiple_of(PAGE) || len > max {
            return Err(BlobError::status(
                400,
                "InvalidHeaderValue",
                format!(
                    "x-ms-blob-content-length {len} must be a multiple of 512 and at most {max}"
                ),
            ));
        }
        use crate::check::{MAX_MANAGED_DISK_UPLOAD as MAX, MIN_MANAGED_DISK_UPLOAD as MIN};
        if self.managed_disk && !(MIN..=MAX).contains(&len) {
            return Err(BlobError::status(
                400,
                "InvalidUploadSize",
                format!(
                    "The upload size {len} bytes is invalid: a managed disk upload must be \
                     between {MIN} and {MAX} bytes"
                ),
            ));
        }
        let _g = crate::sync::lock(&self.sidecars);
        let (data, side) = self.paths(blob)?;
        // The new, empty sidecar first: from then on nothing of the old bytes is visible.
        self.store(
            &side,
            &Sidecar {
                len,
                ..Sidecar::default()
            },
        )?;
        crash_point!(self, CrashAt::CreateAfterSidecar);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&data)
            .map_err(|e| internal("creating", &data, e))?;
        f.set_len(len).map_err(|e| internal("sizing", &data, e))
    }

    fn put_pages(&self, blob: &BlobName, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        let len = data.len() as u64;
        let (path, _, s) = self.existing(blob)?;
        check_page_range(offset, len, s.len, Some(MAX_PUT))?;
        // The bytes first, outside the sidecar lock (puts of other ranges go on in parallel).
        // (Created if a crash in Create left the sidecar without its file.)
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| internal("opening", &path, e))?;
        f.write_all_at(data, offset)
            .map_err(|e| internal(&format!("writing {len} bytes at {offset} of"), &path, e))?;
        if self.sync {
            f.sync_data().map_err(|e| internal("syncing", &path, e))?;
        }
        crash_point!(self, CrashAt::PutAfterData);
        // Then the record that they are there.
        self.update(blob, |_, s| {
            // Replaced meanwhile by a shorter blob: the write is refused as it would have been.
            check_page_range(offset, len, s.len, Some(MAX_PUT))?;
            let mut r = RangeSet::from_ranges(s.ranges.iter().map(|&(a, b)| (a, b - a)));
            r.insert(offset, offset + len);
            s.ranges = r.iter().collect();
            Ok(())
        })
    }

    fn clear_pages(&self, blob: &BlobName, offset: u64, len: u64) -> Result<(), BlobError> {
        let mut path = PathBuf::new();
        self.update(blob, |p, s| {
            check_page_range(offset, len, s.len, None)?;
            let mut r = RangeSet::from_ranges(s.ranges.iter().map(|&(a, b)| (a, b - a)));
            r.remove(offset, offset + len);
            s.ranges = r.iter().collect();
            path = p.to_path_buf();
            Ok(())
        })?;
        crash_point!(self, CrashAt::ClearAfterSidecar);
        // The record no longer claims the pages; free their space (a failure here loses
        // nothing: the bytes are invisible).
        if let Ok(f) = OpenOptions::new().write(true).open(&path) {
            let _ = punch_hole(&f, offset, len);
        }
        Ok(())
    }

    fn page_ranges(&self, blob: &BlobName) -> Result<Vec<(u64, u64)>, BlobError> {
        let (_, _, s) = self.existing(blob)?;
        Ok(s.ranges.iter().map(|&(a, b)| (a, b - a)).collect())
    }

    fn read(&self, blob: &BlobName, offset: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        let (path, _, s) = self.existing(blob)?;
        let end = offset.saturating_add(buf.len() as u64);
        if end > s.len {
            return Err(BlobError::status(
                416,
                "InvalidRange",
                "The range specified is invalid for the current size of the resource.",
            ));
        }
        buf.fill(0);
        let ranges = RangeSet::from_ranges(s.ranges.iter().map(|&(a, b)| (a, b - a)));
        let mut file = None;
        for (a, b) in ranges.overlapping(offset, end) {
            let f = match &file {
                Some(f) => f,
                None => file.insert(File::open(&path).map_err(|e| internal("opening", &path, e))?),
            };
            let (from, to) = ((a - offset) as usize, (b - offset) as usize);
            read_padded(f, &mut buf[from..to], a)
                .map_err(|e| internal(&format!("reading at {a} of"), &path, e))?;
        }
        Ok(())
    }

    fn properties(&self, blob: &BlobName) -> Result<Option<BlobProperties>, BlobError> {
        let (_, side) = match self.paths(blob) {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(s) = self.load(&side)? else {
            return Ok(None);
        };
        let content_md5 = match &s.content_md5 {
            None => None,
            Some(h) => Some(parse_md5(h).ok_or_else(|| {
                internal("the sidecar's contentMd5 is not 32 hex digits:", &side, h)
            })?),
        };
        Ok(Some(BlobProperties {
            len: s.len,
            page_blob: true,
            metadata: s.metadata,
            content_md5,
        }))
    }

    fn set_metadata(
        &self,
        blob: &BlobName,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), BlobError> {
        self.update(blob, |_, s| {
            s.metadata = metadata.clone();
            Ok(())
        })
    }

    fn set_content_md5(&self, blob: &BlobName, md5: &[u8; 16]) -> Result<(), BlobError> {
        let hex: String = md5.iter().map(|b| format!("{b:02x}")).collect();
        self.update(blob, |_, s| {
            s.content_md5 = Some(hex);
            Ok(())
        })
    }
}

fn parse_md5(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
