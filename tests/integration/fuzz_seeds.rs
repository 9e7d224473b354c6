//! Runs every fuzz target's body over its committed seeds, and over any crash artifacts a local
//! fuzzing session left in fuzz/artifacts, so a property that breaks fails `cargo test` too.

use std::path::Path;

fn each_input(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("seeds").join(target),
        root.join("artifacts").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            let name = e.path().display().to_string();
            let r = std::panic::catch_unwind(|| f(&bytes));
            assert!(r.is_ok(), "fuzz target {target} fails on {name}");
            n += 1;
        }
    }
    assert!(n > 0, "no seeds for fuzz target {target}");
}

#[test]
fn fuzz_bodies_pass_on_their_seeds() {
    each_input("vhd_footer", ec2azure::fuzzing::vhd_footer);
    each_input("dynamic_vhd", ec2azure::fuzzing::dynamic_vhd);
    each_input("vhdx", ec2azure::fuzzing::vhdx);
    each_input("vhdx_log", ec2azure::fuzzing::vhdx_log);
    each_input("qcow2", ec2azure::fuzzing::qcow2);
    each_input("manifest_json", ec2azure::fuzzing::manifest_json);
    each_input("journal", ec2azure::fuzzing::journal);
    each_input("page_list_xml", ec2azure::fuzzing::page_list_xml);
    each_input("vmdk_sparse", ec2azure::fuzzing::vmdk_sparse);
    each_input("vmdk_stream", ec2azure::fuzzing::vmdk_stream);
    each_input("vmdk_descriptor", ec2azure::fuzzing::vmdk_descriptor);
    each_input("ova", ec2azure::fuzzing::ova);
    each_input("partition_table", ec2azure::fuzzing::partition_table);
}
