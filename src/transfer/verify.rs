//! Read-back verification of an upload, reading the blob and not the source again: the blob's
//! length and Content-MD5, its footer, and the manifest of its disk part (every page range read
//! back, holes as zeros) block by block against the manifest the upload computed from the
//! source's bytes.

use super::engine::Shared;
use super::*;
use crate::cloud::pageblob::RangeSet;
use crate::digest::{BLOCK_SIZE, Manifest};
use crate::image::vhd::FOOTER_SIZE;
use crate::image::{ExtentKind, ExtentMap};

/// The blob's first `len` bytes as a disk: its page ranges are data, the rest zeros.
struct BlobDisk<'a, 's> {
    sh: &'a Shared<'s>,
    len: u64,
    ranges: &'a RangeSet,
}

impl DiskImage for BlobDisk<'_, '_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = crate::image::readable(self.len, offset, buf.len());
        let buf = &mut buf[..n];
        buf.fill(0);
        let end = offset + n as u64;
        for (s, e) in self.ranges.overlapping(offset, end) {
            let (a, b) = (s.max(offset), e.min(end));
            let piece = &mut buf[(a - offset) as usize..(b - offset) as usize];
            self.sh
                .run(&format!("reading {} bytes at offset {a}", b - a), || {
                    self.sh.store.read(self.sh.blob, a, piece)
                })?;
            self.sh.progress.advance(b - a);
        }
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        let mut runs = Vec::new();
        for (s, e) in self.ranges.overlapping(0, self.len) {
            let (a, b) = (s, e.min(self.len));
            crate::image::push_run(&mut runs, a, b - a, ExtentKind::Data);
        }
        Ok(ExtentMap::from_ranges(self.len, runs))
    }

    fn format(&self) -> Format {
        Format::Raw
    }
}

/// Reads the blob back and checks it against what the upload computed from the source: the
/// length (`vsize` + footer), Content-MD5 (when `md5`), the footer bytes, and the manifest of
/// the blob's first `vsize` bytes against `identity`, naming every 512 KiB block that differs.
pub(crate) fn verify(
    sh: &Shared,
    vsize: u64,
    footer: &[u8; 512],
    identity: &Manifest,
    md5: Option<[u8; 16]>,
    opts: &UploadOptions,
) -> Result<()> {
    let blob = sh.blob;
    let props = sh
        .run("getting the blob's properties", || {
            sh.store.properties(blob)
        })?
        .ok_or_else(|| Error::not_found(format!("verify: blob {blob} is gone")))?;
    if props.len != vsize + FOOTER_SIZE {
        return Err(Error::invalid(format!(
            "verify: blob {blob} is {} bytes, expected {}",
            props.len,
            vsize + FOOTER_SIZE
        )));
    }
    if let Some(m) = md5
        && props.content_md5 != Some(m)
    {
        return Err(Error::checksum(format!(
            "verify: blob {blob}'s Content-MD5 is {}, expected {}",
            props.content_md5.map_or("unset".into(), hex::encode),
            hex::encode(m)
        )));
    }
    let ranges =
        RangeSet::from_ranges(sh.run("listing page ranges", || sh.store.page_ranges(blob))?);
    opts.progress.begin("verifying", ranges.total());
    let mut problems = Vec::new();
    let disk = BlobDisk {
        sh,
        len: vsize + FOOTER_SIZE,
        ranges: &ranges,
    };
    let mut tail = [0u8; 512];
    disk.read_exact_at(&mut tail, vsize)?;
    if tail != *footer {
        problems.push(format!(
            "offset {vsize} (0x{vsize:x}): the footer differs from the one sent"
        ));
    }
    let head = BlobDisk {
        sh,
        len: vsize,
        ranges: &ranges,
    };
    let got = Manifest::compute(&head)?;
    opts.progress.finish();
    if got.root != identity.root {
        for (i, (a, b)) in got.blocks.iter().zip(&identity.blocks).enumerate() {
            if a != b {
                let o = i as u64 * BLOCK_SIZE;
                problems.push(format!(
                    "offset {o} (0x{o:x}): the 512 KiB block there {}",
                    match (a, b) {
                        (None, _) => "is zeros on the blob, data in the source",
                        (_, None) => "holds data on the blob, zeros in the source",
                        _ => "holds other bytes than the source's",
                    }
                ));
            }
        }
        if problems.is_empty() {
            problems.push(format!(
                "the blob's root digest is {}, the source's {}",
                got.root, identity.root
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(20);
    Err(Error::checksum(format!(
        "verify: blob {blob} differs from the source in {n} place(s):\n  {}",
        problems.join("\n  ")
    )))
}
