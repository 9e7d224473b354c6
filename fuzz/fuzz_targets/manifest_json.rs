//! Fuzzes the manifest reader: arbitrary text must give a manifest or an error, never a panic,
//! and a manifest that is accepted must serialise and read back unchanged.
#![no_main]

use ec2azure::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::from_json(text) {
        let again = serde_json::to_string(&m).expect("a manifest serialises");
        assert_eq!(Manifest::from_json(&again).expect("and reads back"), m);
    }
});
