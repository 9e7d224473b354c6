//! The one integration-test binary: drives the built `ec2azure` binary and checks its outputs
//! against the library, against the bytes, and against independent oracles (qemu-img, libvhdi).

mod boot;
mod cli;
mod conformance;
mod damaged;
mod ebs;
mod ec2;
mod fuzz_seeds;
mod oracle;
mod points;
mod rehearse;
mod report;
mod site;
mod upload;
mod util;
mod vhdgen;
mod vmdk;
mod vmdkgen;
