//! EBS snapshots over real HTTP against a moto server on 127.0.0.1 (started here): a sample
//! pushed with `snapshot push` (StartSnapshot, PutSnapshotBlock with checksums, CompleteSnapshot)
//! and pulled back with `snapshot pull` (ListSnapshotBlocks, GetSnapshotBlock with every checksum
//! checked) is the same disk. moto ignores parents, pagination and checksums, so those, and the
//! faults, are tested against the in-process fake (src/cloud/ebs.rs).

use crate::util::*;
use std::process::{Child, Command};

pub(crate) struct Moto {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_moto() -> Option<Moto> {
    let exe = moto_server()?;
    let (child, port) = spawn_on_free_port(&exe, |port| {
        vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ]
    });
    Some(Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

fn ec2azure_aws(args: &[&str]) -> Out {
    ec2azure_aws_at(args, None)
}

/// With `endpoint`, as AWS_ENDPOINT_URL (what `ebs://` inputs use).
fn ec2azure_aws_at(args: &[&str], endpoint: Option<&str>) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ec2azure"));
    if let Some(e) = endpoint {
        c.env("AWS_ENDPOINT_URL", e);
    }
    c.args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
    let cmd = format!("{c:?}");
    let o = c.output().unwrap();
    Out {
        cmd,
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn push_then_pull_over_http_round_trips() {
    let Some(moto) = start_moto() else { return };
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("vol.raw");
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        "1G",
        "--data-fraction",
        "0.02",
        "--seed",
        "17",
    ])
    .ok();
    let j = ec2azure_aws(&[
        "snapshot",
        "push",
        "--json",
        "--endpoint",
        &moto.url,
        p(&raw),
    ])
    .ok()
    .json();
    let id = j["snapshot_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("snap-"), "{j}");
    assert!(j["blocks_written"].as_u64().unwrap() > 0);
    let vhd = d.path().join("vol.vhd");
    let mpath = d.path().join("vol.json");
    let pulled = ec2azure_aws(&[
        "snapshot",
        "pull",
        "--json",
        "--no-sync",
        "--endpoint",
        &moto.url,
        "--manifest",
        p(&mpath),
        &id,
        p(&vhd),
    ])
    .ok()
    .json();
    assert_eq!(pulled["virtual_size"], 1u64 << 30);
    assert_eq!(pulled["listed_blocks"], j["blocks_written"]);
    ec2azure(["compare", "--strict", p(&raw), p(&vhd)]).ok();
    ec2azure(["check", p(&vhd)]).ok();
    // The manifest of what was pulled is the manifest of the source.
    let local = ec2azure([
        "convert",
        "--json",
        "--no-sync",
        "--manifest",
        p(&d.path().join("l.json")),
        p(&raw),
        p(&d.path().join("l.vhd")),
    ])
    .ok()
    .json();
    assert_eq!(pulled["manifest_root"], local["manifest_root"]);
    // Raw output too, and secrets never appear in output.
    let r = ec2azure_aws(&[
        "snapshot",
        "pull",
        "-O",
        "raw",
        "--no-sync",
        "--endpoint",
        &moto.url,
        &id,
        p(&d.path().join("v.raw")),
    ]);
    r.ok();
    assert!(
        !r.stdout.contains("testing") && !r.stderr.contains("testing"),
        "{r}"
    );
    ec2azure(["compare", "--strict", p(&raw), p(&d.path().join("v.raw"))]).ok();
    // ebs://SNAPSHOT_ID wherever an image is accepted.
    let url = format!("ebs://{id}");
    let via = d.path().join("via-url.vhd");
    ec2azure_aws_at(
        &["convert", "-q", "--no-sync", &url, p(&via)],
        Some(&moto.url),
    )
    .ok();
    ec2azure(["compare", "--strict", p(&vhd), p(&via)]).ok();
    let info = ec2azure_aws_at(&["info", "--json", &url], Some(&moto.url))
        .ok()
        .json();
    assert_eq!(info["virtual_size"], 1u64 << 30);
    ec2azure_aws_at(&["compare", &url, p(&raw)], Some(&moto.url)).ok();
    // snapshot diff runs over HTTP (moto's ListChangedBlocks answers are not right, so the
    // contents are checked against the in-process fake instead, in src/cloud/ebs.rs).
    let diff = ec2azure_aws(&[
        "snapshot",
        "diff",
        "--json",
        "--endpoint",
        &moto.url,
        &id,
        &id,
    ]);
    assert!(diff.ok().json()["changed_blocks"].is_array(), "{diff}");
    ec2azure_aws_at(&["info", "ebs://not-a-snapshot"], Some(&moto.url))
        .expect_code(2)
        .stderr_has("expected ebs://snap-");
}
