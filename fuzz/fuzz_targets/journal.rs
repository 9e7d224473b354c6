//! Fuzzes the change-journal reader, point building and one-pass verification (body:
//! `ec2azure::fuzzing::journal`, which also tries the input with its CRCs repaired). Seeds:
//! small journals written by `ec2azure journal simulate` and `journal diff`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::journal(data));
