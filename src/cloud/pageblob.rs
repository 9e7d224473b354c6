//! Azure page blobs: the narrow [`PageBlobStore`] surface the upload and download need, and
//! [`FakePageBlobs`], an in-process store that enforces Azure's rules and answers with Azure's
//! error codes, keeps a log of every request, and can be told to misbehave.
//!
//! A page blob is a sparse array of 512-byte pages. Its length is fixed at creation (a multiple
//! of 512, at most 8 TiB); `Put Page` writes 512-aligned ranges of at most 4 MiB inside it;
//! `Clear Page` frees pages; `Get Page Ranges` lists the pages that hold data (written and not
//! cleared); reads of other pages return zeros. The real service is reached through
//! [`azure_blob`](super::azure_blob); the upload engine is [`upload`](super::upload).
//!
//! [`RangeSet`] (ordered, merged, half-open byte ranges) is the arithmetic both the fake and the
//! upload engine use for "which pages hold data".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// A page: the unit of every page-blob operation.
pub const PAGE: u64 = 512;
/// The most one `Put Page` may carry: 4 MiB.
pub const MAX_PUT: u64 = 4 << 20;
/// The largest page blob: 8 TiB.
pub const MAX_PAGE_BLOB: u64 = crate::check::MAX_PAGE_BLOB;

/// A blob in a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobName {
    /// The container.
    pub container: String,
    /// The blob's name in the container.
    pub blob: String,
}

impl BlobName {
    /// `container/blob`.
    pub fn new(container: impl Into<String>, blob: impl Into<String>) -> Self {
        BlobName {
            container: container.into(),
            blob: blob.into(),
        }
    }
}

impl std::fmt::Display for BlobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container, self.blob)
    }
}

/// A failed page-blob call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobError {
    /// The service answered with an HTTP error: status, Azure error code, message.
    Status {
        /// HTTP status.
        status: u16,
        /// Azure's error code (`ServerBusy`, `InvalidPageRange`, ...).
        code: String,
        /// The service's message (credentials removed).
        message: String,
    },
    /// No answer in time (the request may or may not have taken effect).
    Timeout,
    /// The connection failed or was dropped (the request may have taken partial effect).
    Connection(String),
    /// The client refused to send a request that breaks the service's rules.
    Refused(String),
}

impl BlobError {
    /// An HTTP error answer.
    pub fn status(status: u16, code: &str, message: impl Into<String>) -> Self {
        BlobError::Status {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// `true` for a 404 answer.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobError::Status { status: 404, .. })
    }

    /// The Azure error code, if the service sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            BlobError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobError::Status {
                status,
                code,
                message,
            } => write!(f, "HTTP {status} {code}: {message}"),
            BlobError::Timeout => f.write_str("timed out"),
            BlobError::Connection(m) => write!(f, "connection failed: {m}"),
            BlobError::Refused(m) => write!(f, "not sent: {m}"),
        }
    }
}

/// What `Get Blob Properties` says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlobProperties {
    /// The blob's length in bytes.
    pub len: u64,
    /// `true` for a page blob.
    pub page_blob: bool,
    /// User metadata (names in lower case).
    pub metadata: BTreeMap<String, String>,
    /// The blob's Content-MD5, if set.
    pub content_md5: Option<[u8; 16]>,
}

/// The page-blob operations this crate uses. Every method is one request to the service.
pub trait PageBlobStore: Send + Sync {
    /// Creates `container` if it does not exist.
    ///
    /// # Errors
    /// The service's answer.
    fn create_container(&self, container: &str) -> Result<(), BlobError>;

    /// Creates (or replaces with an empty one) the page blob `blob` of `len` bytes.
    ///
    /// # Errors
    /// The service's answer: 400 when `len` is not a multiple of 512 or too large; 404
    /// `ContainerNotFound`.
    fn create(&self, blob: &BlobName, len: u64) -> Result<(), BlobError>;

    /// Writes `data` at `offset` (`Put Page`, update).
    ///
    /// # Errors
    /// The service's answer: misaligned or oversized ranges, ranges past the end.
    fn put_pages(&self, blob: &BlobName, offset: u64, data: &[u8]) -> Result<(), BlobError>;

    /// Frees `len` bytes at `offset` (`Put Page`, clear): they read as zeros again.
    ///
    /// # Errors
    /// The service's answer.
    fn clear_pages(&self, blob: &BlobName, offset: u64, len: u64) -> Result<(), BlobError>;

    /// The ranges holding data, `(offset, len)` in ascending order (`Get Page Ranges`).
    ///
    /// # Errors
    /// The service's answer, or an answer that cannot be parsed.
    fn page_ranges(&self, blob: &BlobName) -> Result<Vec<(u64, u64)>, BlobError>;

    /// Reads `buf.len()` bytes at `offset` (`Get Blob` with a range).
    ///
    /// # Errors
    /// The service's answer, or a short answer.
    fn read(&self, blob: &BlobName, offset: u64, buf: &mut [u8]) -> Result<(), BlobError>;

    /// The blob's properties and metadata; `None` when the blob (or its container) does not exist.
    ///
    /// # Errors
    /// The service's answer.
    fn properties(&self, blob: &BlobName) -> Result<Option<BlobProperties>, BlobError>;

    /// Replaces the blob's metadata.
    ///
    /// # Errors
    /// The service's answer.
    fn set_metadata(
        &self,
        blob: &BlobName,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), BlobError>;

    /// Sets the blob's Content-MD5 property (`Set Blob Properties`).
    ///
    /// # Errors
    /// The service's answer.
    fn set_content_md5(&self, blob: &BlobName, md5: &[u8; 16]) -> Result<(), BlobError>;
}

/// The kind of a logged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create Container.
    CreateContainer,
    /// Put Blob (page blob).
    Create,
    /// Put Page (update).
    PutPages,
    /// Put Page (clear).
    ClearPages,
    /// Get Page Ranges.
    PageRanges,
    /// Get Blob (range).
    Read,
    /// Get Blob Properties.
    Properties,
    /// Set Blob Metadata.
    SetMetadata,
    /// Set Blob Properties (Content-MD5).
    SetContentMd5,
}

/// One request as sent: its kind and, for ranged requests, the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What was asked.
    pub op: Op,
    /// First byte of the range (0 when the request has none).
    pub offset: u64,
    /// Length of the range (the blob length for Create; 0 when none).
    pub len: u64,
    /// `false` when the request failed (fault, error answer).
    pub ok: bool,
}

/// Checks a `Put Page` / `Clear Page` range against Azure's rules for a blob of `blob_len`
/// bytes; `Err` holds Azure's status, code and message. `max` is 4 MiB for writes.
pub fn check_page_range(
    offset: u64,
    len: u64,
    blob_len: u64,
    max: Option<u64>,
) -> Result<(), BlobError> {
    if len == 0 || !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
        return Err(BlobError::status(
            400,
            "InvalidHeaderValue",
            format!(
                "the range {offset}+{len} is not page aligned: offset and length must be non-zero \
                 multiples of 512"
            ),
        ));
    }
    if let Some(max) = max
        && len > max
    {
        return Err(BlobError::status(
            413,
            "RequestBodyTooLarge",
            format!("a Put Page of {len} bytes is larger than the {max} bytes allowed"),
        ));
    }
    if offset.checked_add(len).is_none_or(|end| end > blob_len) {
        return Err(BlobError::status(
            416,
            "InvalidPageRange",
            format!("the range {offset}+{len} goes past the end of the {blob_len}-byte blob"),
        ));
    }
    Ok(())
}

/// Half-open byte ranges, ordered, disjoint and merged (adjacent ranges become one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of `(offset, len)` ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut s = Self::new();
        for (o, l) in ranges {
            s.insert(o, o.saturating_add(l));
        }
        s
    }

    /// Adds `start..end`.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range that starts before and reaches start.
        if let Some((&s, &e)) = self.map.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            self.map.remove(&s);
            end = end.max(e);
        }
        self.map.insert(start, end);
    }

    /// Removes `start..end`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let hit: Vec<(u64, u64)> = self.overlapping(start, end).collect();
        for (s, _) in &hit {
            // The stored range that holds this overlap starts at or before it.
            if let Some((&ks, &ke)) = self.map.range(..=*s).next_back() {
                self.map.remove(&ks);
                if ks < start {
                    self.map.insert(ks, start);
                }
                if ke > end {
                    self.map.insert(end, ke);
                }
            }
        }
    }

    /// The parts of the set inside `start..end`, clipped, in order.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self
            .map
            .range(..start)
            .next_back()
            .filter(|(_, e)| **e > start)
            .map(|(&s, &e)| (s, e));
        first
            .into_iter()
            .chain(self.map.range(start..end).map(|(&s, &e)| (s, e)))
            .map(move |(s, e)| (s.max(start), e.min(end)))
            .filter(|(s, e)| s < e)
    }

    /// The parts of `start..end` not in the set, in order.
    pub fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = start;
        for (s, e) in self.overlapping(start, end) {
            if s > pos {
                out.push((pos, s));
            }
            pos = e;
        }
        if pos < end {
            out.push((pos, end));
        }
        out
    }

    /// `true` when every byte of `start..end` is in the set.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.missing(start, end).is_empty()
    }

    /// Every range, `(start, end)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Bytes in the set.
    pub fn total(&self) -> u64 {
        self.iter().map(|(s, e)| e - s).sum()
    }

    /// `true` when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A fault the fake injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 503 `ServerBusy`; no effect.
    ServerBusy,
    /// 500 `InternalError`; no effect.
    InternalError,
    /// The call times out; with `applied`, the server did the work anyway.
    Timeout {
        /// The request took effect before the time-out.
        applied: bool,
    },
    /// The connection drops in the middle of the request; with `partial`, the first half of a
    /// `Put Page`'s pages (rounded down to a page) were written.
    Dropped {
        /// Part of the request took effect.
        partial: bool,
    },
    /// The call succeeds after this long.
    Slow(Duration),
    /// 403 `AuthorizationPermissionMismatch`: the credentials may not do this (a managed disk's
    /// upload URL allows page writes only).
    Forbidden,
}

#[derive(Debug, Default)]
struct FakeBlob {
    len: u64,
    /// 1 MiB chunks that were ever written.
    chunks: HashMap<u64, Vec<u8>>,
    valid: RangeSet,
    metadata: BTreeMap<String, String>,
    content_md5: Option<[u8; 16]>,
}

const FAKE_CHUNK: u64 = 1 << 20;

impl FakeBlob {
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let (c, at) = (pos / FAKE_CHUNK, (pos % FAKE_CHUNK) as usize);
            let n = (FAKE_CHUNK as usize - at).min(data.len() - done);
            let chunk = self
                .chunks
                .entry(c)
                .or_insert_with(|| vec![0; FAKE_CHUNK as usize]);
            chunk[at..at + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.valid.insert(offset, offset + data.len() as u64);
    }

    fn clear(&mut self, offset: u64, len: u64) {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let (c, at) = (pos / FAKE_CHUNK, (pos % FAKE_CHUNK) as usize);
            let n = (FAKE_CHUNK - at as u64).min(end - pos);
            if n == FAKE_CHUNK {
                self.chunks.remove(&c);
            } else if let Some(chunk) = self.chunks.get_mut(&c) {
                chunk[at..at + n as usize].fill(0);
            }
            pos += n;
        }
        self.valid.remove(offset, end);
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (c, at) = (pos / FAKE_CHUNK, (pos % FAKE_CHUNK) as usize);
            let n = (FAKE_CHUNK as usize - at).min(buf.len() - done);
            match self.chunks.get(&c) {
                Some(chunk) => buf[done..done + n].copy_from_slice(&chunk[at..at + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }
}

/// An in-process page-blob service: deterministic, enforcing Azure's rules with Azure's error
/// codes, logging every request, with injectable faults.
#[derive(Debug, Default)]
pub struct FakePageBlobs {
    containers: Mutex<BTreeMap<String, BTreeMap<String, FakeBlob>>>,
    faults: Mutex<VecDeque<(Option<Op>, Fault)>>,
    every: Mutex<Option<(u64, Fault, u64)>>,
    log: Mutex<Vec<Request>>,
    managed_disk: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakePageBlobs {
    /// An empty service.
    pub fn new() -> Self {
        Self::default()
    }

    /// A service that also applies the managed-disk direct-upload size rule on creation
    /// (20 MiB + 512 bytes to 32 TiB + 512 bytes).
    pub fn managed_disk() -> Self {
        FakePageBlobs {
            managed_disk: true,
            ..Self::default()
        }
    }

    /// The next request of kind `op` (any kind with `None`) gets `fault`; faults fire once each,
    /// in the order queued.
    pub fn inject(&self, op: Option<Op>, fault: Fault) {
        lock(&self.faults).push_back((op, fault));
    }

    /// Every `n`th `Put Page` (update) from now on gets `fault`.
    pub fn inject_every(&self, n: u64, fault: Fault) {
        *lock(&self.every) = (n > 0).then_some((n, fault, 0));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        lock(&self.log).clear();
    }

    /// The whole blob's bytes (zeros where no page holds data), `None` if it does not exist.
    pub fn contents(&self, blob: &BlobName) -> Option<Vec<u8>> {
        let c = lock(&self.containers);
        let b = c.get(&blob.container)?.get(&blob.blob)?;
        let mut out = vec![0; usize::try_from(b.len).ok()?];
        b.read(0, &mut out);
        Some(out)
    }

    /// Creates a blob holding `data` (a multiple of 512 bytes), every page valid; for tests that
    /// need a blob with something already in it.
    pub fn put_blob(&self, blob: &BlobName, data: &[u8], metadata: BTreeMap<String, String>) {
        let mut c = lock(&self.containers);
        let mut b = FakeBlob {
            len: data.len() as u64,
            metadata,
            ..FakeBlob::default()
        };
        for (i, page) in data.chunks(PAGE as usize).enumerate() {
            if page.iter().any(|&x| x != 0) {
                b.write(i as u64 * PAGE, page);
            }
        }
        c.entry(blob.container.clone())
            .or_default()
            .insert(blob.blob.clone(), b);
    }

    /// Logs the request, then decides its fate: `Ok(None)` proceed, `Ok(Some(f))` proceed and
    /// then apply `f`'s after-effect, `Err` fail now.
    fn arrive(&self, op: Op, offset: u64, len: u64) -> Option<Fault> {
        let fault = {
            let mut q = lock(&self.faults);
            let i = q.iter().position(|(o, _)| o.is_none_or(|o| o == op));
            i.and_then(|i| q.remove(i)).map(|(_, f)| f)
        };
        let fault = fault.or_else(|| {
            if op != Op::PutPages {
                return None;
            }
            let mut e = lock(&self.every);
            let (n, f, count) = e.as_mut()?;
            *count += 1;
            (*count % *n == 0).then(|| f.clone())
        });
        lock(&self.log).push(Request {
            op,
            offset,
            len,
            ok: fault.as_ref().is_none_or(|f| matches!(f, Fault::Slow(_))),
        });
        if let Some(Fault::Slow(d)) = fault {
            std::thread::sleep(d);
            return None;
        }
        fault
    }

    fn mark_failed(&self) {
        if let Some(last) = lock(&self.log).last_mut() {
            last.ok = false;
        }
    }

    /// Runs `f` on the blob, enforcing existence.
    fn with_blob<T>(
        &self,
        blob: &BlobName,
        f: impl FnOnce(&mut FakeBlob) -> Result<T, BlobError>,
    ) -> Result<T, BlobError> {
        let mut c = lock(&self.containers);
        let Some(cont) = c.get_mut(&blob.container) else {
            return Err(BlobError::status(
                404,
                "ContainerNotFound",
                "The specified container does not exist.",
            ));
        };
        let Some(b) = cont.get_mut(&blob.blob) else {
            return Err(BlobError::status(
                404,
                "BlobNotFound",
                "The specified blob does not exist.",
            ));
        };
        f(b)
    }

    /// Applies a fault before or after the effect `act` (which returns the result).
    fn faulty<T>(
        &self,
        fault: Option<Fault>,
        act: impl FnOnce() -> Result<T, BlobError>,
    ) -> Result<T, BlobError> {
        let r = match fault {
            None | Some(Fault::Slow(_)) => act(),
            Some(Fault::ServerBusy) => Err(BlobError::status(
                503,
                "ServerBusy",
                "The server is currently unable to receive requests. Please retry your request.",
            )),
            Some(Fault::InternalError) => Err(BlobError::status(
                500,
                "InternalError",
                "The server encountered an internal error. Please retry the request.",
            )),
            Some(Fault::Timeout { applied }) => {
                if applied {
                    let _ = act();
                }
                Err(BlobError::Timeout)
            }
            Some(Fault::Forbidden) => Err(BlobError::status(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )),
            Some(Fault::Dropped { .. }) => Err(BlobError::Connection(
                "connection reset in the middle of the request".into(),
            )),
        };
        if r.is_err() {
            self.mark_failed();
        }
        r
    }
}

impl PageBlobStore for FakePageBlobs {
    fn create_container(&self, container: &str) -> Result<(), BlobError> {
        let f = self.arrive(Op::CreateContainer, 0, 0);
        self.faulty(f, || {
            lock(&self.containers)
                .entry(container.to_string())
                .or_default();
            Ok(())
        })
    }

    fn create(&self, blob: &BlobName, len: u64) -> Result<(), BlobError> {
        let f = self.arrive(Op::Create, 0, len);
        self.faulty(f, || {
            // A managed disk's upload blob may reach 32 TiB + 512; a plain page blob 8 TiB.
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
                        "x-ms-blob-content-length {len} must be a multiple of 512 and at most \
                         {max}"
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
            let mut c = lock(&self.containers);
            let Some(cont) = c.get_mut(&blob.container) else {
                return Err(BlobError::status(
                    404,
                    "ContainerNotFound",
                    "The specified container does not exist.",
                ));
            };
            cont.insert(
                blob.blob.clone(),
                FakeBlob {
                    len,
                    ..FakeBlob::default()
                },
            );
            Ok(())
        })
    }

    fn put_pages(&self, blob: &BlobName, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        let len = data.len() as u64;
        let f = self.arrive(Op::PutPages, offset, len);
        if let Some(Fault::Dropped { partial: true }) = f {
            // Half the pages made it before the connection went.
            let half = (len / 2) / PAGE * PAGE;
            let _ = self.with_blob(blob, |b| {
                check_page_range(offset, len, b.len, Some(MAX_PUT))?;
                if half > 0 {
                    b.write(offset, &data[..half as usize]);
                }
                Ok(())
            });
        }
        self.faulty(f, || {
            self.with_blob(blob, |b| {
                check_page_range(offset, len, b.len, Some(MAX_PUT))?;
                b.write(offset, data);
                Ok(())
            })
        })
    }

    fn clear_pages(&self, blob: &BlobName, offset: u64, len: u64) -> Result<(), BlobError> {
        let f = self.arrive(Op::ClearPages, offset, len);
        self.faulty(f, || {
            self.with_blob(blob, |b| {
                check_page_range(offset, len, b.len, None)?;
                b.clear(offset, len);
                Ok(())
            })
        })
    }

    fn page_ranges(&self, blob: &BlobName) -> Result<Vec<(u64, u64)>, BlobError> {
        let f = self.arrive(Op::PageRanges, 0, 0);
        self.faulty(f, || {
            self.with_blob(blob, |b| {
                Ok(b.valid.iter().map(|(s, e)| (s, e - s)).collect())
            })
        })
    }

    fn read(&self, blob: &BlobName, offset: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        let f = self.arrive(Op::Read, offset, buf.len() as u64);
        self.faulty(f, || {
            self.with_blob(blob, |b| {
                if offset.saturating_add(buf.len() as u64) > b.len {
                    return Err(BlobError::status(
                        416,
                        "InvalidRange",
                        "The range specified is invalid for the current size of the resource.",
                    ));
                }
                b.read(offset, buf);
                Ok(())
            })
        })
    }

    fn properties(&self, blob: &BlobName) -> Result<Option<BlobProperties>, BlobError> {
        let f = self.arrive(Op::Properties, 0, 0);
        self.faulty(f, || {
            match self.with_blob(blob, |b| {
                Ok(BlobProperties {
                    len: b.len,
                    page_blob: true,
                    metadata: b.metadata.clone(),
                    content_md5: b.content_md5,
                })
            }) {
                Ok(p) => Ok(Some(p)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn set_metadata(
        &self,
        blob: &BlobName,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), BlobError> {
        let f = self.arrive(Op::SetMetadata, 0, 0);
        self.faulty(f, || {
            self.with_blob(blob, |b| {
                b.metadata = metadata.clone();
                Ok(())
            })
        })
    }

    fn set_content_md5(&self, blob: &BlobName, md5: &[u8; 16]) -> Result<(), BlobError> {
        let f = self.arrive(Op::SetContentMd5, 0, 0);
        self.faulty(f, || {
            self.with_blob(blob, |b| {
                b.content_md5 = Some(*md5);
                Ok(())
            })
        })
    }
}

/// One answer of `Get Page Ranges`: `(offset, len)` ranges and the next marker.
pub type PageList = (Vec<(u64, u64)>, Option<String>);

/// Parses a `Get Page Ranges` answer: the `PageRange` elements as `(offset, len)` and the
/// `NextMarker`, if any. Ranges must be page aligned, ascending and disjoint.
///
/// # Errors
/// A message saying what is wrong with the document.
pub fn parse_page_list(xml: &str) -> Result<PageList, String> {
    let body = element(xml, "PageList")
        .ok_or_else(|| "no <PageList> element in the Get Page Ranges answer".to_string())?;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("<PageRange>") {
        let after = &rest[i + "<PageRange>".len()..];
        let end = after
            .find("</PageRange>")
            .ok_or_else(|| "unterminated <PageRange>".to_string())?;
        let range = &after[..end];
        let num = |tag: &str| -> Result<u64, String> {
            let t = element(range, tag).ok_or_else(|| format!("<PageRange> without <{tag}>"))?;
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("<{tag}> is not a number: {:?}", truncate(t)))
        };
        let (s, e) = (num("Start")?, num("End")?);
        // A managed disk's upload blob can reach 32 TiB + 512 bytes, past a page blob's 8 TiB.
        if e >= crate::check::MAX_MANAGED_DISK_UPLOAD {
            return Err(format!(
                "page range {s}-{e} goes past the largest managed-disk upload"
            ));
        }
        if !s.is_multiple_of(PAGE) || e < s || !(e - s + 1).is_multiple_of(PAGE) {
            return Err(format!("page range {s}-{e} is not page aligned"));
        }
        if let Some(&(po, pl)) = out.last()
            && po + pl > s
        {
            return Err(format!(
                "page range {s}-{e} overlaps or precedes the one before"
            ));
        }
        out.push((s, e - s + 1));
        rest = &after[end + "</PageRange>".len()..];
    }
    let next = element(body, "NextMarker")
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    Ok((out, next))
}

/// The `Code` and `Message` of an Azure error body, if it has them.
pub fn parse_error_body(xml: &str) -> (Option<String>, Option<String>) {
    let err = element(xml, "Error").unwrap_or(xml);
    (
        element(err, "Code").map(|s| truncate(s.trim()).to_string()),
        element(err, "Message").map(|s| truncate(s.trim()).to_string()),
    )
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(300) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The text between `<tag>` and the next `</tag>`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&close)?;
    Some(&xml[i..i + j])
}

impl std::error::Error for BlobError {}

impl super::retry::Transient for BlobError {
    fn retryable(&self) -> bool {
        BlobError::retryable(self)
    }

    fn cloud(&self) -> crate::CloudError {
        let (status, code) = match self {
            BlobError::Status { status, code, .. } => (Some(*status), Some(code.clone())),
            BlobError::Timeout => (None, Some("Timeout".to_string())),
            BlobError::Connection(_) => (None, Some("ConnectionFailed".to_string())),
            BlobError::Refused(_) => (None, Some("NotSent".to_string())),
        };
        crate::CloudError {
            service: "blob",
            status,
            code,
            transient: self.retryable(),
        }
    }
}

impl BlobError {
    /// `true` for failures worth another attempt: 408, 429, 500, 502, 503, 504, timeouts and
    /// dropped connections (every write here is idempotent: the same bytes at the same place).
    pub fn retryable(&self) -> bool {
        match self {
            BlobError::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            BlobError::Timeout | BlobError::Connection(_) => true,
            BlobError::Refused(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> BlobName {
        BlobName::new("c", "b.vhd")
    }

    fn fake_with(len: u64) -> FakePageBlobs {
        let f = FakePageBlobs::new();
        f.create_container("c").unwrap();
        f.create(&name(), len).unwrap();
        f
    }

    #[test]
    fn the_fake_enforces_azure_rules() {
        let f = FakePageBlobs::new();
        assert_eq!(
            f.create(&name(), 4096).unwrap_err().code(),
            Some("ContainerNotFound")
        );
        f.create_container("c").unwrap();
        assert_eq!(
            f.create(&name(), 1000).unwrap_err().code(),
            Some("InvalidHeaderValue")
        );
        assert_eq!(
            f.create(&name(), MAX_PAGE_BLOB + 512).unwrap_err().code(),
            Some("InvalidHeaderValue")
        );
        f.create(&name(), 8 << 20).unwrap();
        let e = f.put_pages(&name(), 100, &[1; 512]).unwrap_err();
        assert_eq!(
            (e.code(), e.retryable()),
            (Some("InvalidHeaderValue"), false)
        );
        let e = f.put_pages(&name(), 0, &[1; 500]).unwrap_err();
        assert_eq!(e.code(), Some("InvalidHeaderValue"));
        let e = f
            .put_pages(&name(), 0, &vec![1; MAX_PUT as usize + 512])
            .unwrap_err();
        assert_eq!(e.code(), Some("RequestBodyTooLarge"));
        let e = f
            .put_pages(&name(), (8 << 20) - 512, &[1; 1024])
            .unwrap_err();
        assert_eq!(e.code(), Some("InvalidPageRange"));
        f.put_pages(&name(), 0, &vec![1; MAX_PUT as usize]).unwrap();
        let md = FakePageBlobs::managed_disk();
        md.create_container("c").unwrap();
        assert_eq!(
            md.create(&name(), 1 << 20).unwrap_err().code(),
            Some("InvalidUploadSize")
        );
        md.create(&name(), (20 << 20) + 512).unwrap();
        assert!(f.properties(&BlobName::new("c", "none")).unwrap().is_none());
        assert!(f.properties(&BlobName::new("x", "none")).unwrap().is_none());
    }

    #[test]
    fn pages_write_clear_and_list() {
        let f = fake_with(4 << 20);
        f.put_pages(&name(), 1024, &[7; 2048]).unwrap();
        f.put_pages(&name(), 3 << 20, &[9; 512]).unwrap();
        assert_eq!(
            f.page_ranges(&name()).unwrap(),
            vec![(1024, 2048), (3 << 20, 512)]
        );
        f.clear_pages(&name(), 1536, 512).unwrap();
        assert_eq!(
            f.page_ranges(&name()).unwrap(),
            vec![(1024, 512), (2048, 1024), (3 << 20, 512)]
        );
        let mut buf = vec![0xff; 4096];
        f.read(&name(), 0, &mut buf).unwrap();
        assert!(buf[..1024].iter().all(|&b| b == 0));
        assert!(buf[1024..1536].iter().all(|&b| b == 7));
        assert!(buf[1536..2048].iter().all(|&b| b == 0));
        assert!(buf[2048..3072].iter().all(|&b| b == 7));
        let log = f.requests();
        assert_eq!(log.iter().filter(|r| r.op == Op::PutPages).count(), 2);
    }

    #[test]
    fn faults_fire_once_in_order_with_their_effects() {
        let f = fake_with(1 << 20);
        f.inject(Some(Op::PutPages), Fault::ServerBusy);
        f.inject(Some(Op::PutPages), Fault::Dropped { partial: true });
        f.inject(Some(Op::PutPages), Fault::Timeout { applied: true });
        f.inject(None, Fault::InternalError);
        let e = f.put_pages(&name(), 0, &[1; 2048]).unwrap_err();
        assert_eq!((e.code(), e.retryable()), (Some("ServerBusy"), true));
        assert!(
            f.page_ranges(&name()).is_err(),
            "the any-op fault is next in line"
        );
        assert!(f.page_ranges(&name()).unwrap().is_empty());
        let e = f.put_pages(&name(), 0, &[1; 2048]).unwrap_err();
        assert!(matches!(e, BlobError::Connection(_)) && e.retryable());
        assert_eq!(f.page_ranges(&name()).unwrap(), vec![(0, 1024)]);
        assert_eq!(
            f.put_pages(&name(), 4096, &[2; 512]),
            Err(BlobError::Timeout)
        );
        assert_eq!(
            f.page_ranges(&name()).unwrap(),
            vec![(0, 1024), (4096, 512)]
        );
        f.put_pages(&name(), 0, &[1; 2048]).unwrap();
        let oks: Vec<bool> = f.requests().iter().map(|r| r.ok).collect();
        assert_eq!(
            oks,
            vec![
                true, true, false, false, true, false, true, false, true, true
            ]
        );
    }

    #[test]
    fn page_lists_parse_and_bad_ones_are_refused() {
        let xml = "<?xml version=\"1.0\"?><PageList><PageRange><Start>0</Start><End>511</End>\
                   </PageRange><ClearRange><Start>512</Start><End>1023</End></ClearRange>\
                   <PageRange><Start>4096</Start><End>8191</End></PageRange>\
                   <NextMarker>abc</NextMarker></PageList>";
        assert_eq!(
            parse_page_list(xml).unwrap(),
            (vec![(0, 512), (4096, 4096)], Some("abc".into()))
        );
        assert_eq!(
            parse_page_list("<PageList></PageList>").unwrap(),
            (vec![], None)
        );
        for bad in [
            "",
            "<PageList><PageRange><Start>1</Start><End>512</End></PageRange></PageList>",
            "<PageList><PageRange><Start>0</Start></PageRange></PageList>",
            "<PageList><PageRange><Start>x</Start><End>511</End></PageRange></PageList>",
            "<PageList><PageRange><Start>512</Start><End>511</End></PageRange></PageList>",
            "<PageList><PageRange><Start>0</Start><End>1023</End></PageRange>\
             <PageRange><Start>512</Start><End>1023</End></PageRange></PageList>",
            "<PageList><PageRange><Start>0</Start><End>511</End>",
            "<PageList><PageRange><Start>0</Start><End>18446744073709551615</End></PageRange></PageList>",
        ] {
            assert!(parse_page_list(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_error_body("<Error><Code>ServerBusy</Code><Message>m</Message></Error>"),
            (Some("ServerBusy".into()), Some("m".into()))
        );
    }

    proptest! {
        /// RangeSet against a model: one bool per 512-byte unit of a 64-unit space.
        #[test]
        fn range_set_matches_a_bitmap(ops in proptest::collection::vec(
            (any::<bool>(), 0u64..64, 0u64..20), 0..40),
            probe in (0u64..64, 0u64..64)) {
            let mut set = RangeSet::new();
            let mut model = [false; 64];
            for (add, s, l) in ops {
                let e = (s + l).min(64);
                if add { set.insert(s * 512, e * 512) } else { set.remove(s * 512, e * 512) }
                for m in model.iter_mut().take(e as usize).skip(s as usize) { *m = add; }
            }
            let ranges: Vec<(u64, u64)> = set.iter().collect();
            for w in ranges.windows(2) {
                prop_assert!(w[0].1 < w[1].0, "ranges must be disjoint and not adjacent");
            }
            let bits: Vec<bool> = (0..64).map(|i| set.covers(i * 512, i * 512 + 512)).collect();
            prop_assert_eq!(&bits[..], &model[..]);
            let (a, b) = (probe.0.min(probe.1) * 512, probe.0.max(probe.1) * 512);
            let missing: u64 = set.missing(a, b).iter().map(|(s, e)| e - s).sum();
            let present: u64 = set.overlapping(a, b).map(|(s, e)| e - s).sum();
            prop_assert_eq!(missing + present, b - a);
            let want_present = (a / 512..b / 512).filter(|&i| model[i as usize]).count() as u64 * 512;
            prop_assert_eq!(present, want_present);
        }
    }
}
