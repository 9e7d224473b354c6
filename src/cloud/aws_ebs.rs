//! The real EBS direct APIs over HTTP, through the official `aws-sdk-ebs`: an [`EbsApi`] for
//! reading snapshots, and [`AwsEbs::push`] for writing one (StartSnapshot, PutSnapshotBlock with
//! checksums, CompleteSnapshot with the linear aggregate checksum).
//!
//! Region, credentials and endpoint come from the usual AWS settings (environment, profile) or
//! the arguments ([`aws_sdk`](super::aws_sdk), shared with the EC2 client); an endpoint URL points the client at an emulator such as moto. The SDK's own
//! retries are off: [`RetryPolicy`] decides, so throttling and "not found yet" are retried the same
//! way for the fake and the real service. Every call has a timeout. The client is synchronous to
//! its callers (the `DiskImage` API is); a small tokio runtime drives the SDK underneath.

use super::aws_sdk::SdkFailure;
use super::ebs::{BLOCK_SIZE, BlockData, BlockPage, EbsApi, EbsError, RetryPolicy};
use crate::error::{Error, Result};
use crate::image::{DiskImage, bytes_at};
use aws_sdk_ebs::Client;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
use base64::Engine;
use rayon::prelude::*;
use std::sync::Mutex;
use std::time::Duration;

/// Per-attempt timeout of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the EBS direct APIs.
pub struct AwsEbs {
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for AwsEbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEbs").finish_non_exhaustive()
    }
}

/// Maps an SDK error onto an [`EbsError`] that keeps what the service answered: the HTTP status
/// and the AWS error code (the SDK reads it from `x-amzn-errortype` or the body's `__type`).
fn classify<E>(e: SdkError<E, aws_sdk_ebs::config::http::HttpResponse>) -> EbsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match super::aws_sdk::classify(e, "EBS") {
        SdkFailure::Timeout => EbsError::Timeout,
        SdkFailure::Connection(m) => EbsError::Connection(m),
        SdkFailure::Service {
            status,
            code,
            message,
        } => EbsError::Service {
            status,
            code,
            message,
        },
        SdkFailure::Fatal(m) => EbsError::Fatal(m),
    }
}

impl AwsEbs {
    /// A client for `region` (or the configured default) at `endpoint` (or AWS's).
    ///
    /// # Errors
    /// The async runtime cannot start.
    pub fn new(endpoint: Option<&str>, region: Option<&str>) -> Result<Self> {
        Self::build(endpoint, region, CALL_TIMEOUT, None)
    }

    /// As [`AwsEbs::new`], with these static credentials instead of the usual AWS settings:
    /// for emulators (moto takes any) and tests, which must not depend on the environment.
    ///
    /// # Errors
    /// The async runtime cannot start.
    pub fn with_credentials(
        endpoint: Option<&str>,
        region: Option<&str>,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Self> {
        let creds = aws_sdk_ebs::config::Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "ec2azure",
        );
        Self::build(endpoint, region, CALL_TIMEOUT, Some(creds))
    }

    /// As [`AwsEbs::new`], with `timeout` per call attempt and, when given, these static
    /// credentials instead of the usual AWS settings.
    fn build(
        endpoint: Option<&str>,
        region: Option<&str>,
        timeout: Duration,
        credentials: Option<aws_sdk_ebs::config::Credentials>,
    ) -> Result<Self> {
        let setup = super::aws_sdk::setup(endpoint, region, timeout, credentials)?;
        Ok(AwsEbs {
            client: Client::new(&setup.config),
            rt: setup.rt,
        })
    }

    /// Writes `img` as a new snapshot (whole GiB, rounded up) and returns its id. Only blocks that
    /// hold data are sent; each carries its SHA-256; the snapshot is completed with the linear
    /// aggregate of the block checksums, so the service can check the whole.
    ///
    /// # Errors
    /// A call that keeps failing (every failed block is listed) or a read error of the image.
    pub fn push(
        &self,
        img: &dyn DiskImage,
        description: Option<&str>,
        retry: RetryPolicy,
    ) -> Result<PushReport> {
        const GIB: u64 = 1 << 30;
        let size_gib = img.len().div_ceil(GIB).max(1);
        let started = retry.run("StartSnapshot", || {
            self.rt.block_on(async {
                let mut req = self
                    .client
                    .start_snapshot()
                    .volume_size(size_gib as i64)
                    .timeout(60);
                if let Some(d) = description {
                    req = req.description(d);
                }
                req.send().await.map_err(classify)
            })
        })?;
        let id = started
            .snapshot_id()
            .ok_or_else(|| Error::invalid("StartSnapshot returned no snapshot id"))?
            .to_string();
        let extents = img.extents()?;
        let digests = Mutex::new(Vec::new());
        let failures = Mutex::new(Vec::new());
        extents.data_chunks(BLOCK_SIZE).par_bridge().for_each_init(
            || vec![0u8; BLOCK_SIZE as usize],
            |buf, index| {
                let r = (|| -> Result<()> {
                    buf.fill(0);
                    let n = (img.len() - index * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
                    let data = bytes_at(img, &extents, index * BLOCK_SIZE, &mut buf[..n])?.to_vec();
                    if crate::bytes::is_zero(&data) {
                        return Ok(()); // unwritten blocks read as zeros
                    }
                    let mut block = data;
                    block.resize(BLOCK_SIZE as usize, 0);
                    let digest = crate::digest::sha256(&block);
                    let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
                    let what = format!("snapshot {id}: PutSnapshotBlock for block {index}");
                    retry.run(&what, || {
                        self.rt.block_on(async {
                            self.client
                                .put_snapshot_block()
                                .snapshot_id(&id)
                                .block_index(index as i32)
                                .block_data(ByteStream::from(block.clone()))
                                .data_length(BLOCK_SIZE as i32)
                                .checksum(&checksum)
                                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                                .send()
                                .await
                                .map_err(classify)
                        })
                    })?;
                    crate::sync::lock(&digests).push((index, digest));
                    Ok(())
                })();
                if let Err(e) = r {
                    crate::sync::lock(&failures).push((index, e));
                }
            },
        );
        let mut failures = crate::sync::into_inner(failures);
        if !failures.is_empty() {
            failures.sort_by_key(|f| f.0);
            let list: Vec<String> = failures.iter().map(|(_, e)| e.to_string()).collect();
            let message = format!(
                "snapshot {id}: {} block(s) failed, the snapshot was not completed:\n  {}",
                failures.len(),
                list.join("\n  ")
            );
            return Err(super::retry::many_failed(message, failures.remove(0).1));
        }
        let mut digests = crate::sync::into_inner(digests);
        digests.sort_by_key(|d| d.0);
        let mut all = Vec::with_capacity(digests.len() * 32);
        for (_, d) in &digests {
            all.extend_from_slice(d);
        }
        let aggregate =
            base64::engine::general_purpose::STANDARD.encode(crate::digest::sha256(&all));
        retry.run(&format!("snapshot {id}: CompleteSnapshot"), || {
            self.rt.block_on(async {
                self.client
                    .complete_snapshot()
                    .snapshot_id(&id)
                    .changed_blocks_count(digests.len() as i32)
                    .checksum(&aggregate)
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .checksum_aggregation_method(
                        ChecksumAggregationMethod::ChecksumAggregationLinear,
                    )
                    .send()
                    .await
                    .map_err(classify)
            })
        })?;
        Ok(PushReport {
            snapshot_id: id,
            volume_size_gib: size_gib,
            blocks_written: digests.len() as u64,
        })
    }
}

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    /// The new snapshot's id.
    pub snapshot_id: String,
    /// Its volume size.
    pub volume_size_gib: u64,
    /// Blocks sent (the rest read as zeros).
    pub blocks_written: u64,
}

impl EbsApi for AwsEbs {
    fn list_snapshot_blocks(
        &self,
        snapshot: &str,
        next: Option<&str>,
    ) -> Result<BlockPage, EbsError> {
        let out = self.rt.block_on(async {
            let mut req = self.client.list_snapshot_blocks().snapshot_id(snapshot);
            if let Some(n) = next {
                req = req.next_token(n);
            }
            req.send().await.map_err(classify)
        })?;
        let mut blocks = Vec::with_capacity(out.blocks().len());
        for b in out.blocks() {
            match (b.block_index(), b.block_token()) {
                (Some(i), Some(t)) if i >= 0 => blocks.push((i as u64, t.to_string())),
                _ => {
                    return Err(EbsError::Fatal(
                        "a listed block without index or token".into(),
                    ));
                }
            }
        }
        blocks.sort_by_key(|b| b.0);
        Ok(BlockPage {
            blocks,
            next: out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            volume_size_gib: out.volume_size().unwrap_or(0).max(0) as u64,
            // AWS answers in bytes (524288); moto answers 512 (KiB). Anything else is refused
            // by EbsSnapshot::open.
            block_size: match out.block_size() {
                Some(512) | None => BLOCK_SIZE,
                Some(b) => b.max(0) as u64,
            },
        })
    }

    fn get_snapshot_block(
        &self,
        snapshot: &str,
        index: u64,
        token: &str,
    ) -> Result<BlockData, EbsError> {
        let index = i32::try_from(index)
            .map_err(|_| EbsError::Fatal(format!("block index {index} too large")))?;
        self.rt.block_on(async {
            let out = self
                .client
                .get_snapshot_block()
                .snapshot_id(snapshot)
                .block_index(index)
                .block_token(token)
                .send()
                .await
                .map_err(classify)?;
            let checksum = out.checksum().unwrap_or_default().to_string();
            let algorithm = out
                .checksum_algorithm()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default();
            let data = out
                .block_data
                .collect()
                .await
                .map_err(|e| EbsError::Connection(format!("reading the block body: {e}")))?
                .into_bytes()
                .to_vec();
            Ok(BlockData {
                data,
                checksum,
                algorithm,
            })
        })
    }

    fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        next: Option<&str>,
    ) -> Result<super::ebs::ChangedPage, EbsError> {
        let out = self.rt.block_on(async {
            let mut req = self
                .client
                .list_changed_blocks()
                .first_snapshot_id(first)
                .second_snapshot_id(second);
            if let Some(n) = next {
                req = req.next_token(n);
            }
            req.send().await.map_err(classify)
        })?;
        let mut blocks = Vec::with_capacity(out.changed_blocks().len());
        for b in out.changed_blocks() {
            match b.block_index() {
                Some(i) if i >= 0 => blocks.push(i as u64),
                _ => return Err(EbsError::Fatal("a changed block without an index".into())),
            }
        }
        Ok(super::ebs::ChangedPage {
            blocks,
            next: out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::canned::{Answer, Canned, response};
    use crate::cloud::ebs::EbsSnapshot;
    use crate::error::ErrorKind;

    fn client(url: &str, timeout: Duration) -> AwsEbs {
        let creds = aws_sdk_ebs::config::Credentials::new(
            "AKIDCANNEDTEST",
            "CANNEDSECRETKEY",
            None,
            None,
            "test",
        );
        AwsEbs::build(Some(url), Some("us-east-1"), timeout, Some(creds)).unwrap()
    }

    /// Every answer kind becomes the error kind a caller acts on, keeps the HTTP status and the
    /// AWS error code (from `x-amzn-errortype` or the body's `__type`), and only transient ones
    /// are retried. EBS answers 404 for a snapshot that is not visible yet: retried.
    #[test]
    fn error_kinds_from_canned_answers() {
        let policy = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let cases: [(u16, &str, bool, ErrorKind, bool); 6] = [
            (403, "AccessDeniedException", true, ErrorKind::Denied, false),
            (
                404,
                "ResourceNotFoundException",
                false,
                ErrorKind::NotFound,
                true,
            ),
            (409, "ConflictException", true, ErrorKind::Conflict, false),
            (412, "PreconditionFailed", false, ErrorKind::Conflict, false),
            (429, "ThrottlingException", true, ErrorKind::Cloud, true),
            (
                500,
                "InternalServerException",
                false,
                ErrorKind::Cloud,
                true,
            ),
        ];
        for (status, code, header, kind, transient) in cases {
            let body = if header {
                format!(r#"{{"message":"canned {code}"}}"#)
            } else {
                format!(r#"{{"__type":"{code}","message":"canned {code}"}}"#)
            };
            let typed = format!("{code}:http://internal.amazon.com/coral/com.amazonaws.ebs/");
            let mut headers = vec![("Content-Type", "application/json")];
            if header {
                headers.push(("x-amzn-errortype", typed.as_str()));
            }
            let server = Canned::start(response(status, &headers, &body));
            let api = client(&server.url(), Duration::from_secs(10));
            let e = EbsSnapshot::open(api, "snap-0123456789abcdef0", policy).unwrap_err();
            assert_eq!(e.kind(), kind, "{status}: {e}");
            let c = e.cloud().expect("a cloud error");
            assert_eq!((c.service, c.status), ("ebs", Some(status)), "{e}");
            assert_eq!(c.code.as_deref(), Some(code), "{status}");
            assert_eq!(e.is_transient(), transient, "{status}");
            assert_eq!(server.hits(), if transient { 3 } else { 1 }, "{status}");
            assert!(e.to_string().contains("snap-0123456789abcdef0"), "{e}");
            let chain = format!("{e} {e:?}");
            assert!(!chain.contains("CANNEDSECRETKEY"), "{chain}");
        }
        // No answer in time: a transient cloud error without a status, retried.
        let server = Canned::start(Answer::Hang(Duration::from_secs(3)));
        let api = client(&server.url(), Duration::from_millis(300));
        let e = EbsSnapshot::open(api, "snap-0123456789abcdef0", policy).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cloud, "{e}");
        let c = e.cloud().expect("a cloud error");
        assert_eq!(
            (c.status, c.code.as_deref()),
            (None, Some("Timeout")),
            "{e}"
        );
        assert!(e.is_transient());
        assert_eq!(server.hits(), 3);
    }
}
