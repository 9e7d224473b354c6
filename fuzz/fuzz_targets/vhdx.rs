//! Fuzzes the VHDX reader from memory: headers, region tables, metadata, BAT (body:
//! `ec2azure::fuzzing::vhdx`). Seed: a hand-made 448 KiB VHDX (fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::vhdx(data));
