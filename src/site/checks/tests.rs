//! `check_machine` as a whole: the tutorial's machines pass everything; each check, broken
//! alone, is the only one to fail, with its id; JSON in the service's spelling; and on random
//! facts it never panics and returns every check once, in order.

use super::fixtures::{NOW_MS, disk, rhel, site, windows};
use super::*;
use crate::site::support::OsType;
use proptest::prelude::*;

const GIB: u64 = 1 << 30;

fn names(r: &[CheckResult]) -> Vec<&str> {
    r.iter().map(|c| c.name.as_str()).collect()
}

fn failed(r: &[CheckResult]) -> Vec<(&str, Option<u32>)> {
    r.iter()
        .filter(|c| c.is_failed())
        .map(|c| (c.name.as_str(), c.error_id))
        .collect()
}

#[test]
fn the_tutorials_windows_machine_passes_every_check() {
    let r = check_machine(&windows(), &site());
    assert_eq!(names(&r), CHECK_NAMES);
    for c in &r {
        assert_eq!(c.outcome, Outcome::Passed, "{c:?}");
        assert!(c.possible_causes.is_empty() && c.recommended_action.is_empty());
        assert_eq!(c.error_id, None);
    }
    assert!(all_passed(&r));
    assert_eq!(azure_vm_generation(&windows()), Generation::V1);
}

#[test]
fn the_rhel_machine_passes_every_check() {
    let r = check_machine(&rhel(), &site());
    assert_eq!(names(&r), CHECK_NAMES);
    assert!(r.iter().all(|c| c.outcome == Outcome::Passed), "{r:#?}");
    let by = |n: &str| r.iter().find(|c| c.name == n).map(|c| c.message.clone());
    assert_eq!(
        by("os-supported").as_deref(),
        Some(
            "\"Red Hat Enterprise Linux 6.7\" (Linux) is Red Hat Enterprise Linux 6.7 on the support list"
        )
    );
    assert_eq!(
        by("push-install-ports").as_deref(),
        Some("the security groups allow TCP 22 (SSH) from the process server 172.31.0.10")
    );
}

/// Each check broken alone fails alone, with its id.
#[test]
fn each_check_fails_alone_on_facts_made_to_fail_it() {
    type Break = fn(&mut MachineFacts, &mut SiteFacts);
    let cases: Vec<(&str, Option<u32>, Break)> = vec![
        ("os-supported", None, |f, _| {
            f.os_name = "Windows Server 2016 Datacenter".into()
        }),
        ("os-architecture", None, |f, _| {
            f.architecture = Architecture::I386
        }),
        ("virtualization-type", None, |f, _| {
            f.virtualization_type = Virtualization::Paravirtual
        }),
        ("pv-drivers", None, |f, _| {
            f.pv_drivers.push("Citrix PV".into())
        }),
        ("disk-count", None, |f, _| {
            f.disks
                .extend((0..65).map(|i| disk(&format!("xvd{i}"), 2 * GIB, false)))
        }),
        ("os-disk-size", None, |f, _| {
            f.disks[0].size_bytes = 3072 * GIB
        }),
        ("data-disk-size", None, |f, _| {
            f.disks.push(disk("xvdf", 9000 * GIB, false))
        }),
        ("disk-minimum-size", None, |f, _| {
            f.disks.push(disk("xvdf", GIB, false))
        }),
        ("disk-sector-size", None, |f, _| {
            f.disks[0].physical_sector_size = 4096
        }),
        ("boot-disk", Some(95310), |f, _| {
            f.disks[0].boot = DiskBoot::Mbr {
                boot_signature: false,
            }
        }),
        ("boot-mode", None, |f, _| f.boot_mode = BootMode::Uefi),
        ("uefi-generation-2", None, |f, _| {
            f.os_name = "Windows Server 2008 R2 SP1 Datacenter".into();
            f.boot_mode = BootMode::Uefi;
            f.disks[0].boot = DiskBoot::GptWithEsp;
        }),
        ("vm-name", None, |_, s| {
            s.target.vm_name = Some("web_01".into())
        }),
        ("computer-name", None, |f, _| {
            f.name = "win2012r2-webserver".into()
        }),
        ("storage-account-name", None, |_, s| {
            s.target.storage_account = "AwsMigrated".into()
        }),
        ("push-install-account", Some(95107), |f, _| {
            if let Some(PushAccount::Windows { is_admin, .. }) = &mut f.account {
                *is_admin = false;
            }
        }),
        ("push-install-ports", Some(95117), |f, _| {
            f.network.ingress.truncate(2)
        }),
        ("process-server-ports", None, |f, _| {
            f.network.process_server_reachable_443 = false
        }),
        ("registration-key", None, |_, s| {
            s.configuration_server_registered = false;
            s.registration_key_expires_ms = Some(NOW_MS - 1);
        }),
        ("policy-association", Some(78253), |_, s| {
            s.policy_associated = false
        }),
    ];
    let mut covered: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for (name, id, brk) in cases {
        let (mut f, mut s) = (windows(), site());
        brk(&mut f, &mut s);
        let r = check_machine(&f, &s);
        assert_eq!(failed(&r), [(name, id)], "breaking {name}: {r:#?}");
        let c = r.iter().find(|c| c.name == name).expect("present");
        assert!(
            !c.possible_causes.is_empty() && !c.recommended_action.is_empty(),
            "{c:?}"
        );
        assert!(
            c.message.contains("; "),
            "{name}: found; expected: {}",
            c.message
        );
    }
    // The Linux-only check, on the Linux machine.
    let mut f = rhel();
    f.disks[0].boot = DiskBoot::GptWithoutEsp;
    let r = check_machine(&f, &site());
    assert_eq!(
        failed(&r),
        [("boot-disk", Some(95310)), ("linux-boot-disk-gpt", None)],
        "a GPT boot disk without an ESP is neither bootable nor allowed on Linux"
    );
    let mut f = rhel();
    f.account = Some(PushAccount::Linux {
        user: "ec2-user".into(),
        is_root: false,
    });
    assert_eq!(
        failed(&check_machine(&f, &site())),
        [("push-install-account", Some(95108))]
    );
    covered.push("linux-boot-disk-gpt");
    covered.sort_unstable();
    let mut all = CHECK_NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(covered, all, "every check has a failing case");
}

#[test]
fn a_uefi_windows_2012_machine_becomes_generation_2_with_a_warning() {
    let mut f = windows();
    f.boot_mode = BootMode::Uefi;
    f.disks[0].boot = DiskBoot::GptWithEsp;
    f.disks[0].size_bytes = 3000 * GIB;
    assert_eq!(azure_vm_generation(&f), Generation::V2);
    let r = check_machine(&f, &site());
    assert!(all_passed(&r), "{r:#?}");
    let warnings: Vec<&str> = r
        .iter()
        .filter(|c| c.outcome == Outcome::Warning)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(warnings, ["uefi-generation-2"]);
}

#[test]
fn the_generation_follows_the_firmware_and_the_disk() {
    let cases = [
        (
            BootMode::LegacyBios,
            DiskBoot::Mbr {
                boot_signature: true,
            },
            Generation::V1,
        ),
        (BootMode::Uefi, DiskBoot::GptWithEsp, Generation::V2),
        (BootMode::Unknown, DiskBoot::GptWithEsp, Generation::V2),
        (
            BootMode::Unknown,
            DiskBoot::Mbr {
                boot_signature: true,
            },
            Generation::V1,
        ),
        (BootMode::LegacyBios, DiskBoot::GptWithEsp, Generation::V1),
        (BootMode::Uefi, DiskBoot::GptWithoutEsp, Generation::V1),
        (BootMode::Uefi, DiskBoot::None, Generation::V1),
    ];
    for (mode, boot, want) in cases {
        let mut f = windows();
        f.boot_mode = mode;
        f.disks[0].boot = boot;
        assert_eq!(azure_vm_generation(&f), want, "{mode:?} {boot:?}");
    }
    let mut f = windows();
    f.disks.clear();
    assert_eq!(azure_vm_generation(&f), Generation::V1);
}

#[test]
fn results_and_facts_are_json_in_the_services_spelling() {
    let mut s = site();
    s.policy_associated = false;
    let r = check_machine(&windows(), &s);
    let v = serde_json::to_value(&r[20]).unwrap();
    assert_eq!(v["name"], "policy-association");
    assert_eq!(v["outcome"], "Failed");
    assert_eq!(v["errorCode"], "78253");
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("Protection couldn't")
    );
    assert!(v["possibleCauses"].is_string() && v["recommendedAction"].is_string());
    let back: CheckResult = serde_json::from_value(v).unwrap();
    assert_eq!(back, r[20]);
    let numeric: CheckResult = serde_json::from_str(
        r#"{"name":"x","outcome":"Passed","errorCode":95107,"errorMessage":"m",
            "possibleCauses":"","recommendedAction":""}"#,
    )
    .unwrap();
    assert_eq!(numeric.error_id, Some(95107));
    assert_eq!(
        serde_json::to_value(&r[0]).unwrap()["errorCode"],
        serde_json::Value::Null
    );

    let f = serde_json::to_value(windows()).unwrap();
    assert_eq!(f["osType"], "Windows");
    assert_eq!(f["architecture"], "x86_64");
    assert_eq!(f["virtualizationType"], "hvm");
    assert_eq!(f["bootMode"], "legacy-bios");
    assert_eq!(
        f["disks"][0]["boot"],
        serde_json::json!({"layout": "mbr", "bootSignature": true})
    );
    assert_eq!(f["account"]["kind"], "windows");
    assert_eq!(f["account"]["localAccountTokenFilterPolicy"], true);
    assert_eq!(f["network"]["processServerIp"], "172.31.0.10");
    let back: MachineFacts = serde_json::from_value(f).unwrap();
    assert_eq!(back, windows());
    let s = serde_json::to_value(site()).unwrap();
    assert_eq!(s["target"]["storageAccount"], "awsmigrated2017");
    let mut no_support = s.clone();
    no_support.as_object_mut().unwrap().remove("support");
    let back: SiteFacts = serde_json::from_value(no_support).unwrap();
    assert_eq!(
        back,
        site(),
        "the support matrix defaults to the tutorial's"
    );
}

#[test]
fn sizes_read_plainly() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(3072), "3,072");
    assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    assert_eq!(gib(3072 * GIB), "3,072 GiB");
    assert_eq!(gib(GIB + GIB / 2), "1.50 GiB (1610612736 bytes)");
    assert_eq!(mib(GIB), "1,024 MiB");
    assert_eq!(
        gib(u64::MAX),
        "17,179,869,183.99 GiB (18446744073709551615 bytes)"
    );
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,70}",
        ".{0,40}",
        Just("Windows Server 2012 R2 Datacenter".to_string()),
        Just("Red Hat Enterprise Linux 6.7".to_string()),
        Just("Windows Server 2008 R2 Service Pack".to_string()),
    ]
}

fn disks() -> impl Strategy<Value = Vec<DiskFacts>> {
    let boot = prop_oneof![
        any::<bool>().prop_map(|b| DiskBoot::Mbr { boot_signature: b }),
        Just(DiskBoot::GptWithEsp),
        Just(DiskBoot::GptWithoutEsp),
        Just(DiskBoot::None),
    ];
    let sector = prop_oneof![Just(512u32), Just(4096), any::<u32>()];
    let size = prop_oneof![any::<u64>(), (0u64..10_000).prop_map(|g| g << 30)];
    let d = (text(), size, sector.clone(), sector, any::<bool>(), boot)
        .prop_map(|(name, size_bytes, l, p, is_os_disk, boot)| DiskFacts {
            name,
            size_bytes,
            logical_sector_size: l,
            physical_sector_size: p,
            is_os_disk,
            boot,
        })
        .boxed();
    prop_oneof![
        proptest::collection::vec(d.clone(), 0..4),
        proptest::collection::vec(d, 60..70),
    ]
}

fn rules() -> impl Strategy<Value = Vec<IngressRule>> {
    let protocol = prop_oneof![
        Just("tcp".to_string()),
        Just("-1".to_string()),
        Just("6".to_string()),
        Just("udp".to_string()),
        ".{0,4}",
    ];
    let source = prop_oneof![
        Just("0.0.0.0/0".to_string()),
        Just("172.31.0.0/16".to_string()),
        Just("::/0".to_string()),
        (any::<std::net::Ipv4Addr>(), 0u32..40).prop_map(|(a, l)| format!("{a}/{l}")),
        ".{0,20}",
    ];
    let rule = (
        protocol,
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<i32>()),
        proptest::collection::vec(source, 0..3),
    )
        .prop_map(|(protocol, from_port, to_port, sources)| IngressRule {
            protocol,
            from_port,
            to_port,
            sources,
        });
    proptest::collection::vec(rule, 0..5)
}

fn account() -> impl Strategy<Value = Option<PushAccount>> {
    proptest::option::of(prop_oneof![
        (text(), any::<bool>()).prop_map(|(user, is_root)| PushAccount::Linux { user, is_root }),
        (
            text(),
            proptest::option::of(text()),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(user, domain, is_admin, p)| PushAccount::Windows {
                user,
                domain,
                is_admin,
                local_account_token_filter_policy: p,
            }),
    ])
}

fn machine() -> impl Strategy<Value = MachineFacts> {
    let os = prop_oneof![Just(OsType::Windows), Just(OsType::Linux)];
    let arch = prop_oneof![
        Just(Architecture::X86_64),
        Just(Architecture::Arm64),
        Just(Architecture::I386)
    ];
    let virt = prop_oneof![Just(Virtualization::Hvm), Just(Virtualization::Paravirtual)];
    let mode = prop_oneof![
        Just(BootMode::LegacyBios),
        Just(BootMode::Uefi),
        Just(BootMode::Unknown)
    ];
    let pv = proptest::collection::vec(
        prop_oneof![
            Just("AWS PV".to_string()),
            Just("Citrix PV".to_string()),
            Just("Red Hat PV".to_string()),
            ".{0,10}",
        ],
        0..4,
    );
    let network = (
        rules(),
        any::<std::net::IpAddr>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(ingress, ip, a, b)| NetworkFacts {
            ingress,
            process_server_ip: ip,
            process_server_reachable_443: a,
            process_server_reachable_9443: b,
        });
    (
        (text(), os, text(), arch, virt, pv, mode),
        (disks(), account(), network),
    )
        .prop_map(
            |(
                (name, os_type, os_name, architecture, virtualization_type, pv_drivers, boot_mode),
                (disks, account, network),
            )| MachineFacts {
                name,
                os_type,
                os_name,
                architecture,
                virtualization_type,
                pv_drivers,
                boot_mode,
                disks,
                account,
                network,
            },
        )
}

fn site_facts() -> impl Strategy<Value = SiteFacts> {
    (
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        any::<bool>(),
        text(),
        proptest::option::of(text()),
    )
        .prop_map(
            |(now_ms, key, registered, associated, storage, vm)| SiteFacts {
                now_ms,
                registration_key_expires_ms: key,
                configuration_server_registered: registered,
                policy_associated: associated,
                target: TargetFacts {
                    storage_account: storage,
                    vm_name: vm,
                },
                support: crate::site::support::SupportMatrix::default(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// On any facts: no panic, every check once in order, a failure always says why and what
    /// to do, and only failures carry an error id.
    #[test]
    fn every_check_runs_once_in_order_on_any_facts(f in machine(), s in site_facts()) {
        let r = check_machine(&f, &s);
        prop_assert_eq!(names(&r), CHECK_NAMES.to_vec());
        for c in &r {
            prop_assert!(!c.message.is_empty());
            match c.outcome {
                Outcome::Passed => {
                    prop_assert!(c.error_id.is_none());
                    prop_assert!(c.possible_causes.is_empty() && c.recommended_action.is_empty());
                }
                Outcome::Failed | Outcome::Warning => {
                    prop_assert!(!c.possible_causes.is_empty() && !c.recommended_action.is_empty());
                }
            }
        }
        prop_assert_eq!(all_passed(&r), r.iter().all(|c| !c.is_failed()));
        let g = azure_vm_generation(&f);
        prop_assert_eq!(
            g == Generation::V2,
            f.boot_mode != BootMode::LegacyBios
                && f.os_disk().is_some_and(|d| d.boot == DiskBoot::GptWithEsp)
        );
        // The JSON round-trips.
        let json = serde_json::to_string(&r).unwrap();
        let back: Vec<CheckResult> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, r);
    }
}
