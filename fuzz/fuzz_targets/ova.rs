//! Fuzzes `ec2azure::fuzzing::ova` (see its doc). Seeds: fuzz/seeds/ova (fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::ova(data));
