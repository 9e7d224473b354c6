//! An in-process page-blob store: [`FakePageBlobs`] enforces Azure's rules and answers with
//! Azure's error codes, keeps a log of every request, and can be told to misbehave ([`Fault`]:
//! throttling, 5xx, timeouts that did or did not take effect, dropped connections mid-request).

use crate::cloud::pageblob::{
    BlobError, BlobName, BlobProperties, MAX_PAGE_BLOB, MAX_PUT, Op, PAGE, PageBlobStore, Request,
    check_page_range,
};
use crate::cloud::range_set::RangeSet;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

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

use crate::sync::lock;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
