//! Fuzzes the VHD footer parser and the fixed-VHD reader with arbitrary file contents: decoding,
//! detection, validation, Azure checks, and reading every byte of whatever opens. Nothing may
//! panic, and a VHD that opens must read exactly its footer's size.
//!
//! Seeds: `cargo run --release -- convert -q --no-sync` of small samples (see fuzz/README.md);
//! a few are in fuzz/seeds/vhd_footer.
#![no_main]

use ec2azure::check::{Target, check_footer};
use ec2azure::image::vhd::{FixedVhd, Footer, looks_like_footer};
use ec2azure::image::{DiskImage, MemImage};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let tail: Option<&[u8; 512]> = data.len().checked_sub(512).and_then(|s| data[s..].try_into().ok());
    if let Some(t) = tail {
        let f = Footer::decode(t);
        let _ = looks_like_footer(t);
        let _ = f.to_json(t);
        // Encoding what was decoded gives a footer that decodes to the same fields.
        let again = Footer::decode(&f.encode());
        // (encode always writes zero reserved bytes).
        assert_eq!(
            Footer { checksum: 0, ..again },
            Footer { checksum: 0, reserved_zero: true, ..f.clone() }
        );
    }
    for target in [Target::ManagedDisk, Target::PageBlob] {
        let _ = check_footer(Path::new("fuzz.vhd"), len, tail, target);
    }
    if let Ok(vhd) = FixedVhd::new(MemImage::new(data.to_vec())) {
        assert_eq!(vhd.len() + 512, len);
        let mut buf = vec![0u8; 4096];
        let mut off = 0;
        while let Ok(n) = vhd.read_at(&mut buf, off) {
            if n == 0 {
                break;
            }
            off += n as u64;
        }
        assert_eq!(off, vhd.len());
        let _ = vhd.extents();
    }
});
