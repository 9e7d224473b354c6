//! The AWS estate a site sees: EC2 (instances, volumes, images, security groups, snapshots)
//! and the EBS direct APIs that read the snapshots' bytes — either the in-process fake kept in
//! the site's store (loaded from the scenario's `[aws]` section), or a real endpoint (AWS, or
//! moto in the tests) through `aws-sdk-ec2` and `aws-sdk-ebs`.
//!
//! What EC2 cannot tell — what the guest runs (its OS version, PV drivers, the registry value
//! the push install needs on Windows, which accounts are administrators), its disks' sector
//! sizes, and the workload it writes — comes from the scenario's `[[guests]]`.

use super::Site;
use super::store::Tx;
use crate::cloud::ebs::EbsApi;
use crate::cloud::ec2::{Ec2Api, FakeEc2, Instance};
use crate::cloud::fake::ec2::FakeEc2State;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where the site's AWS calls go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum AwsMode {
    /// The in-process fake kept in the site.
    #[default]
    Fake,
    /// A real endpoint (AWS's, or an emulator's), with the usual AWS credentials.
    Endpoint {
        /// The endpoint URL (`None`: AWS's own).
        endpoint: Option<String>,
        /// The region.
        region: Option<String>,
    },
}

/// What the scenario says of a guest that EC2 does not know.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct GuestSpec {
    /// The instance: its id or its Name tag.
    pub instance: String,
    /// The OS as the guest reports it ("Windows Server 2012 R2 Datacenter").
    #[serde(default)]
    pub os_name: Option<String>,
    /// PV drivers installed ("AWS PV", "Citrix PV", "Red Hat PV").
    #[serde(default)]
    pub pv_drivers: Vec<String>,
    /// Windows: `LocalAccountTokenFilterPolicy` is 1.
    #[serde(default)]
    pub local_account_token_filter_policy: bool,
    /// Windows: the users with administrator rights (default: `Administrator`).
    #[serde(default)]
    pub admin_users: Option<Vec<String>>,
    /// Disks with 4 KiB sectors, by device name.
    #[serde(default)]
    pub sector_4k: Vec<String>,
    /// The workload it writes.
    #[serde(default)]
    pub workload: WorkloadSpec,
}

/// A guest's write workload (the journal simulator's parameters).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// Bytes written per second, on average, per disk.
    pub write_rate: u64,
    /// Share of writes in a hot tenth of the disk.
    pub hot_fraction: f64,
    /// Share of records that zero a range.
    pub zero_fraction: f64,
    /// The largest write, bytes.
    pub max_write: u64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            write_rate: 16 << 10,
            hot_fraction: 0.8,
            zero_fraction: 0.03,
            max_write: 256 << 10,
        }
    }
}

/// The estate's clients for one operation.
pub struct Estate {
    /// EC2.
    pub ec2: Arc<dyn Ec2Api>,
    /// The EBS direct APIs.
    pub ebs: Arc<dyn EbsApi>,
    /// The in-process fake, when the site uses it (faults are injected through it; its state
    /// is saved when the transaction ends).
    pub fake: Option<Arc<FakeEc2>>,
}

impl std::fmt::Debug for Estate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Estate")
            .field("fake", &self.fake.is_some())
            .finish()
    }
}

const FAKE: &str = "aws.fake";
const MODE: &str = "aws.mode";
const GUESTS: &str = "aws.guests";

/// Stores the estate a new site starts with.
///
/// # Errors
/// The store cannot be written.
pub fn store_estate(
    t: &Tx<'_>,
    mode: &AwsMode,
    fake: Option<&FakeEc2>,
    guests: &[GuestSpec],
) -> Result<()> {
    t.set_setting(MODE, mode)?;
    if let Some(f) = fake {
        t.set_setting(FAKE, &f.state())?;
    }
    t.set_setting(GUESTS, &guests)
}

impl Site {
    /// Runs `f` with the estate's clients; the fake's changes (snapshots made, instances
    /// stopped) are kept in the store, in the same transaction as `f`'s own writes.
    ///
    /// # Errors
    /// `f`'s, or the estate cannot be loaded or saved.
    pub fn with_estate<T>(&mut self, f: impl FnOnce(&Tx<'_>, &Estate) -> Result<T>) -> Result<T> {
        self.tx(|t| {
            let mode: AwsMode = t.setting(MODE)?.unwrap_or_default();
            let estate = match mode {
                AwsMode::Fake => {
                    let state: FakeEc2State = t.setting(FAKE)?.unwrap_or_default();
                    let fake = Arc::new(FakeEc2::from_state(state));
                    // Snapshots the fake makes carry the site's simulated time.
                    fake.set_now_ms(super::now_ms(t)?);
                    Estate {
                        ec2: fake.clone(),
                        ebs: fake.clone(),
                        fake: Some(fake),
                    }
                }
                AwsMode::Endpoint { endpoint, region } => {
                    let ec2 =
                        crate::cloud::aws_ec2::AwsEc2::new(endpoint.as_deref(), region.as_deref())?;
                    let ebs =
                        crate::cloud::aws_ebs::AwsEbs::new(endpoint.as_deref(), region.as_deref())?;
                    Estate {
                        ec2: Arc::new(ec2),
                        ebs: Arc::new(ebs),
                        fake: None,
                    }
                }
            };
            let out = f(t, &estate)?;
            if let Some(fake) = &estate.fake {
                t.set_setting(FAKE, &fake.state())?;
            }
            Ok(out)
        })
    }

    /// The guests' facts the scenario gave.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn guests(&mut self) -> Result<Vec<GuestSpec>> {
        self.tx(|t| Ok(t.setting(GUESTS)?.unwrap_or_default()))
    }

    /// The instance with id `id` or Name tag `id`.
    ///
    /// # Errors
    /// None has it; EC2 fails.
    pub fn instance(&mut self, id: &str) -> Result<Instance> {
        self.with_estate(|_, e| find_instance(e.ec2.as_ref(), id))
    }

    /// An instance's private IP.
    ///
    /// # Errors
    /// No such instance, or it has no private IP.
    pub fn instance_ip(&mut self, id: &str) -> Result<String> {
        let i = self.instance(id)?;
        i.private_ip
            .ok_or_else(|| Error::invalid(format!("instance {} has no private IP", i.id)))
    }
}

/// The instance with id `id` or Name tag `id`.
///
/// # Errors
/// None has it; EC2 fails.
pub fn find_instance(ec2: &dyn Ec2Api, id: &str) -> Result<Instance> {
    ec2.describe_instances(&[])?
        .into_iter()
        .find(|i| i.id == id || i.name.as_deref() == Some(id))
        .ok_or_else(|| Error::not_found(format!("no EC2 instance {id} (by id or Name tag)")))
}

/// The guest facts for an instance.
pub fn guest_of<'a>(guests: &'a [GuestSpec], i: &Instance) -> Option<&'a GuestSpec> {
    guests
        .iter()
        .find(|g| g.instance == i.id || Some(g.instance.as_str()) == i.name.as_deref())
}
