//! Azure page blobs: the narrow [`PageBlobStore`] surface the upload and download need, its
//! names, answers and errors, and the page-range rules both the fake and the client enforce.
//!
//! A page blob is a sparse array of 512-byte pages. Its length is fixed at creation (a multiple
//! of 512, at most 8 TiB); `Put Page` writes 512-aligned ranges of at most 4 MiB inside it;
//! `Clear Page` frees pages; `Get Page Ranges` lists the pages that hold data (written and not
//! cleared); reads of other pages return zeros. The real service is reached through
//! [`azure`](super::azure); the in-process fake is [`FakePageBlobs`]
//! ([`fake::pageblob`](super::fake::pageblob)); the upload engine is [`transfer`](crate::transfer).

pub use super::azure::xml::{PageList, parse_error_body, parse_page_list};
pub use super::fake::pageblob::{FakePageBlobs, Fault};
pub use super::range_set::RangeSet;
use std::collections::BTreeMap;

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
