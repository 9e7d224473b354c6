//! Fuzzes the Get Page Ranges answer and error body parsers of the Blob client (body:
//! `ec2azure::fuzzing::page_list_xml`). Seeds: answers as Azurite sends them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ec2azure::fuzzing::page_list_xml(data));
