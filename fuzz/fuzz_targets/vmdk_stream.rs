//! Fuzzes `ec2azure::fuzzing::vmdk_stream` (see its doc). Seeds: fuzz/seeds/vmdk_stream (fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::vmdk_stream(data));
