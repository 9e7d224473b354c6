//! Managed disks (imported from a page blob, as a failover makes them) and virtual machines
//! (a size from [`sizes`], NICs, an OS disk and data disks, a generation, a power
//! state), with ARM's rules: a disk or NIC serves one VM at a time and is refused deletion while
//! it does; a VM's generation must be one its size runs; deleting a VM can take its NICs and
//! disks with it (Azure's `deleteOption: Delete`, what cleaning up a test failover needs).

use super::{
    SubResource, Tags, arm_error, check_name, find_named, get_by_id, location, network, not_found,
    resource_group, resource_id, sizes, storage,
};
use crate::error::Result;
use crate::site::store::{Kind, Resource, Tx};
use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A VM's (and a disk's) Hyper-V generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HyperVGeneration {
    /// BIOS.
    V1,
    /// UEFI.
    V2,
}

impl HyperVGeneration {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            HyperVGeneration::V1 => 1,
            HyperVGeneration::V2 => 2,
        }
    }
}

/// A managed disk's storage type.
pub const DISK_SKUS: &[&str] = &[
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "StandardSSD_ZRS",
    "Premium_ZRS",
];

/// A managed disk's SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSku {
    /// One of [`DISK_SKUS`].
    pub name: String,
}

/// How a disk was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationData {
    /// `Import`.
    pub create_option: String,
    /// The page blob's URL.
    pub source_uri: String,
    /// The storage account holding it.
    pub storage_account_id: String,
}

/// A managed disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDisk {
    /// Its region.
    pub location: String,
    /// Its storage type.
    pub sku: DiskSku,
    /// Its size in GiB (the VHD's virtual size, rounded up).
    #[serde(rename = "diskSizeGB")]
    pub disk_size_gb: u64,
    /// Its size in bytes (the VHD's virtual size).
    pub disk_size_bytes: u64,
    /// Where it came from.
    pub creation_data: CreationData,
    /// Its generation (for an OS disk).
    pub hyper_v_generation: HyperVGeneration,
    /// `Windows` or `Linux` for an OS disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    /// `Unattached` or `Attached`.
    pub disk_state: String,
    /// The VM it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Not Azure's: the manifest root (hex) of the blob's disk, recorded at import so the disk's
    /// bytes can be checked against the recovery point it was built from.
    pub source_root: String,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Kind for ManagedDisk {
    const TYPE: &'static str = "Microsoft.Compute/disks";
}

/// A disk to import from a page blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImport {
    /// The disk's name.
    pub name: String,
    /// One of [`DISK_SKUS`].
    pub sku: String,
    /// The blob's URL (in `storage_account_id`'s blob endpoint).
    pub source_uri: String,
    /// The storage account holding the blob.
    pub storage_account_id: String,
    /// The blob's length: a fixed VHD, a whole number of MiB plus the 512-byte footer.
    pub blob_len: u64,
    /// The manifest root (hex) of the blob's disk.
    pub source_root: String,
    /// Its generation.
    pub hyper_v_generation: HyperVGeneration,
    /// `Windows` or `Linux` for an OS disk, `None` for a data disk.
    pub os_type: Option<String>,
}

fn compute_name_rule(what: &str, name: &str, max: usize) -> Result<()> {
    // Compute names: letters, digits, underscores, periods and hyphens; not starting with an
    // underscore, not ending with a period or hyphen.
    check_name(
        what,
        name,
        (1, max),
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        |first, last| first != '_' && last != '.' && last != '-',
        "InvalidParameter",
        &format!(
            "1-{max} letters, digits, underscores, periods and hyphens, not starting with an \
             underscore nor ending with a period or hyphen"
        ),
    )
}

/// Imports a managed disk from a page blob (`createOption: Import`) in group `rg` of `sub`, in
/// the storage account's region.
///
/// # Errors
/// No such group or storage account, a bad or duplicate name, an unknown SKU, a URL outside
/// the account, or a blob that is not a fixed VHD's length (`InvalidVhd`).
pub fn import_disk(tx: &Tx, sub: &str, rg: &str, d: &DiskImport) -> Result<Resource<ManagedDisk>> {
    let g = resource_group(tx, sub, rg)?;
    compute_name_rule("disk", &d.name, 80)?;
    if let Some(x) = find_named::<ManagedDisk>(tx, &g.id, &d.name)? {
        return Err(arm_error(
            409,
            "ResourceExists",
            format!("The disk {:?} exists already in {rg:?}.", x.name),
        ));
    }
    if !DISK_SKUS.contains(&d.sku.as_str()) {
        return Err(arm_error(
            400,
            "InvalidParameter",
            format!(
                "The disk SKU {:?} is not one of {}",
                d.sku,
                DISK_SKUS.join(", ")
            ),
        ));
    }
    let account =
        get_by_id::<storage::StorageAccount>(tx, &d.storage_account_id, "storage account")?;
    let (name, _) = storage::parse_blob_uri(&d.source_uri)?;
    if !name.eq_ignore_ascii_case(&account.name) {
        return Err(arm_error(
            400,
            "InvalidParameter",
            format!(
                "The source URI {} is not in the storage account {}",
                d.source_uri, account.name
            ),
        ));
    }
    let vsize = d.blob_len.saturating_sub(512);
    if d.blob_len < 512 + MIB || !vsize.is_multiple_of(MIB) {
        return Err(arm_error(
            400,
            "InvalidVhd",
            format!(
                "The blob {} of {} bytes is not a fixed VHD whose virtual size is a whole \
                 number of MiB (length = n MiB + 512)",
                d.source_uri, d.blob_len
            ),
        ));
    }
    tx.insert(
        &resource_id(&g.id, ManagedDisk::TYPE, &d.name),
        Some(&g.id),
        &ManagedDisk {
            location: account.properties.location.clone(),
            sku: DiskSku {
                name: d.sku.clone(),
            },
            disk_size_gb: vsize.div_ceil(GIB),
            disk_size_bytes: vsize,
            creation_data: CreationData {
                create_option: "Import".into(),
                source_uri: d.source_uri.clone(),
                storage_account_id: account.id.clone(),
            },
            hyper_v_generation: d.hyper_v_generation,
            os_type: d.os_type.clone(),
            disk_state: "Unattached".into(),
            managed_by: None,
            provisioning_state: "Succeeded".into(),
            source_root: d.source_root.clone(),
            tags: Tags::new(),
        },
    )
}

/// The disk `id`.
///
/// # Errors
/// It does not exist.
pub fn disk(tx: &Tx, id: &str) -> Result<Resource<ManagedDisk>> {
    get_by_id(tx, id, "disk")
}

/// The disks of group `rg` of `sub`.
///
/// # Errors
/// No such group.
pub fn list_disks(tx: &Tx, sub: &str, rg: &str) -> Result<Vec<Resource<ManagedDisk>>> {
    let g = resource_group(tx, sub, rg)?;
    tx.list(Some(&g.id))
}

/// Deletes a disk (its blob stays: it is the storage account's).
///
/// # Errors
/// It does not exist, or a VM uses it (`OperationNotAllowed`).
pub fn delete_disk(tx: &Tx, id: &str) -> Result<()> {
    let d = disk(tx, id)?;
    if let Some(vm) = &d.properties.managed_by {
        return Err(arm_error(
            409,
            "OperationNotAllowed",
            format!("Disk {} is attached to VM {vm}.", d.name),
        ));
    }
    tx.delete(&d.id)
}

// ---------------------------------------------------------------------------------------------
// Virtual machines.

/// A VM's power state (`PowerState/…` in its instance view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PowerState {
    /// Running.
    Running,
    /// Stopped, still allocated (and billed).
    Stopped,
    /// Stopped and deallocated.
    Deallocated,
}

impl PowerState {
    /// The instance view's `displayStatus`.
    pub fn display_status(self) -> &'static str {
        match self {
            PowerState::Running => "VM running",
            PowerState::Stopped => "VM stopped",
            PowerState::Deallocated => "VM deallocated",
        }
    }

    fn code(self) -> &'static str {
        match self {
            PowerState::Running => "PowerState/running",
            PowerState::Stopped => "PowerState/stopped",
            PowerState::Deallocated => "PowerState/deallocated",
        }
    }
}

/// `hardwareProfile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareProfile {
    /// The size's name.
    pub vm_size: String,
}

/// A disk reference in `storageProfile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmDisk {
    /// Logical unit (data disks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u32>,
    /// The disk's name.
    pub name: String,
    /// `Attach`.
    pub create_option: String,
    /// `Windows` or `Linux` (OS disk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    /// The managed disk.
    pub managed_disk: SubResource,
    /// `Delete` or `Detach`: what deleting the VM does to the disk.
    pub delete_option: String,
}

/// `storageProfile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    /// The OS disk.
    pub os_disk: VmDisk,
    /// The data disks.
    #[serde(default)]
    pub data_disks: Vec<VmDisk>,
}

/// A NIC reference's properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmNicProperties {
    /// The VM's primary NIC.
    pub primary: bool,
    /// `Delete` or `Detach`.
    pub delete_option: String,
}

/// A NIC reference in `networkProfile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNic {
    /// The NIC's id.
    pub id: String,
    /// Its properties.
    pub properties: VmNicProperties,
}

/// `networkProfile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    /// The NICs.
    pub network_interfaces: Vec<VmNic>,
}

/// A virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    /// Its region.
    pub location: String,
    /// Its size.
    pub hardware_profile: HardwareProfile,
    /// Its disks.
    pub storage_profile: StorageProfile,
    /// Its NICs.
    pub network_profile: NetworkProfile,
    /// Its generation (the OS disk's; Azure shows it in the instance view).
    pub hyper_v_generation: HyperVGeneration,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Running, stopped or deallocated. Azure reports it only in the instance view
    /// (`PowerState/running`, see [`instance_view`]); kept here as a property.
    pub power_state: PowerState,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Kind for VirtualMachine {
    const TYPE: &'static str = "Microsoft.Compute/virtualMachines";
}

/// A new VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Its name.
    pub name: String,
    /// Its size (`Standard_D2s_v3`).
    pub size: String,
    /// Its NICs, the first primary.
    pub nic_ids: Vec<String>,
    /// Its OS disk (an unattached managed disk with an `osType`).
    pub os_disk_id: String,
    /// Its data disks, LUN 0 upwards.
    pub data_disk_ids: Vec<String>,
    /// Its tags.
    pub tags: Tags,
    /// Whether deleting the VM deletes its NICs and disks too (`deleteOption: Delete`).
    pub delete_with_vm: bool,
}

/// Creates (and starts) the VM `spec.name` in group `rg` of `sub`, in its OS disk's region;
/// its generation is the OS disk's.
///
/// # Errors
/// No such group, size, NIC or disk; a bad or duplicate name; no NIC; a NIC or disk already
/// attached (`NicInUse`, `OperationNotAllowed`) or in another region; an OS disk without an OS
/// type; a generation the size does not run; more data disks than the size takes.
pub fn create_virtual_machine(
    tx: &Tx,
    sub: &str,
    rg: &str,
    spec: &VmSpec,
) -> Result<Resource<VirtualMachine>> {
    let g = resource_group(tx, sub, rg)?;
    compute_name_rule("virtual machine", &spec.name, 64)?;
    if let Some(x) = find_named::<VirtualMachine>(tx, &g.id, &spec.name)? {
        return Err(arm_error(
            409,
            "ResourceExists",
            format!("The virtual machine {:?} exists already in {rg:?}.", x.name),
        ));
    }
    let size = sizes::vm_size(&spec.size)?;
    let id = resource_id(&g.id, VirtualMachine::TYPE, &spec.name);
    let os = disk(tx, &spec.os_disk_id)?;
    let Some(os_type) = os.properties.os_type.clone() else {
        return Err(arm_error(
            400,
            "InvalidParameter",
            format!(
                "The disk {} has no osType: it cannot be an OS disk.",
                os.name
            ),
        ));
    };
    let generation = os.properties.hyper_v_generation;
    if generation == HyperVGeneration::V2 && !size.generation2 {
        return Err(arm_error(
            400,
            "BadRequest",
            format!(
                "The selected VM size '{}' cannot boot Hypervisor Generation '2'. If this was a \
                 Create operation please check that the Hypervisor Generation of the Image \
                 matches the Hypervisor Generation of the selected VM Size.",
                size.name
            ),
        ));
    }
    if spec.data_disk_ids.len() > size.max_data_disks as usize {
        return Err(arm_error(
            409,
            "OperationNotAllowed",
            format!(
                "The maximum number of data disks allowed to be attached to a VM of size {} is \
                 {}.",
                size.name, size.max_data_disks
            ),
        ));
    }
    if spec.nic_ids.is_empty() {
        return Err(arm_error(
            400,
            "InvalidParameter",
            "A virtual machine needs at least one network interface.",
        ));
    }
    let region = os.properties.location.clone();
    let delete_option = if spec.delete_with_vm {
        "Delete"
    } else {
        "Detach"
    };
    let mut disks = vec![os];
    for d in &spec.data_disk_ids {
        disks.push(disk(tx, d)?);
    }
    for d in &disks {
        if let Some(vm) = &d.properties.managed_by {
            return Err(arm_error(
                409,
                "OperationNotAllowed",
                format!("Disk {} is already attached to VM {vm}.", d.name),
            ));
        }
        if d.properties.location != region {
            return Err(arm_error(
                400,
                "InvalidParameter",
                format!(
                    "Disk {} is in {}, the VM in {region}: they must be in one region.",
                    d.name, d.properties.location
                ),
            ));
        }
    }
    let mut nics = Vec::new();
    for n in &spec.nic_ids {
        let nic = network::network_interface(tx, n)?;
        if let Some(vm) = &nic.properties.virtual_machine {
            return Err(arm_error(
                400,
                "NicInUse",
                format!(
                    "Network Interface {} is used by existing resource {}.",
                    nic.id, vm.id
                ),
            ));
        }
        if nic.properties.location != region {
            return Err(arm_error(
                400,
                "InvalidResourceReference",
                format!(
                    "Network interface {} is in {}, the VM in {region}: they must be in one \
                     region.",
                    nic.name, nic.properties.location
                ),
            ));
        }
        nics.push(nic);
    }
    let vm_disk = |d: &Resource<ManagedDisk>, lun: Option<u32>| VmDisk {
        lun,
        name: d.name.clone(),
        create_option: "Attach".into(),
        os_type: if lun.is_none() {
            d.properties.os_type.clone()
        } else {
            None
        },
        managed_disk: SubResource { id: d.id.clone() },
        delete_option: delete_option.into(),
    };
    let props = VirtualMachine {
        location: location(&region)?.name.into(),
        hardware_profile: HardwareProfile {
            vm_size: size.name.into(),
        },
        storage_profile: StorageProfile {
            os_disk: VmDisk {
                os_type: Some(os_type),
                ..vm_disk(&disks[0], None)
            },
            data_disks: disks[1..]
                .iter()
                .enumerate()
                .map(|(i, d)| vm_disk(d, Some(i as u32)))
                .collect(),
        },
        network_profile: NetworkProfile {
            network_interfaces: nics
                .iter()
                .enumerate()
                .map(|(i, n)| VmNic {
                    id: n.id.clone(),
                    properties: VmNicProperties {
                        primary: i == 0,
                        delete_option: delete_option.into(),
                    },
                })
                .collect(),
        },
        hyper_v_generation: generation,
        provisioning_state: "Succeeded".into(),
        power_state: PowerState::Running,
        tags: spec.tags.clone(),
    };
    let vm = tx.insert(&id, Some(&g.id), &props)?;
    for mut d in disks {
        d.properties.managed_by = Some(id.clone());
        d.properties.disk_state = "Attached".into();
        tx.update(&mut d)?;
    }
    for mut n in nics {
        n.properties.virtual_machine = Some(SubResource { id: id.clone() });
        tx.update(&mut n)?;
    }
    Ok(vm)
}

/// The VM `id`.
///
/// # Errors
/// It does not exist.
pub fn virtual_machine(tx: &Tx, id: &str) -> Result<Resource<VirtualMachine>> {
    get_by_id(tx, id, "virtual machine")
}

/// The VM `name` in group `rg` of `sub`.
///
/// # Errors
/// It does not exist.
pub fn find_virtual_machine(
    tx: &Tx,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Resource<VirtualMachine>> {
    let g = resource_group(tx, sub, rg)?;
    find_named(tx, &g.id, name)?.ok_or_else(|| {
        not_found(
            "virtual machine",
            &resource_id(&g.id, VirtualMachine::TYPE, name),
        )
    })
}

/// The VMs of group `rg` of `sub`.
///
/// # Errors
/// No such group.
pub fn list_virtual_machines(
    tx: &Tx,
    sub: &str,
    rg: &str,
) -> Result<Vec<Resource<VirtualMachine>>> {
    let g = resource_group(tx, sub, rg)?;
    tx.list(Some(&g.id))
}

/// Sets the VM's power state (start: running; power off: stopped; deallocate: deallocated).
///
/// # Errors
/// It does not exist.
pub fn set_power_state(tx: &Tx, id: &str, state: PowerState) -> Result<Resource<VirtualMachine>> {
    let mut vm = virtual_machine(tx, id)?;
    if vm.properties.power_state != state {
        vm.properties.power_state = state;
        tx.update(&mut vm)?;
    }
    Ok(vm)
}

/// What deleting a VM removed with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedVm {
    /// NICs deleted (their addresses released).
    pub deleted_nics: Vec<String>,
    /// Disks deleted.
    pub deleted_disks: Vec<String>,
    /// NICs and disks detached and kept.
    pub detached: Vec<String>,
}

/// Deletes the VM `id`. Its NICs and disks are deleted with it when `with_attached` is true or
/// when they were attached with `deleteOption: Delete`; the others are detached and kept.
/// Blobs stay (the disks' blobs belong to their storage account).
///
/// # Errors
/// It does not exist.
pub fn delete_virtual_machine(tx: &Tx, id: &str, with_attached: bool) -> Result<DeletedVm> {
    let vm = virtual_machine(tx, id)?;
    let p = &vm.properties;
    let mut out = DeletedVm::default();
    tx.delete(&vm.id)?;
    for n in &p.network_profile.network_interfaces {
        let Some(mut nic) = tx.find::<network::NetworkInterface>(&n.id)? else {
            continue;
        };
        if with_attached || n.properties.delete_option == "Delete" {
            tx.delete(&nic.id)?;
            out.deleted_nics.push(nic.id);
        } else {
            nic.properties.virtual_machine = None;
            tx.update(&mut nic)?;
            out.detached.push(nic.id);
        }
    }
    let disks = std::iter::once(&p.storage_profile.os_disk).chain(&p.storage_profile.data_disks);
    for d in disks {
        let Some(mut md) = tx.find::<ManagedDisk>(&d.managed_disk.id)? else {
            continue;
        };
        if with_attached || d.delete_option == "Delete" {
            tx.delete(&md.id)?;
            out.deleted_disks.push(md.id);
        } else {
            md.properties.managed_by = None;
            md.properties.disk_state = "Unattached".into();
            tx.update(&mut md)?;
            out.detached.push(md.id);
        }
    }
    Ok(out)
}

/// One status in an instance view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceViewStatus {
    /// `ProvisioningState/succeeded`, `PowerState/running`.
    pub code: String,
    /// `Info`.
    pub level: String,
    /// `Provisioning succeeded`, `VM running`.
    pub display_status: String,
}

/// A VM's instance view (`GET …/instanceView`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// Its generation.
    pub hyper_v_generation: HyperVGeneration,
    /// Provisioning state, then power state.
    pub statuses: Vec<InstanceViewStatus>,
}

/// The instance view of `vm`.
pub fn instance_view(vm: &VirtualMachine) -> InstanceView {
    InstanceView {
        hyper_v_generation: vm.hyper_v_generation,
        statuses: vec![
            InstanceViewStatus {
                code: format!("ProvisioningState/{}", vm.provisioning_state.to_lowercase()),
                level: "Info".into(),
                display_status: format!("Provisioning {}", vm.provisioning_state.to_lowercase()),
            },
            InstanceViewStatus {
                code: vm.power_state.code().into(),
                level: "Info".into(),
                display_status: vm.power_state.display_status().into(),
            },
        ],
    }
}
