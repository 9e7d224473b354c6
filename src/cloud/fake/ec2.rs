//! An in-process EC2 with the EBS direct APIs over its snapshots: [`FakeEc2`].
//!
//! - **State as data**: instances, volumes, images, security groups, snapshots, the id counter,
//!   the queued faults and the call counters are one serde value ([`FakeEc2State`]), so a site
//!   keeps the fake in its store and gets the same answers after a reopen. Everything is in
//!   `BTreeMap`s and ids come from one counter (`i-00000000000000001`, `vol-…02`, …): the same
//!   calls give the same answers, byte for byte.
//! - **Loaded from a [`Scenario`]**: images, security groups with ingress rules, instances with
//!   their volumes, each volume's bytes an image file ec2azure opens (raw, VHD, VHDX, qcow2,
//!   VMDK), or zeros. Instances take platform, architecture, virtualization and boot mode from
//!   their image, as EC2 does.
//! - **Snapshots with real bytes**: a snapshot remembers the image file its volume had when it
//!   was taken; the fake is also an [`EbsApi`] that serves that file as 512 KiB blocks, read on
//!   demand (never the whole disk in memory): ListSnapshotBlocks lists the blocks that hold
//!   data in the file's extent map, GetSnapshotBlock reads one with its SHA-256, and
//!   ListChangedBlocks compares two snapshots block by block. So the existing
//!   [`EbsSnapshot`](crate::cloud::ebs::EbsSnapshot) reads a fake snapshot as it reads a real
//!   one. Image files are inputs: the fake never writes them ([`FakeEc2::set_volume_image`]
//!   points a volume at another file for later snapshots).
//! - **Faults** ([`FaultKind`] per [`Operation`]): the next call (or the next n, or every call)
//!   of an operation fails with throttling, a 5xx, a timeout or any error code — StopInstances
//!   refused, say, so that a failover must go on without the shutdown. Calls retry under the
//!   fake's [`RetryPolicy`] as the real client does, so a single throttle is absorbed and a
//!   lasting one surfaces as a transient error.
//! - Snapshots complete at once unless [`FakeEc2::set_snapshot_polls`] makes them pending for a
//!   number of DescribeSnapshots calls (progress rising to 100%); their start time is the fake's
//!   clock ([`FakeEc2::set_now_ms`]), which the site sets from its own.

use crate::cloud::ebs::{BLOCK_SIZE, BlockData, BlockPage, ChangedPage, EbsApi, EbsError};
use crate::cloud::ec2::{
    Architecture, BlockDevice, BootMode, Ec2Api, Ec2Error, Image, IngressRule, Instance,
    InstanceState, NAME_TAG, Platform, Protocol, SecurityGroup, Snapshot, SnapshotState,
    StateChange, Virtualization, Volume, VolumeAttachment, unsure_on_timeout,
};
use crate::cloud::retry::RetryPolicy;
use crate::error::{Error, Result};
use crate::image::{DiskImage, ExtentMap};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GIB: u64 = 1 << 30;

/// The calls of the fake, to aim a fault at and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// DescribeInstances.
    DescribeInstances,
    /// DescribeVolumes.
    DescribeVolumes,
    /// DescribeImages.
    DescribeImages,
    /// DescribeSecurityGroups.
    DescribeSecurityGroups,
    /// CreateSnapshot.
    CreateSnapshot,
    /// CreateSnapshots.
    CreateSnapshots,
    /// DescribeSnapshots.
    DescribeSnapshots,
    /// StopInstances.
    StopInstances,
    /// EBS ListSnapshotBlocks.
    ListSnapshotBlocks,
    /// EBS GetSnapshotBlock.
    GetSnapshotBlock,
    /// EBS ListChangedBlocks.
    ListChangedBlocks,
}

/// How a faulty call fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Throttled: EC2's HTTP 503 `RequestLimitExceeded` (EBS: `ThrottlingException`).
    Throttled,
    /// A server error: HTTP 500 `InternalError`.
    ServerError,
    /// No answer in time.
    Timeout,
    /// This answer: any status and error code (`UnauthorizedOperation`,
    /// `IncorrectInstanceState`, …).
    Code {
        /// The HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
}

impl FaultKind {
    fn ec2(&self) -> Ec2Error {
        match self {
            FaultKind::Throttled => Ec2Error::throttled(),
            FaultKind::ServerError => Ec2Error::server(),
            FaultKind::Timeout => Ec2Error::Timeout,
            FaultKind::Code {
                status,
                code,
                message,
            } => Ec2Error::Service {
                status: *status,
                code: Some(code.clone()),
                message: message.clone(),
            },
        }
    }

    fn ebs(&self) -> EbsError {
        match self {
            FaultKind::Throttled => EbsError::Throttled,
            FaultKind::ServerError => EbsError::Server("injected".into()),
            FaultKind::Timeout => EbsError::Timeout,
            FaultKind::Code {
                status,
                code,
                message,
            } => EbsError::Service {
                status: *status,
                code: Some(code.clone()),
                message: message.clone(),
            },
        }
    }
}

/// A queued fault: `kind` for the next `times` calls of `operation` (`None`: every call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The operation it hits.
    pub operation: Operation,
    /// How the call fails.
    pub kind: FaultKind,
    /// Calls left to fail; `None` for every call until cleared.
    pub times: Option<u32>,
}

/// An image (AMI) of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Its id (`ami-…`), used as given.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// Windows or Linux (default).
    #[serde(default = "linux")]
    pub platform: Platform,
    /// `PlatformDetails` (`Windows`, `Red Hat Enterprise Linux`, …).
    #[serde(default)]
    pub platform_details: Option<String>,
    /// CPU architecture (default `x86_64`).
    #[serde(default = "x86_64")]
    pub architecture: Architecture,
    /// HVM (default) or paravirtual.
    #[serde(default = "hvm")]
    pub virtualization: Virtualization,
    /// Boot mode (default `legacy-bios`).
    #[serde(default = "bios")]
    pub boot_mode: BootMode,
    /// Root device name (default `/dev/sda1`).
    #[serde(default = "sda1")]
    pub root_device_name: String,
}

/// One ingress rule of a scenario's security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSpec {
    /// `tcp`, `udp`, `icmp`, `-1` (all), or a number.
    pub protocol: String,
    /// First port.
    #[serde(default)]
    pub from_port: Option<i32>,
    /// Last port.
    #[serde(default)]
    pub to_port: Option<i32>,
    /// Source CIDRs.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Source security groups, by name (of this scenario).
    #[serde(default)]
    pub source_groups: Vec<String>,
}

/// A security group of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupSpec {
    /// Its name (unique in the scenario).
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// Inbound rules.
    #[serde(default)]
    pub ingress: Vec<IngressSpec>,
}

/// A volume of a scenario's instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Device name (`/dev/sda1`; the image's root device is the boot volume).
    pub device: String,
    /// Size in GiB (the data file must fit).
    pub size_gib: u64,
    /// Volume type (default `gp2`).
    #[serde(default = "gp2")]
    pub volume_type: String,
    /// Encrypted.
    #[serde(default)]
    pub encrypted: bool,
    /// The volume's bytes: an image file (relative to the scenario's folder); absent = zeros.
    #[serde(default)]
    pub data: Option<PathBuf>,
}

/// An instance of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Its `Name` tag (unique in the scenario).
    pub name: String,
    /// Its image id (one of the scenario's images).
    pub image: String,
    /// Instance type (default `t3.medium`).
    #[serde(default = "t3_medium")]
    pub instance_type: String,
    /// Primary private IPv4 address (inside the scenario's VPC CIDR).
    #[serde(default)]
    pub private_ip: Option<String>,
    /// Security groups, by name.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// More tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Running (default) or stopped.
    #[serde(default = "running")]
    pub state: InstanceState,
    /// The boot mode the instance reports; default its image's (`uefi-preferred` boots UEFI).
    #[serde(default)]
    pub boot_mode: Option<BootMode>,
    /// Its volumes; none = one 8 GiB zero volume at the image's root device.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
}

/// An AWS estate to load into the fake (or onto an emulator: `AwsEc2::load_scenario`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The VPC's (and its one subnet's) CIDR (default `10.0.0.0/16`).
    #[serde(default = "default_cidr")]
    pub vpc_cidr: String,
    /// Images (AMIs).
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    /// Security groups.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupSpec>,
    /// Instances.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
}

fn linux() -> Platform {
    Platform::Linux
}
fn x86_64() -> Architecture {
    Architecture::X86_64
}
fn hvm() -> Virtualization {
    Virtualization::Hvm
}
fn bios() -> BootMode {
    BootMode::LegacyBios
}
fn sda1() -> String {
    "/dev/sda1".into()
}
fn gp2() -> String {
    "gp2".into()
}
fn t3_medium() -> String {
    "t3.medium".into()
}
fn running() -> InstanceState {
    InstanceState::Running
}
fn default_cidr() -> String {
    "10.0.0.0/16".into()
}

impl Scenario {
    /// Reads a scenario from JSON.
    ///
    /// # Errors
    /// Not such JSON (unknown fields are refused, naming the field).
    pub fn from_json(text: &str) -> Result<Scenario> {
        serde_json::from_str(text).map_err(|e| Error::argument(format!("scenario: {e}")))
    }

    /// Checks the scenario's references and names.
    ///
    /// # Errors
    /// A duplicate name, device or image id; an instance naming an unknown image or group; a
    /// rule naming an unknown group; a volume of size 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::argument(format!("scenario: {m}")));
        let images: BTreeSet<&str> = self.images.iter().map(|i| i.id.as_str()).collect();
        if images.len() != self.images.len() {
            return bad("two images have the same id".into());
        }
        let groups: BTreeSet<&str> = self
            .security_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        if groups.len() != self.security_groups.len() {
            return bad("two security groups have the same name".into());
        }
        for g in &self.security_groups {
            for r in &g.ingress {
                if let Some(s) = r
                    .source_groups
                    .iter()
                    .find(|s| !groups.contains(s.as_str()))
                {
                    return bad(format!(
                        "security group {}: a rule names unknown group {s:?}",
                        g.name
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for i in &self.instances {
            if !names.insert(i.name.as_str()) {
                return bad(format!("two instances are named {:?}", i.name));
            }
            if let Some(ip) = &i.private_ip
                && !ips.insert(ip.as_str())
            {
                return bad(format!("instance {}: private IP {ip} is taken", i.name));
            }
            if !images.contains(i.image.as_str()) {
                return bad(format!("instance {}: unknown image {}", i.name, i.image));
            }
            if let Some(s) = i
                .security_groups
                .iter()
                .find(|s| !groups.contains(s.as_str()))
            {
                return bad(format!("instance {}: unknown security group {s:?}", i.name));
            }
            let mut devices = BTreeSet::new();
            for v in &i.volumes {
                if !devices.insert(v.device.as_str()) {
                    return bad(format!("instance {}: device {} twice", i.name, v.device));
                }
                if v.size_gib == 0 || v.size_gib > 64 * 1024 {
                    return bad(format!(
                        "instance {}: volume {} of {} GiB (1 to 65536)",
                        i.name, v.device, v.size_gib
                    ));
                }
            }
        }
        Ok(())
    }

    /// The volumes of `instance`, the default root volume when it lists none.
    pub fn volumes_of(&self, instance: &InstanceSpec) -> Vec<VolumeSpec> {
        if !instance.volumes.is_empty() {
            return instance.volumes.clone();
        }
        let root = self
            .images
            .iter()
            .find(|i| i.id == instance.image)
            .map_or_else(sda1, |i| i.root_device_name.clone());
        vec![VolumeSpec {
            device: root,
            size_gib: 8,
            volume_type: gp2(),
            encrypted: false,
            data: None,
        }]
    }
}

/// The ids a loaded scenario got, by the scenario's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioIds {
    /// Instance name → instance id.
    pub instances: BTreeMap<String, String>,
    /// Security group name → group id.
    pub security_groups: BTreeMap<String, String>,
    /// Instance name → device → volume id.
    pub volumes: BTreeMap<String, BTreeMap<String, String>>,
}

impl ScenarioIds {
    /// The id of instance `name`.
    ///
    /// # Errors
    /// No such instance in the scenario.
    pub fn instance(&self, name: &str) -> Result<&str> {
        self.instances
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::not_found(format!("scenario: no instance {name:?}")))
    }

    /// The id of the volume of instance `name` at `device`.
    ///
    /// # Errors
    /// No such volume in the scenario.
    pub fn volume(&self, name: &str, device: &str) -> Result<&str> {
        self.volumes
            .get(name)
            .and_then(|d| d.get(device))
            .map(String::as_str)
            .ok_or_else(|| Error::not_found(format!("scenario: no volume {name}:{device}")))
    }
}

/// What the fake knows about a snapshot beyond what EC2 shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotRecord {
    snapshot: Snapshot,
    /// The image file the volume had when the snapshot was taken; `None` = zeros.
    image: Option<PathBuf>,
    /// DescribeSnapshots calls left before it completes.
    polls_left: u32,
}

/// Everything the fake holds, as one serde value (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeEc2State {
    instances: BTreeMap<String, Instance>,
    volumes: BTreeMap<String, Volume>,
    /// Volume id → its bytes' image file.
    volume_images: BTreeMap<String, PathBuf>,
    images: BTreeMap<String, Image>,
    security_groups: BTreeMap<String, SecurityGroup>,
    snapshots: BTreeMap<String, SnapshotRecord>,
    next_id: u64,
    now_ms: u64,
    snapshot_polls: u32,
    faults: Vec<FaultRule>,
    calls: BTreeMap<Operation, u64>,
}

impl FakeEc2State {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    /// The first queued fault for `op`, used up.
    fn take_fault(&mut self, op: Operation) -> Option<FaultKind> {
        *self.calls.entry(op).or_insert(0) += 1;
        let i = self.faults.iter().position(|f| f.operation == op)?;
        let kind = self.faults[i].kind.clone();
        match &mut self.faults[i].times {
            Some(n) if *n <= 1 => {
                self.faults.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(kind)
    }
}

/// An opened image file and its extent map, shared by the EBS calls.
struct Opened {
    image: Arc<dyn DiskImage>,
    extents: ExtentMap,
}

/// An in-process EC2 and EBS direct API (see the module docs).
pub struct FakeEc2 {
    state: Mutex<FakeEc2State>,
    retry: RetryPolicy,
    /// ListSnapshotBlocks / ListChangedBlocks page size.
    page_size: usize,
    opened: Mutex<HashMap<PathBuf, Arc<Opened>>>,
}

impl std::fmt::Debug for FakeEc2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = crate::sync::lock(&self.state);
        f.debug_struct("FakeEc2")
            .field("instances", &s.instances.len())
            .field("volumes", &s.volumes.len())
            .field("snapshots", &s.snapshots.len())
            .finish_non_exhaustive()
    }
}

impl Default for FakeEc2 {
    fn default() -> Self {
        FakeEc2::from_state(FakeEc2State::default())
    }
}

/// Quick retries: the fake answers at once, so waiting long teaches nothing.
const FAKE_RETRY: RetryPolicy = RetryPolicy {
    attempts: 4,
    base_delay: Duration::from_millis(1),
    max_delay: Duration::from_millis(8),
};

/// EC2's "does not exist" answer.
fn missing(code: &str, what: &str, id: &str) -> Ec2Error {
    Ec2Error::client(code, format!("The {what} '{id}' does not exist"))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl FakeEc2 {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake holding `state` (as [`FakeEc2::state`] gave it).
    pub fn from_state(state: FakeEc2State) -> Self {
        FakeEc2 {
            state: Mutex::new(state),
            retry: FAKE_RETRY,
            page_size: 1000,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// A copy of everything the fake holds, to store.
    pub fn state(&self) -> FakeEc2State {
        crate::sync::lock(&self.state).clone()
    }

    /// The same fake retrying under `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same fake with ListSnapshotBlocks / ListChangedBlocks pages of `page_size` blocks.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// A fake holding `scenario`; relative data paths are taken from `base` (the scenario's
    /// folder). Each data file is opened once to check that it fits its volume.
    ///
    /// # Errors
    /// An invalid scenario ([`Scenario::validate`]); a data file that cannot be opened or is
    /// larger than its volume.
    pub fn from_scenario(scenario: &Scenario, base: &Path) -> Result<(Self, ScenarioIds)> {
        let fake = FakeEc2::new();
        let ids = fake.load(scenario, base)?;
        Ok((fake, ids))
    }

    /// Adds `scenario` to what the fake holds (see [`FakeEc2::from_scenario`]).
    ///
    /// # Errors
    /// As [`FakeEc2::from_scenario`]; an image id the fake has already; nothing is added then.
    pub fn load(&self, scenario: &Scenario, base: &Path) -> Result<ScenarioIds> {
        scenario.validate()?;
        // Data files first, outside the lock: each must open and fit.
        let mut files = BTreeMap::new();
        for i in &scenario.instances {
            for v in scenario.volumes_of(i) {
                if let Some(d) = &v.data {
                    let path = resolve(base, d);
                    let img = crate::image::open(&path, None)?;
                    if img.len() > v.size_gib.saturating_mul(GIB) {
                        return Err(Error::argument(format!(
                            "scenario: instance {} volume {}: {} holds {} bytes, more than {} GiB",
                            i.name,
                            v.device,
                            path.display(),
                            img.len(),
                            v.size_gib
                        )));
                    }
                    files.insert((i.name.clone(), v.device.clone()), path);
                }
            }
        }
        let mut s = crate::sync::lock(&self.state);
        let mut next = s.clone();
        let mut ids = ScenarioIds::default();
        for im in &scenario.images {
            if next.images.contains_key(&im.id) {
                return Err(Error::conflict(format!("scenario: image {} exists", im.id)));
            }
            next.images.insert(
                im.id.clone(),
                Image {
                    id: im.id.clone(),
                    name: Some(im.name.clone()),
                    description: im.description.clone(),
                    platform: im.platform,
                    platform_details: im.platform_details.clone(),
                    architecture: im.architecture.clone(),
                    virtualization: Some(im.virtualization),
                    boot_mode: im.boot_mode,
                    root_device_name: Some(im.root_device_name.clone()),
                },
            );
        }
        let vpc = next.new_id("vpc");
        let subnet = next.new_id("subnet");
        for g in &scenario.security_groups {
            let id = next.new_id("sg");
            ids.security_groups.insert(g.name.clone(), id);
        }
        for g in &scenario.security_groups {
            let id = ids.security_groups[&g.name].clone();
            let ingress = g
                .ingress
                .iter()
                .map(|r| IngressRule {
                    protocol: Protocol::parse(&r.protocol),
                    from_port: r.from_port,
                    to_port: r.to_port,
                    cidrs: r.cidrs.clone(),
                    source_group_ids: r
                        .source_groups
                        .iter()
                        .map(|n| ids.security_groups[n].clone())
                        .collect(),
                })
                .collect();
            next.security_groups.insert(
                id.clone(),
                SecurityGroup {
                    id,
                    name: g.name.clone(),
                    description: g.description.clone(),
                    vpc_id: Some(vpc.clone()),
                    ingress,
                },
            );
        }
        for i in &scenario.instances {
            let image = next.images[&i.image].clone();
            let id = next.new_id("i");
            let mut block_devices = Vec::new();
            let mut devices = BTreeMap::new();
            for v in scenario.volumes_of(i) {
                let vid = next.new_id("vol");
                next.volumes.insert(
                    vid.clone(),
                    Volume {
                        id: vid.clone(),
                        size_gib: v.size_gib,
                        volume_type: v.volume_type.clone(),
                        encrypted: v.encrypted,
                        state: "in-use".into(),
                        attachments: vec![VolumeAttachment {
                            instance_id: id.clone(),
                            device: v.device.clone(),
                        }],
                        snapshot_id: None,
                        tags: BTreeMap::new(),
                    },
                );
                if let Some(p) = files.get(&(i.name.clone(), v.device.clone())) {
                    next.volume_images.insert(vid.clone(), p.clone());
                }
                block_devices.push(BlockDevice {
                    device: v.device.clone(),
                    volume_id: vid.clone(),
                });
                devices.insert(v.device.clone(), vid);
            }
            let mut tags = i.tags.clone();
            tags.insert(NAME_TAG.into(), i.name.clone());
            let boot_mode = match i.boot_mode.unwrap_or(image.boot_mode) {
                // EC2 reports the mode the instance booted with.
                BootMode::UefiPreferred => BootMode::Uefi,
                b => b,
            };
            next.instances.insert(
                id.clone(),
                Instance {
                    id: id.clone(),
                    name: Some(i.name.clone()),
                    tags,
                    private_ip: i.private_ip.clone(),
                    platform: image.platform,
                    platform_details: image.platform_details.clone(),
                    architecture: image.architecture.clone(),
                    virtualization: image.virtualization,
                    boot_mode,
                    instance_type: i.instance_type.clone(),
                    state: i.state,
                    image_id: image.id.clone(),
                    security_group_ids: i
                        .security_groups
                        .iter()
                        .map(|n| ids.security_groups[n].clone())
                        .collect(),
                    root_device_name: image.root_device_name.clone(),
                    block_devices,
                    subnet_id: Some(subnet.clone()),
                    vpc_id: Some(vpc.clone()),
                },
            );
            ids.instances.insert(i.name.clone(), id);
            ids.volumes.insert(i.name.clone(), devices);
        }
        *s = next;
        Ok(ids)
    }

    /// Queues a fault: the next call of `op` fails with `kind`.
    pub fn inject(&self, op: Operation, kind: FaultKind) {
        self.inject_times(op, kind, Some(1));
    }

    /// Queues a fault for the next `times` calls of `op` (`None`: every call until
    /// [`FakeEc2::clear_faults`]). Faults of one operation fire in the order queued.
    pub fn inject_times(&self, op: Operation, kind: FaultKind, times: Option<u32>) {
        if times == Some(0) {
            return;
        }
        crate::sync::lock(&self.state).faults.push(FaultRule {
            operation: op,
            kind,
            times,
        });
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        crate::sync::lock(&self.state).faults.clear();
    }

    /// Calls of `op` answered so far, failed attempts included.
    pub fn calls(&self, op: Operation) -> u64 {
        crate::sync::lock(&self.state)
            .calls
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Sets the fake's clock (milliseconds since 1970): new snapshots start then.
    pub fn set_now_ms(&self, now_ms: u64) {
        crate::sync::lock(&self.state).now_ms = now_ms;
    }

    /// New snapshots stay pending for `polls` DescribeSnapshots calls that show them (0: they
    /// complete at once).
    pub fn set_snapshot_polls(&self, polls: u32) {
        crate::sync::lock(&self.state).snapshot_polls = polls;
    }

    /// Sets an instance's state (a machine stopped or started outside the migration).
    ///
    /// # Errors
    /// An unknown instance.
    pub fn set_instance_state(&self, instance_id: &str, state: InstanceState) -> Result<()> {
        let mut s = crate::sync::lock(&self.state);
        let i = s
            .instances
            .get_mut(instance_id)
            .ok_or_else(|| Error::not_found(format!("instance {instance_id}")))?;
        i.state = state;
        Ok(())
    }

    /// Points `volume_id` at another image file (or zeros): later snapshots hold those bytes;
    /// earlier ones keep theirs.
    ///
    /// # Errors
    /// An unknown volume; a file that cannot be opened or does not fit the volume.
    pub fn set_volume_image(&self, volume_id: &str, image: Option<&Path>) -> Result<()> {
        let size = crate::sync::lock(&self.state)
            .volumes
            .get(volume_id)
            .map(|v| v.size_gib)
            .ok_or_else(|| Error::not_found(format!("volume {volume_id}")))?;
        if let Some(p) = image {
            let len = self.open_image(p)?.image.len();
            if len > size.saturating_mul(GIB) {
                return Err(Error::argument(format!(
                    "{}: {len} bytes do not fit volume {volume_id} of {size} GiB",
                    p.display()
                )));
            }
        }
        let mut s = crate::sync::lock(&self.state);
        match image {
            Some(p) => s
                .volume_images
                .insert(volume_id.to_string(), p.to_path_buf()),
            None => s.volume_images.remove(volume_id),
        };
        Ok(())
    }

    /// The image file a snapshot reads from (`None`: zeros, or no such snapshot).
    pub fn snapshot_image(&self, snapshot_id: &str) -> Option<PathBuf> {
        crate::sync::lock(&self.state)
            .snapshots
            .get(snapshot_id)
            .and_then(|r| r.image.clone())
    }

    /// One EC2 call: the queued fault for `op`, if any, else `body` on the state; retried
    /// under the fake's policy.
    fn call<T>(
        &self,
        op: Operation,
        body: impl Fn(&mut FakeEc2State) -> std::result::Result<T, Ec2Error>,
    ) -> Result<T> {
        self.retry.run(&format!("{op:?}"), || {
            let mut s = crate::sync::lock(&self.state);
            if let Some(f) = s.take_fault(op) {
                // A create that timed out may have been done: not repeated blindly.
                return Err(match op {
                    Operation::CreateSnapshot | Operation::CreateSnapshots => {
                        unsure_on_timeout(f.ec2())
                    }
                    _ => f.ec2(),
                });
            }
            body(&mut s)
        })
    }

    /// The EBS side: the queued fault for `op`, then the snapshot's record.
    fn ebs_snapshot(&self, op: Operation, id: &str) -> Result<SnapshotRecord, EbsError> {
        let mut s = crate::sync::lock(&self.state);
        if let Some(f) = s.take_fault(op) {
            return Err(f.ebs());
        }
        match s.snapshots.get(id) {
            None => Err(EbsError::Service {
                status: 404,
                code: Some("ResourceNotFoundException".into()),
                message: format!("The snapshot '{id}' does not exist."),
            }),
            Some(r) if r.snapshot.state != Some(SnapshotState::Completed) => {
                Err(EbsError::Service {
                    status: 400,
                    code: Some("ValidationException".into()),
                    message: format!("The snapshot '{id}' is not completed."),
                })
            }
            Some(r) => Ok(r.clone()),
        }
    }

    fn open_image(&self, path: &Path) -> Result<Arc<Opened>> {
        if let Some(o) = crate::sync::lock(&self.opened).get(path) {
            return Ok(o.clone());
        }
        let image: Arc<dyn DiskImage> = Arc::from(crate::image::open(path, None)?);
        let extents = image.extents()?;
        let o = Arc::new(Opened { image, extents });
        crate::sync::lock(&self.opened).insert(path.to_path_buf(), o.clone());
        Ok(o)
    }

    /// The blocks of a snapshot that hold data, ascending.
    fn listed(&self, r: &SnapshotRecord) -> Result<(Option<Arc<Opened>>, Vec<u64>), EbsError> {
        let Some(p) = &r.image else {
            return Ok((None, Vec::new()));
        };
        let o = self
            .open_image(p)
            .map_err(|e| EbsError::Fatal(format!("snapshot {}: {e}", r.snapshot.id)))?;
        let blocks = o.extents.data_chunks(BLOCK_SIZE).collect();
        Ok((Some(o), blocks))
    }

    /// Block `index` of an opened image, zero-padded to the block size.
    fn block(o: &Opened, index: u64) -> Result<Vec<u8>, EbsError> {
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let start = index.saturating_mul(BLOCK_SIZE);
        if start < o.image.len() {
            let n = (o.image.len() - start).min(BLOCK_SIZE) as usize;
            let data = crate::image::bytes_at(&*o.image, &o.extents, start, &mut buf[..n])
                .map_err(|e| EbsError::Fatal(format!("reading block {index}: {e}")))?
                .to_vec();
            buf[..n].copy_from_slice(&data);
        }
        Ok(buf)
    }
}

fn page<T: Clone>(all: &[T], start: usize, size: usize) -> (Vec<T>, Option<String>) {
    let end = start.saturating_add(size).min(all.len());
    let items = all.get(start..end).map(<[T]>::to_vec).unwrap_or_default();
    let next = (end < all.len()).then(|| end.to_string());
    (items, next)
}

fn page_start(next: Option<&str>) -> Result<usize, EbsError> {
    next.map_or(Ok(0), |t| {
        t.parse()
            .map_err(|_| EbsError::Fatal(format!("ValidationException: bad NextToken {t:?}")))
    })
}

fn lookup<'a, T>(
    map: &'a BTreeMap<String, T>,
    ids: &[String],
    code: &str,
    what: &str,
) -> std::result::Result<Vec<&'a T>, Ec2Error> {
    if ids.is_empty() {
        return Ok(map.values().collect());
    }
    ids.iter()
        .map(|id| map.get(id).ok_or_else(|| missing(code, what, id)))
        .collect()
}

fn take_snapshot(s: &mut FakeEc2State, volume_id: &str, description: &str) -> Snapshot {
    let id = s.new_id("snap");
    let size_gib = s.volumes.get(volume_id).map_or(0, |v| v.size_gib);
    let polls = s.snapshot_polls;
    let snapshot = Snapshot {
        id: id.clone(),
        volume_id: Some(volume_id.to_string()),
        state: Some(if polls == 0 {
            SnapshotState::Completed
        } else {
            SnapshotState::Pending
        }),
        progress: Some(if polls == 0 { 100 } else { 0 }),
        size_gib,
        start_time_ms: Some(s.now_ms),
        description: Some(description.to_string()),
        tags: BTreeMap::new(),
    };
    let image = s.volume_images.get(volume_id).cloned();
    s.snapshots.insert(
        id,
        SnapshotRecord {
            snapshot: snapshot.clone(),
            image,
            polls_left: polls,
        },
    );
    snapshot
}

impl Ec2Api for FakeEc2 {
    fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        self.call(Operation::DescribeInstances, |s| {
            let found = lookup(
                &s.instances,
                ids,
                "InvalidInstanceID.NotFound",
                "instance ID",
            )?;
            Ok(found.into_iter().cloned().collect())
        })
    }

    fn describe_volumes(&self, ids: &[String]) -> Result<Vec<Volume>> {
        self.call(Operation::DescribeVolumes, |s| {
            let found = lookup(&s.volumes, ids, "InvalidVolume.NotFound", "volume")?;
            Ok(found.into_iter().cloned().collect())
        })
    }

    fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>> {
        self.call(Operation::DescribeImages, |s| {
            let found = lookup(&s.images, ids, "InvalidAMIID.NotFound", "image id")?;
            Ok(found.into_iter().cloned().collect())
        })
    }

    fn describe_security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroup>> {
        self.call(Operation::DescribeSecurityGroups, |s| {
            let found = lookup(
                &s.security_groups,
                ids,
                "InvalidGroup.NotFound",
                "security group",
            )?;
            Ok(found.into_iter().cloned().collect())
        })
    }

    fn create_snapshot(&self, volume_id: &str, description: &str) -> Result<Snapshot> {
        self.call(Operation::CreateSnapshot, |s| {
            if !s.volumes.contains_key(volume_id) {
                return Err(missing("InvalidVolume.NotFound", "volume", volume_id));
            }
            Ok(take_snapshot(s, volume_id, description))
        })
    }

    fn create_snapshots(&self, instance_id: &str, description: &str) -> Result<Vec<Snapshot>> {
        self.call(Operation::CreateSnapshots, |s| {
            let devices = s
                .instances
                .get(instance_id)
                .ok_or_else(|| missing("InvalidInstanceID.NotFound", "instance ID", instance_id))?
                .block_devices
                .clone();
            // One point in time for all: the state is locked for the whole set.
            Ok(devices
                .iter()
                .map(|b| take_snapshot(s, &b.volume_id, description))
                .collect())
        })
    }

    fn describe_snapshots(&self, ids: &[String]) -> Result<Vec<Snapshot>> {
        self.call(Operation::DescribeSnapshots, |s| {
            let wanted: Vec<String> = if ids.is_empty() {
                s.snapshots.keys().cloned().collect()
            } else {
                if let Some(id) = ids.iter().find(|id| !s.snapshots.contains_key(*id)) {
                    return Err(Ec2Error::client(
                        "InvalidSnapshot.NotFound",
                        format!("The snapshot '{id}' does not exist."),
                    ));
                }
                ids.to_vec()
            };
            let polls = s.snapshot_polls.max(1);
            let mut out = Vec::with_capacity(wanted.len());
            for id in wanted {
                let Some(r) = s.snapshots.get_mut(&id) else {
                    continue;
                };
                if r.polls_left > 0 {
                    r.polls_left -= 1;
                    let done = polls.saturating_sub(r.polls_left);
                    r.snapshot.progress = Some((u64::from(done) * 100 / u64::from(polls)) as u8);
                    if r.polls_left == 0 {
                        r.snapshot.state = Some(SnapshotState::Completed);
                        r.snapshot.progress = Some(100);
                    }
                }
                out.push(r.snapshot.clone());
            }
            Ok(out)
        })
    }

    fn stop_instances(&self, ids: &[String], _force: bool) -> Result<Vec<StateChange>> {
        self.call(Operation::StopInstances, |s| {
            if ids.is_empty() {
                return Err(Ec2Error::client(
                    "MissingParameter",
                    "The request must contain the parameter InstanceId",
                ));
            }
            // Every instance is checked before any changes: EC2 refuses the whole call.
            for id in ids {
                let i = s
                    .instances
                    .get(id)
                    .ok_or_else(|| missing("InvalidInstanceID.NotFound", "instance ID", id))?;
                if matches!(
                    i.state,
                    InstanceState::Terminated | InstanceState::ShuttingDown
                ) {
                    return Err(Ec2Error::client(
                        "IncorrectInstanceState",
                        format!(
                            "The instance '{id}' is not in a state from which it can be stopped."
                        ),
                    ));
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(i) = s.instances.get_mut(id) {
                    let previous = i.state;
                    let current = if previous == InstanceState::Stopped {
                        InstanceState::Stopped
                    } else {
                        InstanceState::Stopping
                    };
                    // The fake's shutdown is instant: the next describe says stopped.
                    i.state = InstanceState::Stopped;
                    out.push(StateChange {
                        instance_id: id.clone(),
                        previous,
                        current,
                    });
                }
            }
            Ok(out)
        })
    }
}

impl EbsApi for FakeEc2 {
    fn list_snapshot_blocks(
        &self,
        snapshot: &str,
        next: Option<&str>,
    ) -> Result<BlockPage, EbsError> {
        let r = self.ebs_snapshot(Operation::ListSnapshotBlocks, snapshot)?;
        let (_, blocks) = self.listed(&r)?;
        let (items, next) = page(&blocks, page_start(next)?, self.page_size);
        Ok(BlockPage {
            blocks: items
                .into_iter()
                .map(|i| (i, format!("{snapshot}/{i}")))
                .collect(),
            next,
            volume_size_gib: r.snapshot.size_gib,
            block_size: BLOCK_SIZE,
        })
    }

    fn get_snapshot_block(
        &self,
        snapshot: &str,
        index: u64,
        token: &str,
    ) -> Result<BlockData, EbsError> {
        let r = self.ebs_snapshot(Operation::GetSnapshotBlock, snapshot)?;
        if token != format!("{snapshot}/{index}") {
            return Err(EbsError::Fatal(format!(
                "ValidationException: bad block token {token:?}"
            )));
        }
        let data = match &r.image {
            None => None,
            Some(p) => {
                let o = self
                    .open_image(p)
                    .map_err(|e| EbsError::Fatal(format!("snapshot {snapshot}: {e}")))?;
                if o.extents
                    .has_data_in(index.saturating_mul(BLOCK_SIZE), BLOCK_SIZE)
                {
                    Some(Self::block(&o, index)?)
                } else {
                    None
                }
            }
        };
        let data = data.ok_or_else(|| EbsError::Service {
            status: 404,
            code: Some("ResourceNotFoundException".into()),
            message: format!("block {index} of snapshot {snapshot} was never written"),
        })?;
        let checksum =
            base64::engine::general_purpose::STANDARD.encode(crate::digest::sha256(&data));
        Ok(BlockData {
            data,
            checksum,
            algorithm: "SHA256".into(),
        })
    }

    fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        next: Option<&str>,
    ) -> Result<ChangedPage, EbsError> {
        let a = self.ebs_snapshot(Operation::ListChangedBlocks, first)?;
        let b = self.ebs_snapshot(Operation::ListChangedBlocks, second)?;
        if a.snapshot.volume_id != b.snapshot.volume_id {
            return Err(EbsError::Service {
                status: 400,
                code: Some("ValidationException".into()),
                message: format!("{first} and {second} are not snapshots of one volume"),
            });
        }
        let changed = if a.image == b.image {
            Vec::new()
        } else {
            let (oa, la) = self.listed(&a)?;
            let (ob, lb) = self.listed(&b)?;
            let union: BTreeSet<u64> = la.into_iter().chain(lb).collect();
            let zero = vec![0u8; BLOCK_SIZE as usize];
            let read = |o: &Option<Arc<Opened>>, i: u64| match o {
                Some(o) => Self::block(o, i),
                None => Ok(zero.clone()),
            };
            let mut changed = Vec::new();
            for i in union {
                if read(&oa, i)? != read(&ob, i)? {
                    changed.push(i);
                }
            }
            changed
        };
        let (blocks, next) = page(&changed, page_start(next)?, self.page_size);
        Ok(ChangedPage { blocks, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ebs::EbsSnapshot;
    use crate::error::ErrorKind;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed | 1)
            .collect()
    }

    /// A 1 GiB sparse raw file with data at `writes`.
    fn sparse(path: &Path, writes: &[(u64, Vec<u8>)]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(path).unwrap();
        f.set_len(GIB).unwrap();
        for (off, d) in writes {
            f.write_all_at(d, *off).unwrap();
        }
    }

    fn scenario() -> Scenario {
        Scenario::from_json(
            r#"{
              "images": [
                {"id": "ami-0000000000000w2r2", "name": "Windows_Server-2012-R2", "platform": "windows",
                 "platform_details": "Windows"},
                {"id": "ami-00000000000rhel67", "name": "RHEL-6.7_HVM", "boot_mode": "uefi"}
              ],
              "security_groups": [
                {"name": "web", "ingress": [
                  {"protocol": "tcp", "from_port": 445, "to_port": 445, "cidrs": ["10.0.0.0/16"]},
                  {"protocol": "-1", "source_groups": ["web"]}]}
              ],
              "instances": [
                {"name": "win1", "image": "ami-0000000000000w2r2", "instance_type": "m5.large",
                 "private_ip": "10.0.1.10", "security_groups": ["web"],
                 "volumes": [{"device": "/dev/sda1", "size_gib": 1, "data": "win.raw"},
                             {"device": "/dev/xvdf", "size_gib": 2, "volume_type": "gp3", "encrypted": true}]},
                {"name": "rhel1", "image": "ami-00000000000rhel67", "private_ip": "10.0.1.11"}
              ]
            }"#,
        )
        .unwrap()
    }

    fn loaded() -> (tempfile::TempDir, FakeEc2, ScenarioIds, Vec<(u64, Vec<u8>)>) {
        let d = tempfile::tempdir().unwrap();
        let writes = vec![
            (0, pattern(4096, 1)),
            (5 * BLOCK_SIZE + 100, pattern(BLOCK_SIZE as usize, 2)),
            (GIB - 512, pattern(512, 3)),
        ];
        sparse(&d.path().join("win.raw"), &writes);
        let (fake, ids) = FakeEc2::from_scenario(&scenario(), d.path()).unwrap();
        (d, fake, ids, writes)
    }

    #[test]
    fn a_scenario_loads_as_ec2_describes_it() {
        let (_d, fake, ids, _) = loaded();
        let all = fake.describe_instances(&[]).unwrap();
        assert_eq!(all.len(), 2);
        let win = &fake
            .describe_instances(&[ids.instance("win1").unwrap().to_string()])
            .unwrap()[0];
        assert_eq!(win.name.as_deref(), Some("win1"));
        assert_eq!(win.platform, Platform::Windows);
        assert_eq!(win.boot_mode, BootMode::LegacyBios);
        assert_eq!(win.private_ip.as_deref(), Some("10.0.1.10"));
        assert_eq!(win.block_devices.len(), 2);
        assert_eq!(
            win.root_volume_id(),
            Some(ids.volume("win1", "/dev/sda1").unwrap())
        );
        let rhel = all
            .iter()
            .find(|i| i.name.as_deref() == Some("rhel1"))
            .unwrap();
        assert_eq!(rhel.boot_mode, BootMode::Uefi);
        assert_eq!(rhel.platform, Platform::Linux);
        assert_eq!(rhel.block_devices.len(), 1, "the default root volume");
        let sg = &fake.describe_security_groups(&[]).unwrap()[0];
        assert_eq!(sg.ingress[1].source_group_ids, vec![sg.id.clone()]);
        assert!(sg.ingress[0].allows_tcp(445));
        let v = fake
            .describe_volumes(&[ids.volume("win1", "/dev/xvdf").unwrap().to_string()])
            .unwrap();
        assert_eq!((v[0].size_gib, v[0].encrypted), (2, true));
        assert_eq!(v[0].volume_type, "gp3");
        let e = fake
            .describe_instances(&["i-0000000000000dead".into()])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(
            e.cloud().unwrap().code.as_deref(),
            Some("InvalidInstanceID.NotFound")
        );
    }

    #[test]
    fn snapshots_read_the_volume_bytes_through_ebs() {
        let (d, fake, ids, writes) = loaded();
        let fake = Arc::new(fake.with_page_size(2));
        fake.set_now_ms(1_700_000_000_000);
        let win = ids.instance("win1").unwrap();
        let snaps = fake.create_snapshots(win, "crash-consistent").unwrap();
        assert_eq!(snaps.len(), 2);
        assert!(
            snaps
                .iter()
                .all(|s| s.start_time_ms == Some(1_700_000_000_000))
        );
        let root = &snaps[0];
        assert_eq!(
            root.volume_id.as_deref(),
            ids.volume("win1", "/dev/sda1").ok()
        );
        let img = EbsSnapshot::open(fake.clone(), &root.id, FAKE_RETRY).unwrap();
        assert_eq!(img.len(), GIB);
        let file = crate::image::open(&d.path().join("win.raw"), None).unwrap();
        assert!(
            crate::compare(&img, &*file, true, &crate::NoProgress)
                .unwrap()
                .identical
        );
        // Block 5 and 6 (the write straddles them), 0 and the last.
        assert_eq!(img.listed_blocks(), 4);
        let mut buf = vec![0u8; 4096];
        img.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, writes[0].1);
        // The zero volume has no blocks.
        let zero = EbsSnapshot::open(fake.clone(), &snaps[1].id, FAKE_RETRY).unwrap();
        assert_eq!(zero.listed_blocks(), 0);
        // A new image for the volume: later snapshots differ where the files differ.
        let next = d.path().join("win2.raw");
        let mut w2 = writes.clone();
        w2[1].1[7] ^= 0xff;
        w2.push((9 * BLOCK_SIZE, pattern(10, 4)));
        sparse(&next, &w2);
        let vol = ids.volume("win1", "/dev/sda1").unwrap();
        fake.set_volume_image(vol, Some(&next)).unwrap();
        let later = fake.create_snapshot(vol, "later").unwrap();
        let changed =
            crate::cloud::ebs::changed_blocks(&*fake, &root.id, &later.id, FAKE_RETRY).unwrap();
        assert_eq!(changed, vec![5, 9]);
        assert_eq!(
            fake.snapshot_image(&root.id),
            Some(d.path().join("win.raw"))
        );
    }

    #[test]
    fn faults_fire_once_in_order_and_retries_absorb_them() {
        let (_d, fake, ids, _) = loaded();
        let win = ids.instance("win1").unwrap().to_string();
        fake.inject(Operation::DescribeInstances, FaultKind::Throttled);
        fake.inject(Operation::DescribeInstances, FaultKind::ServerError);
        assert_eq!(fake.describe_instances(&[]).unwrap().len(), 2);
        assert_eq!(fake.calls(Operation::DescribeInstances), 3);
        // Lasting throttling: transient, after every attempt.
        fake.inject_times(Operation::DescribeVolumes, FaultKind::Throttled, None);
        let e = fake.describe_volumes(&[]).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(
            e.cloud().unwrap().code.as_deref(),
            Some("RequestLimitExceeded")
        );
        assert_eq!(fake.calls(Operation::DescribeVolumes), 4);
        fake.clear_faults();
        assert!(fake.describe_volumes(&[]).is_ok());
        // StopInstances refused: not retried, nothing changed; the next call goes through.
        fake.inject(
            Operation::StopInstances,
            FaultKind::Code {
                status: 403,
                code: "UnauthorizedOperation".into(),
                message: "You are not authorized to perform this operation.".into(),
            },
        );
        let e = fake
            .stop_instances(std::slice::from_ref(&win), true)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied);
        assert_eq!(fake.calls(Operation::StopInstances), 1);
        assert_eq!(
            fake.describe_instances(std::slice::from_ref(&win)).unwrap()[0].state,
            InstanceState::Running
        );
        let c = fake
            .stop_instances(std::slice::from_ref(&win), false)
            .unwrap();
        assert_eq!(
            (c[0].previous, c[0].current),
            (InstanceState::Running, InstanceState::Stopping)
        );
        assert_eq!(
            fake.describe_instances(std::slice::from_ref(&win)).unwrap()[0].state,
            InstanceState::Stopped
        );
        // A timeout on CreateSnapshot is not retried: it may have been done.
        fake.inject(Operation::CreateSnapshot, FaultKind::Timeout);
        let vol = ids.volume("win1", "/dev/sda1").unwrap();
        let e = fake.create_snapshot(vol, "x").unwrap_err();
        assert!(e.is_transient());
        assert_eq!(fake.calls(Operation::CreateSnapshot), 1);
        // EBS faults too.
        let s = fake.create_snapshot(vol, "y").unwrap();
        fake.inject_times(Operation::GetSnapshotBlock, FaultKind::ServerError, Some(2));
        let fake = Arc::new(fake);
        let img = EbsSnapshot::open(fake.clone(), &s.id, FAKE_RETRY).unwrap();
        let mut b = vec![0u8; 512];
        img.read_at(&mut b, 0).unwrap();
        assert_eq!(fake.calls(Operation::GetSnapshotBlock), 3);
    }

    #[test]
    fn the_state_round_trips_through_serde_and_stays_deterministic() {
        let (d, fake, ids, _) = loaded();
        fake.set_snapshot_polls(2);
        let vol = ids.volume("win1", "/dev/sda1").unwrap();
        let s = fake.create_snapshot(vol, "pending").unwrap();
        assert_eq!(s.state, Some(SnapshotState::Pending));
        fake.inject(Operation::StopInstances, FaultKind::ServerError);
        let json = serde_json::to_string(&fake.state()).unwrap();
        let back = FakeEc2::from_state(serde_json::from_str(&json).unwrap());
        assert_eq!(back.state(), fake.state());
        // Both go on the same way: the pending snapshot completes on the second poll; ids
        // continue from the same counter.
        for f in [&fake, &back] {
            let one = f.describe_snapshots(std::slice::from_ref(&s.id)).unwrap();
            assert_eq!(
                (one[0].state, one[0].progress),
                (Some(SnapshotState::Pending), Some(50))
            );
            let two = f.describe_snapshots(&[]).unwrap();
            assert_eq!(two[0].state, Some(SnapshotState::Completed));
        }
        assert_eq!(
            fake.create_snapshot(vol, "n").unwrap().id,
            back.create_snapshot(vol, "n").unwrap().id
        );
        assert_eq!(fake.state(), back.state());
        // Loading the same scenario twice gives the same state, byte for byte.
        let (again, ids2) = FakeEc2::from_scenario(&scenario(), d.path()).unwrap();
        let (again2, _) = FakeEc2::from_scenario(&scenario(), d.path()).unwrap();
        assert_eq!(ids, ids2);
        assert_eq!(
            serde_json::to_string(&again.state()).unwrap(),
            serde_json::to_string(&again2.state()).unwrap()
        );
        // A pending snapshot is not readable through EBS yet.
        again.set_snapshot_polls(1);
        let p = again.create_snapshot(vol, "p").unwrap();
        let e = EbsSnapshot::open(Arc::new(again), &p.id, FAKE_RETRY).unwrap_err();
        assert!(e.to_string().contains("not completed"), "{e}");
    }

    #[test]
    fn bad_scenarios_are_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let mut s = scenario();
        s.instances[1].image = "ami-nope".into();
        let e = FakeEc2::from_scenario(&s, d.path()).unwrap_err();
        assert!(e.to_string().contains("unknown image ami-nope"), "{e}");
        let mut s = scenario();
        s.instances[0].security_groups.push("db".into());
        let e = FakeEc2::from_scenario(&s, d.path()).unwrap_err();
        assert!(
            e.to_string().contains("unknown security group \"db\""),
            "{e}"
        );
        // A missing data file; one too large for its volume.
        let e = FakeEc2::from_scenario(&scenario(), d.path()).unwrap_err();
        assert!(e.to_string().contains("win.raw"), "{e}");
        let big = d.path().join("win.raw");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(GIB + 1)
            .unwrap();
        let e = FakeEc2::from_scenario(&scenario(), d.path()).unwrap_err();
        assert!(e.to_string().contains("more than 1 GiB"), "{e}");
        let e = Scenario::from_json(r#"{"instances": [], "vpc": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("vpc"), "{e}");
        // Stopping a terminated instance: a conflict, and nothing changes.
        let (_d, fake, ids, _) = loaded();
        let win = ids.instance("win1").unwrap();
        let rhel = ids.instance("rhel1").unwrap();
        fake.set_instance_state(rhel, InstanceState::Terminated)
            .unwrap();
        let e = fake
            .stop_instances(&[win.to_string(), rhel.to_string()], false)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        assert_eq!(
            fake.describe_instances(&[win.to_string()]).unwrap()[0].state,
            InstanceState::Running
        );
    }
}
