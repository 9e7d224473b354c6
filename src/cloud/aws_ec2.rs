//! The real EC2 over HTTP, through the official `aws-sdk-ec2`: an [`Ec2Api`], also for moto.
//!
//! [`AwsEc2::new`]`(endpoint, region)` is built like [`AwsEbs::new`](super::aws_ebs::AwsEbs::new)
//! and from the same setup ([`aws_sdk`](super::aws_sdk)): region, credentials and endpoint
//! from the usual AWS settings (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles)
//! unless given; the SDK's retries off and [`RetryPolicy`] deciding (throttling
//! `RequestLimitExceeded` and 5xx retried, with backoff, a bounded number of times); a timeout
//! per call; a small tokio runtime under synchronous calls. Every answer is mapped into the
//! domain types of [`ec2`](super::ec2); every failure keeps EC2's status and error code
//! ([`Ec2Error`]), so `InvalidInstanceID.NotFound` is a not-found error and
//! `UnauthorizedOperation` a denied one.
//!
//! # Against moto: what differs, and how this tool works around it
//!
//! moto (5.2.5, the version the tests pin) stands in for EC2 and EBS in the tests. What it does
//! not do, and what the design does instead:
//!
//! - **Its EBS direct APIs cannot read snapshots made by EC2's CreateSnapshot(s)** (HTTP 500:
//!   its EBS backend knows only snapshots written through StartSnapshot / PutSnapshotBlock).
//!   Those it does mirror into EC2: DescribeSnapshots shows them `completed` at `100%`, with
//!   their description and StartSnapshot's tags, but with a **made-up `VolumeId`** that names
//!   no volume (real EC2 says `vol-ffffffff` for such snapshots). So nothing in EC2 ties a
//!   pushed snapshot to a volume; a tag does: [`AwsEc2::load_scenario`] pushes each volume's
//!   bytes with [`AwsEbs::push`](super::aws_ebs::AwsEbs::push) and tags the **volume** with
//!   [`READABLE_SNAPSHOT_TAG`] = the pushed snapshot's id (and the snapshot with
//!   `ec2azure:volume-id`). Initial replication still calls CreateSnapshot(s) as Site
//!   Recovery's flow does, then asks [`readable_snapshot`](super::ec2::readable_snapshot) which
//!   snapshot to read: the created one, unless the volume carries the tag and the created one
//!   cannot be listed through EBS (one ListSnapshotBlocks call); then the tagged one. Against
//!   real EC2 no volume carries the tag and the created snapshot is read.
//! - **No `BootMode`, `CurrentInstanceBootMode` or `PlatformDetails` on instances**: an
//!   instance's boot mode is then [`BootMode::Unknown`] and
//!   [`effective_boot_mode`](super::ec2::effective_boot_mode) takes its image's, which moto does
//!   report (every image says `uefi` unless its definition says otherwise).
//! - **`RegisterImage` ignores architecture and virtualization type**: images are defined at
//!   moto's start instead, in the JSON file `MOTO_AMIS_PATH` names; [`moto_amis`] writes that
//!   file from a [`Scenario`], so the fake and moto start from the same images.
//! - moto's `Platform` is `Linux/UNIX` for some Linux images (real EC2 leaves it out): both
//!   read as [`Platform::Linux`].
//! - Snapshots are `completed` at once; CreateSnapshots' answer has no `State` (the state is
//!   then `None`; DescribeSnapshots has it); StopInstances answers `stopping` and the next
//!   DescribeInstances says `stopped`.

use super::aws_ebs::AwsEbs;
use super::aws_sdk::SdkFailure;
use super::ec2::{
    Architecture, BlockDevice, BootMode, Ec2Api, Ec2Error, Image, IngressRule, Instance,
    InstanceState, NAME_TAG, Platform, Protocol, READABLE_SNAPSHOT_TAG, Scenario, ScenarioIds,
    SecurityGroup, Snapshot, SnapshotState, StateChange, Virtualization, Volume, VolumeAttachment,
    parse_progress, unsure_on_timeout,
};
use super::retry::RetryPolicy;
use crate::error::{Error, Result};
use crate::image::{DiskImage, ExtentMap, Format};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types as t;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Per-attempt timeout of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The tag [`AwsEc2::load_scenario`] puts on a pushed snapshot, naming its volume.
pub const SNAPSHOT_VOLUME_TAG: &str = "ec2azure:volume-id";

/// A client of EC2.
pub struct AwsEc2 {
    client: Client,
    rt: tokio::runtime::Runtime,
    retry: RetryPolicy,
}

impl std::fmt::Debug for AwsEc2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEc2").finish_non_exhaustive()
    }
}

/// Maps an SDK error onto an [`Ec2Error`] that keeps the HTTP status and EC2's error code.
fn classify<E>(e: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match super::aws_sdk::classify(e, "EC2") {
        SdkFailure::Timeout => Ec2Error::Timeout,
        SdkFailure::Connection(m) => Ec2Error::Connection(m),
        SdkFailure::Service {
            status,
            code,
            message,
        } => Ec2Error::Service {
            status,
            code,
            message,
        },
        SdkFailure::Fatal(m) => Ec2Error::Fatal(m),
    }
}

fn tags(list: &[t::Tag]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn millis(d: Option<&aws_sdk_ec2::primitives::DateTime>) -> Option<u64> {
    d.and_then(|d| d.to_millis().ok())
        .and_then(|m| u64::try_from(m).ok())
}

fn state_of(s: Option<&t::InstanceState>) -> std::result::Result<InstanceState, Ec2Error> {
    let name = s.and_then(|s| s.name()).map(|n| n.as_str()).unwrap_or("");
    InstanceState::parse(name)
        .ok_or_else(|| Ec2Error::Fatal(format!("an instance state {name:?} EC2 does not define")))
}

fn instance(i: &t::Instance) -> std::result::Result<Instance, Ec2Error> {
    let id = i
        .instance_id()
        .ok_or_else(|| Ec2Error::Fatal("an instance without an id".into()))?
        .to_string();
    let tags = tags(i.tags());
    let boot = i
        .current_instance_boot_mode()
        .map(|b| b.as_str())
        .or(i.boot_mode().map(|b| b.as_str()));
    Ok(Instance {
        name: tags.get(NAME_TAG).cloned(),
        tags,
        private_ip: i.private_ip_address().map(str::to_string),
        platform: Platform::from_ec2(i.platform().map(|p| p.as_str())),
        platform_details: i.platform_details().map(str::to_string),
        architecture: Architecture::parse(i.architecture().map_or("", |a| a.as_str())),
        virtualization: i
            .virtualization_type()
            .and_then(|v| Virtualization::parse(v.as_str())),
        boot_mode: BootMode::parse(boot),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        state: state_of(i.state())?,
        image_id: i.image_id().unwrap_or("").to_string(),
        security_group_ids: i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        root_device_name: i.root_device_name().map(str::to_string),
        block_devices: i
            .block_device_mappings()
            .iter()
            .filter_map(|b| {
                Some(BlockDevice {
                    device: b.device_name()?.to_string(),
                    volume_id: b.ebs()?.volume_id()?.to_string(),
                })
            })
            .collect(),
        subnet_id: i.subnet_id().map(str::to_string),
        vpc_id: i.vpc_id().map(str::to_string),
        id,
    })
}

fn volume(v: &t::Volume) -> Volume {
    Volume {
        id: v.volume_id().unwrap_or("").to_string(),
        size_gib: v.size().unwrap_or(0).max(0) as u64,
        volume_type: v
            .volume_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        encrypted: v.encrypted().unwrap_or(false),
        state: v
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        attachments: v
            .attachments()
            .iter()
            .filter_map(|a| {
                Some(VolumeAttachment {
                    instance_id: a.instance_id()?.to_string(),
                    device: a.device()?.to_string(),
                })
            })
            .collect(),
        snapshot_id: v
            .snapshot_id()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        tags: tags(v.tags()),
    }
}

fn image(i: &t::Image) -> Image {
    Image {
        id: i.image_id().unwrap_or("").to_string(),
        name: i.name().map(str::to_string),
        description: i.description().map(str::to_string),
        platform: Platform::from_ec2(i.platform().map(|p| p.as_str())),
        platform_details: i.platform_details().map(str::to_string),
        architecture: Architecture::parse(i.architecture().map_or("", |a| a.as_str())),
        virtualization: i
            .virtualization_type()
            .and_then(|v| Virtualization::parse(v.as_str())),
        boot_mode: BootMode::parse(i.boot_mode().map(|b| b.as_str())),
        root_device_name: i.root_device_name().map(str::to_string),
    }
}

fn rule(p: &t::IpPermission) -> IngressRule {
    let mut cidrs: Vec<String> = p
        .ip_ranges()
        .iter()
        .filter_map(|r| r.cidr_ip().map(str::to_string))
        .collect();
    cidrs.extend(
        p.ipv6_ranges()
            .iter()
            .filter_map(|r| r.cidr_ipv6().map(str::to_string)),
    );
    let protocol = Protocol::parse(p.ip_protocol().unwrap_or("-1"));
    let all = protocol == Protocol::All;
    IngressRule {
        // EC2 sends no ports (or -1) for "all protocols".
        from_port: p.from_port().filter(|_| !all),
        to_port: p.to_port().filter(|_| !all),
        protocol,
        cidrs,
        source_group_ids: p
            .user_id_group_pairs()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
    }
}

fn group(g: &t::SecurityGroup) -> SecurityGroup {
    SecurityGroup {
        id: g.group_id().unwrap_or("").to_string(),
        name: g.group_name().unwrap_or("").to_string(),
        description: g.description().unwrap_or("").to_string(),
        vpc_id: g.vpc_id().map(str::to_string),
        ingress: g.ip_permissions().iter().map(rule).collect(),
    }
}

fn snapshot_state(s: Option<&t::SnapshotState>) -> Option<SnapshotState> {
    s.and_then(|s| SnapshotState::parse(s.as_str()))
}

fn snapshot(s: &t::Snapshot) -> Snapshot {
    Snapshot {
        id: s.snapshot_id().unwrap_or("").to_string(),
        volume_id: s.volume_id().map(str::to_string),
        state: snapshot_state(s.state()),
        progress: s.progress().and_then(parse_progress),
        size_gib: s.volume_size().unwrap_or(0).max(0) as u64,
        start_time_ms: millis(s.start_time()),
        description: s.description().map(str::to_string),
        tags: tags(s.tags()),
    }
}

fn snapshot_info(s: &t::SnapshotInfo) -> Snapshot {
    Snapshot {
        id: s.snapshot_id().unwrap_or("").to_string(),
        volume_id: s.volume_id().map(str::to_string),
        state: snapshot_state(s.state()),
        progress: s.progress().and_then(parse_progress),
        size_gib: s.volume_size().unwrap_or(0).max(0) as u64,
        start_time_ms: millis(s.start_time()),
        description: s.description().map(str::to_string),
        tags: tags(s.tags()),
    }
}

fn tag(k: &str, v: &str) -> t::Tag {
    t::Tag::builder().key(k).value(v).build()
}

/// `inner` seen as a disk of `len` bytes: zeros past its end (or everywhere, without one).
struct AsVolume<'a> {
    inner: Option<&'a dyn DiskImage>,
    len: u64,
}

impl DiskImage for AsVolume<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = crate::image::readable(self.len, offset, buf.len());
        buf[..n].fill(0);
        if let Some(i) = self.inner
            && offset < i.len()
        {
            let k = ((i.len() - offset).min(n as u64)) as usize;
            i.read_exact_at(&mut buf[..k], offset)?;
        }
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        match self.inner {
            Some(i) => Ok(i.extents()?.with_len(self.len)),
            None => Ok(ExtentMap::from_ranges(self.len, std::iter::empty())),
        }
    }

    fn format(&self) -> Format {
        Format::Raw
    }
}

impl AwsEc2 {
    /// A client for `region` (or the configured default) at `endpoint` (or AWS's), with the
    /// default [`RetryPolicy`].
    ///
    /// # Errors
    /// The async runtime cannot start.
    pub fn new(endpoint: Option<&str>, region: Option<&str>) -> Result<Self> {
        Self::build(endpoint, region, CALL_TIMEOUT, None)
    }

    /// As [`AwsEc2::new`], with these static credentials instead of the usual AWS settings:
    /// for emulators (moto takes any) and tests, which must not depend on the environment.
    ///
    /// # Errors
    /// The async runtime cannot start.
    pub fn with_credentials(
        endpoint: Option<&str>,
        region: Option<&str>,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Self> {
        let creds = aws_sdk_ec2::config::Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "ec2azure",
        );
        Self::build(endpoint, region, CALL_TIMEOUT, Some(creds))
    }

    /// As [`AwsEc2::new`], with `timeout` per call attempt and, when given, these static
    /// credentials instead of the usual AWS settings.
    fn build(
        endpoint: Option<&str>,
        region: Option<&str>,
        timeout: Duration,
        credentials: Option<aws_sdk_ec2::config::Credentials>,
    ) -> Result<Self> {
        let setup = super::aws_sdk::setup(endpoint, region, timeout, credentials)?;
        Ok(AwsEc2 {
            client: Client::new(&setup.config),
            rt: setup.rt,
            retry: RetryPolicy::default(),
        })
    }

    /// The same client retrying under `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// One call under the retry policy.
    fn call<T, F>(&self, what: &str, f: impl Fn() -> F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, Ec2Error>>,
    {
        self.retry.run(what, || self.rt.block_on(f()))
    }

    /// Builds `scenario` on an emulator (moto): a VPC and subnet of its CIDR, its security
    /// groups and rules, its instances (image, type, private IP, groups, tags, volumes), each
    /// volume's bytes pushed through `ebs` ([`AwsEbs::push`]) as a snapshot that the EBS direct
    /// APIs can read, named on the volume by [`READABLE_SNAPSHOT_TAG`] (see the module docs);
    /// instances the scenario says are stopped are stopped. The images must exist already
    /// (moto: [`moto_amis`] through `MOTO_AMIS_PATH`). Relative data paths are taken from
    /// `base`. Not for a real account: it creates resources that cost money.
    ///
    /// # Errors
    /// An invalid scenario; a call that keeps failing; a data file that cannot be read.
    pub fn load_scenario(
        &self,
        scenario: &Scenario,
        base: &Path,
        ebs: &AwsEbs,
    ) -> Result<ScenarioIds> {
        scenario.validate()?;
        let mut ids = ScenarioIds::default();
        let vpc = self.call("CreateVpc", || async {
            let out = self
                .client
                .create_vpc()
                .cidr_block(&scenario.vpc_cidr)
                .send()
                .await
                .map_err(classify)?;
            out.vpc()
                .and_then(|v| v.vpc_id())
                .map(str::to_string)
                .ok_or_else(|| Ec2Error::Fatal("CreateVpc: no VpcId".into()))
        })?;
        let subnet = self.call("CreateSubnet", || async {
            let out = self
                .client
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(&scenario.vpc_cidr)
                .send()
                .await
                .map_err(classify)?;
            out.subnet()
                .and_then(|s| s.subnet_id())
                .map(str::to_string)
                .ok_or_else(|| Ec2Error::Fatal("CreateSubnet: no SubnetId".into()))
        })?;
        for g in &scenario.security_groups {
            let id = self.call(&format!("CreateSecurityGroup {}", g.name), || async {
                let out = self
                    .client
                    .create_security_group()
                    .group_name(&g.name)
                    .description(if g.description.is_empty() {
                        &g.name
                    } else {
                        &g.description
                    })
                    .vpc_id(&vpc)
                    .send()
                    .await
                    .map_err(classify)?;
                out.group_id()
                    .map(str::to_string)
                    .ok_or_else(|| Ec2Error::Fatal("CreateSecurityGroup: no GroupId".into()))
            })?;
            ids.security_groups.insert(g.name.clone(), id);
        }
        for g in &scenario.security_groups {
            if g.ingress.is_empty() {
                continue;
            }
            let perms: Vec<t::IpPermission> = g
                .ingress
                .iter()
                .map(|r| {
                    let mut p = t::IpPermission::builder().ip_protocol(&r.protocol);
                    if let Some(f) = r.from_port {
                        p = p.from_port(f);
                    }
                    if let Some(to) = r.to_port {
                        p = p.to_port(to);
                    }
                    for c in &r.cidrs {
                        if c.contains(':') {
                            p = p.ipv6_ranges(t::Ipv6Range::builder().cidr_ipv6(c).build());
                        } else {
                            p = p.ip_ranges(t::IpRange::builder().cidr_ip(c).build());
                        }
                    }
                    for s in &r.source_groups {
                        p = p.user_id_group_pairs(
                            t::UserIdGroupPair::builder()
                                .group_id(&ids.security_groups[s])
                                .build(),
                        );
                    }
                    p.build()
                })
                .collect();
            let id = &ids.security_groups[&g.name];
            self.call(&format!("AuthorizeSecurityGroupIngress {id}"), || async {
                self.client
                    .authorize_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(perms.clone()))
                    .send()
                    .await
                    .map_err(classify)
                    .map(|_| ())
            })?;
        }
        for i in &scenario.instances {
            let volumes = scenario.volumes_of(i);
            let mut req_tags = vec![tag(NAME_TAG, &i.name)];
            req_tags.extend(i.tags.iter().map(|(k, v)| tag(k, v)));
            let mappings: Vec<t::BlockDeviceMapping> = volumes
                .iter()
                .map(|v| {
                    t::BlockDeviceMapping::builder()
                        .device_name(&v.device)
                        .ebs(
                            t::EbsBlockDevice::builder()
                                .volume_size(i32::try_from(v.size_gib).unwrap_or(i32::MAX))
                                .volume_type(t::VolumeType::from(v.volume_type.as_str()))
                                .encrypted(v.encrypted)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build()
                })
                .collect();
            let groups: Vec<String> = i
                .security_groups
                .iter()
                .map(|n| ids.security_groups[n].clone())
                .collect();
            let launched = self.call(&format!("RunInstances {}", i.name), || async {
                let mut req = self
                    .client
                    .run_instances()
                    .image_id(&i.image)
                    .instance_type(t::InstanceType::from(i.instance_type.as_str()))
                    .min_count(1)
                    .max_count(1)
                    .subnet_id(&subnet)
                    .set_security_group_ids((!groups.is_empty()).then(|| groups.clone()))
                    .set_block_device_mappings(Some(mappings.clone()))
                    .tag_specifications(
                        t::TagSpecification::builder()
                            .resource_type(t::ResourceType::Instance)
                            .set_tags(Some(req_tags.clone()))
                            .build(),
                    );
                if let Some(ip) = &i.private_ip {
                    req = req.private_ip_address(ip);
                }
                let out = req.send().await.map_err(unsure_on_timeout_sdk)?;
                let first = out
                    .instances()
                    .first()
                    .ok_or_else(|| Ec2Error::Fatal("RunInstances: no instance".into()))?;
                instance(first)
            })?;
            // The volumes by device (RunInstances' answer may not list them yet).
            let described = self
                .describe_instances(std::slice::from_ref(&launched.id))?
                .into_iter()
                .next()
                .ok_or_else(|| Error::not_found(format!("instance {}", launched.id)))?;
            let mut devices = BTreeMap::new();
            for b in &described.block_devices {
                devices.insert(b.device.clone(), b.volume_id.clone());
            }
            for v in &volumes {
                let vid = devices.get(&v.device).ok_or_else(|| {
                    Error::invalid(format!(
                        "instance {} ({}): no volume at {}",
                        i.name, launched.id, v.device
                    ))
                })?;
                let opened = match &v.data {
                    Some(d) => {
                        let p = if d.is_absolute() {
                            d.clone()
                        } else {
                            base.join(d)
                        };
                        Some(crate::image::open(&p, None)?)
                    }
                    None => None,
                };
                let img = AsVolume {
                    inner: opened.as_deref(),
                    len: v.size_gib.saturating_mul(1 << 30),
                };
                let pushed = ebs.push(
                    &img,
                    Some(&format!(
                        "ec2azure: bytes of {vid} ({} {})",
                        i.name, v.device
                    )),
                    self.retry,
                )?;
                let snap = pushed.snapshot_id;
                self.create_tags(vid, READABLE_SNAPSHOT_TAG, &snap)?;
                self.create_tags(&snap, SNAPSHOT_VOLUME_TAG, vid)?;
            }
            if i.state == InstanceState::Stopped {
                self.stop_instances(std::slice::from_ref(&launched.id), true)?;
            }
            ids.instances.insert(i.name.clone(), launched.id.clone());
            ids.volumes.insert(i.name.clone(), devices);
        }
        Ok(ids)
    }

    /// CreateTags: `key` = `value` on `resource`.
    ///
    /// # Errors
    /// A call that keeps failing; an unknown resource.
    pub fn create_tags(&self, resource: &str, key: &str, value: &str) -> Result<()> {
        self.call(&format!("CreateTags {resource}"), || async {
            self.client
                .create_tags()
                .resources(resource)
                .tags(tag(key, value))
                .send()
                .await
                .map_err(classify)
                .map(|_| ())
        })
    }

    /// Every page of DescribeImages for `ids`, or for the account's own when empty.
    fn images_page(&self, ids: &[String], own: bool) -> Result<Vec<Image>> {
        self.call("DescribeImages", || async {
            let mut out = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let mut req = self.client.describe_images().set_next_token(next.clone());
                if own {
                    req = req.owners("self");
                } else {
                    req = req.set_image_ids(Some(ids.to_vec()));
                }
                let page = req.send().await.map_err(classify)?;
                out.extend(page.images().iter().map(image));
                next = page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if next.is_none() {
                    return Ok(out);
                }
            }
        })
    }
}

/// For calls that change something: a timeout is not retried ([`Ec2Error::Unsure`]).
fn unsure_on_timeout_sdk<E>(e: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    unsure_on_timeout(classify(e))
}

/// Pages of a Describe call: `$req` is a request builder expression given `next`, `$items`
/// the closure taking one page's output to its items.
macro_rules! all_pages {
    ($self:ident, $what:expr, |$next:ident| $req:expr, |$page:ident| $items:expr) => {
        $self.call($what, || async {
            let mut out = Vec::new();
            let mut $next: Option<String> = None;
            loop {
                let $page = $req.send().await.map_err(classify)?;
                out.extend($items);
                $next = $page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if $next.is_none() {
                    return Ok(out);
                }
            }
        })
    };
}

impl Ec2Api for AwsEc2 {
    fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        let ids = (!ids.is_empty()).then(|| ids.to_vec());
        let pages: Vec<std::result::Result<Instance, Ec2Error>> = all_pages!(
            self,
            "DescribeInstances",
            |next| self
                .client
                .describe_instances()
                .set_instance_ids(ids.clone())
                .set_next_token(next.clone()),
            |page| page
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(instance)
                .collect::<Vec<_>>()
        )?;
        pages
            .into_iter()
            .map(|r| r.map_err(|e| Error::invalid(format!("DescribeInstances: {e}"))))
            .collect()
    }

    fn describe_volumes(&self, ids: &[String]) -> Result<Vec<Volume>> {
        let ids = (!ids.is_empty()).then(|| ids.to_vec());
        all_pages!(
            self,
            "DescribeVolumes",
            |next| self
                .client
                .describe_volumes()
                .set_volume_ids(ids.clone())
                .set_next_token(next.clone()),
            |page| page.volumes().iter().map(volume).collect::<Vec<_>>()
        )
    }

    fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>> {
        if !ids.is_empty() {
            return self.images_page(ids, false);
        }
        // The account's own images, and those its instances were launched from.
        let mut out = self.images_page(&[], true)?;
        let mut used: Vec<String> = self
            .describe_instances(&[])?
            .into_iter()
            .map(|i| i.image_id)
            .filter(|id| !id.is_empty() && !out.iter().any(|o| &o.id == id))
            .collect();
        used.sort_unstable();
        used.dedup();
        if !used.is_empty() {
            // An image deregistered since: DescribeImages leaves it out rather than failing
            // when asked through a filter.
            let filter = t::Filter::builder()
                .name("image-id")
                .set_values(Some(used))
                .build();
            let more = self.call("DescribeImages", || async {
                let page = self
                    .client
                    .describe_images()
                    .filters(filter.clone())
                    .send()
                    .await
                    .map_err(classify)?;
                Ok(page.images().iter().map(image).collect::<Vec<_>>())
            })?;
            out.extend(more);
        }
        Ok(out)
    }

    fn describe_security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroup>> {
        let ids = (!ids.is_empty()).then(|| ids.to_vec());
        all_pages!(
            self,
            "DescribeSecurityGroups",
            |next| self
                .client
                .describe_security_groups()
                .set_group_ids(ids.clone())
                .set_next_token(next.clone()),
            |page| page.security_groups().iter().map(group).collect::<Vec<_>>()
        )
    }

    fn create_snapshot(&self, volume_id: &str, description: &str) -> Result<Snapshot> {
        self.call(&format!("CreateSnapshot of {volume_id}"), || async {
            let out = self
                .client
                .create_snapshot()
                .volume_id(volume_id)
                .description(description)
                .send()
                .await
                .map_err(unsure_on_timeout_sdk)?;
            Ok(Snapshot {
                id: out.snapshot_id().unwrap_or("").to_string(),
                volume_id: out.volume_id().map(str::to_string),
                state: snapshot_state(out.state()),
                progress: out.progress().and_then(parse_progress),
                size_gib: out.volume_size().unwrap_or(0).max(0) as u64,
                start_time_ms: millis(out.start_time()),
                description: out.description().map(str::to_string),
                tags: tags(out.tags()),
            })
        })
    }

    fn create_snapshots(&self, instance_id: &str, description: &str) -> Result<Vec<Snapshot>> {
        self.call(&format!("CreateSnapshots of {instance_id}"), || async {
            let out = self
                .client
                .create_snapshots()
                .instance_specification(
                    t::InstanceSpecification::builder()
                        .instance_id(instance_id)
                        .exclude_boot_volume(false)
                        .build(),
                )
                .description(description)
                .send()
                .await
                .map_err(unsure_on_timeout_sdk)?;
            Ok(out.snapshots().iter().map(snapshot_info).collect())
        })
    }

    fn describe_snapshots(&self, ids: &[String]) -> Result<Vec<Snapshot>> {
        let own = ids.is_empty();
        let ids = (!own).then(|| ids.to_vec());
        all_pages!(
            self,
            "DescribeSnapshots",
            |next| {
                let r = self
                    .client
                    .describe_snapshots()
                    .set_snapshot_ids(ids.clone())
                    .set_next_token(next.clone());
                if own { r.owner_ids("self") } else { r }
            },
            |page| page.snapshots().iter().map(snapshot).collect::<Vec<_>>()
        )
    }

    fn stop_instances(&self, ids: &[String], force: bool) -> Result<Vec<StateChange>> {
        let what = format!("StopInstances {}", ids.join(" "));
        let changes = self.call(&what, || async {
            let out = self
                .client
                .stop_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .force(force)
                .send()
                .await
                .map_err(classify)?;
            out.stopping_instances()
                .iter()
                .map(|c| {
                    Ok(StateChange {
                        instance_id: c.instance_id().unwrap_or("").to_string(),
                        previous: state_of(c.previous_state())?,
                        current: state_of(c.current_state())?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, Ec2Error>>()
        })?;
        Ok(changes)
    }
}

/// The `MOTO_AMIS_PATH` file for `scenario`: its images as moto's AMI definitions (the
/// keyword arguments of moto's `Ami`: id, name, description, platform, architecture,
/// virtualization type, boot mode, root device), so moto reports what the fake reports.
/// moto has no `PlatformDetails`: that field is left out.
pub fn moto_amis(scenario: &Scenario) -> serde_json::Value {
    let amis: Vec<serde_json::Value> = scenario
        .images
        .iter()
        .map(|i| {
            let mut v = serde_json::json!({
                "ami_id": i.id,
                "name": i.name,
                "description": i.description.clone().unwrap_or_default(),
                "owner_id": "123456789012",
                "public": true,
                "virtualization_type": match i.virtualization {
                    Virtualization::Hvm => "hvm",
                    Virtualization::Paravirtual => "paravirtual",
                },
                "architecture": i.architecture.as_str(),
                "state": "available",
                "image_type": "machine",
                "hypervisor": "xen",
                "root_device_name": i.root_device_name,
                "root_device_type": "ebs",
                "sriov": "simple",
            });
            if i.platform == Platform::Windows {
                v["platform"] = "windows".into();
            }
            let boot = match i.boot_mode {
                BootMode::LegacyBios => Some("legacy-bios"),
                BootMode::Uefi => Some("uefi"),
                BootMode::UefiPreferred => Some("uefi-preferred"),
                BootMode::Unknown => None,
            };
            if let Some(b) = boot {
                v["boot_mode"] = b.into();
            }
            v
        })
        .collect();
    serde_json::Value::Array(amis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::canned::{Canned, response};
    use crate::error::ErrorKind;

    fn client(url: &str) -> AwsEc2 {
        let creds = aws_sdk_ec2::config::Credentials::new(
            "AKIDCANNEDTEST",
            "CANNEDSECRETKEY",
            None,
            None,
            "test",
        );
        AwsEc2::build(
            Some(url),
            Some("us-east-1"),
            Duration::from_secs(10),
            Some(creds),
        )
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        })
    }

    fn ec2_error(code: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>canned {code}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
        )
    }

    /// EC2's answers (Query protocol, XML errors at HTTP 400/403/503/500) become the kinds a
    /// caller acts on, keep status and code, and only transient ones are retried.
    #[test]
    fn error_kinds_from_canned_answers() {
        let cases: [(u16, &str, ErrorKind, bool); 5] = [
            (
                400,
                "InvalidInstanceID.NotFound",
                ErrorKind::NotFound,
                false,
            ),
            (403, "UnauthorizedOperation", ErrorKind::Denied, false),
            (400, "IncorrectInstanceState", ErrorKind::Conflict, false),
            (503, "RequestLimitExceeded", ErrorKind::Cloud, true),
            (500, "InternalError", ErrorKind::Cloud, true),
        ];
        for (status, code, kind, transient) in cases {
            let server = Canned::start(response(
                status,
                &[("Content-Type", "text/xml")],
                &ec2_error(code),
            ));
            let api = client(&server.url());
            let e = api
                .describe_instances(&["i-0123456789abcdef0".into()])
                .unwrap_err();
            assert_eq!(e.kind(), kind, "{code}: {e}");
            let c = e.cloud().expect("a cloud error");
            assert_eq!((c.service, c.status), ("ec2", Some(status)), "{e}");
            assert_eq!(c.code.as_deref(), Some(code));
            assert_eq!(e.is_transient(), transient, "{code}");
            assert_eq!(server.hits(), if transient { 3 } else { 1 }, "{code}");
            let chain = format!("{e} {e:?}");
            assert!(!chain.contains("CANNEDSECRETKEY"), "{chain}");
        }
    }

    #[test]
    fn moto_amis_carry_what_moto_reads() {
        let s = Scenario::from_json(
            r#"{"images": [{"id": "ami-1", "name": "w", "platform": "windows", "boot_mode": "uefi",
                            "virtualization": "paravirtual"}]}"#,
        )
        .unwrap();
        let v = moto_amis(&s);
        assert_eq!(v[0]["ami_id"], "ami-1");
        assert_eq!(v[0]["platform"], "windows");
        assert_eq!(v[0]["boot_mode"], "uefi");
        assert_eq!(v[0]["virtualization_type"], "paravirtual");
        assert!(v[0].get("platform_details").is_none());
    }
}
