//! The Site Recovery simulator from the CLI: the tutorial "Migrate AWS VMs to Azure with Site
//! Recovery", step by step, up to "Protected" — once on the in-process fakes, once with EC2 and
//! EBS on moto; every check failing on a machine made to fail it; a process killed mid-job.

use crate::util::{ec2azure, p, pattern, sparse_file};
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

pub(crate) fn site(site: &Path, args: &[&str]) -> crate::util::Out {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--site", p(site)]);
    ec2azure(a)
}

pub(crate) fn site_json(dir: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    site(dir, &a).ok().json()
}

/// The tutorial's steps, up to a protected machine. Returns the item's JSON.
pub(crate) fn tutorial_to_protected(s: &Path) -> Value {
    // Prepare Azure.
    site(s, &["azure", "group", "create", "--name", "migrationRG", "--location", "West Europe"]).ok();
    let st = site_json(
        s,
        &[
            "azure", "storage", "create", "--name", "awsmigrated2017", "--resource-group",
            "migrationRG",
        ],
    );
    assert_eq!(st["properties"]["sku"]["name"], "Standard_RAGRS", "{st}");
    site(
        s,
        &["azure", "vnet", "create", "--name", "myMigrationNetwork", "--resource-group", "migrationRG"],
    )
    .ok();
    let v = site_json(
        s,
        &["vault", "create", "--name", "myVault", "--resource-group", "migrationRG", "--location", "westeurope"],
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
        &["config-server", "register", "--key", p(&key), "--instance", "ConfigurationServer"],
    );
    assert_eq!(j["state"], "Succeeded", "{j}");
    assert_eq!(j["scenarioName"], "RegisterDra");
    site(s, &["config-server", "add-account", "--name", "WindowsAccount", "--user", "Administrator"]).ok();
    // The replication policy with the defaults, associated with the configuration server.
    let j = site_json(s, &["policy", "create", "--name", "myReplicationPolicy"]);
    assert_eq!(j["friendlyName"], "Create replication policy", "{j}");
    assert_eq!(j["tasks"][0]["friendlyName"], "Prerequisites check for creating the replication policy");
    let j = site_json(s, &["policy", "associate", "--policy", "myReplicationPolicy"]);
    assert_eq!(j["state"], "Succeeded", "{j}");
    let pol = site_json(s, &["policy", "list"]);
    let names: Vec<&str> = pol.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["myReplicationPolicy", "myReplicationPolicy-failback"]);
    let d = &pol[0]["properties"]["providerSpecificDetails"];
    assert_eq!(d["recoveryPointHistory"], 1440);
    assert_eq!(d["appConsistentFrequencyInMinutes"], 60);
    // Enable replication: the machine by name, IP and OS type.
    site(s, &["machine", "add", "--name", "web01", "--ip", "10.0.0.20", "--os-type", "Windows"]).ok();
    let checks = site(s, &["check-machine", "web01", "--account", "WindowsAccount", "--storage-account", "awsmigrated2017", "--json"]);
    checks.ok();
    let enable = site_json(
        s,
        &[
            "replication", "enable", "web01", "--account", "WindowsAccount", "--resource-group",
            "migrationRG", "--storage-account", "awsmigrated2017", "--network", "myMigrationNetwork",
        ],
    );
    assert_eq!(enable["friendlyName"], "Enable protection", "{enable}");
    assert_eq!(enable["state"], "InProgress");
    let st = site_json(s, &["replication", "status", "web01"]);
    assert_eq!(st[0]["properties"]["protectionState"], "UnprotectedStatesBegin", "{st}");
    assert_eq!(st[0]["properties"]["allowedOperations"], serde_json::json!([]));
    // An operation the state does not allow is refused, exit 1, naming the state.
    site(s, &["replication", "disable", "web01"])
        .expect_code(1)
        .stderr_has("allowed operations: none");
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
    // The key never shows anywhere but in its file.
    let all = format!("{}{}", jobs, st);
    assert!(!all.contains(&key_value));
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
    assert!(list.iter().any(|p| p["recoveryPointType"] == "ApplicationConsistent"), "{pts}");
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
