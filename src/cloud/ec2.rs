//! The EC2 calls a migration needs, behind one narrow trait: [`Ec2Api`].
//!
//! - What is read: instances ([`Instance`]: private IP, platform, architecture, virtualization
//!   type, boot mode, instance type, state, tags, security groups, block devices), volumes
//!   ([`Volume`]), images ([`Image`]), security groups with their ingress rules
//!   ([`SecurityGroup`], [`IngressRule`]) and snapshots ([`Snapshot`]).
//! - What is done: a snapshot of one volume ([`Ec2Api::create_snapshot`]) or a crash-consistent
//!   set of all the volumes of an instance ([`Ec2Api::create_snapshots`]), and stopping
//!   instances ([`Ec2Api::stop_instances`], what a failover tries before it starts).
//!
//! The implementations: [`FakeEc2`] ([`fake::ec2`](super::fake::ec2)), in process, loaded from a
//! [`Scenario`], with injectable faults, whose snapshots are read through the EBS direct APIs
//! ([`EbsApi`](super::ebs::EbsApi)) from the volumes' image files; and
//! [`AwsEc2`](super::aws_ec2::AwsEc2), the real service (or moto) over `aws-sdk-ec2`.
//!
//! Every method is synchronous and retries transient failures itself under a
//! [`RetryPolicy`](super::retry::RetryPolicy); what still fails reaches the caller as an
//! [`Error`](crate::Error) with a [`CloudError`](crate::CloudError) of service `"ec2"`: the
//! HTTP status, EC2's error code, and whether it is transient. EC2 answers HTTP 400 for a
//! missing resource; its code (`InvalidInstanceID.NotFound`, `InvalidVolume.NotFound`, …) makes
//! the error's kind [`NotFound`](crate::ErrorKind::NotFound); `UnauthorizedOperation` is
//! [`Denied`](crate::ErrorKind::Denied); `RequestLimitExceeded` and 5xx answers are transient.
//!
//! [`instance_type_size`] sizes an instance type (vCPUs, memory) from a table, so a target Azure
//! size can be chosen; [`readable_snapshot`] is how a caller finds, for a volume, a snapshot the
//! EBS direct APIs can read when running against moto (see [`aws_ec2`](super::aws_ec2)).

use super::ebs::EbsApi;
pub use super::fake::ec2::{
    FakeEc2, FaultKind, ImageSpec, IngressSpec, InstanceSpec, Operation, Scenario, ScenarioIds,
    SecurityGroupSpec, VolumeSpec,
};
use super::retry::Transient;
use crate::error::{CloudError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The tag a volume carries, on an emulator only, naming a snapshot written through the EBS
/// direct APIs (StartSnapshot / PutSnapshotBlock) with that volume's bytes: moto cannot read the
/// snapshots EC2's CreateSnapshot makes through the EBS direct APIs, so [`readable_snapshot`]
/// falls back to this one. Real EC2 volumes never carry it.
pub const READABLE_SNAPSHOT_TAG: &str = "ec2azure:readable-snapshot";

/// The tag key EC2 shows as an instance's name.
pub const NAME_TAG: &str = "Name";

/// The operating-system family EC2 reports (`Platform`): `windows`, or absent for Linux. moto
/// says `Linux/UNIX` for some Linux images; that is Linux too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Windows.
    Windows,
    /// Linux or another Unix (EC2 leaves `Platform` out).
    Linux,
}

impl Platform {
    /// What EC2's `Platform` field says: `windows` (any case) is Windows; anything else, or
    /// nothing, is Linux.
    pub fn from_ec2(platform: Option<&str>) -> Platform {
        match platform {
            Some(p) if p.eq_ignore_ascii_case("windows") => Platform::Windows,
            _ => Platform::Linux,
        }
    }
}

/// The CPU architecture (`Architecture`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    /// 32-bit x86.
    #[serde(rename = "i386")]
    I386,
    /// 64-bit x86.
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM.
    #[serde(rename = "arm64")]
    Arm64,
    /// 64-bit x86 on Mac instances.
    #[serde(rename = "x86_64_mac")]
    X86_64Mac,
    /// 64-bit ARM on Mac instances.
    #[serde(rename = "arm64_mac")]
    Arm64Mac,
    /// A value this tool does not know, kept as EC2 spelled it.
    #[serde(untagged)]
    Other(String),
}

impl Architecture {
    /// Parses EC2's spelling.
    pub fn parse(s: &str) -> Architecture {
        match s {
            "i386" => Architecture::I386,
            "x86_64" => Architecture::X86_64,
            "arm64" => Architecture::Arm64,
            "x86_64_mac" => Architecture::X86_64Mac,
            "arm64_mac" => Architecture::Arm64Mac,
            o => Architecture::Other(o.to_string()),
        }
    }

    /// EC2's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Architecture::I386 => "i386",
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
            Architecture::X86_64Mac => "x86_64_mac",
            Architecture::Arm64Mac => "arm64_mac",
            Architecture::Other(o) => o,
        }
    }

    /// `true` for the 64-bit architectures.
    pub fn is_64_bit(&self) -> bool {
        matches!(
            self,
            Architecture::X86_64
                | Architecture::Arm64
                | Architecture::X86_64Mac
                | Architecture::Arm64Mac
        )
    }
}

/// How the instance is virtualized (`VirtualizationType`); Site Recovery migrates HVM only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Virtualization {
    /// Hardware virtual machine.
    Hvm,
    /// Paravirtual (Xen PV): not migratable.
    Paravirtual,
}

impl Virtualization {
    /// Parses EC2's spelling (`hvm`, `paravirtual`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Virtualization> {
        match s {
            "hvm" => Some(Virtualization::Hvm),
            "paravirtual" => Some(Virtualization::Paravirtual),
            _ => None,
        }
    }
}

/// The firmware an instance or image boots with (`BootMode`, `CurrentInstanceBootMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    /// BIOS.
    LegacyBios,
    /// UEFI.
    Uefi,
    /// UEFI when the instance type supports it, else BIOS (an image setting).
    UefiPreferred,
    /// Not reported (moto never reports it on instances; older images leave it out).
    Unknown,
}

impl BootMode {
    /// Parses EC2's spelling; anything else, or nothing, is [`BootMode::Unknown`].
    pub fn parse(s: Option<&str>) -> BootMode {
        match s {
            Some("legacy-bios") => BootMode::LegacyBios,
            Some("uefi") => BootMode::Uefi,
            Some("uefi-preferred") => BootMode::UefiPreferred,
            _ => BootMode::Unknown,
        }
    }
}

/// The boot mode that decides an instance's firmware: the instance's own when EC2 reports it,
/// else its image's, else unknown. (EC2 boots an image marked `uefi-preferred` with UEFI when
/// the instance type supports it; the instance's `CurrentInstanceBootMode` says which.)
pub fn effective_boot_mode(instance: &Instance, image: Option<&Image>) -> BootMode {
    match (instance.boot_mode, image.map(|i| i.boot_mode)) {
        (BootMode::Unknown, Some(b)) => b,
        (b, _) => b,
    }
}

/// An instance's state (`InstanceState.Name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Starting.
    Pending,
    /// Running.
    Running,
    /// Being terminated.
    ShuttingDown,
    /// Terminated.
    Terminated,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
}

impl InstanceState {
    /// Parses EC2's spelling.
    pub fn parse(s: &str) -> Option<InstanceState> {
        Some(match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            _ => return None,
        })
    }
}

/// A volume attached to an instance at a device name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// The device name (`/dev/sda1`, `/dev/xvdf`).
    pub device: String,
    /// The EBS volume.
    pub volume_id: String,
}

/// One EC2 instance, as DescribeInstances reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// The `Name` tag, if any.
    pub name: Option<String>,
    /// Every tag.
    pub tags: BTreeMap<String, String>,
    /// The primary private IPv4 address.
    pub private_ip: Option<String>,
    /// Windows or Linux.
    pub platform: Platform,
    /// `PlatformDetails` (`Windows`, `Red Hat Enterprise Linux`, `Linux/UNIX`), when reported
    /// (moto does not).
    pub platform_details: Option<String>,
    /// CPU architecture.
    pub architecture: Architecture,
    /// HVM or paravirtual; `None` when not reported.
    pub virtualization: Option<Virtualization>,
    /// `CurrentInstanceBootMode` (or `BootMode`); [`BootMode::Unknown`] when not reported, as on
    /// moto: see [`effective_boot_mode`].
    pub boot_mode: BootMode,
    /// `t3.medium`, `m5.large`, …
    pub instance_type: String,
    /// Its state.
    pub state: InstanceState,
    /// The image it was launched from.
    pub image_id: String,
    /// Its security groups.
    pub security_group_ids: Vec<String>,
    /// The root device (`/dev/sda1`).
    pub root_device_name: Option<String>,
    /// Its EBS volumes by device, in EC2's order.
    pub block_devices: Vec<BlockDevice>,
    /// Its subnet.
    pub subnet_id: Option<String>,
    /// Its VPC.
    pub vpc_id: Option<String>,
}

impl Instance {
    /// The volume at the root device, if EC2 lists one.
    pub fn root_volume_id(&self) -> Option<&str> {
        let root = self.root_device_name.as_deref()?;
        self.block_devices
            .iter()
            .find(|b| b.device == root)
            .map(|b| b.volume_id.as_str())
    }
}

/// A volume's attachment to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    /// The instance.
    pub instance_id: String,
    /// The device name there.
    pub device: String,
}

/// One EBS volume, as DescribeVolumes reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// `vol-…`.
    pub id: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// `gp2`, `gp3`, `io1`, `standard`, …
    pub volume_type: String,
    /// Encrypted at rest.
    pub encrypted: bool,
    /// `creating`, `available`, `in-use`, `deleting`, `deleted`, `error`.
    pub state: String,
    /// Where it is attached.
    pub attachments: Vec<VolumeAttachment>,
    /// The snapshot it was created from, if any.
    pub snapshot_id: Option<String>,
    /// Every tag.
    pub tags: BTreeMap<String, String>,
}

/// One image (AMI), as DescribeImages reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `ami-…`.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// Windows or Linux.
    pub platform: Platform,
    /// `PlatformDetails`, when reported.
    pub platform_details: Option<String>,
    /// CPU architecture.
    pub architecture: Architecture,
    /// HVM or paravirtual; `None` when not reported.
    pub virtualization: Option<Virtualization>,
    /// Its boot mode; [`BootMode::Unknown`] when not reported.
    pub boot_mode: BootMode,
    /// The root device name.
    pub root_device_name: Option<String>,
}

/// The IP protocol of a security-group rule (EC2's `IpProtocol`: a name, a number, or `-1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Every protocol and port (`-1`).
    All,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Another protocol, by number or name as EC2 gave it.
    #[serde(untagged)]
    Other(String),
}

impl Protocol {
    /// Parses EC2's `IpProtocol` (names and numbers alike).
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "-1" | "all" => Protocol::All,
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            "icmp" | "1" => Protocol::Icmp,
            "icmpv6" | "58" => Protocol::Icmpv6,
            o => Protocol::Other(o.to_string()),
        }
    }

    /// EC2's spelling (`-1` for all).
    pub fn as_ec2(&self) -> &str {
        match self {
            Protocol::All => "-1",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Other(o) => o,
        }
    }
}

/// One inbound rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    /// The protocol.
    pub protocol: Protocol,
    /// The first port (TCP/UDP) or ICMP type; `None` for every port.
    pub from_port: Option<i32>,
    /// The last port (TCP/UDP) or ICMP code; `None` for every port.
    pub to_port: Option<i32>,
    /// Source address ranges (IPv4 and IPv6 CIDRs).
    pub cidrs: Vec<String>,
    /// Source security groups.
    pub source_group_ids: Vec<String>,
}

impl IngressRule {
    /// `true` when the rule lets in TCP traffic to `port` (from its sources): a TCP rule whose
    /// range holds the port, or an all-protocols rule.
    pub fn allows_tcp(&self, port: u16) -> bool {
        match self.protocol {
            Protocol::All => true,
            Protocol::Tcp => {
                let p = i32::from(port);
                // -1 or absent bounds mean every port.
                let from = self.from_port.filter(|&f| f >= 0).unwrap_or(0);
                let to = self.to_port.filter(|&t| t >= 0).unwrap_or(65535);
                from <= p && p <= to
            }
            _ => false,
        }
    }
}

/// One security group, as DescribeSecurityGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its VPC.
    pub vpc_id: Option<String>,
    /// Inbound rules, in EC2's order.
    pub ingress: Vec<IngressRule>,
}

/// A snapshot's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Being taken.
    Pending,
    /// Complete: readable.
    Completed,
    /// Failed.
    Error,
    /// Being restored from the archive tier.
    Recovering,
    /// Restorable from the recycle bin.
    Recoverable,
}

impl SnapshotState {
    /// Parses EC2's spelling.
    pub fn parse(s: &str) -> Option<SnapshotState> {
        Some(match s {
            "pending" => SnapshotState::Pending,
            "completed" => SnapshotState::Completed,
            "error" => SnapshotState::Error,
            "recovering" => SnapshotState::Recovering,
            "recoverable" => SnapshotState::Recoverable,
            _ => return None,
        })
    }
}

/// One EBS snapshot, as DescribeSnapshots (or CreateSnapshot) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `snap-…`.
    pub id: String,
    /// The volume it was taken from. EC2 says `vol-ffffffff` for a snapshot written through the
    /// EBS direct APIs; moto makes up a volume id that exists nowhere.
    pub volume_id: Option<String>,
    /// Its state; `None` when the answer had none (moto's CreateSnapshots).
    pub state: Option<SnapshotState>,
    /// Progress in percent, when reported.
    pub progress: Option<u8>,
    /// The volume's size in GiB.
    pub size_gib: u64,
    /// When it was started, in milliseconds since 1970-01-01 UTC.
    pub start_time_ms: Option<u64>,
    /// Its description.
    pub description: Option<String>,
    /// Every tag.
    pub tags: BTreeMap<String, String>,
}

/// Parses EC2's progress (`"100%"`, `"42%"`, or empty).
pub fn parse_progress(s: &str) -> Option<u8> {
    s.trim().trim_end_matches('%').parse::<u8>().ok()
}

/// What StopInstances did to one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// The instance.
    pub instance_id: String,
    /// Its state before the call.
    pub previous: InstanceState,
    /// Its state after the call (`stopping`, or `stopped`).
    pub current: InstanceState,
}

/// The EC2 calls a migration needs. Each call retries transient failures under the
/// implementation's [`RetryPolicy`](super::retry::RetryPolicy).
///
/// An empty id list asks for everything: every instance, volume, image or security group the
/// account can see (images: those owned by the account, and those the account's instances
/// use), every snapshot the account owns.
pub trait Ec2Api: Send + Sync {
    /// DescribeInstances: the instances `ids` (or all), in the service's order.
    ///
    /// # Errors
    /// An unknown id: [`NotFound`](crate::ErrorKind::NotFound) (`InvalidInstanceID.NotFound`);
    /// a call that keeps failing.
    fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>>;

    /// DescribeVolumes: the volumes `ids` (or all).
    ///
    /// # Errors
    /// An unknown id (`InvalidVolume.NotFound`); a call that keeps failing.
    fn describe_volumes(&self, ids: &[String]) -> Result<Vec<Volume>>;

    /// DescribeImages: the images `ids` (or the account's own and its instances').
    ///
    /// # Errors
    /// An unknown id (`InvalidAMIID.NotFound`); a call that keeps failing.
    fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>>;

    /// DescribeSecurityGroups: the groups `ids` (or all) with their ingress rules.
    ///
    /// # Errors
    /// An unknown id (`InvalidGroup.NotFound`); a call that keeps failing.
    fn describe_security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroup>>;

    /// CreateSnapshot of one volume. Not retried once the request may have reached the service
    /// (a timeout): that could leave two snapshots.
    ///
    /// # Errors
    /// An unknown volume (`InvalidVolume.NotFound`); a call that keeps failing.
    fn create_snapshot(&self, volume_id: &str, description: &str) -> Result<Snapshot>;

    /// CreateSnapshots: a crash-consistent set, one snapshot of every EBS volume of the
    /// instance, taken at one point in time; in the service's order.
    ///
    /// # Errors
    /// An unknown instance (`InvalidInstanceID.NotFound`); a call that keeps failing.
    fn create_snapshots(&self, instance_id: &str, description: &str) -> Result<Vec<Snapshot>>;

    /// DescribeSnapshots: the snapshots `ids` (or all the account owns).
    ///
    /// # Errors
    /// An unknown id (`InvalidSnapshot.NotFound`); a call that keeps failing.
    fn describe_snapshots(&self, ids: &[String]) -> Result<Vec<Snapshot>>;

    /// StopInstances, `force` as EC2's `Force` (no clean OS shutdown). A failover calls it and
    /// goes on when it fails.
    ///
    /// # Errors
    /// An unknown instance; a state that cannot be stopped (`IncorrectInstanceState`:
    /// [`Conflict`](crate::ErrorKind::Conflict)); a call that keeps failing.
    fn stop_instances(&self, ids: &[String], force: bool) -> Result<Vec<StateChange>>;
}

impl<T: Ec2Api + ?Sized> Ec2Api for std::sync::Arc<T> {
    fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        (**self).describe_instances(ids)
    }
    fn describe_volumes(&self, ids: &[String]) -> Result<Vec<Volume>> {
        (**self).describe_volumes(ids)
    }
    fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>> {
        (**self).describe_images(ids)
    }
    fn describe_security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroup>> {
        (**self).describe_security_groups(ids)
    }
    fn create_snapshot(&self, volume_id: &str, description: &str) -> Result<Snapshot> {
        (**self).create_snapshot(volume_id, description)
    }
    fn create_snapshots(&self, instance_id: &str, description: &str) -> Result<Vec<Snapshot>> {
        (**self).create_snapshots(instance_id, description)
    }
    fn describe_snapshots(&self, ids: &[String]) -> Result<Vec<Snapshot>> {
        (**self).describe_snapshots(ids)
    }
    fn stop_instances(&self, ids: &[String], force: bool) -> Result<Vec<StateChange>> {
        (**self).stop_instances(ids, force)
    }
}

/// A failure of one EC2 call, before retries: what the fake injects and what the real client
/// classifies the SDK's errors into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ec2Error {
    /// The service answered with an error: its HTTP status, its EC2 error code, its message.
    Service {
        /// The HTTP status.
        status: u16,
        /// EC2's error code (`InvalidInstanceID.NotFound`, `RequestLimitExceeded`, …).
        code: Option<String>,
        /// The service's message.
        message: String,
    },
    /// No answer in time, and the call is safe to repeat (a read).
    Timeout,
    /// No answer in time to a call that changes something (CreateSnapshot): it may have been
    /// done, so it is not repeated blindly. Transient: the caller may look and try again.
    Unsure(String),
    /// The request could not be sent: retry.
    Connection(String),
    /// Anything else (an answer that breaks the API's rules): do not retry.
    Fatal(String),
}

impl Ec2Error {
    /// A throttling answer, as EC2 gives it (HTTP 503 `RequestLimitExceeded`).
    pub fn throttled() -> Ec2Error {
        Ec2Error::Service {
            status: 503,
            code: Some("RequestLimitExceeded".into()),
            message: "Request limit exceeded.".into(),
        }
    }

    /// A server error (HTTP 500 `InternalError`).
    pub fn server() -> Ec2Error {
        Ec2Error::Service {
            status: 500,
            code: Some("InternalError".into()),
            message: "An internal error has occurred.".into(),
        }
    }

    /// `code` answered with HTTP 400 and `message`.
    pub fn client(code: &str, message: impl Into<String>) -> Ec2Error {
        Ec2Error::Service {
            status: 400,
            code: Some(code.to_string()),
            message: message.into(),
        }
    }
}

/// EC2 error codes that mean "try again later" whatever the HTTP status says.
const TRANSIENT_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    // A snapshot quota of in-flight snapshots per volume: later it frees up.
    "SnapshotCreationPerVolumeRateExceeded",
];

impl std::error::Error for Ec2Error {}

impl std::fmt::Display for Ec2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ec2Error::Service {
                status,
                code,
                message,
            } => write!(
                f,
                "HTTP {status} {}: {message}",
                code.as_deref().unwrap_or("(no error code)")
            ),
            Ec2Error::Timeout => f.write_str("timed out"),
            Ec2Error::Unsure(m) => write!(f, "no answer in time, the outcome is unknown: {m}"),
            Ec2Error::Connection(m) => write!(f, "connection failed: {m}"),
            Ec2Error::Fatal(m) => f.write_str(m),
        }
    }
}

impl Transient for Ec2Error {
    fn retryable(&self) -> bool {
        match self {
            Ec2Error::Timeout | Ec2Error::Connection(_) => true,
            Ec2Error::Service { status, code, .. } => {
                *status == 429
                    || *status >= 500
                    || code
                        .as_deref()
                        .is_some_and(|c| TRANSIENT_CODES.contains(&c))
            }
            Ec2Error::Unsure(_) | Ec2Error::Fatal(_) => false,
        }
    }

    fn cloud(&self) -> CloudError {
        let (status, code) = match self {
            Ec2Error::Service { status, code, .. } => (Some(*status), code.clone()),
            Ec2Error::Timeout | Ec2Error::Unsure(_) => (None, Some("Timeout".to_string())),
            Ec2Error::Connection(_) => (None, Some("ConnectionFailed".to_string())),
            Ec2Error::Fatal(_) => (None, None),
        };
        CloudError {
            service: "ec2",
            status,
            code,
            transient: self.retryable() || matches!(self, Ec2Error::Unsure(_)),
        }
    }
}

/// For a call that changes something: a timeout means the outcome is unknown, so it must not
/// be retried blindly.
pub(crate) fn unsure_on_timeout(e: Ec2Error) -> Ec2Error {
    match e {
        Ec2Error::Timeout => Ec2Error::Unsure("the request may have been carried out".into()),
        e => e,
    }
}

/// vCPUs and memory of an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSize {
    /// Default vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// vCPUs and memory (GiB × 1024 = MiB) of the common instance types, from AWS's "Amazon EC2
/// instance types" specifications (docs.aws.amazon.com/ec2/latest/instancetypes: gp.html for
/// T2, T3 and M5, co.html for C5, mo.html for R5), the same values EC2's
/// DescribeInstanceTypes gives as `VCpuInfo.DefaultVCpus` and `MemoryInfo.SizeInMiB` (checked
/// against moto's copy of that data, `moto/ec2/resources/instance_types.json.gz`: all 38 rows agree).
pub const INSTANCE_TYPES: &[(&str, u32, u64)] = &[
    ("t2.nano", 1, 512),
    ("t2.micro", 1, 1024),
    ("t2.small", 1, 2048),
    ("t2.medium", 2, 4096),
    ("t2.large", 2, 8192),
    ("t2.xlarge", 4, 16384),
    ("t2.2xlarge", 8, 32768),
    ("t3.nano", 2, 512),
    ("t3.micro", 2, 1024),
    ("t3.small", 2, 2048),
    ("t3.medium", 2, 4096),
    ("t3.large", 2, 8192),
    ("t3.xlarge", 4, 16384),
    ("t3.2xlarge", 8, 32768),
    ("m5.large", 2, 8192),
    ("m5.xlarge", 4, 16384),
    ("m5.2xlarge", 8, 32768),
    ("m5.4xlarge", 16, 65536),
    ("m5.8xlarge", 32, 131072),
    ("m5.12xlarge", 48, 196608),
    ("m5.16xlarge", 64, 262144),
    ("m5.24xlarge", 96, 393216),
    ("c5.large", 2, 4096),
    ("c5.xlarge", 4, 8192),
    ("c5.2xlarge", 8, 16384),
    ("c5.4xlarge", 16, 32768),
    ("c5.9xlarge", 36, 73728),
    ("c5.12xlarge", 48, 98304),
    ("c5.18xlarge", 72, 147456),
    ("c5.24xlarge", 96, 196608),
    ("r5.large", 2, 16384),
    ("r5.xlarge", 4, 32768),
    ("r5.2xlarge", 8, 65536),
    ("r5.4xlarge", 16, 131072),
    ("r5.8xlarge", 32, 262144),
    ("r5.12xlarge", 48, 393216),
    ("r5.16xlarge", 64, 524288),
    ("r5.24xlarge", 96, 786432),
];

/// The vCPUs and memory of `instance_type` from [`INSTANCE_TYPES`]; `None` for a type the
/// table does not hold.
pub fn instance_type_size(instance_type: &str) -> Option<InstanceSize> {
    INSTANCE_TYPES
        .iter()
        .find(|(n, _, _)| *n == instance_type)
        .map(|&(_, vcpus, memory_mib)| InstanceSize { vcpus, memory_mib })
}

/// The snapshot to read `volume`'s bytes from through the EBS direct APIs, given `created`, the
/// snapshot CreateSnapshot(s) made of it.
///
/// Against real EC2 (and the in-process fake) that is `created` itself. moto's EBS direct APIs
/// cannot read snapshots made by EC2's CreateSnapshot (they answer HTTP 500), so a volume on
/// moto carries [`READABLE_SNAPSHOT_TAG`] naming a snapshot written through StartSnapshot /
/// PutSnapshotBlock with the same bytes ([`AwsEc2::load_scenario`](super::aws_ec2::AwsEc2)
/// does that). The tag is used only when the volume has it and `created` cannot be listed: one
/// ListSnapshotBlocks call on `created`, not retried; on failure, the tagged snapshot.
///
/// # Errors
/// None of its own: a snapshot that cannot be read shows when it is opened
/// ([`EbsSnapshot::open`](super::ebs::EbsSnapshot::open)).
pub fn readable_snapshot(ebs: &dyn EbsApi, volume: &Volume, created: &str) -> String {
    match volume.tags.get(READABLE_SNAPSHOT_TAG) {
        None => created.to_string(),
        Some(pushed) => match ebs.list_snapshot_blocks(created, None) {
            Ok(_) => created.to_string(),
            Err(_) => pushed.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn spellings_parse_and_normalise() {
        assert_eq!(Platform::from_ec2(Some("windows")), Platform::Windows);
        assert_eq!(Platform::from_ec2(Some("Windows")), Platform::Windows);
        assert_eq!(Platform::from_ec2(Some("Linux/UNIX")), Platform::Linux);
        assert_eq!(Platform::from_ec2(None), Platform::Linux);
        assert_eq!(Architecture::parse("x86_64"), Architecture::X86_64);
        assert!(Architecture::parse("arm64").is_64_bit());
        assert!(!Architecture::parse("i386").is_64_bit());
        assert_eq!(
            Architecture::parse("riscv"),
            Architecture::Other("riscv".into())
        );
        assert_eq!(
            serde_json::to_string(&Architecture::X86_64).unwrap(),
            "\"x86_64\""
        );
        let other: Architecture = serde_json::from_str("\"riscv\"").unwrap();
        assert_eq!(other, Architecture::Other("riscv".into()));
        assert_eq!(
            BootMode::parse(Some("uefi-preferred")),
            BootMode::UefiPreferred
        );
        assert_eq!(BootMode::parse(None), BootMode::Unknown);
        assert_eq!(
            serde_json::to_string(&BootMode::LegacyBios).unwrap(),
            "\"legacy-bios\""
        );
        assert_eq!(Protocol::parse("-1"), Protocol::All);
        assert_eq!(Protocol::parse("6"), Protocol::Tcp);
        assert_eq!(Protocol::parse("47"), Protocol::Other("47".into()));
        assert_eq!(parse_progress("100%"), Some(100));
        assert_eq!(parse_progress(""), None);
        assert_eq!(
            InstanceState::parse("shutting-down"),
            Some(InstanceState::ShuttingDown)
        );
        assert_eq!(
            Virtualization::parse("paravirtual"),
            Some(Virtualization::Paravirtual)
        );
    }

    #[test]
    fn ingress_rules_cover_ports() {
        let rule = |p: &str, f, t| IngressRule {
            protocol: Protocol::parse(p),
            from_port: f,
            to_port: t,
            cidrs: vec!["10.0.0.0/16".into()],
            source_group_ids: vec![],
        };
        assert!(rule("tcp", Some(445), Some(445)).allows_tcp(445));
        assert!(!rule("tcp", Some(445), Some(445)).allows_tcp(22));
        assert!(rule("tcp", Some(0), Some(65535)).allows_tcp(22));
        assert!(rule("-1", None, None).allows_tcp(9443));
        assert!(!rule("udp", Some(22), Some(22)).allows_tcp(22));
        assert!(rule("tcp", Some(-1), Some(-1)).allows_tcp(135));
    }

    #[test]
    fn the_instance_type_table_sizes_types() {
        assert_eq!(
            instance_type_size("m5.large"),
            Some(InstanceSize {
                vcpus: 2,
                memory_mib: 8192
            })
        );
        assert_eq!(instance_type_size("c5.9xlarge").unwrap().vcpus, 36);
        assert_eq!(
            instance_type_size("r5.24xlarge").unwrap().memory_mib,
            786432
        );
        assert_eq!(instance_type_size("x1e.32xlarge"), None);
        // One row per type; memory grows with vCPUs inside a family.
        let mut names: Vec<&str> = INSTANCE_TYPES.iter().map(|r| r.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INSTANCE_TYPES.len());
    }

    #[test]
    fn errors_keep_the_answer_and_choose_the_kind() {
        let policy = crate::cloud::retry::RetryPolicy {
            attempts: 3,
            base_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(1),
        };
        let cases = [
            (
                Ec2Error::client("InvalidInstanceID.NotFound", "no such instance"),
                ErrorKind::NotFound,
                false,
                1,
            ),
            (
                Ec2Error::Service {
                    status: 403,
                    code: Some("UnauthorizedOperation".into()),
                    message: "no".into(),
                },
                ErrorKind::Denied,
                false,
                1,
            ),
            (
                Ec2Error::client("IncorrectInstanceState", "terminated"),
                ErrorKind::Conflict,
                false,
                1,
            ),
            (Ec2Error::throttled(), ErrorKind::Cloud, true, 3),
            (Ec2Error::server(), ErrorKind::Cloud, true, 3),
            (Ec2Error::Timeout, ErrorKind::Cloud, true, 3),
            (Ec2Error::Unsure("x".into()), ErrorKind::Cloud, true, 1),
        ];
        for (err, kind, transient, calls) in cases {
            let mut n = 0;
            let e = policy
                .run::<(), _>("DescribeInstances", || {
                    n += 1;
                    Err(err.clone())
                })
                .unwrap_err();
            assert_eq!(e.kind(), kind, "{err}");
            assert_eq!(e.is_transient(), transient, "{err}");
            assert_eq!(n, calls, "{err}");
            let c = e.cloud().unwrap();
            assert_eq!(c.service, "ec2");
            assert!(e.to_string().contains("DescribeInstances"), "{e}");
        }
    }
}
