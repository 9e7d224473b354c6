//! The VHD footer and the fixed-VHD reader.
//!
//! A fixed VHD is the raw disk followed by one 512-byte footer. All fields are big-endian:
//!
//! ```text
//! offset size field                 value we write
//!      0    8 cookie                "conectix"
//!      8    4 features              0x00000002 (the "reserved" bit, always set)
//!     12    4 file format version   0x00010000
//!     16    8 data offset           0xFFFFFFFFFFFFFFFF for a fixed disk
//!     24    4 timestamp             seconds since 2000-01-01 00:00:00 UTC
//!     28    4 creator application   "e2az" (never "qemu"/"vpc ": those make readers use CHS)
//!     32    4 creator version       major << 16 | minor of this crate
//!     36    4 creator host OS       "Wi2k"
//!     40    8 original size         virtual size in bytes
//!     48    8 current size          virtual size in bytes
//!     56    2 cylinders             } CHS geometry from the spec's algorithm,
//!     58    1 heads                 } capped at 65535/16/255
//!     59    1 sectors per track     }
//!     60    4 disk type             2 = fixed, 3 = dynamic, 4 = differencing
//!     64    4 checksum              one's complement of the byte sum, this field zeroed
//!     68   16 unique id             random (settable for reproducible output)
//!     84    1 saved state           0
//!     85  427 reserved              zero
//! ```

pub mod dynamic;

pub use dynamic::DynamicVhd;

use super::{DiskImage, ExtentMap, Format};
use crate::error::{Error, Result};
use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The footer's magic cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Size of the footer in bytes.
pub const FOOTER_SIZE: u64 = 512;
/// Features: bit 1 is "reserved" and must always be set.
pub const FEATURES_RESERVED: u32 = 0x0000_0002;
/// File format version 1.0.
pub const VERSION_1_0: u32 = 0x0001_0000;
/// Data offset of a fixed disk: all ones.
pub const FIXED_DATA_OFFSET: u64 = u64::MAX;
/// Our creator application.
pub const CREATOR_APP: &[u8; 4] = b"e2az";
/// Creator host OS "Wi2k" (Windows), what Azure's own tools write.
pub const CREATOR_HOST_WINDOWS: &[u8; 4] = b"Wi2k";
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// The largest size CHS can express: 65535 cylinders × 16 heads × 255 sectors × 512 bytes.
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// The footer as it lies on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
pub struct RawFooter {
    cookie: [u8; 8],
    features: U32,
    version: U32,
    data_offset: U64,
    timestamp: U32,
    creator_app: [u8; 4],
    creator_version: U32,
    creator_host_os: [u8; 4],
    original_size: U64,
    current_size: U64,
    cylinders: U16,
    heads: u8,
    sectors: u8,
    disk_type: U32,
    checksum: U32,
    unique_id: [u8; 16],
    saved_state: u8,
    reserved: [u8; 427],
}

const _: () = assert!(std::mem::size_of::<RawFooter>() == FOOTER_SIZE as usize);

/// VHD disk types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// 2: a fixed hard disk (data, then the footer).
    Fixed,
    /// 3: a dynamic (sparse) hard disk.
    Dynamic,
    /// 4: a differencing hard disk (a child of a parent image).
    Differencing,
    /// Any other value: not a valid disk type.
    Other(u32),
}

impl DiskType {
    fn from_u32(v: u32) -> Self {
        match v {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            v => DiskType::Other(v),
        }
    }

    /// The numeric value in the footer.
    pub fn as_u32(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
            DiskType::Other(v) => v,
        }
    }

    /// A name for humans.
    pub fn name(self) -> String {
        match self {
            DiskType::Fixed => "fixed".into(),
            DiskType::Dynamic => "dynamic".into(),
            DiskType::Differencing => "differencing".into(),
            DiskType::Other(v) => format!("unknown ({v})"),
        }
    }
}

/// Cylinders, heads, sectors per track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Chs {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

impl Chs {
    /// The geometry the VHD specification's algorithm gives for `size` bytes.
    pub fn for_size(size: u64) -> Chs {
        let total = (size / 512).min(MAX_CHS_SECTORS);
        let (spt, heads, cth);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cth = total / spt;
        } else {
            let mut s = 17;
            let mut c = total / s;
            let mut h = c.div_ceil(1024).max(4);
            if c >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                c = total / s;
            }
            if c >= h * 1024 {
                s = 63;
                h = 16;
                c = total / s;
            }
            spt = s;
            heads = h;
            cth = c;
        }
        // Every value fits: heads ≤ 16, spt ≤ 255, cth / heads ≤ 65535 by the cap above.
        Chs {
            cylinders: u16::try_from(cth / heads).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(u8::MAX),
            sectors: u8::try_from(spt).unwrap_or(u8::MAX),
        }
    }

    /// The size in bytes the geometry describes.
    pub fn size(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors) * 512
    }
}

/// A decoded VHD footer (not yet validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Magic cookie, "conectix" when valid.
    pub cookie: [u8; 8],
    /// Feature flags.
    pub features: u32,
    /// File format version.
    pub version: u32,
    /// Offset of the dynamic header; all ones for a fixed disk.
    pub data_offset: u64,
    /// Seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: u32,
    /// Creator application, four bytes.
    pub creator_app: [u8; 4],
    /// Creator version.
    pub creator_version: u32,
    /// Creator host OS, four bytes.
    pub creator_host_os: [u8; 4],
    /// Size at creation.
    pub original_size: u64,
    /// Current virtual size.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: Chs,
    /// Disk type.
    pub disk_type: DiskType,
    /// Stored checksum.
    pub checksum: u32,
    /// Unique id.
    pub unique_id: [u8; 16],
    /// Saved-state flag.
    pub saved_state: u8,
    /// `true` when all 427 reserved bytes are zero.
    pub reserved_zero: bool,
}

/// One's complement of the byte sum of a footer, with the checksum field counted as zero.
pub fn checksum(bytes: &[u8; 512]) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// A footer for a new fixed disk of `size` bytes.
    pub fn new_fixed(size: u64, unique_id: [u8; 16], timestamp: u32) -> Footer {
        let major = env!("CARGO_PKG_VERSION_MAJOR").parse::<u32>().unwrap_or(0);
        let minor = env!("CARGO_PKG_VERSION_MINOR").parse::<u32>().unwrap_or(0);
        Footer {
            cookie: *COOKIE,
            features: FEATURES_RESERVED,
            version: VERSION_1_0,
            data_offset: FIXED_DATA_OFFSET,
            timestamp,
            creator_app: *CREATOR_APP,
            creator_version: (major << 16) | (minor & 0xffff),
            creator_host_os: *CREATOR_HOST_WINDOWS,
            original_size: size,
            current_size: size,
            geometry: Chs::for_size(size),
            disk_type: DiskType::Fixed,
            checksum: 0,
            unique_id,
            saved_state: 0,
            reserved_zero: true,
        }
    }

    /// Decodes 512 bytes; checks nothing.
    pub fn decode(bytes: &[u8; 512]) -> Footer {
        // A [u8; 512] always has the size and alignment (1) of RawFooter.
        let raw = RawFooter::read_from_bytes(bytes.as_slice()).unwrap_or_else(|_| unreachable!());
        Footer {
            cookie: raw.cookie,
            features: raw.features.get(),
            version: raw.version.get(),
            data_offset: raw.data_offset.get(),
            timestamp: raw.timestamp.get(),
            creator_app: raw.creator_app,
            creator_version: raw.creator_version.get(),
            creator_host_os: raw.creator_host_os,
            original_size: raw.original_size.get(),
            current_size: raw.current_size.get(),
            geometry: Chs {
                cylinders: raw.cylinders.get(),
                heads: raw.heads,
                sectors: raw.sectors,
            },
            disk_type: DiskType::from_u32(raw.disk_type.get()),
            checksum: raw.checksum.get(),
            unique_id: raw.unique_id,
            saved_state: raw.saved_state,
            reserved_zero: raw.reserved.iter().all(|&b| b == 0),
        }
    }

    /// `true` when readers size this disk from its CHS geometry rather than its current size:
    /// Virtual PC (`vpc `) and old qemu (`qemu`) wrote a current size larger than the disk they
    /// meant, unless the geometry is the maximum (then it cannot express the size). This is what
    /// qemu ≥ 10 does, checked against qemu-img in the oracle tests.
    pub fn sized_by_chs(&self) -> bool {
        let chs_creator = &self.creator_app == b"vpc " || &self.creator_app == b"qemu";
        chs_creator && self.geometry.size() / 512 != MAX_CHS_SECTORS
    }

    /// The disk's virtual size as readers see it: the CHS size for creators that mean it (see
    /// [`Footer::sized_by_chs`]), otherwise the current size.
    pub fn virtual_size(&self) -> u64 {
        if self.sized_by_chs() {
            self.geometry.size()
        } else {
            self.current_size
        }
    }

    /// Refuses a CHS-sized disk whose geometry is not the current size rounded down by the
    /// specification's algorithm (which loses less than one cylinder): reading it by CHS would
    /// silently drop data, and reading it by current size would disagree with qemu.
    ///
    /// # Errors
    /// The CHS size is zero, larger than the current size, or a cylinder or more smaller.
    /// `footer_at` is where this footer lies in its file, for the error's offset.
    pub fn check_chs_size(&self, footer_at: u64) -> Result<()> {
        if !self.sized_by_chs() {
            return Ok(());
        }
        let g = self.geometry;
        let chs = g.size();
        let cylinder = u64::from(g.heads) * u64::from(g.sectors) * 512;
        if chs == 0 || chs > self.current_size || self.current_size - chs >= cylinder {
            return Err(Error::invalid(format!(
                "VHD size: creator {} means the disk is sized by its CHS geometry {}/{}/{} \
                 ({chs} bytes), which does not fit the footer's current size of {} bytes; \
                 refusing rather than guessing which is right",
                show_bytes(&self.creator_app),
                g.cylinders,
                g.heads,
                g.sectors,
                self.current_size
            ))
            .with_offset(footer_at + 56));
        }
        Ok(())
    }

    /// Encodes the footer with a freshly computed checksum.
    pub fn encode(&self) -> [u8; 512] {
        let raw = RawFooter {
            cookie: self.cookie,
            features: self.features.into(),
            version: self.version.into(),
            data_offset: self.data_offset.into(),
            timestamp: self.timestamp.into(),
            creator_app: self.creator_app,
            creator_version: self.creator_version.into(),
            creator_host_os: self.creator_host_os,
            original_size: self.original_size.into(),
            current_size: self.current_size.into(),
            cylinders: self.geometry.cylinders.into(),
            heads: self.geometry.heads,
            sectors: self.geometry.sectors,
            disk_type: self.disk_type.as_u32().into(),
            checksum: 0.into(),
            unique_id: self.unique_id,
            saved_state: self.saved_state,
            reserved: [0; 427],
        };
        let mut out = [0u8; 512];
        out.copy_from_slice(raw.as_bytes());
        let sum = checksum(&out);
        out[64..68].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// Checks what a reader must: cookie, checksum, disk type. `file_len` is the length of the
    /// file the footer ends; for a fixed disk it must be the current size plus 512.
    ///
    /// # Errors
    /// Each failed check, with the expected and the found value.
    pub fn validate_fixed(&self, bytes: &[u8; 512], file_len: u64) -> Result<()> {
        let footer_at = file_len.saturating_sub(FOOTER_SIZE);
        if &self.cookie != COOKIE {
            return Err(Error::invalid(format!(
                "VHD footer cookie: expected \"conectix\", found {}",
                show_bytes(&self.cookie)
            ))
            .with_offset(footer_at));
        }
        let sum = checksum(bytes);
        if sum != self.checksum {
            return Err(Error::invalid(format!(
                "VHD footer checksum: expected 0x{sum:08x} (computed), found 0x{:08x}",
                self.checksum
            ))
            .with_offset(footer_at + 64));
        }
        match self.disk_type {
            DiskType::Fixed => {}
            DiskType::Dynamic | DiskType::Differencing => {
                return Err(Error::unsupported(format!(
                    "VHD disk type: this footer is of a {} VHD, not a fixed one (type 2)",
                    self.disk_type.name()
                ))
                .with_offset(footer_at + 60));
            }
            DiskType::Other(v) => {
                return Err(Error::invalid(format!(
                    "VHD disk type: expected 2 (fixed), 3 or 4, found {v}"
                ))
                .with_offset(footer_at + 60));
            }
        }
        if self.current_size.checked_add(FOOTER_SIZE) != Some(file_len) {
            return Err(Error::invalid(format!(
                "fixed VHD size: the footer says the disk is {} bytes, so the file must be {} \
                 bytes, but it is {file_len} bytes",
                self.current_size,
                self.current_size.saturating_add(FOOTER_SIZE)
            ))
            .with_offset(footer_at + 48));
        }
        Ok(())
    }

    /// The footer's fields as JSON, for `info`.
    pub fn to_json(&self, bytes: &[u8; 512]) -> serde_json::Value {
        serde_json::json!({
            "cookie": bytes_text(&self.cookie),
            "features": format!("0x{:08x}", self.features),
            "version": format!("0x{:08x}", self.version),
            "data_offset": format!("0x{:016x}", self.data_offset),
            "timestamp": self.timestamp,
            "timestamp_unix": u64::from(self.timestamp) + VHD_EPOCH_UNIX,
            "creator_application": bytes_text(&self.creator_app),
            "creator_version": format!("0x{:08x}", self.creator_version),
            "creator_host_os": bytes_text(&self.creator_host_os),
            "original_size": self.original_size,
            "current_size": self.current_size,
            "geometry": self.geometry,
            "disk_type": self.disk_type.name(),
            "checksum": format!("0x{:08x}", self.checksum),
            "checksum_valid": checksum(bytes) == self.checksum,
            "unique_id": format_uuid(&self.unique_id),
            "saved_state": self.saved_state,
            "reserved_zero": self.reserved_zero,
        })
    }
}

/// `true` when 512 bytes look like a VHD footer, valid or damaged: the cookie matches, or at
/// least two of the other constant fields do. Used by detection so a damaged VHD is reported as
/// such instead of being read as a raw disk.
pub fn looks_like_footer(bytes: &[u8; 512]) -> bool {
    if &bytes[..8] == COOKIE {
        return true;
    }
    let f = Footer::decode(bytes);
    let hints = [
        f.features & FEATURES_RESERVED != 0 && f.features < 0x10,
        f.version == VERSION_1_0,
        matches!(
            f.disk_type,
            DiskType::Fixed | DiskType::Dynamic | DiskType::Differencing
        ),
        f.original_size != 0 && f.original_size == f.current_size,
        &f.creator_host_os == CREATOR_HOST_WINDOWS || &f.creator_host_os == b"Mac ",
    ];
    hints.iter().filter(|&&h| h).count() >= 2
}

/// Printable form of a byte string: ASCII when printable, hex otherwise.
pub fn show_bytes(b: &[u8]) -> String {
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        format!("0x{}", hex::encode(b))
    }
}

/// Bytes as text for a report: the text itself when printable, else `0x` and hex. Unlike
/// [`show_bytes`] (for messages) it adds no quotes, which JSON adds itself.
pub fn bytes_text(b: &[u8]) -> String {
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        String::from_utf8_lossy(b).into_owned()
    } else {
        format!("0x{}", hex::encode(b))
    }
}

/// A 16-byte id in the usual 8-4-4-4-12 form.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Parses an id in 8-4-4-4-12 form or as 32 hex digits.
///
/// # Errors
/// Not 32 hex digits once the hyphens are removed.
pub fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let h: String = s.chars().filter(|&c| c != '-').collect();
    let mut out = [0u8; 16];
    hex::decode_to_slice(&h, &mut out).map_err(|_| {
        Error::argument(format!(
            "unique id {s:?}: expected 32 hex digits (8-4-4-4-12)"
        ))
    })?;
    Ok(out)
}

/// A fixed VHD: the disk is the first `current_size` bytes of the backing file.
#[derive(Debug)]
pub struct FixedVhd<B> {
    inner: B,
    footer: Footer,
    footer_bytes: [u8; 512],
}

impl<B: DiskImage> FixedVhd<B> {
    /// Reads and validates the footer at the end of `inner`.
    ///
    /// # Errors
    /// The file is shorter than a footer, or the footer fails [`Footer::validate_fixed`].
    pub fn new(inner: B) -> Result<Self> {
        let len = inner.len();
        if len < FOOTER_SIZE {
            return Err(Error::invalid(format!(
                "VHD: the file is {len} bytes, too short to hold a 512-byte footer"
            )));
        }
        let mut bytes = [0u8; 512];
        inner.read_exact_at(&mut bytes, len - FOOTER_SIZE)?;
        let footer = Footer::decode(&bytes);
        footer.validate_fixed(&bytes, len)?;
        footer.check_chs_size(len - FOOTER_SIZE)?;
        Ok(FixedVhd {
            inner,
            footer,
            footer_bytes: bytes,
        })
    }

    /// The decoded footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The footer's 512 bytes as read.
    pub fn footer_bytes(&self) -> &[u8; 512] {
        &self.footer_bytes
    }
}

impl<B: DiskImage> DiskImage for FixedVhd<B> {
    fn len(&self) -> u64 {
        // The data region is `current_size` bytes (checked at open); a CHS size can only be
        // smaller, never reach past the data.
        self.footer.virtual_size().min(self.footer.current_size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let size = self.len();
        if offset >= size {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(size - offset).unwrap_or(usize::MAX));
        self.inner.read_exact_at(&mut buf[..n], offset)?;
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        Ok(self.inner.extents()?.with_len(self.len()))
    }

    fn format(&self) -> Format {
        Format::Vhd
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        (end <= self.len()).then(|| self.inner.as_slice(offset, len))?
    }

    fn release(&self, offset: u64, len: u64) {
        if offset < self.len() {
            self.inner.release(offset, len.min(self.len() - offset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemImage;

    #[test]
    fn chs_matches_spec_examples() {
        // Values qemu-img and Hyper-V agree on for these sizes.
        assert_eq!(
            Chs::for_size(1 << 30),
            Chs {
                cylinders: 2080,
                heads: 16,
                sectors: 63
            }
        );
        assert_eq!(
            Chs::for_size(20 << 20),
            Chs {
                cylinders: 602,
                heads: 4,
                sectors: 17
            }
        );
        let max = Chs::for_size(4 << 40);
        assert_eq!(
            max,
            Chs {
                cylinders: 65535,
                heads: 16,
                sectors: 255
            }
        );
        assert_eq!(max.size(), MAX_CHS_SECTORS * 512);
        assert_eq!(
            Chs::for_size(0),
            Chs {
                cylinders: 0,
                heads: 4,
                sectors: 17
            }
        );
    }

    #[test]
    fn footer_round_trips_with_checksum() {
        let f = Footer::new_fixed(1 << 30, [7; 16], 1234);
        let bytes = f.encode();
        assert_eq!(&bytes[..8], b"conectix");
        assert_eq!(&bytes[8..12], &[0, 0, 0, 2]);
        assert_eq!(&bytes[12..16], &[0, 1, 0, 0]);
        assert_eq!(&bytes[16..24], &[0xff; 8]);
        assert_eq!(&bytes[24..28], &1234u32.to_be_bytes());
        assert_eq!(&bytes[28..32], b"e2az");
        assert_eq!(&bytes[36..40], b"Wi2k");
        assert_eq!(&bytes[40..48], &(1u64 << 30).to_be_bytes());
        assert_eq!(&bytes[48..56], &(1u64 << 30).to_be_bytes());
        assert_eq!(&bytes[56..60], &[0x08, 0x20, 16, 63]);
        assert_eq!(&bytes[60..64], &[0, 0, 0, 2]);
        assert_eq!(&bytes[68..84], &[7; 16]);
        assert!(bytes[84..].iter().all(|&b| b == 0));
        let sum: u32 = bytes.iter().map(|&b| u32::from(b)).sum::<u32>()
            - bytes[64..68].iter().map(|&b| u32::from(b)).sum::<u32>();
        assert_eq!(u32::from_be_bytes(bytes[64..68].try_into().unwrap()), !sum);
        let back = Footer::decode(&bytes);
        assert_eq!(back.checksum, checksum(&bytes));
        assert_eq!(
            Footer {
                checksum: 0,
                ..back
            },
            f
        );
        assert!(looks_like_footer(&bytes));
        assert!(!looks_like_footer(&[0; 512]));
    }

    fn vhd_bytes(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.extend_from_slice(&Footer::new_fixed(data.len() as u64, [1; 16], 0).encode());
        v
    }

    #[test]
    fn reads_fixed_vhd_and_rejects_damage() {
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let good = vhd_bytes(&data);
        let vhd = FixedVhd::new(MemImage::new(good.clone())).unwrap();
        assert_eq!(vhd.len(), 4096);
        let mut buf = vec![0; 5000];
        assert_eq!(vhd.read_at(&mut buf, 0).unwrap(), 4096);
        assert_eq!(&buf[..4096], &data[..]);

        let mut bad_cookie = good.clone();
        bad_cookie[4096] = b'X';
        let e = FixedVhd::new(MemImage::new(bad_cookie)).unwrap_err();
        assert!(e.to_string().contains("cookie"), "{e}");

        let mut bad_sum = good.clone();
        bad_sum[4096 + 64] ^= 1;
        let e = FixedVhd::new(MemImage::new(bad_sum)).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert_eq!(e.offset(), Some(4096 + 64));

        let mut dynamic = good.clone();
        dynamic[4096 + 63] = 3;
        let s = checksum(dynamic[4096..].try_into().unwrap());
        dynamic[4096 + 64..4096 + 68].copy_from_slice(&s.to_be_bytes());
        let e = FixedVhd::new(MemImage::new(dynamic)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);

        let truncated = good[512..].to_vec();
        let e = FixedVhd::new(MemImage::new(truncated)).unwrap_err();
        assert!(e.to_string().contains("must be"), "{e}");
        assert!(FixedVhd::new(MemImage::new(vec![0; 100])).is_err());
    }

    #[test]
    fn qemu_and_virtual_pc_disks_are_sized_by_chs() {
        let data = vec![0u8; 20 << 20];
        for (creator, chs, want) in [
            (*b"qemu", Chs::for_size(20 << 20), 602 * 4 * 17 * 512),
            (*b"vpc ", Chs::for_size(20 << 20), 602 * 4 * 17 * 512),
            (
                *b"qemu",
                Chs {
                    cylinders: 65535,
                    heads: 16,
                    sectors: 255,
                },
                20 << 20,
            ),
            (*b"win ", Chs::for_size(20 << 20), 20 << 20),
            (*b"e2az", Chs::for_size(20 << 20), 20 << 20),
        ] {
            let mut f = Footer::new_fixed(20 << 20, [0; 16], 0);
            f.creator_app = creator;
            f.geometry = chs;
            let mut bytes = data.clone();
            bytes.extend_from_slice(&f.encode());
            let vhd = FixedVhd::new(MemImage::new(bytes)).unwrap();
            assert_eq!(vhd.len(), want, "{}", show_bytes(&creator));
        }
    }

    #[test]
    fn uuid_text_round_trips() {
        let u = parse_uuid("01234567-89ab-cdef-0123-456789abcdef").unwrap();
        assert_eq!(format_uuid(&u), "01234567-89ab-cdef-0123-456789abcdef");
        assert!(parse_uuid("xyz").is_err());
    }
}
