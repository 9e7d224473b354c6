//! Builds differencing VHDs for tests (qemu-img cannot make them): a child of `parent` holding
//! sector-aligned writes, with a sector bitmap marking exactly the written sectors, and a parent
//! locator of the chosen kind. Deliberately simple and independent of the crate's reader.

use ec2azure::image::vhd::Footer;
use ec2azure::image::vhd::dynamic::header_checksum;
use std::path::Path;

pub enum Locator {
    /// "W2ru": a relative path, UTF-16LE (what Hyper-V writes).
    Relative(String),
    /// "W2ku": an absolute path, UTF-16LE.
    Absolute(String),
    /// No locator, only the parent's unicode name in the header.
    NameOnly,
}

pub struct Child<'a> {
    pub size: u64,
    pub block_size: u32,
    pub parent_id: [u8; 16],
    pub parent_name: &'a str,
    pub locator: Locator,
    pub unique_id: [u8; 16],
    /// (offset, data): both multiples of 512.
    pub writes: Vec<(u64, Vec<u8>)>,
}

fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Writes the child to `path`.
pub fn write_child(path: &Path, c: &Child) {
    let bs = u64::from(c.block_size);
    let entries = c.size.div_ceil(bs) as usize;
    let bitmap_size = ((bs / 512).div_ceil(8)).div_ceil(512) * 512;
    let table_offset = 512 + 1024u64;
    let table_bytes = (entries as u64 * 4).div_ceil(512) * 512;
    let locator_at = table_offset + table_bytes;
    let (code, loc_data): (&[u8; 4], Vec<u8>) = match &c.locator {
        Locator::Relative(p) => (
            b"W2ru",
            p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        ),
        Locator::Absolute(p) => (
            b"W2ku",
            p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        ),
        Locator::NameOnly => (b"\0\0\0\0", Vec::new()),
    };
    let loc_space = (loc_data.len() as u64).div_ceil(512).max(1) * 512;
    let mut next = locator_at + loc_space;

    // Which blocks are written, and where they go.
    let mut bat = vec![u32::MAX; entries];
    let mut blocks: Vec<(usize, u64)> = Vec::new();
    for (off, data) in &c.writes {
        assert!(
            off % 512 == 0 && data.len() % 512 == 0,
            "writes must be sector-aligned"
        );
        let first = (off / bs) as usize;
        let last = ((off + data.len() as u64 - 1) / bs) as usize;
        for (b, entry) in bat.iter_mut().enumerate().take(last + 1).skip(first) {
            if *entry == u32::MAX {
                *entry = (next / 512) as u32;
                blocks.push((b, next));
                next += bitmap_size + bs;
            }
        }
    }
    let file_len = next + 512;
    let mut img = vec![0u8; file_len as usize];
    // Block data and bitmaps.
    for (off, data) in &c.writes {
        for (i, sector) in data.chunks(512).enumerate() {
            let pos = off + i as u64 * 512;
            let b = (pos / bs) as usize;
            let block_at = u64::from(bat[b]) * 512;
            let s_in_block = (pos % bs) / 512;
            img[(block_at + s_in_block / 8) as usize] |= 0x80 >> (s_in_block % 8);
            let at = (block_at + bitmap_size + pos % bs) as usize;
            img[at..at + 512].copy_from_slice(sector);
        }
    }
    // BAT.
    for (i, e) in bat.iter().enumerate() {
        put_be32(&mut img, table_offset as usize + i * 4, *e);
    }
    // Locator data.
    img[locator_at as usize..locator_at as usize + loc_data.len()].copy_from_slice(&loc_data);
    // Dynamic header.
    let mut h = [0u8; 1024];
    h[0..8].copy_from_slice(b"cxsparse");
    put_be64(&mut h, 8, u64::MAX);
    put_be64(&mut h, 16, table_offset);
    put_be32(&mut h, 24, 0x0001_0000);
    put_be32(&mut h, 28, entries as u32);
    put_be32(&mut h, 32, c.block_size);
    h[40..56].copy_from_slice(&c.parent_id);
    for (i, u) in c.parent_name.encode_utf16().enumerate().take(255) {
        h[64 + i * 2..66 + i * 2].copy_from_slice(&u.to_be_bytes());
    }
    if !loc_data.is_empty() {
        h[576..580].copy_from_slice(code);
        put_be32(&mut h, 580, loc_space as u32);
        put_be32(&mut h, 584, loc_data.len() as u32);
        put_be64(&mut h, 592, locator_at);
    }
    let sum = header_checksum(&h);
    put_be32(&mut h, 36, sum);
    img[512..1536].copy_from_slice(&h);
    // Footers.
    let mut f = Footer::new_fixed(c.size, c.unique_id, 0);
    f.disk_type = ec2azure::image::vhd::DiskType::Differencing;
    f.data_offset = 512;
    let fb = f.encode();
    img[..512].copy_from_slice(&fb);
    img[(file_len - 512) as usize..].copy_from_slice(&fb);
    std::fs::write(path, img).unwrap();
}

/// The unique id in a VHD's footer (the copy at 0 for dynamic disks, the end for fixed).
pub fn unique_id_of(path: &Path) -> [u8; 16] {
    let b = std::fs::read(path).unwrap();
    let footer = if &b[..8] == b"conectix" {
        &b[..512]
    } else {
        &b[b.len() - 512..]
    };
    footer[68..84].try_into().unwrap()
}
