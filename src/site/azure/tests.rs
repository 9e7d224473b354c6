//! The Azure side's rules, one test per rule, and a property test of IP allocation against a
//! simple model.

use super::*;
use crate::cloud::pageblob::{BlobName, PageBlobStore};
use crate::error::ErrorKind;
use crate::site::store::Store;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const SUB: &str = "sub-1";

fn site() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("site.db")).unwrap();
    s.tx(|t| {
        create_subscription(t, SUB, "Pay-As-You-Go")?;
        create_resource_group(t, SUB, "migrationRG", "West Europe")?;
        Ok(())
    })
    .unwrap();
    (dir, s)
}

fn code(e: &crate::Error) -> &str {
    arm_code(e).unwrap_or("(not an ARM error)")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn locations_are_normalised_and_unknown_ones_listed() {
    for s in ["West Europe", "westeurope", "WestEurope", " west europe "] {
        assert_eq!(location(s).unwrap().name, "westeurope", "{s}");
    }
    assert_eq!(location("westeurope").unwrap().display_name, "West Europe");
    let e = location("Atlantis").unwrap_err();
    assert_eq!(code(&e), "LocationNotAvailableForResourceType");
    assert!(e.to_string().contains("westeurope") && e.to_string().contains("eastus2"));
    for l in LOCATIONS {
        assert!(location(l.paired_region).is_ok(), "{l:?}");
    }
}

#[test]
fn resource_group_names_follow_azure_and_are_unique_in_any_case() {
    let (_d, mut s) = site();
    s.tx(|t| {
        for ok in ["a", "rg_(1).x-y", &"r".repeat(90), "grüppe"] {
            check_resource_group_name(ok)?;
        }
        for bad in ["", "ends.", "has space", "slash/", &"r".repeat(91)] {
            let e = check_resource_group_name(bad).unwrap_err();
            assert_eq!(code(&e), "InvalidResourceGroup", "{bad:?}");
        }
        let e = create_resource_group(t, SUB, "MIGRATIONrg", "westeurope").unwrap_err();
        assert_eq!(
            (code(&e), e.kind()),
            ("ResourceGroupExists", ErrorKind::Conflict)
        );
        let g = resource_group(t, SUB, "MigrationRg")?;
        assert_eq!(g.name, "migrationRG");
        assert_eq!(g.id, "/subscriptions/sub-1/resourceGroups/migrationRG");
        assert_eq!(g.properties.location, "westeurope");
        let e = create_resource_group(t, "other", "x", "westeurope").unwrap_err();
        assert_eq!(code(&e), "SubscriptionNotFound");
        let e = resource_group(t, SUB, "nope").unwrap_err();
        assert_eq!(
            (code(&e), e.kind()),
            ("ResourceGroupNotFound", ErrorKind::NotFound)
        );
        assert_eq!(list_resource_groups(t, SUB)?.len(), 1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn storage_account_names_are_checked_unique_in_azure_and_ra_grs_by_default() {
    let (_d, mut s) = site();
    s.tx(|t| {
        create_resource_group(t, SUB, "otherRG", "eastus")?;
        let a = create_storage_account(t, SUB, "migrationRG", "awsmigrated2017", None, None)?;
        let p = &a.properties;
        assert_eq!(p.sku.name, Replication::StandardRagrs);
        assert_eq!(p.sku.name.name(), "Standard_RAGRS");
        assert_eq!(
            (p.kind.as_str(), p.location.as_str()),
            ("StorageV2", "westeurope")
        );
        assert_eq!(p.secondary_location.as_deref(), Some("northeurope"));
        assert_eq!(
            p.primary_endpoints.blob,
            "https://awsmigrated2017.blob.core.windows.net/"
        );
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["sku"]["name"], "Standard_RAGRS");
        assert_eq!(json["primaryEndpoints"]["blob"], p.primary_endpoints.blob);
        for bad in ["ab", "AwsMigrated", "aws-migrated", &"a".repeat(25)] {
            let e = create_storage_account(t, SUB, "otherRG", bad, None, None).unwrap_err();
            assert_eq!(code(&e), "AccountNameInvalid", "{bad}");
        }
        // Unique across the site: another group, even another subscription.
        let e =
            create_storage_account(t, SUB, "otherRG", "awsmigrated2017", None, None).unwrap_err();
        assert_eq!(
            (code(&e), e.kind()),
            ("StorageAccountAlreadyTaken", ErrorKind::Conflict)
        );
        create_subscription(t, "sub-2", "Other")?;
        create_resource_group(t, "sub-2", "g", "eastus")?;
        assert!(create_storage_account(t, "sub-2", "g", "awsmigrated2017", None, None).is_err());
        // Taken by someone else.
        set_taken_storage_account_names(t, &["Contoso".into()])?;
        let e = create_storage_account(t, SUB, "otherRG", "contoso", None, None).unwrap_err();
        assert_eq!(code(&e), "StorageAccountAlreadyTaken");
        let a = check_storage_account_name_availability(t, "contoso")?;
        assert_eq!(a.reason.as_deref(), Some("AlreadyExists"));
        assert!(check_storage_account_name_availability(t, "free123")?.name_available);
        let lrs = create_storage_account(
            t,
            SUB,
            "otherRG",
            "lrs123",
            Some("West US"),
            Some(Replication::parse("lrs")?),
        )?;
        assert_eq!(lrs.properties.sku.name, Replication::StandardLrs);
        assert_eq!(lrs.properties.location, "westus");
        assert!(lrs.properties.secondary_location.is_none());
        assert_eq!(Replication::parse("RA-GRS")?, Replication::StandardRagrs);
        assert_eq!(Replication::parse("premium_lrs")?, Replication::PremiumLrs);
        assert_eq!(code(&Replication::parse("GZRS").unwrap_err()), "InvalidSku");
        assert_eq!(list_storage_accounts(t, SUB, None)?.len(), 2);
        assert_eq!(list_storage_accounts(t, SUB, Some("otherRG"))?.len(), 1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn deleting_a_storage_account_or_its_group_deletes_its_blobs() {
    let (d, mut s) = site();
    let root = d.path().join("blobs");
    let id = s
        .tx(|t| create_storage_account(t, SUB, "migrationRG", "acct1", None, None).map(|a| a.id))
        .unwrap();
    let blobs = account_blobs(&root, "acct1");
    blobs.create_container("vhds").unwrap();
    blobs.create(&BlobName::new("vhds", "a.vhd"), 4096).unwrap();
    assert!(root.join("acct1/vhds").is_dir());
    s.tx(|t| delete_storage_account(t, &id, &root)).unwrap();
    assert!(!root.join("acct1").exists());
    assert!(
        s.tx(|t| find_storage_account(t, "acct1"))
            .unwrap()
            .is_none()
    );
    // The name is free again.
    s.tx(|t| create_storage_account(t, SUB, "migrationRG", "acct1", None, None).map(|_| ()))
        .unwrap();
    let blobs = account_blobs(&root, "acct1");
    blobs.create_container("vhds").unwrap();
    s.tx(|t| delete_resource_group(t, SUB, "migrationRG", &root))
        .unwrap();
    assert!(!root.join("acct1").exists());
    assert!(s.tx(|t| list_resource_groups(t, SUB)).unwrap().is_empty());
    let a = StorageAccount {
        primary_endpoints: Endpoints {
            blob: "https://acct1.blob.core.windows.net/".into(),
        },
        ..s.tx(|t| {
            create_resource_group(t, SUB, "g", "westeurope")?;
            create_storage_account(t, SUB, "g", "acct2", None, None)
        })
        .unwrap()
        .properties
    };
    let uri = blob_uri(&a, &BlobName::new("vhds", "x/y.vhd"));
    assert_eq!(uri, "https://acct1.blob.core.windows.net/vhds/x/y.vhd");
    assert_eq!(
        parse_blob_uri(&uri).unwrap(),
        ("acct1".to_string(), BlobName::new("vhds", "x/y.vhd"))
    );
    assert!(parse_blob_uri("https://acct1.example.com/vhds/x").is_err());
    assert!(parse_blob_uri("https://acct1.blob.core.windows.net/vhds").is_err());
}

#[test]
fn cidrs_parse_strictly_and_relate() {
    let c = Cidr::parse("10.0.0.0/24").unwrap();
    assert_eq!((c.to_string(), c.size()), ("10.0.0.0/24".to_string(), 256));
    assert_eq!(
        code(&Cidr::parse("10.0.0.1/24").unwrap_err()),
        "InvalidAddressPrefix"
    );
    assert!(
        Cidr::parse("10.0.0.1/24")
            .unwrap_err()
            .to_string()
            .contains("10.0.0.0/24")
    );
    for bad in [
        "10.0.0.0",
        "10.0.0/24",
        "10.0.0.0/33",
        "10.0.0.0/x",
        "a.b.c.d/8",
    ] {
        assert_eq!(
            code(&Cidr::parse(bad).unwrap_err()),
            "InvalidAddressPrefixFormat",
            "{bad}"
        );
    }
    let big = Cidr::parse("10.0.0.0/16").unwrap();
    assert!(big.covers(c) && !c.covers(big) && big.overlaps(c) && c.overlaps(big));
    let next = Cidr::parse("10.0.1.0/24").unwrap();
    assert!(!c.overlaps(next) && !next.overlaps(c));
    assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().size(), 1 << 32);
    let usable: Vec<Ipv4Addr> = Cidr::parse("10.0.0.0/29").unwrap().usable().collect();
    assert_eq!(usable, [ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.6")]);
}

#[test]
fn networks_get_the_portal_defaults_and_subnets_are_checked() {
    let (_d, mut s) = site();
    s.tx(|t| {
        let v = create_virtual_network(
            t,
            SUB,
            "migrationRG",
            "myMigrationNetwork",
            &VnetSpec::default(),
        )?;
        assert_eq!(v.properties.address_space.address_prefixes, ["10.0.0.0/16"]);
        assert_eq!(v.properties.location, "westeurope");
        let subs = list_subnets(t, &v.id)?;
        assert_eq!(subs.len(), 1);
        assert_eq!(
            (
                subs[0].name.as_str(),
                subs[0].properties.address_prefix.as_str()
            ),
            ("default", "10.0.0.0/24")
        );
        assert_eq!(subs[0].id, format!("{}/subnets/default", v.id));
        let e = add_subnet(t, &v.id, "out", "10.1.0.0/24").unwrap_err();
        assert_eq!(code(&e), "NetcfgInvalidSubnet");
        let e = add_subnet(t, &v.id, "over", "10.0.0.128/25").unwrap_err();
        assert_eq!(code(&e), "NetcfgSubnetRangesOverlap");
        let e = add_subnet(t, &v.id, "tiny", "10.0.1.0/30").unwrap_err();
        assert_eq!(code(&e), "InvalidAddressPrefix");
        let e = add_subnet(t, &v.id, "DEFAULT", "10.0.2.0/24").unwrap_err();
        assert_eq!(code(&e), "ResourceExists");
        add_subnet(t, &v.id, "smallest", "10.0.1.0/29")?;
        let e = create_virtual_network(
            t,
            SUB,
            "migrationRG",
            "MyMigrationNetwork",
            &VnetSpec::default(),
        )
        .unwrap_err();
        assert_eq!(code(&e), "ResourceExists");
        let spec = VnetSpec {
            address_prefixes: vec!["10.0.0.0/16".into(), "10.0.128.0/17".into()],
            ..VnetSpec::default()
        };
        let e = create_virtual_network(t, SUB, "migrationRG", "two", &spec).unwrap_err();
        assert_eq!(code(&e), "VnetAddressSpacesOverlap");
        let spec = VnetSpec {
            address_prefixes: vec!["169.254.0.0/24".into()],
            ..VnetSpec::default()
        };
        assert!(create_virtual_network(t, SUB, "migrationRG", "ll", &spec).is_err());
        let spec = VnetSpec {
            address_prefixes: vec!["172.16.0.0/16".into(), "192.168.0.0/24".into()],
            subnets: vec![
                ("web".into(), "172.16.1.0/24".into()),
                ("db".into(), "192.168.0.0/28".into()),
            ],
            ..VnetSpec::default()
        };
        let w = create_virtual_network(t, SUB, "migrationRG", "wave", &spec)?;
        assert_eq!(list_subnets(t, &w.id)?.len(), 2);
        assert_eq!(list_virtual_networks(t, SUB, "migrationRG")?.len(), 2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn addresses_skip_the_reserved_ones_and_fall_to_the_next_free() {
    let c = Cidr::parse("10.0.0.0/24").unwrap();
    let mut used = BTreeSet::new();
    let (a, m) = allocate(c, &used, IpRequest::Dynamic).unwrap();
    assert_eq!((a, m), (ip("10.0.0.4"), AllocationMethod::Dynamic));
    for r in ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.255"] {
        let e = allocate(c, &used, IpRequest::Static(ip(r))).unwrap_err();
        assert_eq!(code(&e), "PrivateIPAddressInReservedRange", "{r}");
    }
    let e = allocate(c, &used, IpRequest::Static(ip("10.0.1.9"))).unwrap_err();
    assert_eq!(code(&e), "PrivateIPAddressNotInSubnet");
    used.insert(ip("10.0.0.10"));
    let e = allocate(c, &used, IpRequest::Static(ip("10.0.0.10"))).unwrap_err();
    assert_eq!(code(&e), "PrivateIPAddressInUse");
    assert_eq!(
        allocate(c, &used, IpRequest::Preferred(ip("10.0.0.9"))).unwrap(),
        (ip("10.0.0.9"), AllocationMethod::Static)
    );
    used.insert(ip("10.0.0.11"));
    assert_eq!(
        allocate(c, &used, IpRequest::Preferred(ip("10.0.0.10"))).unwrap(),
        (ip("10.0.0.12"), AllocationMethod::Dynamic)
    );
    // A reserved address asked for gets the next usable one; the broadcast wraps to the lowest.
    assert_eq!(
        allocate(c, &used, IpRequest::Preferred(ip("10.0.0.1")))
            .unwrap()
            .0,
        ip("10.0.0.4")
    );
    assert_eq!(
        allocate(c, &used, IpRequest::Preferred(ip("10.0.0.255")))
            .unwrap()
            .0,
        ip("10.0.0.4")
    );
    // An AWS address outside the subnet gets the lowest free one.
    assert_eq!(
        allocate(c, &used, IpRequest::Preferred(ip("172.31.5.9"))).unwrap(),
        (ip("10.0.0.4"), AllocationMethod::Dynamic)
    );
    let tiny = Cidr::parse("10.0.0.0/29").unwrap();
    let full: BTreeSet<Ipv4Addr> = tiny.usable().collect();
    for req in [IpRequest::Dynamic, IpRequest::Preferred(ip("10.0.0.5"))] {
        assert_eq!(
            code(&allocate(tiny, &full, req).unwrap_err()),
            "SubnetIsFull"
        );
    }
}

#[test]
fn nics_hold_addresses_until_deleted_and_a_full_subnet_refuses() {
    let (_d, mut s) = site();
    s.tx(|t| {
        let spec = VnetSpec {
            subnets: vec![("small".into(), "10.0.0.0/29".into())],
            ..VnetSpec::default()
        };
        let v = create_virtual_network(t, SUB, "migrationRG", "net", &spec)?;
        let sn = subnet(t, &v.id, "small")?.id;
        let a = create_network_interface(
            t,
            SUB,
            "migrationRG",
            "a",
            &sn,
            IpRequest::Preferred(ip("10.0.0.5")),
        )?;
        assert_eq!(a.properties.private_ip(), Some(ip("10.0.0.5")));
        let json = serde_json::to_value(&a.properties).unwrap();
        let c = &json["ipConfigurations"][0]["properties"];
        assert_eq!(
            (
                c["privateIPAddress"].as_str(),
                c["privateIPAllocationMethod"].as_str()
            ),
            (Some("10.0.0.5"), Some("Static"))
        );
        assert_eq!(c["subnet"]["id"], sn.as_str());
        let b = create_network_interface(
            t,
            SUB,
            "migrationRG",
            "b",
            &sn,
            IpRequest::Preferred(ip("10.0.0.5")),
        )?;
        assert_eq!(b.properties.private_ip(), Some(ip("10.0.0.6")));
        let c = create_network_interface(t, SUB, "migrationRG", "c", &sn, IpRequest::Dynamic)?;
        assert_eq!(c.properties.private_ip(), Some(ip("10.0.0.4")));
        let e = create_network_interface(t, SUB, "migrationRG", "d", &sn, IpRequest::Dynamic)
            .unwrap_err();
        assert_eq!(code(&e), "SubnetIsFull");
        let e = create_network_interface(t, SUB, "migrationRG", "A", &sn, IpRequest::Dynamic)
            .unwrap_err();
        assert_eq!(code(&e), "ResourceExists");
        let e = delete_subnet(t, &sn).unwrap_err();
        assert_eq!(code(&e), "InUseSubnetCannotBeDeleted");
        assert_eq!(
            code(&delete_virtual_network(t, &v.id).unwrap_err()),
            "InUseSubnetCannotBeDeleted"
        );
        delete_network_interface(t, &a.id)?;
        let d = create_network_interface(
            t,
            SUB,
            "migrationRG",
            "d",
            &sn,
            IpRequest::Static(ip("10.0.0.5")),
        )?;
        assert_eq!(d.properties.private_ip(), Some(ip("10.0.0.5")));
        for n in [&b.id, &c.id, &d.id] {
            delete_network_interface(t, n)?;
        }
        delete_virtual_network(t, &v.id)?;
        assert!(list_virtual_networks(t, SUB, "migrationRG")?.is_empty());
        Ok(())
    })
    .unwrap();
}

/// A storage account, a network, a NIC and an imported OS disk in `migrationRG`.
fn estate(t: &Tx, name: &str, generation: HyperVGeneration) -> Result<(String, String)> {
    let account = match find_storage_account(t, "awsmigrated2017")? {
        Some(a) => a,
        None => create_storage_account(t, SUB, "migrationRG", "awsmigrated2017", None, None)?,
    };
    let vnet = match virtual_network(t, SUB, "migrationRG", "myMigrationNetwork") {
        Ok(v) => v,
        Err(_) => create_virtual_network(
            t,
            SUB,
            "migrationRG",
            "myMigrationNetwork",
            &VnetSpec::default(),
        )?,
    };
    let sn = subnet(t, &vnet.id, "default")?;
    let nic = create_network_interface(
        t,
        SUB,
        "migrationRG",
        &format!("{name}-nic"),
        &sn.id,
        IpRequest::Preferred(ip("10.0.0.10")),
    )?;
    let uri = blob_uri(
        &account.properties,
        &BlobName::new("vhds", format!("{name}.vhd")),
    );
    let disk = import_disk(
        t,
        SUB,
        "migrationRG",
        &DiskImport {
            name: format!("{name}-osdisk"),
            sku: "Standard_LRS".into(),
            source_uri: uri,
            storage_account_id: account.id,
            blob_len: (30 << 30) + 512,
            source_root: "ab".repeat(32),
            hyper_v_generation: generation,
            os_type: Some("Windows".into()),
        },
    )?;
    Ok((nic.id, disk.id))
}

fn spec(name: &str, size: &str, nic: &str, disk: &str) -> VmSpec {
    VmSpec {
        name: name.into(),
        size: size.into(),
        nic_ids: vec![nic.into()],
        os_disk_id: disk.into(),
        data_disk_ids: Vec::new(),
        tags: Tags::new(),
        delete_with_vm: false,
    }
}

#[test]
fn disks_are_imported_from_blobs_with_their_digest() {
    let (_d, mut s) = site();
    s.tx(|t| {
        let (_, d) = estate(t, "web", HyperVGeneration::V1)?;
        let d = disk(t, &d)?;
        let p = &d.properties;
        assert_eq!((p.disk_size_gb, p.disk_size_bytes), (30, 30 << 30));
        assert_eq!(p.creation_data.create_option, "Import");
        assert_eq!(
            p.creation_data.source_uri,
            "https://awsmigrated2017.blob.core.windows.net/vhds/web.vhd"
        );
        assert_eq!(p.source_root, "ab".repeat(32));
        assert_eq!(p.disk_state, "Unattached");
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["diskSizeGB"], 30);
        assert_eq!(json["hyperVGeneration"], "V1");
        assert_eq!(
            json["creationData"]["sourceUri"],
            p.creation_data.source_uri.as_str()
        );
        let mut bad = DiskImport {
            name: "bad".into(),
            sku: "Standard_LRS".into(),
            source_uri: p.creation_data.source_uri.clone(),
            storage_account_id: p.creation_data.storage_account_id.clone(),
            blob_len: (30 << 30) + 1024,
            source_root: String::new(),
            hyper_v_generation: HyperVGeneration::V1,
            os_type: None,
        };
        assert_eq!(
            code(&import_disk(t, SUB, "migrationRG", &bad).unwrap_err()),
            "InvalidVhd"
        );
        bad.blob_len = (1 << 30) + 512;
        bad.source_uri = "https://someoneelse.blob.core.windows.net/vhds/x.vhd".into();
        assert_eq!(
            code(&import_disk(t, SUB, "migrationRG", &bad).unwrap_err()),
            "InvalidParameter"
        );
        bad.source_uri = p.creation_data.source_uri.clone();
        bad.sku = "Ultra".into();
        assert_eq!(
            code(&import_disk(t, SUB, "migrationRG", &bad).unwrap_err()),
            "InvalidParameter"
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn vms_check_size_generation_and_attachments() {
    let (_d, mut s) = site();
    s.tx(|t| {
        let (nic, d) = estate(t, "web", HyperVGeneration::V2)?;
        let e = create_virtual_machine(
            t,
            SUB,
            "migrationRG",
            &spec("web", "Standard_A2_v2", &nic, &d),
        )
        .unwrap_err();
        assert_eq!(code(&e), "BadRequest");
        assert!(e.to_string().contains("Generation '2'"), "{e}");
        let e =
            create_virtual_machine(t, SUB, "migrationRG", &spec("web", "Standard_Q1", &nic, &d))
                .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = create_virtual_machine(
            t,
            SUB,
            "migrationRG",
            &spec("web-", "Standard_B2s", &nic, &d),
        )
        .unwrap_err();
        assert_eq!(code(&e), "InvalidParameter");
        let size = choose_size(2, 4096, 2)?.name;
        let vm = create_virtual_machine(t, SUB, "migrationRG", &spec("web", size, &nic, &d))?;
        let p = &vm.properties;
        assert_eq!(
            (
                p.hardware_profile.vm_size.as_str(),
                p.power_state,
                p.hyper_v_generation
            ),
            ("Standard_B2s", PowerState::Running, HyperVGeneration::V2)
        );
        assert_eq!(p.storage_profile.os_disk.managed_disk.id, d);
        assert_eq!(
            disk(t, &d)?.properties.managed_by.as_deref(),
            Some(vm.id.as_str())
        );
        assert_eq!(
            network_interface(t, &nic)?
                .properties
                .virtual_machine
                .as_ref()
                .map(|r| r.id.as_str()),
            Some(vm.id.as_str())
        );
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["hardwareProfile"]["vmSize"], "Standard_B2s");
        assert_eq!(
            json["networkProfile"]["networkInterfaces"][0]["id"],
            nic.as_str()
        );
        assert_eq!(json["powerState"], "running");
        let view = instance_view(p);
        assert_eq!(view.statuses[1].code, "PowerState/running");
        // The NIC and the disk serve one VM and cannot go while they do.
        let e = create_virtual_machine(t, SUB, "migrationRG", &spec("web2", size, &nic, &d))
            .unwrap_err();
        assert_eq!(code(&e), "OperationNotAllowed");
        assert_eq!(
            code(&delete_network_interface(t, &nic).unwrap_err()),
            "NicInUse"
        );
        assert_eq!(
            code(&delete_disk(t, &d).unwrap_err()),
            "OperationNotAllowed"
        );
        let vm = set_power_state(t, &vm.id, PowerState::Deallocated)?;
        assert_eq!(
            instance_view(&vm.properties).statuses[1].display_status,
            "VM deallocated"
        );
        assert_eq!(list_virtual_machines(t, SUB, "migrationRG")?.len(), 1);
        // Deleting without cascade detaches and keeps them.
        let gone = delete_virtual_machine(t, &vm.id, false)?;
        assert_eq!(gone.detached, [nic.clone(), d.clone()]);
        assert!(disk(t, &d)?.properties.managed_by.is_none());
        assert_eq!(disk(t, &d)?.properties.disk_state, "Unattached");
        assert!(
            network_interface(t, &nic)?
                .properties
                .virtual_machine
                .is_none()
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn deleting_a_test_vm_takes_its_nic_and_disk_and_frees_the_ip() {
    let (_d, mut s) = site();
    s.tx(|t| {
        let (nic, d) = estate(t, "web", HyperVGeneration::V1)?;
        let vm = create_virtual_machine(
            t,
            SUB,
            "migrationRG",
            &spec("web-test", "Standard_B2s", &nic, &d),
        )?;
        let sn = network_interface(t, &nic)?
            .properties
            .subnet_id()
            .unwrap_or_default()
            .to_string();
        assert!(used_addresses(t, &sn)?.contains(&ip("10.0.0.10")));
        let gone = delete_virtual_machine(t, &vm.id, true)?;
        assert_eq!(
            (gone.deleted_nics, gone.deleted_disks),
            (vec![nic.clone()], vec![d.clone()])
        );
        assert!(used_addresses(t, &sn)?.is_empty());
        assert_eq!(
            code(&network_interface(t, &nic).unwrap_err()),
            "ResourceNotFound"
        );
        assert_eq!(disk(t, &d).unwrap_err().kind(), ErrorKind::NotFound);
        // deleteOption: Delete chosen at creation cascades without being asked.
        let (nic, d) = estate(t, "app", HyperVGeneration::V1)?;
        let vm = create_virtual_machine(
            t,
            SUB,
            "migrationRG",
            &VmSpec {
                delete_with_vm: true,
                ..spec("app", "Standard_B2s", &nic, &d)
            },
        )?;
        let gone = delete_virtual_machine(t, &vm.id, false)?;
        assert_eq!((gone.deleted_nics.len(), gone.deleted_disks.len()), (1, 1));
        Ok(())
    })
    .unwrap();
}

#[test]
fn ids_are_case_insensitive_and_groups_found_from_them() {
    let (_d, mut s) = site();
    s.tx(|t| {
        let (nic, _) = estate(t, "web", HyperVGeneration::V1)?;
        assert_eq!(network_interface(t, &nic.to_uppercase())?.id, nic);
        assert_eq!(
            group_of(&nic)?,
            "/subscriptions/sub-1/resourceGroups/migrationRG"
        );
        assert!(group_of("/subscriptions/x").is_err());
        Ok(())
    })
    .unwrap();
}

/// One step of the allocation model.
#[derive(Debug, Clone)]
enum Step {
    /// A new NIC asking for the address at this offset in the /27, or for any address.
    Add(Option<u8>, bool),
    /// Delete the n-th live NIC (modulo their number).
    Remove(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (proptest::option::of(0u8..32), any::<bool>()).prop_map(|(o, s)| Step::Add(o, s)),
        1 => any::<usize>().prop_map(Step::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Every prefix prints as it parses; any text parses or is refused, never panics; a
    /// prefix's usable addresses are its size less five.
    #[test]
    fn cidrs_round_trip(addr in any::<u32>(), len in 0u8..=32, junk in ".{0,24}") {
        let c = Cidr::parse(&format!("{}/{len}", Ipv4Addr::from(addr)));
        let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        prop_assert_eq!(c.is_ok(), addr & m == addr);
        let canon = Cidr { network: Ipv4Addr::from(addr & m), len };
        prop_assert_eq!(Cidr::parse(&canon.to_string()).unwrap(), canon);
        prop_assert!(canon.contains(canon.network) && canon.covers(canon));
        if (8..=29).contains(&len) {
            prop_assert_eq!(canon.usable().count() as u64, canon.size() - 5);
        }
        let _ = Cidr::parse(&junk);
    }

    /// Random NIC creations and deletions in a /27: never one address on two NICs, never a
    /// reserved address, the address asked for granted exactly when it is usable and free, a
    /// Dynamic request getting the lowest free address, and a full subnet refused.
    #[test]
    fn ip_allocation_matches_a_model(steps in proptest::collection::vec(step(), 1..60)) {
        let (_d, mut s) = site();
        let cidr = Cidr::parse("10.0.0.0/27").unwrap();
        let base = u32::from(cidr.network);
        s.tx(|t| {
            let spec = VnetSpec { subnets: vec![("s".into(), cidr.to_string())], ..VnetSpec::default() };
            let v = create_virtual_network(t, SUB, "migrationRG", "net", &spec)?;
            let sn = subnet(t, &v.id, "s")?.id;
            // The model: the live NICs and their addresses.
            let mut live: Vec<(String, Ipv4Addr)> = Vec::new();
            for (i, st) in steps.iter().enumerate() {
                match st {
                    Step::Add(off, strict) => {
                        let used: BTreeSet<Ipv4Addr> = live.iter().map(|l| l.1).collect();
                        let free: Vec<Ipv4Addr> = cidr.usable().filter(|a| !used.contains(a)).collect();
                        let want = off.map(|o| Ipv4Addr::from(base + u32::from(o)));
                        let req = match (want, strict) {
                            (None, _) => IpRequest::Dynamic,
                            (Some(w), true) => IpRequest::Static(w),
                            (Some(w), false) => IpRequest::Preferred(w),
                        };
                        let r = create_network_interface(t, SUB, "migrationRG", &format!("n{i}"), &sn, req);
                        let grantable = want.is_some_and(|w| free.contains(&w));
                        match r {
                            Ok(nic) => {
                                let got = nic.properties.private_ip().unwrap();
                                assert!(cidr.is_usable(got), "{got} is reserved");
                                assert!(!used.contains(&got), "{got} given twice");
                                match req {
                                    IpRequest::Dynamic => assert_eq!(Some(&got), free.first()),
                                    IpRequest::Static(w) => assert_eq!(got, w),
                                    IpRequest::Preferred(w) => assert_eq!(got == w, grantable, "{w} → {got}"),
                                }
                                live.push((nic.id, got));
                            }
                            Err(e) => {
                                let c = arm_code(&e).unwrap_or("");
                                if free.is_empty() {
                                    assert!(c == "SubnetIsFull" || matches!(req, IpRequest::Static(_)), "{e}");
                                } else {
                                    assert!(matches!(req, IpRequest::Static(_)) && !grantable, "{e}");
                                }
                            }
                        }
                    }
                    Step::Remove(n) => {
                        if !live.is_empty() {
                            let (id, _) = live.remove(n % live.len());
                            delete_network_interface(t, &id)?;
                        }
                    }
                }
                let model: BTreeSet<Ipv4Addr> = live.iter().map(|l| l.1).collect();
                assert_eq!(used_addresses(t, &sn)?, model);
            }
            Ok(())
        }).unwrap();
    }
}
