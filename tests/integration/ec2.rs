//! The EC2 side, one set of expectations run on both implementations of `Ec2Api`: the
//! in-process `FakeEc2` and `AwsEc2` over HTTP against a moto server (started here, once, with
//! the scenario's images given through `MOTO_AMIS_PATH`). The same `Scenario` is loaded into
//! both; `conformance` checks every trait method, and reads each snapshot's bytes through the
//! EBS direct APIs (`readable_snapshot`, then `EbsSnapshot`) against the volume's image file.
//! The only differences allowed are moto's known limits (`Quirks`): no boot mode and no
//! platform details on instances.

use crate::util::*;
use ec2azure::cloud::aws_ebs::AwsEbs;
use ec2azure::cloud::aws_ec2::{AwsEc2, SNAPSHOT_VOLUME_TAG};
use ec2azure::cloud::ebs::{EbsApi, EbsSnapshot, RetryPolicy};
use ec2azure::cloud::ec2::*;
use ec2azure::{DiskImage, ErrorKind};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

const GIB: u64 = 1 << 30;
const WIN: &str = "ami-0a1b2c3d4e5f60001";
const RHEL: &str = "ami-0a1b2c3d4e5f60002";
const PV: &str = "ami-0a1b2c3d4e5f60003";

/// The tutorial's machines: a Windows Server 2012 R2 HVM (two volumes, the second zeros), a
/// RHEL 6.7 HVM, and a paravirtual one (EC2's default root volume).
fn scenario() -> Scenario {
    Scenario::from_json(&format!(
        r#"{{
          "images": [
            {{"id": "{WIN}", "name": "Windows_Server-2012-R2_RTM-English-64Bit-Base",
              "description": "Microsoft Windows Server 2012 R2 RTM 64-bit Locale English AMI",
              "platform": "windows", "platform_details": "Windows", "boot_mode": "legacy-bios"}},
            {{"id": "{RHEL}", "name": "RHEL-6.7_HVM-20150813-x86_64-1-Hourly2-GP2",
              "description": "Provided by Red Hat, Inc.", "platform_details": "Red Hat Enterprise Linux",
              "boot_mode": "legacy-bios"}},
            {{"id": "{PV}", "name": "amzn-ami-pv-2017.09.1.20171120-x86_64-ebs",
              "virtualization": "paravirtual", "boot_mode": "legacy-bios"}}
          ],
          "security_groups": [
            {{"name": "windows-push", "description": "SMB and WMI for the push install", "ingress": [
              {{"protocol": "tcp", "from_port": 445, "to_port": 445, "cidrs": ["10.0.0.0/16"]}},
              {{"protocol": "tcp", "from_port": 135, "to_port": 135, "cidrs": ["10.0.0.0/16", "10.1.0.0/16"]}}]}},
            {{"name": "linux-ssh", "description": "SSH", "ingress": [
              {{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16"]}},
              {{"protocol": "-1", "source_groups": ["windows-push"]}}]}}
          ],
          "instances": [
            {{"name": "win2012", "image": "{WIN}", "instance_type": "m5.large",
              "private_ip": "10.0.1.10", "security_groups": ["windows-push"], "tags": {{"app": "web"}},
              "volumes": [
                {{"device": "/dev/sda1", "size_gib": 1, "data": "win.raw"}},
                {{"device": "/dev/xvdf", "size_gib": 1, "volume_type": "gp3", "encrypted": true}}]}},
            {{"name": "rhel67", "image": "{RHEL}", "instance_type": "t3.medium",
              "private_ip": "10.0.1.11", "security_groups": ["linux-ssh"],
              "volumes": [{{"device": "/dev/sda1", "size_gib": 1, "data": "rhel.raw"}}]}},
            {{"name": "pvbox", "image": "{PV}", "instance_type": "t2.micro", "private_ip": "10.0.1.12"}}
          ]
        }}"#
    ))
    .unwrap()
}

/// The volumes' image files.
fn data_files(dir: &Path) {
    sparse_file(
        &dir.join("win.raw"),
        GIB,
        &[
            (0, pattern(4096, 1)),
            (3 * 524288 + 7, pattern(600_000, 2)),
            (GIB - 4096, pattern(4096, 3)),
        ],
    );
    sparse_file(
        &dir.join("rhel.raw"),
        700 << 20,
        &[(1 << 20, pattern(8192, 4))],
    );
}

/// What moto does not report.
#[derive(Clone, Copy)]
struct Quirks {
    /// No BootMode / CurrentInstanceBootMode on instances.
    no_instance_boot_mode: bool,
    /// No PlatformDetails on instances.
    no_platform_details: bool,
}

fn ids_of(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `snapshot`'s bytes (found through `readable_snapshot`) equal the file's, or zeros.
fn same_bytes(ebs: &Arc<dyn EbsApi>, volume: &Volume, snapshot: &str, file: Option<&Path>) {
    let id = readable_snapshot(&**ebs, volume, snapshot);
    let img = EbsSnapshot::open(ebs.clone(), &id, RetryPolicy::default())
        .unwrap_or_else(|e| panic!("{} via {id}: {e}", volume.id));
    assert_eq!(img.len(), volume.size_gib * GIB);
    match file {
        Some(f) => {
            let want = ec2azure::open(f, None).unwrap();
            let mut a = vec![0u8; 1 << 20];
            let mut b = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < img.len() {
                let n = img.read_at(&mut a, off).unwrap();
                b[..n].fill(0);
                if off < want.len() {
                    let k = ((want.len() - off) as usize).min(n);
                    want.read_exact_at(&mut b[..k], off).unwrap();
                }
                assert!(a[..n] == b[..n], "{}: bytes differ at {off}", volume.id);
                off += n as u64;
            }
        }
        None => assert_eq!(img.listed_blocks(), 0, "{} is zeros", volume.id),
    }
}

/// Every `Ec2Api` method against the loaded `scenario()`.
fn conformance(api: &dyn Ec2Api, ebs: Arc<dyn EbsApi>, ids: &ScenarioIds, dir: &Path, q: Quirks) {
    // DescribeInstances: all, then by id.
    let all = api.describe_instances(&[]).unwrap();
    assert_eq!(all.len(), 3, "{all:#?}");
    let by_name = |n: &str| {
        all.iter()
            .find(|i| i.name.as_deref() == Some(n))
            .unwrap_or_else(|| panic!("no instance {n}"))
            .clone()
    };
    let images = api.describe_images(&ids_of(&[WIN, RHEL, PV])).unwrap();
    let image = |id: &str| images.iter().find(|i| i.id == id).unwrap().clone();
    type Row<'a> = (
        &'a str,
        &'a str,
        Platform,
        Option<&'a str>,
        Virtualization,
        &'a str,
        &'a str,
    );
    let rows: [Row; 3] = [
        (
            "win2012",
            WIN,
            Platform::Windows,
            Some("Windows"),
            Virtualization::Hvm,
            "m5.large",
            "10.0.1.10",
        ),
        (
            "rhel67",
            RHEL,
            Platform::Linux,
            Some("Red Hat Enterprise Linux"),
            Virtualization::Hvm,
            "t3.medium",
            "10.0.1.11",
        ),
        (
            "pvbox",
            PV,
            Platform::Linux,
            None,
            Virtualization::Paravirtual,
            "t2.micro",
            "10.0.1.12",
        ),
    ];
    for (name, ami, platform, details, virt, itype, ip) in rows {
        let i = by_name(name);
        assert_eq!(i.id, ids.instance(name).unwrap());
        assert_eq!(i.image_id, ami);
        assert_eq!(i.platform, platform, "{name}");
        assert_eq!(i.architecture, Architecture::X86_64, "{name}");
        assert_eq!(i.virtualization, Some(virt), "{name}");
        assert_eq!(i.instance_type, itype);
        assert_eq!(i.private_ip.as_deref(), Some(ip));
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.root_device_name.as_deref(), Some("/dev/sda1"));
        assert_eq!(i.tags.get("Name").map(String::as_str), Some(name));
        assert!(i.subnet_id.is_some() && i.vpc_id.is_some(), "{name}");
        let devices: Vec<(String, String)> = i
            .block_devices
            .iter()
            .map(|b| (b.device.clone(), b.volume_id.clone()))
            .collect();
        let want: Vec<(String, String)> = ids.volumes[name]
            .iter()
            .map(|(d, v)| (d.clone(), v.clone()))
            .collect();
        let mut sorted = devices.clone();
        sorted.sort();
        assert_eq!(sorted, want, "{name}");
        assert_eq!(
            i.root_volume_id(),
            Some(ids.volume(name, "/dev/sda1").unwrap())
        );
        if q.no_platform_details {
            assert_eq!(i.platform_details, None);
        } else {
            assert_eq!(i.platform_details.as_deref(), details, "{name}");
        }
        if q.no_instance_boot_mode {
            assert_eq!(i.boot_mode, BootMode::Unknown);
        } else {
            assert_eq!(i.boot_mode, BootMode::LegacyBios);
        }
        // Either way the firmware is known, from the image when the instance does not say.
        assert_eq!(
            effective_boot_mode(&i, Some(&image(ami))),
            BootMode::LegacyBios
        );
        let one = api.describe_instances(std::slice::from_ref(&i.id)).unwrap();
        assert_eq!(one, vec![i.clone()]);
        assert!(instance_type_size(&i.instance_type).is_some(), "{itype}");
    }
    let win = by_name("win2012");
    assert_eq!(win.tags.get("app").map(String::as_str), Some("web"));
    let e = api
        .describe_instances(&ids_of(&["i-0123456789abcdef0"]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let c = e.cloud().unwrap();
    assert_eq!((c.service, c.status), ("ec2", Some(400)));
    assert_eq!(c.code.as_deref(), Some("InvalidInstanceID.NotFound"));
    assert!(!e.is_transient());

    // DescribeImages.
    for (id, name, platform, virt) in [
        (
            WIN,
            "Windows_Server-2012-R2_RTM-English-64Bit-Base",
            Platform::Windows,
            Virtualization::Hvm,
        ),
        (
            RHEL,
            "RHEL-6.7_HVM-20150813-x86_64-1-Hourly2-GP2",
            Platform::Linux,
            Virtualization::Hvm,
        ),
        (
            PV,
            "amzn-ami-pv-2017.09.1.20171120-x86_64-ebs",
            Platform::Linux,
            Virtualization::Paravirtual,
        ),
    ] {
        let im = image(id);
        assert_eq!(im.name.as_deref(), Some(name));
        assert_eq!(im.platform, platform, "{id}");
        assert_eq!(im.architecture, Architecture::X86_64);
        assert_eq!(im.virtualization, Some(virt), "{id}");
        assert_eq!(im.boot_mode, BootMode::LegacyBios, "{id}");
        assert_eq!(im.root_device_name.as_deref(), Some("/dev/sda1"));
    }
    assert_eq!(
        image(WIN).description.as_deref(),
        Some("Microsoft Windows Server 2012 R2 RTM 64-bit Locale English AMI")
    );
    let listed: BTreeSet<String> = api
        .describe_images(&[])
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    for id in [WIN, RHEL, PV] {
        assert!(listed.contains(id), "{id} missing from {listed:?}");
    }
    let e = api
        .describe_images(&ids_of(&["ami-0000000000000dead"]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // DescribeSecurityGroups: the ingress rules, sources resolved to ids.
    let push = ids.security_groups["windows-push"].clone();
    let ssh = ids.security_groups["linux-ssh"].clone();
    let groups = api
        .describe_security_groups(&[push.clone(), ssh.clone()])
        .unwrap();
    assert_eq!(groups.len(), 2);
    let g = groups.iter().find(|g| g.id == push).unwrap();
    assert_eq!(g.name, "windows-push");
    assert_eq!(g.description, "SMB and WMI for the push install");
    assert_eq!(g.vpc_id, win.vpc_id);
    type RuleKey = (Protocol, Option<i32>, Option<i32>, Vec<String>);
    let rules: BTreeSet<RuleKey> = g
        .ingress
        .iter()
        .map(|r| (r.protocol.clone(), r.from_port, r.to_port, r.cidrs.clone()))
        .collect();
    assert_eq!(
        rules,
        [
            (
                Protocol::Tcp,
                Some(445),
                Some(445),
                vec!["10.0.0.0/16".to_string()]
            ),
            (
                Protocol::Tcp,
                Some(135),
                Some(135),
                vec!["10.0.0.0/16".to_string(), "10.1.0.0/16".to_string()]
            ),
        ]
        .into_iter()
        .collect()
    );
    assert!(g.ingress.iter().any(|r| r.allows_tcp(445)));
    assert!(!g.ingress.iter().any(|r| r.allows_tcp(22)));
    let s = groups.iter().find(|g| g.id == ssh).unwrap();
    assert!(s.ingress.iter().any(|r| r.allows_tcp(22)));
    let from_group = s
        .ingress
        .iter()
        .find(|r| r.protocol == Protocol::All)
        .unwrap();
    assert_eq!(from_group.source_group_ids, vec![push.clone()]);
    assert!(from_group.cidrs.is_empty());
    assert_eq!(win.security_group_ids, vec![push.clone()]);
    let e = api
        .describe_security_groups(&ids_of(&["sg-0123456789abcdef0"]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // DescribeVolumes.
    let root = ids.volume("win2012", "/dev/sda1").unwrap().to_string();
    let data = ids.volume("win2012", "/dev/xvdf").unwrap().to_string();
    let pvroot = ids.volume("pvbox", "/dev/sda1").unwrap().to_string();
    let vols = api
        .describe_volumes(&[root.clone(), data.clone(), pvroot.clone()])
        .unwrap();
    let vol = |id: &str| vols.iter().find(|v| v.id == id).unwrap().clone();
    for (id, size, vtype, enc, inst, dev) in [
        (&root, 1, "gp2", false, "win2012", "/dev/sda1"),
        (&data, 1, "gp3", true, "win2012", "/dev/xvdf"),
        (&pvroot, 8, "gp2", false, "pvbox", "/dev/sda1"),
    ] {
        let v = vol(id);
        assert_eq!(
            (v.size_gib, v.volume_type.as_str(), v.encrypted),
            (size, vtype, enc),
            "{id}"
        );
        assert_eq!(v.state, "in-use");
        assert_eq!(
            v.attachments,
            vec![VolumeAttachment {
                instance_id: ids.instance(inst).unwrap().to_string(),
                device: dev.to_string(),
            }]
        );
    }
    assert!(api.describe_volumes(&[]).unwrap().len() >= 4);
    let e = api
        .describe_volumes(&ids_of(&["vol-0123456789abcdef0"]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        e.cloud().unwrap().code.as_deref(),
        Some("InvalidVolume.NotFound")
    );

    // CreateSnapshot of one volume, DescribeSnapshots, and its bytes through EBS.
    let snap = api.create_snapshot(&root, "initial replication").unwrap();
    assert!(snap.id.starts_with("snap-"), "{snap:?}");
    assert_eq!(snap.volume_id.as_deref(), Some(root.as_str()));
    assert_eq!(snap.size_gib, 1);
    let d = api
        .describe_snapshots(std::slice::from_ref(&snap.id))
        .unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].state, Some(SnapshotState::Completed));
    assert_eq!(d[0].progress, Some(100));
    assert_eq!(d[0].volume_id.as_deref(), Some(root.as_str()));
    assert_eq!(d[0].description.as_deref(), Some("initial replication"));
    assert!(d[0].start_time_ms.is_some());
    same_bytes(&ebs, &vol(&root), &snap.id, Some(&dir.join("win.raw")));
    let e = api
        .create_snapshot("vol-0123456789abcdef0", "x")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // CreateSnapshots: one per volume of the instance, one point in time.
    let set = api.create_snapshots(&win.id, "crash-consistent").unwrap();
    let got: BTreeSet<String> = set.iter().filter_map(|s| s.volume_id.clone()).collect();
    assert_eq!(got, [root.clone(), data.clone()].into_iter().collect());
    for s in &set {
        let v = s.volume_id.as_deref().unwrap();
        let file = (v == root).then(|| dir.join("win.raw"));
        same_bytes(&ebs, &vol(v), &s.id, file.as_deref());
    }
    let rhel_root = ids.volume("rhel67", "/dev/sda1").unwrap().to_string();
    let rs = api
        .create_snapshots(ids.instance("rhel67").unwrap(), "r")
        .unwrap();
    assert_eq!(rs.len(), 1);
    let rv = api
        .describe_volumes(std::slice::from_ref(&rhel_root))
        .unwrap();
    same_bytes(&ebs, &rv[0], &rs[0].id, Some(&dir.join("rhel.raw")));
    let mine: BTreeSet<String> = api
        .describe_snapshots(&[])
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    for s in set.iter().chain(&rs).chain([&snap]) {
        assert!(mine.contains(&s.id), "{} missing", s.id);
    }
    let e = api
        .describe_snapshots(&ids_of(&["snap-0123456789abcdef0"]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // StopInstances: running → stopping (or stopped), then stopped.
    let rhel = ids.instance("rhel67").unwrap().to_string();
    let c = api
        .stop_instances(std::slice::from_ref(&rhel), true)
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].instance_id, rhel);
    assert_eq!(c[0].previous, InstanceState::Running);
    assert!(
        matches!(
            c[0].current,
            InstanceState::Stopping | InstanceState::Stopped
        ),
        "{c:?}"
    );
    let after = api.describe_instances(std::slice::from_ref(&rhel)).unwrap();
    assert_eq!(after[0].state, InstanceState::Stopped);
    let e = api
        .stop_instances(&ids_of(&["i-0123456789abcdef0"]), false)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn the_fake_meets_the_expectations() {
    let d = tempfile::tempdir().unwrap();
    data_files(d.path());
    let (fake, ids) = FakeEc2::from_scenario(&scenario(), d.path()).unwrap();
    let fake = Arc::new(fake);
    let q = Quirks {
        no_instance_boot_mode: false,
        no_platform_details: false,
    };
    conformance(&*fake, fake.clone(), &ids, d.path(), q);
    // Its state, stored and reloaded, answers the same.
    let json = serde_json::to_string(&fake.state()).unwrap();
    let back = FakeEc2::from_state(serde_json::from_str(&json).unwrap());
    assert_eq!(
        back.describe_instances(&[]).unwrap(),
        fake.describe_instances(&[]).unwrap()
    );
}

#[test]
fn aws_ec2_against_moto_meets_the_expectations() {
    let d = tempfile::tempdir().unwrap();
    data_files(d.path());
    let s = scenario();
    let Some(moto) = moto_with_images(&s) else {
        return;
    };
    let url = moto.url.clone();
    let quick = RetryPolicy {
        attempts: 3,
        base_delay: std::time::Duration::from_millis(20),
        max_delay: std::time::Duration::from_millis(100),
    };
    let ec2 = AwsEc2::with_credentials(Some(&url), Some("us-east-1"), "testing", "testing")
        .unwrap()
        .with_retry(quick);
    let ebs = Arc::new(
        AwsEbs::with_credentials(Some(&url), Some("us-east-1"), "testing", "testing").unwrap(),
    );
    let ids = ec2.load_scenario(&s, d.path(), &ebs).unwrap();
    // What a pushed snapshot looks like through EC2: completed, tagged with its volume, and
    // named on the volume.
    let root = ids.volume("win2012", "/dev/sda1").unwrap().to_string();
    let v = &ec2.describe_volumes(std::slice::from_ref(&root)).unwrap()[0];
    let pushed = v.tags[READABLE_SNAPSHOT_TAG].clone();
    let ps = &ec2
        .describe_snapshots(std::slice::from_ref(&pushed))
        .unwrap()[0];
    assert_eq!(ps.state, Some(SnapshotState::Completed));
    assert_eq!(ps.tags.get(SNAPSHOT_VOLUME_TAG), Some(&root));
    assert_ne!(
        ps.volume_id.as_deref(),
        Some(root.as_str()),
        "moto's pushed snapshots name a made-up volume: if this changes, the tag may go"
    );
    // And why the tag is needed: moto cannot list a CreateSnapshot snapshot through EBS.
    let created = ec2.create_snapshot(&root, "probe").unwrap();
    assert!(ebs.list_snapshot_blocks(&created.id, None).is_err());
    let q = Quirks {
        no_instance_boot_mode: true,
        no_platform_details: true,
    };
    conformance(&ec2, ebs, &ids, d.path(), q);
}
