//! A scenario file (TOML): what a site starts from — its clock, seed and subscription, the
//! modelled durations to override, and the estate (the AWS instances and what their guests run).
//!
//! ```toml
//! [site]
//! start = "2026-01-01T00:00:00Z"   # the simulated clock's start
//! seed = 7                          # every workload and id derives from it
//! subscription = "00000000-0000-0000-0000-000000000001"
//!
//! [durations]                       # jobs::Durations, by task name
//! InstallMobilityService = "8m"
//!
//! [aws]                             # the EC2 estate (cloud::ec2::Scenario)
//! [[aws.images]]
//! id = "ami-0a1b2c3d4e5f60001"
//! name = "Windows_Server-2012-R2_RTM-English-64Bit-Base"
//! platform = "windows"
//! [[aws.instances]]
//! name = "web01"
//! image = "ami-0a1b2c3d4e5f60001"
//! private_ip = "10.0.0.20"
//! [[aws.instances.volumes]]
//! device = "/dev/sda1"
//! size_gib = 30
//! data = "web01.raw"                # relative to the scenario file
//!
//! [[guests]]                        # what EC2 does not know (estate::GuestSpec)
//! instance = "web01"
//! os_name = "Windows Server 2012 R2 Datacenter"
//! local_account_token_filter_policy = true
//! workload = { write_rate = 16384 }
//! ```

use super::estate::{AwsMode, GuestSpec, store_estate};
use super::jobs::Durations;
use super::support::SupportMatrix;
use super::{DEFAULT_START_MS, Site, SiteConfig};
use crate::clock::{parse_duration, parse_time};
use crate::cloud::ec2::{self, FakeEc2};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The `[site]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// The clock's start (RFC 3339).
    pub start: Option<String>,
    /// The seed.
    pub seed: Option<u64>,
    /// The subscription id.
    pub subscription: Option<String>,
}

/// A scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Scenario {
    /// `[site]`.
    #[serde(default)]
    pub site: SiteSection,
    /// `[durations]`: task name → duration (`90s`, `8m`).
    #[serde(default)]
    pub durations: BTreeMap<String, String>,
    /// The rest (the estate), read by the parts that own it.
    #[serde(flatten)]
    pub rest: toml::Table,
}

impl Scenario {
    /// The `[aws]` estate, if given.
    ///
    /// # Errors
    /// It is not a valid estate.
    pub fn aws(&self) -> Result<Option<ec2::Scenario>> {
        self.section("aws")
    }

    /// The `[[guests]]`.
    ///
    /// # Errors
    /// They are not valid.
    pub fn guests(&self) -> Result<Vec<GuestSpec>> {
        Ok(self.section("guests")?.unwrap_or_default())
    }

    /// The `[support]` matrix (the tutorial's list when absent).
    ///
    /// # Errors
    /// It is not valid.
    pub fn support(&self) -> Result<SupportMatrix> {
        Ok(self.section("support")?.unwrap_or_default())
    }

    fn section<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.rest
            .get(key)
            .map(|v| {
                v.clone()
                    .try_into()
                    .map_err(|e| Error::argument(format!("scenario [{key}]: {e}")))
            })
            .transpose()
    }

    /// Reads a scenario file.
    ///
    /// # Errors
    /// It cannot be read or is not a valid scenario (the line is named).
    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("reading the scenario", e).with_path(path))?;
        Self::parse(&text).map_err(|e| e.with_path(path))
    }

    /// Parses a scenario's text.
    ///
    /// # Errors
    /// It is not valid TOML or not a scenario.
    pub fn parse(text: &str) -> Result<Scenario> {
        toml::from_str(text).map_err(|e| Error::argument(format!("scenario: {e}")))
    }

    /// The site's settings this scenario gives (defaults where it is silent).
    ///
    /// # Errors
    /// A time or duration does not parse, or names an unknown task.
    pub fn config(&self) -> Result<SiteConfig> {
        let mut durations = Durations::default();
        for (k, v) in &self.durations {
            if !durations.0.contains_key(k) {
                return Err(Error::argument(format!(
                    "scenario [durations]: no task {k:?}; the tasks are {}",
                    durations.0.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            durations.0.insert(k.clone(), parse_duration(v)?);
        }
        Ok(SiteConfig {
            subscription_id: self
                .site
                .subscription
                .clone()
                .unwrap_or_else(|| "00000000-0000-0000-0000-000000000001".into()),
            seed: self.site.seed.unwrap_or(1),
            start_ms: match &self.site.start {
                Some(s) => parse_time(s)?,
                None => DEFAULT_START_MS,
            },
            durations,
        })
    }
}

/// The `[azure]` table: what the simulated Azure starts with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    /// Storage account names someone else holds in Azure (refused as taken).
    #[serde(default)]
    pub taken_storage_account_names: Vec<String>,
    /// Resource groups a rehearsal makes.
    #[serde(default)]
    pub resource_groups: Vec<GroupSpec>,
    /// Storage accounts a rehearsal makes.
    #[serde(default)]
    pub storage_accounts: Vec<StorageSpec>,
    /// Virtual networks a rehearsal makes.
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
}

/// A resource group to make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Its name.
    pub name: String,
    /// Its region.
    pub location: String,
}

/// A storage account to make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// Its name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
}

/// A virtual network to make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Its name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its address prefixes (default `10.0.0.0/16`).
    #[serde(default)]
    pub address_space: Vec<String>,
    /// Its subnets, `[name, prefix]` (default `default` `10.0.0.0/24`).
    #[serde(default)]
    pub subnets: Vec<(String, String)>,
}

/// Makes a site in `dir` from `scenario` (whose relative paths are under `base`): its settings,
/// its estate loaded into the in-process fake (or, with `mode` an endpoint, into that endpoint
/// by the caller), its guests and support matrix.
///
/// # Errors
/// The scenario is invalid, or the site cannot be made.
pub fn init_site(dir: &Path, scenario: &Scenario, base: &Path, mode: AwsMode) -> Result<Site> {
    for k in scenario.rest.keys() {
        if ![
            "aws",
            "guests",
            "support",
            "azure",
            "steps",
            "objectives",
            "faults",
            "rehearsal",
            "samples",
            "vault",
            "config_server",
            "policy",
            "replicate",
            "plans",
        ]
        .contains(&k.as_str())
        {
            return Err(Error::argument(format!(
                "scenario: unknown section [{k}] (known: site, durations, aws, guests, support, \
                 azure, rehearsal, samples, vault, config_server, policy, replicate, plans, \
                 steps, faults, objectives)"
            )));
        }
    }
    let config = scenario.config()?;
    let guests = scenario.guests()?;
    let support = scenario.support()?;
    let fake = match (&mode, scenario.aws()?) {
        (AwsMode::Fake, Some(a)) => Some(FakeEc2::from_scenario(&a, base)?.0),
        (AwsMode::Fake, None) => Some(FakeEc2::new()),
        _ => None,
    };
    let azure: AzureSection = scenario.section("azure")?.unwrap_or_default();
    let sub = config.subscription_id.clone();
    let mut site = Site::init(dir, config)?;
    site.tx(|t| {
        store_estate(t, &mode, fake.as_ref(), &guests)?;
        t.set_setting("support", &support)?;
        super::azure::create_subscription(t, &sub, "ec2azure simulated subscription")?;
        super::azure::set_taken_storage_account_names(t, &azure.taken_storage_account_names)
    })?;
    Ok(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_sets_the_clock_seed_and_durations() {
        let s = Scenario::parse(
            "[site]\nstart = \"2026-03-01T08:00:00Z\"\nseed = 9\n[durations]\nInstallMobilityService = \"8m\"\n",
        )
        .unwrap();
        let c = s.config().unwrap();
        assert_eq!(c.seed, 9);
        assert_eq!(c.start_ms, parse_time("2026-03-01T08:00:00Z").unwrap());
        assert_eq!(c.durations.get("InstallMobilityService"), 8 * 60_000);
        let bad = Scenario::parse("[durations]\nNoSuchTask = \"1m\"\n")
            .unwrap()
            .config()
            .unwrap_err();
        assert!(bad.to_string().contains("NoSuchTask"), "{bad}");
        assert!(Scenario::parse("[site]\nstart = 3\n").is_err());
    }
}
