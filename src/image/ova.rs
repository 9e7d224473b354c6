//! OVA: a tar archive (POSIX ustar, with pax and GNU long names) holding an OVF descriptor and
//! the disks it names — what EC2's instance export writes when asked for `--disk-image-format
//! VMDK --container-format ova`. The disks are read straight out of the archive (a VMDK is a
//! byte range of the tar file), never extracted.
//!
//! From the OVF (`References/File`, `DiskSection/Disk`) each disk gets its id, file, capacity
//! (`ovf:capacity` × `ovf:capacityAllocationUnits`, e.g. `byte * 2^30`) and format. Opening a
//! disk checks that the VMDK's capacity equals the OVF's. Refused with the reason: an archive
//! with no `.ovf`, a disk file missing from it, a compressed (`ovf:compression`) or chunked
//! (`ovf:chunkSize`) file, a disk that is not a VMDK, and a tar header whose checksum fails.

use crate::error::{Error, Result, ResultExt};
use crate::image::slice::Slice;
use crate::image::vmdk::{Resolver, Vmdk};
use crate::image::{DiskImage, RawImage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most members an archive may have.
const MAX_MEMBERS: usize = 100_000;
/// The largest OVF descriptor or pax header we read.
const MAX_TEXT: u64 = 16 << 20;

/// One file of the tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Where its data starts in the archive.
    pub offset: u64,
    pub size: u64,
}

/// One disk the OVF names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OvfDisk {
    /// `ovf:diskId`.
    pub id: String,
    /// The file in the archive (`ovf:href` of the referenced `File`).
    pub file: String,
    /// The capacity in bytes, as the OVF states it.
    pub capacity: u64,
    /// `ovf:format` (a URL naming the VMDK variant).
    pub format: String,
    /// `ovf:compression` of the file, when set.
    pub compression: Option<String>,
    /// `ovf:chunkSize` of the file, when set.
    pub chunked: bool,
}

/// An opened OVA.
pub struct Ova {
    tar: Arc<dyn DiskImage>,
    path: PathBuf,
    members: Vec<Member>,
    /// The OVF descriptor's name in the archive.
    pub ovf: String,
    /// The disks, in the order of the OVF's disk section.
    pub disks: Vec<OvfDisk>,
}

impl std::fmt::Debug for Ova {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ova")
            .field("path", &self.path)
            .field("disks", &self.disks)
            .finish()
    }
}

fn octal(field: &[u8], what: &str, at: u64) -> Result<u64> {
    // GNU base-256: the first byte's top bit set, the rest a big-endian number.
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| {
                    Error::invalid(format!("tar header: {what} overflows")).with_offset(at)
                })?;
        }
        return Ok(v);
    }
    let t: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if t.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&t).unwrap_or("?");
    u64::from_str_radix(s, 8).map_err(|_| {
        Error::invalid(format!("tar header: {what} {s:?} is not an octal number")).with_offset(at)
    })
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Reads the member list of the tar archive `tar`.
///
/// # Errors
/// A header whose checksum fails, sizes past the end of the archive, too many members.
pub fn list_members(tar: &dyn DiskImage) -> Result<Vec<Member>> {
    let len = tar.len();
    let mut pos = 0u64;
    let mut members = Vec::new();
    let mut long_name: Option<String> = None;
    let mut pax_path: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    while pos + 512 <= len {
        let mut h = [0u8; 512];
        tar.read_exact_at(&mut h, pos)?;
        if h.iter().all(|&b| b == 0) {
            break; // end of archive
        }
        let want = octal(&h[148..156], "checksum", pos + 148)?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if want != sum {
            return Err(Error::invalid(format!(
                "tar header checksum: the header says {want}, its bytes sum to {sum}"
            ))
            .with_offset(pos));
        }
        let size = match pax_size.take() {
            Some(s) => s,
            None => octal(&h[124..136], "size", pos + 124)?,
        };
        let data = pos + 512;
        if data.checked_add(size).is_none_or(|e| e > len) {
            return Err(Error::invalid(format!(
                "tar member of {size} bytes at offset {data} goes past the end of the \
                 {len}-byte archive"
            ))
            .with_offset(pos));
        }
        let kind = h[156];
        let name = || {
            let n = cstr(&h[..100]);
            let prefix = if &h[257..262] == b"ustar" && h[263] == b'0' {
                cstr(&h[345..500])
            } else {
                String::new()
            };
            if prefix.is_empty() {
                n
            } else {
                format!("{prefix}/{n}")
            }
        };
        match kind {
            b'L' => {
                // GNU long name: the next member's name is this member's data.
                let mut b = vec![0u8; size.min(MAX_TEXT) as usize];
                tar.read_exact_at(&mut b, data)?;
                long_name = Some(cstr(&b));
            }
            b'x' => {
                if size > MAX_TEXT {
                    return Err(
                        Error::invalid(format!("tar pax header of {size} bytes")).with_offset(pos)
                    );
                }
                let mut b = vec![0u8; size as usize];
                tar.read_exact_at(&mut b, data)?;
                for (k, v) in pax_records(&b) {
                    if k.starts_with("GNU.sparse.") {
                        // The member's data is the file with its holes taken out: reading it
                        // as the file would shift every byte after the first hole.
                        return Err(Error::unsupported(format!(
                            "tar member stored as a GNU sparse file ({k}); ec2azure reads \
                             members stored whole (re-create the archive without --sparse)"
                        ))
                        .with_offset(pos));
                    }
                    match k.as_str() {
                        "path" => pax_path = Some(v),
                        "size" => {
                            pax_size = Some(v.parse().map_err(|_| {
                                Error::invalid(format!("tar pax size {v:?} is not a number"))
                                    .with_offset(data)
                            })?)
                        }
                        _ => {}
                    }
                }
            }
            b'S' => {
                return Err(Error::unsupported(
                    "tar member stored as a GNU sparse file (type S); ec2azure reads members \
                     stored whole (re-create the archive without --sparse)",
                )
                .with_offset(pos));
            }
            b'0' | 0 | b'7' => {
                let n = pax_path.take().or(long_name.take()).unwrap_or_else(name);
                let n = n.trim_start_matches("./").to_string();
                if members.iter().any(|m: &Member| m.name == n) {
                    // tar keeps the last copy, a reader taking the first would read another.
                    return Err(Error::invalid(format!(
                        "the archive holds two members named {n:?}: which one is the disk is \
                         ambiguous"
                    ))
                    .with_offset(pos));
                }
                if members.len() == MAX_MEMBERS {
                    return Err(Error::unsupported(format!(
                        "the archive has more than {MAX_MEMBERS} members"
                    )));
                }
                members.push(Member {
                    name: n,
                    offset: data,
                    size,
                });
            }
            _ => {
                // Directories, links, global pax headers: nothing to read.
                pax_path = None;
                long_name = None;
            }
        }
        pos = data + size.div_ceil(512) * 512;
    }
    Ok(members)
}

/// The `key=value` records of a pax extended header (`"LEN key=value\n"` each).
fn pax_records(b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&c| c == b' ') else {
            break;
        };
        let Some(n) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if n <= sp + 1 || n > rest.len() {
            break;
        }
        let rec = &rest[sp + 1..n];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8_lossy(&rec[..eq]).into_owned(),
                String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
            ));
        }
        rest = &rest[n..];
    }
    out
}

/// Bytes per unit of an OVF `capacityAllocationUnits` value: `byte`, `byte * 2^30`,
/// `byte * 1024^3`, `byte * 10^9`, and the products of such terms.
pub fn allocation_units(units: &str) -> Option<u64> {
    let mut v: u64 = 1;
    let mut saw_byte = false;
    for term in units.split('*') {
        let t = term.trim();
        if t.eq_ignore_ascii_case("byte") || t.eq_ignore_ascii_case("bytes") {
            saw_byte = true;
            continue;
        }
        let f = match t.split_once('^') {
            Some((b, e)) => b
                .trim()
                .parse::<u64>()
                .ok()?
                .checked_pow(e.trim().parse().ok()?)?,
            None => t.parse::<u64>().ok()?,
        };
        v = v.checked_mul(f)?;
    }
    saw_byte.then_some(v)
}

/// The disks an OVF descriptor names.
///
/// # Errors
/// Not XML, no disk section, a disk whose file reference or capacity is missing or invalid.
pub fn parse_ovf(text: &str) -> Result<Vec<OvfDisk>> {
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| Error::invalid(format!("OVF descriptor: not valid XML: {e}")))?;
    let attr = |n: roxmltree::Node, name: &str| {
        n.attributes()
            .find(|a| a.name() == name)
            .map(|a| a.value().to_string())
    };
    let files: Vec<(String, String, Option<String>, bool)> = doc
        .descendants()
        .filter(|n| n.has_tag_name_local("File"))
        .filter_map(|n| {
            Some((
                attr(n, "id")?,
                attr(n, "href")?,
                attr(n, "compression").filter(|c| c != "identity"),
                attr(n, "chunkSize").is_some(),
            ))
        })
        .collect();
    let mut disks = Vec::new();
    for n in doc.descendants().filter(|n| n.has_tag_name_local("Disk")) {
        let id = attr(n, "diskId").unwrap_or_default();
        let bad = |w: String| Error::invalid(format!("OVF disk {id:?}: {w}"));
        if let Some(parent) = attr(n, "parentRef") {
            return Err(Error::unsupported(format!(
                "OVF disk {id:?} is a differencing disk over {parent:?} (ovf:parentRef), which \
                 ec2azure does not assemble from an OVF"
            )));
        }
        let file_ref = attr(n, "fileRef").ok_or_else(|| bad("no ovf:fileRef".into()))?;
        let Some((_, href, compression, chunked)) = files.iter().find(|f| f.0 == file_ref) else {
            return Err(bad(format!(
                "ovf:fileRef {file_ref:?} names no File of the References"
            )));
        };
        let cap = attr(n, "capacity").ok_or_else(|| bad("no ovf:capacity".into()))?;
        let cap: u64 = cap.trim().parse().map_err(|_| {
            bad(format!(
                "ovf:capacity {cap:?} is not a number (a ${{property}}?)"
            ))
        })?;
        let units = attr(n, "capacityAllocationUnits").unwrap_or_else(|| "byte".into());
        let unit = allocation_units(&units).ok_or_else(|| {
            bad(format!(
                "ovf:capacityAllocationUnits {units:?} is not understood"
            ))
        })?;
        let capacity = cap
            .checked_mul(unit)
            .ok_or_else(|| bad(format!("capacity {cap} × {unit} overflows")))?;
        disks.push(OvfDisk {
            id,
            file: href.clone(),
            capacity,
            format: attr(n, "format").unwrap_or_default(),
            compression: compression.clone(),
            chunked: *chunked,
        });
    }
    Ok(disks)
}

trait LocalName {
    fn has_tag_name_local(&self, name: &str) -> bool;
}
impl LocalName for roxmltree::Node<'_, '_> {
    fn has_tag_name_local(&self, name: &str) -> bool {
        self.is_element() && self.tag_name().name() == name
    }
}

/// The members of an archive as the files a VMDK descriptor names.
struct TarResolver<'a> {
    ova: &'a Ova,
}

impl Resolver for TarResolver<'_> {
    fn open(&self, name: &str) -> Result<(Arc<dyn DiskImage>, PathBuf)> {
        self.ova.member_image(name)
    }
}

impl Ova {
    /// Opens the OVA at `path` and reads its OVF.
    ///
    /// # Errors
    /// Not a tar archive, no `.ovf` member, an OVF that does not parse.
    pub fn open(path: &Path) -> Result<Self> {
        let tar: Arc<dyn DiskImage> = Arc::new(RawImage::open(path)?);
        Self::parse(tar, path)
    }

    /// Reads an OVA held by `tar` (shown as `path`).
    ///
    /// # Errors
    /// As [`Ova::open`].
    pub fn parse(tar: Arc<dyn DiskImage>, path: &Path) -> Result<Self> {
        let members = list_members(&*tar).path(path)?;
        let Some(ovf) = members
            .iter()
            .find(|m| m.name.to_ascii_lowercase().ends_with(".ovf"))
            .cloned()
        else {
            return Err(Error::invalid(format!(
                "a tar archive of {} files, none of them an OVF descriptor (.ovf): not an OVA",
                members.len()
            ))
            .with_path(path));
        };
        if ovf.size > MAX_TEXT {
            return Err(
                Error::invalid(format!("the OVF descriptor is {} bytes", ovf.size)).with_path(path),
            );
        }
        let mut text = vec![0u8; ovf.size as usize];
        tar.read_exact_at(&mut text, ovf.offset).path(path)?;
        let text = String::from_utf8(text).map_err(|_| {
            Error::invalid(format!("the OVF descriptor {} is not UTF-8", ovf.name)).with_path(path)
        })?;
        let disks = parse_ovf(&text).map_err(|e| {
            Error::new(e.kind(), format!("{}: {}", ovf.name, e.message())).with_path(path)
        })?;
        Ok(Ova {
            tar,
            path: path.to_path_buf(),
            members,
            ovf: ovf.name,
            disks,
        })
    }

    /// The archive's members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn member_image(&self, name: &str) -> Result<(Arc<dyn DiskImage>, PathBuf)> {
        let name = name.trim_start_matches("./");
        let m = self
            .members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| {
                Error::invalid(format!("the archive holds no file {name:?}")).with_path(&self.path)
            })?;
        let shown = PathBuf::from(format!("{}:{}", self.path.display(), m.name));
        Ok((
            Arc::new(Slice::new(self.tar.clone(), m.offset, m.size)?),
            shown,
        ))
    }

    /// Which disk `sel` names: `N` (from 1), a disk id, or a file name; the only disk when
    /// `None`.
    ///
    /// # Errors
    /// No disks, several and none chosen, or `sel` names none.
    pub fn choose(&self, sel: Option<&str>) -> Result<&OvfDisk> {
        let list = || {
            self.disks
                .iter()
                .enumerate()
                .map(|(i, d)| format!("{} ({}, {})", i + 1, d.id, d.file))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match sel {
            None => match &self.disks[..] {
                [] => Err(
                    Error::invalid(format!("{}: the OVF names no disk", self.ovf))
                        .with_path(&self.path),
                ),
                [only] => Ok(only),
                _ => Err(Error::argument(format!(
                    "the OVA holds {} disks: choose one with --disk N|NAME: {}",
                    self.disks.len(),
                    list()
                ))
                .with_path(&self.path)),
            },
            Some(s) => {
                let by_index = s
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| self.disks.get(i));
                by_index
                    .or_else(|| self.disks.iter().find(|d| d.id == s || d.file == s))
                    .ok_or_else(|| {
                        Error::argument(format!(
                            "--disk {s:?} names no disk of the OVA: {}",
                            list()
                        ))
                        .with_path(&self.path)
                    })
            }
        }
    }

    /// Opens the disk `sel` names (see [`Ova::choose`]) as a VMDK read inside the archive.
    ///
    /// # Errors
    /// As [`Ova::choose`]; a compressed, chunked or non-VMDK disk; a damaged VMDK; a VMDK whose
    /// capacity differs from the OVF's.
    pub fn open_disk(&self, sel: Option<&str>) -> Result<Vmdk> {
        let d = self.choose(sel)?;
        if let Some(c) = &d.compression {
            return Err(Error::unsupported(format!(
                "OVF disk {:?}: its file {} is {c}-compressed in the archive; ec2azure reads \
                 uncompressed OVAs (extract and decompress it, then convert the VMDK)",
                d.id, d.file
            ))
            .with_path(&self.path));
        }
        if d.chunked {
            return Err(Error::unsupported(format!(
                "OVF disk {:?}: its file {} is split into chunks (ovf:chunkSize), which \
                 ec2azure does not join",
                d.id, d.file
            ))
            .with_path(&self.path));
        }
        if !d.format.is_empty() && !d.format.to_ascii_lowercase().contains("vmdk") {
            return Err(Error::unsupported(format!(
                "OVF disk {:?}: format {:?}; ec2azure reads VMDK disks in an OVA",
                d.id, d.format
            ))
            .with_path(&self.path));
        }
        let (img, shown) = self.member_image(&d.file)?;
        let vmdk = Vmdk::open_in(img, &shown, &TarResolver { ova: self }, 0)?;
        if vmdk.len() != d.capacity {
            return Err(Error::invalid(format!(
                "OVF disk {:?}: the OVF says its capacity is {} bytes, the VMDK {} is {} bytes",
                d.id,
                d.capacity,
                d.file,
                vmdk.len()
            ))
            .with_path(&self.path));
        }
        Ok(vmdk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(allocation_units("byte"), Some(1));
        assert_eq!(allocation_units("byte * 2^30"), Some(1 << 30));
        assert_eq!(allocation_units("byte * 1024^2"), Some(1 << 20));
        assert_eq!(allocation_units("byte*10^3"), Some(1000));
        assert_eq!(allocation_units("GigaBytes"), None);
        assert_eq!(allocation_units("byte * 2^99"), None);
    }

    #[test]
    fn ovf_disks() {
        let ovf = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="123"/>
    <File ovf:href="disk2.vmdk" ovf:id="file2" ovf:compression="gzip"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1"
      ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="1048576" ovf:diskId="vmdisk2" ovf:fileRef="file2"/>
  </DiskSection>
</Envelope>"#;
        let d = parse_ovf(ovf).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].capacity, 8 << 30);
        assert_eq!(d[0].file, "disk1.vmdk");
        assert_eq!(d[1].capacity, 1 << 20);
        assert_eq!(d[1].compression.as_deref(), Some("gzip"));
        let e =
            parse_ovf(&ovf.replace("ovf:fileRef=\"file2\"", "ovf:fileRef=\"nofile\"")).unwrap_err();
        assert!(e.to_string().contains("names no File"), "{e}");
        assert!(parse_ovf("<a>").is_err());
        let diff = ovf.replace(
            "ovf:diskId=\"vmdisk2\"",
            "ovf:diskId=\"vmdisk2\" ovf:parentRef=\"vmdisk1\"",
        );
        let e = parse_ovf(&diff).unwrap_err();
        assert!(e.to_string().contains("ovf:parentRef"), "{e}");
    }
}
