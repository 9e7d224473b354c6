//! Azure VM sizes: a table of the sizes a migrated machine may get ([`SIZES`]) and the rule that
//! picks one for a source machine ([`choose_size`]).
//!
//! Figures from Microsoft's size pages (MicrosoftDocs/azure-compute-docs,
//! `articles/virtual-machines/sizes/…`: `bv1-series`, `dv3-series` and `dsv3-series`,
//! `esv3-series`, `fsv2-series`, `av2-series`, and `previous-gen-sizes-list` for Basic A):
//! vCPUs, memory, max data disks and whether the size runs Generation 2 VMs (Basic A and Av2
//! are Generation 1 only). `price` is the pay-as-you-go Linux list price in East US, in
//! micro-dollars per hour (2024), used only to order sizes that tie on vCPUs and memory.

use crate::error::{Error, Result};
use serde::Serialize;

/// One VM size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSize {
    /// The name as ARM spells it (`Standard_D2s_v3`).
    pub name: &'static str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Data disks it can attach at most.
    pub max_data_disks: u32,
    /// Whether it runs Generation 2 (UEFI) VMs; every size here runs Generation 1.
    pub generation2: bool,
    /// East US Linux pay-as-you-go price, µ$/hour: for ordering ties only.
    pub price: u32,
}

const fn s(
    name: &'static str,
    vcpus: u32,
    memory_mib: u64,
    max_data_disks: u32,
    generation2: bool,
    price: u32,
) -> VmSize {
    VmSize {
        name,
        vcpus,
        memory_mib,
        max_data_disks,
        generation2,
        price,
    }
}

const GIB: u64 = 1024;

/// The sizes known to the simulator.
pub const SIZES: &[VmSize] = &[
    // B-series (burstable).
    s("Standard_B1ls", 1, GIB / 2, 2, true, 5_200),
    s("Standard_B1s", 1, GIB, 2, true, 10_400),
    s("Standard_B1ms", 1, 2 * GIB, 2, true, 20_700),
    s("Standard_B2s", 2, 4 * GIB, 4, true, 41_600),
    s("Standard_B2ms", 2, 8 * GIB, 4, true, 83_200),
    s("Standard_B4ms", 4, 16 * GIB, 8, true, 166_000),
    s("Standard_B8ms", 8, 32 * GIB, 16, true, 333_000),
    // Dsv3 (general purpose).
    s("Standard_D2s_v3", 2, 8 * GIB, 4, true, 96_000),
    s("Standard_D4s_v3", 4, 16 * GIB, 8, true, 192_000),
    s("Standard_D8s_v3", 8, 32 * GIB, 16, true, 384_000),
    s("Standard_D16s_v3", 16, 64 * GIB, 32, true, 768_000),
    s("Standard_D32s_v3", 32, 128 * GIB, 32, true, 1_536_000),
    s("Standard_D48s_v3", 48, 192 * GIB, 32, true, 2_304_000),
    s("Standard_D64s_v3", 64, 256 * GIB, 32, true, 3_072_000),
    // Esv3 (memory optimised).
    s("Standard_E2s_v3", 2, 16 * GIB, 4, true, 126_000),
    s("Standard_E4s_v3", 4, 32 * GIB, 8, true, 252_000),
    s("Standard_E8s_v3", 8, 64 * GIB, 16, true, 504_000),
    s("Standard_E16s_v3", 16, 128 * GIB, 32, true, 1_008_000),
    s("Standard_E20s_v3", 20, 160 * GIB, 32, true, 1_260_000),
    s("Standard_E32s_v3", 32, 256 * GIB, 32, true, 2_016_000),
    s("Standard_E48s_v3", 48, 384 * GIB, 32, true, 3_024_000),
    s("Standard_E64s_v3", 64, 432 * GIB, 32, true, 3_629_000),
    // Fsv2 (compute optimised).
    s("Standard_F2s_v2", 2, 4 * GIB, 4, true, 84_600),
    s("Standard_F4s_v2", 4, 8 * GIB, 8, true, 169_000),
    s("Standard_F8s_v2", 8, 16 * GIB, 16, true, 338_000),
    s("Standard_F16s_v2", 16, 32 * GIB, 32, true, 677_000),
    s("Standard_F32s_v2", 32, 64 * GIB, 32, true, 1_353_000),
    s("Standard_F48s_v2", 48, 96 * GIB, 32, true, 2_030_000),
    s("Standard_F64s_v2", 64, 128 * GIB, 32, true, 2_706_000),
    s("Standard_F72s_v2", 72, 144 * GIB, 32, true, 3_045_000),
    // Av2 (entry level), Generation 1 only.
    s("Standard_A1_v2", 1, 2 * GIB, 2, false, 43_000),
    s("Standard_A2_v2", 2, 4 * GIB, 4, false, 91_000),
    s("Standard_A4_v2", 4, 8 * GIB, 8, false, 191_000),
    s("Standard_A8_v2", 8, 16 * GIB, 16, false, 400_000),
    s("Standard_A2m_v2", 2, 16 * GIB, 4, false, 119_000),
    s("Standard_A4m_v2", 4, 32 * GIB, 8, false, 249_000),
    s("Standard_A8m_v2", 8, 64 * GIB, 16, false, 524_000),
    // Basic A (previous generation), Generation 1 only.
    s("Basic_A0", 1, 768, 1, false, 18_000),
    s("Basic_A1", 1, 1792, 2, false, 23_000),
    s("Basic_A2", 2, 3584, 4, false, 79_000),
    s("Basic_A3", 4, 7168, 8, false, 176_000),
    s("Basic_A4", 8, 14336, 16, false, 352_000),
];

/// The size named `name` (case-insensitive, as ARM compares).
///
/// # Errors
/// No such size (InvalidArgument, ARM's `InvalidParameter` message with the known names).
pub fn vm_size(name: &str) -> Result<&'static VmSize> {
    SIZES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Error::argument(format!(
                "InvalidParameter: the value {name:?} of parameter 'vmSize' is not allowed; \
                 known sizes: {}",
                SIZES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            ))
        })
}

/// The size a migrated machine gets: among the sizes with at least `vcpus` vCPUs and
/// `memory_mib` MiB that run the VM's generation (`2` needs Generation 2 support), the
/// smallest — fewest vCPUs, then least memory, then lowest price, then name. A source with
/// 2 vCPUs and 4 GiB gets `Standard_B2s`; the same as Generation 2 too; 2 vCPUs and 5 GiB get
/// `Standard_B2ms`.
///
/// # Errors
/// No size is large enough (Limit), or `generation` is neither 1 nor 2.
pub fn choose_size(vcpus: u32, memory_mib: u64, generation: u8) -> Result<&'static VmSize> {
    if !matches!(generation, 1 | 2) {
        return Err(Error::argument(format!(
            "a VM is Generation 1 or 2, not {generation}"
        )));
    }
    SIZES
        .iter()
        .filter(|s| s.vcpus >= vcpus && s.memory_mib >= memory_mib)
        .filter(|s| generation == 1 || s.generation2)
        .min_by_key(|s| (s.vcpus, s.memory_mib, s.price, s.name))
        .ok_or_else(|| {
            let cpu = SIZES.iter().max_by_key(|s| s.vcpus);
            let mem = SIZES.iter().max_by_key(|s| s.memory_mib);
            Error::limit(format!(
                "no VM size has {vcpus} vCPUs and {memory_mib} MiB for a Generation {generation} \
                 VM (the most vCPUs: {}, the most memory: {})",
                cpu.map_or(String::new(), |s| format!("{} with {}", s.name, s.vcpus)),
                mem.map_or(String::new(), |s| format!(
                    "{} with {} MiB",
                    s.name, s.memory_mib
                )),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let mut names: Vec<&str> = SIZES.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SIZES.len(), "a size is listed twice");
        for s in SIZES {
            assert!(
                s.vcpus >= 1 && s.memory_mib >= 512 && s.max_data_disks >= 1,
                "{s:?}"
            );
            assert!(s.generation2 != s.name.contains('A'), "{s:?}");
        }
        assert_eq!(vm_size("standard_d2s_v3").unwrap().memory_mib, 8192);
        let e = vm_size("Standard_Z9").unwrap_err();
        assert!(e.to_string().contains("Standard_B1s"), "{e}");
    }

    #[test]
    fn the_smallest_size_that_fits_is_chosen() {
        let pick = |c, m, g| choose_size(c, m, g).unwrap().name;
        // t2.micro: 1 vCPU, 1 GiB.
        assert_eq!(pick(1, 1024, 1), "Standard_B1s");
        // Ties on vCPUs and memory go to the cheaper size: B2s before F2s_v2 and A2_v2.
        assert_eq!(pick(2, 4096, 1), "Standard_B2s");
        assert_eq!(pick(2, 4096, 2), "Standard_B2s");
        assert_eq!(pick(2, 5000, 1), "Standard_B2ms");
        // Basic_A0's 768 MiB fits 700 MiB best, but runs Generation 1 only.
        assert_eq!(pick(1, 700, 1), "Basic_A0");
        assert_eq!(pick(1, 700, 2), "Standard_B1s");
        assert_eq!(pick(1, 512, 2), "Standard_B1ls");
        // m5.xlarge: 4 vCPUs, 16 GiB; r5.large: 2 vCPUs, 16 GiB.
        assert_eq!(pick(4, 16384, 2), "Standard_B4ms");
        assert_eq!(pick(2, 16384, 1), "Standard_A2m_v2");
        assert_eq!(pick(2, 16384, 2), "Standard_E2s_v3");
        // More vCPUs than any B size: D, E or F by memory.
        assert_eq!(pick(16, 65536, 2), "Standard_D16s_v3");
        assert_eq!(pick(12, 1024, 2), "Standard_F16s_v2");
        assert_eq!(pick(72, 1024, 2), "Standard_F72s_v2");
        assert_eq!(pick(64, 400 * 1024, 2), "Standard_E64s_v3");
        assert!(choose_size(96, 1024, 1).is_err());
        assert!(choose_size(64, 500 * 1024, 1).is_err());
        assert!(choose_size(1, 1, 3).is_err());
    }
}
