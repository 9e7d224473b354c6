//! # ec2azure
//!
//! Offline, on one workstation, what Azure Site Recovery does when it migrates AWS EC2 machines to
//! Azure. EC2 volume snapshots (raw images, as `dd`, coldsnap or a snapshot export leave them,
//! EBS snapshots, VHD, VHDX, qcow2, VMDK and OVA as EC2's instance export writes them) become
//! fixed VHDs that Azure accepts as page blobs and managed disks — always a whole MiB, always with
//! a correct footer; replicated change journals applied to a base give recovery points, each
//! provable against the digest its marker recorded; and disk images can be inspected, checked
//! against Azure's rules, and compared.
//!
//! ## Layers
//!
//! Each layer uses only the layers below it (a unit test checks every `crate::` path against
//! this table, so the module graph has no cycle across folders):
//!
//! ```text
//!   recovery   journals applied, points, replicas                      (journal, export, image)
//!   journal    the change-journal format: segments, records, reader     (digest)
//!   transfer   page-blob upload (plan, engine, resume), verify, download (source, cloud, export)
//!   source     open any path or URI (file, ebs://) as a DiskImage       (image, cloud)
//!   cloud      EBS and page-blob clients and their in-process fakes     (export, digest, image)
//!   check, compare, sample                                              (export, image)
//!   export     the fixed VHD / raw writer, in-place conversion          (digest, image)
//!   digest     per-block SHA-256 manifest and root                      (image)
//!   image      DiskImage, ExtentMap, every file format; no cloud        (error, bytes)
//!   bytes, progress, clock (time through jiff; the Clock trait)
//!   error, sync (locks)
//! ```
//!
//! - [`image`]: the [`DiskImage`] abstraction (size, positional reads, extent map), the formats
//!   and their detection; [`source`]: [`open`] for paths and `ebs://` URIs.
//! - [`export`]: the fixed VHD (or raw) writer, [`convert`] and [`convert_in_place`].
//! - [`digest`]: the per-512-KiB-block SHA-256 manifest and its root digest.
//! - [`check`]: Azure readiness rules; [`compare`](mod@compare): content comparison.
//! - [`cloud`]: the EBS direct APIs and Azure page blobs, real clients and fakes; upload.
//! - [`journal`]: change journals (the replicated write stream of a disk), format and reader.
//! - [`recovery`]: recovery points — policy, catalog, a point as a [`DiskImage`], one-pass
//!   verification of every point, the replica a process server keeps, replication groups (a
//!   point choice resolved to one pick per disk), builds verified before they are renamed.
//! - [`transfer`]: page-blob upload (planned, resumable, verified) and download.
//! - [`clock`]: timestamps and durations (jiff), and the [`clock::Clock`] a simulator sets.
//!
//! ```no_run
//! use ec2azure::{open, convert, ConvertOptions};
//! use std::path::Path;
//!
//! let snapshot = open(Path::new("snap.raw"), None)?;
//! let report = convert(&*snapshot, Path::new("disk.vhd"), &ConvertOptions {
//!     manifest: true,
//!     ..ConvertOptions::default()
//! })?;
//! println!("{} bytes written, root digest {}", report.bytes_written, report.manifest.unwrap().root);
//! # Ok::<(), ec2azure::Error>(())
//! ```

pub mod bytes;
pub mod check;
pub mod clock;
pub mod cloud;
pub mod compare;
pub mod digest;
pub mod error;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod journal;
pub mod progress;
pub mod recovery;
pub mod sample;
pub mod site;
pub mod source;
pub mod sync;
pub mod transfer;

pub use check::{CheckReport, Target, check_file};
pub use compare::{Comparison, compare};
pub use digest::{Manifest, ManifestBuilder};
pub use error::{CloudError, Error, ErrorKind, Result};
pub use export::{ConvertOptions, ConvertReport, OutputFormat, convert, convert_in_place};
pub use image::{DiskImage, ExtentKind, ExtentMap, Format, OpenOptions};
pub use progress::{NoProgress, Progress};
pub use source::{open, open_with};

/// The layers, bottom first: a module may use modules of lower rank only (or its own), so the
/// module graph has no cycle across folders. `layers_import_downwards` checks every `crate::`
/// path in the sources against this table; a new module must be placed in it.
#[cfg(test)]
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("sync", 0),
    ("bytes", 1),
    ("progress", 1),
    ("clock", 1),
    ("image", 2),
    ("digest", 3),
    ("export", 4),
    ("sample", 5),
    ("check", 5),
    ("compare", 5),
    ("cloud", 6),
    ("source", 7),
    ("transfer", 8),
    ("journal", 8),
    ("recovery", 9),
    ("fuzzing", 10),
    ("site", 11),
];

#[cfg(test)]
mod layering {
    use super::LAYERS;
    use std::path::Path;

    /// The top-level modules that `text` names through `crate::` paths, comments skipped.
    fn uses(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in text.lines() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            let mut rest = l;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + 7..];
                let ident = |s: &str| -> String {
                    s.trim_start()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect()
                };
                if let Some(group) = rest.strip_prefix('{') {
                    // use crate::{a::X, b::{Y, Z}}: the names at depth 1.
                    let mut depth = 1;
                    let mut start = true;
                    for (j, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            ',' if depth == 1 => start = true,
                            c if c.is_whitespace() => {}
                            _ if start && depth == 1 => {
                                out.push(ident(&group[j..]));
                                start = false;
                            }
                            _ => {}
                        }
                    }
                } else {
                    out.push(ident(rest));
                }
            }
        }
        out
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn layers_import_downwards() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rank = |m: &str| LAYERS.iter().find(|(n, _)| *n == m).map(|(_, r)| *r);
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut bad = Vec::new();
        for f in all {
            let rel = f.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "bin" {
                continue;
            }
            let Some(r) = rank(&module) else {
                bad.push(format!("{module} ({}) is not in LAYERS", rel.display()));
                continue;
            };
            let text = std::fs::read_to_string(&f).unwrap();
            for u in uses(&text) {
                if u == module {
                    continue;
                }
                // Lower-case names that are not modules are root re-exports' functions; types
                // re-exported at the root start with a capital.
                if let Some(ur) = rank(&u)
                    && ur >= r
                {
                    bad.push(format!(
                        "{} uses crate::{u} (layer {ur}), not below its own layer {r}",
                        rel.display()
                    ));
                }
            }
        }
        assert!(bad.is_empty(), "layering broken:\n  {}", bad.join("\n  "));
    }

    #[test]
    fn the_parser_sees_grouped_and_plain_paths() {
        let u = uses(
            "use crate::{image::X, digest::{A, B}};\nlet x = crate::export::f();\n// crate::cloud",
        );
        assert_eq!(u, ["image", "digest", "export"]);
    }
}
