//! The block manifest: the SHA-256 of every 512 KiB block of a disk (the EBS block size) and a
//! root digest over them, so two disks — or a disk and the snapshot it came from — can be proved
//! equal block by block.
//!
//! - Blocks are numbered from 0; the last one is shorter when the size is not a multiple of 512 KiB.
//! - An all-zero block is marked `null` in the JSON instead of being hashed; for the root it counts
//!   as the SHA-256 of that many zero bytes, so the root does not depend on how sparse a file is.
//! - root = SHA-256(digest(block 0) ‖ digest(block 1) ‖ … ), each digest 32 raw bytes.
//!
//! The converter fills a [`ManifestBuilder`] in the same pass that writes the output; blocks it
//! never reads (holes) are zero.

use crate::error::{Error, Result};
use crate::image::{DiskImage, bytes_at};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::sync::Mutex;

/// The manifest block size: 512 KiB, the EBS direct APIs' block size.
pub const BLOCK_SIZE: u64 = 512 * 1024;

/// The raw bytes of a SHA-256, as the hash function gives them (checksums sent to and checked
/// from clouds); a digest that names a disk or a block is a [`Digest`].
pub type Sha256Digest = [u8; 32];

/// A SHA-256 digest that names something: a block of a disk, a disk's manifest root, a base a
/// journal applies to, the disk a marker vouches for. 32 bytes inside the library; 64 lower-case
/// hex digits at the edges (JSON, CLI, file formats), through `Display`, `FromStr` and serde.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(sha256(data))
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// Not 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Digest> {
        let mut d = [0u8; 32];
        hex::decode_to_slice(s, &mut d)
            .map_err(|_| Error::invalid(format!("digest {s:?}: expected 64 hex digits")))?;
        Ok(Digest(d))
    }
}

impl From<[u8; 32]> for Digest {
    fn from(d: [u8; 32]) -> Digest {
        Digest(d)
    }
}

impl From<Digest> for [u8; 32] {
    fn from(d: Digest) -> [u8; 32] {
        d.0
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::from_hex(s)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        Digest::from_hex(other).is_ok_and(|o| o == *self)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    Sha256::digest(data).into()
}

/// SHA-256 of `len` zero bytes.
pub fn zero_digest(len: u64) -> Sha256Digest {
    let mut h = Sha256::new();
    let zeros = [0u8; 8192];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        h.update(&zeros[..n]);
        left -= n as u64;
    }
    h.finalize().into()
}

/// A finished manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this JSON document.
    pub version: u32,
    /// Block size in bytes (524288).
    pub block_size: u64,
    /// Disk size in bytes.
    pub size: u64,
    /// Root digest, hex (a string, as the upload engine keeps it in blob metadata; see
    /// [`Manifest::root_digest`]).
    pub root: String,
    /// Number of all-zero blocks.
    pub zero_blocks: u64,
    /// Per block: the SHA-256 (hex in the JSON), or `null` for an all-zero block.
    pub blocks: Vec<Option<Digest>>,
}

impl Manifest {
    /// The root digest.
    ///
    /// # Errors
    /// `root` is not 64 hex digits (a manifest built by this crate always is).
    pub fn root_digest(&self) -> Result<Digest> {
        Digest::from_hex(&self.root)
    }

    /// Number of blocks in a disk of `size` bytes.
    pub fn block_count(size: u64) -> u64 {
        size.div_ceil(BLOCK_SIZE)
    }

    /// Computes the manifest of `image` by reading its data extents (holes are not read).
    ///
    /// # Errors
    /// Read errors of the image.
    pub fn compute(image: &dyn DiskImage) -> Result<Manifest> {
        let size = image.len();
        let builder = ManifestBuilder::new(size);
        let extents = image.extents()?;
        extents
            .data_chunks(BLOCK_SIZE)
            .par_bridge()
            .try_for_each_init(
                || vec![0u8; BLOCK_SIZE as usize],
                |buf, b| -> Result<()> {
                    let off = b * BLOCK_SIZE;
                    let n = (size - off).min(BLOCK_SIZE) as usize;
                    builder.record(b, bytes_at(image, &extents, off, &mut buf[..n])?);
                    image.release(off, n as u64);
                    Ok(())
                },
            )?;
        Ok(builder.finish())
    }

    /// Reads a manifest from JSON and checks it: version, block size and count, every digest
    /// 64 hex digits, the zero-block count, and the root recomputed from the blocks.
    ///
    /// # Errors
    /// The JSON is malformed or any of those checks fails.
    pub fn from_json(text: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("manifest JSON: {e}")))?;
        if m.version != 1 {
            return Err(Error::unsupported(format!(
                "manifest version: expected 1, found {}",
                m.version
            )));
        }
        if m.block_size != BLOCK_SIZE || m.blocks.len() as u64 != Manifest::block_count(m.size) {
            return Err(Error::invalid(format!(
                "manifest: expected {} blocks of {BLOCK_SIZE} bytes for {} bytes, found {} of {}",
                Manifest::block_count(m.size),
                m.size,
                m.blocks.len(),
                m.block_size
            )));
        }
        let builder = ManifestBuilder::new(m.size);
        for (i, b) in m.blocks.iter().enumerate() {
            if let Some(d) = b {
                builder.record_digest(i as u64, d.0);
            }
        }
        let again = builder.finish();
        if again.zero_blocks != m.zero_blocks || again.root != m.root {
            return Err(Error::invalid(format!(
                "manifest: the blocks give root {} and {} zero blocks, the file says {} and {}",
                again.root, again.zero_blocks, m.root, m.zero_blocks
            )));
        }
        Ok(again)
    }
}

/// Collects block digests from several threads, then computes the root.
#[derive(Debug)]
pub struct ManifestBuilder {
    size: u64,
    digests: Mutex<Vec<Option<Sha256Digest>>>,
}

impl ManifestBuilder {
    /// A builder for a disk of `size` bytes, every block zero until recorded.
    pub fn new(size: u64) -> Self {
        let n = usize::try_from(Manifest::block_count(size)).unwrap_or(usize::MAX);
        ManifestBuilder {
            size,
            digests: Mutex::new(vec![None; n]),
        }
    }

    /// The size of the disk this manifest describes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Records the contents of block `index` (all of it: 512 KiB, or less for the last block).
    /// An all-zero block stays marked zero.
    pub fn record(&self, index: u64, data: &[u8]) {
        if crate::bytes::is_zero(data) {
            return;
        }
        let d = sha256(data);
        self.record_digest(index, d);
    }

    /// Records a precomputed digest of a non-zero block.
    pub fn record_digest(&self, index: u64, digest: Sha256Digest) {
        let mut g = crate::sync::lock(&self.digests);
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| g.get_mut(i)) {
            *slot = Some(digest);
        }
    }

    /// The manifest.
    pub fn finish(self) -> Manifest {
        let digests = crate::sync::into_inner(self.digests);
        let full_zero = zero_digest(BLOCK_SIZE);
        let last_len = match self.size % BLOCK_SIZE {
            0 => BLOCK_SIZE,
            r => r,
        };
        let last_zero = zero_digest(last_len);
        let n = digests.len();
        let mut root = Sha256::new();
        let mut zero_blocks = 0;
        let blocks = digests
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Some(d) => {
                    root.update(d);
                    Some(Digest(*d))
                }
                None => {
                    zero_blocks += 1;
                    root.update(if i + 1 == n { last_zero } else { full_zero });
                    None
                }
            })
            .collect();
        Manifest {
            version: 1,
            block_size: BLOCK_SIZE,
            size: self.size,
            root: hex::encode(root.finalize()),
            zero_blocks,
            blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemImage;

    /// The definition, computed the naive way.
    fn naive_root(data: &[u8]) -> String {
        let mut root = Sha256::new();
        for chunk in data.chunks(BLOCK_SIZE as usize) {
            root.update(sha256(chunk));
        }
        hex::encode(root.finalize())
    }

    #[test]
    fn root_is_hash_of_block_hashes_and_zero_blocks_are_null() {
        let mut data = vec![0u8; (BLOCK_SIZE * 3 + 1000) as usize];
        data[BLOCK_SIZE as usize + 5] = 9;
        data[(BLOCK_SIZE * 3 + 999) as usize] = 1;
        let m = Manifest::compute(&MemImage::new(data.clone())).unwrap();
        assert_eq!(m.blocks.len(), 4);
        assert_eq!(m.zero_blocks, 2);
        assert!(m.blocks[0].is_none() && m.blocks[2].is_none());
        assert_eq!(
            m.blocks[1],
            Some(Digest::of(
                &data[BLOCK_SIZE as usize..2 * BLOCK_SIZE as usize]
            ))
        );
        assert_eq!(m.root, naive_root(&data));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
        let b1 = m.blocks[1].unwrap().to_string();
        let tampered = json.replacen(&b1, &"0".repeat(64), 1);
        let e = Manifest::from_json(&tampered).unwrap_err();
        assert!(e.to_string().contains("the blocks give root"), "{e}");
        let bad_hex = json.replacen(&b1, "xyz", 1);
        let e = Manifest::from_json(&bad_hex).unwrap_err();
        assert!(e.to_string().contains("expected 64 hex digits"), "{e}");
        // The JSON keeps its shape: hex strings and nulls.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["blocks"][1], serde_json::json!(b1));
        assert!(v["blocks"][0].is_null());
        assert_eq!(v["root"], serde_json::json!(m.root));
    }

    #[test]
    fn empty_and_all_zero_disks() {
        assert_eq!(
            Manifest::compute(&MemImage::new(vec![])).unwrap().root,
            naive_root(&[])
        );
        let z = vec![0u8; 700_000];
        assert_eq!(
            Manifest::compute(&MemImage::new(z.clone())).unwrap().root,
            naive_root(&z)
        );
    }
}
