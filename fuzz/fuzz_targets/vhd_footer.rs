//! Fuzzes the VHD footer parser, the Azure checks and the fixed-VHD reader with arbitrary file
//! contents (body: `ec2azure::fuzzing::vhd_footer`, also run over the seeds by `cargo test`).
//! Seeds: fuzz/seeds/vhd_footer (hand-made footers; see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::vhd_footer(data));
