//! `ec2azure azure …`: the site's simulated Azure subscription — resource groups, storage
//! accounts, virtual networks and subnets, managed disks and VMs (list and show; the failover
//! makes the disks and VMs).

use crate::site::{SiteOpt, print_json};
use anyhow::Result;
use clap::Subcommand;
use ec2azure::site::azure as az;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum AzureCommand {
    /// Resource groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Storage accounts.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Virtual networks and their subnets.
    #[command(subcommand)]
    Vnet(VnetCommand),
    /// Virtual machines of a resource group.
    Vm {
        /// The resource group.
        #[arg(long)]
        resource_group: String,
    },
    /// Managed disks of a resource group.
    Disk {
        /// The resource group.
        #[arg(long)]
        resource_group: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a resource group.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its region (`westeurope` or "West Europe").
        #[arg(long)]
        location: String,
    },
    /// List the resource groups.
    List,
    /// Delete a resource group and everything in it.
    Delete {
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum StorageCommand {
    /// Create a storage account (3–24 lower-case letters and digits, unique in Azure).
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its resource group.
        #[arg(long)]
        resource_group: String,
        /// Its region (default: the group's).
        #[arg(long)]
        location: Option<String>,
        /// Replication: Standard_LRS, Standard_GRS, Standard_RAGRS (default), Standard_ZRS,
        /// Premium_LRS.
        #[arg(long)]
        sku: Option<String>,
    },
    /// List the storage accounts.
    List {
        /// Only those of a group.
        #[arg(long)]
        resource_group: Option<String>,
    },
    /// Whether a name is available (the service's checkNameAvailability).
    CheckName {
        /// The name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum VnetCommand {
    /// Create a virtual network (default address space 10.0.0.0/16, subnet `default`
    /// 10.0.0.0/24).
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its resource group.
        #[arg(long)]
        resource_group: String,
        /// Its address prefixes (repeat).
        #[arg(long)]
        address_prefix: Vec<String>,
        /// Subnets as NAME=PREFIX (repeat).
        #[arg(long)]
        subnet: Vec<String>,
    },
    /// Add a subnet.
    AddSubnet {
        /// The network.
        #[arg(long)]
        vnet: String,
        /// Its resource group.
        #[arg(long)]
        resource_group: String,
        /// The subnet's name.
        #[arg(long)]
        name: String,
        /// Its prefix.
        #[arg(long)]
        prefix: String,
    },
    /// List the networks of a group with their subnets.
    List {
        /// The resource group.
        #[arg(long)]
        resource_group: String,
    },
}

pub(crate) fn azure_cmd(c: AzureCommand, o: &SiteOpt, quiet: bool) -> Result<ExitCode> {
    let mut site = o.open()?;
    let sub = site.config().subscription_id.clone();
    let blobs = site.dir().join("blobs");
    let v: serde_json::Value = site.tx(|t| {
        let j = |x: &dyn erased::Ser| x.json();
        Ok(match c {
            AzureCommand::Group(GroupCommand::Create { name, location }) => {
                j(&az::create_resource_group(t, &sub, &name, &location)?)
            }
            AzureCommand::Group(GroupCommand::List) => j(&az::list_resource_groups(t, &sub)?),
            AzureCommand::Group(GroupCommand::Delete { name }) => {
                az::delete_resource_group(t, &sub, &name, &blobs)?;
                serde_json::json!({ "deleted": name })
            }
            AzureCommand::Storage(StorageCommand::Create {
                name,
                resource_group,
                location,
                sku,
            }) => {
                let sku = sku.as_deref().map(az::Replication::parse).transpose()?;
                j(&az::create_storage_account(
                    t,
                    &sub,
                    &resource_group,
                    &name,
                    location.as_deref(),
                    sku,
                )?)
            }
            AzureCommand::Storage(StorageCommand::List { resource_group }) => j(
                &az::list_storage_accounts(t, &sub, resource_group.as_deref())?,
            ),
            AzureCommand::Storage(StorageCommand::CheckName { name }) => {
                j(&az::check_storage_account_name_availability(t, &name)?)
            }
            AzureCommand::Vnet(VnetCommand::Create {
                name,
                resource_group,
                address_prefix,
                subnet,
            }) => {
                let mut spec = az::VnetSpec {
                    address_prefixes: address_prefix,
                    ..az::VnetSpec::default()
                };
                for s in subnet {
                    let Some((n, p)) = s.split_once('=') else {
                        return Err(ec2azure::Error::argument(format!(
                            "--subnet {s:?}: expected NAME=PREFIX"
                        )));
                    };
                    spec.subnets.push((n.to_string(), p.to_string()));
                }
                let v = az::create_virtual_network(t, &sub, &resource_group, &name, &spec)?;
                let subnets = az::list_subnets(t, &v.id)?;
                serde_json::json!({ "network": v, "subnets": subnets })
            }
            AzureCommand::Vnet(VnetCommand::AddSubnet {
                vnet,
                resource_group,
                name,
                prefix,
            }) => {
                let v = az::virtual_network(t, &sub, &resource_group, &vnet)?;
                j(&az::add_subnet(t, &v.id, &name, &prefix)?)
            }
            AzureCommand::Vnet(VnetCommand::List { resource_group }) => {
                let mut out = Vec::new();
                for v in az::list_virtual_networks(t, &sub, &resource_group)? {
                    let subnets = az::list_subnets(t, &v.id)?;
                    out.push(serde_json::json!({ "network": v, "subnets": subnets }));
                }
                serde_json::Value::Array(out)
            }
            AzureCommand::Vm { resource_group } => {
                j(&az::list_virtual_machines(t, &sub, &resource_group)?)
            }
            AzureCommand::Disk { resource_group } => j(&az::list_disks(t, &sub, &resource_group)?),
        })
    })?;
    if o.json {
        print_json(&v)?;
    } else if !quiet {
        print_text(&v);
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per resource: name, type and its most telling properties.
fn print_text(v: &serde_json::Value) {
    let one = |r: &serde_json::Value| {
        let name = r["name"]
            .as_str()
            .or_else(|| r["network"]["name"].as_str())
            .unwrap_or("");
        let id = r["id"]
            .as_str()
            .or_else(|| r["network"]["id"].as_str())
            .unwrap_or("");
        println!("{name:<24} {id}");
        if let Some(subnets) = r["subnets"].as_array() {
            for s in subnets {
                println!(
                    "  subnet {:<16} {}",
                    s["name"].as_str().unwrap_or(""),
                    s["properties"]["addressPrefix"].as_str().unwrap_or("")
                );
            }
        }
    };
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(one),
        other if other.get("name").is_some() || other.get("network").is_some() => one(other),
        other => println!("{other}"),
    }
}

/// Serialising values of different types through one closure.
mod erased {
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}
