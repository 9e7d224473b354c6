//! The simulated Azure side of a site: subscriptions, locations and resource groups here;
//! storage accounts ([`storage`]), virtual networks, subnets, IP addresses and network
//! interfaces ([`network`]), managed disks and virtual machines ([`compute`]), VM sizes
//! ([`sizes`]). Every resource is a [`Kind`] in the site's [`store`](super::store) under its
//! Azure Resource Manager id
//! (`/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`), its
//! properties spelled as Azure's REST API spells them (camelCase), created, read, listed and
//! deleted through functions taking a [`Tx`], so the CLI and the failover jobs share one set of
//! rules.
//!
//! Two things live beside the ARM JSON, because a resource's `location` and `tags` are
//! top-level fields in ARM and the store keeps only properties: both are kept inside the
//! properties object here. Names are compared case-insensitively, as ARM does; an object keeps
//! the case it was created with.
//!
//! Refusals are ARM's: an [`Error`] whose [`cloud`](Error::cloud) part holds the HTTP status and
//! ARM's error code (`StorageAccountAlreadyTaken`, `PrivateIPAddressInUse`, `SubnetIsFull`, …),
//! whose kind follows the status (400 invalid argument, 404 not found, 409 conflict), and whose
//! message starts with the code.

pub mod compute;
pub mod network;
pub mod sizes;
pub mod storage;

pub use compute::*;
pub use network::*;
pub use sizes::{SIZES, VmSize, choose_size, vm_size};
pub use storage::*;

use super::store::{Kind, Resource, Tx};
use crate::error::{CloudError, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Tags on a resource.
pub type Tags = BTreeMap<String, String>;

/// ARM's error body, kept as the source of the [`Error`] a refusal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmError {
    /// ARM's error code.
    pub code: String,
    /// ARM's message.
    pub message: String,
}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ArmError {}

/// A refusal as ARM answers it: HTTP `status`, error `code`, `message`.
pub fn arm_error(status: u16, code: &str, message: impl Into<String>) -> Error {
    let e = ArmError {
        code: code.to_string(),
        message: message.into(),
    };
    Error::from_cloud(
        e.to_string(),
        CloudError {
            service: "arm",
            status: Some(status),
            code: Some(code.to_string()),
            transient: false,
        },
        e,
    )
}

/// ARM's code of a refusal made by this module, if `e` is one.
pub fn arm_code(e: &Error) -> Option<&str> {
    e.cloud()
        .filter(|c| c.service == "arm")
        .and_then(|c| c.code.as_deref())
}

/// A reference to another resource, as ARM nests them: `{"id": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubResource {
    /// The referenced resource's id.
    pub id: String,
}

// ---------------------------------------------------------------------------------------------
// Locations.

/// An Azure region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// The name ARM uses (`westeurope`).
    pub name: &'static str,
    /// The name the portal shows (`West Europe`).
    pub display_name: &'static str,
    /// Its pair: where geo-redundant storage keeps the second copy.
    pub paired_region: &'static str,
}

const fn loc(
    name: &'static str,
    display_name: &'static str,
    paired_region: &'static str,
) -> Location {
    Location {
        name,
        display_name,
        paired_region,
    }
}

/// Azure's public regions (`az account list-locations`), with their pairs (Microsoft's "Azure
/// cross-region replication pairings" page).
pub const LOCATIONS: &[Location] = &[
    loc("eastus", "East US", "westus"),
    loc("eastus2", "East US 2", "centralus"),
    loc("southcentralus", "South Central US", "northcentralus"),
    loc("westus2", "West US 2", "westcentralus"),
    loc("westus3", "West US 3", "eastus"),
    loc("australiaeast", "Australia East", "australiasoutheast"),
    loc("southeastasia", "Southeast Asia", "eastasia"),
    loc("northeurope", "North Europe", "westeurope"),
    loc("swedencentral", "Sweden Central", "swedensouth"),
    loc("uksouth", "UK South", "ukwest"),
    loc("westeurope", "West Europe", "northeurope"),
    loc("centralus", "Central US", "eastus2"),
    loc("southafricanorth", "South Africa North", "southafricawest"),
    loc("centralindia", "Central India", "southindia"),
    loc("eastasia", "East Asia", "southeastasia"),
    loc("japaneast", "Japan East", "japanwest"),
    loc("koreacentral", "Korea Central", "koreasouth"),
    loc("canadacentral", "Canada Central", "canadaeast"),
    loc("francecentral", "France Central", "francesouth"),
    loc("germanywestcentral", "Germany West Central", "germanynorth"),
    loc("norwayeast", "Norway East", "norwaywest"),
    loc("switzerlandnorth", "Switzerland North", "switzerlandwest"),
    loc("uaenorth", "UAE North", "uaecentral"),
    loc("brazilsouth", "Brazil South", "southcentralus"),
    loc("northcentralus", "North Central US", "southcentralus"),
    loc("westus", "West US", "eastus"),
    loc("westcentralus", "West Central US", "westus2"),
    loc("australiasoutheast", "Australia Southeast", "australiaeast"),
    loc("swedensouth", "Sweden South", "swedencentral"),
    loc("ukwest", "UK West", "uksouth"),
    loc("southafricawest", "South Africa West", "southafricanorth"),
    loc("southindia", "South India", "centralindia"),
    loc("japanwest", "Japan West", "japaneast"),
    loc("koreasouth", "Korea South", "koreacentral"),
    loc("canadaeast", "Canada East", "canadacentral"),
    loc("francesouth", "France South", "francecentral"),
    loc("germanynorth", "Germany North", "germanywestcentral"),
    loc("norwaywest", "Norway West", "norwayeast"),
    loc("switzerlandwest", "Switzerland West", "switzerlandnorth"),
    loc("uaecentral", "UAE Central", "uaenorth"),
];

/// The region `s` names: its name or its display name, in any case, with or without spaces
/// (`West Europe`, `westeurope`, `WestEurope`).
///
/// # Errors
/// No such region (`LocationNotAvailableForResourceType`, listing the names).
pub fn location(s: &str) -> Result<&'static Location> {
    let key: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    LOCATIONS.iter().find(|l| l.name == key).ok_or_else(|| {
        arm_error(
            400,
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location {s:?} is not available. List of available regions: {}.",
                LOCATIONS
                    .iter()
                    .map(|l| l.name)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Names and ids.

/// Checks `name` against a naming rule: `min..=max` characters, each allowed by `ok`, and
/// `ends` for the last; refused with ARM's `code`, saying `rule`.
pub(crate) fn check_name(
    what: &str,
    name: &str,
    (min, max): (usize, usize),
    ok: impl Fn(char) -> bool,
    ends: impl Fn(char, char) -> bool,
    code: &str,
    rule: &str,
) -> Result<()> {
    let n = name.chars().count();
    let first = name.chars().next().unwrap_or(' ');
    let last = name.chars().last().unwrap_or(' ');
    if (min..=max).contains(&n) && name.chars().all(ok) && ends(first, last) {
        return Ok(());
    }
    Err(arm_error(
        400,
        code,
        format!("The {what} name {name:?} is invalid: {rule}"),
    ))
}

/// `/subscriptions/{sub}`.
pub fn subscription_id(sub: &str) -> String {
    format!("/subscriptions/{sub}")
}

/// `/subscriptions/{sub}/resourceGroups/{rg}`.
pub fn resource_group_id(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

/// The resource `name` of `provider_type` (`Microsoft.Storage/storageAccounts`) in a group
/// (`rg_id` as [`resource_group_id`] gives it).
pub fn resource_id(rg_id: &str, provider_type: &str, name: &str) -> String {
    format!("{rg_id}/providers/{provider_type}/{name}")
}

/// The resource-group id an id under a group belongs to.
///
/// # Errors
/// `id` is not of the form `/subscriptions/…/resourceGroups/…/…`.
pub fn group_of(id: &str) -> Result<String> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() >= 5
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
    {
        return Ok(parts[..5].join("/"));
    }
    Err(arm_error(
        400,
        "LinkedInvalidPropertyId",
        format!(
            "Property id {id:?} is invalid: expected /subscriptions/{{sub}}/resourceGroups/{{rg}}/…"
        ),
    ))
}

/// The object of kind `T` under `parent` named `name`, compared case-insensitively.
///
/// # Errors
/// The store's.
pub fn find_named<T: Kind>(tx: &Tx, parent: &str, name: &str) -> Result<Option<Resource<T>>> {
    Ok(tx
        .list::<T>(Some(parent))?
        .into_iter()
        .find(|r| r.name.eq_ignore_ascii_case(name)))
}

/// The object of kind `T` whose id is `id`, compared case-insensitively (ARM ids are).
///
/// # Errors
/// It does not exist (`ResourceNotFound`, 404), or the store's.
pub fn get_by_id<T: Kind>(tx: &Tx, id: &str, what: &str) -> Result<Resource<T>> {
    if let Some(r) = tx.find::<T>(id)? {
        return Ok(r);
    }
    tx.list::<T>(None)?
        .into_iter()
        .find(|r| r.id.eq_ignore_ascii_case(id))
        .ok_or_else(|| not_found(what, id))
}

pub(crate) fn not_found(what: &str, id: &str) -> Error {
    arm_error(
        404,
        "ResourceNotFound",
        format!("The {what} {id:?} was not found."),
    )
}

// ---------------------------------------------------------------------------------------------
// Subscriptions.

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Its id (a GUID in Azure; any non-empty name of letters, digits and hyphens here).
    pub subscription_id: String,
    /// Its display name.
    pub display_name: String,
    /// `Enabled`.
    pub state: String,
}

impl Kind for Subscription {
    const TYPE: &'static str = "Microsoft.Resources/subscriptions";
}

/// Creates the subscription `id` named `display_name`.
///
/// # Errors
/// A bad id, or it exists (Conflict).
pub fn create_subscription(
    tx: &Tx,
    id: &str,
    display_name: &str,
) -> Result<Resource<Subscription>> {
    check_name(
        "subscription",
        id,
        (1, 64),
        |c| c.is_ascii_alphanumeric() || c == '-',
        |_, _| true,
        "InvalidSubscriptionId",
        "1-64 letters, digits and hyphens (Azure uses a GUID)",
    )?;
    if subscription(tx, id).is_ok() {
        return Err(arm_error(
            409,
            "SubscriptionExists",
            format!("The subscription {id:?} exists already."),
        ));
    }
    tx.insert(
        &subscription_id(id),
        None,
        &Subscription {
            subscription_id: id.to_string(),
            display_name: display_name.to_string(),
            state: "Enabled".into(),
        },
    )
}

/// The subscription `id`.
///
/// # Errors
/// It does not exist (`SubscriptionNotFound`).
pub fn subscription(tx: &Tx, id: &str) -> Result<Resource<Subscription>> {
    get_by_id::<Subscription>(tx, &subscription_id(id), "subscription").map_err(|_| {
        arm_error(
            404,
            "SubscriptionNotFound",
            format!("The subscription {id:?} could not be found."),
        )
    })
}

/// Every subscription, in the order made.
///
/// # Errors
/// The store's.
pub fn list_subscriptions(tx: &Tx) -> Result<Vec<Resource<Subscription>>> {
    tx.list(None)
}

// ---------------------------------------------------------------------------------------------
// Resource groups.

/// A resource group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroup {
    /// Its region (`westeurope`): where its metadata lives and its resources default to.
    pub location: String,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Its tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

impl Kind for ResourceGroup {
    const TYPE: &'static str = "Microsoft.Resources/resourceGroups";
}

/// Azure's rule for resource-group names: 1–90 characters, letters and digits (Unicode),
/// underscores, parentheses, hyphens and periods, not ending with a period.
///
/// # Errors
/// The name breaks it (`InvalidResourceGroup`, ARM's code: Azure/azure-cli#14481).
pub fn check_resource_group_name(name: &str) -> Result<()> {
    check_name(
        "resource group",
        name,
        (1, 90),
        |c| c.is_alphanumeric() || matches!(c, '_' | '(' | ')' | '-' | '.'),
        |_, last| last != '.',
        "InvalidResourceGroup",
        "1-90 letters, digits, underscores, parentheses, hyphens and periods, not ending with a \
         period",
    )
}

/// Creates the resource group `name` in subscription `sub` at `location` (a name or display
/// name).
///
/// # Errors
/// No such subscription, a bad name, an unknown location, or a group of that name (in any
/// case) exists (`ResourceGroupExists`, 409: ARM itself answers a PUT of an existing group as
/// an update; the simulator refuses so a typo is not silently merged).
pub fn create_resource_group(
    tx: &Tx,
    sub: &str,
    name: &str,
    location: &str,
) -> Result<Resource<ResourceGroup>> {
    let s = subscription(tx, sub)?;
    check_resource_group_name(name)?;
    let loc = self::location(location)?;
    if let Some(g) = find_named::<ResourceGroup>(tx, &s.id, name)? {
        return Err(arm_error(
            409,
            "ResourceGroupExists",
            format!(
                "A resource group {:?} exists already in the subscription {sub:?}.",
                g.name
            ),
        ));
    }
    tx.insert(
        &resource_group_id(&s.properties.subscription_id, name),
        Some(&s.id),
        &ResourceGroup {
            location: loc.name.to_string(),
            provisioning_state: "Succeeded".into(),
            tags: Tags::new(),
        },
    )
}

/// The resource group `name` of `sub` (case-insensitive).
///
/// # Errors
/// It does not exist (`ResourceGroupNotFound`).
pub fn resource_group(tx: &Tx, sub: &str, name: &str) -> Result<Resource<ResourceGroup>> {
    let s = subscription(tx, sub)?;
    find_named(tx, &s.id, name)?.ok_or_else(|| {
        arm_error(
            404,
            "ResourceGroupNotFound",
            format!("Resource group {name:?} could not be found."),
        )
    })
}

/// The resource groups of `sub`, in the order made.
///
/// # Errors
/// No such subscription.
pub fn list_resource_groups(tx: &Tx, sub: &str) -> Result<Vec<Resource<ResourceGroup>>> {
    let s = subscription(tx, sub)?;
    tx.list(Some(&s.id))
}

/// Deletes the resource group and everything in it, as ARM does: VMs first, then NICs and
/// disks, networks, and storage accounts with their blobs (under `blobs_root`, see
/// [`storage::account_blobs`]).
///
/// # Errors
/// It does not exist, or a blob folder cannot be removed.
pub fn delete_resource_group(tx: &Tx, sub: &str, name: &str, blobs_root: &Path) -> Result<()> {
    let g = resource_group(tx, sub, name)?;
    let accounts: Vec<String> = tx
        .list::<StorageAccount>(Some(&g.id))?
        .into_iter()
        .map(|a| a.id)
        .collect();
    tx.delete(&g.id)?;
    for id in accounts {
        storage::remove_account_files(blobs_root, &id)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod upload_tests;
