//! Fuzzes the MBR and GPT reader (`image::partition`) with arbitrary disk contents (body:
//! `ec2azure::fuzzing::partition_table`, also run over the seeds by `cargo test`).
//! Seeds: fuzz/seeds/partition_table (an MBR disk, a GPT disk with an ESP, the same with its
//! primary header damaged; made by the unit tests' builders, see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::partition_table(data));
