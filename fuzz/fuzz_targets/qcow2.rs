//! Fuzzes qcow2 through imago and our open gate (body: `ec2azure::fuzzing::qcow2`). Seeds: tiny
//! qemu-made images with 512-byte clusters (fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::qcow2(data));
