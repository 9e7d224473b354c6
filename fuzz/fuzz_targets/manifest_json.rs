//! Fuzzes the manifest reader (body: `ec2azure::fuzzing::manifest_json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::manifest_json(data));
