//! Writes stream-optimized VMDKs the way VMware and EC2's instance export lay them out, which
//! qemu-img does not (it writes the grain directory up front): header with `gdOffset` =
//! GD_AT_END, the embedded descriptor, then per group of 512 grains the compressed grains
//! behind their markers and a grain-table marker with its table, then the directory marker and
//! directory, the footer marker and footer, and the end-of-stream marker. Options leave parts
//! out or damage them, for the reader's fallbacks and refusals.

use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::io::Write;

pub const SECTOR: usize = 512;
const GRAIN_SECTORS: u64 = 128;
const GRAIN: usize = GRAIN_SECTORS as usize * SECTOR;
const GTES: usize = 512;

#[derive(Clone, Copy, Default)]
pub struct Stream {
    /// Leave out the directory, the footer (and its marker): a reader must scan the markers.
    pub no_footer: bool,
    /// Leave out the end-of-stream marker too (with `no_footer`: a truncated stream).
    pub no_eos: bool,
    /// Compress grain `n` (counting the stored ones) from one byte too few.
    pub short_grain: Option<usize>,
    /// Give stored grain `n` the wrong sector in its marker.
    pub wrong_lba: Option<usize>,
}

fn header(capacity: u64, gd: u64, desc_sectors: u64, overhead: u64) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b[..4].copy_from_slice(b"KDMV");
    b[4..8].copy_from_slice(&3u32.to_le_bytes());
    // Newline test, compressed grains, markers (VMware writes no redundant directory here).
    b[8..12].copy_from_slice(&(1u32 | 1 << 16 | 1 << 17).to_le_bytes());
    b[12..20].copy_from_slice(&capacity.to_le_bytes());
    b[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    b[28..36].copy_from_slice(&1u64.to_le_bytes());
    b[36..44].copy_from_slice(&desc_sectors.to_le_bytes());
    b[44..48].copy_from_slice(&(GTES as u32).to_le_bytes());
    b[56..64].copy_from_slice(&gd.to_le_bytes());
    b[64..72].copy_from_slice(&overhead.to_le_bytes());
    b[73..77].copy_from_slice(b"\n \r\n");
    b[77..79].copy_from_slice(&1u16.to_le_bytes());
    b
}

fn marker(val: u64, size: u32, kind: u32) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b[..8].copy_from_slice(&val.to_le_bytes());
    b[8..12].copy_from_slice(&size.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(SECTOR) * SECTOR, 0);
}

/// A VMware-style stream-optimized VMDK of `disk` (whose length is a multiple of 512); grains
/// that are all zero are left out, as VMware does. `name` goes into the descriptor.
pub fn stream_optimized(disk: &[u8], name: &str, o: Stream) -> Vec<u8> {
    assert_eq!(disk.len() % SECTOR, 0);
    let capacity = (disk.len() / SECTOR) as u64;
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\n# Extent description\nRW {capacity} SPARSE \"{name}\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"4\"\n"
    );
    let desc_sectors = desc.len().div_ceil(SECTOR) as u64;
    let overhead = 1 + desc_sectors;
    let mut out = header(capacity, u64::MAX, desc_sectors, overhead).to_vec();
    out.extend_from_slice(desc.as_bytes());
    pad(&mut out);
    let grains = disk.len().div_ceil(GRAIN);
    let tables = grains.div_ceil(GTES);
    let mut gd = vec![0u32; tables];
    let mut stored = 0usize;
    for (t, gde) in gd.iter_mut().enumerate() {
        let mut gt = vec![0u32; GTES];
        let mut any = false;
        for (i, gte) in gt.iter_mut().enumerate() {
            let g = t * GTES + i;
            if g >= grains {
                break;
            }
            let start = g * GRAIN;
            let mut data = disk[start..(start + GRAIN).min(disk.len())].to_vec();
            if data.iter().all(|&b| b == 0) {
                continue;
            }
            data.resize(GRAIN, 0);
            if o.short_grain == Some(stored) {
                data.pop();
            }
            let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
            z.write_all(&data).unwrap();
            let z = z.finish().unwrap();
            *gte = (out.len() / SECTOR) as u32;
            let lba = if o.wrong_lba == Some(stored) {
                (g as u64 + 1) * GRAIN_SECTORS
            } else {
                g as u64 * GRAIN_SECTORS
            };
            out.extend_from_slice(&lba.to_le_bytes());
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            out.extend_from_slice(&z);
            pad(&mut out);
            stored += 1;
            any = true;
        }
        if !any {
            continue;
        }
        out.extend_from_slice(&marker((GTES * 4 / SECTOR) as u64, 0, 1));
        *gde = (out.len() / SECTOR) as u32;
        for e in &gt {
            out.extend_from_slice(&e.to_le_bytes());
        }
        pad(&mut out);
    }
    if !o.no_footer {
        let gd_sectors = (tables * 4).div_ceil(SECTOR) as u64;
        out.extend_from_slice(&marker(gd_sectors, 0, 2));
        let gd_at = (out.len() / SECTOR) as u64;
        for e in &gd {
            out.extend_from_slice(&e.to_le_bytes());
        }
        pad(&mut out);
        out.extend_from_slice(&marker(1, 0, 3));
        out.extend_from_slice(&header(capacity, gd_at, desc_sectors, overhead));
    }
    if !o.no_eos {
        out.extend_from_slice(&marker(0, 0, 0));
    }
    out
}

/// A ustar archive of `files` (name, bytes), in order, as `tar` writes it.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// An OVF naming `disks` (file name, capacity in bytes), as EC2's export writes one.
pub fn ovf(disks: &[(&str, u64)]) -> String {
    let files: String = disks
        .iter()
        .enumerate()
        .map(|(i, (f, _))| format!("    <File ovf:href=\"{f}\" ovf:id=\"file{}\"/>\n", i + 1))
        .collect();
    let ds: String = disks
        .iter()
        .enumerate()
        .map(|(i, (_, c))| {
            format!(
                "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte * 2^20\" \
                 ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" \
                 ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n",
                c >> 20,
                n = i + 1
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope \
         xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\">\n  <References>\n{files}  </References>\n  \
         <DiskSection>\n    <Info>Virtual disk information</Info>\n{ds}  </DiskSection>\n  \
         <VirtualSystem ovf:id=\"vm\"><Info>A virtual machine</Info></VirtualSystem>\n</Envelope>\n"
    )
}
