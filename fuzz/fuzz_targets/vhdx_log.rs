//! Fuzzes VHDX log replay (body: `ec2azure::fuzzing::vhdx_log`, which repairs entry CRCs so
//! the input reaches the descriptors). Seed: one entry with data and zero descriptors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::vhdx_log(data));
