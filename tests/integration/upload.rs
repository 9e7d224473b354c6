//! Page-blob upload and download over real HTTP against Azurite on 127.0.0.1 (started here, one
//! per test, on a free port; required under `EC2AZURE_REQUIRE_ORACLES`): every input format
//! converted on the fly round-trips to what `ec2azure convert` writes; no request is over 4 MiB
//! or misaligned (the client's request log — Azurite itself would accept them); an interrupted
//! upload resumes without resending; another source is refused without --overwrite; secrets
//! never appear in output or errors. Faults are tested against the in-process fake
//! (src/cloud/upload.rs), since Azurite cannot be told to misbehave.

use crate::util::*;
use ec2azure::cloud::azure_blob::{
    Account, AzureBlobClient, DEV_ACCOUNT, DEV_ACCOUNT_KEY, Timeouts,
};
use ec2azure::cloud::pageblob::{BlobName, Op, PageBlobStore};
use ec2azure::cloud::upload::{Source, UploadOptions, upload};
use ec2azure::image::MemImage;
use std::path::Path;
use std::process::{Child, Command};

struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Azurite {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }
    fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};\
             BlobEndpoint={};",
            self.endpoint()
        )
    }
    fn client(&self) -> AzureBlobClient {
        Account::from_connection_string(&self.connection_string())
            .unwrap()
            .client(Timeouts::default())
            .with_request_log()
    }
}

fn start_azurite() -> Option<Azurite> {
    let exe = azurite_blob()?;
    let dir = tempfile::tempdir().unwrap();
    let location = p(dir.path()).to_string();
    let (child, port) = spawn_on_free_port(&exe, |port| {
        [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
            &location,
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    Some(Azurite {
        child,
        port,
        _dir: dir,
    })
}

const UUID: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const TS: &str = "1700000000";

/// Non-zero 512-byte pages of a file, in bytes.
fn nonzero_pages(data: &[u8]) -> u64 {
    data.chunks(512)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64
        * 512
}

fn upload_args<'a>(az: &'a str, input: &'a Path, blob: &'a str) -> Vec<String> {
    [
        "upload",
        "--json",
        p(input),
        "--connection-string",
        az,
        "--container",
        "disks",
        "--blob",
        blob,
        "--uuid",
        UUID,
        "--timestamp",
        TS,
        "--target",
        "page-blob",
        "--merge-gap",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn every_format_uploads_on_the_fly_and_downloads_as_convert_writes_it() {
    let Some(az) = start_azurite() else { return };
    let cs = az.connection_string();
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("vol.raw");
    // Not a whole MiB, so the on-the-fly conversion pads.
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        "23068160",
        "--data-fraction",
        "0.3",
        "--seed",
        "5",
    ])
    .ok();
    let mut inputs = vec![raw.clone()];
    if have_qemu() {
        for (fmt, ext) in [("qcow2", "qcow2"), ("vhdx", "vhdx"), ("vpc", "vhd")] {
            let out = d.path().join(format!("vol.{ext}"));
            run(
                "qemu-img",
                ["convert", "-f", "raw", "-O", fmt, p(&raw), p(&out)],
            )
            .ok();
            inputs.push(out);
        }
    }
    for (i, input) in inputs.iter().enumerate() {
        let blob = format!("vol-{i}.vhd");
        let mut args = upload_args(&cs, input, &blob);
        args.push("--verify".into());
        let j = ec2azure(&args).ok().json();
        assert_eq!(j["converted"], true, "{j}");
        assert_eq!(j["verified"], true, "{j}");
        let back = d.path().join(format!("back-{i}.vhd"));
        ec2azure([
            "download",
            "-q",
            "--connection-string",
            &cs,
            "--container",
            "disks",
            "--blob",
            &blob,
            "--no-sync",
            p(&back),
        ])
        .ok();
        let conv = d.path().join(format!("conv-{i}.vhd"));
        ec2azure([
            "convert",
            "-q",
            "--no-sync",
            "--uuid",
            UUID,
            "--timestamp",
            TS,
            p(input),
            p(&conv),
        ])
        .ok();
        let want = std::fs::read(&conv).unwrap();
        let got = std::fs::read(&back).unwrap();
        assert!(
            got == want,
            "{}: the downloaded blob differs from `convert`'s output",
            input.display()
        );
        // Only non-zero pages were sent, and the blob length is the VHD's.
        assert_eq!(
            j["bytes_sent"].as_u64().unwrap(),
            nonzero_pages(&want),
            "{j}"
        );
        assert_eq!(j["blob_len"].as_u64().unwrap(), want.len() as u64);
        // The Content-MD5 is the whole file's.
        use base64::Engine;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5_of(&want));
        assert_eq!(j["content_md5"], md5.as_str());
    }
    // A fixed VHD that is Azure-ready is sent as it is.
    let conv = d.path().join("conv-0.vhd");
    let j = ec2azure(upload_args(&cs, &conv, "asis.vhd")).ok().json();
    assert_eq!(j["converted"], false, "{j}");
    let back = d.path().join("asis-back.vhd");
    ec2azure([
        "download",
        "-q",
        "--connection-string",
        &cs,
        "--container",
        "disks",
        "--blob",
        "asis.vhd",
        p(&back),
    ])
    .ok();
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&conv).unwrap());
}

fn md5_of(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

/// A disk with runs that cross 4 MiB windows, a run longer than 4 MiB, and lone pages.
fn tricky_disk() -> MemImage {
    let mut d = vec![0u8; 21 << 20];
    let runs: [(usize, usize); 4] = [
        (512, 512),
        ((4 << 20) - 1024, 9 << 20),
        ((15 << 20) + 4096, 700),
        ((21 << 20) - 512, 512),
    ];
    for (o, l) in runs {
        for (i, b) in d[o..o + l].iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
    }
    MemImage::new(d)
}

fn opts() -> UploadOptions<'static> {
    UploadOptions {
        target: ec2azure::Target::PageBlob,
        unique_id: Some([3; 16]),
        timestamp: Some(7),
        parallel: 4,
        merge_gap: 0,
        content_md5: true,
        ..UploadOptions::default()
    }
}

#[test]
fn the_client_sends_only_legal_pages_and_an_interrupted_upload_resumes() {
    let Some(az) = start_azurite() else { return };
    let client = az.client();
    let disk = tricky_disk();
    let name = BlobName::new("resume", "d.vhd");
    // Stop after three Put Page calls.
    struct StopAfter<'a>(&'a AzureBlobClient, usize);
    impl ec2azure::Progress for StopAfter<'_> {
        fn cancelled(&self) -> bool {
            self.0
                .requests()
                .iter()
                .filter(|r| r.op == Op::PutPages)
                .count()
                >= self.1
        }
    }
    let stop = StopAfter(&client, 3);
    let e = upload(
        Source::Disk(&disk),
        &client,
        &name,
        &UploadOptions {
            progress: &stop,
            parallel: 1,
            ..opts()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ec2azure::ErrorKind::Interrupted, "{e}");
    let first: Vec<(u64, u64)> = client
        .requests()
        .iter()
        .filter(|r| r.op == Op::PutPages && r.ok)
        .map(|r| (r.offset, r.len))
        .collect();
    assert!(!first.is_empty());
    // A fresh client (a second run) resumes from Get Page Ranges.
    let client2 = az.client();
    let r = upload(Source::Disk(&disk), &client2, &name, &opts()).unwrap();
    assert_eq!(r.start, "resumed");
    let second: Vec<(u64, u64)> = client2
        .requests()
        .iter()
        .filter(|r| r.op == Op::PutPages)
        .map(|r| (r.offset, r.len))
        .collect();
    for &(o, l) in &second {
        for &(fo, fl) in &first {
            assert!(o + l <= fo || fo + fl <= o, "{o}+{l} was sent again");
        }
    }
    let mut vhd = disk.bytes().to_vec();
    vhd.extend_from_slice(&ec2azure::image::vhd::Footer::new_fixed(21 << 20, [3; 16], 7).encode());
    let sent: u64 = first.iter().chain(&second).map(|p| p.1).sum();
    assert_eq!(sent, nonzero_pages(&vhd));
    assert_eq!(r.bytes_sent + r.bytes_already_there, nonzero_pages(&vhd));
    // Every request either run sent was legal: Azurite would have taken bad ones silently.
    for req in client.requests().iter().chain(&client2.requests()) {
        if matches!(req.op, Op::PutPages | Op::ClearPages) {
            assert!(
                req.offset % 512 == 0 && req.len % 512 == 0 && req.len > 0,
                "{req:?}"
            );
        }
        if req.op == Op::PutPages {
            assert!(req.len <= 4 << 20, "{req:?}");
        }
    }
    // The blob reads back as the VHD.
    let mut got = vec![0u8; vhd.len()];
    for (i, chunk) in got.chunks_mut(4 << 20).enumerate() {
        client2.read(&name, (i as u64) << 22, chunk).unwrap();
    }
    assert!(got == vhd);
    let props = client2.properties(&name).unwrap().unwrap();
    assert_eq!(props.metadata["ec2azure_state"], "complete");
    assert_eq!(props.content_md5, Some(md5_of(&vhd)));
}

#[test]
fn another_source_is_refused_and_overwrite_clears_what_it_left() {
    let Some(az) = start_azurite() else { return };
    let cs = az.connection_string();
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.raw");
    let b = d.path().join("b.raw");
    sparse_file(
        &a,
        21 << 20,
        &[(0, pattern(1 << 20, 1)), (10 << 20, pattern(4096, 2))],
    );
    sparse_file(&b, 21 << 20, &[(1 << 20, pattern(8192, 3))]);
    ec2azure(upload_args(&cs, &a, "x.vhd")).ok();
    let again = ec2azure(upload_args(&cs, &a, "x.vhd")).ok().json();
    assert_eq!(again["start"], "resumed");
    assert_eq!(again["bytes_sent"], 0, "{again}");
    ec2azure(upload_args(&cs, &b, "x.vhd"))
        .expect_code(2)
        .stderr_has("another source")
        .stderr_has("--overwrite");
    let mut args = upload_args(&cs, &b, "x.vhd");
    args.extend(["--overwrite".to_string(), "--verify".to_string()]);
    let j = ec2azure(&args).ok().json();
    assert_eq!(j["start"], "overwritten");
    assert_eq!(j["verified"], true);
    assert_eq!(
        j["bytes_cleared"].as_u64().unwrap(),
        (1 << 20) + 4096,
        "{j}"
    );
    let ranges = az
        .client()
        .page_ranges(&BlobName::new("disks", "x.vhd"))
        .unwrap();
    assert_eq!(ranges, vec![(1 << 20, 8192), (21 << 20, 512)]);
}

#[test]
fn credentials_never_appear_in_output_or_errors() {
    let Some(az) = start_azurite() else { return };
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("s.raw");
    sparse_file(&raw, 21 << 20, &[(0, pattern(4096, 1))]);
    // A wrong key: Azurite refuses the signature; the key must not be echoed.
    let wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=";
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={wrong_key};BlobEndpoint={};",
        az.endpoint()
    );
    let o = ec2azure(upload_args(&cs, &raw, "s.vhd"));
    o.expect_code(2).stderr_has("403");
    assert!(
        !o.stderr.contains(wrong_key) && !o.stdout.contains(wrong_key),
        "{o}"
    );
    // A bad SAS: refused; the signature is not echoed.
    let sas = format!(
        "{}/disks/s.vhd?sv=2025-01-05&sp=rw&sig=TOPSECRETSIGNATURE%3D",
        az.endpoint()
    );
    let o = ec2azure(["upload", p(&raw), "--sas", &sas, "--target", "page-blob"]);
    o.expect_code(2);
    assert!(
        !o.stderr.contains("TOPSECRET") && !o.stdout.contains("TOPSECRET"),
        "{o}"
    );
    // A closed port: a connection error, no secret.
    let o = ec2azure([
        "upload",
        p(&raw),
        "--sas",
        "http://127.0.0.1:1/devstoreaccount1/disks/s.vhd?sig=TOPSECRETSIGNATURE",
    ]);
    o.expect_code(2);
    assert!(!o.stderr.contains("TOPSECRET"), "{o}");
    // The right key, from the environment through --account-url: works, and is not printed.
    let mut c = Command::new(env!("CARGO_BIN_EXE_ec2azure"));
    c.args([
        "upload",
        "--json",
        p(&raw),
        "--account-url",
        &az.endpoint(),
        "--container",
        "disks",
    ])
    .args([
        "--blob",
        "env.vhd",
        "--account-key-env",
        "MY_KEY",
        "--target",
        "page-blob",
    ])
    .env("MY_KEY", DEV_ACCOUNT_KEY);
    let o = c.output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!out.contains(DEV_ACCOUNT_KEY) && !err.contains(DEV_ACCOUNT_KEY));
    // And from AZURE_STORAGE_CONNECTION_STRING.
    let mut c = Command::new(env!("CARGO_BIN_EXE_ec2azure"));
    c.args([
        "download",
        "-q",
        "--container",
        "disks",
        "--blob",
        "env.vhd",
    ])
    .arg(d.path().join("env.vhd"))
    .env("AZURE_STORAGE_CONNECTION_STRING", az.connection_string());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_fixed_vhd_that_breaks_azure_rules_is_refused_before_any_request() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("s.raw");
    sparse_file(&raw, 21 << 20, &[(0, pattern(4096, 1))]);
    let vhd = d.path().join("s.vhd");
    ec2azure(["convert", "-q", "--no-sync", p(&raw), p(&vhd)]).ok();
    // Damage the footer's checksum.
    let mut bytes = std::fs::read(&vhd).unwrap();
    let n = bytes.len();
    bytes[n - 512 + 64] ^= 0xff;
    std::fs::write(&vhd, &bytes).unwrap();
    // Port 1: nothing listens, so any request would fail differently.
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};\
         BlobEndpoint=http://127.0.0.1:1/{DEV_ACCOUNT};"
    );
    ec2azure([
        "upload",
        p(&vhd),
        "--connection-string",
        &cs,
        "--container",
        "disks",
        "--blob",
        "b",
    ])
    .expect_code(2)
    .stderr_has("not ready for Azure")
    .stderr_has("footer-checksum");
    // Too small for a managed disk (the default target), fine as a page blob.
    let small = d.path().join("small.raw");
    sparse_file(&small, 1 << 20, &[(0, pattern(512, 1))]);
    ec2azure([
        "upload",
        p(&small),
        "--connection-string",
        &cs,
        "--container",
        "disks",
        "--blob",
        "b",
    ])
    .expect_code(2)
    .stderr_has("20 MiB + 512");
    // No account at all.
    let mut c = Command::new(env!("CARGO_BIN_EXE_ec2azure"));
    c.args(["upload", p(&small), "--container", "disks", "--blob", "b"])
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_SAS_URL")
        .env_remove("AZURE_STORAGE_ACCOUNT_URL");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no Azure storage account"));
}

#[test]
fn an_ebs_snapshot_uploads_on_the_fly() {
    let Some(az) = start_azurite() else { return };
    let Some(moto) = crate::ebs::start_moto() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("vol.raw");
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        "1G",
        "--data-fraction",
        "0.01",
        "--seed",
        "23",
    ])
    .ok();
    let aws = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ec2azure"));
        c.args(args)
            .env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
        let o = c.output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{args:?}\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let pushed: serde_json::Value =
        serde_json::from_str(&aws(&["snapshot", "push", "--json", p(&raw)])).unwrap();
    let id = pushed["snapshot_id"].as_str().unwrap().to_string();
    let cs = az.connection_string();
    let input = format!("ebs://{id}");
    let mut args = upload_args(&cs, Path::new(&input), "ebs.vhd");
    args.push("--verify".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let j: serde_json::Value = serde_json::from_str(&aws(&args)).unwrap();
    assert_eq!(
        (j["converted"].as_bool(), j["verified"].as_bool()),
        (Some(true), Some(true))
    );
    let back = d.path().join("back.vhd");
    ec2azure([
        "download",
        "-q",
        "--no-sync",
        "--connection-string",
        &cs,
        "--container",
        "disks",
        "--blob",
        "ebs.vhd",
        p(&back),
    ])
    .ok();
    let conv = d.path().join("conv.vhd");
    ec2azure([
        "convert",
        "-q",
        "--no-sync",
        "--uuid",
        UUID,
        "--timestamp",
        TS,
        p(&raw),
        p(&conv),
    ])
    .ok();
    ec2azure([
        "compare",
        "--strict",
        "-f",
        "raw",
        "-F",
        "raw",
        p(&back),
        p(&conv),
    ])
    .ok();
}

/// A service SAS for a container, signed with the account key as the service defines it
/// (version 2022-11-02 string-to-sign).
fn container_sas(endpoint: &str, container: &str) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let (sp, se, sv, sr) = ("racwdl", "2099-01-01T00:00:00Z", "2022-11-02", "c");
    let resource = format!("/blob/{DEV_ACCOUNT}/{container}");
    let to_sign = format!("{sp}\n\n{se}\n{resource}\n\n\nhttp,https\n{sv}\n{sr}\n\n\n\n\n\n\n");
    let key = b64.decode(DEV_ACCOUNT_KEY).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    let sig: String = sig
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    format!("{endpoint}/{container}?sv={sv}&spr=http,https&se={se}&sr={sr}&sp={sp}&sig={sig}")
}

#[test]
fn a_sas_url_uploads_and_downloads() {
    let Some(az) = start_azurite() else { return };
    az.client().create_container("sas").unwrap();
    let sas = container_sas(&az.endpoint(), "sas");
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("s.raw");
    sparse_file(&raw, 21 << 20, &[(8192, pattern(70000, 4))]);
    let o = ec2azure([
        "upload",
        "--json",
        p(&raw),
        "--sas",
        &sas,
        "--blob",
        "s.vhd",
        "--verify",
    ]);
    let j = o.ok().json();
    assert_eq!(j["verified"], true, "{j}");
    assert!(
        !o.stdout.contains("sig=") && !o.stderr.contains("sig="),
        "{o}"
    );
    let back = d.path().join("back.vhd");
    let conv = d.path().join("conv.vhd");
    ec2azure(["download", "-q", "--sas", &sas, "--blob", "s.vhd", p(&back)]).ok();
    ec2azure(["convert", "-q", "--no-sync", p(&raw), p(&conv)]).ok();
    // Same disk bytes (footers differ: random ids).
    ec2azure(["compare", "-f", "vhd", "-F", "vhd", p(&back), p(&conv)]).ok();
}

/// A recovery point uploads on the fly (no temporary file): the downloaded blob equals the VHD
/// `points build` writes of the same point, and the point's digest is checked.
#[test]
fn a_recovery_point_uploads_on_the_fly() {
    let Some(az) = start_azurite() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.raw");
    ec2azure(["sample", "--size", "24M", "--seed", "3", p(&base)]).ok();
    let j = d.path().join("j");
    ec2azure([
        "journal",
        "simulate",
        "-q",
        "--base",
        p(&base),
        "--duration",
        "1h",
        "--write-rate",
        "4K",
        p(&j),
    ])
    .ok();
    let r = d.path().join("r");
    ec2azure(["replica", "init", "-q", "--base", p(&base), p(&r)]).ok();
    ec2azure(["replica", "receive", "-q", p(&j), p(&r)]).ok();
    let want = d.path().join("want.vhd");
    ec2azure([
        "points",
        "build",
        "-q",
        "--replica",
        p(&r),
        "--point",
        "latest",
        "--uuid",
        UUID,
        "--timestamp",
        TS,
        "--no-sync",
        p(&want),
    ])
    .ok();
    let cs = az.connection_string();
    let out = ec2azure([
        "upload",
        "--point",
        "latest",
        "--replica",
        p(&r),
        "--connection-string",
        &cs,
        "--container",
        "disks",
        "--blob",
        "point.vhd",
        "--uuid",
        UUID,
        "--timestamp",
        TS,
        "--verify",
    ]);
    out.ok();
    assert!(
        out.stdout.contains("reproduces its marker's digest"),
        "{out}"
    );
    let got = d.path().join("got.vhd");
    ec2azure([
        "download",
        "--connection-string",
        &cs,
        "--container",
        "disks",
        "--blob",
        "point.vhd",
        p(&got),
    ])
    .ok();
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap());
    // Not both an input and a point.
    ec2azure([
        "upload",
        p(&base),
        "--point",
        "latest",
        "--replica",
        p(&r),
        "--connection-string",
        &cs,
        "--container",
        "disks",
        "--blob",
        "x.vhd",
    ])
    .expect_code(2);
}
