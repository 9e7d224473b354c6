//! Virtual networks, subnets, private IP addresses and network interfaces.
//!
//! - [`Cidr`]: IPv4 prefixes, parsed strictly (`10.0.0.0/24`; host bits must be zero, as ARM
//!   requires), with containment and overlap.
//! - A virtual network has address prefixes (default `10.0.0.0/16`) and subnets, child
//!   resources (default `default`, `10.0.0.0/24`: the portal's defaults for a new network).
//!   A subnet lies inside one of the network's prefixes, overlaps no other subnet, and is at
//!   most a /29 (prefix length 29 or less), as Azure requires; prefixes are /2 to /29 and may
//!   not touch the ranges Azure keeps for itself (loopback, link-local, multicast, broadcast,
//!   168.63.129.16).
//! - **Addresses** ([`allocate`]): Azure keeps the first four and the last address of every
//!   subnet (network, gateway, two for DNS, broadcast). A NIC's address is held as long as the
//!   NIC exists; which addresses are used is read from the subnet's NICs, so deleting a NIC
//!   releases its address in the same transaction. Requests: [`IpRequest::Dynamic`] (the
//!   lowest free address, as Azure's DHCP-backed allocation gives), [`IpRequest::Static`] (that
//!   address or an error), [`IpRequest::Preferred`] (that address when it is free, else the next
//!   free one above it, wrapping to the lowest — what Site Recovery does with a source machine's
//!   IP at failover). A full subnet is `SubnetIsFull`.

use super::{
    SubResource, Tags, arm_error, check_name, find_named, get_by_id, location, not_found,
    resource_group, resource_id,
};
use crate::error::Result;
use crate::site::store::{Kind, Resource, Tx};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The address space of a network made without one.
pub const DEFAULT_ADDRESS_SPACE: &str = "10.0.0.0/16";
/// The subnet a network made without any gets.
pub const DEFAULT_SUBNET: (&str, &str) = ("default", "10.0.0.0/24");
/// Addresses Azure keeps at the start of every subnet: network, default gateway, two for DNS.
pub const RESERVED_AT_START: u32 = 4;
/// The smallest subnet Azure allows: /29 (8 addresses, 3 usable).
pub const MAX_PREFIX_LEN: u8 = 29;
/// The largest prefix Azure allows: /2.
pub const MIN_PREFIX_LEN: u8 = 2;

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The first address.
    pub network: Ipv4Addr,
    /// The prefix length, 0–32.
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` with host bits zero.
    ///
    /// # Errors
    /// Not of that form (`InvalidAddressPrefixFormat`), or host bits set
    /// (`InvalidAddressPrefix`, naming the prefix it should be).
    pub fn parse(s: &str) -> Result<Cidr> {
        let bad = || {
            arm_error(
                400,
                "InvalidAddressPrefixFormat",
                format!("Address prefix {s:?} is not a valid CIDR: expected a.b.c.d/n with n 0-32"),
            )
        };
        let (ip, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let c = Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask(len)),
            len,
        };
        if c.network != ip {
            return Err(arm_error(
                400,
                "InvalidAddressPrefix",
                format!("Address prefix {s} has host bits set: the prefix is {c}"),
            ));
        }
        Ok(c)
    }

    fn first(self) -> u32 {
        u32::from(self.network)
    }

    fn last(self) -> u32 {
        self.first() | !mask(self.len)
    }

    /// How many addresses it spans.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// Whether `ip` is in it.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == self.first()
    }

    /// Whether all of `other` is in it.
    pub fn covers(self, other: Cidr) -> bool {
        other.len >= self.len && self.contains(other.network)
    }

    /// Whether the two share an address.
    pub fn overlaps(self, other: Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// The addresses a NIC may have: all but the first four and the last.
    pub fn usable(self) -> impl Iterator<Item = Ipv4Addr> {
        let (a, b) = (self.first() + RESERVED_AT_START, self.last());
        (a..b).map(Ipv4Addr::from)
    }

    /// Whether `ip` is one of the usable addresses.
    pub fn is_usable(self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.contains(ip) && n >= self.first() + RESERVED_AT_START && n < self.last()
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

impl std::str::FromStr for Cidr {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Cidr> {
        Cidr::parse(s)
    }
}

/// Ranges no Azure network may use.
const AZURE_RESERVED: &[&str] = &[
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "168.63.129.16/32",
];

fn check_prefix(c: Cidr) -> Result<()> {
    if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&c.len) {
        return Err(arm_error(
            400,
            "InvalidAddressPrefix",
            format!(
                "Address prefix {c} is not allowed: Azure allows /{MIN_PREFIX_LEN} to \
                 /{MAX_PREFIX_LEN}"
            ),
        ));
    }
    for r in AZURE_RESERVED {
        if let Ok(r) = Cidr::parse(r)
            && r.overlaps(c)
        {
            return Err(arm_error(
                400,
                "InvalidAddressPrefix",
                format!("Address prefix {c} overlaps {r}, which Azure reserves"),
            ));
        }
    }
    Ok(())
}

/// A network's address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSpace {
    /// Its prefixes (`10.0.0.0/16`).
    pub address_prefixes: Vec<String>,
}

/// A virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetwork {
    /// Its region.
    pub location: String,
    /// Its address space.
    pub address_space: AddressSpace,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Kind for VirtualNetwork {
    const TYPE: &'static str = "Microsoft.Network/virtualNetworks";
}

/// A subnet (a child of its network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    /// Its prefix.
    pub address_prefix: String,
    /// `Succeeded`.
    pub provisioning_state: String,
}

impl Kind for Subnet {
    const TYPE: &'static str = "Microsoft.Network/virtualNetworks/subnets";
}

impl Subnet {
    /// Its prefix, parsed.
    ///
    /// # Errors
    /// The stored prefix does not parse (a damaged site).
    pub fn cidr(&self) -> Result<Cidr> {
        Cidr::parse(&self.address_prefix)
    }
}

/// What a new network holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnetSpec {
    /// Its region; the group's when `None`.
    pub location: Option<String>,
    /// Its address prefixes; [`DEFAULT_ADDRESS_SPACE`] when empty.
    pub address_prefixes: Vec<String>,
    /// Its subnets, `(name, prefix)`; [`DEFAULT_SUBNET`] when empty.
    pub subnets: Vec<(String, String)>,
}

impl Default for VnetSpec {
    /// The portal's defaults: `10.0.0.0/16` with `default` `10.0.0.0/24`, in the group's region.
    fn default() -> Self {
        VnetSpec {
            location: None,
            address_prefixes: Vec::new(),
            subnets: Vec::new(),
        }
    }
}

fn name_rule(what: &str, name: &str, (min, max): (usize, usize)) -> Result<()> {
    // Networking names: letters, digits, underscores, periods and hyphens; start with a letter
    // or digit, end with a letter, digit or underscore.
    check_name(
        what,
        name,
        (min, max),
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        |first, last| {
            first.is_ascii_alphanumeric() && (last.is_ascii_alphanumeric() || last == '_')
        },
        "InvalidResourceName",
        &format!(
            "{min}-{max} letters, digits, underscores, periods and hyphens, starting with a \
             letter or digit and ending with a letter, digit or underscore"
        ),
    )
}

/// Creates the virtual network `name` in group `rg` of `sub`, with its subnets.
///
/// # Errors
/// No such group, a bad or duplicate name, bad or overlapping prefixes, a subnet outside the
/// space or overlapping another (see [`add_subnet`]).
pub fn create_virtual_network(
    tx: &Tx,
    sub: &str,
    rg: &str,
    name: &str,
    spec: &VnetSpec,
) -> Result<Resource<VirtualNetwork>> {
    let g = resource_group(tx, sub, rg)?;
    name_rule("virtual network", name, (2, 64))?;
    if let Some(v) = find_named::<VirtualNetwork>(tx, &g.id, name)? {
        return Err(arm_error(
            409,
            "ResourceExists",
            format!("The virtual network {:?} exists already in {rg:?}.", v.name),
        ));
    }
    let loc = location(spec.location.as_deref().unwrap_or(&g.properties.location))?;
    let texts = if spec.address_prefixes.is_empty() {
        vec![DEFAULT_ADDRESS_SPACE.to_string()]
    } else {
        spec.address_prefixes.clone()
    };
    let mut prefixes: Vec<Cidr> = Vec::new();
    for t in &texts {
        let c = Cidr::parse(t)?;
        check_prefix(c)?;
        if let Some(o) = prefixes.iter().find(|o| o.overlaps(c)) {
            return Err(arm_error(
                400,
                "VnetAddressSpacesOverlap",
                format!("The address prefixes {o} and {c} of the virtual network overlap."),
            ));
        }
        prefixes.push(c);
    }
    let vnet = tx.insert(
        &resource_id(&g.id, VirtualNetwork::TYPE, name),
        Some(&g.id),
        &VirtualNetwork {
            location: loc.name.into(),
            address_space: AddressSpace {
                address_prefixes: prefixes.iter().map(Cidr::to_string).collect(),
            },
            provisioning_state: "Succeeded".into(),
            tags: Tags::new(),
        },
    )?;
    let subnets = if spec.subnets.is_empty() {
        vec![(DEFAULT_SUBNET.0.to_string(), DEFAULT_SUBNET.1.to_string())]
    } else {
        spec.subnets.clone()
    };
    for (n, p) in &subnets {
        add_subnet(tx, &vnet.id, n, p)?;
    }
    Ok(vnet)
}

/// The virtual network `name` in group `rg` of `sub`.
///
/// # Errors
/// It does not exist.
pub fn virtual_network(
    tx: &Tx,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Resource<VirtualNetwork>> {
    let g = resource_group(tx, sub, rg)?;
    find_named(tx, &g.id, name)?.ok_or_else(|| {
        not_found(
            "virtual network",
            &resource_id(&g.id, VirtualNetwork::TYPE, name),
        )
    })
}

/// The virtual networks of group `rg` of `sub`.
///
/// # Errors
/// No such group.
pub fn list_virtual_networks(
    tx: &Tx,
    sub: &str,
    rg: &str,
) -> Result<Vec<Resource<VirtualNetwork>>> {
    let g = resource_group(tx, sub, rg)?;
    tx.list(Some(&g.id))
}

/// Adds the subnet `name` with `prefix` to the network `vnet_id`.
///
/// # Errors
/// A bad or duplicate name, a bad prefix, a prefix longer than /29 or outside the network's
/// space (`NetcfgInvalidSubnet`), or overlapping another subnet (`NetcfgSubnetRangesOverlap`).
pub fn add_subnet(tx: &Tx, vnet_id: &str, name: &str, prefix: &str) -> Result<Resource<Subnet>> {
    let vnet = get_by_id::<VirtualNetwork>(tx, vnet_id, "virtual network")?;
    name_rule("subnet", name, (1, 80))?;
    if let Some(s) = find_named::<Subnet>(tx, &vnet.id, name)? {
        return Err(arm_error(
            409,
            "ResourceExists",
            format!("The subnet {:?} exists already in {:?}.", s.name, vnet.name),
        ));
    }
    let c = Cidr::parse(prefix)?;
    check_prefix(c)?;
    let space: Vec<Cidr> = vnet
        .properties
        .address_space
        .address_prefixes
        .iter()
        .map(|p| Cidr::parse(p))
        .collect::<Result<_>>()?;
    if !space.iter().any(|s| s.covers(c)) {
        return Err(arm_error(
            400,
            "NetcfgInvalidSubnet",
            format!(
                "Subnet {name:?} is not valid in virtual network {:?}: its prefix {c} is not \
                 inside the address space {}",
                vnet.name,
                vnet.properties.address_space.address_prefixes.join(", ")
            ),
        ));
    }
    for s in tx.list::<Subnet>(Some(&vnet.id))? {
        let o = s.properties.cidr()?;
        if o.overlaps(c) {
            return Err(arm_error(
                400,
                "NetcfgSubnetRangesOverlap",
                format!(
                    "Subnet {name:?} ({c}) overlaps the subnet {:?} ({o}) of the virtual network {:?}.",
                    s.name, vnet.name
                ),
            ));
        }
    }
    tx.insert(
        &format!("{}/subnets/{name}", vnet.id),
        Some(&vnet.id),
        &Subnet {
            address_prefix: c.to_string(),
            provisioning_state: "Succeeded".into(),
        },
    )
}

/// The subnets of the network `vnet_id`.
///
/// # Errors
/// No such network.
pub fn list_subnets(tx: &Tx, vnet_id: &str) -> Result<Vec<Resource<Subnet>>> {
    let vnet = get_by_id::<VirtualNetwork>(tx, vnet_id, "virtual network")?;
    tx.list(Some(&vnet.id))
}

/// The subnet `name` of the network `vnet_id`.
///
/// # Errors
/// It does not exist.
pub fn subnet(tx: &Tx, vnet_id: &str, name: &str) -> Result<Resource<Subnet>> {
    let vnet = get_by_id::<VirtualNetwork>(tx, vnet_id, "virtual network")?;
    find_named(tx, &vnet.id, name)?
        .ok_or_else(|| not_found("subnet", &format!("{}/subnets/{name}", vnet.id)))
}

fn in_use(tx: &Tx, subnet: &Resource<Subnet>) -> Result<()> {
    let nics = nics_in_subnet(tx, &subnet.id)?;
    if let Some(n) = nics.first() {
        return Err(arm_error(
            400,
            "InUseSubnetCannotBeDeleted",
            format!(
                "Subnet {:?} is in use by {} and cannot be deleted (and {} more).",
                subnet.name,
                n.id,
                nics.len() - 1
            ),
        ));
    }
    Ok(())
}

/// Deletes a subnet.
///
/// # Errors
/// It does not exist, or a NIC uses it (`InUseSubnetCannotBeDeleted`).
pub fn delete_subnet(tx: &Tx, subnet_id: &str) -> Result<()> {
    let s = get_by_id::<Subnet>(tx, subnet_id, "subnet")?;
    in_use(tx, &s)?;
    tx.delete(&s.id)
}

/// Deletes a network and its subnets.
///
/// # Errors
/// It does not exist, or a NIC uses one of its subnets.
pub fn delete_virtual_network(tx: &Tx, vnet_id: &str) -> Result<()> {
    let vnet = get_by_id::<VirtualNetwork>(tx, vnet_id, "virtual network")?;
    for s in tx.list::<Subnet>(Some(&vnet.id))? {
        in_use(tx, &s)?;
    }
    tx.delete(&vnet.id)
}

// ---------------------------------------------------------------------------------------------
// Addresses.

/// How a NIC's address was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationMethod {
    /// Picked by Azure.
    Dynamic,
    /// Asked for.
    Static,
}

/// What address a new NIC asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRequest {
    /// The lowest free address.
    Dynamic,
    /// Exactly this one, or an error.
    Static(Ipv4Addr),
    /// This one when it is free and usable in the subnet, else the next free address above it
    /// (wrapping to the lowest); an address outside the subnet gets the lowest free one.
    Preferred(Ipv4Addr),
}

/// The address `req` gets in `subnet` when `used` are taken, and how it was allocated
/// (Static when the address asked for was granted, Dynamic when Azure chose).
///
/// # Errors
/// `Static` with an address outside the subnet (`PrivateIPAddressNotInSubnet`), reserved by
/// Azure (`PrivateIPAddressInReservedRange`) or used (`PrivateIPAddressInUse`); no free
/// address (`SubnetIsFull`).
pub fn allocate(
    subnet: Cidr,
    used: &BTreeSet<Ipv4Addr>,
    req: IpRequest,
) -> Result<(Ipv4Addr, AllocationMethod)> {
    let full = || {
        arm_error(
            400,
            "SubnetIsFull",
            format!(
                "Subnet with address prefix {subnet} does not have enough capacity for 1 IP \
                 address: its {} usable addresses are all in use.",
                subnet
                    .size()
                    .saturating_sub(u64::from(RESERVED_AT_START) + 1)
            ),
        )
    };
    let lowest_free = || subnet.usable().find(|ip| !used.contains(ip));
    match req {
        IpRequest::Dynamic => lowest_free()
            .map(|ip| (ip, AllocationMethod::Dynamic))
            .ok_or_else(full),
        IpRequest::Static(ip) => {
            if !subnet.contains(ip) {
                return Err(arm_error(
                    400,
                    "PrivateIPAddressNotInSubnet",
                    format!(
                        "Private static IP address {ip} does not belong to the range of subnet prefix {subnet}."
                    ),
                ));
            }
            if !subnet.is_usable(ip) {
                return Err(arm_error(
                    400,
                    "PrivateIPAddressInReservedRange",
                    format!(
                        "Private static IP address {ip} falls within reserved IP range of subnet \
                         prefix {subnet}: Azure keeps the first four and the last address."
                    ),
                ));
            }
            if used.contains(&ip) {
                return Err(arm_error(
                    400,
                    "PrivateIPAddressInUse",
                    format!(
                        "IP configuration is using the private IP address {ip} which is already allocated to another resource."
                    ),
                ));
            }
            Ok((ip, AllocationMethod::Static))
        }
        IpRequest::Preferred(ip) => {
            if !subnet.contains(ip) {
                return lowest_free()
                    .map(|ip| (ip, AllocationMethod::Dynamic))
                    .ok_or_else(full);
            }
            if subnet.is_usable(ip) && !used.contains(&ip) {
                return Ok((ip, AllocationMethod::Static));
            }
            let above = subnet.usable().find(|a| *a > ip && !used.contains(a));
            above
                .or_else(lowest_free)
                .map(|ip| (ip, AllocationMethod::Dynamic))
                .ok_or_else(full)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network interfaces.

/// An IP configuration's properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfigurationProperties {
    /// The private address.
    #[serde(rename = "privateIPAddress")]
    pub private_ip_address: Ipv4Addr,
    /// How it was given.
    #[serde(rename = "privateIPAllocationMethod")]
    pub private_ip_allocation_method: AllocationMethod,
    /// `IPv4`.
    #[serde(rename = "privateIPAddressVersion")]
    pub private_ip_address_version: String,
    /// The subnet.
    pub subnet: SubResource,
    /// The NIC's primary configuration.
    pub primary: bool,
}

/// One IP configuration of a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfiguration {
    /// `ipconfig1`.
    pub name: String,
    /// Its properties.
    pub properties: IpConfigurationProperties,
}

/// A network interface (one IP configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// Its region (its network's).
    pub location: String,
    /// Its IP configurations.
    pub ip_configurations: Vec<IpConfiguration>,
    /// The VM it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<SubResource>,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Kind for NetworkInterface {
    const TYPE: &'static str = "Microsoft.Network/networkInterfaces";
}

impl NetworkInterface {
    /// The primary configuration's address.
    pub fn private_ip(&self) -> Option<Ipv4Addr> {
        self.primary().map(|c| c.properties.private_ip_address)
    }

    /// The primary configuration's subnet.
    pub fn subnet_id(&self) -> Option<&str> {
        self.primary().map(|c| c.properties.subnet.id.as_str())
    }

    fn primary(&self) -> Option<&IpConfiguration> {
        self.ip_configurations
            .iter()
            .find(|c| c.properties.primary)
            .or(self.ip_configurations.first())
    }
}

/// The NICs with an address in `subnet_id`.
///
/// # Errors
/// The store's.
pub fn nics_in_subnet(tx: &Tx, subnet_id: &str) -> Result<Vec<Resource<NetworkInterface>>> {
    Ok(tx
        .list::<NetworkInterface>(None)?
        .into_iter()
        .filter(|n| {
            n.properties
                .ip_configurations
                .iter()
                .any(|c| c.properties.subnet.id.eq_ignore_ascii_case(subnet_id))
        })
        .collect())
}

/// The addresses in use in `subnet_id`.
///
/// # Errors
/// The store's.
pub fn used_addresses(tx: &Tx, subnet_id: &str) -> Result<BTreeSet<Ipv4Addr>> {
    Ok(nics_in_subnet(tx, subnet_id)?
        .iter()
        .flat_map(|n| n.properties.ip_configurations.iter())
        .filter(|c| c.properties.subnet.id.eq_ignore_ascii_case(subnet_id))
        .map(|c| c.properties.private_ip_address)
        .collect())
}

/// Creates the NIC `name` in group `rg` of `sub`, in the subnet `subnet_id`, with the address
/// `req` gets (see [`allocate`]); its region is its network's.
///
/// # Errors
/// No such group or subnet, a bad or duplicate name, or the address cannot be had.
pub fn create_network_interface(
    tx: &Tx,
    sub: &str,
    rg: &str,
    name: &str,
    subnet_id: &str,
    req: IpRequest,
) -> Result<Resource<NetworkInterface>> {
    let g = resource_group(tx, sub, rg)?;
    name_rule("network interface", name, (1, 80))?;
    if let Some(n) = find_named::<NetworkInterface>(tx, &g.id, name)? {
        return Err(arm_error(
            409,
            "ResourceExists",
            format!(
                "The network interface {:?} exists already in {rg:?}.",
                n.name
            ),
        ));
    }
    let s = get_by_id::<Subnet>(tx, subnet_id, "subnet")?;
    let vnet_id = s.parent.clone().unwrap_or_default();
    let vnet = get_by_id::<VirtualNetwork>(tx, &vnet_id, "virtual network")?;
    let used = used_addresses(tx, &s.id)?;
    let (ip, method) = allocate(s.properties.cidr()?, &used, req)?;
    tx.insert(
        &resource_id(&g.id, NetworkInterface::TYPE, name),
        Some(&g.id),
        &NetworkInterface {
            location: vnet.properties.location,
            ip_configurations: vec![IpConfiguration {
                name: "ipconfig1".into(),
                properties: IpConfigurationProperties {
                    private_ip_address: ip,
                    private_ip_allocation_method: method,
                    private_ip_address_version: "IPv4".into(),
                    subnet: SubResource { id: s.id },
                    primary: true,
                },
            }],
            virtual_machine: None,
            provisioning_state: "Succeeded".into(),
            tags: Tags::new(),
        },
    )
}

/// The NIC `id`.
///
/// # Errors
/// It does not exist.
pub fn network_interface(tx: &Tx, id: &str) -> Result<Resource<NetworkInterface>> {
    get_by_id(tx, id, "network interface")
}

/// The NICs of group `rg` of `sub`.
///
/// # Errors
/// No such group.
pub fn list_network_interfaces(
    tx: &Tx,
    sub: &str,
    rg: &str,
) -> Result<Vec<Resource<NetworkInterface>>> {
    let g = resource_group(tx, sub, rg)?;
    tx.list(Some(&g.id))
}

/// Deletes a NIC, releasing its address.
///
/// # Errors
/// It does not exist, or a VM uses it (`NicInUse`).
pub fn delete_network_interface(tx: &Tx, id: &str) -> Result<()> {
    let n = network_interface(tx, id)?;
    if let Some(vm) = &n.properties.virtual_machine {
        return Err(arm_error(
            400,
            "NicInUse",
            format!(
                "Network Interface {} is used by existing resource {}. In order to delete the \
                 network interface, it must be dissociated from the resource.",
                n.id, vm.id
            ),
        ));
    }
    tx.delete(&n.id)
}
