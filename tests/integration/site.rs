//! The Site Recovery simulator from the CLI: the tutorial "Migrate AWS VMs to Azure with Site
//! Recovery", step by step, up to "Protected" — once on the in-process fakes, once with EC2 and
//! EBS on moto; every check failing on a machine made to fail it; a process killed mid-job.

use crate::util::{p, pattern, sparse_file};
use serde_json::Value;
use std::path::{Path, PathBuf};

const GIB: u64 = 1 << 30;

/// A 2 GiB Windows OS disk: an MBR with one NTFS partition and the boot signature, some data.
pub(crate) fn mbr_disk(path: &Path, seed: u8) {
    let mut mbr = vec![0u8; 512];
    mbr[..64].copy_from_slice(&pattern(64, seed));
    // Partition 1: active, type 0x07, from sector 2048, to the end.
    let e = &mut mbr[446..462];
    e[0] = 0x80;
    e[4] = 0x07;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&((2 * GIB / 512 - 2048) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    sparse_file(
        path,
        2 * GIB,
        &[
            (0, mbr),
            (1 << 20, pattern(3 << 20, seed)),
            (700 << 20, pattern(1 << 20, seed ^ 0x5a)),
        ],
    );
}

/// The tutorial's estate: the configuration server (Windows Server 2012 R2) and one machine to
/// migrate, with security groups that let the push install through.
pub(crate) fn tutorial_scenario(dir: &Path, extra_guest: &str) -> PathBuf {
    mbr_disk(&dir.join("web01.raw"), 7);
    let s = format!(
        r#"
[site]
start = "2026-03-02T08:00:00Z"
seed = 11

[aws]
[[aws.images]]
id = "ami-0c2b8ca1dad447f8a"
name = "Windows_Server-2012-R2_RTM-English-64Bit-Base"
platform = "windows"
platform_details = "Windows"

[[aws.security_groups]]
name = "migration"
description = "push install from the process server"
ingress = [
  {{ protocol = "tcp", from_port = 445, to_port = 445, cidrs = ["10.0.0.10/32"] }},
  {{ protocol = "tcp", from_port = 135, to_port = 135, cidrs = ["10.0.0.10/32"] }},
  {{ protocol = "tcp", from_port = 3389, to_port = 3389, cidrs = ["0.0.0.0/0"] }},
]

[[aws.instances]]
name = "ConfigurationServer"
image = "ami-0c2b8ca1dad447f8a"
instance_type = "m5.2xlarge"
private_ip = "10.0.0.10"

[[aws.instances]]
name = "web01"
image = "ami-0c2b8ca1dad447f8a"
instance_type = "t3.medium"
private_ip = "10.0.0.20"
security_groups = ["migration"]
[[aws.instances.volumes]]
device = "/dev/sda1"
size_gib = 2
data = "web01.raw"

[[guests]]
instance = "web01"
os_name = "Windows Server 2012 R2 Datacenter"
local_account_token_filter_policy = true
workload = {{ write_rate = 2048 }}
{extra_guest}
"#
    );
    let path = dir.join("tutorial.toml");
    std::fs::write(&path, s).unwrap();
    path
}

/// `ec2azure ARGS --site SITE`, with test AWS credentials (used only by a site on an endpoint).
pub(crate) fn site(site: &Path, args: &[&str]) -> crate::util::Out {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ec2azure"));
    c.args(args)
        .args(["--site", p(site)])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("SOURCE_DATE_EPOCH");
    let cmd = format!("{c:?}");
    let o = c.output().unwrap();
    crate::util::Out {
        cmd,
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub(crate) fn site_json(dir: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    site(dir, &a).ok().json()
}

/// The tutorial's steps, up to a protected machine. Returns the item's JSON.
pub(crate) fn tutorial_to_protected(s: &Path) -> Value {
    let key_value = tutorial_enable(s);
    finish_protection(s, &key_value)
}

/// The tutorial's steps up to Enable replication (the job started); returns the vault key.
pub(crate) fn tutorial_enable(s: &Path) -> String {
    // Prepare Azure.
    site(
        s,
        &[
            "azure",
            "group",
            "create",
            "--name",
            "migrationRG",
            "--location",
            "West Europe",
        ],
    )
    .ok();
    let st = site_json(
        s,
        &[
            "azure",
            "storage",
            "create",
            "--name",
            "awsmigrated2017",
            "--resource-group",
            "migrationRG",
        ],
    );
    assert_eq!(st["properties"]["sku"]["name"], "Standard_RAGRS", "{st}");
    site(
        s,
        &[
            "azure",
            "vnet",
            "create",
            "--name",
            "myMigrationNetwork",
            "--resource-group",
            "migrationRG",
        ],
    )
    .ok();
    let v = site_json(
        s,
        &[
            "vault",
            "create",
            "--name",
            "myVault",
            "--resource-group",
            "migrationRG",
            "--location",
            "westeurope",
        ],
    );
    assert_eq!(v["name"], "myVault");
    // Prepare the infrastructure: the configuration server, registered with the vault's key.
    let key = s.join("myVault.VaultCredentials");
    site(s, &["vault", "key", "--out", p(&key)]).ok();
    let text = std::fs::read_to_string(&key).unwrap();
    let key_value = serde_json::from_str::<Value>(&text).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let j = site_json(
        s,
        &[
            "config-server",
            "register",
            "--key",
            p(&key),
            "--instance",
            "ConfigurationServer",
        ],
    );
    assert_eq!(j["state"], "Succeeded", "{j}");
    assert_eq!(j["scenarioName"], "RegisterDra");
    site(
        s,
        &[
            "config-server",
            "add-account",
            "--name",
            "WindowsAccount",
            "--user",
            "Administrator",
        ],
    )
    .ok();
    // The replication policy with the defaults, associated with the configuration server.
    let j = site_json(s, &["policy", "create", "--name", "myReplicationPolicy"]);
    assert_eq!(j["friendlyName"], "Create replication policy", "{j}");
    assert_eq!(
        j["tasks"][0]["friendlyName"],
        "Prerequisites check for creating the replication policy"
    );
    let j = site_json(
        s,
        &["policy", "associate", "--policy", "myReplicationPolicy"],
    );
    assert_eq!(j["state"], "Succeeded", "{j}");
    let pol = site_json(s, &["policy", "list"]);
    let names: Vec<&str> = pol
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["myReplicationPolicy", "myReplicationPolicy-failback"]
    );
    let d = &pol[0]["properties"]["providerSpecificDetails"];
    assert_eq!(d["recoveryPointHistory"], 1440);
    assert_eq!(d["appConsistentFrequencyInMinutes"], 60);
    // Enable replication: the machine by name, IP and OS type.
    site(
        s,
        &[
            "machine",
            "add",
            "--name",
            "web01",
            "--ip",
            "10.0.0.20",
            "--os-type",
            "Windows",
        ],
    )
    .ok();
    let checks = site(
        s,
        &[
            "check-machine",
            "web01",
            "--account",
            "WindowsAccount",
            "--storage-account",
            "awsmigrated2017",
            "--json",
        ],
    );
    checks.ok();
    let enable = site_json(
        s,
        &[
            "replication",
            "enable",
            "web01",
            "--account",
            "WindowsAccount",
            "--resource-group",
            "migrationRG",
            "--storage-account",
            "awsmigrated2017",
            "--network",
            "myMigrationNetwork",
        ],
    );
    assert_eq!(enable["friendlyName"], "Enable protection", "{enable}");
    assert_eq!(enable["state"], "InProgress");
    let st = site_json(s, &["replication", "status", "web01"]);
    assert_eq!(
        st[0]["properties"]["protectionState"], "UnprotectedStatesBegin",
        "{st}"
    );
    assert_eq!(
        st[0]["properties"]["allowedOperations"],
        serde_json::json!([])
    );
    // An operation the state does not allow is refused, exit 1, naming the state.
    site(s, &["replication", "disable", "web01"])
        .expect_code(1)
        .stderr_has("allowed operations: none");
    key_value
}

/// Runs the clock until the machine is protected and checks what the service shows.
fn finish_protection(s: &Path, key_value: &str) -> Value {
    // "Changes can take 15 minutes or more to show."
    site(s, &["clock", "advance", "30m"]).ok();
    let jobs = site_json(s, &["jobs", "list"]);
    let by_name = |n: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["friendlyName"] == n)
            .unwrap_or_else(|| panic!("no job {n}: {jobs}"))
            .clone()
    };
    let en = by_name("Enable protection");
    assert_eq!(en["state"], "Succeeded", "{en}");
    let fin = by_name("Finalize protection");
    assert_eq!(fin["state"], "Succeeded", "{fin}");
    let st = site_json(s, &["replication", "status", "web01"]);
    let props = &st[0]["properties"];
    assert_eq!(props["protectionState"], "Protected", "{st}");
    assert_eq!(
        props["allowedOperations"],
        serde_json::json!(["TestFailover", "UnplannedFailover", "DisableProtection"])
    );
    // The replica's base holds the volume's bytes, read through the EBS direct APIs.
    let base = s.join("replicas/web01/0/base-1.raw");
    crate::util::ec2azure([
        "compare",
        p(&base),
        p(&s.parent().unwrap().join("web01.raw")),
    ])
    .ok();
    // The key never shows anywhere but in its file.
    let all = format!("{}{}", jobs, st);
    assert!(!all.contains(key_value));
    st[0].clone()
}

#[test]
fn the_tutorial_up_to_protected_on_the_fakes() {
    let dir = tempfile::tempdir().unwrap();
    let scn = tutorial_scenario(dir.path(), "");
    let s = dir.path().join("site");
    site(&s, &["site", "init", "--scenario", p(&scn)]).ok();
    let item = tutorial_to_protected(&s);
    let pd = &item["properties"]["providerSpecificDetails"];
    assert_eq!(pd["osType"], "Windows");
    assert_eq!(pd["azureVmGeneration"], "1");
    assert_eq!(pd["sourceVmCpuCount"], 2);
    assert_eq!(pd["protectedDisks"][0]["diskCapacityInBytes"], 2 * GIB);
    // Replication runs on: an hour of points (crash every 5 minutes, app-consistent hourly).
    site(&s, &["clock", "advance", "1h"]).ok();
    let pts = site_json(&s, &["points", "list", "--item", "web01"]);
    let list = pts["points"].as_array().unwrap();
    assert!(list.len() >= 12, "{pts}");
    assert!(
        list.iter()
            .any(|p| p["recoveryPointType"] == "ApplicationConsistent"),
        "{pts}"
    );
    let st = site_json(&s, &["replication", "status", "web01"]);
    assert_eq!(st[0]["properties"]["replicationHealth"], "Normal", "{st}");
    // Disable replication removes the item and its replica.
    site(&s, &["replication", "disable", "web01"]).ok();
    let items = site_json(&s, &["replication", "status"]);
    assert_eq!(items, serde_json::json!([]));
    assert!(!s.join("replicas/web01").exists());
    let m = site_json(&s, &["machine", "list"]);
    assert_eq!(m[0]["properties"]["protectionStatus"], "Unprotected");
}

#[test]
fn a_process_killed_mid_job_leaves_a_failed_job_and_a_legal_state() {
    let dir = tempfile::tempdir().unwrap();
    let scn = tutorial_scenario(dir.path(), "");
    // More data, so initial replication takes long enough to be caught.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("web01.raw"))
            .unwrap();
        f.write_all_at(&pattern(300 << 20, 3), 800 << 20).unwrap();
    }
    let s = dir.path().join("site");
    site(&s, &["site", "init", "--scenario", p(&scn)]).ok();
    tutorial_enable(&s);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ec2azure"))
        .args(["clock", "advance", "30m", "--site", p(&s)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while it does initial replication: the Finalize protection job's first task
    // holds its lock file then.
    let t = std::time::Instant::now();
    let killed = loop {
        let locked = std::fs::read_dir(s.join("locks"))
            .unwrap()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().ends_with("-1.lock")
                    && s.join("replicas/web01").exists()
            });
        if locked {
            child.kill().unwrap();
            break true;
        }
        if child.try_wait().unwrap().is_some() || t.elapsed().as_secs() > 60 {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.wait().unwrap();
    assert!(
        killed,
        "initial replication ended before it could be interrupted"
    );
    // The next command finds the job interrupted, fails it and removes the partial replica.
    let out = site(&s, &["jobs", "list", "--json"]);
    out.ok().stderr_has("was interrupted");
    let jobs = out.json();
    let fin = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["friendlyName"] == "Finalize protection")
        .unwrap()
        .clone();
    assert_eq!(fin["state"], "Failed", "{fin}");
    assert_eq!(fin["errors"][0]["errorCode"], "interrupted", "{fin}");
    assert_eq!(fin["allowedActions"], serde_json::json!(["Restart"]));
    assert!(!s.join("replicas/web01").exists());
    let st = site_json(&s, &["replication", "status", "web01"]);
    assert_eq!(
        st[0]["properties"]["protectionState"], "InitialReplicationFailed",
        "{st}"
    );
    assert_eq!(
        st[0]["properties"]["allowedOperations"],
        serde_json::json!(["DisableProtection"])
    );
    // Restarted, it finishes: the machine is protected.
    let id = fin["id"].as_str().unwrap();
    let r = site_json(&s, &["jobs", "restart", id]);
    assert_eq!(r["scenarioName"], "RestartJob", "{r}");
    assert_eq!(r["tasks"][0]["friendlyName"], "Restarting job");
    site(&s, &["clock", "advance", "30m"]).ok();
    let st = site_json(&s, &["replication", "status", "web01"]);
    let jobs = site_json(&s, &["jobs", "list"]);
    assert_eq!(
        st[0]["properties"]["protectionState"], "Protected",
        "{st}\n{jobs:#}"
    );
}

/// A GPT disk without an EFI system partition (a Linux boot disk on GPT).
fn gpt_disk(path: &Path) {
    use ec2azure::image::partition::{Guid, NewGptPartition, build_gpt};
    let disk = 2 * GIB;
    // The Linux filesystem type, 0FC63DAF-8483-4772-8E79-3D69D8477DE4.
    let linux = Guid::from_fields(
        0x0FC6_3DAF,
        0x8483,
        0x4772,
        *b"\x8E\x79\x3D\x69\xD8\x47\x7D\xE4",
    );
    let parts = [NewGptPartition {
        type_guid: linux,
        unique_guid: Guid::from_fields(1, 2, 3, [4; 8]),
        first_lba: 2048,
        last_lba: disk / 512 - 34,
        name: "root".into(),
    }];
    let sectors = build_gpt(disk / 512, Guid::from_fields(5, 6, 7, [8; 8]), &parts, &[]).unwrap();
    sparse_file(path, disk, &sectors);
}

#[test]
fn every_failing_check_names_its_id_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    mbr_disk(&dir.path().join("ok.raw"), 1);
    gpt_disk(&dir.path().join("gpt.raw"));
    let extra = r#"
[[guests]]
instance = "rhel-pv"
os_name = "Red Hat Enterprise Linux 6.7"
pv_drivers = ["Red Hat PV"]

[[guests]]
instance = "win2003"
os_name = "Windows Server 2003 R2"
"#;
    let scn = tutorial_scenario(dir.path(), extra);
    // More machines, each made to fail some checks.
    let mut text = std::fs::read_to_string(&scn).unwrap();
    text = text.replace(
        "[[aws.security_groups]]",
        r#"[[aws.images]]
id = "ami-0b0b0b0b0b0b0b0b0"
name = "RHEL-6.7_HVM-20150803-x86_64"
platform_details = "Red Hat Enterprise Linux"
virtualization = "paravirtual"

[[aws.security_groups]]
name = "closed"
description = "nothing in"

[[aws.security_groups]]"#,
    );
    let (before, after) = text.split_once("[[guests]]").unwrap();
    let text = format!(
        r#"{before}
[[aws.instances]]
name = "rhel-pv"
image = "ami-0b0b0b0b0b0b0b0b0"
private_ip = "10.0.0.30"
security_groups = ["closed"]
[[aws.instances.volumes]]
device = "/dev/sda1"
size_gib = 2
data = "gpt.raw"

[[aws.instances]]
name = "win2003"
image = "ami-0c2b8ca1dad447f8a"
private_ip = "10.0.0.40"
security_groups = ["closed"]
[[aws.instances.volumes]]
device = "/dev/sda1"
size_gib = 2
data = "ok.raw"

[[guests]]{after}"#
    );
    std::fs::write(&scn, text).unwrap();
    let s = dir.path().join("site");
    site(&s, &["site", "init", "--scenario", p(&scn)]).ok();
    site(
        &s,
        &[
            "azure",
            "group",
            "create",
            "--name",
            "rg",
            "--location",
            "westeurope",
        ],
    )
    .ok();
    site(
        &s,
        &[
            "vault",
            "create",
            "--name",
            "myVault",
            "--resource-group",
            "rg",
            "--location",
            "westeurope",
        ],
    )
    .ok();
    let key = s.join("k.VaultCredentials");
    site(&s, &["vault", "key", "--out", p(&key)]).ok();
    site(
        &s,
        &[
            "config-server",
            "register",
            "--key",
            p(&key),
            "--instance",
            "ConfigurationServer",
        ],
    )
    .ok();
    site(
        &s,
        &[
            "config-server",
            "add-account",
            "--name",
            "LinuxAccount",
            "--user",
            "ec2-user",
        ],
    )
    .ok();
    site(
        &s,
        &[
            "config-server",
            "add-account",
            "--name",
            "WindowsAccount",
            "--user",
            "backup",
        ],
    )
    .ok();
    site(&s, &["machine", "discover"]).ok();
    let failed = |machine: &str, account: &str, storage: &str| -> Vec<(String, Value)> {
        let out = site(
            &s,
            &[
                "check-machine",
                machine,
                "--account",
                account,
                "--storage-account",
                storage,
                "--json",
            ],
        );
        out.expect_code(1);
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "Failed")
            .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
            .collect()
    };
    let rhel = failed("rhel-pv", "LinuxAccount", "Bad_Name");
    let names: Vec<&str> = rhel.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "virtualization-type",
        "pv-drivers",
        "linux-boot-disk-gpt",
        "storage-account-name",
        "push-install-account",
        "push-install-ports",
        "policy-association",
    ] {
        assert!(names.contains(&want), "{want} did not fail: {rhel:?}");
    }
    let id = |list: &[(String, Value)], n: &str| {
        list.iter().find(|(x, _)| x == n).unwrap().1["errorCode"].clone()
    };
    assert_eq!(id(&rhel, "push-install-account"), "95108");
    assert_eq!(id(&rhel, "push-install-ports"), "95117");
    assert_eq!(id(&rhel, "policy-association"), "78253");
    let win = failed("win2003", "WindowsAccount", "awsmigrated2017");
    let names: Vec<&str> = win.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"os-supported"), "{win:?}");
    assert_eq!(id(&win, "push-install-account"), "95107");
    let msg = win.iter().find(|(n, _)| n == "os-supported").unwrap().1["errorMessage"].clone();
    assert!(
        msg.as_str().unwrap().contains("Windows Server 2003 R2"),
        "{msg}"
    );
}

#[test]
fn the_tutorial_up_to_protected_with_ec2_and_ebs_on_moto() {
    let dir = tempfile::tempdir().unwrap();
    let scn = tutorial_scenario(dir.path(), "");
    let sc = ec2azure::site::scenario::Scenario::load(&scn).unwrap();
    let Some(moto) = crate::util::moto_with_images(&sc.aws().unwrap().unwrap()) else {
        return;
    };
    let url = moto.url.clone();
    let s = dir.path().join("site");
    site(
        &s,
        &[
            "site",
            "init",
            "--scenario",
            p(&scn),
            "--aws-endpoint",
            &url,
            "--aws-region",
            "us-east-1",
        ],
    )
    .ok();
    // The estate is moto's: its instances, with moto's own ids.
    let inst = site_json(&s, &["aws", "instances"]);
    assert_eq!(inst.as_array().unwrap().len(), 2, "{inst}");
    let item = tutorial_to_protected(&s);
    assert_eq!(
        item["properties"]["providerSpecificDetails"]["protectedDisks"][0]["diskCapacityInBytes"],
        2 * GIB
    );
    // Initial replication called CreateSnapshots on moto and read the bytes through its EBS
    // direct APIs (the pushed snapshot the volume's tag names, as moto cannot read its own).
    let snaps = site_json(&s, &["aws", "snapshots"]);
    assert!(snaps.as_array().unwrap().len() >= 2, "{snaps}");
    let pts = site_json(&s, &["points", "list", "--item", "web01"]);
    assert!(!pts["points"].as_array().unwrap().is_empty(), "{pts}");
}

/// The job a `--json` site command printed, checked to have succeeded.
#[track_caller]
fn succeeded(s: &Path, args: &[&str]) -> Value {
    let j = site_json(s, args);
    assert_eq!(j["state"], "Succeeded", "{args:?}: {j}");
    j
}

/// The VMs of the tutorial's resource group.
fn vms(s: &Path) -> Vec<Value> {
    site_json(s, &["azure", "vm", "--resource-group", "migrationRG"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The subnet of a VM's primary NIC, read from the site's store.
fn vm_subnet(s: &Path, vm: &Value) -> String {
    use ec2azure::site::azure::NetworkInterface;
    let nic = vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a VM without a NIC: {vm}"))
        .to_string();
    let mut site = ec2azure::site::Site::open(s).unwrap();
    let n = site.tx(|t| t.get::<NetworkInterface>(&nic)).unwrap();
    n.properties.subnet_id().unwrap_or_default().to_string()
}

/// Reads the page blob behind a managed disk from the site's blob folder into a sparse file
/// (only its page ranges), as `ec2azure download` would from Azure.
fn download_disk_blob(s: &Path, disk: &Value, out: &Path) {
    use ec2azure::cloud::pageblob::PageBlobStore;
    use std::os::unix::fs::FileExt;
    let uri = disk["properties"]["creationData"]["sourceUri"]
        .as_str()
        .unwrap_or_else(|| panic!("a disk without its blob: {disk}"));
    let (account, blob) = ec2azure::site::azure::storage::parse_blob_uri(uri).unwrap();
    let store = ec2azure::site::azure::storage::account_blobs(&s.join("blobs"), &account);
    let props = store
        .properties(&blob)
        .unwrap()
        .expect("the disk's blob exists");
    let f = std::fs::File::create(out).unwrap();
    f.set_len(props.len).unwrap();
    let mut buf = Vec::new();
    for (off, len) in store.page_ranges(&blob).unwrap() {
        let mut at = off;
        while at < off + len {
            let n = (off + len - at).min(4 << 20);
            buf.resize(n as usize, 0);
            store.read(&blob, at, &mut buf).unwrap();
            f.write_all_at(&buf, at).unwrap();
            at += n;
        }
    }
}

/// The root digest of an image's disk bytes (the one the recovery points' markers record).
fn root_of(image: &Path) -> String {
    let img = ec2azure::open(image, None).unwrap();
    ec2azure::recovery::base_digests(&*img)
        .unwrap()
        .1
        .to_string()
}

/// The tutorial's second half from a protected `web01`: test failover into a network of its
/// own, the checks the tutorial asks for, cleanup with notes, failover with shutdown to Latest,
/// a change of point (the disk's bytes checked against the point built from the replica),
/// commit, complete migration.
fn tutorial_second_half(s: &Path) {
    site(s, &["clock", "advance", "1h"]).ok();
    // A network apart from production for the test.
    site(
        s,
        &[
            "azure",
            "vnet",
            "create",
            "--name",
            "myTestNetwork",
            "--resource-group",
            "migrationRG",
            "--address-prefix",
            "10.1.0.0/16",
            "--subnet",
            "isolated=10.1.0.0/24",
        ],
    )
    .ok();
    let j = succeeded(
        s,
        &[
            "failover",
            "test",
            "web01",
            "--point",
            "latest-processed",
            "--network",
            "myTestNetwork",
            "--subnet",
            "isolated",
        ],
    );
    assert_eq!(j["friendlyName"], "Test failover", "{j}");
    let st = site_json(s, &["replication", "status", "web01"]);
    assert_eq!(
        st[0]["properties"]["allowedOperations"],
        serde_json::json!(["TestFailoverCleanup"]),
        "{st}"
    );
    // The VM: the right size (2 vCPUs, 4 GiB), the chosen network, running.
    let v = vms(s);
    assert_eq!(v.len(), 1, "{v:?}");
    let vm = &v[0];
    assert_eq!(vm["name"], "web01-test");
    assert_eq!(
        vm["properties"]["hardwareProfile"]["vmSize"],
        "Standard_B2s"
    );
    assert_eq!(vm["properties"]["powerState"], "running", "{vm}");
    let subnet = vm_subnet(s, vm);
    assert!(
        subnet.ends_with("/virtualNetworks/myTestNetwork/subnets/isolated"),
        "{subnet}"
    );
    // A failover now is refused: the cleanup is pending.
    site(s, &["failover", "run", "web01", "--point", "latest"]).expect_code(1);
    succeeded(
        s,
        &[
            "failover",
            "cleanup",
            "web01",
            "--notes",
            "size, network and power state as expected",
        ],
    );
    assert!(vms(s).is_empty(), "the test VM is left");
    let disks = site_json(s, &["azure", "disk", "--resource-group", "migrationRG"]);
    assert_eq!(disks, serde_json::json!([]), "the test VM's disk is left");
    let st = site_json(s, &["replication", "status", "web01"]);
    assert_eq!(st[0]["properties"]["protectionState"], "Protected", "{st}");

    // Migrate: failover to Latest, the source shut down first.
    let j = succeeded(
        s,
        &[
            "failover",
            "run",
            "web01",
            "--shutdown",
            "--point",
            "latest",
        ],
    );
    assert_eq!(
        j["tasks"][0]["friendlyName"], "Shut down the virtual machine",
        "{j}"
    );
    let st = site_json(s, &["replication", "status", "web01"]);
    assert_eq!(
        st[0]["properties"]["allowedOperations"],
        serde_json::json!([
            "CompleteMigration",
            "Commit",
            "DisableProtection",
            "ChangePit"
        ]),
        "{st}"
    );
    let v = vms(s);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["name"], "web01");
    assert!(
        vm_subnet(s, &v[0]).ends_with("/virtualNetworks/myMigrationNetwork/subnets/default"),
        "{}",
        v[0]
    );
    // Change the point to an older one in retention.
    let pts = site_json(s, &["points", "list", "--item", "web01"]);
    let list = pts["points"].as_array().unwrap();
    assert!(list.len() >= 4, "{pts}");
    let older = list[2]["name"].as_str().unwrap().to_string();
    succeeded(s, &["failover", "change-point", "web01", "--point", &older]);
    // The point built from the replica before commit (which frees the replica)…
    let built = s.parent().unwrap().join("point.vhd");
    let b = crate::util::ec2azure([
        "points",
        "build",
        "--replica",
        p(&s.join("replicas/web01/0")),
        "--point",
        &older,
        p(&built),
        "--no-sync",
        "--json",
    ]);
    let b = b.ok().json();
    let want = b["disks"][0]["build"]["root"]
        .as_str()
        .unwrap_or_else(|| panic!("no root: {b}"))
        .to_string();
    assert_eq!(b["disks"][0]["build"]["verified"], true, "{b}");
    // … holds the bytes of the VM's disk blob.
    let disks = site_json(s, &["azure", "disk", "--resource-group", "migrationRG"]);
    let disks = disks.as_array().unwrap();
    assert_eq!(disks.len(), 1, "{disks:?}");
    let got = s.parent().unwrap().join("blob.vhd");
    download_disk_blob(s, &disks[0], &got);
    assert_eq!(root_of(&got), want, "the disk's blob is not the point");
    assert_eq!(root_of(&built), want);
    crate::util::ec2azure(["compare", p(&built), p(&got)]).ok();

    succeeded(s, &["failover", "commit", "web01"]);
    assert!(
        !s.join("replicas/web01").exists(),
        "commit frees the replica"
    );
    site(
        s,
        &["failover", "change-point", "web01", "--point", "latest"],
    )
    .expect_code(1);
    let j = succeeded(s, &["failover", "complete-migration", "web01"]);
    assert_eq!(j["friendlyName"], "Complete migration", "{j}");
    // The VM stays; the item, its replica and journals go; the source is stopped.
    let v = vms(s);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["name"], "web01");
    assert_eq!(v[0]["properties"]["powerState"], "running");
    assert_eq!(
        site_json(s, &["replication", "status"]),
        serde_json::json!([])
    );
    assert!(!s.join("replicas/web01").exists());
    assert!(!s.join("source/web01").exists());
    let inst = site_json(s, &["aws", "instances", "web01"]);
    assert_eq!(inst[0]["state"], "stopped", "{inst}");
}

#[test]
fn the_tutorial_to_complete_migration_on_the_fakes() {
    let dir = tempfile::tempdir().unwrap();
    let scn = tutorial_scenario(dir.path(), "");
    let s = dir.path().join("site");
    site(&s, &["site", "init", "--scenario", p(&scn)]).ok();
    tutorial_to_protected(&s);
    tutorial_second_half(&s);
}

#[test]
fn the_tutorial_to_complete_migration_with_ec2_and_ebs_on_moto() {
    let dir = tempfile::tempdir().unwrap();
    let scn = tutorial_scenario(dir.path(), "");
    let sc = ec2azure::site::scenario::Scenario::load(&scn).unwrap();
    let Some(moto) = crate::util::moto_with_images(&sc.aws().unwrap().unwrap()) else {
        return;
    };
    let url = moto.url.clone();
    let s = dir.path().join("site");
    site(
        &s,
        &[
            "site",
            "init",
            "--scenario",
            p(&scn),
            "--aws-endpoint",
            &url,
            "--aws-region",
            "us-east-1",
        ],
    )
    .ok();
    tutorial_to_protected(&s);
    // The shutdown goes through moto's StopInstances: moto says the instance is stopped.
    tutorial_second_half(&s);
}

#[test]
fn a_plan_with_a_manual_action_waits_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let scn = tutorial_scenario(dir.path(), "");
    let s = dir.path().join("site");
    site(&s, &["site", "init", "--scenario", p(&scn)]).ok();
    tutorial_to_protected(&s);
    site(&s, &["clock", "advance", "1h"]).ok();
    let plan = site_json(
        &s,
        &[
            "plan",
            "create",
            "wave1",
            "--group",
            "web01",
            "--manual",
            "1:before:Stop the app:stop the app tier and drain the queue",
            "--types",
            "test",
        ],
    );
    let groups = plan["properties"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{plan}");
    assert_eq!(groups[2]["groupType"], "Boot");
    assert_eq!(
        groups[2]["startGroupActions"][0]["customDetails"]["instanceType"],
        "ManualActionDetails"
    );
    let show = site(&s, &["plan", "show", "wave1"]);
    show.ok();
    assert!(show.stdout.contains("Group 1: web01"), "{show}");
    assert!(
        show.stdout
            .contains("allowed operations: TestFailover, UnplannedFailover"),
        "{show}"
    );
    // A bad action is refused with what was expected.
    site(
        &s,
        &[
            "plan",
            "create",
            "bad",
            "--group",
            "web01",
            "--manual",
            "1:during:x:y",
        ],
    )
    .expect_code(2)
    .stderr_has("neither before nor after");
    // The test failover stops at the manual action: exit 0, the command to resume it.
    let out = site(
        &s,
        &[
            "plan",
            "test-failover",
            "wave1",
            "--point",
            "latest-processed",
        ],
    );
    out.ok();
    assert!(out.stdout.contains("Suspended"), "{out}");
    assert!(
        out.stdout.contains("waiting for manual action") && out.stdout.contains("drain the queue"),
        "{out}"
    );
    let job = out
        .stdout
        .split("ec2azure jobs resume ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no resume command: {out}"))
        .to_string();
    let j = site_json(&s, &["jobs", "show", &job]);
    assert_eq!(j["state"], "Suspended", "{j}");
    assert_eq!(j["stateDescription"], "WaitingForManualAction", "{j}");
    assert!(
        vms(&s).is_empty(),
        "a machine failed over before the pre-step"
    );
    site(&s, &["jobs", "resume", &job, "--comments", "app stopped"]).ok();
    site(&s, &["clock", "advance", "2h"]).ok();
    let j = site_json(&s, &["jobs", "show", &job]);
    assert_eq!(j["state"], "Succeeded", "{j}");
    let v = vms(&s);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["name"], "web01-test");
    let plans = site_json(&s, &["plan", "list"]);
    assert_eq!(
        plans[0]["properties"]["state"], "TestFailoverPending",
        "{plans}"
    );
    let j = succeeded(&s, &["plan", "cleanup", "wave1", "--notes", "fine"]);
    assert_eq!(j["scenarioName"], "RecoveryPlanTestFailoverCleanup", "{j}");
    assert!(vms(&s).is_empty());
    let plans = site_json(&s, &["plan", "list"]);
    assert_eq!(plans[0]["properties"]["state"], "Idle", "{plans}");
}
