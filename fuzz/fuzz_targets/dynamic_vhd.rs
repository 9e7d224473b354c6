//! Fuzzes the dynamic / differencing VHD reader from memory (body:
//! `ec2azure::fuzzing::dynamic_vhd`). Seeds: small qemu-made dynamic VHDs (fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::dynamic_vhd(data));
