//! Storage accounts: Azure's naming rule, global uniqueness (across the whole site, and against
//! a table of names "taken by someone else" that a scenario sets), replication kinds, the blob
//! endpoint, and the account's page blobs in files ([`FileBlobs`] under
//! `<blobs_root>/<account>/`), which go with the account.

use super::{
    Tags, arm_error, check_name, find_named, get_by_id, location, resource_group, resource_id,
};
use crate::cloud::fake::file_pageblob::FileBlobs;
use crate::cloud::pageblob::BlobName;
use crate::error::{Error, Result};
use crate::site::store::{Kind, Resource, Tx};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The setting holding the names taken by someone else.
pub const TAKEN_NAMES_SETTING: &str = "azure.storageAccountNamesTaken";

/// How a storage account keeps its copies (the SKU name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Replication {
    /// Three copies in one datacenter.
    #[serde(rename = "Standard_LRS")]
    StandardLrs,
    /// LRS plus three copies in the paired region.
    #[serde(rename = "Standard_GRS")]
    StandardGrs,
    /// GRS with read access to the secondary: the tutorial's default.
    #[serde(rename = "Standard_RAGRS")]
    #[default]
    StandardRagrs,
    /// Three availability zones in one region.
    #[serde(rename = "Standard_ZRS")]
    StandardZrs,
    /// SSD, locally redundant.
    #[serde(rename = "Premium_LRS")]
    PremiumLrs,
}

impl Replication {
    /// Every kind.
    pub const ALL: [Replication; 5] = [
        Replication::StandardLrs,
        Replication::StandardGrs,
        Replication::StandardRagrs,
        Replication::StandardZrs,
        Replication::PremiumLrs,
    ];

    /// The SKU name (`Standard_RAGRS`).
    pub fn name(self) -> &'static str {
        match self {
            Replication::StandardLrs => "Standard_LRS",
            Replication::StandardGrs => "Standard_GRS",
            Replication::StandardRagrs => "Standard_RAGRS",
            Replication::StandardZrs => "Standard_ZRS",
            Replication::PremiumLrs => "Premium_LRS",
        }
    }

    /// The kind named `s` (case-insensitive; `RA-GRS`, `ragrs` and `Standard_RAGRS` alike).
    ///
    /// # Errors
    /// Not a kind (`InvalidSku`, listing them).
    pub fn parse(s: &str) -> Result<Replication> {
        let key: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .flat_map(|c| c.to_lowercase())
            .collect();
        let key = if key.starts_with("standard") || key.starts_with("premium") {
            key
        } else {
            format!("standard{key}")
        };
        Self::ALL
            .into_iter()
            .find(|r| r.name().replace('_', "").to_lowercase() == key)
            .ok_or_else(|| {
                arm_error(
                    400,
                    "InvalidSku",
                    format!(
                        "The sku {s:?} is invalid: one of {}",
                        Self::ALL.map(Replication::name).join(", ")
                    ),
                )
            })
    }

    /// Whether a second copy lives in the paired region.
    pub fn geo(self) -> bool {
        matches!(self, Replication::StandardGrs | Replication::StandardRagrs)
    }
}

/// A storage account's SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSku {
    /// The replication kind.
    pub name: Replication,
    /// `Standard` or `Premium`.
    pub tier: String,
}

/// Where a storage account answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// `https://{name}.blob.core.windows.net/`.
    pub blob: String,
}

/// A storage account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccount {
    /// Its region.
    pub location: String,
    /// Its SKU.
    pub sku: StorageSku,
    /// `StorageV2`.
    pub kind: String,
    /// Its endpoints.
    pub primary_endpoints: Endpoints,
    /// Its region.
    pub primary_location: String,
    /// The paired region, for geo-redundant kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_location: Option<String>,
    /// `available`.
    pub status_of_primary: String,
    /// `available` for geo-redundant kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_of_secondary: Option<String>,
    /// `Hot`.
    pub access_tier: String,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Kind for StorageAccount {
    const TYPE: &'static str = "Microsoft.Storage/storageAccounts";
}

/// Azure's rule: 3–24 characters, digits and lower-case letters only.
///
/// # Errors
/// The name breaks it (`AccountNameInvalid`, Azure's message).
pub fn check_storage_account_name(name: &str) -> Result<()> {
    check_name(
        "storage account",
        name,
        (3, 24),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |_, _| true,
        "AccountNameInvalid",
        "Storage account name must be between 3 and 24 characters in length and use numbers and \
         lower-case letters only.",
    )
}

/// Names "already taken by someone else" (a scenario's table), lower case.
///
/// # Errors
/// The setting does not decode.
pub fn taken_storage_account_names(tx: &Tx) -> Result<Vec<String>> {
    Ok(tx
        .setting::<Vec<String>>(TAKEN_NAMES_SETTING)?
        .unwrap_or_default())
}

/// Sets the names taken by someone else.
///
/// # Errors
/// The store's.
pub fn set_taken_storage_account_names(tx: &Tx, names: &[String]) -> Result<()> {
    let mut v: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    v.sort();
    v.dedup();
    tx.set_setting(TAKEN_NAMES_SETTING, &v)
}

/// The answer of `checkNameAvailability`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NameAvailability {
    /// Whether the name can be had.
    pub name_available: bool,
    /// `AccountNameInvalid` or `AlreadyExists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Whether `name` can be a new storage account (Azure's `checkNameAvailability`).
///
/// # Errors
/// The store's.
pub fn check_storage_account_name_availability(tx: &Tx, name: &str) -> Result<NameAvailability> {
    if let Err(e) = check_storage_account_name(name) {
        return Ok(NameAvailability {
            name_available: false,
            reason: Some("AccountNameInvalid".into()),
            message: Some(e.message().to_string()),
        });
    }
    let taken = find_storage_account(tx, name)?.is_some()
        || taken_storage_account_names(tx)?.iter().any(|t| t == name);
    Ok(if taken {
        NameAvailability {
            name_available: false,
            reason: Some("AlreadyExists".into()),
            message: Some(format!(
                "The storage account named {name} is already taken."
            )),
        }
    } else {
        NameAvailability {
            name_available: true,
            reason: None,
            message: None,
        }
    })
}

/// Creates the storage account `name` in the group `rg` of `sub`, at `location` (the group's
/// when `None`), of replication kind `sku` (`Standard_RAGRS` when `None`), kind StorageV2.
///
/// # Errors
/// No such group, a bad name (`AccountNameInvalid`), a name used anywhere in the site or taken
/// by someone else (`StorageAccountAlreadyTaken`, 409), an unknown location.
pub fn create_storage_account(
    tx: &Tx,
    sub: &str,
    rg: &str,
    name: &str,
    location: Option<&str>,
    sku: Option<Replication>,
) -> Result<Resource<StorageAccount>> {
    let g = resource_group(tx, sub, rg)?;
    check_storage_account_name(name)?;
    let a = check_storage_account_name_availability(tx, name)?;
    if !a.name_available {
        return Err(arm_error(
            409,
            "StorageAccountAlreadyTaken",
            a.message.unwrap_or_default(),
        ));
    }
    let loc = self::location(location.unwrap_or(&g.properties.location))?;
    let sku = sku.unwrap_or_default();
    let tier = if sku == Replication::PremiumLrs {
        "Premium"
    } else {
        "Standard"
    };
    let props = StorageAccount {
        location: loc.name.into(),
        sku: StorageSku {
            name: sku,
            tier: tier.into(),
        },
        kind: "StorageV2".into(),
        primary_endpoints: Endpoints {
            blob: format!("https://{name}.blob.core.windows.net/"),
        },
        primary_location: loc.name.into(),
        secondary_location: sku.geo().then(|| loc.paired_region.to_string()),
        status_of_primary: "available".into(),
        status_of_secondary: sku.geo().then(|| "available".to_string()),
        access_tier: "Hot".into(),
        provisioning_state: "Succeeded".into(),
        tags: Tags::new(),
    };
    tx.insert(
        &resource_id(&g.id, StorageAccount::TYPE, name),
        Some(&g.id),
        &props,
    )
}

/// The storage account `name`, wherever it is in the site (names are unique in Azure).
///
/// # Errors
/// The store's.
pub fn find_storage_account(tx: &Tx, name: &str) -> Result<Option<Resource<StorageAccount>>> {
    Ok(tx
        .list::<StorageAccount>(None)?
        .into_iter()
        .find(|a| a.name.eq_ignore_ascii_case(name)))
}

/// The storage account `name` in group `rg` of `sub`.
///
/// # Errors
/// It does not exist (`StorageAccountNotFound`).
pub fn storage_account(
    tx: &Tx,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Resource<StorageAccount>> {
    let g = resource_group(tx, sub, rg)?;
    find_named(tx, &g.id, name)?.ok_or_else(|| {
        arm_error(
            404,
            "StorageAccountNotFound",
            format!("The storage account {name:?} was not found in the resource group {rg:?}."),
        )
    })
}

/// The storage accounts of group `rg` of `sub`, or of every group when `rg` is `None`.
///
/// # Errors
/// No such group.
pub fn list_storage_accounts(
    tx: &Tx,
    sub: &str,
    rg: Option<&str>,
) -> Result<Vec<Resource<StorageAccount>>> {
    match rg {
        Some(rg) => {
            let g = resource_group(tx, sub, rg)?;
            tx.list(Some(&g.id))
        }
        None => {
            let prefix = format!("{}/", super::subscription(tx, sub)?.id);
            Ok(tx
                .list::<StorageAccount>(None)?
                .into_iter()
                .filter(|a| a.id.starts_with(&prefix))
                .collect())
        }
    }
}

/// Deletes the storage account `id` and its blobs (the folder under `blobs_root`).
///
/// # Errors
/// It does not exist, or its folder cannot be removed.
pub fn delete_storage_account(tx: &Tx, id: &str, blobs_root: &Path) -> Result<()> {
    let a = get_by_id::<StorageAccount>(tx, id, "storage account")?;
    tx.delete(&a.id)?;
    remove_account_files(blobs_root, &a.id)
}

/// The folder of the account `name`'s blobs.
pub fn account_dir(blobs_root: &Path, name: &str) -> PathBuf {
    blobs_root.join(name.to_lowercase())
}

/// The page blobs of the storage account `name`: files under `<blobs_root>/<name>/`.
pub fn account_blobs(blobs_root: &Path, name: &str) -> FileBlobs {
    FileBlobs::new(account_dir(blobs_root, name))
}

pub(crate) fn remove_account_files(blobs_root: &Path, id: &str) -> Result<()> {
    let name = id.rsplit('/').next().unwrap_or(id);
    let dir = account_dir(blobs_root, name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing the storage account's blobs", e).with_path(&dir)),
    }
}

/// The URL of `blob` in `account` (`https://{account}.blob.core.windows.net/{container}/{blob}`).
pub fn blob_uri(account: &StorageAccount, blob: &BlobName) -> String {
    format!(
        "{}{}/{}",
        account.primary_endpoints.blob, blob.container, blob.blob
    )
}

/// The account name and the blob a blob URL names.
///
/// # Errors
/// Not a `https://{account}.blob.core.windows.net/{container}/{blob}` URL.
pub fn parse_blob_uri(uri: &str) -> Result<(String, BlobName)> {
    let bad = || {
        arm_error(
            400,
            "InvalidParameter",
            format!(
                "{uri:?} is not a blob URL: expected \
                 https://{{account}}.blob.core.windows.net/{{container}}/{{blob}}"
            ),
        )
    };
    let rest = uri.strip_prefix("https://").ok_or_else(bad)?;
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    let account = host
        .strip_suffix(".blob.core.windows.net")
        .filter(|a| !a.is_empty())
        .ok_or_else(bad)?;
    let (container, blob) = path.split_once('/').ok_or_else(bad)?;
    if container.is_empty() || blob.is_empty() {
        return Err(bad());
    }
    Ok((account.to_string(), BlobName::new(container, blob)))
}
