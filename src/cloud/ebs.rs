//! EBS snapshots through the EBS direct APIs, as a [`DiskImage`].
//!
//! The EBS direct APIs expose a snapshot as 512 KiB blocks: `ListSnapshotBlocks` (paginated,
//! each block with an index and a token), `GetSnapshotBlock` (the data and a base64 SHA-256 of
//! it), and `ListChangedBlocks` between two snapshots. Blocks that are not listed read as zeros;
//! volumes are whole GiB. [`EbsApi`] is that narrow surface and [`EbsError`] its failures (the
//! service's status and error code kept); the real client is
//! [`AwsEbs`](super::aws_ebs::AwsEbs), the in-process fake [`FakeEbs`]
//! ([`fake::ebs`](super::fake::ebs)).
//!
//! [`EbsSnapshot`] reads a snapshot: the block list is fetched once (all pages); every block read
//! is checked against its SHA-256 before a byte is used; throttling, server errors, timeouts and
//! "snapshot not found yet" are retried with exponential backoff a bounded number of times; every
//! error names the snapshot and the block index.

pub use super::fake::ebs::{FakeEbs, Fault};
pub use super::retry::RetryPolicy;
use super::retry::Transient;
use crate::error::{Error, Result};
use crate::image::{DiskImage, ExtentKind, ExtentMap, Format};
use base64::Engine;
use std::collections::BTreeMap;

/// The EBS direct APIs' block size.
pub const BLOCK_SIZE: u64 = 512 * 1024;
const GIB: u64 = 1 << 30;

/// A failure of one EBS call.
///
/// The real client ([`AwsEbs`](super::aws_ebs::AwsEbs)) keeps what the service answered: its
/// HTTP status and AWS error code ([`EbsError::Service`]); the short variants are what the
/// in-process fake injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EbsError {
    /// ThrottlingException / RequestThrottledException: retry later.
    Throttled,
    /// The snapshot is not (yet) visible: normal right after it was created; retry.
    NotFoundYet,
    /// A 5xx answer: retry.
    Server(String),
    /// The call timed out: retry.
    Timeout,
    /// The service answered with an error: its HTTP status, its AWS error code (from
    /// `x-amzn-errortype` or the body's `__type`), its message. Retried when the status or the
    /// code says it is transient ([`EbsError::retryable`]).
    Service {
        /// The HTTP status.
        status: u16,
        /// The AWS error code (`AccessDeniedException`, ...), when the answer had one.
        code: Option<String>,
        /// The service's message.
        message: String,
    },
    /// The request could not be sent, or the connection dropped before the whole answer came:
    /// retry.
    Connection(String),
    /// Anything else (an answer that breaks the API's rules, a bad argument): do not retry.
    Fatal(String),
}

impl std::error::Error for EbsError {}

/// AWS error codes that mean "try again later" whatever the HTTP status says.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "RequestThrottledException",
    "ConcurrentLimitExceededException",
    "InternalServerException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    // A snapshot is not visible for a moment after it was created.
    "ResourceNotFoundException",
];

impl EbsError {
    /// `true` when the same call may succeed later: throttling, 5xx, timeouts, dropped
    /// connections, and "not found" (a snapshot is not visible at once after it was created).
    pub fn retryable(&self) -> bool {
        match self {
            EbsError::Throttled
            | EbsError::NotFoundYet
            | EbsError::Server(_)
            | EbsError::Timeout
            | EbsError::Connection(_) => true,
            EbsError::Service { status, code, .. } => {
                *status == 429
                    || *status >= 500
                    || code
                        .as_deref()
                        .is_some_and(|c| TRANSIENT_CODES.contains(&c))
            }
            EbsError::Fatal(_) => false,
        }
    }
}

impl Transient for EbsError {
    fn retryable(&self) -> bool {
        EbsError::retryable(self)
    }

    fn cloud(&self) -> crate::CloudError {
        let (status, code) = match self {
            EbsError::Throttled => (Some(429), Some("ThrottlingException".to_string())),
            EbsError::NotFoundYet => (Some(404), Some("ResourceNotFoundException".to_string())),
            EbsError::Server(_) => (Some(500), Some("InternalServerException".to_string())),
            EbsError::Timeout => (None, Some("Timeout".to_string())),
            EbsError::Service { status, code, .. } => (Some(*status), code.clone()),
            EbsError::Connection(_) => (None, Some("ConnectionFailed".to_string())),
            EbsError::Fatal(_) => (None, None),
        };
        crate::CloudError {
            service: "ebs",
            status,
            code,
            transient: self.retryable(),
        }
    }
}

impl std::fmt::Display for EbsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EbsError::Throttled => f.write_str("throttled"),
            EbsError::NotFoundYet => f.write_str("snapshot not found (yet)"),
            EbsError::Server(m) => write!(f, "server error: {m}"),
            EbsError::Timeout => f.write_str("timed out"),
            EbsError::Service {
                status,
                code,
                message,
            } => write!(
                f,
                "HTTP {status} {}: {message}",
                code.as_deref().unwrap_or("(no error code)")
            ),
            EbsError::Connection(m) => write!(f, "connection failed: {m}"),
            EbsError::Fatal(m) => f.write_str(m),
        }
    }
}

/// One page of `ListSnapshotBlocks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPage {
    /// (block index, block token) in ascending index order.
    pub blocks: Vec<(u64, String)>,
    /// The token of the next page, if any.
    pub next: Option<String>,
    /// Volume size in GiB.
    pub volume_size_gib: u64,
    /// Block size in bytes (524288).
    pub block_size: u64,
}

/// The answer of `GetSnapshotBlock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockData {
    /// The block's bytes (the block size, or less for a short block).
    pub data: Vec<u8>,
    /// Base64 of the SHA-256 of `data`, as the service sends it.
    pub checksum: String,
    /// The checksum algorithm; only "SHA256" is accepted.
    pub algorithm: String,
}

/// One page of `ListChangedBlocks`: the indices of blocks that differ between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedPage {
    /// Changed block indices, ascending.
    pub blocks: Vec<u64>,
    /// The token of the next page, if any.
    pub next: Option<String>,
}

/// The EBS direct APIs this crate uses.
pub trait EbsApi: Send + Sync {
    /// One page of a snapshot's blocks.
    ///
    /// # Errors
    /// The service's answer, as an [`EbsError`].
    fn list_snapshot_blocks(
        &self,
        snapshot: &str,
        next: Option<&str>,
    ) -> Result<BlockPage, EbsError>;

    /// One block's data and checksum.
    ///
    /// # Errors
    /// The service's answer, as an [`EbsError`].
    fn get_snapshot_block(
        &self,
        snapshot: &str,
        index: u64,
        token: &str,
    ) -> Result<BlockData, EbsError>;

    /// One page of the blocks that differ between `first` and `second` (two snapshots of one
    /// lineage).
    ///
    /// # Errors
    /// The service's answer, as an [`EbsError`].
    fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        next: Option<&str>,
    ) -> Result<ChangedPage, EbsError>;
}

/// The next page token to ask for, `None` when the listing is complete; an error when the
/// service repeats the token it was just given (that would loop forever).
fn next_page(what: &str, asked: &Option<String>, got: Option<String>) -> Result<Option<String>> {
    match got {
        Some(n) if asked.as_deref() == Some(n.as_str()) => {
            Err(Error::invalid(format!("{what}: the same page token twice")))
        }
        got => Ok(got),
    }
}

/// Every block index that differs between `first` and `second` (all pages), ascending.
///
/// # Errors
/// A call that keeps failing, or a page token that repeats.
pub fn changed_blocks(
    api: &dyn EbsApi,
    first: &str,
    second: &str,
    retry: RetryPolicy,
) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let what = format!("ListChangedBlocks {first} → {second}");
        let page = retry.run(&what, || {
            api.list_changed_blocks(first, second, next.as_deref())
        })?;
        out.extend(page.blocks);
        next = next_page(&what, &next, page.next)?;
        if next.is_none() {
            break;
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// An EBS snapshot read through an [`EbsApi`].
pub struct EbsSnapshot<A> {
    api: A,
    snapshot: String,
    size: u64,
    tokens: BTreeMap<u64, String>,
    retry: RetryPolicy,
}

impl<A> std::fmt::Debug for EbsSnapshot<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbsSnapshot")
            .field("snapshot", &self.snapshot)
            .field("size", &self.size)
            .field("listed_blocks", &self.tokens.len())
            .finish()
    }
}

impl<A: EbsApi> EbsSnapshot<A> {
    /// Lists the snapshot's blocks (every page) and checks what the service says.
    ///
    /// # Errors
    /// A call that keeps failing, a block size other than 512 KiB, a block index beyond the
    /// volume, or pages that disagree on the volume size.
    pub fn open(api: A, snapshot: &str, retry: RetryPolicy) -> Result<Self> {
        let mut tokens = BTreeMap::new();
        let mut next: Option<String> = None;
        let mut size_gib = None;
        loop {
            let what = format!("snapshot {snapshot}: ListSnapshotBlocks");
            let page = retry.run(&what, || {
                api.list_snapshot_blocks(snapshot, next.as_deref())
            })?;
            if page.block_size != BLOCK_SIZE {
                return Err(Error::unsupported(format!(
                    "snapshot {snapshot}: block size {} (expected {BLOCK_SIZE})",
                    page.block_size
                )));
            }
            if *size_gib.get_or_insert(page.volume_size_gib) != page.volume_size_gib {
                return Err(Error::invalid(format!(
                    "snapshot {snapshot}: pages disagree on the volume size"
                )));
            }
            let blocks = page.volume_size_gib.saturating_mul(GIB / BLOCK_SIZE);
            for (index, token) in page.blocks {
                if index >= blocks {
                    return Err(Error::invalid(format!(
                        "snapshot {snapshot}: block {index} lies past the end of the {} GiB volume",
                        page.volume_size_gib
                    )));
                }
                tokens.insert(index, token);
            }
            next = next_page(&what, &next, page.next)?;
            if next.is_none() {
                break;
            }
        }
        let size = size_gib.unwrap_or(0).checked_mul(GIB).ok_or_else(|| {
            Error::limit(format!("snapshot {snapshot}: the volume size overflows"))
        })?;
        Ok(EbsSnapshot {
            api,
            snapshot: snapshot.to_string(),
            size,
            tokens,
            retry,
        })
    }

    /// Number of blocks the snapshot lists (the rest read as zeros).
    pub fn listed_blocks(&self) -> usize {
        self.tokens.len()
    }

    /// Fetches block `index` and checks its checksum.
    fn fetch(&self, index: u64, token: &str) -> Result<Vec<u8>> {
        let what = format!(
            "snapshot {}: GetSnapshotBlock for block {index}",
            self.snapshot
        );
        let b = self.retry.run(&what, || {
            self.api.get_snapshot_block(&self.snapshot, index, token)
        })?;
        if b.algorithm != "SHA256" {
            return Err(Error::unsupported(format!(
                "{what}: checksum algorithm {:?} (expected SHA256)",
                b.algorithm
            )));
        }
        if b.data.len() as u64 > BLOCK_SIZE {
            return Err(Error::invalid(format!(
                "{what}: {} bytes, more than the {BLOCK_SIZE}-byte block",
                b.data.len()
            )));
        }
        let got = base64::engine::general_purpose::STANDARD.encode(crate::digest::sha256(&b.data));
        if got != b.checksum {
            return Err(Error::checksum(format!(
                "{what}: checksum mismatch: the service says {}, the data hashes to {got}",
                b.checksum
            ))
            .with_offset(index * BLOCK_SIZE));
        }
        Ok(b.data)
    }
}

impl<A: EbsApi> DiskImage for EbsSnapshot<A> {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = crate::image::readable(self.size, offset, buf.len());
        crate::image::for_each_block_piece(&mut buf[..n], offset, BLOCK_SIZE, |piece, pos| {
            let index = pos / BLOCK_SIZE;
            match self.tokens.get(&index) {
                None => piece.fill(0),
                Some(token) => {
                    let data = self.fetch(index, token)?;
                    let start = (pos % BLOCK_SIZE) as usize;
                    // A short block reads as zeros past its data.
                    piece.fill(0);
                    if start < data.len() {
                        let k = (data.len() - start).min(piece.len());
                        piece[..k].copy_from_slice(&data[start..start + k]);
                    }
                }
            }
            Ok(())
        })?;
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        let mut ranges = Vec::new();
        for &i in self.tokens.keys() {
            crate::image::push_run(&mut ranges, i * BLOCK_SIZE, BLOCK_SIZE, ExtentKind::Data);
        }
        Ok(ExtentMap::from_ranges(self.size, ranges))
    }

    fn format(&self) -> Format {
        Format::Raw
    }
}

impl<T: EbsApi + ?Sized> EbsApi for std::sync::Arc<T> {
    fn list_snapshot_blocks(
        &self,
        snapshot: &str,
        next: Option<&str>,
    ) -> Result<BlockPage, EbsError> {
        (**self).list_snapshot_blocks(snapshot, next)
    }
    fn get_snapshot_block(
        &self,
        snapshot: &str,
        index: u64,
        token: &str,
    ) -> Result<BlockData, EbsError> {
        (**self).get_snapshot_block(snapshot, index, token)
    }
    fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        next: Option<&str>,
    ) -> Result<ChangedPage, EbsError> {
        (**self).list_changed_blocks(first, second, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemImage;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    fn block(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// The model: a 1 GiB volume as a sparse map of blocks, parent under child.
    fn model_read(blocks: &BTreeMap<u64, Vec<u8>>, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        for (i, d) in blocks {
            let (s, e) = (i * BLOCK_SIZE, i * BLOCK_SIZE + d.len() as u64);
            let (a, b) = (s.max(off), e.min(off + len as u64));
            if a < b {
                v[(a - off) as usize..(b - off) as usize]
                    .copy_from_slice(&d[(a - s) as usize..(b - s) as usize]);
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Random parent and child snapshots, paginated: reads equal the model; extents cover
        /// exactly the listed blocks.
        #[test]
        fn reads_match_the_model(
            parent in prop::collection::btree_map(0u64..2048, 1u8..255, 0..6),
            child in prop::collection::btree_map(0u64..2048, 1u8..255, 0..6),
            page in 1usize..4,
            reads in prop::collection::vec((0u64..(1 << 30), 1usize..(3 * BLOCK_SIZE as usize)), 1..6),
        ) {
            let fake = Arc::new(FakeEbs::new(page));
            let pb: BTreeMap<u64, Vec<u8>> = parent.iter().map(|(&i, &s)| (i, block(s, BLOCK_SIZE as usize))).collect();
            let cb: BTreeMap<u64, Vec<u8>> = child.iter().map(|(&i, &s)| (i, block(s ^ 0x55, BLOCK_SIZE as usize))).collect();
            fake.add_snapshot("snap-p", None, 1, pb.clone());
            fake.add_snapshot("snap-c", Some("snap-p"), 1, cb.clone());
            let mut all = pb;
            all.extend(cb);
            let img = EbsSnapshot::open(fake.clone(), "snap-c", quick()).unwrap();
            prop_assert_eq!(img.len(), 1 << 30);
            prop_assert_eq!(img.listed_blocks(), all.len());
            prop_assert_eq!(img.extents().unwrap().totals().0, all.len() as u64 * BLOCK_SIZE);
            for (off, len) in reads {
                let len = len.min(((1u64 << 30) - off) as usize);
                let mut buf = vec![0u8; len];
                img.read_at(&mut buf, off).unwrap();
                prop_assert!(buf == model_read(&all, off, len), "read at {}+{}", off, len);
            }
        }
    }

    #[test]
    fn transient_faults_are_retried_and_fatal_ones_name_the_block() {
        let fake = Arc::new(FakeEbs::new(2));
        let blocks: BTreeMap<u64, Vec<u8>> =
            [(1, block(1, 1000)), (7, block(7, BLOCK_SIZE as usize))].into();
        fake.add_snapshot("snap-a", None, 1, blocks.clone());
        for f in [
            EbsError::Throttled,
            EbsError::NotFoundYet,
            EbsError::Server("503".into()),
            EbsError::Timeout,
        ] {
            fake.inject(Fault::Next(f));
        }
        let img = EbsSnapshot::open(
            fake.clone(),
            "snap-a",
            RetryPolicy {
                attempts: 6,
                ..quick()
            },
        )
        .unwrap();
        let mut buf = vec![0u8; 2 * BLOCK_SIZE as usize];
        img.read_at(&mut buf, 0).unwrap();
        assert_eq!(
            buf,
            model_read(&blocks, 0, buf.len()),
            "a short block reads as zeros past its data"
        );
        // As many transient failures as attempts: an error saying so.
        for _ in 0..6 {
            fake.inject(Fault::Next(EbsError::Throttled));
        }
        let e = img.read_at(&mut buf, 0).unwrap_err();
        assert!(
            e.to_string().contains("still failing after 6 attempts"),
            "{e}"
        );
        assert!(e.to_string().contains("block 1"), "{e}");
        // A corrupt checksum and a missing block: refused, by block index, never zeros.
        fake.inject(Fault::CorruptBlock(7));
        let e = img.read_at(&mut buf, 7 * BLOCK_SIZE).unwrap_err();
        assert!(e.to_string().contains("block 7: checksum mismatch"), "{e}");
        let fake2 = Arc::new(FakeEbs::new(10));
        fake2.add_snapshot("snap-b", None, 1, blocks);
        fake2.inject(Fault::MissingBlock(1));
        let img2 = EbsSnapshot::open(fake2, "snap-b", quick()).unwrap();
        let e = img2.read_at(&mut buf, 0).unwrap_err();
        assert!(
            e.to_string().contains("block 1") && e.to_string().contains("ResourceNotFound"),
            "{e}"
        );
    }

    #[test]
    fn converts_to_a_fixed_vhd_like_the_model() {
        let fake = Arc::new(FakeEbs::new(3));
        let blocks: BTreeMap<u64, Vec<u8>> = [
            (0, block(9, BLOCK_SIZE as usize)),
            (5, block(3, BLOCK_SIZE as usize)),
            (2047, block(4, 77)),
        ]
        .into();
        fake.add_snapshot("snap-v", None, 1, blocks.clone());
        let img = EbsSnapshot::open(fake, "snap-v", quick()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("e.vhd");
        let opts = crate::ConvertOptions {
            sync: false,
            manifest: true,
            ..Default::default()
        };
        let r = crate::convert(&img, &out, &opts).unwrap();
        assert_eq!(r.virtual_size, 1 << 30);
        let vhd = crate::image::FixedVhd::new(crate::image::RawImage::open(&out).unwrap()).unwrap();
        let map = ExtentMap::from_ranges(
            1 << 30,
            blocks
                .keys()
                .map(|&i| (i * BLOCK_SIZE, BLOCK_SIZE, ExtentKind::Data)),
        );
        let model = MemImage::with_extents(model_read(&blocks, 0, 1 << 30), map).unwrap();
        assert!(
            crate::compare(&vhd, &model, true, &crate::NoProgress)
                .unwrap()
                .identical
        );
        assert_eq!(
            r.manifest.unwrap().root,
            crate::Manifest::compute(&model).unwrap().root
        );
    }

    #[test]
    fn a_pull_reports_every_failed_block() {
        let fake = Arc::new(FakeEbs::new(10));
        let blocks: BTreeMap<u64, Vec<u8>> =
            (0..16u64).map(|i| (i, block(i as u8, 4096))).collect();
        fake.add_snapshot("snap-f", None, 1, blocks);
        for f in [
            Fault::CorruptBlock(5),
            Fault::CorruptBlock(9),
            Fault::MissingBlock(12),
        ] {
            fake.inject(f);
        }
        let img = EbsSnapshot::open(fake, "snap-f", quick()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::ConvertOptions {
            sync: false,
            ..Default::default()
        };
        let e = crate::convert(&img, &dir.path().join("f.vhd"), &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 reads failed"), "{e}");
        for b in ["block 5", "block 9", "block 12"] {
            assert!(e.contains(b), "{b} missing from: {e}");
        }
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "no output left"
        );
    }

    #[test]
    fn changed_blocks_between_parent_and_child() {
        let fake = Arc::new(FakeEbs::new(2));
        let parent: BTreeMap<u64, Vec<u8>> = (0..6).map(|i| (i * 3, block(i as u8, 100))).collect();
        // The child rewrites block 3 with other bytes, block 6 with the same bytes, adds 40, 41.
        let child: BTreeMap<u64, Vec<u8>> = [
            (3, block(99, 100)),
            (6, block(2, 100)),
            (40, block(1, 10)),
            (41, block(2, 10)),
        ]
        .into();
        fake.add_snapshot("snap-p", None, 1, parent);
        fake.add_snapshot("snap-c", Some("snap-p"), 1, child);
        fake.inject(Fault::Next(EbsError::Throttled));
        let d = changed_blocks(&*fake, "snap-p", "snap-c", quick()).unwrap();
        assert_eq!(d, vec![3, 40, 41]);
        assert_eq!(
            changed_blocks(&*fake, "snap-c", "snap-c", quick()).unwrap(),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn unknown_snapshots_and_bad_pages_are_errors() {
        let fake = Arc::new(FakeEbs::new(1));
        let e = EbsSnapshot::open(fake.clone(), "snap-missing", quick()).unwrap_err();
        assert!(e.to_string().contains("snapshot snap-missing"), "{e}");
        fake.add_snapshot("snap-x", None, 1, [(4096, vec![1])].into());
        let e = EbsSnapshot::open(fake, "snap-x", quick()).unwrap_err();
        assert!(
            e.to_string().contains("past the end of the 1 GiB volume"),
            "{e}"
        );
    }
}
